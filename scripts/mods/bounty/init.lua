-- mods/bounty: a price on the head of a player who kills too many. Three kills in a row put a
-- bounty of 100 gold on the killer; whoever kills them next collects it. The example mod of
-- docs/modding.md: it keeps its own state (in its sandbox), tells players through game.send,
-- and asks the game to pay with an event (bounty.paid), which the game checks before it grants
-- anything (scripts/handlers/mod_events.lua).
--
-- Listens to: player.killed {killer_id, victim_id, kill}
-- Emits:      bounty.placed {player_id, reward}
--             bounty.paid {player_id, victim_id, item, qty, kill}
-- Sends:      {t = "mod", mod = "bounty", data = {text, ...}} to the players concerned
local STREAK = 3   -- kills without dying that put a bounty on a player
local REWARD = 100 -- gold

local streak = {} -- player id -> kills since they last died
local bounty = {} -- player id -> the reward on their head


events.on("player.killed", function(e)
    local killer, victim = e.killer_id, e.victim_id
    if type(killer) ~= "number" or type(victim) ~= "number" or killer == victim then
        game.log("warn", "player.killed without two players")
        return
    end
    streak[victim] = nil
    local reward = bounty[victim]
    if reward then
        bounty[victim] = nil
        events.emit("bounty.paid", { player_id = killer, victim_id = victim, item = "gold",
                                     qty = reward, kill = e.kill })
        game.send(killer, { text = ("Bounty collected: %d gold."):format(reward), qty = reward })
        game.send(victim, { text = "Your bounty was collected." })
    end
    local n = (streak[killer] or 0) + 1
    streak[killer] = n
    if n >= STREAK and not bounty[killer] then
        bounty[killer] = REWARD
        events.emit("bounty.placed", { player_id = killer, reward = REWARD })
        game.send(killer, { text = ("There is a price on your head: %d gold."):format(REWARD),
                            reward = REWARD })
    end
end)
