import type { FormatDescription } from '../../disk'

/** "ACOW" read as a little-endian u32. */
export const ADD_COW_MAGIC = 0x574f4341

/** Whether `head` starts with the "ACOW" magic (the current layout, and the V18 draft's). */
export function hasAddCowMagic(head: Uint8Array): boolean {
  return (
    head.length >= 4 &&
    new DataView(head.buffer, head.byteOffset, head.byteLength).getUint32(0, true) === ADD_COW_MAGIC
  )
}

/** add-cow (current layout), as the driver table knows it before loading the driver. */
export const ADD_COW_FORMAT: FormatDescription = {
  name: 'add-cow',
  extensions: ['.add-cow', '.addcow'],
  probe: (head) => (hasAddCowMagic(head) ? 100 : 0),
  qemuFormat: 'add-cow',
  sharesClusterSize: true,
}
