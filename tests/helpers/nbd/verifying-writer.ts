// A guest stand-in for the live-operation tests: 4 KiB random writes with a known pattern
// (blockData: each block names its write), pipelined through an NBD export, some with FUA, and
// reads checked against what was acknowledged, while a live job runs. It remembers every
// acknowledged write (WriteHistory), so the test can then ask for the exact guest view: each
// block's last acknowledged write, or the base's bytes where none was.
import { setTimeout as sleep } from 'node:timers/promises'
import { seededRandom } from '../numbers'
import { basePattern } from './fixtures'
import { NbdTestClient } from './nbd-test-client'
import { Pipeline } from './pipeline'
import { BLOCK, blockData, WriteHistory } from './write-history'

const FUA = 1

/** What a writer did, for the test's log line. */
export interface WriterCounts {
  writes: number
  acked: number
  fua: number
  flushes: number
  reads: number
}

/**
 * Writes random 4 KiB blocks of [0, blocks) through the export on `socket` until stopped,
 * `depth` requests in flight; the base holds basePattern() over its first `baseBlocks` blocks.
 */
export class VerifyingWriter {
  readonly history: WriteHistory
  readonly counts: WriterCounts = { writes: 0, acked: 0, fua: 0, flushes: 0, reads: 0 }
  private running = false
  private crashing = false
  private loop: Promise<void> | null = null
  private readonly random: () => number

  private constructor(
    private client: NbdTestClient,
    private pipeline: Pipeline,
    readonly blocks: number,
    readonly baseBlocks: number,
    readonly seed: number,
    private readonly depth: number,
  ) {
    this.history = new WriteHistory(blocks, baseBlocks)
    this.random = seededRandom(seed)
  }

  static async connect(
    socket: string,
    options: { blocks: number; baseBlocks: number; seed: number; depth?: number },
  ): Promise<VerifyingWriter> {
    const client = await NbdTestClient.connect(socket)
    await client.negotiate()
    return new VerifyingWriter(
      client,
      new Pipeline(client, true),
      options.blocks,
      options.baseBlocks,
      options.seed,
      options.depth ?? 8,
    )
  }

  /** What the judge found wrong so far (failed requests, reads of stale or unwritten data). */
  get wrong(): string[] {
    return this.history.wrong
  }

  /** Start writing (and reading back) in the background. */
  start(): void {
    this.running = true
    this.loop = this.run()
  }

  /** Stop issuing and wait for every request in flight to be answered. */
  async stop(): Promise<void> {
    this.running = false
    await this.loop
  }

  /** Stop (a dead server fails what was in flight: that is expected) and close the connection. */
  async close(): Promise<void> {
    this.running = false
    await this.loop?.catch(() => undefined)
    this.client.close()
    await this.pipeline.finished
  }

  /**
   * The server is about to be killed: requests failing from now on are expected, not wrong.
   * Follow with {@link close}, then {@link reconnect} to the restarted server.
   */
  expectCrash(): void {
    this.crashing = true
  }

  /**
   * Connect to the restarted server, judge what survived the crash (every block holds its last
   * durable write or one issued after it, never data that was never written) and go on from
   * there. Returns how many blocks held a write that was acknowledged but not yet durable.
   */
  async reconnect(socket: string, when: string): Promise<number> {
    this.client = await NbdTestClient.connect(socket)
    await this.client.negotiate()
    this.pipeline = new Pipeline(this.client, true)
    this.crashing = false
    return this.history.afterCrash(await this.readAll(), when)
  }

  /** Send one request through this writer's connection. */
  send(request: Parameters<Pipeline['send']>[0]): ReturnType<Pipeline['send']> {
    return this.pipeline.send(request)
  }

  /**
   * The guest view the acknowledged writes make: each block's last one, else the original (also
   * for blocks past those this writer writes).
   */
  expected(block: number): Buffer {
    const id = this.history.blocks[block]?.floor ?? 0
    if (id > 0) return blockData(id, block)
    return block < this.baseBlocks ? basePattern(block * BLOCK, BLOCK) : Buffer.alloc(BLOCK)
  }

  /** The blocks of `view` (the disk from byte 0) that differ from {@link expected}, described. */
  mismatches(view: Buffer, limit = 5): string[] {
    const found: string[] = []
    for (let block = 0; block < this.blocks && found.length < limit; block++) {
      const data = view.subarray(block * BLOCK, (block + 1) * BLOCK)
      if (!data.equals(this.expected(block))) {
        const holds = data.readUInt32BE(0)
        found.push(
          `block ${block}: expected write ${this.history.blocks[block]!.floor}, found ${data.equals(blockData(holds, block)) ? `write ${holds}` : 'other bytes'}`,
        )
      }
    }
    return found
  }

  /** Read the whole disk through the export, in 4 MiB requests. */
  async readAll(): Promise<Buffer> {
    const parts: Buffer[] = []
    const step = 1024 * BLOCK
    for (let offset = 0; offset < this.blocks * BLOCK; offset += step) {
      const length = Math.min(step, this.blocks * BLOCK - offset)
      const reply = await this.pipeline.send({ type: 0, offset, length })
      if (reply.error !== 0) throw new Error(`a read at ${offset} failed: ${reply.error}`)
      parts.push(reply.data!)
    }
    return Buffer.concat(parts)
  }

  private async run(): Promise<void> {
    const inFlight = new Set<Promise<void>>()
    const track = (work: Promise<void>): void => {
      const settled = work
        .catch((error: unknown) => {
          if (!this.crashing) this.wrong.push(`a request failed: ${String(error)}`)
        })
        .finally(() => inFlight.delete(settled))
      inFlight.add(settled)
    }
    const history = this.history
    while (this.running) {
      if (inFlight.size >= this.depth) {
        await Promise.race(inFlight)
        continue
      }
      const block = Math.floor(this.random() * this.blocks)
      const roll = this.random()
      if (roll < 0.75 && history.idle(block, 1)) {
        const fua = this.random() < 0.2
        const { id, data } = history.issue(block, 1)
        this.counts.writes++
        if (fua) this.counts.fua++
        track(
          this.pipeline
            .send({ type: 1, flags: fua ? FUA : 0, offset: block * BLOCK, data })
            .then((reply) => {
              if (reply.error !== 0) {
                if (!this.crashing)
                  this.wrong.push(`write ${id} failed: ${reply.error} ${reply.message}`)
                return
              }
              this.counts.acked++
              history.acknowledged(id, block, 1, fua)
            }),
        )
      } else if (roll < 0.8) {
        const flushed = history.flushSent()
        track(
          this.pipeline.send({ type: 3 }).then((reply) => {
            if (reply.error !== 0) return void this.wrong.push(`a flush failed: ${reply.error}`)
            this.counts.flushes++
            flushed()
          }),
        )
      } else {
        const floors = history.floors(block, 1)
        track(
          this.pipeline.send({ type: 0, offset: block * BLOCK, length: BLOCK }).then((reply) => {
            if (reply.error !== 0) return void this.wrong.push(`a read failed: ${reply.error}`)
            this.counts.reads++
            history.judge(reply.data!, block, floors[0]!, 'a read during the live job')
          }),
        )
      }
      // Leave the job some of the event loop: a guest does not write flat out either.
      if (this.random() < 0.2) await sleep(1)
    }
    await Promise.allSettled(inFlight)
  }
}
