import type { OpenOptions } from '../../disk'
import { EngineError, quote } from '../../errors'
import { BlockFile } from '../../file'
import { judgeName } from '../../names'

/** Magic numbers of disk-image formats, to recognise a file that is not plain raw data. */
const MAGICS: { name: string; offset: number; bytes: number[] }[] = [
  { name: 'qcow2', offset: 0, bytes: [0x51, 0x46, 0x49, 0xfb] },
  { name: 'add-cow', offset: 0, bytes: [0x41, 0x43, 0x4f, 0x57] },
  { name: 'add-cow draft', offset: 0, bytes: [0x41, 0x44, 0x44, 0x5f, 0x43, 0x4f, 0x57, 0xff] },
  { name: 'cow', offset: 0, bytes: [0x4f, 0x4f, 0x4f, 0x4d] },
  { name: 'vmdk', offset: 0, bytes: [0x4b, 0x44, 0x4d, 0x56] },
  { name: 'vmdk', offset: 0, bytes: [...Buffer.from('# Disk DescriptorFile')] },
  { name: 'vdi', offset: 0x40, bytes: [0x7f, 0x10, 0xda, 0xbe] },
  { name: 'vhdx', offset: 0, bytes: [...Buffer.from('vhdxfile')] },
  { name: 'vpc', offset: 0, bytes: [...Buffer.from('conectix')] },
  { name: 'qed', offset: 0, bytes: [0x51, 0x45, 0x44, 0x00] },
  { name: 'luks', offset: 0, bytes: [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe] },
  { name: 'parallels', offset: 0, bytes: [...Buffer.from('WithoutFreeSpace')] },
  { name: 'parallels', offset: 0, bytes: [...Buffer.from('WithouFreSpacExt')] },
  { name: 'bochs', offset: 0, bytes: [...Buffer.from('Bochs Virtual HD Image')] },
]

/** The name of the image format whose magic `head` starts with, or null for plain data. */
export function recognizeImageMagic(head: Uint8Array): string | null {
  for (const magic of MAGICS) {
    if (head.length < magic.offset + magic.bytes.length) continue
    if (magic.bytes.every((byte, index) => head[magic.offset + index] === byte)) return magic.name
  }
  return null
}

/**
 * The format to open a backing file with when the naming image does not record one (QEMU cow,
 * the add-cow drafts, qcow2 without a backing format extension).
 *
 * A raw file is never probed to guess a format (DESIGN.md, "Security rules"): a guest can write
 * any header into its raw disk. So the file is opened as raw when its first bytes carry no known
 * image magic; when they do, the format is ambiguous and the open is refused with a way to record
 * it (`hint`). With `lenient` (info) a warning is added and null returned: the backing is not
 * opened. Names the policy refuses are returned as raw: openBacking refuses them itself.
 */
export async function unrecordedBackingFormat(
  namingFile: string,
  storedName: string,
  options: OpenOptions,
  warnings: string[],
  hint: string,
): Promise<string | null> {
  const verdict = await judgeName(namingFile, storedName, null, options.policy)
  if (!verdict.followed) return 'raw'
  const file = await BlockFile.open(verdict.resolved, false)
  const head = Buffer.alloc(4096)
  try {
    await file.readAt(head, 0)
  } finally {
    await file.close()
  }
  const guess = recognizeImageMagic(head)
  if (guess === null) return 'raw'
  const message = `${namingFile} does not record the format of its backing file ${quote(storedName)}, which starts like a ${guess} image; refusing to guess (a raw disk can hold any header)`
  if (options.lenient) {
    warnings.push(`${message}; the backing file was not opened`)
    return null
  }
  throw new EngineError('UNSUPPORTED_FEATURE', `${message}. ${hint}`, {
    path: namingFile,
    field: 'backing format',
    value: storedName,
  })
}
