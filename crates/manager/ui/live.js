// Keeps the page live. It follows the manager's event stream (`GET /api/v1/events`:
// newline-delimited JSON, one EventDoc a line) with fetch and a stream reader, because a
// browser's EventSource cannot send the token in a header, and the token must never be
// in a URL. It resumes after the last index it read when the stream drops; told it is
// too far behind (410) it has the views re-read and follows afresh. Against a manager
// without the stream (404) it has the views re-read every 2 s instead. The footer says
// which.

import { authorization, token } from './api.js';

export const POLL_MS = 2000;

let handlers = null;
let controller = null;
let pollTimer = null;
let lastIndex = null;
let running = false;

/**
 * Starts following. `on.event(doc)` for each event, `on.stale()` when what the views show
 * may be out of date (connected, reconnected, a poll tick), `on.mode(mode, text)` when
 * the way of following changes, `on.refused()` on a 401.
 */
export function start(on) {
  stop();
  handlers = on;
  running = true;
  follow();
}

export function stop() {
  running = false;
  if (controller) controller.abort();
  controller = null;
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
  lastIndex = null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function follow() {
  let backoff = 500;
  while (running) {
    const value = token();
    if (!value) return;
    controller = new AbortController();
    const path = lastIndex === null ? '/api/v1/events' : `/api/v1/events?index=${lastIndex}`;
    let response;
    try {
      response = await fetch(path, {
        headers: { Accept: 'application/x-ndjson', ...authorization(value) },
        cache: 'no-store',
        credentials: 'omit',
        signal: controller.signal,
      });
    } catch {
      if (!running) return;
      handlers.mode('off', 'Cannot reach the manager: retrying…');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
      continue;
    }
    if (response.status === 404) {
      poll();
      return;
    }
    if (response.status === 401) {
      handlers.refused();
      return;
    }
    if (response.status === 410) {
      // Too far behind: what the views show is re-read, and the stream followed afresh.
      lastIndex = null;
      handlers.stale();
      continue;
    }
    if (!response.ok || !response.body) {
      handlers.mode('off', `The event stream answered ${response.status}: retrying…`);
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
      continue;
    }
    backoff = 500;
    handlers.mode('stream', 'Live: following the event stream.');
    // Whatever happened while not connected is read once.
    handlers.stale();
    await read(response.body.getReader());
    if (!running) return;
    handlers.mode('off', 'The event stream ended: reconnecting…');
    await sleep(backoff);
  }
}

async function read(reader) {
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n');
      while (end >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 1);
        end = buffer.indexOf('\n');
        if (!line) continue;
        let doc;
        try {
          doc = JSON.parse(line);
        } catch {
          continue;
        }
        if (typeof doc.index === 'number') lastIndex = doc.index;
        handlers.event(doc);
      }
    }
  } catch {
    // Aborted (signed out, stopped) or the connection dropped: the caller decides.
  }
}

function poll() {
  handlers.mode(
    'poll',
    `Live: re-reading every ${POLL_MS / 1000} s (this manager has no event stream).`,
  );
  pollTimer = setInterval(() => {
    if (running) handlers.stale();
  }, POLL_MS);
}
