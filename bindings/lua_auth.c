/* lua_auth.c -- require "mmo.auth": access tokens and this node's session cache.
 *
 *   auth.sign(account_id, sid, roles) -> token, expires_in   roles: {"player", "admin"}
 *   auth.verify(token)                -> claims | nil, err   claims: {account_id, sid, roles, exp}
 *                                        err: "invalid" | "expired"
 *   auth.forget(sid)                  -> true   this node drops its cached view of the session
 *                                        (call it after ending a session or changing roles)
 *   auth.valid_sid(sid)               -> boolean
 *   auth.settings()                   -> {access_ttl_s, refresh_ttl_s}
 *
 * Sessions themselves are Redis hashes sess:<sid> with fields acct and roles ("player,admin"),
 * written by scripts/handlers/auth.lua; core/auth.c reads them before every request. */
#include "auth.h"
#include "bindings.h"
#include "conf.h"
#include "err.h"
#include "lb.h"
#include "live.h"

#include <stdlib.h>
#include <string.h>

static struct auth *check_auth(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (ctx->auth == NULL)
        luaL_error(L, "mmo.auth: authentication is not configured on this node");
    return ctx->auth;
}

static unsigned roles_arg(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    unsigned roles = 0;
    int n = (int) lua_objlen(L, idx);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        unsigned r = name ? auth_roles_parse(name, len) : 0;
        if (r == 0)
            luaL_error(L, "mmo.auth: unknown role %s", name ? name : "(not a string)");
        roles |= r;
        lua_pop(L, 1);
    }
    return roles;
}

static void push_roles(lua_State *L, unsigned roles)
{
    char buf[64];
    size_t n = auth_roles_format(roles, buf, sizeof buf);
    lua_createtable(L, 4, 0);
    int k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && buf[j] != ',')
            j++;
        lua_pushlstring(L, buf + i, j - i);
        lua_rawseti(L, -2, ++k);
        i = j + 1;
    }
}

static int l_sign(lua_State *L)
{
    struct auth *a = check_auth(L);
    lua_Number acct = luaL_checknumber(L, 1);
    size_t sid_len;
    const char *sid = luaL_checklstring(L, 2, &sid_len);
    unsigned roles = roles_arg(L, 3);
    luaL_argcheck(L, acct >= 1 && acct <= 9007199254740992.0 && acct == (lua_Number) (int64_t) acct,
                  1, "account id must be a positive integer");
    luaL_argcheck(L, auth_sid_valid(sid, sid_len), 2, "sid must be 16-64 of [A-Za-z0-9_-]");
    int ttl = 0;
    char *tok = auth_sign(a, (int64_t) acct, sid, roles, &ttl);
    if (tok == NULL)
        return lb_push_err(L, ERR_INVALID);
    lua_pushstring(L, tok);
    free(tok);
    lua_pushinteger(L, ttl);
    return 2;
}

static int l_verify(lua_State *L)
{
    struct auth *a = check_auth(L);
    size_t len;
    const char *tok = luaL_checklstring(L, 1, &len);
    struct auth_claims c;
    int rc = auth_verify(a, tok, len, &c);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, rc == ERR_TIMEOUT ? "expired" : "invalid");
        return 2;
    }
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number) c.account_id);
    lua_setfield(L, -2, "account_id");
    lua_pushstring(L, c.sid);
    lua_setfield(L, -2, "sid");
    push_roles(L, c.roles);
    lua_setfield(L, -2, "roles");
    lua_pushnumber(L, (lua_Number) c.exp);
    lua_setfield(L, -2, "exp");
    return 1;
}

static int l_forget(lua_State *L)
{
    struct auth *a = check_auth(L);
    size_t len;
    const char *sid = luaL_checklstring(L, 1, &len);
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (auth_sid_valid(sid, len)) {
        if (ctx->live)
            live_forget_session(ctx->live, sid); /* every node's view, this one's now */
        else
            auth_session_forget(a, sid);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_valid_sid(lua_State *L)
{
    size_t len;
    const char *sid = lua_tolstring(L, 1, &len);
    lua_pushboolean(L, sid != NULL && lua_type(L, 1) == LUA_TSTRING && auth_sid_valid(sid, len));
    return 1;
}

static int l_settings(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, ctx->conf ? ctx->conf->auth_access_ttl_s : 900);
    lua_setfield(L, -2, "access_ttl_s");
    lua_pushinteger(L, ctx->conf ? ctx->conf->auth_refresh_ttl_s : 2592000);
    lua_setfield(L, -2, "refresh_ttl_s");
    return 1;
}

int luaopen_mmo_auth(lua_State *L)
{
    static const luaL_Reg FUNCS[] = {
        {"sign", l_sign},           {"verify", l_verify},     {"forget", l_forget},
        {"valid_sid", l_valid_sid}, {"settings", l_settings}, {NULL, NULL},
    };
    lua_createtable(L, 0, 5);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, lb_ctx(L));
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
