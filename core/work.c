/* work.c -- the worker pool: a FIFO of jobs under one mutex, N pthreads, an eventfd back to
 * the loop.
 *
 * A job (struct work_op) moves QUEUED (on p->queue) -> RUNNING (held by one worker, on no
 * list) -> DONE (on p->done) -> fired and freed by the loop. Its state, its list links, both
 * lists and the counters are shared with the workers, so they are read and written under
 * p->mu only. The job's run/done/ud never change after work_submit publishes it under the
 * mutex, so either side may read them afterwards; canceled/release are touched by the loop
 * thread only. The loop-only fields of the pool (the event, the free flags) need no lock.
 *
 * Waking the loop: a worker that puts a job on an empty done list writes the eventfd; the
 * loop callback drains the list. While the list is not empty a wake-up is pending (the
 * eventfd or event_active), so no job is ever left behind. */
#include "work.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

/* Workers run this much nicer than the process (the loop keeps its own nice). With as many
 * workers as CPUs, a waking loop thread otherwise waits for a worker's time slice to end (5-7
 * ms gaps on a 2-CPU machine, test_work.c); at +10 the scheduler prefers the loop. Under
 * load from other processes the jobs slow down first, which is the trade we want. */
#define WORK_NICE 10

enum { OP_QUEUED, OP_RUNNING, OP_DONE };

struct work_op {
    struct work_pool *p;
    work_fn *run;
    work_done_cb *done;
    void *ud;
    int state;                   /* OP_*: under p->mu */
    struct work_op *prev, *next; /* on p->queue or p->done: under p->mu */
    int canceled;                /* loop thread only: work_op_cancel ran while it was running */
    work_release_cb *release;    /* loop thread only: given to work_op_cancel */
};

struct op_list {
    struct work_op *head, *tail;
    int n;
};

struct work_pool {
    /* Set before the threads start, then read-only. */
    struct event_base *base;
    int efd;
    int max_queued;
    int nthreads;
    pthread_t *threads;

    /* Loop thread only. */
    struct event *ev;
    int freeing;      /* work_pool_free is running */
    int in_drain;     /* on_wake is firing callbacks */
    int free_pending; /* work_pool_free ran from one of them: on_wake frees p at its end */

    /* Shared with the workers: under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* a job was queued, or stopping */
    struct op_list queue;
    struct op_list done;
    int running;
    int stopping;
};

/* ---- lists (caller holds p->mu) -------------------------------------------------------------- */

static void list_push(struct op_list *l, struct work_op *op)
{
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    l->n++;
}

static void list_remove(struct op_list *l, struct work_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
    l->n--;
}

static struct work_op *list_shift(struct op_list *l)
{
    struct work_op *op = l->head;
    if (op)
        list_remove(l, op);
    return op;
}

/* Take the first job of l, or NULL; locks p->mu. */
static struct work_op *take(struct work_pool *p, struct op_list *l)
{
    pthread_mutex_lock(&p->mu);
    struct work_op *op = list_shift(l);
    pthread_mutex_unlock(&p->mu);
    return op;
}

/* ---- workers ----------------------------------------------------------------------------- */

/* A failed write can only be EAGAIN (the counter is full: a wake-up is pending anyway). */
static void wake_loop(struct work_pool *p)
{
    uint64_t one = 1;
    ssize_t n;
    do
        n = write(p->efd, &one, sizeof one);
    while (n < 0 && errno == EINTR);
}

