// pages/players.js: find players by the start of their name (GET /api/players?name=), see one
// (its document and inventory), and, for admins, grant it items
// (POST /api/admin/players/:id/items).
import { api, allowed } from "../api.js";
import { h, fill, table, text } from "../dom.js";

export const page = { id: "players", title: "Players", role: "moderator", render };

const round = (v) => (typeof v === "number" ? Math.round(v * 10) / 10 : text(v));

function render(root, ctx) {
    const q = h("input", { name: "name", maxlength: 32, placeholder: "the start of a name", required: true });
    const form = h("form", { id: "player-search", class: "actions" }, q, h("button", { type: "submit" }, "Search"));
    const results = h("div", { id: "player-results" });
    const card = h("div", { id: "player-card" });
    fill(root, h("h1", null, "Players"), form, results, card);

    form.addEventListener("submit", async (e) => {
        e.preventDefault();
        try {
            const r = await api("GET", `/api/players?name=${encodeURIComponent(q.value)}&limit=50`);
            fill(results, table([
                { title: "Name", cell: (p) => h("button", { type: "button", class: "link", onclick: () => show(p.id) }, text(p.name)) },
                { title: "Id", cell: (p) => text(p.id) },
                { title: "Class", cell: (p) => text(p.class) },
                { title: "Level", cell: (p) => text(p.level) },
                { title: "Region", cell: (p) => text(p.position && p.position.region) },
                { title: "Guild", cell: (p) => text(p.guild) },
            ], r.players, "no player's name starts so"));
        } catch (err) {
            ctx.error(err);
        }
    });

    async function show(id) {
        try {
            const [p, inv] = await Promise.all([api("GET", `/api/players/${id}`),
                api("GET", `/api/players/${id}/inventory`)]);
            const items = Array.isArray(inv.items) ? inv.items : [];
            fill(card,
                h("h2", null, text(p.name)),
                h("dl", { class: "card" },
                    ["id", "class", "level", "xp", "guild"].map((k) => [h("dt", null, k), h("dd", null, text(p[k]))]),
                    h("dt", null, "position"),
                    h("dd", null, p.position ? `${p.position.region} ${round(p.position.x)}, ${round(p.position.y)}` : "\u2014")),
                h("h3", null, "Inventory"),
                table([
                    { title: "Item", cell: (i) => text(i.item || i.id) },
                    { title: "Quantity", cell: (i) => text(i.qty) },
                ], items, "empty"),
                allowed("admin") ? grantForm(p.id) : null);
        } catch (err) {
            ctx.error(err);
        }
    }

    function grantForm(id) {
        const item = h("input", { name: "item", required: true, maxlength: 64, placeholder: "item id" });
        const qty = h("input", { name: "qty", type: "number", min: 1, max: 1000000, value: "1", required: true });
        const said = h("span", { class: "muted", id: "grant-result" });
        const f = h("form", { id: "grant-form", class: "actions" }, "Grant ", item, " \u00d7 ", qty,
            h("button", { type: "submit" }, "Grant"), said);
        f.addEventListener("submit", async (e) => {
            e.preventDefault();
            try {
                await api("POST", `/api/admin/players/${id}/items`, { item: item.value, qty: Number(qty.value) });
                fill(said, `granted ${qty.value} ${item.value}`);
                show(id);
            } catch (err) {
                fill(said, err.message);
            }
        });
        return f;
    }
}
