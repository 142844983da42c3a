/* script_ws.c -- the Lua side of WebSocket messages, and the timers of routes.lua.
 *
 * routes.lua:
 *   ws = { { "move", "realtime.move", role = "player" }, ... }   message types by `t`
 *   ws_close = "realtime.leave"                                 when a connection ends
 *   on_stop = "world.stop"                                      when the node begins to drain
 *   timers = { { 5, "realtime.checkpoint" }, ... }              every N seconds, in a task
 *
 * A message handler is called as fn(conn, msg) in a task of its own: conn = { id, account =
 * {id, roles, sid}, player_id, ip }, msg the decoded JSON object. What it returns (a table)
 * is sent back as JSON; a raised {status, code, message} (lib/http.lua) is sent as
 * {"t":"error","code","message"}; any other error as internal_error, logged with its
 * traceback. The connection stays open. */
#include "auth.h"
#include "conf.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "realtime.h"
#include "script.h"
#include "script_int.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_WS_ROUTES 64

/* ---- loading ----------------------------------------------------------------------------------
 */

/* [.., routes] */
static int load_types(struct script *s, struct script_set *set, int idx, char *err, size_t cap)
{
    lua_State *L = s->L;
    lua_getfield(L, idx, "ws");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, cap, "routes: ws must be a list of { type, \"module.function\", role = }");
        return -1;
    }
    int n = (int) lua_objlen(L, -1);
    if (n > MAX_WS_ROUTES) {
        snprintf(err, cap, "routes: at most %d ws message types", MAX_WS_ROUTES);
        return -1;
    }
    set->ws_routes = xcalloc((size_t) (n ? n : 1), sizeof *set->ws_routes);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        int e = lua_gettop(L);
        lua_rawgeti(L, e, 1);
        lua_rawgeti(L, e, 2);
        lua_getfield(L, e, "role");
        const char *type = lua_tostring(L, e + 1);
        const char *handler = lua_tostring(L, e + 2);
        const char *role = lua_tostring(L, e + 3);
        if (!lua_istable(L, e) || !type || !handler || !role || strlen(type) > 32) {
            snprintf(err, cap,
                     "routes: ws[%d] must be { \"type\", \"module.function\", role = ... }", i);
            return -1;
        }
        int r = script__parse_role(role);
        if (r <= 0) {
            snprintf(err, cap,
                     "routes: ws type %s: role must be player, moderator, designer or "
                     "admin",
                     type);
            return -1;
        }
        for (int k = 0; k < set->nws_routes; k++)
            if (strcmp(set->ws_routes[k].name, type) == 0) {
                snprintf(err, cap, "routes: ws type %s is listed twice", type);
                return -1;
            }
        struct route *rt = &set->ws_routes[set->nws_routes];
        rt->name = script__intern(s, type);
        rt->handler = xstrdup(handler);
        rt->role = r;
        rt->gate.role = 1u << (r - 1);
        rt->handler_ref = LUA_NOREF;
        set->nws_routes++;
        char why[512];
        if (script__resolve_handler(L, handler, &rt->handler_ref, why, sizeof why) < 0) {
            snprintf(err, cap, "%s (ws type %s)", why, type);
            return -1;
        }
        lua_settop(L, e - 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* timers = { { seconds, "module.function" }, ... }: resolved at load, started with
 * mmo.time.every when the set becomes current, cancelled when it stops being so */
static const char START_TIMERS[] = "local time, list = ...\n"
                                   "local handles = {}\n"
                                   "for i, t in ipairs(list) do\n"
                                   "  handles[i] = time.every(t[1], t[2], t[3])\n"
                                   "end\n"
                                   "return handles\n";

static int load_timers(struct script *s, struct script_set *set, int idx, char *err, size_t cap)
{
    lua_State *L = s->L;
    lua_getfield(L, idx, "timers");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    int list = lua_gettop(L);
    if (!lua_istable(L, list)) {
        snprintf(err, cap, "routes: timers must be a list of { seconds, \"module.function\" }");
        return -1;
    }
    lua_newtable(L); /* [{seconds, fn}] */
    int out = lua_gettop(L);
    for (int i = 1; i <= (int) lua_objlen(L, list); i++) {
        lua_rawgeti(L, list, i);
        int e = lua_gettop(L);
        lua_rawgeti(L, e, 1);
        lua_rawgeti(L, e, 2);
        double secs = lua_tonumber(L, e + 1);
        const char *h = lua_tostring(L, e + 2);
        if (!lua_istable(L, e) || !(secs >= 0.01 && secs <= 86400) || h == NULL) {
            snprintf(err, cap,
                     "routes: timers[%d] must be { seconds (0.01-86400), "
                     "\"module.function\" }",
                     i);
            return -1;
        }
        int ref;
        char why[512];
        if (script__resolve_handler(L, h, &ref, why, sizeof why) < 0) {
            snprintf(err, cap, "%s (timers[%d])", why, i);
            return -1;
        }
        lua_createtable(L, 2, 0);
        lua_pushnumber(L, secs);
        lua_rawseti(L, -2, 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_rawseti(L, -2, 2);
        lua_pushstring(L, h); /* the timer's name in its metrics */
        lua_rawseti(L, -2, 3);
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        lua_rawseti(L, out, i);
        lua_settop(L, out);
    }
    set->timer_fns_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, list - 1);
    return 0;
}

void script__start_timers(struct script *s, struct script_set *set)
{
    lua_State *L = s->L;
    if (set->timer_fns_ref == LUA_NOREF || s->ctx->base == NULL)
        return;
    int top = lua_gettop(L);
    if (luaL_loadbuffer(L, START_TIMERS, sizeof START_TIMERS - 1, "=timers") != 0) {
        log_error("script", "timers: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        return;
    }
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.time");
    lua_call(L, 1, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, set->timer_fns_ref);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        log_error("script", "timers: %s", lua_tostring(L, -1));
        lua_settop(L, top);
        return;
    }
    set->timers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
}

void script__stop_timers(struct script *s, struct script_set *set)
{
    lua_State *L = s->L;
    if (set->timers_ref == LUA_NOREF)
        return;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, set->timers_ref);
    for (int i = 1; i <= (int) lua_objlen(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "cancel");
        lua_pushvalue(L, -2);
        if (lua_pcall(L, 1, 0, 0) != 0)
            log_error("script", "timer cancel: %s", lua_tostring(L, -1));
        lua_settop(L, top + 1);
    }
    lua_settop(L, top);
    luaL_unref(L, LUA_REGISTRYINDEX, set->timers_ref);
    set->timers_ref = LUA_NOREF;
}

