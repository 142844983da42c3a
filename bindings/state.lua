-- bindings/state.lua: mmo.state, game state that outlives a script reload (built into the
-- binary; bindings/lua_state.c loads it once per node, so every script set shares it).
--
--   local S = state.global(name, { version = 1, init = fn() -> table, migrate = fn })
--   local T = state.regional(name, spec)   T:get(region)  T:peek(region)  T:drop(region)  T:each()
--   state.drop_region(region)
--
-- Returns the module and its control side (begin/commit/abort/list), which the core keeps in
-- the registry: declarations made while a set loads are staged and become the store's only
-- when the set is swapped in.
local type, pairs, next, error, setmetatable, getmetatable =
      type, pairs, next, error, setmetatable, getmetatable
local sort = table.sort
local entries = {} -- name -> { kind, version, data, regions }
local staging     -- name -> entry, while a set loads

local function copy(v, seen)
    if type(v) ~= 'table' then return v end
    if seen[v] then return seen[v] end
    local t = {}
    seen[v] = t
    for k, x in next, v do t[copy(k, seen)] = copy(x, seen) end
    return setmetatable(t, getmetatable(v))
end

local function check(name, spec)
    if type(name) ~= 'string' or name == '' then
        error('mmo.state: the name must be a non-empty string', 3)
    end
    if spec ~= nil and type(spec) ~= 'table' then
        error('mmo.state: the spec must be a table { version, init, migrate }', 3)
    end
    spec = spec or {}
    local v = spec.version or 1
    if type(v) ~= 'number' or v < 1 or v % 1 ~= 0 then
        error('mmo.state: version must be a positive integer', 3)
    end
    return spec, v
end

local function migrated(name, spec, old_version, data, region)
    if type(spec.migrate) ~= 'function' then
        error(('mmo.state: %s is version %d here; the module declares %d and has no '
               .. 'migrate(old_version, state)'):format(name, old_version, spec.version or 1),
              4)
    end
    local new = spec.migrate(old_version, copy(data, {}), region)
    if type(new) ~= 'table' then
        error(('mmo.state: %s: migrate from version %d must return a table'):format(name,
                    old_version), 4)
    end
    return new
end

local function declare(name, spec, version, kind)
    local e = staging and staging[name]
    if e then
        if e.kind ~= kind or e.version ~= version then
            error(('mmo.state: %s is declared twice, differently'):format(name), 3)
        end
        return e
    end
    local cur = entries[name]
    if cur and cur.kind ~= kind then
        error(('mmo.state: %s is %s state, not %s'):format(name, cur.kind, kind), 3)
    end
    if cur and cur.version == version then
        e = cur
    else
        e = { kind = kind, version = version, regions = {} }
        if kind == 'global' then
            if cur then e.data = migrated(name, spec, cur.version, cur.data)
            else e.data = spec.init and spec.init() or {} end
            if type(e.data) ~= 'table' then
                error(('mmo.state: %s: init must return a table'):format(name), 3)
            end
        elseif cur then
            for region, data in pairs(cur.regions) do
                e.regions[region] = migrated(name, spec, cur.version, data, region)
            end
        end
    end
    e.init = spec.init
    if staging then staging[name] = e else entries[name] = e end
    return e
end

local M = {}

function M.global(name, spec)
    local s, v = check(name, spec)
    return declare(name, s, v, 'global').data
end

local Regional = {}
Regional.__index = Regional
function Regional:get(region)
    local e = self.entry
    local t = e.regions[region]
    if t == nil then
        t = e.init and e.init(region) or {}
        e.regions[region] = t
    end
    return t
end
function Regional:peek(region) return self.entry.regions[region] end
function Regional:drop(region) self.entry.regions[region] = nil end
function Regional:each() return next, self.entry.regions, nil end

function M.regional(name, spec)
    local s, v = check(name, spec)
    return setmetatable({ entry = declare(name, s, v, 'regional'), name = name }, Regional)
end

function M.drop_region(region)
    for _, e in pairs(entries) do e.regions[region] = nil end
    if staging then for _, e in pairs(staging) do e.regions[region] = nil end end
end

local ctl = {}
function ctl.begin() staging = {} end
function ctl.commit()
    for name, e in pairs(staging or {}) do entries[name] = e end
    staging = nil
end
function ctl.abort() staging = nil end
function ctl.list()
    local out = {}
    for name, e in pairs(entries) do
        local n = 0
        for _ in pairs(e.regions) do n = n + 1 end
        out[#out + 1] = { name = name, kind = e.kind, version = e.version,
                                            regions = e.kind == 'regional' and n or nil }
    end
    sort(out, function(a, b) return a.name < b.name end)
    return out
end
return M, ctl
