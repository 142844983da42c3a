/* mods.c -- the mods and their sandboxes (mods.h, docs/modding.md).
 *
 * One lua_State per mod, made by lua_newstate with an allocator that counts the mod's bytes
 * and refuses past its cap. The JIT is off in it (a count hook never fires in compiled code),
 * and a count hook every HOOK_STEP instructions adds up the instructions and the time of the
 * running budget. Whatever stops a mod is written once in mod->fault; from then on the hook
 * raises it again every HOOK_STEP instructions, the sandbox's pcall/xpcall/coroutine.resume
 * re-raise it (mods_sandbox.lua) and the host checks it after every call, so a mod cannot
 * catch its way past a spent budget or a refused allocation.
 *
 * The mod's environment is built by core/mods_sandbox.lua (compiled in as mods__sandbox_lua); the
 * VM's own globals are emptied afterwards. Every call into a mod VM goes through lua_cpcall,
 * so an error anywhere (a refused allocation included) is caught, never a panic. A mod is
 * never re-entered (events emitted while its handler runs skip it), so a call into a VM
 * always starts from an idle VM and a stopped mod's VM can be closed as soon as it returns.
 *
 * A strike (a handler that failed) leaves the fault set until the call into the VM has
 * returned, so nothing of the mod runs past it; then recover() clears it, resets the
 * sandbox's own bookkeeping (the hook may have raised in the middle of it) and collects the
 * mod's garbage (a memory bomb leaves its cap full of it), with the hook off: that code is
 * ours.
 *
 * A manifest is evaluated in a VM of its own with no library at all, under a small memory cap
 * and instruction budget, and its table checked from C (read_manifest).
 *
 * Registry of a mod VM: HANDLERS_KEY {event = {fn, ...}}, ENV_KEY the mod's globals,
 * ENCODE_KEY mmo.json's encode, DECODE_KEY a strict cjson.safe decode, RESET_KEY the sandbox's
 * reset(). */
#include "mods.h"
#include "bindings.h"
#include "err.h"
#include "log.h"
#include "luacap.h"
#include "mem.h"
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

/* core/mods_sandbox.lua, built in (CMakeLists.txt, tools/cmake/embed.cmake) */
extern const unsigned char mods__sandbox_lua[];
extern const size_t mods__sandbox_lua_len;

#define HOOK_STEP             100 /* instructions between two looks at the budget */
#define PATTERN_LIMIT         1e7 /* bound on the steps of a Lua pattern run in C (mods_sandbox.lua) */
#define PATTERN_STEPS         16         /* such steps per instruction of the budget */
#define MAX_FILE              (4u << 20) /* bytes of a mod's source */
#define MAX_SUBS              256        /* distinct events one mod subscribes to */
#define MAX_LOGS              100        /* game.log lines per budget; more are dropped */
#define MAX_SENDS             100        /* game.send per budget; more raise */
#define MAX_LOG_BYTES         2000       /* of one game.log message */
#define MAX_NAME              64         /* of a mod and of an event */
#define MAX_DEPENDS           64         /* entries of a manifest's depends */
#define MAX_VERSION           32         /* of a manifest's version */
#define MAX_ORDER             1000000    /* of a manifest's order */
#define DEFAULT_ORDER         100
#define MANIFEST_FILE         (64u << 10) /* bytes of a manifest's source */
#define MANIFEST_MEMORY       (1u << 20)  /* its VM's memory cap */
#define MANIFEST_INSTRUCTIONS 100000      /* its instruction budget */

#define HANDLERS_KEY "mods.handlers"
#define ENV_KEY      "mods.env"
#define ENCODE_KEY   "mods.encode"
#define DECODE_KEY   "mods.decode"
#define RESET_KEY    "mods.reset"

enum { MOD_RUNNING, MOD_FAILED, MOD_DISABLED };
static const char *const STATE_NAMES[] = {"running", "failed", "disabled"};

struct mod_sub {
    char *event;
    struct metric_series *ok, *err, *seconds; /* made on first use */
};

/* a list of names from a manifest (owned strings) */
struct names {
    char **v;
    int n;
};

struct mod {
    struct mods *set;
    char *name;
    char *path;     /* of its init.lua (of the file itself when it is no directory) */
    char *manifest; /* of its manifest.lua; NULL when it is no directory */
    /* the manifest's, once read */
    char *version;
    struct names handles, emits, depends;
    long order;
    int state;
    int resolved; /* loaded or failed: its place in the set's order is known */
    int idx;      /* while the set is ordered: its index in the list by name */
    char *error;  /* why it failed or was disabled (owned); NULL while running */
    int strikes;
    unsigned strike_epoch; /* the budget of the latest strike: no more events during it */
    char *last_strike;     /* why the latest one (owned) */
    int recover;           /* struck: recover() once the call into L has returned */
    lua_State *L;          /* NULL once closed */
    size_t mem, mem_cap;
    size_t mem_gc; /* mem after the last full collection */
    /* the running budget */
    unsigned epoch;
    long steps;
    double t_used, t_start;
    int in_lua; /* t_start is valid: the mod's code is running, not waiting in events.emit */
    int logs, logs_dropped, sends;
    int loading;
    char fault[192]; /* why it must stop now; "" while fine */
    int active;      /* a call into L is in progress: events reaching the mod now are skipped */
    struct mod_sub **subs;
    int nsubs;
};

struct mods {
    struct mod **v;
    int n;
    struct mods_limits lim;
    struct mods_host host;
    struct metric_family *f_calls, *f_seconds, *f_state;
    unsigned epoch;
    int depth; /* deliveries in progress (nested emits) */
};

static double now_mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

