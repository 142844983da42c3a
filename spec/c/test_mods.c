/* test_mods.c -- core/mods.c and bindings/lua_events.c: mods get the events they subscribe to,
 * talk to each other and to players, and whatever a hostile or broken mod does (loops, memory
 * bombs, escapes from the sandbox, errors, endless cycles of events) disables that mod alone,
 * quickly, while the others and the caller go on. Also: what one emit costs. */
#include "test.h"

#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "log.h"
#include "metrics.h"
#include "mods.h"

#include <event2/buffer.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- fixtures ---------------------------------------------------------------------------- */

static char dir[256];

static void write_file(const char *rel, const char *text, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0700);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    fwrite(text, 1, len, f);
    fclose(f);
}

static void mod(const char *rel, const char *src)
{
    write_file(rel, src, strlen(src));
}

static void fresh_dir(void)
{
    static int n;
    snprintf(dir, sizeof dir, "/tmp/test_mods.%d.%d", (int) getpid(), n++);
    mkdir(dir, 0700);
}

static void rm_dir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/* what game.send handed to the host */
static struct {
    int n;
    int to[4]; /* sends to players 0..3 */
    int64_t player[64];
    char json[64][512];
} sent;

static void on_send(void *ud, int64_t player, const char *json, size_t len)
{
    if (player >= 0 && player < 4)
        sent.to[player]++;
    if (sent.n < 64) {
        sent.player[sent.n] = player;
        snprintf(sent.json[sent.n], sizeof sent.json[0], "%.*s", (int) len, json);
    }
    sent.n++;
}

static const struct mods_host HOST = {NULL, on_send, NULL};
static const struct mods_limits LIMITS = {4u << 20, 200000, 2000};

static struct mods *load(const struct mods_limits *lim, struct metrics *metrics)
{
    char err[256] = "";
    memset(&sent, 0, sizeof sent);
    struct mods *m = mods_load(dir, lim ? lim : &LIMITS, &HOST, metrics, err, sizeof err);
    if (m == NULL)
        fprintf(stderr, "mods_load: %s\n", err);
    return m;
}

static int find_mod(struct mods *m, const char *name)
{
    for (int i = 0; i < mods_count(m); i++) {
        const char *n;
        mods_info(m, i, &n, NULL, NULL);
        if (strcmp(n, name) == 0)
            return i;
    }
    return -1;
}

static const char *state_of(struct mods *m, const char *name)
{
    const char *s;
    mods_info(m, find_mod(m, name), NULL, &s, NULL);
    return s;
}

static const char *error_of(struct mods *m, const char *name)
{
    const char *e;
    mods_info(m, find_mod(m, name), NULL, NULL, &e);
    return e ? e : "(none)";
}

