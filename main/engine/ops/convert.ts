import { resolve } from 'node:path'
import { layerFiles, type OperationOptions } from '../disk'
import { EngineError } from '../errors'
import { realPath } from '../fs'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { chainOf } from '../open'
import { loadDriver } from '../registry'
import { runOverlayJob } from './job'

/** What `addcow convert` needs. */
export interface ConvertOptions extends OperationOptions {
  /** The image to read (its whole chain). */
  source: string
  /** Its format, when known (otherwise probed). */
  format?: string
  /** The new file: a standalone image with the source's guest view. */
  output: string
  /** The new file's format (a driver with `convertInto`: raw, qcow2). */
  outputFormat: string
  /** Cluster size of the new file, where its format has clusters. */
  clusterSize?: number
  policy?: NamePolicy
  /** For the drift guard; without it the base's fingerprint is not checked. */
  library?: Library
  acceptBase?: boolean
}

/** What a convert wrote. */
export interface ConvertResult {
  output: string
  format: string
  size: number
}

/**
 * `convert`: write the guest view of an image and its whole chain into a new standalone file of
 * another format, as `qemu-img convert -O FMT` does. The source chain is opened read-only and
 * locked shared for the whole copy (nobody may write what is being read); the output is written
 * by its format's driver into a temporary file that takes its name only when complete, so an
 * error or a cancel leaves nothing behind and an existing output stays as it was. The output
 * must not be a file of the source's chain.
 */
export async function convertImage(options: ConvertOptions): Promise<ConvertResult> {
  const driver = await loadDriver(options.outputFormat)
  const convertInto = driver.convertInto
  if (!convertInto) {
    throw new EngineError(
      'NOT_CAPABLE',
      `convert cannot write ${options.outputFormat} files; it writes raw and qcow2.`,
      { field: 'output format', value: options.outputFormat },
    )
  }
  const output = resolve(options.output)
  return runOverlayJob(
    'convert',
    {
      ...options,
      path: options.source,
      readOnly: true,
      needs: [],
      doing: 'convert it',
      ...(options.library
        ? {
            drift: {
              library: options.library,
              accept: options.acceptBase ?? false,
              doing: 'convert it',
            },
          }
        : {}),
    },
    async (job) => {
      const realOutput = await realPath(output)
      for (const layer of chainOf(job.disk)) {
        for (const file of layerFiles(layer)) {
          if ((await realPath(file)) === realOutput) {
            throw new EngineError(
              'SAME_FILE',
              `The output ${output} is a file of the image being converted (${file}); choose another name.`,
              { path: output, field: 'output', value: options.output },
            )
          }
        }
      }
      await job.lockChain()
      await convertInto({
        path: output,
        source: job.disk,
        ...(options.clusterSize !== undefined ? { clusterSize: options.clusterSize } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      })
      return { output, format: driver.name, size: job.disk.size }
    },
  )
}
