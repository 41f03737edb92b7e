import { test, expect, screenshot, uniqueTopic } from '../support/fixtures.js';
import { startHub } from '../support/hub.js';
import { mintToken, publish, publisherToken } from '../support/mercure.js';
import { startProxy } from '../support/proxy.js';

/** A token that may publish everything and receive every private update, like `serve`'s. */
const fullToken = () => mintToken({ publish: ['*'], subscribe: ['*'] });

/** Opens the console and subscribes to `topics` (array), optionally with a cookie token. */
async function subscribe(page, url, topics, { token } = {}) {
  await page.goto(`${url}/console`);
  const form = page.locator('#subscribe-form');
  await form.getByLabel('Topic selectors').fill(topics.join('\n'));
  if (token) await form.getByLabel('Subscriber token').fill(token);
  await form.getByRole('button', { name: 'Subscribe', exact: true }).click();
  await expect(page.locator('#state')).toHaveText('OPEN');
}

/** A subscriber outside the browser; `close()` ends it. */
async function openSubscriber(hubUrl, topic) {
  const abort = new AbortController();
  const url = new URL(`${hubUrl}/.well-known/mercure`);
  url.searchParams.set('topic', topic);
  const response = await fetch(url, { signal: abort.signal });
  expect(response.status).toBe(200);
  const reader = response.body.getReader();
  const reading = (async () => {
    try {
      while (!(await reader.read()).done);
    } catch {
      // Aborted.
    }
  })();
  return {
    async close() {
      abort.abort();
      await reading;
    },
  };
}

const eventRows = (page) => page.locator('#events tr[data-type]');
const visibleRows = (page) => page.locator('#events tr[data-type]:not([hidden])');

test('the live console publishes and sees its own update', async ({ page, hub }) => {
  const topic = uniqueTopic('console');
  await subscribe(page, hub.url, [topic, '/demo/ping']);
  await expect(page.locator('#hub-url')).toHaveText(`${hub.url}/.well-known/mercure`);

  const form = page.locator('#publish-form');
  await form.getByLabel('Topics').fill(topic);
  await form.getByLabel('Data').fill('{"hello": "from the console"}');
  await form.getByLabel('Type').fill('greeting');
  await form.getByLabel('Publisher token').fill(publisherToken());
  await form.getByRole('button', { name: 'Publish' }).click();

  const result = page.locator('#publish-result');
  await expect(result).toHaveAttribute('data-ok', 'true');
  const id = await result.getAttribute('data-id');
  expect(id).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);

  // A type nobody listed is shown: the console has no allow-list.
  const row = page.locator(`#events tr[data-id="${id}"]`);
  await expect(row).toHaveCount(1);
  await expect(row).toBeVisible();
  await expect(row.locator('td.data')).toHaveText('{"hello": "from the console"}');
  await expect(row).toHaveAttribute('data-type', 'greeting');
  await expect(page.locator('#last-id')).toHaveText(id);

  // A publish the hub refuses says why.
  await form.getByLabel('Publisher token').fill(mintToken({ publish: ['https://e2e.tidings.test/elsewhere'] }));
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(result).toHaveAttribute('data-ok', 'false');
  await expect(result).toContainText('403 Forbidden');

  // Something to look at for the README: a few pings around our update. They are live
  // only: no id of their own, while the last event ID stays that of our update.
  await form.getByLabel('Publisher token').fill(publisherToken());
  await form.getByLabel('Data').fill('{"hello": "again", "n": 2}');
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(result).toHaveAttribute('data-ok', 'true');
  await expect.poll(() => page.locator('#events tr[data-type="ping"]').count()).toBeGreaterThanOrEqual(3);
  await expect(page.locator('#events tr[data-type="ping"] td.id').first()).toHaveText('');
  const second = await result.getAttribute('data-id');
  await expect(page.locator('#last-id')).toHaveText(second);
  await screenshot(page, 'console', { fullPage: true });
});

test('event data, types and ids are shown as text, never as markup', async ({ page, hub }) => {
  const topic = uniqueTopic('markup');
  await subscribe(page, hub.url, [topic]);

  const hostile = '<img src="x" onerror="window.injected = true"><script>window.injected = true</script>';
  const form = page.locator('#publish-form');
  await form.getByLabel('Topics').fill(topic);
  await form.getByLabel('Data').fill(hostile);
  await form.getByLabel('Type').fill('<b>bold</b>');
  await form.getByLabel('ID').fill('<i>id</i>');
  await form.getByLabel('Publisher token').fill(publisherToken());
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(page.locator('#publish-result')).toHaveAttribute('data-ok', 'true');

  const row = eventRows(page);
  await expect(row).toHaveCount(1);
  await expect(row.locator('td.data')).toHaveText(hostile);
  await expect(row).toHaveAttribute('data-type', '<b>bold</b>');
  await expect(row.locator('td.id')).toHaveText('<i>id</i>');
  await expect(page.locator('#events img, #events script, #events b, #events i')).toHaveCount(0);
  expect(await page.evaluate(() => window.injected)).toBeUndefined();
});

