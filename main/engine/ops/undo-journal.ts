import { resolve } from 'node:path'
import type { crc32 as Crc32 } from 'node:zlib'
import { EngineError } from '../errors'
import { BlockFile } from '../file'
import { replaceFile } from '../fs'
import type { BaseFingerprint } from '../library'

/**
 * zlib's crc32, loaded by the first journal created or opened: zlib is a few milliseconds of
 * start-up that `addcow info`, which loads this module to describe a journal's state, never
 * needs (issue 15 item 5). Every use is in a journal, so after create() or open().
 */
let crc32: typeof Crc32
async function loadCrc32(): Promise<void> {
  crc32 ??= (await import('node:zlib')).crc32
}

/**
 * The undo journal of a commit (`addcow commit --undo FILE`): the bytes of the base that the
 * commit overwrites, saved before it overwrites them, so `addcow commit --rollback FILE` can
 * put the base back byte for byte and give the overlay its clusters back.
 *
 * Layout (little-endian):
 * - bytes 0..4095: "ACOWUNDO", u32 version 1, u32 JSON length, u32 CRC-32 of the JSON, then the
 *   JSON {@link UndoHeader}; the file is written under a temporary name and renamed into place,
 *   so a journal either has a whole header or does not exist;
 * - then records, appended: a 32-byte head ("UREC", u32 type, u64 offset, u32 length, u32 flags,
 *   u32 CRC-32 of the first 24 head bytes and the payload, u32 0) and `length` payload bytes
 *   for DATA and STATE records. Types: 1 DATA (old bytes of the base's data file at `offset`;
 *   flag 1: those base clusters were allocated, for an add-cow base), 2 STATE (payload: JSON
 *   {@link UndoStateRecord}), 3 RANGE (no payload: overlay bytes [offset, offset + length) were
 *   committed).
 *
 * Every batch is synced before the base is written, so a record is durable before the write it
 * protects. A torn last record (a crash while appending) fails its CRC and is cut off: the base
 * write it would have protected never happened.
 */
export interface UndoHeader {
  kind: 'addcow-commit-undo'
  createdAt: string
  /** Real paths of the overlay's add-cow file and image file. */
  overlay: string
  overlayImage: string
  overlayClusterSize: number
  /** The overlay's format (journals written before it was recorded: add-cow). */
  overlayFormat?: string
  /** Real path and format of the base ('raw', 'add-cow'); the file whose bytes DATA records hold. */
  base: string
  baseFormat: string
  baseDataFile: string
  /**
   * A base that keeps its metadata apart from its data (add-cow): that file, the allocation unit
   * (1 for raw), and the metadata its format saves for a rollback (add-cow: the compatible
   * features before, hex; see Disk.savedState).
   */
  baseMetadataFile: string | null
  baseClusterSize: number
  baseFeaturesBefore: string | null
  /** Sizes before the commit (a commit grows a smaller base to the overlay's size). */
  baseSizeBefore: number
  baseDataFileLengthBefore: number
  baseMetadataLengthBefore: number | null
}

/** Where a journaled commit (or its rollback) stands. */
export type UndoState = 'copying' | 'copied' | 'rolling-back' | 'rolled-back'

/** The payload of a STATE record. */
export interface UndoStateRecord {
  state: Exclude<UndoState, 'copying'>
  at: string
  /** After 'copied': the base's fingerprint once the commit's data was in it. */
  baseAfter?: BaseFingerprint | null
}

/** A DATA record's place in the journal. */
export interface UndoDataRecord {
  offset: number
  length: number
  /** add-cow base: the base clusters were allocated before the commit. */
  allocated: boolean
  /** Where its payload starts in the journal file. */
  payloadAt: number
}

const MAGIC = Buffer.from('ACOWUNDO', 'ascii')

/**
 * Whether `head` (a file's first bytes) starts an undo journal. Its magic begins like add-cow's
 * ("ACOW"), so the dependency graph asks this before taking a journal for a damaged image.
 */
export function isUndoJournalHead(head: Uint8Array): boolean {
  return head.length >= MAGIC.length && MAGIC.equals(head.subarray(0, MAGIC.length))
}
const HEADER_SIZE = 4096
const RECORD_MAGIC = 0x43455255 // "UREC"
const RECORD_HEAD = 32
/** Largest record payload accepted when reading (the writer stays far below). */
const MAX_RECORD = 64 * 1024 * 1024
const TYPE_DATA = 1
const TYPE_STATE = 2
const TYPE_RANGE = 3

function corrupt(path: string, why: string, offset?: number): EngineError {
  return new EngineError('CORRUPT_IMAGE', `${path} is not a usable undo journal: ${why}.`, {
    path,
    field: 'undo journal',
    ...(offset === undefined ? {} : { offset }),
  })
}

