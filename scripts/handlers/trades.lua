-- handlers/trades.lua: POST /api/trades {from, to, give, take} (API.md "Players").
--
-- One PostgreSQL transaction on the players' shard: both players' rows are locked in id
-- order (so two trades can never wait on each other in a cycle), both inventories read,
-- rules/inventory.trade decides, the changes are written. A deadlock or serialization failure
-- is retried inside the core (db.tx retries) and never reaches the client. Either everything
-- moves or nothing does: a refusal is 409 with the reason.
--
-- Consent: a trade between players of one account, or a gift (take empty), happens at once.
-- Taking items from another account's player needs its owner to ask for the mirror trade
-- (from and to swapped, give and take swapped) within OFFER_SECONDS: the first call answers 202
-- {state = "offered"}, the matching second one makes the trade.
local cache = require "mmo.cache"
local crypto = require "mmo.crypto"
local db = require "mmo.db"
local http = require "lib.http"
local inventory = require "rules.inventory"
local players = require "lib.players"

local ipairs = ipairs
local tostring = tostring
local type = type


local TRADES = require("mmo.metrics").counter("mmo_trades_total",
    "Trades, by result (done, offered: waiting for the other side)", { "result" })

local _M = {}

_M.OFFER_SECONDS = 60


local REFUSALS = {
    not_enough = "a side does not have what the trade moves",
    inventory_full = "a side has no room for what it would get",
}


local function invalid(msg)
    http.fail(422, "validation_failed", msg)
end


-- A canonical text for a trade, so an offer and its mirror can be matched.
local function signature(from, to, give, take)
    local function lines(list)
        local t = {}
        for i, l in ipairs(list) do
            t[i] = l.item .. "=" .. l.qty
        end
        table.sort(t)
        return table.concat(t, ",")
    end
    return crypto.sha256(from .. ">" .. to .. "|" .. lines(give) .. "|" .. lines(take))
end


-- Run the trade; returns nothing or raises a typed error.
local function execute(from, to, give, take)
    local items = {}
    for _, l in ipairs(give) do
        items[#items + 1] = l.item
    end
    for _, l in ipairs(take) do
        items[#items + 1] = l.item
    end
    local ok, err, detail = players.db_of(from).tx(function(q)
        local rows = http.check(q("select id from players where id = $1 or id = $2 " ..
                                  "order by id for update", from, to))
        if #rows ~= 2 then
            http.fail(404, "not_found", "no such player")
        end
        local inv_from = players.inventory(from, q)
        local inv_to = players.inventory(to, q)
        local cat = players.catalogue(q, items, inv_from, inv_to)
        local a, b, d = inventory.trade(inv_from, inv_to, give, take, cat)
        if not a then
            local why = b
            if why == "unknown_item" then
                http.fail(422, why, "no such item", d)
            end
            http.fail(409, why, REFUSALS[why] or why, d)
        end
        players.write_inventory(q, from, inv_from, a)
        players.write_inventory(q, to, inv_to, b)
        return true
    end, { retries = 8 })
    if not ok then
        -- retries exhausted on deadlocks/serialization: still never a 500 to the client
        if detail and (detail.sqlstate == "40001" or detail.sqlstate == "40P01") then
            http.fail(409, "busy", "the trade met too many concurrent trades; retry")
        end
        http.check(nil, err)
    end
end


function _M.create(req)
    local body = req.body
    if type(body) ~= "table" then
        invalid("body: must be an object")
    end
    local from = players.parse_id(tostring(body.from))
    local to = players.parse_id(tostring(body.to))
    if from == to then
        invalid("to: a player cannot trade with itself")
    end
    local give, msg = inventory.parse_lines(body.give, "give")
    if not give then
        invalid(msg)
    end
    local take
    take, msg = inventory.parse_lines(body.take, "take")
    if not take then
        invalid(msg)
    end
    if #give == 0 and #take == 0 then
        invalid("give, take: a trade moves something")
    end
    if from % players.SHARDS ~= to % players.SHARDS then
        http.fail(409, "cross_shard", "these players live in different shards; a trade " ..
                  "between them is refused (docs/designers.md)")
    end
    local dir = http.check(db.query(
        "select id, account_id from player_directory where id = $1 or id = $2", from, to))
    local owner = {}
    for _, r in ipairs(dir) do
        owner[r.id] = r.account_id
    end
    if not owner[from] or not owner[to] then
        http.fail(404, "not_found", "no such player")
    end
    if owner[from] ~= req.account.id then
        http.fail(403, "forbidden", "not your player")
    end
    if #take > 0 and owner[to] ~= owner[from] then
        local mirror = "trade:offer:" .. signature(to, from, take, give)
        local taken = http.check(cache.del(mirror))
        if taken ~= 1 then
            local key = "trade:offer:" .. signature(from, to, give, take)
            http.check(cache.set(key, "1", _M.OFFER_SECONDS * 1000))
            TRADES:inc(1, "offered")
            return 202, { state = "offered", expires_in = _M.OFFER_SECONDS,
                          message = "the other player's owner must ask for the mirror trade" }
        end
    end
    execute(from, to, give, take)
    TRADES:inc(1, "done")
    return 200, { state = "done", from = players.inventory_body(players.inventory(from)),
                  to_player = to }
end


return _M
