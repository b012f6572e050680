import {
  BrowserWindow,
  dialog,
  shell,
  webContents,
  type OpenDialogOptions,
  type SaveDialogOptions,
} from 'electron'
import type { NativeDialogs, RequestSender } from '../ipc/index'

function windowOf(sender: RequestSender): BrowserWindow | null {
  const contents =
    sender.contentsId === undefined ? undefined : webContents.fromId(sender.contentsId)
  return contents ? BrowserWindow.fromWebContents(contents) : null
}

/**
 * The native open and save dialogs. Main returns exactly the paths the user picked; the
 * renderer cannot widen them (it only chooses the title, filters and starting folder).
 */
export function createNativeDialogs(): NativeDialogs {
  return {
    async openFiles(request, sender) {
      const options: OpenDialogOptions = {
        properties: request.multiple ? ['openFile', 'multiSelections'] : ['openFile'],
        ...(request.title !== undefined ? { title: request.title } : {}),
        ...(request.defaultPath !== undefined ? { defaultPath: request.defaultPath } : {}),
        ...(request.filters !== undefined ? { filters: request.filters } : {}),
      }
      const parent = windowOf(sender)
      const result = parent
        ? await dialog.showOpenDialog(parent, options)
        : await dialog.showOpenDialog(options)
      return result.canceled ? [] : result.filePaths
    },
    async saveFile(request, sender) {
      const options: SaveDialogOptions = {
        properties: ['createDirectory', 'showOverwriteConfirmation'],
        ...(request.title !== undefined ? { title: request.title } : {}),
        ...(request.defaultPath !== undefined ? { defaultPath: request.defaultPath } : {}),
        ...(request.filters !== undefined ? { filters: request.filters } : {}),
      }
      const parent = windowOf(sender)
      const result = parent
        ? await dialog.showSaveDialog(parent, options)
        : await dialog.showSaveDialog(options)
      return result.canceled || !result.filePath ? null : result.filePath
    },
    showItemInFolder(path) {
      shell.showItemInFolder(path)
    },
  }
}
