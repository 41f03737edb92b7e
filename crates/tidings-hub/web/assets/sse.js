// A Server-Sent Events reader on fetch, for the console. Unlike EventSource it hands over
// every event whatever its type (EventSource only delivers the types one listens for), and
// when the hub refuses a subscription it says with which status and body.
//
// It follows the event stream format of the HTML standard: lines end with CRLF, LF or CR;
// `data`, `event`, `id` and `retry` fields; comments; the last event ID is sent back in a
// `Last-Event-ID` header when it reconnects, after the reconnection time the stream set.

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 2;

/** How much of a refusal's body is kept, in characters. */
const REFUSAL_BODY_LIMIT = 400;

/** Splits a stream's text into fields and dispatches its events (HTML standard, 9.2.6). */
export class EventParser {
  /**
   * `dispatch(event)` receives `{ type, data, id, lastEventId }`: `id` is the event's own
   * `id` field (null without one), `lastEventId` the stream's, which an event without an
   * `id` field keeps from the one before. `onRetry(ms)` receives a new reconnection time.
   */
  constructor({ dispatch, onRetry = () => {}, lastEventId = '' }) {
    this.dispatch = dispatch;
    this.onRetry = onRetry;
    this.lastEventId = lastEventId;
    this.pending = '';
    this.resetEvent();
    this.idBuffer = lastEventId;
  }

  resetEvent() {
    this.data = '';
    this.type = '';
    this.id = null;
  }

  /** Feeds decoded text; `end` says the stream ended (a last CR then ends its line). */
  push(text, end = false) {
    this.pending += text;
    let start = 0;
    for (;;) {
      const cr = this.pending.indexOf('\r', start);
      const lf = this.pending.indexOf('\n', start);
      if (cr < 0 && lf < 0) break;
      const at = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (at === cr && at === this.pending.length - 1 && !end) break;
      this.line(this.pending.slice(start, at));
      start = at + (at === cr && this.pending[at + 1] === '\n' ? 2 : 1);
    }
    this.pending = this.pending.slice(start);
    // An event not ended by a blank line when the stream ends is dropped, as browsers do.
    if (end) {
      this.pending = '';
      this.idBuffer = this.lastEventId;
      this.resetEvent();
    }
  }

  line(line) {
    if (line === '') {
      this.lastEventId = this.idBuffer;
      if (this.data !== '') {
        this.dispatch({
          type: this.type || 'message',
          data: this.data.endsWith('\n') ? this.data.slice(0, -1) : this.data,
          id: this.id,
          lastEventId: this.lastEventId,
        });
      }
      this.resetEvent();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') this.data += `${value}\n`;
    else if (name === 'event') this.type = value;
    else if (name === 'id' && !value.includes('\0')) {
      this.idBuffer = value;
      this.id = value;
    }
    else if (name === 'retry' && /^[0-9]+$/.test(value)) this.onRetry(Number(value));
  }
}

/**
 * One subscription, reconnecting like an EventSource after a lost connection and giving
 * up, like it, when the hub answers anything but `200` with `text/event-stream`.
 *
 * Callbacks: `onState(readyState)`, `onEvent({ type, data, id, lastEventId })`,
 * `onRefused({ status, statusText, body })` (then CLOSED for good), `onLost(reason)` (then
 * CONNECTING again, after the reconnection time).
 */
export class EventStream {
  constructor(url, { lastEventId = '', retry = 3000, onState, onEvent, onRefused, onLost }) {
    this.url = url;
    this.retry = retry;
    this.callbacks = { onState, onEvent, onRefused, onLost };
    this.parser = new EventParser({
      dispatch: (event) => this.callbacks.onEvent(event),
      onRetry: (ms) => {
        this.retry = ms;
      },
      lastEventId,
    });
    this.readyState = CONNECTING;
    this.closed = false;
    this.abort = null;
    this.timer = null;
    this.connect();
  }

  /** The last event ID seen (or given), sent back on reconnection. */
  get lastEventId() {
    return this.parser.lastEventId;
  }

  /** Ends the subscription for good. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.abort?.abort();
    this.setState(CLOSED);
  }

  setState(state) {
    if (this.readyState === state) return;
    this.readyState = state;
    this.callbacks.onState(state);
  }

  async connect() {
    if (this.closed) return;
    this.setState(CONNECTING);
    const abort = new AbortController();
    this.abort = abort;
    const headers = { Accept: 'text/event-stream' };
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.url, { headers, cache: 'no-store', credentials: 'same-origin', signal: abort.signal });
    } catch (error) {
      this.lost(`the hub cannot be reached (${error.message})`);
      return;
    }
    const essence = (response.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
    if (response.status !== 200 || essence !== 'text/event-stream') {
      let body = '';
      try {
        body = (await response.text()).trim().slice(0, REFUSAL_BODY_LIMIT);
      } catch {
        // The status says enough.
      }
      if (this.closed) return;
      this.closed = true;
      this.setState(CLOSED);
      this.callbacks.onRefused({ status: response.status, statusText: response.statusText, body, contentType: essence });
      return;
    }
    if (this.closed) return;
    this.setState(OPEN);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.parser.push(value);
      }
      this.parser.push('', true);
      this.lost('the hub ended the stream');
    } catch (error) {
      this.parser.push('', true);
      this.lost(`the connection broke (${error.message})`);
    }
  }

  lost(reason) {
    if (this.closed) return;
    this.setState(CONNECTING);
    this.callbacks.onLost(reason);
    this.timer = setTimeout(() => this.connect(), this.retry);
  }
}
