-- mods_sandbox.lua: builds a mod's environment. core/mods.c runs it once in every mod's VM
-- (compiled into the binary) and loads the mod's file with the table it returns as its
-- globals; it touches nothing global itself, so spec/unit/mods_sandbox_spec.lua runs it as is.
--
-- host (from mods.c): events = {on, emit}, game = {send, log, now, null}; fault() -> nil or
-- why the mod must stop (budget spent, memory cap hit, disabled); charge(steps) counts work
-- done in C against the budget (raises when spent); plainfind(s, p, init) -> start, end | nil
-- in linear time; pattern_limit: the bound on C matcher steps up to which patterns run in C.
-- It returns the environment and reset(), for the host to call after a strike (below).
--
-- Why the wrappers: a count hook stops Lua code, not C code, and an error raised by the hook
-- can be caught. So
--   * pcall, xpcall and coroutine.resume re-raise at once when host.fault() says the mod is
--     done (the hook keeps raising as well, and the host checks after every call); xpcall's
--     handler runs after the unwinding, under the budget (see below);
--   * table.sort compares through a Lua function, so every comparison is counted;
--   * C functions that call back into Lua nest at most MAX_NEST deep (see nested());
--   * string.find/match/gmatch/gsub run in C only when a bound on their work (estimate()) is
--     small, and that bound is charged to the budget; beyond, the matcher below, in Lua, does
--     the work under the budget. Plain finds run in C in linear time.
local host = ...

local byte, char, sub = string.byte, string.char, string.sub
local c_find, c_match, c_gmatch, c_gsub = string.find, string.match, string.gmatch, string.gsub
local error, pcall, type, tostring, tonumber = error, pcall, type, tostring, tonumber
local select = select
local floor = math.floor
local co_resume, co_wrap = coroutine.resume, coroutine.wrap
local table_sort, table_concat, table_insert = table.sort, table.concat, table.insert
local fault, plainfind, charge = host.fault, host.plainfind, host.charge
local LIMIT = host.pattern_limit


local function pass(...)
    local why = fault()
    if why then
        error(why, 0)
    end
    return ...
end


local function lt(a, b)
    return a < b
end


-- C functions that call back into Lua (gsub with a function or table, sort, coroutine resume)
-- nest on the C stack, and LuaJIT does not bound that: a few thousand levels crash the process.
-- These wrappers bound it.
local MAX_NEST = 16
local nest = 0

local function leave_nest(ok, ...)
    nest = nest - 1
    pass()
    if not ok then
        error((...), 0)
    end
    return ...
end

local function nested(f, ...)
    if nest >= MAX_NEST then
        error("nested too deep (gsub with a function, sort, coroutines: " .. MAX_NEST .. " levels)",
            0)
    end
    nest = nest + 1
    return leave_nest(pcall(f, ...))
end


-- ---- Lua patterns, in Lua ------------------------------------------------------------------
-- The same algorithm as LuaJIT's lib_string.c (backtracking over the pattern's items), so the
-- results are the same; what a character class matches is asked of the C matcher once per
-- class and byte value, on one-byte subjects.

local P_PERCENT, P_LBRACKET, P_RBRACKET, P_CARET = 37, 91, 93, 94
local P_LPAREN, P_RPAREN, P_DOLLAR = 40, 41, 36
local MAX_CAPTURES, MAX_DEPTH = 32, 200
local CAP_UNFINISHED, CAP_POSITION = -1, -2
-- item kinds
local SINGLE, OPEN, POSITION, CLOSE, BALANCE, FRONTIER, BACKREF, END = 1, 2, 3, 4, 5, 6, 7, 8

local QUANT = { [42] = "*", [43] = "+", [45] = "-", [63] = "?" }

local class_cache, class_count = {}, 0
local parsed, parsed_count, compiled = {}, 0, {}