test('every event type is shown; the type filter narrows the view and says how many it hides', async ({ page, hub }) => {
  const topic = uniqueTopic('types');
  await subscribe(page, hub.url, [topic]);
  for (const [n, type] of [[1, undefined], [2, 'created'], [3, 'deleted'], [4, 'created']]) {
    await publish(hub.url, { topic, type, id: `types-${n}`, data: `update ${n}` });
  }
  await expect(eventRows(page)).toHaveCount(4);
  await expect(visibleRows(page)).toHaveCount(4);
  await expect(page.locator('#hidden-stat')).toBeHidden();
  await expect(page.locator('#events tr[data-id="types-1"]')).toHaveAttribute('data-type', 'message');

  const filter = page.getByLabel('Show only these types');
  await filter.fill('created');
  await expect(visibleRows(page)).toHaveCount(2);
  await expect(page.locator('#hidden-stat')).toBeVisible();
  await expect(page.locator('#hidden-count')).toHaveText('2');
  await expect(page.locator('#count')).toHaveText('4');

  // New events go through the same filter.
  await publish(hub.url, { topic, type: 'deleted', id: 'types-5', data: 'update 5' });
  await publish(hub.url, { topic, type: 'created', id: 'types-6', data: 'update 6' });
  await expect(page.locator('#count')).toHaveText('6');
  await expect(visibleRows(page)).toHaveCount(3);
  await expect(page.locator('#hidden-count')).toHaveText('3');

  // A filter that lets nothing through says so instead of showing an empty list.
  await filter.fill('nothing-has-this-type');
  await expect(visibleRows(page)).toHaveCount(0);
  await expect(page.locator('#events tr.empty')).toHaveText('6 events hidden by the type filter.');

  await filter.fill('message, deleted');
  await expect(visibleRows(page)).toHaveCount(3);
  await filter.fill('');
  await expect(visibleRows(page)).toHaveCount(6);
  await expect(page.locator('#hidden-stat')).toBeHidden();
});

test('publishing without a publisher token says it needs one and never sends the subscriber\'s cookie', async ({ page, hub }) => {
  const topic = uniqueTopic('publish-token');
  // Subscribed with a cookie whose token could publish: it must not be used for publishing.
  await subscribe(page, hub.url, [topic], { token: fullToken() });
  const posts = [];
  page.on('request', (request) => {
    if (request.method() === 'POST') posts.push(request);
  });

  const form = page.locator('#publish-form');
  await form.getByLabel('Topics').fill(topic);
  await form.getByLabel('Publisher token').fill('');
  await form.getByRole('button', { name: 'Publish' }).click();
  const result = page.locator('#publish-result');
  await expect(result).toHaveAttribute('data-ok', 'false');
  await expect(result).toContainText('Publishing needs a publisher token');
  expect(posts).toHaveLength(0);

  await form.getByLabel('Publisher token').fill('not a token');
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(result).toContainText('The publisher token is not a JWT');
  expect(posts).toHaveLength(0);

  const token = publisherToken();
  await form.getByLabel('Publisher token').fill(token);
  await form.getByRole('button', { name: 'Publish' }).click();
  await expect(result).toHaveAttribute('data-ok', 'true');
  expect(posts).toHaveLength(1);
  const headers = await posts[0].allHeaders();
  expect(headers.authorization).toBe(`Bearer ${token}`);
  expect(headers.cookie ?? '').not.toContain('mercureAuthorization');
  await expect(eventRows(page)).toHaveCount(1);
});

