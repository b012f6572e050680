import { chmod, lstat, mkdir } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import {
  LIVE_CONTROL_MAX_LINE,
  liveReplySchema,
  liveRequestSchema,
  type LiveReply,
} from '../../../shared/live-control'
import { EngineError, quote, wrapIoError } from '../errors'
import { assertSocketPathFits, clearStaleSocket, imageTag } from '../unix-socket'
import './commands'
import { errorOf } from './jobs'
import { runLiveCommand, type LiveTarget } from './registry'

/** Clients served at once by one control socket (the CLI opens one per command). */
const MAX_CLIENTS = 16

/**
 * The folder that holds default control sockets: `addcow-<uid>` in $XDG_RUNTIME_DIR or the
 * temporary folder, mode 0700, so only its owner reaches the sockets in it.
 */
export function controlFolder(): string {
  const uid = process.getuid?.() ?? 0
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), `addcow-${uid}`)
}

/**
 * The control socket of an export of `image` when none is given: in {@link controlFolder},
 * named after the image and a hash of its absolute path (as the default NBD socket), so
 * `addcow job --image IMAGE` finds it and two images never share one.
 */
export function defaultControlPath(image: string): string {
  return join(controlFolder(), `${imageTag(image)}.control`)
}

/**
 * Make the folder of a control socket private: created with mode 0700 when missing; an
 * existing {@link controlFolder} must be a real folder owned by this user that nobody else
 * may enter (FORBIDDEN otherwise: someone could have put it there to catch the socket).
 */
async function preparePrivateFolder(folder: string): Promise<void> {
  await mkdir(folder, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
    throw wrapIoError(error, folder, 'create the control folder')
  })
  if (folder !== controlFolder()) return
  const info = await lstat(folder)
  const uid = process.getuid?.()
  if (!info.isDirectory() || (uid !== undefined && info.uid !== uid) || (info.mode & 0o077) !== 0) {
    throw new EngineError(
      'FORBIDDEN',
      `The control folder ${folder} is not a private folder of this user (mode ${(info.mode & 0o777).toString(8)}); remove it or give --control-socket.`,
      { path: folder, field: 'control folder' },
    )
  }
}

/** A listening control socket. */
export interface ControlServer {
  readonly path: string
  /** Stop listening, close the clients and remove the socket file. Idempotent. */
  close(): Promise<void>
}

/**
 * Serve the control protocol (shared/live-control.ts) for `target` on the Unix socket `path`:
 * mode 0600, in a folder created 0700 when missing. Each line is one request, answered with
 * one reply line carrying its id; requests on one connection run concurrently (a `jobs`
 * request is answered while a `snapshot` runs). A line longer than
 * {@link LIVE_CONTROL_MAX_LINE} or that is not a request gets an error reply and closes the
 * connection; the server and its other clients carry on.
 */
export async function startControlServer(path: string, target: LiveTarget): Promise<ControlServer> {
  const absolute = resolve(path)
  assertSocketPathFits(absolute, 'control socket')
  await preparePrivateFolder(dirname(absolute))
  await clearStaleSocket(absolute, 'control socket')
  const clients = new Set<Socket>()
  const server = createServer((socket) => {
    if (clients.size >= MAX_CLIENTS) {
      socket.on('error', () => undefined)
      socket.destroy()
      return
    }
    clients.add(socket)
    socket.on('close', () => clients.delete(socket))
    serveClient(socket, target)
  })
  await new Promise<void>((done, fail) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      fail(wrapIoError(error, absolute, 'listen on the control socket')),
    )
    server.listen(absolute, () => done())
  })
  server.on('error', () => undefined)
  try {
    await chmod(absolute, 0o600)
  } catch (error) {
    server.close()
    throw wrapIoError(error, absolute, 'restrict the permissions of')
  }
  let closing: Promise<void> | null = null
  return {
    path: absolute,
    close() {
      closing ??= closeServer(server, clients)
      return closing
    },
  }
}

async function closeServer(server: Server, clients: Set<Socket>): Promise<void> {
  const closed = new Promise<void>((done) => server.close(() => done()))
  for (const client of clients) client.destroy()
  await closed
}

/** Read request lines off one client and answer each. */
function serveClient(socket: Socket, target: LiveTarget): void {
  let buffered = ''
  socket.setEncoding('utf8')
  socket.on('error', () => undefined)
  socket.on('data', (text: string) => {
    buffered += text
    let newline: number
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline)
      buffered = buffered.slice(newline + 1)
      if (line.trim() !== '') void answer(socket, line, target)
    }
    if (Buffer.byteLength(buffered) > LIVE_CONTROL_MAX_LINE) {
      buffered = ''
      refuse(socket, 0, `A request is longer than ${LIVE_CONTROL_MAX_LINE} bytes.`)
    }
  })
}

