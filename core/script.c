/* script.c -- the Lua host: the VM, module loading, the route table and HTTP dispatch.
 *
 * The VM gets the standard libraries, the mmo.* bindings through package.preload, lua-cjson
 * (linked in, preloaded), package.path limited to the scripts path and no C modules from
 * scripts. Then _G is locked: reading or writing an undeclared global raises.
 *
 * A request runs in a task (task.c): the handler named by the route gets a request table and
 * returns status, body, headers; the done callback turns them into the response. Every Lua
 * error is logged with a traceback and answered 500 with the request id; an error value of
 * the form {status=4xx, code=..., message=..., details=...} (scripts/lib/http.lua) is
 * answered as that error instead. */
#include "script.h"
#include "bindings.h"
#include "conf.h"
#include "err.h"
#include "gate.h"
#include "http.h"
#include "log.h"
#include "mem.h"
#include "realtime.h"
#include "router.h"
#include "script_int.h"

#include <dirent.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *ROLE_NAMES[] = {"public", "player", "moderator", "designer", "admin"};

/* Lua run once in every new VM, after the libraries are loaded: lock the globals. */
static const char LOCK_GLOBALS[] =
    "local error, tostring, rawget = error, tostring, rawget\n"
    "setmetatable(_G, {\n"
    "  __newindex = function(_, k)\n"
    "    error(\"assignment to undeclared global '\" .. tostring(k) .. \"'\", 2)\n"
    "  end,\n"
    "  __index = function(_, k)\n"
    "    error(\"undeclared global '\" .. tostring(k) .. \"'\", 2)\n"
    "  end,\n"
    "})\n";

/* ---- the VM ---------------------------------------------------------------------------- */

static void build_path(luaL_Buffer *b, const char *dirs)
{
    const char *p = dirs;
    int first = 1;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0) {
            if (!first)
                luaL_addchar(b, ';');
            luaL_addlstring(b, p, len);
            luaL_addstring(b, "/?.lua;");
            luaL_addlstring(b, p, len);
            luaL_addstring(b, "/?/init.lua");
            first = 0;
        }
        p += len;
        if (*p == ';')
            p++;
    }
}

/* the VM's allocator: counts its bytes; past the cap, refuses while a task runs */
static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct script_mem *m = ud;
    size_t held = ptr ? osize : 0;
    if (m->cap && m->armed && nsize > held && m->used - held + nsize > m->cap) {
        m->refused = 1;
        return NULL;
    }
    return mem_lua_realloc(&m->used, ptr, osize, nsize);
}

lua_State *script__open_vm(struct lb_ctx *ctx, struct script_mem *mem, const char *path, char *err,
                           size_t cap)
{
    /* no cap: LuaJIT's own allocator (faster than malloc for its many small blocks) */
    lua_State *L = mem->cap ? lua_newstate(vm_alloc, mem) : luaL_newstate();
    if (L == NULL) {
        snprintf(err, cap, "cannot create the Lua VM");
        return NULL;
    }
    luaL_openlibs(L);
    ctx->main_L = L;
    lb_set_ctx(L, ctx);

    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    build_path(&b, path);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    lua_pop(L, 1);

    bindings_preload_json(L);
    bindings_preload(L);

    /* cjson registers a global "cjson": load it now, then drop the global */
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "cjson");
    if (lua_pcall(L, 1, 0, 0) != 0) {
        snprintf(err, cap, "cannot load cjson: %s", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_GLOBALSINDEX, "cjson");

    if (luaL_loadbuffer(L, LOCK_GLOBALS, sizeof LOCK_GLOBALS - 1, "=lock_globals") != 0 ||
        lua_pcall(L, 0, 0, 0) != 0) {
        snprintf(err, cap, "cannot lock globals: %s", lua_tostring(L, -1));
        lua_close(L);
        return NULL;
    }
    return L;
}

