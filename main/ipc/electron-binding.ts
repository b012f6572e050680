import { ipcMain, webContents, type IpcMainEvent, type IpcMainInvokeEvent } from 'electron'
import { CHANNEL_NAMES } from '../../shared/ipc/channels'
import type { IpcCore } from './index'
import type { RequestSender } from './sender'

/**
 * Electron's side of the IPC: the only file of main/ipc that imports electron.
 *
 * Every channel of the contract is registered with ipcMain.handle and goes through the
 * dispatcher (sender check, schema check, handler), so the renderer always gets an IpcResult.
 * Events go to every webContents whose page the sender check trusts, and to no other.
 */
export function bindElectronIpc(
  core: IpcCore,
  isTrustedSender: (sender: RequestSender) => boolean,
): () => void {
  for (const channel of CHANNEL_NAMES) {
    ipcMain.handle(channel, (event: IpcMainInvokeEvent, payload: unknown) =>
      core.dispatcher.dispatch(channel, payload, senderOf(event)),
    )
  }
  const unsubscribe = core.bus.subscribe((event, payload) => {
    for (const contents of webContents.getAllWebContents()) {
      if (contents.isDestroyed()) continue
      const sender: RequestSender = {
        transport: 'electron',
        url: contents.getURL(),
        mainFrame: true,
      }
      if (isTrustedSender(sender)) contents.send(event, payload)
    }
  })
  return () => {
    for (const channel of CHANNEL_NAMES) ipcMain.removeHandler(channel)
    unsubscribe()
  }
}

/** Describe the frame that sent an invoke or a message: its URL, main frame or not, contents. */
export function senderOf(event: IpcMainInvokeEvent | IpcMainEvent): RequestSender {
  const frame = event.senderFrame
  return {
    transport: 'electron',
    url: frame?.url ?? '',
    mainFrame: frame !== null && frame !== undefined && frame.parent === null,
    contentsId: event.sender.id,
  }
}