-- the set of bytes that the class text cls ("%a", "[^,]", ".", "x") matches
local function class_set(cls)
    local set = class_cache[cls]
    if set then
        return set
    end
    set = {}
    if cls == "$" then -- '$' not at the end of a pattern is a plain character
        for b = 0, 255 do
            set[b] = b == P_DOLLAR
        end
    else
        local p = "^" .. cls
        for b = 0, 255 do
            set[b] = c_find(char(b), p) ~= nil
        end
    end
    if class_count >= 256 then
        class_cache, class_count = {}, 0
    end
    class_cache[cls] = set
    class_count = class_count + 1
    return set
end

-- index just after the single-character class starting at i of p
local function class_end(p, i, m)
    local c = byte(p, i)
    i = i + 1
    if c == P_PERCENT then
        if i > m then
            error("malformed pattern (ends with '%')", 0)
        end
        return i + 1
    elseif c == P_LBRACKET then
        if byte(p, i) == P_CARET then
            i = i + 1
        end
        repeat
            if i > m then
                error("malformed pattern (missing ']')", 0)
            end
            local cc = byte(p, i)
            i = i + 1
            if cc == P_PERCENT then
                if i > m then
                    error("malformed pattern (missing ']')", 0)
                end
                i = i + 1
            end
        until byte(p, i) == P_RBRACKET
        return i + 1
    end
    return i
end

