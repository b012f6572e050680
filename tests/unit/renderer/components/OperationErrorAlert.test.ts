// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { beforeAll, describe, expect, it } from 'vitest'
import OperationErrorAlert from '../../../../renderer/src/components/OperationErrorAlert.vue'
import { explainError } from '../../../../renderer/src/lib/operation-errors'
import { stubMatchMedia } from '../helpers/dom'

// An error with the file and value at fault and what to do; a cancel is not a failure.

beforeAll(stubMatchMedia)

describe('OperationErrorAlert', () => {
  it('shows the sentence, the file and the value at fault, and what to do', () => {
    const error = explainError({
      code: 'BASE_CHANGED',
      message: 'The base /images/base.raw changed since the overlay was made (size 8 MiB → 16 MiB)',
      path: '/images/base.raw',
      field: 'virtual size',
      value: 16777216,
    })
    const wrapper = mount(OperationErrorAlert, {
      props: { error, title: 'The commit did not run' },
      slots: { default: '<button>Commit into the base as it is now</button>' },
    })
    expect(wrapper.find('[role="alert"]').exists()).toBe(true)
    const text = wrapper.text()
    expect(text).toContain('The commit did not run')
    expect(text).toContain('(size 8 MiB → 16 MiB).')
    expect(wrapper.get('[data-middle-ellipsis]').attributes('title')).toBe('/images/base.raw')
    expect(text).toContain('virtual size')
    expect(text).toContain('16777216')
    expect(text).toContain('What you can do: If the base was changed on purpose')
    expect(wrapper.find('button').text()).toBe('Commit into the base as it is now')
  })

  it('shows a cancelled operation as cancelled, not as a failure', () => {
    const wrapper = mount(OperationErrorAlert, {
      props: {
        error: explainError({ code: 'ABORTED', message: 'The flatten was cancelled.' }),
        title: 'The flatten did not finish',
      },
    })
    expect(wrapper.text()).toContain('Cancelled')
    expect(wrapper.text()).not.toContain('did not finish')
    expect(wrapper.text()).toContain('start it again to resume')
  })
})
