/* work.h -- a small pool of threads for CPU-bound jobs (password hashing) whose results come
 * back on the event loop.
 *
 * A job is a pair of functions: run(ud) on a worker thread, then done(status, ud) on the loop
 * thread. Workers never touch the loop or Lua and do not log (log_init and log_set_level run
 * on the loop thread, unlocked): run() sees only what ud gives it. Completed jobs go on a
 * list under the pool's mutex; an eventfd registered on the loop wakes it, and its callback
 * calls the done functions. Workers block the process signals (SIGTERM, SIGINT, SIGHUP,
 * SIGPIPE, ...), so those keep going to the loop thread and libevent's evsignal; and they run
 * at nice +10 from the process, so the scheduler gives a CPU to the loop thread as soon as it
 * has something to do.
 *
 * Async contract: work_submit returning < 0 never calls done; otherwise done fires exactly
 * once, on the loop thread, never from inside work_submit, with status 0 (run() ran) or
 * ERR_CLOSED (work_pool_free came first: run() never ran) -- unless work_op_cancel is called
 * first, and then done never fires.
 *
 * Threads: every work_* function is called on the loop thread only. */
#ifndef CORE_WORK_H
#define CORE_WORK_H

struct event_base;
struct work_pool;
struct work_op; /* a submitted job, for work_op_cancel */

/* Runs on a worker thread: must not touch the loop, Lua, or anything another thread uses
 * without its own lock. ud is borrowed from the caller of work_submit. */
typedef void work_fn(void *ud);
/* Runs on the loop thread, exactly once per job (see above). ud is the caller's. */
typedef void work_done_cb(int status, void *ud);
/* Hands ud back to its owner after work_op_cancel, once no worker uses it any more. */
typedef void work_release_cb(void *ud);

/* Start threads workers (>= 1) that take jobs from a queue of at most max_queued (>= 1) jobs
 * waiting. NULL when a thread or the eventfd cannot be made (logged). base is borrowed and
 * must outlive the pool. */
struct work_pool *work_pool_new(struct event_base *base, int threads, int max_queued);
/* Stop: waits for the jobs running now to finish (their done fires with 0), then fires done
 * with ERR_CLOSED for every job still queued, joins the threads and frees the pool. Every
 * done (and every release pending from work_op_cancel) has run when it returns. Blocks the
 * loop for at most the longest job running. Safe from inside a done callback; work_submit
 * from a callback it fires returns ERR_CLOSED. p may be NULL. */
void work_pool_free(struct work_pool *p);
/* Jobs waiting for a thread and jobs running now (either pointer may be NULL). */
void work_pool_stats(struct work_pool *p, int *queued, int *running);

/* Queue a job. ud is borrowed: it stays the caller's, and must stay valid until done fires
 * (or, after work_op_cancel, until release gets it back). op (may be NULL) receives a handle
 * for work_op_cancel, valid until done fires or work_op_cancel is called. Returns 0, ERR_BUSY
 * (max_queued jobs already wait: answer 503) or ERR_CLOSED (the pool is being freed). */
int work_submit(struct work_pool *p, work_fn *run, work_done_cb *done, void *ud,
                struct work_op **op);
/* Forget a job: its done never fires, and op is invalid after this call. What happens to ud:
 * - the job still waits in the queue: run() never runs; release(ud) is called at once, from
 *   inside this call;
 * - run() already returned (the done is pending on the loop): release(ud) at once, likewise;
 * - run(ud) is executing on a worker right now: it cannot be stopped, so it runs to its end
 *   with ud; then release(ud) is called on the loop thread, from the pool's loop callback (or
 *   from work_pool_free, which waits for it). Until release, ud must stay valid.
 * The pool never frees ud itself: release is how the caller learns that no thread uses ud any
 * more. release may be NULL when run() uses nothing that the caller frees. */
void work_op_cancel(struct work_op *op, work_release_cb *release);

#endif
