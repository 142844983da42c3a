/* script_int.h -- internals shared by core/script.c and core/task.c (the Lua host). */
#ifndef CORE_SCRIPT_INT_H
#define CORE_SCRIPT_INT_H

#include <lua.h>

#include "gate.h"
#include "lb.h"

struct event;
struct interned;
struct metric_family;
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
    struct script_set *set; /* the set it started under (kept alive until it ends) */
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
    int handler_ref;  /* registry ref of the handler function */
    int role;         /* ROLE_* */
    const char *name; /* "GET /api/x" for logs and metrics (interned: script__intern) */
    char *handler;    /* "module.function" */
    struct gate_route gate;
};

enum { ROLE_PUBLIC = 0, ROLE_PLAYER, ROLE_MODERATOR, ROLE_DESIGNER, ROLE_ADMIN };

/* One loaded set of scripts (script_set.c): the sources it was compiled from, its modules
 * (its own package.loaded), its route table, message types, hooks and timers. The current set
 * serves new work; a task keeps the set it started under alive until it ends, so an in-flight
 * handler finishes on the code it began with. */
struct script_set {
    unsigned version; /* 1 for the set loaded at start, then one more per reload */
    char hash[65];    /* SHA-256 (hex) of the sources: every path and its bytes */
    double loaded_at; /* unix seconds */
    char who[64];     /* what loaded it: start, sighup, control, watch, api:<account> */
    int files_ref;    /* registry: { [path] = source } the set was compiled from */
    int nfiles;
    size_t bytes;
    int loaded_ref; /* registry: the set's package.loaded */
    struct router *router;
    struct route *routes;
    int nroutes;
    struct route *ws_routes; /* WebSocket message types (routes.lua `ws`) */
    int nws_routes;
    int ws_close_ref;  /* routes.lua's ws_close handler; LUA_NOREF: none */
    int stop_ref;      /* routes.lua's on_stop handler; LUA_NOREF: none */
    int timer_fns_ref; /* registry: { {seconds, fn, name}, ... } of routes.lua `timers` */
    int timers_ref;    /* registry: their mmo.time handles while the set is current */
    int tasks;         /* tasks started under this set, alive */
    int retired;       /* neither current nor previous: freed when its last task ends */
};

/* What the handlers' VM holds, and its cap (scripts.memory_limit_mb): an allocation past the
 * cap fails only while a task runs (armed), inside lua_resume, where it is an error the task
 * dies of; outside, the core's own pushes (a request, a query's rows) always succeed, as an
 * allocation failure there would be a panic. */
struct script_mem {
    size_t used, cap; /* bytes; cap 0: none */
    int armed;        /* tasks running (nested resumes count) */
    int refused;      /* an allocation was refused since the last collection */
};

struct script {
    lua_State *L;
    struct script_mem mem;
    struct lb_ctx *ctx;
    struct script_set *cur;     /* serves new requests, messages and timers */
    struct script_set *prev;    /* the one before (rollback) */
    struct script_set *loading; /* being loaded (require finds its sources); NULL otherwise */
    unsigned versions;          /* versions handed out */
    int base_ref;               /* registry: names of the modules every set shares (libraries,
                                   bindings), from package.loaded before any script ran */
    struct interned *names;     /* route names, kept for the node's life (metrics key on them) */
    struct task *tasks;         /* alive */
    int ntasks;
    lua_State **pool; /* finished coroutines ready for reuse, with their refs */
    int *pool_refs;
    int npool;
    int encode_ref; /* cjson.encode */
    int decode_ref; /* cjson.safe.decode */
    int traceback_ref;
    unsigned long long seq;
    int ws_closing; /* close handlers (and the stop handler) running */
    int stopped;    /* script_stop ran */
    /* per-hook metrics of WebSocket message handlers (NULL: no registry) */
    struct metric_family *m_ws_total, *m_ws_seconds;
    /* reloads: by trigger and result, the version in use, how long the last one took */
    struct metric_family *m_reloads, *m_version, *m_reload_seconds;
    struct metric_family *m_lua_errors; /* by module and hook */
    struct event *watch_ev;             /* the inotify watch of scripts.watch (script_set.c) */
    int watch_fd;
    struct event *watch_timer;
};

/* script_ws.c: routes.lua's ws, ws_close, on_stop and timers into set (routes on the stack top) */
int script__load_ws(struct script *s, struct script_set *set, int idx, char *err, size_t cap);
void script__free_ws(struct script *s, struct script_set *set);
/* start the set's timers / cancel them */
void script__start_timers(struct script *s, struct script_set *set);
void script__stop_timers(struct script *s, struct script_set *set);
/* script.c, shared with script_ws.c */
int script__require(lua_State *L, const char *name, char *err, size_t cap);
int script__resolve_handler(lua_State *L, const char *spec, int *ref, char *err, size_t cap);
int script__parse_role(const char *name);
void script__log_lua_error(struct script *s, struct task *t, const char *route);
/* load routes.lua's http table into set: [.., routes] */
int script__load_routes(struct script *s, struct script_set *set, int idx, char *err, size_t cap);
/* a copy of name that lives as long as s */
const char *script__intern(struct script *s, const char *name);

/* script_set.c */
/* Snapshot the sources under the scripts path (or copy from's), compile them all, load them as
 * a new set, run the self-checks; on success it becomes the current set. -1 with "file:line:
 * message" in err (the running set untouched). */
int script__load_set(struct script *s, const struct script_set *from, const char *who, char *err,
                     size_t cap);
void script__set_release(struct script *s, struct script_set *set); /* a task ended */
void script__set_free_all(struct script *s);
/* count a Lua error (its message, "path:line: ...") in mmo_lua_errors_total{module, hook} */
void script__count_lua_error(struct script *s, const char *msg, const char *hook);
int script__install_searcher(struct script *s, char *err, size_t cap);

/* task.c */
void task__init(struct script *s);
void task__deinit(struct script *s);
/* A task with a fresh coroutine; push the function and its args on t->co, then task__start. */
struct task *task__new(struct script *s, task_done_cb *done, void *ud, const char *request_id);
void task__start(struct task *t, int nargs);
void task__kill_all(struct script *s);

/* script.c: open the VM with the standard libraries, the bindings and the locked globals; its
 * allocator counts into mem (and keeps to mem->cap). */
lua_State *script__open_vm(struct lb_ctx *ctx, struct script_mem *mem, const char *path, char *err,
                           size_t cap);

#endif
