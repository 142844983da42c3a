/* lua_time.c -- require "mmo.time": clocks, sleeping and timers.
 *
 *   time.now()            -> seconds since the epoch (float, microseconds)
 *   time.monotonic()      -> seconds on a clock that never jumps (for durations)
 *   time.sleep(seconds)   -> true | nil, err   yields the calling task; others run meanwhile
 *   time.after(seconds, fn) -> timer           fn() runs once in a task of its own
 *   time.every(seconds, fn [, name]) -> timer  fn() runs, then again `seconds` after it
 *                                              ended (runs never overlap); an error is logged
 *                                              and the timer goes on
 *
 * Every run of an every() timer is counted, without the timer doing anything, in
 * mmo_timer_runs_total{timer, result} (ok, error) and mmo_timer_run_duration_seconds{timer}
 * (from the run's start to its end, waits included); timer is name, or else where fn was
 * defined ("handlers/world.lua:42").
 *   timer:cancel()                             idempotent
 *
 * A pending timer is anchored in the registry, so dropping the handle does not stop it;
 * node shutdown does. */
#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "mem.h"

#include <math.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>

#define TIMER_MT  "mmo.time.timer"
#define MAX_DELAY 86400.0 * 30

struct ltimer {
    struct event *ev;
    lua_State *L; /* main thread */
    int fn_ref;
    int self_ref;
    int cancelled;
};

struct lsleep {
    struct event *ev;
    struct lb_wait *w;
};

static double checkdelay(lua_State *L, int idx)
{
    double s = luaL_checknumber(L, idx);
    luaL_argcheck(L, s >= 0 && s <= MAX_DELAY && !isnan(s), idx, "seconds out of range");
    return s;
}

static struct timeval to_tv(double s)
{
    struct timeval tv;
    tv.tv_sec = (time_t) s;
    tv.tv_usec = (suseconds_t) ((s - (double) tv.tv_sec) * 1e6);
    return tv;
}

static int l_now(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (double) tv.tv_sec + (double) tv.tv_usec / 1e6);
    return 1;
}

static int l_monotonic(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double) ts.tv_sec + (double) ts.tv_nsec / 1e9);
    return 1;
}

/* ---- sleep ------------------------------------------------------------------------------ */

static void on_sleep_done(evutil_socket_t fd, short what, void *arg)
{
    struct lsleep *sl = arg;
    struct lb_wait *w = sl->w;
    event_free(sl->ev);
    free(sl);
    lua_pushboolean(lb_wait_thread(w), 1);
    lb_wait_resume(w, 1);
}

static void cancel_sleep(void *ud)
{
    struct lsleep *sl = ud;
    event_free(sl->ev);
    free(sl);
}

static int l_sleep(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    double s = checkdelay(L, 1);
    struct lb_wait *w = lb_wait_begin(L);
    struct lsleep *sl = xcalloc(1, sizeof *sl);
    sl->w = w;
    sl->ev = evtimer_new(ctx->base, on_sleep_done, sl);
    struct timeval tv = to_tv(s);
    evtimer_add(sl->ev, &tv);
    lb_wait_on_cancel(w, cancel_sleep, sl);
    return lua_yield(L, 0);
}

/* ---- after ------------------------------------------------------------------------------ */

