// api.js: the account's session and the HTTP calls /play makes (API.md "Accounts and
// sessions", "Players", "World"). Errors have API.md's shape: {error: {code, message}}.
//
// Where the tokens live, and why:
// - the access token only in this module's memory: it never touches storage, and it is gone
//   when the tab closes or reloads;
// - the refresh token in sessionStorage: reloading the tab signs back in (a fresh pair), but
//   the token is not shared with other tabs and the browser drops it when the tab closes.
//   localStorage would keep it on disk for every tab of the origin, and two tabs rotating one
//   refresh token would look like token reuse to the API and end the session.
// Script injection could still read sessionStorage: the defence is the page itself, a strict
// Content-Security-Policy (core/web.c: no inline script) and text-only rendering.

const REFRESH_KEY = "mmo.play.refresh";

let access = null;        // the access token
let expiresAt = 0;        // when it expires (ms since the epoch)
let refreshTimer = null;
let onSignedOutFn = () => {};

export class ApiError extends Error {
    constructor(status, body) {
        const e = (body && body.error) || {};
        super(e.message || `HTTP ${status}`);
        this.status = status;
        this.code = e.code || `http_${status}`;
    }
}

async function call(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (access) headers.Authorization = `Bearer ${access}`;
    let res;
    try {
        res = await fetch(path, { method, headers, cache: "no-store", credentials: "omit",
            body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
        throw new ApiError(0, { error: { code: "network", message: `the server did not answer (${e.message})` } });
    }
    const text = res.status === 204 ? "" : await res.text();
    let data = null;
    try {
        data = text ? JSON.parse(text) : null;
    } catch {
        data = { error: { message: `HTTP ${res.status}: not JSON` } };
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
}

// A login or refresh answer: {access_token, refresh_token, expires_in, account_id, roles}.
// The next refresh is due at 80% of the access token's life.
function keep(pair) {
    access = pair.access_token;
    expiresAt = Date.now() + pair.expires_in * 1000;
    sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
    schedule(Math.max(5, pair.expires_in * 0.8) * 1000);
    return pair;
}

function schedule(ms) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => refresh().catch((e) => {
        // the node did not answer or was busy: try again soon; refused: the session is over
        if (e.status === 0 || e.status === 429 || e.status >= 500) schedule(10000);
        else onSignedOutFn(e);
    }), ms);
}

function forget() {
    access = null;
    sessionStorage.removeItem(REFRESH_KEY);
    clearTimeout(refreshTimer);
}

// fn(error) is called when a timed refresh is refused: the session ended.
export function onSignedOut(fn) {
    onSignedOutFn = fn;
}

export function token() {
    return access;
}

export async function login(username, password) {
    return keep(await call("POST", "/api/auth/login", { username, password }));
}

export async function register(username, password) {
    await call("POST", "/api/auth/register", { username, password });
    return login(username, password);
}

// A new pair for the refresh token in sessionStorage (the old one stops working). Resolves
// to false when there is none; a refused one is dropped and the error thrown.
export async function refresh() {
    const rt = sessionStorage.getItem(REFRESH_KEY);
    if (!rt) return false;
    try {
        keep(await call("POST", "/api/auth/refresh", { refresh_token: rt }));
        return true;
    } catch (e) {
        if (e.status === 401 || e.status === 400) forget();
        throw e;
    }
}

// Refresh now unless the access token has a minute left (before a WebSocket reconnect: a
// tab that slept may have missed its timed refresh, and the upgrade needs a valid token).
export async function ensureFresh() {
    if (Date.now() > expiresAt - 60000) await refresh();
}

export async function logout() {
    try {
        if (access) await call("POST", "/api/auth/logout");
    } finally {
        forget();
    }
}

export const me = () => call("GET", "/api/me");                 // {id, username, roles, players}
export const createPlayer = (name, cls, region) =>
    call("POST", "/api/players", { name, class: cls, region });  // 201 the player document
export const regions = () => call("GET", "/api/world/regions"); // {regions: [{id, name, bounds}]}
