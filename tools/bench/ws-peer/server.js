'use strict';
// tools/bench/ws-peer/server.js -- the Node.js peer of tools/bench/realtime.
//
// The node's WebSocket messages, written the way PERFORMANCE.md's peer was: Node 20 and the
// `ws` package, and on every move a loop over all connected clients that calls send() for each
// one within the view radius, encoding the message once per receiver. Nothing else: no
// authentication, no database, no speed rule, no rate limit; one square world [0, 1000)².
//
//   GET /ws           upgrade (no token)
//   GET /healthz      {"status":"ok","clients":N}
//
// Client -> server (JSON text frames, field t):
//   {"t":"join","player_id":N,"x":X,"y":Y}  -> {"t":"welcome","player":{id,name,x,y},
//                                               "region":"r1","nearby":[{id,name,x,y}]};
//                                               those within the radius get "appear"
//   {"t":"move","x":X,"y":Y,"seq":S}        -> nothing; those within the radius of the new
//                                               position get {"t":"moved","id","x","y"}
//   {"t":"ping"}                            -> {"t":"pong"}
// A client that leaves: those within the radius get {"t":"vanish","id"}. appear/vanish are
// sent at join and leave only, not when a move crosses the radius (the node does that too).
// Anything else: {"t":"error","code":"bad_message","message":...}.
//
// Several processes (REDIS=host:port): the way a Node/socket.io stack scales out (socket.io's
// Redis adapter: one PUBLISH per broadcast, every process subscribed). Each process publishes
// what its own clients do on the Redis channel CHANNEL, one message per event
// ({"n":process,"t":"m","id","x","y"}; "j" with the name on join, "l" on leave), and applies the
// other processes' messages: their players are kept in a map (for the welcome's nearby list)
// and each move is relayed to this process's clients within the radius, the same naive loop
// and one JSON.stringify and send() per receiver as for its own clients' moves.
//
// Environment: PORT (9000), HOST (127.0.0.1), VIEW_RADIUS (100, as MMO_WORLD_VIEW_RADIUS),
// REDIS (unset: one process alone; host:port: join the others on it), CHANNEL (ws-peer:bus).
// SIGTERM/SIGINT: close every client (1001) and exit.
const http = require('http');
const { WebSocketServer } = require('ws');

const PORT = Number(process.env.PORT || 9000);
const HOST = process.env.HOST || '127.0.0.1';
const RADIUS = Number(process.env.VIEW_RADIUS || 100);
const R2 = RADIUS * RADIUS;
const WORLD = 1000;

const REDIS = process.env.REDIS || '';
const CHANNEL = process.env.CHANNEL || 'ws-peer:bus';
const SELF = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

const clients = new Set(); // every open connection; ws.player is set once joined
const remote = new Map(); // REDIS: the other processes' players, id -> {id, name, x, y}
let pub = null; // REDIS: the connection this process publishes on
const stats = { published: 0, received: 0 };

function publish(msg) {
  if (!pub) return;
  msg.n = SELF;
  stats.published++;
  pub.publish(CHANNEL, JSON.stringify(msg)).catch(() => {});
}

function fail(ws, code, message) {
  ws.send(JSON.stringify({ t: 'error', code, message }));
}

function coord(v) {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v < WORLD;
}

function near(a, b) {
  const dx = a.x - b.x;
  const dy = a.y - b.y;
  return dx * dx + dy * dy <= R2;
}

function join(ws, msg) {
  if (ws.player) return fail(ws, 'already_joined', 'this connection plays a player already');
  const id = msg.player_id;
  if (!Number.isInteger(id) || id < 1) return fail(ws, 'bad_message', 'player_id: a player id');
  if (!coord(msg.x) || !coord(msg.y)) return fail(ws, 'bad_message', 'x, y: inside the world');
  const me = { id, name: 'Bot' + id, x: msg.x, y: msg.y };
  const nearby = [];
  for (const c of clients) {
    const p = c.player;
    if (c === ws || !p || !near(p, me)) continue;
    nearby.push({ id: p.id, name: p.name, x: p.x, y: p.y });
    c.send(JSON.stringify({ t: 'appear', id: me.id, name: me.name, x: me.x, y: me.y }));
  }
  for (const p of remote.values()) {
    if (near(p, me)) nearby.push({ id: p.id, name: p.name, x: p.x, y: p.y });
  }
  ws.player = me;
  ws.send(JSON.stringify({ t: 'welcome', player: me, region: 'r1', nearby }));
  publish({ t: 'j', id: me.id, name: me.name, x: me.x, y: me.y });
}

