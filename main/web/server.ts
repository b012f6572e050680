import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import {
  CLOSE_POLICY_VIOLATION,
  MAX_FRAME_BYTES,
  MAX_IN_FLIGHT,
  WireRequestSchema,
} from '../../shared/ipc/wire'
import type { WireServerMessage } from '../../shared/ipc/wire'
import { EngineError, quote } from '../engine/errors'
import type { Library } from '../engine/library'
import {
  createIpcCore,
  originOf,
  type IpcCore,
  type Logger,
  type RequestSender,
} from '../ipc/index'
import type { JobClock } from '../ipc/jobs'
import { readAsset, SECURITY_HEADERS } from './static'
import { createVncEndpoint, refuseUpgrade, VNC_PATH } from './vnc-bridge'

/** The WebSocket endpoint. */
export const WEBSOCKET_PATH = '/ws'

/** Bytes a socket may have queued before progress events to it are dropped. */
const MAX_BUFFERED_FOR_PROGRESS = 4 * 1024 * 1024

/** How to run the browser mode's server. */
export interface WebServerOptions {
  /** The built renderer (out/renderer). */
  rendererDir: string
  /** Interface to bind; loopback unless `allowRemote`. */
  host?: string
  /** Port; 0 picks a free one. */
  port?: number
  /** Must be set to bind anything but loopback. */
  allowRemote?: boolean
  /** The access token; random when absent. */
  token?: string
  version: string
  library?: Library
  log?: Logger
  clock?: JobClock
  checkResponses?: boolean
}

/** A running browser-mode server. */
export interface WebServer {
  /** The URL to open, token included. */
  url: string
  /** The server's origin (no token). */
  origin: string
  port: number
  token: string
  core: IpcCore
  close(): Promise<void>
}

/** Whether `host` names a loopback interface. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '')
  return bare === 'localhost' || bare === '::1' || /^127(\.\d{1,3}){3}$/.test(bare)
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

function cookieValue(header: string | undefined, name: string): string | null {
  for (const part of (header ?? '').split(';')) {
    const index = part.indexOf('=')
    if (index > 0 && part.slice(0, index).trim() === name) return part.slice(index + 1).trim()
  }
  return null
}

/**
 * Serve the built renderer and the IPC handlers over a WebSocket (the browser mode).
 *
 * Every HTTP request and WebSocket upgrade needs the token: in the URL's `token` query the first
 * time (the server then sets an HttpOnly, SameSite=Strict cookie and drops it from the address),
 * in the cookie afterwards. On a loopback bind the Host header must be a loopback name (no DNS
 * rebinding); upgrades must come from the server's own Origin. Responses carry the same CSP as
 * the Electron app.
 */
