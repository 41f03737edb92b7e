// The `test` every spec uses: Playwright's, plus a real hub per worker.

import { test as base, expect } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startHub } from './hub.js';

const screenshots = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'screenshots');

export const test = base.extend({
  // One `tidings serve` (demo publisher on) per worker process, shared by its tests;
  // each test uses its own topics so they do not see each other's updates.
  hub: [
    async ({}, use, workerInfo) => {
      const hub = await startHub({ name: `worker${workerInfo.workerIndex}` });
      await use(hub);
      await hub.stop();
    },
    { scope: 'worker' },
  ],
});

export { expect };

/** Saves a screenshot of the page as screenshots/<name>.png (`options` as Playwright's). */
export async function screenshot(page, name, options = {}) {
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: path.join(screenshots, `${name}.png`), ...options });
}

/** A topic no other test uses. */
export function uniqueTopic(label) {
  return `https://e2e.tidings.test/${label}/${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}
