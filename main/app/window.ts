import { BrowserWindow, screen } from 'electron'
import { fileURLToPath } from 'node:url'
import { APP_URL } from './protocol'
import {
  DEFAULT_WINDOW_STATE,
  fitToDisplays,
  MIN_WINDOW_SIZE,
  type WindowState,
  type WindowStateFile,
} from './window-state'

/** What the main window needs from the composition root. */
export interface MainWindowOptions {
  preload: string
  stateFile: WindowStateFile
  /** A file was dropped on the window (Chromium navigates to it; we stop that and take the path). */
  onFileDropped(path: string): void
}

/**
 * The main window: sandboxed, context-isolated, without Node, loading only the app's own
 * origin. Navigation is stopped (a dropped file becomes `onFileDropped`), new windows and
 * webviews are refused, and the window's size and position are saved on every change.
 */
export async function createMainWindow(options: MainWindowOptions): Promise<BrowserWindow> {
  const saved = fitToDisplays(
    await options.stateFile.load().catch(() => DEFAULT_WINDOW_STATE),
    screen.getAllDisplays().map((display) => display.workArea),
  )
  const window = new BrowserWindow({
    ...(saved.x !== undefined && saved.y !== undefined ? { x: saved.x, y: saved.y } : {}),
    width: saved.width,
    height: saved.height,
    minWidth: MIN_WINDOW_SIZE.width,
    minHeight: MIN_WINDOW_SIZE.height,
    show: false,
    title: 'AddCow Studio',
    webPreferences: {
      preload: options.preload,
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      experimentalFeatures: false,
      webviewTag: false,
      navigateOnDragDrop: true,
      spellcheck: false,
    },
  })
  if (saved.maximized) window.maximize()
  window.once('ready-to-show', () => window.show())

  const contents = window.webContents
  contents.on('will-navigate', (event, url) => {
    event.preventDefault()
    if (url.startsWith('file:')) {
      try {
        options.onFileDropped(fileURLToPath(url))
      } catch {
        // Not a local path: ignore the drop.
      }
    }
  })
  contents.on('will-redirect', (event) => event.preventDefault())
  contents.setWindowOpenHandler(() => ({ action: 'deny' }))
  contents.on('will-attach-webview', (event) => event.preventDefault())

  let saving: ReturnType<typeof setTimeout> | null = null
  const save = (): void => {
    if (window.isDestroyed()) return
    const bounds = window.getNormalBounds()
    const state: WindowState = { ...bounds, maximized: window.isMaximized() }
    void options.stateFile.save(state).catch(() => undefined)
  }
  const saveSoon = (): void => {
    if (saving) clearTimeout(saving)
    saving = setTimeout(save, 500)
  }
  window.on('resize', saveSoon)
  window.on('move', saveSoon)
  window.on('maximize', saveSoon)
  window.on('unmaximize', saveSoon)
  window.on('close', () => {
    if (saving) clearTimeout(saving)
    save()
  })

  await window.loadURL(APP_URL)
  return window
}
