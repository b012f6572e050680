import { defineStore } from 'pinia'
import { shallowRef } from 'vue'

/**
 * What the Chains view keeps between visits: the bases whose collapsed fan-out the user expanded
 * (or a search or selection revealed), so that coming back shows the graph as it was left.
 */
export const useChainViewStore = defineStore('chain-view', () => {
  /** Replaced whole on each change (a set in a shallow ref): the graph is rebuilt from it. */
  const expanded = shallowRef<ReadonlySet<string>>(new Set())
  return { expanded }
})
