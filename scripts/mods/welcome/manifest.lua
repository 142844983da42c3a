-- The manifest of the welcome mod (docs/modding.md): data only, read before init.lua runs.
return {
    name = "welcome",
    version = "1.0.0",
    api = 1,
    handles = { "player.level_up" },
    emits = { "welcome.milestone" },
}
