import { EngineError } from '../../engine/errors'
import { defineCommand } from '../command'
import { bashCompletion, fishCompletion, manPage, zshCompletion } from '../docs'

/** `addcow completion bash|zsh|fish`: the shell's completion script, from the command table. */
export const completionCommand = defineCommand({
  name: 'completion',
  summary: 'print a completion script for bash, zsh or fish',
  usage: `addcow completion bash|zsh|fish

  bash: source <(addcow completion bash), or save it as
        /usr/share/bash-completion/completions/addcow
  zsh:  addcow completion zsh > "\${fpath[1]}/_addcow"
  fish: addcow completion fish > ~/.config/fish/completions/addcow.fish

The scripts complete commands, options, option values that are a fixed choice, and file names.`,
  options: {},
  positionals: { min: 1, max: 1, names: 'one shell: bash, zsh or fish' },
  async run({ positionals }, context) {
    // The table lists this command too: load it on use (no import cycle).
    const { COMMANDS } = await import('./index')
    const shell = positionals[0]!
    const script =
      shell === 'bash'
        ? bashCompletion(COMMANDS)
        : shell === 'zsh'
          ? zshCompletion(COMMANDS)
          : shell === 'fish'
            ? fishCompletion(COMMANDS)
            : null
    if (script === null) {
      throw new EngineError('BAD_ARGUMENT', `'${shell}' is not one of bash, zsh, fish.`, {
        field: 'shell',
        value: shell,
      })
    }
    context.stdout.write(script)
    return 0
  },
})

/** `addcow man`: the manual page (roff), from the command table. */
export const manCommand = defineCommand({
  name: 'man',
  summary: 'print the manual page (man -l <(addcow man) shows it)',
  usage: `addcow man

Prints the manual page in man(7) format, generated from the same table as the help and the
completions; docs/addcow.1 in the source is this output. Read it with: man -l <(addcow man)`,
  options: {},
  positionals: { min: 0, max: 0, names: 'no arguments' },
  async run(_args, context) {
    const { COMMANDS } = await import('./index')
    context.stdout.write(manPage(COMMANDS))
    return 0
  },
})
