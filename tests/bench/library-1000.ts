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
// another build of the CLI to measure, and ADDCOW_BENCH_BEFORE a build to measure beside it in
// the same run (a copy of main's out/ with its native addon at ../main/engine/native/build/
// Release/ beside it): each figure is then printed for both, and the ratio after / before.
import { chromium, type Browser, type Page } from '@playwright/test'
import { cp, mkdtemp, rm } from 'node:fs/promises'
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
/** Clock ticks a second of /proc/PID/stat's times (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100

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
  /** CPU milliseconds the server spent on the round (load distorts it far less than time). */
  serverCpu: number
  firstRows: number
  refresh: number
  chains: number
  rowsInDom: number
  nodesInDom: number
}

/** CPU milliseconds (user and system) process `pid` has used. */
function cpuMs(pid: number): number {
  // Fields 14 and 15 of /proc/PID/stat, after the command name in parentheses.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
}

async function round(browser: Browser, app: WebApp, empty: boolean): Promise<Round> {
  const cpuAtStart = cpuMs(app.pid)
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
  return {
    serverCpu: cpuMs(app.pid) - cpuAtStart,
    firstRows: library.elapsed,
    refresh,
    chains: chains.elapsed,
    rowsInDom,
    nodesInDom,
  }
}

/** The rounds of one build: on the full library and on the empty one. */
interface Build {
  label: string
  full: WebApp
  empty: WebApp
  rounds: { full: Round[]; empty: Round[] }
}

function report(label: string, build: Build, key: keyof Round): void {
  const mine = median(build.rounds.full.map((entry) => entry[key]))
  const peer = median(build.rounds.empty.map((entry) => entry[key]))
  console.log(
    `${build.label.padEnd(7)} ${label.padEnd(22)} ${mine.toFixed(0).padStart(6)} ms   empty library ${peer
      .toFixed(0)
      .padStart(5)} ms   ratio ${(mine / peer).toFixed(2)}×   runs ${build.rounds.full
      .map((entry) => entry[key].toFixed(0))
      .join(' ')}`,
  )
}

/** The after build's median of `key` over the before build's (below 1: faster). */
function speedup(before: Build, after: Build, key: keyof Round): string {
  const ratio =
    median(after.rounds.full.map((entry) => entry[key])) /
    median(before.rounds.full.map((entry) => entry[key]))
  return `${key} ${ratio.toFixed(2)}×`
}

/** Start a build's two servers (the full library's data folder is a copy of `dataDir`). */
async function startBuild(
  label: string,
  bin: string | undefined,
  servers: { stop: () => Promise<void> }[],
): Promise<Build> {
  const full = await startWebApp(bin)
  servers.push(full)
  const empty = await startWebApp(bin)
  servers.push(empty)
  return { label, full: full.app, empty: empty.app, rounds: { full: [], empty: [] } }
}

async function main(): Promise<void> {
  const folder = await mkdtemp(join(tmpdir(), 'addcow-library-1000-'))
  const servers: { stop: () => Promise<void> }[] = []
  let browser: Browser | null = null
  try {
    // ADDCOW_BENCH_BEFORE names main's build (a copy of its out/): then both are measured in
    // the same run, their rounds alternating.
    const before = process.env.ADDCOW_BENCH_BEFORE
    const builds = [await startBuild('after', process.env.ADDCOW_BENCH_BIN, servers)]
    if (before) builds.unshift(await startBuild('before', before, servers))
    const started = performance.now()
    const made = await buildScaleLibrary(folder, builds[0]!.full.dataDir, BASES, OVERLAYS_PER_BASE)
    for (const build of builds.slice(1)) {
      await cp(builds[0]!.full.dataDir, build.full.dataDir, { recursive: true })
    }
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
    for (const build of builds) {
      const cold = await round(browser, build.full, false)
      const coldEmpty = await round(browser, build.empty, true)
      console.log(
        `${build.label}: first visit after start: first rows ${cold.firstRows.toFixed(0)} ms (empty library ${coldEmpty.firstRows.toFixed(0)} ms), Refresh ${cold.refresh.toFixed(0)} ms, Chains ${cold.chains.toFixed(0)} ms`,
      )
    }
    const cpuBefore = process.cpuUsage()
    for (let run = 0; run < RUNS; run++) {
      // Every round measures each build on both libraries, in an order that turns each run.
      const order = builds.flatMap((build) => [
        { build, isFull: true },
        { build, isFull: false },
      ])
      for (let turn = 0; turn < order.length; turn++) {
        const { build, isFull } = order[(turn + run) % order.length]!
        build.rounds[isFull ? 'full' : 'empty'].push(
          await round(browser, isFull ? build.full : build.empty, !isFull),
        )
      }
    }
    const cpu = process.cpuUsage(cpuBefore)
    console.log(
      `runs: ${RUNS}, the order of builds and libraries turning each run; load: ${load()}; the bench's own CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms`,
    )
    for (const build of builds) {
      report('Library: first rows', build, 'firstRows')
      report('Library: Refresh', build, 'refresh')
      report('Chains: graph drawn', build, 'chains')
      report('server CPU a round', build, 'serverCpu')
      const last = build.rounds.full[build.rounds.full.length - 1]!
      console.log(
        `${build.label.padEnd(7)} in the DOM with ${count} images: ${last.rowsInDom} library rows, ${last.nodesInDom} graph nodes`,
      )
    }
    if (builds.length === 2) {
      const [was, now] = builds as [Build, Build]
      const keys = ['firstRows', 'refresh', 'chains', 'serverCpu'] as const
      console.log(`after / before: ${keys.map((key) => speedup(was, now, key)).join(', ')}`)
    }
    console.log('targets: first rows < 1000 ms, Refresh < 500 ms, Chains < 1000 ms')
  } finally {
    await browser?.close()
    for (const server of servers) await server.stop()
    await rm(folder, { recursive: true, force: true })
  }
}

await main()
