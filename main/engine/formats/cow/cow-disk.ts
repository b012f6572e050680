import { stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { ImageInfo, NameResolution } from '../../../../shared/image-types'
import type {
  BackingLink,
  CreatedImage,
  CreateImageOptions,
  Disk,
  FormatDriver,
  OpenOptions,
} from '../../disk'
import { EngineError, quote, wrapIoError } from '../../errors'
import { BlockFile } from '../../file'
import { replaceFile } from '../../fs'
import { judgeName, resolveName, withoutRealPath } from '../../names'
import { BitmapOverlayDisk, loadBitmap } from '../common/bitmap-overlay'
import { encodeQemuCowHeader, parseCowHeader, QEMU_V2_HEADER_SIZE, type CowHeader } from './header'
import { COW_FORMAT } from './format'
import { unrecordedBackingFormat } from '../common/unrecorded-format'

/** Bytes read for the header (the unpacked UML layout is the longest, 4136 bytes). */
const HEAD_BYTES = 8192

/** Seconds of a file's modification time, or null when it cannot be read. */
async function mtimeSeconds(path: string): Promise<number | null> {
  try {
    return Math.floor((await stat(path)).mtimeMs / 1000)
  } catch {
    return null
  }
}

/**
 * Open a COW file: QEMU's version 2 (read and write) or user-mode Linux's version 3 (read
 * only). Data lives inside the cow file after the bitmap, one bitmap bit per sector. The
 * backing file's format is not recorded: QEMU cow backing files are opened as raw unless they
 * carry another format's magic (then the open is refused rather than guessed); UML backing
 * files are raw by definition. A backing file whose mtime differs from the recorded one is
 * reported in `info` warnings (the base may have changed under the overlay).
 */
export async function openCow(path: string, options: OpenOptions): Promise<BitmapOverlayDisk> {
  const file = await BlockFile.open(path, !options.readOnly)
  let backing: Disk | null = null
  let backingLink: BackingLink | null = null
  try {
    const fileLength = await file.length()
    const head = Buffer.alloc(Math.min(fileLength, HEAD_BYTES))
    await file.readAt(head, 0)
    const header = parseCowHeader(head, path)
    if (header.version === 3 && !options.readOnly) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${path} is a user-mode Linux COW version 3 file, which this tool reads but never writes.`,
        { path, field: 'version', value: 3 },
      )
    }
    const sectors = Math.ceil(header.size / header.sectorSize)
    const bitmap = await loadBitmap(
      file,
      path,
      header.bitmapOffset,
      sectors,
      fileLength,
      'cow sector',
    )
    const warnings: string[] = []
    const names: NameResolution[] = []
    if (header.backingName !== null) {
      const name = header.backingName
      const format =
        header.version === 3
          ? 'raw'
          : await unrecordedBackingFormat(
              path,
              name,
              options,
              warnings,
              'cow files cannot record a backing format.',
            )
      const verdict = await judgeName(path, name, format, options.policy)
      names.push(withoutRealPath(verdict))
      if (!verdict.followed)
        warnings.push(`the name ${quote(name)} would not be followed (${verdict.reason})`)
      if (format !== null) backing = await options.openBacking(path, name, format)
      backingLink = { name, format }
      if (verdict.reason !== 'missing') {
        const actual = await mtimeSeconds(verdict.resolved)
        if (actual !== null && actual !== header.mtime) {
          warnings.push(
            `the backing file's mtime (${new Date(actual * 1000).toISOString()}) differs from the one recorded (${new Date(header.mtime * 1000).toISOString()}): the base may have changed since the overlay was made`,
          )
        }
      }
    }
    return new BitmapOverlayDisk({
      path,
      format: 'cow',
      size: header.size,
      unit: header.sectorSize,
      bitmap,
      metaFile: file,
      bitmapOffset: header.bitmapOffset,
      dataFile: file,
      dataOffset: header.dataOffset,
      backing,
      writable: !options.readOnly,
      allAllocated: false,
      describe: (disk) => describeCow(disk, file, header, names, warnings),
      backingLink,
      files: [path],
    })
  } catch (error) {
    await backing?.close().catch(() => undefined)
    await file.close().catch(() => undefined)
    throw error
  }
}

async function describeCow(
  disk: BitmapOverlayDisk,
  file: BlockFile,
  header: CowHeader,
  names: NameResolution[],
  warnings: string[],
): Promise<ImageInfo> {
  const info: ImageInfo = {
    filename: disk.path,
    format: 'cow',
    'virtual-size': disk.size,
    'actual-size': await file.allocatedBytes(),
    'allocated-clusters': disk.allocatedUnits,
    'total-clusters': disk.totalUnits,
    'format-specific': {
      type: 'cow',
      data: {
        version: header.version,
        layout: header.layout,
        'sector-size': header.sectorSize,
        'backing-mtime': header.mtime,
        'bitmap-offset': header.bitmapOffset,
        'data-offset': header.dataOffset,
      },
    },
    names,
  }
  if (header.backingName !== null) {
    info['backing-filename'] = header.backingName
    info['full-backing-filename'] = names[0]?.resolved ?? header.backingName
    if (disk.backing) info['backing-filename-format'] = disk.backing.format
  }
  if (warnings.length > 0) info.warnings = [...warnings]
  return info
}

/** What {@link createCow} needs. */
export interface CreateCowOptions {
  /** Path of the new cow file (must not exist). */
  path: string
  /** Virtual size; default: the backing file's length. */
  size?: number
  /** Backing file name as stored (relative names resolve against the cow file's folder). */
  backing?: string
}

/**
 * Create a QEMU cow (version 2) file: the header (with the backing file's mtime) and a zero
 * bitmap; the data area grows sparsely as sectors are written. Written under a temporary name
 * and linked into place, so an error leaves nothing behind and an existing file is never
 * replaced.
 */
export async function createCow(
  options: CreateCowOptions,
): Promise<{ path: string; size: number }> {
  const path = resolve(options.path)
  let mtime = 0
  let size = options.size
  if (options.backing !== undefined) {
    const backingPath = resolveName(path, options.backing)
    let info
    try {
      info = await stat(backingPath)
    } catch (error) {
      throw wrapIoError(error, backingPath, 'read the backing file')
    }
    mtime = Math.floor(info.mtimeMs / 1000)
    size ??= info.size
  }
  if (size === undefined || !Number.isSafeInteger(size) || size < 0) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `A size is needed to create ${path} without a backing file.`,
      {
        path,
        field: 'size',
        value: size,
      },
    )
  }
  const header = encodeQemuCowHeader(size, options.backing ?? null, mtime, path)
  const bitmapBytes = Math.ceil(Math.ceil(size / 512) / 8)
  await replaceFile(
    path,
    async (file) => {
      await file.writeAt(header, 0)
      await file.truncate(QEMU_V2_HEADER_SIZE + bitmapBytes)
    },
    { exclusive: true, doing: 'create' },
  )
  return { path, size }
}

/** The cow driver: QEMU cow version 2 (read/write) and user-mode Linux COW version 3 (read). */
export const cowDriver: FormatDriver = {
  ...COW_FORMAT,
  open: (path, options) => openCow(path, options),
  async create(options: CreateImageOptions): Promise<CreatedImage> {
    const created = await createCow({
      path: options.path,
      ...(options.size !== undefined ? { size: options.size } : {}),
      ...(options.backing ? { backing: options.backing.name } : {}),
    })
    return { ...created, files: [created.path], created: [created.path], clusterSize: 512 }
  },
}
