// Attack: clients that walk away. Hundreds of connections hang up in every phase of the
// handshake and of transmission without reading what the server sent, and a few stall in the
// handshake without hanging up, against a server with 4 slots; then qemu-io must be served.
// Seeded (the seed is printed; ADDCOW_ATTACK_SEED replays one), bounded, counts printed.
import { describe, expect, it } from 'vitest'
import { seededRandom } from '../../helpers/numbers'
import { requireTools } from '../../helpers/tools'
import { eventually, serveOverlay } from '../../helpers/nbd/fixtures'
import { abandonMany } from '../../helpers/nbd/hostile-clients'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'
import { attackSeed, qemuIoVerified } from './attack'

const available = requireTools('qemu-io')
const describeTools = available ? describe : describe.skip

describeTools('abandoned connections (attack)', () => {
  it('never keep a slot, so qemu-io is served after hundreds of them', async () => {
    const seed = attackSeed()
    const random = seededRandom(seed)
    const served = await serveOverlay({
      server: { maxConnections: 4, limits: { handshakeTimeoutMs: 1000 } },
    })
    try {
      const counts = await abandonMany(served.socket, 240, 3, random)
      const freed = await eventually(() => served.server.connectionCount === 0, 20_000)
      const refused = served.logs.filter((event) => /refused a connection/.test(event.message))
      // Clients that stop mid-handshake and stay: only the handshake timeout frees them.
      const stalled: NbdTestClient[] = []
      for (let index = 0; index < 4; index++) {
        const client = await NbdTestClient.connect(served.socket)
        client.sendClientFlags(3)
        if (index % 2 === 1) client.write(Buffer.from('IHAVE'))
        stalled.push(client)
      }
      const timedOut = await eventually(() => served.server.connectionCount === 0, 20_000)
      const timeouts = served.logs.filter((event) => /handshake took longer/.test(event.message))
      console.log(
        `abandoned connections (seed ${seed}): ${JSON.stringify(counts)}, ` +
          `${refused.length} of them refused while all 4 slots were busy; ` +
          `${stalled.length} stalled handshakes, ${timeouts.length} timed out`,
      )
      for (const client of stalled) client.close()
      expect(freed, `${served.server.connectionCount} of 4 slots still taken`).toBe(true)
      expect(timedOut).toBe(true)
      expect(timeouts.length).toBe(stalled.length)

      const uri = `nbd+unix:///?socket=${served.socket}`
      await qemuIoVerified(uri, ['write -P 0x5a 1M 1M', 'read -P 0x5a 1M 1M', 'read -P 0 6M 1M'])
    } finally {
      await served.cleanup()
    }
  })
})
