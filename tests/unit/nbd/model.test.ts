// Property: any sequence of NBD writes, zeroes, trims, flushes and reads, spread over two
// connections, reads back exactly what an in-memory model of the disk holds.
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { COMMAND, COMMAND_FLAG } from '../../../main/nbd/protocol'
import {
  basePattern,
  BASE_SIZE,
  OVERLAY_SIZE,
  serveOverlay,
  type ServedImage,
} from '../../helpers/nbd/fixtures'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'

type Operation =
  | {
      kind: 'write'
      offset: number
      length: number
      value: number
      fua: boolean
      connection: number
    }
  | { kind: 'zero'; offset: number; length: number; fast: boolean; connection: number }
  | { kind: 'trim'; offset: number; length: number; connection: number }
  | { kind: 'flush'; connection: number }
  | { kind: 'read'; offset: number; length: number; connection: number }

const range = fc
  .tuple(fc.integer({ min: 0, max: OVERLAY_SIZE - 1 }), fc.integer({ min: 1, max: 300_000 }))
  .map(([offset, length]) => ({ offset, length: Math.min(length, OVERLAY_SIZE - offset) }))
const connection = fc.integer({ min: 0, max: 1 })
const operation: fc.Arbitrary<Operation> = fc.oneof(
  fc
    .record({
      kind: fc.constant('write' as const),
      range,
      value: fc.integer({ min: 0, max: 255 }),
      fua: fc.boolean(),
      connection,
    })
    .map(({ range: r, ...rest }) => ({ ...rest, ...r })),
  fc
    .record({ kind: fc.constant('zero' as const), range, fast: fc.boolean(), connection })
    .map(({ range: r, ...rest }) => ({ ...rest, ...r })),
  fc
    .record({ kind: fc.constant('trim' as const), range, connection })
    .map(({ range: r, ...rest }) => ({ ...rest, ...r })),
  fc.record({ kind: fc.constant('flush' as const), connection }),
  fc
    .record({ kind: fc.constant('read' as const), range, connection })
    .map(({ range: r, ...rest }) => ({ ...rest, ...r })),
)

let served: ServedImage
let clients: NbdTestClient[]
let model: Buffer

beforeAll(async () => {
  served = await serveOverlay()
  clients = [await NbdTestClient.connect(served.socket), await NbdTestClient.connect(served.socket)]
  for (const client of clients) await client.negotiate()
  model = Buffer.concat([basePattern(0, BASE_SIZE), Buffer.alloc(OVERLAY_SIZE - BASE_SIZE)])
})

afterAll(async () => {
  for (const client of clients) client.close()
  await served.cleanup()
})

describe('NBD export against an in-memory model', () => {
  it('reads back what was written, zeroed and trimmed, on either connection', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 25 }), async (operations) => {
        for (const op of operations) {
          const client = clients[op.connection]!
          if (op.kind === 'write') {
            const data = Buffer.alloc(op.length, op.value)
            expect(
              (await client.writeData(op.offset, data, op.fua ? COMMAND_FLAG.FUA : 0)).error,
            ).toBe(0)
            data.copy(model, op.offset)
          } else if (op.kind === 'zero') {
            const reply = await client.command(
              COMMAND.WRITE_ZEROES,
              op.offset,
              op.length,
              op.fast ? COMMAND_FLAG.FAST_ZERO : 0,
            )
            // A fast zero may fail with ENOTSUP (and then changes nothing); a plain one never fails.
            if (reply.error === 0) {
              model.fill(0, op.offset, op.offset + op.length)
            } else {
              expect(op.fast).toBe(true)
              expect(reply.error).toBe(95)
            }
          } else if (op.kind === 'trim') {
            expect((await client.command(COMMAND.TRIM, op.offset, op.length)).error).toBe(0)
          } else if (op.kind === 'flush') {
            expect((await client.command(COMMAND.FLUSH)).error).toBe(0)
          } else {
            const read = await client.read(op.offset, op.length)
            expect(read.error).toBe(0)
            expect(read.data.equals(model.subarray(op.offset, op.offset + op.length))).toBe(true)
          }
        }
        const whole = await clients[0]!.read(0, OVERLAY_SIZE)
        expect(whole.data.equals(model)).toBe(true)
      }),
      { numRuns: 15 },
    )
  })
})
