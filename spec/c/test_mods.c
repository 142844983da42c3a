/* test_mods.c -- core/mods.c and bindings/lua_events.c: mods get the events they subscribe to,
 * talk to each other and to players, and whatever a hostile or broken mod does (loops, memory
 * bombs, escapes from the sandbox, errors, endless cycles of events) strikes that mod alone,
 * quickly, while the others and the caller go on; the Nth strike disables it. Manifests: each
 * kind of bad one fails its mod with a clear error; load order and dependencies (missing,
 * failed, cycles); events not declared. Also: what one emit costs. */
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

static void file(const char *rel, const char *text)
{
    write_file(rel, text, strlen(text));
}

/* dir/NAME/: a manifest.lua declaring handles and emits (Lua list items: "'a', 'b'"), plus
 * extra fields (Lua text; "": none), and init.lua with src */
static void mod_ex(const char *name, const char *handles, const char *emits, const char *extra,
                   const char *src)
{
    char rel[256], text[4096];
    snprintf(rel, sizeof rel, "%s/manifest.lua", name);
    snprintf(text, sizeof text,
             "return {\n  name = '%s', version = '1.0.0', api = 1,\n  handles = { %s },\n"
             "  emits = { %s },%s%s\n}\n",
             name, handles, emits, extra[0] ? "\n  " : "", extra);
    file(rel, text);
    snprintf(rel, sizeof rel, "%s/init.lua", name);
    file(rel, src);
}

static void mod(const char *name, const char *handles, const char *emits, const char *src)
{
    mod_ex(name, handles, emits, "", src);
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
static const struct mods_limits LIMITS = {4u << 20, 200000, 2000, 1};

static struct mods *load(const struct mods_limits *lim, struct metrics *metrics)
{
    char err[256] = "";
    memset(&sent, 0, sizeof sent);
    struct mods *m = mods_load(dir, lim ? lim : &LIMITS, &HOST, metrics, err, sizeof err);
    if (m == NULL)
        fprintf(stderr, "mods_load: %s\n", err);
    return m;
}

static struct mods_info info_of(struct mods *m, const char *name)
{
    struct mods_info mi = {0};
    for (int i = 0; i < mods_count(m); i++) {
        mods_info(m, i, &mi);
        if (strcmp(mi.name, name) == 0)
            return mi;
    }
    mi.name = NULL;
    mi.state = "(no such mod)";
    return mi;
}

static const char *state_of(struct mods *m, const char *name)
{
    return info_of(m, name).state;
}

static const char *error_of(struct mods *m, const char *name)
{
    const char *e = info_of(m, name).error;
    return e ? e : "(none)";
}

/* the names of the set, in its order, as "a b c" */
static const char *order_of(struct mods *m)
{
    static char out[1024];
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < mods_count(m) && o < sizeof out; i++) {
        struct mods_info mi;
        mods_info(m, i, &mi);
        o += (size_t) snprintf(out + o, sizeof out - o, "%s%s", i ? " " : "", mi.name);
    }
    return out;
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
    mod("greeter", "'player.level_up'", "'greeter.greeted'",
        "local count = 0\n"
        "events.on('player.level_up', function(e)\n"
        "    count = count + 1\n"
        "    game.send(e.player_id, {type = 'congrats', level = e.level,\n"
        "                            seen = count})\n"
        "    events.emit('greeter.greeted', {player_id = e.player_id})\n"
        "end)\n");
    mod("ledger", "'greeter.greeted', 'player.level_up'", "",
        "events.on('greeter.greeted', function(e)\n"
        "    game.send(e.player_id, {type = 'ledger', note = 'greeted'})\n"
        "end)\n"
        "events.on('player.level_up', function(e)\n"
        "    game.log('info', 'level ' .. e.level)\n"
        "end)\n");
    file("README.md", "not a mod");
    struct mods *m = load(NULL, NULL);
    ASSERT(m != NULL);
    ASSERT_EQ(mods_count(m), 2);
    struct mods_info mi;
    mods_info(m, 0, &mi);
    ASSERT_STR(mi.name, "greeter");
    ASSERT_STR(mi.version, "1.0.0");
    ASSERT_STR(mi.state, "running");
    ASSERT(mi.error == NULL);
    ASSERT_EQ(mi.strikes, 0);
    ASSERT(mi.last_strike == NULL);
    mods_info(m, 1, &mi);
    ASSERT_STR(mi.name, "ledger");
    ASSERT_STR(mi.state, "running");

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
    mod("echo", "'shout'", "'shout'",
        "local n = 0\n"
        "events.on('shout', function() n = n + 1\n"
        "    local got = events.emit('shout', {})\n"
        "    game.send(1, {n = n, got = got}) end)\n");
    mod("other", "'shout'", "", "events.on('shout', function() end)\n");
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
    mod("a", "'ping'", "", ALIVE("a"));
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
    mod("a_syntax", "'ping'", "", "events.on('ping', function()\n  local x = = 1\nend)\n");
    mod("b_raises", "", "", "\n\nerror('not today')\n");
    mod("c_good", "'ping'", "", ALIVE("c"));
    file("d_noinit/manifest.lua",
         "return { name = 'd_noinit', version = '1', api = 1, handles = {}, emits = {} }\n");
    file("d_noinit/other.lua", "-- no init.lua here\n");
    mod("e bad name", "'ping'", "", ALIVE("e"));
    mod("f_loops", "", "", "while true do end\n");
    mod("g_requires", "", "", "local ffi = require 'ffi'\n");
    mod("h_bytecode", "", "", "");
    write_file("h_bytecode/init.lua", "\033LJ\002\012xxxxxxxx", 13);
    mod("i_emits", "", "'ping'", "events.emit('ping', {})\n");
    mod("j_shebang_bytecode", "", "", "");
    write_file("j_shebang_bytecode/init.lua", "#!/bin/x\n\033LJ\002\012xxxxxxxx", 22);
    file("k_single.lua", ALIVE("k")); /* the old form of a mod: one file */
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(mods_count(m), 11);
    ASSERT_STR(state_of(m, "a_syntax"), "failed");
    char want[512];
    snprintf(want, sizeof want, "%s/a_syntax/init.lua:2:", dir);
    ASSERT(strncmp(error_of(m, "a_syntax"), want, strlen(want)) == 0);
    snprintf(want, sizeof want, "%s/b_raises/init.lua:3: not today", dir);
    ASSERT_STR(error_of(m, "b_raises"), want);
    ASSERT_STR(state_of(m, "c_good"), "running");
    ASSERT_STR(state_of(m, "d_noinit"), "failed");
    ASSERT(strstr(error_of(m, "d_noinit"), "d_noinit/init.lua: cannot read") != NULL);
    ASSERT_STR(state_of(m, "e bad name"), "failed");
    ASSERT(strstr(error_of(m, "e bad name"), "a mod's name is 1 to 64 letters") != NULL);
    ASSERT_STR(error_of(m, "f_loops"), "instruction budget exceeded (200000) while loading");
    ASSERT(strstr(error_of(m, "g_requires"), "attempt to call global 'require'") != NULL);
    ASSERT(strstr(error_of(m, "h_bytecode"), "bytecode is not allowed") != NULL);
    ASSERT(strstr(error_of(m, "i_emits"), "not while the mod loads") != NULL);
    ASSERT_STR(state_of(m, "j_shebang_bytecode"), "failed");
    snprintf(want, sizeof want,
             "%s/k_single.lua: a mod is a directory, k_single/, with manifest.lua and init.lua "
             "(docs/modding.md)",
             dir);
    ASSERT_STR(error_of(m, "k_single.lua"), want);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    ASSERT_STR(sent.json[0], "{\"t\":\"mod\",\"mod\":\"c_good\",\"data\":{\"pong\":\"c\"}}");
    mods_free(m);
    rm_dir();
}

