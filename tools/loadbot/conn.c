/* conn.c -- one bot's connection: non-blocking TCP connect, the RFC 6455 upgrade (key made
 * here, Sec-WebSocket-Accept checked with libcrypto's SHA-1), then wslay's client context:
 * join, moves, and what the server sends back.
 *
 * Events: rev (EV_READ | EV_PERSIST) is added once the socket is connected and stays until the
 * bot closes; wev (EV_WRITE) is added only while output waits for the socket (the connect,
 * then wslay output that met EAGAIN). A wslay callback never frees the bot: it sets flags, and
 * the event callback that called wslay looks at them afterwards. */
#include "loadbot.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#define UPGRADE_MAX 4096 /* the 101 answer's head must fit */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);

/* ---- small helpers ----------------------------------------------------------------------------
 */

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

double lb_rand(struct lb *lb)
{
    return (double) (xorshift(&lb->rng) >> 8) / (double) (1u << 24);
}

struct bot *lb_find(struct lb *lb, int64_t id)
{
    size_t mask = lb->map_cap - 1,
           i = (size_t) ((uint64_t) id * 0x9E3779B97F4A7C15ull >> 17) & mask;
    for (; lb->map_val[i]; i = (i + 1) & mask)
        if (lb->map_key[i] == id)
            return &lb->bots[lb->map_val[i] - 1];
    return NULL;
}

/* ---- the grid (--radius) ----------------------------------------------------------------------
 */

void grid_init(struct lb *lb)
{
    double r = lb->o.radius;
    lb->gw = (int) ((lb->bx1 - lb->bx0) / r) + 1;
    lb->gh = (int) ((lb->by1 - lb->by0) / r) + 1;
    lb->grid = malloc((size_t) lb->gw * (size_t) lb->gh * sizeof *lb->grid);
    if (!lb->grid)
        abort();
    for (int i = 0; i < lb->gw * lb->gh; i++)
        lb->grid[i] = -1;
    for (int i = 0; i < lb->nbots; i++)
        lb->bots[i].cell = -1;
}

static int cell_of(const struct lb *lb, double x, double y)
{
    int cx = (int) ((x - lb->bx0) / lb->o.radius), cy = (int) ((y - lb->by0) / lb->o.radius);
    cx = cx < 0 ? 0 : cx >= lb->gw ? lb->gw - 1 : cx;
    cy = cy < 0 ? 0 : cy >= lb->gh ? lb->gh - 1 : cy;
    return cy * lb->gw + cx;
}

void grid_insert(struct bot *b)
{
    struct lb *lb = b->lb;
    if (!lb->grid || b->cell >= 0)
        return;
    int i = (int) (b - lb->bots);
    b->cell = cell_of(lb, b->x, b->y);
    b->gprev = -1;
    b->gnext = lb->grid[b->cell];
    if (b->gnext >= 0)
        lb->bots[b->gnext].gprev = i;
    lb->grid[b->cell] = i;
}

void grid_remove(struct bot *b)
{
    struct lb *lb = b->lb;
    if (!lb->grid || b->cell < 0)
        return;
    if (b->gprev >= 0)
        lb->bots[b->gprev].gnext = b->gnext;
    else
        lb->grid[b->cell] = b->gnext;
    if (b->gnext >= 0)
        lb->bots[b->gnext].gprev = b->gprev;
    b->cell = -1;
}

int grid_count(const struct bot *b, int *same)
{
    const struct lb *lb = b->lb;
    double r2 = lb->o.radius * lb->o.radius;
    int c = cell_of(lb, b->x, b->y), cx = c % lb->gw, cy = c / lb->gw, n = 0;
    *same = 0;
    for (int y = cy - 1; y <= cy + 1; y++)
        for (int x = cx - 1; x <= cx + 1; x++) {
            if (x < 0 || y < 0 || x >= lb->gw || y >= lb->gh)
                continue;
            for (int i = lb->grid[y * lb->gw + x]; i >= 0; i = lb->bots[i].gnext) {
                const struct bot *o = &lb->bots[i];
                double dx = o->x - b->x, dy = o->y - b->y;
                if (o != b && dx * dx + dy * dy <= r2) {
                    n++;
                    *same += o->port_i == b->port_i;
                }
            }
        }
    return n;
}

