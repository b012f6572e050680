import { defineConfig } from '@playwright/test'

// End-to-end tests: the browser mode (`addcow web`) driven in Debian's Chromium, and the
// Electron shell through Playwright's _electron when an Electron binary is installed. Each
// worker starts its own server with its own data folder (tests/e2e/fixtures.ts).
export default defineConfig({
  testDir: 'tests/e2e',
  outputDir: 'test-results',
  fullyParallel: false,
  workers: 1,
  retries: 0,
  timeout: 60_000,
  expect: { timeout: 10_000 },
  reporter: [['list']],
  use: {
    browserName: 'chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    trace: 'retain-on-failure',
    // A click whose target never becomes clickable fails in a minute with the reason, instead
    // of waiting out the test's own timeout (up to 10 min for the long tests).
    actionTimeout: 60_000,
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
  },
})
