import type { Handlers } from '../handler-table'
import type { IpcServices } from '../services'
import { appHandlers } from './app'
import { fsHandlers } from './fs'
import { imageHandlers } from './image'
import { jobHandlers } from './jobs'
import { libraryHandlers } from './library'
import { machineHandlers } from './machines'
import { nbdHandlers } from './nbd'
import { operationHandlers } from './operations'
import { qemuHandlers } from './qemu'
import { VmSessions } from '../vm-sessions'

/**
 * The handler table over the real engine, one area per file: the handler of `area:verb-noun`
 * is in `handlers/<area>.ts`. This only composes; the compiler refuses a table with a channel
 * missing, and each area's type admits only its own channels.
 */
export function createHandlers(services: IpcServices): Handlers {
  // The qemu and machines areas run VMs as jobs of one registry (stop and console for both).
  const vms = new VmSessions(services.vms)
  return {
    ...libraryHandlers(services),
    ...imageHandlers(services),
    ...operationHandlers(services),
    ...qemuHandlers(services, vms),
    ...machineHandlers(services, vms),
    ...nbdHandlers(services),
    ...fsHandlers(services),
    ...jobHandlers(services),
    ...appHandlers(services),
  }
}
