import { EngineError } from '../../engine/errors'
import { createOverlay } from '../../engine/ops/create'
import { formatSize, parseSize } from '../../engine/units'
import { defineCommand } from '../command'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom } from '../options'
import { closestMatch } from '../suggest'

/**
 * The keys of `create -o` (the add-cow proposal's own syntax, as qemu-img create -o), and the
 * short option each one stands for.
 */
const CREATE_KEYS = {
  backing_file: 'b',
  backing_fmt: 'F',
  image_file: 'i',
  cluster_size: 'c',
  size: 's',
} as const

type CreateKey = keyof typeof CREATE_KEYS

/** What `-o help` prints. */
const CREATE_KEYS_HELP = `Supported add-cow options:
  backing_file=NAME   backing file (as -b)
  backing_fmt=FMT     format of the backing file (as -F)
  image_file=NAME     raw file that receives the writes (as -i)
  cluster_size=SIZE   cluster size, 4K..2M (as -c)
  size=SIZE           virtual size (as -s or a trailing SIZE)
`

/** Split qemu's option list at single commas; a doubled comma is one comma in the item. */
function splitOptionList(text: string): string[] {
  const items: string[] = []
  let current = ''
  for (let index = 0; index < text.length; index++) {
    const char = text[index]!
    if (char !== ',') current += char
    else if (text[index + 1] === ',') {
      current += ','
      index++
    } else {
      items.push(current)
      current = ''
    }
  }
  items.push(current)
  return items
}

/**
 * Parse `-o key=value,key=value` as qemu-img does (a doubled comma is a comma inside a value).
 * Several -o options add up; a key given twice with different values is an error.
 */
export function parseCreateOptions(texts: readonly string[]): Partial<Record<CreateKey, string>> {
  const result: Partial<Record<CreateKey, string>> = {}
  for (const text of texts) {
    for (const item of splitOptionList(text)) {
      if (item === '') continue
      const at = item.indexOf('=')
      const key = at < 0 ? item : item.slice(0, at)
      const value = at < 0 ? '' : item.slice(at + 1)
      if (!(key in CREATE_KEYS)) {
        const hint = closestMatch(key, Object.keys(CREATE_KEYS))
        throw new EngineError(
          'BAD_ARGUMENT',
          `-o '${key}' is not an add-cow option${hint ? `; did you mean '${hint}'?` : ''} (known: ${Object.keys(CREATE_KEYS).join(', ')}; -o help lists them).`,
          { field: '-o', value: key },
        )
      }
      if (at < 0 || value === '') {
        throw new EngineError('BAD_ARGUMENT', `-o ${key} needs a value (${key}=...).`, {
          field: '-o',
          value: key,
        })
      }
      const previous = result[key as CreateKey]
      if (previous !== undefined && previous !== value) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `-o ${key} is given twice ('${previous}' and '${value}').`,
          { field: '-o', value: key },
        )
      }
      result[key as CreateKey] = value
    }
  }
  return result
}

/**
 * One setting given several ways (-b and -o backing_file=, -s and a trailing SIZE): all must
 * agree, compared by `same` (sizes by their bytes: 2G and 2048M agree).
 */
function agree(
  what: string,
  given: [string, string | undefined][],
  same: (a: string, b: string) => boolean = (a, b) => a === b,
): string | undefined {
  const present = given.filter((entry): entry is [string, string] => entry[1] !== undefined)
  const first = present[0]
  for (const other of present.slice(1)) {
    if (!same(other[1], first![1])) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `The ${what} is given twice: ${first![0]} '${first![1]}' and ${other[0]} '${other[1]}'.`,
        { field: what, value: other[1] },
      )
    }
  }
  return first?.[1]
}

/** Whether two size texts name the same number of bytes. */
function sameSize(what: string): (a: string, b: string) => boolean {
  return (a, b) => parseSize(a, what) === parseSize(b, what)
}

