// Small DOM and formatting helpers shared by the pages.
//
// Everything that comes from a stream is untrusted: it only ever reaches the
// page as text nodes (never through innerHTML), so event data cannot inject markup.

/** The names of EventSource.readyState values, by value. */
export const READY_STATES = ['CONNECTING', 'OPEN', 'CLOSED'];

/** "1 OPEN" style label of a readyState. */
export function readyStateLabel(state) {
  return `${state} ${READY_STATES[state] ?? '?'}`;
}

/**
 * Builds an element. `props` may hold `class`, `dataset` (object), `title`,
 * or any attribute; children are nodes or strings (inserted as text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Local wall-clock time with milliseconds: 14:03:27.118. */
export function clockTime(date = new Date()) {
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** The hub's URL, resolved against the page so the pages work under any mount point. */
export function hubUrl() {
  return new URL('.well-known/mercure', document.baseURI);
}

/** Shows a connection state on a `.state` badge. */
export function showState(badge, readyState) {
  const name = READY_STATES[readyState] ?? 'CLOSED';
  badge.dataset.state = name;
  badge.textContent = name;
}

/**
 * Prepends a row to a table body, keeping at most `limit` rows, and removes
 * the "nothing yet" placeholder row if present.
 */
export function prependRow(tbody, row, limit = 500) {
  tbody.querySelector('tr.empty')?.remove();
  tbody.prepend(row);
  while (tbody.rows.length > limit) tbody.deleteRow(tbody.rows.length - 1);
}