static void count_fail(struct lb *lb, const char *reason)
{
    lb->c.connect_fail++;
    codes_add(&lb->fail_reasons, reason, strlen(reason));
}

static void leave_state(struct bot *b)
{
    struct lb *lb = b->lb;
    switch (b->state) {
    case BOT_CONNECTING:
    case BOT_UPGRADING: lb->connecting--; break;
    case BOT_OPEN:
        lb->connecting--;
        lb->open--;
        break;
    case BOT_JOINED:
        lb->open--;
        lb->joined--;
        grid_remove(b);
        break;
    case BOT_CLOSING:
        lb->open--;
        lb->closing--;
        break;
    default: break;
    }
}

void bot_close(struct bot *b)
{
    if (b->state == BOT_DONE)
        return;
    leave_state(b);
    b->state = BOT_DONE;
    if (b->rev)
        event_free(b->rev);
    if (b->wev)
        event_free(b->wev);
    b->rev = b->wev = NULL;
    if (b->ctx)
        wslay_event_context_free(b->ctx);
    b->ctx = NULL;
    if (b->fd >= 0)
        close(b->fd);
    b->fd = -1;
    free(b->io);
    b->io = NULL;
    free(b->pre);
    b->pre = NULL;
}

/* Another try later, as a client would: after 0.5 s, then doubling up to 8 s, each with a
 * random half of it added (bots that lost one node do not all come back at one instant). */
static void schedule_retry(struct bot *b)
{
    struct lb *lb = b->lb;
    if (lb->o.no_reconnect || lb->phase >= PH_CLOSING)
        return;
    double delay = 0.5 * (double) (1u << (b->retries < 4 ? b->retries : 4));
    delay *= 1 + 0.5 * lb_rand(lb);
    b->retry_at_us = now_us() + (uint64_t) (delay * 1e6);
    b->retries++;
    b->rejoin = 1;
    lb->retrying++;
}

int bot_retry_due(const struct bot *b, uint64_t now)
{
    return b->state == BOT_DONE && b->retry_at_us != 0 && now >= b->retry_at_us &&
           b->lb->phase < PH_CLOSING;
}

void bot_fail(struct bot *b, const char *reason)
{
    if (b->state == BOT_DONE)
        return;
    count_fail(b->lb, reason);
    bot_close(b);
    if (b->rejoin) /* a try after an unexpected close: on to the next */
        schedule_retry(b);
}

/* The connection ended without our asking: count it under its close code, and try again
 * (unless --no-reconnect). */
static void unexpected_close(struct bot *b, const char *why)
{
    struct lb *lb = b->lb;
    if (b->state == BOT_CLOSING || lb->phase >= PH_CLOSING) {
        bot_close(b);
        return;
    }
    if (b->state != BOT_JOINED) {
        bot_fail(b, why);
        return;
    }
    lb->c.closed++;
    codes_add(&lb->close_codes, why, strlen(why));
    bot_close(b);
    schedule_retry(b);
}

