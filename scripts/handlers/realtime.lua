-- handlers/realtime.lua: the WebSocket messages of API.md (join, move, chat, event, ping) and
-- what happens when a connection ends. The world itself (positions, who sees whom, sending)
-- is C (mmo.world); the rules are rules/movement.lua and rules/chat.lua.
local cache = require "mmo.cache"
local chat = require "rules.chat"
local db = require "mmo.db"
local events = require "mmo.events"
local handles = require "lib.handles"
local http = require "lib.http"
local json = require "mmo.json"
local log = require "mmo.log"
local movement = require "rules.movement"
local player = require "rules.player"
local pipeline = require "lib.pipeline"
local players = require "lib.players"
local regions = require "lib.regions"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"
local ws = require "mmo.ws"

local floor = math.floor
local ipairs = ipairs
local pairs = pairs
local tonumber = tonumber
local tostring = tostring
local type = type


local metrics = require "mmo.metrics"
local MOVES = metrics.counter("mmo_moves_total", "Moves, by result (accepted, rejected)",
                              { "result" })
local CHAT = metrics.counter("mmo_chat_messages_total", "Chat messages sent, by channel",
                             { "channel" })

local _M = {}

_M.PRESENCE_EVERY_MS = 10000   -- presence in Redis: written at most this often per connection
_M.OBSERVE_EVERY_MS = 500      -- an observer's region snapshots: this often by default,
_M.OBSERVE_MIN_MS = 100        --   and never more often than this
_M.PRESENCE_TTL_S = 120        -- a node that died leaves records that expire after this


local function fail(code, message)
    http.fail(400, code, message)
end


-- presence: ws:sess:<account>:<conn> = {account_id, player_id, node, connected_at, last_seen,
-- region}, listed in the sorted set ws:sessions by last_seen (GET /api/admin/sessions)
local function presence_key(conn)
    return "ws:sess:" .. conn.account.id .. ":" .. tostring(conn.id)
end


local function write_presence(conn, pid, region, first)
    local now = time.now()
    local key = presence_key(conn)
    local cmds = {
        { "HSET", key, "account_id", conn.account.id, "player_id", pid or 0,
          "last_seen", floor(now), "region", region or "", "ip", conn.ip },
        { "EXPIRE", key, _M.PRESENCE_TTL_S },
        { "ZADD", "ws:sessions", floor(now), key },
    }
    if first then
        table.insert(cmds[1], "connected_at")
        table.insert(cmds[1], floor(now))
        table.insert(cmds[1], "node")
        table.insert(cmds[1], ws.node())
    end
    cache.pipeline(cmds) -- presence is best effort: Redis down must not stop play
end


-- speed of a player row now (class, level, buffs), and when a buff ends (nil: none)
local function speed_of(row, now)
    return player.stats(row.class, row.level, row.buffs, now).speed,
           player.next_change(row, now)
end


-- join {player_id}: enter the world as that player (one of the account's)
function _M.join(conn, msg)
    local pid = tonumber(msg.player_id)
    if not pid or pid < 1 or pid ~= floor(pid) then
        fail("bad_message", "player_id: a player id")
    end
    pid = players.parse_id(tostring(pid))
    local row = players.row(pid)
    if not row then
        http.fail(404, "not_found", "no such player")
    end
    if row.account_id ~= conn.account.id then
        http.fail(403, "forbidden", "not your player")
    end
    regions.all()
    -- a player still in the world (its connection was lost moments ago, here or on another
    -- node) comes back where it is, which is fresher than the row
    local held = world.position(pid)
    if held then
        row.region, row.x, row.y = held.region, held.x, held.y
    end
    local nearby, err = world.join(conn.id, pid, row.name, row.guild_id or 0, row.region,
                                   row.x, row.y)
    if not nearby then
        http.fail(409, "cannot_join", "the player cannot enter the world here (" ..
                  tostring(err) .. ")")
    end
    local now = time.now()
    local speed, until_s = speed_of(row, now)
    ws.set_player(conn.id, pid, speed, until_s and now + until_s or 0,
                  player.stats(row.class, row.level, nil, now).speed)
    write_presence(conn, pid, row.region, true)
    local doc = player.document(row, now)
    doc.guild = doc.guild or json.null
    if #doc.buffs == 0 then
        doc.buffs = json.empty_array
    end
    if #nearby == 0 then
        nearby = json.empty_array
    end
    events.emit("player.joined", { player_id = pid, region = row.region, level = row.level })
    return { t = "welcome", player = doc, region = row.region, nearby = nearby }
end


-- the player this connection plays, with its position in the world
local function joined(conn)
    local pid = conn.player_id
    local pos = pid and world.position(pid)
    if not pos then
        fail("not_joined", "join a player first")
    end
    return pid, pos
end


-- move {x, y, seq}: the rules decide; a refused move is answered with `correct`
function _M.move(conn, msg)
    local pid, pos = joined(conn)
    -- the speed of the player's class, level and buffs, set at join (a buff that runs out is
    -- counted: conn.speed is the speed now)
    local region, why_or_at = movement.check({ x = pos.x, y = pos.y, at = pos.at },
                                       { x = msg.x, y = msg.y }, time.now(), conn.speed,
                                       regions.all())
    if not region then
        MOVES:inc(1, "rejected")
        return { t = "correct", x = pos.x, y = pos.y, seq = type(msg.seq) == "number" and msg.seq
                 or json.null, reason = why_or_at }
    end
    MOVES:inc(1, "accepted")
    world.move(pid, msg.x, msg.y, why_or_at) -- the player's travel clock (rules/movement.lua)
    if ws.touch(conn.id, _M.PRESENCE_EVERY_MS) then
        write_presence(conn, pid, region)
    end