export async function startWebServer(options: WebServerOptions): Promise<WebServer> {
  const host = options.host ?? '127.0.0.1'
  const loopback = isLoopbackHost(host)
  if (!loopback && !options.allowRemote) {
    throw new EngineError(
      'FORBIDDEN',
      `Refusing to listen on ${host}: it is not a loopback address. Pass --allow-remote if anyone who can reach it with the token may read and write your files.`,
      { field: 'host', value: host },
    )
  }
  const token = options.token ?? randomBytes(24).toString('base64url')
  const tokenDigest = digest(token)
  const hasToken = (candidate: string | null): boolean =>
    candidate !== null && timingSafeEqual(digest(candidate), tokenDigest)
  let port = 0
  const cookieName = (): string => `addcow-token-${port}`
  const allowedHosts = (): Set<string> =>
    new Set([`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `${host}:${port}`])
  const allowedOrigins = new Set<string>()
  const hostAllowed = (request: IncomingMessage): boolean =>
    !loopback || allowedHosts().has((request.headers.host ?? '').toLowerCase())
  const originAllowed = (request: IncomingMessage): boolean => {
    const origin = request.headers.origin ?? ''
    if (loopback) return [...allowedHosts()].some((allowed) => origin === `http://${allowed}`)
    return origin !== '' && origin === `http://${request.headers.host ?? ''}`
  }

  const isTrustedSender = (sender: RequestSender): boolean =>
    sender.transport === 'web' && sender.mainFrame && allowedOrigins.has(originOf(sender.url))
  const core = createIpcCore({
    host: {
      shell: 'web',
      name: 'AddCow Studio',
      version: options.version,
      electronVersion: null,
      chromeVersion: null,
    },
    isTrustedSender,
    dialogs: null,
    ...(options.library ? { library: options.library } : {}),
    ...(options.log ? { log: options.log } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    checkResponses: options.checkResponses ?? false,
  })

  const send = (
    response: ServerResponse,
    status: number,
    body: string | Buffer,
    headers: Record<string, string> = {},
  ) => {
    response.writeHead(status, { ...SECURITY_HEADERS, 'Cache-Control': 'no-store', ...headers })
    response.end(body)
  }

  const server: Server = createServer((request, response) => {
    void handleHttp(request, response).catch((error: unknown) => {
      core.log.error('the web server failed on a request', error)
      if (!response.headersSent)
        send(response, 500, 'Internal error.\n', { 'Content-Type': 'text/plain; charset=utf-8' })
      else response.destroy()
    })
  })

  async function handleHttp(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const text = { 'Content-Type': 'text/plain; charset=utf-8' }
    if (!hostAllowed(request)) {
      send(response, 421, 'This server answers only to its loopback address.\n', text)
      return
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      send(response, 405, 'Only GET and HEAD are served.\n', { ...text, Allow: 'GET, HEAD' })
      return
    }
    const url = new URL(request.url ?? '/', 'http://localhost')
    const queryToken = url.searchParams.get('token')
    if (queryToken !== null && hasToken(queryToken)) {
      url.searchParams.delete('token')
      const cookie = `${cookieName()}=${token}; HttpOnly; SameSite=Strict; Path=/`
      send(response, 303, '', { Location: url.pathname + url.search, 'Set-Cookie': cookie })
      return
    }
    if (!hasToken(cookieValue(request.headers.cookie, cookieName()))) {
      send(
        response,
        401,
        'Open the URL that `addcow web` printed: it carries the access token.\n',
        text,
      )
      return
    }
    if (url.pathname === WEBSOCKET_PATH) {
      send(response, 426, 'This endpoint speaks WebSocket only.\n', {
        ...text,
        Upgrade: 'websocket',
      })
      return
    }
    const asset = await readAsset(options.rendererDir, url.pathname)
    if (!asset) {
      send(response, 404, 'Not found.\n', text)
      return
    }
    const cache = asset.contentType.startsWith('text/html') ? 'no-store' : 'no-cache'
    send(response, 200, request.method === 'HEAD' ? '' : asset.body, {
      'Content-Type': asset.contentType,
      'Content-Length': String(asset.body.length),
      'Cache-Control': cache,
    })
  }

  const sockets = new Set<WebSocket>()
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES })

  const vnc = createVncEndpoint(core.vms, core.log)

  server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(request.url ?? '/', 'http://localhost')
    if (url.pathname !== WEBSOCKET_PATH && url.pathname !== VNC_PATH)
      return refuseUpgrade(socket, 404, 'Not Found')
    if (!hostAllowed(request)) return refuseUpgrade(socket, 421, 'Misdirected Request')
    if (!originAllowed(request)) {
      core.log.warn(
        `refused a WebSocket from the foreign origin ${quote(request.headers.origin ?? '')}`,
      )
      return refuseUpgrade(socket, 403, 'Forbidden')
    }
    if (
      !hasToken(cookieValue(request.headers.cookie, cookieName())) &&
      !hasToken(url.searchParams.get('token'))
    ) {
      return refuseUpgrade(socket, 401, 'Unauthorized')
    }
    // The guest's screen: the same checks as the IPC socket, then only a VM this app runs.
    if (url.pathname === VNC_PATH)
      return vnc.upgrade(request, socket, head, url.searchParams.get('vm'))
    const origin = request.headers.origin ?? ''
    allowedOrigins.add(origin)
    wss.handleUpgrade(request, socket, head, (ws) => accept(ws, origin))
  })

  function accept(ws: WebSocket, origin: string): void {
    sockets.add(ws)
    const sender: RequestSender = { transport: 'web', url: origin, mainFrame: true }
    let inFlight = 0
    const reply = (message: WireServerMessage): void => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(message))
    }
    ws.on('message', (data, isBinary) => {
      let frame: unknown
      try {
        frame = isBinary ? undefined : JSON.parse(String(data))
      } catch {
        frame = undefined
      }
      const parsed = WireRequestSchema.safeParse(frame)
      if (!parsed.success) {
        ws.close(CLOSE_POLICY_VIOLATION, 'Not a request frame.')
        return
      }
      const { id, channel, payload } = parsed.data
      if (inFlight >= MAX_IN_FLIGHT) {
        reply({
          type: 'response',
          id,
          result: {
            ok: false,
            error: { code: 'BUSY', message: `More than ${MAX_IN_FLIGHT} requests are in flight.` },
          },
        })
        return
      }
      inFlight++
      void core.dispatcher.dispatch(channel, payload, sender).then((result) => {
        inFlight--
        reply({ type: 'response', id, result })
      })
    })
    ws.on('close', () => sockets.delete(ws))
    ws.on('error', () => sockets.delete(ws))
  }

  const unsubscribe = core.bus.subscribe((event, payload) => {
    const frame = JSON.stringify({ type: 'event', event, payload } satisfies WireServerMessage)
    for (const ws of sockets) {
      if (ws.readyState !== ws.OPEN) continue
      if (event === 'jobs:progress' && ws.bufferedAmount > MAX_BUFFERED_FOR_PROGRESS) continue
      ws.send(frame)
    }
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  port = (server.address() as AddressInfo).port
  const shownHost = host.includes(':') ? `[${host}]` : host
  const origin = `http://${shownHost}:${port}`

  return {
    url: `${origin}/?token=${token}`,
    origin,
    port,
    token,
    core,
    async close() {
      unsubscribe()
      for (const ws of sockets) ws.close(1001, 'The server is stopping.')
      await vnc.close()
      await core.jobs.cancelAll()
      await core.images.closeAll()
      await new Promise<void>((resolve) => {
        wss.close(() => resolve())
      })
      for (const ws of sockets) ws.terminate()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
