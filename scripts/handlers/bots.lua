-- handlers/bots.lua: POST /api/admin/bots {count, region, spread, prefix} (admin): accounts,
-- players and signed-in sessions for load tests (tools/loadbot), made in bulk.
--
-- Bot accounts have no password (their hash is "!", which no password matches: nobody can
-- sign in as a bot) and the role player only. Their players stand at random in a square of
-- side `spread` around the region's centre (to choose how many see each other). Asking again
-- with the same prefix reuses the same accounts and players, and gives new tokens.
local audit = require "lib.audit"
local auth = require "mmo.auth"
local cache = require "mmo.cache"
local crypto = require "mmo.crypto"
local db = require "mmo.db"
local http = require "lib.http"
local json = require "mmo.json"
local player = require "rules.player"
local regions = require "lib.regions"

local floor = math.floor
local ipairs = ipairs
local random = math.random
local tostring = tostring
local type = type


local _M = {}

_M.MAX = 20000


-- A player name from a prefix and a number, letters only: the prefix, "z", then i in base 25
-- written with a-y. The last "z" splits a name back into both, so no two (prefix, i) pairs
-- give the same name ("lb" 1 and "lbb" 1 used to meet as "Lbbb").
local function bot_name(prefix, i)
    local s, n = {}, i
    repeat
        s[#s + 1] = string.char(97 + n % 25)
        n = floor(n / 25)
    until n == 0
    return (prefix:gsub("^%l", string.upper)) .. "z" .. table.concat(s)
end
_M.bot_name = bot_name


function _M.create(req)
    local body = req.body
    if type(body) ~= "table" then
        http.fail(422, "validation_failed", "body: must be an object")
    end
    local count = body.count
    if type(count) ~= "number" or count < 1 or count > _M.MAX or count ~= floor(count) then
        http.fail(422, "validation_failed", "count: a whole number from 1 to " .. _M.MAX)
    end
    local prefix = body.prefix == nil and "bot" or body.prefix
    if type(prefix) ~= "string" or not prefix:match("^%l%l%l?%l?%l?%l?$") then
        http.fail(422, "validation_failed", "prefix: 2-6 lower-case letters")
    end
    local region = regions.get(body.region == nil and "r1" or body.region)
    if not region then
        http.fail(422, "validation_failed", "region: not a region of the world")
    end
    local spread = body.spread == nil and 200 or body.spread
    if type(spread) ~= "number" or spread < 1 or spread > 100000 then
        http.fail(422, "validation_failed", "spread: a side in world units")
    end
    -- accounts (created, or found from an earlier call)
    local names = {}
    for i = 1, count do
        names[i] = { username = prefix .. "-bot-" .. i, name = bot_name(prefix, i) }
    end
    http.check(db.query(
        "insert into accounts (username, password_hash) " ..
        "select username, '!' from jsonb_to_recordset($1) as t(username text) " ..
        "on conflict ((lower(username))) do nothing", names))
    local accts = http.check(db.query(
        "select a.id, a.username, d.id as player_id from accounts a " ..
        "left join player_directory d on d.account_id = a.id " ..
        "where a.username in (select username from jsonb_to_recordset($1) as t(username text))",
        names))
    -- players for the accounts that have none
    local shard = db.shard_for_region(region.id)
    local by_user = {}
    for _, n in ipairs(names) do
        by_user[n.username] = n.name
    end
    local cx, cy = (region.x0 + region.x1) / 2, (region.y0 + region.y1) / 2
    local half = math.min(spread, region.x1 - region.x0 - 2, region.y1 - region.y0 - 2) / 2
    local new = {}
    for _, a in ipairs(accts) do
        if not a.player_id then
            new[#new + 1] = { account_id = a.id, name = by_user[a.username] }
        end
    end
    if #new > 0 then
        local ids = http.check(db.query(
            "insert into player_directory (id, name, account_id, shard) " ..
            "select nextval('player_id_seq') * 64 + $2, name, account_id, $2 " ..
            "from jsonb_to_recordset($1) as t(name text, account_id bigint) " ..
            "on conflict do nothing returning id, account_id, name", new, shard))
        local rows = json.array({})
        for i, r in ipairs(ids) do
            local p = player.new(r.name, "ranger", region)
            rows[i] = { id = r.id, account_id = r.account_id, name = r.name, class = p.class,
                        hp = p.hp, mp = p.mp, region = region.id,
                        x = cx + (random() * 2 - 1) * half, y = cy + (random() * 2 - 1) * half }
        end
        http.check(db.shard(shard).query(
            "insert into players (id, account_id, name, class, hp, mp, region, x, y, " ..
            "home_region) " ..
            "select id, account_id, name, class, hp, mp, region, x, y, region from " ..
            "jsonb_to_recordset($1) as t(id bigint, account_id bigint, name text, class text, " ..
            "hp int, mp int, region text, x float8, y float8) on conflict do nothing", rows))
        accts = http.check(db.query(
            "select a.id, d.id as player_id from accounts a " ..
            "join player_directory d on d.account_id = a.id " ..
            "where a.username in (select username from jsonb_to_recordset($1) " ..
            "as t(username text))", names))
        if #accts < count then
            -- a name was taken by a player of someone else: nothing to join with
            http.fail(409, "conflict", ("%d bot names are taken by other players; " ..
                      "use another prefix"):format(count - #accts))
        end
    end
    -- a session and an access token for each
    local out, cmds = json.array({}), {}
    local ttl = auth.settings().refresh_ttl_s * 1000
    local pos = {}
    for _, p in ipairs(http.check(db.shard(shard).query(
        "select id, x, y, region from players where id in " ..
        "(select (jsonb_array_elements($1)->>'player_id')::bigint)", accts))) do
        pos[p.id] = p
    end
    for _, a in ipairs(accts) do
        local sid = crypto.random(24)
        cmds[#cmds + 1] = { "HSET", "sess:" .. sid, "acct", a.id, "roles", "player",
                            "rt", "!", "created", 0 }
        cmds[#cmds + 1] = { "PEXPIRE", "sess:" .. sid, ttl }
        local token = http.check(auth.sign(a.id, sid, { "player" }))
        local p = pos[a.player_id] or {}
        out[#out + 1] = { account_id = a.id, player_id = a.player_id, token = token,
                          region = p.region, x = p.x, y = p.y }
    end
    for i = 1, #cmds, 2000 do
        http.check(cache.pipeline({ unpack(cmds, i, math.min(#cmds, i + 1999)) }))
    end
    audit.write(req, "admin.bots", tostring(prefix), { count = count, region = region.id })
    return 200, { bots = out }
end


return _M
