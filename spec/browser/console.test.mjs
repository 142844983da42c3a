// console.test.mjs: the web console (GET /admin/) in headless chromium, against a node started
// by spec/browser/run on a copy of scripts/ (MMO_BROWSER_SCRIPTS) that these tests edit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ADMIN_PASSWORD, SCRIPTS, XSS, URL, account, call, launch, letters, must, navTitles, open, shot,
    signIn, token, waitText } from "./lib.mjs";

let browser;
let admin; // the admin's access token, for setting the scene through the API

before(async () => {
    assert.ok(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set");
    assert.ok(SCRIPTS, "MMO_BROWSER_SCRIPTS must name the node's scripts directory");
    admin = await token("admin", ADMIN_PASSWORD);
    browser = await launch();
});

after(async () => {
    if (browser) await browser.close();
});

test("the admin signs in and sees the Scripts page with the loaded version", async () => {
    const page = await open(browser);
    const res = await page.goto(URL + "/admin/");
    assert.match(res.headers()["content-security-policy"] || "", /script-src 'self'/);
    await signIn(page, "admin", ADMIN_PASSWORD, "scripts");
    const info = await must(200, "GET", "/api/admin/scripts", { token: admin });
    assert.equal(await waitText(page, "[data-field=version]", /^\d+$/), String(info.version));
    assert.equal(await page.locator("[data-field=hash]").textContent(), info.hash);
    assert.deepEqual(await navTitles(page), ["Map", "Sessions", "Players", "Metrics", "World events", "Scripts", "Audit"]);
    await shot(page, "scripts");
    // a reload of the tab keeps the session (the refresh token is in sessionStorage) ...
    await page.reload();
    await waitText(page, "[data-field=version]", /^\d+$/);
    // ... and logging out ends it, for this tab and after a reload too
    await page.click("#logout");
    await page.locator("#login-form").waitFor();
    await page.reload();
    await page.locator("#login-form").waitFor();
    assert.equal(await page.locator("#logout").isVisible(), false);
    assert.deepEqual(page.problems, []);
    await page.context().close();
});

test("a refresh the node does not answer is tried again, and the session goes on", async () => {
    const page = await open(browser);
    await page.clock.install();
    await signIn(page, "admin", ADMIN_PASSWORD, "scripts");
    await waitText(page, "[data-field=version]", /^\d+$/);
    const first = await page.evaluate(() => sessionStorage.getItem("mmo.console.refresh"));
    // the first refresh finds no node (the request fails); the next one gets through
    let failed = 0;
    await page.route("**/api/auth/refresh", (route) => {
        if (failed++ === 0) return route.abort("connectionrefused");
        return route.continue();
    });
    const refreshed = page.waitForResponse((r) => r.url().endsWith("/api/auth/refresh") && r.status() === 200);
    await page.clock.fastForward("13:00");
    await page.clock.fastForward("00:02");
    await refreshed;
    await page.waitForFunction((old) => sessionStorage.getItem("mmo.console.refresh") !== old, first);
    assert.equal(failed, 2);
    assert.equal(await page.locator("#login").isVisible(), false);
    // problems: the failed fetch is logged by chromium as a console error; nothing else
    assert.deepEqual(page.problems.filter((p) => !p.includes("ERR_CONNECTION_REFUSED") && !p.includes("Failed to fetch")), []);
    await page.context().close();
});

test("the console refreshes its tokens before the access token expires", async () => {
    const page = await open(browser);
    await page.clock.install(); // the page's timers on a clock the test moves
    await signIn(page, "admin", ADMIN_PASSWORD, "scripts");
    await waitText(page, "[data-field=version]", /^\d+$/);
    const first = await page.evaluate(() => sessionStorage.getItem("mmo.console.refresh"));
    assert.ok(first);
    // 80% of the access token's life (auth.access_ttl_s: 900 s by default) later
    const refreshed = page.waitForResponse((r) => r.url().endsWith("/api/auth/refresh"));
    await page.clock.fastForward("13:00");
    assert.equal((await refreshed).status(), 200);
    await page.waitForFunction((old) => sessionStorage.getItem("mmo.console.refresh") !== old, first);
    // and goes on with the new pair
    await page.click("#nav a[data-page=audit]");
    await waitText(page, "#audit-list", /page 1/);
    assert.equal(await page.locator("#login").isVisible(), false);
    assert.deepEqual(page.problems, []);
    await page.context().close();
});

test("a broken script is refused with its file and line; the fixed one loads; rollback", async () => {
    const page = await open(browser);
    await signIn(page, "admin", ADMIN_PASSWORD, "scripts");
    const before = Number(await waitText(page, "[data-field=version]", /^\d+$/));
    const hash = await page.locator("[data-field=hash]").textContent();
    const file = join(SCRIPTS, "lib", "console_broken.lua");
    writeFileSync(file, "local x = 1\nlocal y = = 2\nreturn {}\n");
    try {
        await page.click("#scripts-reload");
        await page.locator("#scripts-result.bad").waitFor();
        assert.equal(await page.locator("#scripts-result [data-field=file]").textContent(), file);
        assert.equal(await page.locator("#scripts-result [data-field=line]").textContent(), "2");
        assert.match(await page.locator("#scripts-result").textContent(), /console_broken\.lua/);
        await shot(page, "reload-error");
        // the running set stayed
        assert.equal(await page.locator("[data-field=version]").textContent(), String(before));
    } finally {
        rmSync(file, { force: true });
    }
    writeFileSync(file, "local _M = {}\n\nreturn _M\n");
    try {
        await page.click("#scripts-reload");
        await page.locator("#scripts-result.ok").waitFor();
        assert.equal(await page.locator("#scripts-result [data-field=new-version]").textContent(), String(before + 1));
        assert.equal(await waitText(page, "[data-field=version]", new RegExp(`^${before + 1}$`)), String(before + 1));
        assert.notEqual(await page.locator("[data-field=hash]").textContent(), hash);
    } finally {
        rmSync(file, { force: true });
    }
    // Roll back: the set from before the reload, by its hash
    await page.click("#scripts-rollback");
    await waitText(page, "#scripts-result.ok", /^Rollback done/);
    await waitText(page, "[data-field=hash]", new RegExp(`^${hash}$`));
    assert.deepEqual(page.problems, []);
    await page.context().close();
});

test("a moderator sees Map, Sessions, Players and Metrics, not Scripts or World events", async () => {
    const mod = await account(["player", "moderator"], admin);
    const page = await open(browser);
    await signIn(page, mod.username, mod.password);
    await waitText(page, "#page h1", /^World map$/);
    assert.deepEqual(await navTitles(page), ["Map", "Sessions", "Players", "Metrics"]);
    // asking for the page by its address shows another and says why
    await page.goto(URL + "/admin/#scripts");
    await waitText(page, "#flash", /scripts page is not available/);
    await waitText(page, "#page h1", /^World map$/);
    assert.equal(await page.locator("#scripts-info").count(), 0);
    assert.equal(await page.locator("#scripts-reload").count(), 0);
    // a session ended elsewhere (here: the account banned) brings the sign-in form back at
    // the next call (401)
    await page.click("#nav a[data-page=sessions]");
    await page.locator("#sessions-list table").waitFor();
    await must(200, "POST", `/api/admin/accounts/${mod.id}/ban`, { token: admin, body: { reason: "test", minutes: 1 } });
    await page.click("#page button:text-is('Refresh')");
    await waitText(page, "#login-error", /Signed out/);
    assert.equal(await page.locator("#login-form").isVisible(), true);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("mmo.console.refresh")), null);
    assert.deepEqual(page.problems, []);
    await page.context().close();
});

