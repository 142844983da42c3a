-- routes.lua: every HTTP route of the node.
--
-- Each entry: { METHOD, "/path/:param", "module.function", role = ROLE, rate = CLASS }
--   module.function   a function of scripts/handlers/<module>.lua, called as fn(req) and
--                     returning status, body (table -> JSON, or string), headers (table)
--   role              public | player | moderator | designer | admin: who may call it,
--                     checked by the core before any Lua runs (admin passes every role)
--   rate              a rate-limit class of config.lua (default http.rate_class), or "none"
-- req = { id, method, path, ip, params, query, headers (lower-case names), body (decoded
--         JSON), raw_body, account = { id, sid, roles } when signed in }
-- /healthz and /readyz are answered by the core itself, and GET /ws (the WebSocket upgrade,
-- role player) too; its messages are the `ws` table below (docs/protocol.md).
-- docs/openapi.json documents each route (spec/unit/openapi_spec.lua keeps the two in step).
return {
    http = {
        { "POST", "/api/auth/register", "auth.register", role = "public", rate = "auth" },
        { "POST", "/api/auth/login", "auth.login", role = "public", rate = "auth" },
        { "POST", "/api/auth/refresh", "auth.refresh", role = "public", rate = "auth" },
        { "POST", "/api/auth/logout", "auth.logout", role = "player" },
        { "GET", "/api/me", "auth.me", role = "player" },

        { "POST", "/api/admin/accounts/:id/roles", "admin.set_roles", role = "admin" },
        { "POST", "/api/admin/accounts/:id/ban", "admin.ban", role = "moderator" },
        { "POST", "/api/admin/accounts/:id/kick", "admin.kick", role = "moderator" },
        { "GET", "/api/admin/audit", "admin.audit", role = "admin" },
        { "GET", "/api/admin/cache", "admin.cache", role = "admin" },
        { "GET", "/api/admin/log", "admin.log_level", role = "admin" },
        { "PUT", "/api/admin/log", "admin.log_level", role = "admin" },
        { "GET", "/api/admin/sessions", "admin.sessions", role = "moderator" },
        { "GET", "/api/admin/metrics", "admin.metrics", role = "moderator" },
        { "GET", "/api/admin/scripts", "admin.scripts", role = "designer" },
        { "POST", "/api/admin/scripts/reload", "admin.scripts_reload", role = "designer" },
        { "POST", "/api/admin/scripts/rollback", "admin.scripts_rollback", role = "designer" },
        { "POST", "/api/admin/bots", "bots.create", role = "admin" },

        { "POST", "/api/players", "players.create", role = "player" },
        { "GET", "/api/players", "players.list", role = "moderator" },
        { "GET", "/api/players/:id", "players.show", role = "player" },
        { "PATCH", "/api/players/:id", "players.update", role = "player" },
        { "DELETE", "/api/players/:id", "players.delete", role = "player" },
        { "GET", "/api/items", "inventory.catalogue", role = "player" },
        { "GET", "/api/players/:id/inventory", "inventory.show", role = "player" },
        { "POST", "/api/players/:id/inventory/use", "inventory.use", role = "player" },
        { "POST", "/api/trades", "trades.create", role = "player" },
        { "POST", "/api/admin/players/:id/items", "inventory.grant", role = "admin" },

        { "GET", "/api/world/regions", "world.regions", role = "player" },
        { "GET", "/api/world/territories", "world.territories", role = "player" },
        { "GET", "/api/admin/world/ticks", "world.ticks", role = "moderator" },
        { "GET", "/api/world/events", "world.events", role = "player" },
        { "POST", "/api/admin/world/events", "world.create_event", role = "designer" },

        { "POST", "/api/events", "events.ingest", role = "player" },
        { "GET", "/api/admin/queues", "events.queues", role = "admin" },
        { "GET", "/api/admin/queues/dead", "events.dead", role = "admin" },
        { "POST", "/api/admin/queues/dead/:id/requeue", "events.requeue", role = "admin" },
        { "DELETE", "/api/admin/queues/dead/:id", "events.drop", role = "admin" },

        { "POST", "/api/guilds", "guilds.create", role = "player" },
        { "GET", "/api/guilds/:id", "guilds.show", role = "player" },
        { "POST", "/api/guilds/:id/join", "guilds.join", role = "player" },
        { "POST", "/api/guilds/:id/leave", "guilds.leave", role = "player" },

        { "GET", "/api/demo/player", "demo.player", role = "public" },
        { "GET", "/api/demo/player/signed", "demo.player", role = "player" },
    },

    -- WebSocket messages (GET /ws?token=...), by their field t: handler(conn, msg)
    ws = {
        { "join", "realtime.join", role = "player" },
        { "move", "realtime.move", role = "player" },
        { "chat", "realtime.chat", role = "player" },
        { "event", "realtime.event", role = "player" },
        { "ping", "realtime.ping", role = "player" },
        { "observe", "realtime.observe", role = "moderator" },  -- the console's live map
    },
    ws_close = "realtime.leave",   -- a connection ended: handler(conn)

    -- every N seconds, in a task of its own
    timers = {
        { 5, "realtime.checkpoint" },   -- positions to PostgreSQL
        { 0.5, "world.leases" },        -- region leases taken and renewed (lib/leases.lua)
        { 0.1, "world.tick" },          -- the regions' tick: 10 Hz (territories)
        { 0.05, "events.consume" },     -- game events from the stream to their effects
        { 0.1, "realtime.observe_tick" }, -- the console's map: region snapshots when due
        { 5, "admin.vitals" },          -- the console's charts: a sample of the node's metrics
    },

    on_stop = "world.stop",             -- the node begins to drain: leases given back
}
