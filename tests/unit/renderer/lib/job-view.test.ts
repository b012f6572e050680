import { describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../../shared/ipc/contract'
import { cancelledElsewhereNote } from '../../../../renderer/src/lib/job-view'

// renderer/src/lib/job-view.ts: what the Jobs view says of a job cancelled outside the app.

function job(state: JobInfo['state'], message: string | null): JobInfo {
  return {
    title: 'Live flatten of a running VM',
    state,
    error: message === null ? null : { code: 'ABORTED', message },
  } as JobInfo
}

describe('cancelledElsewhereNote', () => {
  it('says who cancelled it once, without repeating the title the row shows', () => {
    expect(
      cancelledElsewhereNote(
        job(
          'cancelled',
          'Live flatten of a running VM: cancelled outside the app (addcow job cancel flatten-1); what it copied stays.',
        ),
      ),
    ).toBe('Cancelled outside the app (addcow job cancel flatten-1); what it copied stays.')
  })

  it("says nothing of the app's own cancel, or of a job that was not cancelled", () => {
    expect(
      cancelledElsewhereNote(job('cancelled', 'Live flatten of a running VM: cancelled.')),
    ).toBe(null)
    expect(cancelledElsewhereNote(job('cancelled', null))).toBe(null)
    expect(cancelledElsewhereNote(job('failed', 'Live flatten of a running VM: disk full'))).toBe(
      null,
    )
    expect(cancelledElsewhereNote(job('done', null))).toBe(null)
  })

  it('keeps a message that does not start with the title whole', () => {
    expect(cancelledElsewhereNote(job('cancelled', 'stopped by the export'))).toBe(
      'Stopped by the export',
    )
  })
})
