// pages/sessions.js: who is online (GET /api/admin/sessions), kicking an account (its sessions
// end, it may sign in again) and banning one.
import { api } from "../api.js";
import { h, fill, table, text, when } from "../dom.js";

export const page = { id: "sessions", title: "Sessions", role: "moderator", render };

async function render(root, ctx) {
    const list = h("div", { id: "sessions-list" }, "Loading\u2026");
    const refresh = h("button", { type: "button", class: "quiet" }, "Refresh");
    const banForm = h("div", { id: "ban-form" });
    fill(root, h("h1", null, "Sessions"), h("div", { class: "actions" }, refresh), banForm, list);

    async function load() {
        try {
            show(await api("GET", "/api/admin/sessions"));
        } catch (e) {
            ctx.error(e);
        }
    }

    function show(data) {
        const sessions = Array.isArray(data.sessions) ? data.sessions : [];
        const online = data.online && typeof data.online === "object" ? Object.entries(data.online) : [];
        fill(list,
            online.length ? h("p", { class: "muted" }, "Online on this node: ",
                online.map(([r, n], i) => [i ? ", " : "", `${r} ${n}`])) : null,
            table([
                { title: "Account", cell: (s) => text(s.account_id) },
                { title: "Player", cell: (s) => text(s.player_id) },
                { title: "Node", cell: (s) => text(s.node) },
                { title: "Region", cell: (s) => text(s.region) },
                { title: "Connected", cell: (s) => when(s.connected_at) },
                { title: "Last seen", cell: (s) => when(s.last_seen) },
                { title: "", cell: (s) => [
                    h("button", { type: "button", class: "small", onclick: () => kick(s.account_id) }, "Kick"),
                    " ",
                    h("button", { type: "button", class: "danger small", onclick: () => ban(s.account_id) }, "Ban")] },
            ], sessions, "nobody is online"));
    }

    async function kick(accountId) {
        try {
            const r = await api("POST", `/api/admin/accounts/${encodeURIComponent(accountId)}/kick`, {});
            ctx.flash(`Account ${r.id} kicked: ${text(r.sessions_ended)} session(s) ended.`);
            await load();
        } catch (e) {
            ctx.error(e);
        }
    }

    function ban(accountId) {
        const reason = h("input", { name: "reason", required: true, maxlength: 500, placeholder: "why" });
        const minutes = h("input", { name: "minutes", type: "number", min: 1, max: 5256000, value: "60", required: true });
        const form = h("form", { class: "card inline" },
            h("strong", null, `Ban account ${accountId}`),
            h("label", null, "Reason ", reason), h("label", null, "Minutes ", minutes),
            h("button", { type: "submit", class: "danger" }, "Ban"),
            h("button", { type: "button", class: "quiet", onclick: () => fill(banForm) }, "Cancel"));
        form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            try {
                const r = await api("POST", `/api/admin/accounts/${encodeURIComponent(accountId)}/ban`,
                    { reason: reason.value, minutes: Number(minutes.value) });
                fill(banForm);
                ctx.flash(`Account ${r.id} banned until ${when(r.banned_until)}; ${text(r.sessions_ended)} session(s) ended.`);
                await load();
            } catch (e) {
                ctx.error(e);
            }
        });
        fill(banForm, form);
        reason.focus();
    }

    refresh.addEventListener("click", load);
    await load();
}
