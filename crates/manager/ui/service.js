// One service (#/service/<name>): what it runs, its tasks, its rollout's progress, its
// kept versions and its recent logs, and the actions: scale, update the image, restart,
// roll back and delete (the last after a confirmation).

import { ApiError } from './api.js';
import { action, badge, field, fill, h, ports, route, runs, table, when } from './dom.js';
import { runningCount, serviceStatus } from './services.js';

const LIVE_STATES = ['pending', 'assigned', 'starting', 'running'];

/** The columns of a task table; on a worker's page the first says which service. */
export function taskColumns(show) {
  const columns = [
    ['Slot', (t) => String(t.slot)],
    ['State', (t) => badge(t.state)],
    ['Desired', (t) => t.desired_state],
    ['Worker', (t) => (t.worker ? h('a', { href: route('worker', t.worker) }, t.worker) : '—')],
    ['Health', (t) => (t.health ? badge(t.health) : '—')],
    ['Message', (t) => h('span', { class: 'wrap' }, [t.message, t.error ? ` — ${t.error}` : '', t.health_message ? ` (${t.health_message})` : ''])],
    ['Updated', (t) => when(t.updated_at)],
    ['Task', (t) => h('span', { class: 'mono' }, t.id)],
  ];
  if (show === 'worker') {
    columns[0] = ['Service', (t) => h('a', { href: route('service', t.service) }, `${t.service}.${t.slot}`)];
  }
  return columns;
}

export function taskRow(t) {
  return { dataset: { task: t.id, state: t.state, worker: t.worker || '' } };
}

