// The live console: subscribe to topic selectors, see every event, publish updates, and
// list the hub's active subscriptions.

import { el, clockTime, hubUrl, showState } from './dom.js';
import { EventStream, CLOSED } from './sse.js';

const hub = hubUrl();
const subscriptionsApi = new URL('.well-known/mercure/subscriptions', document.baseURI);
const COOKIE = 'mercureAuthorization';
// A JWS in compact form: three base64url parts; anything else would break the cookie.
const TOKEN_SHAPE = /^[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*$/;
/** Rows the event list keeps; older ones are dropped. */
const ROW_LIMIT = 500;
/** Characters of an event's data shown; the rest is summarised. */
const DATA_LIMIT = 100_000;

const $ = (id) => document.getElementById(id);
const subscribeForm = $('subscribe-form');
const publishForm = $('publish-form');
const unsubscribeButton = $('unsubscribe');
const badge = $('state');
const rows = $('events');
const urlOut = $('subscription-url');
const problemOut = $('subscription-problem');
const publishResult = $('publish-result');
const typeFilter = $('type-filter');
const pauseButton = $('pause');
const subscriptionRows = $('subscriptions');
const subscriptionsProblem = $('subscriptions-problem');

$('hub-url').textContent = hub.href;
$('subscriptions-url').textContent = subscriptionsApi.pathname;

// Topics may be given in the page's address (console?topic=a&topic=b), to share a view.
const preset = new URLSearchParams(location.search).getAll('topic');
if (preset.length > 0) subscribeForm.elements.topics.value = preset.join('\n');

/**
 * The subscription's phase, which decides every piece of state the page shows:
 * idle (none yet, or unsubscribed), connecting, open, lost (reconnecting), refused.
 */
let phase = 'idle';
let stream = null;
let received = 0;
let paused = false;
/** Events that arrived while paused, oldest first (at most ROW_LIMIT). */
let waiting = [];

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

// ---- the event list -------------------------------------------------------------------

/** The types the filter lets through, or null for every type. */
function filterTypes() {
  const types = typeFilter.value.split(/[\s,]+/).filter((type) => type !== '');
  return types.length === 0 ? null : new Set(types);
}

function eventRows() {
  return [...rows.rows].filter((row) => !row.classList.contains('empty'));
}

/** Hides the rows the type filter leaves out and says how many it hides. */
function applyFilter() {
  const types = filterTypes();
  let hidden = 0;
  for (const row of eventRows()) {
    row.hidden = types !== null && !types.has(row.dataset.type);
    if (row.hidden) hidden += 1;
  }
  $('hidden-count').textContent = String(hidden);
  $('hidden-stat').hidden = hidden === 0;
  showPlaceholder();
}

const PLACEHOLDERS = {
  idle: 'Not subscribed.',
  connecting: 'Connecting…',
  open: 'Subscribed; waiting for events…',
  lost: 'Connection lost; reconnecting…',
  refused: 'Not subscribed: the hub refused the subscription (see above).',
};

/** The row saying why the list is empty, shown only when no event row is visible. */
function showPlaceholder() {
  const visible = eventRows().filter((row) => !row.hidden).length;
  let placeholder = rows.querySelector('tr.empty');
  if (visible > 0) {
    placeholder?.remove();
    return;
  }
  const all = eventRows().length;
  let text = PLACEHOLDERS[phase];
  if (all > 0) text = `${all} event${all === 1 ? '' : 's'} hidden by the type filter.`;
  else if (paused && waiting.length > 0) text = 'Paused; events are waiting.';
  if (!placeholder) {
    placeholder = el('tr', { class: 'empty' }, el('td', { colspan: 4 }));
    rows.append(placeholder);
  }
  placeholder.cells[0].textContent = text;
}

function eventRow(event, arrived) {
  const data = event.data.length > DATA_LIMIT
    ? `${event.data.slice(0, DATA_LIMIT)}… (${event.data.length - DATA_LIMIT} more characters)`
    : event.data;
  const types = filterTypes();
  // The event's own id: one without an `id` field (a live-only update) shows none, even
  // though the stream's last event ID stays that of the event before.
  const dataset = event.id === null ? { type: event.type } : { type: event.type, id: event.id };
  const row = el('tr', { dataset },
    el('td', { class: 'time' }, arrived),
    el('td', {}, el('span', { class: `tag ${event.type === 'message' ? 'message' : ''}` }, event.type)),
    el('td', { class: 'id' }, event.id ?? ''),
    el('td', { class: 'data' }, el('pre', {}, data)),
  );
  row.hidden = types !== null && !types.has(event.type);
  return row;
}

function showRow(event, arrived) {
  rows.prepend(eventRow(event, arrived));
  const all = eventRows();
  for (const row of all.slice(ROW_LIMIT)) row.remove();
}

function showCounts() {
  $('count').textContent = String(received);
  $('waiting-count').textContent = String(waiting.length);
  $('waiting-stat').hidden = !paused;
}

function onEvent(event) {
  received += 1;
  $('last-id').textContent = event.lastEventId || '–';
  if (paused) {
    waiting.push({ event, arrived: clockTime() });
    if (waiting.length > ROW_LIMIT) waiting.shift();
  } else {
    showRow(event, clockTime());
    applyFilter();
  }
  showCounts();
  if (isSubscriptionEvent(event)) scheduleSubscriptionsRefresh();
}

function setPaused(value) {
  paused = value;
  pauseButton.textContent = paused ? 'Resume' : 'Pause';
  pauseButton.setAttribute('aria-pressed', String(paused));
  if (!paused) {
    for (const { event, arrived } of waiting) showRow(event, arrived);
    waiting = [];
    applyFilter();
  }
  showCounts();
  showPlaceholder();
}

function clearEvents() {
  for (const row of eventRows()) row.remove();
  waiting = [];
  received = 0;
  showCounts();
  applyFilter();
}

// ---- subscribing ----------------------------------------------------------------------

/** Shows the phase: the badge, the placeholder row and the Unsubscribe button agree. */
function setPhase(next, problem) {
  phase = next;
  showState(badge, stream && phase !== 'refused' && phase !== 'idle' ? stream.readyState : CLOSED);
  unsubscribeButton.disabled = phase === 'idle' || phase === 'refused';
  if (problem !== undefined) problemOut.textContent = problem;
  showPlaceholder();
}

function unsubscribe() {
  const had = stream !== null;
  stream?.close();
  stream = null;
  clearCookie();
  setPhase('idle', '');
  // The hub drops the subscription when it sees the connection close: look a moment later.
  if (had) setTimeout(refreshSubscriptions, 500);
}

function refusalText({ status, statusText, body, contentType }) {
  if (status === 200) return `The hub answered 200 with ${contentType || 'no content type'}, not text/event-stream.`;
  let text = `The hub answered ${status} ${statusText}${body ? `: ${body}` : ''}`;
  if (status === 401) text += ' Give a subscriber token (the one tidings serve printed may subscribe to everything).';
  if (status === 403) text += ' The token\'s mercure.subscribe does not cover these topics.';
  return text;
}

function subscribe() {
  unsubscribe();
  const form = subscribeForm.elements;
  const topics = lines(form.topics.value);
  if (topics.length === 0) {
    setPhase('idle', 'Give at least one topic selector (* for all).');
    return;
  }
  const url = new URL(hub);
  for (const topic of topics) url.searchParams.append('topic', topic);
  const lastEventId = form.lastEventId.value.trim();
  if (lastEventId) url.searchParams.set('lastEventID', lastEventId);

  const token = form.token.value.trim();
  if (token) {
    if (!TOKEN_SHAPE.test(token)) {
      setPhase('idle', 'The token is not a JWT (three base64url parts separated by dots).');
      return;
    }
    if (form.transport.value === 'query') url.searchParams.set('authorization', token);
    else setCookie(token);
  }
  // Shown decoded, for reading, and without the token itself.
  const query = [...url.searchParams].map(([name, value]) => `${name}=${name === 'authorization' ? '…' : value}`);
  const cookieNote = token && form.transport.value === 'cookie' ? '   (token in the cookie)' : '';
  urlOut.textContent = `GET ${hub.pathname}?${query.join('&')}${cookieNote}`;
  $('last-id').textContent = lastEventId || '–';

  const current = new EventStream(url, {
    onState: () => {
      if (stream !== current) return;
      if (current.readyState === 1) {
        setPhase('open', '');
        refreshSubscriptions();
      } else if (phase !== 'lost' && phase !== 'refused' && current.readyState === 0) {
        setPhase('connecting');
      }
    },
    onEvent: (event) => {
      if (stream === current) onEvent(event);
    },
    onRefused: (refusal) => {
      if (stream === current) setPhase('refused', refusalText(refusal));
    },
    onLost: (reason) => {
      if (stream === current) setPhase('lost', `Connection lost (${reason}); reconnecting with the last event ID…`);
    },
  });
  stream = current;
  setPhase('connecting', '');
}

// ---- active subscriptions -------------------------------------------------------------

function isSubscriptionEvent(event) {
  if (!event.data.includes('"Subscription"')) return false;
  try {
    const doc = JSON.parse(event.data);
    return doc?.type === 'Subscription' && typeof doc.id === 'string'
      && doc.id.startsWith(subscriptionsApi.pathname);
  } catch {
    return false;
  }
}

let refreshTimer = null;

/** Refreshes soon, once for a burst of subscription events. */
function scheduleSubscriptionsRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshSubscriptions, 250);
}

