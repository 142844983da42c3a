-- luacheck configuration: no globals anywhere; busted's only under spec/.
std = "luajit"
globals = {}
max_line_length = 100
codes = true

files["spec"] = { std = "+busted" }
files["config.lua"] = { std = "min" }
