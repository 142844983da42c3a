/* lua_db.c -- require "mmo.db": PostgreSQL from a task coroutine (core/db.c underneath).
 *
 *   db.query(sql, ...)                 -> rows | nil, err, detail
 *   db.query_timeout(ms, sql, ...)     -> same, with an explicit timeout (ms > 0)
 *   db.reserve([timeout_ms])           -> conn | nil, err      one connection, until released
 *   conn:query(sql, ...)               -> rows | nil, err, detail
 *   conn:query_timeout(ms, sql, ...)   -> same
 *   conn:release([broken])             -> true   idempotent; broken closes the connection
 *   db.tx(fn [, opts])                 -> fn's results | nil, err, detail
 *   db.read(sql, ...)                  -> rows | nil, err, detail   a read that may be stale
 *
 * db.read runs a query that only reads (its first word select, with, values, table or show;
 * anything else raises) on the streaming replica of this database when config.lua names one
 * (postgres.replica_conninfo, shards[n].replica_conninfo), else on the primary. When the
 * replica is not fresh (postgres.replica_max_lag_ms > 0 and core/replica.c cannot show that it
 * has replayed everything the primary committed more than that long ago), the query goes to the
 * primary at once. When the replica's pool has no connection up, or the replica answers
 * "unavailable" or "timeout", or refuses with sqlstate 40001 (a conflict with recovery) or
 * 57P0x (shutting down, starting), the same query runs once on the primary. What the replica
 * answers may lag the primary (asynchronous streaming: usually milliseconds; at most about
 * replica_max_lag_ms, unbounded with 0 while the replica is cut off): use db.read only where a
 * slightly stale answer is fine, and never for a read that a write then relies on. A write
 * slipped into a "with" runs on the primary when the replica is out.
 *
 * Parameters: every argument after sql is one text parameter, $1..$n (never spliced into
 * the SQL): nil (or json null) -> NULL, boolean -> 't'/'f', integral number up to 2^53 ->
 * "%lld", other number -> shortest "%.17g" form that reads back exactly, string -> as is (no
 * NUL bytes: "invalid"), table -> JSON (mmo.json). Anything else raises.
 *
 * rows: an array of rows, each a table keyed by column name. By type OID: bool -> boolean;
 * int2/int4/oid/float4/float8/numeric -> number; int8 -> number, or string beyond +-2^53 (keeps
 * every digit); json/jsonb -> decoded table (string if it cannot be decoded); anything else
 * (text, timestamptz, uuid, arrays...) -> string. SQL NULL -> absent. rows.affected is the
 * command's row count (PQcmdTuples) when the server gives one, except for SELECT (use #rows):
 * INSERT/UPDATE/DELETE (with or without RETURNING), MERGE, COPY...
 *
 * err is err_str(): "timeout", "unavailable" (PostgreSQL down, or no pool: fails at once),
 * "closed" (node shutting down, or the reserved connection was lost), "busy" (a query is
 * already running on that conn), "invalid", "query" (the server rejected the statement). For
 * "query", detail = {sqlstate=, message=, detail=, hint=, constraint=, table=, column=,
 * schema=} (fields the server did not send are absent); otherwise detail is nil.
 *
 * db.tx(fn, opts) reserves a connection, runs BEGIN, then fn(q) where q(sql, ...) is
 * conn:query on that connection. fn raised -> ROLLBACK, the error is raised again unchanged.
 * fn returned nil (first result) -> ROLLBACK, fn's results are returned. A query inside fn
 * failed (even if fn went on) -> ROLLBACK, nil, err, detail of that failure. Otherwise
 * COMMIT and fn's results (true if fn returned nothing); a failed COMMIT -> nil, err, detail.
 * opts: retries (default 0): run fn again after a serialization failure (40001) or a deadlock
 * (40P01) inside the transaction or at COMMIT, up to that many times; isolation:
 * "serializable" | "repeatable read" | "read committed"; timeout_ms: for the reservation.
 * A tx holds one connection for its whole run: never nest db.tx or call db.query inside fn
 * on a pool of one.
 *
 * Every call yields the calling task (lb.h); outside a task it raises. A conn is userdata
 * "mmo.db.conn": query on a released conn raises; __gc releases a still-held conn as broken.
 *
 * Registered by the lead in package.preload as "mmo.db" (bindings/bindings.h). */
