// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { AddcowBridge } from '../../../../shared/ipc/bridge'
import { vmScreenTarget } from '../../../../renderer/src/api/vm-screen'

// The graphical console's way to a VM's screen (renderer/src/api/vm-screen.ts): the browser
// mode's /vnc URL, and in Electron the MessagePort main sends, as noVNC's raw channel. The
// preload's window.postMessage is played by the test with a real MessageChannel (the test DOM's
// postMessage does not transfer ports); main's side is main/app/vm-screens.ts.

type Scope = typeof globalThis & { addcow?: AddcowBridge }
const scope = window as unknown as Scope

/** Deliver main's answer as the preload does: a window message with the port attached. */
function answer(data: unknown, port?: MessagePort): void {
  const event = new window.MessageEvent('message', { data, source: window })
  Object.defineProperty(event, 'ports', { value: port ? [port] : [] })
  window.dispatchEvent(event)
}

/** A bridge whose openVmScreen records what was asked and answers through `respond`. */
function bridgeAnswering(
  respond: (jobId: string, nonce: string) => void,
): AddcowBridge & { asked: string[] } {
  const asked: string[] = []
  return {
    asked,
    openVmScreen: (jobId: string, nonce: string) => {
      asked.push(jobId)
      respond(jobId, nonce)
    },
  } as unknown as AddcowBridge & { asked: string[] }
}

// Without isolation the DOM files of a worker share one global: a file run before this one may
// have left its fake main's bridge (tests/unit/renderer/helpers/fake-main.ts) as window.addcow.
// Each test here starts without a bridge, and the one found is put back for the files after.
let bridgeBefore: PropertyDescriptor | undefined
beforeEach(() => {
  bridgeBefore = Object.getOwnPropertyDescriptor(scope, 'addcow')
  delete scope.addcow
})
afterEach(() => {
  delete scope.addcow
  if (bridgeBefore) Object.defineProperty(scope, 'addcow', bridgeBefore)
})

describe('vmScreenTarget', () => {
  it('is the same-origin /vnc endpoint in the browser mode', () => {
    expect(vmScreenTarget('job 1')).toBe(`ws://${window.location.host}/vnc?vm=job%201`)
  })

  it('is a raw channel over main’s MessagePort in Electron: open, bytes both ways, closed', async () => {
    const { port1: mainPort, port2: pagePort } = new MessageChannel()
    const bridge = bridgeAnswering((_jobId, nonce) =>
      setTimeout(() => answer({ addcowScreen: { nonce } }, pagePort)),
    )
    Object.defineProperty(scope, 'addcow', { value: bridge, configurable: true })
    const channel = vmScreenTarget('job1')
    if (typeof channel === 'string') throw new Error('expected a channel')
    expect(bridge.asked).toEqual(['job1'])
    expect(channel.readyState).toBe('connecting')
    const received: number[][] = []
    const closed = new Promise<CloseEvent>((resolve) => (channel.onclose = resolve))
    await new Promise<void>((resolve) => (channel.onopen = () => resolve()))
    expect(channel.readyState).toBe('open')

    channel.onmessage = (event) => received.push([...new Uint8Array(event.data)])
    const fromPage = new Promise<unknown>(
      (resolve) => (mainPort.onmessage = (e) => resolve(e.data)),
    )
    channel.send(new Uint8Array([82, 70, 66]))
    expect([...((await fromPage) as Uint8Array)]).toEqual([82, 70, 66])
    mainPort.postMessage(new Uint8Array([1, 2, 3]))
    mainPort.postMessage({ closed: 'The VM stopped.' })
    const event = await closed
    expect(received).toEqual([[1, 2, 3]])
    expect({ code: event.code, reason: event.reason, clean: event.wasClean }).toEqual({
      code: 1000,
      reason: 'The VM stopped.',
      clean: true,
    })
    expect(channel.readyState).toBe('closed')
    mainPort.close()
  })

  it('fails plainly when main refuses, and ignores answers to other requests', async () => {
    const bridge = bridgeAnswering((_jobId, nonce) =>
      setTimeout(() => {
        answer({ addcowScreen: { nonce: 'someone-else', error: 'not this one' } })
        answer({ addcowScreen: { nonce, error: 'No VM of this app has the id nope.' } })
      }),
    )
    Object.defineProperty(scope, 'addcow', { value: bridge, configurable: true })
    const channel = vmScreenTarget('nope')
    if (typeof channel === 'string') throw new Error('expected a channel')
    let errored = false
    channel.onerror = () => (errored = true)
    const event = await new Promise<CloseEvent>((resolve) => (channel.onclose = resolve))
    expect(errored).toBe(true)
    expect({ code: event.code, reason: event.reason }).toEqual({
      code: 1006,
      reason: 'No VM of this app has the id nope.',
    })
  })
})