static int emit(struct mods *m, const char *event, const char *json)
{
    return mods_emit(m, event, json, strlen(json));
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* a mod that proves it still runs: on "ping" it sends {pong = NAME} to player 1 */
#define ALIVE(name) "events.on('ping', function() game.send(1, {pong = '" name "'}) end)\n"

/* ---- the happy path ---------------------------------------------------------------------- */

TEST(mods_get_their_events_talk_to_each_other_and_reach_players)
{
    fresh_dir();
    mod("greeter.lua", "local count = 0\n"
                       "events.on('player.level_up', function(e)\n"
                       "    count = count + 1\n"
                       "    game.send(e.player_id, {type = 'congrats', level = e.level,\n"
                       "                            seen = count})\n"
                       "    events.emit('greeter.greeted', {player_id = e.player_id})\n"
                       "end)\n");
    mod("ledger/init.lua", "events.on('greeter.greeted', function(e)\n"
                           "    game.send(e.player_id, {type = 'ledger', note = 'greeted'})\n"
                           "end)\n"
                           "events.on('player.level_up', function(e)\n"
                           "    game.log('info', 'level ' .. e.level)\n"
                           "end)\n");
    mod("README.md", "not a mod");
    struct mods *m = load(NULL, NULL);
    ASSERT(m != NULL);
    ASSERT_EQ(mods_count(m), 2);
    const char *name, *state, *error;
    mods_info(m, 0, &name, &state, &error);
    ASSERT_STR(name, "greeter");
    ASSERT_STR(state, "running");
    ASSERT(error == NULL);
    mods_info(m, 1, &name, &state, &error);
    ASSERT_STR(name, "ledger");
    ASSERT_STR(state, "running");

    /* greeter's handler and ledger's; ledger's "greeted" ran inside greeter's emit */
    ASSERT_EQ(emit(m, "player.level_up", "{\"player_id\":42,\"level\":7}"), 2);
    ASSERT_EQ(sent.n, 2);
    ASSERT_EQ(sent.player[0], 42);
    ASSERT(strstr(sent.json[0], "\"type\":\"congrats\"") != NULL);
    ASSERT(strstr(sent.json[0], "\"level\":7") != NULL);
    ASSERT(strstr(sent.json[0], "\"seen\":1") != NULL);
    ASSERT_EQ(sent.player[1], 42);
    ASSERT(strstr(sent.json[1], "\"note\":\"greeted\"") != NULL);

    /* state kept between calls; events nobody handles run nothing */
    ASSERT_EQ(emit(m, "player.level_up", "{\"player_id\":42,\"level\":8}"), 2);
    ASSERT(strstr(sent.json[2], "\"seen\":2") != NULL);
    ASSERT_EQ(emit(m, "nobody.cares", "{}"), 0);
    mods_free(m);
    rm_dir();
}

TEST(a_missing_directory_is_an_empty_set)
{
    char err[128];
    struct mods *m = mods_load("/nonexistent/mods", &LIMITS, &HOST, NULL, err, sizeof err);
    ASSERT(m != NULL);
    ASSERT_EQ(mods_count(m), 0);
    ASSERT_EQ(emit(m, "x", "{}"), 0);
    mods_free(m);
    ASSERT(mods_load("/dev/null", &LIMITS, &HOST, NULL, err, sizeof err) == NULL);
    ASSERT(strstr(err, "/dev/null") != NULL);
}

TEST(an_event_emitted_by_a_mod_skips_itself)
{
    fresh_dir();
    mod("echo.lua", "local n = 0\n"
                    "events.on('shout', function() n = n + 1\n"
                    "    local got = events.emit('shout', {})\n"
                    "    game.send(1, {n = n, got = got}) end)\n");
    mod("other.lua", "events.on('shout', function() end)\n");
    struct mods *m = load(NULL, NULL);
    /* echo (its emit reaches other only: 1) + other */
    ASSERT_EQ(emit(m, "shout", "{}"), 2);
    ASSERT_EQ(sent.n, 1);
    ASSERT(strstr(sent.json[0], "\"n\":1") != NULL);
    ASSERT(strstr(sent.json[0], "\"got\":1") != NULL);
    mods_free(m);
    rm_dir();
}

/* ---- broken input ------------------------------------------------------------------------ */

TEST(a_payload_that_is_not_an_object_runs_nothing)
{
    fresh_dir();
    mod("a.lua", ALIVE("a"));
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(emit(m, "ping", "[1,2]"), ERR_INVALID);
    ASSERT_EQ(emit(m, "ping", "42"), ERR_INVALID);
    ASSERT_EQ(emit(m, "ping", "\"x\""), ERR_INVALID);
    ASSERT_EQ(emit(m, "ping", "{not json}"), ERR_INVALID);
    ASSERT_EQ(emit(m, "ping", ""), ERR_INVALID);
    ASSERT_EQ(emit(m, "bad name!", "{}"), ERR_INVALID);
    ASSERT_EQ(emit(m, "", "{}"), ERR_INVALID);
    ASSERT_EQ(sent.n, 0);
    ASSERT_STR(state_of(m, "a"), "running");
    ASSERT_EQ(emit(m, "ping", " {\"deep\":{\"x\":[1,null]}} "), 1);
    ASSERT_EQ(sent.n, 1);
    mods_free(m);
    rm_dir();
}

TEST(a_mod_that_does_not_load_is_failed_with_file_and_line_and_the_others_run)
{
    fresh_dir();
    mod("a_syntax.lua", "events.on('ping', function()\n  local x = = 1\nend)\n");
    mod("b_raises.lua", "\n\nerror('not today')\n");
    mod("c_good.lua", ALIVE("c"));
    mod("d_nodir/other.lua", "-- no init.lua here\n");
    mod("e bad name.lua", ALIVE("e"));
    mod("f_loops.lua", "while true do end\n");
    mod("g_requires.lua", "local ffi = require 'ffi'\n");
    write_file("h_bytecode.lua", "\033LJ\002\012xxxxxxxx", 13);
    mod("i_emits.lua", "events.emit('ping', {})\n");
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(mods_count(m), 9);
    ASSERT_STR(state_of(m, "a_syntax"), "failed");
    char want[512];
    snprintf(want, sizeof want, "%s/a_syntax.lua:2:", dir);
    ASSERT(strncmp(error_of(m, "a_syntax"), want, strlen(want)) == 0);
    snprintf(want, sizeof want, "%s/b_raises.lua:3: not today", dir);
    ASSERT_STR(error_of(m, "b_raises"), want);
    ASSERT_STR(state_of(m, "c_good"), "running");
    ASSERT_STR(state_of(m, "d_nodir"), "failed");
    ASSERT(strstr(error_of(m, "d_nodir"), "init.lua: cannot read") != NULL);
    ASSERT_STR(state_of(m, "e bad name"), "failed");
    ASSERT_STR(error_of(m, "f_loops"), "instruction budget exceeded (200000) while loading");
    ASSERT(strstr(error_of(m, "g_requires"), "attempt to call global 'require'") != NULL);
    ASSERT(strstr(error_of(m, "h_bytecode"), "bytecode is not allowed") != NULL);
    ASSERT(strstr(error_of(m, "i_emits"), "not while the mod loads") != NULL);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    ASSERT_STR(sent.json[0], "{\"t\":\"mod\",\"mod\":\"c_good\",\"data\":{\"pong\":\"c\"}}");
    mods_free(m);
    rm_dir();
}

/* ---- hostile handlers: each is disabled, the others go on -------------------------------- */

struct hostile {
    const char *name;
    const char *body;   /* the handler of "attack" */
    const char *reason; /* expected start of the error, or substring with a leading '~' */
};

static const struct hostile HOSTILE[] = {
    {"loop", "while true do end", "instruction budget exceeded (200000) in on attack"},
    {"loop_in_pcall", "while true do pcall(function() while true do end end) end",
     "instruction budget exceeded (200000) in on attack"},
    {"loop_in_xpcall",
     "while true do xpcall(function() while true do end end, function() while true do end end) "
     "end",
     "instruction budget exceeded (200000) in on attack"},
    {"loop_in_coroutine",
     "local co = coroutine.create(function() while true do end end)\n"
     "while true do coroutine.resume(co) co = coroutine.create(function() while true do end end)"
     " end",
     "instruction budget exceeded (200000) in on attack"},
    {"loop_in_wrap", "while true do pcall(coroutine.wrap(function() while true do end end)) end",
     "instruction budget exceeded (200000) in on attack"},
    {"pcall_the_error", "while true do local ok = pcall(error, 'x') end",
     "instruction budget exceeded (200000) in on attack"},
    {"table_bomb",
     "local t = {} while true do t[#t + 1] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, "
     "16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32} end",
     "memory cap exceeded (4 MiB) in on attack"},
    {"string_bomb", "local s = string.rep('x', 2^30)", "memory cap exceeded (4 MiB) in on attack"},
    {"string_bomb_caught", "for i = 1, 10 do pcall(string.rep, 'x', 2^30) end",
     "memory cap exceeded (4 MiB) in on attack"},
    {"concat_bomb", "local s = 'x' while true do s = s .. s end",
     "memory cap exceeded (4 MiB) in on attack"},
    {"deep_recursion", "local function f(n) return 1 + f(n + 1) end f(1)", "~stack overflow"},
    {"raises", "error('boom')", "~boom in on attack"},
    {"raises_table", "error({})", "(error object is a table value) in on attack"},
    {"pattern_bomb", "local s = ('a'):rep(20000) s:find(('a*'):rep(6) .. 'b')",
     "instruction budget exceeded (200000) in on attack"},
    {"pattern_bomb_gsub", "local s = ('a'):rep(20000) s:gsub('a*a*a*a*b', '')",
     "instruction budget exceeded (200000) in on attack"},
    {"pattern_bomb_gmatch", "for x in ('a'):rep(20000):gmatch('a-a-a-a-b') do end",
     "instruction budget exceeded (200000) in on attack"},
    {"sort_bomb", "local t = {} for i = 1, 30000 do t[i] = (i * 7919) % 30011 end table.sort(t)",
     "instruction budget exceeded (200000) in on attack"},
    {"gsub_recursion", "local function f() return (('x'):gsub('x', f)) end f()",
     "~nested too deep"},
    {"gsub_table_recursion",
     "local mt = {} mt.__index = function() return (('x'):gsub('x', setmetatable({}, mt))) end\n"
     "local _ = ('x'):gsub('x', setmetatable({}, mt))",
     "~nested too deep"},
    {"wrap_chain",
     "local function mk(n) return coroutine.wrap(function() if n > 0 then return mk(n - 1)() end"
     " end) end mk(1e6)()",
     "~nested too deep"},
    {"resume_chain",
     "local function mk(n) return coroutine.create(function() if n > 0 then\n"
     "  local ok, e = coroutine.resume(mk(n - 1)) if not ok then error(e, 0) end end end) end\n"
     "local ok, e = coroutine.resume(mk(1e6)) error(e, 0)",
     "~nested too deep"},
    {"sort_recursion",
     "local t = {} for i = 1, 50 do t[i] = i end\n"
     "local function cmp(a, b) table.sort(t, cmp) return a < b end table.sort(t, cmp)",
     "~nested too deep"},
    {"insert_far_below", "local t = {} table.insert(t, -2^30, 1)", "~position out of bounds"},
    {"send_flood", "for i = 1, 1000 do game.send(1, {i = i}) end",
     "~game.send: more than 100 messages in one call in on attack"},
    {"bad_send", "game.send(1, {1, 2, 3})", "~the payload must be an object"},
    {"bad_send_id", "game.send(1.5, {})", "~a player id expected"},
    {"bad_emit", "events.emit('x', function() end)", "~table expected"},
    {"string_metatable", "getmetatable('').__index.upper = nil", "~attempt to index a boolean"},
};

TEST(hostile_handlers_are_disabled_with_the_reason_and_the_others_go_on)
{
    fresh_dir();
    int n = (int) (sizeof HOSTILE / sizeof *HOSTILE);
    for (int i = 0; i < n; i++) {
        char rel[64], src[1024];
        snprintf(rel, sizeof rel, "%s.lua", HOSTILE[i].name);
        snprintf(src, sizeof src, "events.on('attack', function()\n%s\nend)\n" ALIVE("%s"),
                 HOSTILE[i].body, HOSTILE[i].name);
        mod(rel, src);
    }
    mod("zz_bystander.lua",
        "events.on('attack', function() game.send(2, {ok = true}) end)\n" ALIVE("zz_bystander"));
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(mods_count(m), n + 1);
    for (int i = 0; i < n; i++)
        if (strcmp(state_of(m, HOSTILE[i].name), "running") != 0)
            FAIL_AT("%s did not load: %s", HOSTILE[i].name, error_of(m, HOSTILE[i].name));
    ASSERT_EQ(emit(m, "ping", "{}"), n + 1);

    memset(&sent, 0, sizeof sent);
    double t0 = now_s();
    ASSERT_EQ(emit(m, "attack", "{}"), 1); /* the bystander's */
    double took = now_s() - t0;
    for (int i = 0; i < n; i++) {
        const char *why = error_of(m, HOSTILE[i].name), *want = HOSTILE[i].reason;
        if (strcmp(state_of(m, HOSTILE[i].name), "disabled") != 0)
            FAIL_AT("%s is %s", HOSTILE[i].name, state_of(m, HOSTILE[i].name));
        if (want[0] == '~' ? strstr(why, want + 1) == NULL : strcmp(why, want) != 0)
            FAIL_AT("%s: \"%s\", expected \"%s\"", HOSTILE[i].name, why, want);
    }
    ASSERT_STR(state_of(m, "zz_bystander"), "running");
    ASSERT_EQ(sent.to[2], 1);
    /* every hostile handler is stopped within its budgets: far below a second each */
    if (took > 0.5 * n)
        FAIL_AT("the attack took %.2f s", took);

    /* a disabled mod's events are skipped; the others run */
    memset(&sent, 0, sizeof sent);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    ASSERT_EQ(sent.n, 1);
    ASSERT(strstr(sent.json[0], "\"data\":{\"pong\":\"zz_bystander\"}") != NULL);
    ASSERT_EQ(emit(m, "attack", "{}"), 1);
    mods_free(m);
    rm_dir();
}

TEST(the_sandbox_has_no_way_out)
{
    static const char *const NAMES[] = {
        "io",          "os",        "debug",     "ffi",        "jit",
        "require",     "package",   "module",    "load",       "loadstring",
        "loadfile",    "dofile",    "getfenv",   "setfenv",    "collectgarbage",
        "newproxy",    "gcinfo",    "print",     "_G",         "cjson",
        "string.dump", "('').dump", "math.dump", "table.getn", "coroutine.dump",
    };
    fresh_dir();
    /* every name must be nil, in the chunk and in a handler */
    char src[8192];
    size_t o = (size_t) snprintf(src, sizeof src,
                                 "local reached = {}\n"
                                 "local function probe(where)\n");
    for (size_t i = 0; i < sizeof NAMES / sizeof *NAMES; i++)
        o += (size_t) snprintf(src + o, sizeof src - o,
                               "  if %s ~= nil then reached[#reached + 1] = where .. [[:%s]] end\n",
                               NAMES[i], NAMES[i]);
    snprintf(src + o, sizeof src - o,
             "  if getmetatable('') ~= false then reached[#reached + 1] = 'string mt' end\n"
             "end\n"
             "probe('chunk')\n"
             "events.on('probe', function()\n"
             "  probe('handler')\n"
             "  game.send(1, {reached = table.concat(reached, ','), up = ('x'):upper()})\n"
             "end)\n");
    mod("probe.lua", src);
    struct mods *m = load(NULL, NULL);
    ASSERT_STR(state_of(m, "probe"), "running");
    ASSERT_EQ(emit(m, "probe", "{}"), 1);
    ASSERT_EQ(sent.n, 1);
    ASSERT(strstr(sent.json[0], "\"reached\":\"\"") != NULL);
    ASSERT(strstr(sent.json[0], "\"up\":\"X\"") != NULL);
    mods_free(m);
    rm_dir();
}

TEST(each_escape_attempt_fails_inside_the_mod)
{
    static const char *const ATTEMPTS[] = {
        "os.execute('touch /tmp/pwned')",
        "io.open('/etc/passwd')",
        "require('ffi')",
        "loadstring(string.dump(function() end))",
        "load('return 1')",
        "dofile('/etc/passwd')",
        "debug.getregistry()",
        "getfenv(0)",
        "setfenv(1, {})",
        "string.dump(function() end)",
        "('').dump(function() end)",
        "getmetatable('').__index = {}",
        "collectgarbage('stop')",
        "jit.on()",
        "package.loadlib('libc.so.6', 'system')",
        "newproxy(true)",
        "module('x')",
        "print('hello')",
        "_G.x = 1",
        "coroutine.running().x = 1",
        "rawset(string, 'x', 1) ; rawget(getmetatable(''), '__index')",
    };
    fresh_dir();
    int n = (int) (sizeof ATTEMPTS / sizeof *ATTEMPTS);
    char src[8192];
    size_t o = (size_t) snprintf(src, sizeof src, "local attempts = {\n");
    for (int i = 0; i < n; i++)
        o += (size_t) snprintf(src + o, sizeof src - o, "  function() %s end,\n", ATTEMPTS[i]);
    snprintf(src + o, sizeof src - o,
             "}\n"
             "events.on('probe', function()\n"
             "  local passed = {}\n"
             "  for i, f in ipairs(attempts) do\n"
             "    if pcall(f) then passed[#passed + 1] = i end\n"
             "  end\n"
             "  game.send(1, {passed = table.concat(passed, ',')})\n"
             "end)\n");
    mod("escape.lua", src);
    struct mods *m = load(NULL, NULL);
    ASSERT_STR(state_of(m, "escape"), "running");
    ASSERT_EQ(emit(m, "probe", "{}"), 1);
    ASSERT_EQ(sent.n, 1);
    ASSERT(strstr(sent.json[0], "\"data\":{\"passed\":\"\"}") != NULL);
    ASSERT(access("/tmp/pwned", F_OK) != 0);
    mods_free(m);
    rm_dir();
}

TEST(a_loop_of_costly_instructions_is_stopped_by_the_time_budget)
{
    fresh_dir();
    /* few instructions, each copying a megabyte: the count alone would let it run for long */
    mod("copier.lua", "events.on('go', function()\n"
                      "  local s = string.rep('x', 2^20)\n"
                      "  while true do local t = s .. 'y' end\n"
                      "end)\n");
    mod("fine.lua", ALIVE("fine"));
    struct mods_limits lim = {16u << 20, 1000000000, 100};
    struct mods *m = load(&lim, NULL);
    double t0 = now_s();
    ASSERT_EQ(emit(m, "go", "{}"), 0);
    double took = now_s() - t0;
    ASSERT_STR(state_of(m, "copier"), "disabled");
    ASSERT_STR(error_of(m, "copier"), "time budget exceeded (100 ms) in on go");
    ASSERT(took < 5);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    mods_free(m);
    rm_dir();
}

TEST(an_endless_cycle_of_events_stops_at_the_depth_limit)
{
    fresh_dir();
    mod("a.lua", "events.on('ping_a', function() events.emit('ping_b', {}) end)\n");
    mod("b.lua", "events.on('ping_b', function() events.emit('ping_c', {}) end)\n");
    mod("c.lua", "events.on('ping_c', function() events.emit('ping_a', {}) end)\n"
                 "events.on('ping_a', function() events.emit('ping_b', {}) end)\n");
    /* a ring of 9 mods passing a token: the 9th emit is one too deep */
    for (int i = 0; i < 9; i++) {
        char rel[32], src[256];
        snprintf(rel, sizeof rel, "ring%d.lua", i);
        snprintf(src, sizeof src, "events.on('token%d', function() events.emit('token%d', {}) end)",
                 i, i + 1);
        mod(rel, src);
    }
    struct mods *m = load(NULL, NULL);
    /* a -> b -> c -> (a is busy: skipped) ... every handler ends */
    ASSERT(emit(m, "ping_a", "{}") > 0);
    ASSERT_STR(state_of(m, "a"), "running");
    ASSERT_STR(state_of(m, "b"), "running");
    ASSERT_STR(state_of(m, "c"), "running");
    emit(m, "token0", "{}");
    ASSERT_STR(state_of(m, "ring7"), "disabled");
    ASSERT(strstr(error_of(m, "ring7"), "nested deeper than 8") != NULL);
    ASSERT_STR(state_of(m, "ring8"), "running");
    mods_free(m);
    rm_dir();
}

TEST(the_deepest_nesting_of_emits_and_callbacks_fits_the_c_stack)
{
    fresh_dir();
    /* 8 mods, each nesting gsub callbacks 15 deep then emitting to the next at the bottom:
     * the most C stack the limits allow */
    for (int i = 0; i < 8; i++) {
        char rel[32], src[512], next[64] = "0"; /* the 8th, at depth 8, emits no more */
        snprintf(rel, sizeof rel, "deep%d.lua", i);
        if (i < 7)
            snprintf(next, sizeof next, "events.emit('deep%d', {})", i + 1);
        snprintf(src, sizeof src,
                 "local function down(n)\n"
                 "  if n == 0 then return %s end\n"
                 "  return (('x'):gsub('x', function() return tostring(down(n - 1)) end))\n"
                 "end\n"
                 "events.on('deep%d', function() down(15) game.send(1, {level = %d}) end)\n",
                 next, i, i);
        mod(rel, src);
    }
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(emit(m, "deep0", "{}"), 1);
    ASSERT_EQ(sent.n, 8);
    for (int i = 0; i < 8; i++) {
        char name[16];
        snprintf(name, sizeof name, "deep%d", i);
        ASSERT_STR(state_of(m, name), "running");
    }
    mods_free(m);
    rm_dir();
}

TEST(a_flood_of_emits_draws_on_one_budget_per_game_event)
{
    fresh_dir();
    /* every emit runs sink's handler; all of them share sink's budget for this game event */
    mod("flood.lua", "events.on('go', function() for i = 1, 100 do events.emit('x', {}) end end)");
    mod("sink.lua", "events.on('x', function() for i = 1, 5000 do end end)");
    struct mods *m = load(NULL, NULL);
    double t0 = now_s();
    emit(m, "go", "{}");
    ASSERT(now_s() - t0 < 10);
    ASSERT_STR(state_of(m, "flood"), "running");
    ASSERT_STR(state_of(m, "sink"), "disabled");
    ASSERT_STR(error_of(m, "sink"), "instruction budget exceeded (200000) in on x");
    mods_free(m);
    rm_dir();
}

TEST(game_log_writes_tagged_lines_and_drops_a_flood)
{
    fresh_dir();
    mod("chatty.lua", "events.on('go', function(e)\n"
                      "  game.log('warn', 'hello ' .. e.who)\n"
                      "  for i = 1, 1000 do game.log('warn', 'flood') end\n"
                      "  game.log('debug', 'not shown')\n"
                      "end)\n");
    mod("bad_level.lua", "events.on('go', function() game.log('loud', 'x') end)\n");
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_mods_log.%d", (int) getpid());
    FILE *f = fopen(path, "w+");
    log_init("t", LOG_INFO);
    log_set_fd(fileno(f));
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(emit(m, "go", "{\"who\":\"ann\"}"), 1);
    log_set_fd(1);
    log_set_level(LOG_OFF);
    rewind(f);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    ASSERT(strstr(buf, "\"mod\":\"chatty\"") != NULL);
    ASSERT(strstr(buf, "hello ann") != NULL);
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "\"msg\":\"flood\"")) != NULL; p++)
        lines++;
    ASSERT_EQ(lines, 99);
    ASSERT(strstr(buf, "game.log lines dropped") != NULL);
    ASSERT(strstr(buf, "not shown") == NULL);
    ASSERT_STR(state_of(m, "bad_level"), "disabled");
    ASSERT(strstr(buf, "mod bad_level disabled") != NULL);
    mods_free(m);
    rm_dir();
}

