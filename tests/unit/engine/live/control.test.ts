import { chmod, mkdir, stat, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { LIVE_CONTROL_MAX_LINE, type LiveJob } from '../../../../shared/live-control'
import {
  controlFolder,
  defaultControlPath,
  sendControlRequest,
  startControlServer,
  type ControlServer,
} from '../../../../main/engine/live/control'
import { LiveJobTable } from '../../../../main/engine/live/jobs'
import { LiveDisk } from '../../../../main/engine/live/live-disk'
import { LiveLocks } from '../../../../main/engine/live/live-locks'
import type { LiveTarget } from '../../../../main/engine/live/registry'
import { openImage } from '../../../../main/engine/open'
import { expectEngineError } from '../../../helpers/errors'
import { tempDir } from '../../../helpers/tools'

const cleanups: (() => Promise<void>)[] = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A control socket over a small raw disk, in a fresh folder. */
async function control(): Promise<{ folder: string; server: ControlServer; target: LiveTarget }> {
  const folder = await tempDir('addcow-control-')
  cleanups.push(folder.cleanup)
  await writeFile(join(folder.path, 'disk.raw'), Buffer.alloc(1024 * 1024))
  const disk = await openImage(join(folder.path, 'disk.raw'), { format: 'raw' })
  const live = new LiveDisk(disk)
  const locks = await LiveLocks.lock(live, 'serve it')
  const target: LiveTarget = { live, locks, jobs: new LiveJobTable() }
  const server = await startControlServer(join(folder.path, 'private', 'ctl'), target)
  cleanups.push(async () => {
    await server.close()
    await locks.release()
    await live.close()
  })
  return { folder: folder.path, server, target }
}

/** Send raw bytes and collect what comes back until the server closes the connection. */
function rawExchange(path: string, bytes: string): Promise<string> {
  return new Promise((done, fail) => {
    const socket = connect(path)
    let received = ''
    socket.setEncoding('utf8')
    socket.on('connect', () => socket.write(bytes))
    socket.on('data', (text: string) => (received += text))
    socket.on('error', fail)
    socket.on('close', () => done(received))
  })
}

describe('the control socket', () => {
  it('is a socket of mode 0600 in a folder it made with mode 0700', async () => {
    const { folder, server } = await control()
    expect((await stat(server.path)).mode & 0o777).toBe(0o600)
    expect((await stat(join(folder, 'private'))).mode & 0o777).toBe(0o700)
  })

  it('reports jobs with their progress, and cancels them', async () => {
    const { server, target } = await control()
    const { id, result } = target.jobs.start('copy', async (job) => {
      job.onProgress(4096, 65536)
      job.describe('copying')
      await new Promise((_done, fail) =>
        job.signal.addEventListener('abort', () =>
          fail(Object.assign(new Error('x'), { code: 'ABORTED' })),
        ),
      )
    })
    result.catch(() => undefined)
    const [listed] = (await sendControlRequest(server.path, 'jobs')) as LiveJob[]
    expect(listed).toMatchObject({ id, kind: 'copy', state: 'running', done: 4096, total: 65536 })
    expect(listed!.detail).toBe('copying')
    await sendControlRequest(server.path, 'job-cancel', { id })
    await result.catch(() => undefined)
    const after = (await sendControlRequest(server.path, 'job-status', { id })) as LiveJob
    expect(after.state).not.toBe('running')
    expect(after.finishedAt).toBeDefined()
  })

  it('answers a line that is not JSON, or too long, with BAD_REQUEST and closes', async () => {
    const { server } = await control()
    const notJson = JSON.parse(await rawExchange(server.path, 'status please\n'))
    expect(notJson).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    expect(notJson.error.message).toContain("'status please'")
    const long = JSON.parse(await rawExchange(server.path, 'x'.repeat(LIVE_CONTROL_MAX_LINE + 10)))
    expect(long.error.message).toContain(`longer than ${LIVE_CONTROL_MAX_LINE} bytes`)
    const shape = JSON.parse(await rawExchange(server.path, '{"id":3,"command":"Status!"}\n'))
    expect(shape).toMatchObject({ id: 3, ok: false, error: { code: 'BAD_REQUEST' } })
    // The server carries on.
    expect(await sendControlRequest(server.path, 'jobs')).toEqual([])
  })

  it('says no export is running when nothing listens on the path', async () => {
    const folder = await tempDir('addcow-control-')
    cleanups.push(folder.cleanup)
    const error = await expectEngineError(
      sendControlRequest(join(folder.path, 'none.control'), 'status'),
      'NOT_FOUND',
    )
    expect(error.message).toContain('none.control')
  })

  it('refuses a default control folder that others may enter', async () => {
    const runtime = await tempDir('addcow-runtime-')
    cleanups.push(runtime.cleanup)
    const before = process.env.XDG_RUNTIME_DIR
    process.env.XDG_RUNTIME_DIR = runtime.path
    cleanups.push(async () => {
      if (before === undefined) delete process.env.XDG_RUNTIME_DIR
      else process.env.XDG_RUNTIME_DIR = before
    })
    await mkdir(controlFolder(), { mode: 0o755 })
    await chmod(controlFolder(), 0o755)
    const { target } = await control()
    const error = await expectEngineError(
      startControlServer(defaultControlPath('/images/disk.add-cow'), target),
      'FORBIDDEN',
    )
    expect(error.message).toContain(controlFolder())
    expect(defaultControlPath('/images/disk.add-cow')).toMatch(
      /disk\.add-cow-[0-9a-f]{12}\.control$/,
    )
  })
})