end


-- chat {channel, text}
function _M.chat(conn, msg)
    local pid, pos = joined(conn)
    local channel, err = chat.channel(msg.channel)
    if not channel then
        fail("bad_message", err)
    end
    local text
    text, err = chat.clean(msg.text)
    if not text then
        fail("bad_message", err)
    end
    local out = { t = "chat", channel = channel, from = pos.name, from_id = pid, text = text }
    CHAT:inc(1, channel)
    if channel == "region" then
        world.send_region(pos.region, out)
    elseif channel == "guild" then
        if not pos.guild then
            fail("no_guild", "this player is in no guild")
        end
        world.send_guild(pos.guild, out)
    else
        local minute = floor(time.now() / 60)
        local key = "chat:global:" .. conn.account.id .. ":" .. minute
        local n = http.check(cache.incr(key))
        if n == 1 then
            cache.expire(key, 120000)
        end
        if n > chat.GLOBAL_PER_MINUTE then
            http.fail(429, "rate_limited", "global chat: at most " .. chat.GLOBAL_PER_MINUTE ..
                      " messages a minute")
        end
        world.send_all(out)
    end
end


-- event {type, data}: game events into the pipeline (issue «Pipeline»)
-- {t = "event", id, type, data [, player_id, ts]}: one game event into the pipeline, as over
-- HTTP (player_id defaults to the joined player, ts to now); nothing comes back when it is
-- accepted, an error when it is not
function _M.event(conn, msg)
    local e = { id = msg.id, type = msg.type, player_id = msg.player_id or conn.player_id,
                ts = msg.ts or time.now(), data = msg.data }
    local accepted, rejected = pipeline.ingest(conn.account.id, conn.account.sid, { e })
    if not accepted then
        http.fail(503, "unavailable", "the event stream is unavailable; send it again")
    end
    if accepted == 0 and rejected[1] then
        http.fail(422, rejected[1].code, rejected[1].message)
    end
end


function _M.ping()
    return { t = "pong" }
end


-- observers (the console's map): connection id -> {region, every (s), due (monotonic s)}
local OBS = state.global("observers", { version = 1, init = function()
    return { by_conn = {} }
end })


-- observe {region, every_ms}: every player of the region on this node, every every_ms, as
-- one "observed" message; observe {region = null} stops. For moderators and up.
function _M.observe(conn, msg)
    if msg.region == nil or msg.region == json.null then
        OBS.by_conn[conn.id] = nil
        return { t = "observing", region = json.null }
    end
    if type(msg.region) ~= "string" or not regions.get(msg.region) then
        fail("bad_message", "region: no such region")
    end
    local every = msg.every_ms == nil and _M.OBSERVE_EVERY_MS or tonumber(msg.every_ms)
    if type(msg.every_ms) ~= "number" and msg.every_ms ~= nil or not every or every ~= every or
       every < _M.OBSERVE_MIN_MS or every > 60000 then
        fail("bad_message", "every_ms: a number of milliseconds from " .. _M.OBSERVE_MIN_MS ..
             " to 60000")
    end
    OBS.by_conn[conn.id] = { region = msg.region, every = every / 1000, due = 0 }
    return { t = "observing", region = msg.region, every_ms = every }
end


-- timer: the snapshots that are due, each region's encoded once
function _M.observe_tick()
    local now, snaps = time.monotonic(), {}
    for id, o in pairs(OBS.by_conn) do
        if now >= o.due then
            o.due = now + o.every
            local text = snaps[o.region]
            if text == nil then
                text = world.snapshot(o.region) or false
                snaps[o.region] = text
            end
            if not text or not ws.send(id, text) then
                OBS.by_conn[id] = nil -- the connection is gone (or the region)
            end
        end
    end
end


-- the connection ended: save where its player was, drop the presence record
function _M.leave(conn)
    OBS.by_conn[conn.id] = nil
    if conn.player_id then
        handles.left(conn.player_id) -- timers tied to the player die with its stay
    end
    cache.pipeline({ { "DEL", presence_key(conn) }, { "ZREM", "ws:sessions", presence_key(conn) } })
    local last = conn.last_position
    local pid = conn.player_id
    if not (pid and last) then
        return
    end
    local rows, err = players.db_of(pid).query(
        "update players set region = $2, x = $3, y = $4, moved_at = $5, version = version + 1 " ..
        "where id = $1 returning version", pid, last.region, last.x, last.y, last.at)
    if not rows then
        log.warn("position not saved at disconnect: " .. tostring(err), { player = pid })
    elseif rows[1] then
        players.dropped(pid, rows[1].version)
    end
end


-- every few seconds: positions that changed go to PostgreSQL, one statement per shard
function _M.checkpoint()
    local dirty = world.take_dirty()
    if #dirty == 0 then
        return
    end
    local by_shard = {}
    for _, p in ipairs(dirty) do
        local n = p.id % players.SHARDS
        by_shard[n] = by_shard[n] or {}
        local list = by_shard[n]
        list[#list + 1] = { id = p.id, region = p.region, x = p.x, y = p.y, at = p.at }
    end
    for n, list in pairs(by_shard) do
        local rows, err = db.shard(n).query(
            "update players p set region = d.region, x = d.x, y = d.y, moved_at = d.at, " ..
            "version = p.version + 1 from json_to_recordset($1) as " ..
            "d(id bigint, region text, x float8, y float8, at float8) where p.id = d.id " ..
            "returning p.id, p.version", list)
        if not rows then
            log.warn("checkpoint failed: " .. tostring(err), { shard = n, players = #list })
        else
            for _, r in ipairs(rows) do
                players.dropped(r.id, r.version)
            end
        end
    end
end


return _M
