// Playwright drives Debian's Chromium (never a downloaded browser) against real
// `tidings serve` processes that the tests start themselves (see support/hub.js).

import { defineConfig } from '@playwright/test';

export default defineConfig({
  testDir: './tests',
  // Each test file starts its own hubs; files run in parallel, tests in a file in order.
  workers: 2,
  timeout: 45_000,
  expect: { timeout: 15_000 },
  retries: 0,
  forbidOnly: true,
  reporter: [['list']],
  outputDir: './test-results',
  use: {
    browserName: 'chromium',
    headless: true,
    viewport: { width: 1280, height: 860 },
    // A fresh browser per worker, with its own temporary profile (user-data-dir).
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
    trace: 'off',
    screenshot: 'only-on-failure',
  },
});
