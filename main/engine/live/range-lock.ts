/**
 * Exclusive locks over ranges of units (a live disk's lock granules), granted in arrival order.
 *
 * A request is granted when it overlaps no held range and no earlier request still waiting, so
 * a large range (a job's window, a whole-disk trim) is not starved by a stream of small guest
 * writes, and two requests never wait on each other (no deadlock: each waits only on earlier
 * ones). Held and waiting ranges are kept in lists, not one entry per unit: a trim of a whole
 * 1 TiB disk is one entry. The lists are short (bounded by the requests in flight).
 */
export class RangeLock {
  private readonly held: Range[] = []
  private readonly waiting: Waiter[] = []

  /** Wait for [first, end) and hold it; call the returned function exactly once to release. */
  async acquire(first: number, end: number): Promise<() => void> {
    const granted = this.tryAcquire(first, end)
    if (granted) return granted
    const range: Range = { first, end }
    await new Promise<void>((grant) => this.waiting.push({ range, grant }))
    return this.releaser(range)
  }

  /**
   * Hold [first, end) now if {@link acquire} would grant it at once (nothing held or waiting
   * overlaps it), else null: the uncontended guest request takes its lock without a promise.
   */
  tryAcquire(first: number, end: number): (() => void) | null {
    const range: Range = { first, end }
    if (this.overlapsHeld(range) || this.waiting.some((waiter) => overlaps(waiter.range, range)))
      return null
    this.held.push(range)
    return this.releaser(range)
  }

  /** The function that releases `range`, once. */
  private releaser(range: Range): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      this.held.splice(this.held.indexOf(range), 1)
      this.grantWaiting()
    }
  }

  /** Ranges held or waiting (for status and tests). */
  get busy(): number {
    return this.held.length + this.waiting.length
  }

  private overlapsHeld(range: Range): boolean {
    return this.held.some((other) => overlaps(other, range))
  }

  /** Grant, in order, every waiter that overlaps neither a held range nor an earlier waiter. */
  private grantWaiting(): void {
    const blocked: Range[] = []
    for (let index = 0; index < this.waiting.length;) {
      const waiter = this.waiting[index]!
      const free =
        !this.overlapsHeld(waiter.range) && !blocked.some((other) => overlaps(other, waiter.range))
      if (free) {
        this.waiting.splice(index, 1)
        this.held.push(waiter.range)
        waiter.grant()
      } else {
        blocked.push(waiter.range)
        index++
      }
    }
  }
}

interface Range {
  first: number
  end: number
}

interface Waiter {
  range: Range
  grant: () => void
}

function overlaps(a: Range, b: Range): boolean {
  return a.first < b.end && b.first < a.end
}