/** `addcow create`: a new add-cow overlay and its image file; the library trusts its names. */
export const createCommand = defineCommand({
  name: 'create',
  summary: 'create an add-cow overlay (and its raw image file)',
  usage: `addcow create [-b BASE] [-F BASE_FMT] [-i IMAGE_FILE] [-s SIZE] [-c CLUSTER_SIZE] OVERLAY [SIZE]
       addcow create [-f add-cow] [-o backing_file=BASE,backing_fmt=FMT,image_file=FILE,cluster_size=N] OVERLAY [SIZE]

  -b BASE          backing file, stored as given (relative to OVERLAY's folder)
  -F BASE_FMT      format of BASE (default: probed from BASE)
  -i IMAGE_FILE    raw file that receives the writes (default: OVERLAY with .add-cow -> .raw)
  -s SIZE          virtual size, e.g. 10G (default: BASE's size); never shrinks IMAGE_FILE
  -c CLUSTER_SIZE  4K..2M, a power of two (default 64K)
  -f add-cow       the format to create (qemu-img's spelling; add-cow is the only one)
  -o KEY=VALUE,... qemu-img's and the add-cow proposal's syntax for the options above:
                   backing_file, backing_fmt, image_file, cluster_size, size (-o help)
  SIZE             a trailing size, as qemu-img create takes it (same as -s)
${NAME_POLICY_USAGE}`,
  options: {
    b: { type: 'string', short: 'b' },
    F: { type: 'string', short: 'F' },
    i: { type: 'string', short: 'i' },
    s: { type: 'string', short: 's' },
    c: { type: 'string', short: 'c' },
    f: { type: 'string', short: 'f' },
    o: { type: 'string', short: 'o', multiple: true },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 2, names: 'one OVERLAY' },
  async run({ values, positionals }, context) {
    const trailing = positionals[1]
    if (trailing !== undefined && !/^\s*\d/.test(trailing)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `Expected one OVERLAY and optionally a SIZE; got 2 arguments, and '${trailing}' is not a size. Try 'addcow help create'.`,
        { field: 'size', value: trailing },
      )
    }
    if ((values.o ?? []).some((text) => text === 'help' || text === '?')) {
      context.stdout.write(CREATE_KEYS_HELP)
      return 0
    }
    const keys = parseCreateOptions(values.o ?? [])
    if (values.f !== undefined && values.f !== 'add-cow') {
      throw new EngineError(
        'BAD_ARGUMENT',
        `addcow create makes add-cow overlays only, not '${values.f}' (use qemu-img create -f ${values.f} for that, or leave -f out).`,
        { field: '-f', value: values.f },
      )
    }
    const backingName = agree('backing file', [
      ['-b', values.b],
      ['-o backing_file', keys.backing_file],
    ])
    const backingFormat = agree('backing format', [
      ['-F', values.F],
      ['-o backing_fmt', keys.backing_fmt],
    ])
    const imageName = agree('image file', [
      ['-i', values.i],
      ['-o image_file', keys.image_file],
    ])
    const clusterText = agree(
      'cluster size',
      [
        ['-c', values.c],
        ['-o cluster_size', keys.cluster_size],
      ],
      sameSize('cluster size'),
    )
    const sizeText = agree(
      'size',
      [
        ['-s', values.s],
        ['-o size', keys.size],
        ['the trailing SIZE', positionals[1]],
      ],
      sameSize('size'),
    )
    const result = await createOverlay({
      overlay: positionals[0]!,
      ...(backingName !== undefined ? { backing: backingName } : {}),
      ...(backingFormat !== undefined ? { backingFormat } : {}),
      ...(imageName !== undefined ? { image: imageName } : {}),
      ...(sizeText !== undefined ? { size: parseSize(sizeText, 'size') } : {}),
      ...(clusterText !== undefined ? { clusterSize: parseSize(clusterText, 'cluster size') } : {}),
      policy: await policyFrom(context, values),
      signal: context.signal,
    })
    await context.library.trust(result.trust, 'created')
    if (result.baseFingerprint) await context.library.recordBaseFingerprint(result.baseFingerprint)
    await context.library.addImages([result.overlay])
    const base = result.backing
      ? `, backing_file=${backingName}, backing_fmt=${result.backingFormat}`
      : ''
    context.stdout.write(
      `Formatting '${positionals[0]}', fmt=add-cow size=${result.size} (${formatSize(result.size)}) cluster_size=${result.clusterSize}${base}, image_file=${result.image}${result.imageCreated ? '' : ' (existing)'}\n`,
    )
    return 0
  },
})
