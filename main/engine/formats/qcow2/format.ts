import type { FormatDescription } from '../../disk'

/** "QFI\xfb" as a big-endian u32. */
export const QCOW2_MAGIC = 0x514649fb

/**
 * Whether the first bytes of a file carry the qcow2 magic (QEMU's qcow version 1 shares it; the
 * open then names the unsupported version).
 */
export function looksLikeQcow2(head: Uint8Array): boolean {
  return (
    head.length >= 8 &&
    new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0, false) === QCOW2_MAGIC
  )
}

/** qcow2, as the driver table knows it before loading the driver. */
export const QCOW2_FORMAT: FormatDescription = {
  name: 'qcow2',
  extensions: ['.qcow2', '.qcow'],
  probe: (head) => (looksLikeQcow2(head) ? 100 : 0),
}
