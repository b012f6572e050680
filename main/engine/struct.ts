import { EngineError } from './errors'

/**
 * One fixed-position field of an on-disk header, described once so that parsing and writing
 * derive from the same table (the idea of token-types). `offset` and `length` are bytes.
 */
export interface FieldSpec<T> {
  readonly name: string
  readonly offset: number
  readonly length: number
  get(buffer: Uint8Array, base?: number): T
  put(buffer: Uint8Array, value: T, base?: number): void
}

function view(buffer: Uint8Array): DataView {
  return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
}

/** Unsigned 32-bit integer field. */
export function u32(name: string, offset: number, littleEndian: boolean): FieldSpec<number> {
  return {
    name,
    offset,
    length: 4,
    get: (buffer, base = 0) => view(buffer).getUint32(base + offset, littleEndian),
    put: (buffer, value, base = 0) => view(buffer).setUint32(base + offset, value, littleEndian),
  }
}

/** Signed 32-bit integer field. */
export function i32(name: string, offset: number, littleEndian: boolean): FieldSpec<number> {
  return {
    name,
    offset,
    length: 4,
    get: (buffer, base = 0) => view(buffer).getInt32(base + offset, littleEndian),
    put: (buffer, value, base = 0) => view(buffer).setInt32(base + offset, value, littleEndian),
  }
}

/** Unsigned 64-bit integer field, as a bigint (feature masks and sizes beyond 2^53). */
export function u64(name: string, offset: number, littleEndian: boolean): FieldSpec<bigint> {
  return {
    name,
    offset,
    length: 8,
    get: (buffer, base = 0) => view(buffer).getBigUint64(base + offset, littleEndian),
    put: (buffer, value, base = 0) => view(buffer).setBigUint64(base + offset, value, littleEndian),
  }
}

/** Unsigned 16-bit integer field. */
export function u16(name: string, offset: number, littleEndian: boolean): FieldSpec<number> {
  return {
    name,
    offset,
    length: 2,
    get: (buffer, base = 0) => view(buffer).getUint16(base + offset, littleEndian),
    put: (buffer, value, base = 0) => view(buffer).setUint16(base + offset, value, littleEndian),
  }
}

/** Raw bytes field (strings are decoded by the format, which knows its own rules). */
export function bytes(name: string, offset: number, length: number): FieldSpec<Uint8Array> {
  return {
    name,
    offset,
    length,
    get: (buffer, base = 0) => buffer.subarray(base + offset, base + offset + length),
    put: (buffer, value, base = 0) => {
      if (value.length > length) throw new RangeError(`${name}: ${value.length} > ${length} bytes`)
      buffer.fill(0, base + offset, base + offset + length)
      buffer.set(value, base + offset)
    },
  }
}

/**
 * Turn a u64 read from a file into a safe number, or throw naming the file and field.
 * Sizes and offsets beyond 2^53 cannot be addressed by this engine and are refused.
 */
export function safeNumber(value: bigint, path: string, field: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new EngineError(
      'SIZE_LIMIT',
      `${field} ${value} in ${path} is larger than this tool can address (2^53 - 1).`,
      { path, field, value: value.toString() },
    )
  }
  return Number(value)
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** Decode UTF-8 bytes, or return null when they are not valid UTF-8. */
export function decodeUtf8(data: Uint8Array): string | null {
  try {
    return utf8.decode(data)
  } catch {
    return null
  }
}
