import { connect as tlsConnect } from 'node:tls'
import { afterEach, describe, expect, it } from 'vitest'
import { OPTION, REPLY } from '../../../main/nbd/protocol'
import { isLoopbackHost, parsePskFile } from '../../../main/nbd/tls'
import { basePattern, serveOverlay, type ServedImage } from '../../helpers/nbd/fixtures'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'

const KEY = Buffer.from('3d1c4f0e9a8b7c6d5e4f30211203f4e5', 'hex')

let served: ServedImage | null = null
afterEach(async () => {
  await served?.cleanup()
  served = null
})

async function startTls(
  client: NbdTestClient,
  identity: string,
  key: Buffer,
): Promise<NbdTestClient> {
  client.sendOption(OPTION.STARTTLS)
  expect((await client.readOptionReply()).type).toBe(REPLY.ACK)
  client.socket.removeAllListeners('data')
  const secure = tlsConnect({
    socket: client.socket,
    ciphers: 'PSK',
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: key, identity }),
  })
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', () => resolve())
    secure.once('error', reject)
  })
  return NbdTestClient.fromSocket(secure)
}

describe('NBD TLS (pre-shared keys)', () => {
  it('requires STARTTLS first, then serves over TLS', async () => {
    served = await serveOverlay({
      server: { tls: { kind: 'psk', keys: new Map([['alice', KEY]]) } },
    })
    const client = await NbdTestClient.connect(served.socket)
    await client.greeting()
    client.sendClientFlags(1)
    client.sendOption(OPTION.GO, NbdTestClient.infoData('', []))
    expect((await client.readOptionReply()).type).toBe(REPLY.ERR_TLS_REQD)
    client.sendOption(OPTION.LIST)
    expect((await client.readOptionReply()).type).toBe(REPLY.ERR_TLS_REQD)
    const secure = await startTls(client, 'alice', KEY)
    await secure.negotiate({ greeted: true })
    expect((await secure.read(0, 4096)).data).toEqual(basePattern(0, 4096))
    secure.sendOption(OPTION.STARTTLS)
    secure.close()
  })

  it('closes a client that enters transmission with NBD_OPT_EXPORT_NAME before TLS', async () => {
    served = await serveOverlay({
      server: { tls: { kind: 'psk', keys: new Map([['alice', KEY]]) } },
    })
    const client = await NbdTestClient.connect(served.socket)
    await client.greeting()
    client.sendClientFlags(1)
    client.sendOption(OPTION.EXPORT_NAME)
    await client.closed
  })

  it('drops a client with the wrong key and keeps serving', async () => {
    served = await serveOverlay({
      server: { tls: { kind: 'psk', keys: new Map([['alice', KEY]]) } },
    })
    const client = await NbdTestClient.connect(served.socket)
    await client.greeting()
    client.sendClientFlags(1)
    await expect(startTls(client, 'alice', Buffer.alloc(16, 1))).rejects.toThrow()
    client.close()
    const good = await NbdTestClient.connect(served.socket)
    await good.greeting()
    good.sendClientFlags(1)
    const secure = await startTls(good, 'alice', KEY)
    await secure.negotiate({ greeted: true })
    expect((await secure.read(4096, 512)).data).toEqual(basePattern(4096, 512))
    secure.close()
  })

  it('refuses a non-loopback TCP listener without TLS', async () => {
    served = await serveOverlay()
    const { NbdServer } = await import('../../../main/nbd/server')
    const plain = new NbdServer({ exports: [{ name: '', disk: served.disk }] })
    await expect(plain.listen({ host: '0.0.0.0', port: 0 })).rejects.toMatchObject({
      code: 'FORBIDDEN',
    })
    const address = await plain.listen({ port: 0 })
    expect(address).toMatchObject({ kind: 'tcp', host: '127.0.0.1' })
    await plain.close()
  })
})

describe('PSK files and loopback addresses', () => {
  it('parses identity:hexkey lines and rejects anything else', () => {
    const keys = parsePskFile('alice:0011aabb\n\nbob:FF00\n', '/k.psk')
    expect([...keys.keys()]).toEqual(['alice', 'bob'])
    expect(keys.get('alice')).toEqual(Buffer.from([0x00, 0x11, 0xaa, 0xbb]))
    expect(() => parsePskFile('alice:xyz\n', '/k.psk')).toThrow(/Line 1 of the PSK file \/k.psk/)
    expect(() => parsePskFile(':0011\n', '/k.psk')).toThrow(/Line 1/)
    expect(() => parsePskFile('alice:001\n', '/k.psk')).toThrow(/Line 1/)
    expect(() => parsePskFile('\n', '/k.psk')).toThrow(/holds no keys/)
  })

  it('knows loopback hosts', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '0:0:0:0:0:0:0:1'])
      expect(isLoopbackHost(host), host).toBe(true)
    for (const host of ['0.0.0.0', '192.168.1.10', '::', 'example.com', '128.0.0.1', '::2'])
      expect(isLoopbackHost(host), host).toBe(false)
  })
})
