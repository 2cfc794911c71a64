// The DOM helpers every view shares. Elements are built from data with text nodes only
// (never innerHTML), so a service name, a task message or a log line is always shown as
// text and can never become markup or code.

/** An element: `h('a', {href: '#/x', class: 'y'}, 'text', child, [more])`. */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') element.className = value;
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (value === true) element.setAttribute(key, '');
    else element.setAttribute(key, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces what `element` holds. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** What each state means, for the title of its badge (colour is never the only signal). */
const MEANING = {
  pending: 'waiting for a worker that can take it',
  assigned: 'placed on a worker whose agent has not started it yet',
  starting: 'its agent is starting it',
  running: 'running',
  complete: 'exited with status 0',
  failed: 'exited non-zero, or could not be started',
  lost: 'its worker was lost; a replacement takes its slot',
  shutdown: 'stopped because it was no longer wanted',
  ready: 'takes new tasks',
  down: 'declared dead: its tasks run elsewhere',
  draining: 'being emptied: takes nothing new',
  healthy: 'passes its health check',
  unhealthy: 'fails its health check',
  in_progress: 'slots are being replaced',
  completed: 'every slot runs this version',
  paused: 'stopped replacing slots after failures',
  rolled_back: 'failed, and went back to the previous version',
  converging: 'fewer replicas run than wanted',
  updating: 'a rollout is replacing its tasks',
  stopped: 'scaled to zero',
};

/** A state shown as a labelled badge: its word, its colour, and what it means. */
export function badge(state, prefix) {
  const word = String(state ?? 'unknown');
  const shown = word.replace(/_/g, ' ');
  return h(
    'span',
    { class: `badge s-${word}`, title: MEANING[word] ? `${shown}: ${MEANING[word]}` : shown },
    prefix ? `${prefix} ${shown}` : shown,
  );
}

export const TASK_STATES = [
  'pending', 'assigned', 'starting', 'running', 'complete', 'failed', 'lost', 'shutdown',
];

export function meaning(state) {
  return MEANING[state] || '';
}

/**
 * A table: `columns` are `[label, row => cell]`; each cell is also labelled (data-label)
 * so that on a phone a row reads as a card of "label: value" lines. `rowAttrs(row)` gives
 * each row's attributes.
 */
export function table(caption, columns, rows, empty, rowAttrs) {
  if (!rows.length) return h('p', { class: 'empty' }, empty || 'Nothing yet.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      null,
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', null, h('tr', null, columns.map(([label]) => h('th', { scope: 'col' }, label)))),
      h(
        'tbody',
        null,
        rows.map((row) =>
          h(
            'tr',
            rowAttrs ? rowAttrs(row) : null,
            columns.map(([label, cell]) => h('td', { 'data-label': label }, cell(row))),
          ),
        ),
      ),
    ),
  );
}

/** A labelled input: `field('Replicas', {type: 'number', name: 'replicas'})`. */
let fieldCount = 0;
export function field(label, attrs, hint) {
  fieldCount += 1;
  const id = `f${fieldCount}`;
  const hintId = hint ? `${id}-hint` : null;
  const control = attrs.rows
    ? h('textarea', { id, ...attrs, 'aria-describedby': hintId })
    : h('input', { id, type: 'text', ...attrs, 'aria-describedby': hintId });
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('small', { id: hintId }, hint) : null,
  );
}

/** Seconds as an age: "0.4 s", "12 s", "3 min", "2 h". */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return 'never';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

/** Unix seconds as a local time, with how long ago in its title. */
export function when(unixSeconds) {
  if (!unixSeconds) return '';
  const date = new Date(unixSeconds * 1000);
  const ago = Math.max(0, Date.now() / 1000 - unixSeconds);
  return h('time', { datetime: date.toISOString(), title: `${age(ago)} ago` }, date.toLocaleTimeString());
}

/** Bytes in the largest unit that keeps a number above 1. */
export function bytes(n) {
  if (!n) return '0';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

/** What a service or a task runs: its image, else its command. */
export function runs(doc) {
  if (doc.image) return doc.image;
  if (doc.command) return doc.command.join(' ');
  return '';
}

/** A service's ports: "8080→8000/tcp" or "8000/tcp" when not published. */
export function ports(list) {
  return (list || [])
    .map((p) => `${p.published ? `${p.published}→` : ''}${p.target}/${p.protocol || 'tcp'}`)
    .join(', ');
}

/** Splits a command line into argv: spaces separate, quotes group, backslash escapes. */
export function argv(line) {
  const words = [];
  let word = '';
  let quote = null;
  let started = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) word += line[++i];
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      started = true;
    } else if (c === '\\' && i + 1 < line.length) {
      word += line[++i];
      started = true;
    } else if (/\s/.test(c)) {
      if (started) words.push(word);
      word = '';
      started = false;
    } else {
      word += c;
      started = true;
    }
  }
  if (quote) throw new Error(`the command has an unclosed ${quote}`);
  if (started) words.push(word);
  return words;
}

/** The hash of a route: `route('service', name)` → `#/service/<name, encoded>`. */
export function route(...parts) {
  return `#/${parts.map(encodeURIComponent).join('/')}`;
}

/** A button that runs `action` and shows its failure; disabled while it runs. */
export function action(label, run, attrs) {
  const button = h('button', { type: 'button', ...attrs }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await run();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
