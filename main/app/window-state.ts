import { readJsonFile, writeFileAtomically } from './atomic-file'

/** Where the main window was and how big, kept across restarts. */
export interface WindowState {
  x?: number
  y?: number
  width: number
  height: number
  maximized: boolean
}

/** A rectangle of the desktop (a display's work area). */
export interface DisplayArea {
  x: number
  y: number
  width: number
  height: number
}

/** The state of a first start. */
export const DEFAULT_WINDOW_STATE: WindowState = { width: 1280, height: 820, maximized: false }

/** Smallest window the app allows. */
export const MIN_WINDOW_SIZE = { width: 720, height: 480 }

const LIMIT = 100_000

function isCoordinate(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && Math.abs(value) <= LIMIT
}

/** Validate what was read from the state file; anything odd gives the default state. */
export function parseWindowState(value: unknown): WindowState {
  if (typeof value !== 'object' || value === null) return { ...DEFAULT_WINDOW_STATE }
  const data = value as Record<string, unknown>
  const { width, height } = data
  if (!isCoordinate(width) || !isCoordinate(height) || width < 1 || height < 1)
    return { ...DEFAULT_WINDOW_STATE }
  const state: WindowState = {
    width: Math.max(MIN_WINDOW_SIZE.width, width),
    height: Math.max(MIN_WINDOW_SIZE.height, height),
    maximized: data.maximized === true,
  }
  if (isCoordinate(data.x) && isCoordinate(data.y)) {
    state.x = data.x
    state.y = data.y
  }
  return state
}

/**
 * Keep a saved window on the desktop as it is now: if its title bar no longer touches any
 * display (a monitor was unplugged), forget the position so the window is centred, and shrink
 * it to the largest display.
 */
export function fitToDisplays(state: WindowState, displays: readonly DisplayArea[]): WindowState {
  if (displays.length === 0) return state
  const widest = Math.max(...displays.map((display) => display.width))
  const tallest = Math.max(...displays.map((display) => display.height))
  const fitted: WindowState = {
    width: Math.min(state.width, widest),
    height: Math.min(state.height, tallest),
    maximized: state.maximized,
  }
  if (state.x === undefined || state.y === undefined) return fitted
  const { x, y } = state
  const titleBar = { x, y, width: fitted.width, height: 40 }
  const visible = displays.some(
    (display) =>
      titleBar.x < display.x + display.width &&
      titleBar.x + titleBar.width > display.x &&
      titleBar.y < display.y + display.height &&
      titleBar.y + titleBar.height > display.y,
  )
  return visible ? { ...fitted, x, y } : fitted
}

/** The window state file: read leniently, written atomically. */
export class WindowStateFile {
  constructor(readonly file: string) {}

  /** The saved state, or the default one when the file is missing or corrupt. */
  async load(): Promise<WindowState> {
    return parseWindowState(await readJsonFile(this.file))
  }

  /** Save `state`; later saves win, and a crash leaves the old or the new file whole. */
  async save(state: WindowState): Promise<void> {
    await writeFileAtomically(this.file, JSON.stringify(parseWindowState(state), null, 2) + '\n')
  }
}
