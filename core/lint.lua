-- core/lint.lua: the module-state lint of `mmo check` (built into the binary; no I/O).
--
--   local lint = dofile "core/lint.lua"      -- core/check.c loads the copy built in
--   local list, err = lint.check(source, "scripts/lib/x.lua")
--   -- list: { {line=, col=, code=, message=}, ... } in source order; nil, err when the source
--   -- does not parse ("name:line: message")
--
-- A reload loads every module under scripts/ anew, so whatever a module keeps in a local of
-- its main chunk is reset. State that must outlive a reload lives in mmo.state. This lint finds
-- code inside a function (at any depth) that
--   module-assign   assigns to a local of the main chunk (`count = count + 1`);
--   module-mutate   changes a table such a local holds: `x[k] = v`, `x.f = v`, `x.a.b = v`,
--                   `function x.f() end`, table.insert/remove/sort/clear or rawset with it
--                   (or a table reached from it by indexing) as the first argument, also
--                   through a local alias (`local insert = table.insert`).
-- A local of the main chunk is one declared outside any function, in a nested block too.
-- The main chunk itself runs once per load and may do all of that. So may a function that only
-- ever runs while it runs: one called where it is written (`local t = (function() ... end)()`),
-- or a local function that is only ever called, by the main chunk or by such functions (never
-- stored, passed, returned or called from a function that may run later).
-- A line holding the comment `lint: allow-module-state` is exempt.
-- Not seen (it reads one file, without types): a table changed through another name
-- (`local t = cache; t.x = 1`), through a method (`cache:set(k, v)`) or by another module.
--
-- Lua 5.1 as LuaJIT 2.1 reads it: goto and labels, LL/ULL/i number suffixes, \x \z escapes.

local byte = string.byte
local find = string.find
local sub = string.sub
local format = string.format
local error = error
local pcall = pcall
local type = type
local table_sort = table.sort


local _M = {}

_M.ALLOW = "lint: allow-module-state"

local HINT = "a reload resets it; keep it in mmo.state (docs/scripting.md)"

local KEYWORDS = {}
for w in ("and break do else elseif end false for function goto if in local nil not or " ..
          "repeat return then true until while"):gmatch("%a+") do
    KEYWORDS[w] = true
end

local OPS3 = { ["..."] = true }
local OPS2 = { ["=="] = true, ["~="] = true, ["<="] = true, [">="] = true, [".."] = true,
               ["::"] = true }
local OPS1 = {}
for c in ("+-*/%^#<>=(){}[];:,."):gmatch(".") do
    OPS1[c] = true
end

local BINOPS = { ["+"] = true, ["-"] = true, ["*"] = true, ["/"] = true, ["%"] = true,
                 ["^"] = true, [".."] = true, ["=="] = true, ["~="] = true, ["<"] = true,
                 ["<="] = true, [">"] = true, [">="] = true, ["and"] = true, ["or"] = true }
local UNOPS = { ["not"] = true, ["-"] = true, ["#"] = true }

-- the functions that change the table given as their first argument
local TABLE_MUTATORS = { insert = true, remove = true, sort = true, clear = true }

local B_NL, B_CR, B_BSL, B_DASH, B_LBR = 10, 13, 92, 45, 91


-- ---- tokens ---------------------------------------------------------------------------------

-- A syntax error: raised as a table so check() can tell it from a bug of this file.
local function fail(line, msg)
    error({ line = line, msg = msg }, 0)
end


