/* task.c -- coroutines that run Lua handlers, and the lb_wait API that parks them on I/O.
 *
 * Every request, timer callback and (later) WebSocket message runs in its own task: a
 * coroutine anchored in the registry. A binding that does I/O parks the task
 * (lb_wait_begin), yields, and the I/O layer's callback resumes it (lb_wait_resume). When
 * the coroutine ends, the owner's done callback reads the results; then the coroutine goes
 * back to a small pool if it ended cleanly (a coroutine that raised is dead for good).
 *
 * The task of a coroutine is found through LuaJIT's per-thread exdata (OpenResty's fork). */
#include "err.h"
#include "log.h"
#include "mem.h"
#include "script_int.h"

#include <lauxlib.h>
#include <string.h>

#define POOL_MAX 256

void task__init(struct script *s)
{
    s->pool = xcalloc(POOL_MAX, sizeof *s->pool);
    s->pool_refs = xcalloc(POOL_MAX, sizeof *s->pool_refs);
}

void task__deinit(struct script *s)
{
    for (int i = 0; i < s->npool; i++)
        luaL_unref(s->L, LUA_REGISTRYINDEX, s->pool_refs[i]);
    s->npool = 0;
    free(s->pool);
    free(s->pool_refs);
    s->pool = NULL;
    s->pool_refs = NULL;
}

struct task *task__new(struct script *s, task_done_cb *done, void *ud, const char *request_id)
{
    struct task *t = xcalloc(1, sizeof *t);
    t->s = s;
    t->done = done;
    t->ud = ud;
    t->wait.task = t;
    t->set = s->cur;
    if (t->set)
        t->set->tasks++;
    if (s->npool > 0) {
        s->npool--;
        t->co = s->pool[s->npool];
        t->ref = s->pool_refs[s->npool];
    } else {
        /* on the main thread, maybe from inside a running task (lb_spawn): never refused, as an
         * error raised on a thread that is not running has nowhere to go */
        int armed = s->mem.armed;
        s->mem.armed = 0;
        t->co = lua_newthread(s->L);
        t->ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
        s->mem.armed = armed;
    }
    lua_setexdata(t->co, t);
    if (request_id) {
        size_t n = strlen(request_id);
        if (n >= sizeof t->request_id)
            n = sizeof t->request_id - 1;
        memcpy(t->request_id, request_id, n);
        t->request_id[n] = '\0';
    } else {
        snprintf(t->request_id, sizeof t->request_id, "t-%llx", ++s->seq);
    }
    t->next = s->tasks;
    if (s->tasks)
        s->tasks->prev = t;
    s->tasks = t;
    s->ntasks++;
    return t;
}

static void task_release(struct task *t, int reusable)
{
    struct script *s = t->s;
    if (t->prev)
        t->prev->next = t->next;
    else
        s->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
    s->ntasks--;
    lua_setexdata(t->co, NULL);
    if (reusable && s->npool < POOL_MAX && lua_status(t->co) == 0) {
        lua_settop(t->co, 0);
        s->pool[s->npool] = t->co;
        s->pool_refs[s->npool] = t->ref;
        s->npool++;
    } else {
        luaL_unref(s->L, LUA_REGISTRYINDEX, t->ref);
    }
    if (t->set)
        script__set_release(s, t->set);
    free(t);
}

/* A task died of the memory limit: collect what it left now (LuaJIT does not collect when an
 * allocation is refused, so its garbage would stay until the next cycle and the next handler
 * would meet a VM still full). */
static void after_refusal(struct script *s, const char *request_id)
{
    if (!s->mem.refused || s->mem.armed > 0)
        return;
    size_t before = s->mem.used;
    lua_gc(s->L, LUA_GCCOLLECT, 0);
    s->mem.refused = 0;
    log_write(LOG_WARN, "lua", request_id, NULL,
              "a handler reached the Lua memory limit (scripts.memory_limit_mb, %zu MiB): "
              "collected, %zu MiB -> %zu MiB",
              s->mem.cap >> 20, before >> 20, s->mem.used >> 20);
}