static int ensure_ws_metrics(struct script *s);

int script__load_ws(struct script *s, struct script_set *set, int idx, char *err, size_t cap)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    if (load_types(s, set, idx, err, cap) < 0)
        return -1;
    lua_getfield(L, idx, "ws_close");
    if (!lua_isnil(L, -1)) {
        const char *h = lua_tostring(L, -1);
        char why[512];
        if (h == NULL || script__resolve_handler(L, h, &set->ws_close_ref, why, sizeof why) < 0) {
            snprintf(err, cap, "%s (ws_close)", h ? why : "routes: ws_close must be a handler");
            return -1;
        }
    }
    lua_pop(L, 1);
    /* the message metrics exist from the start, at 0, for every type of the table */
    if (ensure_ws_metrics(s)) {
        for (int i = 0; i < set->nws_routes; i++) {
            const char *v[2] = {set->ws_routes[i].name, "ok"};
            metrics_series(s->m_ws_total, v);
            metrics_series(s->m_ws_seconds, v);
        }
    }
    lua_getfield(L, idx, "on_stop");
    if (!lua_isnil(L, -1)) {
        const char *h = lua_tostring(L, -1);
        char why[512];
        if (h == NULL || script__resolve_handler(L, h, &set->stop_ref, why, sizeof why) < 0) {
            snprintf(err, cap, "%s (on_stop)", h ? why : "routes: on_stop must be a handler");
            return -1;
        }
    }
    lua_pop(L, 1);
    if (load_timers(s, set, idx, err, cap) < 0)
        return -1;
    lua_settop(L, top);
    return 0;
}

void script__free_ws(struct script *s, struct script_set *set)
{
    lua_State *L = s->L;
    for (int i = 0; i < set->nws_routes; i++) {
        free(set->ws_routes[i].handler);
        luaL_unref(L, LUA_REGISTRYINDEX, set->ws_routes[i].handler_ref);
    }
    free(set->ws_routes);
    set->ws_routes = NULL;
    set->nws_routes = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, set->ws_close_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, set->stop_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, set->timer_fns_ref);
    set->ws_close_ref = set->stop_ref = set->timer_fns_ref = LUA_NOREF;
}

