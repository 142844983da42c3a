// lib.mjs: what the browser specs share: the node's URL, API calls made directly (to set the
// scene), a browser launched from Debian's chromium, and waits on what the page shows.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

export const URL = (process.env.MMO_URL || `http://127.0.0.1:${process.env.MMO_PORT || 8080}`).replace(/\/$/, "");
export const ADMIN_PASSWORD = process.env.MMO_ADMIN_PASSWORD;
export const SCRIPTS = process.env.MMO_BROWSER_SCRIPTS; // the node's scripts copy (spec/browser/run)
const SHOTS = process.env.MMO_SCREENSHOTS;                // set by tools/screenshots
const TIMEOUT = 15000;

export const XSS = "<img src=x onerror=alert(1)>";

export async function call(method, path, { body, token } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(URL + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const raw = await res.text();
    let json = null;
    try {
        json = raw ? JSON.parse(raw) : null;
    } catch {
        json = null;
    }
    return { status: res.status, json, raw };
}

// call(), and fail unless the status is the one expected
export async function must(status, method, path, opts) {
    const r = await call(method, path, opts);
    if (r.status !== status) throw new Error(`${method} ${path}: ${r.status} (wanted ${status}): ${r.raw}`);
    return r.json;
}

export async function token(username, password) {
    return (await must(200, "POST", "/api/auth/login", { body: { username, password } })).access_token;
}

export function letters(n) {
    let s = "";
    for (let i = 0; i < n; i++) s += String.fromCharCode(97 + Math.floor(Math.random() * 26));
    return s;
}

// A new account with these roles (given by the admin): {id, username, password}
export async function account(roles, adminToken) {
    const username = "b" + letters(10);
    const password = "browser-pass-" + letters(6);
    const acct = await must(201, "POST", "/api/auth/register", { body: { username, password } });
    if (roles) {
        await must(200, "POST", `/api/admin/accounts/${acct.id}/roles`, { token: adminToken, body: { roles } });
    }
    return { id: acct.id, username, password };
}

export async function launch() {
    return chromium.launch({ executablePath: process.env.MMO_CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
}

// A fresh context (its own sessionStorage) and page. page.problems collects what a user
// would never want: dialogs (alert), uncaught errors, CSP violations.
export async function open(browser) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.problems = [];
    page.on("dialog", (d) => {
        page.problems.push(`dialog: ${d.type()} ${d.message()}`);
        d.dismiss().catch(() => {});
    });
    page.on("pageerror", (e) => page.problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
        // an API answer of 4xx is logged by chromium as a failed load: expected, not a fault
        if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
            page.problems.push(`console error: ${m.text()}`);
        }
    });
    return page;
}

// Sign in on /admin/#hash (the page to show; the first the roles allow when none).
export async function signIn(page, username, password, hash = "") {
    await page.goto(URL + "/admin/" + (hash ? "#" + hash : ""));
    await page.locator("#login-form").waitFor();
    await page.fill("#login-form input[name=username]", username);
    await page.fill("#login-form input[name=password]", password);
    await page.click("#login-form button[type=submit]");
    await page.locator("#logout").waitFor();
}

// Wait until the text of selector matches re; returns the text.
export async function waitText(page, selector, re) {
    await page.waitForFunction(([sel, src, flags]) => {
        const el = document.querySelector(sel);
        return el !== null && new RegExp(src, flags).test(el.textContent);
    }, [selector, re.source, re.flags], { timeout: TIMEOUT });
    return page.locator(selector).textContent();
}

export async function navTitles(page) {
    return page.locator("#nav a").allTextContents();
}

export async function shot(page, name) {
    if (!SHOTS) return;
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, `console-${name}.png`), fullPage: false });
}
