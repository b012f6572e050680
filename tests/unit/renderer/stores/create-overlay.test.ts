// @vitest-environment happy-dom
import { createPinia, setActivePinia } from 'pinia'
import { beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { useCreateOverlayStore } from '../../../../renderer/src/stores/create-overlay'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'
import { MIB } from '../helpers/fixtures'

// The create-overlay wizard's store runs its job as every operation does (useOperationJob):
// the request made from the draft, progress while it runs, Cancel, and a failure or a cancel
// said in one sentence.

let main: FakeMain

beforeAll(() => {
  main = installFakeMain()
  main.handle('imageGetInfo', () => ({
    layers: [
      { filename: '/vm/golden.img', format: 'raw', 'virtual-size': 32 * MIB, 'actual-size': 0 },
    ],
  }))
  main.acceptJobs('operationsCreateOverlay')
})

beforeEach(() => {
  setActivePinia(createPinia())
  main.jobs.length = 0
})

async function drafted() {
  const wizard = useCreateOverlayStore()
  wizard.reset('/vm/golden.img')
  await wizard.baseSettled()
  return wizard
}

describe('the create-overlay store', () => {
  it('creates from the draft and keeps the result', async () => {
    const wizard = await drafted()
    expect(wizard.draft.baseSize).toBe(32 * MIB)
    const created = wizard.create()
    await settle()
    expect(wizard.running).toBe(true)
    expect(main.jobs[0]!.request).toEqual({
      overlay: '/vm/golden-overlay.add-cow',
      backing: 'golden.img',
      backingFormat: 'raw',
      image: 'golden-overlay.raw',
      clusterSize: 65536,
    })
    const result = {
      overlay: '/vm/golden-overlay.add-cow',
      image: '/vm/golden-overlay.raw',
      imageCreated: true,
      backing: 'golden.img',
      backingFormat: 'raw',
      size: 32 * MIB,
      clusterSize: 65536,
    }
    main.finish(main.jobs[0]!, result)
    expect(await created).toEqual(result)
    expect(wizard.running).toBe(false)
    expect(wizard.result).toEqual(result)
    expect(wizard.failure).toBeNull()
  })

  it('says why the overlay was not created, with what to do', async () => {
    const wizard = await drafted()
    const created = wizard.create()
    await settle()
    main.fail(main.jobs[0]!, {
      code: 'ALREADY_EXISTS',
      message: '/vm/golden-overlay.add-cow already exists',
      path: '/vm/golden-overlay.add-cow',
    })
    expect(await created).toBeNull()
    expect(wizard.failure).toBe(
      'The overlay was not created: /vm/golden-overlay.add-cow already exists. Choose another name, or move the existing file away first.',
    )
  })

  it('cancels, and says nothing was left behind', async () => {
    const wizard = await drafted()
    const created = wizard.create()
    await settle()
    await wizard.cancel()
    expect(main.calls.at(-1)).toEqual({
      key: 'jobsCancelJob',
      request: { jobId: main.jobs[0]!.info.id },
    })
    main.fail(main.jobs[0]!, { code: 'ABORTED', message: 'Cancelled.' })
    expect(await created).toBeNull()
    expect(wizard.failure).toBe('Creation was cancelled; nothing was left behind.')
    wizard.reset(null)
    expect(wizard.failure).toBeNull()
  })
})