-- src -> tokens { {k = kind, v = text, line =, col =}, ... } (kind: name, keyword, string,
-- number, op, eof; a string's v is its source text, quotes included, except for short strings
-- without escapes, whose v is their value) and the set of lines with the opt-out comment.
local function tokenize(src)
    local toks, allow = {}, {}
    local n = #src
    local i, line, line_start = 1, 1, 1

    -- Count the line ends in src[from, to] (\n, \r, \r\n and \n\r each one).
    local function lines_in(from, to)
        local j = from
        while true do
            local s = find(src, "[\r\n]", j)
            if not s or s > to then
                return
            end
            local c, d = byte(src, s), byte(src, s + 1)
            if s + 1 <= to and (d == B_NL or d == B_CR) and d ~= c then
                s = s + 1
            end
            line = line + 1
            line_start = s + 1
            j = s + 1
        end
    end

    -- The end of the long bracket opening at i (`[`, `=`*, `[`), or nil when there is none.
    local function long_close(at)
        local s, e, eq = find(src, "^%[(=*)%[", at)
        if not s then
            return nil
        end
        local cs, ce = find(src, "]" .. eq .. "]", e + 1, true)
        if not cs then
            fail(line, "unfinished long " .. "string or comment")
        end
        return ce
    end

    if byte(src, 1) == 35 then -- "#": a first line for the shell, as luaL_loadfile skips it
        i = (find(src, "\n", 1, true) or n) + 1
        line, line_start = 2, i
    end

    while true do
        local s, e = find(src, "^[ \t\f\v]+", i)
        if s then
            i = e + 1
        end
        if i > n then
            break
        end
        local c = byte(src, i)
        local col = i - line_start + 1
        if c == B_NL or c == B_CR then
            lines_in(i, i + 1 <= n and i + 1 or i)
            i = line_start
        elseif c == B_DASH and byte(src, i + 1) == B_DASH then
            local first = line
            local stop = long_close(i + 2)
            local text
            if stop then
                text = sub(src, i, stop)
                lines_in(i, stop)
                i = stop + 1
            else
                local nl = find(src, "[\r\n]", i) or n + 1
                text = sub(src, i, nl - 1)
                i = nl
            end
            if find(text, _M.ALLOW, 1, true) then
                allow[first], allow[line] = true, true -- a long comment: where it starts and ends
            end
        else
            local tok = { line = line, col = col }
            toks[#toks + 1] = tok
            local ns, ne = find(src, "^[%a_][%w_]*", i)
            if ns then
                local w = sub(src, ns, ne)
                tok.k, tok.v = KEYWORDS[w] and "keyword" or "name", w
                i = ne + 1
            elseif find(src, "^%.?%d", i) then
                -- LuaJIT's numeral: identifier characters, dots, and a sign after an exponent
                local j, hex = i, find(src, "^0[xX]", i) ~= nil
                while j <= n do
                    local d = sub(src, j, j)
                    if find(d, "^[%w_.]") then
                        j = j + 1
                    elseif (d == "+" or d == "-") and
                        find(sub(src, j - 1, j - 1), hex and "^[pP]" or "^[eE]") then
                        j = j + 1
                    else
                        break
                    end
                end
                tok.k, tok.v = "number", sub(src, i, j - 1)
                i = j
            elseif c == 34 or c == 39 then -- " or '
                local j, escaped = i + 1, false
                while true do
                    local q = find(src, c == 34 and '["\\\r\n]' or "['\\\r\n]", j)
                    if not q or byte(src, q) == B_NL or byte(src, q) == B_CR then
                        fail(tok.line, "unfinished string")
                    end
                    if byte(src, q) == B_BSL then
                        escaped = true
                        local d = byte(src, q + 1)
                        if d == B_NL or d == B_CR then
                            lines_in(q + 1, q + 2)
                            j = line_start
                        elseif d == 122 then -- \z skips the white space after it, lines too
                            local _, ze = find(src, "^%s*", q + 2)
                            lines_in(q + 2, ze)
                            j = ze + 1
                        else
                            j = q + 2
                        end
                    else
                        j = q + 1
                        break
                    end
                end
                tok.k = "string"
                tok.v = escaped and sub(src, i, j - 1) or sub(src, i + 1, j - 2)
                i = j
            elseif c == B_LBR and find(src, "^%[=*%[", i) then
                local stop = long_close(i)
                tok.k, tok.v = "string", sub(src, i, stop)
                lines_in(i, stop)
                i = stop + 1
            else
                local op = sub(src, i, i + 2)
                if not OPS3[op] then
                    op = sub(src, i, i + 1)
                    if not OPS2[op] then
                        op = sub(src, i, i)
                        if not OPS1[op] then
                            fail(line, format("unexpected symbol near '%s'", op))
                        end
                    end
                end
                tok.k, tok.v = "op", op
                i = i + #op
            end
        end
    end
    toks[#toks + 1] = { k = "eof", v = "<eof>", line = line, col = n - line_start + 2 }
    return toks, allow
end


-- ---- scopes and the walk --------------------------------------------------------------------

-- Functions are records { parent =, escaped =, callers = { [record] = true }, found = {} }:
-- escaped when its value goes anywhere but a call (stored, passed, returned, indexed), callers
-- the functions whose own code calls it by a local's name. A function runs only while the
-- main chunk runs (load time) when it has not escaped and all its callers run at load time
-- only; what such a function changes is not module state.
local function load_time(funcs, main)
    local lt = { [main] = true }
    for _, f in ipairs(funcs) do
        lt[f] = not f.escaped
    end
    local changed = true
    while changed do
        changed = false
        for _, f in ipairs(funcs) do
            if lt[f] then
                for c in pairs(f.callers) do
                    if not lt[c] then
                        lt[f] = false
                        changed = true
                        break
                    end
                end
            end
        end
    end
    return lt
end


-- Parse src and return its warnings (see the top of this file).
local function analyse(src)
    local toks, allow = tokenize(src)
    local p = 1
    local tok = toks[1]
    local main = { callers = {}, found = {} }
    local fn = main     -- the function whose body is being read
    local funcs = {}    -- every function record but main's
    local scope = nil   -- innermost block: { up = outer, vars = { name -> var } }

    local function advance()
        p = p + 1
        tok = toks[p]
    end

    local function is(v)
        return tok.v == v and (tok.k == "op" or tok.k == "keyword")
    end

    local function accept(v)
        if is(v) then
            advance()
            return true
        end
        return false
    end

    local function expect(v, what)
        if not is(v) then
            fail(tok.line, format("'%s' expected%s near '%s'", v, what or "", tok.v))
        end
        advance()
    end

    local function name()
        if tok.k ~= "name" then
            fail(tok.line, format("<name> expected near '%s'", tok.v))
        end
        local t = tok
        advance()
        return t
    end

    local function starts_args()
        return is("(") or is("{") or tok.k == "string"
    end

    local function open()
        scope = { up = scope, vars = {} }
    end

    local function close()
        scope = scope.up
    end

    -- var: { name =, fn = the function declaring it, func = the function record it was
    -- bound to by `local function` / `local f = function`, mutator = "table.insert" ... }
    local function declare(t)
        local var = { name = t.v, fn = fn }
        scope.vars[t.v] = var
        return var
    end

    local function resolve(n)
        local s = scope
        while s do
            local v = s.vars[n]
            if v then
                return v
            end
            s = s.up
        end
        return nil
    end

    -- A finding at token t about var, kept on the function being read until the end.
    local function report(var, t, code)
        if allow[t.line] then
            return
        end
        local what = code == "module-assign" and "is assigned" or "is changed"
        fn.found[#fn.found + 1] = {
            line = t.line, col = t.col, code = code,
            message = format("module-level '%s' %s inside a function: %s", var.name, what, HINT),
        }
    end

    -- (a table from the state store, mmo.state, outlives a reload: changing it is the point)
    local function module_level(var)
        return fn ~= main and var and var.fn == main and not var.stored
    end

    -- A target of an assignment, or the name of a function statement.
    local function target(d)
        if d.call or not module_level(d.var) then
            return
        end
        report(d.var, d.tok, d.index and "module-mutate" or "module-assign")
    end

    local expr, block, funcbody

    -- The arguments of a call; returns the descriptor of the first one.
    local function args()
        if tok.k == "string" then
            local d = { str = tok.v }
            advance()
            return d
        elseif is("{") then
            expr()
            return nil
        end
        local line = tok.line
        expect("(")
        local first
        if not is(")") then
            first = expr()
            while accept(",") do
                expr()
            end
        end
        if not is(")") then
            fail(tok.line, format("')' expected (to close '(' at line %d) near '%s'", line,
                                  tok.v))
        end
        advance()
        return first
    end

    -- What a callee is when it changes its first argument: "table.insert", "rawset", ...
    local function mutator_of(d)
        if d.call or d.paren then
            return nil
        end
        if d.var then
            return not d.index and d.var.mutator or nil
        end
        if d.global == "rawset" and not d.index then
            return "rawset"
        end
        if d.global == "table" and d.path and #d.path == 1 and TABLE_MUTATORS[d.path[1]] then
            return "table." .. d.path[1]
        end
        return nil
    end

    -- primaryexp { '.' Name | '[' exp ']' | ':' Name args | args }. Returns a descriptor:
    -- var (the local at its root) or global (the global's name), tok (the root's token),
    -- index (indexed), path (the names indexed with, while all are names), call (a call in
    -- the chain), last_call (it ends with a call), paren (a parenthesized root), func (the
    -- function record of a function expression), req (the argument of a call to require).
    local function suffixedexp()
        local d
        if tok.k == "name" then
            local var = resolve(tok.v)
            d = { var = var, global = not var and tok.v or nil, tok = tok }
            advance()
            if var and var.func then
                if starts_args() then
                    var.func.callers[fn] = true
                else
                    var.func.escaped = true
                end
            end
        elseif is("(") then
            local line = tok.line
            advance()
            local inner = expr()
            if not is(")") then
                fail(tok.line, format("')' expected (to close '(' at line %d) near '%s'", line,
                                      tok.v))
            end
            advance()
            d = { paren = true, func = inner and inner.func }
        else
            fail(tok.line, format("unexpected symbol near '%s'", tok.v))
        end
        while true do
            if is(".") then
                advance()
                local n = name()
                d.last_call = false
                if d.path then
                    d.path[#d.path + 1] = n.v
                elseif not d.index then
                    d.path = { n.v }
                end
                d.index = true
            elseif is("[") then
                advance()
                expr()
                expect("]")
                d.index, d.path, d.last_call = true, nil, false
            elseif is(":") then
                advance()
                name()
                args()
                d = { call = true, last_call = true }
            elseif starts_args() then
                if d.func and not d.index then
                    -- (function() ... end)(): runs here and now
                    d.func.escaped = false
                    d.func.callers[fn] = true
                end
                local m = mutator_of(d)
                local req = d.global == "require" and not d.index
                local store = ((d.var and d.var.state_module) or d.req == "mmo.state") and
                    d.path and #d.path == 1 and (d.path[1] == "global" or d.path[1] == "regional")
                local first = args()
                if m and first and not first.call and not first.paren and
                    module_level(first.var) then
                    report(first.var, first.tok, "module-mutate")
                end
                d = { call = true, last_call = true, req = req and first and first.str or nil,
                      stored = store or nil }
            else
                return d
            end
        end
    end

    local function table_constructor()
        expect("{")
        while not is("}") do
            if is("[") then
                advance()
                expr()
                expect("]")
                expect("=")
                expr()
            elseif tok.k == "name" and toks[p + 1].v == "=" and toks[p + 1].k == "op" then
                advance()
                advance()
                expr()
            else
                expr()
            end
            if not accept(",") and not accept(";") then
                break
            end
        end
        expect("}")
    end

    local function simpleexp()
        local k, v = tok.k, tok.v
        if k == "number" or k == "string" then
            advance()
            return k == "string" and { str = v } or nil
        elseif k == "keyword" and (v == "nil" or v == "true" or v == "false") then
            advance()
            return nil
        elseif is("...") then
            advance()
            return nil
        elseif is("function") then
            advance()
            return { func = funcbody(false) }
        elseif is("{") then
            table_constructor()
            return nil
        end
        return suffixedexp()
    end

    local function op(set)
        return set[tok.v] and (tok.k == "op" or tok.k == "keyword")
    end

    -- Any expression; returns the descriptor of its only operand when it has no operator.
    function expr()
        local single = true
        while op(UNOPS) do
            advance()
            single = false
        end
        local d = simpleexp()
        while op(BINOPS) do
            advance()
            single = false
            while op(UNOPS) do
                advance()
            end
            simpleexp()
        end
        return single and d or nil
    end

    local function explist()
        local list = { expr() or false }
        while accept(",") do
            list[#list + 1] = expr() or false
        end
        return list
    end

    -- ( [parlist] ) block end, after `function`; returns the function's record, escaped until
    -- its caller says otherwise.
    function funcbody(method)
        local f = { parent = fn, escaped = true, callers = {}, found = {} }
        funcs[#funcs + 1] = f
        fn = f
        open()
        if method then
            declare({ v = "self" })
        end
        local line = tok.line
        expect("(")
        if not is(")") then
            repeat
                if is("...") then
                    advance()
                    break
                end
                declare(name())
            until not accept(",")
        end
        expect(")")
        block()
        if not is("end") then
            fail(tok.line, format("'end' expected (to close 'function' at line %d) near '%s'",
                                  line, tok.v))
        end
        advance()
        close()
        fn = f.parent
        return f
    end

    local function block_follow()
        return tok.k == "eof" or (tok.k == "keyword" and (tok.v == "end" or tok.v == "else" or
               tok.v == "elseif" or tok.v == "until"))
    end

    local statement

    -- statements up to a block's end, in the current scope
    local function statements()
        while not block_follow() do
            if is("return") then
                advance()
                if not block_follow() and not is(";") then
                    explist()
                end
                accept(";")
                break
            end
            statement()
        end
    end

    function block()
        open()
        statements()
        close()
    end

    local function expect_end(what, line)
        if not is("end") then
            fail(tok.line, format("'end' expected (to close '%s' at line %d) near '%s'", what,
                                  line, tok.v))
        end
        advance()
    end

    local function local_statement()
        if accept("function") then
            local var = declare(name()) -- in scope for its own body: it may recurse
            local f = funcbody(false)
            f.escaped = false
            var.func = f
            return
        end
        local names = {}
        repeat
            names[#names + 1] = name()
        until not accept(",")
        local values = {}
        if accept("=") then
            values = explist()
        end
        for i, t in ipairs(names) do
            local var = declare(t)
            local d = values[i]
            if d then
                if d.func and not d.call and not d.index then
                    d.func.escaped = false -- local f = function ... end: as a local function
                    var.func = d.func
                elseif d.req == "table.clear" then
                    var.mutator = "table.clear"
                elseif d.req == "mmo.state" and not d.index then
                    var.state_module = true -- local state = require "mmo.state"
                elseif d.stored or (d.var and d.var.stored and d.index and not d.call) then
                    var.stored = true -- state.global(...), or a table inside one
                else
                    var.mutator = mutator_of(d)
                end
            end
        end
    end

    function statement()
        local line = tok.line
        if tok.k == "keyword" then
            local v = tok.v
            if v == "if" then
                advance()
                expr()
                expect("then")
                block()
                while accept("elseif") do
                    expr()
                    expect("then")
                    block()
                end
                if accept("else") then
                    block()
                end
                expect_end("if", line)
                return
            elseif v == "while" then
                advance()
                expr()
                expect("do")
                block()
                expect_end("while", line)
                return
            elseif v == "do" then
                advance()
                block()
                expect_end("do", line)
                return
            elseif v == "for" then
                advance()
                local vars = { name() }
                if accept("=") then
                    expr()
                    expect(",")
                    expr()
                    if accept(",") then
                        expr()
                    end
                else
                    while accept(",") do
                        vars[#vars + 1] = name()
                    end
                    expect("in")
                    explist()
                end
                expect("do")
                open()
                for _, t in ipairs(vars) do
                    declare(t)
                end
                block()
                close()
                expect_end("for", line)
                return
            elseif v == "repeat" then
                advance()
                open() -- `until` sees the body's locals
                statements()
                expect("until", format(" (to close 'repeat' at line %d)", line))
                expr()
                close()
                return
            elseif v == "function" then
                advance()
                local root = name()
                local d = { var = resolve(root.v), tok = root }
                if d.var and d.var.func then
                    d.var.func.escaped = true -- replaced: we no longer follow it
                end
                local method = false
                while is(".") or is(":") do
                    method = is(":")
                    advance()
                    name()
                    d.index = true
                    if method then
                        break
                    end
                end
                target(d)
                funcbody(method) -- stays escaped: stored, it may run any time
                return
            elseif v == "local" then
                advance()
                local_statement()
                return
            elseif v == "return" then
                fail(line, "'return' must be the last statement of a block")
            elseif v == "break" then
                advance()
                return
            elseif v == "goto" then
                advance()
                name()
                return
            end
        elseif is("::") then
            advance()
            name()
            expect("::")
            return
        elseif is(";") then
            advance()
            return
        end
        -- an assignment or a call
        local d = suffixedexp()
        if is("=") or is(",") then
            local targets = { d }
            while accept(",") do
                targets[#targets + 1] = suffixedexp()
            end
            expect("=")
            explist()
            for _, t in ipairs(targets) do
                if t.last_call or (t.paren and not t.index) then
                    fail(line, "syntax error near '='")
                end
                target(t)
            end
        elseif not d.last_call then
            fail(line, "syntax error (a statement is an assignment or a call)")
        end
    end

    open()
    statements()
    if tok.k ~= "eof" then
        fail(tok.line, format("'<eof>' expected near '%s'", tok.v))
    end
    close()

    local lt = load_time(funcs, main)
    local warnings = {}
    for _, f in ipairs(funcs) do
        if not lt[f] then
            for _, w in ipairs(f.found) do
                warnings[#warnings + 1] = w
            end
        end
    end
    return warnings
end


-- Check one file's source. Returns its warnings, or nil and "name:line: message" when it does
-- not parse.
function _M.check(src, chunkname)
    if type(src) ~= "string" then
        error("bad argument #1 to 'check' (string expected)", 2)
    end
    chunkname = chunkname or "?"
    local ok, res = pcall(analyse, src)
    if not ok then
        if type(res) == "table" then
            return nil, format("%s:%d: %s", chunkname, res.line, res.msg)
        end
        error(res, 0)
    end
    table_sort(res, function(a, b)
        if a.line ~= b.line then
            return a.line < b.line
        end
        return a.col < b.col
    end)
    return res
end


return _M
