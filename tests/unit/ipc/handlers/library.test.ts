import { execFile } from 'node:child_process'
import { appendFile, mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import type { ResponseOf } from '../../../../shared/ipc/contract'
import { createOverlay } from '../../../../main/engine/ops/create'
import { writeAddCow } from '../../../helpers/images'
import { call, core, dir, patternFile, testCore, TRUSTED, useIpcFolder, valueOf } from '../helpers'

// The library:* channels (main/ipc/handlers/library.ts): the name policy as the app applies it
// (a refused name until the user approves it, what the app creates is trusted, a base that
// changed), and the library file the app shares with the CLI: written atomically, surviving a
// corrupt file, a crash and writers in several processes at once.

const run = promisify(execFile)
const WRITER = fileURLToPath(new URL('../library-writer.ts', import.meta.url))
const MIB = 1024 * 1024

useIpcFolder('addcow-ipc-library-')
beforeAll(async () => {
  await patternFile(join(dir, 'base.raw'), 4 * MIB)
  await patternFile(join(dir, 'disk.raw'), 1024 * 1024)
})

describe('the name policy through the IPC', () => {
  it('never follows a base outside the folder until the user approves it', async () => {
    await mkdir(join(dir, 'downloads'))
    const stranger = join(dir, 'downloads', 'stranger.add-cow')
    // Made by the engine directly: nothing recorded it as trusted in this library.
    await createOverlay({ overlay: stranger, backing: join(dir, 'base.raw'), backingFormat: 'raw' })

    const info = valueOf(
      await core.dispatcher.dispatch('image:get-info', { path: stranger }, TRUSTED),
    ) as ResponseOf<'image:get-info'>
    expect(info.layers).toHaveLength(1)
    expect(
      info.layers[0]?.names?.find((name) => name.stored === join(dir, 'base.raw')),
    ).toMatchObject({
      followed: false,
      reason: 'outside-folder',
    })
    const refused = await core.dispatcher.dispatch('image:get-map', { path: stranger }, TRUSTED)
    expect(refused).toMatchObject({ ok: false, error: { code: 'UNTRUSTED_NAME', path: stranger } })

    const unknown = await core.dispatcher.dispatch(
      'library:approve-name',
      { image: stranger, stored: '/etc/shadow' },
      TRUSTED,
    )
    expect(unknown).toMatchObject({ ok: false, error: { code: 'NOT_FOUND', field: 'stored' } })

    const approved = valueOf(
      await core.dispatcher.dispatch(
        'library:approve-name',
        { image: stranger, stored: join(dir, 'base.raw') },
        TRUSTED,
      ),
    )
    expect(approved).toMatchObject({ to: join(dir, 'base.raw'), alreadyFollowed: false })
    expect((await core.library.load()).trusted).toContainEqual(
      expect.objectContaining({ reason: 'approved', to: join(dir, 'base.raw') }),
    )
    expect(core.events.some((entry) => entry.event === 'library:changed')).toBe(true)

    const map = valueOf(
      await core.dispatcher.dispatch('image:get-map', { path: stranger }, TRUSTED),
    ) as ResponseOf<'image:get-map'>
    expect(map.layers).toHaveLength(2)
    const again = valueOf(
      await core.dispatcher.dispatch(
        'library:approve-name',
        { image: stranger, stored: join(dir, 'base.raw') },
        TRUSTED,
      ),
    )
    expect(again).toMatchObject({ alreadyFollowed: true })
  })

  it('trusts what it creates: an overlay on a base in another folder opens at once', async () => {
    await mkdir(join(dir, 'work'))
    const overlay = join(dir, 'work', 'mine.add-cow')
    const { job } = valueOf(
      await core.dispatcher.dispatch(
        'operations:create-overlay',
        { overlay, backing: join(dir, 'base.raw') },
        TRUSTED,
      ),
    ) as ResponseOf<'operations:create-overlay'>
    await core.jobs.settled(job.id)
    expect(core.jobs.get(job.id)?.state).toBe('done')
    const map = valueOf(
      await core.dispatcher.dispatch('image:get-map', { path: overlay }, TRUSTED),
    ) as ResponseOf<'image:get-map'>
    expect(map.layers.map((layer) => layer.path)).toEqual([overlay, join(dir, 'base.raw')])
    expect((await core.library.load()).images.map((image) => image.path)).toContain(overlay)
  })

  it('shows a base that changed since the overlay was made', async () => {
    await mkdir(join(dir, 'drift'))
    const base = join(dir, 'drift', 'golden.raw')
    await patternFile(base, 2 * MIB)
    const overlay = join(dir, 'drift', 'child.add-cow')
    const { job } = (await core.dispatcher
      .dispatch('operations:create-overlay', { overlay, backing: 'golden.raw' }, TRUSTED)
      .then(valueOf)) as ResponseOf<'operations:create-overlay'>
    await core.jobs.settled(job.id)
    const status = async (): Promise<string | undefined> => {
      const listing = valueOf(
        await core.dispatcher.dispatch('library:list-images', {}, TRUSTED),
      ) as ResponseOf<'library:list-images'>
      return listing.images.find((image) => image.path === overlay)?.base.status
    }
    expect(await status()).toBe('ok')
    const later = new Date(Date.now() + 5000)
    await utimes(base, later, later)
    expect(await status()).toBe('changed')
    await appendFile(base, Buffer.alloc(512))
    expect(await status()).toBe('changed')
  })
})

describe('images whose image file is the add-cow file itself or its base (issue 13)', () => {
  it('are listed with their names and why the base is not followed, not as errors', async () => {
    await mkdir(join(dir, 'same'))
    await patternFile(join(dir, 'same', 'same.raw'), 8192)
    await writeAddCow({
      path: join(dir, 'same', 'same.add-cow'),
      imageName: 'same.raw',
      backingName: 'same.raw',
      size: 8192,
      clusterBits: 12,
    })
    await writeAddCow({
      path: join(dir, 'same', 'self.add-cow'),
      imageName: 'self.add-cow',
      size: 8192,
      clusterBits: 12,
    })
    const paths = [join(dir, 'same', 'same.add-cow'), join(dir, 'same', 'self.add-cow')]
    await core.library.addImages(paths)
    const listing = valueOf(
      await core.dispatcher.dispatch('library:list-images', {}, TRUSTED),
    ) as ResponseOf<'library:list-images'>
    const [same, self] = paths.map((path) => listing.images.find((image) => image.path === path))
    expect(same?.error).toBeNull()
    expect(same?.base).toMatchObject({ status: 'refused', reason: 'same-file' })
    expect(self?.error).toBeNull()
    expect(self?.base.status).toBe('none')
    await core.library.removeImages(paths)
  })
})

describe('loops in the library summary', () => {
  it('marks each member of a loop of base names, also through a flattened layer', async () => {
    await mkdir(join(dir, 'loop'))
    await patternFile(join(dir, 'loop', 'base.raw'), 2 * MIB)
    const x = join(dir, 'loop', 'x.add-cow')
    const y = join(dir, 'loop', 'y.add-cow')
    const z = join(dir, 'loop', 'z.add-cow')
    for (const [overlay, backing] of [
      [x, 'base.raw'],
      [y, 'x.add-cow'],
      [z, 'base.raw'],
    ] as const) {
      const { job } = (await core.dispatcher
        .dispatch('operations:create-overlay', { overlay, backing }, TRUSTED)
        .then(valueOf)) as ResponseOf<'operations:create-overlay'>
      await core.jobs.settled(job.id)
    }
    const { job } = await call(core, 'operations:stream-overlay', { overlay: y })
    await core.jobs.settled(job.id)
    // Close the loop as only a raw name rewrite can: x names y.
    const { addCowDriver } = await import('../../../../main/engine/formats/add-cow/add-cow-disk')
    await addCowDriver.setBacking!(x, { name: 'y.add-cow', format: 'add-cow' })
    const listing = valueOf(
      await core.dispatcher.dispatch('library:list-images', {}, TRUSTED),
    ) as ResponseOf<'library:list-images'>
    const loopOf = (path: string) => listing.images.find((image) => image.path === path)?.loop
    expect(loopOf(x)).toEqual([x, y])
    expect(loopOf(y)).toEqual([y, x])
    expect(loopOf(z)).toBeNull()
  })
})

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

  it('tolerates a file of the wrong shape: names the entry, keeps a copy, lists the rest', async () => {
    const core = testCore(join(dir, 'wrong-shape'))
    await core.library.update(() => undefined)
    await writeFile(
      core.library.file,
      JSON.stringify({
        version: 1,
        images: [{ path: 7 }, { path: join(dir, 'disk.raw'), addedAt: 'x' }],
        trusted: [],
        fingerprints: 'wrong',
      }),
    )
    const listing = valueOf(await core.dispatcher.dispatch('library:list-images', {}, TRUSTED)) as {
      images: { path: string; error: unknown }[]
      warning: string | null
    }
    expect(listing.warning).toContain(`The library file ${core.library.file} has 2 entries`)
    expect(listing.warning).toContain('images[0].path is a number (7), not a non-empty string')
    expect(listing.warning).toContain('fingerprints is a string, not a list')
    expect(listing.warning).toMatch(/kept in .*library\.json\.bad-/)
    expect(listing.images.map((image) => [image.path, image.error])).toEqual([
      [join(dir, 'disk.raw'), null],
    ])
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

describe('adding several images at once', () => {
  it('adds the images that open and reports the one that does not', async () => {
    // A folder where a file was expected: it cannot be opened as an image.
    const unreadable = join(dir, 'a-folder.add-cow')
    await mkdir(unreadable)
    const core = testCore(join(dir, 'partial-add'))
    const answer = await call(core, 'library:add-images', {
      paths: [join(dir, 'disk.raw'), unreadable, join(dir, 'base.raw')],
    })
    expect(answer.added).toEqual([join(dir, 'disk.raw'), join(dir, 'base.raw')])
    expect(answer.failed).toHaveLength(1)
    expect(answer.failed[0]).toMatchObject({ path: unreadable, error: { path: unreadable } })
    expect((await core.library.load()).images.map((image) => image.path).sort()).toEqual(
      [join(dir, 'base.raw'), join(dir, 'disk.raw')].sort(),
    )
    // All of them failing is still an error, naming the file.
    const none = await core.dispatcher.dispatch(
      'library:add-images',
      { paths: [unreadable] },
      TRUSTED,
    )
    expect(none).toMatchObject({ ok: false, error: { path: unreadable } })
  })
})

describe('fs:show-in-folder', () => {
  it('says the browser mode cannot show a folder, and refuses a file that does not exist', async () => {
    const core = testCore(join(dir, 'show-in-folder'))
    expect(await call(core, 'fs:show-in-folder', { path: join(dir, 'disk.raw') })).toEqual({
      shown: false,
    })
    const missing = await core.dispatcher.dispatch(
      'fs:show-in-folder',
      { path: join(dir, 'gone.raw') },
      TRUSTED,
    )
    expect(missing).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })
})

describe('fs:list-folder', () => {
  it("marks an overlay's image file with the overlay's name, and nothing else", async () => {
    const folder = join(dir, 'listing')
    await mkdir(folder)
    await patternFile(join(folder, 'golden.raw'), MIB)
    await createOverlay({
      overlay: join(folder, 'dev.add-cow'),
      backing: 'golden.raw',
      backingFormat: 'raw',
    })
    const core = testCore(join(dir, 'listing-data'))
    const listing = await call(core, 'fs:list-folder', { path: folder })
    const marks = Object.fromEntries(
      listing.entries.map((entry) => [entry.name, entry.imageFileOf ?? null]),
    )
    expect(marks).toEqual({ 'dev.add-cow': null, 'dev.raw': 'dev.add-cow', 'golden.raw': null })
  })
})
