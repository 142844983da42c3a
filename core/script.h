/* script.h -- the Lua host: one LuaJIT VM, the scripts under scripts/, the route table, and
 * the coroutines (tasks) that run handlers.
 *
 * The rest of core/ talks to Lua only through this header; only core/script*.c, core/task.c,
 * core/conf.c, core/check.c and bindings/ include lua.h. */
#ifndef CORE_SCRIPT_H
#define CORE_SCRIPT_H

#include <stddef.h>
#include <stdint.h>

struct lb_ctx;
struct http_req;
struct script;
typedef struct lua_State lua_State;

/* Open the VM, register the bindings, load the route table (ctx->conf->scripts_routes, found
 * on scripts_path) and every handler module it names. Returns NULL with "file:line: message"
 * in err when a script does not compile or the route table is wrong. ctx is borrowed for the
 * lifetime of the host; ctx->script is set. */
struct script *script_new(struct lb_ctx *ctx, char *err, size_t cap);
/* End every task still alive (owners are told: HTTP requests get 503), close the VM. */
void script_free(struct script *s);
/* End every task still alive, now; they answer 503 "shutting_down". */
void script_kill_tasks(struct script *s);

/* The http_dispatch_cb for Lua routes (ud is the struct script). */
void script_http_dispatch(struct http_req *req, void *ud);

/* A WebSocket connection, as the Lua host sees it (core/realtime.c owns the real one). */
struct script_ws_conn {
    uint64_t id;
    int64_t account_id;
    unsigned roles;
    const char *sid;
    int64_t player_id; /* 0: not joined */
    const char *ip;
    double speed; /* of its player now (buffs counted) */
};

/* Run the handler of routes.lua's `ws` table for one message (JSON text of len bytes,
 * copied). Its reply, or an error message, goes back through realtime_send; then
 * realtime__message_done tells the session it may run the next one. */
void script_ws_message(struct script *s, const struct script_ws_conn *c, const char *text,
                       size_t len);
/* The connection has ended: run routes.lua's ws_close handler (if any) with where its player
 * was (region NULL: it had not joined). */
void script_ws_closed(struct script *s, const struct script_ws_conn *c, int code,
                      const char *region, double x, double y, double at);
/* Handlers of ended connections still running (shutdown waits for them), and the stop handler.
 */
int script_ws_closing(const struct script *s);
/* The node begins to drain: run routes.lua's on_stop handler (if any) in a task, once; the
 * drain waits for it as for close handlers (script_ws_closing). */
void script_stop(struct script *s);

/* Tasks alive (running or waiting on I/O). */
int script_tasks(const struct script *s);
/* Number of HTTP routes loaded. */
int script_routes(const struct script *s);
/* Lua memory in bytes. */
size_t script_memory(const struct script *s);

/* Load the scripts anew (rollback: the previous set's sources again) as a new set and make it
 * current, between two events. who says what asked ("sighup", "control", "watch",
 * "account:42"). 0; -1 with "file:line: message" in err, the running set untouched; -2: no
 * previous set to roll back to. Audited and counted in metrics. */
int script_reload(struct script *s, const char *who, int rollback, char *err, size_t cap);
/* Push a table describing the current set (version, hash, loaded_at, loaded_by, files,
 * bytes, previous, modules, state) on L (the main thread: it calls Lua). */
void script_push_info(struct script *s, lua_State *L);
/* Reload by itself when a .lua file under the scripts path changes (inotify, with a short
 * quiet time: an editor saves in several steps). Development; -1 with err. */
int script_watch(struct script *s, char *err, size_t cap);
/* The current set's version (1 at start) and content hash (hex). */
unsigned script_version(const struct script *s);
void script_hash(const struct script *s, char *out, size_t cap);
/* Lua shortens a long chunk name to "...<its end>" (LUA_IDSIZE): when msg begins so and path
 * ends with what is left, put path back in its place. */
void script_untruncate(char *msg, size_t cap, const char *path);
/* From "path/x.lua:12: message": the file and line (line 0 when there is none). */
void script_error_location(const char *msg, char *file, size_t fcap, int *line);

#endif