static void *worker_main(void *arg)
{
    struct work_pool *p = arg;
    /* Linux nice is per thread: jobs yield the CPU to the loop. Raising nice needs no
     * privilege; if it fails anyway, jobs run at the loop's priority. */
    id_t tid = (id_t) gettid();
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, tid);
    if (errno == 0)
        setpriority(PRIO_PROCESS, tid, nice + WORK_NICE > 19 ? 19 : nice + WORK_NICE);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stopping && p->queue.head == NULL)
            pthread_cond_wait(&p->cond, &p->mu);
        if (p->stopping)
            break; /* jobs still queued get ERR_CLOSED from work_pool_free */
        struct work_op *op = list_shift(&p->queue);
        op->state = OP_RUNNING;
        p->running++;
        pthread_mutex_unlock(&p->mu);

        op->run(op->ud);

        pthread_mutex_lock(&p->mu);
        p->running--;
        op->state = OP_DONE;
        int was_empty = p->done.head == NULL;
        list_push(&p->done, op);
        if (was_empty) {
            /* Outside the lock: the loop never waits on the mutex for a syscall. A late
             * write only makes a spurious wake-up; the fd outlives the threads. */
            pthread_mutex_unlock(&p->mu);
            wake_loop(p);
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- the loop side ------------------------------------------------------------------------ */

/* Fire op's done with status, or its release if it was canceled while running; free op
 * first, so the callback may do anything (even work_pool_free). */
static void finish(struct work_op *op, int status)
{
    work_done_cb *done = op->done;
    work_release_cb *release = op->release;
    void *ud = op->ud;
    int canceled = op->canceled;
    free(op);
    if (!canceled)
        done(status, ud);
    else if (release)
        release(ud);
}

static void destroy(struct work_pool *p)
{
    event_free(p->ev);
    close(p->efd);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct work_pool *p = arg;
    uint64_t n;
    ssize_t r;
    do
        r = read(p->efd, &n, sizeof n); /* EAGAIN: woken by event_active */
    while (r < 0 && errno == EINTR);

    /* At most the jobs there now: a done that submits a quick job must not keep us here. */
    pthread_mutex_lock(&p->mu);
    int budget = p->done.n;
    pthread_mutex_unlock(&p->mu);
    p->in_drain = 1;
    while (budget-- > 0) {
        struct work_op *op = take(p, &p->done);
        if (op == NULL)
            break; /* canceled meanwhile */
        finish(op, 0);
        if (p->free_pending) {
            destroy(p);
            return;
        }
    }
    p->in_drain = 0;
    /* Workers wake us only when the list goes from empty to not empty. */
    pthread_mutex_lock(&p->mu);
    int more = p->done.head != NULL;
    pthread_mutex_unlock(&p->mu);
    if (more)
        event_active(p->ev, EV_READ, 0);
}

struct work_pool *work_pool_new(struct event_base *base, int threads, int max_queued)
{
    CORE_ASSERT(threads >= 1 && max_queued >= 1);
    struct work_pool *p = xcalloc(1, sizeof *p);
    p->base = base;
    p->max_queued = max_queued;
    p->threads = xcalloc((size_t) threads, sizeof *p->threads);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0) {
        log_error("work", "eventfd: %s", strerror(errno));
        goto fail;
    }
    p->ev = event_new(base, p->efd, EV_READ | EV_PERSIST, on_wake, p);
    event_add(p->ev, NULL);

    /* Workers inherit the mask: process signals stay with the loop thread (evsignal). */
    sigset_t block, old;
    sigemptyset(&block);
    static const int SIGNALS[] = {SIGTERM, SIGINT,  SIGHUP,  SIGQUIT, SIGPIPE,
                                  SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM};
    for (size_t i = 0; i < sizeof SIGNALS / sizeof *SIGNALS; i++)
        sigaddset(&block, SIGNALS[i]);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    for (; p->nthreads < threads; p->nthreads++) {
        rc = pthread_create(&p->threads[p->nthreads], NULL, worker_main, p);
        if (rc != 0)
            break;
        pthread_setname_np(p->threads[p->nthreads], "mmo-work");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_error("work", "pthread_create: %s", strerror(rc));
        goto fail;
    }
    return p;

fail:
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    if (p->ev)
        event_free(p->ev);
    if (p->efd >= 0)
        close(p->efd);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
    return NULL;
}

void work_pool_free(struct work_pool *p)
{
    if (p == NULL || p->freeing)
        return;
    p->freeing = 1;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    /* Running jobs finish; nothing is taken from the queue any more. */
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;

    /* One thread from here on; the callbacks may still cancel other jobs, or submit (and get
     * ERR_CLOSED). */
    struct work_op *op;
    while ((op = take(p, &p->done)) != NULL)
        finish(op, 0);
    while ((op = take(p, &p->queue)) != NULL)
        finish(op, ERR_CLOSED);

    if (p->in_drain)
        p->free_pending = 1; /* on_wake is below us on the stack */
    else
        destroy(p);
}

void work_pool_stats(struct work_pool *p, int *queued, int *running)
{
    pthread_mutex_lock(&p->mu);
    if (queued)
        *queued = p->queue.n;
    if (running)
        *running = p->running;
    pthread_mutex_unlock(&p->mu);
}

int work_submit(struct work_pool *p, work_fn *run, work_done_cb *done, void *ud,
                struct work_op **opp)
{
    if (p->freeing)
        return ERR_CLOSED;
    struct work_op *op = xcalloc(1, sizeof *op);
    op->p = p;
    op->run = run;
    op->done = done;
    op->ud = ud;
    op->state = OP_QUEUED;
    pthread_mutex_lock(&p->mu);
    if (p->queue.n >= p->max_queued) {
        pthread_mutex_unlock(&p->mu);
        free(op);
        return ERR_BUSY;
    }
    list_push(&p->queue, op);
    pthread_mutex_unlock(&p->mu);
    pthread_cond_signal(&p->cond);
    if (opp)
        *opp = op;
    return 0;
}

void work_op_cancel(struct work_op *op, work_release_cb *release)
{
    struct work_pool *p = op->p;
    CORE_ASSERT(!op->canceled);
    pthread_mutex_lock(&p->mu);
    switch (op->state) {
    case OP_QUEUED: list_remove(&p->queue, op); break;
    case OP_DONE: list_remove(&p->done, op); break;
    default:
        /* OP_RUNNING: the worker puts it on p->done when run() returns; finish() then
         * calls release instead of done. */
        op->canceled = 1;
        op->release = release;
        pthread_mutex_unlock(&p->mu);
        return;
    }
    pthread_mutex_unlock(&p->mu);
    void *ud = op->ud;
    free(op);
    if (release)
        release(ud);
}
