// The cluster map (#/map): a card per worker holding a chip per task, coloured by state
// and always labelled with it (and described in its title), with a legend. Tasks not
// placed yet have a card of their own.

import { badge, fill, h, meaning, route, TASK_STATES } from './dom.js';

const LIVE_STATES = ['pending', 'assigned', 'starting', 'running'];

function chip(t) {
  const finished = !LIVE_STATES.includes(t.state);
  const title = `${t.service} slot ${t.slot}: ${t.state} (${meaning(t.state)})${t.message ? ` — ${t.message}` : ''}`;
  return h(
    'li',
    null,
    h(
      'a',
      {
        class: `chip s-${t.state}${finished ? ' finished' : ''}`,
        href: route('service', t.service),
        title,
        dataset: { service: t.service, slot: String(t.slot), state: t.state, task: t.id },
      },
      h('span', null, `${t.service}.${t.slot}`),
      h('small', null, t.state),
    ),
  );
}

function card(title, status, tasks, meta, dataset) {
  return h(
    'section',
    { class: 'node', dataset: { ...dataset, status }, 'aria-label': title },
    h('h2', null, title, status ? badge(status) : null),
    meta ? h('p', { class: 'meta' }, meta) : null,
    tasks.length ? h('ul', { class: 'chips' }, tasks.map(chip)) : h('p', { class: 'empty' }, 'no tasks'),
  );
}

export function mapView(container, _args, ctx) {
  const showFinished = h('input', { type: 'checkbox', id: 'show-finished' });
  const grid = h('div', { class: 'map', id: 'map' }, h('p', { class: 'hint' }, 'Loading…'));
  let last = null;
  showFinished.addEventListener('change', () => last && draw(...last));
  fill(
    container,
    h('h1', { tabindex: '-1' }, 'Cluster map'),
    h('p', { class: 'hint' }, 'Each worker with its tasks; a task is named service.slot, with its state.'),
    h('ul', { class: 'legend', 'aria-label': 'Legend' }, TASK_STATES.map((s) => h('li', null, badge(s)))),
    h('p', null, h('label', null, showFinished, ' Show finished tasks')),
    grid,
  );

  function draw(workers, tasks) {
    const shown = showFinished.checked ? tasks : tasks.filter((t) => LIVE_STATES.includes(t.state));
    const on = new Map(workers.map((w) => [w.worker, []]));
    const unplaced = [];
    for (const t of shown) {
      if (t.worker && on.has(t.worker)) on.get(t.worker).push(t);
      else unplaced.push(t);
    }
    const cards = workers.map((w) =>
      card(
        w.worker,
        w.status,
        on.get(w.worker),
        `${w.running} running · ${w.driver || 'any driver'}`,
        { worker: w.worker },
      ),
    );
    if (unplaced.length) cards.push(card('Not placed', null, unplaced, 'waiting for a worker that can take them', { worker: '' }));
    if (!cards.length) fill(grid, h('p', { class: 'empty' }, 'No workers have joined yet.'));
    else fill(grid, cards);
  }

  async function refresh() {
    const [workers, tasks] = await Promise.all([ctx.api.get('/api/v1/workers'), ctx.api.get('/api/v1/tasks')]);
    workers.sort((a, b) => a.worker.localeCompare(b.worker));
    last = [workers, tasks];
    draw(workers, tasks);
  }

  return { refresh };
}