/* require(name) with a traceback on failure: [..] -> [.., module] or error text in err. */
int script__require(lua_State *L, const char *name, char *err, size_t cap)
{
    lua_getfield(L, LUA_GLOBALSINDEX, "debug");
    lua_getfield(L, -1, "traceback");
    lua_remove(L, -2);
    int tb = lua_gettop(L);
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushstring(L, name);
    if (lua_pcall(L, 1, 1, tb) != 0) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, cap, "%s", msg ? msg : "(error object is not a string)");
        /* keep the first line (file:line: message) for the one-line error; the rest is logged */
        log_error("lua", "loading %s: %s", name, msg ? msg : "?");
        char *nl = strchr(err, '\n');
        if (nl)
            *nl = '\0';
        lua_settop(L, tb - 1);
        return -1;
    }
    lua_remove(L, tb);
    return 0;
}

/* ---- the route table --------------------------------------------------------------------- */

int script__parse_role(const char *name)
{
    for (int i = 0; i <= ROLE_ADMIN; i++)
        if (strcmp(name, ROLE_NAMES[i]) == 0)
            return i;
    return -1;
}

/* [.., handler-string] -> resolves to a function ref; error text in err. */
int script__resolve_handler(lua_State *L, const char *spec, int *ref, char *err, size_t cap)
{
    const char *dot = strrchr(spec, '.');
    if (dot == NULL || dot == spec || dot[1] == '\0') {
        snprintf(err, cap, "handler '%s' must be \"module.function\"", spec);
        return -1;
    }
    char modname[256];
    snprintf(modname, sizeof modname, "handlers.%.*s", (int) (dot - spec), spec);
    if (script__require(L, modname, err, cap) < 0)
        return -1;
    if (!lua_istable(L, -1)) {
        snprintf(err, cap, "module %s must return a table", modname);
        lua_pop(L, 1);
        return -1;
    }
    lua_getfield(L, -1, dot + 1);
    if (!lua_isfunction(L, -1)) {
        snprintf(err, cap, "module %s has no function %s", modname, dot + 1);
        lua_pop(L, 2);
        return -1;
    }
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

int script__load_routes(struct script *s, struct script_set *set, int idx, char *err, size_t cap)
{
    lua_State *L = s->L;
    const char *modname = s->ctx->conf->scripts_routes;
    char why[512];
    lua_pushvalue(L, idx);
    lua_getfield(L, -1, "http");
    if (!lua_istable(L, -1)) {
        snprintf(err, cap, "%s: field http must be a list of routes", modname);
        return -1;
    }
    int n = (int) lua_objlen(L, -1);
    set->routes = xcalloc((size_t) (n ? n : 1), sizeof *set->routes);
    set->router = router_new();
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        int e = lua_gettop(L);
        if (!lua_istable(L, e)) {
            snprintf(err, cap, "%s: http[%d] must be a table", modname, i);
            return -1;
        }
        /* known fields only: a typo must not silently weaken a route */
        lua_pushnil(L);
        while (lua_next(L, e)) {
            int ok = lua_type(L, -2) == LUA_TNUMBER
                         ? (lua_tointeger(L, -2) >= 1 && lua_tointeger(L, -2) <= 3)
                         : (lua_type(L, -2) == LUA_TSTRING &&
                            (strcmp(lua_tostring(L, -2), "role") == 0 ||
                             strcmp(lua_tostring(L, -2), "rate") == 0));
            if (!ok) {
                snprintf(err, cap, "%s: http[%d]: unknown field %s", modname, i,
                         lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "(number)");
                return -1;
            }
            lua_pop(L, 1);
        }
        lua_rawgeti(L, e, 1);
        lua_rawgeti(L, e, 2);
        lua_rawgeti(L, e, 3);
        lua_getfield(L, e, "role");
        lua_getfield(L, e, "rate");
        const char *method = lua_tostring(L, e + 1);
        const char *path = lua_tostring(L, e + 2);
        const char *handler = lua_tostring(L, e + 3);
        const char *role = lua_tostring(L, e + 4);
        if (!method || !path || !handler) {
            snprintf(err, cap,
                     "%s: http[%d] must be { METHOD, \"/path\", \"module.function\", "
                     "role = ... }",
                     modname, i);
            return -1;
        }
        if (role == NULL || script__parse_role(role) < 0) {
            snprintf(err, cap,
                     "%s: route %s %s: role must be one of public, player, moderator, "
                     "designer, admin",
                     modname, method, path);
            return -1;
        }
        const char *rate =
            lua_isnil(L, e + 5) ? s->ctx->conf->http_rate_class : lua_tostring(L, e + 5);
        int rate_class = -1;
        if (rate == NULL ||
            (strcmp(rate, "none") != 0 && (rate_class = conf_rate_find(s->ctx->conf, rate)) < 0)) {
            snprintf(err, cap,
                     "%s: route %s %s: rate must name a class of config.lua's ratelimit "
                     "section, or be \"none\"",
                     modname, method, path);
            return -1;
        }
        struct route *rt = &set->routes[set->nroutes];
        rt->role = script__parse_role(role);
        rt->gate.role = rt->role == ROLE_PUBLIC ? 0 : 1u << (rt->role - 1);
        rt->gate.rate_class = rate_class;
        rt->gate.rate_by_ip = rate_class >= 0 && s->ctx->conf->rate[rate_class].by_ip;
        size_t nl = strlen(method) + strlen(path) + 2;
        char *name = xmalloc(nl);
        snprintf(name, nl, "%s %s", method, path);
        rt->name = script__intern(s, name);
        free(name);
        rt->handler = xstrdup(handler);
        rt->handler_ref = LUA_NOREF;
        set->nroutes++;
        const char *why_static = NULL;
        if (router_add(set->router, method, path, set->nroutes - 1, &why_static) < 0) {
            snprintf(err, cap, "%s: route %s %s: %s", modname, method, path, why_static);
            return -1;
        }
        if (script__resolve_handler(L, handler, &rt->handler_ref, why, sizeof why) < 0) {
            snprintf(err, cap, "%s (route %s %s)", why, method, path);
            return -1;
        }
        lua_settop(L, e - 1);
    }
    lua_pop(L, 2);
    return 0;
}

