-- lib/regions.lua: the world's regions, read once from the main database and kept (they do
-- not change while a node runs; a reload of the scripts reads them again). Also makes sure
-- the live world (mmo.world) knows them.
local db = require "mmo.db"
local http = require "lib.http"
local world = require "mmo.world"

local ipairs = ipairs


local _M = {}

local loaded -- { {id, name, x0, y0, x1, y1}, ... } once read
local by_id


function _M.all()
    if not loaded then
        local rows = http.check(db.query(
            "select id, name, x0, y0, x1, y1 from regions order by id"))
        local map = {}
        for _, r in ipairs(rows) do
            map[r.id] = r
        end
        loaded, by_id = rows, map -- lint: allow-module-state (a cache: read again after a reload)
    end
    if world.regions() < #loaded then
        for _, r in ipairs(loaded) do
            world.add_region(r.id, r.x0, r.y0, r.x1, r.y1)
        end
    end
    return loaded
end


function _M.get(id)
    _M.all()
    return by_id[id]
end


return _M
