// A verifying NBD client for the live-operation tests: 4 KiB writes at random blocks, many in
// flight, each block's content naming the write that made it, and the record of what every
// acknowledged write left, to read back afterwards through any path (the export, addcow,
// qemu-img).
import { Pipeline } from './nbd/pipeline'
import { seededRandom } from './numbers'
import { NbdTestClient } from './nbd/nbd-test-client'
import { BLOCK, blockData } from './nbd/write-history'

const NBD_CMD_WRITE = 1
const NBD_CMD_READ = 0

/** What a writer did: its acknowledged writes, and the pauses its requests saw. */
export interface WriterReport {
  writes: number
  /** The longest time from a write's send to its reply, in ms (the pause a guest sees). */
  longestMs: number
}

/**
 * Writes 4 KiB blocks at random over the first `blocks` blocks with `depth` requests in
 * flight, never two to one block at once (so the last acknowledged write of a block is what
 * it must hold), until {@link stop}. `expected(block)` is the content a block must read back:
 * its last acknowledged write, or `original(block)` when never written.
 */
export class RandomWriter {
  private readonly last = new Map<number, number>()
  private readonly busy = new Set<number>()
  private stopping = false
  private writes = 0
  private longestMs = 0
  private nextId = 1
  private failure: Error | null = null
  private done: Promise<void> = Promise.resolve()
  private random: () => number
  /** [sent, replied] of every acknowledged write (performance.now() ms), when `timed`. */
  readonly timings: [number, number][] = []
  /** Keep {@link timings} (the pause benchmark). */
  timed = false

  private constructor(
    private readonly pipeline: Pipeline,
    private readonly client: NbdTestClient,
    readonly blocks: number,
    private readonly original: (block: number) => Buffer,
    seed: number,
  ) {
    this.random = seededRandom(seed)
  }

  /** Connect to the export on the Unix socket `socket` (structured replies). */
  static async connect(
    socket: string,
    blocks: number,
    original: (block: number) => Buffer,
    seed = 17,
  ): Promise<RandomWriter> {
    const client = await NbdTestClient.connect(socket)
    await client.negotiate({ structured: true, meta: false })
    return new RandomWriter(new Pipeline(client, true), client, blocks, original, seed)
  }

  /** Start writing with `depth` requests in flight. */
  start(depth: number): void {
    this.done = Promise.all(Array.from({ length: depth }, () => this.lane())).then(() => undefined)
  }

  /** Acknowledged writes so far. */
  get count(): number {
    return this.writes
  }

  /** Resolves once `more` further writes were acknowledged. */
  async waitFor(more: number): Promise<void> {
    const target = this.writes + more
    while (this.writes < target && !this.failure) await new Promise((done) => setTimeout(done, 5))
    if (this.failure) throw this.failure
  }

  /** Stop issuing, wait for the writes in flight, and report. */
  async stop(): Promise<WriterReport> {
    this.stopping = true
    await this.done
    if (this.failure) throw this.failure
    return { writes: this.writes, longestMs: this.longestMs }
  }

  /** The longest time a write that was in flight at some point of [from, to] waited, in ms. */
  longestWaitDuring(from: number, to: number): number {
    let longest = 0
    for (const [sent, replied] of this.timings) {
      if (sent <= to && replied >= from) longest = Math.max(longest, replied - sent)
    }
    return longest
  }

  /** What block `block` must hold. */
  expected(block: number): Buffer {
    const id = this.last.get(block)
    return id === undefined ? this.original(block) : blockData(id, block)
  }

  /** The blocks whose content differs from {@link expected} in `view` (a whole-disk image). */
  mismatches(view: Buffer): number[] {
    const wrong: number[] = []
    for (let block = 0; block < this.blocks; block++) {
      const actual = view.subarray(block * BLOCK, (block + 1) * BLOCK)
      if (!actual.equals(this.expected(block))) wrong.push(block)
    }
    return wrong
  }

  /** Read blocks [0, blocks) back through the same connection. */
  async readBack(): Promise<Buffer> {
    const pieces: Buffer[] = []
    const step = 256
    for (let first = 0; first < this.blocks; first += step) {
      const count = Math.min(step, this.blocks - first)
      const reply = await this.pipeline.send({
        type: NBD_CMD_READ,
        offset: first * BLOCK,
        length: count * BLOCK,
      })
      if (reply.error !== 0) throw new Error(`read at block ${first} failed: ${reply.message}`)
      pieces.push(reply.data!)
    }
    return Buffer.concat(pieces)
  }

  close(): void {
    this.client.close()
  }

  private async lane(): Promise<void> {
    while (!this.stopping && !this.failure) {
      const block = this.pickIdle()
      const id = this.nextId++
      this.busy.add(block)
      const sent = performance.now()
      try {
        const reply = await this.pipeline.send({
          type: NBD_CMD_WRITE,
          offset: block * BLOCK,
          length: BLOCK,
          data: blockData(id, block),
        })
        if (reply.error !== 0) throw new Error(`write ${id} to block ${block}: ${reply.message}`)
      } catch (error) {
        this.failure ??= error as Error
        return
      } finally {
        this.busy.delete(block)
      }
      const replied = performance.now()
      this.longestMs = Math.max(this.longestMs, replied - sent)
      if (this.timed) this.timings.push([sent, replied])
      this.last.set(block, id)
      this.writes++
    }
  }

  private pickIdle(): number {
    for (;;) {
      const block = Math.floor(this.random() * this.blocks)
      if (!this.busy.has(block)) return block
    }
  }
}