/* ---- wslay callbacks --------------------------------------------------------------------------
 */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct bot *b = ud;
    if (b->pre) {
        size_t n = b->pre_len - b->pre_off;
        if (n > len)
            n = len;
        memcpy(buf, b->pre + b->pre_off, n);
        b->pre_off += n;
        if (b->pre_off == b->pre_len) {
            free(b->pre);
            b->pre = NULL;
        }
        return (ssize_t) n;
    }
    if (b->drained) { /* the last recv did not fill its buffer: no need to ask again */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    /* recvmsg for the kernel's receive time of these bytes (SO_TIMESTAMPNS, set at connect):
     * a move's latency is then also known without loadbot's own backlog in it */
    struct iovec iov = {buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t r = recvmsg(b->fd, &mh, 0);
    b->lb->c.recv_calls++;
    if (r > 0) {
        b->lb->c.bytes_in += (uint64_t) r;
        b->rx_at_us = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts, real;
                memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                clock_gettime(CLOCK_REALTIME, &real);
                int64_t age_us = ((int64_t) real.tv_sec - ts.tv_sec) * 1000000 +
                                 ((int64_t) real.tv_nsec - ts.tv_nsec) / 1000;
                uint64_t mono = now_us();
                b->rx_at_us =
                    age_us > 0 && (uint64_t) age_us < mono ? mono - (uint64_t) age_us : mono;
            }
        }
        b->drained = (size_t) r < len;
        return r;
    }
    if (r == 0) {
        b->eof = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        b->sock_err = errno;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    struct bot *b = ud;
    /* wslay sends a frame's header, then its payload (flag WSLAY_MSG_MORE on the header): hold
     * the header and send both with one writev, as one segment */
    if ((flags & WSLAY_MSG_MORE) && b->hold_len == 0 && len <= sizeof b->hold) {
        memcpy(b->hold, data, len);
        b->hold_len = (uint8_t) len;
        return (ssize_t) len;
    }
    ssize_t r;
    size_t held = b->hold_len;
    if (held) {
        struct iovec iov[2] = {{b->hold, held}, {(void *) data, len}};
        r = writev(b->fd, iov, 2);
    } else {
        r = send(b->fd, data, len, MSG_NOSIGNAL);
    }
    b->lb->c.send_calls++;
    if (r >= 0 && (size_t) r > held) {
        b->hold_len = 0;
        return r - (ssize_t) held;
    }
    if (r >= 0) { /* not even all of the held header went: keep the rest, try again later */
        memmove(b->hold, b->hold + r, held - (size_t) r);
        b->hold_len = (uint8_t) (held - (size_t) r);
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        b->sock_err = errno;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    struct bot *b = ud;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t r = xorshift(&b->lb->rng);
        memcpy(buf + i, &r, len - i < 4 ? len - i : 4);
    }
    return 0;
}

/* A JSON number as hundredths (x * 100, rounded): plain decimals with at most two digits after
 * the point are read here, anything else by strtod. 0 if it is not a number. */
static int centi(const char *v, const char *ve, int32_t *out)
{
    const char *p = v;
    int neg = p < ve && *p == '-';
    p += neg;
    int64_t n = 0;
    int digits = 0, frac = -1;
    for (; p < ve; p++) {
        if (*p >= '0' && *p <= '9') {
            if (++digits > 12)
                break;
            n = n * 10 + (*p - '0');
            if (frac >= 0)
                frac++;
        } else if (*p == '.' && frac < 0) {
            frac = 0;
        } else {
            break;
        }
    }
    if (p == ve && digits > 0 && frac <= 2) {
        for (int f = frac < 0 ? 0 : frac; f < 2; f++)
            n *= 10;
        *out = (int32_t) (neg ? -n : n);
        return 1;
    }
    double d;
    if (!json_num(v, ve, &d))
        return 0;
    *out = (int32_t) lround(d * 100);
    return 1;
}

/* {"t":"moved","id":N,"x":X,"y":Y}: find the move it tells of, take its latency */
static void on_moved(struct bot *b, const char *p, const char *end, uint64_t now)
{
    struct lb *lb = b->lb;
    const char *k, *v, *ve;
    size_t kl;
    int64_t id = -1;
    int32_t cx = 0, cy = 0;
    int have = 0;
    while (json_next(&p, end, &k, &kl, &v, &ve) == 1) {
        if (kl == 2 && k[0] == 'i' && k[1] == 'd') {
            id = 0;
            for (const char *d = v; d < ve && *d >= '0' && *d <= '9'; d++)
                id = id * 10 + (*d - '0');
        } else if (kl == 1 && k[0] == 'x') {
            have += centi(v, ve, &cx);
        } else if (kl == 1 && k[0] == 'y') {
            have += centi(v, ve, &cy);
        }
    }
    lb->c.moved_recv++;
    struct bot *from = lb_find(lb, id);
    if (from && have == 2) {
        for (int i = 0; i < from->ring_n; i++) {
            const struct move_rec *m = &from->ring[(from->ring_head + LB_RING - 1 - i) % LB_RING];
            if (m->cx == cx && m->cy == cy) {
                uint64_t lat = now > m->t_us ? now - m->t_us : 0;
                lb->c.matched++;
                hist_add(&lb->sec_hist, lat);
                uint64_t at = b->rx_at_us ? b->rx_at_us : now,
                         sock = at > m->t_us ? at - m->t_us : 0;
                hist_add(&lb->sock_sec_hist, sock);
                if (lb->o.nports > 1) { /* same node, or a hop between nodes */
                    int cross = from->port_i != b->port_i;
                    if (cross)
                        lb->c.matched_cross++;
                    else
                        lb->c.matched_same++;
                    hist_add(&lb->hop_sec[cross], lat);
                    hist_add(&lb->hop_sock_sec[cross], sock);
                }
                return;
            }
        }
    }
    lb->c.unmatched++;
}

