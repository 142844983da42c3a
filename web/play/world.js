// world.js: what this client knows of the world, built only from the server's WebSocket
// messages (docs/protocol.md, "Server to client"), and the moves it sends.
//
// The server decides where everyone is: others move only when a `moved` or `appear` says
// so; our own dot moves at once as keys are held (so it feels immediate), and `correct`
// puts it back where the server says we are.

const MAX_STEP = 0.45; // world units per move message (see step)

export class World {
    constructor() {
        this.me = null;             // {id, name, x, y} from welcome.player
        this.region = null;         // the region we are in ("r1"): welcome.region, then ours
        this.regions = [];          // GET /api/world/regions: [{id, name, bounds}]
        this.speed = 5;             // welcome.player.stats.speed: world units per second
        this.others = new Map();    // id -> {id, name, x, y}
        this.seq = 0;               // the seq of our last move
    }

    // Apply one server message; returns true when positions changed.
    apply(msg) {
        switch (msg.t) {
        case "welcome": {
            const p = msg.player;
            this.me = { id: p.id, name: p.name, x: p.position.x, y: p.position.y };
            this.region = msg.region;
            if (p.stats && p.stats.speed > 0) this.speed = p.stats.speed;
            this.others.clear();
            for (const o of msg.nearby) this.others.set(o.id, { id: o.id, name: o.name, x: o.x, y: o.y });
            return true;
        }
        case "appear":
            if (this.me && msg.id === this.me.id) return false;
            this.others.set(msg.id, { id: msg.id, name: msg.name, x: msg.x, y: msg.y });
            return true;
        case "moved": {
            const o = this.others.get(msg.id);
            if (!o) return false;   // not in view: an appear comes first
            o.x = msg.x;
            o.y = msg.y;
            return true;
        }
        case "vanish":
            return this.others.delete(msg.id);
        case "correct": {
            // our move was refused: this is where the server has us (protocol.md)
            if (!this.me) return false;
            this.me.x = msg.x;
            this.me.y = msg.y;
            const r = this.regionAt(msg.x, msg.y);
            if (r) this.region = r.id;
            return true;
        }
        default:
            return false;
        }
    }

    // The region holding (x, y): [x0, x1) x [y0, y1), as rules/movement.lua has it.
    regionAt(x, y) {
        return this.regions.find(({ bounds: b }) => x >= b.x0 && x < b.x1 && y >= b.y0 && y < b.y1);
    }

    // Step our dot by (dx, dy) (a direction) for `seconds` at our speed, into any region
    // (moving across an edge changes region) but not off the world: rules/movement.lua
    // refuses a target outside every region, so there we stay inside our own. Returns the
    // move message to send, or null when we did not move.
    //
    // rules/movement.lua allows speed * (time since our last accepted move) * 1.1 + 0.5
    // units, the time measured by the server as our messages arrive. The network and a busy
    // node bunch messages together, so that time can be near zero for a step the client made
    // over 50 ms; a step of at most MAX_STEP (under the rule's 0.5) is never refused for it.
    // Over time we go at 95% of our speed, never faster.
    step(dx, dy, seconds) {
        if (!this.me || (dx === 0 && dy === 0)) return null;
        const len = Math.hypot(dx, dy);
        const d = Math.min(this.speed * seconds * 0.95, MAX_STEP);
        let x = this.me.x + (dx / len) * d;
        let y = this.me.y + (dy / len) * d;
        x = Math.round(x * 100) / 100;
        y = Math.round(y * 100) / 100;
        const here = this.regionAt(this.me.x, this.me.y);
        if (here && !this.regionAt(x, y)) {
            const b = here.bounds;
            x = Math.min(Math.max(x, b.x0), b.x1 - 0.01);
            y = Math.min(Math.max(y, b.y0), b.y1 - 0.01);
        }
        if (x === this.me.x && y === this.me.y) return null;
        this.region = (this.regionAt(x, y) || here || { id: this.region }).id;
        this.me.x = x;
        this.me.y = y;
        this.seq += 1;
        return { t: "move", x, y, seq: this.seq };
    }
}
