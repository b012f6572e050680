import { join } from 'node:path'
import type { SavedMachine } from '../../shared/machine-types'
import { EngineError } from '../engine/errors'
import { findUefiFirmware, uefiVarsTemplateFor } from './capabilities'
import type { QemuFirmware } from './command'
import { UEFI_VARS_FILE, type LaunchOptions } from './launcher'

/**
 * The launch options of a saved machine: `addcow machine start`, `addcow launch --machine` and
 * the app start it through this one function, so they run the same command line. UEFI without
 * a chosen code image takes the first of Debian's ovmf paths found (NOT_FOUND if none), and the
 * machine's own variable store lives in `machineFolder` (Library.machineFolder: deleted and
 * renamed with the machine), so boot entries and settings survive reboots.
 */
export async function machineLaunchOptions(
  machine: SavedMachine,
  machineFolder: string,
): Promise<Omit<LaunchOptions, 'policy' | 'checks' | 'signal'>> {
  let firmware: QemuFirmware = { kind: 'bios' }
  if (machine.firmware === 'uefi') {
    const code = machine.uefiCode ?? (await findUefiFirmware())[0]
    if (code === undefined) {
      throw new EngineError(
        'NOT_FOUND',
        `Machine '${machine.name}' boots with UEFI, but no OVMF firmware was found (Debian: apt-get install ovmf), and none is chosen.`,
        { field: 'uefiCode' },
      )
    }
    const template = uefiVarsTemplateFor(code)
    firmware = {
      kind: 'uefi',
      code,
      ...(template ? { vars: { file: join(machineFolder, UEFI_VARS_FILE), template } } : {}),
    }
  }
  return {
    image: machine.disk,
    via: machine.via,
    readOnly: machine.readOnly,
    ...(machine.copyOnRead ? { copyOnRead: true } : {}),
    machine: {
      name: `addcow-${machine.name}`,
      memoryMiB: machine.memoryMiB,
      cpus: machine.cpus,
      ...(machine.machine !== undefined ? { machine: machine.machine } : {}),
      accel: machine.accel,
      network: machine.network,
      portForwards: machine.portForwards,
      boot: machine.boot,
      firmware,
      ...(machine.display === 'none' || machine.display === 'default' || machine.display === 'app'
        ? {}
        : { display: machine.display === 'vnc' ? 'vnc=127.0.0.1:0' : machine.display }),
    },
    headless: machine.display === 'none',
    // The app's graphical console; from the CLI the socket is there for any VNC viewer.
    inAppDisplay: machine.display === 'app',
    extraArgs: machine.extraArgs,
  }
}