/* Resume t->co with nargs values on its stack; run it to its next wait or its end. */
static void task_step(struct task *t, int nargs)
{
    struct script *s = t->s;
    char request_id[sizeof t->request_id];
    memcpy(request_id, t->request_id, sizeof request_id);
    t->running = 1;
    s->mem.armed++;
    int rc = lua_resume(t->co, nargs);
    s->mem.armed--;
    t->running = 0;
    if (rc == LUA_YIELD) {
        if (t->waiting)
            return;
        /* a bare coroutine.yield() in a handler: nobody would ever resume it */
        lua_settop(t->co, 0);
        lua_pushliteral(t->co, "coroutine.yield() outside of an I/O call: handlers must not "
                               "yield by themselves");
        t->done(t, TASK_ERROR, t->ud);
        task_release(t, 0);
    } else if (rc == 0) {
        t->done(t, TASK_OK, t->ud);
        task_release(t, 1);
    } else {
        t->done(t, TASK_ERROR, t->ud);
        task_release(t, 0);
    }
    after_refusal(s, request_id);
}

void task__start(struct task *t, int nargs)
{
    task_step(t, nargs);
}

void task__kill_all(struct script *s)
{
    while (s->tasks) {
        struct task *t = s->tasks;
        if (t->waiting && t->wait.cancel) {
            lb_cancel_cb *cancel = t->wait.cancel;
            t->wait.cancel = NULL;
            cancel(t->wait.cancel_ud);
        }
        t->waiting = 0;
        t->done(t, TASK_KILLED, t->ud);
        task_release(t, 0);
    }
}

/* ---- lb_wait: the binding side (declared in bindings/lb.h) ------------------------------ */

struct lb_wait *lb_wait_begin(lua_State *L)
{
    struct task *t = lua_getexdata(L);
    if (t == NULL || t->co != L)
        luaL_error(L, "I/O is only possible in a handler's own coroutine (not in the main "
                      "chunk of a module, nor inside coroutine.create/wrap)");
    if (t->waiting)
        luaL_error(L, "task already waits on I/O");
    t->waiting = 1;
    t->wait.cancel = NULL;
    t->wait.cancel_ud = NULL;
    return &t->wait;
}

void lb_wait_on_cancel(struct lb_wait *w, lb_cancel_cb *cb, void *ud)
{
    w->cancel = cb;
    w->cancel_ud = ud;
}

int lb_wait_fail(lua_State *L, struct lb_wait *w, int rc)
{
    w->task->waiting = 0;
    w->cancel = NULL;
    return lb_push_err(L, rc);
}

lua_State *lb_wait_thread(struct lb_wait *w)
{
    return w->task->co;
}

void lb_wait_resume(struct lb_wait *w, int nresults)
{
    struct task *t = w->task;
    CORE_ASSERT(t->waiting && !t->running);
    t->waiting = 0;
    w->cancel = NULL;
    task_step(t, nresults);
}

void lb_wait_resume_err(struct lb_wait *w, int rc)
{
    lua_State *co = w->task->co;
    lua_pushnil(co);
    lua_pushstring(co, err_str(rc));
    lb_wait_resume(w, 2);
}

const char *lb_request_id(lua_State *L)
{
    struct task *t = lua_getexdata(L);
    return t ? t->request_id : NULL;
}

/* ---- background tasks: mmo.time.after/every ------------------------------------------- */

static void on_background_done(struct task *t, int status, void *ud)
{
    const char *what = ud;
    if (status == TASK_ERROR) {
        lua_State *L = t->s->L;
        const char *msg = lua_tostring(t->co, -1);
        script__count_lua_error(t->s, msg, "background");
        luaL_traceback(L, t->co, msg ? msg : "(error object is not a string)", 0);
        log_write(LOG_ERROR, "lua", t->request_id, NULL, "%s failed: %s", what,
                  lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

int lb_spawn(lua_State *L, int idx, const char *what)
{
    struct lb_ctx *ctx = lb_ctx(L);
    struct script *s = ctx->script;
    if (s == NULL)
        return ERR_CLOSED;
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    struct task *t = task__new(s, on_background_done, (void *) what, NULL);
    lua_pushvalue(L, idx);
    lua_xmove(L, t->co, 1);
    task__start(t, 0);
    return 0;
}
