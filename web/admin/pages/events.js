// pages/events.js: the world events (GET /api/world/events) and, for designers, starting one
// (POST /api/admin/world/events {type, region, params, starts_at}): the kinds are the files of
// scripts/world_events/ (docs/designers.md).
import { api } from "../api.js";
import { h, fill, table, text, when } from "../dom.js";

export const page = { id: "events", title: "World events", role: "designer", render };

const KINDS = ["double_xp", "invasion", "treasure_rush"]; // scripts/world_events/; others may be typed

async function render(root, ctx) {
    const type = h("input", { name: "type", list: "event-kinds", required: true, maxlength: 64, placeholder: "kind" });
    const kinds = h("datalist", { id: "event-kinds" }, KINDS.map((k) => h("option", { value: k })));
    const region = h("select", { name: "region", required: true });
    const params = h("textarea", { name: "params", rows: 3, placeholder: '{"duration_s": 300}' });
    const said = h("p", { id: "event-result", class: "muted" });
    const form = h("form", { id: "event-form" },
        h("label", null, "Kind ", type), kinds, " ", h("label", null, "Region ", region),
        h("label", { class: "block" }, "Parameters (JSON) ", params),
        h("button", { type: "submit" }, "Start"), said);
    const list = h("div", { id: "event-list" }, "Loading\u2026");
    fill(root, h("h1", null, "World events"), form, list);

    async function load() {
        try {
            const [regions, events] = await Promise.all([api("GET", "/api/world/regions"),
                api("GET", "/api/world/events?limit=50")]);
            if (!region.options.length) {
                fill(region, regions.regions.map((r) => h("option", { value: r.id }, `${r.name} (${r.id})`)));
            }
            fill(list, table([
                { title: "Id", cell: (e) => text(e.id) },
                { title: "Kind", cell: (e) => text(e.type) },
                { title: "Region", cell: (e) => text(e.region) },
                { title: "State", cell: (e) => text(e.state) },
                { title: "Starts", cell: (e) => when(e.starts_at) },
                { title: "Ends", cell: (e) => when(e.ends_at) },
            ], events.events, "no world event yet"));
        } catch (err) {
            ctx.error(err);
        }
    }

    form.addEventListener("submit", async (e) => {
        e.preventDefault();
        let p = {};
        if (params.value.trim()) {
            try {
                p = JSON.parse(params.value);
            } catch (err) {
                fill(said, `parameters: not JSON (${err.message})`);
                return;
            }
        }
        try {
            const ev = await api("POST", "/api/admin/world/events", { type: type.value, region: region.value, params: p });
            fill(said, `started: event ${ev.id} (${ev.type} in ${ev.region})`);
            load();
        } catch (err) {
            fill(said, err.message);
        }
    });
    await load();
}
