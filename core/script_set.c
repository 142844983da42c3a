/* script_set.c -- script sets and the transactional reload.
 *
 * A set is every .lua file under the scripts path, read into memory at once (the snapshot),
 * compiled, and loaded as modules into a package.loaded of its own. `require` finds modules in
 * the snapshot of the set being loaded (or the current one), never on disk, so what runs is
 * exactly what was hashed, and a half-edited tree is never read twice.
 *
 * A reload builds the new set beside the running one: compile every file, require routes.lua
 * and every other module (mods/ excepted: core/mods.c loads them in their sandbox), resolve
 * the route table, run each module's optional self_check(). Any failure: the running set
 * stays, untouched, and the error says file:line. Otherwise, within this one callback of the
 * event loop, the state store commits, the old set's timers stop, the new set becomes current
 * and its timers start. Tasks keep the set they started under alive (script__set_release), so
 * a request in flight finishes on the code it began with; the previous set is kept for
 * rollback, which is a reload of its snapshot. */
#include "bindings.h"
#include "conf.h"
#include "db.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "mods.h"
#include "realtime.h"
#include "world.h"
#include "router.h"
#include "script.h"
#include "script_int.h"

#include <dirent.h>
#include <event2/event.h>
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <luajit.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILES       4096
#define MAX_FILE_BYTES  (4 << 20)
#define MAX_TOTAL_BYTES (64 << 20)

/* ---- the snapshot ---------------------------------------------------------------------- */

struct snap {
    char **paths;
    int n, cap;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static int is_lua(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

/* every .lua under dir (recursively; dot entries skipped) into sn */
static int walk(struct snap *sn, const char *dir, int depth, char *err, size_t cap)
{
    if (depth > 16) {
        snprintf(err, cap, "%s: directories nested too deep", dir);
        return -1;
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, cap, "%s: cannot open directory: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        if ((size_t) snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path)
            continue;
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            rc = walk(sn, path, depth + 1, err, cap);
        } else if (S_ISREG(st.st_mode) && is_lua(e->d_name)) {
            if (sn->n == MAX_FILES) {
                snprintf(err, cap, "more than %d scripts", MAX_FILES);
                rc = -1;
            } else {
                if (sn->n == sn->cap) {
                    sn->cap = sn->cap ? sn->cap * 2 : 64;
                    sn->paths = xrealloc(sn->paths, (size_t) sn->cap * sizeof *sn->paths);
                }
                sn->paths[sn->n++] = xstrdup(path);
            }
        }
    }
    closedir(d);
    return rc;
}

static char *read_file(const char *path, size_t *len, char *err, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size > MAX_FILE_BYTES) {
        snprintf(err, cap, "%s: larger than %d bytes", path, MAX_FILE_BYTES);
        close(fd);
        return NULL;
    }
    size_t want = (size_t) st.st_size, got = 0;
    char *buf = xmalloc(want + 1);
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t) r;
    }
    close(fd);
    *len = got;
    return buf;
}

/* Read every script into a new table { [path] = source } on the stack and fill set's hash,
 * nfiles and bytes. */
static int snapshot(struct script *s, struct script_set *set, char *err, size_t cap)
{
    lua_State *L = s->L;
    struct snap sn = {0};
    int rc = 0;
    const char *p = s->ctx->conf->scripts_path;
    while (*p && rc == 0) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0) {
            char *dir = xstrndup(p, len);
            rc = walk(&sn, dir, 0, err, cap);
            free(dir);
        }
        p += len;
        if (*p == ';')
            p++;
    }
    if (rc == 0)
        qsort(sn.paths, (size_t) sn.n, sizeof *sn.paths, cmp_str);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    lua_createtable(L, 0, sn.n);
    for (int i = 0; i < sn.n && rc == 0; i++) {
        size_t len;
        char *src = read_file(sn.paths[i], &len, err, cap);
        if (src == NULL) {
            rc = -1;
            break;
        }
        set->bytes += len;
        if (set->bytes > MAX_TOTAL_BYTES) {
            snprintf(err, cap, "the scripts are larger than %d bytes in all", MAX_TOTAL_BYTES);
            free(src);
            rc = -1;
            break;
        }
        char lenbuf[32];
        int ln = snprintf(lenbuf, sizeof lenbuf, "%zu", len);
        EVP_DigestUpdate(md, sn.paths[i], strlen(sn.paths[i]) + 1);
        EVP_DigestUpdate(md, lenbuf, (size_t) ln + 1);
        EVP_DigestUpdate(md, src, len);
        lua_pushlstring(L, src, len);
        lua_setfield(L, -2, sn.paths[i]);
        free(src);
        set->nfiles++;
    }
    unsigned char dig[32];
    unsigned dn = 0;
    EVP_DigestFinal_ex(md, dig, &dn);
    EVP_MD_CTX_free(md);
    for (unsigned i = 0; i < dn && i < 32; i++)
        snprintf(set->hash + 2 * i, 3, "%02x", dig[i]);
    for (int i = 0; i < sn.n; i++)
        free(sn.paths[i]);
    free(sn.paths);
    if (rc < 0)
        lua_pop(L, 1);
    return rc;
}