#include "bindings.h"
#include "conf.h"
#include "db.h"
#include "err.h"
#include "lb.h"
#include "mem.h"
#include "replica.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONN_MT    "mmo.db.conn"
#define HELPER_KEY "mmo.db.helper" /* registry: thread where replies become Lua values */
#define ENCODE_KEY "mmo.db.encode" /* registry: mmo.json encode (raises) */
#define DECODE_KEY "mmo.db.decode" /* registry: cjson.safe decode (nil, err) */
#define MAX_PARAMS 65535
#define SMALL      16
#define MAX_EXACT  9007199254740992.0 /* 2^53 */

enum { OID_BOOL = 16, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_OID = 26, OID_JSON = 114 };
enum { OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700, OID_JSONB = 3802 };

/* A reserved connection owned by Lua. c is NULL once released. While a query runs on it, w
 * and op are that query's wait and handle. */
struct lconn {
    struct db_conn *c;
    struct lb_wait *w;
    struct db_op *op;
};

/* What a callback hands to push_reply on the helper thread. */
struct reply {
    struct pg_result *res;
    int status;
    int reserve;          /* a db.reserve answer: push a conn */
    struct db_conn *conn; /* for reserve: becomes the userdata's (cleared once taken) */
};

/* ---- parameters -------------------------------------------------------------------------- */

static void format_number(lua_Number d, char *buf, size_t cap)
{
    if (d == floor(d) && fabs(d) <= MAX_EXACT) {
        snprintf(buf, cap, "%lld", (long long) d);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (prec == 17 || strtod(buf, NULL) == d || isnan(d))
            return;
    }
}

/* Replace the argument at idx with its text form (a string) or nil. Raises on a bad type. */
static void param_to_text(lua_State *L, int idx)
{
    char buf[40];
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TSTRING: return;
    case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, idx) ? "t" : "f"); break;
    case LUA_TNUMBER:
        format_number(lua_tonumber(L, idx), buf, sizeof buf);
        lua_pushstring(L, buf);
        break;
    case LUA_TTABLE:
        lua_getfield(L, LUA_REGISTRYINDEX, ENCODE_KEY);
        lua_pushvalue(L, idx);
        lua_call(L, 1, 1);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { /* cjson.null */
            lua_pushnil(L);
            break;
        }
        /* fallthrough */
    default:
        luaL_argerror(L, idx,
                      lua_pushfstring(L,
                                      "nil, boolean, number, string or table "
                                      "expected, got %s",
                                      luaL_typename(L, idx)));
        return;
    }
    lua_replace(L, idx);
}

/* ---- replies -> Lua values (on the helper thread, protected) ---------------------------- */

static void push_value(lua_State *L, const PGresult *res, int row, int col, int decode_idx)
{
    const char *v = PQgetvalue(res, row, col);
    size_t len = (size_t) PQgetlength(res, row, col);
    switch (PQftype(res, col)) {
    case OID_BOOL: lua_pushboolean(L, v[0] == 't'); break;
    case OID_INT8: {
        long long n = strtoll(v, NULL, 10);
        if (n >= -(long long) MAX_EXACT && n <= (long long) MAX_EXACT)
            lua_pushnumber(L, (lua_Number) n);
        else
            lua_pushlstring(L, v, len);
        break;
    }
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC: lua_pushnumber(L, strtod(v, NULL)); break;
    case OID_JSON:
    case OID_JSONB:
        lua_pushvalue(L, decode_idx);
        lua_pushlstring(L, v, len);
        lua_call(L, 1, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, v, len);
        }
        break;
    default: lua_pushlstring(L, v, len); break;
    }
}

