import { useAppDialog } from './use-app-dialog'

/**
 * Reset and Force off take from the guest what it had not yet written to its disk, so they ask
 * first and say what is lost. A session run without saving changes loses more on Force off: the
 * whole run's writes, which the dialog says too. Focus moves into the dialog, for keyboard and
 * screen-reader users; confirming is a deliberate press of the named button.
 */
export function useConfirmPower() {
  const dialog = useAppDialog()

  function confirmReset(reset: () => unknown): void {
    dialog.warning({
      title: 'Reset the guest?',
      content:
        "It restarts at once, as a PC does when its reset button is pressed. Whatever the guest's programs had not yet written to its disk is lost, and its file systems may need a check when it starts again.",
      positiveText: 'Reset',
      negativeText: 'Cancel',
      autoFocus: true,
      onPositiveClick: () => void reset(),
    })
  }

  function confirmForceOff(discardsChanges: boolean, forceOff: () => unknown): void {
    const lost = discardsChanges
      ? ' This run does not save changes: everything the guest wrote since it started is thrown away as well.'
      : ''
    dialog.warning({
      title: 'Force the guest off?',
      content: `QEMU quits at once, as if the power cord were pulled: whatever the guest had not yet written to its disk is lost.${lost}`,
      positiveText: 'Force off',
      negativeText: 'Cancel',
      autoFocus: true,
      onPositiveClick: () => void forceOff(),
    })
  }

  return { confirmReset, confirmForceOff }
}
