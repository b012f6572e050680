import { EngineError } from '../../engine/errors'
import { resizeImage } from '../../engine/ops/resize'
import { formatSize, parseSize } from '../../engine/units'
import { defineCommand } from '../command'
import {
  ACCEPT_BASE_OPTION,
  FORMAT_OPTION,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
} from '../options'

/** `addcow resize`: grow (or, with --shrink and only zeros cut off, shrink) an image. */
export const resizeCommand = defineCommand({
  name: 'resize',
  summary: 'grow an overlay and its image file (or shrink one, when only zeros are cut)',
  usage: `addcow resize [--shrink] [-f FMT] IMAGE [+|-]SIZE

  SIZE        the new virtual size, e.g. 20G; +SIZE grows by SIZE, -SIZE shrinks by SIZE
  --shrink    allow a smaller size (as qemu-img resize); refused anyway when the part cut off
              holds any non-zero byte
  -f FMT      format of IMAGE (default: probed)
  --accept-base  resize although the base changed since the overlay was made
${NAME_POLICY_USAGE}

Growing an overlay whose base is longer than it shows the guest zeros in the new area (the
overlay covers the base's tail), as qemu-img resize does for qcow2.`,
  options: {
    shrink: { type: 'boolean' },
    ...FORMAT_OPTION,
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 2, max: 2, names: 'IMAGE and SIZE' },
  negativeLastArgument: true,
  async run({ values, positionals }, context) {
    const text = positionals[1]!
    const sign = text.startsWith('+') ? 1 : text.startsWith('-') ? -1 : 0
    const bytes = parseSize(sign === 0 ? text : text.slice(1), 'size')
    if (sign === 0 && bytes === 0) {
      throw new EngineError('BAD_ARGUMENT', 'The new size must not be 0.', {
        field: 'size',
        value: text,
      })
    }
    const result = await resizeImage({
      path: positionals[0]!,
      size: sign === 0 ? { absolute: bytes } : { delta: sign * bytes },
      shrink: values.shrink ?? false,
      ...(values.f ? { format: values.f } : {}),
      policy: await policyFrom(context, values),
      library: context.library,
      acceptBase: values['accept-base'] ?? false,
      signal: context.signal,
    })
    context.stdout.write(
      result.newSize === result.oldSize
        ? `${positionals[0]} already has ${result.newSize} bytes; nothing to do.\n`
        : `Image resized: ${formatSize(result.oldSize)} -> ${formatSize(result.newSize)} (${result.newSize} bytes).\n`,
    )
    return 0
  },
})
