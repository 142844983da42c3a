// app.js: the web console (GET /admin/). Sign in, then the pages the account's roles allow;
// the page is chosen by the location hash (#map, #sessions, #players, #metrics, #events,
// #scripts, #audit). A
// page's render(root, ctx) may return a function that stops what it started (timers, a
// WebSocket): it is called when another page is shown or the session ends.
import * as session from "./api.js";
import { h, fill } from "./dom.js";
import { page as scripts } from "./pages/scripts.js";
import { page as sessions } from "./pages/sessions.js";
import { page as audit } from "./pages/audit.js";
import { page as map } from "./pages/map.js";
import { page as metrics } from "./pages/metrics.js";
import { page as players } from "./pages/players.js";
import { page as events } from "./pages/events.js";

// Each page names the role routes.lua requires for its calls; the core lets admin through
// every check, and allowed() mirrors that. Hiding a page is a convenience: the API refuses
// the calls anyway (403).
const PAGES = [map, sessions, players, metrics, events, scripts, audit];

const $ = (id) => document.getElementById(id);

function visiblePages() {
    return PAGES.filter((p) => session.allowed(p.role));
}

let flashTimer = null;
function flash(message, kind = "ok") {
    const el = $("flash");
    el.className = "flash " + kind;
    el.textContent = message;
    el.hidden = false;
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

// An API error, as the API words it (API.md "Errors": error.message).
function error(e) {
    if (e && e.status === 401) return; // the session ended: the login form is back
    flash(e && e.message ? e.message : String(e), "bad");
}

let leave = null; // what stops the page on screen
function stopPage() {
    if (leave) {
        const fn = leave;
        leave = null;
        fn();
    }
}

function showLogin(message) {
    shown++;
    stopPage();
    $("login").hidden = false;
    fill($("page"));
    fill($("nav"));
    $("who").textContent = "";
    $("logout").hidden = true;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("login-form").elements.username.focus();
}

function renderNav(current) {
    fill($("nav"), visiblePages().map((p) =>
        h("a", { href: "#" + p.id, class: p.id === current ? "current" : null,
            "aria-current": p.id === current ? "page" : null, dataset: { page: p.id } }, p.title)));
}

async function route() {
    if (!session.signedIn()) return showLogin();
    stopPage();
    $("login").hidden = true;
    $("logout").hidden = false;
    $("who").textContent = `account ${session.currentAccount()} \u00b7 ${session.currentRoles().join(", ")}`;
    const pages = visiblePages();
    const want = location.hash.slice(1);
    const p = pages.find((x) => x.id === want) || pages[0];
    renderNav(p && p.id);
    const root = $("page");
    if (!p) {
        fill(root, h("h1", null, "Nothing to show"),
            h("p", null, "This account has none of the roles the console's pages need (moderator, designer or admin)."));
        return;
    }
    if (want && want !== p.id) {
        // a page this account may not see: say so rather than quietly showing another
        flash(`The ${want} page is not available to this account.`, "bad");
    }
    root.dataset.page = p.id;
    const gen = ++shown;
    const stop = await p.render(root, { flash, error });
    if (typeof stop !== "function") return;
    if (gen === shown && session.signedIn()) leave = stop;
    else stop(); // another page or the sign-in form came while this one was starting
}

let shown = 0;

async function submitLogin(ev) {
    ev.preventDefault();
    const form = ev.target;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
        await session.login(form.elements.username.value, form.elements.password.value);
        form.reset();
        await route();
    } catch (e) {
        showLogin(e.message);
    } finally {
        button.disabled = false;
    }
}

async function start() {
    session.onSignOut(() => showLogin("Signed out: sign in again."));
    $("login-form").addEventListener("submit", submitLogin);
    $("logout").addEventListener("click", async () => {
        try {
            await session.logout();
        } catch (e) {
            error(e);
        }
        history.replaceState(null, "", location.pathname);
        showLogin();
    });
    window.addEventListener("hashchange", () => { route().catch(error); });
    await session.resume();
    await route();
}

start().catch(error);
