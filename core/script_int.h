/* script_int.h -- internals shared by core/script.c and core/task.c (the Lua host). */
#ifndef CORE_SCRIPT_INT_H
#define CORE_SCRIPT_INT_H

#include <lua.h>

#include "gate.h"
#include "lb.h"

struct router;
struct task;

enum { TASK_OK = 0, TASK_ERROR, TASK_KILLED };

/* The coroutine of t has ended: status TASK_OK (results on t->co's stack, from index 1),
 * TASK_ERROR (the error value on top of t->co) or TASK_KILLED (nothing). The owner reads
 * what it needs; t is released after the callback returns. */
typedef void task_done_cb(struct task *t, int status, void *ud);

struct lb_wait {
    struct task *task;
    lb_cancel_cb *cancel;
    void *cancel_ud;
};

struct task {
    struct script *s;
    lua_State *co;
    int ref; /* registry ref anchoring co */
    task_done_cb *done;
    void *ud;
    struct lb_wait wait;
    unsigned waiting : 1;
    unsigned running : 1;
    struct task *prev, *next;
    char request_id[72];
};

struct route {
    int handler_ref; /* registry ref of the handler function */
    int role;        /* ROLE_* */
    char *name;      /* "GET /api/x" for logs */
    char *handler;   /* "module.function" */
    struct gate_route gate;
};

enum { ROLE_PUBLIC = 0, ROLE_PLAYER, ROLE_MODERATOR, ROLE_DESIGNER, ROLE_ADMIN };

struct script {
    lua_State *L;
    struct lb_ctx *ctx;
    struct router *router;
    struct route *routes;
    int nroutes;
    struct task *tasks; /* alive */
    int ntasks;
    lua_State **pool; /* finished coroutines ready for reuse, with their refs */
    int *pool_refs;
    int npool;
    int encode_ref; /* cjson.encode */
    int decode_ref; /* cjson.safe.decode */
    int traceback_ref;
    unsigned long long seq;
    /* WebSocket message types (routes.lua `ws`), the close handler, timers */
    struct route *ws_routes;
    int nws_routes;
    int ws_close_ref; /* LUA_NOREF: none */
    int ws_closing;   /* close handlers (and the stop handler) running */
    int stop_ref;     /* routes.lua's on_stop handler; LUA_NOREF: none */
    int stopped;      /* script_stop ran */
    /* per-hook metrics of WebSocket message handlers (NULL: no registry) */
    struct metric_family *m_ws_total, *m_ws_seconds;
    int timers_ref; /* the timer handles of routes.lua `timers` (a table), LUA_NOREF: none */
};

/* script_ws.c */
int script__load_ws(struct script *s, char *err, size_t cap);
void script__free_ws(struct script *s);
/* script.c, shared with script_ws.c */
int script__require(lua_State *L, const char *name, char *err, size_t cap);
int script__resolve_handler(lua_State *L, const char *spec, int *ref, char *err, size_t cap);
int script__parse_role(const char *name);
void script__log_lua_error(struct script *s, struct task *t, const char *route);

/* task.c */
void task__init(struct script *s);
void task__deinit(struct script *s);
/* A task with a fresh coroutine; push the function and its args on t->co, then task__start. */
struct task *task__new(struct script *s, task_done_cb *done, void *ud, const char *request_id);
void task__start(struct task *t, int nargs);
void task__kill_all(struct script *s);

/* script.c: open the VM with the standard libraries, the bindings and the locked globals. */
lua_State *script__open_vm(struct lb_ctx *ctx, const char *path, char *err, size_t cap);

#endif
