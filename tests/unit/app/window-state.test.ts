import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  DEFAULT_WINDOW_STATE,
  fitToDisplays,
  parseWindowState,
  WindowStateFile,
} from '../../../main/app/window-state'
import { tempDir } from '../../helpers/tools'

// The window state file the app keeps (main/app/window-state.ts): written atomically, read
// back onto the displays there are now, a corrupt file read as the default.

let cleanup: () => Promise<void>
let dir: string

beforeAll(async () => {
  const temp = await tempDir('addcow-window-state-')
  cleanup = temp.cleanup
  dir = temp.path
})
afterAll(() => cleanup())

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
