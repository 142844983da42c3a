-- 0011_player_search.sql: the console's player search (GET /api/players?name=) finds players
-- by the start of their name, whatever the case, without reading the whole directory.

CREATE INDEX player_directory_name_prefix ON player_directory (lower(name) text_pattern_ops);
