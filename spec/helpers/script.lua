-- helpers/script.lua: load a script module for a busted spec, with fake bindings.
--
--   local script = require "helpers.script"
--   local clock = { now = function() return 1000 end }
--   local demo = script.load("handlers.demo", { ["mmo.time"] = clock })
--
-- Every mmo.* module the script requires is replaced: by the table given for it, or by a
-- fake whose functions raise "<module>.<name> is not faked in this spec", so a spec never
-- reaches a real database by accident. The module is loaded fresh each time, with globals
-- locked (reading or writing an undeclared global raises, as in the server).
local _M = {}

local BINDINGS = { "mmo.db", "mmo.cache", "mmo.json", "mmo.log", "mmo.time", "mmo.auth", "mmo.ws",
                   "mmo.world",
                   "mmo.crypto", "mmo.queue", "mmo.metrics", "mmo.state", "mmo.scripts",
                   "mmo.events" }


local function unfaked(name)
    return setmetatable({}, {
        __index = function(_, k)
            if name == "mmo.cache" and k == "at" then
                -- called as a module loads (lib/queue.lua): the calls it binds fail when used
                return function(tag)
                    return unfaked(name .. ".at(" .. tostring(tag) .. ")")
                end
            end
            return function()
                error(name .. "." .. tostring(k) .. " is not faked in this spec", 2)
            end
        end,
    })
end


-- A fake mmo.json backed by lua-cjson, the same library the server uses.
function _M.json()
    local cjson = require "cjson"
    local safe = require "cjson.safe"
    return { encode = cjson.encode, decode = safe.decode, null = cjson.null }
end


-- A fake mmo.metrics: metrics that record what they were told, by label values joined with
-- "/" (metric.values["r1"] = 3).
function _M.metrics()
    local function make()
        local m = { values = {} }
        local function key(...)
            return table.concat({ ... }, "/")
        end
        function m.inc(self, n, ...)
            local k = key(...)
            self.values[k] = (self.values[k] or 0) + (n or 1)
        end
        function m.set(self, v, ...)
            self.values[key(...)] = v
        end
        function m.observe(self, v, ...)
            self.values[key(...)] = v
        end
        return m
    end
    return { counter = make, gauge = make, histogram = make }
end


-- A fake mmo.events that records what the game emitted (events.emitted = { {name, payload} })
-- and the handlers it set (events.handlers[name] = { fn, ... }).
function _M.events()
    local ev = { emitted = {} }
    function ev.emit(name, payload)
        ev.emitted[#ev.emitted + 1] = { name = name, payload = payload }
        return 0
    end
    function ev.mods()
        return {}
    end
    ev.handlers = {} -- name -> { fn, ... } (events.on)
    function ev.on(name, fn)
        ev.handlers[name] = ev.handlers[name] or {}
        table.insert(ev.handlers[name], fn)
    end
    return ev
end


-- The real mmo.state (bindings/state.lua), fresh: a store of its own for each load.
function _M.state()
    return (dofile("bindings/state.lua"))
end


-- A fake mmo.log that records lines: log.lines = { {level, msg, fields}, ... }.
function _M.log()
    local log = { lines = {} }
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        log[level] = function(msg, fields)
            log.lines[#log.lines + 1] = { level = level, msg = msg, fields = fields }
        end
    end
    log.level = function() return "debug" end
    return log
end


function _M.load(name, fakes)
    fakes = fakes or {}
    local saved = {}
    local names = {}
    for _, b in ipairs(BINDINGS) do
        names[#names + 1] = b
    end
    for k in pairs(fakes) do
        names[#names + 1] = k
    end
    for _, b in ipairs(names) do
        saved[b] = package.loaded[b]
        package.loaded[b] = fakes[b] or (b == "mmo.json" and _M.json()) or
                            (b == "mmo.metrics" and _M.metrics()) or
                            (b == "mmo.state" and _M.state()) or
                            (b == "mmo.events" and _M.events()) or unfaked(b)
    end
    saved[name] = package.loaded[name]
    package.loaded[name] = nil

    local mt = getmetatable(_G)
    setmetatable(_G, {
        __newindex = function(_, k)
            error("assignment to undeclared global '" .. tostring(k) .. "'", 2)
        end,
        __index = function(_, k)
            error("undeclared global '" .. tostring(k) .. "'", 2)
        end,
    })
    local ok, mod = pcall(require, name)
    setmetatable(_G, mt)

    for b, v in pairs(saved) do
        package.loaded[b] = v
    end
    if not ok then
        error(mod, 2)
    end
    return mod
end


return _M