/* Count the entries of the "nearby" array of a welcome. */
static void on_welcome(struct bot *b, const char *p, const char *end)
{
    struct lb *lb = b->lb;
    const char *k, *v, *ve;
    size_t kl;
    while (json_next(&p, end, &k, &kl, &v, &ve) == 1) {
        if (kl == 6 && memcmp(k, "nearby", 6) == 0 && *v == '[') {
            const char *q = v + 1, *qe = ve - 1;
            while (q < qe) {
                while (q < qe && (*q == ',' || *q == ' ' || *q == '\n'))
                    q++;
                if (q >= qe)
                    break;
                const char *e = json_skip(q, qe);
                if (!e)
                    break;
                lb->c.nearby_sum++;
                q = e;
            }
        }
    }
}

static void on_error_msg(struct bot *b, const char *p, const char *end)
{
    struct lb *lb = b->lb;
    const char *k, *v, *ve;
    size_t kl;
    lb->c.errors++;
    while (json_next(&p, end, &k, &kl, &v, &ve) == 1)
        if (kl == 4 && memcmp(k, "code", 4) == 0 && ve - v >= 2) {
            codes_add(&lb->error_codes, v + 1, (size_t) (ve - v - 2));
            return;
        }
    codes_add(&lb->error_codes, "(no code)", 9);
}

static int is_t(const char *v, const char *ve, const char *name)
{
    size_t n = strlen(name);
    return (size_t) (ve - v) == n + 2 && memcmp(v + 1, name, n) == 0;
}

static void on_text(struct bot *b, const char *msg, size_t len)
{
    struct lb *lb = b->lb;
    const char *p = msg, *end = msg + len, *k, *v = NULL, *ve = NULL;
    size_t kl;
    /* "t" comes first in every message of the node and of the peer; look further otherwise */
    int found = 0;
    while (json_next(&p, end, &k, &kl, &v, &ve) == 1)
        if (kl == 1 && k[0] == 't') {
            found = 1;
            break;
        }
    if (!found) {
        lb->c.other_msgs++;
        return;
    }
    if (is_t(v, ve, "moved")) {
        on_moved(b, msg, end, now_us());
    } else if (is_t(v, ve, "appear")) {
        lb->c.appear++;
    } else if (is_t(v, ve, "vanish")) {
        lb->c.vanish++;
    } else if (is_t(v, ve, "welcome")) {
        lb->c.welcome++;
        on_welcome(b, msg, end);
        if (b->state == BOT_OPEN) {
            lb->connecting--;
            lb->joined++;
            b->state = BOT_JOINED;
            grid_insert(b);
            lb->last_open_us = now_us();
            if (b->rejoin) { /* back after an unexpected close, with the same token */
                lb->c.reconnects++;
                b->rejoin = b->retries = 0;
            }
            /* the first move comes within one period, at a random phase */
            if (lb->o.rate > 0)
                b->next_move_us = (double) now_us() + lb_rand(lb) * 1e6 / lb->o.rate;
        }
    } else if (is_t(v, ve, "correct")) {
        lb->c.corrects++;
        /* the server says where we are: walk on from there */
        const char *q = msg, *qk, *qv, *qve;
        size_t qkl;
        double x, y;
        int in_grid = b->cell >= 0;
        grid_remove(b);
        while (json_next(&q, end, &qk, &qkl, &qv, &qve) == 1) {
            if (qkl == 1 && qk[0] == 'x' && json_num(qv, qve, &x))
                b->x = x;
            else if (qkl == 1 && qk[0] == 'y' && json_num(qv, qve, &y))
                b->y = y;
        }
        if (in_grid)
            grid_insert(b);
    } else if (is_t(v, ve, "error")) {
        on_error_msg(b, msg, end);
        if (b->state == BOT_OPEN) /* the join was refused: closed after wslay returns */
            b->join_refused = 1;
    } else if (is_t(v, ve, "pong")) {
        lb->c.pong++;
    } else if (is_t(v, ve, "chat")) {
        lb->c.chat_recv++;
    } else {
        lb->c.other_msgs++;
    }
}