/* ---- require from the snapshot --------------------------------------------------------- */

static const struct script_set *source_set(const struct script *s)
{
    return s->loading ? s->loading : s->cur;
}

/* package.loaders[2]: find name in the snapshot of the set being loaded (or the current one) */
static int searcher(lua_State *L)
{
    struct script *s = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    const struct script_set *set = source_set(s);
    if (set == NULL || set->files_ref == LUA_NOREF) {
        lua_pushliteral(L, "\n\tno scripts loaded");
        return 1;
    }
    char rel[512];
    size_t n = strlen(name);
    if (n >= sizeof rel - 16) {
        lua_pushliteral(L, "\n\tmodule name too long");
        return 1;
    }
    for (size_t i = 0; i <= n; i++)
        rel[i] = name[i] == '.' ? '/' : name[i];
    lua_rawgeti(L, LUA_REGISTRYINDEX, set->files_ref);
    int files = lua_gettop(L);
    luaL_Buffer miss;
    luaL_buffinit(L, &miss);
    const char *p = s->ctx->conf->scripts_path;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0) {
            for (int form = 0; form < 2; form++) {
                char path[4096];
                snprintf(path, sizeof path, "%.*s/%s%s", (int) len, p, rel,
                         form ? "/init.lua" : ".lua");
                lua_getfield(L, files, path);
                if (lua_isstring(L, -1)) {
                    size_t sl;
                    const char *src = lua_tolstring(L, -1, &sl);
                    char chunk[4100];
                    snprintf(chunk, sizeof chunk, "@%s", path);
                    if (luaL_loadbuffer(L, src, sl, chunk) != 0)
                        return luaL_error(L, "%s", lua_tostring(L, -1));
                    return 1;
                }
                lua_pop(L, 1);
                luaL_addstring(&miss, "\n\tno script '");
                luaL_addstring(&miss, path);
                luaL_addstring(&miss, "'");
            }
        }
        p += len;
        if (*p == ';')
            p++;
    }
    luaL_pushresult(&miss);
    return 1;
}

int script__install_searcher(struct script *s, char *err, size_t cap)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "loaders");
    if (!lua_istable(L, -1)) {
        snprintf(err, cap, "package.loaders is missing");
        lua_settop(L, top);
        return -1;
    }
    /* [1] preload stays; [2] (files on package.path) becomes ours; the C searchers go */
    lua_pushlightuserdata(L, s);
    lua_pushcclosure(L, searcher, 1);
    lua_rawseti(L, -2, 2);
    for (int i = (int) lua_objlen(L, -1); i > 2; i--) {
        lua_pushnil(L);
        lua_rawseti(L, -2, i);
    }
    lua_pop(L, 1);
    /* the modules every set shares: what is loaded now (libraries, cjson, mmo.json) */
    lua_newtable(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, -5);
    }
    lua_pop(L, 1);
    s->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, top);
    return 0;
}

/* [..] -> [.., loaded]: a package.loaded for a new set: the shared modules (libraries and the
 * mmo.* bindings, whose state is the node's) of the current one, and nothing else */
static void new_loaded(struct script *s)
{
    lua_State *L = s->L;
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->base_ref);
    int base = out + 1;
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "preload");
    lua_remove(L, -2);
    int preload = out + 2;
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        int shared = 0;
        if (lua_type(L, -2) == LUA_TSTRING) {
            lua_pushvalue(L, -2);
            lua_rawget(L, base);
            lua_pushvalue(L, -3);
            lua_rawget(L, preload);
            shared = !lua_isnil(L, -1) || !lua_isnil(L, -2);
            lua_pop(L, 2);
        }
        if (shared) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, out);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_settop(L, out);
}

