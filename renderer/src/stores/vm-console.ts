import { defineStore } from 'pinia'
import { ref } from 'vue'
import { appendConsole, type ConsoleChunk } from '../../../shared/console-backlog'
import type { RequestOf, VmState } from '../../../shared/ipc/contract'
import { useClient } from '../api'

/**
 * The live consoles of the VMs launched from this window: every `qemu:console-output` event,
 * kept per session (the launch job's id) from the moment the store exists, so output that
 * arrives before the reply that started the job is not lost; and each VM's run state.
 */
export const useVmConsoleStore = defineStore('vm-console', () => {
  const client = useClient()
  const sessions = ref<Record<string, ConsoleChunk[]>>({})
  const sizes = new Map<string, number>()
  /** Each VM's run state (running, paused, shutting down, stopped), from qemu:vm-state. */
  const states = ref<Record<string, VmState>>({})
  /** The VMs launched with the in-app display (a screen to show), from qemu:vm-state. */
  const screens = ref<Record<string, boolean>>({})

  client.on('qemu:vm-state', ({ sessionId, state, screen }) => {
    states.value = { ...states.value, [sessionId]: state }
    if (screen && !screens.value[sessionId]) screens.value = { ...screens.value, [sessionId]: true }
  })

  client.on('qemu:console-output', ({ sessionId, stream, text }) => {
    const chunks = sessions.value[sessionId] ?? []
    sizes.set(sessionId, appendConsole(chunks, sizes.get(sessionId) ?? 0, stream, text))
    sessions.value = { ...sessions.value, [sessionId]: chunks }
  })

  /**
   * Take what main kept of a VM's console and its run state (a page opened on a VM that runs
   * already: a reload, another window). Main's text holds everything up to its answer, events
   * included, so it replaces what arrived here meanwhile.
   */
  async function restore(sessionId: string): Promise<void> {
    const { chunks, state } = await client.call('qemu:get-console', { jobId: sessionId })
    sizes.set(
      sessionId,
      chunks.reduce((sum, chunk) => sum + chunk.text.length, 0),
    )
    sessions.value = { ...sessions.value, [sessionId]: chunks }
    if (state !== null && states.value[sessionId] === undefined)
      states.value = { ...states.value, [sessionId]: state }
  }

  function output(sessionId: string | null): ConsoleChunk[] {
    return sessionId === null ? [] : (sessions.value[sessionId] ?? [])
  }

  /** Type into a VM's serial console. */
  async function write(sessionId: string, text: string): Promise<void> {
    await client.call('qemu:write-console', { jobId: sessionId, text })
  }

  /** A VM's run state, or null before main said it (or before a launch). */
  function state(sessionId: string | null): VmState | null {
    return sessionId === null ? null : (states.value[sessionId] ?? null)
  }

  /** Shut down (ACPI), pause, resume or reset a VM through QMP. */
  async function power(
    sessionId: string,
    action: RequestOf<'qemu:power-vm'>['action'],
  ): Promise<void> {
    const { state } = await client.call('qemu:power-vm', { jobId: sessionId, action })
    states.value = { ...states.value, [sessionId]: state }
  }

  /** Whether a VM has a screen for the graphical console (launched with the in-app display). */
  function hasScreen(sessionId: string | null): boolean {
    return sessionId !== null && screens.value[sessionId] === true
  }

  return { sessions, output, restore, write, state, hasScreen, power }
})
