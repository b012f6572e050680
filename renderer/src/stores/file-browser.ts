import { defineStore } from 'pinia'
import { ref } from 'vue'

/** What the in-app file browser is asked for. */
export interface FileBrowserRequest {
  mode: 'open' | 'save'
  title: string
  /** Open mode: allow several files. */
  multiple: boolean
  /** Folder to start in (default: the last one shown, else the library's, else home). */
  folder?: string
  /** Save mode: the proposed file name. */
  fileName?: string
}

/** Where the last folder is kept. */
export const LAST_FOLDER_KEY = 'addcow.file-browser.last-folder'

function readLastFolder(): string | null {
  try {
    return window.localStorage.getItem(LAST_FOLDER_KEY)
  } catch {
    return null
  }
}

/**
 * Drives the one in-app file browser dialog (the browser mode's stand-in for native dialogs):
 * `ask` opens it and resolves with the chosen paths, or null when cancelled.
 */
export const useFileBrowserStore = defineStore('file-browser', () => {
  const request = ref<FileBrowserRequest | null>(null)
  /** The folder the browser showed last (kept between sessions), where it opens next. */
  const lastFolder = ref<string | null>(readLastFolder())

  function remember(folder: string): void {
    lastFolder.value = folder
    try {
      window.localStorage.setItem(LAST_FOLDER_KEY, folder)
    } catch {
      // Storage refused: remembered for this session only.
    }
  }
  let answer: ((paths: string[] | null) => void) | null = null

  function ask(next: FileBrowserRequest): Promise<string[] | null> {
    answer?.(null)
    request.value = next
    return new Promise((resolve) => {
      answer = resolve
    })
  }

  function finish(paths: string[] | null): void {
    const resolve = answer
    answer = null
    request.value = null
    resolve?.(paths)
  }

  return { request, lastFolder, ask, finish, remember }
})
