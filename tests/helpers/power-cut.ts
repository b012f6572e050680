import { readFile, writeFile } from 'node:fs/promises'
import { EngineError } from '../../main/engine/errors'
import type { FileEvent, FileObserver } from '../../main/engine/file'

/**
 * A model of a power cut for crash-ordering tests, installed as the file layer's observer
 * (main/engine/file.ts, setFileObserver).
 *
 * Killing a process loses nothing the kernel already has, so real crashes cannot show a missing
 * sync. This model keeps, for every tracked file, its durable content (as of its last completed
 * sync) and the writes issued since. A sync makes durable exactly the writes that had completed
 * when it started. The cut comes after a chosen number of file calls: from then on every call
 * fails, including calls already in flight when they complete (the machine is off). `crash()`
 * then builds what the disk could hold after the cut: the durable content plus any subset of
 * the unsynced writes, applied in issue order, the way a page cache may have written back some
 * of them and not others.
 */
export class PowerCut implements FileObserver {
  private readonly files = new Map<string, TrackedFile>()
  private readonly inFlight = new Map<FileEvent, PendingWrite>()
  private readonly syncs = new Map<FileEvent, PendingWrite[]>()
  private calls = 0
  private sequence = 0
  /** Whether the cut has happened. */
  cut = false

  private constructor(private readonly cutAfter: number) {}

  /**
   * Start tracking `paths` (their current content is taken as durable); the cut falls after
   * `cutAfter` calls on them (Infinity: only when `crash()` is called).
   */
  static async track(paths: string[], cutAfter: number): Promise<PowerCut> {
    const model = new PowerCut(cutAfter)
    for (const path of paths) model.files.set(path, { durable: await readFile(path), pending: [] })
    return model
  }

  /** Calls made on tracked files before the cut. */
  get callCount(): number {
    return this.calls
  }

  before(event: FileEvent): void {
    const file = this.files.get(event.path)
    if (!file) return
    if (this.cut || this.calls >= this.cutAfter) {
      this.cut = true
      throw new EngineError(
        'IO_ERROR',
        `Simulated power cut before a ${event.kind} of ${event.path}.`,
        { path: event.path },
      )
    }
    this.calls++
    if (event.kind === 'write') {
      const write: PendingWrite = {
        sequence: this.sequence++,
        position: event.position,
        data: Buffer.from(event.data),
        completed: false,
      }
      file.pending.push(write)
      this.inFlight.set(event, write)
    } else if (event.kind === 'sync') {
      this.syncs.set(
        event,
        file.pending.filter((write) => write.completed),
      )
    } else {
      throw new Error(`the power-cut model does not handle ${event.kind}`)
    }
  }

  after(event: FileEvent): void {
    const file = this.files.get(event.path)
    if (!file) return
    if (this.cut) {
      throw new EngineError(
        'IO_ERROR',
        `Simulated power cut during a ${event.kind} of ${event.path}.`,
        { path: event.path },
      )
    }
    if (event.kind === 'write') {
      const write = this.inFlight.get(event)
      if (write) write.completed = true
      this.inFlight.delete(event)
    } else if (event.kind === 'sync') {
      const synced = new Set(this.syncs.get(event) ?? [])
      this.syncs.delete(event)
      for (const write of file.pending) if (synced.has(write)) apply(file.durable, write)
      file.pending = file.pending.filter((write) => !synced.has(write))
    }
  }

  /** Cut the power now (if not yet), and return what each tracked file may hold afterwards. */
  crash(random: () => number): Map<string, Buffer> {
    this.cut = true
    const result = new Map<string, Buffer>()
    for (const [path, file] of this.files) {
      const content = Buffer.from(file.durable)
      for (const write of file.pending) if (random() < 0.5) apply(content, write)
      result.set(path, content)
    }
    return result
  }

  /** Write the crashed contents back to the files (with the observer removed). */
  static async restore(contents: Map<string, Buffer>): Promise<void> {
    for (const [path, content] of contents) await writeFile(path, content)
  }
}

interface PendingWrite {
  sequence: number
  position: number
  data: Buffer
  completed: boolean
}

interface TrackedFile {
  durable: Buffer
  pending: PendingWrite[]
}

function apply(content: Buffer, write: PendingWrite): void {
  // The engine never changes the length of an open image's files; a write past the end would
  // mean the model is wrong.
  if (write.position + write.data.length > content.length) {
    throw new Error(
      `a write of ${write.data.length} bytes at ${write.position} runs past the file's end`,
    )
  }
  write.data.copy(content, write.position)
}
