// The live event feed (#/events): the events the page has read from the manager's
// stream, newest first, each said in words, filtered by topic. Against a manager without
// the stream it says so.

import { badge, fill, h, route, when } from './dom.js';

const TOPICS = ['service', 'task', 'worker', 'rollout'];
/** The most events shown at once. */
const SHOWN = 200;

const arrow = (from, to) => (from ? `${from} → ${to}` : to);

function link(kind, name) {
  return name ? h('a', { href: route(kind, name) }, name) : '—';
}

/** An event in words (with links to what it is about). */
export function describe(e) {
  switch (e.type) {
    case 'service_created':
      return ['service ', link('service', e.service), ` created (version ${e.version}, ${e.replicas} replicas)`];
    case 'service_updated':
      return [
        'service ', link('service', e.service), ` updated to version ${e.version}`,
        e.previous_replicas !== undefined && e.previous_replicas !== null ? ` (replicas ${e.previous_replicas} → ${e.replicas})` : '',
      ];
    case 'service_deleted':
      return ['service ', e.service, ' deleted'];
    case 'task_state':
      return [
        'task ', link('service', e.service), `.${e.slot}`, e.worker ? [' on ', link('worker', e.worker)] : '',
        ': ', badge(e.state), ` ${e.previous ? `(was ${e.previous})` : '(new)'}`,
        e.exit_code !== undefined && e.exit_code !== null ? ` exit ${e.exit_code}` : '',
        // A message that only repeats the state says nothing more.
        e.message && e.message !== e.state ? ` — ${e.message}` : '',
      ];
    case 'task_relocated':
      return [
        'slot ', link('service', e.service), `.${e.slot} relocated from `, link('worker', e.from),
        e.replacement ? ` (replacement ${e.replacement})` : '', e.message ? ` — ${e.message}` : '',
      ];
    case 'worker_status':
      return ['worker ', link('worker', e.worker), ': ', badge(e.status), e.previous ? ` (was ${e.previous})` : ' (registered)'];
    case 'worker_removed':
      return ['worker ', e.worker, ' removed'];
    case 'rollout_state':
      return [
        `${e.kind} rollout of `, link('service', e.service), ` to version ${e.version}: `,
        arrow(e.previous, e.state).replace(/_/g, ' '), e.reason ? ` — ${e.reason}` : '',
      ];
    default:
      return [String(e.type || 'event')];
  }
}

export function eventsView(container, _args, ctx) {
  const chosen = new Set(TOPICS);
  const note = h('p', { class: 'hint', id: 'events-note' });
  const feed = h('ol', { class: 'feed', id: 'feed', 'aria-live': 'polite', reversed: true });
  const filters = h(
    'fieldset',
    null,
    h('legend', null, 'Topics'),
    TOPICS.map((topic) => {
      const box = h('input', { type: 'checkbox', checked: true, value: topic });
      box.addEventListener('change', () => {
        if (box.checked) chosen.add(topic);
        else chosen.delete(topic);
        draw();
      });
      return h('label', null, box, topic);
    }),
  );
  fill(container, h('h1', { tabindex: '-1' }, 'Events'), note, filters, feed);

  function item(e) {
    return h(
      'li',
      { dataset: { index: String(e.index), type: e.type || '' } },
      when(e.time),
      h('span', { class: 'topic' }, e.topic),
      h('span', { class: 'what' }, describe(e)),
    );
  }

  function draw() {
    const shown = ctx.events.filter((e) => chosen.has(e.topic)).slice(-SHOWN).reverse();
    if (!shown.length) fill(feed, h('li', { class: 'empty' }, ctx.mode === 'poll' ? 'No event stream.' : 'No events yet.'));
    else fill(feed, shown.map(item));
    drawNote(ctx.mode);
  }

  function drawNote(mode) {
    fill(
      note,
      mode === 'poll'
        ? 'This manager has no event stream (GET /api/v1/events answered 404): the other views re-read every 2 s instead.'
        : 'What the manager commits, as it happens (newest first).',
    );
  }

  return {
    refresh: async () => draw(),
    // Each event is drawn as it comes; no re-read is needed.
    event: () => draw(),
    concerns: () => false,
    modeChanged: drawNote,
  };
}
