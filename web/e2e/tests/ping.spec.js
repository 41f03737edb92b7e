import { test, expect, screenshot } from '../support/fixtures.js';
import { startHub } from '../support/hub.js';

test('the ping page lists the demo pings, with valid JSON times, and the random messages', async ({ page, hub }) => {
  await page.goto(`${hub.url}/`);
  await expect(page.locator('#state')).toHaveText('OPEN');

  const pings = page.locator('#events tr[data-kind="ping"] td.data');
  const messages = page.locator('#events tr[data-kind="message"] td.data');
  await expect.poll(() => pings.count()).toBeGreaterThanOrEqual(3);
  // Messages come every 1 to 10 s: one is due within 10 s of the previous.
  await expect.poll(() => messages.count(), { timeout: 15_000 }).toBeGreaterThanOrEqual(1);

  const pingData = await pings.allTextContents();
  const now = Date.now();
  for (const data of pingData) {
    const json = JSON.parse(data);
    expect(Object.keys(json)).toEqual(['time']);
    // ISO 8601 in UTC, as the demo publisher sends it.
    expect(json.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    const sent = Date.parse(json.time);
    expect(Number.isNaN(sent)).toBe(false);
    expect(Math.abs(now - sent)).toBeLessThan(60_000);
  }
  // A ping a second: consecutive pings are about one second apart.
  const times = pingData.map((data) => Date.parse(JSON.parse(data).time)).reverse();
  for (let i = 1; i < times.length; i += 1) {
    expect(times[i] - times[i - 1]).toBeGreaterThan(500);
    expect(times[i] - times[i - 1]).toBeLessThan(2_000);
  }
  for (const text of await messages.allTextContents()) {
    expect(text).toMatch(/^This is a message at time \d{4}-\d{2}-\d{2}T/);
  }
  await expect(page.locator('#ping-count')).not.toHaveText('0');
  // The demo is live only: its events carry no id, and the page says so.
  await expect(page.getByText('live only, never stored in history')).toBeVisible();
  // A fuller page for the README's picture.
  await expect.poll(() => pings.count()).toBeGreaterThanOrEqual(6);
  await screenshot(page, 'ping');
});

test('with --no-demo nothing is published and the ping page says the demo may be off', async ({ page }) => {
  const hub = await startHub({ demo: false, name: 'no-demo' });
  try {
    await page.goto(`${hub.url}/`);
    await expect(page.locator('#state')).toHaveText('OPEN');
    // The page gives up waiting after 5 s of silence.
    await expect(page.locator('#idle-hint')).toBeVisible({ timeout: 8_000 });
    await expect(page.locator('#events tr[data-kind]')).toHaveCount(0);
  } finally {
    await hub.stop();
  }
});
