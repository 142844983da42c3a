-- data/chat_filter.lua: words the chat hides (matched whole, without regard to case).
-- Designers edit this list; rules/chat.lua applies it. Replace the examples with the
-- game's own list.
return {
    "badword",
    "darnit",
    "scam",
    "gold4sale",
}
