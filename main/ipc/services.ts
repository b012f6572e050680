import type { ParsedRequestOf } from '../../shared/ipc/contract'
import type { Library } from '../engine/library'
import type { VmHandle } from '../qemu/launcher'
import type { EventBus } from './events'
import type { ImageReaders } from './image-readers'
import type { JobManager } from './jobs'
import type { LibrarySummaries } from './library-summary'
import type { Logger } from './logger'
import type { RequestSender } from './sender'

// The services the handlers of every area share. This file imports only types, and nothing
// here imports a handler, so the composition root (handlers/index.ts) and the area files
// (handlers/<area>.ts) can all depend on it without forming a cycle.

/** What the shell running the handlers says about itself (for `app:get-info`). */
export interface HostInfo {
  shell: 'electron' | 'web'
  name: string
  version: string
  electronVersion: string | null
  chromeVersion: string | null
}

/** Native open and save dialogs; only the Electron shell has them. */
export interface NativeDialogs {
  openFiles(
    request: ParsedRequestOf<'fs:show-open-dialog'>,
    sender: RequestSender,
  ): Promise<string[]>
  saveFile(
    request: ParsedRequestOf<'fs:show-save-dialog'>,
    sender: RequestSender,
  ): Promise<string | null>
  /** Open the system's file manager on the folder of `path`, with the file selected. */
  showItemInFolder(path: string): void
}

/** The services the handlers use. */
export interface IpcServices {
  library: Library
  /** The disks the map channels read: served ones, or read-only ones kept while unchanged. */
  images: ImageReaders
  /** The library's summaries, kept between lists while the files they read are unchanged. */
  summaries: LibrarySummaries
  jobs: JobManager
  bus: EventBus
  log: Logger
  host: HostInfo
  /** null in the browser mode: the renderer uses its in-app file browser instead. */
  dialogs: NativeDialogs | null
  /**
   * The VMs launched through `qemu:launch-vm` and still running, by job id: the handlers add
   * and remove them; a transport reads it to bridge a VM's screen (only VMs this app started).
   */
  vms: Map<string, VmHandle>
  /** Time a stopping VM gets to power down before QEMU is told to quit (default 15 s). */
  vmStopTimeoutMs?: number
}
