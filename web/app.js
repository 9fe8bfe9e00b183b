// The dashboard's shell: session (sign in / out), the hash router, and the one live
// event stream per tab (`/v1/events`) whose `workers` and `invocations` events go to
// the view on screen.

import {api, setCsrf, onSessionEnd} from '/ui/api.js';
import {fill} from '/ui/dom.js';
import * as overview from '/ui/overview.js';
import * as functions from '/ui/functions.js';
import * as functionPage from '/ui/function.js';
import * as invocationPage from '/ui/invocation.js';

const $ = (id) => document.getElementById(id);
const main = $('main');
const ctx = {features: {}, workers: null, invocations: null, go: (hash) => { location.hash = hash; }};
let view = null;
let stream = null;
let streamKey = null;
let signedIn = false;

function setLive(text, state) {
  const live = $('live');
  live.textContent = text;
  live.className = `live ${state}`;
}

/** Opens the tab's event stream (or keeps it when it already fits this view). */
function follow(fn) {
  const key = fn || '';
  if (stream && streamKey === key) return;
  closeStream();
  streamKey = key;
  ctx.workers = null;
  ctx.invocations = null;
  stream = new EventSource(fn ? `/v1/events?function=${encodeURIComponent(fn)}` : '/v1/events');
  stream.addEventListener('open', () => setLive('live', 'on'));
  stream.addEventListener('workers', (e) => {
    ctx.workers = JSON.parse(e.data);
    view?.workers?.(ctx.workers);
  });
  stream.addEventListener('invocations', (e) => {
    ctx.invocations = JSON.parse(e.data);
    view?.invocations?.(ctx.invocations);
  });
  stream.addEventListener('session', () => endSession('Your session has expired: sign in again.'));
  stream.addEventListener('error', async () => {
    setLive('reconnecting…', 'off');
    // A stream refused for want of a session does not come back by itself.
    if (stream && stream.readyState === EventSource.CLOSED) {
      closeStream();
      await checkSession();
      if (signedIn) follow(fn);
    }
  });
}

function closeStream() {
  if (stream) stream.close();
  stream = null;
  streamKey = null;
}

function parseRoute() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'functions' && parts[1]) return {page: functionPage, arg: parts[1], fn: parts[1]};
  if (parts[0] === 'functions') return {page: functions, arg: null};
  if (parts[0] === 'deploy') return {page: functions, arg: null, deploy: parts[1] || ''};
  if (parts[0] === 'invocations' && parts[1]) return {page: invocationPage, arg: parts[1]};
  return {page: overview, arg: null};
}

function route() {
  if (!signedIn) return;
  view?.destroy?.();
  const r = parseRoute();
  fill(main);
  for (const a of $('nav').querySelectorAll('a')) {
    const current = a.getAttribute('href') === (location.hash || '#/');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  follow(r.fn);
  view = r.page.render(main, ctx, r);
  if (ctx.workers) view?.workers?.(ctx.workers);
  if (ctx.invocations) view?.invocations?.(ctx.invocations);
}

function showApp(session) {
  signedIn = true;
  setCsrf(session.csrf_token);
  ctx.features = session.features || {};
  $('sign-in-view').hidden = true;
  $('nav').hidden = false;
  main.hidden = false;
  route();
}

function showSignIn(note) {
  signedIn = false;
  setCsrf(null);
  closeStream();
  view?.destroy?.();
  view = null;
  fill(main);
  main.hidden = true;
  $('nav').hidden = true;
  $('sign-in-view').hidden = false;
  $('sign-in-error').textContent = note || '';
  $('api-key').focus();
}

function endSession(note) {
  if (signedIn) showSignIn(note);
}

async function checkSession() {
  const session = await api('GET', '/ui/session');
  if (session.signed_in) {
    if (!signedIn) showApp(session);
  } else {
    showSignIn(signedIn ? 'Your session has expired: sign in again.' : '');
  }
}

$('sign-in-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('api-key');
  const button = e.submitter || e.target.querySelector('button');
  button.disabled = true;
  $('sign-in-error').textContent = '';
  try {
    const session = await api('POST', '/ui/session', {json: {api_key: input.value}});
    input.value = '';
    showApp(session);
  } catch (err) {
    $('sign-in-error').textContent = err.message;
    input.select();
  } finally {
    button.disabled = false;
  }
});

$('sign-out').addEventListener('click', async () => {
  try { await api('DELETE', '/ui/session'); } finally { showSignIn('Signed out.'); }
});

onSessionEnd(endSession);
window.addEventListener('hashchange', route);
checkSession().catch((e) => showSignIn(e.message));
