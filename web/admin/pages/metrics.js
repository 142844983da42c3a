// pages/metrics.js: the node's vital signs over the last minutes (charts.js, from
// GET /api/admin/metrics).
import { api } from "../api.js";
import { h, fill } from "../dom.js";
import { mountCharts } from "../charts.js";

export const page = { id: "metrics", title: "Metrics", role: "moderator", render };

function render(root) {
    const box = h("div", { id: "metrics" });
    fill(root, h("h1", null, "Metrics"), box);
    const charts = mountCharts(box, { get: (path) => api("GET", path) });
    return () => charts.stop();
}
