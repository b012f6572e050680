import type { ImageInfo, NameResolution } from '../../../../shared/image-types'
import type { Disk, FormatDescription, FormatDriver, OpenOptions } from '../../disk'
import { bounded, EngineError, quote } from '../../errors'
import { BlockFile } from '../../file'
import { assertFollowable, judgeName, withoutRealPath } from '../../names'
import {
  assertBitmapFits,
  BitmapOverlayDisk,
  loadBitmap,
  type BitmapOverlayLayout,
} from '../common/bitmap-overlay'
import { unrecordedBackingFormat } from '../common/unrecorded-format'
import { imageFormatIssue } from '../add-cow/header'
import {
  ADD_COW_V12_FORMAT,
  ADD_COW_V18_FORMAT,
  ADD_COW_V3_FORMAT,
  ADD_COW_V7_FORMAT,
  v3FileLength,
  type DraftLayout,
} from './format'
import { parseV12, parseV18, parseV3orV7, type DraftHeader } from './layouts'

/** Largest header read (V18 with 2 MiB clusters, V12 with 512 pages). */
const HEAD_BYTES = 2 * 1024 * 1024

/** The draft's own description, for `info` and for the upgrade. */
export interface DraftDescription {
  header: DraftHeader
  /** The image file as resolved. */
  imagePath: string
  /** The backing format used to open the backing file (recorded, or decided for an unrecorded one). */
  backingFormat: string | null
  names: NameResolution[]
  warnings: string[]
}

/**
 * A read-only disk in an earlier add-cow draft layout. Its image file holds the data at guest
 * offsets, as in the current layout, which is what the upgrade builds on.
 */
export class DraftDisk extends BitmapOverlayDisk {
  constructor(
    layout: BitmapOverlayLayout,
    /** What the draft records. */
    readonly draft: DraftDescription,
  ) {
    super(layout)
  }

  /** The image file (read-only here): allocated data at guest offsets. */
  dataFile(): BlockFile {
    return this.layout.dataFile
  }

  /** The draft's all-allocated flag: the backing file is never read. */
  isAllAllocated(): boolean {
    return this.layout.allAllocated
  }
}

function parseDraft(layout: DraftLayout, head: Uint8Array, path: string): DraftHeader {
  switch (layout) {
    case 'add-cow-v18':
      return parseV18(head, path)
    case 'add-cow-v12':
      return parseV12(head, path)
    default:
      return parseV3orV7(head, path, layout)
  }
}

const LABELS: Record<DraftLayout, string> = {
  'add-cow-v18': 'V18 (2013)',
  'add-cow-v12': 'V12 (2012)',
  'add-cow-v7': 'v7 (2012)',
  'add-cow-v3': 'v3 (2011)',
}

/**
 * Open an add-cow file in an earlier draft layout, read-only: the image file through the
 * chain's data-file judgement, the backing file through the name policy (with the recorded
 * format, or raw when the layout records none and the file carries no other format's magic).
 */
