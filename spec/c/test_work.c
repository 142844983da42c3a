/* test_work.c -- core/work.c: the worker pool and its way back to the loop.
 *
 * Each test makes its own event_base and pool and frees both (ASan/LSan check the rest).
 * Jobs that must stay "running" for a while wait on a gate (an atomic flag the test opens).
 * The last tests hash with yescrypt (libxcrypt) on the pool, as mmo.crypto does, and check
 * that the loop keeps its 1 ms timer on time meanwhile. */
#include "test.h"

#include "err.h"
#include "work.h"

#include <crypt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

/* ---- running the loop ----------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until *count >= want or ms pass; returns 1 when reached. */
static int run_until(struct event_base *base, const int *count, int want, int ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 2000};
    event_add(tick, &tv);
    double end = now_ms() + ms;
    while (*count < want && now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *count >= want;
}

static void run_for(struct event_base *base, int ms)
{
    int never = 0;
    run_until(base, &never, 1, ms);
}

/* Wait (without running the loop) until the pool reports running jobs; 1 when it did. */
static int wait_running(struct work_pool *p, int want, int ms)
{
    double end = now_ms() + ms;
    int running = 0;
    while (now_ms() < end) {
        work_pool_stats(p, NULL, &running);
        if (running >= want)
            return 1;
        usleep(1000);
    }
    return 0;
}

/* ---- a job that records where it ran -------------------------------------------------------- */

struct job {
    atomic_int ran;       /* run() calls; written on a worker */
    atomic_int finished;  /* run() returned */
    atomic_int *gate;     /* run() waits until *gate != 0 (NULL: no wait) */
    pthread_t run_thread; /* written by run(), read after done (ordered by the pool's mutex) */
    int fired;            /* done calls (loop thread) */
    int status;
    pthread_t done_thread;
    int released; /* release calls (loop thread) */
    int *total;   /* shared done counter, may be NULL */
    struct work_pool *free_in_done;
    struct work_pool *submit_in_done; /* work_submit from done: its rc goes to submit_rc */
    int submit_rc;
};

static void job_run(void *ud)
{
    struct job *j = ud;
    j->run_thread = pthread_self();
    atomic_fetch_add(&j->ran, 1);
    while (j->gate && !atomic_load(j->gate))
        usleep(500);
    atomic_store(&j->finished, 1);
}

static void job_noop_done(int status, void *ud)
{
}

static void job_done(int status, void *ud)
{
    struct job *j = ud;
    j->fired++;
    j->status = status;
    j->done_thread = pthread_self();
    if (j->total)
        (*j->total)++;
    if (j->submit_in_done)
        j->submit_rc = work_submit(j->submit_in_done, job_run, job_noop_done, NULL, NULL);
    if (j->free_in_done)
        work_pool_free(j->free_in_done);
}

static void job_release(void *ud)
{
    struct job *j = ud;
    j->released++;
}

/* Wait (without running the loop) until j's run() returned and no job runs. */
static int wait_idle_after(struct work_pool *p, struct job *j, int ms)
{
    double end = now_ms() + ms;
    int running = 1;
    while ((!atomic_load(&j->finished) || running) && now_ms() < end) {
        usleep(1000);
        work_pool_stats(p, NULL, &running);
    }
    return atomic_load(&j->finished) && running == 0;
}

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(run_on_a_worker_done_on_the_loop)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 2, 16);
    ASSERT(p != NULL);
    struct job j = {0};
    ASSERT_OK(work_submit(p, job_run, job_done, &j, NULL));
    usleep(20000);
    ASSERT_EQ(j.fired, 0); /* never from inside the call, and only from the loop */
    ASSERT(run_until(base, &j.fired, 1, 2000));
    ASSERT_EQ(atomic_load(&j.ran), 1);
    ASSERT_EQ(j.status, 0);
    ASSERT(!pthread_equal(j.run_thread, pthread_self()));
    ASSERT(pthread_equal(j.done_thread, pthread_self()));
    int queued = -1, running = -1;
    work_pool_stats(p, &queued, &running);
    ASSERT_EQ(queued, 0);
    ASSERT_EQ(running, 0);
    work_pool_free(p);
    event_base_free(base);
}