/* make the table on top the package.loaded that require uses (pops it) */
static void use_loaded(lua_State *L)
{
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_insert(L, -2);
    lua_setfield(L, -2, "loaded");
    lua_pop(L, 1);
}

/* the module name of a script path ("scripts/lib/x.lua" -> "lib.x"), or 0 */
static int module_name(const struct script *s, const char *path, char *out, size_t cap)
{
    const char *p = s->ctx->conf->scripts_path;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0 && strncmp(path, p, len) == 0 && path[len] == '/') {
            const char *rel = path + len + 1;
            size_t n = strlen(rel) - 4; /* .lua */
            if (n >= 5 && strcmp(rel + n - 5, "/init") == 0)
                n -= 5;
            if (n == 0 || n >= cap)
                return 0;
            for (size_t i = 0; i < n; i++)
                out[i] = rel[i] == '/' ? '.' : rel[i];
            out[n] = '\0';
            return 1;
        }
        p += len;
        if (*p == ';')
            p++;
    }
    return 0;
}

static int is_mod(const char *module)
{
    return strncmp(module, "mods.", 5) == 0 || strcmp(module, "mods") == 0;
}

/* ---- the state store's transaction (bindings/lua_state.c) ------------------------------ */

static void state_call(lua_State *L, const char *fn)
{
    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, "mmo.state.ctl");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, fn);
        if (lua_pcall(L, 0, 0, 0) != 0)
            log_error("script", "state %s: %s", fn, lua_tostring(L, -1));
    }
    lua_settop(L, top);
}

/* ---- sets ------------------------------------------------------------------------------ */

static struct script_set *set_new(void)
{
    struct script_set *set = xcalloc(1, sizeof *set);
    set->files_ref = set->loaded_ref = set->ws_close_ref = set->stop_ref = LUA_NOREF;
    set->timer_fns_ref = set->timers_ref = LUA_NOREF;
    return set;
}

static void set_free(struct script *s, struct script_set *set)
{
    lua_State *L = s->L;
    script__stop_timers(s, set);
    for (int i = 0; i < set->nroutes; i++) {
        free(set->routes[i].handler);
        luaL_unref(L, LUA_REGISTRYINDEX, set->routes[i].handler_ref);
    }
    free(set->routes);
    router_free(set->router);
    script__free_ws(s, set);
    luaL_unref(L, LUA_REGISTRYINDEX, set->files_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, set->loaded_ref);
    free(set);
}

static void retire(struct script *s, struct script_set *set)
{
    if (set == NULL)
        return;
    set->retired = 1;
    if (set->tasks == 0)
        set_free(s, set);
}

void script__set_release(struct script *s, struct script_set *set)
{
    if (--set->tasks == 0 && set->retired)
        set_free(s, set);
}

void script__unwatch(struct script *s);

void script__set_free_all(struct script *s)
{
    script__unwatch(s);
    mods_free(s->ctx->mods);
    s->ctx->mods = NULL;
    lua_events_shutdown();
    if (s->L == NULL)
        return;
    struct script_set *cur = s->cur, *prev = s->prev;
    s->cur = s->prev = NULL;
    retire(s, prev);
    retire(s, cur);
}

/* "path:line: message" -> file and line (0 when the message does not start so) */
void script_error_location(const char *msg, char *file, size_t fcap, int *line)
{
    *line = 0;
    if (fcap)
        file[0] = '\0';
    const char *c = strstr(msg, ".lua:");
    if (c == NULL)
        return;
    const char *num = c + 5;
    char *end;
    long l = strtol(num, &end, 10);
    if (end == num || *end != ':' || l <= 0)
        return;
    const char *start = msg;
    /* skip a "module x: " or similar prefix: the path begins after the last space before .lua */
    for (const char *q = c; q > msg; q--)
        if (q[-1] == ' ' || q[-1] == '\t' || q[-1] == '(' || q[-1] == '\'') {
            start = q;
            break;
        }
    size_t n = (size_t) (c + 4 - start);
    if (n >= fcap)
        return;
    memcpy(file, start, n);
    file[n] = '\0';
    *line = (int) l;
}

