import { app, BrowserWindow, dialog, Menu, session } from 'electron'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { defaultDataDir, Library } from '../engine/library'
import type { EventName } from '../../shared/ipc/channels'
import type { EventPayload } from '../../shared/ipc/contract'
import { bindElectronIpc } from '../ipc/electron-binding'
import { createIpcCore, trustOrigins, type IpcCore, type RequestSender } from '../ipc/index'
import { createNativeDialogs } from './dialogs'
import { buildMenu } from './menu'
import { APP_ORIGIN, APP_URL, registerAppScheme, serveRenderer } from './protocol'
import { serveVmScreens } from './vm-screens'
import { createMainWindow } from './window'
import { WindowStateFile } from './window-state'

// The Electron composition root: one instance, one main window, the IPC bound to the engine,
// the renderer served from the app's own origin, the menu, dialogs, and drops.

const RENDERER_DIR = fileURLToPath(new URL('../renderer/', import.meta.url))
const PRELOAD = fileURLToPath(new URL('../preload/preload.cjs', import.meta.url))
/** Requests main itself makes (menu, drops, files named on the command line). */
const INTERNAL_SENDER: RequestSender = { transport: 'electron', url: APP_URL, mainFrame: true }

registerAppScheme()
app.enableSandbox()

// macOS announces files opened with the app before it is ready: keep them until it is.
let openFile: (path: string) => void = (path) => earlyFiles.push(path)
const earlyFiles: string[] = []
app.on('open-file', (event, path) => {
  event.preventDefault()
  openFile(path)
})

if (!app.requestSingleInstanceLock()) {
  app.quit()
} else {
  void start().catch((error: unknown) => {
    dialog.showErrorBox(
      'AddCow Studio could not start',
      error instanceof Error ? (error.stack ?? error.message) : String(error),
    )
    app.exit(1)
  })
}

async function regularFiles(candidates: readonly string[]): Promise<string[]> {
  const files: string[] = []
  for (const candidate of candidates) {
    if (candidate.startsWith('-')) continue
    if (
      await stat(candidate).then(
        (info) => info.isFile(),
        () => false,
      )
    )
      files.push(candidate)
  }
  return files
}