static void on_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *ud)
{
    struct bot *b = ud;
    if (b->state == BOT_DONE)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        on_text(b, (const char *) arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        b->peer_closed = 1; /* handled after wslay_event_recv returns */
        b->close_code = arg->status_code;
    }
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .genmask_callback = genmask_cb,
    .on_msg_recv_callback = on_msg_cb,
};

/* ---- driving wslay ----------------------------------------------------------------------------
 */

/* Write what wslay holds; wait for the socket if it is full; close when both sides are done. */
static void pump(struct bot *b)
{
    if (b->state == BOT_DONE)
        return;
    if (wslay_event_want_write(b->ctx) && wslay_event_send(b->ctx) < 0) {
        unexpected_close(b, b->sock_err ? "send error" : "send failed");
        return;
    }
    if (wslay_event_want_write(b->ctx)) {
        if (!event_pending(b->wev, EV_WRITE, NULL))
            event_add(b->wev, NULL);
    } else if (!wslay_event_want_read(b->ctx)) {
        bot_close(b); /* close frames both ways: done */
    }
}

static void ws_read(struct bot *b)
{
    b->drained = 0; /* level-triggered: whatever is left makes the event fire again */
    int rc = wslay_event_recv(b->ctx);
    if (b->join_refused) {
        bot_fail(b, "join refused (error message)");
        return;
    }
    if (b->peer_closed && b->state != BOT_CLOSING && b->lb->phase < PH_CLOSING) {
        char why[32];
        snprintf(why, sizeof why, "close %u", b->close_code);
        wslay_event_send(b->ctx); /* our answering close frame, if it goes at once */
        unexpected_close(b, why);
        return;
    }
    if (rc < 0 || b->eof || b->sock_err) {
        unexpected_close(b, b->eof ? "eof (1006)" : "reset (1006)");
        return;
    }
    pump(b);
}

static void send_text(struct bot *b, const char *text, size_t len)
{
    struct wslay_event_msg m = {
        .opcode = WSLAY_TEXT_FRAME, .msg = (const uint8_t *) text, .msg_length = len};
    if (wslay_event_queue_msg(b->ctx, &m) != 0)
        return;
    pump(b);
}

/* ---- connect and upgrade ----------------------------------------------------------------------
 */

static void base64(const unsigned char *in, int n, char *out)
{
    EVP_EncodeBlock((unsigned char *) out, in, n);
}

