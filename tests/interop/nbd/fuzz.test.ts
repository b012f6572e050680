// Attack: an NBD fuzzer against `addcow serve`. Hundreds of connections send random and
// mutated option sequences; then a few connections send tens of thousands of random, mutated
// and pipelined requests and check every reply (one per request, well formed, no EIO, reads of
// the protected range byte-exact). Writes only ever land in the scratch range, so afterwards
// qemu-io must find the protected range intact and the server must still write and read.
// Seeded (printed; ADDCOW_ATTACK_SEED replays one), bounded, counts printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seededRandom } from '../../helpers/numbers'
import { requireTools, tempDir } from '../../helpers/tools'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'
import { Pipeline, type WireRequest } from '../../helpers/nbd/pipeline'
import { attackImage, attackSeed, MIB, serveChild, killChildren, qemuIoVerified } from './attack'

const available = requireTools('qemu-io')
const describeTools = available ? describe : describe.skip

const SIZE = 16 * MIB
/** Fuzzed writes, trims and zeroes stay below this offset. */
const SCRATCH = 8 * MIB
/** qemu-io fills [PROTECTED, SIZE) with 0x77 before the fuzzing; nothing may change it. */
const PROTECTED = 12 * MIB
const OPTION_CONNECTIONS = 300
const REQUEST_CONNECTIONS = 4
const REQUESTS_PER_CONNECTION = 5000
const WINDOW = 16

const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, ZEROES: 6, STATUS: 7 }
const EIO = 5

let folder: { path: string; cleanup: () => Promise<void> }

beforeAll(async () => {
  folder = await tempDir('addcow-nbd-fuzz-')
})

afterAll(async () => {
  await killChildren()
  await folder?.cleanup()
})

type Random = () => number
const pick = <T>(random: Random, items: readonly T[]): T =>
  items[Math.floor(random() * items.length)]!
const below = (random: Random, limit: number): number => Math.floor(random() * limit)

function randomBytes(random: Random, length: number): Buffer {
  const data = Buffer.alloc(length)
  for (let index = 0; index < length; index++) data[index] = below(random, 256)
  return data
}

/** Option data: valid for the option, or mutated. */
function optionData(random: Random, option: number): Buffer {
  const valid =
    option === 6 || option === 7
      ? NbdTestClient.infoData(pick(random, ['', 'x', 'nope']), [below(random, 5), 3])
      : option === 9 || option === 10
        ? NbdTestClient.metaData('', pick(random, [[], ['base:allocation'], ['qemu:x', 'base:']]))
        : option === 1
          ? Buffer.from(pick(random, ['', 'missing']))
          : Buffer.alloc(0)
  const roll = random()
  if (roll < 0.6) return valid
  if (roll < 0.75) return valid.subarray(0, below(random, valid.length + 1))
  if (roll < 0.9) {
    const mutated = Buffer.from(valid)
    if (mutated.length > 0) mutated[below(random, mutated.length)] = below(random, 256)
    return mutated
  }
  return randomBytes(random, below(random, 64))
}

/** One connection of random and mutated options; returns how many options it sent. */
async function fuzzOptions(socket: string, random: Random): Promise<number> {
  const client = await NbdTestClient.connect(socket)
  let sent = 0
  try {
    if (random() < 0.8) await client.greeting()
    client.sendClientFlags(random() < 0.85 ? 3 : pick(random, [0, 1, 2, 0x80, 0xffffffff]))
    for (let count = 1 + below(random, 10); count > 0; count--) {
      const option = pick(random, [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, below(random, 2 ** 31)])
      const data = optionData(random, option)
      const roll = random()
      if (roll < 0.05) client.sendOption(option, data, data.length, 0x1122334455667788n)
      else if (roll < 0.1) client.sendOption(option, data, data.length + below(random, 200))
      else if (roll < 0.12) client.sendOption(option, data, 1 << 20)
      else client.sendOption(option, data)
      sent++
      if (random() < 0.3) await new Promise((resolve) => setImmediate(resolve))
    }
    if (random() < 0.3) {
      // Sometimes go on into transmission and send a few requests.
      client.sendOption(7, NbdTestClient.infoData('', []))
      for (let count = below(random, 5); count > 0; count--)
        client.sendRequest({ type: CMD.READ, offset: below(random, SIZE), length: 4096 })
    }
    if (random() < 0.5) await new Promise((resolve) => setTimeout(resolve, below(random, 5)))
    if (random() < 0.2) client.socket.end()
  } catch {
    // The server closed on a violation: what it should do.
  } finally {
    client.close()
  }
  return sent
}

interface RequestCounts {
  requests: number
  replies: number
  violations: number
  verifiedReads: number
  mismatches: string[]
  errors: Record<string, number>
}

