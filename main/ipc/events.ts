import type { EventName } from '../../shared/ipc/channels'
import type { EventPayload } from '../../shared/ipc/contract'
import type { Logger } from './logger'

/** A listener for every event (transports forward them to windows or sockets). */
export type EventListener = (event: EventName, payload: unknown) => void

/**
 * The events main pushes to every renderer, typed by the contract. Transports subscribe and
 * forward; a listener that throws is logged and does not stop the others.
 */
export class EventBus {
  private readonly listeners = new Set<EventListener>()

  constructor(private readonly log: Logger) {}

  /** Send `payload` to every subscriber. */
  emit<E extends EventName>(event: E, payload: EventPayload<E>): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event, payload)
      } catch (error) {
        this.log.error(`an event listener failed on ${event}`, error)
      }
    }
  }

  /** Receive every event; returns the function that unsubscribes. */
  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener)
    return () => {
      this.listeners.delete(listener)
    }
  }

  /** Number of subscribers (transports, tests). */
  get size(): number {
    return this.listeners.size
  }
}