/* [..] -> [.., rows] */
static void push_rows(lua_State *L, const PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    luaL_checkstack(L, ncols + 8, "too many columns");
    lua_getfield(L, LUA_REGISTRYINDEX, DECODE_KEY);
    int decode_idx = lua_gettop(L);
    for (int j = 0; j < ncols; j++) /* names once, then pushvalue per cell */
        lua_pushstring(L, PQfname(res, j));
    lua_createtable(L, nrows, 1);
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (int j = 0; j < ncols; j++) {
            if (PQgetisnull(res, i, j))
                continue;
            lua_pushvalue(L, decode_idx + 1 + j);
            push_value(L, res, i, j, decode_idx);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, i + 1);
    }
    /* Not for SELECT (#rows says it), so a result set stays a plain array (JSON [...]). */
    const char *affected = PQcmdTuples((PGresult *) res);
    const char *cmd = PQcmdStatus((PGresult *) res);
    if (affected && affected[0] && !(cmd && strncmp(cmd, "SELECT", 6) == 0)) {
        lua_pushnumber(L, strtod(affected, NULL));
        lua_setfield(L, -2, "affected");
    }
    lua_replace(L, decode_idx); /* rows where decode was; drop the names */
    lua_settop(L, decode_idx);
}

/* [..] -> [.., detail] */
static void push_detail(lua_State *L, const PGresult *res)
{
    static const struct {
        const char *name;
        int code;
    } FIELDS[] = {
        {"sqlstate", PG_DIAG_SQLSTATE},          {"message", PG_DIAG_MESSAGE_PRIMARY},
        {"detail", PG_DIAG_MESSAGE_DETAIL},      {"hint", PG_DIAG_MESSAGE_HINT},
        {"constraint", PG_DIAG_CONSTRAINT_NAME}, {"table", PG_DIAG_TABLE_NAME},
        {"column", PG_DIAG_COLUMN_NAME},         {"schema", PG_DIAG_SCHEMA_NAME},
    };
    lua_createtable(L, 0, 4);
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++) {
        const char *v = res ? PQresultErrorField(res, FIELDS[i].code) : NULL;
        if (v == NULL)
            continue;
        lua_pushstring(L, v);
        lua_setfield(L, -2, FIELDS[i].name);
    }
}

/* Protected: [push_reply, reply] -> the binding's results. */
static int push_reply(lua_State *L)
{
    struct reply *r = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (r->reserve && r->status == 0) {
        struct lconn *lc = lua_newuserdata(L, sizeof *lc);
        memset(lc, 0, sizeof *lc);
        luaL_getmetatable(L, CONN_MT);
        lua_setmetatable(L, -2);
        lc->c = r->conn;
        r->conn = NULL; /* the userdata owns it now */
        return 1;
    }
    if (r->status == 0) {
        push_rows(L, r->res);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, err_str(r->status));
    if (r->status != ERR_QUERY)
        return 2;
    push_detail(L, r->res);
    return 3;
}

/* Turn the reply into Lua values on the helper thread (never on the suspended coroutine:
 * nothing may be called there; an error there would escape into the event loop) and resume
 * the task with them. */
static void resume_with(struct lb_wait *w, struct reply *r)
{
    lua_State *co = lb_wait_thread(w);
    lua_getfield(co, LUA_REGISTRYINDEX, HELPER_KEY);
    lua_State *h = lua_tothread(co, -1);
    lua_pop(co, 1);
    lua_settop(h, 1); /* push_reply stays at 1 */
    lua_pushvalue(h, 1);
    lua_pushlightuserdata(h, r);
    if (lua_pcall(h, 1, LUA_MULTRET, 0) != 0) {
        lua_settop(h, 1);
        if (r->conn)
            db_release(r->conn, 0);
        lb_wait_resume_err(w, -ENOMEM);
        return;
    }
    int n = lua_gettop(h) - 1;
    lua_xmove(h, co, n);
    lb_wait_resume(w, n);
}