/* ---- running a message -------------------------------------------------------------------------
 */

struct wsjob {
    uint64_t conn;
    int route; /* -1: the close handler, -2: the stop handler */
    int closing;
    double started; /* monotonic seconds (metrics) */
};

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* the families of the message metrics, made once: 0 without a registry */
static int ensure_ws_metrics(struct script *s)
{
    if (s->m_ws_total == NULL && s->ctx->metrics) {
        const char *tr[] = {"type", "result"};
        s->m_ws_total = metrics_family(s->ctx->metrics, "mmo_ws_messages_total",
                                       "WebSocket messages handled, by type and result (ok, "
                                       "refused: an error answer, error: the handler failed)",
                                       METRIC_COUNTER, 2, tr, NULL, 0, NULL);
        s->m_ws_seconds = metrics_family(s->ctx->metrics, "mmo_ws_message_duration_seconds",
                                         "Time a WebSocket message's handler took, by type",
                                         METRIC_HISTOGRAM, 1, tr, NULL, 0, NULL);
    }
    return s->m_ws_total != NULL;
}

/* calls, errors and time of a message handler, by message type */
static void hook_metrics(struct script *s, const char *type, const char *result, double started)
{
    if (!ensure_ws_metrics(s))
        return;
    const char *v[2] = {type, result};
    metrics_inc(metrics_series(s->m_ws_total, v), 1);
    metrics_observe(metrics_series(s->m_ws_seconds, v), mono() - started);
}

static void send_error(struct script *s, uint64_t conn, const char *code, const char *msg)
{
    char buf[512], ecode[64], emsg[300];
    log_json_escape(ecode, sizeof ecode, code, strlen(code));
    log_json_escape(emsg, sizeof emsg, msg, strlen(msg));
    int n = snprintf(buf, sizeof buf, "{\"t\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}", ecode,
                     emsg);
    realtime_send(s->ctx->rt, conn, buf, (size_t) n);
}

/* [..] -> [.., conn] */
static void push_conn(lua_State *L, const struct script_ws_conn *c)
{
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (lua_Number) c->id);
    lua_setfield(L, -2, "id");
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number) c->account_id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, c->sid ? c->sid : "");
    lua_setfield(L, -2, "sid");
    char roles[64];
    size_t rn = auth_roles_format(c->roles, roles, sizeof roles);
    lua_createtable(L, 4, 0);
    int k = 0;
    for (size_t i = 0; i < rn;) {
        size_t j = i;
        while (j < rn && roles[j] != ',')
            j++;
        lua_pushlstring(L, roles + i, j - i);
        lua_rawseti(L, -2, ++k);
        i = j + 1;
    }
    lua_setfield(L, -2, "roles");
    lua_setfield(L, -2, "account");
    if (c->player_id) {
        lua_pushnumber(L, (lua_Number) c->player_id);
        lua_setfield(L, -2, "player_id");
        lua_pushnumber(L, c->speed);
        lua_setfield(L, -2, "speed");
    }
    lua_pushstring(L, c->ip ? c->ip : "");
    lua_setfield(L, -2, "ip");
}

static void on_ws_done(struct task *t, int status, void *ud)
{
    struct wsjob *j = ud;
    struct script *s = t->s;
    lua_State *co = t->co;
    const char *name = j->route >= 0    ? t->set->ws_routes[j->route].name
                       : j->route == -1 ? "(close)"
                                        : "(stop)";
    const char *result = "ok";
    if (status == TASK_ERROR) {
        /* a typed error: {status, code, message} */
        int e = lua_gettop(co);
        const char *code = NULL, *msg = NULL;
        if (lua_istable(co, e)) {
            lua_getfield(co, e, "code");
            lua_getfield(co, e, "message");
            code = lua_tostring(co, -2);
            msg = lua_tostring(co, -1);
        }
        if (code && !j->closing) {
            send_error(s, j->conn, code, msg ? msg : code);
            result = "refused";
        } else {
            result = "error";
            char route[64];
            snprintf(route, sizeof route, "ws %s", name);
            lua_settop(co, e);
            script__log_lua_error(s, t, route);
            if (!j->closing)
                send_error(s, j->conn, "internal_error", "internal error");
        }
    } else if (status == TASK_OK && !j->closing && lua_gettop(co) >= 1 && lua_istable(co, 1)) {
        lua_rawgeti(co, LUA_REGISTRYINDEX, s->encode_ref);
        lua_pushvalue(co, 1);
        if (lua_pcall(co, 1, 1, 0) == 0) {
            size_t len;
            const char *text = lua_tolstring(co, -1, &len);
            realtime_send(s->ctx->rt, j->conn, text, len);
        } else {
            log_write(LOG_ERROR, "lua", t->request_id, NULL, "ws %s: cannot encode the reply: %s",
                      name, lua_tostring(co, -1));
            send_error(s, j->conn, "internal_error", "internal error");
        }
    }
    if (j->route >= 0)
        hook_metrics(s, name, result, j->started);
    if (j->closing)
        s->ws_closing--;
    else
        realtime__message_done(s->ctx->rt, j->conn);
    free(j);
}