TEST(patterns_past_the_c_limit_give_the_same_results_in_lua)
{
    fresh_dir();
    /* '.-' on a long subject: past the bound for C, so the Lua matcher runs (its results are
     * compared with C's at length in spec/unit/mods_sandbox_spec.lua) */
    mod("words.lua",
        "events.on('go', function(e)\n"
        "  local s = string.rep('word=value; ', 300) .. '  trailing  '\n"
        "  local r = {}\n"
        "  r[1] = select(2, s:gsub('(%w+)=(.-);', '%2=%1;'))\n"
        "  r[2] = (s:gsub('(%w+)=(.-);', '%2=%1;')):sub(1, 24)\n"
        "  local n = 0 for k, v in s:gmatch('(%w+)=(.-);') do n = n + #k + #v end r[3] = n\n"
        "  r[4] = select(3, s:find('(%a+)%s*$'))\n"
        "  r[5] = s:find('value; word', 1, true)\n"
        "  r[6] = select(3, s:find('=(.-);', 100))\n"
        "  game.send(1, {r = table.concat(r, '|')})\n"
        "end)\n");
    struct mods_limits lim = {16u << 20, 10000000, 5000};
    struct mods *m = load(&lim, NULL);
    ASSERT_EQ(emit(m, "go", "{}"), 1);
    ASSERT_EQ(sent.n, 1);
    ASSERT(strstr(sent.json[0],
                  "\"data\":{\"r\":\"300|value=word; value=word; |2700|trailing|6|value\"}") !=
           NULL);
    mods_free(m);
    rm_dir();
}

