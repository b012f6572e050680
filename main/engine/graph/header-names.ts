import { open } from 'node:fs/promises'
import { ADD_COW_MAGIC, FIELDS } from '../formats/add-cow/header'

/**
 * The last-resort reader of a backing name: the header bytes that locate the name, for a file
 * whose driver could not open it (a damaged bitmap, a missing image file). The dependency graph
 * uses it so that an image it cannot read still shows which base it names.
 */

/** Longest backing name read from a header. */
export const MAX_NAME = 4096

async function readAt(
  handle: Awaited<ReturnType<typeof open>>,
  length: number,
  position: number,
): Promise<Buffer> {
  const buffer = Buffer.alloc(length)
  const { bytesRead } = await handle.read(buffer, 0, length, position)
  return buffer.subarray(0, bytesRead)
}

/**
 * The backing name `path` stores, if it is an add-cow, qcow2 or QEMU cow file; null otherwise.
 * Reads only the header bytes that locate the name; any oddity means "not a dependent".
 */
export async function storedBackingName(
  path: string,
): Promise<{ format: 'add-cow' | 'qcow2' | 'cow'; name: string } | null> {
  let handle
  try {
    handle = await open(path, 'r')
    if (!(await handle.stat()).isFile()) return null
    const head = await readAt(handle, 76, 0)
    if (head.length < 8) return null
    if (head.length >= 76 && FIELDS.magic.get(head) === ADD_COW_MAGIC) {
      const offset = FIELDS.backingNameOffset.get(head)
      const length = FIELDS.backingNameLength.get(head)
      if (offset === 0 || length === 0 || length > MAX_NAME) return null
      const name = (await readAt(handle, length, offset)).toString('utf8')
      return name.length > 0 ? { format: 'add-cow', name } : null
    }
    if (head.readUInt32BE(0) === 0x514649fb) {
      // qcow2: backing_file_offset (u64) at 8, backing_file_size (u32) at 16, big-endian.
      if (head.length < 20) return null
      const offset = Number(head.readBigUInt64BE(8))
      const length = head.readUInt32BE(16)
      if (offset === 0 || length === 0 || length > MAX_NAME || !Number.isSafeInteger(offset))
        return null
      const name = (await readAt(handle, length, offset)).toString('utf8')
      return name.length > 0 ? { format: 'qcow2', name } : null
    }
    if (head.readUInt32BE(0) === 0x4f4f4f4d && head.readUInt32BE(4) === 2) {
      // QEMU cow v2: a 1024-byte NUL-terminated backing name at 8.
      const raw = await readAt(handle, 1024, 8)
      const end = raw.indexOf(0)
      const name = raw.subarray(0, end === -1 ? raw.length : end).toString('utf8')
      return name.length > 0 ? { format: 'cow', name } : null
    }
    return null
  } catch {
    return null
  } finally {
    await handle?.close().catch(() => undefined)
  }
}
