-- lib/regions.lua: the world's regions, read once from the main database and kept, across
-- reloads too (mmo.state: they do not change while a node runs, and a reload must not make a
-- thousand moving players ask PostgreSQL for them at once). One task reads them; the others
-- that need them meanwhile wait for it. Also makes sure the live world (mmo.world) knows them.
local db = require "mmo.db"
local http = require "lib.http"
local state = require "mmo.state"
local time = require "mmo.time"
local world = require "mmo.world"

local ipairs = ipairs


local _M = {}

-- loaded: { {id, name, x0, y0, x1, y1}, ... } once read; by_id; reading: since when a task
-- reads them
local S = state.global("regions")


function _M.all()
    -- another task is reading them: wait (unless it began long ago: it was ended meanwhile)
    while not S.loaded and S.reading and time.monotonic() - S.reading < 10 do
        time.sleep(0.01)
    end
    if not S.loaded then
        S.reading = time.monotonic()
        local rows, err, detail = db.query(
            "select id, name, x0, y0, x1, y1 from regions order by id")
        S.reading = nil
        rows = http.check(rows, err, detail)
        local map = {}
        for _, r in ipairs(rows) do
            map[r.id] = r
        end
        S.loaded, S.by_id = rows, map
    end
    local loaded = S.loaded
    if world.regions() < #loaded then
        for _, r in ipairs(loaded) do
            world.add_region(r.id, r.x0, r.y0, r.x1, r.y1)
        end
    end
    return loaded
end


function _M.get(id)
    _M.all()
    return S.by_id[id]
end


return _M