void bot_start(struct bot *b)
{
    struct lb *lb = b->lb;
    b->started_us = now_us();
    b->retry_at_us = 0;
    /* what an earlier connection of this bot left (bot_close freed its buffers) */
    b->reading = b->eof = b->sock_err = b->drained = 0;
    b->join_refused = b->peer_closed = 0;
    b->close_code = 0;
    b->hold_len = 0;
    b->io_len = b->io_off = b->pre_len = b->pre_off = 0;
    b->ring_head = b->ring_n = 0;
    b->fd = socket(lb->addr[b->port_i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (b->fd < 0) {
        count_fail(lb, errno == EMFILE || errno == ENFILE ? "socket: too many open files"
                                                          : "socket failed");
        b->state = BOT_DONE;
        if (b->rejoin)
            schedule_retry(b);
        return;
    }
    int one = 1;
    setsockopt(b->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(b->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    b->state = BOT_CONNECTING;
    lb->connecting++;
    if (connect(b->fd, (struct sockaddr *) &lb->addr[b->port_i], lb->addrlen[b->port_i]) < 0 &&
        errno != EINPROGRESS) {
        char why[64];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        bot_fail(b, why);
        return;
    }
    b->rev = event_new(lb->base, b->fd, EV_READ | EV_PERSIST, on_read, b);
    b->wev = event_new(lb->base, b->fd, EV_WRITE, on_write, b);
    /* the upgrade request, sent once connected */
    unsigned char rnd[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = xorshift(&lb->rng);
        memcpy(rnd + i, &r, 4);
    }
    char key[25], cat[64];
    base64(rnd, 16, key);
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    unsigned char sha[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *) cat, strlen(cat), sha);
    base64(sha, SHA_DIGEST_LENGTH, b->accept);
    size_t cap = 512 + (b->token ? strlen(b->token) : 0);
    b->io = malloc(cap);
    if (!b->io)
        abort();
    int n = snprintf(b->io, cap,
                     "GET /ws%s%s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nUser-Agent: loadbot\r\n\r\n",
                     b->token ? "?token=" : "", b->token ? b->token : "", lb->o.host,
                     lb->o.ports[b->port_i], key);
    b->io_len = (size_t) n;
    b->io_off = 0;
    event_add(b->wev, NULL);
}

/* Connected (or failed): send the upgrade request. */
static void upgrade_send(struct bot *b)
{
    if (b->state == BOT_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(b->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
            char why[64];
            snprintf(why, sizeof why, "connect: %s", strerror(err ? err : errno));
            bot_fail(b, why);
            return;
        }
        b->state = BOT_UPGRADING;
        event_add(b->rev, NULL);
    }
    while (b->io_off < b->io_len) {
        ssize_t w = send(b->fd, b->io + b->io_off, b->io_len - b->io_off, MSG_NOSIGNAL);
        if (w > 0) {
            b->io_off += (size_t) w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            event_add(b->wev, NULL);
            return;
        } else {
            bot_fail(b, "upgrade: send failed");
            return;
        }
    }
}

/* The 101 answer: status, Upgrade, Sec-WebSocket-Accept; then the WebSocket opens. */
static void upgrade_read(struct bot *b)
{
    struct lb *lb = b->lb;
    if (!b->reading) {
        if (b->io_off < b->io_len)
            return; /* still sending the request: nothing can be answered yet */
        free(b->io);
        b->io = malloc(UPGRADE_MAX + 1);
        if (!b->io)
            abort();
        b->reading = 1; /* io_off counts the answer's bytes now */
        b->io_off = 0;
    }
    for (;;) {
        ssize_t r = recv(b->fd, b->io + b->io_off, UPGRADE_MAX - b->io_off, 0);
        if (r > 0) {
            b->io_off += (size_t) r;
            b->io[b->io_off] = 0;
            if (strstr(b->io, "\r\n\r\n") || b->io_off == UPGRADE_MAX)
                break;
        } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        } else {
            bot_fail(b, r == 0 ? "upgrade: closed" : "upgrade: reset");
            return;
        }
    }
    char *head_end = strstr(b->io, "\r\n\r\n");
    if (!head_end) {
        bot_fail(b, "upgrade: answer too long");
        return;
    }
    *head_end = 0;
    if (strncmp(b->io, "HTTP/1.1 101", 12) != 0) {
        char why[40];
        snprintf(why, sizeof why, "upgrade: HTTP %.3s", b->io + 9);
        bot_fail(b, why);
        return;
    }
    const char *acc = NULL;
    for (char *h = strstr(b->io, "\r\n"); h; h = strstr(h + 2, "\r\n"))
        if (strncasecmp(h + 2, "sec-websocket-accept:", 21) == 0) {
            acc = h + 23;
            while (*acc == ' ')
                acc++;
        }
    if (!acc || strncmp(acc, b->accept, 28) != 0) {
        bot_fail(b, "upgrade: bad Sec-WebSocket-Accept");
        return;
    }
    size_t body_off = (size_t) (head_end + 4 - b->io);
    if (b->io_off > body_off) { /* frames that came with the answer */
        b->pre_len = b->io_off - body_off;
        b->pre = malloc(b->pre_len);
        if (!b->pre)
            abort();
        memcpy(b->pre, b->io + body_off, b->pre_len);
        b->pre_off = 0;
    }
    free(b->io);
    b->io = NULL;
    if (wslay_event_context_client_init(&b->ctx, &callbacks, b) != 0) {
        bot_fail(b, "wslay: no memory");
        return;
    }
    wslay_event_config_set_max_recv_msg_length(b->ctx, 16u << 20);
    b->state = BOT_OPEN;
    lb->open++;
    char join[160];
    int n;
    if (lb->o.peer)
        n = snprintf(join, sizeof join, "{\"t\":\"join\",\"player_id\":%lld,\"x\":%.2f,\"y\":%.2f}",
                     (long long) b->id, b->x, b->y);
    else
        n = snprintf(join, sizeof join, "{\"t\":\"join\",\"player_id\":%lld}", (long long) b->id);
    send_text(b, join, (size_t) n);
    if (b->state != BOT_DONE && b->pre)
        ws_read(b);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct bot *b = arg;
    if (b->state == BOT_CONNECTING || b->state == BOT_UPGRADING)
        upgrade_send(b);
    else if (b->ctx)
        pump(b);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct bot *b = arg;
    if (b->state == BOT_UPGRADING)
        upgrade_read(b);
    else if (b->ctx)
        ws_read(b);
}

/* ---- moves and the end ------------------------------------------------------------------------
 */

void bot_move(struct bot *b, uint64_t now)
{
    struct lb *lb = b->lb;
    /* a random walk: the heading drifts; at the edge of the area it turns back */
    b->heading += (lb_rand(lb) - 0.5) * 1.0;
    double step = lb->o.step * (0.5 + 0.5 * lb_rand(lb));
    double nx = b->x + cos(b->heading) * step, ny = b->y + sin(b->heading) * step;
    if (nx < lb->bx0 || nx > lb->bx1 || ny < lb->by0 || ny > lb->by1) {
        b->heading += M_PI;
        nx = b->x + cos(b->heading) * step;
        ny = b->y + sin(b->heading) * step;
        nx = fmin(fmax(nx, lb->bx0), lb->bx1);
        ny = fmin(fmax(ny, lb->by0), lb->by1);
    }
    /* hundredths: what is sent is exactly what comes back in "moved" */
    int32_t cx = (int32_t) lround(nx * 100), cy = (int32_t) lround(ny * 100);
    grid_remove(b);
    b->x = cx / 100.0;
    b->y = cy / 100.0;
    if (lb->grid) {
        grid_insert(b);
        int same, n = grid_count(b, &same);
        lb->c.owed += (uint64_t) n;
        lb->c.owed_same += (uint64_t) same;
        lb->c.owed_cross += (uint64_t) (n - same);
    }
    char msg[128];
    int n = snprintf(msg, sizeof msg, "{\"t\":\"move\",\"x\":%.2f,\"y\":%.2f,\"seq\":%u}", b->x,
                     b->y, ++b->seq);
    struct move_rec *m = &b->ring[b->ring_head];
    m->cx = cx;
    m->cy = cy;
    m->t_us = now;
    b->ring_head = (uint8_t) ((b->ring_head + 1) % LB_RING);
    if (b->ring_n < LB_RING)
        b->ring_n++;
    lb->c.moves_sent++;
    send_text(b, msg, (size_t) n);
}

void bot_chat(struct bot *b)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg,
                     "{\"t\":\"chat\",\"channel\":\"region\",\"text\":\"bot %lld says %llu\"}",
                     (long long) b->id, (unsigned long long) b->lb->c.chat_sent);
    b->lb->c.chat_sent++;
    send_text(b, msg, (size_t) n);
}

void bot_close_begin(struct bot *b)
{
    if (b->state == BOT_JOINED || b->state == BOT_OPEN) {
        if (b->state == BOT_OPEN) {
            b->lb->connecting--;
        } else {
            b->lb->joined--;
            grid_remove(b);
        }
        b->state = BOT_CLOSING;
        b->lb->closing++;
        wslay_event_queue_close(b->ctx, 1000, NULL, 0);
        pump(b);
    } else if (b->state != BOT_CLOSING) {
        bot_close(b);
    }
}
