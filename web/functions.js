// The function list (invocations, error rate and latency over 24 h, warm count) and
// the deploy form: a zip upload, or one file written in the editor from the runtime's
// template. Deploying an existing name makes its next version.

import {api} from '/ui/api.js';
import {h, fill, table, ms, pct, link, seg} from '/ui/dom.js';
import {zip} from '/ui/zip.js';
import {TEMPLATES} from '/ui/templates.js';

function warmCounts(status) {
  const warm = {};
  for (const w of status?.workers || []) {
    for (const p of w.pools || []) warm[p.function] = (warm[p.function] || 0) + p.idle + p.busy;
  }
  return warm;
}

export function render(main, ctx, route) {
  if (route.deploy !== undefined) return deployForm(main, ctx, route.deploy);
  const list = h('div', {'aria-busy': 'true'}, 'Loading…');
  fill(main,
    h('div', {class: 'title-row'}, h('h1', {}, 'Functions'), h('a', {class: 'button', href: '#/deploy'}, 'Deploy a function')),
    h('section', {class: 'card'}, list));
  let rows = null;
  const draw = () => {
    if (!rows) return;
    list.removeAttribute('aria-busy');
    const warm = warmCounts(ctx.workers);
    fill(list, table('Functions, with their last 24 hours', ['Name', 'Runtime', 'Version', 'Memory', 'Invocations (24 h)', 'Errors (24 h)', 'p50', 'p95', 'Warm'],
      rows.map((f) => [link(`#/functions/${seg(f.name)}`, f.name), f.runtime, `v${f.version}`, `${f.memory_mb} MB`,
        `${f.invocations}${f.sampled ? '+' : ''}`, pct(f.error_rate), ms(f.p50_duration_ms), ms(f.p95_duration_ms),
        String(warm[f.name] || 0)]),
      'No function yet: deploy one.'));
  };
  let timer = null;
  const load = async () => {
    try {
      rows = (await api('GET', '/v1/stats/functions?hours=24')).functions;
      draw();
    } catch (e) {
      fill(list, h('p', {class: 'error', role: 'alert'}, e.message));
    }
  };
  load();
  return {
    workers: draw,
    // Figures move with new invocations: reload them, at most every 2 s.
    invocations() { if (!timer) timer = setTimeout(() => { timer = null; load(); }, 2000); },
    destroy() { clearTimeout(timer); },
  };
}

function field(id, label, input, hint) {
  input.id = id;
  return h('div', {class: 'field'}, h('label', {for: id}, label), input, hint ? h('small', {class: 'muted'}, hint) : null);
}

function deployForm(main, ctx, name) {
  const nameInput = h('input', {name: 'name', required: true, pattern: '[a-z0-9][a-z0-9\\-]{0,62}', autocomplete: 'off', value: name});
  const runtime = h('select', {name: 'runtime'}, Object.keys(TEMPLATES).map((r) => h('option', {value: r}, r)));
  const memory = h('input', {name: 'memory', type: 'number', min: 16, max: 10240, step: 1, value: 128});
  const timeout = h('input', {name: 'timeout', type: 'number', min: 1, max: 900000, step: 1, value: 3000});
  const sourceEditor = h('input', {type: 'radio', name: 'source', value: 'editor', id: 'source-editor', checked: true});
  const sourceZip = h('input', {type: 'radio', name: 'source', value: 'zip', id: 'source-zip'});
  const code = h('textarea', {name: 'code', rows: 14, spellcheck: 'false', class: 'code'});
  const fileInput = h('input', {name: 'zip', type: 'file', accept: '.zip,application/zip'});
  const codeField = field('code', 'Code', code);
  const fileLabel = h('span', {class: 'muted'});
  const zipField = field('zip-file', 'Zip file', fileInput, 'Files at the root of the zip (main.py, index.js, main.cpp or main.go).');
  const message = h('p', {role: 'status', class: 'message'});
  let edited = false;
  code.addEventListener('input', () => { edited = true; });
  const template = () => {
    const t = TEMPLATES[runtime.value];
    fileLabel.textContent = t.file;
    if (!edited) code.value = t.text;
  };
  runtime.addEventListener('change', template);
  const source = () => {
    codeField.hidden = !sourceEditor.checked;
    zipField.hidden = sourceEditor.checked;
  };
  sourceEditor.addEventListener('change', source);
  sourceZip.addEventListener('change', source);
  const submit = h('button', {type: 'submit'}, 'Deploy');
  const form = h('form', {class: 'card deploy'},
    field('fn-name', 'Name', nameInput, 'Lowercase letters, digits and dashes. An existing name gets a new version.'),
    h('div', {class: 'row'}, field('fn-runtime', 'Runtime', runtime), field('fn-memory', 'Memory (MB)', memory), field('fn-timeout', 'Timeout (ms)', timeout)),
    h('fieldset', {}, h('legend', {}, 'Code'),
      h('label', {for: 'source-editor', class: 'inline'}, sourceEditor, ' Write it here'),
      h('label', {for: 'source-zip', class: 'inline'}, sourceZip, ' Upload a zip')),
    h('p', {class: 'muted'}, 'File: ', fileLabel),
    codeField, zipField, submit, message);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fn = nameInput.value.trim();
    let blob;
    if (sourceEditor.checked) {
      blob = zip([{name: TEMPLATES[runtime.value].file, text: code.value}]);
    } else if (fileInput.files.length) {
      blob = fileInput.files[0];
    } else {
      message.textContent = 'Choose a zip file to upload.';
      message.className = 'message error';
      return;
    }
    const body = new FormData();
    body.append('config', JSON.stringify({runtime: runtime.value, memory_mb: +memory.value, timeout_ms: +timeout.value}));
    body.append('code', blob, 'code.zip');
    submit.disabled = true;
    message.className = 'message';
    message.textContent = `Deploying ${fn}…`;
    try {
      const f = await api('PUT', `/v1/functions/${encodeURIComponent(fn)}`, {body});
      message.textContent = `Deployed ${f.name} version ${f.version}.`;
      ctx.go(`#/functions/${seg(f.name)}`);
    } catch (err) {
      message.className = 'message error';
      message.textContent = `Deploy failed: ${err.message}`;
    } finally {
      submit.disabled = false;
    }
  });
  fill(main, h('h1', {}, name ? `Deploy a new version of ${name}` : 'Deploy a function'), form);
  source();
  template();
  if (name) {
    api('GET', `/v1/functions/${encodeURIComponent(name)}`).then((f) => {
      runtime.value = f.runtime;
      memory.value = f.memory_mb;
      timeout.value = f.timeout_ms;
      template();
    }).catch(() => {});
  }
  return {};
}
