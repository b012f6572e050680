/**
 * Every IPC channel and event name, and nothing else.
 *
 * This file imports nothing, so the sandboxed preload can bundle it without pulling in zod or
 * the schemas. Channel names follow `area:verb-noun`, and the area names the file of the
 * handler: `main/ipc/handlers/<area>.ts`. The keys (the area and the verb-noun in camelCase)
 * are the names of the functions the preload exposes on `window.addcow`. Adding a channel here
 * without a schema in `contract.ts` and a handler in its area's file fails to compile.
 */
export const CHANNELS = {
  libraryListImages: 'library:list-images',
  libraryAddImages: 'library:add-images',
  libraryRemoveImages: 'library:remove-images',
  libraryListRecent: 'library:list-recent',
  libraryApproveName: 'library:approve-name',
  libraryRecordFingerprint: 'library:record-fingerprint',
  libraryDeleteFiles: 'library:delete-files',
  libraryLocateBase: 'library:locate-base',
  imageGetInfo: 'image:get-info',
  imageGetMap: 'image:get-map',
  imageGetAllocation: 'image:get-allocation',
  imageFindWritten: 'image:find-written',
  imageGetBlastRadius: 'image:get-blast-radius',
  imageGetBaseState: 'image:get-base-state',
  imageGetCommitState: 'image:get-commit-state',
  operationsCreateOverlay: 'operations:create-overlay',
  operationsCompareImages: 'operations:compare-images',
  operationsCheckImage: 'operations:check-image',
  operationsCommitOverlay: 'operations:commit-overlay',
  operationsRollbackCommit: 'operations:rollback-commit',
  operationsStreamOverlay: 'operations:stream-overlay',
  operationsRebaseOverlay: 'operations:rebase-overlay',
  operationsResetOverlay: 'operations:reset-overlay',
  qemuGetCommand: 'qemu:get-command',
  qemuExportCommand: 'qemu:export-command',
  qemuLaunchVm: 'qemu:launch-vm',
  qemuStopVm: 'qemu:stop-vm',
  qemuPowerVm: 'qemu:power-vm',
  qemuWriteConsole: 'qemu:write-console',
  qemuGetConsole: 'qemu:get-console',
  qemuGetCapabilities: 'qemu:get-capabilities',
  qemuSnapshotVm: 'qemu:snapshot-vm',
  qemuFlattenVm: 'qemu:flatten-vm',
  qemuCommitVm: 'qemu:commit-vm',
  qemuGetLiveStatus: 'qemu:get-live-status',
  qemuGetLiveCommitRadius: 'qemu:get-live-commit-radius',
  machinesListMachines: 'machines:list-machines',
  machinesSaveMachine: 'machines:save-machine',
  machinesCopyMachine: 'machines:copy-machine',
  machinesRemoveMachine: 'machines:remove-machine',
  machinesGetCommand: 'machines:get-command',
  machinesStartMachine: 'machines:start-machine',
  nbdServeImage: 'nbd:serve-image',
  nbdStopExport: 'nbd:stop-export',
  fsListFolder: 'fs:list-folder',
  fsListRoots: 'fs:list-roots',
  fsShowOpenDialog: 'fs:show-open-dialog',
  fsShowSaveDialog: 'fs:show-save-dialog',
  fsShowInFolder: 'fs:show-in-folder',
  jobsListJobs: 'jobs:list-jobs',
  jobsCancelJob: 'jobs:cancel-job',
  jobsClearFinished: 'jobs:clear-finished',
  appGetInfo: 'app:get-info',
} as const

/**
 * The Electron app's graphical console, outside the request/response contract because what
 * it carries is a MessagePort, not JSON: the renderer asks for a VM's screen (`request`,
 * `{ jobId, nonce }`), main answers on `port` with `{ nonce }` and the port (or `{ nonce,
 * error }`), and the preload hands the port to the page with window.postMessage. The browser
 * mode uses its `/vnc` WebSocket endpoint instead.
 */
export const SCREEN_PORT_CHANNELS = {
  request: 'qemu:open-screen-port',
  port: 'qemu:screen-port',
} as const

/** The name of the preload function for a channel (a key of {@link CHANNELS}). */
export type ChannelKey = keyof typeof CHANNELS

/** One IPC request channel name. */
export type Channel = (typeof CHANNELS)[ChannelKey]

/**
 * Every event main pushes to the renderer. Events carry no reply; each has a payload schema in
 * `contract.ts`.
 */
export const EVENTS = {
  jobStarted: 'jobs:started',
  jobProgress: 'jobs:progress',
  jobDone: 'jobs:done',
  jobFailed: 'jobs:failed',
  libraryChanged: 'library:changed',
  menuCommand: 'app:menu-command',
  filesDropped: 'app:files-dropped',
  consoleOutput: 'qemu:console-output',
  vmState: 'qemu:vm-state',
} as const

/** One event name. */
export type EventName = (typeof EVENTS)[keyof typeof EVENTS]

/** Every channel name, in declaration order. */
export const CHANNEL_NAMES: readonly Channel[] = Object.values(CHANNELS)

/** Every event name, in declaration order. */
export const EVENT_NAMES: readonly EventName[] = Object.values(EVENTS)

/** Whether `value` names a channel (used on untrusted input before any lookup). */
export function isChannel(value: unknown): value is Channel {
  return typeof value === 'string' && (CHANNEL_NAMES as readonly string[]).includes(value)
}

/** Whether `value` names an event. */
export function isEventName(value: unknown): value is EventName {
  return typeof value === 'string' && (EVENT_NAMES as readonly string[]).includes(value)
}