static void set_fault(struct mod *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_fault(struct mod *md, const char *fmt, ...)
{
    if (md->fault[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(md->fault, sizeof md->fault, fmt, ap);
    va_end(ap);
}

/* ---- the allocator and the hook ---------------------------------------------------------- */

static void *mod_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct mod *md = ud;
    size_t held = ptr ? osize : 0;
    if (nsize > held && md->mem - held + nsize > md->mem_cap) {
        if (md->mem_cap % (1u << 20) == 0)
            set_fault(md, "memory cap exceeded (%zu MiB)", md->mem_cap >> 20);
        else
            set_fault(md, "memory cap exceeded (%zu bytes)", md->mem_cap);
        return NULL;
    }
    return mem_lua_realloc(&md->mem, ptr, osize, nsize);
}

static struct mod *mod_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static double time_used(const struct mod *md)
{
    return md->t_used + (md->in_lua ? now_mono() - md->t_start : 0);
}

static void enter_lua(struct mod *md)
{
    md->t_start = now_mono();
    md->in_lua = 1;
}

static void leave_lua(struct mod *md)
{
    if (md->in_lua)
        md->t_used += now_mono() - md->t_start;
    md->in_lua = 0;
}

/* Raise if md must stop: budget spent now or before, memory cap hit, disabled. */
static void check_budget(lua_State *L, struct mod *md)
{
    const struct mods_limits *lim = &md->set->lim;
    if (lim->instructions > 0 && md->steps > lim->instructions)
        set_fault(md, "instruction budget exceeded (%ld)", lim->instructions);
    else if (lim->time_ms > 0 && time_used(md) * 1000 > (double) lim->time_ms)
        set_fault(md, "time budget exceeded (%ld ms)", lim->time_ms);
    if (md->fault[0])
        luaL_error(L, "%s", md->fault);
}

static void hook(lua_State *L, lua_Debug *ar)
{
    struct mod *md = mod_of(L);
    md->steps += HOOK_STEP;
    check_budget(L, md);
}

/* A new budget: instructions, time, logs and sends. */
static void reset_budget(struct mod *md)
{
    md->epoch = md->set->epoch;
    md->steps = 0;
    md->t_used = 0;
    md->logs = md->sends = 0;
}

/* ---- what a mod sees: events.*, game.*, and the sandbox's helpers ------------------------ */

int mods_event_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

static const char *check_event(lua_State *L, int idx)
{
    size_t n;
    const char *name = luaL_checklstring(L, idx, &n);
    if (!mods_event_name_ok(name, n))
        luaL_argerror(L, idx, "not an event name (1 to 64 letters, digits and \"._:-\")");
    return name;
}

static int listed(const struct names *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], name) == 0)
            return 1;
    return 0;
}

static struct mod_sub *sub_find(struct mod *md, const char *event)
{
    for (int i = 0; i < md->nsubs; i++)
        if (strcmp(md->subs[i]->event, event) == 0)
            return md->subs[i];
    return NULL;
}

/* events.on(name, fn): fn(payload) runs for every event `name` this mod receives */
static int l_on(lua_State *L)
{
    struct mod *md = mod_of(L);
    const char *name = check_event(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!listed(&md->handles, name))
        luaL_error(L, "events.on: %s is not declared in manifest.handles", name);
    int known = sub_find(md, name) != NULL;
    if (!known && md->nsubs >= MAX_SUBS)
        luaL_error(L, "events.on: more than %d events", MAX_SUBS);
    lua_getfield(L, LUA_REGISTRYINDEX, HANDLERS_KEY);
    lua_getfield(L, -1, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int) lua_objlen(L, -2) + 1);
    if (!known) {
        md->subs = xrealloc(md->subs, sizeof *md->subs * (size_t) (md->nsubs + 1));
        struct mod_sub *sub = xcalloc(1, sizeof *sub);
        sub->event = xstrdup(name);
        md->subs[md->nsubs++] = sub; /* each its own block: a running call keeps its pointer */
    }
    return 0;
}

/* [.., v] -> JSON text of v, an object; raises when v cannot be encoded or is not an object */
static const char *encode_object(lua_State *L, int idx, const char *fname, size_t *len)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, LUA_REGISTRYINDEX, ENCODE_KEY);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    const char *json = lua_tolstring(L, -1, len);
    if (json == NULL || json[0] != '{')
        luaL_error(L, "%s: the payload must be an object (a table with string keys)", fname);
    return json;
}

static int deliver(struct mods *set, struct mod *from, const char *event, const char *json,
                   size_t len);

/* events.emit(name, payload) -> n: payload to the other mods' handlers of name, now */
static int l_emit(lua_State *L)
{
    struct mod *md = mod_of(L);
    struct mods *set = md->set;
    const char *name = check_event(L, 1);
    if (!listed(&md->emits, name))
        luaL_error(L, "events.emit: %s is not declared in manifest.emits", name);
    size_t len;
    const char *json = encode_object(L, 2, "events.emit", &len);
    if (md->loading)
        luaL_error(L, "events.emit: not while the mod loads (emit from a handler)");
    if (set->depth >= MODS_MAX_DEPTH)
        luaL_error(L, "events.emit: nested deeper than %d (an endless cycle of events?)",
                   MODS_MAX_DEPTH);
    leave_lua(md);
    int n = deliver(set, md, name, json, len);
    if (set->host.emit)
        set->host.emit(set->host.ud, md->name, name, json, len);
    enter_lua(md);
    lua_pushinteger(L, n);
    return 1;
}

/* game.send(player_id, table): {"t":"mod","mod":NAME,"data":table} to that player, through
 * the host */
static int l_send(lua_State *L)
{
    struct mod *md = mod_of(L);
    lua_Number id = luaL_checknumber(L, 1);
    luaL_argcheck(L, id >= 1 && id <= 9007199254740992.0 && id == floor(id), 1,
                  "a player id expected");
    size_t len;
    const char *json = encode_object(L, 2, "game.send", &len);
    if (md->set->host.send == NULL)
        luaL_error(L, "game.send: unavailable on this node");
    if (++md->sends > MAX_SENDS)
        luaL_error(L, "game.send: more than %d messages in one call", MAX_SENDS);
    /* the WebSocket message: who sent it is the core's to say, not the mod's */
    const char *msg =
        lua_pushfstring(L, "{\"t\":\"mod\",\"mod\":\"%s\",\"data\":%s}", md->name, json);
    md->set->host.send(md->set->host.ud, (int64_t) id, msg, lua_objlen(L, -1));
    return 0;
}