let refreshes = 0;

/** Says why the list cannot be read: `state` is `hint` (no token yet) or `refused`. */
function showSubscriptionsProblem(text, state = 'refused') {
  subscriptionsProblem.textContent = text;
  if (state === 'hint') delete subscriptionsProblem.dataset.ok;
  else subscriptionsProblem.dataset.ok = 'false';
  $('subscriptions-panel').dataset.state = text ? state : 'ok';
}

async function refreshSubscriptions() {
  const token = subscribeForm.elements.token.value.trim();
  const mine = ++refreshes;
  if (!token || !TOKEN_SHAPE.test(token)) {
    showSubscriptionsProblem(`Reading the active subscriptions needs a subscriber token whose mercure.subscribe covers ${subscriptionsApi.pathname} (for example ["*"], as in the token tidings serve printed): put one in the Subscriber token field above.`, 'hint');
    return;
  }
  let response;
  let text;
  try {
    response = await fetch(subscriptionsApi, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/ld+json' },
      cache: 'no-store',
      credentials: 'omit',
    });
    text = await response.text();
  } catch (error) {
    if (mine === refreshes) showSubscriptionsProblem(`The hub cannot be reached (${error.message}).`);
    return;
  }
  if (mine !== refreshes) return;
  const said = text.trim().slice(0, 400);
  if (response.status === 401 || response.status === 403) {
    showSubscriptionsProblem(`The hub refused to list the subscriptions (${response.status} ${response.statusText}${said ? `: ${said}` : ''}). The subscriber token's mercure.subscribe must cover ${subscriptionsApi.pathname} (for example ["*"]).`);
    return;
  }
  if (response.status === 404) {
    showSubscriptionsProblem('This hub does not serve the subscriptions API (it runs with --no-subscriptions).');
    return;
  }
  let doc;
  try {
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}${said ? `: ${said}` : ''}`);
    doc = JSON.parse(text);
    if (!Array.isArray(doc.subscriptions)) throw new Error('no subscriptions list in the answer');
  } catch (error) {
    showSubscriptionsProblem(`The subscriptions API answered something unexpected (${error.message}).`);
    return;
  }
  showSubscriptionsProblem('');
  showSubscriptions(doc.subscriptions);
}

function showSubscriptions(subscriptions) {
  $('subscriptions-count').textContent = String(subscriptions.length);
  if (subscriptions.length === 0) {
    subscriptionRows.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: 3 }, 'No active subscription that this token may see.')));
    return;
  }
  subscriptionRows.replaceChildren(...subscriptions.map((subscription) => el('tr', { dataset: { topic: String(subscription.topic) } },
    el('td', { class: 'id' }, String(subscription.topic)),
    el('td', { class: 'id' }, String(subscription.subscriber)),
    el('td', { class: 'data' }, el('pre', {}, subscription.payload === undefined ? '' : JSON.stringify(subscription.payload))),
  )));
}

// ---- publishing -----------------------------------------------------------------------

async function publish() {
  const form = publishForm.elements;
  const body = new URLSearchParams();
  const topics = lines(form.topics.value);
  if (topics.length === 0) {
    showPublishResult(false, 'Give at least one topic.');
    return;
  }
  const token = form.token.value.trim();
  if (!token) {
    showPublishResult(false, 'Publishing needs a publisher token: paste a JWT whose mercure.publish covers these topics (such as the one tidings serve printed) in the Publisher token field.');
    return;
  }
  if (!TOKEN_SHAPE.test(token)) {
    showPublishResult(false, 'The publisher token is not a JWT (three base64url parts separated by dots).');
    return;
  }
  for (const topic of topics) body.append('topic', topic);
  body.set('data', form.data.value);
  for (const field of ['type', 'id', 'retry']) {
    const value = form[field].value.trim();
    if (value) body.set(field, value);
  }
  if (form.private.checked) body.set('private', 'on');

  const headers = { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Bearer ${token}` };
  try {
    // Never the subscriber's cookie: the publisher token alone says who publishes.
    const response = await fetch(hub, { method: 'POST', headers, body, cache: 'no-store', credentials: 'omit' });
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

// ---- wiring ---------------------------------------------------------------------------

subscribeForm.addEventListener('submit', (event) => {
  event.preventDefault();
  subscribe();
});
unsubscribeButton.addEventListener('click', unsubscribe);
publishForm.addEventListener('submit', (event) => {
  event.preventDefault();
  publish();
});
typeFilter.addEventListener('input', applyFilter);
pauseButton.addEventListener('click', () => setPaused(!paused));
$('clear').addEventListener('click', clearEvents);
$('refresh-subscriptions').addEventListener('click', refreshSubscriptions);
setPhase('idle');
refreshSubscriptions();
