import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { EngineError } from '../../engine/errors'
import { cliVersion, defineCommand, untilCancelled } from '../command'

/** The built renderer: out/renderer beside out/cli, or $ADDCOW_RENDERER_DIR. */
function rendererDir(env: Readonly<Record<string, string | undefined>>): string {
  const override = env.ADDCOW_RENDERER_DIR
  if (override) return resolve(override)
  // Built, this module is in out/cli/addcow.cjs; from the sources (tsx), in main/cli/commands/,
  // where out/renderer is three folders up.
  const near = fileURLToPath(new URL('../renderer/', import.meta.url))
  const far = fileURLToPath(new URL('../../../out/renderer/', import.meta.url))
  return existsSync(join(near, 'index.html')) || !existsSync(join(far, 'index.html')) ? near : far
}

function parseWebPort(text: string | undefined): number {
  if (text === undefined) return 0
  const port = Number(text)
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port > 65535) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `addcow web: the port '${text}' is not a number from 0 to 65535.`,
      {
        field: 'port',
        value: text,
      },
    )
  }
  return port
}

/** Open `url` in the desktop's browser; failures are ignored (the URL is printed anyway). */
function openBrowser(url: string): void {
  const [command, args] =
    process.platform === 'darwin'
      ? ['open', [url]]
      : process.platform === 'win32'
        ? ['cmd', ['/c', 'start', '""', url]]
        : ['xdg-open', [url]]
  try {
    const child = spawn(command, args, { detached: true, stdio: 'ignore' })
    child.on('error', () => undefined)
    child.unref()
  } catch {
    // No browser launcher: the printed URL is enough.
  }
}

/** `addcow web`: the app in a web browser (the browser mode), until SIGINT or SIGTERM. */
export const webCommand = defineCommand({
  name: 'web',
  summary: 'serve the app to a web browser (the browser mode)',
  usage: `addcow web [--host 127.0.0.1] [--port N] [--no-open] [--allow-remote]

  --host HOST      interface to listen on (default 127.0.0.1)
  --port N         port (default: a free one)
  --no-open        do not open a browser; just print the URL
  --allow-remote   required to listen on a non-loopback interface: anyone who can reach it
                   with the token can read and write files as you

Prints the URL to open; it carries a random access token. Runs until Ctrl+C.`,
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    'no-open': { type: 'boolean' },
    'allow-remote': { type: 'boolean' },
  },
  positionals: { min: 0, max: 0, names: 'no arguments' },
  async run({ values }, context) {
    const host = values.host ?? '127.0.0.1'
    const root = rendererDir(context.env)
    if (!existsSync(join(root, 'index.html'))) {
      throw new EngineError(
        'NOT_FOUND',
        `The built app is missing (${join(root, 'index.html')}); run 'npm run build' first.`,
        {
          path: root,
        },
      )
    }
    // Loaded on use: the browser mode pulls in the IPC handlers, zod and ws, which the other
    // commands do not need at start-up.
    const { isLoopbackHost, startWebServer } = await import('../../web/server')
    if (!isLoopbackHost(host) && values['allow-remote']) {
      context.stderr.write(
        `addcow web: WARNING: listening on ${host}, which is not loopback. Anyone who can reach it and has the token can read and write files as you. Use it only on a network you trust, preferably through an SSH tunnel.\n`,
      )
    }
    const server = await startWebServer({
      rendererDir: root,
      host,
      port: parseWebPort(values.port),
      allowRemote: values['allow-remote'] ?? false,
      version: cliVersion(),
      library: context.library,
    })
    context.stdout.write(
      `AddCow Studio (browser mode) is at ${server.url}\nPress Ctrl+C to stop.\n`,
    )
    if (!values['no-open']) openBrowser(server.url)
    await untilCancelled(context.signal)
    await server.close()
    return 0
  },
})