/* ---- manifests --------------------------------------------------------------------------- */

/* a manifest that is fine but for what the test puts in ('@' is the mod's name) */
struct bad_manifest {
    const char *name;
    const char *text; /* manifest.lua */
    const char *want; /* the error after "DIR/NAME/manifest.lua" */
};

#define GOOD_HEAD "name = '@', version = '1.0.0', api = 1"

static const struct bad_manifest BAD_MANIFESTS[] = {
    {"syntax", "return { name = 'syntax', version = '1.0.0',\n api = }", ":2: unexpected symbol"},
    {"not_a_table", "return 'syntax'", ": must return a table (got string)"},
    {"returns_nothing", "local x = 1", ": must return a table (got nil)"},
    {"unknown_field", "return { " GOOD_HEAD ", handles = {}, emits = {}, author = 'me' }",
     ": unknown field \"author\" (the fields: name, version, api, handles, emits, depends, "
     "order)"},
    {"numeric_key", "return { " GOOD_HEAD ", handles = {}, emits = {}, 'x' }",
     ": has a key that is not a field's name (a number)"},
    {"no_name", "return { version = '1.0.0', api = 1, handles = {}, emits = {} }",
     ": name is missing"},
    {"name_number", "return { name = 7, version = '1.0.0', api = 1, handles = {}, emits = {} }",
     ": name must be a string (got number)"},
    {"other_name",
     "return { name = 'bounty', version = '1.0.0', api = 1, handles = {}, emits = {} }",
     ": name \"bounty\" is not the directory's name \"other_name\""},
    {"no_version", "return { name = 'no_version', api = 1, handles = {}, emits = {} }",
     ": version is missing"},
    {"version_number",
     "return { name = 'version_number', version = 1.0, api = 1, handles = {}, "
     "emits = {} }",
     ": version must be a string (got number)"},
    {"version_spaces",
     "return { name = 'version_spaces', version = '1.0 beta', api = 1, "
     "handles = {}, emits = {} }",
     ": version must be 1 to 32 letters, digits and \".-+_\" (such as \"1.0.0\")"},
    {"version_nul",
     "return { name = 'version_nul', version = '1.0\\0', api = 1, "
     "handles = {}, emits = {} }",
     ": version must be 1 to 32 letters"},
    {"name_nul",
     "return { name = 'name_nul\\0x', version = '1', api = 1, handles = {}, "
     "emits = {} }",
     ": name \"name_nul\" is not the directory's name \"name_nul\""},
    {"no_api", "return { name = 'no_api', version = '1.0.0', handles = {}, emits = {} }",
     ": api is missing (this node: 1)"},
    {"api_2", "return { name = 'api_2', version = '1.0.0', api = 2, handles = {}, emits = {} }",
     ": api 2 is not supported (this node: 1)"},
    {"api_text",
     "return { name = 'api_text', version = '1.0.0', api = '1', handles = {}, "
     "emits = {} }",
     ": api must be an integer (this node: 1)"},
    {"api_fraction",
     "return { name = 'api_fraction', version = '1.0.0', api = 1.5, handles = {}, "
     "emits = {} }",
     ": api must be an integer (this node: 1)"},
    {"no_handles", "return { " GOOD_HEAD ", emits = {} }",
     ": handles is missing (a list of event names)"},
    {"handles_string", "return { " GOOD_HEAD ", handles = 'player.joined', emits = {} }",
     ": handles must be a list of event names (got string)"},
    {"handles_bad_name", "return { " GOOD_HEAD ", handles = { 'ok', 'no spaces' }, emits = {} }",
     ": handles[2] is not an event name (1 to 64 letters, digits and \"._:-\"): \"no spaces\""},
    {"handles_twice", "return { " GOOD_HEAD ", handles = { 'a', 'b', 'a' }, emits = {} }",
     ": handles lists \"a\" twice"},
    {"handles_number", "return { " GOOD_HEAD ", handles = { 12 }, emits = {} }",
     ": handles[1] must be a string (got number)"},
    {"handles_gap", "return { " GOOD_HEAD ", handles = { [1] = 'a', [3] = 'b' }, emits = {} }",
     ": handles must be a list (1, 2, ...: no other keys)"},
    {"handles_keys", "return { " GOOD_HEAD ", handles = { x = 'a' }, emits = {} }",
     ": handles must be a list (1, 2, ...: no other keys)"},
    {"no_emits", "return { " GOOD_HEAD ", handles = {} }",
     ": emits is missing (a list of event names)"},
    {"emits_bad_name", "return { " GOOD_HEAD ", handles = {}, emits = { '' } }",
     ": emits[1] is not an event name (1 to 64 letters, digits and \"._:-\"): \"\""},
    {"depends_bad_name", "return { " GOOD_HEAD ", handles = {}, emits = {}, depends = { 'a.b' } }",
     ": depends[1] is not a mod's name (1 to 64 letters, digits, '_', '-'): \"a.b\""},
    {"depends_itself",
     "return { " GOOD_HEAD ", handles = {}, emits = {}, depends = { 'depends_itself' } }",
     ": depends lists the mod itself"},
    {"depends_twice", "return { " GOOD_HEAD ", handles = {}, emits = {}, depends = { 'x', 'x' } }",
     ": depends lists \"x\" twice"},
    {"order_negative", "return { " GOOD_HEAD ", handles = {}, emits = {}, order = -1 }",
     ": order must be an integer from 0 to 1000000"},
    {"order_text", "return { " GOOD_HEAD ", handles = {}, emits = {}, order = '10' }",
     ": order must be an integer from 0 to 1000000"},
    {"uses_a_function", "return { name = string.lower('X') }",
     ":1: attempt to index global 'string' (a nil value)"},
    {"loops", "while true do end", ": instruction budget exceeded (100000): a manifest is data"},
    {"grows", "local s = 'x' for i = 1, 30 do s = s .. s end return {}",
     ": memory cap exceeded (1024 KiB): a manifest is data"},
    {"bytecode", "\033LJ\002", ": bytecode is not allowed, only Lua source"},
};