void script_untruncate(char *msg, size_t cap, const char *path)
{
    if (strncmp(msg, "...", 3) != 0)
        return;
    const char *lua = strstr(msg, ".lua:");
    if (lua == NULL)
        return;
    size_t tail = (size_t) (lua + 4 - (msg + 3)), pl = strlen(path);
    if (pl < tail || memcmp(path + pl - tail, msg + 3, tail) != 0)
        return;
    char out[4096];
    snprintf(out, sizeof out, "%s%s", path, lua + 4);
    snprintf(msg, cap, "%s", out);
}

/* err names a script by a shortened chunk name: the snapshot's path whose end it is */
static void untruncate_any(lua_State *L, int files, char *err, size_t cap)
{
    if (strncmp(err, "...", 3) != 0)
        return;
    lua_pushnil(L);
    while (lua_next(L, files)) {
        script_untruncate(err, cap, lua_tostring(L, -2));
        lua_pop(L, 1);
        if (strncmp(err, "...", 3) != 0) {
            lua_pop(L, 1);
            return;
        }
    }
}

/* compile every file of the snapshot on top (syntax errors, bytecode refused) */
static int compile_all(struct script *s, int files, char *err, size_t cap)
{
    lua_State *L = s->L;
    lua_pushnil(L);
    while (lua_next(L, files)) {
        size_t sl;
        const char *path = lua_tostring(L, -2);
        const char *src = lua_tolstring(L, -1, &sl);
        char mod[512];
        if (module_name(s, path, mod, sizeof mod) && is_mod(mod)) {
            lua_pop(L, 1);
            continue;
        }
        if (sl > 0 && src[0] == '\033') {
            snprintf(err, cap, "%s: precompiled bytecode is not accepted", path);
            lua_pop(L, 2);
            return -1;
        }
        char chunk[4100];
        snprintf(chunk, sizeof chunk, "@%s", path);
        if (luaL_loadbuffer(L, src, sl, chunk) != 0) {
            snprintf(err, cap, "%s", lua_tostring(L, -1));
            lua_pop(L, 3);
            return -1;
        }
        lua_pop(L, 2);
    }
    return 0;
}

/* require every module of the snapshot (mods excepted) in a sorted order */
static int require_all(struct script *s, int files, char *err, size_t cap)
{
    lua_State *L = s->L;
    int n = 0;
    char **names = NULL;
    lua_pushnil(L);
    while (lua_next(L, files)) {
        char mod[512];
        if (module_name(s, lua_tostring(L, -2), mod, sizeof mod) && !is_mod(mod)) {
            names = xrealloc(names, (size_t) (n + 1) * sizeof *names);
            names[n++] = xstrdup(mod);
        }
        lua_pop(L, 1);
    }
    qsort(names, (size_t) n, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (rc == 0) {
            if (script__require(L, names[i], err, cap) < 0)
                rc = -1;
            else
                lua_pop(L, 1);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

/* each module's optional self_check(): true, or nil/false and a reason, or an error */
static int self_checks(struct script *s, int loaded, char *err, size_t cap)
{
    lua_State *L = s->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->base_ref);
    int base = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, loaded)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -2);
        lua_rawget(L, base);
        int shared = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (shared) {
            lua_pop(L, 1);
            continue;
        }
        lua_getfield(L, -1, "self_check");
        if (!lua_isfunction(L, -1)) {
            lua_pop(L, 2);
            continue;
        }
        const char *name = lua_tostring(L, -3);
        lua_getfield(L, LUA_GLOBALSINDEX, "debug");
        lua_getfield(L, -1, "traceback");
        lua_remove(L, -2);
        lua_insert(L, -2);
        int ok = lua_pcall(L, 0, 2, -2) == 0;
        if (ok && lua_toboolean(L, -2)) {
            lua_pop(L, 4);
            continue;
        }
        const char *why = ok ? lua_tostring(L, -1) : lua_tostring(L, -1);
        char first[512];
        snprintf(first, sizeof first, "%s", why ? why : "returned false");
        char *nl = strchr(first, '\n');
        if (nl)
            *nl = '\0';
        snprintf(err, cap, "%s: self_check failed: %s", name, first);
        lua_settop(L, base - 1);
        return -1;
    }
    lua_pop(L, 1);
    return 0;
}

/* ---- metrics and audit ----------------------------------------------------------------- */

static void lua_errors_family(struct script *s);