function move(ws, msg) {
  const me = ws.player;
  if (!me) return fail(ws, 'not_joined', 'join a player first');
  if (!coord(msg.x) || !coord(msg.y)) {
    ws.send(JSON.stringify({ t: 'correct', x: me.x, y: me.y, seq: msg.seq, reason: 'bad_position' }));
    return;
  }
  me.x = msg.x;
  me.y = msg.y;
  // the naive relay: every connected client is looked at, and each one in range gets its own
  // JSON.stringify and its own send()
  for (const c of clients) {
    if (c === ws || !c.player || !near(c.player, me)) continue;
    c.send(JSON.stringify({ t: 'moved', id: me.id, x: me.x, y: me.y }));
  }
  publish({ t: 'm', id: me.id, x: me.x, y: me.y });
}

function leave(ws) {
  clients.delete(ws);
  const me = ws.player;
  if (!me) return;
  ws.player = null;
  for (const c of clients) {
    if (!c.player || !near(c.player, me)) continue;
    c.send(JSON.stringify({ t: 'vanish', id: me.id }));
  }
  publish({ t: 'l', id: me.id });
}

// REDIS: another process's message, applied to this one's clients as its own would be
function onBus(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (e) {
    return;
  }
  if (!m || m.n === SELF) return;
  stats.received++;
  if (m.t === 'm') {
    const p = remote.get(m.id);
    if (p) {
      p.x = m.x;
      p.y = m.y;
    }
    const at = { x: m.x, y: m.y };
    for (const c of clients) {
      if (!c.player || !near(c.player, at)) continue;
      c.send(JSON.stringify({ t: 'moved', id: m.id, x: m.x, y: m.y }));
    }
  } else if (m.t === 'j') {
    const p = { id: m.id, name: m.name, x: m.x, y: m.y };
    remote.set(p.id, p);
    for (const c of clients) {
      if (!c.player || !near(c.player, p)) continue;
      c.send(JSON.stringify({ t: 'appear', id: p.id, name: p.name, x: p.x, y: p.y }));
    }
  } else if (m.t === 'l') {
    const p = remote.get(m.id);
    remote.delete(m.id);
    if (!p) return;
    for (const c of clients) {
      if (!c.player || !near(c.player, p)) continue;
      c.send(JSON.stringify({ t: 'vanish', id: p.id }));
    }
  }
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', clients: clients.size, remote: remote.size,
      published: stats.published, received: stats.received }));
    return;
  }
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end('{"error":{"code":"not_found","message":"GET /ws or /healthz"}}');
});

const wss = new WebSocketServer({ noServer: true, maxPayload: 65536, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  if (req.url !== '/ws' && !req.url.startsWith('/ws?')) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

wss.on('connection', (ws) => {
  ws.player = null;
  clients.add(ws);
  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.close(1003, 'text only');
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch (e) {
      return fail(ws, 'bad_json', 'not JSON');
    }
    if (msg === null || typeof msg !== 'object') return fail(ws, 'bad_message', 'an object');
    switch (msg.t) {
      case 'move': return move(ws, msg);
      case 'join': return join(ws, msg);
      case 'ping': return ws.send('{"t":"pong"}');
      default: return fail(ws, 'bad_message', 'unknown t');
    }
  });
  ws.on('close', () => leave(ws));
  ws.on('error', () => {}); // a reset peer: 'close' follows
});

let sub = null;
function listen() {
  server.listen(PORT, HOST, () => {
    console.log(`ws-peer listening on ${HOST}:${server.address().port} (view radius ${RADIUS}, ` +
      `pid ${process.pid}${REDIS ? `, Redis ${REDIS} channel ${CHANNEL}` : ''})`);
  });
}
if (REDIS) {
  // required only here: one process alone needs no Redis client installed
  const Redis = require('ioredis');
  const [host, port] = REDIS.split(':');
  const opts = { host: host || '127.0.0.1', port: Number(port || 6379), maxRetriesPerRequest: 1 };
  pub = new Redis(opts);
  sub = new Redis(opts);
  sub.on('message', (channel, text) => onBus(text));
  sub.subscribe(CHANNEL).then(listen, (e) => {
    console.error(`ws-peer: subscribe to ${CHANNEL} on ${REDIS}: ${e.message}`);
    process.exit(1);
  });
} else {
  listen();
}

function stop() {
  for (const ws of clients) ws.close(1001, 'shutting down');
  server.close();
  if (pub) pub.disconnect();
  if (sub) sub.disconnect();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
