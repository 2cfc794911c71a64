// The services view (#/services): every service with its status, running/desired
// replicas, what it runs, its ports and its latest rollout; and the form that creates a
// service (`POST /api/v1/service`).

import { argv, badge, field, fill, h, ports, route, runs, table } from './dom.js';

/** Live tasks of a service that its agents report running. */
export function runningCount(tasks, name) {
  return tasks.filter((t) => t.service === name && t.state === 'running' && t.desired_state === 'running').length;
}

/** One word for a service: stopped, paused, updating, running or converging. */
export function serviceStatus(service, running, rollout) {
  if (service.replicas === 0) return 'stopped';
  if (rollout && rollout.state === 'paused') return 'paused';
  if (rollout && rollout.state === 'in_progress' && rollout.kind && rollout.kind !== 'create') return 'updating';
  return running >= service.replicas ? 'running' : 'converging';
}

function rolloutCell(rollout) {
  if (!rollout) return '';
  const parts = [badge(rollout.state), ` v${rollout.version}`];
  if (rollout.kind) parts.push(` (${rollout.kind})`);
  if (rollout.state === 'in_progress') parts.push(` ${rollout.updated}/${rollout.total}`);
  return h('span', null, parts);
}

export function servicesView(container, _args, ctx) {
  const list = h('div', { id: 'services-list', 'aria-live': 'polite' }, h('p', { class: 'hint' }, 'Loading…'));
  const form = createForm(ctx);
  let known = [];
  fill(
    container,
    h('h1', { tabindex: '-1' }, 'Services'),
    list,
    h('h2', { id: 'create-title' }, 'Create a service'),
    form,
  );
  form.knownNames = () => known;

  async function refresh() {
    const [services, tasks] = await Promise.all([
      ctx.api.get('/api/v1/services'),
      ctx.api.get('/api/v1/tasks'),
    ]);
    const rollouts = await Promise.all(
      services.map((s) => ctx.api.get(`/api/v1/service/${ctx.api.seg(s.service)}/rollout`).catch(() => null)),
    );
    known = services.map((s) => s.service);
    const rows = services.map((service, i) => {
      const running = runningCount(tasks, service.service);
      return { service, running, rollout: rollouts[i], status: serviceStatus(service, running, rollouts[i]) };
    });
    fill(
      list,
      table(
        'Services',
        [
          ['Service', (r) => h('a', { href: route('service', r.service.service) }, r.service.service)],
          ['Status', (r) => badge(r.status)],
          [
            'Running',
            (r) => h('span', { class: 'count', title: `${r.running} running of ${r.service.replicas} wanted` },
              `${r.running}/${r.service.replicas}`),
          ],
          ['Runs', (r) => h('span', { class: 'runs mono' }, runs(r.service))],
          ['Ports', (r) => ports(r.service.ports) || '—'],
          ['Rollout', (r) => rolloutCell(r.rollout)],
        ],
        rows,
        'No services yet: create one below.',
        (r) => ({ dataset: { service: r.service.service, status: r.status, running: r.running, desired: r.service.replicas } }),
      ),
    );
  }

  return { refresh, concerns: (e) => e.topic !== 'worker' || e.type === 'worker_status' };
}

/** The body of `POST /api/v1/service` the form describes, or a message saying what is wrong. */
export function requestOf(values) {
  const name = values.name.trim();
  if (!name) throw new Error('Give the service a name.');
  const replicas = values.replicas === '' ? 1 : Number(values.replicas);
  if (!Number.isInteger(replicas) || replicas < 0) throw new Error('Replicas is a whole number, 0 or more.');
  const body = { service: name, replicas };
  const image = values.image.trim();
  const command = argv(values.command.trim());
  if (!image && !command.length) throw new Error('Give an image, a command, or both.');
  if (image) body.image = image;
  if (command.length) body.command = command;
  const target = values.target.trim();
  const published = values.published.trim();
  if (published && !target) throw new Error('A published port needs the target port the tasks listen on.');
  if (target) {
    const port = { target: Number(target) };
    if (published) port.published = Number(published);
    body.ports = [port];
  }
  const env = {};
  for (const line of values.env.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf('=');
    if (at <= 0) throw new Error(`Environment lines are KEY=value: "${line}" is not.`);
    env[line.slice(0, at)] = line.slice(at + 1);
  }
  if (Object.keys(env).length) body.env = env;
  return body;
}

function createForm(ctx) {
  const error = h('p', { class: 'error', role: 'alert', id: 'create-error' });
  const form = h(
    'form',
    { id: 'create-service', class: 'panel', 'aria-labelledby': 'create-title', method: 'post', novalidate: true },
    h(
      'div',
      { class: 'grid-form' },
      field('Name', { name: 'name', required: true, autocomplete: 'off', spellcheck: 'false' }),
      field('Image', { name: 'image', autocomplete: 'off', spellcheck: 'false' }, 'e.g. crccheck/hello-world (Docker workers)'),
      field('Replicas', { name: 'replicas', type: 'number', min: '0', value: '1', inputmode: 'numeric' }),
      field('Published port', { name: 'published', type: 'number', min: '1', max: '65535', inputmode: 'numeric' }, 'optional: reached through the ingress'),
      field('Target port', { name: 'target', type: 'number', min: '1', max: '65535', inputmode: 'numeric' }, 'the port the tasks listen on'),
      h(
        'div',
        { class: 'wide' },
        field('Command', { name: 'command', autocomplete: 'off', spellcheck: 'false' }, 'argv, split at spaces ("quotes" group); without an image, the process run'),
      ),
      h('div', { class: 'wide' }, field('Environment', { name: 'env', rows: '2', spellcheck: 'false' }, 'KEY=value, one a line (optional)')),
    ),
    h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'create-submit' }, 'Create service')),
    error,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    fill(error, '');
    const data = new FormData(form);
    const values = Object.fromEntries(['name', 'image', 'replicas', 'published', 'target', 'command', 'env']
      .map((k) => [k, String(data.get(k) ?? '')]));
    let body;
    try {
      body = requestOf(values);
    } catch (e) {
      fill(error, e.message);
      return;
    }
    if (form.knownNames && form.knownNames().includes(body.service)) {
      // A POST with a known name would change that service: the form only creates.
      fill(error, `A service named ${body.service} exists: change it from its page.`);
      return;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      // Answers at once (`wait=0`); the list shows the replicas start.
      await ctx.api.post('/api/v1/service?wait=0', body, { Prefer: 'return=minimal' });
      form.reset();
      ctx.notify(`Service ${body.service} created.`);
      ctx.refresh();
    } catch (e) {
      fill(error, `The manager refused: ${e}`);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