export async function openDraft(
  layout: DraftLayout,
  path: string,
  options: OpenOptions,
): Promise<DraftDisk> {
  if (!options.readOnly) {
    throw new EngineError(
      'NOT_CAPABLE',
      `${path} uses the earlier add-cow draft layout ${LABELS[layout]}, which this tool never writes; upgrade it with: addcow amend --upgrade '${path}'.`,
      { path, field: 'format', value: layout },
    )
  }
  const meta = await BlockFile.open(path, false)
  const opened: { close(): Promise<void> }[] = [meta]
  try {
    const metaLength = await meta.length()
    const head = Buffer.alloc(Math.min(metaLength, HEAD_BYTES))
    await meta.readAt(head, 0)
    const header = parseDraft(layout, head, path)
    const unsupported = imageFormatIssue(path, header.imageFormat)
    if (unsupported?.error) throw unsupported.error
    const warnings = [
      `earlier add-cow draft layout ${LABELS[layout]}: read-only here; upgrade with addcow amend --upgrade`,
    ]
    const names: NameResolution[] = []
    const imageVerdict = await options.judgeDataFile(path, header.imageName, header.imageFormat)
    // A draft has no inspection view without its image file: a refused one (a device, a FIFO,
    // the file itself) is an error here even on a lenient open, and is never opened.
    assertFollowable(path, 'image file', imageVerdict)
    const image = await BlockFile.open(imageVerdict.resolved, false)
    opened.push(image)
    const imageLength = await image.length()
    const size = header.storedSize ?? imageLength
    if (header.storedSize !== null && header.storedSize !== imageLength) {
      warnings.push(
        `the image file is ${imageLength} bytes long but the header records a virtual size of ${header.storedSize}`,
      )
    }
    const units = Math.ceil(size / header.unit)
    const expectedLength =
      layout === 'add-cow-v3' ? v3FileLength(size) : header.bitmapOffset + Math.ceil(units / 8)
    if ((layout === 'add-cow-v3' || layout === 'add-cow-v7') && metaLength !== expectedLength) {
      warnings.push(`the file is ${metaLength} bytes long; its layout expects ${expectedLength}`)
    }

    let backing: Disk | null = null
    let backingFormat: string | null = header.backingFormat
    if (header.backingName !== null) {
      const name = header.backingName
      backingFormat ??= await unrecordedBackingFormat(
        path,
        name,
        options,
        warnings,
        'Upgrade the file with addcow amend --upgrade after checking the base, or rebase it.',
      )
      let verdict = await judgeName(path, name, backingFormat, options.policy)
      if (verdict.reason !== 'missing' && verdict.realPath === imageVerdict.realPath) {
        if (!options.lenient) {
          throw new EngineError(
            'SAME_FILE',
            `The image file ${quote(header.imageName)} and the backing file ${quote(name)} of ${path} are the same file (${bounded(imageVerdict.realPath)}).`,
            { path, field: 'image name', value: header.imageName },
          )
        }
        // Inspection: the image file is read; the base, the same file, is shown and not followed.
        verdict = { ...verdict, followed: false, reason: 'same-file' }
      }
      names.push(withoutRealPath(verdict))
      if (!verdict.followed)
        warnings.push(`the name ${quote(name)} would not be followed (${verdict.reason})`)
      if (
        verdict.reason !== 'same-file' &&
        backingFormat !== null &&
        (!header.allAllocated || options.lenient)
      ) {
        backing = await options.openBacking(path, name, backingFormat)
        if (backing) opened.push(backing)
      }
    }
    names.push(withoutRealPath(imageVerdict))
    if (header.allAllocated) {
      assertBitmapFits(path, header.bitmapOffset, Math.ceil(units / 8), metaLength, 'allocation')
    }
    const bitmap = await loadBitmap(
      meta,
      path,
      header.bitmapOffset,
      header.allAllocated ? 0 : units,
      metaLength,
      'allocation',
    )
    const draft: DraftDescription = {
      header,
      imagePath: imageVerdict.resolved,
      backingFormat,
      names,
      warnings,
    }
    return new DraftDisk(
      {
        path,
        format: layout,
        size,
        unit: header.unit,
        bitmap,
        metaFile: meta,
        bitmapOffset: header.bitmapOffset,
        dataFile: image,
        dataOffset: 0,
        backing,
        writable: false,
        allAllocated: header.allAllocated,
        describe: (disk) => describeDraft(disk, meta, image, draft),
        backingLink:
          header.backingName === null ? null : { name: header.backingName, format: backingFormat },
        files: [path, imageVerdict.resolved],
      },
      draft,
    )
  } catch (error) {
    for (const file of opened.reverse()) await file.close().catch(() => undefined)
    throw error
  }
}

async function describeDraft(
  disk: BitmapOverlayDisk,
  meta: BlockFile,
  image: BlockFile,
  draft: DraftDescription,
): Promise<ImageInfo> {
  const { header } = draft
  const imageActual = await image.allocatedBytes()
  const info: ImageInfo = {
    filename: disk.path,
    format: header.layout,
    'virtual-size': disk.size,
    'actual-size': (await meta.allocatedBytes()) + imageActual,
    'cluster-size': header.unit,
    'data-file': header.imageName,
    'full-data-file': draft.imagePath,
    'data-file-format': header.imageFormat,
    'data-file-actual-size': imageActual,
    'allocated-clusters': disk.allocatedUnits,
    'total-clusters': disk.totalUnits,
    'all-allocated': header.allAllocated,
    'format-specific': {
      type: 'add-cow-draft',
      data: {
        layout: LABELS[header.layout],
        'bitmap-offset': header.bitmapOffset,
        'unit-size': header.unit,
        'metadata-file-length': await meta.length(),
      },
    },
    names: draft.names,
    warnings: [...draft.warnings],
  }
  if (header.backingName !== null) {
    info['backing-filename'] = header.backingName
    info['full-backing-filename'] = draft.names[0]?.resolved ?? header.backingName
    if (draft.backingFormat !== null) info['backing-filename-format'] = draft.backingFormat
  }
  return info
}

/** The driver of a draft layout: its description, and the draft opener. */
function draftDriver(format: FormatDescription & { name: DraftLayout }): FormatDriver {
  return { ...format, open: (path, options) => openDraft(format.name, path, options) }
}

export const addCowV18Driver = draftDriver(ADD_COW_V18_FORMAT)
export const addCowV12Driver = draftDriver(ADD_COW_V12_FORMAT)
export const addCowV7Driver = draftDriver(ADD_COW_V7_FORMAT)
export const addCowV3Driver = draftDriver(ADD_COW_V3_FORMAT)