/* ---- the host ---------------------------------------------------------------------------- */

struct interned {
    struct interned *next;
    char name[];
};

const char *script__intern(struct script *s, const char *name)
{
    for (struct interned *i = s->names; i; i = i->next)
        if (strcmp(i->name, name) == 0)
            return i->name;
    size_t n = strlen(name) + 1;
    struct interned *i = xmalloc(sizeof *i + n);
    memcpy(i->name, name, n);
    i->next = s->names;
    s->names = i;
    return i->name;
}

struct script *script_new(struct lb_ctx *ctx, char *err, size_t cap)
{
    struct script *s = xcalloc(1, sizeof *s);
    s->ctx = ctx;
    s->watch_fd = -1;
    ctx->script = s;
    s->encode_ref = s->decode_ref = s->traceback_ref = s->base_ref = LUA_NOREF;
    s->mem.cap = (size_t) ctx->conf->scripts_memory_limit_mb << 20;
    s->L = script__open_vm(ctx, &s->mem, ctx->conf->scripts_path, err, cap);
    if (s->L == NULL) {
        ctx->script = NULL;
        free(s);
        return NULL;
    }
    task__init(s);
    lua_State *L = s->L;
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    s->encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "decode");
    s->decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    if (script__install_searcher(s, err, cap) < 0 ||
        script__load_set(s, NULL, "start", err, cap) < 0) {
        script_free(s);
        return NULL;
    }
    lua_settop(L, 0);
    return s;
}

void script_kill_tasks(struct script *s)
{
    task__kill_all(s);
}

void script_free(struct script *s)
{
    if (s == NULL)
        return;
    task__kill_all(s);
    script__set_free_all(s);
    task__deinit(s);
    s->ctx->script = NULL;
    lua_close(s->L);
    while (s->names) {
        struct interned *i = s->names;
        s->names = i->next;
        free(i);
    }
    free(s);
}

int script_tasks(const struct script *s)
{
    return s->ntasks;
}

int script_routes(const struct script *s)
{
    return s->cur ? s->cur->nroutes : 0;
}

size_t script_memory(const struct script *s)
{
    return (size_t) lua_gc(s->L, LUA_GCCOUNT, 0) * 1024 + (size_t) lua_gc(s->L, LUA_GCCOUNTB, 0);
}

