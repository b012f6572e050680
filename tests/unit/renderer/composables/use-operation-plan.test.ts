// @vitest-environment happy-dom
import { beforeAll, describe, expect, it } from 'vitest'
import { ref } from 'vue'
import { useOperationPlan } from '../../../../renderer/src/composables/use-operation-plan'
import { installFakeMain, settle } from '../helpers/fake-main'

// The plan an operation screen reads before it runs: read when the image changes, shown as
// loading meanwhile, explained when it fails, read again on demand (quietly: the plan stays on
// show), and never replaced by a late answer about an image no longer on show.

beforeAll(() => {
  installFakeMain()
})

/** A reader whose answers the test gives, one pending promise per path asked. */
function deferredReader() {
  const pending = new Map<
    string,
    { resolve: (plan: string) => void; reject: (e: unknown) => void }
  >()
  const asked: string[] = []
  const read = (_client: unknown, path: string): Promise<string> =>
    new Promise((resolve, reject) => {
      asked.push(path)
      pending.set(path, { resolve, reject })
    })
  return { read, asked, pending }
}

describe('useOperationPlan', () => {
  it('reads the plan of the image on show, with loading meanwhile', async () => {
    const image = ref<string | null>(null)
    const reader = deferredReader()
    const plan = useOperationPlan(image, reader.read)
    expect(reader.asked).toEqual([])
    expect(plan.loading.value).toBe(false)
    image.value = '/vm/a.add-cow'
    await settle()
    expect(reader.asked).toEqual(['/vm/a.add-cow'])
    expect(plan.loading.value).toBe(true)
    expect(plan.plan.value).toBeNull()
    reader.pending.get('/vm/a.add-cow')!.resolve('plan of a')
    await settle()
    expect(plan.plan.value).toBe('plan of a')
    expect(plan.loading.value).toBe(false)
    image.value = null
    await settle()
    expect(plan.plan.value).toBeNull()
  })

  it('drops an answer about an image that is no longer on show', async () => {
    const image = ref<string | null>('/vm/a.add-cow')
    const reader = deferredReader()
    const plan = useOperationPlan(image, reader.read)
    image.value = '/vm/b.add-cow'
    await settle()
    reader.pending.get('/vm/b.add-cow')!.resolve('plan of b')
    reader.pending.get('/vm/a.add-cow')!.resolve('plan of a')
    await settle()
    expect(plan.plan.value).toBe('plan of b')
    expect(plan.loading.value).toBe(false)
  })

  it('explains a failure, and reads again on demand', async () => {
    const image = ref<string | null>('/vm/alone.add-cow')
    const reader = deferredReader()
    const plan = useOperationPlan(image, reader.read)
    reader.pending.get('/vm/alone.add-cow')!.reject({
      code: 'BAD_ARGUMENT',
      message: '/vm/alone.add-cow has no backing file, so a commit has nowhere to go',
      path: '/vm/alone.add-cow',
    })
    await settle()
    expect(plan.plan.value).toBeNull()
    expect(plan.loading.value).toBe(false)
    expect(plan.error.value).toMatchObject({
      code: 'BAD_ARGUMENT',
      sentence: '/vm/alone.add-cow has no backing file, so a commit has nowhere to go.',
      path: '/vm/alone.add-cow',
    })
    const again = plan.reload()
    expect(plan.error.value).toBeNull()
    expect(plan.loading.value).toBe(true)
    reader.pending.get('/vm/alone.add-cow')!.resolve('plan at last')
    await again
    expect(plan.plan.value).toBe('plan at last')
  })

  it('keeps the plan on show during a quiet reload', async () => {
    const image = ref<string | null>('/vm/a.add-cow')
    const reader = deferredReader()
    const plan = useOperationPlan(image, reader.read)
    reader.pending.get('/vm/a.add-cow')!.resolve('first')
    await settle()
    const again = plan.reload({ quiet: true })
    expect(plan.plan.value).toBe('first')
    expect(plan.loading.value).toBe(false)
    reader.pending.get('/vm/a.add-cow')!.resolve('second')
    await again
    expect(plan.plan.value).toBe('second')
  })
})
