/* bus.c -- the world across nodes (bus.h). */
#include "bus.h"
#include "log.h"
#include "mem.h"
#include "rds.h"
#include "world.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUS_FLUSH_BYTES 32768 /* a message this large goes out at once */
#define BUS_LINE_MAX    256   /* longer lines are not ours: skipped */

struct bus {
    struct rds *rds;
    struct rds_sub *sub;
    struct world *w;
    char node[48];
    size_t node_len;
    char *out; /* the message being built: "<node>\n" and lines */
    size_t len, cap;
    struct event *flush; /* at the end of this turn of the loop */
    struct event *tick;  /* the roster */
    int roster_due;
    int alone; /* the last PUBLISH reached no other node: moves and rosters are not sent */
    uint64_t published, received, failed;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* ---- sending --------------------------------------------------------------------------------- */

static void on_published(struct redisReply **replies, int n, int status, void *ud)
{
    struct bus *b = ud;
    if (status != 0 || n < 1 || replies[0]->type == REDIS_REPLY_ERROR) {
        b->failed++;
        log_debug("bus", "a bus message was not published");
    } else if (replies[0]->type == REDIS_REPLY_INTEGER) {
        /* the subscribers that got it, this node included: alone, moves would only come back
         * to be skipped; a node that subscribes asks for the roster (s) and ends that */
        b->alone = replies[0]->integer <= 1;
    }
}

static void publish(struct bus *b)
{
    if (b->len <= b->node_len + 1)
        return;
    /* rds copies the message: the buffer is ours again at once */
    if (rds_publish(b->rds, BUS_CHANNEL, b->out, b->len, on_published, b) != 0)
        b->failed++;
    else
        b->published++;
    b->len = 0;
}

static char *line_room(struct bus *b, size_t need)
{
    if (b->len == 0) {
        memcpy(b->out, b->node, b->node_len);
        b->out[b->node_len] = '\n';
        b->len = b->node_len + 1;
    }
    if (b->cap - b->len < need) {
        b->cap = (b->len + need) * 2;
        b->out = xrealloc(b->out, b->cap);
    }
    return b->out + b->len;
}

/* the line at out[len..] was written (n bytes): send soon, or now when the message is large */
static void line_done(struct bus *b, int n)
{
    if (n <= 0)
        return;
    b->len += (size_t) n;
    if (b->len >= BUS_FLUSH_BYTES)
        publish(b);
    else
        event_active(b->flush, EV_TIMEOUT, 0);
}

static void on_joined(int64_t id, const char *name, int64_t guild, int64_t since, double x,
                      double y, void *ud)
{
    struct bus *b = ud;
    char *p = line_room(b, BUS_LINE_MAX);
    int n = snprintf(p, BUS_LINE_MAX, "j %lld %lld %lld %.17g %.17g %s\n", (long long) id,
                     (long long) guild, (long long) since, x, y, name);
    line_done(b, n < BUS_LINE_MAX ? n : 0);
}

static void on_moved(int64_t id, double x, double y, void *ud)
{
    struct bus *b = ud;
    if (b->alone)
        return;
    char *p = line_room(b, 80);
    line_done(b, snprintf(p, 80, "m %lld %.17g %.17g\n", (long long) id, x, y));
}

static void on_left(int64_t id, void *ud)
{
    struct bus *b = ud;
    char *p = line_room(b, 32);
    line_done(b, snprintf(p, 32, "l %lld\n", (long long) id));
}

static void roster_one(int64_t id, const char *name, int64_t guild, int64_t since, double x,
                       double y, void *arg)
{
    on_joined(id, name, guild, since, x, y, arg);
}

static void send_roster(struct bus *b)
{
    b->roster_due = 0;
    world_each_local(b->w, roster_one, b);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    if (b->roster_due)
        send_roster(b);
    publish(b);
    (void) fd, (void) what;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bus *b = arg;
    if (!b->alone)
        send_roster(b);
    else
        on_left(0, b); /* a line no node applies (no player 0): the reply says who listens */
    publish(b);
    (void) fd, (void) what;
}

/* ---- receiving ------------------------------------------------------------------------------- */

static int num_i(const char **p, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(*p, &end, 10);
    if (end == *p || errno || (*end != ' ' && *end != '\0'))
        return -1;
    *out = v;
    *p = *end ? end + 1 : end;
    return 0;
}

static int num_d(const char **p, double *out)
{
    char *end;
    double v = strtod(*p, &end);
    if (end == *p || !isfinite(v) || (*end != ' ' && *end != '\0'))
        return -1;
    *out = v;
    *p = *end ? end + 1 : end;
    return 0;
}

/* one line, NUL-terminated, without its '\n': 1 applied, 0 not */
static int apply_line(struct world *w, const char *home, const char *line, double mono,
                      int *sync_asked)
{
    long long id, guild, since;
    double x, y;
    const char *p = line + 2;
    if (line[0] == 's' && line[1] == '\0') {
        *sync_asked = 1;
        return 1;
    }
    if (line[0] == '\0' || line[1] != ' ')
        return 0;
    switch (line[0]) {
    case 'j':
        if (num_i(&p, &id) || num_i(&p, &guild) || num_i(&p, &since) || num_d(&p, &x) ||
            num_d(&p, &y))
            return 0;
        return world_remote_join(w, home, id, p, guild, since, x, y, mono) == 0;
    case 'm':
        if (num_i(&p, &id) || num_d(&p, &x) || num_d(&p, &y) || *p)
            return 0;
        return world_remote_move(w, home, id, x, y, mono) == 0;
    case 'l':
        if (num_i(&p, &id) || *p)
            return 0;
        return world_remote_leave(w, home, id) == 0;
    default: return 0;
    }
}

int bus_apply(struct world *w, const char *self, const char *msg, size_t len, double mono,
              int *sync_asked)
{
    const char *end = msg + len, *nl = memchr(msg, '\n', len);
    char home[48], line[BUS_LINE_MAX];
    size_t hlen = nl ? (size_t) (nl - msg) : 0;
    if (nl == NULL || hlen == 0 || hlen >= sizeof home || memchr(msg, '\0', hlen))
        return -1;
    memcpy(home, msg, hlen);
    home[hlen] = '\0';
    if (self && strcmp(home, self) == 0)
        return 0; /* ours: applied when it happened */
    int n = 0;
    for (const char *p = nl + 1; p < end;) {
        const char *e = memchr(p, '\n', (size_t) (end - p));
        size_t l = (size_t) ((e ? e : end) - p);
        if (l < sizeof line && memchr(p, '\0', l) == NULL) {
            memcpy(line, p, l);
            line[l] = '\0';
            n += apply_line(w, home, line, mono, sync_asked);
        }
        p = e ? e + 1 : end;
    }
    return n;
}

static void on_message(const char *msg, size_t len, void *ud)
{
    struct bus *b = ud;
    int sync = 0;
    int n = bus_apply(b->w, b->node, msg, len, mono_now(), &sync);
    if (n > 0)
        b->received += (uint64_t) n;
    if (n > 0 || sync)
        b->alone = 0; /* another node speaks */
    if (sync) {
        b->roster_due = 1;
        event_active(b->flush, EV_TIMEOUT, 0);
    }
}

/* (re)subscribed: what others published meanwhile is lost; ask every node for its roster and
 * send ours */
static void on_gap(void *ud)
{
    struct bus *b = ud;
    char *p = line_room(b, 4);
    memcpy(p, "s\n", 2);
    b->roster_due = 1;
    line_done(b, 2);
}

/* ---- life ------------------------------------------------------------------------------------ */

struct bus *bus_new(struct event_base *base, const struct rds_opts *ro, struct rds *rds,
                    struct world *w, const char *node)
{
    struct bus *b = xcalloc(1, sizeof *b);
    b->rds = rds;
    b->w = w;
    size_t n = strlen(node);
    const char *keep = n >= sizeof b->node ? node + n - (sizeof b->node - 1) : node;
    snprintf(b->node, sizeof b->node, "%s", keep);
    b->node_len = strlen(b->node);
    b->cap = BUS_FLUSH_BYTES + BUS_LINE_MAX;
    b->out = xmalloc(b->cap);
    b->flush = event_new(base, -1, 0, on_flush, b);
    b->tick = event_new(base, -1, EV_PERSIST, on_tick, b);
    struct timeval tv = {BUS_ROSTER_MS / 1000, (BUS_ROSTER_MS % 1000) * 1000};
    event_add(b->tick, &tv);
    struct world_bus wb = {on_joined, on_moved, on_left, b};
    world_set_bus(w, &wb);
    b->sub = rds_sub_new(base, ro, BUS_CHANNEL, on_message, on_gap, b);
    return b;
}

void bus_free(struct bus *b)
{
    if (b == NULL)
        return;
    rds_sub_free(b->sub);
    event_free(b->flush);
    event_free(b->tick);
    free(b->out);
    free(b);
}

void bus_stats(const struct bus *b, uint64_t *published, uint64_t *received, uint64_t *failed)
{
    *published = b->published;
    *received = b->received;
    *failed = b->failed;
}
