// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { beforeAll, describe, expect, it } from 'vitest'
import type { InterruptedCommitView } from '../../../../shared/ipc/contract'
import CommitInterruptedCard from '../../../../renderer/src/components/CommitInterruptedCard.vue'
import { stubMatchMedia } from '../helpers/dom'

// Issue 12 item 4: a commit that stopped part way, as the commit screen explains it.

beforeAll(stubMatchMedia)

const MiB = 1024 * 1024
const commit: InterruptedCommitView = {
  overlay: '/vm/mine.add-cow',
  base: '/vm/base.raw',
  journal: '/vm/mine.undo',
  bytesCommitted: 3 * MiB,
  ranges: [
    [MiB, 2 * MiB],
    [4 * MiB, 6 * MiB],
  ],
  bytesTotal: 8 * MiB,
  dependents: ['/vm/theirs.add-cow'],
  code: 'ABORTED',
  message: 'The commit was cancelled.',
  at: '2026-12-05T21:00:00.000Z',
}

describe('CommitInterruptedCard', () => {
  it('says what the base holds, that the overlay reads the same, and who sees part of it', async () => {
    const wrapper = mount(CommitInterruptedCard, { props: { commit } })
    const text = wrapper.text()
    expect(text).toContain('The commit into base.raw was cancelled part way')
    expect(text).toContain('now holds 3 MiB of the 8 MiB to commit, at 1 MiB–2 MiB, 4 MiB–6 MiB')
    expect(text).toContain('The overlay still reads the same')
    expect(text).toContain('1 other image now sees part of the commit: theirs.add-cow.')
    const buttons = wrapper.findAll('button')
    expect(buttons.map((button) => button.text())).toEqual([
      'Resume the commit',
      'Roll back what was committed',
    ])
    await buttons[0]!.trigger('click')
    await buttons[1]!.trigger('click')
    expect(wrapper.emitted('resume')).toEqual([['/vm/mine.undo']])
    expect(wrapper.emitted('rollback')).toEqual([['/vm/mine.undo']])
  })

  it('offers no rollback without a journal, and says why it stopped after an error', () => {
    const wrapper = mount(CommitInterruptedCard, {
      props: {
        commit: {
          ...commit,
          journal: null,
          dependents: [],
          code: 'IO_ERROR',
          message: 'No space left on the device.',
        },
      },
    })
    const text = wrapper.text()
    expect(text).toContain('The commit into base.raw stopped part way')
    expect(text).toContain('Why it stopped: No space left on the device.')
    expect(text).toContain('No other image reads through the base.')
    expect(text).toContain('can be finished but not rolled back')
    expect(wrapper.findAll('button').map((button) => button.text())).toEqual(['Resume the commit'])
  })
})
