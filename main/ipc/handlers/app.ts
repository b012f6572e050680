import { homedir } from 'node:os'
import { dirname } from 'node:path'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'

/** `app:*`: what the shell running the handlers is (Electron or the browser mode), and where. */
export function appHandlers(services: IpcServices): AreaHandlers<'app'> {
  const { library, host } = services

  return {
    'app:get-info': async () => ({
      name: host.name,
      version: host.version,
      shell: host.shell,
      platform: process.platform,
      arch: process.arch,
      dataDir: dirname(library.file),
      libraryFile: library.file,
      home: homedir(),
      nativeDialogs: services.dialogs !== null,
      versions: {
        node: process.versions.node,
        electron: host.electronVersion,
        chrome: host.chromeVersion,
      },
    }),
  }
}
