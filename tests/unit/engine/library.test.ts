import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Library, readLibraryData } from '../../../main/engine/library'
import { runAddcow } from '../../helpers/cli'
import { tempDir } from '../../helpers/tools'

// A library file with fields of the wrong type (issue 13 item 6): what is wrong is named (file,
// list, entry index, field), a copy of the file is kept beside it, every readable entry is used,
// and the unreadable ones are never dropped silently.

let root: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({ path: root, cleanup } = await tempDir('addcow-library-'))
})
afterEach(async () => {
  await cleanup()
})

const GOOD_IMAGE = { path: '/images/a.add-cow', addedAt: '2026-01-01T00:00:00.000Z' }
const GOOD_PAIR = { from: '/a', to: '/b', reason: 'approved', at: '2026-01-01T00:00:00.000Z' }

/** A library file with one bad entry in each list, between good ones, and a field from later. */
function damaged(): Record<string, unknown> {
  return {
    version: 1,
    images: [GOOD_IMAGE, { path: 7, addedAt: 'x' }, null, { ...GOOD_IMAGE, path: '/images/c.raw' }],
    trusted: [GOOD_PAIR, { ...GOOD_PAIR, reason: 'because' }],
    recent: ['/images/a.add-cow', 12],
    fingerprints: 'none',
    machines: [{ name: 'kept as it is' }],
  }
}

async function copiesIn(folder: string): Promise<string[]> {
  return (await readdir(folder)).filter((name) => name.startsWith('library.json.bad-'))
}

describe('readLibraryData', () => {
  it('keeps every readable entry and names each unreadable one', () => {
    const read = readLibraryData(damaged())
    expect(read).not.toBeNull()
    expect(read!.data.images.map((image) => image.path)).toEqual([
      '/images/a.add-cow',
      '/images/c.raw',
    ])
    expect(read!.data.trusted).toEqual([GOOD_PAIR])
    expect(read!.data.recent).toEqual(['/images/a.add-cow'])
    expect(read!.data.fingerprints).toEqual([])
    expect((read!.data as unknown as Record<string, unknown>).machines).toEqual([
      { name: 'kept as it is' },
    ])
    expect(read!.problems).toEqual([
      { where: 'images[1].path', what: 'is a number (7), not a non-empty string' },
      { where: 'images[2]', what: 'is null, not an object' },
      {
        where: 'trusted[1].reason',
        what: "is a string ('because'), not 'created' or 'approved'",
      },
      { where: 'recent[1]', what: 'is a number (12), not a non-empty string' },
      { where: 'fingerprints', what: 'is a string, not a list' },
    ])
  })

  it('reads a clean file without problems, and refuses what is not a version-1 library', () => {
    const clean = { version: 1, images: [GOOD_IMAGE], trusted: [GOOD_PAIR], recent: [] }
    expect(readLibraryData(clean)).toEqual({ data: clean, problems: [] })
    // recent and fingerprints may be absent (older files).
    expect(readLibraryData({ version: 1, images: [], trusted: [] })?.problems).toEqual([])
    expect(readLibraryData({ version: 2, images: [], trusted: [] })).toBeNull()
    expect(readLibraryData([])).toBeNull()
    expect(readLibraryData('library')).toBeNull()
    // A version field missing or of the wrong type beside a list of images: a damaged version-1
    // file, read entry by entry with the field named.
    const unversioned = readLibraryData({ images: [GOOD_IMAGE], trusted: [], recent: [] })
    expect(unversioned?.data.images).toEqual([GOOD_IMAGE])
    expect(unversioned?.problems).toEqual([{ where: 'version', what: 'is undefined, not 1' }])
    expect(readLibraryData({ version: '1', images: [], trusted: [] })?.problems).toEqual([
      { where: 'version', what: 'is a string, not 1' },
    ])
    expect(readLibraryData({ version: '1', trusted: [] })).toBeNull()
    // A missing list is a problem of that list, not of the file.
    expect(readLibraryData({ version: 1, trusted: [] })?.problems).toEqual([
      { where: 'images', what: 'is undefined, not a list' },
    ])
  })

  it('quotes a hostile value bounded', () => {
    const read = readLibraryData({
      version: 1,
      images: [],
      trusted: [{ ...GOOD_PAIR, reason: 'r'.repeat(100000) }],
    })
    const what = read!.problems[0]!.what
    expect(what.length).toBeLessThan(300)
    expect(what).toContain('(100000 characters)')
  })
})

