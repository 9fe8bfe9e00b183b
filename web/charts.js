// SVG charts drawn by hand: bars over time, a line over time, a histogram with a
// limit marker. Each chart has a <title> and <desc> so a screen reader can say what
// it shows.

const NS = 'http://www.w3.org/2000/svg';
// Drawn in viewBox units; the overview's wide chart gets a wider box so its text is not
// blown up, the half-width charts a narrower one so theirs stays legible.
let W = 640, H = 200;
const PAD = {l: 72, r: 12, t: 14, b: 30};

function size(w, h) { W = w; H = h; }

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function frame(title, desc) {
  const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart',
    'aria-label': title, preserveAspectRatio: 'xMidYMid meet'});
  svg.append(s('title', {}, title), s('desc', {}, desc));
  return svg;
}

/** A "nice" upper bound for an axis. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function yAxis(svg, max, fmt) {
  const inner = H - PAD.t - PAD.b;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + inner - (inner * i) / 4;
    svg.append(s('line', {x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: 'grid'}));
    svg.append(s('text', {x: PAD.l - 6, y: y + 4, 'text-anchor': 'end', class: 'tick'}, fmt((max * i) / 4)));
  }
}

function xLabels(svg, labels) {
  const inner = W - PAD.l - PAD.r;
  labels.forEach(([frac, text], i) => {
    const anchor = i === 0 ? 'start' : i === labels.length - 1 ? 'end' : 'middle';
    svg.append(s('text', {x: PAD.l + inner * frac, y: H - 8, 'text-anchor': anchor, class: 'tick'}, text));
  });
}

/** Bars per time bucket: [{t, n, errors}], height = rate per second; errors in red. */
export function rateBars(buckets, bucketS, title) {
  size(960, 220);
  const rates = buckets.map((b) => b.n / bucketS);
  const max = niceMax(Math.max(0, ...rates));
  const total = buckets.reduce((a, b) => a + b.n, 0);
  const errors = buckets.reduce((a, b) => a + b.errors, 0);
  const svg = frame(title, `${total} invocations, ${errors} failed, over the last ${Math.round(buckets.length * bucketS / 60)} minutes`);
  yAxis(svg, max, (v) => `${+v.toFixed(2)}/s`);
  const innerW = W - PAD.l - PAD.r, innerH = H - PAD.t - PAD.b;
  const bw = innerW / Math.max(1, buckets.length);
  buckets.forEach((b, i) => {
    const x = PAD.l + i * bw + 1;
    const hAll = (innerH * (b.n / bucketS)) / max;
    const hErr = (innerH * (b.errors / bucketS)) / max;
    if (hAll > 0) svg.append(s('rect', {x, y: PAD.t + innerH - hAll, width: bw - 2, height: hAll, class: 'bar'}));
    if (hErr > 0) svg.append(s('rect', {x, y: PAD.t + innerH - hErr, width: bw - 2, height: hErr, class: 'bar-error'}));
  });
  if (buckets.length) {
    const label = (t) => new Date(t * 1000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
    xLabels(svg, [[0, label(buckets[0].t)], [1, 'now']]);
  }
  return svg;
}

/** A line of values in order (oldest first), e.g. durations of the last calls. */
export function line(values, title, fmt) {
  size(560, 260);
  const max = niceMax(Math.max(0, ...values));
  const svg = frame(title, values.length
    ? `${values.length} points, from ${fmt(Math.min(...values))} to ${fmt(Math.max(...values))}`
    : 'no data yet');
  yAxis(svg, max, fmt);
  const innerW = W - PAD.l - PAD.r, innerH = H - PAD.t - PAD.b;
  const step = values.length > 1 ? innerW / (values.length - 1) : 0;
  const pts = values.map((v, i) => [PAD.l + i * step, PAD.t + innerH - (innerH * v) / max]);
  if (pts.length > 1) svg.append(s('polyline', {points: pts.map((p) => p.join(',')).join(' '), class: 'line'}));
  for (const [x, y] of pts) svg.append(s('circle', {cx: x, cy: y, r: 2.5, class: 'dot'}));
  xLabels(svg, [[0, values.length ? `${values.length} calls ago` : ''], [1, 'newest']]);
  return svg;
}

/** A histogram of values (bytes) with a dashed marker at `limit`. */
export function histogram(values, limit, title, fmt) {
  size(560, 260);
  const top = Math.max(limit || 0, ...values, 1);
  const bins = 12;
  const width = top / bins;
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor(v / width))]++;
  const max = niceMax(Math.max(1, ...counts));
  const svg = frame(title, `${values.length} invocations; limit ${fmt(limit)}`);
  yAxis(svg, max, (v) => `${Math.round(v)}`);
  const innerW = W - PAD.l - PAD.r, innerH = H - PAD.t - PAD.b;
  const bw = innerW / bins;
  counts.forEach((c, i) => {
    const hh = (innerH * c) / max;
    if (hh > 0) svg.append(s('rect', {x: PAD.l + i * bw + 1, y: PAD.t + innerH - hh, width: bw - 2, height: hh, class: 'bar'}));
  });
  if (limit) {
    const x = PAD.l + innerW * Math.min(1, limit / top);
    svg.append(s('line', {x1: x, x2: x, y1: PAD.t, y2: PAD.t + innerH, class: 'limit'}));
    svg.append(s('text', {x: x - 4, y: PAD.t + 12, 'text-anchor': 'end', class: 'tick limit-label'}, `limit ${fmt(limit)}`));
  }
  xLabels(svg, [[0, '0'], [1, fmt(top)]]);
  return svg;
}
