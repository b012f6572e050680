import { baseName, folderOf } from '../composables/use-format'

/** A local time as `YYYYMMDD-HHMMSS`, for file names that sort by date. */
export function fileStamp(when: Date): string {
  const pad = (value: number): string => String(value).padStart(2, '0')
  return `${when.getFullYear()}${pad(when.getMonth() + 1)}${pad(when.getDate())}-${pad(when.getHours())}${pad(when.getMinutes())}${pad(when.getSeconds())}`
}

/**
 * The undo journal proposed for a commit of `overlay` at `when`: beside the overlay, named
 * after it and the time (`vm.add-cow.20250101-120000.undo`), so journals never collide.
 */
export function defaultUndoPath(overlay: string, separator: string, when: Date): string {
  return `${folderOf(overlay)}${separator}${baseName(overlay)}.${fileStamp(when)}.undo`
}