/* ---- metrics ----------------------------------------------------------------------------- */

static char *render(struct metrics *m)
{
    struct evbuffer *b = evbuffer_new();
    metrics_render(m, b);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

TEST(calls_errors_time_and_states_are_metrics)
{
    fresh_dir();
    mod("good.lua", "events.on('hit', function() end)\n");
    mod("bad.lua", "events.on('hit', function() error('x') end)\n");
    mod("broken.lua", "this is not lua\n");
    struct metrics *mt = metrics_new();
    struct mods *m = load(NULL, mt);
    emit(m, "hit", "{}");
    emit(m, "hit", "{}");
    char *s = render(mt);
    ASSERT(strstr(s, "mmo_mod_calls_total{mod=\"good\",event=\"hit\",result=\"ok\"} 2\n") != NULL);
    ASSERT(strstr(s, "mmo_mod_calls_total{mod=\"bad\",event=\"hit\",result=\"error\"} 1\n") !=
           NULL);
    ASSERT(strstr(s, "mmo_mod_call_duration_seconds_count{mod=\"good\",event=\"hit\"} 2\n") !=
           NULL);
    ASSERT(strstr(s, "mmo_mods{state=\"running\"} 1\n") != NULL);
    ASSERT(strstr(s, "mmo_mods{state=\"failed\"} 1\n") != NULL);
    ASSERT(strstr(s, "mmo_mods{state=\"disabled\"} 1\n") != NULL);
    free(s);
    mods_free(m);
    metrics_free(mt);
    rm_dir();
}

/* ---- the game's side: require "mmo.events" ---------------------------------------------- */

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

static lua_State *game_vm(struct lb_ctx *ctx)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lb_set_ctx(L, ctx);
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, luaopen_cjson_safe);
    lua_setfield(L, -2, "cjson.safe");
    lua_pop(L, 2);
    bindings_preload(L);
    return L;
}

