// play.js: /play, the browser game client (GET /play/, served by core/web.c). Sign in,
// pick or create a character, join over the WebSocket, move, see who is near, chat.
// The reference client of the protocol: API.md ("WebSocket") and docs/protocol.md.
//
// Everything the server sends is shown through textContent (or drawn on the canvas), never
// as HTML: a chat line "<img src=x onerror=alert(1)>" shows as those characters.
import * as api from "./api.js";
import { World } from "./world.js";
import { draw } from "./draw.js";

// moves sent per second at most, while a key is held: 20 steps of at most 0.45 units
// (world.js) cover 9 units a second, more than any class's speed, and leave room under the
// node's limit of 30 messages a second per connection (config.lua ws.msg_rate) for chat
const MOVE_HZ = 20;
// closes not worth retrying (protocol.md): flood, logged out, replaced, banned, kicked
const NO_RETRY = new Set([1008, 4001, 4002, 4003, 4004]);
const KEYS = {                       // key -> direction
    ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0],
    w: [0, -1], s: [0, 1], a: [-1, 0], d: [1, 0],
};

const $ = (id) => document.getElementById(id);
const world = new World();
let regions = new Map();             // id -> {id, name, bounds} (GET /api/world/regions)
let player = null;                   // the character being played (a player document)
let ws = null;
let leaving = false;                 // we closed the socket ourselves: no reconnect
let retryTimer = null;
let retries = 0;
const held = new Set();              // directions of the keys held down

function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
}

function show(id) {
    for (const s of ["loading", "signin", "characters", "game"]) $(s).hidden = s !== id;
}

// an error for the person playing: API.md's {error: {code, message}} or protocol.md's error
function report(text) {
    const log = $("errors");
    log.append(el("li", text));
    while (log.children.length > 5) log.firstChild.remove();
}

// ---- account and characters (HTTP) ------------------------------------------------------------

async function showCharacters() {
    const acct = await api.me();
    $("who").textContent = `Signed in as ${acct.username}`;
    $("logout").hidden = false;
    try {
        regions = new Map((await api.regions()).regions.map((r) => [r.id, r]));
    } catch (e) {
        report(`regions: ${e.message}`);
    }
    const select = $("create-form").elements.region;
    select.replaceChildren(...[...regions.values()].map((r) => {
        const o = el("option", `${r.name} (${r.id})`);
        o.value = r.id;
        return o;
    }));
    const list = $("player-list");
    list.replaceChildren(...acct.players.map((p) => {
        const li = el("li");
        li.dataset.id = p.id;
        const b = el("button", "Play");
        b.type = "button";
        b.addEventListener("click", () => enter(p));
        const pos = p.position;
        li.append(el("span", `${p.name}, ${p.class} level ${p.level}, ${pos.region} ` +
            `(${pos.x.toFixed(0)}, ${pos.y.toFixed(0)})`), b);
        return li;
    }));
    $("no-players").hidden = acct.players.length > 0;
    show("characters");
}

async function onAuth(ev) {
    ev.preventDefault();
    const f = ev.target.elements;
    const register = ev.submitter && ev.submitter.value === "register";
    try {
        if (register) await api.register(f.username.value, f.password.value);
        else await api.login(f.username.value, f.password.value);
        f.password.value = "";
        await showCharacters();
    } catch (e) {
        report(`${register ? "register" : "sign in"}: ${e.message}`);
    }
}

async function onCreate(ev) {
    ev.preventDefault();
    const f = ev.target.elements;
    try {
        await api.createPlayer(f.name.value, f.class.value, f.region.value || undefined);
        f.name.value = "";
        await showCharacters();
    } catch (e) {
        report(`new character: ${e.message}`);
    }
}

async function onLogout() {
    leave();
    try {
        await api.logout();
    } catch (e) {
        report(`sign out: ${e.message}`);
    }
    $("who").textContent = "";
    $("logout").hidden = true;
    show("signin");
}

// ---- the game (WebSocket) ---------------------------------------------------------------------

function enter(p) {
    player = p;
    world.others.clear();
    world.me = null;
    $("chat-log").replaceChildren();
    show("game");
    retries = 0;
    connect();
    $("map").focus();
}

function leave() {
    player = null;
    clearTimeout(retryTimer);
    held.clear();
    if (ws) {
        leaving = true;
        ws.close(1000);
        ws = null;
    }
}

function status(text, down) {
    $("conn").textContent = text;
    $("conn").classList.toggle("down", down);
    $("reconnect").hidden = !down;
}

