import { EngineError } from '../../engine/errors'
import { machineLaunchOptions } from '../../qemu/machines'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'
import { vmCommandFor, type VmSessions } from '../vm-sessions'

/**
 * `machines:*`: the saved machines of the shared library file, the same entries and the same
 * library functions as `addcow machine` (list, save, copy, rm), and starting one: the launch
 * options come from the one function the CLI's `machine start` uses (machineLaunchOptions),
 * and the VM runs as a job of the VM sessions the qemu area shares (stopped with
 * qemu:stop-vm, typed into with qemu:write-console). A machine runs once at a time here, and
 * is neither removed nor renamed while it runs.
 */
export function machineHandlers(services: IpcServices, vms: VmSessions): AreaHandlers<'machines'> {
  const { library } = services

  /** BUSY when the app runs `name` now. */
  function refuseWhileRunning(name: string, doing: string): void {
    const jobId = vms.jobOfMachine(name)
    if (jobId !== null)
      throw new EngineError(
        'BUSY',
        `The machine '${name}' is running (job ${jobId}); stop it before you ${doing}.`,
        { field: 'name', value: name },
      )
  }

  return {
    'machines:list-machines': async () => {
      const machines = await library.machines()
      return {
        machines: machines.map((machine) => ({
          ...machine,
          runningJob: vms.jobOfMachine(machine.name),
        })),
        problems: [...library.machineProblems],
      }
    },

    'machines:save-machine': async ({ machine, previousName, replace }) => {
      if (previousName !== undefined && previousName !== machine.name)
        refuseWhileRunning(previousName, 'rename it')
      const saved = await library.saveMachine(machine, {
        replace,
        ...(previousName !== undefined ? { previousName } : {}),
      })
      return { machine: saved }
    },

    'machines:copy-machine': async ({ name, newName }) => {
      const machine = await library.machine(name)
      return { machine: await library.saveMachine({ ...machine, name: newName }) }
    },

    'machines:remove-machine': async ({ name }) => {
      refuseWhileRunning(name, 'remove it')
      await library.removeMachine(name)
      return { removed: name }
    },

    'machines:get-command': async ({ name, acceptBase }) =>
      vmCommandFor(
        services,
        await machineLaunchOptions(await library.machine(name), library.machineFolder(name)),
        acceptBase,
      ),

    'machines:start-machine': {
      unit: 'steps',
      title: ({ name }) => `Run the machine ${name}`,
      async run({ name, discardChanges, acceptBase }, job) {
        const options = await machineLaunchOptions(
          await library.machine(name),
          library.machineFolder(name),
        )
        vms.claimMachine(name, job.id)
        try {
          return await vms.run(services, job, { ...options, discardChanges }, acceptBase)
        } finally {
          vms.releaseMachine(name, job.id)
        }
      },
    },
  }
}
