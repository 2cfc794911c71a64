// The workers view (#/workers: status, tasks, heartbeat age, capacity, drain/activate)
// and one worker (#/worker/<name>: its details and its tasks).

import { ApiError } from './api.js';
import { action, age, badge, bytes, fill, h, route, table, when } from './dom.js';
import { taskColumns, taskRow } from './service.js';

const LIVE_STATES = ['pending', 'assigned', 'starting', 'running'];

function capacity(w) {
  const parts = [];
  if (w.capacity !== null && w.capacity !== undefined) parts.push(`${w.capacity} tasks`);
  const has = w.resources || {};
  const used = w.reserved || {};
  if (has.cpus) parts.push(`${used.cpus || 0}/${has.cpus} CPUs`);
  if (has.memory) parts.push(`${bytes(used.memory || 0)}/${bytes(has.memory)}`);
  return parts.join(', ') || 'unbounded';
}

function heartbeat(w) {
  const text = w.last_heartbeat_age === null ? 'none yet' : `${age(w.last_heartbeat_age)} ago`;
  return h('span', { title: `its agent beats every ${w.heartbeat_interval} s` }, text);
}

function statusCell(w) {
  return h('span', null, badge(w.status), w.drain && w.status !== 'draining' ? ' (drained)' : '', w.suspected ? ` (suspected: ${w.suspected.reason})` : '');
}

/** Drain or activate, whichever the worker's state calls for. */
function drainButton(w, ctx, onError) {
  const drained = w.drain || w.status === 'draining';
  const path = `/api/v1/workers/${ctx.api.seg(w.worker)}/${drained ? 'activate' : 'drain'}`;
  const label = drained ? 'Activate' : 'Drain';
  return action(label, async () => {
    try {
      await ctx.api.post(path);
      ctx.notify(drained ? `Worker ${w.worker} takes tasks again.` : `Worker ${w.worker} is draining: its tasks move elsewhere.`);
      ctx.refresh();
    } catch (e) {
      onError(`${label} ${w.worker}: ${e}`);
    }
  }, { class: 'secondary', 'aria-label': `${label} ${w.worker}` });
}

export function workersView(container, _args, ctx) {
  const list = h('div', { id: 'workers-list' }, h('p', { class: 'hint' }, 'Loading…'));
  const error = h('p', { class: 'error', role: 'alert' });
  fill(container, h('h1', { tabindex: '-1' }, 'Workers'), error, list);

  async function refresh() {
    const workers = await ctx.api.get('/api/v1/workers');
    fill(
      list,
      table(
        'Workers',
        [
          ['Worker', (w) => h('a', { href: route('worker', w.worker) }, w.worker)],
          ['Status', statusCell],
          ['Driver', (w) => w.driver || 'any'],
          ['Tasks', (w) => h('span', { title: `${w.running} running of ${w.tasks} assigned` }, `${w.running}/${w.tasks}`)],
          ['Heartbeat', heartbeat],
          ['Capacity', capacity],
          ['Address', (w) => h('span', { class: 'mono wrap' }, w.address)],
          ['Action', (w) => drainButton(w, ctx, (m) => fill(error, m))],
        ],
        workers,
        'No workers have joined yet: start an agent (`mycluster agent`).',
        (w) => ({ dataset: { worker: w.worker, status: w.status } }),
      ),
    );
  }

  // Heartbeat ages move without events: re-read every few seconds too.
  return { refresh, every: 5, concerns: (e) => e.topic === 'worker' || e.topic === 'task' };
}

export function workerView(container, args, ctx) {
  const name = args[0] || '';
  const path = `/api/v1/workers/${ctx.api.seg(name)}`;
  const details = h('div', { class: 'panel', id: 'worker-details' }, h('p', { class: 'hint' }, 'Loading…'));
  const error = h('p', { class: 'error', role: 'alert' });
  const showFinished = h('input', { type: 'checkbox', id: 'show-finished' });
  const tasks = h('div', { id: 'worker-tasks' });
  let lastTasks = [];
  showFinished.addEventListener('change', () => drawTasks());
  fill(
    container,
    h('p', null, h('a', { href: '#/workers' }, '← Workers')),
    h('h1', { tabindex: '-1' }, `Worker ${name}`),
    details,
    error,
    h('h2', null, 'Tasks'),
    h('p', null, h('label', null, showFinished, ' Show finished tasks')),
    tasks,
  );

  function drawTasks() {
    const shown = showFinished.checked ? lastTasks : lastTasks.filter((t) => LIVE_STATES.includes(t.state));
    fill(tasks, table(`Tasks on ${name}`, taskColumns('worker'), shown, 'No live tasks on this worker.', taskRow));
  }

  async function refresh() {
    let w;
    try {
      w = await ctx.api.get(path);
    } catch (e) {
      if (e instanceof ApiError && e.code === 404) {
        fill(details, h('p', { class: 'error' }, `No worker named ${name} (it may have been removed).`));
        fill(tasks);
        return;
      }
      throw e;
    }
    lastTasks = await ctx.api.get(`/api/v1/tasks?worker=${ctx.api.seg(name)}`);
    const labels = Object.entries(w.labels || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    fill(
      details,
      h(
        'dl',
        { class: 'facts', dataset: { status: w.status } },
        h('dt', null, 'Status'), h('dd', { id: 'worker-status' }, statusCell(w)),
        h('dt', null, 'Tasks'), h('dd', null, `${w.running} running of ${w.tasks} assigned`),
        h('dt', null, 'Heartbeat'), h('dd', null, heartbeat(w)),
        h('dt', null, 'Capacity'), h('dd', null, capacity(w)),
        h('dt', null, 'Driver'), h('dd', null, w.driver || 'any'),
        h('dt', null, 'Address'), h('dd', { class: 'mono' }, w.address),
        h('dt', null, 'Host'), h('dd', { class: 'mono' }, w.host || '—'),
        h('dt', null, 'Labels'), h('dd', null, labels || '—'),
        h('dt', null, 'Registered'), h('dd', null, when(w.registered_at)),
        h('dt', null, 'Agent instance'), h('dd', { class: 'mono' }, w.instance || '—'),
        h('dt', null, 'Epoch'), h('dd', null, String(w.epoch)),
      ),
      h('div', { class: 'actions' }, drainButton(w, ctx, (m) => fill(error, m))),
    );
    drawTasks();
  }

  return { refresh, every: 5, concerns: (e) => e.worker === name || e.topic === 'task' };
}