/* game.log(level, message): a line of the node's log, tagged with the mod's name */
static int l_log(lua_State *L)
{
    struct mod *md = mod_of(L);
    const char *lv = luaL_checkstring(L, 1);
    int level = log_level_parse(lv);
    luaL_argcheck(L, level >= LOG_DEBUG && level <= LOG_ERROR, 1,
                  "\"debug\", \"info\", \"warn\" or \"error\" expected");
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    if (log__level > level)
        return 0;
    if (++md->logs > MAX_LOGS) {
        md->logs_dropped++;
        return 0;
    }
    char fields[MAX_NAME + 16];
    snprintf(fields, sizeof fields, "\"mod\":\"%s\"", md->name); /* names need no escaping */
    log_write(level, "mods", NULL, fields, "%.*s",
              (int) (len > MAX_LOG_BYTES ? MAX_LOG_BYTES : len), msg);
    return 0;
}

/* game.now() -> seconds since the epoch (float, microseconds) */
static int l_now(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (double) tv.tv_sec + (double) tv.tv_usec / 1e6);
    return 1;
}

/* fault() -> nil | why the mod must stop (mods_sandbox.lua re-raises it) */
static int l_fault(lua_State *L)
{
    struct mod *md = mod_of(L);
    if (md->fault[0] == '\0')
        return 0;
    lua_pushstring(L, md->fault);
    return 1;
}

/* charge(steps): work done in C by a pattern function, counted as steps / PATTERN_STEPS
 * instructions; raises when that spends the budget */
static int l_charge(lua_State *L)
{
    struct mod *md = mod_of(L);
    md->steps += (long) (luaL_checknumber(L, 1) / PATTERN_STEPS);
    check_budget(L, md);
    return 0;
}

/* plainfind(s, p, init) -> start, end | nil: string.find(s, p, init, true) in linear time */
static int l_plainfind(lua_State *L)
{
    size_t n, m;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *p = luaL_checklstring(L, 2, &m);
    lua_Integer init = luaL_checkinteger(L, 3);
    if (init < 1)
        init = 1;
    if ((size_t) init > n + 1)
        return 0;
    const char *hit = memmem(s + init - 1, n - (size_t) (init - 1), p, m);
    if (hit == NULL)
        return 0;
    lua_pushinteger(L, (lua_Integer) (hit - s) + 1);
    lua_pushinteger(L, (lua_Integer) (hit - s) + (lua_Integer) m);
    return 2;
}

/* message handler: the message with a traceback */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ---- making a mod's VM -------------------------------------------------------------------- */

static void open_lib(lua_State *L, lua_CFunction fn)
{
    lua_pushcfunction(L, fn);
    lua_call(L, 0, 0);
}

static const char DECODER[] = "local safe = require 'cjson.safe'\n"
                              "local dec = safe.new()\n"
                              "dec.decode_invalid_numbers(false)\n"
                              "dec.decode_max_depth(128)\n"
                              "return dec.decode\n";

/* lua_cpcall body: libraries, JSON, the environment; then the VM's globals are emptied */
static int setup_vm(lua_State *L)
{
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    open_lib(L, luaopen_base);
    open_lib(L, luaopen_string);
    open_lib(L, luaopen_table);
    open_lib(L, luaopen_math);
    open_lib(L, luaopen_package);
    bindings_preload_json(L);

    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    lua_setfield(L, LUA_REGISTRYINDEX, ENCODE_KEY);
    int json = lua_gettop(L);
    if (luaL_loadbuffer(L, DECODER, sizeof DECODER - 1, "=mods.decoder") != 0)
        return lua_error(L);
    lua_call(L, 0, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, DECODE_KEY);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, HANDLERS_KEY);

    /* the host table of mods_sandbox.lua */
    lua_createtable(L, 0, 5);
    static const luaL_Reg EVENTS[] = {{"on", l_on}, {"emit", l_emit}, {NULL, NULL}};
    static const luaL_Reg GAME[] = {{"send", l_send}, {"log", l_log}, {"now", l_now}, {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, EVENTS);
    lua_setfield(L, -2, "events");
    lua_newtable(L);
    luaL_register(L, NULL, GAME);
    lua_getfield(L, json, "null");
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "game");
    lua_pushcfunction(L, l_fault);
    lua_setfield(L, -2, "fault");
    lua_pushcfunction(L, l_charge);
    lua_setfield(L, -2, "charge");
    lua_pushcfunction(L, l_plainfind);
    lua_setfield(L, -2, "plainfind");
    lua_pushnumber(L, PATTERN_LIMIT);
    lua_setfield(L, -2, "pattern_limit");
    if (luaL_loadbuffer(L, (const char *) mods__sandbox_lua, mods__sandbox_lua_len,
                        "=mods_sandbox") != 0)
        return lua_error(L);
    lua_insert(L, -2);
    lua_call(L, 1, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, RESET_KEY);
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    lua_setfield(L, LUA_REGISTRYINDEX, ENV_KEY);

    /* strings' methods are the guarded ones, and their metatable is out of reach */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_getfield(L, env, "string");
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);

    /* nothing is left in the VM's own globals (string.dump, require, load... included) */
    lua_getfield(L, LUA_GLOBALSINDEX, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, LUA_GLOBALSINDEX)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, LUA_GLOBALSINDEX);
    }
    lua_settop(L, 0);
    return 0;
}

struct chunk {
    const char *src;
    size_t len;
    const char *chunkname;
};

