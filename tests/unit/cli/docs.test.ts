import { spawnSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { COMMANDS } from '../../../main/cli/commands/index'
import { commandOptions, optionDocs } from '../../../main/cli/docs'
import { hasTool } from '../../helpers/tools'
import { root, run, useFolders } from './helpers'

// One command table generates help, completions and the man page (main/cli/docs.ts, issue 16):
// every option of a command's table is documented in its help and nothing else is; the
// generated scripts and page work in the real bash and man/groff; docs/addcow.1 is the output
// of `addcow man`.

useFolders()

describe('the command table', () => {
  it.each(COMMANDS.map((command) => [command.name, command] as const))(
    '%s: its help documents exactly the options of its table',
    (_name, command) => {
      const options = commandOptions(command)
      const undocumented = options
        .filter((option) => !option.doc)
        .map((option) => option.spellings.join(', '))
      expect(undocumented).toEqual([])
      const known = new Set(options.flatMap((option) => option.spellings))
      const documented = optionDocs(command.usage).flatMap((doc) => doc.spellings)
      expect(documented.filter((spelling) => !known.has(spelling))).toEqual([])
    },
  )

  it('docs/addcow.1 is what addcow man prints, and man renders it without warnings', async () => {
    const page = await run(['man'])
    expect(page.code).toBe(0)
    const committed = await readFile(new URL('../../../docs/addcow.1', import.meta.url), 'utf8')
    expect(committed).toBe(page.stdout)
    for (const command of COMMANDS)
      expect(page.stdout).toContain(`.SS ${command.name.replace(/-/g, '\\-')}\n`)
    const groff = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z'], {
      input: page.stdout,
      encoding: 'utf8',
    })
    if (groff.error) {
      expect(hasTool('man'), 'neither groff nor man is installed').toBe(false)
      return
    }
    expect(groff.stderr).toBe('')
    expect(groff.status).toBe(0)
    if (hasTool('man')) {
      await writeFile(join(root, 'addcow.1'), page.stdout)
      const shown = spawnSync('man', ['-l', join(root, 'addcow.1')], {
        encoding: 'utf8',
        env: { ...process.env, MANPAGER: 'cat', PAGER: 'cat', MANWIDTH: '100' },
      })
      expect(shown.status, shown.stderr).toBe(0)
      expect(shown.stdout).toMatch(/ADDCOW\(1\)/)
      expect(shown.stdout).toContain('addcow convert [-p] [-f FMT] [-O raw|qcow2]')
    }
  })
})

/** What bash completes for the words of `line` (the last word is the one being completed). */
function bashComplete(script: string, words: string[]): string[] {
  const quoted = words.map((word) => `'${word}'`).join(' ')
  const program = `${script}\nCOMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; _addcow; printf '%s\\n' "\${COMPREPLY[@]}"`
  const result = spawnSync('bash', ['--norc', '-c', program], { cwd: root, encoding: 'utf8' })
  expect(result.stderr).toBe('')
  return result.stdout.split('\n').filter((line) => line !== '')
}

describe('completions', () => {
  it('bash completes commands, options, fixed choices and files', async () => {
    const script = (await run(['completion', 'bash'])).stdout
    expect(bashComplete(script, ['addcow', 'co'])).toEqual([
      'compare',
      'commit',
      'convert',
      'completion',
    ])
    expect(bashComplete(script, ['addcow', 'convert', '-'])).toEqual(
      expect.arrayContaining(['-O', '-o', '-f', '-p', '--accept-base']),
    )
    expect(bashComplete(script, ['addcow', 'convert', '-O', ''])).toEqual(['raw', 'qcow2'])
    expect(bashComplete(script, ['addcow', 'check', '-r', 'l'])).toEqual(['leaks'])
    expect(bashComplete(script, ['addcow', 'info', '--output', ''])).toEqual(['json', 'human'])
    await writeFile(join(root, 'disk.add-cow'), '')
    expect(bashComplete(script, ['addcow', 'info', 'di'])).toEqual(['disk.add-cow'])
    expect(bashComplete(script, ['addcow', 'completion', ''])).toEqual(['bash', 'zsh', 'fish'])
  })

  it.each(['zsh', 'fish'])(
    '%s: a script that names every command and option (and parses, when that shell is installed)',
    async (shell) => {
      const result = await run(['completion', shell])
      expect(result.code).toBe(0)
      for (const command of COMMANDS) {
        expect(result.stdout).toContain(command.name)
        for (const option of commandOptions(command)) {
          for (const spelling of option.spellings) {
            const spelled =
              shell === 'fish'
                ? spelling.startsWith('--')
                  ? `-l ${spelling.slice(2)}`
                  : `-s ${spelling.slice(1)}`
                : `${spelling}[`
            expect(result.stdout, `${command.name} ${spelling}`).toContain(spelled)
          }
        }
      }
      if (hasTool(shell)) {
        const file = join(root, `addcow.${shell}`)
        await writeFile(file, result.stdout)
        const parsed = spawnSync(shell, ['-n', file], { encoding: 'utf8' })
        expect(parsed.status, parsed.stderr).toBe(0)
        if (shell === 'fish') {
          // fish completes a command line on request: the generated choices, options, commands.
          const complete = (line: string) =>
            spawnSync('fish', ['--no-config', '-c', `source ${file}; complete -C '${line}'`], {
              cwd: root,
              encoding: 'utf8',
            })
              .stdout.split('\n')
              .map((entry) => entry.split('\t')[0])
              .filter((entry) => entry !== '')
          expect(complete('addcow convert -O ')).toEqual(['qcow2', 'raw'])
          expect(complete('addcow conv')).toEqual(['convert'])
          expect(complete('addcow check --js')).toEqual(['--json'])
        }
      }
      expect((await run(['completion', 'tcsh'])).stderr).toContain(
        "'tcsh' is not one of bash, zsh, fish",
      )
    },
  )
})