static const char *run(lua_State *L, const char *code)
{
    static char out[512];
    if (luaL_loadstring(L, code) != 0 || lua_pcall(L, 0, 1, 0) != 0)
        snprintf(out, sizeof out, "error: %s", lua_tostring(L, -1));
    else
        snprintf(out, sizeof out, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "nil");
    lua_pop(L, 1);
    return out;
}

TEST(the_game_emits_through_mmo_events)
{
    fresh_dir();
    mod("welcome.lua", "events.on('player.level_up', function(e)\n"
                       "  game.send(e.player_id, {type = 'mod', text = 'level ' .. e.level})\n"
                       "end)\n");
    mod("broken.lua", "error('no')\n");
    struct lb_ctx ctx = {0};
    lua_State *L = game_vm(&ctx);
    /* no mods on this node: emit is a no-op */
    ASSERT_STR(run(L, "return require('mmo.events').emit('player.level_up', {player_id = 1})"),
               "0");
    ctx.mods = load(NULL, NULL);
    ASSERT_STR(run(L, "local ev = require 'mmo.events'\n"
                      "return ev.emit('player.level_up', {player_id = 9, level = 3})"),
               "1");
    ASSERT_EQ(sent.n, 1);
    ASSERT_EQ(sent.player[0], 9);
    const char *head = "{\"t\":\"mod\",\"mod\":\"welcome\",\"data\":{";
    ASSERT(strncmp(sent.json[0], head, strlen(head)) == 0);
    ASSERT(strstr(sent.json[0], "\"type\":\"mod\"") != NULL);
    ASSERT(strstr(sent.json[0], "\"text\":\"level 3\"") != NULL);
    ASSERT(strstr(run(L, "return require('mmo.events').emit('player.level_up', {1, 2})"),
                  "an object expected") != NULL);
    ASSERT(strstr(run(L, "return require('mmo.events').emit('no spaces', {})"),
                  "not an event name") != NULL);
    ASSERT(strstr(run(L, "return require('mmo.events').emit('x', 'text')"), "table expected") !=
           NULL);
    ASSERT_STR(run(L, "local t = require('mmo.events').mods()\n"
                      "return #t .. ' ' .. t[1].name .. ' ' .. t[1].state .. ' ' ..\n"
                      "  tostring(t[1].error ~= nil) .. ' ' .. t[2].name .. ' ' .. t[2].state"),
               "2 broken failed true welcome running");
    lua_close(L);
    mods_free(ctx.mods);
    rm_dir();
}