/* ---- HTTP dispatch ----------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Push the percent-decoded s[0..len) ('+' is a space when plus). -1 on a bad escape. */
static int push_decoded(lua_State *L, const char *s, size_t len, int plus)
{
    if (memchr(s, '%', len) == NULL && (!plus || memchr(s, '+', len) == NULL)) {
        lua_pushlstring(L, s, len);
        return 0;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len)
                goto bad;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                goto bad;
            luaL_addchar(&b, (char) (h * 16 + l));
            i += 2;
        } else if (plus && s[i] == '+') {
            luaL_addchar(&b, ' ');
        } else {
            luaL_addchar(&b, s[i]);
        }
    }
    luaL_pushresult(&b);
    return 0;
bad:
    luaL_pushresult(&b);
    lua_pop(L, 1);
    return -1;
}

/* [..] -> [.., query table]; -1 on a bad escape (nothing pushed). */
static int push_query(lua_State *L, const char *q, size_t len)
{
    lua_createtable(L, 0, 4);
    const char *p = q, *end = q + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t) (end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t) (stop - p));
        if (stop > p) {
            const char *kend = eq ? eq : stop;
            if (push_decoded(L, p, (size_t) (kend - p), 1) < 0) {
                lua_pop(L, 1);
                return -1;
            }
            if (eq) {
                if (push_decoded(L, eq + 1, (size_t) (stop - eq - 1), 1) < 0) {
                    lua_pop(L, 2);
                    return -1;
                }
            } else {
                lua_pushliteral(L, "");
            }
            lua_rawset(L, -3);
        }
        p = stop + 1;
    }
    return 0;
}

/* Log a Lua error of task t (value on top of t->co) with its traceback. */
void script__log_lua_error(struct script *s, struct task *t, const char *route)
{
    lua_State *L = s->L;
    const char *msg = lua_tostring(t->co, -1);
    script__count_lua_error(s, msg, strncmp(route, "ws ", 3) == 0 ? "ws" : "http");
    luaL_traceback(L, t->co, msg ? msg : "(error object is not a string)", 0);
    char fields[256];
    char eroute[160];
    log_json_escape(eroute, sizeof eroute, route, strlen(route));
    snprintf(fields, sizeof fields, "\"route\":\"%s\"", eroute);
    log_write(LOG_ERROR, "lua", t->request_id, fields, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* A typed error {status=, code=, message=, details=} raised by a handler: answer it. */
static int respond_typed_error(struct script *s, struct task *t, struct http_req *req)
{
    lua_State *co = t->co;
    int e = lua_gettop(co);
    if (!lua_istable(co, e))
        return -1;
    lua_getfield(co, e, "status");
    lua_getfield(co, e, "code");
    if (lua_type(co, -2) != LUA_TNUMBER || lua_type(co, -1) != LUA_TSTRING) {
        lua_settop(co, e);
        return -1;
    }
    int status = (int) lua_tointeger(co, -2);
    if (status < 400 || status > 599) {
        lua_settop(co, e);
        return -1;
    }
    /* body: {error = {code, message, details, request_id}} encoded by cjson */
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->encode_ref);
    lua_createtable(co, 0, 1);
    lua_createtable(co, 0, 4);
    lua_pushvalue(co, e + 2);
    lua_setfield(co, -2, "code");
    lua_getfield(co, e, "message");
    if (lua_type(co, -1) != LUA_TSTRING) {
        lua_pop(co, 1);
        lua_pushstring(co, http_status_text(status));
    }
    lua_setfield(co, -2, "message");
    lua_getfield(co, e, "details");
    if (!lua_istable(co, -1)) {
        lua_pop(co, 1);
        lua_newtable(co);
    }
    lua_setfield(co, -2, "details");
    lua_pushstring(co, req->request_id);
    lua_setfield(co, -2, "request_id");
    lua_setfield(co, -2, "error");
    if (lua_pcall(co, 1, 1, 0) != 0) {
        lua_settop(co, e);
        return -1;
    }
    size_t len;
    const char *body = lua_tolstring(co, -1, &len);
    char extra[64];
    int xn = 0;
    lua_getfield(co, e, "retry_after");
    if (lua_type(co, -1) == LUA_TNUMBER)
        xn = snprintf(extra, sizeof extra, "Retry-After: %d\r\n", (int) lua_tointeger(co, -1));
    http_respond(req, status, "application/json", body, len, xn > 0 ? extra : NULL,
                 xn > 0 ? (size_t) xn : 0);
    lua_settop(co, e);
    return 0;
}

static int valid_token(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c <= 32 || c >= 127 || strchr("()<>@,;:\\\"/[]?={}", c))
            return 0;
    }
    return 1;
}

