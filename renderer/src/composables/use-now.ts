import { onBeforeUnmount, ref, type Ref } from 'vue'

/** The time now (ms since the epoch), updated every `intervalMs` while the component lives. */
export function useNow(intervalMs: number): Ref<number> {
  const now = ref(Date.now())
  const timer = setInterval(() => (now.value = Date.now()), intervalMs)
  onBeforeUnmount(() => clearInterval(timer))
  return now
}
