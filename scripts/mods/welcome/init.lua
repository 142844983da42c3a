-- mods/welcome/init.lua: congratulates a player on each new level, with a word for the
-- milestones. An example mod (docs/modding.md): it runs in a sandbox of its own and knows the
-- game only through its events and `game.*`; manifest.lua declares what it handles and emits.
--
-- Handles: player.level_up {player_id, level}
-- Emits:   welcome.milestone {player_id, level} at the levels of MILESTONES
-- Sends:   {t = "mod", mod = "welcome", data = {text, level}} to the player
local MILESTONES = {
    [10] = "Your class skills are all open now.",
    [25] = "Guilds will be glad to have you.",
    [50] = "Few get this far.",
    [60] = "That is the top. Well played.",
}

local congratulated = 0 -- per node, since the mods were loaded


events.on("player.level_up", function(e)
    local level = tonumber(e.level)
    if type(e.player_id) ~= "number" or not level then
        game.log("warn", "player.level_up without player_id or level")
        return
    end
    local text = ("Level %d! Well done."):format(level)
    local milestone = MILESTONES[level]
    if milestone then
        text = text .. " " .. milestone
        events.emit("welcome.milestone", { player_id = e.player_id, level = level })
    end
    game.send(e.player_id, { text = text, level = level })
    congratulated = congratulated + 1
    if congratulated % 1000 == 0 then
        game.log("info", ("%d level-ups congratulated"):format(congratulated))
    end
end)
