import { readFileSync } from 'node:fs'
import { BaseSequencer, type TestSpecification } from 'vitest/node'

/**
 * The order of test files: vitest's own (longest first, from the last run's durations), with
 * the files of each DOM environment (`@vitest-environment happy-dom`) moved after the node files
 * of their project, in one block.
 *
 * Without isolation a worker keeps its module graph from file to file, but only while the next
 * file in the queue has the same environment: otherwise vitest stops the worker and starts a
 * fresh one, which imports the engine (or the DOM and Vue) again. In vitest's order the 18 DOM
 * files fell among the 113 node files, and the unit run started a worker at almost every
 * switch: about half of its "import" and "environment" time. In one block each worker switches
 * once. Putting the block last keeps the longest node files first, where they balance best.
 */
export default class EnvironmentSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files)
    // vitest's order keeps each project's files together: reorder inside each run of a project.
    const byProject = new Map<string, TestSpecification[]>()
    for (const file of sorted) {
      const name = file.project.name
      const group = byProject.get(name) ?? []
      group.push(file)
      byProject.set(name, group)
    }
    return [...byProject.values()].flatMap((group) => {
      const environments = new Map(group.map((file) => [file, environmentOf(file.moduleId)]))
      const names = [...new Set(environments.values())].sort(nodeFirst)
      return names.flatMap((name) => group.filter((file) => environments.get(file) === name))
    })
  }
}

/** The environment a file asks for in its `@vitest-environment` comment ('' if none). */
function environmentOf(path: string): string {
  try {
    return /@vitest-environment\s+(\S+)/.exec(readFileSync(path, 'utf8'))?.[1] ?? ''
  } catch {
    return ''
  }
}

/** The project's own environment (no comment) first, then the others by name. */
function nodeFirst(a: string, b: string): number {
  if (a === b) return 0
  if (a === '') return -1
  if (b === '') return 1
  return a < b ? -1 : 1
}
