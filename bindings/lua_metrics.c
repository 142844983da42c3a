/* lua_metrics.c -- require "mmo.metrics": Prometheus metrics from Lua, kept in C (core/metrics.h).
 *
 *   local m = metrics.counter(name, help [, {label names}])        -> metric
 *   local g = metrics.gauge(name, help [, {label names}])
 *   local h = metrics.histogram(name, help [, {label names} [, {bucket bounds}]])
 *   m:inc([n [, label values...]])      counter, gauge (n default 1)
 *   g:set(v [, label values...])        gauge
 *   h:observe(v [, label values...])    histogram
 *   metrics.read(name [, label, value]) -> {value, count, buckets = {{le, n}, ...}} | nil
 *       any metric of the node (the core's too), summed over its series (or those whose
 *       label is value), after the node's collect step (gauges fresh): a counter's or gauge's
 *       value; a histogram's sum (value), count and per-bucket counts (not cumulative). nil:
 *       no such metric or label. For the console's charts (handlers/admin.lua).
 *
 * Declare at module load: the same name and labels give the same metric (a reload makes no
 * second one); another type or other labels raise. Label values are strings or numbers, as many
 * as the names. A metric past its cap of label sets (1,000) drops new ones and counts them in
 * mmo_metrics_dropped_series_total. Without a node (mmo check) the metrics are no-ops. */
#include "bindings.h"
#include "lb.h"
#include "metrics.h"

#include <string.h>

#define MT "mmo.metrics.metric"

struct lmetric {
    struct metric_family *f; /* NULL: no registry (a no-op metric) */
    int nlabels;
};

static struct metric_series *series(lua_State *L, struct lmetric *m, int first)
{
    if (m->f == NULL)
        return NULL;
    int given = lua_gettop(L) - first + 1;
    if (given < 0)
        given = 0;
    if (given != m->nlabels)
        luaL_error(L, "mmo.metrics: %d label value(s) given, the metric has %d", given, m->nlabels);
    const char *v[METRICS_MAX_LABELS];
    for (int i = 0; i < m->nlabels; i++) {
        int t = lua_type(L, first + i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "mmo.metrics: label value %d must be a string or a number", i + 1);
        v[i] = lua_tostring(L, first + i);
    }
    return metrics_series(m->f, v);
}

static int m_inc(lua_State *L)
{
    struct lmetric *m = luaL_checkudata(L, 1, MT);
    double n = lua_isnoneornil(L, 2) ? 1 : luaL_checknumber(L, 2);
    metrics_inc(series(L, m, 3), n);
    return 0;
}

static int m_set(lua_State *L)
{
    struct lmetric *m = luaL_checkudata(L, 1, MT);
    double v = luaL_checknumber(L, 2);
    metrics_set(series(L, m, 3), v);
    return 0;
}

static int m_observe(lua_State *L)
{
    struct lmetric *m = luaL_checkudata(L, 1, MT);
    double v = luaL_checknumber(L, 2);
    metrics_observe(series(L, m, 3), v);
    return 0;
}

static int make(lua_State *L, enum metric_type type)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_checkstring(L, 2);
    const char *labels[METRICS_MAX_LABELS];
    int nlabels = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        nlabels = (int) lua_objlen(L, 3);
        if (nlabels > METRICS_MAX_LABELS)
            return luaL_error(L, "mmo.metrics: at most %d labels", METRICS_MAX_LABELS);
        for (int i = 0; i < nlabels; i++) {
            lua_rawgeti(L, 3, i + 1);
            labels[i] = lua_tostring(L, -1);
            if (labels[i] == NULL)
                return luaL_error(L, "mmo.metrics: label names are strings");
            lua_pop(L, 1); /* the string stays alive in the table */
        }
    }
    double buckets[METRICS_MAX_BUCKETS];
    int nb = 0;
    if (type == METRIC_HISTOGRAM && !lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        nb = (int) lua_objlen(L, 4);
        if (nb > METRICS_MAX_BUCKETS)
            return luaL_error(L, "mmo.metrics: at most %d buckets", METRICS_MAX_BUCKETS);
        for (int i = 0; i < nb; i++) {
            lua_rawgeti(L, 4, i + 1);
            buckets[i] = luaL_checknumber(L, -1);
            lua_pop(L, 1);
        }
    }
    struct lmetric *m = lua_newuserdata(L, sizeof *m);
    m->f = NULL;
    m->nlabels = nlabels;
    luaL_getmetatable(L, MT);
    lua_setmetatable(L, -2);
    if (ctx == NULL || ctx->metrics == NULL)
        return 1;
    const char *why = NULL;
    m->f = metrics_family(ctx->metrics, name, help, type, nlabels, labels, nb ? buckets : NULL, nb,
                          &why);
    if (m->f == NULL)
        return luaL_error(L, "mmo.metrics: %s: %s", name, why ? why : "refused");
    return 1;
}

static int l_read(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    const char *label = luaL_optstring(L, 2, NULL);
    const char *value = luaL_optstring(L, 3, NULL);
    if (ctx == NULL || ctx->metrics == NULL) {
        lua_pushnil(L);
        return 1;
    }
    struct metrics_reading r;
    metrics_collect(ctx->metrics);
    if (metrics_read(ctx->metrics, name, label, value, &r) < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, r.value);
    lua_setfield(L, -2, "value");
    lua_pushnumber(L, (lua_Number) r.count);
    lua_setfield(L, -2, "count");
    lua_createtable(L, r.nbuckets, 0);
    for (int i = 0; i < r.nbuckets; i++) {
        lua_createtable(L, 2, 0);
        lua_pushnumber(L, r.bounds[i]);
        lua_rawseti(L, -2, 1);
        lua_pushnumber(L, (lua_Number) r.buckets[i]);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "buckets");
    return 1;
}

static int l_counter(lua_State *L)
{
    return make(L, METRIC_COUNTER);
}

static int l_gauge(lua_State *L)
{
    return make(L, METRIC_GAUGE);
}

static int l_histogram(lua_State *L)
{
    return make(L, METRIC_HISTOGRAM);
}

int luaopen_mmo_metrics(lua_State *L)
{
    if (luaL_newmetatable(L, MT)) {
        lua_createtable(L, 0, 3);
        lua_pushcfunction(L, m_inc);
        lua_setfield(L, -2, "inc");
        lua_pushcfunction(L, m_set);
        lua_setfield(L, -2, "set");
        lua_pushcfunction(L, m_observe);
        lua_setfield(L, -2, "observe");
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "mmo.metrics.metric");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg FUNCS[] = {
        {"counter", l_counter}, {"gauge", l_gauge}, {"histogram", l_histogram},
        {"read", l_read},       {NULL, NULL},
    };
    lua_createtable(L, 0, 3);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, lb_ctx(L));
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
