import { BlockFile } from '../file'

/**
 * Early writeback for a long copy into one file: after every `every` bytes the copy reports,
 * an fdatasync of the file starts (one at a time) and the copy goes on without waiting for it.
 * The disk then writes while the copy still runs, so the sync the copy must wait for before it
 * records what it copied finds little left to write. The kernel would start on its own only
 * past its dirty threshold (10% of memory by default), after the copy is done.
 *
 * The early syncs go through a file description of their own. Linux reports a writeback error
 * to each open file description once: had an early sync on the copy's own descriptor seen an
 * error, the copy's next sync there would succeed and record data that never reached the disk.
 * An early sync's failure is also kept and thrown by {@link settle}. {@link durably} runs the
 * sync the caller relies on once the early one in flight has ended, none starting meanwhile.
 */
export class EarlyWriteback {
  private since = 0
  private inFlight: Promise<void> | null = null
  private failure: { error: unknown } | null = null
  private held = 0

  private constructor(
    private readonly file: BlockFile,
    private readonly every: number,
  ) {}

  /** Early writeback of the file at `path`, an fdatasync after every `every` bytes. */
  static async open(path: string, every: number): Promise<EarlyWriteback> {
    return new EarlyWriteback(await BlockFile.open(path, false), every)
  }

  /** `bytes` more were written into the file. */
  wrote(bytes: number): void {
    this.since += bytes
    if (this.since < this.every || this.inFlight || this.held > 0 || this.failure) return
    this.since = 0
    this.inFlight = this.file.datasync().then(
      () => {
        this.inFlight = null
      },
      (error: unknown) => {
        this.failure ??= { error }
        this.inFlight = null
      },
    )
  }

  /** Wait for the early sync in flight; throw the first one that failed. */
  async settle(): Promise<void> {
    await this.inFlight
    if (this.failure) throw this.failure.error
  }

  /** Run `sync` (a sync the caller relies on) once early syncs are settled, none starting meanwhile. */
  async durably<T>(sync: () => Promise<T>): Promise<T> {
    this.held++
    try {
      await this.settle()
      return await sync()
    } finally {
      this.held--
    }
  }

  /** Wait for the early sync in flight (its failure is not thrown here), then close. */
  async close(): Promise<void> {
    await this.inFlight
    await this.file.close()
  }
}
