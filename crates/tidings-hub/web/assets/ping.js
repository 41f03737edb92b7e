// The Ping page: subscribes to the demo topic and lists pings and messages.

import { el, clockTime, hubUrl, showState, prependRow } from './dom.js';

const topic = document.getElementById('topic').textContent.trim();
const url = hubUrl();
url.searchParams.append('topic', topic);

const badge = document.getElementById('state');
const rows = document.getElementById('events');
const counts = { ping: 0, message: 0 };

document.getElementById('curl').textContent = `curl -N '${url}'`;

const source = new EventSource(url);
showState(badge, source.readyState);

function record(kind, event) {
  counts[kind] += 1;
  document.getElementById(`${kind}-count`).textContent = String(counts[kind]);
  document.getElementById('idle-hint').hidden = true;

  let note = '';
  if (kind === 'ping') {
    // The publisher's clock and ours may differ; the note shows the time it claims.
    try {
      const sent = new Date(JSON.parse(event.data).time);
      note = Number.isNaN(sent.getTime()) ? 'time is not a date' : `sent at ${clockTime(sent)}`;
    } catch {
      note = 'data is not JSON';
    }
  }
  prependRow(rows, el('tr', { dataset: { kind } },
    el('td', { class: 'time' }, clockTime()),
    el('td', {}, el('span', { class: `tag ${kind}` }, kind)),
    el('td', { class: 'data' }, el('pre', {}, event.data)),
    el('td', { class: 'hint' }, note),
  ), 200);
}

source.addEventListener('ping', (event) => record('ping', event));
source.onmessage = (event) => record('message', event);
source.onopen = () => showState(badge, source.readyState);
source.onerror = () => showState(badge, source.readyState);

// A quiet stream after a few seconds usually means the demo publisher is off.
setTimeout(() => {
  if (counts.ping + counts.message === 0) document.getElementById('idle-hint').hidden = false;
}, 5000);
