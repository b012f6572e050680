// Benchmark: the Library and Chains views with 1,000 images (issue 15, target 1), in the browser
// mode (`addcow web`) driven by Debian's Chromium through Playwright:
//
//   npx tsx tests/bench/library-1000.ts [runs] [overlays per base (default 100)]
//
// A temporary folder holds 10 raw bases (256 MiB, sparse, 1 MiB of data each) and 100 add-cow
// overlays on each (one cluster written), made through the engine as `addcow create` makes them
// (trusted pairs and base fingerprints recorded), and a library of those 1,010 images. Two
// servers run: one on that library, and one on an empty library, the peer: what the app takes
// with nothing to show, so the ratio says what 1,000 images add. Each round (the two servers
// alternate who goes first) opens a fresh page and measures:
// - "first rows": from navigation to the Library (#/library) to its first row on screen;
// - "refresh": from a click on Refresh to the list read again and drawn;
// - "chains": from navigation to Chains (#/chain) to its graph's nodes on screen.
// The first visit after the servers start (main reads every image then) is printed on its own.
// Prints medians of the rounds, the ratios, the DOM rows drawn, and the load average. Targets:
// first rows < 1 s, refresh < 0.5 s, chains < 1 s. Needs `npm run build`; ADDCOW_BENCH_BIN names
// another build of the CLI to measure (a copy of main's out/, for figures before a change).
import { chromium, type Browser, type Page } from '@playwright/test'
import { mkdtemp, rm } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startWebApp, type WebApp } from '../e2e/fixtures'
import { buildScaleLibrary } from '../helpers/library-scale'
import { median } from '../helpers/numbers'

const RUNS = Number(process.argv[2] ?? 5)
const BASES = 10
const OVERLAYS_PER_BASE = Number(process.argv[3] ?? 100)
const LIBRARY_ROW = '.n-data-table-tbody .n-data-table-tr'
const GRAPH_NODE = 'svg.graph g.node'

function load(): string {
  return readFileSync('/proc/loadavg', 'utf8').trim()
}

/** Milliseconds from navigating a fresh page to `hash` until `selector` is on screen. */
async function timeToShow(browser: Browser, app: WebApp, hash: string, selector: string) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
  const start = performance.now()
  await page.goto(`${app.url}${hash}`)
  await page
    .locator(selector)
    .first()
    .waitFor({ state: 'visible', timeout: 600_000 })
    .catch(async (error: unknown) => {
      await page.screenshot({ path: '/tmp/library-1000-failed.png' })
      throw error
    })
  await nextPaint(page)
  return { page, elapsed: performance.now() - start }
}

/** Resolve once the page has painted a frame (its main thread free again). */
async function nextPaint(page: Page): Promise<void> {
  await page.evaluate(
    () => new Promise<void>((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0))),
  )
}

/** Milliseconds from a click on the Library's Refresh to the list read again and drawn. */
async function timeRefresh(page: Page): Promise<number> {
  const button = page.getByRole('button', { name: 'Refresh the library' })
  await page.waitForFunction(
    () => !document.querySelector('button[aria-label="Refresh the library"].n-button--loading'),
  )
  const start = performance.now()
  await button.click()
  await page.waitForFunction(
    () => !document.querySelector('button[aria-label="Refresh the library"].n-button--loading'),
    undefined,
    { polling: 'raf', timeout: 600_000 },
  )
  await nextPaint(page)
  return performance.now() - start
}

interface Round {
  firstRows: number
  refresh: number
  chains: number
  rowsInDom: number
  nodesInDom: number
}

async function round(browser: Browser, app: WebApp, empty: boolean): Promise<Round> {
  const library = await timeToShow(
    browser,
    app,
    '#/library',
    empty ? 'text=No images yet' : LIBRARY_ROW,
  )
  const rowsInDom = await library.page.locator(LIBRARY_ROW).count()
  const refresh = await timeRefresh(library.page)
  await library.page.close()
  const chains = await timeToShow(
    browser,
    app,
    '#/chain',
    empty ? 'text=No images yet' : GRAPH_NODE,
  )
  const nodesInDom = await chains.page.locator(GRAPH_NODE).count()
  await chains.page.close()
  return { firstRows: library.elapsed, refresh, chains: chains.elapsed, rowsInDom, nodesInDom }
}

function report(label: string, full: Round[], empty: Round[], key: keyof Round): void {
  const mine = median(full.map((entry) => entry[key]))
  const peer = median(empty.map((entry) => entry[key]))
  console.log(
    `${label.padEnd(28)} ${mine.toFixed(0).padStart(6)} ms   empty library ${peer
      .toFixed(0)
      .padStart(5)} ms   ratio ${(mine / peer).toFixed(2)}×   runs ${full
      .map((entry) => entry[key].toFixed(0))
      .join(' ')}`,
  )
}

async function main(): Promise<void> {
  const folder = await mkdtemp(join(tmpdir(), 'addcow-library-1000-'))
  const servers: { stop: () => Promise<void> }[] = []
  let browser: Browser | null = null
  try {
    const bin = process.env.ADDCOW_BENCH_BIN
    const full = await startWebApp(bin)
    servers.push(full)
    const empty = await startWebApp(bin)
    servers.push(empty)
    const started = performance.now()
    const made = await buildScaleLibrary(folder, full.app.dataDir, BASES, OVERLAYS_PER_BASE)
    const count = made.bases.length + made.overlays.length
    console.log(
      `library: ${count} images (${BASES} bases, ${OVERLAYS_PER_BASE} overlays each), made in ${(
        (performance.now() - started) /
        1000
      ).toFixed(1)} s; load before: ${load()}`,
    )
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
    })
    // The first visit of each after the server started, shown alone and not in the medians: the
    // server reads every image (the Library answers with what it read in 300 ms, the rest
    // pending), and the browser's caches warm up.
    const cold = await round(browser, full.app, false)
    const coldEmpty = await round(browser, empty.app, true)
    console.log(
      `first visit after start: first rows ${cold.firstRows.toFixed(0)} ms (empty library ${coldEmpty.firstRows.toFixed(0)} ms), Refresh ${cold.refresh.toFixed(0)} ms, Chains ${cold.chains.toFixed(0)} ms`,
    )
    const rounds: { full: Round[]; empty: Round[] } = { full: [], empty: [] }
    for (let run = 0; run < RUNS; run++) {
      const fullFirst = run % 2 === 0
      for (const which of fullFirst ? ['full', 'empty'] : ['empty', 'full']) {
        const isFull = which === 'full'
        rounds[isFull ? 'full' : 'empty'].push(
          await round(browser, isFull ? full.app : empty.app, !isFull),
        )
      }
    }
    console.log(`runs: ${RUNS}, rounds alternating which server goes first; load: ${load()}`)
    report('Library: first rows', rounds.full, rounds.empty, 'firstRows')
    report('Library: Refresh', rounds.full, rounds.empty, 'refresh')
    report('Chains: graph drawn', rounds.full, rounds.empty, 'chains')
    const last = rounds.full[rounds.full.length - 1]!
    console.log(
      `in the DOM with ${count} images: ${last.rowsInDom} library rows, ${last.nodesInDom} graph nodes`,
    )
    console.log('targets: first rows < 1000 ms, Refresh < 500 ms, Chains < 1000 ms')
  } finally {
    await browser?.close()
    for (const server of servers) await server.stop()
    await rm(folder, { recursive: true, force: true })
  }
}

await main()