/** A random, sometimes mutated, request. */
function randomRequest(
  random: Random,
  structured: boolean,
): { type: number; flags: number; offset: number; length: number; data?: Buffer } {
  const type = pick(random, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 3, 4, 6, 6, 7, 7, 5, 42, 0xffff])
  // Mostly flags the command takes (FUA, DF, NO_HOLE, FAST_ZERO, REQ_ONE), sometimes any bits.
  const usual: Record<number, number[]> = {
    0: [0, 0, 0, 1, 4],
    1: [0, 0, 1],
    4: [0, 1],
    6: [0, 1, 2, 16],
    7: [0, 0, 8],
  }
  let flags = random() < 0.9 ? pick(random, usual[type] ?? [0]) : below(random, 0x10000)
  const offsetAnywhere = (): number =>
    random() < 0.9 ? below(random, SIZE) : pick(random, [SIZE - 1, SIZE, 2 ** 40, 2 ** 52])
  const readLength = (): number =>
    pick(random, [0, 1, 512, 4096, 65536, below(random, 70000), MIB, 2 * MIB + 3, 0xffffffff])
  if (type === CMD.WRITE || type === CMD.TRIM || type === CMD.ZEROES) {
    const length = type === CMD.WRITE ? below(random, 16384) : below(random, 3 * 65536)
    const offset = random() < 0.95 ? below(random, SCRATCH - length) : SIZE + below(random, 99)
    if (type === CMD.WRITE) flags &= ~4
    return {
      type,
      flags,
      offset,
      length,
      ...(type === CMD.WRITE ? { data: randomBytes(random, length) } : {}),
    }
  }
  if (!structured && type === CMD.READ) flags &= ~4
  return { type, flags, offset: offsetAnywhere(), length: readLength() }
}

/** Connections that send `total` fuzzed requests, WINDOW at a time, and check every reply. */
async function fuzzRequests(
  socket: string,
  random: Random,
  total: number,
  counts: RequestCounts,
  protectedData: Buffer,
): Promise<void> {
  while (total > 0) {
    const structured = random() < 0.7
    const client = await NbdTestClient.connect(socket)
    await client.negotiate({ structured, meta: structured })
    const pipeline = new Pipeline(client, structured)
    const replies = new Set<Promise<void>>()
    let violated = false
    const check = async (request: WireRequest): Promise<void> => {
      const reply = await pipeline.send(request)
      counts.replies++
      if (reply.error !== 0) {
        const key = `error ${reply.error}`
        counts.errors[key] = (counts.errors[key] ?? 0) + 1
      }
      const offset = request.offset ?? 0
      const length = request.length ?? 0
      if (
        request.type === CMD.READ &&
        reply.data &&
        offset >= PROTECTED &&
        offset + length <= SIZE
      ) {
        const expected = protectedData.subarray(offset - PROTECTED, offset - PROTECTED + length)
        if (reply.data.equals(expected)) counts.verifiedReads++
        else counts.mismatches.push(`read of ${length} bytes at ${offset}`)
      }
    }
    try {
      while (total > 0 && !violated) {
        if (replies.size >= WINDOW) await Promise.race(replies)
        total--
        counts.requests++
        const violation = random()
        if (violation < 0.001) {
          // The server must close on these; what was in flight may or may not be answered.
          violated = true
          counts.violations++
          client.sendRequest(
            violation < 0.0005
              ? { type: CMD.READ, offset: 0, length: 512, magic: below(random, 2 ** 32) }
              : { type: CMD.WRITE, offset: 0, length: 32 * MIB + 1 + below(random, 999) },
          )
          break
        }
        const reply = check(randomRequest(random, structured))
        replies.add(reply)
        void reply.then(
          () => replies.delete(reply),
          () => replies.delete(reply),
        )
      }
      if (violated) {
        await Promise.allSettled(replies)
      } else {
        await Promise.all(replies)
        client.disconnect()
      }
      await client.closed
    } finally {
      client.close()
      await pipeline.finished
    }
  }
}

describeTools('NBD fuzzer (attack)', () => {
  it('leaves addcow serve healthy and the data intact after tens of thousands of requests', async () => {
    const seed = attackSeed()
    const { dir, overlay } = await attackImage(folder.path, 'fuzz', SIZE, 10 * MIB)
    const served = await serveChild(dir, overlay, ['--max-connections', '32'])
    const uri = `nbd+unix:///?socket=${served.socket}`
    try {
      await qemuIoVerified(uri, [`write -P 0x77 ${PROTECTED} 4M`])
      const protectedData = Buffer.alloc(SIZE - PROTECTED, 0x77)

      let options = 0
      const optionWorkers = Array.from({ length: 8 }, async (_, worker) => {
        const mine = seededRandom(seed + 1 + worker)
        for (let index = worker; index < OPTION_CONNECTIONS; index += 8) {
          const sent = await fuzzOptions(served.socket, mine)
          options += sent
        }
      })
      await Promise.all(optionWorkers)

      const counts: RequestCounts = {
        requests: 0,
        replies: 0,
        violations: 0,
        verifiedReads: 0,
        mismatches: [],
        errors: {},
      }
      await Promise.all(
        Array.from({ length: REQUEST_CONNECTIONS }, (_, worker) =>
          fuzzRequests(
            served.socket,
            seededRandom(seed + 100 + worker),
            REQUESTS_PER_CONNECTION,
            counts,
            protectedData,
          ),
        ),
      )
      console.log(
        `NBD fuzzer (seed ${seed}): ${OPTION_CONNECTIONS} option connections, ${options} options; ` +
          `${counts.requests} requests, ${counts.replies} replies, ${counts.verifiedReads} reads ` +
          `of the protected range verified, ${counts.violations} deliberate violations, ` +
          `errors ${JSON.stringify(counts.errors)}`,
      )
      expect(counts.mismatches).toEqual([])
      expect(counts.errors[`error ${EIO}`] ?? 0).toBe(0)
      expect(counts.requests).toBe(REQUEST_CONNECTIONS * REQUESTS_PER_CONNECTION)

      expect(served.child.exitCode).toBe(null)
      expect(served.stderr()).not.toMatch(/internal error/)
      await qemuIoVerified(uri, [
        `read -P 0x77 ${PROTECTED} 4M`,
        'write -P 0x5a 0 1M',
        'read -P 0x5a 0 1M',
      ])
    } finally {
      await served.stop()
    }
  })
})
