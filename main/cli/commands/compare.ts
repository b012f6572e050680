import { compareDisks } from '../../engine/ops/compare'
import { openImage } from '../../engine/open'
import { defineCommand } from '../command'
import { FORMAT_OPTION, NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom } from '../options'

/** `addcow compare`: the guest views of two images, exit 0 same, 1 different, 2 error. */
export const compareCommand = defineCommand({
  name: 'compare',
  summary: 'compare the guest-visible content of two images',
  usage: `addcow compare [-f FMT] [-F FMT] A B

  -f FMT   format of A (default: probed)
  -F FMT   format of B (default: probed)
${NAME_POLICY_USAGE}

Exit status: 0 same content, 1 different, 2 error. Like qemu-img compare, a size difference
alone is not a difference when the larger image's extra part reads as zeros.`,
  errorExitCode: 2,
  options: {
    ...FORMAT_OPTION,
    F: { type: 'string', short: 'F' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 2, max: 2, names: 'two images A and B' },
  async run({ values, positionals }, context) {
    const policy = await policyFrom(context, values)
    const a = await openImage(positionals[0]!, {
      readOnly: true,
      policy,
      ...(values.f ? { format: values.f } : {}),
    })
    try {
      const b = await openImage(positionals[1]!, {
        readOnly: true,
        policy,
        ...(values.F ? { format: values.F } : {}),
      })
      try {
        const result = await compareDisks(a, b, { signal: context.signal })
        if (result.identical) {
          context.stdout.write(
            result.sizes[0] === result.sizes[1]
              ? 'Images are identical.\n'
              : 'Images are identical (the larger one ends in zeros).\n',
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
})