test('a refused subscription shows the hub\'s status and reason, and says CLOSED everywhere', async ({ page }) => {
  const hub = await startHub({ demo: false, args: ['--no-anonymous'], name: 'no-anonymous' });
  try {
    await page.goto(`${hub.url}/console`);
    await page.locator('#subscribe-form').getByRole('button', { name: 'Subscribe', exact: true }).click();
    await expect(page.locator('#state')).toHaveText('CLOSED');
    await expect(page.locator('#subscription-problem')).toContainText('The hub answered 401 Unauthorized: missing token');
    await expect(page.locator('#events tr.empty')).toHaveText('Not subscribed: the hub refused the subscription (see above).');
    await expect(page.getByRole('button', { name: 'Unsubscribe' })).toBeDisabled();

    // With a token it goes through, and the problem goes away.
    await page.locator('#subscribe-form').getByLabel('Topic selectors').fill(uniqueTopic('refused-then-allowed'));
    await page.locator('#subscribe-form').getByLabel('Subscriber token').fill(mintToken({ subscribe: ['*'] }));
    await page.locator('#subscribe-form').getByRole('button', { name: 'Subscribe', exact: true }).click();
    await expect(page.locator('#state')).toHaveText('OPEN');
    await expect(page.locator('#subscription-problem')).toHaveText('');
    await expect(page.locator('#events tr.empty')).toHaveText('Subscribed; waiting for events…');
    await expect(page.getByRole('button', { name: 'Unsubscribe' })).toBeEnabled();

    await page.getByRole('button', { name: 'Unsubscribe' }).click();
    await expect(page.locator('#state')).toHaveText('CLOSED');
    await expect(page.locator('#events tr.empty')).toHaveText('Not subscribed.');
  } finally {
    await hub.stop();
  }
});

test('pause holds events back, resume shows them in order, clear empties the list', async ({ page, hub }) => {
  const topic = uniqueTopic('pause');
  await subscribe(page, hub.url, [topic]);
  await publish(hub.url, { topic, id: 'pause-1', data: '1' });
  await expect(eventRows(page)).toHaveCount(1);

  await page.getByRole('button', { name: 'Pause' }).click();
  await expect(page.getByRole('button', { name: 'Resume' })).toHaveAttribute('aria-pressed', 'true');
  await publish(hub.url, { topic, id: 'pause-2', data: '2' });
  await publish(hub.url, { topic, id: 'pause-3', data: '3' });
  await expect(page.locator('#count')).toHaveText('3');
  await expect(page.locator('#waiting-count')).toHaveText('2');
  await expect(page.locator('#last-id')).toHaveText('pause-3');
  await expect(eventRows(page)).toHaveCount(1);

  await page.getByRole('button', { name: 'Resume' }).click();
  await expect(page.locator('#waiting-stat')).toBeHidden();
  await expect(page.locator('#events tr[data-type] td.id')).toHaveText(['pause-3', 'pause-2', 'pause-1']);

  await page.getByRole('button', { name: 'Clear' }).click();
  await expect(eventRows(page)).toHaveCount(0);
  await expect(page.locator('#count')).toHaveText('0');
  await expect(page.locator('#events tr.empty')).toHaveText('Subscribed; waiting for events…');
  await publish(hub.url, { topic, id: 'pause-4', data: '4' });
  await expect(page.locator('#events tr[data-type] td.id')).toHaveText(['pause-4']);
});

test('the active subscriptions panel: a hint without a token or with one that does not cover it', async ({ page, hub }) => {
  await page.goto(`${hub.url}/console`);
  const problem = page.locator('#subscriptions-problem');
  await expect(problem).toContainText('needs a subscriber token whose mercure.subscribe covers /.well-known/mercure/subscriptions');
  await expect(page.locator('#subscriptions-panel')).toHaveAttribute('data-state', 'hint');

  await page.locator('#subscribe-form').getByLabel('Subscriber token').fill(mintToken({ subscribe: ['https://e2e.tidings.test/only-this'] }));
  await page.getByRole('button', { name: 'Refresh' }).click();
  await expect(problem).toContainText('The hub refused to list the subscriptions (403 Forbidden: not allowed');
  await expect(problem).toContainText('must cover /.well-known/mercure/subscriptions');
  await expect(page.locator('#subscriptions-panel')).toHaveAttribute('data-state', 'refused');
});

test('the active subscriptions panel lists them, refreshed by subscription events and by its button', async ({ page, hub }) => {
  const token = fullToken();
  const watched = uniqueTopic('watched');
  // `*` with a token that may receive every private update: subscription events arrive.
  await subscribe(page, hub.url, ['*'], { token });
  const panel = page.locator('#subscriptions');
  await expect(panel.locator('tr[data-topic="*"]')).not.toHaveCount(0);
  await expect(page.locator('#subscriptions-panel')).toHaveAttribute('data-state', 'ok');

  const other = await openSubscriber(hub.url, watched);
  await expect(panel.locator(`tr[data-topic="${watched}"]`)).toHaveCount(1);
  await expect(page.locator('#events tr[data-type="message"] td.data', { hasText: '"Subscription"' })).not.toHaveCount(0);
  await other.close();
  await expect(panel.locator(`tr[data-topic="${watched}"]`)).toHaveCount(0);

  // Subscribed to one topic only, no subscription event comes: Refresh reads the list.
  const quiet = uniqueTopic('quiet');
  const alone = uniqueTopic('alone');
  await subscribe(page, hub.url, [alone], { token });
  // The list read when the console subscribed, before the next subscriber came.
  await expect(panel.locator(`tr[data-topic="${alone}"]`)).toHaveCount(1);
  const late = await openSubscriber(hub.url, quiet);
  try {
    await expect(panel.locator(`tr[data-topic="${quiet}"]`)).toHaveCount(0);
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect(panel.locator(`tr[data-topic="${quiet}"]`)).toHaveCount(1);
  } finally {
    await late.close();
  }
});

