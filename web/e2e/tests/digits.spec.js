import { test, expect, screenshot } from '../support/fixtures.js';

/** Counts the requests a page makes for the digits stream. */
function countDigitsRequests(page) {
  const seen = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname.endsWith('/demo/digits')) seen.push(request);
  });
  return seen;
}

const steps = (page) => page.locator('#steps tr[data-event]').evaluateAll((rows) =>
  rows.map((row) => ({
    event: row.dataset.event,
    data: row.querySelector('td.data').textContent,
    readyState: Number(row.dataset.readyState),
  })));

test('digits shows 1, 2, 3, bye, the reconnect, and Stop leaves it CLOSED for good', async ({ page, hub }) => {
  const requests = countDigitsRequests(page);
  await page.goto(`${hub.url}/digits`);
  await page.getByRole('button', { name: 'Start' }).click();

  const expected = [
    { event: 'open', data: '', readyState: 1 },
    { event: 'message', data: '1', readyState: 1 },
    { event: 'message', data: '2', readyState: 1 },
    { event: 'message', data: '3', readyState: 1 },
    { event: 'bye', data: 'bye-bye', readyState: 1 },
    // The server ended the response: the browser says so and will reconnect by itself.
    { event: 'error', data: '', readyState: 0 },
    { event: 'open', data: '', readyState: 1 },
  ];
  await expect.poll(() => steps(page).then((s) => s.slice(0, expected.length)), { timeout: 12_000 })
    .toEqual(expected);
  expect(requests.length).toBe(2);
  expect(await requests[1].headerValue('last-event-id')).toBe('3');
  await expect(page.locator('#opens')).toHaveText('2');

  await page.getByRole('button', { name: 'Stop' }).click();
  const afterStop = await steps(page);
  expect(afterStop.at(-1)).toEqual({ event: 'close', data: '', readyState: 2 });
  await expect(page.locator('#state')).toHaveText('CLOSED');
  await screenshot(page, 'digits');

  // One whole digits cycle (3 s) plus the retry time (1 s) and some: a live EventSource
  // would have asked again by now.
  await page.waitForTimeout(5_000);
  expect(requests.length).toBe(2);
  expect(await steps(page)).toEqual(afterStop);
});

test('a stream answered with 204 No Content is not retried', async ({ page, hub }) => {
  const requests = countDigitsRequests(page);
  await page.goto(`${hub.url}/digits`);
  await page.getByLabel('answer 204 No Content').check();
  await page.getByRole('button', { name: 'Start' }).click();

  await expect.poll(() => steps(page)).toEqual([{ event: 'error', data: '', readyState: 2 }]);
  const response = await requests[0].response();
  expect(response.status()).toBe(204);
  // Longer than Chromium's default reconnection time (3 s): no second request.
  await page.waitForTimeout(4_000);
  expect(requests.length).toBe(1);
  await expect(page.locator('#state')).toHaveText('CLOSED');
});
