// play.test.mjs: /play, the browser game client (web/play/), in headless chromium (issue 10).
// Two pages, two new accounts: each registers, creates a character in r1 (new characters
// start at the region's centre, so each is in the other's view) and joins; A moves with the
// keyboard and B sees A's dot move; B chats, with markup in the text, and A's log shows it as
// text. What B "sees" is the client's list of nearby players (#nearby), which it builds from
// the WebSocket's welcome / appear / moved messages only (web/play/world.js).
//
//   MMO_URL=http://127.0.0.1:PORT node --test spec/browser/play.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { URL, XSS, launch, letters, open } from "./lib.mjs";

// Register through the page, create a character, play it: resolves when welcome came.
// Returns the account: {username, password}.
async function enter(page, name) {
    const acct = { username: "p" + letters(10), password: "play-pass-" + letters(8) };
    await page.goto(URL + "/play/");
    await page.fill("#auth-form input[name=username]", acct.username);
    await page.fill("#auth-form input[name=password]", acct.password);
    await page.click("#auth-form button[value=register]");
    await page.fill("#create-form input[name=name]", name);
    await page.selectOption("#create-form select[name=class]", "ranger");
    await page.selectOption("#create-form select[name=region]", "r1");
    await page.click("#create-form button[type=submit]");
    const row = page.locator("#player-list li", { hasText: name });
    await row.getByRole("button", { name: "Play" }).click();
    await page.waitForFunction((n) => document.getElementById("me").textContent.startsWith(n + " in r1"), name);
    return acct;
}

// Sign in through the page and play the character called name.
async function play(page, acct, name) {
    await page.goto(URL + "/play/");
    await page.fill("#auth-form input[name=username]", acct.username);
    await page.fill("#auth-form input[name=password]", acct.password);
    await page.click("#auth-form button[value=login]");
    await page.locator("#player-list li", { hasText: name }).getByRole("button", { name: "Play" }).click();
}

function waitConn(page, re) {
    return page.waitForFunction(([src, flags]) =>
        new RegExp(src, flags).test(document.getElementById("conn").textContent), [re.source, re.flags]);
}


// Where page sees the player called name: {x, y} from its #nearby list, or null.
function seen(page, name) {
    return page.evaluate((n) => {
        const li = [...document.querySelectorAll("#nearby li")].find((e) => e.dataset.name === n);
        return li ? { x: Number(li.dataset.x), y: Number(li.dataset.y) } : null;
    }, name);
}

// Wait until page sees the player called name, and (want) at x >= minX, y >= minY, or at
// exactly {x, y}. (No eval in the page: its Content-Security-Policy forbids it.)
function waitSeen(page, name, want = {}) {
    return page.waitForFunction(([n, w]) => {
        const li = [...document.querySelectorAll("#nearby li")].find((e) => e.dataset.name === n);
        if (!li) return false;
        const x = Number(li.dataset.x), y = Number(li.dataset.y);
        return (w.minX === undefined || x >= w.minX) && (w.minY === undefined || y >= w.minY) &&
            (w.x === undefined || (x === w.x && y === w.y));
    }, [name, want]);
}

function mine(page) {
    return page.evaluate(() => {
        const me = document.getElementById("me").dataset;
        return { x: Number(me.x), y: Number(me.y) };
    });
}

test("/play: two players see each other move and chat", { timeout: 90000 }, async () => {
    const browser = await launch();
    try {
        const a = await open(browser);
        const b = await open(browser);
        const nameA = "Ann" + letters(6), nameB = "Bob" + letters(6);
        await enter(a, nameA);
        await enter(b, nameB);

        // each is in the other's view: B from welcome.nearby, A from appear
        await waitSeen(b, nameA);
        await waitSeen(a, nameB);
        const start = await seen(b, nameA);
        assert.deepEqual(start, await mine(a), "B sees A where A is");

        // A holds the right arrow: B sees A's dot go right (moved messages)
        await a.focus("#map");
        await a.keyboard.down("ArrowRight");
        await waitSeen(b, nameA, { minX: start.x + 2 });
        await a.keyboard.up("ArrowRight");
        // ...then S (WASD): down
        await a.keyboard.down("s");
        await waitSeen(b, nameA, { minY: start.y + 2 });
        await a.keyboard.up("s");
        // once A stops, B has A exactly where A put itself (no move was refused)
        const end = await mine(a);
        assert.ok(end.x > start.x && end.y > start.y, `A moved: ${JSON.stringify(end)}`);
        await waitSeen(b, nameA, end);
        assert.equal(await a.locator("#errors li").count(), 0, await a.locator("#errors").textContent());

        // B chats, with markup in the text: A's log shows the characters, and runs nothing
        const text = `hello ${XSS} ${letters(6)}`;
        await b.fill("#chat-form input[name=text]", text);
        await b.click("#chat-form button[type=submit]");
        const line = a.locator("#chat-log li", { hasText: text });
        await line.waitFor();
        assert.equal(await line.textContent(), `${nameB}: ${text}`);
        assert.equal(await a.locator("#chat-log img").count(), 0, "no element made from chat text");

        assert.deepEqual(a.problems, []);
        assert.deepEqual(b.problems, []);
    } finally {
        await browser.close();
    }
});

test("/play: a closed socket is shown, and Reconnect joins again", { timeout: 60000 }, async () => {
    const browser = await launch();
    try {
        const a = await open(browser);
        const c = await open(browser);
        const name = "Cat" + letters(6);
        const acct = await enter(a, name);
        await waitConn(a, /^connected: r1$/);
        // the same character joined from another tab: A is told (error replaced, close 4002)
        await play(c, acct, name);
        await waitConn(c, /^connected: r1$/);
        await waitConn(a, /^disconnected \(4002/);
        assert.ok(await a.locator("#reconnect").isVisible(), "A offers to reconnect");
        assert.match(await a.locator("#errors").textContent(), /replaced/);
        // A takes it back
        await a.click("#reconnect");
        await waitConn(a, /^connected: r1$/);
        assert.ok(!(await a.locator("#reconnect").isVisible()));
        await waitConn(c, /^disconnected \(4002/);
        assert.deepEqual(a.problems, []);
        assert.deepEqual(c.problems, []);
    } finally {
        await browser.close();
    }
});
