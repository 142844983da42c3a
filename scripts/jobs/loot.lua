-- jobs/loot.lua: loot picked up goes into the inventory (the item must be in the catalogue;
-- an unknown one fails the event, which ends among the dead letters).
local _M = {}


function _M.effect(e, ctx)
    if not ctx.catalogue[e.data.item] then
        error("loot: no such item " .. tostring(e.data.item), 0)
    end
    return { items = { [e.data.item] = e.data.qty } }
end


return _M
