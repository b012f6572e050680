import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { Library } from '../../../main/engine/library'
import { startWebServer, type WebServer } from '../../../main/web/server'
import { CONTENT_SECURITY_POLICY } from '../../../main/web/static'
import { tempDir } from '../../helpers/tools'
import { recordingLogger } from '../ipc/helpers'

// The browser mode's server: the token, the Host and Origin checks, the CSP on every response,
// the static files, and the same IPC over the WebSocket.

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

function get(
  server: WebServer,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      {
        host: '127.0.0.1',
        port: server.port,
        path,
        method,
        headers: { Host: `127.0.0.1:${server.port}`, ...headers },
      },
      (response) => {
        let body = ''
        response.on('data', (chunk: Buffer) => (body += chunk.toString()))
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
        )
      },
    )
    request.on('error', reject)
    request.end()
  })
}

/** Open a WebSocket as a browser page would; resolves with the socket or the refusal status. */
function connect(
  server: WebServer,
  headers: Record<string, string>,
  path = '/ws',
): Promise<{ socket: WebSocket } | { status: number }> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}${path}`, { headers })
    socket.on('open', () => resolve({ socket }))
    socket.on('unexpected-response', (_request, response) =>
      resolve({ status: response.statusCode ?? 0 }),
    )
    socket.on('error', () => resolve({ status: -1 }))
  })
}

/** Send one request frame and wait for its response frame. */
function ask(
  socket: WebSocket,
  id: number,
  channel: string,
  payload: unknown,
): Promise<{ ok: boolean; value?: unknown; error?: { code: string } }> {
  return new Promise((resolve) => {
    const onMessage = (data: WebSocket.RawData): void => {
      const frame = JSON.parse(String(data)) as {
        type: string
        id?: number
        result?: { ok: boolean }
      }
      if (frame.type === 'response' && frame.id === id) {
        socket.off('message', onMessage)
        resolve(frame.result as { ok: boolean })
      }
    }
    socket.on('message', onMessage)
    socket.send(JSON.stringify({ type: 'request', id, channel, payload }))
  })
}

let cleanup: () => Promise<void>
let dir: string
let server: WebServer
let cookie: string
let origin: string

beforeAll(async () => {
  const temp = await tempDir('addcow-web-')
  cleanup = temp.cleanup
  dir = temp.path
  const renderer = join(dir, 'renderer')
  await mkdir(join(renderer, 'assets'), { recursive: true })
  await writeFile(join(renderer, 'index.html'), '<!doctype html><title>AddCow Studio</title>')
  await writeFile(join(renderer, 'assets', 'app.js'), 'console.log(1)')
  await writeFile(join(dir, 'secret.txt'), 'not for the browser')
  await writeFile(join(dir, 'disk.raw'), Buffer.alloc(65536, 1))
  server = await startWebServer({
    rendererDir: renderer,
    version: '0.0.0-test',
    library: new Library(join(dir, 'data', 'library.json')),
    log: recordingLogger(),
    checkResponses: true,
  })
  cookie = `addcow-token-${server.port}=${server.token}`
  origin = `http://127.0.0.1:${server.port}`
})

afterAll(async () => {
  await server.close()
  await cleanup()
})

describe('HTTP', () => {
  it('listens on loopback and prints a URL with a long random token', () => {
    expect(server.url).toMatch(
      new RegExp(`^http://127\\.0\\.0\\.1:${server.port}/\\?token=[A-Za-z0-9_-]{32}$`),
    )
  })

  it('refuses every request without the token, with the CSP', async () => {
    for (const path of ['/', '/index.html', '/assets/app.js', '/ws', '/?token=wrong']) {
      const reply = await get(server, path)
      expect(reply.status, path).toBe(401)
      expect(reply.headers['content-security-policy']).toBe(CONTENT_SECURITY_POLICY)
    }
    expect((await get(server, '/', { Cookie: `addcow-token-${server.port}=wrong` })).status).toBe(
      401,
    )
    expect((await get(server, '/', { Cookie: `addcow-token-1=${server.token}` })).status).toBe(401)
  })

  it('trades the token in the URL for an HttpOnly, SameSite=Strict cookie and drops it from the address', async () => {
    const reply = await get(server, `/?token=${server.token}`)
    expect(reply.status).toBe(303)
    expect(reply.headers.location).toBe('/')
    expect(reply.headers['set-cookie']?.[0]).toBe(`${cookie}; HttpOnly; SameSite=Strict; Path=/`)
  })

  it('serves the renderer with the CSP and security headers once the cookie is set', async () => {
    const page = await get(server, '/', { Cookie: cookie })
    expect(page.status).toBe(200)
    expect(page.body).toContain('AddCow Studio')
    expect(page.headers).toMatchObject({
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': CONTENT_SECURITY_POLICY,
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
    })
    expect(CONTENT_SECURITY_POLICY).toContain("script-src 'self'")
    expect(CONTENT_SECURITY_POLICY).not.toContain('unsafe-eval')
    const script = await get(server, '/assets/app.js', { Cookie: cookie })
    expect(script).toMatchObject({ status: 200, body: 'console.log(1)' })
    expect(script.headers['content-type']).toBe('text/javascript; charset=utf-8')
    expect((await get(server, '/library', { Cookie: cookie })).body).toContain('AddCow Studio')
  })

  it('never serves a file outside the renderer', async () => {
    for (const path of [
      '/../secret.txt',
      '/%2e%2e/secret.txt',
      '/assets/..%2f..%2fsecret.txt',
      '/%00',
      '/%E0%A4%A',
    ]) {
      const reply = await get(server, path, { Cookie: cookie })
      expect(reply.status, path).toBe(404)
      expect(reply.body).not.toContain('not for the browser')
    }
  })

  it('answers only to a loopback Host (no DNS rebinding) and only to GET and HEAD', async () => {
    expect(
      (await get(server, '/', { Cookie: cookie, Host: `evil.example:${server.port}` })).status,
    ).toBe(421)
    expect(
      (await get(server, '/', { Cookie: cookie, Host: `localhost:${server.port}` })).status,
    ).toBe(200)
    expect((await get(server, '/', { Cookie: cookie }, 'POST')).status).toBe(405)
  })
})