test("hostile text shows as text: a ban reason of <img src=x onerror=alert(1)>", async () => {
    const victim = await account(null, admin);
    await must(200, "POST", `/api/admin/accounts/${victim.id}/ban`, { token: admin, body: { reason: XSS, minutes: 1 } });
    const page = await open(browser);
    await signIn(page, "admin", ADMIN_PASSWORD, "scripts");
    await page.goto(URL + "/admin/#audit");
    await page.fill("#page input[name=action]", "account.ban");
    await page.click("#page form button[type=submit]");
    const cell = page.locator("#audit-list td", { hasText: XSS }).first();
    await cell.waitFor();
    assert.match(await cell.textContent(), /<img src=x onerror=alert\(1\)>/);
    assert.equal(await page.locator("#page img").count(), 0);
    await shot(page, "audit");
    assert.deepEqual(page.problems, []);
    await page.context().close();
});

test("the audit log pages by `after`", async () => {
    for (let i = 0; i < 30; i++) await must(200, "GET", "/api/admin/cache", { token: admin }); // 30 entries
    const page = await open(browser);
    await signIn(page, "admin", ADMIN_PASSWORD, "scripts");
    await page.goto(URL + "/admin/#audit");
    await waitText(page, "#audit-list", /page 1/);
    const first = await page.locator("#audit-list tbody tr td:first-child").allTextContents();
    assert.equal(first.length, 25);
    await page.click("#audit-older");
    await waitText(page, "#audit-list", /page 2/);
    const second = await page.locator("#audit-list tbody tr td:first-child").allTextContents();
    assert.ok(Number(second[0]) < Number(first[first.length - 1]), `${second[0]} after ${first.at(-1)}`);
    await page.click("#audit-newer");
    await waitText(page, "#audit-list", /page 1/);
    assert.deepEqual(page.problems, []);
    await page.context().close();
});

