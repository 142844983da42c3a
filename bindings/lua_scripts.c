/* lua_scripts.c -- mmo.scripts: the loaded script set, reload and rollback (core/script_set.c).
 *
 *   scripts.info()          -> { version, hash, loaded_at, loaded_by, files, bytes, previous,
 *                                modules = { {name, file, bytes} }, state = {...}, mods = {...} }
 *   scripts.reload(who)     -> info | nil, { message, file, line }
 *   scripts.rollback(who)   -> info | nil, { message, file, line }   (to the previous set)
 *
 * reload and rollback park the calling task; the load runs from the event loop, between two
 * events, and the task resumes with the result. The task itself finishes on the code it
 * started with: the new set serves what comes after. who is recorded in the audit log
 * ("account:42" for a signed-in caller). */
#include "bindings.h"
#include "lb.h"
#include "mem.h"
#include "script.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

struct pending {
    struct lb_ctx *ctx;
    struct lb_wait *w;
    struct event *ev;
    int rollback;
    char who[64];
};

static void push_error(lua_State *L, const char *msg, int not_found)
{
    char file[512];
    int line;
    script_error_location(msg, file, sizeof file, &line);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    if (line > 0) {
        lua_pushstring(L, file);
        lua_setfield(L, -2, "file");
        lua_pushinteger(L, line);
        lua_setfield(L, -2, "line");
    }
    if (not_found) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "no_previous");
    }
}

static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    struct lb_wait *w = p->w;
    struct lb_ctx *ctx = p->ctx;
    event_free(p->ev);
    char err[1024];
    int rc = script_reload(ctx->script, p->who, p->rollback, err, sizeof err);
    lua_State *co = lb_wait_thread(w);
    free(p);
    if (rc == 0) {
        /* built on the main thread (it calls Lua), then handed to the parked coroutine */
        script_push_info(ctx->script, ctx->main_L);
        lua_xmove(ctx->main_L, co, 1);
        lb_wait_resume(w, 1);
    } else {
        lua_pushnil(co);
        push_error(co, err, rc == -2);
        lb_wait_resume(w, 2);
    }
}

static void cancel(void *ud)
{
    struct pending *p = ud;
    event_free(p->ev);
    free(p);
}

static int start(lua_State *L, int rollback)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const char *who = luaL_optstring(L, 1, "api");
    if (ctx->script == NULL || ctx->base == NULL)
        return luaL_error(L, "mmo.scripts: no running node");
    struct lb_wait *w = lb_wait_begin(L);
    struct pending *p = xcalloc(1, sizeof *p);
    p->ctx = ctx;
    p->w = w;
    p->rollback = rollback;
    snprintf(p->who, sizeof p->who, "%s", who);
    p->ev = evtimer_new(ctx->base, on_turn, p);
    struct timeval zero = {0, 0};
    evtimer_add(p->ev, &zero);
    lb_wait_on_cancel(w, cancel, p);
    return lua_yield(L, 0);
}

static int l_reload(lua_State *L)
{
    return start(L, 0);
}

static int l_rollback(lua_State *L)
{
    return start(L, 1);
}

static int l_info(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (ctx->script == NULL)
        return luaL_error(L, "mmo.scripts: no script host");
    script_push_info(ctx->script, L);
    return 1;
}

int luaopen_mmo_scripts(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"info", l_info}, {"reload", l_reload}, {"rollback", l_rollback}, {NULL, NULL}};
    struct lb_ctx *ctx = lb_ctx(L);
    lua_createtable(L, 0, 3);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushlightuserdata(L, ctx);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
