// pages/audit.js: the audit log (GET /api/admin/audit?limit=&after=&action=), newest first,
// a page at a time: "Older" asks for the entries after the last one shown (the API's next).
import { api } from "../api.js";
import { h, fill, table, text, when } from "../dom.js";

export const page = { id: "audit", title: "Audit", role: "admin", render };

const LIMIT = 25;

async function render(root, ctx) {
    const list = h("div", { id: "audit-list" }, "Loading\u2026");
    const action = h("input", { name: "action", placeholder: "action, e.g. account.ban", maxlength: 64 });
    const newer = h("button", { type: "button", id: "audit-newer", class: "quiet", disabled: true }, "\u2190 Newer");
    const older = h("button", { type: "button", id: "audit-older", class: "quiet", disabled: true }, "Older \u2192");
    const filter = h("form", { class: "inline" }, h("label", null, "Action ", action),
        h("button", { type: "submit" }, "Filter"));
    fill(root, h("h1", null, "Audit log"), filter, list, h("div", { class: "actions" }, newer, older));

    // the `after` of each page shown so far: [undefined, id1, id2, ...]
    let pages = [undefined];
    let next = null;

    async function load() {
        const q = new URLSearchParams({ limit: String(LIMIT) });
        const after = pages[pages.length - 1];
        if (after !== undefined) q.set("after", String(after));
        if (action.value.trim()) q.set("action", action.value.trim());
        try {
            const data = await api("GET", "/api/admin/audit?" + q);
            const entries = Array.isArray(data.entries) ? data.entries : [];
            next = data.next ?? null;
            fill(list, table([
                { title: "#", cell: (e) => text(e.id) },
                { title: "At", cell: (e) => when(e.at) },
                { title: "Actor", cell: (e) => text(e.actor) },
                { title: "Action", cell: (e) => text(e.action) },
                { title: "Target", cell: (e) => text(e.target) },
                { title: "Data", cell: (e) => h("span", { class: "mono data" }, e.data == null ? "" : text(e.data)) },
            ], entries, "no entries"), h("p", { class: "muted" }, `page ${pages.length}`));
            older.disabled = next === null;
            newer.disabled = pages.length < 2;
        } catch (e) {
            ctx.error(e);
        }
    }

    older.addEventListener("click", () => {
        if (next === null) return;
        pages.push(next);
        load();
    });
    newer.addEventListener("click", () => {
        if (pages.length < 2) return;
        pages.pop();
        load();
    });
    filter.addEventListener("submit", (ev) => {
        ev.preventDefault();
        pages = [undefined];
        load();
    });
    await load();
}
