import { describe, expect, it } from 'vitest'
import { defaultUndoPath, fileStamp } from '../../../../renderer/src/lib/commit-undo'

// The undo journal proposed for a commit: beside the overlay, named after it and the time.

describe('defaultUndoPath', () => {
  it('puts the journal beside the overlay with a sortable local time', () => {
    const when = new Date(2025, 0, 2, 3, 4, 5)
    expect(fileStamp(when)).toBe('20250102-030405')
    expect(defaultUndoPath('/vm/mine.add-cow', '/', when)).toBe(
      '/vm/mine.add-cow.20250102-030405.undo',
    )
    expect(defaultUndoPath('C:\\vm\\mine.add-cow', '\\', when)).toBe(
      'C:\\vm\\mine.add-cow.20250102-030405.undo',
    )
  })
})
