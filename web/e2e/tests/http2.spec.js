// What HTTP/2 buys a page: browsers open at most six HTTP/1.1 connections per host, and an
// EventSource holds one for as long as it is open, so the seventh waits. Over HTTP/2 (TLS,
// ALPN h2) every EventSource is a stream of one connection. Both hubs here serve HTTPS with
// the self-signed certificate of `tidings serve --tls-self-signed`, which this Chromium is
// told to trust by its public key (--ignore-certificate-errors-spki-list).

import { test, expect, chromium } from '@playwright/test';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import config from '../playwright.config.js';
import { startHub, requestTrusting } from '../support/hub.js';
import { publisherToken } from '../support/mercure.js';
import { uniqueTopic } from '../support/fixtures.js';

const STREAMS = 10;

/** Chromium's pin of a certificate: base64 SHA-256 of its SubjectPublicKeyInfo. */
function spkiPin(certFile) {
  const spki = new X509Certificate(readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** Publishes from node, trusting the hub's certificate (the page may have no connection left). */
async function publish(hub, topic, data) {
  const body = new URLSearchParams({ topic, data }).toString();
  const { status, text } = await requestTrusting(`${hub.url}/.well-known/mercure`, hub.certFile, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${publisherToken()}`,
      'Content-Type': 'application/x-www-form-urlencoded',
      'Content-Length': Buffer.byteLength(body),
    },
    body,
  });
  expect(status, text).toBe(200);
}

/**
 * A Chromium that trusts `hub`'s certificate, on a page of the hub; the page opens
 * STREAMS EventSources to `topic` and records what each one sees.
 */
async function pageWithStreams(hub, topic) {
  const { launchOptions } = config.use;
  const browser = await chromium.launch({
    ...launchOptions,
    args: [...launchOptions.args, `--ignore-certificate-errors-spki-list=${spkiPin(hub.certFile)}`],
  });
  const page = await browser.newPage();
  // A plain text page of the hub: the same origin as the streams, no script of its own.
  const response = await page.goto(`${hub.url}/healthz`);
  expect(response.status()).toBe(200);
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  await page.evaluate(({ topic, count }) => {
    const url = new URL('/.well-known/mercure', document.baseURI);
    url.searchParams.set('topic', topic);
    window.streams = Array.from({ length: count }, () => {
      const seen = { opened: false, messages: [], source: new EventSource(url) };
      seen.source.onopen = () => { seen.opened = true; };
      seen.source.onmessage = (event) => seen.messages.push(event.data);
      return seen;
    });
  }, { topic, count: STREAMS });
  const state = () => page.evaluate(() => window.streams.map((s) => ({
    readyState: s.source.readyState,
    opened: s.opened,
    messages: s.messages,
  })));
  return { browser, protocol, state };
}

const opened = async (state) => (await state()).filter((s) => s.opened).length;

test.describe.configure({ mode: 'serial' });

test('over HTTP/2, ten EventSources on one page are all open and all receive', async () => {
  const hub = await startHub({ name: 'h2', demo: false, tls: 'h2' });
  const topic = uniqueTopic('h2');
  const { browser, protocol, state } = await pageWithStreams(hub, topic);
  try {
    expect(protocol).toBe('h2');
    await expect.poll(() => opened(state)).toBe(STREAMS);
    await publish(hub, topic, 'to every stream');
    await expect.poll(state).toEqual(Array.from({ length: STREAMS }, () => ({
      readyState: 1,
      opened: true,
      messages: ['to every stream'],
    })));
  } finally {
    await browser.close();
    await hub.stop();
  }
});

test('over HTTP/1.1, the same page gets six streams and the seventh waits', async () => {
  const hub = await startHub({ name: 'http1', demo: false, tls: 'http1' });
  const topic = uniqueTopic('http1');
  const { browser, protocol, state } = await pageWithStreams(hub, topic);
  try {
    expect(protocol).toBe('http/1.1');
    await expect.poll(() => opened(state)).toBe(6);
    await publish(hub, topic, 'to the open streams');
    await expect.poll(async () => (await state()).filter((s) => s.messages.length > 0).length).toBe(6);
    // The update has reached every open stream; the others still wait for a connection
    // of their own, which the browser will not open.
    const streams = await state();
    expect(streams.filter((s) => s.opened).map((s) => s.messages)).toEqual(Array(6).fill(['to the open streams']));
    expect(streams.filter((s) => !s.opened)).toEqual(Array.from({ length: STREAMS - 6 }, () => ({
      readyState: 0,
      opened: false,
      messages: [],
    })));
  } finally {
    await browser.close();
    await hub.stop();
  }
});
