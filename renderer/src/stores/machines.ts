import { defineStore } from 'pinia'
import { ref } from 'vue'
import { errorMessage, useClient } from '../api'
import type { MachineInput, MachineView } from '../lib/machine-view'

/**
 * The saved machines of the library file (the CLI's `addcow machine` sees the same ones),
 * each with the job of its VM when it runs here. Reloaded after every change made through it
 * and whenever a machine's VM job starts or ends.
 */
export const useMachinesStore = defineStore('machines', () => {
  const client = useClient()
  const machines = ref<MachineView[]>([])
  /** Entries of the library file that are not valid machines (edited by hand), in words. */
  const problems = ref<string[]>([])
  /** Why the last load failed, or null. */
  const error = ref<string | null>(null)
  const loaded = ref(false)

  async function load(): Promise<void> {
    try {
      const listing = await client.call('machines:list-machines', {})
      machines.value = listing.machines
      problems.value = listing.problems
      error.value = null
      loaded.value = true
    } catch (failure) {
      error.value = errorMessage(failure)
    }
  }

  const reloadOnMachineJob = ({ channel }: { channel: string }): void => {
    if (channel === 'machines:start-machine') void load()
  }
  client.on('jobs:started', reloadOnMachineJob)
  client.on('jobs:done', ({ job }) => reloadOnMachineJob(job))
  client.on('jobs:failed', ({ job }) => reloadOnMachineJob(job))

  /** Save a machine; `previousName` renames it, `replace` overwrites one of the same name. */
  async function save(
    machine: MachineInput,
    options: { previousName?: string; replace?: boolean } = {},
  ): Promise<MachineView['name']> {
    const { machine: saved } = await client.call('machines:save-machine', {
      machine,
      ...(options.previousName !== undefined ? { previousName: options.previousName } : {}),
      replace: options.replace ?? false,
    })
    await load()
    return saved.name
  }

  async function copy(name: string, newName: string): Promise<void> {
    await client.call('machines:copy-machine', { name, newName })
    await load()
  }

  async function remove(name: string): Promise<void> {
    await client.call('machines:remove-machine', { name })
    await load()
  }

  return { machines, problems, error, loaded, load, save, copy, remove }
})