static void on_result(struct pg_result *res, int status, void *ud)
{
    struct reply r = {res, status, 0, NULL};
    resume_with(ud, &r);
}

static void on_conn_result(struct pg_result *res, int status, void *ud)
{
    struct lconn *lc = ud;
    struct lb_wait *w = lc->w;
    lc->w = NULL;
    lc->op = NULL;
    struct reply r = {res, status, 0, NULL};
    resume_with(w, &r);
}

static void on_reserved(struct db_conn *conn, int status, void *ud)
{
    struct reply r = {NULL, status, 1, conn};
    resume_with(ud, &r);
}

static void cancel_op(void *ud)
{
    db_op_cancel(ud);
}

static void cancel_conn_query(void *ud)
{
    struct lconn *lc = ud;
    db_op_cancel(lc->op);
    lc->op = NULL;
    lc->w = NULL;
}

/* ---- calls --------------------------------------------------------------------------------- */

/* The pool of the module table the function belongs to (its upvalue): the main database, or
 * a shard (db.shard(n)). */
static struct db_pool *ctx_pool(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* sql at sqli, parameters after it up to the top. lc NULL: any pool connection. */
static int start_query(lua_State *L, struct lconn *lc, int timeout_ms, int sqli)
{
    size_t sqllen;
    const char *sql = luaL_checklstring(L, sqli, &sqllen);
    luaL_argcheck(L, memchr(sql, '\0', sqllen) == NULL, sqli, "SQL contains a NUL byte");
    int top = lua_gettop(L), n = top - sqli;
    if (n > MAX_PARAMS)
        return luaL_error(L, "too many parameters (%d, at most %d)", n, MAX_PARAMS);
    for (int i = sqli + 1; i <= top; i++)
        param_to_text(L, i);
    struct db_pool *pool = lc ? NULL : ctx_pool(L);
    if (lc == NULL && pool == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);

    struct lb_wait *w = lb_wait_begin(L); /* raises outside a task: nothing to undo yet */
    const char *small_v[SMALL];
    int small_l[SMALL];
    const char **vals = n > SMALL ? xmalloc((size_t) n * sizeof *vals) : small_v;
    int *lens = n > SMALL ? xmalloc((size_t) n * sizeof *lens) : small_l;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        vals[i] = lua_tolstring(L, sqli + 1 + i, &len); /* NULL for nil */
        lens[i] = (int) len;
        if (len > INT_MAX)
            rc = ERR_TOOLARGE;
    }
    struct db_op *op = NULL;
    if (rc == 0 && lc)
        rc = db_conn_query(lc->c, sql, n, vals, lens, timeout_ms, on_conn_result, lc, &op);
    else if (rc == 0)
        rc = db_query(pool, sql, n, vals, lens, timeout_ms, on_result, w, &op);
    if (vals != small_v) {
        free(vals);
        free(lens);
    }
    if (rc < 0)
        return lb_wait_fail(L, w, rc);
    if (lc) { /* the callback never fires before this returns */
        lc->w = w;
        lc->op = op;
        lb_wait_on_cancel(w, cancel_conn_query, lc);
    } else {
        lb_wait_on_cancel(w, cancel_op, op);
    }
    return lua_yield(L, 0);
}

static int check_timeout(lua_State *L, int idx)
{
    lua_Number ms = luaL_checknumber(L, idx);
    luaL_argcheck(L, ms > 0 && ms <= INT_MAX, idx, "timeout_ms must be > 0");
    return (int) ms;
}

static int l_query(lua_State *L)
{
    return start_query(L, NULL, 0, 1);
}

static int l_query_timeout(lua_State *L)
{
    return start_query(L, NULL, check_timeout(L, 1), 2);
}