TEST(two_hundred_jobs_on_two_threads_complete_once_each)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 2, 1024);
    enum { N = 200 };
    static struct job jobs[N];
    memset(jobs, 0, sizeof jobs);
    int total = 0;
    for (int i = 0; i < N; i++) {
        jobs[i].total = &total;
        ASSERT_OK(work_submit(p, job_run, job_done, &jobs[i], NULL));
    }
    ASSERT(run_until(base, &total, N, 5000));
    run_for(base, 20); /* nothing fires twice */
    ASSERT_EQ(total, N);
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(atomic_load(&jobs[i].ran), 1);
        ASSERT_EQ(jobs[i].fired, 1);
        ASSERT_EQ(jobs[i].status, 0);
        ASSERT(!pthread_equal(jobs[i].run_thread, pthread_self()));
    }
    work_pool_free(p);
    event_base_free(base);
}

TEST(busy_when_max_queued_jobs_wait)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 2);
    atomic_int gate = 0;
    struct job a = {.gate = &gate}, b = {0}, c = {0}, d = {0};
    int total = 0;
    a.total = b.total = c.total = d.total = &total;
    ASSERT_OK(work_submit(p, job_run, job_done, &a, NULL));
    ASSERT(wait_running(p, 1, 2000)); /* a holds the only thread */
    ASSERT_OK(work_submit(p, job_run, job_done, &b, NULL));
    ASSERT_OK(work_submit(p, job_run, job_done, &c, NULL));
    ASSERT_EQ(work_submit(p, job_run, job_done, &d, NULL), ERR_BUSY);
    int queued = 0, running = 0;
    work_pool_stats(p, &queued, &running);
    ASSERT_EQ(queued, 2);
    ASSERT_EQ(running, 1);
    atomic_store(&gate, 1);
    ASSERT(run_until(base, &total, 3, 2000));
    run_for(base, 20);
    ASSERT_EQ(d.fired, 0); /* refused: never fires */
    ASSERT_EQ(atomic_load(&d.ran), 0);
    ASSERT_EQ(total, 3);
    ASSERT_OK(work_submit(p, job_run, job_done, &d, NULL)); /* room again */
    ASSERT(run_until(base, &total, 4, 2000));
    work_pool_free(p);
    event_base_free(base);
}

TEST(cancel_a_queued_job)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 8);
    atomic_int gate = 0;
    struct job a = {.gate = &gate}, b = {0};
    struct work_op *op = NULL;
    ASSERT_OK(work_submit(p, job_run, job_done, &a, NULL));
    ASSERT(wait_running(p, 1, 2000));
    ASSERT_OK(work_submit(p, job_run, job_done, &b, &op));
    work_op_cancel(op, job_release);
    ASSERT_EQ(b.released, 1); /* it never started: ud is back at once */
    atomic_store(&gate, 1);
    ASSERT(run_until(base, &a.fired, 1, 2000));
    run_for(base, 30);
    ASSERT_EQ(atomic_load(&b.ran), 0);
    ASSERT_EQ(b.fired, 0);
    ASSERT_EQ(b.released, 1);
    work_pool_free(p);
    event_base_free(base);
}

TEST(cancel_a_running_job)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 8);
    atomic_int gate = 0;
    struct job a = {.gate = &gate};
    struct work_op *op = NULL;
    ASSERT_OK(work_submit(p, job_run, job_done, &a, &op));
    ASSERT(wait_running(p, 1, 2000));
    work_op_cancel(op, job_release);
    ASSERT_EQ(a.released, 0); /* run() still uses ud */
    run_for(base, 20);
    ASSERT_EQ(a.released, 0);
    atomic_store(&gate, 1);
    ASSERT(run_until(base, &a.released, 1, 2000));
    ASSERT_EQ(atomic_load(&a.finished), 1);
    run_for(base, 20);
    ASSERT_EQ(a.fired, 0);
    ASSERT_EQ(a.released, 1);
    work_pool_free(p);
    event_base_free(base);
}

TEST(cancel_after_run_returned_before_done)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 8);
    struct job a = {0};
    struct work_op *op = NULL;
    ASSERT_OK(work_submit(p, job_run, job_done, &a, &op));
    ASSERT(wait_idle_after(p, &a, 2000)); /* on the done list; the loop has not run */
    work_op_cancel(op, job_release);
    ASSERT_EQ(a.released, 1);
    run_for(base, 30);
    ASSERT_EQ(a.fired, 0);
    work_pool_free(p);
    event_base_free(base);
}

TEST(cancel_a_running_job_then_free_the_pool)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 8);
    atomic_int gate = 0;
    struct job a = {.gate = &gate};
    struct work_op *op = NULL;
    ASSERT_OK(work_submit(p, job_run, job_done, &a, &op));
    ASSERT(wait_running(p, 1, 2000));
    work_op_cancel(op, job_release);
    atomic_store(&gate, 1);
    work_pool_free(p); /* waits for run(), then hands ud back */
    ASSERT_EQ(atomic_load(&a.finished), 1);
    ASSERT_EQ(a.released, 1);
    ASSERT_EQ(a.fired, 0);
    event_base_free(base);
}

