// A function's page: settings, an invoke form (as Lambda's test tab), its last 50
// invocations (live), duration over time, a memory-peak histogram with the limit, the
// AutoTuner's advice with "Apply" (when this hearth has a tuner), delete.

import {api} from '/ui/api.js';
import {h, fill, table, ms, bytes, time, statusBadge, seg} from '/ui/dom.js';
import {line, histogram} from '/ui/charts.js';

const SHOWN = 50;

function dl(pairs) {
  return h('dl', {class: 'facts'}, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function outcome(inv) {
  const logs = [inv.stdout, inv.stderr].filter(Boolean).join(inv.stdout && inv.stderr ? '\n--- stderr ---\n' : '');
  return h('div', {class: 'outcome'},
    dl([
      ['Status', statusBadge(inv.status)],
      ['Duration', ms(inv.duration_ms)],
      ['Handler', ms(inv.handler_duration_ms)],
      ['Start', inv.cold_start ? 'cold' : 'warm'],
      ['Memory peak', `${bytes(inv.memory?.peak_bytes)} of ${inv.memory?.limit_mb} MB`],
      ['Invocation', h('a', {href: `#/invocations/${seg(inv.id)}`}, inv.id)],
    ]),
    h('h3', {}, 'Result'),
    h('pre', {class: 'result', 'data-testid': 'result'}, JSON.stringify(inv.result, null, 2) ?? 'null'),
    inv.error ? [h('h3', {}, 'Error'), h('pre', {class: 'error-box'}, `${inv.error.type}: ${inv.error.message}\n${inv.error.trace || ''}`)] : null,
    h('h3', {}, 'Logs'),
    h('pre', {class: 'logs', 'data-testid': 'logs'}, logs || '(no output)'),
    inv.truncated ? h('p', {class: 'muted'}, 'Logs were cut; the invocation page has them in full.') : null);
}

export function render(main, ctx, route) {
  const name = route.arg;
  const head = h('div', {}, h('h1', {}, name));
  const facts = h('div', {class: 'card'}, 'Loading…');
  const event = h('textarea', {id: 'event', rows: 5, spellcheck: 'false', class: 'code'});
  event.value = '{}';
  const invokeButton = h('button', {type: 'submit'}, 'Invoke');
  const result = h('div', {role: 'status', 'aria-live': 'polite'});
  const invokeForm = h('form', {class: 'card', 'aria-labelledby': 'invoke-h'},
    h('h2', {id: 'invoke-h'}, 'Test'),
    h('label', {for: 'event'}, 'Event'), event,
    h('small', {class: 'muted'}, 'Any JSON value.'),
    h('div', {}, invokeButton), result);
  const tuning = h('section', {class: 'card', 'aria-labelledby': 'tuning-h', hidden: true});
  const recent = h('div');
  const durations = h('div', {class: 'chart-box'});
  const memory = h('div', {class: 'chart-box'});
  const dialog = h('dialog', {'aria-labelledby': 'delete-h'});
  fill(main, head, facts, invokeForm, tuning,
    h('div', {class: 'two'},
      h('section', {class: 'card', 'aria-labelledby': 'dur-h'}, h('h2', {id: 'dur-h'}, 'Duration over time'), durations),
      h('section', {class: 'card', 'aria-labelledby': 'mem-h'}, h('h2', {id: 'mem-h'}, 'Memory peak'), memory)),
    h('section', {class: 'card', 'aria-labelledby': 'recent-h'}, h('h2', {id: 'recent-h'}, `Last ${SHOWN} invocations`), recent),
    dialog);

  let fn = null;
  let newest = null;
  let refresh = null;
  // What the AutoTuner panel last said: it survives the panel's reload after an apply.
  let tuningSaid = '';
  const loadFunction = async (withTuning = true) => {
    try {
      fn = await api('GET', `/v1/functions/${encodeURIComponent(name)}`);
    } catch (e) {
      fill(facts, h('p', {class: 'error', role: 'alert'}, e.message));
      return;
    }
    const s = fn.stats || {};
    fill(facts,
      dl([['Runtime', fn.runtime], ['Version', `v${fn.version}`], ['Memory', `${fn.memory_mb} MB`],
        ['Timeout', ms(fn.timeout_ms)], ['Updated', new Date(fn.updated_at).toLocaleString()],
        ['Invocations (all)', String(s.invocations ?? 0)], ['Errors (all)', String(s.errors ?? 0)],
        ['p95 (all)', ms(s.p95_duration_ms)]]),
      h('div', {class: 'actions'},
        h('a', {class: 'button', href: `#/deploy/${seg(name)}`}, 'Deploy a new version'),
        h('button', {type: 'button', class: 'danger', onclick: confirmDelete}, 'Delete')));
    if (withTuning) loadTuning();
  };

  const loadTuning = async () => {
    if (!ctx.features.tuning) return;
    let advice;
    try {
      advice = await api('GET', `/v1/functions/${encodeURIComponent(name)}/tuning`);
    } catch (e) {
      tuning.hidden = e.status === 404;
      if (!tuning.hidden) fill(tuning, h('h2', {id: 'tuning-h'}, 'AutoTuner'), h('p', {class: 'error'}, e.message));
      return;
    }
    tuning.hidden = false;
    const rec = advice.recommended_memory_mb;
    const apply = h('button', {type: 'button'}, 'Apply');
    const note = h('p', {role: 'status'}, tuningSaid);
    apply.disabled = rec === null || rec === undefined || rec === advice.current_memory_mb;
    apply.addEventListener('click', async () => {
      apply.disabled = true;
      try {
        const updated = await api('POST', `/v1/functions/${encodeURIComponent(name)}/tuning/apply`, {json: {memory_mb: advice.current_memory_mb}});
        tuningSaid = `Applied: version ${updated.version} has ${updated.memory_mb} MB.`;
        note.textContent = tuningSaid;
        loadFunction();
      } catch (e) {
        note.textContent = e.message;
        apply.disabled = false;
      }
    });
    fill(tuning, h('h2', {id: 'tuning-h'}, 'AutoTuner'),
      dl([['Now', `${advice.current_memory_mb} MB`], ['Recommended', rec ? `${rec} MB` : '— (not enough data yet)'],
        ['Class', advice.class || '—'], ['Confidence', advice.confidence || '—'],
        ['Saving', advice.saving_gb_s_per_1000 !== undefined ? `${advice.saving_gb_s_per_1000} GB-s per 1000 calls` : '—']]),
      h('p', {}, advice.reason || ''), apply, note);
  };

  function confirmDelete() {
    const yes = h('button', {type: 'button', class: 'danger'}, `Delete ${name}`);
    const no = h('button', {type: 'button'}, 'Cancel');
    const err = h('p', {class: 'error', role: 'alert'});
    fill(dialog, h('h2', {id: 'delete-h'}, `Delete ${name}?`),
      h('p', {}, 'All its versions and its invocation history go; its warm instances are stopped.'),
      h('div', {class: 'actions'}, no, yes), err);
    no.addEventListener('click', () => dialog.close());
    yes.addEventListener('click', async () => {
      try {
        await api('DELETE', `/v1/functions/${encodeURIComponent(name)}`);
        dialog.close();
        ctx.go('#/functions');
      } catch (e) {
        err.textContent = e.message;
      }
    });
    dialog.showModal();
    no.focus();
  }

  invokeForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    let value;
    try {
      value = JSON.parse(event.value.trim() || '{}');
    } catch (err) {
      fill(result, h('p', {class: 'error'}, `The event is not JSON: ${err.message}`));
      return;
    }
    invokeButton.disabled = true;
    fill(result, h('p', {class: 'muted'}, 'Invoking…'));
    try {
      const inv = await api('POST', `/v1/functions/${encodeURIComponent(name)}/invoke`,
        {json: value});
      fill(result, outcome(inv));
    } catch (err) {
      fill(result, h('p', {class: 'error'}, `Invoke failed: ${err.message}`));
    } finally {
      invokeButton.disabled = false;
    }
  });

  loadFunction();
  return {
    invocations(data) {
      const list = data.recent || [];
      // New calls move the totals and maybe the version: refresh them, at most every 2 s.
      if (newest !== null && list[0]?.id !== newest && !refresh) {
        refresh = setTimeout(() => { refresh = null; loadFunction(false); }, 2000);
      }
      newest = list[0]?.id ?? '';
      fill(recent, table(`The ${SHOWN} newest invocations of ${name}`, ['Started', 'Invocation', 'Status', 'Duration', 'Start', 'Memory peak', 'Version'],
        list.slice(0, SHOWN).map((i) => [time(i.started_at), h('a', {href: `#/invocations/${seg(i.id)}`}, i.id),
          statusBadge(i.status), ms(i.duration_ms), i.cold_start ? 'cold' : 'warm', bytes(i.memory_peak_bytes), `v${i.version}`]),
        'Not invoked yet.'));
      const finished = list.filter((i) => !['queued', 'running'].includes(i.status)).reverse();
      fill(durations, line(finished.map((i) => i.duration_ms), `Duration of the last ${finished.length} invocations`, ms, durations.clientWidth));
      const limit = (fn?.memory_mb || list[0]?.memory_limit_mb || 0) * 1024 * 1024;
      fill(memory, histogram(finished.map((i) => i.memory_peak_bytes), limit, 'Memory peak per invocation, with the limit', bytes, memory.clientWidth));
    },
    destroy() { clearTimeout(refresh); },
  };
}
