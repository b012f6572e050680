import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { describe, expect, it } from 'vitest'
import type { InterruptedCommit } from '../../../main/engine/library'
import { interruptedCommitNow } from '../../../main/engine/ops/commit'
import { processAlive, processIdentity, recordedProcessRuns } from '../../../main/engine/processes'

// main/engine/processes.ts: whether a process recorded earlier (a live commit's serving
// process) still runs, also when its pid was given to another process since.

describe('a recorded process', () => {
  it('has an identity of its boot and start time, which stays the same while it runs', () => {
    const identity = processIdentity(process.pid)
    expect(identity).toMatch(/^[0-9a-f-]{36}\/\d+$/)
    expect(processIdentity(process.pid)).toBe(identity)
    expect(processIdentity(process.ppid)).not.toBe(identity)
    expect(processAlive(process.pid)).toBe(true)
    expect(processAlive(-1)).toBe(false)
    expect(processAlive(0)).toBe(false)
    expect(processAlive(1.5)).toBe(false)
  })

  it('runs while it lives, is not taken for another process with its pid, and ends', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' })
    await once(child, 'spawn')
    const pid = child.pid!
    const identity = processIdentity(pid)!
    expect(identity).not.toBeNull()
    expect(recordedProcessRuns(pid, identity)).toBe(true)
    // A record without an identity (an older library, another system): the pid decides.
    expect(recordedProcessRuns(pid)).toBe(true)
    // The same pid with another start time or boot: a later process given that pid.
    const [boot, start] = identity.split('/')
    expect(recordedProcessRuns(pid, `${boot}/${Number(start) - 1}`)).toBe(false)
    expect(recordedProcessRuns(pid, `00000000-0000-0000-0000-000000000000/${start}`)).toBe(false)
    child.kill('SIGKILL')
    await once(child, 'exit')
    expect(recordedProcessRuns(pid, identity)).toBe(false)
    expect(processIdentity(pid)).toBeNull()
  })
})

describe('interruptedCommitNow', () => {
  const record = (extra: Partial<InterruptedCommit>): InterruptedCommit => ({
    overlay: '/images/vm.add-cow',
    base: '/images/base.raw',
    journal: null,
    bytesCommitted: 0,
    ranges: [],
    bytesTotal: 65536,
    dependents: [],
    code: 'INTERRUPTED',
    message: 'The live commit did not end.',
    at: '2026-12-06T12:00:00.000Z',
    ...extra,
  })

  it('a live commit whose process runs is going on, not interrupted', async () => {
    expect(
      await interruptedCommitNow(
        record({ runningIn: process.pid, runningProcess: processIdentity(process.pid)! }),
      ),
    ).toBeNull()
  })

  it('is interrupted when its pid now belongs to another process', async () => {
    const reused = record({ runningIn: process.pid, runningProcess: 'another-boot/1' })
    expect(await interruptedCommitNow(reused)).toEqual(reused)
  })

  it('reads a hostile identity (not a string) as none: the pid decides', async () => {
    const odd = record({ runningIn: process.pid, runningProcess: 7 as unknown as string })
    expect(await interruptedCommitNow(odd)).toBeNull()
  })
})