TEST(each_bad_manifest_fails_its_mod_with_a_clear_error)
{
    fresh_dir();
    int n = (int) (sizeof BAD_MANIFESTS / sizeof *BAD_MANIFESTS);
    for (int i = 0; i < n; i++) {
        char rel[128], text[1024];
        snprintf(rel, sizeof rel, "%s/manifest.lua", BAD_MANIFESTS[i].name);
        size_t o = 0;
        for (const char *p = BAD_MANIFESTS[i].text; *p && o + 70 < sizeof text; p++)
            o += (size_t) (*p == '@'
                               ? snprintf(text + o, sizeof text - o, "%s", BAD_MANIFESTS[i].name)
                               : snprintf(text + o, sizeof text - o, "%c", *p));
        write_file(rel, text, o);
        snprintf(rel, sizeof rel, "%s/init.lua", BAD_MANIFESTS[i].name);
        file(rel, ALIVE("bad"));
    }
    /* bytecode after a "#!" line, a manifest too big, none at all */
    write_file("shebang/manifest.lua", "#!/bin/x\n\033LJ\002\012xxxx", 18);
    file("shebang/init.lua", "");
    char *big = malloc(70000);
    memset(big, ' ', 70000);
    memcpy(big, "return {}", 9);
    write_file("big/manifest.lua", big, 70000);
    free(big);
    file("big/init.lua", "");
    file("none/init.lua", ALIVE("none"));
    mod("fine", "'ping'", "", ALIVE("fine"));
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(mods_count(m), n + 4);
    for (int i = 0; i < n; i++) {
        const char *name = BAD_MANIFESTS[i].name;
        char want[1024];
        snprintf(want, sizeof want, "%s/%s/manifest.lua%s", dir, name, BAD_MANIFESTS[i].want);
        struct mods_info mi = info_of(m, name);
        if (strcmp(mi.state, "failed") != 0)
            FAIL_AT("%s is %s", name, mi.state);
        if (strncmp(error_of(m, name), want, strlen(want)) != 0)
            FAIL_AT("%s: \"%s\", expected \"%s\"", name, error_of(m, name), want);
        if (mi.version != NULL)
            FAIL_AT("%s has a version", name);
    }
    ASSERT_STR(state_of(m, "shebang"), "failed");
    ASSERT(strstr(error_of(m, "shebang"), "shebang/manifest.lua") != NULL);
    ASSERT(strstr(error_of(m, "big"), "big/manifest.lua: larger than 64 KiB") != NULL);
    ASSERT(strstr(error_of(m, "none"), "none/manifest.lua: cannot read") != NULL);
    ASSERT_STR(state_of(m, "fine"), "running");
    ASSERT_EQ(emit(m, "ping", "{}"), 1); /* the bad ones' init.lua never ran */
    mods_free(m);
    rm_dir();
}

