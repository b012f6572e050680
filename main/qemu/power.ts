import type { VmState } from '../../shared/ipc/contract'
import type { QmpEvent } from './qmp'

export type { VmState } from '../../shared/ipc/contract'

/** What a power control asks QEMU (through QMP) besides force off, which ends the VM. */
export type PowerAction = 'shut-down' | 'pause' | 'resume' | 'reset'

/** The QMP command of each power action (QEMU's docs/interop/qmp: run-state commands). */
export const POWER_COMMANDS: Readonly<Record<PowerAction, string>> = {
  // ACPI power button: the guest decides (a halted or firmware-only guest ignores it).
  'shut-down': 'system_powerdown',
  pause: 'stop',
  resume: 'cont',
  reset: 'system_reset',
}

/**
 * The VM's state after a QMP event: STOP pauses, RESUME runs, POWERDOWN (the ACPI button was
 * pressed) is "shutting down" until the guest powers off (SHUTDOWN, after which QEMU exits) or
 * resets; a RESET keeps a paused VM paused. Other events leave the state as it is.
 */
export function vmStateAfter(state: VmState, event: QmpEvent): VmState {
  if (state === 'stopped') return state
  switch (event.event) {
    case 'STOP':
      return 'paused'
    case 'RESUME':
      return 'running'
    case 'POWERDOWN':
      return state === 'paused' ? state : 'shutting-down'
    case 'SHUTDOWN':
      return 'stopped'
    case 'RESET':
      return state === 'paused' ? state : 'running'
    default:
      return state
  }
}

/** The state QMP's query-status reports (`{ running, status }`): running, else paused. */
export function vmStateOfStatus(status: unknown): VmState {
  const running = (status as { running?: unknown } | null)?.running
  return running === true ? 'running' : 'paused'
}