export function serviceView(container, args, ctx) {
  const name = args[0] || '';
  const base = `/api/v1/service/${ctx.api.seg(name)}`;
  const heading = h('h1', { tabindex: '-1' }, `Service ${name}`);
  const summary = h('div', { class: 'panel', id: 'service-summary' }, h('p', { class: 'hint' }, 'Loading…'));
  const actionError = h('p', { class: 'error', role: 'alert', id: 'action-error' });
  const actions = h('div', { class: 'panel', id: 'service-actions' });
  const rollout = h('div', { class: 'panel', id: 'service-rollout' });
  const showFinished = h('input', { type: 'checkbox', id: 'show-finished' });
  const tasks = h('div', { id: 'service-tasks' });
  const versions = h('div', { id: 'service-versions' });
  const logs = h('pre', { class: 'logs', id: 'service-logs', tabindex: '0', 'aria-label': 'Recent logs' }, 'Loading…');
  let service = null;
  let lastTasks = [];
  showFinished.addEventListener('change', () => drawTasks());

  fill(
    container,
    h('p', null, h('a', { href: '#/services' }, '← Services')),
    heading,
    summary,
    h('h2', null, 'Actions'),
    actions,
    actionError,
    h('h2', null, 'Rollout'),
    rollout,
    h('h2', null, 'Tasks'),
    h('p', null, h('label', null, showFinished, ' Show finished tasks')),
    tasks,
    h('h2', null, 'Versions'),
    versions,
    h('h2', null, 'Recent logs'),
    logs,
  );

  /** Runs an action; its failure is shown beside the buttons. `leaving`: back to the list. */
  async function act(what, run, leaving) {
    fill(actionError, '');
    try {
      await run();
      ctx.notify(what, false, leaving);
      if (leaving) location.hash = '#/services';
      else ctx.refresh();
    } catch (e) {
      fill(actionError, `${e}`);
    }
  }

  function drawActions() {
    const replicas = field('Replicas', { type: 'number', min: '0', value: String(service.replicas), name: 'replicas', inputmode: 'numeric' });
    const scale = h('form', { class: 'inline', id: 'scale-form', method: 'post', novalidate: true }, replicas, h('button', { type: 'submit' }, 'Scale'));
    scale.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = Number(scale.querySelector('input').value);
      act(`Service ${name} scaled to ${value}.`, () => ctx.api.patch(base, { replicas: value }));
    });
    const image = field('Image', { value: service.image || '', name: 'image', spellcheck: 'false', autocomplete: 'off' });
    const update = h('form', { class: 'inline', id: 'image-form', method: 'post', novalidate: true }, image, h('button', { type: 'submit' }, 'Update image'));
    update.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = update.querySelector('input').value.trim();
      if (!value) {
        fill(actionError, 'Give the new image.');
        return;
      }
      act(`Service ${name} is rolling out ${value}.`, () => ctx.api.patch(base, { image: value }));
    });
    const confirm = h(
      'div',
      { class: 'confirm', id: 'delete-confirm', hidden: true, role: 'group', 'aria-label': 'Confirm the deletion' },
      h('p', null, `Delete service ${name} and stop its ${service.replicas} replicas? This cannot be undone.`),
      h(
        'div',
        { class: 'actions' },
        action('Yes, delete it', () => act(`Service ${name} deleted.`, () => ctx.api.del(base), true), { class: 'danger', id: 'delete-yes' }),
        action('Cancel', () => {
          confirm.hidden = true;
          deleteButton.focus();
        }, { class: 'secondary', id: 'delete-cancel' }),
      ),
    );
    const deleteButton = action('Delete…', () => {
      confirm.hidden = false;
      confirm.querySelector('#delete-cancel').focus();
    }, { class: 'danger', id: 'delete' });
    fill(
      actions,
      h('div', { class: 'actions' }, scale, update),
      h(
        'div',
        { class: 'actions' },
        action('Restart', () => act(`Service ${name} is restarting (every task replaced).`, () => ctx.api.post(`${base}/restart`)), { id: 'restart' }),
        action('Roll back', () => act(`Service ${name} is rolling back to its previous version.`, () => ctx.api.post(`${base}/rollback`)), { id: 'rollback' }),
        deleteButton,
      ),
      confirm,
    );
  }

  function drawTasks() {
    const shown = showFinished.checked ? lastTasks : lastTasks.filter((t) => LIVE_STATES.includes(t.state));
    fill(tasks, table(`Tasks of ${name}`, taskColumns('service'), shown, 'No live tasks.', taskRow));
  }

  function drawSummary(doc, running, state) {
    fill(
      summary,
      h(
        'dl',
        { class: 'facts' },
        h('dt', null, 'Status'), h('dd', null, badge(state), ` ${running}/${doc.replicas} running`),
        h('dt', null, 'Runs'), h('dd', { class: 'mono' }, runs(doc)),
        h('dt', null, 'Image'), h('dd', null, doc.image || '—'),
        h('dt', null, 'Command'), h('dd', { class: 'mono' }, doc.command ? doc.command.join(' ') : '—'),
        h('dt', null, 'Ports'), h('dd', null, ports(doc.ports) || '—'),
        h('dt', null, 'Environment'), h('dd', { class: 'mono' }, Object.entries(doc.env || {}).map(([k, v]) => `${k}=${v}`).join(' ') || '—'),
        h('dt', null, 'Last updated'), h('dd', null, when(doc.last_updated)),
      ),
    );
  }

  function drawRollout(doc) {
    if (!doc) {
      fill(rollout, h('p', { class: 'hint' }, 'No rollout recorded.'));
      return;
    }
    fill(
      rollout,
      h(
        'dl',
        { class: 'facts' },
        h('dt', null, 'State'), h('dd', null, badge(doc.state)),
        h('dt', null, 'Kind'), h('dd', null, doc.kind || '—'),
        h('dt', null, 'Version'), h('dd', null, doc.from_version ? `${doc.from_version} → ${doc.version}` : String(doc.version)),
        h('dt', { id: 'rollout-progress-label' }, 'Progress'),
        h(
          'dd',
          null,
          h('progress', { max: String(Math.max(doc.total, 1)), value: String(doc.updated), 'aria-labelledby': 'rollout-progress-label' }),
          ` ${doc.updated} of ${doc.total} slots updated`,
        ),
        h('dt', null, 'Failures'), h('dd', null, String(doc.failures)),
        doc.reason ? [h('dt', null, 'Reason'), h('dd', null, doc.reason)] : null,
        h('dt', null, 'Started'), h('dd', null, when(doc.started_at)),
      ),
    );
  }

  function drawVersions(doc) {
    fill(
      versions,
      table(
        `Versions of ${name}`,
        [
          ['Version', (v) => (v.version === doc.current ? `${v.version} (current)` : String(v.version))],
          ['Cause', (v) => v.cause],
          ['Runs', (v) => h('span', { class: 'runs mono' }, runs(v.spec))],
          ['Replicas', (v) => String(v.spec.replicas)],
          ['Created', (v) => when(v.created_at)],
        ],
        doc.versions,
        'No versions kept.',
      ),
    );
  }

  async function drawLogs() {
    try {
      const text = await ctx.api.get(`${base}/logs?tail=50`, { Accept: 'text/plain' });
      fill(logs, typeof text === 'string' && text.trim() ? text : 'No log lines yet.');
    } catch (e) {
      if (e instanceof ApiError && e.code === 404) fill(logs, 'Logs unavailable: this manager does not serve logs.');
      else fill(logs, `Logs unavailable: ${e}`);
    }
  }

  async function refresh() {
    let doc;
    try {
      doc = await ctx.api.get(base);
    } catch (e) {
      if (e instanceof ApiError && e.code === 404) {
        service = null;
        fill(summary, h('p', { class: 'error' }, `No service named ${name} (it may have been deleted).`));
        fill(actions);
        fill(rollout);
        fill(tasks);
        fill(versions);
        fill(logs, '');
        return;
      }
      throw e;
    }
    const [taskDocs, rolloutDoc, versionsDoc] = await Promise.all([
      ctx.api.get(`/api/v1/tasks?service=${ctx.api.seg(name)}`),
      ctx.api.get(`${base}/rollout`).catch(() => null),
      ctx.api.get(`${base}/versions`).catch(() => null),
    ]);
    const first = service === null;
    const changed = !service || service.replicas !== doc.replicas || service.image !== doc.image;
    service = doc;
    lastTasks = taskDocs;
    const running = runningCount(taskDocs, name);
    drawSummary(doc, running, serviceStatus(doc, running, rolloutDoc));
    // The action forms are redrawn only when what they show changed, so typing in
    // them is not lost to a live update.
    if (first || changed) drawActions();
    drawRollout(rolloutDoc);
    drawTasks();
    if (versionsDoc) drawVersions(versionsDoc);
    // Not awaited: a slow agent must not hold up the live updates of every view (the
    // manager bounds the request; one at a time).
    loadLogs();
  }

  let logsLoading = false;
  function loadLogs() {
    if (logsLoading) return;
    logsLoading = true;
    drawLogs().finally(() => {
      logsLoading = false;
    });
  }

  return {
    refresh,
    concerns: (e) => e.service === name || e.topic === 'worker',
  };
}