describe('Library.load on a file with unreadable entries', () => {
  it('warns naming the file, the entries and the copy; one copy per content', async () => {
    const library = new Library(join(root, 'library.json'))
    const text = JSON.stringify(damaged(), null, 2)
    await writeFile(library.file, text)

    const data = await library.load()
    expect(data.images.map((image) => image.path)).toEqual(['/images/a.add-cow', '/images/c.raw'])
    const warning = library.lastWarning!
    expect(warning).toContain(`The library file ${library.file} has 5 entries that cannot be read`)
    expect(warning).toContain('images[1].path is a number (7), not a non-empty string')
    expect(warning).toContain('fingerprints is a string, not a list')
    const copies = await copiesIn(root)
    expect(copies).toHaveLength(1)
    expect(copies[0]).toMatch(/^library\.json\.bad-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/)
    expect(warning).toContain(`kept in ${join(root, copies[0]!)}`)
    expect(await readFile(join(root, copies[0]!), 'utf8')).toBe(text)
    // The file itself is untouched by a load.
    expect(await readFile(library.file, 'utf8')).toBe(text)

    // Loading again reuses the copy.
    library.lastWarning = null
    await library.load()
    expect(library.lastWarning).toBe(warning)
    expect(await copiesIn(root)).toEqual(copies)
  })

  it('names the first five problems and counts the rest', async () => {
    const library = new Library(join(root, 'library.json'))
    const images = Array.from({ length: 8 }, (_, index) => ({ path: index, addedAt: '' }))
    await writeFile(library.file, JSON.stringify({ version: 1, images, trusted: [] }))
    await library.load()
    expect(library.lastWarning).toContain('images[4].path is a number (4)')
    expect(library.lastWarning).not.toContain('images[5]')
    expect(library.lastWarning).toContain('; and 3 more.')
  })

  it('the next save keeps every readable entry and the copy keeps the rest', async () => {
    const library = new Library(join(root, 'library.json'))
    await writeFile(library.file, JSON.stringify(damaged()))
    await library.addImages([join(root, 'new.raw')])
    expect(library.lastWarning).toContain('the next save of the library leaves these entries out')
    const saved = JSON.parse(await readFile(library.file, 'utf8')) as Record<string, unknown>
    expect(saved.images).toEqual([
      GOOD_IMAGE,
      { ...GOOD_IMAGE, path: '/images/c.raw' },
      { path: join(root, 'new.raw'), addedAt: expect.any(String) as unknown },
    ])
    expect(saved.trusted).toEqual([GOOD_PAIR])
    expect(saved.machines).toEqual([{ name: 'kept as it is' }])
    const copies = await copiesIn(root)
    expect(copies).toHaveLength(1)
    expect(JSON.parse(await readFile(join(root, copies[0]!), 'utf8'))).toEqual(damaged())
    // Now clean: no warning, no new copy.
    library.lastWarning = null
    await library.load()
    expect(library.lastWarning).toBeNull()
    expect(await copiesIn(root)).toEqual(copies)
  })

  it('a file that is not JSON is still moved aside, saying why', async () => {
    const library = new Library(join(root, 'library.json'))
    await writeFile(library.file, '{"version": 1, "images": [tru')
    expect(await library.load()).toEqual({ version: 1, images: [], trusted: [], recent: [] })
    expect(library.lastWarning).toMatch(
      /was corrupt; it was moved to .+ and a new one started \(it is not JSON: .+\)\.$/,
    )
  })
})

describe('the CLI on a damaged library file', () => {
  it('runs the command and prints the warning once on stderr', async () => {
    const dataDir = join(root, 'data')
    await runAddcow(['create', '-s', '1M', join(root, 'a.add-cow')], { dataDir })
    const file = join(dataDir, 'library.json')
    const data = JSON.parse(await readFile(file, 'utf8')) as { images: unknown[] }
    data.images.push({ path: false })
    await writeFile(file, JSON.stringify(data))
    const result = await runAddcow(['info', join(root, 'a.add-cow')], { dataDir })
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('file format: add-cow')
    const warnings = result.stderr.split('\n').filter((line) => line.startsWith('addcow: warning:'))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain('images[1].path is a boolean (false), not a non-empty string')
  })
})

describe("a saved machine's folder (its UEFI variable store)", () => {
  const machine = { name: 'vm', disk: '/images/a.add-cow' }

  it('lives beside the library file, moves with a rename, is copied and deleted with the machine', async () => {
    const library = new Library(join(root, 'library.json'))
    await library.saveMachine(machine)
    const folder = library.machineFolder('vm')
    expect(folder).toBe(join(root, 'machines', 'vm'))
    await mkdir(folder, { recursive: true })
    await writeFile(join(folder, 'OVMF_VARS.fd'), 'settings')

    await library.saveMachine({ ...machine, name: 'renamed' }, { previousName: 'vm' })
    expect(existsSync(folder)).toBe(false)
    expect(await readFile(join(root, 'machines', 'renamed', 'OVMF_VARS.fd'), 'utf8')).toBe(
      'settings',
    )

    await library.copyMachine('renamed', 'twin')
    expect(await readFile(join(root, 'machines', 'twin', 'OVMF_VARS.fd'), 'utf8')).toBe('settings')
    expect((await library.machine('twin')).disk).toBe(machine.disk)

    await library.removeMachine('renamed')
    expect(existsSync(join(root, 'machines', 'renamed'))).toBe(false)
    expect(existsSync(join(root, 'machines', 'twin', 'OVMF_VARS.fd'))).toBe(true)
    // A machine that never had files copies and goes without complaint.
    await library.saveMachine({ ...machine, name: 'plain' })
    await library.copyMachine('plain', 'plain-2')
    await library.removeMachine('plain')
  })

  it('refuses a name that could leave the machines folder', () => {
    const library = new Library(join(root, 'library.json'))
    for (const name of ['..', '../x', 'a/b', '']) {
      expect(() => library.machineFolder(name)).toThrow(/is not a machine name/)
    }
  })
})