function isHeader(value: unknown): value is UndoHeader {
  const header = value as Partial<UndoHeader> | null
  return (
    typeof header === 'object' &&
    header !== null &&
    header.kind === 'addcow-commit-undo' &&
    typeof header.overlay === 'string' &&
    typeof header.overlayImage === 'string' &&
    typeof header.base === 'string' &&
    typeof header.baseFormat === 'string' &&
    typeof header.baseDataFile === 'string' &&
    Number.isSafeInteger(header.overlayClusterSize) &&
    Number.isSafeInteger(header.baseClusterSize) &&
    Number.isSafeInteger(header.baseSizeBefore) &&
    Number.isSafeInteger(header.baseDataFileLengthBefore)
  )
}

/** Sorted, merged, non-overlapping [start, end) intervals. */
export class IntervalSet {
  private readonly list: [number, number][] = []

  add(start: number, end: number): void {
    if (end <= start) return
    const list = this.list
    const index = this.firstEndingAfter(start - 1)
    let from = start
    let to = end
    while (index < list.length && list[index]![0] <= to) {
      from = Math.min(from, list[index]![0])
      to = Math.max(to, list[index]![1])
      list.splice(index, 1)
    }
    list.splice(index, 0, [from, to])
  }

  /** The parts of [start, end) not in the set. */
  missing(start: number, end: number): [number, number][] {
    const result: [number, number][] = []
    let cursor = start
    for (
      let index = this.firstEndingAfter(start);
      index < this.list.length && cursor < end;
      index++
    ) {
      const [from, to] = this.list[index]!
      if (from >= end) break
      if (from > cursor) result.push([cursor, Math.min(from, end)])
      cursor = Math.max(cursor, to)
    }
    if (cursor < end) result.push([cursor, end])
    return result
  }

  get intervals(): readonly [number, number][] {
    return this.list
  }

  /** Index of the first interval whose end is after `position`. */
  private firstEndingAfter(position: number): number {
    let low = 0
    let high = this.list.length
    while (low < high) {
      const middle = (low + high) >>> 1
      if (this.list[middle]![1] > position) high = middle
      else low = middle + 1
    }
    return low
  }
}

/** An open undo journal. */
export class UndoJournal {
  /** Base data-file ranges already saved. */
  readonly saved = new IntervalSet()
  /** Overlay ranges the commit copied into the base. */
  readonly committed = new IntervalSet()
  readonly records: UndoDataRecord[] = []
  state: UndoState = 'copying'
  lastState: UndoStateRecord | null = null
  private pending: Buffer[] = []
  private pendingBytes = 0

  private constructor(
    readonly path: string,
    private readonly file: BlockFile,
    readonly header: UndoHeader,
    private end: number,
  ) {}

