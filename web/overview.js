// The overview: live workers, warm instances per runtime and per function, the
// invocation rate and error rate of the last minutes, totals.

import {h, fill, table, ms, bytes, pct, time, statusBadge, link, seg} from '/ui/dom.js';
import {rateBars} from '/ui/charts.js';

function stat(id, label) {
  return h('div', {class: 'stat'},
    h('span', {class: 'stat-label', id: `${id}-label`}, label),
    h('span', {class: 'stat-value', id, 'data-testid': id, 'aria-labelledby': `${id}-label`}, '—'));
}

function capacity(w) {
  if (w.capacity_mb) return `${w.used_mb ?? 0} / ${w.capacity_mb} MB`;
  const slots = (w.pools || []).reduce((a, p) => a + (p.max_instances || 0), 0);
  return slots ? `${slots} instance slots` : '—';
}

function heartbeat(ageMs) {
  if (ageMs === undefined || ageMs === null) return '—';
  return ageMs < 1000 ? `${Math.round(ageMs)} ms ago` : `${(ageMs / 1000).toFixed(1)} s ago`;
}

export function render(main) {
  const workers = h('section', {'aria-labelledby': 'workers-h'});
  const warm = h('section', {'aria-labelledby': 'warm-h'});
  const rate = h('div', {class: 'chart-box'});
  const recent = h('div');
  fill(main,
    h('h1', {}, 'Overview'),
    h('div', {class: 'stats'},
      stat('total-workers', 'Workers'),
      stat('total-active', 'Active invocations'),
      stat('total-warm', 'Warm instances'),
      stat('total-5m', 'Invocations, last 5 min'),
      stat('rate-now', 'Invocations/s, last 10 s'),
      stat('errors-5m', 'Error rate, last 5 min')),
    h('section', {class: 'card', 'aria-labelledby': 'rate-h'}, h('h2', {id: 'rate-h'}, 'Invocations per second'), rate),
    h('div', {class: 'two'},
      h('div', {class: 'card'}, h('h2', {id: 'workers-h'}, 'Workers'), workers),
      h('div', {class: 'card'}, h('h2', {id: 'warm-h'}, 'Warm instances'), warm)),
    h('section', {class: 'card', 'aria-labelledby': 'recent-h'}, h('h2', {id: 'recent-h'}, 'Latest invocations'), recent));
  const set = (id, v) => { const el = document.getElementById(id); if (el) el.textContent = v; };
  return {
    workers(status) {
      const list = status.workers || [];
      set('total-workers', status.totals?.workers ?? list.length);
      set('total-active', status.totals?.active_invocations ?? 0);
      set('total-warm', status.totals?.warm_instances ?? 0);
      fill(workers, table('Workers and their heartbeats', ['Worker', 'Backend', 'Heartbeat', 'Active', 'Capacity'],
        list.map((w) => [w.id, w.backend || '—', heartbeat(w.heartbeat_age_ms),
          h('span', {'data-testid': `active-${w.id}`}, String(w.active_invocations)), capacity(w)]),
        'No worker is connected.'));
      const pools = list.flatMap((w) => (w.pools || []).map((p) => ({...p, worker: w.id})));
      const byRuntime = {};
      for (const p of pools) {
        const r = (byRuntime[p.runtime] ||= {idle: 0, busy: 0});
        r.idle += p.idle; r.busy += p.busy;
      }
      fill(warm,
        table('Per runtime', ['Runtime', 'Idle', 'Busy'],
          Object.entries(byRuntime).map(([r, c]) => [r, String(c.idle), String(c.busy)]), 'No warm instance.'),
        pools.length ? table('Per function', ['Function', 'Version', 'Runtime', 'Idle', 'Busy', 'Queued', 'Worker'],
          pools.map((p) => [link(`#/functions/${seg(p.function)}`, p.function), `v${p.version}`, p.runtime,
            String(p.idle), String(p.busy), String(p.queued ?? 0), p.worker])) : null);
    },
    invocations(data) {
      const b = data.buckets || [];
      const last = b[b.length - 1];
      set('total-5m', `${data.totals.invocations}${data.sampled ? '+' : ''}`);
      set('rate-now', last ? (last.n / data.bucket_s).toFixed(1) : '0');
      set('errors-5m', data.totals.invocations ? pct(data.totals.errors / data.totals.invocations) : '—');
      fill(rate, rateBars(b, data.bucket_s, 'Invocations per second over the last 5 minutes; failures in red'));
      fill(recent, table('Newest invocations of the last 5 minutes', ['Started', 'Function', 'Status', 'Duration', 'Start', 'Memory peak'],
        data.recent.map((i) => [time(i.started_at), link(`#/functions/${seg(i.function)}`, i.function),
          h('a', {href: `#/invocations/${seg(i.id)}`, 'aria-label': `invocation ${i.id}: ${i.status}`}, statusBadge(i.status)),
          ms(i.duration_ms), i.cold_start ? 'cold' : 'warm', bytes(i.memory_peak_bytes)]),
        'No invocation in the last 5 minutes.'));
    },
  };
}
