import { defineStore } from 'pinia'
import { ref } from 'vue'

/** Dialogs any screen or the menu can open. */
export const useUiStore = defineStore('ui', () => {
  const createOverlayOpen = ref(false)
  /** A base to propose when the create-overlay dialog opens. */
  const createOverlayBase = ref<string | null>(null)

  function openCreateOverlay(base: string | null = null): void {
    createOverlayBase.value = base
    createOverlayOpen.value = true
  }

  return { createOverlayOpen, createOverlayBase, openCreateOverlay }
})