  /** Create a new journal at `path` (refusing to overwrite anything). */
  static async create(path: string, header: UndoHeader): Promise<UndoJournal> {
    await loadCrc32()
    const target = resolve(path)
    const json = Buffer.from(JSON.stringify(header), 'utf8')
    if (json.length > HEADER_SIZE - 20) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `The paths recorded in the undo journal ${target} are too long (${json.length} bytes).`,
        {
          path: target,
        },
      )
    }
    const block = Buffer.alloc(HEADER_SIZE)
    MAGIC.copy(block, 0)
    block.writeUInt32LE(1, 8)
    block.writeUInt32LE(json.length, 12)
    block.writeUInt32LE(crc32(json), 16)
    json.copy(block, 20)
    // Linked into place: a journal either has a whole header or does not exist, and an
    // existing journal is never replaced.
    await replaceFile(target, (file) => file.writeAt(block, 0), {
      exclusive: true,
      mode: 0o600,
      doing: 'create the undo journal',
    })
    const file = await BlockFile.open(target, true)
    return new UndoJournal(target, file, header, HEADER_SIZE)
  }

  /**
   * Open an existing journal and read its records. With `writable`, a torn last record is cut
   * off so new records follow the last whole one.
   */
  static async open(path: string, writable: boolean): Promise<UndoJournal> {
    await loadCrc32()
    const target = resolve(path)
    const file = await BlockFile.open(target, writable)
    try {
      const length = await file.length()
      if (length < HEADER_SIZE)
        throw corrupt(
          target,
          `it is ${length} bytes long, shorter than its ${HEADER_SIZE}-byte header`,
        )
      const block = Buffer.alloc(HEADER_SIZE)
      await file.readAt(block, 0)
      if (!block.subarray(0, 8).equals(MAGIC))
        throw corrupt(target, 'it does not start with "ACOWUNDO"')
      const version = block.readUInt32LE(8)
      if (version !== 1) throw corrupt(target, `version ${version} is not 1`)
      const jsonLength = block.readUInt32LE(12)
      if (jsonLength > HEADER_SIZE - 20)
        throw corrupt(target, `header length ${jsonLength} is out of range`)
      const json = block.subarray(20, 20 + jsonLength)
      if (crc32(json) !== block.readUInt32LE(16))
        throw corrupt(target, 'its header checksum does not match')
      let header: unknown
      try {
        header = JSON.parse(json.toString('utf8'))
      } catch {
        throw corrupt(target, 'its header is not JSON')
      }
      if (!isHeader(header)) throw corrupt(target, 'its header lacks required fields')
      const journal = new UndoJournal(target, file, header, HEADER_SIZE)
      const end = await journal.scan(length)
      if (writable && end < length) await file.truncate(end)
      journal.end = end
      return journal
    } catch (error) {
      await file.close().catch(() => undefined)
      throw error
    }
  }

  /** Read records from the header on; returns where the last whole record ends. */
  private async scan(length: number): Promise<number> {
    const head = Buffer.alloc(RECORD_HEAD)
    const chunk = Buffer.allocUnsafe(1024 * 1024)
    let position = HEADER_SIZE
    while (position + RECORD_HEAD <= length) {
      await this.file.readAt(head, position)
      if (head.readUInt32LE(0) !== RECORD_MAGIC) break
      const type = head.readUInt32LE(4)
      const offset = Number(head.readBigUInt64LE(8))
      const size = head.readUInt32LE(16)
      const flags = head.readUInt32LE(20)
      const expected = head.readUInt32LE(24)
      const payloadLength = type === TYPE_RANGE ? 0 : size
      if (![TYPE_DATA, TYPE_STATE, TYPE_RANGE].includes(type) || payloadLength > MAX_RECORD) break
      if (!Number.isSafeInteger(offset) || position + RECORD_HEAD + payloadLength > length) break
      let sum = crc32(head.subarray(0, 24))
      let payload: Buffer | null = type === TYPE_STATE ? Buffer.alloc(payloadLength) : null
      for (let done = 0; done < payloadLength;) {
        const piece = Math.min(chunk.length, payloadLength - done)
        const view = chunk.subarray(0, piece)
        await this.file.readAt(view, position + RECORD_HEAD + done)
        sum = crc32(view, sum)
        payload?.set(view, done)
        done += piece
      }
      if (sum !== expected) break
      if (type === TYPE_DATA) {
        this.records.push({
          offset,
          length: size,
          allocated: (flags & 1) !== 0,
          payloadAt: position + RECORD_HEAD,
        })
        this.saved.add(offset, offset + size)
      } else if (type === TYPE_RANGE) {
        this.committed.add(offset, offset + size)
      } else if (payload) {
        try {
          const record = JSON.parse(payload.toString('utf8')) as UndoStateRecord
          if (['copied', 'rolling-back', 'rolled-back'].includes(record.state)) {
            this.state = record.state
            this.lastState = record
          }
        } catch {
          payload = null
        }
      }
      position += RECORD_HEAD + payloadLength
    }
    return position
  }

  private queue(
    type: number,
    offset: number,
    size: number,
    flags: number,
    payload: Uint8Array | null,
  ): void {
    const head = Buffer.alloc(RECORD_HEAD)
    head.writeUInt32LE(RECORD_MAGIC, 0)
    head.writeUInt32LE(type, 4)
    head.writeBigUInt64LE(BigInt(offset), 8)
    head.writeUInt32LE(size, 16)
    head.writeUInt32LE(flags, 20)
    let sum = crc32(head.subarray(0, 24))
    if (payload) sum = crc32(payload, sum)
    head.writeUInt32LE(sum, 24)
    this.pending.push(head)
    if (payload)
      this.pending.push(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength))
    this.pendingBytes += RECORD_HEAD + (payload?.length ?? 0)
  }

  /** Queue the old bytes of the base's data file at `offset` (written by {@link sync}). */
  addData(offset: number, data: Uint8Array, allocated: boolean): void {
    this.queue(TYPE_DATA, offset, data.length, allocated ? 1 : 0, data)
    this.records.push({ offset, length: data.length, allocated, payloadAt: -1 })
    this.saved.add(offset, offset + data.length)
  }

  /** Queue a note that overlay bytes [offset, offset + length) are being committed. */
  addRange(offset: number, length: number): void {
    this.queue(TYPE_RANGE, offset, length, 0, null)
    this.committed.add(offset, offset + length)
  }

  /** Write the queued records and make them durable. */
  async sync(): Promise<void> {
    if (this.pending.length === 0) return
    const data = Buffer.concat(this.pending, this.pendingBytes)
    this.pending = []
    this.pendingBytes = 0
    await this.file.writeAt(data, this.end)
    this.end += data.length
    await this.file.datasync()
  }

  /** Append a STATE record and make it durable. */
  async setState(record: UndoStateRecord): Promise<void> {
    const payload = Buffer.from(JSON.stringify(record), 'utf8')
    this.queue(TYPE_STATE, 0, payload.length, 0, payload)
    await this.sync()
    this.state = record.state
    this.lastState = record
  }

  /** Read the payload of a DATA record read from disk. */
  async readData(record: UndoDataRecord, target: Buffer): Promise<void> {
    if (record.payloadAt < 0 || target.length !== record.length) {
      throw new EngineError(
        'INTERNAL',
        `Undo record at ${record.offset} of ${this.path} is not readable here.`,
        { path: this.path },
      )
    }
    await this.file.readAt(target, record.payloadAt)
  }

  async close(): Promise<void> {
    await this.file.close()
  }
}
