import type { Command } from './command'
import { cliVersion } from './command'

// What the command table (commands/index.ts) generates besides parsing: `addcow help`, shell
// completions for bash, zsh and fish, and the man page. Each command's option table says which
// options exist (and whether they take a value); its usage text says what they mean. Both are
// read here, and tests/unit/cli/docs.test.ts checks that they name the same options.

/** One option line of a usage text: its spellings, its value placeholder and what it does. */
export interface OptionDoc {
  /** `-b`, `--json`, `-m` and `--memory` ... as the line writes them. */
  spellings: string[]
  /** The value placeholder (`BASE`, `raw|qcow2`), or null for a flag. */
  placeholder: string | null
  /** The choices a placeholder such as `leaks|all` lists (for completions), else []. */
  choices: string[]
  text: string
}

/** The option lines of a usage text ("  -b BASE   backing file ...", with continuation lines). */
export function optionDocs(usage: string): OptionDoc[] {
  const docs: OptionDoc[] = []
  for (const line of usage.split('\n')) {
    const option = /^ {2}(-\S.*?)(?: {2,}(.*))?$/.exec(line)
    if (option) {
      const head = option[1]!.trim()
      const tokens = head.split(/[ ,=]+/).filter((token) => token !== '')
      const spellings = tokens.filter((token) => /^--?[A-Za-z]/.test(token))
      const placeholders = tokens.filter((token) => !token.startsWith('-'))
      const placeholder = placeholders[0] ?? null
      const choices =
        placeholder && placeholder.includes('|') && /^[a-z0-9|-]+$/.test(placeholder)
          ? placeholder.split('|')
          : []
      docs.push({ spellings, placeholder, choices, text: (option[2] ?? '').trim() })
      continue
    }
    const last = docs[docs.length - 1]
    if (last && /^ {4,}\S/.test(line)) last.text = `${last.text} ${line.trim()}`.trim()
    else if (line.trim() === '' || !line.startsWith('  ')) {
      // A blank line or a paragraph ends the option list's continuation.
    }
  }
  return docs
}

/** How an option of the table is spelled on the command line: `-x` for a letter, else `--name` (and `-s` for its short). */
export function spellingsOf(name: string, short: string | undefined): string[] {
  if (name.length === 1) return [`-${name}`]
  return short ? [`--${name}`, `-${short}`] : [`--${name}`]
}

/** Every option of a command: its spellings, whether it takes a value, its doc line. */
export function commandOptions(command: Command): {
  name: string
  spellings: string[]
  takesValue: boolean
  repeatable: boolean
  doc: OptionDoc | undefined
}[] {
  const docs = optionDocs(command.usage)
  return Object.entries(command.options).map(([name, config]) => {
    const spellings = spellingsOf(name, config.short)
    const lines = docs.filter((doc) =>
      doc.spellings.some((spelling) => spellings.includes(spelling)),
    )
    // One line per value ("-r leaks ...", "-r all ...") lists the choices too.
    const choices =
      lines.length > 1
        ? lines.flatMap((line) =>
            line.placeholder && /^[a-z0-9-]+$/.test(line.placeholder)
              ? [line.placeholder]
              : line.choices,
          )
        : (lines[0]?.choices ?? [])
    return {
      name,
      spellings,
      takesValue: config.type === 'string',
      repeatable: config.multiple === true,
      doc: lines[0] && { ...lines[0], choices },
    }
  })
}

/** The text `addcow help` prints. */
export function topHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((command) => command.name.length))
  return [
    'addcow: copy-on-write overlays of VM disk images in the add-cow format',
    '',
    'Usage: addcow COMMAND [options] ...',
    '',
    ...commands.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    "Run 'addcow help COMMAND' for a command's options; 'addcow man' prints the manual page.",
    '',
  ].join('\n')
}

function shellWords(words: readonly string[]): string {
  return words.join(' ')
}

/** A bash completion script (`addcow completion bash`; source it, or put it in bash-completion's folder). */
export function bashCompletion(commands: readonly Command[]): string {
  const names = commands.map((command) => command.name)
  const cases = commands.map((command) => {
    const options = commandOptions(command)
    const values = options
      .filter((option) => option.takesValue && option.doc && option.doc.choices.length > 0)
      .map(
        (option) =>
          `        ${option.spellings.join('|')}) COMPREPLY=($(compgen -W '${shellWords(option.doc!.choices)}' -- "$cur")); return ;;`,
      )
    const helpTopics = command.name === 'help' ? names : []
    const positional =
      command.name === 'completion'
        ? `COMPREPLY=($(compgen -W 'bash zsh fish' -- "$cur"))`
        : helpTopics.length > 0
          ? `COMPREPLY=($(compgen -W '${shellWords(helpTopics)}' -- "$cur"))`
          : `COMPREPLY=($(compgen -f -- "$cur"))`
    return [
      `    ${command.name})`,
      `      options='${shellWords(options.flatMap((option) => option.spellings))}'`,
      `      valued='${shellWords(options.filter((option) => option.takesValue).flatMap((option) => option.spellings))}'`,
      `      case "$prev" in`,
      ...values,
      `      esac`,
      `      if [[ " $valued " == *" $prev "* ]]; then COMPREPLY=($(compgen -f -- "$cur")); return; fi`,
      `      if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$options" -- "$cur")); return; fi`,
      `      ${positional}`,
      `      ;;`,
    ].join('\n')
  })
  return `# bash completion for addcow ${cliVersion()}; generated by 'addcow completion bash'.
_addcow() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  local prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local options valued
  if [[ $COMP_CWORD -eq 1 ]]; then
    COMPREPLY=($(compgen -W '${shellWords(names)} --help --version' -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases.join('\n')}
  esac
}
complete -o filenames -o bashdefault -F _addcow addcow
`
}

