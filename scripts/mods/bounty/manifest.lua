return {
    name = "bounty",
    version = "1.0.0",
    api = 1,
    handles = { "player.killed" },
    emits = { "bounty.placed", "bounty.paid" },
    order = 50,
}
