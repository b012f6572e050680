/**
 * Path arithmetic for main's paths, done in the renderer (which has no Node `path`): either
 * separator, POSIX roots, Windows drives and UNC shares. Paths come from main already absolute.
 */

/** The separator a path uses: `\` for drive and UNC paths, `/` otherwise. */
export function separatorOf(path: string): '/' | '\\' {
  return /^[A-Za-z]:\\/.test(path) || path.startsWith('\\\\') ? '\\' : '/'
}

/** The root of an absolute path (`/`, `C:\`, `\\server\share\`), or null for a relative one. */
export function rootOf(path: string): string | null {
  if (path.startsWith('/')) return '/'
  const drive = /^[A-Za-z]:[\\/]/.exec(path)
  if (drive) return drive[0].slice(0, 2).toUpperCase() + '\\'
  const unc = /^\\\\[^\\]+\\[^\\]+\\?/.exec(path)
  if (unc) return unc[0].endsWith('\\') ? unc[0] : unc[0] + '\\'
  return null
}

function segments(path: string, root: string): string[] {
  return path
    .slice(root.length)
    .split(/[\\/]+/)
    .filter((part) => part !== '' && part !== '.')
    .reduce<string[]>((parts, part) => {
      if (part === '..') parts.pop()
      else parts.push(part)
      return parts
    }, [])
}

/**
 * The relative name that leads from `folder` to `target` (both absolute), with the target's
 * separator; null when they are on different roots (another drive or share), where only an
 * absolute name works.
 */
export function relativePath(folder: string, target: string): string | null {
  const folderRoot = rootOf(folder)
  const targetRoot = rootOf(target)
  if (folderRoot === null || targetRoot === null) return null
  const windows = separatorOf(target) === '\\'
  const same = windows
    ? folderRoot.toLowerCase() === targetRoot.toLowerCase()
    : folderRoot === targetRoot
  if (!same) return null
  const from = segments(folder, folderRoot)
  const to = segments(target, targetRoot)
  let common = 0
  const equal = (a: string, b: string): boolean =>
    windows ? a.toLowerCase() === b.toLowerCase() : a === b
  while (common < from.length && common < to.length && equal(from[common]!, to[common]!)) common++
  const up = new Array<string>(from.length - common).fill('..')
  const parts = [...up, ...to.slice(common)]
  return parts.length === 0 ? '.' : parts.join(windows ? '\\' : '/')
}

/** Whether a relative name climbs out of its folder (`../x`). */
export function leavesFolder(relative: string): boolean {
  return relative === '..' || /^\.\.[\\/]/.test(relative)
}

/** `folder` and `name` joined with the folder's separator. */
export function joinPath(folder: string, name: string): string {
  const separator = separatorOf(folder)
  return folder.endsWith('/') || folder.endsWith('\\')
    ? `${folder}${name}`
    : `${folder}${separator}${name}`
}
