import { compareDisks } from '../../engine/ops/compare'
import { openImage } from '../../engine/open'
import { parseCommandArgs } from '../args'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom, type Command } from '../context'

export const compareCommand: Command = {
  name: 'compare',
  summary: 'compare the guest-visible content of two images',
  usage: `addcow compare [-f FMT] [-F FMT] A B

  -f FMT   format of A (default: probed)
  -F FMT   format of B (default: probed)
${NAME_POLICY_USAGE}

Exit status: 0 same content, 1 different, 2 error. Like qemu-img compare, a size difference
alone is not a difference when the larger image's extra part reads as zeros.`,
  errorExitCode: 2,
  async run(context) {
    const { values, positionals } = parseCommandArgs(
      'compare',
      context.argv,
      { f: { type: 'string', short: 'f' }, F: { type: 'string', short: 'F' }, ...NAME_POLICY_OPTIONS },
      { min: 2, max: 2, names: 'two images A and B' },
    )
    const policy = await policyFrom(context, values)
    const a = await openImage(positionals[0]!, { readOnly: true, policy, ...(values.f ? { format: values.f } : {}) })
    try {
      const b = await openImage(positionals[1]!, { readOnly: true, policy, ...(values.F ? { format: values.F } : {}) })
      try {
        const result = await compareDisks(a, b, { signal: context.signal })
        if (result.identical) {
          context.stdout.write(
            result.sizes[0] === result.sizes[1] ? 'Images are identical.\n' : 'Images are identical (the larger one ends in zeros).\n',
          )
          return 0
        }
        context.stdout.write(`Content mismatch at offset ${result.firstDifference}!\n`)
        return 1
      } finally {
        await b.close()
      }
    } finally {
      await a.close()
    }
  },
}
