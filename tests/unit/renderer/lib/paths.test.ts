import { describe, expect, it } from 'vitest'
import { joinPath, leavesFolder, relativePath, rootOf } from '../../../../renderer/src/lib/paths'

// Path arithmetic on main's paths (either separator, drives and shares), as the create-overlay
// wizard uses it for the names it stores.

describe('paths', () => {
  it('finds the relative name from a folder to a file', () => {
    expect(relativePath('/images', '/images/golden.img')).toBe('golden.img')
    expect(relativePath('/images/vms', '/images/golden.img')).toBe('../golden.img')
    expect(relativePath('/images', '/images/bases/golden.img')).toBe('bases/golden.img')
    expect(relativePath('/a/b/c', '/x/y')).toBe('../../../x/y')
    expect(relativePath('/images/', '/images/./golden.img')).toBe('golden.img')
    expect(relativePath('/images', '/images')).toBe('.')
  })

  it('works on Windows drives and refuses to cross them', () => {
    expect(relativePath('C:\\vms', 'C:\\vms\\bases\\golden.img')).toBe('bases\\golden.img')
    expect(relativePath('c:\\VMS', 'C:\\vms\\golden.img')).toBe('golden.img')
    expect(relativePath('C:\\vms', 'D:\\golden.img')).toBeNull()
    expect(relativePath('relative/folder', '/x')).toBeNull()
    expect(rootOf('\\\\server\\share\\x.img')).toBe('\\\\server\\share\\')
  })

  it('joins with the folder separator and spots names that climb out', () => {
    expect(joinPath('/images', 'a.raw')).toBe('/images/a.raw')
    expect(joinPath('/', 'a.raw')).toBe('/a.raw')
    expect(joinPath('C:\\vms', 'a.raw')).toBe('C:\\vms\\a.raw')
    expect(leavesFolder('../golden.img')).toBe(true)
    expect(leavesFolder('..golden.img')).toBe(false)
    expect(leavesFolder('bases/golden.img')).toBe(false)
  })
})
