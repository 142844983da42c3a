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
// Environment: PORT (9000), HOST (127.0.0.1), VIEW_RADIUS (100, as MMO_WORLD_VIEW_RADIUS).
// SIGTERM/SIGINT: close every client (1001) and exit.
const http = require('http');
const { WebSocketServer } = require('ws');

const PORT = Number(process.env.PORT || 9000);
const HOST = process.env.HOST || '127.0.0.1';
const RADIUS = Number(process.env.VIEW_RADIUS || 100);
const R2 = RADIUS * RADIUS;
const WORLD = 1000;

const clients = new Set(); // every open connection; ws.player is set once joined

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
  ws.player = me;
  ws.send(JSON.stringify({ t: 'welcome', player: me, region: 'r1', nearby }));
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
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', clients: clients.size }));
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

server.listen(PORT, HOST, () => {
  console.log(`ws-peer listening on ${HOST}:${server.address().port} (view radius ${RADIUS}, pid ${process.pid})`);
});

function stop() {
  for (const ws of clients) ws.close(1001, 'shutting down');
  server.close();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
