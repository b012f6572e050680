import { describe, expect, it } from 'vitest'
import { vmStateAfter, vmStateOfStatus, type VmState } from '../../../main/qemu/power'

// The VM state the launch screen shows, from QMP's query-status and events (main/qemu/power.ts).

describe('vmStateAfter', () => {
  const after = (state: VmState, event: string): VmState => vmStateAfter(state, { event })

  it('follows the run-state events', () => {
    expect(after('running', 'STOP')).toBe('paused')
    expect(after('paused', 'RESUME')).toBe('running')
    expect(after('running', 'POWERDOWN')).toBe('shutting-down')
    expect(after('shutting-down', 'SHUTDOWN')).toBe('stopped')
    expect(after('running', 'SHUTDOWN')).toBe('stopped')
  })

  it('keeps a paused VM paused through a reset or a power button, and a reset ends shutting down', () => {
    expect(after('paused', 'RESET')).toBe('paused')
    expect(after('paused', 'POWERDOWN')).toBe('paused')
    expect(after('shutting-down', 'RESET')).toBe('running')
  })

  it('ignores other events, and nothing revives a stopped VM', () => {
    expect(after('running', 'BLOCK_IO_ERROR')).toBe('running')
    expect(after('stopped', 'RESUME')).toBe('stopped')
    expect(after('stopped', 'RESET')).toBe('stopped')
  })
})

describe('vmStateOfStatus', () => {
  it('reads query-status: running or not', () => {
    expect(vmStateOfStatus({ running: true, status: 'running' })).toBe('running')
    expect(vmStateOfStatus({ running: false, status: 'prelaunch' })).toBe('paused')
    expect(vmStateOfStatus(null)).toBe('paused')
  })
})
