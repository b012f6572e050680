// Attack: clients that queue 1 MiB reads and never read the replies (or read them a trickle at
// a time), 64 of them, against `addcow serve`: its memory stays bounded (peak RSS from /proc)
// and a well-behaved client, qemu-io, is served meanwhile with every byte verified.
// The good client's time is printed next to its time on an idle server; nothing is timed.
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seededRandom } from '../../helpers/numbers'
import { requireTools, tempDir } from '../../helpers/tools'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'
import {
  attackImage,
  attackSeed,
  memoryOf,
  MIB,
  serveChild,
  killChildren,
  qemuIoVerified,
} from './attack'

const available = requireTools('qemu-io')
const describeTools = available ? describe : describe.skip
const CLIENTS = 64
const READS_PER_CLIENT = 64
const RSS_LIMIT = 300 * 1000 * 1000

let folder: { path: string; cleanup: () => Promise<void> }

beforeAll(async () => {
  folder = await tempDir('addcow-nbd-slow-')
})

afterAll(async () => {
  await killChildren()
  await folder?.cleanup()
})

/** qemu-io writes a pattern and reads it back; returns the seconds it took. */
async function goodClient(uri: string, offset: number, pattern: number): Promise<number> {
  const start = performance.now()
  await qemuIoVerified(uri, [`write -P ${pattern} ${offset} 8M`, `read -P ${pattern} ${offset} 8M`])
  return (performance.now() - start) / 1000
}

describeTools('slow readers (attack)', () => {
  it(`${CLIENTS} clients that do not read keep addcow serve under 300 MB, and qemu-io is served`, async () => {
    const seed = attackSeed()
    const random = seededRandom(seed)
    const { dir, overlay } = await attackImage(folder.path, 'slow', 96 * MIB, 64 * MIB)
    const served = await serveChild(dir, overlay, ['--max-connections', String(CLIENTS + 8)])
    const pid = served.child.pid!
    const uri = `nbd+unix:///?socket=${served.socket}`
    const hostile: NbdTestClient[] = []
    const timers: NodeJS.Timeout[] = []
    try {
      const idle = await goodClient(uri, 64 * MIB, 0x5a)
      const before = memoryOf(pid)
      let trickling = 0
      for (let index = 0; index < CLIENTS; index++) {
        const client = await NbdTestClient.connect(served.socket)
        await client.negotiate({ structured: random() < 0.75, meta: false })
        client.socket.removeAllListeners('data')
        client.socket.pause()
        for (let count = 0; count < READS_PER_CLIENT; count++) {
          const offset = Math.floor(random() * 63) * MIB
          client.sendRequest({ type: 0, offset, length: MIB })
        }
        if (index % 2 === 1) {
          // A slow reader: 64 KiB every 50 ms.
          trickling++
          timers.push(setInterval(() => client.socket.read(65536), 50))
        }
        hostile.push(client)
      }
      await sleep(1000)
      const loaded = await goodClient(uri, 80 * MIB, 0xa5)
      const during = memoryOf(pid)
      for (const timer of timers) clearInterval(timer)
      for (const client of hostile) client.close()
      await sleep(2000)
      const after = memoryOf(pid)
      const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`
      console.log(
        `slow readers (seed ${seed}): ${CLIENTS} clients (${trickling} trickling), ` +
          `${CLIENTS * READS_PER_CLIENT} reads of 1 MiB queued; addcow serve RSS ${mb(before.rss)} ` +
          `before, ${mb(during.rss)} during (peak ${mb(during.peak)}), ${mb(after.rss)} 2 s after they left; ` +
          `qemu-io 8 MiB write+verify ${idle.toFixed(2)} s idle, ${loaded.toFixed(2)} s under attack`,
      )
      expect(during.peak).toBeLessThan(RSS_LIMIT)
      // The server is still whole and still serves.
      await goodClient(uri, 0, 0x3c)
    } finally {
      for (const timer of timers) clearInterval(timer)
      for (const client of hostile) client.close()
      await served.stop()
    }
  })
})
