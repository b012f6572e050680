import { describe, expect, it } from 'vitest'
import {
  bitmapBytes,
  createArguments,
  createCommandLine,
  createRequest,
  DEFAULT_CLUSTER_SIZE,
  proposeImagePath,
  proposeOverlayPath,
  shellQuote,
  sizeArgument,
  stepProblem,
  storedName,
  type CreateOverlayDraft,
} from '../../../../renderer/src/lib/create-overlay'

// The create-overlay wizard's logic: proposed names, names as stored (relative or absolute),
// the request and the equivalent `addcow create` command, and what keeps each step open.

const MIB = 1024 * 1024

function draft(overrides: Partial<CreateOverlayDraft> = {}): CreateOverlayDraft {
  return {
    base: '/images/golden.img',
    baseFormat: 'raw',
    baseSize: 32 * MIB,
    overlay: '/images/golden-overlay.add-cow',
    image: '/images/golden-overlay.raw',
    nameStyle: 'relative',
    sizeText: '',
    clusterSize: DEFAULT_CLUSTER_SIZE,
    ...overrides,
  }
}

describe('names and request', () => {
  it('proposes the overlay beside the base and the image file beside the overlay', () => {
    expect(proposeOverlayPath('/images/golden.img')).toBe('/images/golden-overlay.add-cow')
    expect(proposeOverlayPath('/images/disk')).toBe('/images/disk-overlay.add-cow')
    expect(proposeImagePath('/images/golden-overlay.add-cow')).toBe('/images/golden-overlay.raw')
    expect(proposeImagePath('/images/odd.cow2')).toBe('/images/odd.cow2.raw')
  })

  it('stores names relative to the overlay, or absolute, or absolute across drives', () => {
    expect(storedName('/images/golden.img', '/images/vms/o.add-cow', 'relative')).toEqual({
      stored: '../golden.img',
      forcedAbsolute: false,
      leavesFolder: true,
    })
    expect(storedName('/images/golden.img', '/images/vms/o.add-cow', 'absolute')).toEqual({
      stored: '/images/golden.img',
      forcedAbsolute: false,
      leavesFolder: false,
    })
    expect(storedName('D:\\golden.img', 'C:\\vms\\o.add-cow', 'relative')).toMatchObject({
      stored: 'D:\\golden.img',
      forcedAbsolute: true,
    })
  })

  it('builds the request and the same command line', () => {
    const request = createRequest(draft({ sizeText: '64G' }))
    expect(request).toEqual({
      overlay: '/images/golden-overlay.add-cow',
      backing: 'golden.img',
      backingFormat: 'raw',
      image: 'golden-overlay.raw',
      size: 64 * 1024 * MIB,
      clusterSize: 64 * 1024,
    })
    expect(createCommandLine(request)).toBe(
      'addcow create -b golden.img -F raw -i golden-overlay.raw -s 64G -c 64K /images/golden-overlay.add-cow',
    )
    const absolute = createRequest(draft({ nameStyle: 'absolute' }))
    expect(createArguments(absolute)).toEqual([
      'addcow',
      'create',
      '-b',
      '/images/golden.img',
      '-F',
      'raw',
      '-i',
      '/images/golden-overlay.raw',
      '-c',
      '64K',
      '/images/golden-overlay.add-cow',
    ])
  })

  it('quotes what a shell would split or expand', () => {
    expect(shellQuote('/images/my vm.add-cow')).toBe("'/images/my vm.add-cow'")
    expect(shellQuote("it's")).toBe("'it'\\''s'")
    expect(shellQuote('$HOME')).toBe("'$HOME'")
    expect(shellQuote('')).toBe("''")
    expect(shellQuote('a-b_c.d/e:f')).toBe('a-b_c.d/e:f')
    const request = createRequest(
      draft({ overlay: '/my vms/o.add-cow', image: '/my vms/o.raw', base: '/my vms/b.img' }),
    )
    expect(createCommandLine(request)).toBe(
      "addcow create -b b.img -F raw -i o.raw -c 64K '/my vms/o.add-cow'",
    )
  })

  it('writes sizes as the CLI reads them', () => {
    expect(sizeArgument(4096)).toBe('4K')
    expect(sizeArgument(2 * MIB)).toBe('2M')
    expect(sizeArgument(1024 ** 4)).toBe('1T')
    expect(sizeArgument(1536 * MIB)).toBe('1536M')
    expect(sizeArgument(1000)).toBe('1000')
  })

  it('sizes the bitmap at one bit per cluster', () => {
    expect(bitmapBytes(32 * MIB, 64 * 1024)).toBe(64)
    expect(bitmapBytes(1024 ** 4, 64 * 1024)).toBe(2 * MIB)
    expect(bitmapBytes(1, 4096)).toBe(1)
  })
})

describe('what keeps a step open', () => {
  it('asks for a base, a full path, and a readable one', () => {
    expect(stepProblem('base', draft({ base: '', baseFormat: null }), null)).toMatch(
      /Choose the base image/,
    )
    expect(stepProblem('base', draft({ base: 'golden.img' }), null)).toBe(
      '“golden.img” is not a full path: start it with / (or a drive letter).',
    )
    expect(stepProblem('base', draft(), '/images/golden.img cannot be used as a base: no.')).toBe(
      '/images/golden.img cannot be used as a base: no.',
    )
    expect(stepProblem('base', draft({ baseFormat: null }), null)).toMatch(/^Reading/)
    expect(stepProblem('base', draft(), null)).toBeNull()
  })

  it('checks the files and the size, naming the value at fault', () => {
    expect(stepProblem('files', draft({ overlay: '' }), null)).toMatch(
      /“\(empty\)” is not a full path/,
    )
    expect(stepProblem('files', draft({ overlay: '/images/o.qcow2' }), null)).toBe(
      'The overlay /images/o.qcow2 should end in .add-cow, so tools recognise it.',
    )
    expect(stepProblem('files', draft({ image: '/images/golden-overlay.add-cow' }), null)).toMatch(
      /cannot be the overlay itself/,
    )
    expect(stepProblem('files', draft({ image: '/images/golden.img' }), null)).toMatch(
      /is the base/,
    )
    expect(stepProblem('files', draft({ sizeText: 'big' }), null)).toBe(
      "“big” is not a size: write for example 20G or 512M, or leave it empty for the base's size.",
    )
    expect(stepProblem('files', draft({ sizeText: '20G' }), null)).toBeNull()
  })

  it('refuses a cluster size whose bitmap the engine would refuse', () => {
    expect(stepProblem('clusters', draft({ sizeText: '32T', clusterSize: 4096 }), null)).toMatch(
      /bitmap of a 32 TiB disk is over 512 MiB: choose larger clusters/,
    )
    expect(
      stepProblem('clusters', draft({ sizeText: '32T', clusterSize: 64 * 1024 }), null),
    ).toBeNull()
  })
})