static void job_sleep_run(void *ud)
{
    usleep(50000);
    job_run(ud);
}

TEST(free_fires_closed_for_queued_jobs)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 8);
    struct job a = {0}, b = {0}, c = {0};
    ASSERT_OK(work_submit(p, job_sleep_run, job_done, &a, NULL));
    ASSERT(wait_running(p, 1, 2000));
    ASSERT_OK(work_submit(p, job_run, job_done, &b, NULL));
    c.submit_in_done = p;
    ASSERT_OK(work_submit(p, job_run, job_done, &c, NULL));
    work_pool_free(p); /* a finishes first; b and c never run */
    ASSERT_EQ(a.fired, 1);
    ASSERT_EQ(a.status, 0);
    ASSERT_EQ(atomic_load(&a.finished), 1);
    ASSERT_EQ(b.fired, 1);
    ASSERT_EQ(b.status, ERR_CLOSED);
    ASSERT_EQ(atomic_load(&b.ran), 0);
    ASSERT_EQ(c.fired, 1);
    ASSERT_EQ(c.status, ERR_CLOSED);
    ASSERT_EQ(c.submit_rc, ERR_CLOSED); /* no new work once freeing */
    event_base_free(base);
}

TEST(free_from_inside_a_done_callback)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 1, 8);
    struct job a = {.free_in_done = p};
    ASSERT_OK(work_submit(p, job_run, job_done, &a, NULL));
    ASSERT(run_until(base, &a.fired, 1, 2000));
    run_for(base, 20); /* the pool's event is gone with it */
    ASSERT_EQ(a.fired, 1);
    event_base_free(base);

    /* Freed from a done while another job runs and one waits. */
    base = event_base_new();
    p = work_pool_new(base, 1, 8);
    struct job d = {.free_in_done = p}, b = {0}, c = {0};
    ASSERT_OK(work_submit(p, job_run, job_done, &d, NULL));
    ASSERT(wait_idle_after(p, &d, 2000)); /* d is done, its callback not fired yet */
    ASSERT_OK(work_submit(p, job_sleep_run, job_done, &b, NULL));
    ASSERT(wait_running(p, 1, 2000));
    ASSERT_OK(work_submit(p, job_run, job_done, &c, NULL));
    ASSERT(run_until(base, &d.fired, 1, 2000)); /* d's done frees the pool */
    ASSERT_EQ(b.fired, 1);
    ASSERT_EQ(b.status, 0);
    ASSERT_EQ(c.fired, 1);
    ASSERT_EQ(c.status, ERR_CLOSED);
    ASSERT_EQ(atomic_load(&c.ran), 0);
    event_base_free(base);
}

/* ---- yescrypt on the pool ------------------------------------------------------------------- */

struct hash_job {
    const char *pw;
    char setting[CRYPT_OUTPUT_SIZE]; /* a hash to verify against, or "" to make a new one */
    char out[CRYPT_OUTPUT_SIZE];
    int ok;
    double ms; /* time in run() */
    int *total;
};

static void hash_run(void *ud)
{
    struct hash_job *h = ud;
    double t0 = now_ms();
    struct crypt_data *cd = calloc(1, sizeof *cd); /* 32 KB: never on a small stack */
    if (h->setting[0] == '\0' &&
        crypt_gensalt_rn("$y$", 0, NULL, 0, h->setting, (int) sizeof h->setting) == NULL) {
        free(cd);
        return;
    }
    const char *r = crypt_rn(h->pw, h->setting, cd, (int) sizeof *cd);
    if (r) {
        snprintf(h->out, sizeof h->out, "%s", r);
        h->ok = 1;
    }
    free(cd);
    h->ms = now_ms() - t0;
}

static void hash_done(int status, void *ud)
{
    struct hash_job *h = ud;
    if (status == 0)
        (*h->total)++;
}

struct gap {
    double last, max, p99;
    int ticks;
    double gaps[200000];
};

