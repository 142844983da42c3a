-- handlers/players.lua: player CRUD (API.md "Players"). Rules live in rules/player.lua and
-- rules/movement.lua; storage and caching in lib/players.lua.
local db = require "mmo.db"
local guilds = require "lib.guilds"
local http = require "lib.http"
local json = require "mmo.json"
local movement = require "rules.movement"
local player = require "rules.player"
local players = require "lib.players"
local time = require "mmo.time"

local floor = math.floor
local ipairs = ipairs
local pairs = pairs
local tonumber = tonumber
local type = type


local _M = {}


local function invalid(msg)
    http.fail(422, "validation_failed", msg)
end


-- POST /api/players {name, class, region?}
function _M.create(req)
    local body = req.body
    if type(body) ~= "table" then
        invalid("body: must be an object")
    end
    local ok, msg = player.valid_name(body.name)
    if not ok then
        invalid(msg)
    end
    ok, msg = player.valid_class(body.class)
    if not ok then
        invalid(msg)
    end
    local region_id = body.region == nil and "r1" or body.region
    local region
    for _, r in ipairs(players.regions()) do
        if r.id == region_id then
            region = r
        end
    end
    if not region then
        invalid("region: not a region of the world")
    end
    local account = req.account.id
    local count = http.check(db.query(
        "select count(*)::int as n from player_directory where account_id = $1", account))[1].n
    if count >= player.MAX_PLAYERS_PER_ACCOUNT then
        http.fail(409, "too_many_players", "an account has at most " ..
                  player.MAX_PLAYERS_PER_ACCOUNT .. " players")
    end
    local shard = db.shard_for_region(region.id)
    -- the directory (main database) gives the id and keeps names unique across shards
    local rows, err, detail = db.query(
        "insert into player_directory (id, name, account_id, shard) " ..
        "values (nextval('player_id_seq') * 64 + $3, $1, $2, $3) returning id",
        body.name, account, shard)
    if not rows then
        if detail and detail.sqlstate == "23505" then
            http.fail(409, "name_taken", "that name is taken")
        end
        http.check(nil, err)
    end
    local id = rows[1].id
    local p = player.new(body.name, body.class, region)
    local inserted, ierr = db.shard(shard).query(
        "insert into players (id, account_id, name, class, level, xp, hp, mp, region, x, y, " ..
        "moved_at, home_region) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $9) " ..
        "returning " .. players.COLUMNS,
        id, account, p.name, p.class, p.level, p.xp, p.hp, p.mp, p.region, p.x, p.y, time.now())
    if not inserted then
        db.query("delete from player_directory where id = $1", id) -- undo; best effort
        http.check(nil, ierr)
    end
    return 201, players.published(inserted[1])
end


-- GET /api/players/:id
function _M.show(req)
    local id = players.parse_id(req.params.id)
    local doc = players.document(id)
    if not doc then
        http.fail(404, "not_found", "no such player")
    end
    return 200, doc
end


