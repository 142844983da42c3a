/* bindings.h -- the mmo.* Lua modules, one per file under bindings/. */
#ifndef BINDINGS_BINDINGS_H
#define BINDINGS_BINDINGS_H

#include <lua.h>

int luaopen_mmo_db(lua_State *L);      /* lua_db.c: PostgreSQL */
int luaopen_mmo_cache(lua_State *L);   /* lua_cache.c: Redis */
int luaopen_mmo_json(lua_State *L);    /* lua_json.c: lua-cjson, strict */
int luaopen_mmo_log(lua_State *L);     /* lua_log.c: structured logs */
int luaopen_mmo_time(lua_State *L);    /* lua_time.c: clock, sleep, timers */
int luaopen_mmo_crypto(lua_State *L);  /* lua_crypto.c: passwords, random, digests */
int luaopen_mmo_queue(lua_State *L);   /* lua_queue.c: jobs (scripts/lib/queue.lua) */
int luaopen_mmo_metrics(lua_State *L); /* lua_metrics.c: Prometheus metrics */
int luaopen_mmo_auth(lua_State *L);
int luaopen_mmo_ws(lua_State *L); /* lua_ws.c: WebSocket connections */
int luaopen_mmo_world(lua_State *L);
int luaopen_mmo_state(lua_State *L);   /* lua_state.c: state that outlives a reload */
int luaopen_mmo_scripts(lua_State *L); /* lua_scripts.c: script sets, reload, rollback */
int luaopen_mmo_events(lua_State *L);  /* lua_events.c: game events for the mods */
/* lua_world.c: the live world */      /* lua_auth.c: access tokens, session cache */

/* lua_events.c: the game's handlers of events emitted by mods (mmo.events.on). While a script
 * set loads, handlers are staged; end(commit) makes them the set in use. from_mod queues an
 * event for them (run in tasks on the next turn of the loop); shutdown drops what is queued. */
struct lb_ctx;
void lua_events_begin(lua_State *L);
void lua_events_end(lua_State *L, int commit);
void lua_events_from_mod(struct lb_ctx *ctx, const char *mod, const char *event, const char *json,
                         size_t len);
void lua_events_shutdown(void);

/* Register every mmo.* module in package.preload. */
void bindings_preload(lua_State *L);

/* Register only the JSON modules (cjson, cjson.safe, mmo.json) in package.preload: for VMs
 * that get no other binding (mod sandboxes, tests, fuzz targets). */
void bindings_preload_json(lua_State *L);

#endif
