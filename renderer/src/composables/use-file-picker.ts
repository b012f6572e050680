import { useClient } from '../api'
import { useAppStore } from '../stores/app'
import { useFileBrowserStore } from '../stores/file-browser'

/** Filters offered for disk images. */
export const IMAGE_FILTERS = [
  { name: 'Disk images', extensions: ['add-cow', 'raw', 'img', 'qcow2', 'cow'] },
  { name: 'All files', extensions: ['*'] },
]

/**
 * Pick files to open or a file to save: the native dialogs in Electron, the in-app file
 * browser in the browser mode (main lists its own file system for it).
 */
export function useFilePicker() {
  const client = useClient()
  const app = useAppStore()
  const browser = useFileBrowserStore()

  async function openFiles(options: {
    title: string
    multiple?: boolean
    folder?: string
    /** What the native dialog offers (disk images by default); the in-app browser lists all. */
    filters?: { name: string; extensions: string[] }[]
  }): Promise<string[]> {
    if (app.info?.nativeDialogs) {
      const { paths } = await client.call('fs:show-open-dialog', {
        title: options.title,
        multiple: options.multiple ?? false,
        filters: options.filters ?? IMAGE_FILTERS,
        ...(options.folder ? { defaultPath: options.folder } : {}),
      })
      return paths
    }
    return (
      (await browser.ask({
        mode: 'open',
        title: options.title,
        multiple: options.multiple ?? false,
        ...(options.folder ? { folder: options.folder } : {}),
      })) ?? []
    )
  }

  async function saveFile(options: {
    title: string
    folder?: string
    fileName?: string
  }): Promise<string | null> {
    if (app.info?.nativeDialogs) {
      const separator = app.roots?.separator ?? '/'
      const defaultPath =
        options.folder && options.fileName
          ? `${options.folder}${separator}${options.fileName}`
          : options.folder
      const { path } = await client.call('fs:show-save-dialog', {
        title: options.title,
        ...(defaultPath ? { defaultPath } : {}),
      })
      return path
    }
    const paths = await browser.ask({
      mode: 'save',
      title: options.title,
      multiple: false,
      ...(options.folder ? { folder: options.folder } : {}),
      ...(options.fileName ? { fileName: options.fileName } : {}),
    })
    return paths?.[0] ?? null
  }

  return { openFiles, saveFile }
}