static void count_reload(struct script *s, const char *trigger, const char *result, double secs)
{
    struct metrics *m = s->ctx->metrics;
    if (m == NULL)
        return;
    lua_errors_family(s);
    if (s->m_reloads == NULL) {
        const char *l[] = {"trigger", "result"};
        s->m_reloads = metrics_family(m, "mmo_script_reloads_total",
                                      "Script loads (start, reloads, rollbacks), by trigger and "
                                      "result (ok, error)",
                                      METRIC_COUNTER, 2, l, NULL, 0, NULL);
        s->m_version = metrics_family(m, "mmo_script_version",
                                      "Version of the script set in use (1 at start, one more "
                                      "per reload)",
                                      METRIC_GAUGE, 0, NULL, NULL, 0, NULL);
        s->m_reload_seconds = metrics_family(m, "mmo_script_reload_duration_seconds",
                                             "Time a script load took (snapshot, compile, "
                                             "require, swap), by result",
                                             METRIC_HISTOGRAM, 1, l + 1, NULL, 0, NULL);
    }
    const char *v[2] = {trigger, result};
    metrics_inc(metrics_series(s->m_reloads, v), 1);
    metrics_observe(metrics_series(s->m_reload_seconds, v + 1), secs);
    if (s->cur)
        metrics_set(metrics_only(s->m_version), s->cur->version);
}

static void on_audit(struct pg_result *res, int status, void *ud)
{
    if (status != 0)
        log_error("script", "reload audit entry not stored: %s", err_str(status));
}

static void audit(struct script *s, const char *action, const char *who, const char *trigger,
                  const struct script_set *from, const struct script_set *to, const char *error)
{
    char data[2048], eerr[1024] = "", etrig[64];
    log_json_escape(etrig, sizeof etrig, trigger, strlen(trigger));
    if (error)
        log_json_escape(eerr, sizeof eerr, error, strlen(error));
    int n =
        snprintf(data, sizeof data,
                 "{\"trigger\":\"%s\",\"from\":{\"version\":%u,\"hash\":\"%s\"},"
                 "\"result\":\"%s\"",
                 etrig, from ? from->version : 0, from ? from->hash : "", error ? "error" : "ok");
    if (to)
        n += snprintf(data + n, sizeof data - (size_t) n,
                      ",\"to\":{\"version\":%u,\"hash\":\"%s\",\"files\":%d}", to->version,
                      to->hash, to->nfiles);
    if (error)
        n += snprintf(data + n, sizeof data - (size_t) n, ",\"error\":\"%s\"", eerr);
    snprintf(data + n, sizeof data - (size_t) n, "}");
    log_write(error ? LOG_WARN : LOG_INFO, "audit", NULL, data, "%s by %s", action, who);
    if (s->ctx->db == NULL)
        return;
    const char *actor = strncmp(who, "account:", 8) == 0 ? who + 8 : NULL;
    const char *params[4] = {actor, action, "scripts", data};
    db_query(s->ctx->db,
             "insert into audit_log (actor, action, target, data) values ($1, $2, $3, $4)", 4,
             params, NULL, 5000, on_audit, NULL, NULL);
}

static double now_mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double) t.tv_sec + (double) t.tv_nsec / 1e9;
}

/* ---- mods ------------------------------------------------------------------------------ */

/* game.send(player_id, table) of a mod: to that player if it is in this node's world */
static void mod_send(void *ud, int64_t player_id, const char *json, size_t len)
{
    struct script *s = ud;
    if (s->ctx->rt)
        world_send_player(realtime_world(s->ctx->rt), player_id, json, len);
}

/* a mod's events.emit: the game's handlers (mmo.events.on) hear it too */
static void mod_emit(void *ud, const char *mod, const char *event, const char *json, size_t len)
{
    struct script *s = ud;
    lua_events_from_mod(s->ctx, mod, event, json, len);
}