static void on_gap_tick(evutil_socket_t fd, short what, void *arg)
{
    struct gap *g = arg;
    double t = now_ms();
    if (t - g->last > g->max)
        g->max = t - g->last;
    if (g->ticks < (int) (sizeof g->gaps / sizeof g->gaps[0]))
        g->gaps[g->ticks] = t - g->last;
    g->last = t;
    g->ticks++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

/* 50 hashes at once on a pool like main.c's, with a 1 ms timer on the loop; returns 0 and
 * fills *g, or -1 when a hash failed. */
static int hash_burst(struct gap *g)
{
    /* A precise timer (timerfd): epoll_wait's millisecond timeout alone ticks every ~4 ms. */
    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    struct work_pool *p = work_pool_new(base, 2, 1024);
    enum { N = 50 };
    static struct hash_job jobs[N];
    memset(jobs, 0, sizeof jobs);
    int total = 0;
    memset(g, 0, sizeof *g);
    struct event *tick = event_new(base, -1, EV_PERSIST, on_gap_tick, g);
    struct timeval ms1 = {0, 1000};
    event_add(tick, &ms1);
    double t0 = now_ms();
    g->last = t0;
    for (int i = 0; i < N; i++) {
        jobs[i].pw = "correct horse battery staple";
        jobs[i].total = &total;
        if (work_submit(p, hash_run, hash_done, &jobs[i], NULL) != 0)
            break;
    }
    while (total < N && now_ms() < t0 + 60000)
        event_base_loop(base, EVLOOP_ONCE);
    double wall = now_ms() - t0;
    event_free(tick);
    work_pool_free(p);
    event_base_free(base);
    double sum = 0;
    int ok = total == N;
    for (int i = 0; i < N; i++) {
        ok = ok && jobs[i].ok && strncmp(jobs[i].out, "$y$", 3) == 0;
        sum += jobs[i].ms;
    }
    int n = g->ticks < (int) (sizeof g->gaps / sizeof g->gaps[0])
                ? g->ticks
                : (int) (sizeof g->gaps / sizeof g->gaps[0]);
    qsort(g->gaps, (size_t) n, sizeof g->gaps[0], cmp_double);
    g->p99 = n ? g->gaps[(n * 99) / 100] : 0;
    printf("# %d yescrypt hashes on 2 threads: %.0f ms wall, %.1f ms per hash; loop timer "
           "(1 ms) fired %d times, gap p99 %.2f ms, max %.2f ms\n",
           N, wall, sum / N, g->ticks, g->p99, g->max);
    return ok ? 0 : -1;
}

/* The "while 50 logins hash at once, /healthz answers in well under 10 ms", at the C
 * level: the 99th percentile of the loop's gaps. The single worst gap is the machine's (a
 * shared 2-vCPU VM can stall any thread for tens of ms); hashing on the loop would put every
 * gap near one hash (15-80 ms). A burst that another process stalled is tried again. */
TEST(loop_stays_responsive_while_50_hashes_run)
{
    static struct gap g;
    for (int attempt = 0; attempt < 3; attempt++) {
        ASSERT_OK(hash_burst(&g));
        if (g.p99 < 10.0)
            break;
    }
    ASSERT(g.p99 < 10.0);
}

TEST(verify_the_right_and_a_wrong_password)
{
    struct event_base *base = event_base_new();
    struct work_pool *p = work_pool_new(base, 2, 16);
    int total = 0;
    struct hash_job made = {.pw = "hunter2", .total = &total};
    ASSERT_OK(work_submit(p, hash_run, hash_done, &made, NULL));
    ASSERT(run_until(base, &total, 1, 10000));
    ASSERT(made.ok);
    struct hash_job right = {.pw = "hunter2", .total = &total};
    struct hash_job wrong = {.pw = "hunter3", .total = &total};
    snprintf(right.setting, sizeof right.setting, "%s", made.out);
    snprintf(wrong.setting, sizeof wrong.setting, "%s", made.out);
    ASSERT_OK(work_submit(p, hash_run, hash_done, &right, NULL));
    ASSERT_OK(work_submit(p, hash_run, hash_done, &wrong, NULL));
    ASSERT(run_until(base, &total, 3, 10000));
    ASSERT(right.ok && wrong.ok);
    ASSERT_STR(right.out, made.out);
    ASSERT(strcmp(wrong.out, made.out) != 0);
    work_pool_free(p);
    event_base_free(base);
}

int main(void)
{
    RUN(run_on_a_worker_done_on_the_loop);
    RUN(two_hundred_jobs_on_two_threads_complete_once_each);
    RUN(busy_when_max_queued_jobs_wait);
    RUN(cancel_a_queued_job);
    RUN(cancel_a_running_job);
    RUN(cancel_after_run_returned_before_done);
    RUN(cancel_a_running_job_then_free_the_pool);
    RUN(free_fires_closed_for_queued_jobs);
    RUN(free_from_inside_a_done_callback);
    RUN(loop_stays_responsive_while_50_hashes_run);
    RUN(verify_the_right_and_a_wrong_password);
    return test_summary();
}
