-- lib/guilds.lua: guild membership, kept in step in three places: the guild_members row in the
-- main database (the truth: one guild per player), the player's row on its shard (guild_id,
-- for the player document), and the live world (guild chat follows the player at once).
local db = require "mmo.db"
local guild = require "rules.guild"
local http = require "lib.http"
local players = require "lib.players"
local world = require "mmo.world"

local ipairs = ipairs


local _M = {}

local GUILD_COLUMNS = "id, name, leader_id, members, " ..
                      "to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') " ..
                      "as created_at"
_M.GUILD_COLUMNS = GUILD_COLUMNS


-- The guild row, or nil; q: a transaction's query (then FOR UPDATE).
function _M.row(id, q)
    local sql = "select " .. GUILD_COLUMNS .. " from guilds where id = $1"
    local rows
    if q then
        rows = http.check(q(sql .. " for update", id))
    else
        rows = http.check(db.query(sql, id))
    end
    return rows[1]
end


-- The player's shard row and the live world follow a membership change (guild_id 0: none).
-- Returns true, or nil when the shard could not be written (the caller undoes the change).
-- The cached document is made a miss before the commit (players.writing): a node killed
-- between the commit and published() must not leave the old guild served from the cache.
function _M.mirror(player_id, guild_id)
    local row
    local ok = players.db_of(player_id).tx(function(q)
        local cur = q("select version from players where id = $1 for update", player_id)
        if not cur or not cur[1] then
            return cur and true -- no such player: nothing to mirror
        end
        players.writing(player_id, cur[1].version)
        local rows = q("update players set guild_id = $2, version = version + " ..
                       players.WRITE_STEP .. " where id = $1 returning " .. players.COLUMNS,
                       player_id, guild_id > 0 and guild_id or nil)
        row = rows and rows[1]
        return true
    end)
    if not ok then
        return nil
    end
    if row then
        players.published(row)
    end
    world.set_guild(player_id, guild_id)
    return true
end


-- Take player_id out of its guild in the main database (q: a transaction's query): the
-- guild's count drops, leadership passes to the member who joined first, and a guild left
-- empty is disbanded. Returns the guild row after (members 0 and disbanded = true when it
-- went), or nil when the player was in no guild.
function _M.remove(q, player_id)
    local gone = http.check(q("delete from guild_members where player_id = $1 returning guild_id",
                              player_id))[1]
    if not gone then
        return nil
    end
    local g = _M.row(gone.guild_id, q)
    if g.members <= 1 then
        http.check(q("delete from guilds where id = $1", g.id))
        g.members, g.disbanded = 0, true
        return g
    end
    local leader = g.leader_id
    if leader == player_id then
        local rest = http.check(q("select player_id from guild_members where guild_id = $1 " ..
                                  "order by joined_at, player_id limit 1", g.id))
        leader = guild.next_leader(rest)
    end
    return http.check(q("update guilds set members = members - 1, leader_id = $2 where id = $1 " ..
                        "returning " .. GUILD_COLUMNS, g.id, leader))[1]
end


-- The members of a guild: { {player_id, joined_at}, ... } in the order they joined.
function _M.members(id)
    local rows = http.check(db.query(
        "select player_id, to_char(joined_at at time zone 'UTC', " ..
        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') as joined_at from guild_members " ..
        "where guild_id = $1 order by joined_at, player_id", id))
    local out = {}
    for i, r in ipairs(rows) do
        out[i] = { player_id = r.player_id, joined_at = r.joined_at }
    end
    return out
end


return _M
