-- luacheck configuration: no globals anywhere; busted's only under spec/.
std = "luajit"
globals = {}
max_line_length = 100
codes = true

files["spec"] = { std = "+busted", max_line_length = 120 }
files["config.lua"] = { std = "min" }

-- Mods run in a sandbox (core/mods_sandbox.lua, docs/modding.md): these names and no others.
stds.mod = {
    read_globals = {
        "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawset",
        "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type", "unpack",
        "xpcall", "_VERSION",
        string = { fields = { "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower",
                              "match", "rep", "reverse", "sub", "upper" } },
        table = { fields = { "concat", "insert", "maxn", "remove", "sort" } },
        math = { fields = { "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "cosh", "deg",
                            "exp", "floor", "fmod", "frexp", "huge", "ldexp", "log", "log10",
                            "max", "min", "modf", "pi", "pow", "rad", "random", "randomseed",
                            "sin", "sinh", "sqrt", "tan", "tanh" } },
        coroutine = { fields = { "create", "resume", "running", "status", "wrap", "yield" } },
        events = { fields = { "on", "emit" } },
        game = { fields = { "send", "log", "now", "null" } },
    },
}
files["scripts/mods"] = { std = "mod" }
-- A mod's manifest is data, evaluated with no globals at all (docs/modding.md).
stds.manifest = { read_globals = {} }
files["scripts/mods/*/manifest.lua"] = { std = "manifest" }