TEST(a_manifest_may_compute_its_data_but_reaches_nothing)
{
    fresh_dir();
    /* locals, loops and functions of its own are fine */
    file("calc/manifest.lua", "local events = {}\n"
                              "local function ev(x) return 'calc.' .. x end\n"
                              "for i = 1, 3 do events[i] = ev(i) end\n"
                              "return { name = 'calc', version = '2.1.0-rc.1+b7', api = 1,\n"
                              "  handles = events, emits = {}, order = 7 }\n");
    file("calc/init.lua", "events.on('calc.3', function() game.send(1, {ok = true}) end)\n");
    /* no global at all */
    file("peek/manifest.lua",
         "if print or require or os or io or string or pairs or ipairs or load or getfenv\n"
         "   or setmetatable or error or _G or events or game then return nil end\n"
         "return { name = 'peek', version = '1', api = 1, handles = {}, emits = {} }\n");
    file("peek/init.lua", "");
    file("call/manifest.lua", "local t = {}\nfor _, x in ipairs({}) do t[#t + 1] = x end\n"
                              "return { name = 'call', version = '1', api = 1, handles = t,\n"
                              "         emits = {} }\n");
    file("call/init.lua", "");
    struct mods *m = load(NULL, NULL);
    ASSERT_STR(state_of(m, "calc"), "running");
    ASSERT_STR(info_of(m, "calc").version, "2.1.0-rc.1+b7");
    ASSERT_EQ(emit(m, "calc.3", "{}"), 1);
    ASSERT_STR(state_of(m, "peek"), "running");
    ASSERT_STR(state_of(m, "call"), "failed");
    ASSERT(strstr(error_of(m, "call"), "call/manifest.lua:2: attempt to call global 'ipairs'") !=
           NULL);
    mods_free(m);
    rm_dir();
}

TEST(mods_load_dependencies_first_then_by_order_then_by_name)
{
    fresh_dir();
    /* each answers ping with its name: the set's order is the order of delivery */
#define PONG(name) "events.on('ping', function() game.send(1, {n = '" name "'}) end)\n"
    mod_ex("beta", "'ping'", "", "", PONG("beta"));
    mod_ex("alpha", "'ping'", "", "depends = { 'zeta' }", PONG("alpha"));
    mod_ex("zeta", "'ping'", "", "order = 1", PONG("zeta"));
    mod_ex("gamma", "'ping'", "", "order = 50", PONG("gamma"));
    mod_ex("base", "'ping'", "", "order = 200", PONG("base"));
    mod_ex("top", "'ping'", "", "order = 0, depends = { 'base', 'beta' }", PONG("top"));
    mod_ex("aa", "'ping'", "", "order = 100", PONG("aa"));
#undef PONG
    struct mods *m = load(NULL, NULL);
    ASSERT_STR(order_of(m), "zeta gamma aa alpha beta base top");
    ASSERT_EQ(emit(m, "ping", "{}"), 7);
    const char *want[] = {"zeta", "gamma", "aa", "alpha", "beta", "base", "top"};
    for (int i = 0; i < 7; i++) {
        char s[64];
        snprintf(s, sizeof s, "{\"n\":\"%s\"}", want[i]);
        if (strstr(sent.json[i], s) == NULL)
            FAIL_AT("send %d: %s, expected %s", i, sent.json[i], want[i]);
    }
    mods_free(m);
    rm_dir();
}

TEST(a_dependency_missing_failed_or_in_a_cycle_fails_its_dependents)
{
    fresh_dir();
    mod_ex("needs_ghost", "", "", "depends = { 'ghost' }", "");
    mod("broken", "", "", "error('no')\n");
    mod_ex("needs_broken", "", "", "depends = { 'broken' }", "");
    mod_ex("needs_needs_broken", "", "", "depends = { 'needs_broken' }", "");
    file("badman/manifest.lua", "return { name = 'badman' }\n");
    file("badman/init.lua", "");
    mod_ex("needs_badman", "", "", "depends = { 'badman' }", "");
    mod_ex("cyc_a", "", "", "depends = { 'cyc_b' }", "");
    mod_ex("cyc_b", "", "", "depends = { 'good', 'cyc_c' }", "");
    mod_ex("cyc_c", "", "", "depends = { 'cyc_a' }", "");
    mod_ex("after_cycle", "", "", "depends = { 'cyc_c' }", "");
    mod_ex("loner", "", "", "depends = { 'loner2' }", "");
    mod_ex("loner2", "", "", "depends = { 'loner' }", "");
    mod("good", "'ping'", "", ALIVE("good"));
    mod_ex("uses_good", "'ping'", "", "depends = { 'good' }, order = 0", ALIVE("uses_good"));
    struct mods *m = load(NULL, NULL);
    ASSERT_EQ(mods_count(m), 14);
    char want[1024];
#define EXPECT_FAILED(name, tail)                                                                  \
    do {                                                                                           \
        snprintf(want, sizeof want, "%s/%s/manifest.lua: %s", dir, name, tail);                    \
        ASSERT_STR(state_of(m, name), "failed");                                                   \
        ASSERT_STR(error_of(m, name), want);                                                       \
    } while (0)
    EXPECT_FAILED("needs_ghost", "depends on ghost, which is missing");
    ASSERT_STR(state_of(m, "broken"), "failed");
    EXPECT_FAILED("needs_broken", "depends on broken, which failed");
    EXPECT_FAILED("needs_needs_broken", "depends on needs_broken, which failed");
    EXPECT_FAILED("needs_badman", "depends on badman, which failed");
    EXPECT_FAILED("cyc_a", "depends on cyc_b, in a cycle: cyc_a -> cyc_b -> cyc_c -> cyc_a");
    EXPECT_FAILED("cyc_b", "depends on cyc_c, in a cycle: cyc_b -> cyc_c -> cyc_a -> cyc_b");
    EXPECT_FAILED("cyc_c", "depends on cyc_a, in a cycle: cyc_c -> cyc_a -> cyc_b -> cyc_c");
    EXPECT_FAILED("after_cycle", "depends on cyc_c, which failed");
    EXPECT_FAILED("loner", "depends on loner2, in a cycle: loner -> loner2 -> loner");
    EXPECT_FAILED("loner2", "depends on loner, in a cycle: loner2 -> loner -> loner2");
#undef EXPECT_FAILED
    ASSERT_STR(state_of(m, "good"), "running");
    ASSERT_STR(state_of(m, "uses_good"), "running");
    /* good before uses_good, whatever their orders */
    ASSERT(strstr(order_of(m), "good uses_good") != NULL);
    ASSERT_EQ(emit(m, "ping", "{}"), 2);
    mods_free(m);
    rm_dir();
}

