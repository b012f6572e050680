// Clients that walk away: each phase leaves a connection at a different point of the handshake
// or of transmission and hangs up there, without reading what the server sent. Used by the unit
// tests (against an in-process server) and the interop attack suite (then qemu-io must be served).
import { setTimeout as sleep } from 'node:timers/promises'
import { NbdTestClient } from './nbd-test-client'

const OPTION = {
  EXPORT_NAME: 1,
  LIST: 3,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const
const READ = 0
const WRITE = 1
const DISC = 2
const MIB = 1024 * 1024

/** Where a client stops and hangs up. */
export const ABANDON_PHASES = [
  'at-connect',
  'after-greeting',
  'after-client-flags',
  'mid-option',
  'options-unread',
  'many-options-unread',
  'fin-after-options',
  'after-go-unread',
  'mid-request',
  'mid-write-payload',
  'reads-unread',
  'disc-unread',
] as const

export type AbandonPhase = (typeof ABANDON_PHASES)[number]

/** Some options a client may send, with valid data. */
function someOption(random: () => number): [number, Buffer] {
  const choices: [number, Buffer][] = [
    [OPTION.LIST, Buffer.alloc(0)],
    [OPTION.INFO, NbdTestClient.infoData('', [1, 2, 3])],
    [OPTION.STRUCTURED_REPLY, Buffer.alloc(0)],
    [OPTION.LIST_META_CONTEXT, NbdTestClient.metaData('', [])],
    [OPTION.SET_META_CONTEXT, NbdTestClient.metaData('', ['base:allocation'])],
    [0x1234, Buffer.from('unknown')],
  ]
  return choices[Math.floor(random() * choices.length)]!
}

/**
 * Connect to `socket`, go as far as `phase` says, and hang up (destroy the socket) without
 * reading the replies. Resolves once the socket is closed on this side.
 */
export async function abandon(
  socket: string,
  phase: AbandonPhase,
  random: () => number,
  exportSize = 8 * MIB,
): Promise<void> {
  const client = await NbdTestClient.connect(socket)
  const pick = (count: number): number => Math.floor(random() * count)
  try {
    switch (phase) {
      case 'at-connect':
        break
      case 'after-greeting':
        await client.greeting()
        break
      case 'after-client-flags':
        await client.greeting()
        client.sendClientFlags(3)
        break
      case 'mid-option': {
        await client.greeting()
        client.sendClientFlags(3)
        const [option, data] = someOption(random)
        client.sendOption(option, data)
        client.write(Buffer.from('IHAVEOPT').subarray(0, 1 + pick(7)))
        break
      }
      case 'options-unread':
        client.sendClientFlags(3)
        for (let count = 2 + pick(10); count > 0; count--) client.sendOption(...someOption(random))
        break
      case 'many-options-unread':
        // Enough LIST replies to fill the socket buffers: the server must not wait on them.
        client.sendClientFlags(3)
        for (let count = 0; count < 3000; count++) client.sendOption(OPTION.LIST)
        await sleep(20)
        break
      case 'fin-after-options':
        client.sendClientFlags(3)
        for (let count = 2 + pick(4); count > 0; count--) client.sendOption(...someOption(random))
        client.socket.end()
        await sleep(10)
        break
      case 'after-go-unread':
        client.sendClientFlags(3)
        client.sendOption(OPTION.STRUCTURED_REPLY)
        client.sendOption(OPTION.SET_META_CONTEXT, NbdTestClient.metaData('', ['base:allocation']))
        client.sendOption(OPTION.GO, NbdTestClient.infoData('', [3]))
        if (random() < 0.5) client.sendRequest({ type: READ, offset: 0, length: 65536 })
        break
      case 'mid-request':
        await client.negotiate()
        client.write(Buffer.alloc(1 + pick(27), 0x25))
        break
      case 'mid-write-payload': {
        await client.negotiate()
        const header = Buffer.alloc(28)
        header.writeUInt32BE(0x25609513, 0)
        header.writeUInt16BE(WRITE, 6)
        header.writeBigUInt64BE(7n, 8)
        header.writeUInt32BE(MIB, 24)
        client.write(Buffer.concat([header, Buffer.alloc(1 + pick(MIB - 1), 0xee)]))
        break
      }
      case 'reads-unread':
        await client.negotiate()
        client.socket.pause()
        for (let count = 8 + pick(64); count > 0; count--) {
          const offset = pick(exportSize / MIB) * MIB
          client.sendRequest({ type: READ, offset, length: MIB })
        }
        await sleep(20)
        break
      case 'disc-unread':
        await client.negotiate()
        client.socket.pause()
        for (let count = 1 + pick(16); count > 0; count--)
          client.sendRequest({ type: READ, offset: 0, length: 256 * 1024 })
        client.sendRequest({ type: DISC })
        await sleep(5)
        break
    }
  } finally {
    client.close()
    await client.closed
  }
}

/** Abandon `count` connections, `parallel` at a time, cycling through every phase. */
export async function abandonMany(
  socket: string,
  count: number,
  parallel: number,
  random: () => number,
  exportSize?: number,
): Promise<Record<AbandonPhase, number>> {
  const counts = Object.fromEntries(ABANDON_PHASES.map((phase) => [phase, 0])) as Record<
    AbandonPhase,
    number
  >
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const phase = ABANDON_PHASES[next++ % ABANDON_PHASES.length]!
      counts[phase]++
      // A refused connection (all slots taken) is closed by the server at once: also fine.
      await abandon(socket, phase, random, exportSize).catch(() => undefined)
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker))
  return counts
}
