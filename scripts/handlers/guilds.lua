-- handlers/guilds.lua: create, join, leave and show guilds (API.md "World").
--
-- Each call names the acting player in the body ({player_id}); it must be one of the caller's
-- players. The membership changes in one transaction of the main database (a player is in one
-- guild at most: the key of guild_members), then the player's shard row and the live world
-- follow; when the shard cannot be written, the membership change is undone and the call
-- answers 503, so the three never disagree for longer than the call.
local audit = require "lib.audit"
local db = require "mmo.db"
local guild = require "rules.guild"
local guilds = require "lib.guilds"
local http = require "lib.http"
local json = require "mmo.json"
local players = require "lib.players"

local floor = math.floor
local tonumber = tonumber
local type = type


local _M = {}


local function invalid(msg)
    http.fail(422, "validation_failed", msg)
end


-- The body's player_id: one of the caller's players, or an error answer.
local function acting_player(req)
    local body = req.body
    if type(body) ~= "table" then
        invalid("body: must be an object")
    end
    local id = body.player_id
    if type(id) ~= "number" or id < 1 or id ~= floor(id) or id > 9007199254740991 then
        invalid("player_id: one of your players' ids")
    end
    local row = players.row(players.parse_id(("%.0f"):format(id)))
    if not row then
        http.fail(404, "not_found", "no such player")
    end
    if not players.owns(req.account, row) then
        http.fail(403, "forbidden", "not your player")
    end
    return row
end


-- A guild id from the path, or 404.
local function guild_id(text)
    local id = text:match("^%d+$") and tonumber(text)
    if not id or id < 1 or id > 9007199254740991 then
        http.fail(404, "not_found", "no such guild")
    end
    return id
end


local function document(g, members)
    return { id = g.id, name = g.name, leader_id = g.leader_id, members = g.members,
             created_at = g.created_at, disbanded = g.disbanded,
             roster = members and json.array(members) or nil }
end


-- The player's shard row and the live world follow; else undo(q) runs in a new transaction
-- of the main database and the call answers 503.
local function mirror_or_undo(player_id, guild_id_now, undo)
    if guilds.mirror(player_id, guild_id_now) then
        return
    end
    db.tx(undo)
    http.fail(503, "unavailable", "the player's database cannot be written now; nothing changed")
end


-- POST /api/guilds {name, player_id}: a new guild, led by that player
function _M.create(req)
    local p = acting_player(req)
    local ok, msg = guild.valid_name(req.body.name)
    if not ok then
        invalid(msg)
    end
    local g, failed
    local done, err, detail = db.tx(function(q)
        local r, e, d = q("insert into guilds (name, leader_id, members) values ($1, $2, 1) " ..
                          "returning " .. guilds.GUILD_COLUMNS, req.body.name, p.id)
        if r then
            g = r[1]
            r, e, d = q("insert into guild_members (player_id, guild_id) values ($1, $2)",
                        p.id, g.id)
        end
        if not r then
            failed = { e, d }
            return nil
        end
        return true
    end)
    if not done then
        if failed then
            err, detail = failed[1], failed[2]
        end
        if detail and detail.sqlstate == "23505" then
            if detail.constraint == "guilds_name_key" then
                http.fail(409, "name_taken", "a guild has that name")
            end
            http.fail(409, "already_in_guild", "that player is in a guild; leave it first")
        end
        http.check(nil, err or "query", detail)
    end
    mirror_or_undo(p.id, g.id, function(q)
        q("delete from guilds where id = $1", g.id)
    end)
    audit.write(req, "guild.create", g.id, { name = g.name, player_id = p.id })
    return 201, document(g)
end


-- POST /api/guilds/:id/join {player_id}
function _M.join(req)
    local id = guild_id(req.params.id)
    local p = acting_player(req)
    local g = http.check(db.tx(function(q)
        local cur = guilds.row(id, q)
        if not cur then
            http.fail(404, "not_found", "no such guild")
        end
        local mine = http.check(q("select guild_id from guild_members where player_id = $1",
                                  p.id))[1]
        if mine then
            if mine.guild_id == id then
                http.fail(409, "already_in_guild", "that player is in this guild already")
            end
            http.fail(409, "already_in_guild", "that player is in a guild; leave it first")
        end
        if not guild.has_room(cur.members) then
            http.fail(409, "guild_full", "the guild has " .. guild.MAX_MEMBERS .. " members")
        end
        local ok, e, d = q("insert into guild_members (player_id, guild_id) values ($1, $2)",
                           p.id, id)
        if not ok and d and d.sqlstate == "23505" then -- a join of the same player, meanwhile
            http.fail(409, "already_in_guild", "that player is in a guild; leave it first")
        end
        http.check(ok, e, d)
        return http.check(q("update guilds set members = members + 1 where id = $1 returning " ..
                            guilds.GUILD_COLUMNS, id))[1]
    end))
    mirror_or_undo(p.id, id, function(q)
        guilds.remove(q, p.id)
    end)
    audit.write(req, "guild.join", id, { player_id = p.id })
    return 200, document(g)
end


-- POST /api/guilds/:id/leave {player_id}
function _M.leave(req)
    local id = guild_id(req.params.id)
    local p = acting_player(req)
    local g = http.check(db.tx(function(q)
        local mine = http.check(q("select guild_id from guild_members where player_id = $1 " ..
                                  "for update", p.id))[1]
        if not mine or mine.guild_id ~= id then
            http.fail(409, "not_in_guild", "that player is not in this guild")
        end
        return guilds.remove(q, p.id)
    end))
    -- the membership is gone; the shard copy follows (a failure here leaves a stale guild_id
    -- on the player's row only, which the next join or leave rewrites)
    guilds.mirror(p.id, 0)
    audit.write(req, "guild.leave", id, { player_id = p.id, disbanded = g.disbanded })
    return 200, document(g)
end


-- GET /api/guilds/:id: the guild and its members
function _M.show(req)
    local g = guilds.row(guild_id(req.params.id))
    if not g then
        http.fail(404, "not_found", "no such guild")
    end
    return 200, document(g, guilds.members(g.id))
end


return _M