-- p (after any anchor, cut at its first NUL as the C matcher does) -> its items: kind, cls
-- (the text of a character class), a2 (%b's closing byte), quant ("*", "+", "-", "?")
local function parse(p)
    local c = parsed[p]
    if c then
        return c
    end
    local kind, cls, a2, quant, n = {}, {}, {}, {}, 0
    local i, m = 1, #p
    while i <= m do
        local b = byte(p, i)
        n = n + 1
        if b == P_LPAREN then
            if byte(p, i + 1) == P_RPAREN then
                kind[n], i = POSITION, i + 2
            else
                kind[n], i = OPEN, i + 1
            end
        elseif b == P_RPAREN then
            kind[n], i = CLOSE, i + 1
        elseif b == P_DOLLAR and i == m then
            kind[n], i = END, i + 1
        elseif b == P_PERCENT and byte(p, i + 1) == 98 then -- %bxy
            if i + 3 > m then
                error("unbalanced pattern", 0)
            end
            kind[n], cls[n], a2[n], i = BALANCE, byte(p, i + 2), byte(p, i + 3), i + 4
        elseif b == P_PERCENT and byte(p, i + 1) == 102 then -- %f[set]
            i = i + 2
            if byte(p, i) ~= P_LBRACKET then
                error("missing '[' after '%f' in pattern", 0)
            end
            local e = class_end(p, i, m)
            kind[n], cls[n], i = FRONTIER, sub(p, i, e - 1), e
        elseif b == P_PERCENT and i < m and byte(p, i + 1) >= 48 and byte(p, i + 1) <= 57 then
            kind[n], cls[n], i = BACKREF, byte(p, i + 1) - 48, i + 2
        else
            local e = class_end(p, i, m)
            kind[n], cls[n] = SINGLE, sub(p, i, e - 1)
            local q = QUANT[byte(p, e) or 0]
            if q then
                quant[n], e = q, e + 1
            end
            i = e
        end
    end
    c = { kind = kind, cls = cls, a2 = a2, quant = quant, n = n }
    if parsed_count >= 64 then
        parsed, parsed_count, compiled = {}, 0, {}
    end
    parsed[p] = c
    parsed_count = parsed_count + 1
    return c
end

-- parse(p) with the byte sets of its classes (a1) for the matcher below
local function compile(p)
    local c = compiled[p]
    if c then
        return c
    end
    local it = parse(p)
    local a1 = {}
    for i = 1, it.n do
        local k = it.kind[i]
        if k == SINGLE or k == FRONTIER then
            a1[i] = class_set(it.cls[i])
        elseif k == BALANCE or k == BACKREF then
            a1[i] = it.cls[i]
        end
    end
    c = { kind = it.kind, a1 = a1, a2 = it.a2, quant = it.quant, n = it.n }
    compiled[p] = c
    return c
end

-- One match attempt's state; a new one per call of find/match/gmatch/gsub.
local function matcher(s, items)
    local N = #s
    local kind, a1, a2, quant, NI = items.kind, items.a1, items.a2, items.quant, items.n
    local ms = { level = 0, init = {}, len = {}, depth = 0 }
    local cap_init, cap_len = ms.init, ms.len
    local match

    local function check_capture(l)
        l = l - 1
        if l < 0 or l >= ms.level or cap_len[l + 1] == CAP_UNFINISHED then
            error("invalid capture index", 0)
        end
        return l + 1
    end

    local function max_expand(si, pi, set)
        local i = 0
        while si + i <= N and set[byte(s, si + i)] do
            i = i + 1
        end
        while i >= 0 do
            local r = match(si + i, pi + 1)
            if r then
                return r
            end
            i = i - 1
        end
        return nil
    end

    local function min_expand(si, pi, set)
        while true do
            local r = match(si, pi + 1)
            if r then
                return r
            elseif si <= N and set[byte(s, si)] then
                si = si + 1
            else
                return nil
            end
        end
    end

    local function start_capture(si, pi, what)
        local level = ms.level
        if level >= MAX_CAPTURES then
            error("too many captures", 0)
        end
        cap_init[level + 1], cap_len[level + 1] = si, what
        ms.level = level + 1
        local r = match(si, pi)
        if r == nil then
            ms.level = ms.level - 1
        end
        return r
    end

    local function end_capture(si, pi)
        local l
        for i = ms.level, 1, -1 do
            if cap_len[i] == CAP_UNFINISHED then
                l = i
                break
            end
        end
        if l == nil then
            error("invalid pattern capture", 0)
        end
        cap_len[l] = si - cap_init[l]
        local r = match(si, pi)
        if r == nil then
            cap_len[l] = CAP_UNFINISHED
        end
        return r
    end

    local function balance(si, b, e)
        if si > N or byte(s, si) ~= b then
            return nil
        end
        local cont = 1
        si = si + 1
        while si <= N do
            local c = byte(s, si)
            if c == e then
                cont = cont - 1
                if cont == 0 then
                    return si + 1
                end
            elseif c == b then
                cont = cont + 1
            end
            si = si + 1
        end
        return nil
    end

    -- the end (exclusive) of a match of items pi.. at si, or nil
    local function do_match(si, pi)
        while true do
            if pi > NI then
                return si
            end
            local k = kind[pi]
            if k == SINGLE then
                local set, q = a1[pi], quant[pi]
                local m = si <= N and set[byte(s, si)]
                if q == nil then
                    if not m then
                        return nil
                    end
                    si, pi = si + 1, pi + 1
                elseif q == "?" then
                    if m then
                        local r = match(si + 1, pi + 1)
                        if r then
                            return r
                        end
                    end
                    pi = pi + 1
                elseif q == "*" then
                    return max_expand(si, pi, set)
                elseif q == "+" then
                    if not m then
                        return nil
                    end
                    return max_expand(si + 1, pi, set)
                else
                    return min_expand(si, pi, set)
                end
            elseif k == OPEN then
                return start_capture(si, pi + 1, CAP_UNFINISHED)
            elseif k == POSITION then
                return start_capture(si, pi + 1, CAP_POSITION)
            elseif k == CLOSE then
                return end_capture(si, pi + 1)
            elseif k == END then
                return si == N + 1 and si or nil
            elseif k == BALANCE then
                si = balance(si, a1[pi], a2[pi])
                if si == nil then
                    return nil
                end
                pi = pi + 1
            elseif k == FRONTIER then
                local set = a1[pi]
                local prev = si == 1 and 0 or byte(s, si - 1)
                local cur = si <= N and byte(s, si) or 0
                if set[prev] or not set[cur] then
                    return nil
                end
                pi = pi + 1
            else -- BACKREF
                local l = check_capture(a1[pi])
                local len = cap_len[l]
                -- a position capture's length reads as huge in C: no match
                if len ~= CAP_POSITION and N - si + 1 >= len and sub(s, si, si + len - 1)
                    == sub(s, cap_init[l], cap_init[l] + len - 1) then
                    si, pi = si + len, pi + 1
                else
                    return nil
                end
            end
        end
    end

    match = function(si, pi)
        local d = ms.depth + 1
        if d > MAX_DEPTH then
            error("pattern too complex", 0)
        end
        ms.depth = d
        local r = do_match(si, pi)
        ms.depth = d - 1
        return r
    end

    -- capture i (1-based) of the last match from si to e (exclusive)
    function ms.capture(i, si, e)
        if i > ms.level then
            if i == 1 then
                return sub(s, si, e - 1)
            end
            error("invalid capture index", 0)
        end
        local l = cap_len[i]
        if l == CAP_UNFINISHED then
            error("unfinished capture", 0)
        elseif l == CAP_POSITION then
            return cap_init[i]
        end
        return sub(s, cap_init[i], cap_init[i] + l - 1)
    end

    -- all captures (or the whole match when there are none, and whole is true)
    function ms.captures(si, e, whole)
        local n = (ms.level == 0 and whole) and 1 or ms.level
        local out = {}
        for i = 1, n do
            out[i] = ms.capture(i, si, e)
        end
        return out, n
    end

    function ms.try(si)
        ms.level, ms.depth = 0, 0
        return match(si, 1)
    end

    return ms
end

local unpack = unpack

local function check_str(v, n, fname)
    local t = type(v)
    if t == "string" then
        return v
    elseif t == "number" then
        return tostring(v)
    end
    error(("bad argument #%d to '%s' (string expected, got %s)"):format(n, fname,
        v == nil and "no value" or t), 3)
end

local function check_int(v, n, fname, default)
    if v == nil then
        return default
    end
    local x = tonumber(v)
    if x == nil then
        error(("bad argument #%d to '%s' (number expected, got %s)"):format(n, fname, type(v)), 3)
    end
    return x >= 0 and floor(x) or -floor(-x)
end

-- the pattern as the C matcher reads it: cut at the first NUL
local function cut(p)
    local z = plainfind(p, "\0", 1)
    return z and sub(p, 1, z - 1) or p
end

local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"

-- the longest run of bytes of class cls in s
local function max_run(s, cls, n)
    if cls == "." then
        return n
    end
    local best = 0
    for b, e in c_gmatch(s, "()" .. cls .. "+()") do
        if e - b > best then
            best = e - b
        end
    end
    return best
end

-- A bound on the steps of the C matcher for pattern pz on s (n bytes): every start position
-- (one when anchored), times, for each repeated class, one more than its longest run in s
-- (two for "?"), times n + 1 for each %b and back-reference, times the pattern's length.
local function estimate(s, n, pz, anchored)
    local it = parse(anchored and sub(pz, 2) or pz)
    local est = (anchored and 1 or n + 1) * (#pz + 1)
    for i = 1, it.n do
        local k, q = it.kind[i], it.quant[i]
        if k == BALANCE or k == BACKREF then
            est = est * (n + 1)
        elseif q == "?" then
            est = est * 2
        elseif q then
            est = est * (max_run(s, it.cls[i], n) + 1)
        end
        if est > LIMIT then
            return est
        end
    end
    return est
end

-- Run in C when the bound is small, charging it to the budget; else nil (use the matcher).
local function in_c(s, n, pz, anchored)
    local est = estimate(s, n, pz, anchored)
    if est > LIMIT then
        return false
    end
    charge(est)
    return true
end

local function posrelat(init, len)
    if init < 0 then
        init = init + len + 1
    end
    return init >= 0 and init or 0
end

local function find_aux(is_find, s, p, init, plain)
    local fname = is_find and "find" or "match"
    s = check_str(s, 1, fname)
    p = check_str(p, 2, fname)
    local N = #s
    init = posrelat(check_int(init, 3, fname, 1), N) - 1
    if init < 0 then
        init = 0
    elseif init > N then
        init = N
    end
    local pz = cut(p)
    if is_find and (plain or not c_find(pz, SPECIALS)) then
        local b, e = plainfind(s, p, init + 1)
        if b then
            return b, e
        end
        return nil
    end
    local anchored = byte(pz, 1) == P_CARET
    if in_c(s, N, pz, anchored) then
        if is_find then
            return c_find(s, p, init + 1)
        end
        return c_match(s, p, init + 1)
    end
    if anchored then
        pz = sub(pz, 2)
    end
    local ms = matcher(s, compile(pz))
    local si = init + 1
    repeat
        local e = ms.try(si)
        if e then
            if is_find then
                local caps, n = ms.captures(si, e, false)
                return si, e - 1, unpack(caps, 1, n)
            end
            local caps, n = ms.captures(si, e, true)
            return unpack(caps, 1, n)
        end
        si = si + 1
    until si > N + 1 or anchored
    return nil
end

local function find(s, p, init, plain)
    return find_aux(true, s, p, init, plain)
end

local function match(s, p, init)
    return find_aux(false, s, p, init)
end

local function gmatch(s, p)
    s = check_str(s, 1, "gmatch")
    p = check_str(p, 2, "gmatch")
    local pz = cut(p)
    if in_c(s, #s, pz, false) then
        return c_gmatch(s, p)
    end
    local ms = matcher(s, compile(pz))
    local N, pos = #s, 1
    return function()
        while pos <= N + 1 do
            local si = pos
            local e = ms.try(si)
            if e then
                pos = e == si and e + 1 or e
                local caps, n = ms.captures(si, e, true)
                return unpack(caps, 1, n)
            end
            pos = pos + 1
        end
        return nil
    end
end

local function add_value(ms, out, s, si, e, repl, rt)
    local v
    if rt == "string" then
        local parts, i, rn = {}, 1, #repl
        while i <= rn do
            local b = byte(repl, i)
            if b ~= P_PERCENT then
                local j = plainfind(repl, "%", i) or rn + 1
                parts[#parts + 1] = sub(repl, i, j - 1)
                i = j
            else
                i = i + 1
                local d = byte(repl, i)
                if d == nil then
                    i = i + 1
                elseif d < 48 or d > 57 then
                    parts[#parts + 1] = char(d)
                    i = i + 1
                elseif d == 48 then
                    parts[#parts + 1] = sub(s, si, e - 1)
                    i = i + 1
                else
                    parts[#parts + 1] = tostring(ms.capture(d - 48, si, e))
                    i = i + 1
                end
            end
        end
        out[#out + 1] = table_concat(parts)
        return
    elseif rt == "function" then
        local caps, n = ms.captures(si, e, true)
        v = repl(unpack(caps, 1, n))
    else
        v = repl[ms.capture(1, si, e)]
    end
    if not v then
        out[#out + 1] = sub(s, si, e - 1)
    elseif type(v) == "string" or type(v) == "number" then
        out[#out + 1] = v
    else
        error("invalid replacement value (a " .. type(v) .. ")", 0)
    end
end

local function gsub(s, p, repl, max_n)
    s = check_str(s, 1, "gsub")
    p = check_str(p, 2, "gsub")
    local rt = type(repl)
    if rt == "number" then
        repl, rt = tostring(repl), "string"
    elseif rt ~= "string" and rt ~= "function" and rt ~= "table" then
        error("bad argument #3 to 'gsub' (string/function/table expected, got "
            .. (repl == nil and "no value" or rt) .. ")", 2)
    end
    local N = #s
    max_n = check_int(max_n, 4, "gsub", N + 1)
    local pz = cut(p)
    local anchored = byte(pz, 1) == P_CARET
    if in_c(s, N, pz, anchored) then
        if rt == "string" then
            return c_gsub(s, p, repl, max_n)
        end
        return nested(c_gsub, s, p, repl, max_n)
    end
    if anchored then
        pz = sub(pz, 2)
    end
    local ms = matcher(s, compile(pz))
    local out, n, si = {}, 0, 1
    while n < max_n do
        local e = ms.try(si)
        if e then
            n = n + 1
            add_value(ms, out, s, si, e, repl, rt)
        end
        if e and e > si then
            si = e
        elseif si <= N then
            out[#out + 1] = sub(s, si, si)
            si = si + 1
        else
            break
        end
        if anchored then
            break
        end
    end
    out[#out + 1] = sub(s, si)
    return table_concat(out), n
end


-- ---- the environment ---------------------------------------------------------------------

local function copy(t, names)
    local out = {}
    for _, k in ipairs(names) do
        out[k] = t[k]
    end
    return out
end

local env = copy(_G, { "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget",
                       "rawset", "rawlen", "select", "setmetatable", "getmetatable", "tonumber",
                       "tostring", "type", "unpack" })
env._VERSION = "Lua 5.1"

function env.pcall(f, ...)
    return pass(pcall(f, ...))
end

-- The handler runs once the error has unwound, under the budget: inside the real xpcall it
-- would run within the hook that raised the budget error, where hooks do not fire. (Mods have
-- no debug library, so the stack it misses is nothing they could look at.)
local function after_xpcall(handler, ok, ...)
    pass()
    if ok then
        return true, ...
    end
    local _, v = pcall(handler, (...))
    return pass(false, v)
end

function env.xpcall(f, handler, ...)
    return after_xpcall(handler, pcall(f, ...))
end

env.string = copy(string, { "byte", "char", "format", "len", "lower", "rep", "reverse", "sub",
                            "upper" })
env.string.find, env.string.match, env.string.gmatch, env.string.gsub = find, match, gmatch, gsub

env.table = copy(table, { "concat", "maxn", "remove" })

-- LuaJIT shifts from the end down to the position, in C: table.insert(t, -2^30, v) would run
-- for seconds. A position outside 1..#t+1 is refused, as Lua 5.2 does.
function env.table.insert(t, ...)
    if select("#", ...) == 2 and type(t) == "table" then
        local pos = tonumber((...))
        if pos and (pos < 1 or pos > #t + 1) then
            error("bad argument #2 to 'insert' (position out of bounds)", 2)
        end
    end
    return table_insert(t, ...)
end
function env.table.sort(t, cmp)
    return nested(table_sort, t, cmp or lt)
end

env.math = copy(math, { "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "cosh", "deg",
                        "exp", "floor", "fmod", "frexp", "huge", "ldexp", "log", "log10", "max",
                        "min", "modf", "pi", "pow", "rad", "random", "randomseed", "sin",
                        "sinh", "sqrt", "tan", "tanh" })

env.coroutine = copy(coroutine, { "create", "running", "status", "yield", "isyieldable" })
function env.coroutine.resume(co, ...)
    return nested(co_resume, co, ...)
end

function env.coroutine.wrap(f)
    local resume = co_wrap(f)
    return function(...)
        return nested(resume, ...)
    end
end

env.events = copy(host.events, { "on", "emit" })
env.game = copy(host.game, { "send", "log", "now", "null" })


-- The host calls reset() after a strike, once the mod's call has unwound: the budget error may
-- have been raised anywhere in the wrappers above, between a `nest + 1` and its `nest - 1`.
local function reset()
    nest = 0
end


return env, reset
