// pages/scripts.js: the loaded script set (GET /api/admin/scripts), reload and rollback.
import { api } from "../api.js";
import { h, fill, table, text, when } from "../dom.js";

export const page = { id: "scripts", title: "Scripts", role: "designer", render };

async function render(root, ctx) {
    const result = h("div", { id: "scripts-result", class: "result", role: "status" });
    const info = h("div", { id: "scripts-info" }, "Loading\u2026");
    const reload = h("button", { id: "scripts-reload", type: "button" }, "Reload");
    const rollback = h("button", { id: "scripts-rollback", type: "button", class: "quiet" }, "Roll back");
    fill(root, h("h1", null, "Scripts"),
        h("div", { class: "actions" }, reload, rollback), result, info);

    async function load() {
        try {
            show(info, await api("GET", "/api/admin/scripts"));
        } catch (e) {
            ctx.error(e);
        }
    }

    async function act(button, path, verb) {
        reload.disabled = rollback.disabled = true;
        result.className = "result";
        fill(result, verb + "\u2026");
        try {
            const r = await api("POST", path);
            result.className = "result ok";
            fill(result, `${verb} done: version `,
                h("strong", { dataset: { field: "new-version" } }, text(r.version)),
                " \u00b7 hash ", h("span", { class: "mono" }, text(r.hash)));
        } catch (e) {
            result.className = "result bad";
            const d = e.details || {};
            fill(result, h("strong", null, `${verb} refused (${e.code})`),
                h("div", { class: "mono", dataset: { field: "message" } }, e.message),
                d.file ? h("div", { class: "where" }, "file ",
                    h("span", { class: "mono", dataset: { field: "file" } }, d.file),
                    d.line ? [" line ", h("span", { class: "mono", dataset: { field: "line" } }, d.line)] : null)
                    : null);
            if (e.status === 401 || e.status === 403) ctx.error(e);
        } finally {
            reload.disabled = rollback.disabled = false;
        }
        await load();
    }

    reload.addEventListener("click", () => act(reload, "/api/admin/scripts/reload", "Reload"));
    rollback.addEventListener("click", () => act(rollback, "/api/admin/scripts/rollback", "Rollback"));
    await load();
}

function show(root, s) {
    const facts = [
        ["Version", s.version, "version"], ["Hash", s.hash, "hash"],
        ["Loaded at", when(s.loaded_at), "loaded_at"], ["Loaded by", s.loaded_by, "loaded_by"],
        ["Files", s.files, "files"], ["Bytes", s.bytes, "bytes"],
    ];
    const dl = h("dl", { class: "facts" }, facts.map(([k, v, f]) =>
        [h("dt", null, k), h("dd", { dataset: { field: f }, class: f === "hash" ? "mono" : null }, text(v))]));
    const modules = Array.isArray(s.modules) ? s.modules : [];
    const mods = Array.isArray(s.mods) ? s.mods : [];
    fill(root, dl,
        h("h2", null, `Mods (${mods.length})`),
        table([
            { title: "Mod", cell: (m) => text(m.name) },
            { title: "State", cell: (m) => h("span", { class: "state state-" + String(m.state) }, text(m.state)) },
            { title: "Error", cell: (m) => h("span", { class: "mono" }, m.error ? text(m.error) : "") },
        ], mods, "no mods"),
        h("h2", null, `Modules (${modules.length})`),
        table([
            { title: "Module", cell: (m) => text(typeof m === "string" ? m : m.name) },
            { title: "File", cell: (m) => h("span", { class: "mono" }, text(m.file)) },
            { title: "Bytes", cell: (m) => text(m.bytes) },
        ], modules, "no modules"));
}
