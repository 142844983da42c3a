-- routes.lua: every HTTP route of the node.
--
-- Each entry: { METHOD, "/path/:param", "module.function", role = ROLE }
--   module.function   a function of scripts/handlers/<module>.lua, called as fn(req) and
--                     returning status, body (table -> JSON, or string), headers (table)
--   role              public | player | moderator | designer | admin: who may call it,
--                     checked by the core before any Lua runs
-- req = { id, method, path, ip, params, query, headers (lower-case names), body (decoded
--         JSON), raw_body }
-- /healthz and /readyz are answered by the core itself.
return {
    http = {
        { "GET", "/api/demo/player", "demo.player", role = "public" },
    },
}
