import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { EventPayload } from '../../../shared/ipc/contract'
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
 * arrives before the reply that started the job is not lost.
 */
export const useVmConsoleStore = defineStore('vm-console', () => {
  const client = useClient()
  const sessions = ref<Record<string, ConsoleChunk[]>>({})
  const sizes = new Map<string, number>()

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

  return { sessions, output, write }
})
