-- test_routes.lua: the real route table plus routes that exist only for the end-to-end specs.
local routes = require "routes"

local http = {}
for i, r in ipairs(routes.http) do
    http[i] = r
end

local TEST = {
    { "GET", "/test/echo", "test.echo", role = "public" },
    { "POST", "/test/jobs", "test.push_job", role = "public" },
    { "POST", "/test/echo", "test.echo", role = "public" },
    { "PUT", "/test/items/:id/tags/:tag", "test.echo", role = "public" },
    { "GET", "/test/items/special", "test.special", role = "public" },
    { "GET", "/test/items/:id", "test.echo", role = "public" },
    { "GET", "/test/boom", "test.boom", role = "public" },
    { "GET", "/test/typed", "test.typed", role = "public" },
    { "GET", "/test/bad_status", "test.bad_status", role = "public" },
    { "GET", "/test/yield", "test.bare_yield", role = "public" },
    { "GET", "/test/global", "test.global", role = "public" },
    { "GET", "/test/headers", "test.headers", role = "public" },
    { "GET", "/test/sleep", "test.sleep", role = "public" },
    { "GET", "/test/log", "test.log", role = "public" },
    { "GET", "/test/timer", "test.timer", role = "public" },
    { "GET", "/test/every", "test.every", role = "public" },
    { "GET", "/test/gc", "test.gc", role = "public" },
    { "GET", "/test/player_only", "test.echo", role = "player" },
    { "GET", "/test/db/sleep_then_cache", "test.db_sleep_then_cache", role = "public" },
    { "GET", "/test/db/types", "test.db_types", role = "public" },
    { "GET", "/test/db/error", "test.db_error", role = "public" },
    { "POST", "/test/db/tx", "test.db_tx", role = "public" },
    { "GET", "/test/db/count", "test.db_count", role = "public" },
    { "POST", "/test/db/put", "test.db_put", role = "public" },
    { "GET", "/test/hog", "test.hog", role = "public" },
    { "GET", "/test/db/ping", "test.db_ping", role = "public" },
    { "GET", "/test/db/read", "test.db_read", role = "public" },
    { "GET", "/test/cache/roundtrip", "test.cache_roundtrip", role = "public" },
    { "GET", "/test/cache/ping", "test.cache_ping", role = "public" },
    { "GET", "/test/cache/get", "test.cache_get", role = "public" },
    { "GET", "/test/cache/placed", "test.cache_placed", role = "public" },
}
for _, r in ipairs(TEST) do
    http[#http + 1] = r
end

return { http = http, ws = routes.ws, ws_close = routes.ws_close, timers = routes.timers,
         on_stop = routes.on_stop }