test('the active subscriptions panel says when the hub does not serve the API', async ({ page }) => {
  const hub = await startHub({ demo: false, args: ['--no-subscriptions'], name: 'no-subscriptions' });
  try {
    await page.goto(`${hub.url}/console`);
    await page.locator('#subscribe-form').getByLabel('Subscriber token').fill(fullToken());
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect(page.locator('#subscriptions-problem')).toHaveText('This hub does not serve the subscriptions API (it runs with --no-subscriptions).');
  } finally {
    await hub.stop();
  }
});

test('a lost connection says so and resumes from the last event ID', async ({ page, hub }) => {
  const proxy = await startProxy(hub.port);
  try {
    const topic = uniqueTopic('console-resume');
    await subscribe(page, proxy.url, [topic]);
    await publish(hub.url, { topic, id: 'before-cut', data: 'before' });
    await expect(eventRows(page)).toHaveCount(1);

    await proxy.cut();
    await expect(page.locator('#state')).toHaveText('CONNECTING');
    await expect(page.locator('#subscription-problem')).toContainText('Connection lost');
    await publish(hub.url, { topic, id: 'during-cut', data: 'during' });
    await proxy.restart();

    await expect(page.locator('#state')).toHaveText('OPEN');
    await expect(page.locator('#events tr[data-type] td.id')).toHaveText(['during-cut', 'before-cut']);
    await expect(page.locator('#subscription-problem')).toHaveText('');
    const subscribes = proxy.requests.filter((head) => head.startsWith('get /.well-known/mercure?'));
    expect(/\r\nlast-event-id: (.*)/.exec(subscribes.at(-1))?.[1]).toBe('before-cut');
  } finally {
    await proxy.stop();
  }
});

test('the console\'s event-stream reader parses as the HTML standard says', async ({ page, hub }) => {
  await page.goto(`${hub.url}/console`);
  const parse = (chunks) => page.evaluate(async (chunks) => {
    const { EventParser } = await import('./assets/sse.js');
    const events = [];
    const retries = [];
    const parser = new EventParser({ dispatch: (event) => events.push(event), onRetry: (ms) => retries.push(ms) });
    chunks.forEach((chunk, i) => parser.push(chunk, i === chunks.length - 1));
    return { events, retries, lastEventId: parser.lastEventId };
  }, chunks);

  // CRLF split between two chunks, CR alone, LF alone: three line ends, one event each.
  expect((await parse(['data: a\r', '\n\r\n', 'data: b\r\rdata: c\n\n', ''])).events).toEqual([
    { type: 'message', data: 'a', id: null, lastEventId: '' },
    { type: 'message', data: 'b', id: null, lastEventId: '' },
    { type: 'message', data: 'c', id: null, lastEventId: '' },
  ]);
  // Fields: several data lines, a type, an id that later events keep, comments, a field
  // without a colon, one space after the colon removed and only one.
  const fields = await parse([
    ': a comment\nevent: created\ndata:one\ndata:  two\nid: 7\n\n',
    'data\n\ndata: after\n\n',
    'id\ndata: reset\n\n',
    '',
  ]);
  expect(fields.events).toEqual([
    { type: 'created', data: 'one\n two', id: '7', lastEventId: '7' },
    { type: 'message', data: '', id: null, lastEventId: '7' },
    { type: 'message', data: 'after', id: null, lastEventId: '7' },
    { type: 'message', data: 'reset', id: '', lastEventId: '' },
  ]);
  // retry takes digits only; an id alone (no data) still sets the last event ID; an event
  // the stream ends before its blank line is dropped.
  const rest = await parse(['retry: 1500\nretry: 2s\n\nid: 9\n\ndata: cut off', '']);
  expect(rest.retries).toEqual([1500]);
  expect(rest.events).toEqual([]);
  expect(rest.lastEventId).toBe('9');
});
