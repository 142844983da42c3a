// charts.js -- the console's metrics page: the node's vital signs over the last minutes, as
// GET /api/admin/metrics gives them (a sample every 5 s, 10 minutes kept; lib/vitals.lua):
// players online, HTTP requests per second, HTTP p99 latency, Lua errors, the game event
// queue's lag and the event loop's lag. Read again every 5 s. Plain canvas, no library.
//
//   import { mountCharts } from './charts.js';
//   const charts = mountCharts(element, { get: (path) => fetchJson(path) });
//   charts.stop();

const SERIES = [
  ['players', 'Players online', ''],
  ['requests_per_s', 'HTTP requests/s', '/s'],
  ['p99_ms', 'HTTP p99 latency', ' ms'],
  ['lua_errors', 'Lua errors (per 5 s)', ''],
  ['queue_lag', 'Event batches waiting', ''],
  ['loop_lag_ms', 'Event loop lag p99', ' ms'],
];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v == null) return '–';
  return Math.abs(v) >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10);
}

function drawLine(canvas, samples, key) {
  const g = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, pad = 4;
  g.clearRect(0, 0, w, h);
  const pts = samples.map((s) => s[key]).filter((v) => v != null);
  const max = Math.max(1, ...pts);
  g.strokeStyle = '#ddd';
  g.strokeRect(0.5, 0.5, w - 1, h - 1);
  g.strokeStyle = '#26c';
  g.lineWidth = 2;
  g.beginPath();
  let first = true;
  samples.forEach((s, i) => {
    if (s[key] == null) { first = true; return; }
    const x = pad + (w - 2 * pad) * (samples.length > 1 ? i / (samples.length - 1) : 1);
    const y = h - pad - (h - 2 * pad) * (s[key] / max);
    if (first) g.moveTo(x, y); else g.lineTo(x, y);
    first = false;
  });
  g.stroke();
}

export function mountCharts(root, { get }) {
  root.replaceChildren();
  const status = el('p', 'muted', 'loading…');
  const grid = el('div', 'charts');
  const cells = SERIES.map(([key, title, unit]) => {
    const box = el('figure', 'chart');
    const now = el('span', 'chart-now', '–');
    const canvas = el('canvas');
    canvas.width = 300;
    canvas.height = 90;
    const cap = el('figcaption', null, title);
    cap.append(' ', now);
    box.dataset.series = key;
    box.append(cap, canvas);
    grid.append(box);
    return { key, unit, now, canvas };
  });
  root.append(status, grid);

  // what the page received: exposed for the browser tests (window.mmoCharts)
  const state = { samples: [], every_s: 5, reads: 0 };
  window.mmoCharts = state;
  let timer = null, stopped = false;

  async function load() {
    try {
      const r = await get('/api/admin/metrics');
      state.samples = r.samples;
      state.every_s = r.every_s;
      state.reads++;
      const last = r.samples[r.samples.length - 1];
      status.textContent = r.samples.length
        ? `${r.samples.length} samples, one every ${r.every_s} s; the last at ${new Date(last.at * 1000).toLocaleTimeString()}`
        : 'no sample yet: the node takes one every few seconds';
      for (const c of cells) {
        c.now.textContent = last ? `${fmt(last[c.key])}${last[c.key] == null ? '' : c.unit}` : '–';
        drawLine(c.canvas, r.samples, c.key);
      }
    } catch (e) {
      status.textContent = `the API did not answer: ${e.message}`;
    }
    if (!stopped) timer = setTimeout(load, state.every_s * 1000);
  }
  load();
  return { state, stop() { stopped = true; clearTimeout(timer); } };
}
