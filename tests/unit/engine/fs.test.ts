import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../main/engine/errors'
import { setFileObserver } from '../../../main/engine/file'
import { replaceFile } from '../../../main/engine/fs'
import { tempDir } from '../../helpers/tools'
import { expectEngineError } from '../../helpers/errors'

let root: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  const made = await tempDir('replace-file-')
  root = made.path
  cleanup = made.cleanup
})

afterEach(async () => {
  setFileObserver(null)
  await cleanup()
})

describe('replaceFile', () => {
  it('gives the file its new content and leaves no temporary file', async () => {
    const path = join(root, 'library.json')
    await writeFile(path, 'old')
    await replaceFile(path, (file) => file.writeAt(Buffer.from('new content'), 0))
    expect(await readFile(path, 'utf8')).toBe('new content')
    expect(await readdir(root)).toEqual(['library.json'])
  })

  it('reports what the OS refused as an I/O error naming the temporary copy, and keeps the old file', async () => {
    const path = join(root, 'library.json')
    await writeFile(path, 'old')
    setFileObserver({
      before: (event) => {
        if (event.kind === 'write')
          throw Object.assign(new Error('EIO (simulated)'), { code: 'EIO' })
      },
    })
    const error = await expectEngineError(
      replaceFile(path, (file) => file.writeAt(Buffer.from('new'), 0)),
      'IO_ERROR',
    )
    // The temporary copy beside it is what failed: its name carries the file's.
    expect(error.message).toContain(join(root, '.library.json.'))
    setFileObserver(null)
    expect(await readFile(path, 'utf8')).toBe('old')
    expect(await readdir(root)).toEqual(['library.json'])
  })

  it('lets a bug in the writer surface as itself, not as an I/O error, and keeps the old file', async () => {
    const path = join(root, 'library.json')
    await writeFile(path, 'old')
    const bug = new TypeError("Cannot read properties of undefined (reading 'length')")
    const failure = await replaceFile(path, () => Promise.reject(bug)).catch(
      (error: unknown) => error,
    )
    expect(failure).toBe(bug)
    expect(isEngineError(failure)).toBe(false)
    expect(await readFile(path, 'utf8')).toBe('old')
    expect(await readdir(root)).toEqual(['library.json'])
  })
})