static int valid_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if ((c < 32 && c != '\t') || c == 127)
            return 0;
    }
    return 1;
}

/* Render the headers table at idx as "Name: value\r\n" lines; content type picked out. */
static size_t render_headers(lua_State *co, int idx, char *out, size_t cap, const char **ctype,
                             struct task *t)
{
    size_t o = 0;
    if (!lua_istable(co, idx))
        return 0;
    lua_pushnil(co);
    while (lua_next(co, idx)) {
        size_t kn = 0, vn = 0;
        const char *k = lua_type(co, -2) == LUA_TSTRING ? lua_tolstring(co, -2, &kn) : NULL;
        const char *v = lua_isstring(co, -1) ? lua_tolstring(co, -1, &vn) : NULL;
        if (!k || !v || !valid_token(k, kn) || !valid_value(v, vn)) {
            log_write(LOG_WARN, "http", t->request_id, NULL, "dropped an invalid header");
        } else if (kn == 12 && strncasecmp(k, "content-type", 12) == 0) {
            *ctype = v; /* the string stays on the coroutine's stack in the table */
        } else if (kn == 14 && strncasecmp(k, "content-length", 14) == 0) {
            /* ours */
        } else if (o + kn + vn + 4 < cap) {
            memcpy(out + o, k, kn);
            o += kn;
            out[o++] = ':';
            out[o++] = ' ';
            memcpy(out + o, v, vn);
            o += vn;
            out[o++] = '\r';
            out[o++] = '\n';
        } else {
            log_write(LOG_WARN, "http", t->request_id, NULL, "response headers too long");
        }
        lua_pop(co, 1);
    }
    return o;
}

/* req->ud while the gate runs and the handler answers: the route's index and the version of
 * the set it was matched in */
static void *route_tag(int route, unsigned version)
{
    return (void *) (((uintptr_t) version << 16) | (uintptr_t) route);
}

static int route_of(const struct http_req *req)
{
    return (int) ((uintptr_t) req->ud & 0xffff);
}

static unsigned version_of(const struct http_req *req)
{
    return (unsigned) ((uintptr_t) req->ud >> 16);
}

static void on_http_done(struct task *t, int status, void *ud)
{
    struct http_req *req = ud;
    struct script *s = t->s;
    struct route *rt = &t->set->routes[route_of(req)];
    lua_State *co = t->co;

    if (status == TASK_KILLED) {
        http_respond_error(req, 503, "shutting_down", "the node is shutting down");
        return;
    }
    if (status == TASK_ERROR) {
        if (respond_typed_error(s, t, req) == 0)
            return;
        script__log_lua_error(s, t, rt->name);
        http_respond_error(req, 500, "internal_error", "internal error");
        return;
    }
    int n = lua_gettop(co);
    if (n < 1 || lua_type(co, 1) != LUA_TNUMBER || lua_tointeger(co, 1) < 100 ||
        lua_tointeger(co, 1) > 599) {
        log_write(LOG_ERROR, "lua", t->request_id, NULL,
                  "handler %s (%s) must return a status code first", rt->handler, rt->name);
        http_respond_error(req, 500, "internal_error", "internal error");
        return;
    }
    int code = (int) lua_tointeger(co, 1);
    const char *ctype = "application/json";
    char extra[2048];
    size_t xn = n >= 3 ? render_headers(co, 3, extra, sizeof extra, &ctype, t) : 0;
    const char *body = NULL;
    size_t len = 0;
    if (n >= 2) {
        int bt = lua_type(co, 2);
        if (bt == LUA_TTABLE) {
            if (code >= 400) { /* an error body: make sure it carries the request id */
                lua_getfield(co, 2, "error");
                if (lua_istable(co, -1)) {
                    lua_pushstring(co, req->request_id);
                    lua_setfield(co, -2, "request_id");
                }
                lua_pop(co, 1);
            }
            lua_rawgeti(co, LUA_REGISTRYINDEX, s->encode_ref);
            lua_pushvalue(co, 2);
            if (lua_pcall(co, 1, 1, 0) != 0) {
                log_write(LOG_ERROR, "lua", t->request_id, NULL,
                          "handler %s: cannot encode the response: %s", rt->handler,
                          lua_tostring(co, -1));
                http_respond_error(req, 500, "internal_error", "internal error");
                return;
            }
            body = lua_tolstring(co, -1, &len);
        } else if (bt == LUA_TSTRING) {
            body = lua_tolstring(co, 2, &len);
        } else if (bt != LUA_TNIL) {
            log_write(LOG_ERROR, "lua", t->request_id, NULL,
                      "handler %s: body must be a table, a string or nil", rt->handler);
            http_respond_error(req, 500, "internal_error", "internal error");
            return;
        }
    }
    if (code == 204 || code == 304)
        len = 0;
    if (log__level <= LOG_DEBUG)
        log_write(LOG_DEBUG, "http", req->request_id, NULL, "%s -> %d", rt->name, code);
    http_respond(req, code, ctype, body, len, xn ? extra : NULL, xn);
}

