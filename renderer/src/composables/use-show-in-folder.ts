import { useMessage } from 'naive-ui'
import { useClient } from '../api'
import { describeError } from '../lib/errors'
import { folderOf } from './use-format'
import { copyText } from './use-clipboard'

/**
 * "Show in folder": the desktop app opens the system's file manager on the file; the browser
 * mode cannot reach the user's file manager (the files are on the server's machine), so it
 * says where the file is and copies its path.
 */
export function useShowInFolder() {
  const client = useClient()
  const message = useMessage()

  async function show(path: string): Promise<void> {
    try {
      const { shown } = await client.call('fs:show-in-folder', { path })
      if (shown) return
      const copied = await copyText(path).then(
        () => true,
        () => false,
      )
      message.info(
        `It is in ${folderOf(path)}${copied ? ' (its path is copied)' : ''}: the browser mode cannot open a file manager.`,
        { duration: 8000, closable: true },
      )
    } catch (error) {
      message.error(describeError(error))
    }
  }

  return { show }
}
