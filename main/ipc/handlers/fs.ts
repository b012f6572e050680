import { lstat, readdir, stat } from 'node:fs/promises'
import { homedir, tmpdir } from 'node:os'
import { dirname, isAbsolute, join, resolve, sep } from 'node:path'
import type { ResponseOf } from '../../../shared/ipc/contract'
import { EngineError, wrapIoError } from '../../engine/errors'
import type { NamePolicy } from '../../engine/names'
import { imageInfo } from '../../engine/ops/info'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'

/** Most entries one listing returns (a folder with more is cut, and says so). */
export const MAX_FOLDER_ENTRIES = 5000
/** Most overlays of one folder whose image file is looked up (each is opened read-only). */
export const MAX_OVERLAYS_INSPECTED = 64
/** Entries examined at once. */
const PARALLEL_STATS = 32

type FolderListing = ResponseOf<'fs:list-folder'>
type FolderEntry = FolderListing['entries'][number]

async function describe(folder: string, name: string): Promise<FolderEntry> {
  const path = join(folder, name)
  const entry: FolderEntry = {
    name,
    path,
    kind: 'other',
    link: false,
    size: null,
    modifiedAt: null,
  }
  try {
    let info = await lstat(path)
    if (info.isSymbolicLink()) {
      entry.link = true
      info = await stat(path)
    }
    entry.kind = info.isDirectory() ? 'folder' : info.isFile() ? 'file' : 'other'
    entry.size = info.isFile() ? info.size : null
    entry.modifiedAt = Math.round(info.mtimeMs)
  } catch {
    // A dangling link or an entry that vanished: listed as 'other' without details.
  }
  return entry
}

/**
 * List a folder of main's file system for the in-app file browser: folders first, then files,
 * by name. Refuses relative paths (IPC has no working directory) and non-folders.
 */
export async function listFolder(
  path: string,
  showHidden: boolean,
  policy?: NamePolicy,
): Promise<FolderListing> {
  if (!isAbsolute(path)) {
    throw new EngineError('BAD_REQUEST', `The folder '${path}' is not an absolute path.`, {
      field: 'path',
      value: path,
    })
  }
  const folder = resolve(path)
  let info
  try {
    info = await stat(folder)
  } catch (error) {
    throw wrapIoError(error, folder, 'list')
  }
  if (!info.isDirectory()) {
    throw new EngineError('BAD_ARGUMENT', `${folder} is not a folder.`, {
      path: folder,
      field: 'path',
    })
  }
  let names: string[]
  try {
    names = (await readdir(folder)).filter((name) => showHidden || !name.startsWith('.'))
  } catch (error) {
    throw wrapIoError(error, folder, 'list')
  }
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' })
  names.sort(collator.compare)
  const truncated = names.length > MAX_FOLDER_ENTRIES
  const kept = names.slice(0, MAX_FOLDER_ENTRIES)
  const entries: FolderEntry[] = []
  for (let index = 0; index < kept.length; index += PARALLEL_STATS) {
    entries.push(
      ...(await Promise.all(
        kept.slice(index, index + PARALLEL_STATS).map((name) => describe(folder, name)),
      )),
    )
  }
  const rank = (entry: FolderEntry): number =>
    entry.kind === 'folder' ? 0 : entry.kind === 'file' ? 1 : 2
  entries.sort((a, b) => rank(a) - rank(b) || collator.compare(a.name, b.name))
  await markImageFiles(entries, policy)
  const parent = dirname(folder)
  return { path: folder, parent: parent === folder ? null : parent, entries, truncated }
}

/**
 * Mark the image files of the folder's add-cow overlays (named `*.add-cow`, the name create
 * gives), so the file browser does not offer them as disks of their own. Each overlay is
 * opened read-only through the engine, under the library's name policy; one that cannot be
 * read marks nothing.
 */
async function markImageFiles(
  entries: FolderEntry[],
  policy: NamePolicy | undefined,
): Promise<void> {
  const byPath = new Map(entries.map((entry) => [entry.path, entry]))
  const overlays = entries
    .filter((entry) => entry.kind === 'file' && entry.name.endsWith('.add-cow'))
    .slice(0, MAX_OVERLAYS_INSPECTED)
  await Promise.all(
    overlays.map(async (overlay) => {
      try {
        const [info] = await imageInfo(overlay.path, policy ? { policy } : {})
        const image = info?.['full-data-file']
        const entry = image === undefined ? undefined : byPath.get(resolve(image))
        if (entry && entry !== overlay) entry.imageFileOf = overlay.name
      } catch {
        // Not readable as an image: nothing to mark.
      }
    }),
  )
}

/** Where the in-app file browser starts. */
export async function listRoots(): Promise<ResponseOf<'fs:list-roots'>> {
  const home = homedir()
  const places: { label: string; path: string }[] = [{ label: 'Home', path: home }]
  if (process.platform === 'win32') {
    for (const letter of 'CDEFGHIJKLMNOPQRSTUVWXYZ') {
      const drive = `${letter}:\\`
      if (
        await stat(drive).then(
          (drive) => drive.isDirectory(),
          () => false,
        )
      )
        places.push({ label: drive, path: drive })
    }
  } else {
    places.push({ label: 'Computer', path: '/' })
  }
  places.push({ label: 'Temporary files', path: tmpdir() })
  return { home, separator: sep === '\\' ? '\\' : '/', places }
}

function noDialogs(): never {
  throw new EngineError(
    'NOT_CAPABLE',
    'Native dialogs exist only in the desktop app; the browser mode uses the in-app file browser.',
  )
}

/**
 * `fs:*`: how the user picks a path in main's file system. The Electron shell shows its native
 * open and save dialogs (`fs:show-open-dialog`, `fs:show-save-dialog`; the paths the user
 * picked, nothing wider); the browser mode has none (NOT_CAPABLE) and the renderer's in-app
 * file browser lists folders instead (`fs:list-folder`, `fs:list-roots`).
 */
export function fsHandlers(services: IpcServices): AreaHandlers<'fs'> {
  return {
    'fs:list-folder': async ({ path, showHidden }) =>
      listFolder(path, showHidden, await services.library.policy()),

    'fs:list-roots': () => listRoots(),

    'fs:show-open-dialog': async (request, { sender }) => {
      if (!services.dialogs) noDialogs()
      return { paths: await services.dialogs.openFiles(request, sender) }
    },

    'fs:show-save-dialog': async (request, { sender }) => {
      if (!services.dialogs) noDialogs()
      return { path: await services.dialogs.saveFile(request, sender) }
    },

    // Only an existing file is shown (the file manager would open elsewhere, or nowhere).
    'fs:show-in-folder': async ({ path }) => {
      try {
        await stat(path)
      } catch (error) {
        throw wrapIoError(error, path, 'show')
      }
      if (!services.dialogs) return { shown: false }
      services.dialogs.showItemInFolder(path)
      return { shown: true }
    },
  }
}
