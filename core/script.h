/* script.h -- the Lua host: one LuaJIT VM, the scripts under scripts/, the route table, and
 * the coroutines (tasks) that run handlers.
 *
 * The rest of core/ talks to Lua only through this header; only core/script*.c, core/task.c,
 * core/conf.c and bindings/ include lua.h. */
#ifndef CORE_SCRIPT_H
#define CORE_SCRIPT_H

#include <stddef.h>

struct lb_ctx;
struct http_req;
struct script;

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

/* Tasks alive (running or waiting on I/O). */
int script_tasks(const struct script *s);
/* Number of HTTP routes loaded. */
int script_routes(const struct script *s);
/* Lua memory in bytes. */
size_t script_memory(const struct script *s);

/* Compile every .lua file under the scripts path and load the route table, without a node
 * (`mmo check`). Prints one line per problem to fd; returns the number of problems. */
int script_check(const struct lb_ctx *ctx, int fd);

#endif
