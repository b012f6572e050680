import type { FormatDescription } from '../../disk'

/** "OOOM" read as a big-endian u32. */
export const COW_MAGIC = 0x4f4f4f4d

/** Whether the first bytes of a file carry the cow magic (the open names unsupported versions). */
export function looksLikeCow(head: Uint8Array): boolean {
  return (
    head.length >= 8 &&
    new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0, false) === COW_MAGIC
  )
}

/** cow (QEMU's, and user-mode Linux's), as the driver table knows it before loading the driver. */
export const COW_FORMAT: FormatDescription = {
  name: 'cow',
  probe: (head) => (looksLikeCow(head) ? 100 : 0),
}
