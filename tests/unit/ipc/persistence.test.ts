import { execFile } from 'node:child_process'
import { readdir, readFile, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  DEFAULT_WINDOW_STATE,
  fitToDisplays,
  parseWindowState,
  WindowStateFile,
} from '../../../main/app/window-state'
import { tempDir } from '../../helpers/tools'
import { call, patternFile, testCore, TRUSTED, valueOf } from './helpers'

const run = promisify(execFile)
const WRITER = fileURLToPath(new URL('./library-writer.ts', import.meta.url))

// What the app keeps on disk: the library (shared with the CLI) and the window state. Both are
// written atomically, both survive a corrupt file, and the library survives writers in several
// processes at once.

let cleanup: () => Promise<void>
let dir: string

beforeAll(async () => {
  const temp = await tempDir('addcow-ipc-persistence-')
  cleanup = temp.cleanup
  dir = temp.path
  await patternFile(join(dir, 'disk.raw'), 1024 * 1024)
})
afterAll(() => cleanup())

describe('the library file', () => {
  it('moves a corrupt file aside, says so once, and starts a new library', async () => {
    const data = join(dir, 'corrupt')
    const core = testCore(data)
    await core.library.update(() => undefined)
    await writeFile(core.library.file, '{"version": 1, "images": [tru')
    const first = valueOf(await core.dispatcher.dispatch('library:list-images', {}, TRUSTED)) as {
      images: unknown[]
      warning: string | null
    }
    expect(first.images).toEqual([])
    expect(first.warning).toMatch(/was corrupt; it was moved to .*library\.json\.corrupt-\d+/)
    const aside = (await readdir(data)).filter((name) => name.startsWith('library.json.corrupt-'))
    expect(aside).toHaveLength(1)
    expect(await readFile(join(data, aside[0]!), 'utf8')).toBe('{"version": 1, "images": [tru')
    valueOf(
      await core.dispatcher.dispatch(
        'library:add-images',
        { paths: [join(dir, 'disk.raw')] },
        TRUSTED,
      ),
    )
    const second = valueOf(await core.dispatcher.dispatch('library:list-images', {}, TRUSTED)) as {
      images: { path: string }[]
      warning: string | null
    }
    expect(second.warning).toBeNull()
    expect(second.images.map((image) => image.path)).toEqual([join(dir, 'disk.raw')])
  })

  it('tolerates a file of the wrong shape', async () => {
    const core = testCore(join(dir, 'wrong-shape'))
    await core.library.update(() => undefined)
    await writeFile(
      core.library.file,
      JSON.stringify({ version: 1, images: [{ path: 7 }], trusted: [] }),
    )
    const listing = valueOf(await core.dispatcher.dispatch('library:list-images', {}, TRUSTED)) as {
      warning: string | null
    }
    expect(listing.warning).toContain('was corrupt')
  })

  it('survives a crash in the middle of a write: a stray temporary file and a stale lock', async () => {
    const data = join(dir, 'crashed')
    const core = testCore(data)
    valueOf(
      await core.dispatcher.dispatch(
        'library:add-images',
        { paths: [join(dir, 'disk.raw')] },
        TRUSTED,
      ),
    )
    const before = await readFile(core.library.file, 'utf8')
    // A writer died after writing half a temporary file and before removing its lock.
    await writeFile(`${core.library.file}.4242.deadbeef.tmp`, before.slice(0, 20))
    await writeFile(`${core.library.file}.lock`, '4242')
    const old = new Date(Date.now() - 60_000)
    await utimes(`${core.library.file}.lock`, old, old)
    expect(await readFile(core.library.file, 'utf8')).toBe(before)
    valueOf(
      await core.dispatcher.dispatch(
        'library:remove-images',
        { paths: [join(dir, 'disk.raw')] },
        TRUSTED,
      ),
    )
    expect((await core.library.load()).images).toEqual([])
    expect((await readdir(data)).filter((name) => name.endsWith('.lock'))).toEqual([])
  })

  it('keeps every entry when the app and other processes write at once', async () => {
    const data = join(dir, 'concurrent')
    const core = testCore(data)
    const file = core.library.file
    await core.library.update(() => undefined)
    const writers = ['alpha', 'beta', 'gamma'].map((prefix) =>
      run(process.execPath, ['--import', 'tsx', WRITER, file, prefix, '15'], { timeout: 60_000 }),
    )
    const app = await call(core, 'library:add-images', { paths: [join(dir, 'disk.raw')] })
    await Promise.all(writers)
    expect(app.added).toEqual([join(dir, 'disk.raw')])
    const paths = (await core.library.load()).images.map((image) => image.path)
    expect(paths).toHaveLength(46)
    for (const prefix of ['alpha', 'beta', 'gamma']) {
      for (let index = 0; index < 15; index++)
        expect(paths).toContain(`/images/${prefix}-${index}.raw`)
    }
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ version: 1 })
    expect(
      (await readdir(data)).filter((name) => name.endsWith('.tmp') || name.endsWith('.lock')),
    ).toEqual([])
  })
})

describe('the window state file', () => {
  it('reads a missing or corrupt file as the default state', async () => {
    const missing = new WindowStateFile(join(dir, 'window', 'absent.json'))
    expect(await missing.load()).toEqual(DEFAULT_WINDOW_STATE)
    const corrupt = join(dir, 'window-corrupt.json')
    await writeFile(corrupt, '{"width": 1200, "hei')
    expect(await new WindowStateFile(corrupt).load()).toEqual(DEFAULT_WINDOW_STATE)
    expect(parseWindowState({ width: 1e12, height: 5 })).toEqual(DEFAULT_WINDOW_STATE)
    expect(parseWindowState({ width: 300, height: 200, x: 'left', maximized: 'yes' })).toEqual({
      width: 720,
      height: 480,
      maximized: false,
    })
  })

  it('keeps size, position and maximized across restarts, written atomically', async () => {
    const file = new WindowStateFile(join(dir, 'window', 'state.json'))
    await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        file.save({
          x: index,
          y: 40,
          width: 1000 + index,
          height: 700,
          maximized: index % 2 === 0,
        }),
      ),
    )
    const saved = await file.load()
    expect(saved).toMatchObject({ y: 40, height: 700 })
    expect(saved.width - (saved.x ?? 0)).toBe(1000)
    expect((await readdir(join(dir, 'window'))).filter((name) => name !== 'state.json')).toEqual([])
  })

  it('brings a window back onto the displays there are now', () => {
    const displays = [{ x: 0, y: 0, width: 1920, height: 1080 }]
    expect(
      fitToDisplays({ x: 100, y: 100, width: 1200, height: 800, maximized: false }, displays),
    ).toEqual({
      x: 100,
      y: 100,
      width: 1200,
      height: 800,
      maximized: false,
    })
    // It was on a second monitor that is gone: forget the position, keep a size that fits.
    expect(
      fitToDisplays({ x: 2500, y: 100, width: 2400, height: 800, maximized: true }, displays),
    ).toEqual({
      width: 1920,
      height: 800,
      maximized: true,
    })
  })
})
