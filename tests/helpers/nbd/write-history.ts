// What a writer issued, had acknowledged and made durable, block by block, and the judge of
// what a block may hold afterwards: used by the power-cut test and the kill -9 loop.
import { basePattern } from './fixtures'

/** Bytes of a block: each write covers whole blocks, each block names its write. */
export const BLOCK = 4096
const MARK = 0x6b696c6c

/** The content of block `block` as write `id` leaves it: 16-byte records naming both. */
export function blockData(id: number, block: number): Buffer {
  const data = Buffer.alloc(BLOCK)
  for (let at = 0; at < BLOCK; at += 16) {
    data.writeUInt32BE(id, at)
    data.writeUInt32BE(block, at + 4)
    data.writeUInt32BE(~id >>> 0, at + 8)
    data.writeUInt32BE(MARK, at + 12)
  }
  return data
}

/** What the writer knows of one block. */
interface BlockHistory {
  /** Ids of the writes issued to it, in order (ids grow). */
  issued: number[]
  /** The newest write a flush or FUA made durable (0: none, the base). */
  durable: number
  /** Reads must not return anything older (read-after-acknowledgement). */
  floor: number
  /** A write to it is in flight (never two at once, so their order is known). */
  busy: boolean
}

/**
 * The writes of a test over `count` blocks whose original content is basePattern() for the
 * first `baseBlocks` (the base) and zeros beyond. A block may hold its newest durable write or
 * any write issued after it, never anything older, and never anything that was not written.
 */
export class WriteHistory {
  readonly blocks: BlockHistory[]
  /** What the judge found wrong, one sentence each. */
  readonly wrong: string[] = []
  private nextId = 1

  constructor(
    count: number,
    private readonly baseBlocks = count,
  ) {
    this.blocks = Array.from({ length: count }, () => ({
      issued: [],
      durable: 0,
      floor: 0,
      busy: false,
    }))
  }

  /** Whether no write to blocks [first, first + count) is in flight. */
  idle(first: number, count: number): boolean {
    return this.blocks.slice(first, first + count).every((block) => !block.busy)
  }

  /** Issue a write to blocks [first, first + count): its id and data. */
  issue(first: number, count: number): { id: number; data: Buffer } {
    const id = this.nextId++
    const parts: Buffer[] = []
    for (let block = first; block < first + count; block++) {
      this.blocks[block]!.issued.push(id)
      this.blocks[block]!.busy = true
      parts.push(blockData(id, block))
    }
    return { id, data: Buffer.concat(parts) }
  }

  /** The write `id` to [first, first + count) was acknowledged (durable with FUA). */
  acknowledged(id: number, first: number, count: number, fua: boolean): void {
    for (const block of this.blocks.slice(first, first + count)) {
      block.busy = false
      block.floor = id
      if (fua) block.durable = id
    }
  }

  /** A flush is sent now; call the result when it succeeded (it covers what was acknowledged). */
  flushSent(): () => void {
    const covered = this.blocks.map((block) => block.floor)
    return () =>
      covered.forEach((id, index) => {
        const block = this.blocks[index]!
        block.durable = Math.max(block.durable, id)
      })
  }

  /** The floors reads of blocks [first, first + count) must respect, taken when they are sent. */
  floors(first: number, count: number): number[] {
    return this.blocks.slice(first, first + count).map((block) => block.floor)
  }

  /**
   * Judge block `block`'s content: it must come from a write issued to it (or be the base) and
   * be no older than `minimum`. Returns its write id (0: the base, -1: never written).
   */
  judge(data: Buffer, block: number, minimum: number, when: string): number {
    const id = this.writeIdOf(data, block)
    const history = this.blocks[block]!
    if (id < 0 || (id > 0 && !history.issued.includes(id)))
      this.wrong.push(`${when}: block ${block} holds data that was never written`)
    else if (id < minimum)
      this.wrong.push(`${when}: block ${block} holds write ${id}, older than ${minimum}`)
    return id
  }

  /** Which write a block's content comes from: 0 for the original, -1 for anything else. */
  private writeIdOf(data: Buffer, block: number): number {
    const original = block < this.baseBlocks ? basePattern(block * BLOCK, BLOCK) : null
    if (original ? data.equals(original) : data.every((byte) => byte === 0)) return 0
    const id = data.readUInt32BE(0)
    return id > 0 && data.equals(blockData(id, block)) ? id : -1
  }

  /**
   * After a crash: judge every block of `data` (blocks from 0) against its durable write, and
   * start again from what survived. Returns how many blocks held an unflushed write.
   */
  afterCrash(data: Buffer, when: string): number {
    let newer = 0
    this.blocks.forEach((history, block) => {
      const id = this.judge(
        data.subarray(block * BLOCK, (block + 1) * BLOCK),
        block,
        history.durable,
        when,
      )
      if (id > history.durable) newer++
      history.floor = Math.max(history.durable, id)
      history.busy = false
    })
    return newer
  }
}