async function start(): Promise<void> {
  const dataDir = defaultDataDir()
  app.setPath('userData', dataDir)
  app.setAboutPanelOptions({
    applicationName: 'AddCow Studio',
    applicationVersion: app.getVersion(),
    copyright: 'MIT License',
  })
  await app.whenReady()

  session.defaultSession.setPermissionRequestHandler((_contents, _permission, callback) =>
    callback(false),
  )
  session.defaultSession.setPermissionCheckHandler(() => false)
  app.on('web-contents-created', (_event, contents) => {
    contents.on('will-navigate', (navigation) => navigation.preventDefault())
    contents.setWindowOpenHandler(() => ({ action: 'deny' }))
    contents.on('will-attach-webview', (attach) => attach.preventDefault())
  })
  serveRenderer(RENDERER_DIR)

  const isTrustedSender = trustOrigins([APP_ORIGIN])
  const core: IpcCore = createIpcCore({
    host: {
      shell: 'electron',
      name: 'AddCow Studio',
      version: app.getVersion(),
      electronVersion: process.versions.electron ?? null,
      chromeVersion: process.versions.chrome ?? null,
    },
    isTrustedSender,
    library: new Library(join(dataDir, 'library.json')),
    dialogs: createNativeDialogs(),
  })
  bindElectronIpc(core, isTrustedSender)
  serveVmScreens(core, isTrustedSender)
  const stateFile = new WindowStateFile(join(dataDir, 'window-state.json'))
  let mainWindow: BrowserWindow | null = null
  let quitting = false

  const send = <E extends EventName>(event: E, payload: EventPayload<E>): void =>
    core.bus.emit(event, payload)
  const showError = (title: string, message: string): void => {
    if (mainWindow)
      void dialog.showMessageBox(mainWindow, { type: 'error', message: title, detail: message })
    else dialog.showErrorBox(title, message)
  }
  const addImages = async (paths: string[], how: 'opened' | 'dropped'): Promise<void> => {
    if (paths.length === 0) return
    const result = await core.dispatcher.dispatch('library:add-images', { paths }, INTERNAL_SENDER)
    if (!result.ok) {
      showError('The image could not be added', result.error.message)
      return
    }
    for (const path of paths) app.addRecentDocument(path)
    if (how === 'dropped') send('app:files-dropped', { paths })
  }
  const refreshMenu = async (): Promise<void> => {
    const recent = (await core.library.load().catch(() => null))?.recent ?? []
    Menu.setApplicationMenu(
      buildMenu(
        {
          openImage: () => {
            void dialog
              .showOpenDialog({
                title: 'Open an image',
                properties: ['openFile', 'multiSelections'],
                filters: [
                  { name: 'Disk images', extensions: ['add-cow', 'raw', 'img', 'qcow2', 'cow'] },
                  { name: 'All files', extensions: ['*'] },
                ],
              })
              .then((result) =>
                result.canceled ? undefined : addImages(result.filePaths, 'opened'),
              )
          },
          openRecent: (path) => void addImages([path], 'opened'),
          createOverlay: () => send('app:menu-command', { command: 'create-overlay' }),
          showLibrary: () => send('app:menu-command', { command: 'show-library' }),
          showJobs: () => send('app:menu-command', { command: 'show-jobs' }),
        },
        recent,
      ),
    )
  }
  core.bus.subscribe((event) => {
    if (event === 'library:changed') void refreshMenu()
  })
  await refreshMenu()

  const openWindow = async (): Promise<void> => {
    mainWindow = await createMainWindow({
      preload: PRELOAD,
      stateFile,
      onFileDropped: (path) => void addImages([path], 'dropped'),
    })
    const window = mainWindow
    window.on('close', (event) => {
      const running = core.jobs.runningCount
      if (running === 0 || quitting || process.platform === 'darwin') return
      event.preventDefault()
      void confirmQuit(window, running)
    })
    window.on('closed', () => {
      if (mainWindow === window) mainWindow = null
    })
  }

  const confirmQuit = async (parent: BrowserWindow | null, running: number): Promise<void> => {
    const options = {
      type: 'question' as const,
      buttons: ['Cancel the jobs and quit', 'Keep running'],
      defaultId: 1,
      cancelId: 1,
      message: `${running} job${running === 1 ? ' is' : 's are'} still running.`,
      detail: 'Cancelling leaves every file consistent; a cancelled create leaves nothing behind.',
    }
    const { response } = parent
      ? await dialog.showMessageBox(parent, options)
      : await dialog.showMessageBox(options)
    if (response !== 0) return
    await core.jobs.cancelAll()
    await core.images.closeAll()
    quitting = true
    app.quit()
  }
  app.on('before-quit', (event) => {
    const running = core.jobs.runningCount
    if (quitting || running === 0) return
    event.preventDefault()
    void confirmQuit(mainWindow, running)
  })
  app.on('window-all-closed', () => {
    if (process.platform !== 'darwin') app.quit()
  })
  app.on('activate', () => {
    if (BrowserWindow.getAllWindows().length === 0) void openWindow()
  })
  app.on('second-instance', (_event, argv) => {
    if (mainWindow) {
      if (mainWindow.isMinimized()) mainWindow.restore()
      mainWindow.focus()
    }
    void regularFiles(argv.slice(1)).then((paths) => addImages(paths, 'opened'))
  })

  await openWindow()
  openFile = (path) => void addImages([path], 'opened')
  await addImages(
    [...earlyFiles, ...(await regularFiles(process.argv.slice(app.isPackaged ? 1 : 2)))],
    'opened',
  )
}