static void on_pass(struct http_req *req, const struct gate_identity *id, void *ud);

static void respond_simple(struct http_req *req, int status, const char *code, const char *msg)
{
    http_respond_error(req, status, code, msg);
}

/* GET /ws: the gate checks the token (header, or ?token= since browsers cannot set headers
 * on a WebSocket), then the connection becomes a WebSocket session. */
static void on_ws_pass(struct http_req *req, const struct gate_identity *id, void *ud)
{
    struct script *s = ud;
    realtime_upgrade(s->ctx->rt, req, id);
}

static int ws_upgrade(struct script *s, struct http_req *req)
{
    if (req->path_len != 3 || memcmp(req->path, "/ws", 3) != 0)
        return 0;
    if (s->ctx->rt == NULL || s->ctx->gate == NULL) {
        respond_simple(req, 404, "not_found", "no such route");
        return 1;
    }
    static const struct gate_route WS = {AUTH_ROLE_PLAYER, -1, 0};
    const char *q = req->query, *tok = NULL;
    size_t qn = req->query_len, tn = 0;
    for (size_t i = 0; i + 6 <= qn; i++) {
        if ((i == 0 || q[i - 1] == '&') && memcmp(q + i, "token=", 6) == 0) {
            tok = q + i + 6;
            while (i + 6 + tn < qn && q[i + 6 + tn] != '&')
                tn++;
            break;
        }
    }
    if (tok && tn > 0)
        gate_run_token(s->ctx->gate, req, &WS, tok, tn, on_ws_pass, s);
    else
        gate_run(s->ctx->gate, req, &WS, on_ws_pass, s);
    return 1;
}

void script_http_dispatch(struct http_req *req, void *ud)
{
    struct script *s = ud;
    if (ws_upgrade(s, req))
        return;
    struct router_match m;
    struct script_set *set = s->cur;
    int rc = router_match(set->router, req->method, req->method_len, req->path, req->path_len, &m);
    if (rc == ERR_NOTFOUND) {
        respond_simple(req, 404, "not_found", "no such route");
        return;
    }
    if (rc == ROUTER_NOMETHOD) {
        char allow[128], extra[160];
        router_allow(set->router, req->path, req->path_len, allow, sizeof allow);
        int xn = snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        char body[512];
        size_t bn = http_error_body(body, sizeof body, "method_not_allowed",
                                    "method not allowed on this route", req->request_id);
        http_respond(req, 405, "application/json", body, bn, extra, (size_t) xn);
        return;
    }
    req->ud = route_tag(m.route_id, set->version);
    struct route *rt = &set->routes[m.route_id];
    req->route = rt->name;
    if (s->ctx->gate) {
        gate_run(s->ctx->gate, req, &rt->gate, on_pass, s);
    } else if (rt->role == ROLE_PUBLIC) {
        struct gate_identity anonymous = {0};
        on_pass(req, &anonymous, s);
    } else {
        http_respond_error(req, 503, "unavailable", "authentication is not configured");
    }
}

