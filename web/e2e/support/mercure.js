// Talks to the hub as a publisher would: mints Mercure JWTs (HS256, node crypto) and publishes.

import { createHmac } from 'node:crypto';
import { JWT_KEY } from './hub.js';

const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A JWT with `mercure: { publish, subscribe }` claims, signed with the test hubs' key. */
export function mintToken({ publish, subscribe, payload, ttlSeconds = 3600 } = {}, key = JWT_KEY) {
  const mercure = {};
  if (publish) mercure.publish = publish;
  if (subscribe) mercure.subscribe = subscribe;
  if (payload !== undefined) mercure.payload = payload;
  const claims = { mercure, exp: Math.floor(Date.now() / 1000) + ttlSeconds };
  const input = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const signature = createHmac('sha256', key).update(input).digest('base64url');
  return `${input}.${signature}`;
}

/** A token that may publish on every topic. */
export const publisherToken = () => mintToken({ publish: ['*'] });

/**
 * Publishes over HTTP like any Mercure publisher. `fields`: topic (string or
 * array), data, type, id, private (boolean), retry. Returns the update's id.
 */
export async function publish(hubUrl, fields, token = publisherToken()) {
  const body = new URLSearchParams();
  for (const topic of [].concat(fields.topic)) body.append('topic', topic);
  if (fields.data !== undefined) body.set('data', fields.data);
  if (fields.type) body.set('type', fields.type);
  if (fields.id) body.set('id', fields.id);
  if (fields.retry !== undefined) body.set('retry', String(fields.retry));
  if (fields.private) body.set('private', 'on');
  const response = await fetch(`${hubUrl}/.well-known/mercure`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`publish answered ${response.status}: ${text}`);
  return text.trim();
}
