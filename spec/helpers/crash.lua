-- helpers/crash.lua: kill -9 the node at a random moment of a mixed load, start it again, and
-- check that nothing it acknowledged was lost or doubled (issue 12, "Crash safety";
-- docs/reliability.md). Used by tools/crash (20 rounds) and spec/e2e/crash_spec.lua (a few).
--
--   local crash = require "helpers.crash"
--   local ok, rounds = crash.run { rounds = 3, seconds = 4, start = function() ... end,
--                                  say = print }
--
-- The load, all at once from one process (non-blocking sockets and select):
--   trades   one keep-alive connection per trader bot: POST /api/trades, a gift of 1-3 of an
--            item to another trader (same region, so the same shard)
--   events   two connections: POST /api/events, batches of kill (xp) and loot (items) events
--            of one trader's player, one in ten a duplicate of an event already acknowledged
--   writes   one connection: register an account, sign in, create a player, change its
--            appearance title a few times, then the next account
--   moves    every trader on a WebSocket, joined, moving back and forth 5 times a second
-- Every 2xx is recorded. At a random moment of the round the node gets SIGKILL; what was sent
-- and not answered is "in flight". The node is started again; the event batches in flight are
-- sent again with the same ids (what a client does after a lost answer: the id makes that
-- safe); the stream is drained. Then, checked through the API and psql:
--   - the total of each item over the traders equals the stock granted plus the loot of the
--     acknowledged events: trades moved items, never made or destroyed any;
--   - each trader's xp equals its start plus the xp of its acknowledged kill events, once each;
--   - each trader's inventory equals the last checked one plus its confirmed trades, plus its
--     loot, plus some subset of the trades that were in flight at the kill;
--   - every account whose registration got 201 exists, every player whose creation got 201
--     exists with its name, and its appearance title is the last one a 200 confirmed (or the
--     one in flight at the kill);
--   - the stream is drained (lag 0, nothing pending) and no event went to the dead letters.
local json = require "cjson.safe"
local server = require "helpers.server"
local socket = require "socket"
local ws = require "helpers.ws"

local _M = {}

local TRADE_ITEMS = { "gold", "ore_iron", "herb_moonleaf" } -- seeded; stacks of 1e6 and 99
-- loot is gold only: its stack holds a million, so the loot of thousands of events never fills
-- an inventory's 40 slots (which would refuse every trade as inventory_full)
local LOOT_ITEMS = { "gold" }
local STOCK = 40          -- of each trade item, per trader
local TRADERS = 6
local EVENTERS = 2
local BATCH = 40          -- events per POST /api/events
local MOVE_EVERY = 0.2    -- seconds between two moves of a bot
local PASSWORD = "crash-safety-pass-1"


local function fail(fmt, ...)
    error({ crash = fmt:format(...) }, 0)
end


local function check(res, want, what)
    if res.status ~= want then
        fail("%s: %s, not %d: %s", what, tostring(res.status), want, tostring(res.body))
    end
    return res.json
end


-- ---- the world a run plays in ----------------------------------------------------------------

local World = {}
World.__index = World


local function new_world(admin_password)
    local run = server.letters(6)
    return setmetatable({
        run = run,
        admin_password = admin_password,
        traders = {},        -- { player_id, token, inv = {item = qty}, xp }
        by_pid = {},
        events_done = {},    -- id -> event, acknowledged (202) events
        done_ids = {},       -- their ids, for duplicates
        event_seq = 0,
        accounts = {},       -- usernames whose registration got 201
        players = {},        -- player id -> { name, title (last confirmed), alt (in flight) }
        writer_seq = 0,
        totals = {},         -- item -> what the traders must hold together
    }, World)
end


function World:login(node)
    local res = node:request("POST", "/api/auth/login",
                             { body = { username = "admin", password = self.admin_password } })
    self.admin = check(res, 200, "admin login").access_token
end


function World:inventory(node, pid)
    local doc = check(node:request("GET", "/api/players/" .. pid .. "/inventory",
                                   { token = self.admin }), 200, "inventory of " .. pid)
    local inv = {}
    for _, it in ipairs(TRADE_ITEMS) do
        inv[it] = 0
    end
    for _, l in ipairs(doc.items) do
        inv[l.item] = (inv[l.item] or 0) + l.qty
    end
    return inv
