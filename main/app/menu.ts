import { app, Menu, type MenuItemConstructorOptions } from 'electron'
import { basename } from 'node:path'

/** What the menu's entries do. */
export interface MenuActions {
  openImage(): void
  openRecent(path: string): void
  createOverlay(): void
  showLibrary(): void
  showJobs(): void
}

/**
 * The application menu: File (open, recent, create, quit), Edit, View, Window and Help (about),
 * with macOS's app menu first there.
 */
export function buildMenu(actions: MenuActions, recent: readonly string[]): Menu {
  const isMac = process.platform === 'darwin'
  const recentItems: MenuItemConstructorOptions[] =
    recent.length === 0
      ? [{ label: 'No recent images', enabled: false }]
      : recent.slice(0, 10).map((path) => ({
          label: `${basename(path)} — ${path}`,
          click: () => actions.openRecent(path),
        }))
  const template: MenuItemConstructorOptions[] = [
    ...(isMac ? [{ role: 'appMenu' as const }] : []),
    {
      label: '&File',
      submenu: [
        { label: '&Open Image…', accelerator: 'CmdOrCtrl+O', click: () => actions.openImage() },
        { label: 'Open &Recent', submenu: recentItems },
        { type: 'separator' },
        {
          label: '&Create Overlay…',
          accelerator: 'CmdOrCtrl+N',
          click: () => actions.createOverlay(),
        },
        { type: 'separator' },
        isMac ? { role: 'close' } : { role: 'quit' },
      ],
    },
    { role: 'editMenu' },
    {
      label: '&View',
      submenu: [
        { label: '&Library', accelerator: 'CmdOrCtrl+1', click: () => actions.showLibrary() },
        { label: '&Jobs', accelerator: 'CmdOrCtrl+J', click: () => actions.showJobs() },
        { type: 'separator' },
        { role: 'resetZoom' },
        { role: 'zoomIn' },
        { role: 'zoomOut' },
        { type: 'separator' },
        { role: 'togglefullscreen' },
        ...(app.isPackaged
          ? []
          : [
              { type: 'separator' as const },
              { role: 'reload' as const },
              { role: 'toggleDevTools' as const },
            ]),
      ],
    },
    { role: 'windowMenu' },
    { role: 'help', submenu: [{ role: 'about', label: `About ${app.name}` }] },
  ]
  return Menu.buildFromTemplate(template)
}