// A bot (POST /api/admin/bots) in r1, playing over a WebSocket of a page of the same origin:
// {bot, botPage}; botPage's window.bot: {ws, x, y, closed (the close code)}.
async function joinBot() {
    const res = await must(200, "POST", "/api/admin/bots", { token: admin, body: { count: 1, prefix: "c" + letters(5), region: "r1" } });
    const bot = res.bots[0];
    const botPage = await open(browser);
    await botPage.goto(URL + "/admin/");
    await botPage.evaluate(([tok, pid]) => new Promise((resolve, reject) => {
        const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws?token=" + encodeURIComponent(tok));
        window.bot = { ws, closed: null };
        ws.onopen = () => ws.send(JSON.stringify({ t: "join", player_id: pid }));
        ws.onmessage = (m) => {
            const msg = JSON.parse(m.data);
            if (msg.t === "welcome") {
                window.bot.x = msg.player.position.x;
                window.bot.y = msg.player.position.y;
                resolve();
            }
        };
        ws.onclose = (e) => { window.bot.closed = e.code; reject(new Error("closed " + e.code)); };
    }), [bot.token, bot.player_id]);
    return { bot, botPage };
}

test("the map shows a player moving; the metrics page draws the node's charts", async () => {
    const { bot, botPage } = await joinBot();
    const page = await open(browser);
    await signIn(page, "admin", ADMIN_PASSWORD, "map");
    await page.waitForFunction((id) => window.mmoMap && window.mmoMap.players.has(id), bot.player_id);
    const x0 = await page.evaluate((id) => window.mmoMap.players.get(id).x, bot.player_id);
    // the bot walks east at 10 Hz, 0.4 units a step (within the rules' speed)
    await botPage.evaluate(() => {
        let seq = 0;
        window.bot.walk = setInterval(() => {
            window.bot.x += 0.4;
            window.bot.ws.send(JSON.stringify({ t: "move", x: window.bot.x, y: window.bot.y, seq: ++seq }));
        }, 100);
    });
    await page.waitForFunction(([id, x]) => window.mmoMap.players.get(id)?.x > x + 1.5, [bot.player_id, x0]);
    await waitText(page, ".map-status", /^live/);
    await shot(page, "map");
    await page.click("#nav a[data-page=metrics]");
    await page.waitForFunction(() => window.mmoCharts && window.mmoCharts.reads > 0);
    assert.equal(await page.locator("#metrics figure.chart canvas").count(), 6);
    await shot(page, "metrics");
    assert.deepEqual(page.problems, []);
    await botPage.evaluate(() => clearInterval(window.bot.walk));
    await page.context().close();
    await botPage.context().close();
});

test("a moderator sees a live session and bans its account", async () => {
    const { bot, botPage } = await joinBot();
    const mod = await account(["player", "moderator"], admin);
    const page = await open(browser);
    await signIn(page, mod.username, mod.password, "sessions");
    const row = page.locator("#sessions-list tbody tr", { hasText: String(bot.player_id) });
    await row.waitFor();
    await shot(page, "sessions");
    await row.locator("button", { hasText: "Ban" }).click();
    await page.fill("#ban-form input[name=reason]", "botting");
    await page.fill("#ban-form input[name=minutes]", "5");
    await page.click("#ban-form button[type=submit]");
    await waitText(page, "#flash", /banned until/);
    await botPage.waitForFunction(() => window.bot.closed !== null);
    assert.equal(await botPage.evaluate(() => window.bot.closed), 4003);
    assert.deepEqual(page.problems, []);
    await page.context().close();
    await botPage.context().close();
});

test("an API error shows the API's message", async () => {
    const page = await open(browser);
    await page.goto(URL + "/admin/");
    await page.fill("#login-form input[name=username]", "admin");
    await page.fill("#login-form input[name=password]", "not-the-password");
    await page.click("#login-form button[type=submit]");
    const r = await call("POST", "/api/auth/login", { body: { username: "admin", password: "not-the-password" } });
    assert.equal(r.status, 401);
    assert.equal(await waitText(page, "#login-error", /\S/), r.json.error.message);
    await shot(page, "login");
    await page.context().close();
});

