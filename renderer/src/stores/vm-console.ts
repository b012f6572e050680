import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { EventPayload, RequestOf, VmState } from '../../../shared/ipc/contract'
import { useClient } from '../api'

/** Most console text kept per VM; older text is dropped from the start. */
export const CONSOLE_LIMIT = 256 * 1024

/** One stretch of console text from one stream. */
export interface ConsoleChunk {
  stream: EventPayload<'qemu:console-output'>['stream']
  text: string
}

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
    const last = chunks[chunks.length - 1]
    if (last && last.stream === stream) last.text += text
    else chunks.push({ stream, text })
    let size = (sizes.get(sessionId) ?? 0) + text.length
    while (size > CONSOLE_LIMIT && chunks.length > 0) {
      const first = chunks[0]!
      const excess = size - CONSOLE_LIMIT
      if (first.text.length <= excess) {
        chunks.shift()
        size -= first.text.length
      } else {
        first.text = first.text.slice(excess)
        size -= excess
      }
    }
    sizes.set(sessionId, size)
    sessions.value = { ...sessions.value, [sessionId]: chunks }
  })

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

  return { sessions, output, write, state, hasScreen, power }
})
