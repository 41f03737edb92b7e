// The Digits page: shows an EventSource's whole life (open, messages, the
// server ending the response, the browser reconnecting, close()).

import { el, readyStateLabel, showState } from './dom.js';

const startButton = document.getElementById('start');
const stopButton = document.getElementById('stop');
const noContent = document.getElementById('no-content');
const badge = document.getElementById('state');
const steps = document.getElementById('steps');
const opensOut = document.getElementById('opens');

let source = null;
let startedAt = 0;
let step = 0;
let opens = 0;

function log(event, data, note = '') {
  const state = source ? source.readyState : EventSource.CLOSED;
  showState(badge, state);
  step += 1;
  const seconds = ((performance.now() - startedAt) / 1000).toFixed(2);
  steps.append(el('tr', { dataset: { event, readyState: state } },
    el('td', { class: 'num' }, step),
    el('td', { class: 'time' }, `${seconds} s`),
    el('td', {}, el('span', { class: `tag ${event}` }, event)),
    el('td', { class: 'data' }, el('pre', {}, data)),
    el('td', { class: 'mono' }, readyStateLabel(state)),
    el('td', { class: 'hint' }, note),
  ));
}

function start() {
  stop();
  steps.replaceChildren();
  step = 0;
  opens = 0;
  opensOut.textContent = '0';
  startedAt = performance.now();

  const url = new URL('demo/digits', document.baseURI);
  if (noContent.checked) url.searchParams.set('status', '204');
  source = new EventSource(url);

  source.onopen = () => {
    opens += 1;
    opensOut.textContent = String(opens);
    log('open', '', opens > 1 ? 'reconnected' : 'connected');
  };
  source.onmessage = (event) => log('message', event.data, event.lastEventId ? `id ${event.lastEventId}` : '');
  source.addEventListener('bye', (event) => log('bye', event.data, 'the server ends the response next'));
  source.onerror = () => {
    const closed = source.readyState === EventSource.CLOSED;
    log('error', '', closed ? 'failed for good: no retry' : 'the browser will reconnect');
    if (closed) setButtons(false);
  };
  setButtons(true);
  showState(badge, source.readyState);
}

function stop() {
  if (!source) return;
  const wasOpen = source.readyState !== EventSource.CLOSED;
  source.close();
  if (wasOpen) log('close', '', 'close() called: no more requests');
  setButtons(false);
}

function setButtons(running) {
  startButton.textContent = running ? 'Restart' : 'Start';
  stopButton.disabled = !running;
}

startButton.addEventListener('click', start);
stopButton.addEventListener('click', stop);