async function answer(socket: Socket, line: string, target: LiveTarget): Promise<void> {
  if (Buffer.byteLength(line) > LIVE_CONTROL_MAX_LINE) {
    refuse(socket, 0, `A request is longer than ${LIVE_CONTROL_MAX_LINE} bytes.`)
    return
  }
  let json: unknown
  try {
    json = JSON.parse(line)
  } catch {
    refuse(socket, 0, `A request is not JSON: ${quote(line, "'", 80)}.`)
    return
  }
  const request = liveRequestSchema.safeParse(json)
  if (!request.success) {
    const issue = request.error.issues[0]!
    const id = (json as { id?: unknown } | null)?.id
    refuse(
      socket,
      typeof id === 'number' ? id : 0,
      `A request's ${issue.path.join('.') || 'body'} is invalid: ${issue.message}.`,
    )
    return
  }
  const { id, command, args } = request.data
  let reply: LiveReply
  try {
    reply = { id, ok: true, value: await runLiveCommand(command, args, target) }
  } catch (error) {
    reply = { id, ok: false, error: errorOf(error) }
  }
  if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`)
}

/** Answer a request that is not one with BAD_REQUEST, then close the connection. */
function refuse(socket: Socket, id: number, message: string): void {
  const reply: LiveReply = { id, ok: false, error: { code: 'BAD_REQUEST', message } }
  socket.end(`${JSON.stringify(reply)}\n`)
}

/** How {@link sendControlRequest} talks to a control socket. */
export interface ControlRequestOptions {
  signal?: AbortSignal
}

/**
 * Send one request to the control socket at `path` and return its reply's value; an error
 * reply is thrown as the EngineError it describes. NOT_FOUND when nothing listens there (no
 * export running with that control socket).
 */
export async function sendControlRequest(
  path: string,
  command: string,
  args: Record<string, unknown> = {},
  options: ControlRequestOptions = {},
): Promise<unknown> {
  const absolute = resolve(path)
  const line = await exchange(absolute, `${JSON.stringify({ id: 1, command, args })}\n`, options)
  let json: unknown
  try {
    json = JSON.parse(line)
  } catch {
    throw new EngineError('INTERNAL', `${absolute} answered something that is not JSON.`, {
      path: absolute,
    })
  }
  const reply = liveReplySchema.safeParse(json)
  if (!reply.success) {
    throw new EngineError('INTERNAL', `${absolute} answered a reply of the wrong shape.`, {
      path: absolute,
    })
  }
  if (reply.data.ok) return reply.data.value
  const { code, message, path: at, field } = reply.data.error
  throw new EngineError(code, message, {
    ...(at !== undefined ? { path: at } : {}),
    ...(field !== undefined ? { field } : {}),
  })
}

/** Write `request` to the socket and read one reply line (bounded). */
function exchange(path: string, request: string, options: ControlRequestOptions): Promise<string> {
  return new Promise((done, fail) => {
    const socket = connect(path)
    let buffered = ''
    const onAbort = (): void => {
      socket.destroy()
      fail(new EngineError('ABORTED', `The request to ${path} was cancelled.`, { path }))
    }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    const finish = (): void => options.signal?.removeEventListener('abort', onAbort)
    socket.setEncoding('utf8')
    socket.once('connect', () => socket.write(request))
    socket.on('data', (text: string) => {
      buffered += text
      const newline = buffered.indexOf('\n')
      if (newline >= 0) {
        finish()
        socket.end()
        done(buffered.slice(0, newline))
      } else if (buffered.length > LIVE_CONTROL_MAX_LINE * 16) {
        finish()
        socket.destroy()
        fail(new EngineError('INTERNAL', `${path} answered a line too long to read.`, { path }))
      }
    })
    socket.once('error', (error: NodeJS.ErrnoException) => {
      finish()
      const missing = error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
      fail(
        missing
          ? new EngineError(
              'NOT_FOUND',
              `No running export listens on the control socket ${path} (start one with addcow serve or addcow launch).`,
              { path, field: 'control socket' },
            )
          : wrapIoError(error, path, 'talk to the control socket'),
      )
    })
    socket.once('close', () => {
      finish()
      fail(new EngineError('IO_ERROR', `${path} closed the connection without a reply.`, { path }))
    })
  })
}
