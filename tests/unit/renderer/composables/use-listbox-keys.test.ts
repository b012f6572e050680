import { describe, expect, it } from 'vitest'
import { useListboxKeys } from '../../../../renderer/src/composables/use-listbox-keys'

// The listbox keyboard of the file browser (renderer/src/composables/use-listbox-keys.ts).

const NAMES = ['alpha.img', 'beta.raw', 'beta2.raw', 'gamma.add-cow', 'golden.img']

function listbox() {
  const focused: number[] = []
  const spaced: number[] = []
  const keys = useListboxKeys({
    count: () => NAMES.length,
    label: (index) => NAMES[index]!,
    focus: (index) => focused.push(index),
    onSpace: (index) => spaced.push(index),
  })
  const press = (key: string): boolean => {
    let prevented = false
    keys.onKeydown({
      key,
      ctrlKey: false,
      metaKey: false,
      altKey: false,
      preventDefault: () => {
        prevented = true
      },
    } as unknown as KeyboardEvent)
    return prevented
  }
  return { keys, focused, spaced, press }
}

describe('useListboxKeys', () => {
  it('moves with arrows, Home and End, and stops at the ends', () => {
    const { keys, press } = listbox()
    expect(press('ArrowUp')).toBe(true)
    expect(keys.active.value).toBe(0)
    press('End')
    expect(keys.active.value).toBe(4)
    press('ArrowDown')
    expect(keys.active.value).toBe(4)
    press('Home')
    press('ArrowDown')
    expect(keys.active.value).toBe(1)
    expect(press('Tab')).toBe(false)
  })

  it('jumps to the name typed, cycles on a repeated letter, and Space selects after a move', () => {
    const { keys, press, spaced } = listbox()
    for (const letter of 'gol') press(letter)
    expect(NAMES[keys.active.value]).toBe('golden.img')
    press('Home')
    press('b')
    expect(NAMES[keys.active.value]).toBe('beta.raw')
    press('b')
    expect(NAMES[keys.active.value]).toBe('beta2.raw')
    press('ArrowUp')
    press(' ')
    expect(spaced).toEqual([1])
  })
})
