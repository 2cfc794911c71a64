// The dashboard's shell: sign in and out, the hash routes (#/services, #/service/<name>,
// #/workers, #/worker/<name>, #/map, #/events), and keeping the shown view live: each
// event that concerns it (or each poll tick) schedules one re-read of what it shows,
// debounced, never two at once.

import * as api from './api.js';
import * as live from './live.js';
import { fill, h } from './dom.js';
import { servicesView } from './services.js';
import { serviceView } from './service.js';
import { workersView, workerView } from './workers.js';
import { mapView } from './map.js';
import { eventsView } from './events.js';

const VIEWS = {
  services: servicesView,
  service: serviceView,
  workers: workersView,
  worker: workerView,
  map: mapView,
  events: eventsView,
};

/** Which top-level tab each view belongs to. */
const TAB = { services: 'services', service: 'services', workers: 'workers', worker: 'workers', map: 'map', events: 'events' };

const DEBOUNCE_MS = 250;
/** The most events the feed keeps. */
const KEEP_EVENTS = 500;

const $ = (id) => document.getElementById(id);

/** What the views share. */
const context = {
  api,
  /** The latest events, oldest first, by index without repeats. */
  events: [],
  mode: 'off',
  notify,
  refresh: () => schedule(true),
};

let current = null;
let timer = null;
let busy = false;
let again = false;
let ticker = null;

/** Set when a notice should outlive the next route change (an action that navigates). */
let keepNotice = false;

function notify(message, bad, sticky) {
  const box = $('notice');
  fill(box, message || '');
  box.classList.toggle('bad', Boolean(bad));
  keepNotice = Boolean(sticky);
}

/** Shows the sign-in form, with why when the manager refused. */
function showSignIn(error) {
  live.stop();
  stopView();
  $('top').hidden = true;
  fill($('view'));
  notify('');
  $('signin').hidden = false;
  fill($('signin-error'), error || '');
  setLive('off', 'Not signed in.');
  $('token').focus();
}

function refusedLater() {
  api.forget();
  showSignIn('The manager refused this token (it may have been changed): sign in again.');
}

async function signIn(event) {
  event.preventDefault();
  const input = $('token');
  const value = input.value.trim();
  // The field never keeps the secret once read.
  input.value = '';
  if (!value) {
    fill($('signin-error'), "Paste the cluster's API token.");
    input.focus();
    return;
  }
  const button = $('signin-submit');
  button.disabled = true;
  fill($('signin-error'), '');
  try {
    await api.check(value);
  } catch (e) {
    let why;
    if (e.code === 401) why = `The manager refused this token: ${e.message}.`;
    else if (e.code === 403) why = `The manager refused this token: ${e.message}.`;
    else why = `Cannot sign in: ${e}`;
    fill($('signin-error'), why);
    input.focus();
    return;
  } finally {
    button.disabled = false;
  }
  api.keep(value);
  enter();
}

function signOut() {
  api.forget();
  showSignIn('');
  fill($('signin-error'), 'Signed out.');
}

/** Signed in: the header, the live feed, and the view the URL names. */
function enter() {
  $('signin').hidden = true;
  $('top').hidden = false;
  context.events = [];
  api.clusterName().then((name) => fill($('cluster-name'), name ? `· ${name}` : ''));
  live.start({
    event: onEvent,
    stale: () => schedule(false),
    mode: setLive,
    refused: refusedLater,
  });
  show(true);
}

function setLive(mode, text) {
  context.mode = mode;
  const element = $('live');
  element.className = `live-${mode}`;
  fill(element, text);
  if (current && current.modeChanged) current.modeChanged(mode);
}

function onEvent(doc) {
  const events = context.events;
  if (events.length && typeof doc.index === 'number' && doc.index <= events[events.length - 1].index) {
    // Read again after following afresh (a 410): kept once, in index order.
    if (events.some((e) => e.index === doc.index)) return;
    const at = events.findIndex((e) => e.index > doc.index);
    events.splice(at, 0, doc);
  } else {
    events.push(doc);
  }
  if (events.length > KEEP_EVENTS) events.splice(0, events.length - KEEP_EVENTS);
  if (!current) return;
  if (current.event) current.event(doc);
  if (!current.concerns || current.concerns(doc)) schedule(false);
}

/** The route the hash names: `['service', 'web']`. */
function parse() {
  const hash = location.hash;
  if (!hash.startsWith('#/')) return ['services'];
  const parts = hash.slice(2).split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return parts.length && VIEWS[parts[0]] ? parts : ['services'];
}

function stopView() {
  if (ticker) clearInterval(ticker);
  ticker = null;
  if (timer) clearTimeout(timer);
  timer = null;
  current = null;
}

/** Builds the view the hash names and reads what it shows. */
function show(focus) {
  if (!api.token()) {
    showSignIn('');
    return;
  }
  stopView();
  const [name, ...args] = parse();
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === TAB[name]) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (keepNotice) keepNotice = false;
  else notify('');
  const container = h('div', { class: `view view-${name}`, id: `view-${name}` });
  fill($('view'), container);
  current = VIEWS[name](container, args, context);
  if (current.every) ticker = setInterval(() => schedule(false), current.every * 1000);
  schedule(true);
  if (focus) {
    const heading = container.querySelector('h1');
    if (heading) heading.focus();
  }
}

/** Re-reads the current view soon (at once when `now`), one read at a time. */
function schedule(now) {
  if (!current) return;
  if (timer) clearTimeout(timer);
  timer = setTimeout(run, now ? 0 : DEBOUNCE_MS);
}

async function run() {
  timer = null;
  if (!current) return;
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  const view = current;
  try {
    await view.refresh();
    if (view === current) fill($('updated'), `Updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (view === current && !(e instanceof api.ApiError && e.code === 401)) notify(String(e), true);
  } finally {
    busy = false;
    if (again) {
      again = false;
      schedule(false);
    }
  }
}

function boot() {
  api.onRefused(refusedLater);
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('skip').addEventListener('click', (event) => {
    // The hash is the route: the skip link moves the focus, not the URL.
    event.preventDefault();
    $('main').focus();
  });
  window.addEventListener('hashchange', () => {
    if (api.token()) show(true);
  });
  if (api.token()) enter();
  else showSignIn('');
}

boot();
