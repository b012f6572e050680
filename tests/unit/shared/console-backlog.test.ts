import { describe, expect, it } from 'vitest'
import { appendConsole, type ConsoleChunk } from '../../../shared/console-backlog'

// shared/console-backlog.ts: a VM's console text as main keeps it and a page shows it.

describe('appendConsole', () => {
  it('joins text of the same stream and starts a chunk when the stream changes', () => {
    const chunks: ConsoleChunk[] = []
    let size = appendConsole(chunks, 0, 'serial', 'boot')
    size = appendConsole(chunks, size, 'serial', 'ing\n')
    size = appendConsole(chunks, size, 'stderr', 'warning\n')
    size = appendConsole(chunks, size, 'serial', 'login:')
    expect(chunks).toEqual([
      { stream: 'serial', text: 'booting\n' },
      { stream: 'stderr', text: 'warning\n' },
      { stream: 'serial', text: 'login:' },
    ])
    expect(size).toBe(22)
  })

  it('drops the oldest text beyond the limit, whole chunks first, then part of one', () => {
    const chunks: ConsoleChunk[] = []
    let size = appendConsole(chunks, 0, 'stderr', 'abc', 8)
    size = appendConsole(chunks, size, 'serial', 'defgh', 8)
    expect(chunks).toEqual([
      { stream: 'stderr', text: 'abc' },
      { stream: 'serial', text: 'defgh' },
    ])
    size = appendConsole(chunks, size, 'serial', 'ijkl', 8)
    expect(chunks).toEqual([{ stream: 'serial', text: 'efghijkl' }])
    expect(size).toBe(8)
    size = appendConsole(chunks, size, 'stderr', '0123456789', 8)
    expect(chunks).toEqual([{ stream: 'stderr', text: '23456789' }])
    expect(size).toBe(8)
  })
})
