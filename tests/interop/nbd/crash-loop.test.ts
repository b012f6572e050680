// Attack: kill -9 loops on the NBD write path. A writer pipelines writes (some FUA), flushes
// and reads against `addcow serve`; the server is killed with SIGKILL at a random moment and
// started again, over and over. After every restart each 4 KiB block must hold its last
// flushed or FUA-acknowledged write or a later one, and no read, then or during the run, may
// return data that was never written. Seeded (printed; ADDCOW_ATTACK_SEED replays one),
// bounded, counts printed.
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seededRandom } from '../../helpers/numbers'
import { requireTools, tempDir } from '../../helpers/tools'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'
import { Pipeline } from '../../helpers/nbd/pipeline'
import { BLOCK, WriteHistory } from '../../helpers/nbd/write-history'
import { attackImage, attackSeed, MIB, serveChild, killChildren } from './attack'

const available = requireTools('qemu-io')
const describeTools = available ? describe : describe.skip

const BLOCKS = 1024
const CYCLES = 8
const WINDOW = 16
const FUA = 1

let folder: { path: string; cleanup: () => Promise<void> }

beforeAll(async () => {
  folder = await tempDir('addcow-nbd-crash-')
})

afterAll(async () => {
  await killChildren()
  await folder?.cleanup()
})

describeTools('kill -9 on the NBD write path (attack)', () => {
  it('loses no flushed or FUA write, and never returns data that was never written', async () => {
    const seed = attackSeed()
    const random = seededRandom(seed)
    const { dir, overlay } = await attackImage(folder.path, 'crash', 8 * MIB, 8 * MIB)
    const history = new WriteHistory(BLOCKS)
    const counts = { writes: 0, fua: 0, acked: 0, flushes: 0, reads: 0, checked: 0, newer: 0 }
    const wrong = history.wrong

    for (let cycle = 0; cycle <= CYCLES; cycle++) {
      const served = await serveChild(dir, overlay)
      const client = await NbdTestClient.connect(served.socket)
      await client.negotiate()
      const pipeline = new Pipeline(client, true)
      // After a restart: everything flushed is there, and nothing that was never written.
      const whole = await pipeline.send({ type: 0, offset: 0, length: BLOCK * BLOCKS })
      expect(whole.error).toBe(0)
      counts.newer += history.afterCrash(whole.data!, `after kill ${cycle}`)
      counts.checked += BLOCKS
      if (cycle === CYCLES) {
        client.close()
        await served.stop('SIGKILL')
        break
      }

      // Writes, flushes and reads, pipelined, until SIGKILL at a random moment.
      const killAt = Date.now() + 80 + random() * 400
      const inFlight = new Set<Promise<void>>()
      const track = (work: Promise<void>): void => {
        // Requests cut by the kill fail: that is the point.
        const settled = work.catch(() => undefined).finally(() => inFlight.delete(settled))
        inFlight.add(settled)
      }
      while (Date.now() < killAt) {
        if (inFlight.size >= WINDOW) await Promise.race(inFlight)
        const roll = random()
        const first = Math.floor(random() * BLOCKS)
        const count = Math.min(1 + Math.floor(random() * 4), BLOCKS - first)
        if (roll < 0.6 && history.idle(first, count)) {
          const fua = random() < 0.25
          const { id, data } = history.issue(first, count)
          counts.writes++
          if (fua) counts.fua++
          const request = { type: 1, flags: fua ? FUA : 0, offset: first * BLOCK, data }
          track(
            pipeline.send(request).then((reply) => {
              if (reply.error !== 0) return void wrong.push(`write ${id} failed: ${reply.error}`)
              counts.acked++
              history.acknowledged(id, first, count, fua)
            }),
          )
        } else if (roll < 0.7) {
          const flushed = history.flushSent()
          track(
            pipeline.send({ type: 3 }).then((reply) => {
              if (reply.error !== 0) return void wrong.push(`a flush failed: ${reply.error}`)
              counts.flushes++
              flushed()
            }),
          )
        } else {
          const floors = history.floors(first, count)
          const request = { type: 0, offset: first * BLOCK, length: count * BLOCK }
          track(
            pipeline.send(request).then((reply) => {
              if (reply.error !== 0) return void wrong.push(`a read failed: ${reply.error}`)
              counts.reads++
              floors.forEach((floor, index) => {
                const data = reply.data!.subarray(index * BLOCK, (index + 1) * BLOCK)
                history.judge(data, first + index, floor, `a read in run ${cycle}`)
              })
            }),
          )
        }
        if (random() < 0.3) await sleep(1)
      }
      await served.stop('SIGKILL')
      await Promise.allSettled(inFlight)
      client.close()
      await pipeline.finished
    }
    console.log(
      `kill -9 loop (seed ${seed}): ${CYCLES} kills; ${counts.writes} writes (${counts.fua} FUA), ` +
        `${counts.acked} acknowledged, ${counts.flushes} flushes, ${counts.reads} reads verified ` +
        `during the runs, ${counts.checked} blocks verified after restarts ` +
        `(${counts.newer} held an unflushed write that survived)`,
    )
    expect(wrong).toEqual([])
    expect(counts.flushes + counts.fua).toBeGreaterThan(0)
  })
})