static int l_reserve(lua_State *L)
{
    int timeout_ms = lua_isnoneornil(L, 1) ? 0 : check_timeout(L, 1);
    struct db_pool *pool = ctx_pool(L);
    if (pool == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    struct lb_wait *w = lb_wait_begin(L);
    struct db_op *op;
    int rc = db_reserve(pool, timeout_ms, on_reserved, w, &op);
    if (rc < 0)
        return lb_wait_fail(L, w, rc);
    lb_wait_on_cancel(w, cancel_op, op);
    return lua_yield(L, 0);
}

static struct lconn *check_open(lua_State *L)
{
    struct lconn *lc = luaL_checkudata(L, 1, CONN_MT);
    if (lc->c == NULL)
        luaL_error(L, "query on a released connection");
    return lc;
}

static int l_conn_query(lua_State *L)
{
    return start_query(L, check_open(L), 0, 2);
}

static int l_conn_query_timeout(lua_State *L)
{
    struct lconn *lc = check_open(L);
    return start_query(L, lc, check_timeout(L, 2), 3);
}

static int l_conn_release(lua_State *L)
{
    struct lconn *lc = luaL_checkudata(L, 1, CONN_MT);
    if (lc->c) {
        if (lc->op)
            return luaL_error(L, "release while a query runs on this connection");
        db_release(lc->c, lua_toboolean(L, 2));
        lc->c = NULL;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_conn_gc(lua_State *L)
{
    struct lconn *lc = lua_touserdata(L, 1);
    if (lc && lc->c) {
        if (lc->op)
            db_op_cancel(lc->op);
        lc->op = NULL;
        db_release(lc->c, 1); /* state unknown: close it */
        lc->c = NULL;
    }
    return 0;
}

static int l_conn_tostring(lua_State *L)
{
    struct lconn *lc = luaL_checkudata(L, 1, CONN_MT);
    lua_pushfstring(L, "mmo.db.conn (%s): %p", lc->c ? "reserved" : "released", (void *) lc);
    return 1;
}

/* db.tx on top of reserve/query/release, in Lua: a C function cannot yield across lua_call,
 * but Lua code can yield across pcall in LuaJIT. Gets the module table; returns mmo.json's
 * encode and cjson.safe's decode for the C side. */
static const char TX_CHUNK[] =
    "local M, rquery, rfresh = ...\n"
    "local json = require 'mmo.json'\n"
    "local safe = require 'cjson.safe'\n"
    "local pcall, error, select, type, unpack = pcall, error, select, type, unpack\n"
    "local reserve = M.reserve\n"
    "local enc, dec = json, safe.new()\n"
    "dec.decode_max_depth(128)\n"
    "local BEGIN = {\n"
    "    ['serializable'] = 'BEGIN ISOLATION LEVEL SERIALIZABLE',\n"
    "    ['repeatable read'] = 'BEGIN ISOLATION LEVEL REPEATABLE READ',\n"
    "    ['read committed'] = 'BEGIN ISOLATION LEVEL READ COMMITTED',\n"
    "}\n"
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local function retryable(detail)\n"
    "    local s = type(detail) == 'table' and detail.sqlstate\n"
    "    return s == '40001' or s == '40P01'\n"
    "end\n"
    "function M.tx(fn, opts)\n"
    "    if type(fn) ~= 'function' then\n"
    "        error(\"bad argument #1 to 'tx' (function expected, got \" .. type(fn) .. ')', 2)\n"
    "    end\n"
    "    if opts ~= nil and type(opts) ~= 'table' then\n"
    "        error(\"bad argument #2 to 'tx' (table expected, got \" .. type(opts) .. ')', 2)\n"
    "    end\n"
    "    opts = opts or {}\n"
    "    local retries = opts.retries or 0\n"
    "    if type(retries) ~= 'number' or retries < 0 then\n"
    "        error(\"bad argument #2 to 'tx' (retries must be a number >= 0)\", 2)\n"
    "    end\n"
    "    local begin = 'BEGIN'\n"
    "    if opts.isolation ~= nil then\n"
    "        begin = BEGIN[opts.isolation]\n"
    "        if not begin then error(\"bad argument #2 to 'tx' (unknown isolation)\", 2) end\n"
    "    end\n"
    "    local attempt = 0\n"
    "    while true do\n"
    "        local conn, err = reserve(opts.timeout_ms)\n"
    "        if not conn then return nil, err end\n"
    "        local ok, berr, bdetail = conn:query(begin)\n"
    "        if not ok then\n"
    "            conn:release(true)\n"
    "            return nil, berr, bdetail\n"
    "        end\n"
    "        local failed\n"
    "        local function q(sql, ...)\n"
    "            local rows, qerr, qdetail = conn:query(sql, ...)\n"
    "            if not rows and not failed then failed = { qerr, qdetail } end\n"
    "            return rows, qerr, qdetail\n"
    "        end\n"
    "        local res = pack(pcall(fn, q))\n"
    "        local again = attempt < retries\n"
    "        if res[1] and (res.n == 1 or res[2] ~= nil) and not failed then\n"
    "            local done, cerr, cdetail = conn:query('COMMIT')\n"
    "            conn:release(not done and cerr ~= 'query')\n"
    "            if done then\n"
    "                if res.n == 1 then return true end\n"
    "                return unpack(res, 2, res.n)\n"
    "            end\n"
    "            if not (again and retryable(cdetail)) then return nil, cerr, cdetail end\n"
    "        else\n"
    "            local rolled = conn:query('ROLLBACK')\n"
    "            conn:release(not rolled)\n"
    "            if not (again and failed and retryable(failed[2])) then\n"
    "                if not res[1] then error(res[2], 0) end\n"
    "                if res.n >= 2 and res[2] == nil then return unpack(res, 2, res.n) end\n"
    "                return nil, failed[1], failed[2]\n"
    "            end\n"
    "        end\n"
    "        attempt = attempt + 1\n"
    "    end\n"
    "end\n"
    "local query = M.query\n"
    "local READS = { select = true, with = true, values = true, table = true, show = true }\n"
    "local function first_word(sql)\n"
    "    local i = 1\n"
    "    while true do\n"
    "        local j = sql:match('^%s*%-%-[^\\n]*()', i) or sql:match('^%s*/%*.-%*/()', i)\n"
    "        if not j then break end\n"
    "        i = j\n"
    "    end\n"
    "    return sql:match('^[%s(]*(%a+)', i)\n"
    "end\n"
    "local function fallback(err, detail)\n"
    "    if err == 'unavailable' or err == 'timeout' then return true end\n"
    "    local s = err == 'query' and type(detail) == 'table' and detail.sqlstate\n"
    "    return s == '40001' or (type(s) == 'string' and s:sub(1, 4) == '57P0')\n"
    "end\n"
    "function M.read(sql, ...)\n"
    "    if type(sql) ~= 'string' then\n"
    "        error(\"bad argument #1 to 'read' (string expected, got \" .. type(sql) .. ')', 2)\n"
    "    end\n"
    "    local word = first_word(sql)\n"
    "    if not (word and READS[word:lower()]) then\n"
    "        error(\"bad argument #1 to 'read' (a query that only reads: \" ..\n"
    "              'select, with, values, table or show)', 2)\n"
    "    end\n"
    "    if rquery and (not rfresh or rfresh()) then\n"
    "        local rows, err, detail = rquery(sql, ...)\n"
    "        if rows or not fallback(err, detail) then return rows, err, detail end\n"
    "    end\n"
    "    return query(sql, ...)\n"
    "end\n"
    "return enc.encode, dec.decode\n";

static const luaL_Reg CONN_METHODS[] = {
    {"query", l_conn_query},
    {"query_timeout", l_conn_query_timeout},
    {"release", l_conn_release},
    {NULL, NULL},
};
static const luaL_Reg CONN_META[] = {
    {"__gc", l_conn_gc},
    {"__tostring", l_conn_tostring},
    {NULL, NULL},
};
static const luaL_Reg FUNCS[] = {
    {"query", l_query},
    {"query_timeout", l_query_timeout},
    {"reserve", l_reserve},
    {NULL, NULL},
};

/* the chunk's rfresh(): may db.read use the replica now? Upvalue: its struct replica. */
static int l_replica_fresh(lua_State *L)
{
    lua_pushboolean(L, replica_fresh(lua_touserdata(L, lua_upvalueindex(1))));
    return 1;
}

/* [..] -> [.., t]: query, query_timeout, reserve and tx on pool, read on replica (NULL: on
 * pool) while lag says it is fresh (NULL: no bound); t.id = shard id. */
static void make_table(lua_State *L, struct db_pool *pool, struct db_pool *replica,
                       struct replica *lag, int id)
{
    lua_createtable(L, 0, 6);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, pool);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    lua_pushinteger(L, id);
    lua_setfield(L, -2, "id");
    if (luaL_loadbuffer(L, TX_CHUNK, sizeof TX_CHUNK - 1, "=mmo.db") != 0)
        lua_error(L);
    lua_pushvalue(L, -2);
    if (replica) {
        lua_pushlightuserdata(L, replica);
        lua_pushcclosure(L, l_query, 1);
    } else {
        lua_pushnil(L);
    }
    if (replica && lag) {
        lua_pushlightuserdata(L, lag);
        lua_pushcclosure(L, l_replica_fresh, 1);
    } else {
        lua_pushnil(L);
    }
    lua_call(L, 3, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, DECODE_KEY);
    lua_setfield(L, LUA_REGISTRYINDEX, ENCODE_KEY);
}

/* db.shard(n) -> the module table of shard n (0: the main database); raises if n has none */
static int l_shard(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    lua_rawgeti(L, lua_upvalueindex(1), (int) n);
    if (lua_isnil(L, -1))
        return luaL_error(L, "mmo.db: no shard %d (config.lua section shards)", (int) n);
    return 1;
}

/* db.shard_for_region(region) -> n: the shard that holds players of that home region */
static int l_shard_for_region(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *r = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, ctx && ctx->conf ? conf_shard_of_region(ctx->conf, r, len) : 0);
    return 1;
}

/* db.shard_ids() -> {0, 1, ...}: every shard with a pool */
static int l_shard_ids(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_newtable(L);
    int k = 0;
    lua_pushinteger(L, 0);
    lua_rawseti(L, -2, ++k);
    for (int id = 1; ctx && id < 64; id++) {
        if (ctx->shards[id]) {
            lua_pushinteger(L, id);
            lua_rawseti(L, -2, ++k);
        }
    }
    return 1;
}

int luaopen_mmo_db(lua_State *L)
{
    luaL_newmetatable(L, CONN_MT);
    luaL_setfuncs(L, CONN_META, 0);
    luaL_newlib(L, CONN_METHODS);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_State *h = lua_newthread(L);
    lua_pushcfunction(h, push_reply);
    lua_setfield(L, LUA_REGISTRYINDEX, HELPER_KEY);

    struct lb_ctx *ctx = lb_ctx(L);
    make_table(L, ctx ? ctx->db : NULL, ctx ? ctx->replicas[0] : NULL,
               ctx ? ctx->replica_lag[0] : NULL, 0); /* the main database */
    int mod = lua_gettop(L);
    /* db.shards[n]: the same functions on shard n's pool */
    lua_newtable(L);
    lua_pushvalue(L, mod);
    lua_rawseti(L, -2, 0);
    for (int id = 1; ctx && id < 64; id++) {
        if (ctx->shards[id] == NULL)
            continue;
        make_table(L, ctx->shards[id], ctx->replicas[id], ctx->replica_lag[id], id);
        lua_rawseti(L, -2, id);
    }
    lua_pushcclosure(L, l_shard, 1);
    lua_setfield(L, mod, "shard");
    lua_pushlightuserdata(L, ctx);
    lua_pushcclosure(L, l_shard_for_region, 1);
    lua_setfield(L, mod, "shard_for_region");
    lua_pushlightuserdata(L, ctx);
    lua_pushcclosure(L, l_shard_ids, 1);
    lua_setfield(L, mod, "shard_ids");
    return 1;
}