/* lua_cpcall body: compile the source (text only) and run it in the mod's environment */
static int run_chunk(lua_State *L)
{
    struct chunk *c = lua_touserdata(L, 1);
    if (c->len > 0 && c->src[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "%s: bytecode is not allowed, only Lua source", c->chunkname + 1);
    lua_pushcfunction(L, traceback);
    if (luaL_loadbufferx(L, c->src, c->len, c->chunkname, "t") != 0)
        return lua_error(L); /* mode "t": bytecode after a "#!" line too */
    lua_getfield(L, LUA_REGISTRYINDEX, ENV_KEY);
    lua_setfenv(L, -2);
    if (lua_pcall(L, 0, 0, -2) != 0)
        return lua_error(L);
    return 0;
}

static int full_gc(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

/* The error at the top of L if it is a string, else NULL: converting a number would allocate,
 * outside of any protected call. */
static const char *err_text(lua_State *L)
{
    return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

/* ---- states, metrics, failures ------------------------------------------------------------ */

static void update_gauge(struct mods *set)
{
    if (set->f_state == NULL)
        return;
    int count[3] = {0, 0, 0};
    for (int i = 0; i < set->n; i++)
        count[set->v[i]->state]++;
    for (int s = 0; s < 3; s++) {
        const char *v[] = {STATE_NAMES[s]};
        metrics_set(metrics_series(set->f_state, v), count[s]);
    }
}

/* The first line of msg (NULL: none) into out. */
static void first_line(char *out, size_t cap, const char *msg)
{
    if (msg == NULL)
        msg = "(error object is not a string)";
    size_t n = strcspn(msg, "\n");
    snprintf(out, cap, "%.*s", (int) n, msg);
}

/* What stopped or struck md: its fault if it has one, else the first line of msg; then where
 * ("in on EVENT", "while loading"; NULL: nothing). */
static void describe(const struct mod *md, const char *msg, const char *where, char *out,
                     size_t cap)
{
    char line[400];
    if (md->fault[0])
        snprintf(line, sizeof line, "%s", md->fault);
    else
        first_line(line, sizeof line, msg);
    if (where)
        snprintf(out, cap, "%s %s", line, where);
    else
        snprintf(out, cap, "%s", line);
}

/* A line of the log about md, with trace (a Lua message and its traceback; NULL: none) as the
 * field "traceback" when it has more than one line. */
static void log_mod(const struct mod *md, int level, const char *trace, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_mod(const struct mod *md, int level, const char *trace, const char *fmt, ...)
{
    if (log__level > level)
        return;
    char fields[2048], msg[1200];
    size_t o = (size_t) snprintf(fields, sizeof fields, "\"mod\":\"%s\"", md->name);
    if (trace && strchr(trace, '\n')) {
        o += (size_t) snprintf(fields + o, sizeof fields - o, ",\"traceback\":\"");
        o += log_json_escape(fields + o, sizeof fields - o - 2, trace, strlen(trace));
        snprintf(fields + o, sizeof fields - o, "\"");
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_write(level, "mods", NULL, fields, "%s", msg);
}

/* Stop md for good: state (MOD_FAILED or MOD_DISABLED) and why (one line), logged at error with
 * trace. Its VM is closed once no call into it is left. */
static void halt(struct mod *md, int state, const char *why, const char *trace)
{
    if (md->state != MOD_RUNNING)
        return;
    md->state = state;
    md->error = xstrdup(why);
    set_fault(md, "mod disabled");
    update_gauge(md->set);
    if (state == MOD_FAILED)
        log_mod(md, LOG_ERROR, trace, "mod %s failed to load: %s", md->name, why);
    else if (strncmp(why, "disabled ", 9) == 0)
        log_mod(md, LOG_ERROR, trace, "mod %s %s", md->name, why);
    else
        log_mod(md, LOG_ERROR, trace, "mod %s disabled: %s", md->name, why);
}

/* halt() with why made of msg (the whole Lua message) and where, as describe() does */
static void stop_mod(struct mod *md, int state, const char *msg, const char *where)
{
    char why[600];
    describe(md, msg, where, why, sizeof why);
    halt(md, state, why, msg);
}

/* A handler of md failed (msg: the Lua message, NULL: none; where: "in on EVENT"): a strike.
 * The Nth since md was loaded disables it; before that md is logged at warn, receives nothing
 * more during this budget, and recovers once the call into its VM has returned. */
static void strike(struct mod *md, const char *msg, const char *where)
{
    if (md->state != MOD_RUNNING)
        return;
    char why[600];
    describe(md, msg, where, why, sizeof why);
    int max = md->set->lim.strikes > 1 ? md->set->lim.strikes : 1;
    md->strikes++;
    md->strike_epoch = md->set->epoch;
    free(md->last_strike);
    md->last_strike = xstrdup(why);
    if (md->strikes >= max) {
        char dis[700];
        if (max > 1)
            snprintf(dis, sizeof dis, "disabled after %d strikes; last: %s", md->strikes, why);
        halt(md, MOD_DISABLED, max > 1 ? dis : why, msg);
        return;
    }
    md->recover = 1;
    log_mod(md, LOG_WARN, msg, "mod %s: strike %d of %d: %s", md->name, md->strikes, max, why);
}

/* lua_cpcall body: the sandbox's reset() and a full collection */
static int reset_vm(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, RESET_KEY);
    lua_call(L, 0, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

/* After a strike, once the call into md's VM has returned: the fault cleared, the sandbox's
 * bookkeeping reset and the garbage collected (a memory bomb leaves the cap full of it), with
 * the hook off: that code is ours, and the budget may be spent. */
static void recover(struct mod *md)
{
    md->recover = 0;
    md->fault[0] = '\0';
    lua_sethook(md->L, NULL, 0, 0);
    /* the garbage first: a bomb can leave the cap so full that the call into the VM (lua_cpcall
     * allocates) or the sandbox's reset cannot get its few bytes. A full collection raises
     * nothing here: a mod's VM has no finalizers (no userdata, no FFI). */
    lua_gc(md->L, LUA_GCCOLLECT, 0);
    int st = lua_cpcall(md->L, reset_vm, NULL);
    lua_sethook(md->L, hook, LUA_MASKCOUNT, HOOK_STEP);
    if (st != 0 || md->fault[0]) {
        stop_mod(md, MOD_DISABLED, st ? err_text(md->L) : NULL, "while recovering from a strike");
        lua_settop(md->L, 0);
        return;
    }
    md->mem_gc = md->mem;
}

/* Once no call into md's VM is left: recover from a strike; close the VM if md is stopped.
 * Else collect its garbage when it holds more than half its cap and has grown by an eighth of
 * it since the last collection: LuaJIT does not collect when an allocation is refused, so
 * garbage left lying could make a mod hit its cap with little live data (the growth rule
 * keeps a mod with a lot of live data from costing a full collection every call). */
static void after_call(struct mod *md)
{
    if (md->active > 0 || md->L == NULL)
        return;
    if (md->state == MOD_RUNNING && md->recover)
        recover(md);
    if (md->state != MOD_RUNNING) {
        lua_close(md->L);
        md->L = NULL;
        return;
    }
    if (md->mem > md->mem_cap / 2 && md->mem > md->mem_gc + md->mem_cap / 8) {
        if (lua_cpcall(md->L, full_gc, NULL) != 0)
            lua_settop(md->L, 0);
        md->mem_gc = md->mem;
    }
}

static void series_for(struct mods *set, struct mod *md, struct mod_sub *sub)
{
    if (set->f_calls == NULL || sub->ok)
        return;
    const char *ok[] = {md->name, sub->event, "ok"}, *err[] = {md->name, sub->event, "error"};
    const char *lab[] = {md->name, sub->event};
    sub->ok = metrics_series(set->f_calls, ok);
    sub->err = metrics_series(set->f_calls, err);
    sub->seconds = metrics_series(set->f_seconds, lab);
}

/* ---- delivering events -------------------------------------------------------------------- */

struct call {
    struct mod *md;
    struct mod_sub *sub;
    const char *json;
    size_t len;
    int ran;
    int bad_payload;
};

/* lua_cpcall body: decode the payload, run md's handlers of the event in turn */
static int run_handlers(lua_State *L)
{
    struct call *c = lua_touserdata(L, 1);
    struct mod *md = c->md;
    struct mods *set = md->set;
    char where[MAX_NAME + 8];
    snprintf(where, sizeof where, "in on %s", c->sub->event);

    lua_getfield(L, LUA_REGISTRYINDEX, DECODE_KEY);
    lua_pushlstring(L, c->json, c->len);
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1)) {
        if (md->fault[0]) /* out of memory inside cjson.safe, which returns it as nil, err */
            return luaL_error(L, "%s", md->fault);
        c->bad_payload = 1;
        return 0;
    }
    int payload = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, HANDLERS_KEY);
    lua_getfield(L, -1, c->sub->event);
    int list = lua_gettop(L);
    int n = (int) lua_objlen(L, list);
    lua_pushcfunction(L, traceback);
    int msgh = lua_gettop(L);
    series_for(set, md, c->sub);
    for (int i = 1; i <= n && md->state == MOD_RUNNING; i++) {
        if (set->depth == 1)
            set->epoch++;
        if (md->epoch != set->epoch)
            reset_budget(md);
        lua_rawgeti(L, list, i);
        lua_pushvalue(L, payload);
        double t0 = now_mono();
        enter_lua(md);
        int st = lua_pcall(L, 1, 0, msgh);
        leave_lua(md);
        metrics_observe(c->sub->seconds, now_mono() - t0);
        if (md->logs_dropped) {
            log_warn("mods", "mod %s: %d game.log lines dropped (at most %d per call)", md->name,
                     md->logs_dropped, MAX_LOGS);
            md->logs_dropped = 0;
        }
        if (st != 0 || md->fault[0]) {
            metrics_inc(c->sub->err, 1);
            strike(md, st ? lua_tostring(L, -1) : NULL, where); /* ends md's turn */
            break;
        }
        metrics_inc(c->sub->ok, 1);
        c->ran++;
    }
    return 0;
}

/* Run md's handlers of sub's event: the number that ran to their end, or ERR_INVALID (the
 * payload does not decode to an object: nothing ran). */
static int call_mod(struct mod *md, struct mod_sub *sub, const char *json, size_t len)
{
    struct call c = {.md = md, .sub = sub, .json = json, .len = len};
    md->active++;
    int st = lua_cpcall(md->L, run_handlers, &c);
    md->active--;
    if (st != 0) {
        char where[MAX_NAME + 8];
        snprintf(where, sizeof where, "in on %s", sub->event);
        strike(md, err_text(md->L), where);
        lua_settop(md->L, 0);
    }
    after_call(md);
    return c.bad_payload ? ERR_INVALID : c.ran;
}

static int deliver(struct mods *set, struct mod *from, const char *event, const char *json,
                   size_t len)
{
    int ran = 0;
    set->depth++;
    for (int i = 0; i < set->n; i++) {
        struct mod *md = set->v[i];
        if (md == from || md->state != MOD_RUNNING || md->active)
            continue; /* a mod whose handler runs now (it emitted this) is not re-entered */
        if (set->depth > 1 && md->strikes > 0 && md->strike_epoch == set->epoch)
            continue; /* struck during this budget: nothing more until the next one */
        struct mod_sub *sub = sub_find(md, event);
        if (sub == NULL)
            continue;
        int r = call_mod(md, sub, json, len);
        if (r < 0) {
            ran = r;
            break;
        }
        ran += r;
    }
    set->depth--;
    return ran;
}

/* A cheap look before anything is decoded: text that is not {...} is no object. */
static int looks_like_object(const char *s, size_t n)
{
    size_t a = 0, b = n;
    while (a < b && strchr(" \t\r\n", s[a]))
        a++;
    while (b > a && strchr(" \t\r\n", s[b - 1]))
        b--;
    return b - a >= 2 && s[a] == '{' && s[b - 1] == '}';
}

int mods_emit(struct mods *m, const char *event, const char *json, size_t len)
{
    if (m == NULL)
        return 0;
    if (!mods_event_name_ok(event, strlen(event)) || !looks_like_object(json, len))
        return ERR_INVALID;
    if (m->depth >= MODS_MAX_DEPTH)
        return ERR_BUSY;
    return deliver(m, NULL, event, json, len);
}

/* ---- loading -------------------------------------------------------------------------- */

static void load_mod(struct mods *set, struct mod *md)
{
    char err[600];
    size_t len;
    char *src = luacap_read_file(md->path, MAX_FILE, &len, err, sizeof err);
    if (src == NULL) {
        stop_mod(md, MOD_FAILED, err, NULL);
        return;
    }
    md->L = lua_newstate(mod_alloc, md);
    if (md->L == NULL) {
        free(src);
        stop_mod(md, MOD_FAILED, "cannot make a Lua VM within the memory cap", NULL);
        return;
    }
    if (lua_cpcall(md->L, setup_vm, NULL) != 0) {
        free(src);
        stop_mod(md, MOD_FAILED, err_text(md->L), "while setting up the sandbox");
        after_call(md);
        return;
    }
    lua_sethook(md->L, hook, LUA_MASKCOUNT, HOOK_STEP);
    char chunkname[1100];
    snprintf(chunkname, sizeof chunkname, "@%s", md->path);
    struct chunk c = {src, len, chunkname};
    set->epoch++;
    reset_budget(md);
    md->loading = 1;
    md->active++;
    enter_lua(md);
    int st = lua_cpcall(md->L, run_chunk, &c);
    leave_lua(md);
    md->active--;
    md->loading = 0;
    free(src);
    if (st != 0 || md->fault[0])
        stop_mod(md, MOD_FAILED, st ? err_text(md->L) : NULL,
                 md->fault[0] ? "while loading" : NULL);
    after_call(md);
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* ---- manifests ----------------------------------------------------------------------------- */

static void names_free(struct names *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* raise "message" (no position: the caller puts the manifest's path in front) */
static int merr(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int merr(lua_State *L, const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lua_pushstring(L, buf);
    return lua_error(L);
}

/* [t.field] on the stack (raw); its Lua type */
static int field(lua_State *L, int t, const char *name)
{
    lua_pushstring(L, name);
    lua_rawget(L, t);
    return lua_type(L, -1);
}

/* t.name, a string (left on the stack), and its length */
static const char *field_string(lua_State *L, int t, const char *name, size_t *len)
{
    int ty = field(L, t, name);
    if (ty == LUA_TNIL)
        merr(L, "%s is missing", name);
    if (ty != LUA_TSTRING)
        merr(L, "%s must be a string (got %s)", name, lua_typename(L, ty));
    return lua_tolstring(L, -1, len);
}

/* t.name, an integer from lo to hi; def when absent (required: an error) */
static long field_int(lua_State *L, int t, const char *name, int required, long def, long lo,
                      long hi)
{
    int ty = field(L, t, name);
    lua_Number v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (ty == LUA_TNIL && !required)
        return def;
    if (ty == LUA_TNIL)
        merr(L, "%s is missing", name);
    if (ty != LUA_TNUMBER || v != floor(v) || v < (lua_Number) lo || v > (lua_Number) hi)
        merr(L, "%s must be an integer from %ld to %ld", name, lo, hi);
    return (long) v;
}

/* t.name, a list of event names (events) or mods' names, into out */
static void field_names(lua_State *L, int t, const char *name, int required, int events, int max,
                        struct names *out)
{
    const char *what = events ? "event names" : "mods' names";
    int ty = field(L, t, name);
    if (ty == LUA_TNIL && !required)
        return;
    if (ty == LUA_TNIL)
        merr(L, "%s is missing (a list of %s)", name, what);
    if (ty != LUA_TTABLE)
        merr(L, "%s must be a list of %s (got %s)", name, what, lua_typename(L, ty));
    int list = lua_gettop(L), n = 0;
    lua_pushnil(L);
    while (lua_next(L, list)) {
        lua_pop(L, 1);
        if (++n > max)
            merr(L, "%s has more than %d entries", name, max);
    }
    lua_pushnil(L);
    while (lua_next(L, list)) { /* n keys, each an integer in 1..n: the list 1..n */
        lua_pop(L, 1);
        lua_Number k = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (k != floor(k) || k < 1 || k > n)
            merr(L, "%s must be a list (1, 2, ...: no other keys)", name);
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            merr(L, "%s[%d] must be a string (got %s)", name, i, luaL_typename(L, -1));
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (events && !mods_event_name_ok(s, len))
            merr(L, "%s[%d] is not an event name (1 to 64 letters, digits and \"._:-\"): \"%.64s\"",
                 name, i, s);
        if (!events && !name_ok(s, len))
            merr(L, "%s[%d] is not a mod's name (1 to 64 letters, digits, '_', '-'): \"%.64s\"",
                 name, i, s);
        if (listed(out, s))
            merr(L, "%s lists \"%s\" twice", name, s);
        out->v = xrealloc(out->v, sizeof *out->v * (size_t) (out->n + 1));
        out->v[out->n++] = xstrdup(s);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static const char *const FIELDS[] = {"name",  "version", "api",   "handles",
                                     "emits", "depends", "order", NULL};

/* The manifest's table at the top of L, checked and copied into md. */
static void check_manifest(lua_State *L, struct mod *md)
{
    int t = lua_gettop(L);
    if (!lua_istable(L, t))
        merr(L, "must return a table (got %s)", luaL_typename(L, t));
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            merr(L, "has a key that is not a field's name (a %s)", luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        int i = 0;
        while (FIELDS[i] && strcmp(FIELDS[i], k) != 0)
            i++;
        if (FIELDS[i] == NULL)
            merr(L,
                 "unknown field \"%.64s\" (the fields: name, version, api, handles, emits, "
                 "depends, order)",
                 k);
    }
    size_t nl, vl;
    const char *name = field_string(L, t, "name", &nl);
    if (nl != strlen(md->name) || strcmp(name, md->name) != 0)
        merr(L, "name \"%.64s\" is not the directory's name \"%s\"", name, md->name);
    const char *version = field_string(L, t, "version", &vl);
    int vok = vl >= 1 && vl <= MAX_VERSION;
    for (size_t i = 0; vok && i < vl; i++) {
        char c = version[i];
        vok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              (c != '\0' && strchr(".-+_", c) != NULL);
    }
    if (!vok)
        merr(L, "version must be 1 to %d letters, digits and \".-+_\" (such as \"1.0.0\")",
             MAX_VERSION);
    md->version = xstrdup(version);
    int api_ty = field(L, t, "api");
    lua_Number api = lua_tonumber(L, -1);
    if (api_ty == LUA_TNIL)
        merr(L, "api is missing (this node: %d)", MODS_API);
    if (api_ty != LUA_TNUMBER || api != floor(api) || fabs(api) > 1e9)
        merr(L, "api must be an integer (this node: %d)", MODS_API);
    if (api != MODS_API)
        merr(L, "api %.0f is not supported (this node: %d)", api, MODS_API);
    field_names(L, t, "handles", 1, 1, MAX_SUBS, &md->handles);
    field_names(L, t, "emits", 1, 1, MAX_SUBS, &md->emits);
    field_names(L, t, "depends", 0, 0, MAX_DEPENDS, &md->depends);
    if (listed(&md->depends, md->name))
        merr(L, "depends lists the mod itself");
    md->order = field_int(L, t, "order", 0, DEFAULT_ORDER, 0, MAX_ORDER);
}

struct manifest_src {
    const char *src;
    size_t len;
    const char *chunkname;
    struct mod *md;
};

/* lua_cpcall body: run the manifest in an empty environment, check what it returns */
static int eval_manifest(lua_State *L)
{
    struct manifest_src *m = lua_touserdata(L, 1);
    if (luaL_loadbufferx(L, m->src, m->len, m->chunkname, "t") != 0)
        return lua_error(L);
    lua_newtable(L);
    lua_setfenv(L, -2);
    lua_call(L, 0, 1);
    check_manifest(L, m->md);
    return 0;
}

/* Read md's manifest into md (version, handles, emits, depends, order). -1 with the reason in
 * err ("PATH: message", or "PATH:LINE: message" from Lua), and md's manifest fields cleared. */
static int read_manifest(struct mod *md, char *err, size_t cap)
{
    size_t len;
    char *src = luacap_read_file(md->manifest, MANIFEST_FILE, &len, err, cap);
    if (src == NULL)
        return -1;
    int rc = -1;
    struct luacap c;
    lua_State *L = NULL;
    if (len > 0 && src[0] == LUA_SIGNATURE[0]) {
        snprintf(err, cap, "%s: bytecode is not allowed, only Lua source", md->manifest);
    } else if ((L = luacap_open(&c, MANIFEST_MEMORY, MANIFEST_INSTRUCTIONS,
                                "a manifest is data")) == NULL) {
        snprintf(err, cap, "%s: cannot make a Lua VM", md->manifest);
    } else {
        char chunkname[1100];
        snprintf(chunkname, sizeof chunkname, "@%s", md->manifest);
        struct manifest_src m = {src, len, chunkname, md};
        if (lua_cpcall(L, eval_manifest, &m) == 0) {
            rc = 0;
        } else if (c.refused) {
            snprintf(err, cap, "%s: memory cap exceeded (%u KiB): a manifest is data", md->manifest,
                     MANIFEST_MEMORY >> 10);
        } else {
            char line[500];
            first_line(line, sizeof line, err_text(L));
            if (strncmp(line, md->manifest, strlen(md->manifest)) == 0)
                snprintf(err, cap, "%s", line); /* "PATH:LINE: ..." from Lua */
            else
                snprintf(err, cap, "%s: %s", md->manifest, line);
        }
        lua_close(L);
    }
    free(src);
    if (rc != 0) {
        free(md->version);
        md->version = NULL;
        names_free(&md->handles);
        names_free(&md->emits);
        names_free(&md->depends);
        md->order = DEFAULT_ORDER;
    }
    return rc;
}

/* ---- the set and its order ------------------------------------------------------------------ */

static int by_name(const void *a, const void *b)
{
    const struct mod *x = *(struct mod *const *) a, *y = *(struct mod *const *) b;
    return strcmp(x->name, y->name);
}

static struct mod *add_mod(struct mods *set, const char *name, const char *path,
                           const char *manifest)
{
    struct mod *md = xcalloc(1, sizeof *md);
    md->set = set;
    md->name = xstrdup(name);
    md->path = xstrdup(path);
    md->manifest = manifest ? xstrdup(manifest) : NULL;
    md->order = DEFAULT_ORDER;
    md->mem_cap = set->lim.memory_bytes;
    if (md->mem_cap == 0)
        md->mem_cap = (size_t) -1;
    set->v = xrealloc(set->v, sizeof *set->v * (size_t) (set->n + 1));
    set->v[set->n++] = md;
    return md;
}

static struct mod *find_mod(struct mods *set, const char *name)
{
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->v[i]->name, name) == 0)
            return set->v[i];
    return NULL;
}

/* what load order puts first among mods that do not depend on each other */
static int goes_before(const struct mod *a, const struct mod *b)
{
    if (a->order != b->order)
        return a->order < b->order;
    return strcmp(a->name, b->name) < 0;
}

/* dep[i]: md's i-th dependency, NULL when missing */
static int deps_ready(const struct mod *md, struct mod *const *dep)
{
    for (int i = 0; i < md->depends.n; i++)
        if (dep[i] && !dep[i]->resolved)
            return 0;
    return 1;
}

/* Whether start is reached again from at through unresolved dependencies: then the length of
 * path[depth..], the way there (start, ..., start). */
static int find_cycle(const struct mod *start, struct mod *at, struct mod ***deps, char *seen,
                      struct mod **path, int depth)
{
    path[depth] = at;
    for (int i = 0; i < at->depends.n; i++) {
        struct mod *d = deps[at->idx][i];
        if (d == NULL || d->resolved)
            continue;
        if (d == start) {
            path[depth + 1] = d;
            return depth + 2;
        }
        if (seen[d->idx])
            continue;
        seen[d->idx] = 1;
        int n = find_cycle(start, d, deps, seen, path, depth + 1);
        if (n)
            return n;
    }
    return 0;
}

/* Load the mods of the set (named, their manifests read; set->v sorted by name) in order:
 * dependencies first, then by order, then by name; a mod whose dependency is missing or not
 * running fails, and so does every mod in a cycle. set->v becomes that order. */
static void load_in_order(struct mods *set)
{
    int n = set->n;
    struct mod ***deps = xcalloc((size_t) n + 1, sizeof *deps);
    for (int i = 0; i < n; i++) {
        struct mod *md = set->v[i];
        md->idx = i;
        deps[i] = xcalloc((size_t) md->depends.n + 1, sizeof **deps);
        for (int j = 0; j < md->depends.n; j++)
            deps[i][j] = find_mod(set, md->depends.v[j]);
    }
    struct mod **out = xcalloc((size_t) n + 1, sizeof *out);
    struct mod **path = xcalloc((size_t) n + 2, sizeof *path);
    char *seen = xcalloc((size_t) n + 1, 1);
    char **cycle = xcalloc((size_t) n + 1, sizeof *cycle);
    int done = 0;
    while (done < n) {
        struct mod *next = NULL;
        for (int i = 0; i < n; i++) {
            struct mod *md = set->v[i];
            if (!md->resolved && (next == NULL || goes_before(md, next)) && deps_ready(md, deps[i]))
                next = md;
        }
        if (next) {
            next->resolved = 1;
            out[done++] = next;
            if (next->state != MOD_RUNNING)
                continue; /* its manifest, or its name, failed it */
            for (int j = 0; j < next->depends.n; j++) {
                struct mod *d = deps[next->idx][j];
                if (d == NULL || d->state != MOD_RUNNING) {
                    char why[1200];
                    snprintf(why, sizeof why, "%s: depends on %s, which %s", next->manifest,
                             next->depends.v[j],
                             d == NULL                ? "is missing"
                             : d->state == MOD_FAILED ? "failed"
                                                      : "is disabled");
                    stop_mod(next, MOD_FAILED, why, NULL);
                    break;
                }
            }
            if (next->state == MOD_RUNNING)
                load_mod(set, next);
            continue;
        }
        /* each mod left waits on another: some are in a cycle; fail those */
        for (int i = 0; i < n; i++) {
            struct mod *md = set->v[i];
            if (md->resolved)
                continue;
            memset(seen, 0, (size_t) n);
            int len = find_cycle(md, md, deps, seen, path, 0);
            if (len == 0)
                continue;
            char why[1200];
            size_t o = (size_t) snprintf(
                why, sizeof why, "%s: depends on %s, in a cycle: ", md->manifest, path[1]->name);
            for (int k = 0; k < len && o < sizeof why; k++)
                o += (size_t) snprintf(why + o, sizeof why - o, "%s%s", k ? " -> " : "",
                                       path[k]->name);
            cycle[i] = xstrdup(why);
        }
        for (int i = 0; i < n; i++) {
            if (cycle[i] == NULL)
                continue;
            struct mod *md = set->v[i];
            md->resolved = 1;
            out[done++] = md;
            stop_mod(md, MOD_FAILED, cycle[i], NULL);
            free(cycle[i]);
            cycle[i] = NULL;
        }
    }
    for (int i = 0; i < n; i++)
        free(deps[i]);
    free(deps);
    free(path);
    free(seen);
    free(cycle);
    free(set->v);
    set->v = out;
}

struct mods *mods_load(const char *dir, const struct mods_limits *lim, const struct mods_host *host,
                       struct metrics *metrics, char *err, size_t cap)
{
    DIR *d = opendir(dir);
    if (d == NULL && errno != ENOENT) {
        snprintf(err, cap, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    struct mods *set = xcalloc(1, sizeof *set);
    set->lim = *lim;
    if (host)
        set->host = *host;
    if (metrics) {
        const char *calls[] = {"mod", "event", "result"}, *secs[] = {"mod", "event"};
        const char *state[] = {"state"};
        static const double BUCKETS[] = {1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 1};
        set->f_calls = metrics_family(metrics, "mmo_mod_calls_total",
                                      "Handler calls of mods, by mod, event and result",
                                      METRIC_COUNTER, 3, calls, NULL, 0, NULL);
        set->f_seconds = metrics_family(metrics, "mmo_mod_call_duration_seconds",
                                        "Time of a mod's handler call", METRIC_HISTOGRAM, 2, secs,
                                        BUCKETS, (int) (sizeof BUCKETS / sizeof *BUCKETS), NULL);
        set->f_state = metrics_family(metrics, "mmo_mods", "Mods loaded, by state", METRIC_GAUGE, 1,
                                      state, NULL, 0, NULL);
    }
    if (d == NULL) {
        update_gauge(set);
        return set;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (name[0] == '.')
            continue;
        size_t n = strlen(name);
        char path[1024], manifest[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            snprintf(path, sizeof path, "%s/%s/init.lua", dir, name);
            snprintf(manifest, sizeof manifest, "%s/%s/manifest.lua", dir, name);
            add_mod(set, name, path, manifest);
        } else if (S_ISREG(st.st_mode) && n > 4 && strcmp(name + n - 4, ".lua") == 0) {
            add_mod(set, name, path, NULL); /* to say what became of single-file mods */
        }
    }
    closedir(d);
    qsort(set->v, (size_t) set->n, sizeof *set->v, by_name);
    for (int i = 0; i < set->n; i++) {
        struct mod *md = set->v[i];
        char why[1200];
        if (md->manifest == NULL) {
            snprintf(why, sizeof why,
                     "%s: a mod is a directory, %.*s/, with manifest.lua and init.lua "
                     "(docs/modding.md)",
                     md->path, (int) strlen(md->name) - 4, md->name);
            stop_mod(md, MOD_FAILED, why, NULL);
        } else if (!name_ok(md->name, strlen(md->name))) {
            snprintf(why, sizeof why, "%s: a mod's name is 1 to 64 letters, digits, '_', '-'",
                     md->path);
            stop_mod(md, MOD_FAILED, why, NULL);
        } else if (read_manifest(md, why, sizeof why) != 0) {
            stop_mod(md, MOD_FAILED, why, NULL);
        }
    }
    load_in_order(set);
    update_gauge(set);
    int running = 0;
    for (int i = 0; i < set->n; i++)
        running += set->v[i]->state == MOD_RUNNING;
    log_info("mods", "%d mods loaded from %s, %d running", set->n, dir, running);
    return set;
}

void mods_free(struct mods *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->n; i++) {
        struct mod *md = m->v[i];
        if (md->L)
            lua_close(md->L);
        for (int j = 0; j < md->nsubs; j++) {
            free(md->subs[j]->event);
            free(md->subs[j]);
        }
        free(md->subs);
        free(md->name);
        free(md->path);
        free(md->manifest);
        free(md->version);
        names_free(&md->handles);
        names_free(&md->emits);
        names_free(&md->depends);
        free(md->error);
        free(md->last_strike);
        free(md);
    }
    free(m->v);
    free(m);
}

int mods_count(const struct mods *m)
{
    return m ? m->n : 0;
}

void mods_info(const struct mods *m, int i, struct mods_info *out)
{
    const struct mod *md = m->v[i];
    out->name = md->name;
    out->version = md->version;
    out->state = STATE_NAMES[md->state];
    out->error = md->error;
    out->strikes = md->strikes;
    out->last_strike = md->last_strike;
}

static void set_string(lua_State *L, const char *key, const char *v)
{
    if (v == NULL)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

void mods_push_list(const struct mods *m, lua_State *L)
{
    int n = m ? mods_count(m) : 0;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        struct mods_info mi;
        mods_info(m, i, &mi);
        lua_createtable(L, 0, 6);
        set_string(L, "name", mi.name);
        set_string(L, "version", mi.version);
        set_string(L, "state", mi.state);
        set_string(L, "error", mi.error);
        lua_pushinteger(L, mi.strikes);
        lua_setfield(L, -2, "strikes");
        set_string(L, "last_strike", mi.last_strike);
        lua_rawseti(L, -2, i + 1);
    }
}
