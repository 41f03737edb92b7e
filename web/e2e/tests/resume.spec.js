import { test, expect, uniqueTopic } from '../support/fixtures.js';
import { publish } from '../support/mercure.js';
import { startProxy } from '../support/proxy.js';

test('a cut stream resumes with Last-Event-ID and every update arrives exactly once, in order', async ({ page, hub }) => {
  test.setTimeout(60_000);
  const proxy = await startProxy(hub.port);
  try {
    const topic = uniqueTopic('resume');
    // The page and its stream both go through the proxy: one origin, as in production.
    await page.goto(`${proxy.url}/console`);
    await page.evaluate((topic) => new Promise((resolve) => {
      const url = new URL('.well-known/mercure', document.baseURI);
      url.searchParams.set('topic', topic);
      window.resume = { data: [], ids: [], opens: 0, errors: 0 };
      const source = new EventSource(url);
      source.onmessage = (event) => {
        window.resume.data.push(event.data);
        window.resume.ids.push(event.lastEventId);
      };
      source.onopen = () => {
        window.resume.opens += 1;
        resolve();
      };
      source.onerror = () => { window.resume.errors += 1; };
    }), topic);
    const state = () => page.evaluate(() => window.resume);

    // Publish without pause, before, during and after the cut.
    const published = [];
    let stop = false;
    const publisher = (async () => {
      for (let n = 1; !stop; n += 1) {
        published.push(await publish(hub.url, { topic, id: `resume-${n}`, data: String(n) }));
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();

    await expect.poll(async () => (await state()).data.length).toBeGreaterThanOrEqual(10);
    await proxy.cut();
    const cutAfter = published.length;
    // Keep the way closed a moment while updates pile up in the hub's history.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await proxy.restart();

    await expect.poll(async () => (await state()).opens, { timeout: 15_000 }).toBe(2);
    // Let live updates flow after the reconnect too, then stop publishing.
    const reconnectedAt = published.length;
    await expect.poll(() => published.length).toBeGreaterThanOrEqual(reconnectedAt + 15);
    stop = true;
    await publisher;

    const expected = published.map((_, i) => String(i + 1));
    await expect.poll(async () => (await state()).data.length).toBeGreaterThanOrEqual(expected.length);
    const { data, ids, errors } = await state();
    expect(data).toEqual(expected);
    expect(ids).toEqual(published);
    expect(errors).toBeGreaterThanOrEqual(1);
    expect(published.length).toBeGreaterThan(cutAfter + 15);

    // The browser asked to resume after the last update it had received.
    const subscribes = proxy.requests.filter((head) => head.startsWith('get /.well-known/mercure?'));
    expect(subscribes).toHaveLength(2);
    const resumedFrom = /\r\nlast-event-id: (.*)/.exec(subscribes[1])?.[1];
    expect(resumedFrom).toMatch(/^resume-\d+$/);
    const lastBeforeCut = Number(resumedFrom.slice('resume-'.length));
    expect(lastBeforeCut).toBeGreaterThanOrEqual(10);
    expect(lastBeforeCut).toBeLessThan(published.length);
  } finally {
    await proxy.stop();
  }
});
