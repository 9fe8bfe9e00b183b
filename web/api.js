// Calls to hearth's API with the session cookie (sent by the browser) and the CSRF
// token (kept only in memory) on anything that changes state. The API key itself is
// never kept by the page.

let csrfToken = null;
let sessionEnded = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setCsrf(token) { csrfToken = token; }
export function onSessionEnd(fn) { sessionEnded = fn; }

/** method, path, {json, body, text}: the parsed answer, or throws ApiError. */
export async function api(method, path, opts = {}) {
  const headers = {};
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, {method, headers, body, credentials: 'same-origin'});
  } catch (e) {
    throw new ApiError(0, 'network', `hearth did not answer (${e.message})`);
  }
  if (response.status === 401 && path.startsWith('/v1/')) {
    sessionEnded('Your session has expired or was signed out: sign in again.');
  }
  if (!response.ok) {
    let error = {};
    try { error = (await response.json()).error || {}; } catch { /* not JSON */ }
    throw new ApiError(response.status, error.code || `http_${response.status}`,
      error.message || response.statusText);
  }
  if (response.status === 204) return null;
  return opts.text ? response.text() : response.json();
}