-- PATCH /api/players/:id: owner (appearance, position), moderator (appearance, name)
function _M.update(req)
    local id = players.parse_id(req.params.id)
    local is_moderator = players.has_role(req.account, "moderator")
    local row = players.row(id)
    if not row then
        http.fail(404, "not_found", "no such player")
    end
    local is_owner = players.owns(req.account, row)
    if not is_owner and not is_moderator then
        http.fail(403, "forbidden", "not your player")
    end
    local change, msg, code = player.patch(req.body, is_owner, is_moderator)
    if not change then
        if code == "forbidden" then
            http.fail(403, "forbidden", msg)
        end
        invalid(msg)
    end
    local regions = change.position and players.regions()
    if change.name then
        local ok, _, detail = db.query("update player_directory set name = $2 where id = $1",
                                       id, change.name)
        if not ok then
            if detail and detail.sqlstate == "23505" then
                http.fail(409, "name_taken", "that name is taken")
            end
            http.fail(503, "unavailable", "the directory cannot be updated now")
        end
    end
    local updated
    http.check(players.db_of(id).tx(function(q)
        local cur = players.row(id, q)
        if not cur then
            http.fail(404, "not_found", "no such player")
        end
        local sets, args = {}, { id }
        local function set(col, value)
            args[#args + 1] = value
            sets[#sets + 1] = col .. " = $" .. #args
        end
        if change.name then
            set("name", change.name)
        end
        if change.appearance then
            local a = {}
            for k, v in pairs(cur.appearance or {}) do
                a[k] = v
            end
            for k, v in pairs(change.appearance) do
                a[k] = v
            end
            set("appearance", a)
        end
        if change.position then
            local now = time.now()
            local speed = player.stats(cur.class, cur.level, cur.buffs, now).speed
            local region, why_or_at = movement.check({ x = cur.x, y = cur.y,
                                                       at = cur.moved_at },
                                                     change.position, now, speed, regions)
            if not region then
                http.fail(422, "move_rejected", "that move breaks the movement rules",
                          { reason = why_or_at, position = { region = cur.region, x = cur.x,
                                                       y = cur.y } })
            end
            set("x", change.position.x)
            set("y", change.position.y)
            set("region", region)
            set("moved_at", why_or_at) -- the travel clock (rules/movement.lua)
        end
        players.writing(id, cur.version)
        updated = http.check(q("update players set " .. table.concat(sets, ", ") ..
                               ", version = version + " .. players.WRITE_STEP ..
                               " where id = $1 returning " .. players.COLUMNS,
                               unpack(args)))[1]
        return true
    end))
    return 200, players.published(updated)
end


-- DELETE /api/players/:id: owner, admin
function _M.delete(req)
    local id = players.parse_id(req.params.id)
    local row = players.row(id)
    if not row then
        http.fail(404, "not_found", "no such player")
    end
    if not players.owns(req.account, row) and not players.has_role(req.account, "admin") then
        http.fail(403, "forbidden", "not your player")
    end
    -- (its inventory goes with it: counted as destroyed)
    local gone = http.check(players.db_of(id).query(
        "with inv as (select coalesce(sum(qty), 0)::int as n from inventory " ..
        "where player_id = $1), " ..
        "d as (delete from players where id = $1 returning id) " ..
        "select (select n from inv) as items, (select count(*) from d)::int as deleted", id))[1]
    if gone.deleted > 0 then
        players.items_destroyed("player_deleted", gone.items)
    end
    http.check(db.query("delete from player_directory where id = $1", id))
    http.check(db.tx(function(q)
        guilds.remove(q, id) -- out of its guild (which passes on or disbands)
        return true
    end))
    players.dropped(id, row.version + 1)
    return 204
end


-- GET /api/players?region=&limit=&after= (moderator): every shard, merged by id. A listing
-- for moderators, where a second-old answer is fine: it reads with db.read, from each
-- database's streaming replica when config.lua names one (docs/operations.md, "A streaming
-- replica for reads").
-- The players whose name starts with prefix, whatever the case, by name: the directory (the
-- main database, an index on lower(name)) names them, their shards hold them.
local function by_name(prefix, limit)
    if type(prefix) ~= "string" or #prefix < 1 or #prefix > 32 then
        invalid("name: the start of a name, 1 to 32 characters")
    end
    local pattern = prefix:gsub("[\\%%_]", "\\%0") -- LIKE's wildcards, taken literally
    local ids = http.check(db.read("select id from player_directory where lower(name) like " ..
                                    "lower($1) || '%' order by lower(name), id limit $2",
                                    pattern, limit))
    local by_shard, order = {}, {}
    for i, r in ipairs(ids) do
        order[r.id] = i
        local s = r.id % players.SHARDS
        by_shard[s] = by_shard[s] or json.array({})
        by_shard[s][#by_shard[s] + 1] = r.id
    end
    local now, out = time.now(), json.array({})
    for s, list in pairs(by_shard) do
        local rows = http.check(db.shard(s).read("select " .. players.COLUMNS .. " from " ..
            "players where id in (select (json_array_elements_text($1))::bigint)", list))
        for _, r in ipairs(rows) do
            out[order[r.id]] = player.document(r, now)
        end
    end
    local packed = json.array({}) -- a player deleted since the directory named it leaves a hole
    for i = 1, #ids do
        if out[i] then
            packed[#packed + 1] = out[i]
        end
    end
    return packed
end


function _M.list(req)
    local q = req.query
    local limit = tonumber(q.limit or 50)
    if not limit or limit < 1 or limit > 200 or limit ~= floor(limit) then
        invalid("limit: a whole number from 1 to 200")
    end
    local after = q.after and tonumber(q.after)
    if q.after and (not after or after ~= floor(after)) then
        invalid("after: a player id")
    end
    if q.region and #q.region > 64 then
        invalid("region: too long")
    end
    if q.name ~= nil then
        return 200, { players = by_name(q.name, limit) }
    end
    local all = {}
    for _, n in ipairs(db.shard_ids()) do
        local rows = http.check(db.shard(n).read(
            "select " .. players.COLUMNS .. " from players " ..
            "where ($1::text is null or region = $1) and ($2::bigint is null or id > $2) " ..
            "order by id limit $3", q.region, after, limit + 1))
        for _, r in ipairs(rows) do
            all[#all + 1] = r
        end
    end
    table.sort(all, function(a, b) return a.id < b.id end)
    local now = time.now()
    local out = json.array({})
    for i = 1, math.min(limit, #all) do
        out[i] = player.document(all[i], now)
    end
    return 200, { players = out, next = #all > limit and all[limit].id or nil }
end


return _M
