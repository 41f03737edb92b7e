import { test, expect, uniqueTopic } from '../support/fixtures.js';
import { publish } from '../support/mercure.js';

test('a custom event type reaches addEventListener and not onmessage', async ({ page, hub }) => {
  const topic = uniqueTopic('custom-type');
  await page.goto(`${hub.url}/console`);
  await page.evaluate((topic) => new Promise((resolve, reject) => {
    const url = new URL('.well-known/mercure', document.baseURI);
    url.searchParams.set('topic', topic);
    window.seen = { message: [], greeting: [] };
    const source = new EventSource(url);
    source.onmessage = (event) => window.seen.message.push(event.data);
    source.addEventListener('greeting', (event) => window.seen.greeting.push(event.data));
    source.onopen = () => resolve();
    source.onerror = () => reject(new Error('the subscription failed'));
  }), topic);

  await publish(hub.url, { topic, type: 'greeting', data: 'hello' });
  // Updates of one topic arrive in order: once the plain one is in, the typed one was handled.
  await publish(hub.url, { topic, data: 'plain' });
  await expect.poll(() => page.evaluate(() => window.seen.message)).toEqual(['plain']);
  expect(await page.evaluate(() => window.seen.greeting)).toEqual(['hello']);
});
