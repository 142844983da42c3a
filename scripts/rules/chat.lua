-- rules/chat.lua: what may be said, and how. Pure: the caller passes the text and the clock.
local filter = require "data.chat_filter"

local ipairs = ipairs
local type = type


local _M = {}

_M.MAX_LEN = 200
_M.CHANNELS = { region = true, guild = true, global = true }
-- global chat: at most GLOBAL_PER_MINUTE messages per account per minute
_M.GLOBAL_PER_MINUTE = 5

local WORDS = {}
for _, w in ipairs(filter) do
    WORDS[w:lower()] = true
end


-- Clean a message: returns the text to send (filtered words masked), or nil, message.
function _M.clean(text)
    if type(text) ~= "string" then
        return nil, "text: must be a string"
    end
    -- control characters out, runs of spaces folded, ends trimmed
    text = text:gsub("[%z\1-\31\127]", " "):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    if #text == 0 then
        return nil, "text: empty"
    end
    if #text > _M.MAX_LEN then
        return nil, "text: at most " .. _M.MAX_LEN .. " bytes"
    end
    local masked = text:gsub("%w+", function(word)
        if WORDS[word:lower()] then
            return ("*"):rep(#word)
        end
    end)
    return masked
end


function _M.channel(name)
    if not _M.CHANNELS[name] then
        return nil, "channel: region, guild or global"
    end
    return name
end


return _M
