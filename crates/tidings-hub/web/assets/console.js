// The live console: subscribe to topic selectors and publish updates on this hub.

import { el, clockTime, hubUrl, showState, prependRow } from './dom.js';

const hub = hubUrl();
const COOKIE = 'mercureAuthorization';
// A JWS in compact form: three base64url parts; anything else would break the cookie.
const TOKEN_SHAPE = /^[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*$/;

const subscribeForm = document.getElementById('subscribe-form');
const publishForm = document.getElementById('publish-form');
const unsubscribeButton = document.getElementById('unsubscribe');
const badge = document.getElementById('state');
const rows = document.getElementById('events');
const countOut = document.getElementById('count');
const lastIdOut = document.getElementById('last-id');
const urlOut = document.getElementById('subscription-url');
const problemOut = document.getElementById('subscription-problem');
const publishResult = document.getElementById('publish-result');

document.getElementById('hub-url').textContent = hub.href;

// Topics may be given in the page's address (console?topic=a&topic=b), to share a view.
const preset = new URLSearchParams(location.search).getAll('topic');
if (preset.length > 0) subscribeForm.elements.topics.value = preset.join('\n');

let source = null;
let received = 0;

function lines(text) {
  return text.split('\n').map((line) => line.trim()).filter((line) => line !== '');
}

function setCookie(token) {
  // Scoped to the hub's path so that it travels with subscriptions only.
  document.cookie = `${COOKIE}=${token}; path=${hub.pathname}; SameSite=Strict`;
}

function clearCookie() {
  document.cookie = `${COOKIE}=; path=${hub.pathname}; expires=Thu, 01 Jan 1970 00:00:00 GMT; SameSite=Strict`;
}

function showProblem(text) {
  problemOut.textContent = text;
}

function addEventRow(event) {
  received += 1;
  countOut.textContent = String(received);
  lastIdOut.textContent = event.lastEventId || '–';
  prependRow(rows, el('tr', { dataset: { type: event.type, id: event.lastEventId } },
    el('td', { class: 'time' }, clockTime()),
    el('td', {}, el('span', { class: `tag ${event.type === 'message' ? 'message' : ''}` }, event.type)),
    el('td', { class: 'id' }, event.lastEventId),
    el('td', { class: 'data' }, el('pre', {}, event.data)),
  ));
}

// An EventSource does not say why it failed; asking the same URL with fetch does.
async function diagnose(url) {
  const abort = new AbortController();
  try {
    const response = await fetch(url, { signal: abort.signal, cache: 'no-store', headers: { Accept: 'text/event-stream' } });
    const type = response.headers.get('content-type') ?? '';
    const essence = type.split(';')[0].trim().toLowerCase();
    if (response.status === 200 && essence === 'text/event-stream') {
      abort.abort();
      return 'The hub accepts this subscription now; the connection was lost on the way.';
    }
    const body = (await response.text()).trim().slice(0, 400);
    return `The hub answered ${response.status} ${response.statusText}${body ? `: ${body}` : ''}`;
  } catch (error) {
    return `The hub cannot be reached (${error.message}).`;
  }
}

function unsubscribe() {
  if (source) source.close();
  source = null;
  clearCookie();
  showState(badge, EventSource.CLOSED);
  unsubscribeButton.disabled = true;
}

function subscribe() {
  unsubscribe();
  showProblem('');
  const form = subscribeForm.elements;
  const topics = lines(form.topics.value);
  if (topics.length === 0) {
    showProblem('Give at least one topic selector (* for all).');
    return;
  }
  const url = new URL(hub);
  for (const topic of topics) url.searchParams.append('topic', topic);
  const lastEventId = form.lastEventId.value.trim();
  if (lastEventId) url.searchParams.set('lastEventID', lastEventId);

  const token = form.token.value.trim();
  if (token) {
    if (!TOKEN_SHAPE.test(token)) {
      showProblem('The token is not a JWT (three base64url parts separated by dots).');
      return;
    }
    if (form.transport.value === 'query') url.searchParams.set('authorization', token);
    else setCookie(token);
  }
  // Shown decoded, for reading, and without the token itself.
  const query = [...url.searchParams].map(([name, value]) => `${name}=${name === 'authorization' ? '…' : value}`);
  const cookieNote = token && form.transport.value === 'cookie' ? '   (token in the cookie)' : '';
  urlOut.textContent = `GET ${hub.pathname}?${query.join('&')}${cookieNote}`;

  rows.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: 4 }, 'Subscribed; waiting for events…')));
  received = 0;
  countOut.textContent = '0';
  lastIdOut.textContent = lastEventId || '–';

  const current = new EventSource(url);
  source = current;
  current.onopen = () => {
    showState(badge, current.readyState);
    showProblem('');
  };
  current.onerror = async () => {
    showState(badge, current.readyState);
    if (current.readyState === EventSource.CLOSED) {
      unsubscribeButton.disabled = true;
      const problem = await diagnose(url);
      // A newer subscription may have started while the hub was asked.
      if (source === current) showProblem(problem);
    } else {
      showProblem('Connection lost; the browser is reconnecting with the last event ID…');
    }
  };
  current.onmessage = addEventRow;
  const types = form.types.value.split(/[\s,]+/).filter((type) => type !== '' && type !== 'message');
  for (const type of new Set(types)) current.addEventListener(type, addEventRow);

  showState(badge, current.readyState);
  unsubscribeButton.disabled = false;
}

async function publish() {
  const form = publishForm.elements;
  const body = new URLSearchParams();
  const topics = lines(form.topics.value);
  if (topics.length === 0) {
    showPublishResult(false, 'Give at least one topic.');
    return;
  }
  for (const topic of topics) body.append('topic', topic);
  body.set('data', form.data.value);
  for (const field of ['type', 'id', 'retry']) {
    const value = form[field].value.trim();
    if (value) body.set(field, value);
  }
  if (form.private.checked) body.set('private', 'on');

  const headers = { 'Content-Type': 'application/x-www-form-urlencoded' };
  const token = form.token.value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(hub, { method: 'POST', headers, body, cache: 'no-store' });
    const text = (await response.text()).trim();
    showPublishResult(response.ok, `${response.status} ${response.statusText} · ${text}`, response.ok ? text : undefined);
  } catch (error) {
    showPublishResult(false, `The hub cannot be reached (${error.message}).`);
  }
}

function showPublishResult(ok, text, id) {
  publishResult.dataset.ok = String(ok);
  if (id) publishResult.dataset.id = id;
  else delete publishResult.dataset.id;
  publishResult.textContent = `${clockTime()}  ${text}`;
}

subscribeForm.addEventListener('submit', (event) => {
  event.preventDefault();
  subscribe();
});
unsubscribeButton.addEventListener('click', unsubscribe);
publishForm.addEventListener('submit', (event) => {
  event.preventDefault();
  publish();
});
document.getElementById('clear').addEventListener('click', () => {
  rows.replaceChildren();
  received = 0;
  countOut.textContent = '0';
});
