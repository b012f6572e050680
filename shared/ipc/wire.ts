import { z } from 'zod'
import { IpcErrorSchema } from './contract'

/**
 * The browser mode's WebSocket protocol: the same channels and events as Electron's IPC, as
 * JSON text frames.
 *
 * The client sends `request` frames with an id of its choosing; the server answers each with a
 * `response` frame carrying the same id and an IpcResult, and pushes `event` frames at any
 * time. Responses may come in any order.
 */

/** Largest frame either side accepts, in bytes. */
export const MAX_FRAME_BYTES = 1024 * 1024

/** Requests one connection may have in flight at once. */
export const MAX_IN_FLIGHT = 64

/** A request frame (client → server). The channel is checked by the dispatcher. */
export const WireRequestSchema = z.strictObject({
  type: z.literal('request'),
  id: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  channel: z.string().max(100),
  payload: z.unknown(),
})

/** A request frame. */
export type WireRequest = z.output<typeof WireRequestSchema>

/** A frame the server sends: a response to a request, or an event. */
export const WireServerMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('response'),
    id: z.number().int().min(0),
    result: z.union([
      z.object({ ok: z.literal(true), value: z.unknown() }),
      z.object({ ok: z.literal(false), error: IpcErrorSchema }),
    ]),
  }),
  z.object({ type: z.literal('event'), event: z.string(), payload: z.unknown() }),
])

/** A frame the server sends. */
export type WireServerMessage = z.output<typeof WireServerMessageSchema>

/** WebSocket close code for a frame that is not a valid request (RFC 6455 §7.4.1: 1008 policy). */
export const CLOSE_POLICY_VIOLATION = 1008