static void start(struct script *s, const struct script_ws_conn *c, int ref, struct wsjob *j,
                  int nargs_pushed_on_main)
{
    char id[32];
    snprintf(id, sizeof id, "w-%llx-%llx", (unsigned long long) c->id, ++s->seq);
    struct task *t = task__new(s, on_ws_done, j, id);
    lua_State *L = s->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_insert(L, -1 - nargs_pushed_on_main);
    lua_xmove(L, t->co, 1 + nargs_pushed_on_main);
    task__start(t, nargs_pushed_on_main);
}

void script_ws_message(struct script *s, const struct script_ws_conn *c, const char *text,
                       size_t len)
{
    lua_State *L = s->L;
    const struct script_set *set = s->cur;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->decode_ref);
    lua_pushlstring(L, text, len);
    lua_call(L, 1, 1);
    const char *type = NULL;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "t");
        type = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1);
    }
    int route = -1;
    for (int i = 0; type && i < set->nws_routes; i++)
        if (strcmp(set->ws_routes[i].name, type) == 0)
            route = i;
    const char *code = NULL, *msg = NULL;
    if (!lua_istable(L, -1))
        code = "bad_message", msg = "a message is a JSON object with a string field t";
    else if (type == NULL)
        code = "bad_message", msg = "the field t is missing";
    else if (route < 0)
        code = "unknown_type", msg = "no such message type";
    else if (!auth_roles_allow(c->roles, set->ws_routes[route].gate.role))
        code = "forbidden", msg = "your account lacks the role this needs";
    if (code) {
        /* refused before any handler: counted under the type if it is one of ours (a client's
         * made-up types would make a label set each) */
        hook_metrics(s, route >= 0 ? set->ws_routes[route].name : "(unknown)", "refused", mono());
        lua_settop(L, top);
        send_error(s, c->id, code, msg);
        realtime__message_done(s->ctx->rt, c->id);
        return;
    }
    struct wsjob *j = xcalloc(1, sizeof *j);
    j->conn = c->id;
    j->route = route;
    j->started = mono();
    push_conn(L, c);
    lua_insert(L, -2); /* conn, msg */
    start(s, c, set->ws_routes[route].handler_ref, j, 2);
    lua_settop(L, top);
}

void script_ws_closed(struct script *s, const struct script_ws_conn *c, int code,
                      const char *region, double x, double y, double at)
{
    if (s->cur->ws_close_ref == LUA_NOREF)
        return;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    push_conn(L, c);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "close_code");
    if (region) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, region);
        lua_setfield(L, -2, "region");
        lua_pushnumber(L, x);
        lua_setfield(L, -2, "x");
        lua_pushnumber(L, y);
        lua_setfield(L, -2, "y");
        lua_pushnumber(L, at);
        lua_setfield(L, -2, "at");
        lua_setfield(L, -2, "last_position");
    }
    struct wsjob *j = xcalloc(1, sizeof *j);
    j->conn = c->id;
    j->route = -1;
    j->closing = 1;
    s->ws_closing++;
    start(s, c, s->cur->ws_close_ref, j, 1);
    lua_settop(L, top);
}

int script_ws_closing(const struct script *s)
{
    return s->ws_closing;
}

void script_stop(struct script *s)
{
    if (s->cur->stop_ref == LUA_NOREF || s->stopped)
        return;
    s->stopped = 1;
    struct wsjob *j = xcalloc(1, sizeof *j);
    j->route = -2;
    j->closing = 1;
    s->ws_closing++;
    struct task *t = task__new(s, on_ws_done, j, "stop");
    lua_State *L = s->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cur->stop_ref);
    lua_xmove(L, t->co, 1);
    task__start(t, 0);
}
