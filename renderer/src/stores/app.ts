import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { ResponseOf } from '../../../shared/ipc/contract'
import { useClient } from '../api'

/** What the app knows about where it runs: shell, version, data folder, file system roots. */
export const useAppStore = defineStore('app', () => {
  const client = useClient()
  const info = ref<ResponseOf<'app:get-info'> | null>(null)
  const roots = ref<ResponseOf<'fs:list-roots'> | null>(null)

  async function load(): Promise<void> {
    const [appInfo, fileRoots] = await Promise.all([
      client.call('app:get-info', {}),
      client.call('fs:list-roots', {}),
    ])
    info.value = appInfo
    roots.value = fileRoots
  }

  return { info, roots, connection: client.transport.state, load }
})
