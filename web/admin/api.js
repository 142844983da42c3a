// api.js: the console's session and its calls to the HTTP API (docs/operators.md, "The
// console").
//
// Where the tokens live, and why:
// - the access token only in this module's memory: nothing on disk or in storage holds it,
//   and it is gone when the tab is closed or reloaded;
// - the refresh token in sessionStorage: a reload of the tab signs back in with it (a new
//   pair), but it is not shared with other tabs or windows and the browser drops it when the
//   tab closes. localStorage would keep it on disk for every tab of the origin, and two tabs
//   rotating one refresh token would trip the API's reuse detection, which ends the session.
//   Cookies are not used: the API takes bearer tokens only, so there is no CSRF to defend.
// Script injection could still read sessionStorage; the defence against that is the page
// itself: a strict Content-Security-Policy (no inline script) and text-only rendering
// (dom.js).

const REFRESH_KEY = "mmo.console.refresh";

let access = null;      // the access token
let roles = [];         // the account's roles, from login/refresh
let accountId = null;
let refreshTimer = null;
let onSignedOut = () => {};

export class ApiError extends Error {
    constructor(status, body) {
        const e = (body && body.error) || {};
        super(e.message || `HTTP ${status}`);
        this.status = status;
        this.code = e.code || "http_" + status;
        this.details = e.details || {};
        this.requestId = e.request_id;
    }
}

// fn() is called when the session ends by itself (a 401, a failed refresh).
export function onSignOut(fn) {
    onSignedOut = fn;
}

export function signedIn() {
    return access !== null;
}

// The access token, for what cannot send a header: the WebSocket's ?token= (map.js).
export function accessToken() {
    return access;
}

export function currentRoles() {
    return roles.slice();
}

export function currentAccount() {
    return accountId;
}

// The core's rule (core/auth.c auth_roles_allow): admin passes every role check.
export function allowed(need, have = roles) {
    return need === "public" || have.includes("admin") || have.includes(need);
}

async function call(method, path, body, token) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    let res;
    try {
        res = await fetch(path, {
            method, headers, body: body === undefined ? undefined : JSON.stringify(body),
            cache: "no-store", credentials: "omit",
        });
    } catch (e) {
        throw new ApiError(0, { error: { code: "network", message: "the node did not answer (" + e.message + ")" } });
    }
    let data = null;
    if (res.status !== 204) {
        const raw = await res.text();
        try {
            data = raw ? JSON.parse(raw) : null;
        } catch {
            data = { error: { message: `HTTP ${res.status}: not JSON` } };
        }
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
}

function adopt(pair) {
    access = pair.access_token;
    roles = Array.isArray(pair.roles) ? pair.roles : [];
    accountId = pair.account_id;
    sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
    clearTimeout(refreshTimer);
    // refresh a little before the access token expires: at 80% of its life, at least 5 s in
    const life = Math.max(5, Number(pair.expires_in) || 60);
    // A node that does not answer for a moment (no answer, 5xx, 429) is asked again, 1, 2, 4,
    // 8 s later, while the access token still lives; a refusal (401, a reused refresh token)
    // ends the session at once.
    const attempt = (wait) => {
        refresh().catch((e) => {
            const away = e.status === 0 || e.status === 429 || e.status >= 500;
            if (away && wait <= 8) refreshTimer = setTimeout(() => attempt(wait * 2), wait * 1000);
            else end();
        });
    };
    refreshTimer = setTimeout(() => attempt(1), Math.max(5, life * 0.8) * 1000);
}

function end() {
    const was = access !== null;
    access = null;
    roles = [];
    accountId = null;
    clearTimeout(refreshTimer);
    refreshTimer = null;
    sessionStorage.removeItem(REFRESH_KEY);
    if (was) onSignedOut();
}

export async function login(username, password) {
    adopt(await call("POST", "/api/auth/login", { username, password }));
}

// One refresh at a time: the refresh token is single-use.
let refreshing = null;
export function refresh() {
    const token = sessionStorage.getItem(REFRESH_KEY);
    if (!token) return Promise.reject(new ApiError(401, null));
    if (!refreshing) {
        refreshing = call("POST", "/api/auth/refresh", { refresh_token: token })
            .then(adopt)
            .finally(() => { refreshing = null; });
    }
    return refreshing;
}

// After a reload of the tab: sign back in with the stored refresh token, if any.
export async function resume() {
    if (!sessionStorage.getItem(REFRESH_KEY)) return false;
    try {
        await refresh();
        return true;
    } catch {
        sessionStorage.removeItem(REFRESH_KEY);
        return false;
    }
}

export async function logout() {
    const token = access;
    access = null; // no call goes out with it any more
    try {
        if (token) await call("POST", "/api/auth/logout", undefined, token);
    } finally {
        access = token;
        end();
    }
}

// An authenticated call. A 401 ends the session (the login form comes back).
export async function api(method, path, body) {
    if (!access) throw new ApiError(401, { error: { message: "not signed in" } });
    try {
        return await call(method, path, body, access);
    } catch (e) {
        if (e.status === 401) end();
        throw e;
    }
}
