// One invocation: result, error and trace, measurements, full logs, outputs to
// download.

import {api} from '/ui/api.js';
import {h, fill, ms, bytes, statusBadge, seg} from '/ui/dom.js';

export function render(main, ctx, route) {
  const id = route.arg;
  const body = h('div', {}, 'Loading…');
  fill(main, h('h1', {}, `Invocation ${id}`), body);
  (async () => {
    let inv;
    try {
      inv = await api('GET', `/v1/invocations/${encodeURIComponent(id)}`);
    } catch (e) {
      fill(body, h('p', {class: 'error', role: 'alert'}, e.message));
      return;
    }
    const logs = h('pre', {class: 'logs', 'data-testid': 'full-logs'}, 'Loading…');
    const rows = [
      ['Function', h('a', {href: `#/functions/${seg(inv.function)}`}, `${inv.function} v${inv.version}`)],
      ['Status', statusBadge(inv.status)],
      ['Started', new Date(inv.started_at).toLocaleString()],
      ['Duration', ms(inv.duration_ms)], ['Handler', ms(inv.handler_duration_ms)],
      ['Start', inv.cold_start ? 'cold' : 'warm'], ['Worker', inv.worker],
      ['Exit code', inv.exit_code ?? '—'],
      ['Memory peak', `${bytes(inv.memory?.peak_bytes)} of ${inv.memory?.limit_mb} MB (max RSS ${bytes(inv.memory?.max_rss_bytes)})`],
      ['CPU', `${ms(inv.cpu?.user_ms)} user, ${ms(inv.cpu?.system_ms)} system`],
      ['Disk I/O', `${bytes(inv.io?.read_bytes)} read, ${bytes(inv.io?.write_bytes)} written`],
    ];
    fill(body,
      h('section', {class: 'card'}, h('dl', {class: 'facts'}, rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))),
      h('section', {class: 'card', 'aria-labelledby': 'res-h'}, h('h2', {id: 'res-h'}, 'Result'),
        h('pre', {class: 'result'}, JSON.stringify(inv.result, null, 2) ?? 'null')),
      inv.error ? h('section', {class: 'card', 'aria-labelledby': 'err-h'}, h('h2', {id: 'err-h'}, 'Error'),
        h('p', {}, h('strong', {}, inv.error.type), ': ', inv.error.message),
        h('pre', {class: 'error-box'}, inv.error.trace || '(no trace)')) : null,
      h('section', {class: 'card', 'aria-labelledby': 'logs-h'}, h('h2', {id: 'logs-h'}, 'Logs'), logs),
      h('section', {class: 'card', 'aria-labelledby': 'out-h'}, h('h2', {id: 'out-h'}, 'Outputs'),
        inv.outputs?.length
          ? h('ul', {}, inv.outputs.map((o) => h('li', {},
            h('a', {href: `/v1/invocations/${encodeURIComponent(inv.id)}/outputs/${o.path.split('/').map(encodeURIComponent).join('/')}`, download: o.path.split('/').pop()}, o.path),
            ` (${bytes(o.size)})`)))
          : h('p', {class: 'muted'}, 'This invocation wrote no output files.')));
    if (!inv.status || ['queued', 'running'].includes(inv.status)) {
      logs.textContent = '(not finished yet)';
      return;
    }
    try {
      const text = await api('GET', `/v1/invocations/${encodeURIComponent(inv.id)}/logs`, {text: true});
      logs.textContent = text || '(no output)';
    } catch (e) {
      logs.textContent = `(logs unavailable: ${e.message})`;
    }
  })();
  return {};
}
