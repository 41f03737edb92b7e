import { test, expect, uniqueTopic } from '../support/fixtures.js';
import { startHub, freePort } from '../support/hub.js';
import { mintToken, publish } from '../support/mercure.js';
import http from 'node:http';

/** A second origin: a tiny server whose page subscribes to `hubUrl` with credentials. */
async function startOrigin() {
  const port = await freePort();
  const server = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>another origin</title><h1>another origin</h1>');
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** Subscribes from the page with `withCredentials: true`; resolves on open or failure. */
function subscribeWithCredentials(page, hubUrl, topic) {
  return page.evaluate(([hubUrl, topic]) => new Promise((resolve) => {
    const url = new URL('/.well-known/mercure', hubUrl);
    url.searchParams.set('topic', topic);
    window.seen = [];
    const source = new EventSource(url, { withCredentials: true });
    window.source = source;
    source.onmessage = (event) => window.seen.push(event.data);
    source.onopen = () => resolve({ opened: true, readyState: source.readyState });
    source.onerror = () => resolve({ opened: false, readyState: source.readyState });
  }), [hubUrl, topic]);
}

test('a page of another origin receives events with credentials only when its origin is allowed', async ({ browser }) => {
  const allowed = await startOrigin();
  const refused = await startOrigin();
  const hub = await startHub({ corsOrigins: [allowed.url], name: 'cors' });
  const context = await browser.newContext();
  try {
    const topic = uniqueTopic('cors');
    // The subscriber's token travels as a cookie of the hub's host: only a credentialed
    // request carries it, so receiving the private update proves credentials went along.
    await context.addCookies([{
      name: 'mercureAuthorization',
      value: mintToken({ subscribe: [topic] }),
      domain: '127.0.0.1',
      path: '/.well-known/mercure',
    }]);
    const allowedPage = await context.newPage();
    const refusedPage = await context.newPage();
    const responses = [];
    for (const page of [allowedPage, refusedPage]) {
      page.on('response', (response) => {
        if (response.url().startsWith(`${hub.url}/.well-known/mercure`)) responses.push(response);
      });
    }
    await allowedPage.goto(`${allowed.url}/`);
    await refusedPage.goto(`${refused.url}/`);

    expect(await subscribeWithCredentials(allowedPage, hub.url, topic)).toEqual({ opened: true, readyState: 1 });
    // Chromium fails a credentialed cross-origin stream the hub did not allow for good.
    expect(await subscribeWithCredentials(refusedPage, hub.url, topic)).toEqual({ opened: false, readyState: 2 });

    await publish(hub.url, { topic, data: 'private for the allowed origin', private: true });
    await publish(hub.url, { topic, data: 'public' });
    await expect.poll(() => allowedPage.evaluate(() => window.seen))
      .toEqual(['private for the allowed origin', 'public']);
    expect(await refusedPage.evaluate(() => window.seen)).toEqual([]);
    expect(await refusedPage.evaluate(() => window.source.readyState)).toBe(2);

    // What the hub answered each origin.
    const byOrigin = new Map();
    for (const response of responses) {
      byOrigin.set(await response.request().headerValue('origin'), await response.allHeaders());
    }
    const allowedHeaders = byOrigin.get(allowed.url);
    expect(allowedHeaders['access-control-allow-origin']).toBe(allowed.url);
    expect(allowedHeaders['access-control-allow-credentials']).toBe('true');
    const refusedHeaders = byOrigin.get(refused.url);
    if (refusedHeaders) expect(refusedHeaders['access-control-allow-origin']).toBeUndefined();
  } finally {
    await context.close();
    await hub.stop();
    await allowed.stop();
    await refused.stop();
  }
});