TEST(events_not_declared_in_the_manifest_are_refused)
{
    fresh_dir();
    mod("listens_more", "'ping'", "",
        ALIVE("listens_more") "events.on('player.joined', function() end)\n");
    mod("emits_more", "'ping', 'go'", "'emits_more.fine'",
        ALIVE("emits_more") "events.on('go', function()\n"
                            "  events.emit('emits_more.fine', {})\n"
                            "  events.emit('emits_more.secret', {})\n"
                            "end)\n");
    mod("hears", "'emits_more.fine', 'emits_more.secret'", "",
        "events.on('emits_more.fine', function() game.send(2, {fine = true}) end)\n"
        "events.on('emits_more.secret', function() game.send(2, {secret = true}) end)\n");
    struct mods *m = load(NULL, NULL);
    char want[512];
    snprintf(want, sizeof want,
             "%s/listens_more/init.lua:2: events.on: player.joined is not declared in "
             "manifest.handles",
             dir);
    ASSERT_STR(state_of(m, "listens_more"), "failed");
    ASSERT_STR(error_of(m, "listens_more"), want);
    ASSERT_STR(state_of(m, "emits_more"), "running");
    ASSERT_EQ(emit(m, "go", "{}"), 0);
    ASSERT_EQ(sent.n, 1); /* the declared one went through, not the other */
    ASSERT(strstr(sent.json[0], "\"fine\":true") != NULL);
    ASSERT_STR(state_of(m, "emits_more"), "disabled"); /* LIMITS: the first strike */
    snprintf(want, sizeof want,
             "%s/emits_more/init.lua:4: events.emit: emits_more.secret is not declared in "
             "manifest.emits in on go",
             dir);
    ASSERT_STR(error_of(m, "emits_more"), want);
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

static int reason_matches(const char *why, const char *want)
{
    return want[0] == '~' ? strstr(why, want + 1) != NULL : strcmp(why, want) == 0;
}

TEST(hostile_handlers_strike_their_mod_alone_and_the_second_strike_disables_it)
{
    fresh_dir();
    int n = (int) (sizeof HOSTILE / sizeof *HOSTILE);
    for (int i = 0; i < n; i++) {
        char src[1024];
        snprintf(src, sizeof src, "events.on('attack', function()\n%s\nend)\n" ALIVE("%s"),
                 HOSTILE[i].body, HOSTILE[i].name);
        mod(HOSTILE[i].name, "'attack', 'ping'", "'x'", src);
    }
    mod("zz_bystander", "'attack', 'ping'", "",
        "events.on('attack', function() game.send(2, {ok = true}) end)\n" ALIVE("zz_bystander"));
    struct mods_limits lim = LIMITS;
    lim.strikes = 2;
    struct mods *m = load(&lim, NULL);
    ASSERT_EQ(mods_count(m), n + 1);
    for (int i = 0; i < n; i++)
        if (strcmp(state_of(m, HOSTILE[i].name), "running") != 0)
            FAIL_AT("%s did not load: %s", HOSTILE[i].name, error_of(m, HOSTILE[i].name));
    ASSERT_EQ(emit(m, "ping", "{}"), n + 1);

    static const char PREFIX[] = "disabled after 2 strikes; last: ";
    for (int round = 1; round <= 2; round++) {
        memset(&sent, 0, sizeof sent);
        double t0 = now_s();
        ASSERT_EQ(emit(m, "attack", "{}"), 1); /* the bystander's */
        double took = now_s() - t0;
        for (int i = 0; i < n; i++) {
            struct mods_info mi = info_of(m, HOSTILE[i].name);
            const char *want = HOSTILE[i].reason;
            if (mi.strikes != round)
                FAIL_AT("%s: %d strikes in round %d", mi.name, mi.strikes, round);
            if (!reason_matches(mi.last_strike, want))
                FAIL_AT("%s: \"%s\", expected \"%s\"", mi.name, mi.last_strike, want);
            if (strcmp(mi.state, round == 1 ? "running" : "disabled") != 0)
                FAIL_AT("%s is %s in round %d", mi.name, mi.state, round);
            if (round == 1 && mi.error != NULL)
                FAIL_AT("%s: error %s while running", mi.name, mi.error);
            if (round == 2 && (strncmp(mi.error, PREFIX, strlen(PREFIX)) != 0 ||
                               !reason_matches(mi.error + strlen(PREFIX), want)))
                FAIL_AT("%s: \"%s\", expected \"%s%s\"", mi.name, mi.error, PREFIX, want);
        }
        ASSERT_STR(state_of(m, "zz_bystander"), "running");
        ASSERT_EQ(sent.to[2], 1);
        /* every hostile handler is stopped within its budgets: far below a second each */
        if (took > 0.5 * n)
            FAIL_AT("the attack took %.2f s", took);
        if (round == 1) /* after its strike, every mod works as before */
            ASSERT_EQ(emit(m, "ping", "{}"), n + 1);
    }

    /* a disabled mod's events are skipped; the others run */
    memset(&sent, 0, sizeof sent);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    ASSERT_EQ(sent.n, 1);
    ASSERT(strstr(sent.json[0], "\"data\":{\"pong\":\"zz_bystander\"}") != NULL);
    ASSERT_EQ(emit(m, "attack", "{}"), 1);
    mods_free(m);
    rm_dir();
}

/* ---- strikes ------------------------------------------------------------------------------ */

/* the log written while capturing, and the line of it that has needle */
static FILE *log_file;
static char log_path[64], log_buf[65536];

static void capture_log(void)
{
    snprintf(log_path, sizeof log_path, "/tmp/test_mods_log.%d", (int) getpid());
    log_file = fopen(log_path, "w+");
    log_init("t", LOG_INFO);
    log_set_fd(fileno(log_file));
}

static const char *captured_log(void)
{
    log_set_fd(1);
    log_set_level(LOG_OFF);
    rewind(log_file);
    size_t n = fread(log_buf, 1, sizeof log_buf - 1, log_file);
    log_buf[n] = '\0';
    fclose(log_file);
    unlink(log_path);
    return log_buf;
}

static const char *log_line(const char *needle)
{
    static char line[4096];
    const char *hit = strstr(log_buf, needle);
    if (hit == NULL)
        return "(no such line)";
    const char *a = hit, *b = strchr(hit, '\n');
    while (a > log_buf && a[-1] != '\n')
        a--;
    snprintf(line, sizeof line, "%.*s", (int) (b ? b - a : (long) strlen(a)), a);
    return line;
}

TEST(a_mod_keeps_running_and_keeps_its_data_until_its_third_strike)
{
    fresh_dir();
    mod("flaky", "'fail', 'ping'", "",
        "local calls = 0\n"
        "events.on('fail', function() calls = calls + 1 error('boom ' .. calls) end)\n"
        "events.on('ping', function() game.send(1, {calls = calls}) end)\n");
    /* what it hoards stays: each call hits the cap at once */
    mod("hoarder", "'fail'", "",
        "local hoard = {}\n"
        "events.on('fail', function()\n"
        "  while true do hoard[#hoard + 1] = ('x'):rep(100000) .. #hoard end\n"
        "end)\n");
    mod("steady", "'fail', 'ping'", "", "events.on('fail', function() end)\n" ALIVE("steady"));
    capture_log();
    struct mods_limits lim = LIMITS;
    lim.strikes = 3;
    struct mods *m = load(&lim, NULL);
    char want[512];
    for (int k = 1; k <= 2; k++) {
        ASSERT_EQ(emit(m, "fail", "{}"), 1); /* steady's */
        struct mods_info fl = info_of(m, "flaky"), ho = info_of(m, "hoarder");
        ASSERT_STR(fl.state, "running");
        ASSERT(fl.error == NULL);
        ASSERT_EQ(fl.strikes, k);
        snprintf(want, sizeof want, "%s/flaky/init.lua:2: boom %d in on fail", dir, k);
        ASSERT_STR(fl.last_strike, want);
        ASSERT_STR(ho.state, "running");
        ASSERT_EQ(ho.strikes, k);
        ASSERT_STR(ho.last_strike, "memory cap exceeded (4 MiB) in on fail");
        memset(&sent, 0, sizeof sent);
        ASSERT_EQ(emit(m, "ping", "{}"), 2);
        snprintf(want, sizeof want, "{\"t\":\"mod\",\"mod\":\"flaky\",\"data\":{\"calls\":%d}}", k);
        ASSERT_STR(sent.json[0], want);
    }
    ASSERT_EQ(emit(m, "fail", "{}"), 1);
    snprintf(want, sizeof want,
             "disabled after 3 strikes; last: %s/flaky/init.lua:2: boom 3 in on fail", dir);
    ASSERT_STR(state_of(m, "flaky"), "disabled");
    ASSERT_STR(error_of(m, "flaky"), want);
    ASSERT_EQ(info_of(m, "flaky").strikes, 3);
    ASSERT_STR(state_of(m, "hoarder"), "disabled");
    ASSERT_STR(error_of(m, "hoarder"),
               "disabled after 3 strikes; last: memory cap exceeded (4 MiB) in on fail");
    memset(&sent, 0, sizeof sent);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    ASSERT(strstr(sent.json[0], "\"pong\":\"steady\"") != NULL);
    ASSERT_EQ(emit(m, "fail", "{}"), 1);
    ASSERT_EQ(info_of(m, "flaky").strikes, 3);
    mods_free(m);
    captured_log();
    /* strikes at warn with their traceback, the last at error */
    const char *l = log_line("mod flaky: strike 1 of 3: ");
    ASSERT(strstr(l, "\"level\":\"warn\"") != NULL);
    ASSERT(strstr(l, "boom 1 in on fail") != NULL);
    ASSERT(strstr(l, "\"traceback\":\"") != NULL);
    ASSERT(strstr(log_line("mod flaky: strike 2 of 3: "), "boom 2 in on fail") != NULL);
    ASSERT(strstr(log_buf, "mod flaky: strike 3 of 3") == NULL);
    l = log_line("mod flaky disabled after 3 strikes; last: ");
    ASSERT(strstr(l, "\"level\":\"error\"") != NULL);
    ASSERT(strstr(l, "boom 3 in on fail") != NULL);
    l = log_line("mod hoarder: strike 2 of 3: memory cap exceeded (4 MiB) in on fail");
    ASSERT(strstr(l, "\"level\":\"warn\"") != NULL);
    rm_dir();
}

TEST(with_one_strike_the_first_failure_disables)
{
    fresh_dir();
    mod("flaky", "'fail', 'ping'", "",
        "events.on('fail', function() error('boom') end)\n" ALIVE("flaky"));
    struct mods_limits lim = LIMITS;
    lim.strikes = 1;
    struct mods *m = load(&lim, NULL);
    ASSERT_EQ(emit(m, "fail", "{}"), 0);
    char want[512];
    snprintf(want, sizeof want, "%s/flaky/init.lua:1: boom in on fail", dir);
    ASSERT_STR(state_of(m, "flaky"), "disabled");
    ASSERT_STR(error_of(m, "flaky"), want);
    ASSERT_STR(info_of(m, "flaky").last_strike, want);
    ASSERT_EQ(emit(m, "ping", "{}"), 0);
    mods_free(m);
    rm_dir();
}

TEST(after_a_memory_bomb_the_mod_has_its_memory_back)
{
    fresh_dir();
    /* the bomb's garbage fills the cap each time; work needs a quarter of it */
    mod("bomber", "'bomb', 'work'", "",
        "events.on('bomb', function()\n"
        "  local t = {} while true do t[#t + 1] = ('x'):rep(1000) .. #t end\n"
        "end)\n"
        "events.on('work', function()\n"
        "  local s, t = ('y'):rep(2^20), {}\n"
        "  for i = 1, 1000 do t[i] = i end\n"
        "  game.send(1, {n = #s + #t})\n"
        "end)\n");
    struct mods_limits lim = LIMITS;
    lim.strikes = 100;
    struct mods *m = load(&lim, NULL);
    for (int k = 1; k <= 10; k++) {
        ASSERT_EQ(emit(m, "bomb", "{}"), 0);
        ASSERT_STR(info_of(m, "bomber").last_strike, "memory cap exceeded (4 MiB) in on bomb");
        memset(&sent, 0, sizeof sent);
        ASSERT_EQ(emit(m, "work", "{}"), 1);
        ASSERT_STR(sent.json[0], "{\"t\":\"mod\",\"mod\":\"bomber\",\"data\":{\"n\":1049576}}");
    }
    ASSERT_STR(state_of(m, "bomber"), "running");
    ASSERT_EQ(info_of(m, "bomber").strikes, 10);
    mods_free(m);
    rm_dir();
}

TEST(a_failure_never_leaves_the_sandbox_half_way)
{
    fresh_dir();
    /* the memory cap is hit 16 callbacks deep, so the error unwinds through the sandbox's
     * wrappers, where the hook raises again every 100 instructions: at a different point of
     * them in each round (k instructions before the bomb). Whatever it interrupted, the next
     * call nests as deep as the limit allows (16). */
    mod("nester", "'trap', 'ok'", "",
        "local function down(n, bottom)\n"
        "  if n == 0 then return bottom() end\n"
        "  return (('x'):gsub('x', function() return tostring(down(n - 1, bottom)) end))\n"
        "end\n"
        "events.on('trap', function(e)\n"
        "  down(16, function() for i = 1, e.k do end return ('x'):rep(2^30) end)\n"
        "end)\n"
        "events.on('ok', function() down(16, function() return 0 end) game.send(1, {}) end)\n");
    struct mods_limits lim = LIMITS;
    lim.strikes = 1000;
    struct mods *m = load(&lim, NULL);
    for (int k = 1; k <= 200; k++) {
        char payload[32];
        snprintf(payload, sizeof payload, "{\"k\":%d}", k);
        ASSERT_EQ(emit(m, "trap", payload), 0);
        ASSERT_STR(info_of(m, "nester").last_strike, "memory cap exceeded (4 MiB) in on trap");
        if (emit(m, "ok", "{}") != 1)
            FAIL_AT("round %d: %s", k, info_of(m, "nester").last_strike);
    }
    ASSERT_EQ(info_of(m, "nester").strikes, 200);
    mods_free(m);
    rm_dir();
}

TEST(a_mod_takes_at_most_one_strike_per_budget)
{
    fresh_dir();
    /* one game event, 100 emits to a sink that raises on each: one strike */
    mod("flood", "'go'", "'x'",
        "events.on('go', function()\n"
        "  local ran = 0\n"
        "  for i = 1, 100 do ran = ran + events.emit('x', {}) end\n"
        "  game.send(1, {ran = ran})\n"
        "end)\n");
    mod("sink", "'x'", "", "events.on('x', function() error('no') end)\n");
    struct mods_limits lim = LIMITS;
    lim.strikes = 3;
    struct mods *m = load(&lim, NULL);
    for (int k = 1; k <= 2; k++) {
        memset(&sent, 0, sizeof sent);
        ASSERT_EQ(emit(m, "go", "{}"), 1);
        ASSERT_STR(sent.json[0], "{\"t\":\"mod\",\"mod\":\"flood\",\"data\":{\"ran\":0}}");
        ASSERT_STR(state_of(m, "sink"), "running");
        ASSERT_EQ(info_of(m, "sink").strikes, k);
    }
    ASSERT_EQ(emit(m, "go", "{}"), 1);
    ASSERT_STR(state_of(m, "sink"), "disabled");
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
    mod("probe", "'probe'", "", src);
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
    mod("escape", "'probe'", "", src);
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
    mod("copier", "'go', 'ping'", "",
        "events.on('go', function()\n"
        "  local s = string.rep('x', 2^20)\n"
        "  while true do local t = s .. 'y' end\n"
        "end)\n" ALIVE("copier"));
    mod("fine", "'ping'", "", ALIVE("fine"));
    struct mods_limits lim = {16u << 20, 1000000000, 100, 2};
    struct mods *m = load(&lim, NULL);
    double t0 = now_s();
    ASSERT_EQ(emit(m, "go", "{}"), 0);
    ASSERT_STR(state_of(m, "copier"), "running");
    ASSERT_STR(info_of(m, "copier").last_strike, "time budget exceeded (100 ms) in on go");
    ASSERT_EQ(emit(m, "ping", "{}"), 2); /* its budget is fresh again */
    ASSERT_EQ(emit(m, "go", "{}"), 0);
    double took = now_s() - t0;
    ASSERT_STR(state_of(m, "copier"), "disabled");
    ASSERT_STR(error_of(m, "copier"),
               "disabled after 2 strikes; last: time budget exceeded (100 ms) in on go");
    ASSERT(took < 10);
    ASSERT_EQ(emit(m, "ping", "{}"), 1);
    mods_free(m);
    rm_dir();
}

TEST(an_endless_cycle_of_events_stops_at_the_depth_limit)
{
    fresh_dir();
    mod("a", "'ping_a'", "'ping_b'",
        "events.on('ping_a', function() events.emit('ping_b', {}) end)\n");
    mod("b", "'ping_b'", "'ping_c'",
        "events.on('ping_b', function() events.emit('ping_c', {}) end)\n");
    mod("c", "'ping_c', 'ping_a'", "'ping_a', 'ping_b'",
        "events.on('ping_c', function() events.emit('ping_a', {}) end)\n"
        "events.on('ping_a', function() events.emit('ping_b', {}) end)\n");
    /* a ring of 9 mods passing a token: the 9th emit is one too deep */
    for (int i = 0; i < 9; i++) {
        char name[32], src[256], on[32], out[32];
        snprintf(name, sizeof name, "ring%d", i);
        snprintf(on, sizeof on, "'token%d'", i);
        snprintf(out, sizeof out, "'token%d'", i + 1);
        snprintf(src, sizeof src, "events.on('token%d', function() events.emit('token%d', {}) end)",
                 i, i + 1);
        mod(name, on, out, src);
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
        char name[32], src[512], next[64] = "0"; /* the 8th, at depth 8, emits no more */
        char on[32], out[32] = "";
        snprintf(name, sizeof name, "deep%d", i);
        snprintf(on, sizeof on, "'deep%d'", i);
        if (i < 7) {
            snprintf(next, sizeof next, "events.emit('deep%d', {})", i + 1);
            snprintf(out, sizeof out, "'deep%d'", i + 1);
        }
        snprintf(src, sizeof src,
                 "local function down(n)\n"
                 "  if n == 0 then return %s end\n"
                 "  return (('x'):gsub('x', function() return tostring(down(n - 1)) end))\n"
                 "end\n"
                 "events.on('deep%d', function() down(15) game.send(1, {level = %d}) end)\n",
                 next, i, i);
        mod(name, on, out, src);
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
    mod("flood", "'go'", "'x'",
        "events.on('go', function() for i = 1, 100 do events.emit('x', {}) end end)");
    mod("sink", "'x'", "", "events.on('x', function() for i = 1, 5000 do end end)");
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
    mod("chatty", "'go'", "",
        "events.on('go', function(e)\n"
        "  game.log('warn', 'hello ' .. e.who)\n"
        "  for i = 1, 1000 do game.log('warn', 'flood') end\n"
        "  game.log('debug', 'not shown')\n"
        "end)\n");
    mod("bad_level", "'go'", "", "events.on('go', function() game.log('loud', 'x') end)\n");
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
    mod("words", "'go'", "",
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
    struct mods_limits lim = {16u << 20, 10000000, 5000, 1};
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
    mod("good", "'hit'", "", "events.on('hit', function() end)\n");
    mod("bad", "'hit'", "", "events.on('hit', function() error('x') end)\n");
    mod("broken", "", "", "this is not lua\n");
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

static lua_State *game_vm(struct lb_ctx *ctx)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lb_set_ctx(L, ctx);
    bindings_preload_json(L);
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
    mod("welcome", "'player.level_up'", "",
        "events.on('player.level_up', function(e)\n"
        "  game.send(e.player_id, {type = 'mod', text = 'level ' .. e.level})\n"
        "end)\n");
    mod("broken", "", "", "error('no')\n");
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
                      "  tostring(t[1].error ~= nil) .. ' ' .. t[2].name .. ' ' .. t[2].state ..\n"
                      "  ' ' .. t[2].version .. ' ' .. t[2].strikes .. ' ' ..\n"
                      "  tostring(t[2].last_strike)"),
               "2 broken failed true welcome running 1.0.0 0 nil");
    lua_close(L);
    mods_free(ctx.mods);
    rm_dir();
}

/* ---- what an emit costs ------------------------------------------------------------------ */

TEST(what_one_emit_to_one_trivial_handler_costs)
{
    fresh_dir();
    mod("counter", "'tick'", "", "local n = 0\nevents.on('tick', function(e) n = n + e.d end)\n");
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
    RUN(each_bad_manifest_fails_its_mod_with_a_clear_error);
    RUN(a_manifest_may_compute_its_data_but_reaches_nothing);
    RUN(mods_load_dependencies_first_then_by_order_then_by_name);
    RUN(a_dependency_missing_failed_or_in_a_cycle_fails_its_dependents);
    RUN(events_not_declared_in_the_manifest_are_refused);
    RUN(hostile_handlers_strike_their_mod_alone_and_the_second_strike_disables_it);
    RUN(a_mod_keeps_running_and_keeps_its_data_until_its_third_strike);
    RUN(with_one_strike_the_first_failure_disables);
    RUN(after_a_memory_bomb_the_mod_has_its_memory_back);
    RUN(a_failure_never_leaves_the_sandbox_half_way);
    RUN(a_mod_takes_at_most_one_strike_per_budget);
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