end


function World:player(node, pid)
    return check(node:request("GET", "/api/players/" .. pid, { token = self.admin }), 200,
                 "player " .. pid)
end


-- bots, each given STOCK of every trade item
function World:setup(node)
    local bots = check(node:request("POST", "/api/admin/bots", { token = self.admin,
        body = { count = TRADERS, prefix = "cr" .. self.run:sub(1, 4), region = "r1",
                 spread = 100 } }), 200, "POST /api/admin/bots").bots
    for i, b in ipairs(bots) do
        for _, it in ipairs(TRADE_ITEMS) do
            check(node:request("POST", "/api/admin/players/" .. b.player_id .. "/items",
                               { token = self.admin, body = { item = it, qty = STOCK } }), 200,
                  "grant")
        end
        local t = { player_id = b.player_id, token = b.token, x = b.x, y = b.y, i = i }
        t.inv = self:inventory(node, b.player_id)
        t.xp = self:player(node, b.player_id).xp
        self.traders[i] = t
        self.by_pid[b.player_id] = t
        for _, it in ipairs(TRADE_ITEMS) do
            self.totals[it] = (self.totals[it] or 0) + t.inv[it]
        end
    end
end


-- ---- the requests of each kind of client -------------------------------------------------------

-- A trade: a gift from the connection's trader to another one.
function World:next_trade(i)
    local me = self.traders[i]
    local to = self.traders[(i + math.random(1, TRADERS - 1) - 1) % TRADERS + 1]
    local item, qty = TRADE_ITEMS[math.random(#TRADE_ITEMS)], math.random(1, 3)
    return { "POST", "/api/trades", { token = me.token, body = {
        from = me.player_id, to = to.player_id, give = { { item = item, qty = qty } } } },
        kind = "trade", trade = { from = me.player_id, to = to.player_id, item = item, qty = qty } }
end


function World:event(pid)
    self.event_seq = self.event_seq + 1
    local id = self.run .. "-" .. self.event_seq
    local ts = os.time()
    if math.random() < 0.5 then
        return { id = id, type = "kill", player_id = pid, ts = ts,
                 data = { monster = "wolf", level = math.random(1, 60) } }
    end
    return { id = id, type = "loot", player_id = pid, ts = ts,
             data = { item = LOOT_ITEMS[math.random(#LOOT_ITEMS)], qty = math.random(1, 10) } }
end


-- A batch of one trader's events; one in ten repeats an acknowledged event of that player.
function World:next_events()
    local t = self.traders[math.random(TRADERS)]
    local events = {}
    local mine = t.done or {}
    for k = 1, BATCH do
        if #mine > 0 and math.random() < 0.1 then
            events[k] = mine[math.random(#mine)]
        else
            events[k] = self:event(t.player_id)
        end
    end
    return { "POST", "/api/events", { token = t.token, body = { events = events } },
             kind = "events", events = events, trader = t }
end


-- An event batch acknowledged: each event's effect is owed once.
function World:events_acked(req, res)
    if res.json.accepted ~= #req.events or #(res.json.rejected or {}) > 0 then
        fail("events: %d of %d accepted: %s", res.json.accepted or -1, #req.events, res.body)
    end
    local t = req.trader
    t.done = t.done or {}
    for _, e in ipairs(req.events) do
        if not self.events_done[e.id] then
            self.events_done[e.id] = e
            t.done[#t.done + 1] = e
            if e.type == "kill" then
                t.want_xp = (t.want_xp or 0) + 10 * e.data.level
            else
                t.want_loot = t.want_loot or {}
                t.want_loot[e.data.item] = (t.want_loot[e.data.item] or 0) + e.data.qty
                self.totals[e.data.item] = self.totals[e.data.item] + e.data.qty
            end
        end
    end
end


-- The writer: register, sign in, create a player, then change its title; a state machine.
function World:next_write(w)
    if not w.user then
        self.writer_seq = self.writer_seq + 1
        w.user = "cr" .. self.run .. "w" .. self.writer_seq
        w.token, w.player, w.patches = nil, nil, 0
        return { "POST", "/api/auth/register", { body = { username = w.user,
                 password = PASSWORD } }, kind = "register", user = w.user }
    elseif not w.token then
        return { "POST", "/api/auth/login", { body = { username = w.user, password = PASSWORD } },
                 kind = "login" }
    elseif not w.player then
        local name = "Cr" .. self.run .. string.char(96 + self.writer_seq % 26 + 1) ..
                     server.letters(3)
        return { "POST", "/api/players", { token = w.token, body = { name = name,
                 class = "ranger" } }, kind = "create", name = name }
    end
    w.patches = w.patches + 1
    local title = "t" .. self.writer_seq .. "-" .. w.patches
    return { "PATCH", "/api/players/" .. w.player, { token = w.token,
             body = { appearance = { title = title } } }, kind = "patch", pid = w.player,
             title = title }
end


function World:write_answered(w, req, res)
    if req.kind == "register" then
        check(res, 201, "register")
        self.accounts[#self.accounts + 1] = req.user
    elseif req.kind == "login" then
        w.token = check(res, 200, "login").access_token
    elseif req.kind == "create" then
        w.player = check(res, 201, "create player").id
        self.players[w.player] = { name = req.name }
    else
        check(res, 200, "patch")
        self.players[req.pid].title = req.title
        if w.patches >= 5 then
            w.user = nil
        end
    end
end


-- A write in flight at the kill: it may or may not have happened.
function World:write_lost(w, req)
    if req.kind == "patch" then
        self.players[req.pid].alt = req.title
    end
    -- a new account next (an unknown registration, login or creation is left as it is)
    w.user = nil
end


-- ---- one round ----------------------------------------------------------------------------

local function request_text(r)
    return server.format_request(r[1], r[2], r[3])
end


-- A whole answer in c.buf?
local function complete(c)
    local head_end = c.buf:find("\r\n\r\n", 1, true)
    if not head_end then
        return false
    end
    local len = tonumber(c.buf:sub(1, head_end):match("[Cc]ontent%-[Ll]ength: (%d+)") or 0)
    return #c.buf >= head_end + 3 + len
end


-- WebSocket clients for the traders, joined.
local function join_all(world, node)
    local out = {}
    for i, t in ipairs(world.traders) do
        local c, err = ws.connect(node, t.token)
        if not c then
            fail("ws connect: %s", tostring(err))
        end
        c:send({ t = "join", player_id = t.player_id })
        local welcome = c:expect("welcome", 5)
        if not welcome then
            fail("ws join of trader %d: no welcome", i)
        end
        local pos = welcome.player and welcome.player.position or {}
        local x = tonumber(pos.x) or t.x
        local y = tonumber(pos.y) or t.y
        out[i] = { c = c, x = x, y = y, dir = 1, seq = 0, next = socket.gettime() + math.random() *
                   MOVE_EVERY }
    end
    return out
end


-- Run the load on node and kill it at kill_at (seconds from the start).
-- Returns what was done and what was in flight.
function World:load(node, kill_at)
    local conns, socks, by_sock = {}, {}, {}
    local stats = { trades = 0, refused = 0, batches = 0, events = 0, writes = 0, moves = 0,
                    other = 0 }
    local writers = { {} }
    local function add(role, arg)
        local c = node:connect(5)
        local k = #conns + 1
        conns[k] = { c = c, role = role, arg = arg }
        socks[#socks + 1] = c.sock
        by_sock[c.sock] = conns[k]
    end
    for i = 1, TRADERS do
        add("trade", i)
    end
    for i = 1, EVENTERS do
        add("events", i)
    end
    add("write", writers[1])
    local function send(k)
        local r
        if k.role == "trade" then
            r = self:next_trade(k.arg)
        elseif k.role == "events" then
            r = self:next_events()
        else
            r = self:next_write(k.arg)
        end
        k.pending = r
        assert(k.c:send(request_text(r)))
    end
    for _, k in ipairs(conns) do
        send(k)
    end
    local bots = join_all(self, node)
    local ws_socks = {}
    for _, b in ipairs(bots) do
        ws_socks[b.c.conn.sock] = b
        socks[#socks + 1] = b.c.conn.sock
    end

    local t0 = socket.gettime()
    while socket.gettime() - t0 < kill_at do
        local now = socket.gettime()
        for _, b in ipairs(bots) do
            if now >= b.next then
                b.next = now + MOVE_EVERY
                if b.seq % 8 == 0 then
                    b.dir = -b.dir
                end
                b.seq = b.seq + 1
                b.x = b.x + 0.4 * b.dir
                b.c:send({ t = "move", x = math.floor(b.x * 100 + 0.5) / 100, y = b.y,
                           seq = b.seq })
                stats.moves = stats.moves + 1
            end
        end
        local readable = socket.select(socks, nil, 0.02)
        for _, sk in ipairs(readable) do
            sk:settimeout(0)
            local data, err, partial = sk:receive(65536)
            sk:settimeout(5)
            data = data or partial
            local k = by_sock[sk]
            if ws_socks[sk] then
                -- what the node sends the bots is not checked: read and dropped
                if err == "closed" then
                    fail("a WebSocket was closed by the node before the kill")
                end
            elseif k then
                if data and #data > 0 then
                    k.c.buf = k.c.buf .. data
                elseif err == "closed" then
                    fail("an HTTP connection (%s) was closed by the node before the kill", k.role)
                end
                while k.pending and complete(k.c) do
                    local res = k.c:read_response()
                    local req = k.pending
                    k.pending = nil
                    if req.kind == "trade" then
                        if res.status == 200 then
                            stats.trades = stats.trades + 1
                            self:trade_done(req.trade)
                        elseif res.status == 409 then
                            stats.refused = stats.refused + 1
                        else
                            fail("trade: %d %s", res.status, res.body)
                        end
                    elseif req.kind == "events" then
                        if res.status == 202 then
                            self:events_acked(req, res)
                            stats.batches = stats.batches + 1
                            stats.events = stats.events + #req.events
                        elseif res.status == 503 then
                            stats.other = stats.other + 1 -- too far behind: not taken
                        else
                            fail("events: %d %s", res.status, res.body)
                        end
                    else
                        self:write_answered(k.arg, req, res)
                        stats.writes = stats.writes + 1
                    end
                    send(k)
                end
            end
        end
    end
    -- the kill
    node:kill()
    local killed_after = socket.gettime() - t0
    local lost = { trades = {}, batches = {}, writes = 0 }
    for _, k in ipairs(conns) do
        local req = k.pending
        if req and req.kind == "trade" then
            lost.trades[#lost.trades + 1] = req.trade
        elseif req and req.kind == "events" then
            lost.batches[#lost.batches + 1] = req
        elseif req then
            lost.writes = lost.writes + 1
            self:write_lost(k.arg, req)
        end
        k.c:close()
    end
    for _, b in ipairs(bots) do
        b.c.conn:close()
    end
    stats.killed_after = killed_after
    return stats, lost
end


function World:trade_done(tr)
    local a, b = self.by_pid[tr.from], self.by_pid[tr.to]
    a.inv[tr.item] = a.inv[tr.item] - tr.qty
    b.inv[tr.item] = b.inv[tr.item] + tr.qty
end


-- After the restart: the batches in flight sent again (same ids) until 202.
function World:resend(node, batches)
    local n = 0
    for _, req in ipairs(batches) do
        local deadline = socket.gettime() + 60
        while true do
            local res = node:request("POST", req[2], req[3])
            if res.status == 202 then
                self:events_acked(req, res)
                n = n + #req.events
                break
            end
            if res.status ~= 503 or socket.gettime() > deadline then
                fail("events sent again: %d %s", res.status, res.body)
            end
            socket.sleep(0.2)
        end
    end
    return n
end


function World:queues(node)
    return check(node:request("GET", "/api/admin/queues", { token = self.admin }), 200,
                 "GET /api/admin/queues")
end


function World:drain(node, timeout)
    local t0 = socket.gettime()
    local q
    local ok = server.eventually(function()
        q = self:queues(node)
        return q.group.lag == 0 and q.group.pending == 0
    end, timeout)
    if not ok then
        fail("the stream was not drained in %d s: lag %s, pending %s", timeout,
             tostring(q.group.lag), tostring(q.group.pending))
    end
    return socket.gettime() - t0, q
end


-- Rows "id|value" of a query on $MMO_PG: { [id] = value }.
local function by_id(sql)
    local out = {}
    for id, v in server.psql(sql):gmatch("(%d+)|([^\n]*)") do
        out[tonumber(id)] = v
    end
    return out
end


-- Which subset of the trades in flight explains the inventories seen? (nil: none does)
local function explain(world, seen, lost)
    local n = #lost
    for mask = 0, 2 ^ n - 1 do
        local want = {}
        for _, t in ipairs(world.traders) do
            local w = {}
            for _, it in ipairs(TRADE_ITEMS) do
                w[it] = t.inv[it] + ((t.want_loot or {})[it] or 0)
            end
            want[t.player_id] = w
        end
        local applied = 0
        for j = 1, n do
            if math.floor(mask / 2 ^ (j - 1)) % 2 == 1 then
                local tr = lost[j]
                want[tr.from][tr.item] = want[tr.from][tr.item] - tr.qty
                want[tr.to][tr.item] = want[tr.to][tr.item] + tr.qty
                applied = applied + 1
            end
        end
        local same = true
        for pid, w in pairs(want) do
            for _, it in ipairs(TRADE_ITEMS) do
                if seen[pid][it] ~= w[it] then
                    same = false
                end
            end
        end
        if same then
            return applied
        end
    end
    return nil
end


-- The checks after a restart; returns a line of what was checked.
function World:verify(node, lost_trades, dead_before)
    local q = self:queues(node)
    if q.group.lag ~= 0 or q.group.pending ~= 0 then
        fail("left in the stream: lag %s, pending %s", tostring(q.group.lag),
             tostring(q.group.pending))
    end
    if q.dead_letters ~= dead_before then
        fail("%d events went to the dead letters", q.dead_letters - dead_before)
    end
    -- items: totals, then each trader
    local seen, sums = {}, {}
    for _, t in ipairs(self.traders) do
        seen[t.player_id] = self:inventory(node, t.player_id)
        for _, it in ipairs(TRADE_ITEMS) do
            sums[it] = (sums[it] or 0) + seen[t.player_id][it]
        end
    end
    for _, it in ipairs(TRADE_ITEMS) do
        if sums[it] ~= self.totals[it] then
            fail("item %s: the traders hold %d together, %d were granted and looted", it,
                 sums[it], self.totals[it])
        end
    end
    local applied = explain(self, seen, lost_trades)
    if not applied then
        local parts = {}
        for _, t in ipairs(self.traders) do
            for _, it in ipairs(TRADE_ITEMS) do
                local w = t.inv[it] + ((t.want_loot or {})[it] or 0)
                if seen[t.player_id][it] ~= w then
                    parts[#parts + 1] = ("player %d %s: %d, confirmed %d"):format(
                        t.player_id, it, seen[t.player_id][it], w)
                end
            end
        end
        fail("inventories match no outcome of the %d trades in flight: %s", #lost_trades,
             table.concat(parts, "; "))
    end
    -- xp, once per acknowledged kill; what the API answers (through the cache) is what the
    -- database holds
    local ids = {}
    for _, t in ipairs(self.traders) do
        ids[#ids + 1] = t.player_id
    end
    local db_xp = by_id("select id, xp from players where id in (" .. table.concat(ids, ",") ..
                        ")")
    for _, t in ipairs(self.traders) do
        local xp = self:player(node, t.player_id).xp
        local want = t.xp + (t.want_xp or 0)
        if xp ~= want or db_xp[t.player_id] ~= tostring(want) then
            fail("xp of player %d: %d (the database: %s), the acknowledged kills give %d",
                 t.player_id, xp, tostring(db_xp[t.player_id]), want)
        end
    end
    -- the inventories seen are the next round's start (loot and xp counted in)
    for _, t in ipairs(self.traders) do
        t.inv = seen[t.player_id]
        t.xp = t.xp + (t.want_xp or 0)
        t.want_xp, t.want_loot = nil, nil
    end
    -- accounts, players, titles
    if #self.accounts > 0 then
        local list = "'" .. table.concat(self.accounts, "','") .. "'"
        local n = tonumber(server.psql("select count(*) from accounts where username in (" ..
                                       list .. ")"))
        if n ~= #self.accounts then
            fail("%s of %d accounts whose registration was confirmed exist", tostring(n),
                 #self.accounts)
        end
    end
    local np, pids = 0, {}
    for pid in pairs(self.players) do
        pids[#pids + 1] = pid
    end
    local db_title = #pids > 0 and by_id("select id, coalesce(appearance->>'title', '') from " ..
                                         "players where id in (" .. table.concat(pids, ",") ..
                                         ")") or {}
    for pid, p in pairs(self.players) do
        local doc = self:player(node, pid)
        local title = doc.appearance and doc.appearance.title
        if doc.name ~= p.name then
            fail("player %d: name %s, created as %s", pid, tostring(doc.name), p.name)
        end
        if title ~= p.title and not (p.alt and title == p.alt) then
            fail("player %d: title %s, confirmed %s", pid, tostring(title), tostring(p.title))
        end
        if (db_title[pid] or "") ~= (title or "") then
            fail("player %d: title %s, the database holds %s", pid, tostring(title),
                 tostring(db_title[pid]))
        end
        p.title = title
        p.alt = nil
        np = np + 1
    end
    return ("%d items conserved, %d inventories (%d of %d trades in flight happened), " ..
            "%d xp, %d accounts, %d players"):format(#TRADE_ITEMS, #self.traders, applied,
                                                     #lost_trades, #self.traders,
                                                     #self.accounts, np)
end


-- opts: rounds, seconds (of load per round, at most), start() -> a ready node, say(line),
-- admin_password. Returns ok, the rounds' lines, the failures.
function _M.run(opts)
    local say = opts.say or print
    local world = new_world(opts.admin_password or os.getenv("MMO_ADMIN_PASSWORD"))
    local node = opts.start()
    world:login(node)
    world:setup(node)
    local failures, lines = {}, {}
    local summary = { kills = 0, trades = 0, batches = 0, writes = 0, in_flight = 0 }
    for round = 1, opts.rounds do
        local dead_before = world:queues(node).dead_letters
        local kill_at = 0.5 + math.random() * (opts.seconds - 0.5)
        local ok, err = pcall(function()
            local st, lost = world:load(node, kill_at)
            local in_flight = #lost.trades + #lost.batches + lost.writes
            summary.kills = summary.kills + 1
            summary.trades = summary.trades + st.trades
            summary.batches = summary.batches + st.batches
            summary.writes = summary.writes + st.writes
            summary.in_flight = summary.in_flight + in_flight
            local report = node:sanitizer_report()
            if report then
                fail("sanitizer report in the node's log:\n%s", report)
            end
            node = opts.start()
            local resent = world:resend(node, lost.batches)
            local drained_in = world:drain(node, 120)
            local checked = world:verify(node, lost.trades, dead_before)
            return ("round %d/%d: killed at %.2f s; done before: %d trades (%d refused), " ..
                    "%d event batches (%d events), %d writes, %d moves; in flight: %d trades, " ..
                    "%d event batches (%d events sent again), %d writes; drained in %.1f s; " ..
                    "checked: %s"):format(round, opts.rounds, st.killed_after, st.trades,
                    st.refused, st.batches, st.events, st.writes, st.moves, #lost.trades,
                    #lost.batches, resent, lost.writes, drained_in, checked)
        end)
        local line
        if ok then
            line = err
        else
            local msg = type(err) == "table" and err.crash or tostring(err)
            line = ("round %d/%d: FAILED: %s"):format(round, opts.rounds, msg)
            failures[#failures + 1] = line
        end
        say(line)
        lines[#lines + 1] = line
        if not ok then
            -- what the next round would expect is no longer known: stop here
            break
        end
    end
    if node:alive() then
        local rc = node:stop()
        if rc ~= 0 then
            failures[#failures + 1] = "the last node exited with " .. tostring(rc)
        end
    end
    summary.failures = #failures
    return #failures == 0, lines, failures, summary
end


_M.json = json

return _M