/* The body of a request must be JSON: say so in Content-Type (this also keeps browsers from
 * sending it cross-site without a preflight). */
static int json_content_type(const struct http_req *req)
{
    size_t n;
    const char *v = http_req_header(req, "content-type", &n);
    if (v == NULL)
        return 0;
    size_t base = 0;
    while (base < n && v[base] != ';' && v[base] != ' ')
        base++;
    if (base == 16 && strncasecmp(v, "application/json", 16) == 0)
        return 1;
    return base > 5 && strncasecmp(v + base - 5, "+json", 5) == 0 &&
           strncasecmp(v, "application/", 12) == 0;
}

/* The gate let req through: build the request table and run the handler in a task. */
static void on_pass(struct http_req *req, const struct gate_identity *id, void *ud)
{
    struct script *s = ud;
    if (version_of(req) != s->cur->version) {
        /* the scripts were reloaded while the gate ran: match (and check) again, in the set
         * that will run the handler */
        script_http_dispatch(req, s);
        return;
    }
    struct script_set *set = s->cur;
    struct route *rt = &set->routes[route_of(req)];
    struct router_match m;
    router_match(set->router, req->method, req->method_len, req->path, req->path_len, &m);
    if (req->body_len > 0 && !json_content_type(req)) {
        http_respond_error(req, 415, "unsupported_media_type",
                           "the body must be JSON, sent with Content-Type: application/json");
        return;
    }

    /* build the request table on the main thread first: a bad request never starts a task */
    lua_State *L = s->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->handler_ref);
    lua_createtable(L, 0, 9);
    lua_pushstring(L, req->request_id);
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, req->method, req->method_len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, req->path, req->path_len);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, req->remote_ip);
    lua_setfield(L, -2, "ip");
    lua_createtable(L, 0, m.nparams);
    for (int i = 0; i < m.nparams; i++) {
        if (push_decoded(L, m.params[i].value, m.params[i].len, 0) < 0)
            goto bad_escape;
        lua_setfield(L, -2, m.params[i].name);
    }
    lua_setfield(L, -2, "params");
    if (push_query(L, req->query, req->query_len) < 0)
        goto bad_escape;
    lua_setfield(L, -2, "query");
    lua_createtable(L, 0, req->nheaders);
    for (int i = 0; i < req->nheaders; i++) {
        /* the gate has used the bearer token: handlers have req.account, and a script that
         * logs its headers never sees the credential */
        if (id->authenticated && req->headers[i].name_len == 13 &&
            strncasecmp(req->headers[i].name, "authorization", 13) == 0)
            continue;
        lua_pushlstring(L, req->headers[i].name, req->headers[i].name_len);
        lua_pushlstring(L, req->headers[i].value, req->headers[i].value_len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    if (id->authenticated) {
        lua_createtable(L, 0, 3);
        lua_pushnumber(L, (lua_Number) id->account_id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, id->sid);
        lua_setfield(L, -2, "sid");
        char roles[64];
        size_t rn = auth_roles_format(id->roles, roles, sizeof roles);
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
    }
    if (req->body_len > 0) {
        lua_pushlstring(L, req->body, req->body_len);
        lua_setfield(L, -2, "raw_body");
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->decode_ref);
        lua_pushlstring(L, req->body, req->body_len);
        lua_call(L, 1, 2); /* mmo.json.decode never raises: value | nil, err */
        if (lua_isnil(L, -2)) {
            char msg[256];
            snprintf(msg, sizeof msg, "invalid JSON body: %s",
                     lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
            lua_settop(L, top);
            http_respond_error(req, 400, "bad_json", msg);
            return;
        }
        lua_pop(L, 1);
        lua_setfield(L, -2, "body");
    }
    struct task *t = task__new(s, on_http_done, req, req->request_id);
    lua_xmove(L, t->co, 2);
    lua_settop(L, top);
    task__start(t, 1);
    return;

bad_escape:
    lua_settop(L, top);
    http_respond_error(req, 400, "bad_request", "bad percent-escape in the request target");
}
