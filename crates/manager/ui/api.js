// The manager's API as the page calls it. The API token lives in this tab's
// sessionStorage only (never localStorage, a cookie, a URL or the console) and goes out
// in the Authorization header of each request; a 401 signs the page out. Failures come
// back as ApiError, carrying the manager's own `{"message", "code"}`.

const KEY = 'mycluster.token';

export class ApiError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }

  /** "message (HTTP code)", as the page shows it. */
  toString() {
    return this.code ? `${this.message} (HTTP ${this.code})` : this.message;
  }
}

let refused = () => {};

/** Called with the ApiError when the manager refuses the token the page holds. */
export function onRefused(handler) {
  refused = handler;
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function keep(value) {
  sessionStorage.setItem(KEY, value);
}

export function forget() {
  sessionStorage.removeItem(KEY);
}

/** The headers of an authenticated request. */
export function authorization(value) {
  return { Authorization: `Bearer ${value}` };
}

async function errorOf(response) {
  const text = await response.text().catch(() => '');
  try {
    const doc = JSON.parse(text);
    if (doc && typeof doc.message === 'string') return new ApiError(doc.message, doc.code || response.status);
  } catch {
    // Not the error document: show what came.
  }
  return new ApiError(text.trim() || response.statusText || 'the manager refused the request', response.status);
}

async function send(value, method, path, body, headers) {
  const init = {
    method,
    headers: { Accept: 'application/json', ...authorization(value), ...headers },
    cache: 'no-store',
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(`cannot reach the manager: ${e.message}`, 0);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/** Checks a token with a real request; throws the manager's refusal. */
export async function check(value) {
  return send(value, 'GET', '/api/v1/stats');
}

/** An authenticated request; a 401 also signs the page out. */
export async function call(method, path, body, headers) {
  const value = token();
  if (!value) {
    const error = new ApiError('not signed in', 401);
    refused(error);
    throw error;
  }
  try {
    return await send(value, method, path, body, headers);
  } catch (e) {
    if (e instanceof ApiError && e.code === 401) refused(e);
    throw e;
  }
}

export const get = (path, headers) => call('GET', path, undefined, headers);
export const post = (path, body, headers) => call('POST', path, body, headers);
export const patch = (path, body) => call('PATCH', path, body);
export const del = (path) => call('DELETE', path);

/** A path segment, encoded. */
export const seg = encodeURIComponent;

/** The cluster's name, from the open health endpoint (no token needed). */
export async function clusterName() {
  try {
    const response = await fetch('/healthz', { cache: 'no-store', credentials: 'omit' });
    const doc = await response.json();
    return typeof doc.cluster === 'string' ? doc.cluster : '';
  } catch {
    return '';
  }
}
