// map.js -- the console's live world map: a region's bounds, its territories coloured by the
// guild that owns them (with capture progress), the world events running there, and every
// player as a dot that moves as the node sees it.
//
// Players come over the WebSocket: `observe {region, every_ms}` (moderators and up; see
// docs/protocol.md), answered by an `observed` snapshot of the whole region every every_ms.
// Regions, territories and world events come from the HTTP API and are read again every few
// seconds. Drag to pan, the wheel to zoom, click a dot for the player's card.
//
//   import { mountMap } from './map.js';
//   const map = mountMap(element, { get: (path) => fetchJson(path), token: () => accessToken });
//   map.stop();
//
// Everything from the server is shown with textContent: names are never parsed as HTML.

const SNAPSHOT_MS = 250;
const POLL_MS = 3000;
const DOT = 4;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// a guild's colour: the same guild, the same hue, everywhere
function hue(guild) {
  let h = 0;
  for (const ch of String(guild)) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

export function mountMap(root, { get, token }) {
  root.replaceChildren();
  const bar = el('div', 'map-bar');
  const select = el('select', 'map-region');
  select.setAttribute('aria-label', 'Region');
  const status = el('span', 'map-status', 'connecting…');
  bar.append(select, status);
  const wrap = el('div', 'map-wrap');
  const canvas = el('canvas', 'map-canvas');
  canvas.width = 800;
  canvas.height = 600;
  const side = el('div', 'map-side');
  const card = el('div', 'map-card');
  const eventsBox = el('ul', 'map-events');
  side.append(el('h3', null, 'Player'), card, el('h3', null, 'World events'), eventsBox);
  wrap.append(canvas, side);
  root.append(bar, wrap);

  // what the map knows, as received: exposed for the browser tests (window.mmoMap)
  const state = {
    region: null, regions: [], territories: [], events: [],
    players: new Map(), // id -> {id, name, x, y, guild}
    snapshots: 0,
  };
  window.mmoMap = state;
  const view = { scale: 1, ox: 0, oy: 0 }; // world -> canvas: (x - ox) * scale
  let ws = null, stopped = false, retry = 500, pollTimer = null, selected = null;

  function fit() {
    const r = state.regions.find((x) => x.id === state.region);
    if (!r) return;
    const b = r.bounds, w = b.x1 - b.x0, h = b.y1 - b.y0;
    view.scale = Math.min(canvas.width / w, canvas.height / h) * 0.95;
    view.ox = b.x0 - (canvas.width / view.scale - w) / 2;
    view.oy = b.y0 - (canvas.height / view.scale - h) / 2;
  }
  const cx = (x) => (x - view.ox) * view.scale;
  const cy = (y) => (y - view.oy) * view.scale;

  function draw() {
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, canvas.width, canvas.height);
    const r = state.regions.find((x) => x.id === state.region);
    if (r) {
      const b = r.bounds;
      g.strokeStyle = '#888';
      g.strokeRect(cx(b.x0), cy(b.y0), (b.x1 - b.x0) * view.scale, (b.y1 - b.y0) * view.scale);
    }
    for (const t of state.territories) {
      if (t.region !== state.region) continue;
      const b = t.bounds, x = cx(b.x0), y = cy(b.y0);
      const w = (b.x1 - b.x0) * view.scale, h = (b.y1 - b.y0) * view.scale;
      g.fillStyle = t.owner_guild == null ? 'rgba(128,128,128,0.15)'
        : `hsla(${hue(t.owner_guild)},70%,50%,0.3)`;
      g.fillRect(x, y, w, h);
      g.strokeStyle = t.contested ? '#d33' : '#555';
      g.strokeRect(x, y, w, h);
      if (t.capturing_guild != null && t.progress > 0) {
        g.fillStyle = `hsl(${hue(t.capturing_guild)},70%,40%)`;
        g.fillRect(x, y + h - 4, w * Math.min(1, t.progress), 4);
      }
    }
    for (const ev of state.events) {
      if (ev.region !== state.region || ev.state !== 'running' || !r) continue;
      g.strokeStyle = '#e90';
      g.lineWidth = 3;
      const b = r.bounds;
      g.strokeRect(cx(b.x0) + 2, cy(b.y0) + 2, (b.x1 - b.x0) * view.scale - 4,
        (b.y1 - b.y0) * view.scale - 4);
      g.lineWidth = 1;
    }
    for (const p of state.players.values()) {
      g.fillStyle = p.id === selected ? '#000' : p.guild ? `hsl(${hue(p.guild)},70%,40%)` : '#26c';
      g.beginPath();
      g.arc(cx(p.x), cy(p.y), DOT, 0, 2 * Math.PI);
      g.fill();
    }
  }

  function showEvents() {
    const list = state.events.filter((e) => e.region === state.region && e.state !== 'ended');
    eventsBox.replaceChildren(...(list.length ? list.map((e) => el('li', null,
      `${e.type} (${e.state})`)) : [el('li', 'muted', 'none')]));
  }

  async function poll() {
    try {
      const [regions, territories, events] = await Promise.all([
        get('/api/world/regions'), get('/api/world/territories'), get('/api/world/events?limit=50'),
      ]);
      state.regions = regions.regions;
      state.territories = territories.territories;
      state.events = events.events;
      if (!state.region && state.regions.length) choose(state.regions[0].id);
      if (select.options.length !== state.regions.length) {
        select.replaceChildren(...state.regions.map((r) => {
          const o = el('option', null, `${r.name} (${r.id})`);
          o.value = r.id;
          return o;
        }));
        select.value = state.region;
      }
      showEvents();
      draw();
    } catch (e) {
      status.textContent = `the API did not answer: ${e.message}`;
    }
    if (!stopped) pollTimer = setTimeout(poll, POLL_MS);
  }

  function observe() {
    if (ws && ws.readyState === WebSocket.OPEN && state.region) {
      ws.send(JSON.stringify({ t: 'observe', region: state.region, every_ms: SNAPSHOT_MS }));
    }
  }

  function choose(region) {
    state.region = region;
    state.players.clear();
    fit();
    observe();
    showEvents();
    draw();
  }

  function connect() {
    if (stopped) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(token())}`);
    ws.onopen = () => { retry = 500; status.textContent = 'live'; observe(); };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      if (msg.t === 'observed' && msg.region === state.region) {
        state.players.clear();
        for (const [id, name, x, y, guild] of msg.players) {
          state.players.set(id, { id, name, x, y, guild });
        }
        state.snapshots++;
        status.textContent = `live: ${state.players.size} players in ${state.region}`;
        draw();
      } else if (msg.t === 'error') {
        status.textContent = `error: ${msg.message}`;
      }
    };
    ws.onclose = () => {
      if (stopped) return;
      status.textContent = `disconnected; again in ${Math.round(retry / 1000)} s`;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  async function showCard(id) {
    selected = id;
    draw();
    card.replaceChildren(el('span', 'muted', 'loading…'));
    try {
      const p = await get(`/api/players/${id}`);
      const dl = el('dl');
      for (const [k, v] of [['name', p.name], ['id', p.id], ['class', p.class],
        ['level', p.level], ['xp', p.xp], ['guild', p.guild == null ? '–' : p.guild],
        ['region', p.position && p.position.region],
        ['position', p.position && `${Math.round(p.position.x * 10) / 10}, ${Math.round(p.position.y * 10) / 10}`]]) {
        dl.append(el('dt', null, k), el('dd', null, String(v)));
      }
      card.replaceChildren(dl);
    } catch (e) {
      card.replaceChildren(el('span', 'error', e.message));
    }
  }

  select.addEventListener('change', () => choose(select.value));
  let drag = null;
  canvas.addEventListener('mousedown', (e) => { drag = { x: e.offsetX, y: e.offsetY, moved: false }; });
  canvas.addEventListener('mousemove', (e) => {
    if (!drag) return;
    const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    view.ox -= dx / view.scale;
    view.oy -= dy / view.scale;
    drag.x = e.offsetX;
    drag.y = e.offsetY;
    draw();
  });
  canvas.addEventListener('mouseup', (e) => {
    const click = drag && !drag.moved;
    drag = null;
    if (!click) return;
    let best = null, bestD = (DOT * 2) ** 2;
    for (const p of state.players.values()) {
      const d = (cx(p.x) - e.offsetX) ** 2 + (cy(p.y) - e.offsetY) ** 2;
      if (d <= bestD) { best = p; bestD = d; }
    }
    if (best) showCard(best.id);
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const k = e.deltaY < 0 ? 1.25 : 0.8;
    const wx = e.offsetX / view.scale + view.ox, wy = e.offsetY / view.scale + view.oy;
    view.scale *= k;
    view.ox = wx - e.offsetX / view.scale;
    view.oy = wy - e.offsetY / view.scale;
    draw();
  }, { passive: false });

  poll();
  connect();
  return {
    state,
    stop() {
      stopped = true;
      clearTimeout(pollTimer);
      if (ws) ws.close();
    },
  };
}