/** Escape text for a zsh `_arguments` description inside single quotes. */
function zshText(text: string): string {
  return text.replace(/'/g, "'\\''").replace(/([[\]:])/g, '\\$1')
}

/** A zsh completion script (`addcow completion zsh > _addcow` in a folder of $fpath). */
export function zshCompletion(commands: readonly Command[]): string {
  const described = commands.map((command) => `    '${command.name}:${zshText(command.summary)}'`)
  const cases = commands.map((command) => {
    const specs = commandOptions(command).flatMap((option) => {
      const text = zshText(option.doc?.text.split('. ')[0] ?? '')
      const action = !option.takesValue
        ? ''
        : option.doc && option.doc.choices.length > 0
          ? `:${zshText(option.doc.placeholder ?? 'value')}:(${option.doc.choices.join(' ')})`
          : `:${zshText(option.doc?.placeholder ?? 'value')}:_files`
      return option.spellings.map(
        (spelling) => `'${option.repeatable ? '*' : ''}${spelling}[${text}]${action}'`,
      )
    })
    const rest =
      command.name === 'completion'
        ? "'1:shell:(bash zsh fish)'"
        : command.name === 'help'
          ? `'1:command:(${commands.map((each) => each.name).join(' ')})'`
          : "'*:file:_files'"
    return `    ${command.name})\n      _arguments -s ${[...specs, rest].join(' \\\n        ')}\n      ;;`
  })
  return `#compdef addcow
# zsh completion for addcow ${cliVersion()}; generated by 'addcow completion zsh'.
_addcow() {
  local -a commands
  commands=(
${described.join('\n')}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  shift words
  (( CURRENT-- ))
  case $words[1] in
${cases.join('\n')}
  esac
}
_addcow "$@"
`
}

/** Escape text for fish inside single quotes. */
function fishText(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")
}

/** A fish completion script (`addcow completion fish > ~/.config/fish/completions/addcow.fish`). */
export function fishCompletion(commands: readonly Command[]): string {
  const names = commands.map((command) => command.name).join(' ')
  const lines = [
    `# fish completion for addcow ${cliVersion()}; generated by 'addcow completion fish'.`,
    'complete -c addcow -f',
    ...commands.map(
      (command) =>
        `complete -c addcow -n 'not __fish_seen_subcommand_from ${names}' -a ${command.name} -d '${fishText(command.summary)}'`,
    ),
  ]
  for (const command of commands) {
    const when = `-n '__fish_seen_subcommand_from ${command.name}'`
    for (const option of commandOptions(command)) {
      const description = fishText(option.doc?.text.split('. ')[0] ?? '')
      const value = !option.takesValue
        ? ''
        : option.doc && option.doc.choices.length > 0
          ? ` -x -a '${option.doc.choices.join(' ')}'`
          : ' -r -F'
      for (const spelling of option.spellings) {
        const flag = spelling.startsWith('--')
          ? `-l ${spelling.slice(2)}`
          : `-s ${spelling.slice(1)}`
        lines.push(`complete -c addcow ${when} ${flag}${value} -d '${description}'`)
      }
    }
    if (command.name === 'completion') lines.push(`complete -c addcow ${when} -a 'bash zsh fish'`)
    else if (command.name === 'help') lines.push(`complete -c addcow ${when} -a '${names}'`)
    else lines.push(`complete -c addcow ${when} -F`)
  }
  return lines.join('\n') + '\n'
}

/** Escape a line of text for roff. */
function roff(text: string): string {
  const escaped = text.replace(/\\/g, '\\e').replace(/-/g, '\\-')
  return /^[.']/.test(escaped) ? `\\&${escaped}` : escaped
}

/** The manual page, in man(7) roff (`addcow man`; docs/addcow.1 is this output). */
export function manPage(commands: readonly Command[]): string {
  const lines = [
    `.TH ADDCOW 1 "" "addcow ${cliVersion()}" "User Commands"`,
    '.SH NAME',
    'addcow \\- copy\\-on\\-write overlays of VM disk images in the add\\-cow format',
    '.SH SYNOPSIS',
    '.B addcow',
    '.I COMMAND',
    '[\\fIoptions\\fR] ...',
    '.SH DESCRIPTION',
    roff(
      'An add-cow overlay lets a virtual machine run on top of a base image without changing it: writes land in a plain raw image file, and a small add-cow file records which clusters were written. addcow creates, inspects, checks, commits, flattens, converts and serves such overlays; its options follow qemu-img where qemu-img has the same idea, and qemu-img spellings (--output=json, -f, -o key=value, a trailing SIZE) are accepted beside them.',
    ),
    '.SH COMMANDS',
  ]
  for (const command of commands) {
    lines.push(`.SS ${roff(command.name)}`, roff(command.summary), '.PP', '.nf')
    for (const line of command.usage.split('\n')) lines.push(roff(line))
    lines.push('.fi')
  }
  lines.push(
    '.SH EXIT STATUS',
    roff(
      '0 on success, 1 on an error (one sentence on stderr naming the file and value at fault; with --json also a JSON object {"error": {code, message, ...}} on stdout). check: 0 clean, 1 could not check, 2 corrupt, 3 leaks only, 63 the format has no check. compare: 0 same, 1 different, 2 error.',
    ),
    '.SH ENVIRONMENT',
    '.TP',
    '.B ADDCOW_DATA_DIR',
    roff(
      'The folder of the library file (trusted names, base fingerprints, known images); default: the user data folder.',
    ),
    '.SH SEE ALSO',
    '.BR qemu\\-img (1),',
    '.BR qemu\\-nbd (8)',
  )
  return lines.join('\n') + '\n'
}
