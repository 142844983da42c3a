/* lua_events.c -- require "mmo.events": game events for the mods (core/mods.h,
 * docs/modding.md).
 *
 *   events.emit(name, payload) -> n    payload: a table with string keys (a JSON object). It is
 *                                      encoded once and delivered now, before emit returns, to
 *                                      every running mod subscribed to name; n handlers ran to
 *                                      their end (0 when the node runs no mods). A failing mod
 *                                      is disabled and logged by the core: emit never raises
 *                                      for what a mod does. Raises on a bad name or payload.
 *   events.mods() -> { {name=, version=, state=, error=, strikes=, last_strike=}, ... }
 *                                      the mods of the set in use, in its order (core/mods.h
 *                                      mods_info): state is "running" | "failed" | "disabled",
 *                                      error nil or why, version nil when the manifest did not
 *                                      load, strikes since it was loaded and why the last one
 *
 *   events.on(name, fn)                the game's handler of an event the mods emit (e.g. the
 *                                      bounty mod's bounty.paid): fn(payload, mod_name) runs in
 *                                      a task of its own (it may do I/O) on the next turn of the
 *                                      loop. Only while the scripts load (at the top of a module):
 *                                      each script set has its own handlers, swapped in with it.
 *
 * The set in use is ctx->mods, read at every call (a script reload may replace it). What the
 * game hears from mods is a mod's word: the handler checks it like any client input. */
#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "mods.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PENDING 10000 /* events from mods waiting for the game's handlers */

static int l_emit(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, mods_event_name_ok(name, n), 1,
                  "not an event name (1 to 64 letters, digits and \"._:-\")");
    luaL_checktype(L, 2, LUA_TTABLE);
    if (ctx->mods == NULL || mods_count(ctx->mods) == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(2)); /* mmo.json.encode */
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    size_t len;
    const char *json = lua_tolstring(L, -1, &len);
    if (json[0] != '{')
        return luaL_argerror(L, 2, "an object expected (a table with string keys)");
    int rc = mods_emit(ctx->mods, name, json, len);
    if (rc < 0)
        return luaL_error(L, "events.emit: %s", err_str(rc));
    lua_pushinteger(L, rc);
    return 1;
}

static int l_mods(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    mods_push_list(ctx->mods, L);
    return 1;
}

/* events.on(name, fn) */
static int l_on(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, mods_event_name_ok(name, n), 1,
                  "not an event name (1 to 64 letters, digits and \"._:-\")");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_getfield(L, LUA_REGISTRYINDEX, "mmo.events.loading");
    if (!lua_istable(L, -1))
        return luaL_error(L, "events.on: only while the scripts load (at the top of a module)");
    lua_getfield(L, -1, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int) lua_objlen(L, -2) + 1);
    return 0;
}

/* ---- the game's handlers of what mods emit ------------------------------------------------ */

void lua_events_begin(lua_State *L)
{
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "mmo.events.loading");
}

void lua_events_end(lua_State *L, int commit)
{
    if (commit) {
        lua_getfield(L, LUA_REGISTRYINDEX, "mmo.events.loading");
        lua_setfield(L, LUA_REGISTRYINDEX, "mmo.events.handlers");
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "mmo.events.loading");
}

struct pending {
    struct pending *next;
    char mod[72], event[72];
    size_t len;
    char json[];
};

static struct {
    struct pending *head, **tail;
    int n;
    struct event *ev;
    struct lb_ctx *ctx;
} queue;

/* fn, payload, mod -> a function of no arguments calling fn(payload, mod) (for lb_spawn) */
static const char BIND[] = "local fn, payload, mod = ...\n"
                           "return function() return fn(payload, mod) end\n";

static void run_pending(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = queue.head;
    queue.head = NULL;
    queue.tail = &queue.head;
    queue.n = 0;
    lua_State *L = queue.ctx->main_L;
    int top = lua_gettop(L);
    /* once per turn: the binder, mmo.json.decode and the handlers of the set in use */
    int loaded = luaL_loadbuffer(L, BIND, sizeof BIND - 1, "=events.on") == 0;
    int bind = lua_gettop(L);
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    int decode = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "mmo.events.handlers");
    int handlers = lua_gettop(L);
    while (p) {
        struct pending *next = p->next;
        if (loaded && lua_istable(L, handlers)) {
            lua_getfield(L, handlers, p->event);
            int list = lua_gettop(L);
            for (int i = 1; lua_istable(L, list) && i <= (int) lua_objlen(L, list); i++) {
                /* each handler its own copy of the payload */
                lua_pushvalue(L, bind);
                lua_rawgeti(L, list, i);
                lua_pushvalue(L, decode);
                lua_pushlstring(L, p->json, p->len);
                lua_call(L, 1, 1);
                lua_pushstring(L, p->mod);
                lua_call(L, 3, 1);
                lb_spawn(L, -1, "events.on handler");
                lua_settop(L, list);
            }
            lua_settop(L, handlers);
        }
        free(p);
        p = next;
    }
    lua_settop(L, top);
}

void lua_events_from_mod(struct lb_ctx *ctx, const char *mod, const char *event, const char *json,
                         size_t len)
{
    if (ctx->base == NULL || ctx->main_L == NULL)
        return;
    if (queue.tail == NULL)
        queue.tail = &queue.head;
    if (queue.n >= MAX_PENDING)
        return; /* the game's handlers are this far behind: a mod floods; dropped */
    if (queue.ev == NULL || queue.ctx != ctx) {
        if (queue.ev)
            event_free(queue.ev);
        queue.ctx = ctx;
        queue.ev = evtimer_new(ctx->base, run_pending, NULL);
    }
    struct pending *p = malloc(sizeof *p + len + 1);
    if (p == NULL)
        return;
    snprintf(p->mod, sizeof p->mod, "%s", mod);
    snprintf(p->event, sizeof p->event, "%s", event);
    memcpy(p->json, json, len);
    p->json[len] = '\0';
    p->len = len;
    p->next = NULL;
    *queue.tail = p;
    queue.tail = &p->next;
    if (queue.n++ == 0) {
        struct timeval zero = {0, 0};
        evtimer_add(queue.ev, &zero);
    }
}

void lua_events_shutdown(void)
{
    while (queue.head) {
        struct pending *p = queue.head;
        queue.head = p->next;
        free(p);
    }
    queue.tail = &queue.head;
    queue.n = 0;
    if (queue.ev)
        event_free(queue.ev);
    queue.ev = NULL;
    queue.ctx = NULL;
}

int luaopen_mmo_events(lua_State *L)
{
    static const luaL_Reg FUNCS[] = {
        {"emit", l_emit}, {"mods", l_mods}, {"on", l_on}, {NULL, NULL}};
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    lua_remove(L, -2);
    int encode = lua_gettop(L);
    lua_createtable(L, 0, 2);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, lb_ctx(L));
        lua_pushvalue(L, encode);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