/* the mods of a new set: mods.dir, or the first mods/ of the scripts path */
static struct mods *load_mods(struct script *s, char *err, size_t cap)
{
    const struct conf *c = s->ctx->conf;
    char dir[4096];
    if (c->mods_dir[0]) {
        snprintf(dir, sizeof dir, "%s", c->mods_dir);
    } else {
        /* the first directory of the scripts path that has a mods/ (none: no mods) */
        dir[0] = '\0';
        for (const char *p = c->scripts_path; *p && !dir[0];) {
            const char *end = strchr(p, ';');
            int n = end ? (int) (end - p) : (int) strlen(p);
            struct stat st;
            snprintf(dir, sizeof dir, "%.*s/mods", n, p);
            if (n == 0 || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
                dir[0] = '\0';
            p += n;
            if (*p == ';')
                p++;
        }
        if (!dir[0])
            snprintf(dir, sizeof dir, "scripts/mods"); /* missing: an empty set */
    }
    struct mods_limits lim = {(size_t) c->mods_memory_mb << 20, c->mods_instructions,
                              c->mods_time_ms, c->mods_strikes};
    struct mods_host host = {s, mod_send, mod_emit};
    return mods_load(dir, &lim, &host, s->ctx->metrics, err, cap);
}

/* ---- load ------------------------------------------------------------------------------ */

/* A load runs on the event loop: a module that loops at load time (or a self_check, or a
 * migrate) must not hang the node. While a set loads the JIT is off (a count hook never fires
 * in compiled code) and a count hook checks the clock: past the budget, every check raises. */
static double load_deadline, load_budget;

static void load_hook(lua_State *L, lua_Debug *ar)
{
    if (now_mono() <= load_deadline)
        return;
    /* from now on every instruction raises, so a pcall around the loop cannot catch it and go
     * on: the error climbs to the loader */
    lua_sethook(L, load_hook, LUA_MASKCOUNT, 1);
    lua_getinfo(L, "Sl", ar);
    luaL_error(L,
               "%s:%d: loading the scripts took longer than %g s (scripts.load_budget_ms): a "
               "loop at load time?",
               ar->short_src, ar->currentline, load_budget);
}

static void guard_load(struct script *s, int on)
{
    lua_State *L = s->L;
    if (on) {
        load_budget = s->ctx->conf->scripts_load_budget_ms / 1000.0;
        load_deadline = now_mono() + load_budget;
        luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
        lua_sethook(L, load_hook, LUA_MASKCOUNT, 10000);
    } else {
        lua_sethook(L, NULL, 0, 0);
        luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    }
}

int script__load_set(struct script *s, const struct script_set *from, const char *who, char *err,
                     size_t cap)
{
    lua_State *L = s->L;
    int top = lua_gettop(L);
    double t0 = now_mono();
    struct script_set *set = set_new();
    snprintf(set->who, sizeof set->who, "%s", who);
    if (from) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, from->files_ref);
        memcpy(set->hash, from->hash, sizeof set->hash);
        set->nfiles = from->nfiles;
        set->bytes = from->bytes;
    } else if (snapshot(s, set, err, cap) < 0) {
        free(set);
        lua_settop(L, top);
        return -1;
    }
    int files = lua_gettop(L);
    lua_pushvalue(L, files);
    set->files_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    guard_load(s, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    int old_loaded = lua_gettop(L);
    int rc = compile_all(s, files, err, cap);
    int loaded = 0;
    if (rc == 0) {
        new_loaded(s);
        loaded = lua_gettop(L);
        lua_pushvalue(L, loaded);
        use_loaded(L);
        s->loading = set;
        /* the state store first, so declarations made while loading are staged */
        if (script__require(L, "mmo.state", err, cap) < 0)
            rc = -1;
        else
            lua_pop(L, 1);
        if (rc == 0) {
            state_call(L, "begin");
            lua_events_begin(L);
        }
    }
    if (rc == 0) {
        set->router = NULL;
        if (script__require(L, s->ctx->conf->scripts_routes, err, cap) < 0) {
            rc = -1;
        } else {
            int routes = lua_gettop(L);
            if (!lua_istable(L, routes)) {
                snprintf(err, cap, "%s: must return a table", s->ctx->conf->scripts_routes);
                rc = -1;
            } else if (script__load_routes(s, set, routes, err, cap) < 0 ||
                       script__load_ws(s, set, routes, err, cap) < 0) {
                rc = -1;
            }
            lua_settop(L, loaded);
        }
    }
    if (rc == 0)
        rc = require_all(s, files, err, cap);
    if (rc == 0)
        rc = self_checks(s, loaded, err, cap);
    guard_load(s, 0);
    /* the mods, each in its sandbox: one that does not load is reported, not fatal */
    struct mods *mods = NULL;
    if (rc == 0 && s->ctx->conf->mods_enabled && (mods = load_mods(s, err, cap)) == NULL)
        rc = -1;
    const char *trigger = strncmp(who, "account:", 8) == 0 ? "api" : who;
    if (rc < 0) {
        untruncate_any(L, files, err, cap);
        if (loaded) {
            state_call(L, "abort");
            lua_events_end(L, 0);
        }
        lua_pushvalue(L, old_loaded);
        use_loaded(L);
        s->loading = NULL;
        set_free(s, set);
        lua_settop(L, top);
        if (s->cur) {
            count_reload(s, trigger, "error", now_mono() - t0);
            audit(s, from ? "scripts.rollback" : "scripts.reload", who, trigger, s->cur, NULL, err);
        }
        return -1;
    }
    /* commit: nothing below can fail */
    state_call(L, "commit");
    lua_events_end(L, 1);
    lua_pushvalue(L, loaded);
    set->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    set->version = ++s->versions;
    set->loaded_at = (double) time(NULL);
    s->loading = NULL;
    struct script_set *old = s->cur;
    if (old)
        script__stop_timers(s, old);
    retire(s, s->prev);
    s->prev = old;
    s->cur = set;
    if (s->ctx->conf->mods_enabled) {
        struct mods *old_mods = s->ctx->mods;
        s->ctx->mods = mods; /* loads run from the loop, never inside a mod's handler */
        mods_free(old_mods);
    }
    script__start_timers(s, set);
    lua_settop(L, top);
    double took = now_mono() - t0;
    count_reload(s, trigger, "ok", took);
    if (old)
        audit(s, from ? "scripts.rollback" : "scripts.reload", who, trigger, old, set, NULL);
    log_info("script", "scripts version %u loaded (%s, %d files, %zu bytes, sha256 %.16s, %.1f ms)",
             set->version, who, set->nfiles, set->bytes, set->hash, took * 1000);
    return 0;
}

