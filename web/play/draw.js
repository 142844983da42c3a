// draw.js: the region around us on a <canvas>, centred on our dot. Canvas text is pixels,
// not markup, so names drawn here cannot inject anything.

const VIEW_RADIUS = 100; // config.lua world.view_radius: who is farther is not sent to us

export function draw(canvas, world) {
    const g = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    g.fillStyle = "#1d2b1f";
    g.fillRect(0, 0, w, h);
    if (!world.me) return;
    const scale = Math.min(w, h) / (2.2 * VIEW_RADIUS); // pixels per world unit
    const sx = (x) => w / 2 + (x - world.me.x) * scale;
    const sy = (y) => h / 2 + (y - world.me.y) * scale;

    // a grid every 25 units, so moving shows even when nobody else is near
    g.strokeStyle = "#2c4030";
    g.lineWidth = 1;
    g.beginPath();
    const step = 25;
    for (let x = Math.floor((world.me.x - w / 2 / scale) / step) * step; sx(x) < w; x += step) {
        g.moveTo(sx(x), 0);
        g.lineTo(sx(x), h);
    }
    for (let y = Math.floor((world.me.y - h / 2 / scale) / step) * step; sy(y) < h; y += step) {
        g.moveTo(0, sy(y));
        g.lineTo(w, sy(y));
    }
    g.stroke();

    // the regions' edges, and how far we see
    g.strokeStyle = "#c9a227";
    g.lineWidth = 2;
    for (const { bounds: b } of world.regions) {
        g.strokeRect(sx(b.x0), sy(b.y0), (b.x1 - b.x0) * scale, (b.y1 - b.y0) * scale);
    }
    g.strokeStyle = "#3f5e45";
    g.setLineDash([4, 4]);
    g.beginPath();
    g.arc(w / 2, h / 2, VIEW_RADIUS * scale, 0, 2 * Math.PI);
    g.stroke();
    g.setLineDash([]);

    g.font = "12px system-ui, sans-serif";
    g.textAlign = "center";
    const dot = (x, y, name, color) => {
        g.fillStyle = color;
        g.beginPath();
        g.arc(sx(x), sy(y), 5, 0, 2 * Math.PI);
        g.fill();
        g.fillStyle = "#e8e8e8";
        g.fillText(name, sx(x), sy(y) - 9);
    };
    for (const o of world.others.values()) dot(o.x, o.y, o.name, "#5fa8ff");
    dot(world.me.x, world.me.y, world.me.name, "#ffd34d");
}