test("the map shows a bot of tools/loadbot moving", async () => {
    const loadbot = (process.env.MMO_BIN || "build-asan/mmo").replace(/mmo$/, "loadbot");
    const prefix = letters(4);
    const { spawn } = await import("node:child_process");
    // one bot, 5 moves a second for 20 s (it stops by itself; killed at the end anyway)
    const lb = spawn(loadbot, ["--url", URL, "--bots", "1", "--rate", "5", "--duration", "20",
        "--prefix", prefix, "--quiet"], { stdio: ["ignore", "ignore", "inherit"] });
    try {
        const page = await open(browser);
        await signIn(page, "admin", ADMIN_PASSWORD, "map");
        const find = ([p]) => {
            for (const v of window.mmoMap.players.values()) if (v.name.toLowerCase().startsWith(p)) return v;
            return null;
        };
        await page.waitForFunction(find, [prefix]).catch(async (e) => {
            const seen = await page.evaluate(() => JSON.stringify({ region: window.mmoMap.region,
                n: window.mmoMap.players.size, snapshots: window.mmoMap.snapshots,
                status: document.querySelector(".map-status")?.textContent,
                names: [...window.mmoMap.players.values()].map((v) => v.name).slice(0, 20) }));
            throw new Error(`no bot named ${prefix}... on the map: ${seen} (${e.message})`);
        });
        const first = await page.evaluate(find, [prefix]);
        await page.waitForFunction(([p, x, y]) => {
            for (const v of window.mmoMap.players.values()) {
                if (v.name.toLowerCase().startsWith(p) && (v.x !== x || v.y !== y)) return true;
            }
            return false;
        }, [prefix, first.x, first.y]);
        assert.deepEqual(page.problems, []);
        await page.context().close();
    } finally {
        lb.kill("SIGTERM");
    }
});

test("a moderator kicks a live session: its WebSocket closes with 4004", async () => {
    const { bot, botPage } = await joinBot();
    const mod = await account(["player", "moderator"], admin);
    const page = await open(browser);
    await signIn(page, mod.username, mod.password, "sessions");
    const row = page.locator("#sessions-list tbody tr", { hasText: String(bot.player_id) });
    await row.waitFor();
    await row.locator("button", { hasText: "Kick" }).click();
    await waitText(page, "#flash", /kicked/);
    await botPage.waitForFunction(() => window.bot.closed !== null);
    assert.equal(await botPage.evaluate(() => window.bot.closed), 4004);
    assert.deepEqual(page.problems, []);
    await page.context().close();
    await botPage.context().close();
});

// On the console's players page: search for query, open the result named name, wait for its card.
async function openPlayer(page, query, name) {
    await page.fill("#player-search input[name=name]", query);
    await page.click("#player-search button[type=submit]");
    await page.locator("#player-results button", { hasText: name }).click();
    await waitText(page, "#player-card h2", new RegExp("^" + name + "$"));
}

test("an admin finds a player by name and grants it an item; a moderator may search, not grant", async () => {
    const res = await must(200, "POST", "/api/admin/bots", { token: admin, body: { count: 1, prefix: "g" + letters(5), region: "r1" } });
    const bot = res.bots[0];
    const doc = await must(200, "GET", `/api/players/${bot.player_id}`, { token: admin });
    const page = await open(browser);
    await signIn(page, "admin", ADMIN_PASSWORD, "players");
    await openPlayer(page, doc.name.slice(0, 5).toUpperCase(), doc.name);
    await page.fill("#grant-form input[name=item]", "potion_small");
    await page.fill("#grant-form input[name=qty]", "3");
    await page.click("#grant-form button[type=submit]");
    await waitText(page, "#player-card table", /potion_small\s*3/);
    const inv = await must(200, "GET", `/api/players/${bot.player_id}/inventory`, { token: admin });
    assert.equal(inv.items.find((i) => i.item === "potion_small").qty, 3);
    await shot(page, "players");
    assert.deepEqual(page.problems, []);
    await page.context().close();

    const mod = await account(["player", "moderator"], admin);
    const mpage = await open(browser);
    await signIn(mpage, mod.username, mod.password, "players");
    await openPlayer(mpage, doc.name, doc.name);
    assert.equal(await mpage.locator("#grant-form").count(), 0);
    await mpage.context().close();
});

test("a designer starts a world event; a bad one is refused with the API's message", async () => {
    const des = await account(["player", "designer"], admin);
    const page = await open(browser);
    await signIn(page, des.username, des.password, "events");
    await page.locator("#event-form select[name=region] option").first().waitFor({ state: "attached" });
    await page.fill("#event-form input[name=type]", "double_xp");
    await page.selectOption("#event-form select[name=region]", "r2");
    await page.fill("#event-form textarea[name=params]", '{"duration_s": 60}');
    await page.click("#event-form button[type=submit]");
    await waitText(page, "#event-result", /started: event \d+ \(double_xp in r2\)/);
    const id = (await page.textContent("#event-result")).match(/event (\d+)/)[1];
    await page.locator("#event-list tbody tr", { hasText: "double_xp" }).first().waitFor();
    const listed = await must(200, "GET", "/api/world/events?limit=50", { token: admin });
    assert.ok(listed.events.some((e) => String(e.id) === id && e.region === "r2"));
    await page.fill("#event-form input[name=type]", "no_such_kind");
    await page.click("#event-form button[type=submit]");
    await waitText(page, "#event-result", /type: a kind of scripts\/world_events/);
    await shot(page, "events");
    assert.deepEqual(page.problems, []);
    await page.context().close();
});
