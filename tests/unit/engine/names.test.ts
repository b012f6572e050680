import { mkdir, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  assertFollowable,
  judgeName,
  makePolicy,
  resolveName,
  STRICT_POLICY,
} from '../../../main/engine/names'
import { tempDir } from '../../helpers/tools'
import { makeSparse } from '../../helpers/images'
import { expectEngineErrorSync } from '../../helpers/errors'

let root: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  const made = await tempDir()
  root = made.path
  cleanup = made.cleanup
  await mkdir(join(root, 'vm', 'sub'), { recursive: true })
  await makeSparse(join(root, 'vm', 'sub', 'base.raw'), 4096)
  await makeSparse(join(root, 'outside.raw'), 4096)
})

afterEach(async () => {
  await cleanup()
})

describe('resolveName', () => {
  it('resolves relative names against the naming file, keeps absolute ones', () => {
    expect(resolveName('/a/b/c.add-cow', 'd.raw')).toBe('/a/b/d.raw')
    expect(resolveName('/a/b/c.add-cow', '../d.raw')).toBe('/a/d.raw')
    expect(resolveName('/a/b/c.add-cow', '/x//y/../z.raw')).toBe('/x/z.raw')
  })
})

describe('judgeName', () => {
  const naming = () => join(root, 'vm', 'top.add-cow')
  const verdict = async (stored: string, policy = STRICT_POLICY) => {
    const result = await judgeName(naming(), stored, 'raw', policy)
    return [result.reason, result.followed]
  }

  it('follows relative names that stay inside the folder', async () => {
    expect(await verdict('sub/base.raw')).toEqual(['inside-folder', true])
    expect(await verdict('./sub/../sub/base.raw')).toEqual(['inside-folder', true])
    const result = await judgeName(naming(), 'sub/base.raw', 'raw', STRICT_POLICY)
    expect(result).toMatchObject({
      stored: 'sub/base.raw',
      resolved: join(root, 'vm', 'sub', 'base.raw'),
      format: 'raw',
    })
  })

  it('refuses names that leave the folder, absolute names and links out, unless allowed', async () => {
    expect(await verdict('../outside.raw')).toEqual(['outside-folder', false])
    expect(await verdict(join(root, 'outside.raw'))).toEqual(['outside-folder', false])
    expect(await verdict(join(root, 'vm', 'sub', 'base.raw'))).toEqual(['outside-folder', false])
    await symlink('../outside.raw', join(root, 'vm', 'link.raw'))
    expect(await verdict('link.raw')).toEqual(['outside-folder', false])
    // Allowed by path (the resolved path or the real one), by --allow-any-name, or by the library.
    expect(
      await verdict('../outside.raw', makePolicy({ allowedPaths: [join(root, 'outside.raw')] })),
    ).toEqual(['allowed-by-user', true])
    expect(
      await verdict('link.raw', makePolicy({ allowedPaths: [join(root, 'outside.raw')] })),
    ).toEqual(['allowed-by-user', true])
    expect(await verdict('../outside.raw', makePolicy({ allowAny: true }))).toEqual([
      'allowed-by-user',
      true,
    ])
    const otherPair = makePolicy({
      isTrustedPair: (from, to) => from === naming() && to === join(root, 'vm', 'sub', 'base.raw'),
    })
    expect(await verdict('../outside.raw', otherPair)).toEqual(['outside-folder', false])
  })

  it('trusts a pair recorded in the library, by real paths', async () => {
    await makeSparse(naming(), 4096)
    const trusted = makePolicy({
      isTrustedPair: (from, to) => from === naming() && to === join(root, 'outside.raw'),
    })
    expect(await verdict('../outside.raw', trusted)).toEqual(['trusted-in-library', true])
  })

  it('never follows protocols, json:, devices, folders, or missing files', async () => {
    const any = makePolicy({ allowAny: true })
    expect(await verdict('nbd+unix:///x?socket=/s', any)).toEqual(['protocol', false])
    expect(await verdict('json:{}', any)).toEqual(['json', false])
    expect(await verdict('/dev/zero', any)).toEqual(['device', false])
    expect(await verdict('sub', any)).toEqual(['not-regular-file', false])
    expect(await verdict('gone.raw', any)).toEqual(['missing', false])
  })

  it('explains a refusal with a stable code', () => {
    const base = { stored: 'x', resolved: '/r/x', format: 'raw', followed: false }
    expect(
      expectEngineErrorSync(
        () => assertFollowable('/r/top.add-cow', 'backing file', { ...base, reason: 'missing' }),
        'MISSING_FILE',
      ).field,
    ).toBe('backing file')
    expectEngineErrorSync(
      () => assertFollowable('/r/top.add-cow', 'image file', { ...base, reason: 'outside-folder' }),
      'UNTRUSTED_NAME',
    )
    for (const reason of ['protocol', 'json', 'device', 'not-regular-file'] as const) {
      const error = expectEngineErrorSync(
        () => assertFollowable('/r/top.add-cow', 'backing file', { ...base, reason }),
        'REFUSED_NAME',
      )
      expect(error.message).toContain("'x' (/r/x) named by /r/top.add-cow")
    }
    assertFollowable('/r/top.add-cow', 'backing file', {
      ...base,
      followed: true,
      reason: 'inside-folder',
    })
  })
})
