// pages/map.js: the live world map (map.js): regions, territories, world events over HTTP,
// players over the WebSocket's observe (moderators and up).
import { api, accessToken } from "../api.js";
import { h, fill } from "../dom.js";
import { mountMap } from "../map.js";

export const page = { id: "map", title: "Map", role: "moderator", render };

function render(root) {
    const box = h("div", { id: "map" });
    fill(root, h("h1", null, "World map"), box);
    const map = mountMap(box, { get: (path) => api("GET", path), token: accessToken });
    return () => map.stop();
}
