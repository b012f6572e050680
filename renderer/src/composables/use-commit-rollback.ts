import { computed, ref } from 'vue'
import { isAbsolutePath } from '../../../shared/ipc/contract'
import { useOperationJob } from './use-operation-job'

/**
 * The rollback of a journaled commit, as the commit screen offers it: this commit's journal
 * (from its result) or an earlier one picked from disk, a confirmation before anything is
 * written, then the operations:rollback-commit job, which may be forced past a changed base.
 */
export function useCommitRollback() {
  const job = useOperationJob('operations:rollback-commit')
  /** The rollback panel is open. */
  const open = ref(false)
  /** The undo journal to roll back (an absolute path). */
  const journal = ref('')
  /** The user is being asked to confirm. */
  const confirming = ref(false)
  const valid = computed(() => isAbsolutePath(journal.value))

  /** Open the panel on a journal: this commit's (asks to confirm at once), or '' to pick one. */
  function openOn(path: string): void {
    if (job.busy.value) return
    job.reset()
    journal.value = path
    open.value = true
    confirming.value = path !== ''
  }

  function close(): void {
    if (job.busy.value) return
    job.reset()
    open.value = false
    confirming.value = false
  }

  /** Another journal: what was done or asked about the last one no longer applies. */
  function setJournal(path: string): void {
    job.reset()
    journal.value = path
  }

  /** Roll back; `force` goes on past a changed base or a missing overlay. */
  async function run(force: boolean): Promise<void> {
    if (!valid.value || job.busy.value) return
    confirming.value = false
    await job.run({ journal: journal.value, force })
  }

  /** Whether the journal at `path` was rolled back here already. */
  function rolledBack(path: string | null): boolean {
    return job.result.value !== null && journal.value === path
  }

  return { job, open, journal, confirming, valid, openOn, close, setJournal, run, rolledBack }
}

/** What {@link useCommitRollback} returns. */
export type CommitRollback = ReturnType<typeof useCommitRollback>
