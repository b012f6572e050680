// The server (main/nbd/server.ts): the connection limit and shutdown.
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { basePattern, MIB, perTestServer } from '../../helpers/nbd/fixtures'

const nbd = perTestServer()

describe('NBD server', () => {
  it('refuses connections beyond the limit and serves the others', async () => {
    const served = await nbd.setup({ server: { maxConnections: 2 } })
    const first = await nbd.client()
    const second = await nbd.client()
    await first.negotiate()
    await second.negotiate()
    const third = await nbd.client()
    await third.closed
    expect(served.logs.some((event) => /2 already open/.test(event.message))).toBe(true)
    expect((await first.read(0, 512)).data).toEqual(basePattern(0, 512))
    // Once a client leaves, its slot is free again.
    const freed = new Promise((resolve) => served.server.once('disconnect', resolve))
    first.close()
    await freed
    const fourth = await nbd.client()
    await fourth.negotiate()
    expect((await fourth.read(512, 512)).data).toEqual(basePattern(512, 512))
    expect((await second.read(0, 512)).data).toEqual(basePattern(0, 512))
  })

  it('on close, finishes requests in flight, closes clients and flushes the disk', async () => {
    const image = await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    expect((await connection.writeData(MIB, Buffer.alloc(4096, 0x77))).error).toBe(0)
    await image.server.close()
    await connection.closed
    const reopened = await openImage(join(image.folder, 'overlay.add-cow'), { readOnly: true })
    try {
      expect(await reopened.read(MIB, 4096)).toEqual(Buffer.alloc(4096, 0x77))
    } finally {
      await reopened.close()
    }
  })
})
