// What the test DOM (happy-dom) lacks for the renderer's components: matchMedia (naive-ui asks
// for the theme), ResizeObserver (the allocation map follows its width), an element width, and
// a 2D canvas context (the allocation map draws into one that records its fills instead).

/** matchMedia that matches nothing: the light theme, no reduced motion. */
export function stubMatchMedia(): void {
  window.matchMedia = (query: string) =>
    ({
      matches: false,
      media: query,
      onchange: null,
      addEventListener: () => undefined,
      removeEventListener: () => undefined,
      addListener: () => undefined,
      removeListener: () => undefined,
      dispatchEvent: () => false,
    }) as MediaQueryList
}

/** A ResizeObserver that reports once, when it starts observing. */
export function stubResizeObserver(): void {
  globalThis.ResizeObserver = class {
    constructor(private readonly callback: ResizeObserverCallback) {}
    observe(): void {
      this.callback([], this as unknown as ResizeObserver)
    }
    unobserve(): void {}
    disconnect(): void {}
  }
}

/** One fillRect the recording canvas saw. */
export interface Fill {
  style: string
  x: number
  y: number
  width: number
  height: number
}

/**
 * Give every element a width and every canvas a 2D context that records its fills (cleared
 * by clearRect). Returns the fills and the function that puts the DOM back as it was.
 */
export function recordCanvas(width: number): { fills: Fill[]; restore: () => void } {
  const fills: Fill[] = []
  const saved = {
    getContext: HTMLCanvasElement.prototype.getContext,
    clientWidth: Object.getOwnPropertyDescriptor(HTMLElement.prototype, 'clientWidth'),
  }
  Object.defineProperty(HTMLElement.prototype, 'clientWidth', {
    configurable: true,
    get: () => width,
  })
  const context = {
    fillStyle: '',
    strokeStyle: '',
    lineWidth: 1,
    setTransform: () => undefined,
    clearRect: () => {
      fills.length = 0
    },
    fillRect(x: number, y: number, width: number, height: number) {
      fills.push({ style: String(this.fillStyle), x, y, width, height })
    },
    strokeRect: () => undefined,
  }
  HTMLCanvasElement.prototype.getContext = (() =>
    context) as unknown as typeof HTMLCanvasElement.prototype.getContext
  return {
    fills,
    restore() {
      HTMLCanvasElement.prototype.getContext = saved.getContext
      if (saved.clientWidth)
        Object.defineProperty(HTMLElement.prototype, 'clientWidth', saved.clientWidth)
    },
  }
}