static void timer_unanchor(struct ltimer *t)
{
    if (t->self_ref != LUA_NOREF) {
        luaL_unref(t->L, LUA_REGISTRYINDEX, t->self_ref);
        t->self_ref = LUA_NOREF;
    }
    if (t->fn_ref != LUA_NOREF) {
        luaL_unref(t->L, LUA_REGISTRYINDEX, t->fn_ref);
        t->fn_ref = LUA_NOREF;
    }
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ltimer *t = arg;
    lua_State *L = t->L;
    if (t->cancelled || t->fn_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
    timer_unanchor(t); /* the function stays alive on the stack until the task has it */
    lb_spawn(L, -1, "timer");
    lua_pop(L, 1);
}

static int l_after(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    double s = checkdelay(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    struct ltimer *t = lua_newuserdata(L, sizeof *t);
    t->ev = NULL;
    t->fn_ref = t->self_ref = LUA_NOREF;
    t->cancelled = 0;
    /* the main thread: refs and the spawn happen there, whatever task created the timer */
    t->L = ctx->main_L;
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    lua_newtable(L); /* its own environment table: every() keeps its state there */
    lua_setfenv(L, -2);
    t->ev = evtimer_new(ctx->base, on_timer, t);
    lua_pushvalue(L, 2);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    struct timeval tv = to_tv(s);
    evtimer_add(t->ev, &tv);
    return 1;
}

static int l_cancel(lua_State *L)
{
    struct ltimer *t = luaL_checkudata(L, 1, TIMER_MT);
    if (!t->cancelled) {
        t->cancelled = 1;
        if (t->ev)
            evtimer_del(t->ev);
        timer_unanchor(t);
    }
    /* every(): the loop task sees the flag at its next wake-up */
    lua_getfenv(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "cancelled");
    return 0;
}

static int l_gc(lua_State *L)
{
    struct ltimer *t = luaL_checkudata(L, 1, TIMER_MT);
    if (t->ev) {
        event_free(t->ev);
        t->ev = NULL;
    }
    return 0;
}

/* every() in Lua on top of after() and sleep(): one long-lived task per timer, so runs never
 * overlap and a slow run delays the next instead of piling up. */
static const char EVERY[] =
    "local after, sleep, traceback, xpcall, log, monotonic, getinfo, RUNS, SECONDS = ...\n"
    "return function(seconds, fn, name, handle_env)\n"
    "  local state = handle_env\n"
    "  if name == nil then\n"
    "    local i = getinfo(fn, 'S')\n"
    "    name = (i.source:match('([^/]+/[^/]+)$') or i.short_src) .. ':' .. i.linedefined\n"
    "  end\n"
    "  return after(seconds, function()\n"
    "    while not state.cancelled do\n"
    "      local t0 = monotonic()\n"
    "      local ok, err = xpcall(fn, traceback)\n"
    "      SECONDS:observe(monotonic() - t0, name)\n"
    "      RUNS:inc(1, name, ok and 'ok' or 'error')\n"
    "      if not ok then log.error('timer ' .. name .. ' failed: ' .. tostring(err)) end\n"
    "      if state.cancelled then return end\n"
    "      sleep(seconds)\n"
    "    end\n"
    "  end)\n"
    "end\n";

static int l_every(lua_State *L)
{
    double s = checkdelay(L, 1);
    luaL_argcheck(L, s > 0, 1, "interval must be positive");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!lua_isnoneornil(L, 3)) {
        size_t n;
        luaL_checklstring(L, 3, &n);
        luaL_argcheck(L, n > 0 && n <= 100, 3, "a name of 1 to 100 bytes");
    }
    lua_settop(L, 3);
    lua_newtable(L);                       /* 4: state shared with the loop; cancel() marks it */
    lua_pushvalue(L, lua_upvalueindex(1)); /* the compiled every() */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    lua_call(L, 4, 1); /* 5: the timer from after() */
    lua_pushvalue(L, 4);
    lua_setfenv(L, 5);
    return 1;
}

/* require(mod)[field](args...) of n string arguments at the top of the stack: its result */
static void call_field(lua_State *L, const char *mod, const char *field, int nargs)
{
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushstring(L, mod);
    lua_call(L, 1, 1);
    lua_getfield(L, -1, field);
    lua_remove(L, -2);
    lua_insert(L, -1 - nargs);
    lua_call(L, nargs, 1);
}

int luaopen_mmo_time(lua_State *L)
{
    struct lb_ctx *ctx = lb_ctx(L);
    static const luaL_Reg TIMER_METHODS[] = {{"cancel", l_cancel}, {NULL, NULL}};
    luaL_newmetatable(L, TIMER_MT);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_createtable(L, 0, 1);
    luaL_register(L, NULL, TIMER_METHODS);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_createtable(L, 0, 6);
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_monotonic);
    lua_setfield(L, -2, "monotonic");
    lua_pushlightuserdata(L, ctx);
    lua_pushcclosure(L, l_sleep, 1);
    lua_setfield(L, -2, "sleep");
    lua_pushlightuserdata(L, ctx);
    lua_pushcclosure(L, l_after, 1);
    lua_setfield(L, -2, "after");

    /* every = EVERY(after, sleep, debug.traceback, xpcall, mmo.log, monotonic, debug.getinfo,
     * the two metrics) */
    if (luaL_loadbuffer(L, EVERY, sizeof EVERY - 1, "=mmo.time.every") != 0)
        return lua_error(L);
    lua_getfield(L, -2, "after");
    lua_getfield(L, -3, "sleep");
    lua_getfield(L, LUA_GLOBALSINDEX, "debug");
    lua_getfield(L, -1, "traceback");
    lua_remove(L, -2);
    lua_getfield(L, LUA_GLOBALSINDEX, "xpcall");
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.log");
    lua_call(L, 1, 1);
    lua_getfield(L, -7, "monotonic");
    lua_getfield(L, LUA_GLOBALSINDEX, "debug");
    lua_getfield(L, -1, "getinfo");
    lua_remove(L, -2);
    lua_pushliteral(L, "mmo_timer_runs_total");
    lua_pushliteral(L, "Runs of mmo.time.every timers (routes.lua's timers among them), by "
                       "timer and result (ok, error)");
    lua_createtable(L, 2, 0);
    lua_pushliteral(L, "timer");
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "result");
    lua_rawseti(L, -2, 2);
    call_field(L, "mmo.metrics", "counter", 3);
    lua_pushliteral(L, "mmo_timer_run_duration_seconds");
    lua_pushliteral(L, "Time a run of an mmo.time.every timer took (waits included), by timer");
    lua_createtable(L, 1, 0);
    lua_pushliteral(L, "timer");
    lua_rawseti(L, -2, 1);
    call_field(L, "mmo.metrics", "histogram", 3);
    lua_call(L, 9, 1);
    lua_pushcclosure(L, l_every, 1);
    lua_setfield(L, -2, "every");
    return 1;
}