/* ---- the public side ------------------------------------------------------------------- */

int script_reload(struct script *s, const char *who, int rollback, char *err, size_t cap)
{
    if (rollback) {
        if (s->prev == NULL) {
            snprintf(err, cap, "there is no previous script set to return to");
            return -2;
        }
        return script__load_set(s, s->prev, who, err, cap);
    }
    return script__load_set(s, NULL, who, err, cap);
}

/* [..] -> [.., info] */
void script_push_info(struct script *s, lua_State *L)
{
    const struct script_set *set = s->cur;
    lua_createtable(L, 0, 8);
    if (set == NULL)
        return;
    lua_pushinteger(L, set->version);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, set->hash);
    lua_setfield(L, -2, "hash");
    char at[32];
    time_t t = (time_t) set->loaded_at;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    lua_pushstring(L, at);
    lua_setfield(L, -2, "loaded_at");
    lua_pushstring(L, set->who);
    lua_setfield(L, -2, "loaded_by");
    lua_pushinteger(L, set->nfiles);
    lua_setfield(L, -2, "files");
    lua_pushnumber(L, (lua_Number) set->bytes);
    lua_setfield(L, -2, "bytes");
    if (s->prev) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, s->prev->version);
        lua_setfield(L, -2, "version");
        lua_pushstring(L, s->prev->hash);
        lua_setfield(L, -2, "hash");
        lua_setfield(L, -2, "previous");
    }
    /* modules: every script of the snapshot, by name, with its file; loaded or not */
    int info = lua_gettop(L);
    lua_newtable(L);
    int list = info + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, set->files_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, set->loaded_ref);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, list + 1)) {
        const char *path = lua_tostring(L, -2);
        char mod[512];
        if (module_name(s, path, mod, sizeof mod) && !is_mod(mod)) {
            lua_createtable(L, 0, 3);
            lua_pushstring(L, mod);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, path);
            lua_setfield(L, -2, "file");
            lua_pushinteger(L, (lua_Integer) lua_objlen(L, -2));
            lua_setfield(L, -2, "bytes");
            lua_rawseti(L, list, ++n);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, list);
    /* sorted by name, for people */
    lua_getfield(L, LUA_GLOBALSINDEX, "table");
    lua_getfield(L, -1, "sort");
    lua_remove(L, -2);
    lua_pushvalue(L, list);
    luaL_loadstring(L, "local a, b = ... return a.name < b.name");
    lua_call(L, 2, 0);
    lua_setfield(L, info, "modules");
    /* the mods, in load order */
    mods_push_list(s->ctx->mods, L);
    lua_setfield(L, info, "mods");
    /* the state store's entries */
    lua_getfield(L, LUA_REGISTRYINDEX, "mmo.state.ctl");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "list");
        if (lua_pcall(L, 0, 1, 0) == 0)
            lua_setfield(L, info, "state");
        else
            lua_pop(L, 1);
    }
    lua_settop(L, info);
}