/* ---- what an emit costs ------------------------------------------------------------------ */

TEST(what_one_emit_to_one_trivial_handler_costs)
{
    fresh_dir();
    mod("counter.lua", "local n = 0\nevents.on('tick', function(e) n = n + e.d end)\n");
    struct mods *m = load(NULL, NULL);
    const char *json = "{\"d\":1,\"player_id\":12345}";
    size_t len = strlen(json);
    int rounds = 20000;
    double t0 = now_s();
    for (int i = 0; i < rounds; i++)
        if (mods_emit(m, "tick", json, len) != 1)
            FAIL_AT("emit %d failed", i);
    double per = (now_s() - t0) / rounds;
    printf("# one emit to one trivial handler: %.2f us (%d rounds)\n", per * 1e6, rounds);
    mods_free(m);
    rm_dir();
}

int main(void)
{
    log_init("test", LOG_OFF);
    RUN(mods_get_their_events_talk_to_each_other_and_reach_players);
    RUN(a_missing_directory_is_an_empty_set);
    RUN(an_event_emitted_by_a_mod_skips_itself);
    RUN(a_payload_that_is_not_an_object_runs_nothing);
    RUN(a_mod_that_does_not_load_is_failed_with_file_and_line_and_the_others_run);
    RUN(hostile_handlers_are_disabled_with_the_reason_and_the_others_go_on);
    RUN(the_sandbox_has_no_way_out);
    RUN(each_escape_attempt_fails_inside_the_mod);
    RUN(a_loop_of_costly_instructions_is_stopped_by_the_time_budget);
    RUN(an_endless_cycle_of_events_stops_at_the_depth_limit);
    RUN(the_deepest_nesting_of_emits_and_callbacks_fits_the_c_stack);
    RUN(a_flood_of_emits_draws_on_one_budget_per_game_event);
    RUN(game_log_writes_tagged_lines_and_drops_a_flood);
    RUN(patterns_past_the_c_limit_give_the_same_results_in_lua);
    RUN(calls_errors_time_and_states_are_metrics);
    RUN(the_game_emits_through_mmo_events);
    RUN(what_one_emit_to_one_trivial_handler_costs);
    return test_summary();
}