let connecting = false;
async function connect() {
    clearTimeout(retryTimer);
    if (!player || ws || connecting) return; // one socket at a time
    connecting = true;
    try {
        await api.ensureFresh();
    } catch (e) {
        status(`cannot connect: ${e.message}`, true);
        return;
    } finally {
        connecting = false;
    }
    if (!player) return; // left meanwhile
    status("connecting…", false);
    // browsers cannot set headers on a WebSocket: the token goes in the query (protocol.md)
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(api.token())}`);
    ws = sock;
    leaving = false;
    sock.addEventListener("open", () => {
        sock.send(JSON.stringify({ t: "join", player_id: player.id }));
    });
    sock.addEventListener("message", (ev) => {
        let msg;
        try {
            msg = JSON.parse(ev.data);
        } catch {
            return report("the server sent something that is not JSON");
        }
        onMessage(msg);
    });
    sock.addEventListener("close", (ev) => {
        if (ws !== sock) return; // an old socket
        ws = null;
        held.clear();
        if (leaving) return;
        const why = `disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`;
        if (NO_RETRY.has(ev.code) || !player) return status(why, true);
        // back off: 1, 2, 4 ... 30 s between tries
        const delay = Math.min(30, 2 ** retries);
        retries += 1;
        status(`${why}; trying again in ${delay} s`, true);
        retryTimer = setTimeout(connect, delay * 1000);
    });
}

function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

// One server message (protocol.md, "Server to client").
function onMessage(msg) {
    switch (msg.t) {
    case "welcome":
        retries = 0;
        status(`connected: ${msg.region}`, false);
        world.regions = [...regions.values()];
        world.apply(msg);
        break;
    case "chat": {
        const li = el("li");
        li.append(el("span", msg.from, "from"), document.createTextNode(`: ${msg.text}`));
        if (msg.channel !== "region") li.prepend(`[${msg.channel}] `);
        const log = $("chat-log");
        log.append(li);
        while (log.children.length > 100) log.firstChild.remove();
        log.scrollTop = log.scrollHeight;
        return;
    }
    case "error":
        return report(`${msg.code}: ${msg.message}`);
    case "correct":
        // a move refused (rules/movement.lua): world.apply puts us back; say why, since a
        // client that keeps to the rules should never see one
        report(`move refused: ${msg.reason}`);
        world.apply(msg);
        break;
    default:
        if (!world.apply(msg)) return; // pong, and what this client does not show
    }
    changed();
}

// ---- what the page shows ----------------------------------------------------------------------

let frame = 0;
function changed() {
    // the lists at once (they are the record of what the server said), the canvas next frame
    const me = world.me;
    if (me) {
        $("me").textContent = `${me.name} in ${world.region} at (${me.x.toFixed(1)}, ${me.y.toFixed(1)})`;
        $("me").dataset.x = me.x;
        $("me").dataset.y = me.y;
    }
    // data-x, data-y: the numbers as received (spec/browser/play.test.mjs reads them)
    $("nearby").replaceChildren(...[...world.others.values()].map((o) => {
        const li = el("li", `${o.name} (${o.x.toFixed(1)}, ${o.y.toFixed(1)})`);
        Object.assign(li.dataset, { id: o.id, name: o.name, x: o.x, y: o.y });
        return li;
    }));
    if (world.others.size === 0) $("nearby").append(el("li", "nobody in sight", "none"));
    if (!frame) frame = requestAnimationFrame(() => {
        frame = 0;
        draw($("map"), world);
    });
}

// ---- input ------------------------------------------------------------------------------------

let last = performance.now();        // when the last movement tick ran

function direction(ev) {
    return KEYS[ev.key.length === 1 ? ev.key.toLowerCase() : ev.key];
}

function typing(ev) {
    return ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement;
}

window.addEventListener("keydown", (ev) => {
    const d = direction(ev);
    if (!d || typing(ev) || $("game").hidden) return;
    ev.preventDefault(); // no scrolling with the arrow keys
    if (held.size === 0) last = performance.now(); // the first step counts from now
    held.add(d);
});
window.addEventListener("keyup", (ev) => {
    const d = direction(ev);
    if (d) held.delete(d);
});
window.addEventListener("blur", () => held.clear());

// While keys are held: one move per tick, as far as our speed goes in the time since the last
// tick (world.js step; rules/movement.lua checks it). Nothing is sent while standing still.
setInterval(() => {
    const now = performance.now();
    const seconds = Math.min(now - last, 250) / 1000;
    last = now;
    if (held.size === 0 || !ws || ws.readyState !== WebSocket.OPEN) return;
    let dx = 0, dy = 0;
    for (const [x, y] of held) {
        dx += x;
        dy += y;
    }
    const move = world.step(dx, dy, seconds);
    if (move) {
        send(move);
        changed();
    }
}, 1000 / MOVE_HZ);

$("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = ev.target.elements.text;
    const text = input.value.trim();
    if (!text) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) return report("not connected: the message was not sent");
    send({ t: "chat", channel: "region", text });
    input.value = "";
});
$("auth-form").addEventListener("submit", onAuth);
$("create-form").addEventListener("submit", onCreate);
$("logout").addEventListener("click", onLogout);
$("reconnect").addEventListener("click", () => {
    retries = 0;
    connect();
});
$("leave").addEventListener("click", () => {
    leave();
    showCharacters().catch((e) => report(e.message));
});

// The session ended by itself (a refresh refused: logged out elsewhere, banned, expired).
api.onSignedOut((e) => {
    leave();
    $("who").textContent = "";
    $("logout").hidden = true;
    report(`signed out: ${e.message}`);
    show("signin");
});

// A reload signs back in with the refresh token of this tab (api.js says why it is there).
api.refresh()
    .then((ok) => (ok ? showCharacters() : show("signin")))
    .catch(() => show("signin"));
