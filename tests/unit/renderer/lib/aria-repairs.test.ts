// @vitest-environment happy-dom
import { describe, expect, it } from 'vitest'
import { repairAriaGaps } from '../../../../renderer/src/lib/aria-repairs'

// The DOM mends for naive-ui's accessibility gaps (renderer/src/lib/aria-repairs.ts).

describe('repairAriaGaps', () => {
  it('gives card headers a level and number-field buttons a name, also when they appear later', async () => {
    document.body.innerHTML = `
      <div class="n-card-header" role="heading"><div class="n-card-header__main" role="heading">Repair</div></div>`
    const observer = repairAriaGaps(document)
    expect(document.querySelector('.n-card-header')?.getAttribute('aria-level')).toBe('2')
    expect(document.querySelector('.n-card-header__main')?.getAttribute('role')).toBe('none')
    const field = document.createElement('div')
    field.className = 'n-input-number'
    field.innerHTML = '<input><button></button><button></button>'
    document.body.append(field)
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(
      [...field.querySelectorAll('button')].map((button) => button.getAttribute('aria-label')),
    ).toEqual(['Decrease', 'Increase'])
    observer.disconnect()
  })
})

describe('a select without a text field', () => {
  it('becomes a named combobox, expanded while open', async () => {
    document.body.innerHTML = `
      <div class="n-select" aria-label="Sort"><div class="n-base-selection"><div class="n-base-selection-label" tabindex="0"></div></div></div>`
    const observer = repairAriaGaps(document)
    const box = document.querySelector<HTMLElement>('.n-base-selection-label')!
    expect(box.getAttribute('role')).toBe('combobox')
    expect(box.getAttribute('aria-label')).toBe('Sort')
    expect(box.getAttribute('aria-expanded')).toBe('false')
    expect(document.querySelector('.n-select')?.hasAttribute('aria-label')).toBe(false)
    document.querySelector('.n-base-selection')!.classList.add('n-base-selection--active')
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(box.getAttribute('aria-expanded')).toBe('true')
    observer.disconnect()
  })
})

describe('a disabled checkbox', () => {
  it('says it is disabled, and stops saying so when enabled again', async () => {
    document.body.innerHTML = `
      <div class="n-checkbox n-checkbox--disabled" role="checkbox" aria-checked="false"></div>
      <div class="n-checkbox" role="checkbox" aria-checked="true" tabindex="0"></div>`
    const observer = repairAriaGaps(document)
    const [disabled, enabled] = document.querySelectorAll<HTMLElement>('.n-checkbox')
    expect(disabled!.getAttribute('aria-disabled')).toBe('true')
    expect(enabled!.hasAttribute('aria-disabled')).toBe(false)
    disabled!.classList.remove('n-checkbox--disabled')
    enabled!.classList.add('n-checkbox--disabled')
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(disabled!.hasAttribute('aria-disabled')).toBe(false)
    expect(enabled!.getAttribute('aria-disabled')).toBe('true')
    observer.disconnect()
  })
})
