import { useMessage } from 'naive-ui'

/** Put `text` on the clipboard: the clipboard API, or a selected text area where it is missing. */
export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text)
    return
  }
  const area = document.createElement('textarea')
  area.value = text
  area.setAttribute('readonly', '')
  area.style.position = 'fixed'
  area.style.opacity = '0'
  document.body.append(area)
  area.select()
  const copied = document.execCommand('copy')
  area.remove()
  if (!copied) throw new Error('the browser refused to copy')
}

/** Copy with a message saying it was done (`what`: "the JSON of x.add-cow"), or why not. */
export function useClipboard() {
  const message = useMessage()
  async function copy(text: string, what: string): Promise<boolean> {
    try {
      await copyText(text)
      message.success(`Copied ${what}.`)
      return true
    } catch (error) {
      message.error(
        `Could not copy ${what} (${error instanceof Error ? error.message : String(error)}); select it on screen instead.`,
      )
      return false
    }
  }
  return { copy }
}
