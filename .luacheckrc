-- luacheck configuration: no globals anywhere; busted's only under spec/.
std = "luajit"
globals = {}
max_line_length = 100
codes = true

files["spec"] = { std = "+busted", max_line_length = 120 }
files["config.lua"] = { std = "min" }