describe('WebSocket', () => {
  it('runs the same handlers: a round trip, an error, and events', async () => {
    const connection = await connect(server, { Origin: origin, Cookie: cookie })
    if (!('socket' in connection)) throw new Error(`refused with ${connection.status}`)
    const { socket } = connection
    try {
      expect(await ask(socket, 1, 'app:get-info', {})).toMatchObject({
        ok: true,
        value: { shell: 'web', nativeDialogs: false },
      })
      expect(await ask(socket, 2, 'image:get-info', { path: 'relative' })).toMatchObject({
        ok: false,
        error: { code: 'BAD_REQUEST' },
      })
      expect(await ask(socket, 3, 'fs:show-save-dialog', {})).toMatchObject({
        ok: false,
        error: { code: 'NOT_CAPABLE' },
      })
      const event = new Promise<unknown>((resolve) => {
        socket.on('message', (data) => {
          const frame = JSON.parse(String(data)) as {
            type: string
            event?: string
            payload?: unknown
          }
          if (frame.type === 'event' && frame.event === 'library:changed') resolve(frame.payload)
        })
      })
      expect(
        await ask(socket, 4, 'library:add-images', { paths: [join(dir, 'disk.raw')] }),
      ).toMatchObject({ ok: true })
      expect(await event).toEqual({ reason: 'added', paths: [join(dir, 'disk.raw')] })
      const listing = await ask(socket, 5, 'fs:list-folder', { path: dir })
      expect(listing).toMatchObject({ ok: true })
      expect(
        (listing.value as { entries: { name: string }[] }).entries.map((entry) => entry.name),
      ).toContain('disk.raw')
    } finally {
      socket.close()
    }
  })

  it('refuses an upgrade from a foreign Origin, without Origin, or without the token', async () => {
    expect(await connect(server, { Origin: 'http://evil.example', Cookie: cookie })).toEqual({
      status: 403,
    })
    expect(
      await connect(server, { Origin: `http://127.0.0.1:${server.port + 1}`, Cookie: cookie }),
    ).toEqual({ status: 403 })
    expect(await connect(server, { Cookie: cookie })).toEqual({ status: 403 })
    expect(await connect(server, { Origin: origin })).toEqual({ status: 401 })
    expect(await connect(server, { Origin: origin, Cookie: cookie }, '/other')).toEqual({
      status: 404,
    })
    const byQuery = await connect(server, { Origin: origin }, `/ws?token=${server.token}`)
    expect('socket' in byQuery).toBe(true)
    if ('socket' in byQuery) byQuery.socket.close()
  })

  it('closes a connection that sends something other than a request frame', async () => {
    const connection = await connect(server, { Origin: origin, Cookie: cookie })
    if (!('socket' in connection)) throw new Error('refused')
    const closed = new Promise<number>((resolve) =>
      connection.socket.on('close', (code) => resolve(code)),
    )
    connection.socket.send('{"type":"request","id":"one"}')
    expect(await closed).toBe(1008)
  })
})

describe('binding', () => {
  it('refuses a non-loopback interface unless remote access is asked for', async () => {
    await expect(
      startWebServer({
        rendererDir: dir,
        host: '0.0.0.0',
        version: 'test',
        library: new Library(join(dir, 'data2', 'l.json')),
      }),
    ).rejects.toMatchObject({ code: 'FORBIDDEN', field: 'host' })
  })
})