unsigned script_version(const struct script *s)
{
    return s->cur ? s->cur->version : 0;
}

void script_hash(const struct script *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s", s->cur ? s->cur->hash : "");
}

/* ---- scripts.watch: reload when a file changes (development) ---------------------------- */

#include <sys/inotify.h>

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE)

static void watch_dirs(struct script *s, const char *dir, int depth)
{
    if (depth > 16 || inotify_add_watch(s->watch_fd, dir, WATCH_MASK) < 0)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        if ((size_t) snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path &&
            stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            watch_dirs(s, path, depth + 1);
    }
    closedir(d);
}

static void watch_all(struct script *s)
{
    const char *p = s->ctx->conf->scripts_path;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        if (len > 0) {
            char *dir = xstrndup(p, len);
            watch_dirs(s, dir, 0);
            free(dir);
        }
        p += len;
        if (*p == ';')
            p++;
    }
}

/* the files have been quiet for a moment: reload (an editor writes in several steps) */
static void on_watch_quiet(evutil_socket_t fd, short what, void *arg)
{
    struct script *s = arg;
    char err[1024];
    watch_all(s); /* directories made since */
    if (script_reload(s, "watch", 0, err, sizeof err) != 0)
        log_error("script", "scripts changed but were not reloaded (the running set stays): %s",
                  err);
}

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct script *s = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int changed = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *) p;
            if ((ev->mask & IN_ISDIR) || (ev->len > 0 && is_lua(ev->name)))
                changed = 1;
            p += sizeof *ev + ev->len;
        }
    }
    if (changed) {
        struct timeval quiet = {0, 300 * 1000};
        evtimer_add(s->watch_timer, &quiet);
    }
}

int script_watch(struct script *s, char *err, size_t cap)
{
    if (s->ctx->base == NULL || s->watch_fd >= 0)
        return 0;
    s->watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (s->watch_fd < 0) {
        snprintf(err, cap, "inotify: %s", strerror(errno));
        return -1;
    }
    watch_all(s);
    s->watch_ev = event_new(s->ctx->base, s->watch_fd, EV_READ | EV_PERSIST, on_watch, s);
    s->watch_timer = evtimer_new(s->ctx->base, on_watch_quiet, s);
    event_add(s->watch_ev, NULL);
    log_info("script", "watching the scripts: a change reloads them");
    return 0;
}

void script__unwatch(struct script *s)
{
    if (s->watch_ev)
        event_free(s->watch_ev);
    if (s->watch_timer)
        event_free(s->watch_timer);
    if (s->watch_fd >= 0)
        close(s->watch_fd);
    s->watch_ev = s->watch_timer = NULL;
    s->watch_fd = -1;
}

/* ---- Lua errors by module ------------------------------------------------------------------ */

/* the family, made at the first load so that it is exposed (at no series) before any error */
static void lua_errors_family(struct script *s)
{
    struct metrics *m = s->ctx->metrics;
    if (m != NULL && s->m_lua_errors == NULL) {
        const char *l[] = {"module", "hook"};
        s->m_lua_errors = metrics_family(m, "mmo_lua_errors_total",
                                         "Lua errors that reached the core (a handler, a message "
                                         "handler or a background task failed), by the module "
                                         "where they were raised and the kind of hook",
                                         METRIC_COUNTER, 2, l, NULL, 0, NULL);
    }
}

void script__count_lua_error(struct script *s, const char *msg, const char *hook)
{
    lua_errors_family(s);
    if (s->m_lua_errors == NULL)
        return;
    char file[512], mod[256] = "(unknown)";
    int line;
    script_error_location(msg ? msg : "", file, sizeof file, &line);
    if (line > 0 && !module_name(s, file, mod, sizeof mod))
        snprintf(mod, sizeof mod, "(other)");
    const char *v[2] = {mod, hook};
    metrics_inc(metrics_series(s->m_lua_errors, v), 1);
}
