/* test_ws.c -- core/ws.c over real loopback sockets.
 *
 * Each test makes its own event_base, a listener on 127.0.0.1 (not http.c: a connection is
 * handed to ws_accept as http_detach would, with optional early input and earlier output),
 * and plain client sockets that build their frames by hand (masked, as a browser does) and
 * parse the server's. Every test frees everything and checks that no frame is left alive;
 * ASan/LSan check the rest. */
#include "test.h"

#include "err.h"
#include "http.h"
#include "log.h"
#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#define KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define MAXC   1100

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- the server side: a listener that hands each socket to ws_accept ------------------- */

struct rec {
    int idx;
    int closed; /* closed callbacks for this connection (must end at 1) */
    int code;
    double closed_at;
};

struct fx {
    struct event_base *base;
    struct evconnlistener *lst;
    struct ws_server *ws;
    int port;
    int accepted;
    struct ws_conn *conns[MAXC]; /* NULL once closed */
    struct rec recs[MAXC];
    int closed;
    int last_code;
    /* what a connection gets at accept, as http_detach would give it */
    const char *pre_in;
    size_t pre_in_len;
    const char *pre_out;
    /* behaviour of the callbacks */
    int echo;
    int close_in_msg;   /* ws_close from inside the message callback */
    int send_rc_after;  /* ws_send_text's result after that */
    int free_in_closed; /* ws_server_free from inside a closed callback */
    int free_in_msg;    /* ws_server_free from inside the message callback */
    int burst_in_msg;   /* send this many messages from inside the message callback */
    /* records */
    int msgs;
    char last_msg[512];
    size_t last_len;
};

static void on_message(struct ws_conn *c, const char *text, size_t len, void *ud)
{
    struct fx *t = ud;
    t->msgs++;
    t->last_len = len < sizeof t->last_msg ? len : sizeof t->last_msg - 1;
    memcpy(t->last_msg, text, t->last_len);
    t->last_msg[t->last_len] = '\0';
    if (t->echo)
        ws_send_text(c, text, len);
    for (int i = 0; i < t->burst_in_msg; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "{\"n\":%d}", i);
        ws_send_text(c, m, (size_t) n);
    }
    if (t->close_in_msg) {
        ws_close(c, 4001, "bye from the callback");
        t->send_rc_after = ws_send_text(c, "late", 4);
    }
    if (t->free_in_msg && t->ws) {
        struct ws_server *s = t->ws;
        t->ws = NULL;
        ws_server_free(s);
    }
}

static void on_closed(struct ws_conn *c, int code, void *ud)
{
    struct fx *t = ud;
    struct rec *r = ws_conn_ud(c);
    r->closed++;
    r->code = code;
    r->closed_at = now_ms();
    t->conns[r->idx] = NULL;
    t->closed++;
    t->last_code = code;
    /* sending to a closed connection is refused, never a crash */
    if (ws_send_text(c, "x", 1) != ERR_CLOSED)
        r->closed += 100;
    if (t->free_in_closed && t->ws) {
        struct ws_server *s = t->ws;
        t->ws = NULL;
        ws_server_free(s);
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
                      void *arg)
{
    struct fx *t = arg;
    struct http_detached d;
    memset(&d, 0, sizeof d);
    d.fd = fd;
    snprintf(d.remote_ip, sizeof d.remote_ip, "127.0.0.1");
    if (t->pre_in) {
        d.in = malloc(t->pre_in_len);
        memcpy(d.in, t->pre_in, t->pre_in_len);
        d.in_len = t->pre_in_len;
    }
    if (t->pre_out) {
        d.out_len = strlen(t->pre_out);
        d.out = malloc(d.out_len);
        memcpy(d.out, t->pre_out, d.out_len);
    }
    int i = t->accepted++;
    struct ws_conn *c = t->ws ? ws_accept(t->ws, &d, KEY, strlen(KEY)) : NULL;
    t->conns[i] = c;
    t->recs[i].idx = i;
    if (c)
        ws_conn_set_ud(c, &t->recs[i]);
    else
        t->recs[i].closed = -1; /* refused: no callback will come */
}

static struct fx *fx_new(const struct ws_opts *o)
{
    struct fx *t = calloc(1, sizeof *t);
    t->base = event_base_new();
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->lst = evconnlistener_new_bind(t->base, on_accept, t, LEV_OPT_CLOSE_ON_FREE, 2048,
                                     (struct sockaddr *) &sin, sizeof sin);
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    getsockname(evconnlistener_get_fd(t->lst), (struct sockaddr *) &got, &gl);
    t->port = ntohs(got.sin_port);
    t->ws = ws_server_new(t->base, o, on_message, on_closed, t);
    return t;
}

static void fx_free(struct fx *t)
{
    if (t->ws)
        ws_server_free(t->ws);
    evconnlistener_free(t->lst);
    event_base_free(t->base);
    free(t);
}

static struct ws_stats stats(struct fx *t)
{
    struct ws_stats st;
    memset(&st, 0, sizeof st);
    if (t->ws)
        ws_server_stats(t->ws, &st);
    return st;
}

/* ---- running the loop ------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

typedef int pred_fn(void *arg);

/* Run the loop until pred(arg) (checked between iterations) or ms pass; returns pred. */
static int run_until(struct fx *t, pred_fn *pred, void *arg, int ms)
{
    struct event *tick = event_new(t->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 1000};
    event_add(tick, &tv);
    double end = now_ms() + ms;
    int ok = pred ? pred(arg) : 0;
    while (!ok && now_ms() < end) {
        event_base_loop(t->base, EVLOOP_ONCE);
        ok = pred ? pred(arg) : 0;
    }
    event_free(tick);
    return ok;
}

static void run_for(struct fx *t, int ms)
{
    run_until(t, NULL, NULL, ms);
}

static int all_accepted_pred(void *arg)
{
    struct fx *t = arg;
    return t->accepted >= t->recs[MAXC - 1].idx; /* the target is stashed there */
}

struct closed_wait {
    struct fx *t;
    int n;
};

static int closed_pred(void *arg)
{
    struct closed_wait *w = arg;
    return w->t->closed >= w->n;
}

static int wait_closed(struct fx *t, int n, int ms)
{
    struct closed_wait w = {t, n};
    return run_until(t, closed_pred, &w, ms);
}

/* ---- the client side ---------------------------------------------------------------------- */

struct cl {
    int fd;
    unsigned char *buf;
    size_t len, cap;
    int eof;
    int op; /* the last frame read */
    int fin;
    unsigned char *pl;
    size_t pl_len;
};

/* Connect (blocking; the kernel completes it before accept), then non-blocking. */
static int cl_open(struct fx *t, struct cl *cl, int rcvbuf)
{
    memset(cl, 0, sizeof *cl);
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0)
        setsockopt(cl->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t) t->port);
    if (connect(cl->fd, (struct sockaddr *) &sin, sizeof sin) != 0)
        return -1;
    fcntl(cl->fd, F_SETFL, fcntl(cl->fd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    cl->cap = 512; /* grows: a thousand idle clients should not weigh on the measure */
    cl->buf = malloc(cl->cap);
    return 0;
}

static void cl_close(struct cl *cl)
{
    if (cl->fd >= 0)
        close(cl->fd);
    cl->fd = -1;
    free(cl->buf);
    free(cl->pl);
    cl->buf = cl->pl = NULL;
}

/* Read what the socket has. */
static void cl_pump(struct cl *cl)
{
    for (;;) {
        if (cl->cap - cl->len < 256) {
            cl->cap *= 2;
            cl->buf = realloc(cl->buf, cl->cap);
        }
        ssize_t n = recv(cl->fd, cl->buf + cl->len, cl->cap - cl->len, 0);
        if (n > 0) {
            cl->len += (size_t) n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            cl->eof = 1;
        return;
    }
}

static void cl_consume(struct cl *cl, size_t n)
{
    memmove(cl->buf, cl->buf + n, cl->len - n);
    cl->len -= n;
}

/* A complete server frame at the front of the buffer: parse and consume it. */
static int cl_take_frame(struct cl *cl)
{
    if (cl->len < 2)
        return 0;
    const unsigned char *b = cl->buf;
    if (b[1] & 0x80)
        return -1; /* a server frame must not be masked */
    size_t hl = 2;
    uint64_t n = b[1] & 0x7f;
    if (n == 126) {
        if (cl->len < 4)
            return 0;
        n = (uint64_t) b[2] << 8 | b[3];
        hl = 4;
    } else if (n == 127) {
        if (cl->len < 10)
            return 0;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | b[2 + i];
        hl = 10;
    }
    if (cl->len < hl + n)
        return 0;
    cl->fin = b[0] >> 7;
    cl->op = b[0] & 0xf;
    free(cl->pl);
    cl->pl = malloc(n + 1);
    memcpy(cl->pl, b + hl, n);
    cl->pl[n] = '\0';
    cl->pl_len = n;
    cl_consume(cl, hl + n);
    return 1;
}

struct frame_wait {
    struct cl *cl;
    int got;
};

static int frame_pred(void *arg)
{
    struct frame_wait *w = arg;
    cl_pump(w->cl);
    w->got = cl_take_frame(w->cl);
    return w->got != 0 || (w->cl->eof && w->cl->len == 0);
}

/* The next frame: 1 (in cl->op, cl->pl), 0 on timeout, -1 on EOF or a bad frame. */
static int cl_frame(struct fx *t, struct cl *cl, int ms)
{
    struct frame_wait w = {cl, 0};
    if (!run_until(t, frame_pred, &w, ms))
        return 0;
    return w.got == 1 ? 1 : -1;
}

static int http_head_pred(void *arg)
{
    struct cl *cl = arg;
    cl_pump(cl);
    for (size_t i = 0; i + 4 <= cl->len; i++)
        if (memcmp(cl->buf + i, "\r\n\r\n", 4) == 0)
            return 1;
    return cl->eof;
}

/* Read an HTTP head into out (NUL-terminated) and consume it. */
static int cl_http_head(struct fx *t, struct cl *cl, char *out, size_t cap)
{
    if (!run_until(t, http_head_pred, cl, 2000))
        return -1;
    for (size_t i = 0; i + 4 <= cl->len; i++) {
        if (memcmp(cl->buf + i, "\r\n\r\n", 4) == 0) {
            size_t n = i + 4 < cap ? i + 4 : cap - 1;
            memcpy(out, cl->buf, n);
            out[n] = '\0';
            cl_consume(cl, i + 4);
            return 0;
        }
    }
    return -1;
}

/* A client frame: masked unless told otherwise. Returns its length. */
static size_t mk(unsigned char *o, int fin, int op, int mask, const void *payload, size_t n)
{
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    const unsigned char *p = payload;
    size_t i = 0;
    o[i++] = (unsigned char) ((fin ? 0x80 : 0) | op);
    unsigned char m = mask ? 0x80 : 0;
    if (n < 126) {
        o[i++] = (unsigned char) (m | n);
    } else if (n <= 0xffff) {
        o[i++] = m | 126;
        o[i++] = (unsigned char) (n >> 8);
        o[i++] = (unsigned char) n;
    } else {
        o[i++] = m | 127;
        for (int k = 0; k < 8; k++)
            o[i++] = (unsigned char) ((uint64_t) n >> (56 - 8 * k));
    }
    if (mask) {
        memcpy(o + i, key, 4);
        i += 4;
    }
    for (size_t k = 0; k < n; k++)
        o[i++] = p[k] ^ (mask ? key[k % 4] : 0);
    return i;
}

static int cl_send(struct cl *cl, const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t off = 0;
    double end = now_ms() + 2000;
    while (off < n && now_ms() < end) {
        ssize_t w = send(cl->fd, p + off, n - off, MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t) w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -1;
    }
    return off == n ? 0 : -1;
}

static int cl_send_frame(struct cl *cl, int fin, int op, const void *payload, size_t n)
{
    unsigned char *f = malloc(n + 14);
    size_t fl = mk(f, fin, op, 1, payload, n);
    int rc = cl_send(cl, f, fl);
    free(f);
    return rc;
}

static int cl_send_text(struct cl *cl, const char *s)
{
    return cl_send_frame(cl, 1, 1, s, strlen(s));
}

static int cl_send_close(struct cl *cl, int code, const char *reason)
{
    unsigned char p[128];
    size_t n = 0;
    if (code) {
        p[0] = (unsigned char) (code >> 8);
        p[1] = (unsigned char) code;
        n = 2 + strlen(reason);
        memcpy(p + 2, reason, n - 2);
    }
    return cl_send_frame(cl, 1, 8, p, n);
}

static int close_code(const struct cl *cl)
{
    return cl->pl_len >= 2 ? cl->pl[0] << 8 | cl->pl[1] : 0;
}

/* Open n clients and wait until the server accepted them and each read its 101. */
static int open_clients(struct fx *t, struct cl *cls, int n, int rcvbuf)
{
    int base = t->accepted;
    for (int i = 0; i < n; i++)
        if (cl_open(t, &cls[i], rcvbuf) != 0)
            return -1;
    t->recs[MAXC - 1].idx = base + n;
    if (!run_until(t, all_accepted_pred, t, 5000))
        return -1;
    for (int i = 0; i < n; i++) {
        char head[512];
        if (cl_http_head(t, &cls[i], head, sizeof head) != 0)
            return -1;
        if (strncmp(head, "HTTP/1.1 101 ", 13) != 0)
            return -1;
    }
    return 0;
}

static struct ws_opts test_opts(void)
{
    struct ws_opts o;
    memset(&o, 0, sizeof o);
    o.max_connections = MAXC;
    o.idle_timeout_ms = 10000;
    o.ping_interval_ms = 5000;
    o.close_timeout_ms = 1000;
    o.msg_rate = 1000;
    o.msg_burst = 1000;
    return o;
}

/* ---- tests ---------------------------------------------------------------------------------- */

TEST(handshake_rfc_example)
{
    char acc[29];
    ws_accept_value(KEY, strlen(KEY), acc);
    ASSERT_STR(acc, ACCEPT); /* RFC 6455, 1.3 */
    ASSERT(ws_key_valid(KEY, 24));
    ASSERT(!ws_key_valid(KEY, 23));
    ASSERT(!ws_key_valid("dGhlIHNhbXBsZSBub25jZR==", 24)); /* not 16 bytes exactly */
    ASSERT(!ws_key_valid("dGhlIHNhbXBsZSBub25j*Q==", 24));
    ASSERT(!ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=x", 24));
    ASSERT(!ws_key_valid(NULL, 0));

    /* on the wire: an earlier answer first, then the 101; the frame that came with the
     * request is the first message */
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    unsigned char early[64];
    size_t el = mk(early, 1, 1, 1, "early", 5);
    t->pre_in = (const char *) early;
    t->pre_in_len = el;
    t->pre_out = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct cl cl;
    ASSERT_OK(cl_open(t, &cl, 0));
    t->recs[MAXC - 1].idx = 1;
    ASSERT(run_until(t, all_accepted_pred, t, 2000));
    ASSERT(t->conns[0] != NULL);
    ASSERT_STR(ws_conn_ip(t->conns[0]), "127.0.0.1");
    char head[512];
    ASSERT_OK(cl_http_head(t, &cl, head, sizeof head));
    ASSERT(strncmp(head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(cl.len >= 2 && memcmp(cl.buf, "ok", 2) == 0);
    cl_consume(&cl, 2);
    ASSERT_OK(cl_http_head(t, &cl, head, sizeof head));
    ASSERT(strncmp(head, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    ASSERT(strstr(head, "\r\nUpgrade: websocket\r\n") != NULL);
    ASSERT(strstr(head, "\r\nConnection: Upgrade\r\n") != NULL);
    ASSERT(strstr(head, "\r\nSec-WebSocket-Accept: " ACCEPT "\r\n") != NULL);
    ASSERT_EQ(t->msgs, 1);
    ASSERT_STR(t->last_msg, "early");
    ASSERT_EQ(t->closed, 0);
    cl_close(&cl);
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->last_code, 1006); /* gone without a close frame */
    ASSERT_EQ(stats(t).closes_abnormal, 1);
    fx_free(t);
    ASSERT_EQ(ws_frames_alive(), 0);
}

/* A last frame and the FIN in one segment make one edge: the server must still see the FIN
 * at once, not when the idle timeout (10 s here) comes. */
TEST(a_frame_and_the_fin_together_close_at_once)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    for (int round = 0; round < 20; round++) {
        struct cl cl;
        int before = t->closed, msgs = t->msgs;
        ASSERT_OK(open_clients(t, &cl, 1, 0));
        unsigned char f[64];
        size_t fl = mk(f, 1, 1, 1, "last words", 10);
        ASSERT_OK(cl_send(&cl, f, fl));
        shutdown(cl.fd, SHUT_WR);
        ASSERT(wait_closed(t, before + 1, 2000));
        ASSERT_EQ(t->msgs, msgs + 1);
        ASSERT_STR(t->last_msg, "last words");
        ASSERT_EQ(t->last_code, 1006);
        cl_close(&cl);
    }
    fx_free(t);
    ASSERT_EQ(ws_frames_alive(), 0);
}

TEST(a_frame_split_between_the_request_and_the_socket)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    t->echo = 1;
    unsigned char f[64];
    size_t fl = mk(f, 1, 1, 1, "split in two", 12);
    t->pre_in = (const char *) f;
    t->pre_in_len = 5; /* half the header and a bit: the rest comes from the socket */
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    run_for(t, 20);
    ASSERT_EQ(t->msgs, 0);
    ASSERT_OK(cl_send(&cl, f + 5, fl - 5));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.op, 1);
    ASSERT_STR((char *) cl.pl, "split in two");
    cl_close(&cl);
    fx_free(t);
}

TEST(text_echo)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    t->echo = 1;
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    ASSERT_OK(cl_send_text(&cl, "{\"t\":\"hello\"}"));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.op, 1);
    ASSERT_EQ(cl.fin, 1);
    ASSERT_STR((char *) cl.pl, "{\"t\":\"hello\"}");

    /* three in one segment, and a long one (16-bit and 64-bit lengths) */
    unsigned char buf[3 * 64];
    size_t n = mk(buf, 1, 1, 1, "one", 3);
    n += mk(buf + n, 1, 1, 1, "two", 3);
    n += mk(buf + n, 1, 1, 1, "three", 5);
    ASSERT_OK(cl_send(&cl, buf, n));
    const char *want[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
        ASSERT_STR((char *) cl.pl, want[i]);
    }
    char *big = malloc(60000);
    memset(big, 'a', 59999);
    big[59999] = '\0';
    ASSERT_OK(cl_send_text(&cl, big));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.pl_len, 59999);
    ASSERT(memcmp(cl.pl, big, 59999) == 0);
    free(big);

    struct ws_stats st = stats(t);
    ASSERT_EQ(st.messages_in, 5);
    ASSERT_EQ(st.messages_out, 5);
    ASSERT_EQ(st.conns, 1);
    cl_close(&cl);
    fx_free(t);
}

TEST(ping_gets_pong_with_the_same_payload)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    ASSERT_OK(cl_send_frame(&cl, 1, 9, "abc", 3));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.op, 0xa);
    ASSERT_STR((char *) cl.pl, "abc");
    ASSERT_OK(cl_send_frame(&cl, 1, 0xa, "unsolicited", 11)); /* a pong: ignored */
    ASSERT_OK(cl_send_frame(&cl, 1, 9, "", 0));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.op, 0xa);
    ASSERT_EQ(cl.pl_len, 0);
    ASSERT_EQ(t->msgs, 0);
    cl_close(&cl);
    fx_free(t);
}

TEST(client_initiated_close)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    ASSERT_OK(cl_send_close(&cl, 1000, "bye"));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.op, 8);
    ASSERT_EQ(close_code(&cl), 1000);
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(cl_frame(t, &cl, 2000), -1); /* the server closed the TCP connection */
    ASSERT_EQ(t->recs[0].closed, 1);
    ASSERT_EQ(t->recs[0].code, 1000);
    ASSERT_EQ(stats(t).closes_normal, 1);
    ASSERT_EQ(ws_server_count(t->ws), 0);

    /* a close without a code is 1005 to the callback */
    struct cl c2;
    ASSERT_OK(open_clients(t, &c2, 1, 0));
    ASSERT_OK(cl_send_close(&c2, 0, ""));
    ASSERT_EQ(cl_frame(t, &c2, 2000), 1);
    ASSERT_EQ(c2.op, 8);
    ASSERT(wait_closed(t, 2, 2000));
    ASSERT_EQ(t->recs[1].code, 1005);
    run_for(t, 20);
    ASSERT_EQ(t->recs[0].closed, 1);
    ASSERT_EQ(t->recs[1].closed, 1);
    cl_close(&cl);
    cl_close(&c2);
    fx_free(t);
}

TEST(server_initiated_close)
{
    struct ws_opts o = test_opts();
    o.close_timeout_ms = 150;
    struct fx *t = fx_new(&o);
    struct cl cl[2];
    ASSERT_OK(open_clients(t, cl, 2, 0));

    /* the peer answers */
    ws_close(t->conns[0], 4000, "done");
    ASSERT_EQ(t->closed, 0); /* never from inside the call */
    ASSERT_EQ(ws_send_text(t->conns[0], "after", 5), ERR_CLOSED);
    ws_close(t->conns[0], 4002, "twice"); /* a no-op */
    ASSERT_EQ(cl_frame(t, &cl[0], 2000), 1);
    ASSERT_EQ(cl[0].op, 8);
    ASSERT_EQ(close_code(&cl[0]), 4000);
    ASSERT(memcmp(cl[0].pl + 2, "done", 4) == 0);
    ASSERT_EQ(t->closed, 0);
    ASSERT_OK(cl_send_close(&cl[0], 4000, ""));
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->recs[0].code, 4000);
    ASSERT_EQ(cl_frame(t, &cl[0], 2000), -1);

    /* the peer never answers: closed after close_timeout_ms */
    double t0 = now_ms();
    ws_close(t->conns[1], 1000, NULL);
    ASSERT(wait_closed(t, 2, 2000));
    double took = t->recs[1].closed_at - t0;
    if (took < 140 || took > 1500)
        FAIL_AT("closed after %.0f ms, expected ~150", took);
    ASSERT_EQ(t->recs[1].code, 1000);
    ASSERT_EQ(cl_frame(t, &cl[1], 2000), 1);
    ASSERT_EQ(close_code(&cl[1]), 1000);
    ASSERT_EQ(cl_frame(t, &cl[1], 2000), -1);
    ASSERT_EQ(stats(t).closes_normal, 2);
    cl_close(&cl[0]);
    cl_close(&cl[1]);
    fx_free(t);
}

TEST(close_from_inside_the_message_callback)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    t->close_in_msg = 1;
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    unsigned char buf[64];
    size_t n = mk(buf, 1, 1, 1, "x", 1);
    n += mk(buf + n, 1, 1, 1, "y", 1); /* after our close: dropped */
    ASSERT_OK(cl_send(&cl, buf, n));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(cl.op, 8);
    ASSERT_EQ(close_code(&cl), 4001);
    ASSERT_EQ(t->msgs, 1);
    ASSERT_STR(t->last_msg, "x");
    ASSERT_EQ(t->send_rc_after, ERR_CLOSED);
    ASSERT_OK(cl_send_close(&cl, 4001, ""));
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->recs[0].code, 4001);
    cl_close(&cl);
    fx_free(t);
}

/* One client sends bad bytes and must get close `code`; the callback then says `code`. */
static int expect_close(struct fx *t, struct cl *cl, int code)
{
    if (cl_frame(t, cl, 2000) != 1 || cl->op != 8 || close_code(cl) != code)
        return -1;
    return 0;
}

TEST(unmasked_frame_is_a_protocol_error)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl cl[2];
    ASSERT_OK(open_clients(t, cl, 2, 0));
    unsigned char buf[64];
    size_t n = mk(buf, 1, 1, 0, "hello", 5);
    ASSERT_OK(cl_send(&cl[0], buf, n));
    ASSERT_OK(expect_close(t, &cl[0], 1002));
    ASSERT_EQ(cl_frame(t, &cl[0], 2000), -1); /* shut after the close frame */
    cl_close(&cl[0]);
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->recs[0].code, 1002);
    ASSERT_EQ(t->msgs, 0);

    /* a fragmented ping (refused by wslay's frame layer): 1002 too, not an empty close */
    n = mk(buf, 0, 9, 1, "p", 1);
    ASSERT_OK(cl_send(&cl[1], buf, n));
    ASSERT_OK(expect_close(t, &cl[1], 1002));
    cl_close(&cl[1]);
    ASSERT(wait_closed(t, 2, 2000));
    ASSERT_EQ(t->recs[1].code, 1002);
    ASSERT_EQ(stats(t).closes_protocol, 2);
    fx_free(t);
}

TEST(binary_is_unsupported)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    ASSERT_OK(cl_send_frame(&cl, 1, 2, "\x01\x02\x03", 3));
    ASSERT_OK(expect_close(t, &cl, 1003));
    ASSERT_OK(cl_send_close(&cl, 1003, ""));
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->recs[0].code, 1003);
    ASSERT_EQ(t->msgs, 0);
    ASSERT_EQ(stats(t).closes_unsupported, 1);
    cl_close(&cl);
    fx_free(t);
}

TEST(invalid_utf8_closes_1007_and_valid_multibyte_passes)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    t->echo = 1;
    static const char *bad[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* a UTF-16 surrogate */
        "ok \xe2\x82",      /* truncated */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xff",             /* never valid */
    };
    enum { NBAD = sizeof bad / sizeof bad[0] };
    struct cl cl[NBAD + 2];
    ASSERT_OK(open_clients(t, cl, NBAD + 2, 0));
    for (int i = 0; i < NBAD; i++) {
        ASSERT_OK(cl_send_frame(&cl[i], 1, 1, bad[i], strlen(bad[i])));
        ASSERT_OK(expect_close(t, &cl[i], 1007));
        cl_close(&cl[i]);
    }
    /* invalid across two fragments */
    ASSERT_OK(cl_send_frame(&cl[NBAD], 0, 1, "ab\xe2", 3));
    ASSERT_OK(cl_send_frame(&cl[NBAD], 1, 0, "(", 1));
    ASSERT_OK(expect_close(t, &cl[NBAD], 1007));
    cl_close(&cl[NBAD]);
    ASSERT(wait_closed(t, NBAD + 1, 2000));
    for (int i = 0; i <= NBAD; i++)
        ASSERT_EQ(t->recs[i].code, 1007);
    ASSERT_EQ(t->msgs, 0);
    ASSERT_EQ(stats(t).closes_utf8, NBAD + 1);

    const char *good = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e \xef\xbf\xbf"; /* é € 𝄞 */
    ASSERT_OK(cl_send_text(&cl[NBAD + 1], good));
    ASSERT_EQ(cl_frame(t, &cl[NBAD + 1], 2000), 1);
    ASSERT_STR((char *) cl[NBAD + 1].pl, good);
    ASSERT_STR(t->last_msg, good);
    cl_close(&cl[NBAD + 1]);
    fx_free(t);
}

TEST(too_big_closes_1009_before_the_payload)
{
    struct ws_opts o = test_opts();
    o.max_message_bytes = 65536;
    struct fx *t = fx_new(&o);
    struct cl cl[3];
    ASSERT_OK(open_clients(t, cl, 3, 0));
    uint64_t in0 = stats(t).bytes_in;

    /* a header that announces 10 MiB, and the first 4 KiB of it */
    size_t big = 10u << 20;
    unsigned char *f = malloc(14 + 4096);
    f[0] = 0x81;
    f[1] = 0x80 | 127;
    for (int k = 0; k < 8; k++)
        f[2 + k] = (unsigned char) ((uint64_t) big >> (56 - 8 * k));
    memcpy(f + 10, "\x01\x02\x03\x04", 4);
    memset(f + 14, 'a', 4096);
    double t0 = now_ms();
    ASSERT_OK(cl_send(&cl[0], f, 14 + 4096));
    free(f);
    ASSERT_OK(expect_close(t, &cl[0], 1009));
    if (now_ms() - t0 > 500)
        FAIL_AT("1009 took %.0f ms", now_ms() - t0);
    ASSERT(stats(t).bytes_in - in0 < 64 * 1024);
    cl_close(&cl[0]);
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->recs[0].code, 1009);

    /* fragments that add up to too much */
    char *part = malloc(30001);
    memset(part, 'b', 30000);
    part[30000] = '\0';
    ASSERT_OK(cl_send_frame(&cl[1], 0, 1, part, 30000));
    ASSERT_OK(cl_send_frame(&cl[1], 0, 0, part, 30000));
    ASSERT_OK(cl_send_frame(&cl[1], 1, 0, part, 30000));
    ASSERT_OK(expect_close(t, &cl[1], 1009));
    cl_close(&cl[1]);
    ASSERT(wait_closed(t, 2, 2000));
    ASSERT_EQ(t->recs[1].code, 1009);

    /* exactly the limit passes */
    char *max = malloc(65537);
    memset(max, 'c', 65536);
    max[65536] = '\0';
    ASSERT_OK(cl_send_frame(&cl[2], 1, 1, max, 65536));
    run_for(t, 50);
    ASSERT_EQ(t->msgs, 1);
    ASSERT_EQ(t->last_len, sizeof t->last_msg - 1);
    free(part);
    free(max);
    ASSERT_EQ(stats(t).closes_too_big, 2);
    cl_close(&cl[2]);
    fx_free(t);
}

TEST(fragmented_message_is_reassembled)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    t->echo = 1;
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    unsigned char buf[128];
    size_t n = mk(buf, 0, 1, 1, "hel", 3);
    n += mk(buf + n, 1, 9, 1, "p", 1); /* a ping between fragments */
    n += mk(buf + n, 0, 0, 1, "lo ", 3);
    ASSERT_OK(cl_send(&cl, buf, n));
    run_for(t, 30);
    ASSERT_EQ(t->msgs, 0);
    ASSERT_OK(cl_send_frame(&cl, 1, 0, "world", 5));
    int pong = 0, text = 0;
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
        if (cl.op == 0xa) {
            pong++;
            ASSERT_STR((char *) cl.pl, "p");
        } else {
            text++;
            ASSERT_EQ(cl.op, 1);
            ASSERT_STR((char *) cl.pl, "hello world");
        }
    }
    ASSERT_EQ(pong, 1);
    ASSERT_EQ(text, 1);
    ASSERT_EQ(t->msgs, 1);
    cl_close(&cl);
    fx_free(t);
}

TEST(flood_gets_rate_limited_then_closed)
{
    struct ws_opts o = test_opts();
    o.msg_rate = 10;
    o.msg_burst = 20;
    struct fx *t = fx_new(&o);
    t->echo = 1;
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    enum { N = 1000 };
    unsigned char *buf = malloc(N * 16);
    size_t n = 0;
    for (int i = 0; i < N; i++)
        n += mk(buf + n, 1, 1, 1, "{\"t\":\"x\"}", 9);
    ASSERT_OK(cl_send(&cl, buf, n));
    free(buf);
    int echoes = 0, errors = 0, closes = 0;
    while (!closes) {
        if (cl_frame(t, &cl, 2000) != 1)
            FAIL_AT("no close after %d echoes and %d errors", echoes, errors);
        if (cl.op == 8) {
            closes++;
            ASSERT_EQ(close_code(&cl), 1008);
        } else if (strstr((char *) cl.pl, "rate_limited")) {
            ASSERT_STR(
                (char *) cl.pl,
                "{\"t\":\"error\",\"code\":\"rate_limited\",\"message\":\"too many messages\"}");
            errors++;
        } else {
            echoes++;
        }
    }
    ASSERT_EQ(echoes, 20);
    ASSERT_EQ(errors, 3);
    ASSERT_EQ(t->msgs, 20);
    ASSERT_OK(cl_send_close(&cl, 1008, ""));
    ASSERT(wait_closed(t, 1, 2000));
    ASSERT_EQ(t->recs[0].code, 1008);
    struct ws_stats st = stats(t);
    ASSERT_EQ(st.closes_flood, 1);
    ASSERT_EQ(st.rate_limited, 3);
    cl_close(&cl);
    fx_free(t);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

TEST(a_client_that_never_reads_is_dropped_at_the_cap)
{
    struct ws_opts o = test_opts();
    o.max_queued_bytes = 256 * 1024;
    struct fx *t = fx_new(&o);
    struct cl cl[2];
    ASSERT_OK(open_clients(t, cl, 1, 4096));
    ASSERT_OK(open_clients(t, cl + 1, 1, 0)); /* a good client beside it */
    char msg[1000];
    memset(msg, 'm', sizeof msg);
    char big[2000];
    memset(big, 'f', sizeof big);
    struct ws_frame *shared = ws_frame_text(big, sizeof big);
    long rss0 = rss_kib();
    size_t max_seen = 0;
    int sent = 0, refused = 0;
    while (t->conns[0] && sent < 100000) {
        for (int i = 0; i < 64 && t->conns[0]; i++) {
            int rc = (i & 1) ? ws_send_frame(t->conns[0], shared)
                             : ws_send_text(t->conns[0], msg, sizeof msg);
            if (rc != 0) {
                ASSERT_EQ(rc, ERR_CLOSED);
                refused++;
                break;
            }
            sent++;
            size_t q = ws_conn_queued(t->conns[0]);
            if (q > max_seen)
                max_seen = q;
        }
        event_base_loop(t->base, EVLOOP_NONBLOCK);
    }
    ASSERT(t->conns[0] == NULL);
    ASSERT_EQ(refused, 1);
    ASSERT(max_seen <= (size_t) o.max_queued_bytes);
    ASSERT(max_seen > (size_t) o.max_queued_bytes - 4000);
    ASSERT_EQ(t->recs[0].code, 1008);
    ASSERT_EQ(stats(t).closes_slow, 1);
    long grew = rss_kib() - rss0;
    printf("# slow client: %d messages queued before the drop, RSS grew %ld KiB\n", sent, grew);
    ASSERT(grew < 16 * 1024);
    /* the good client was not affected */
    ws_send_text(t->conns[1], "still here", 10);
    ASSERT_EQ(cl_frame(t, &cl[1], 2000), 1);
    ASSERT_STR((char *) cl[1].pl, "still here");
    ws_frame_unref(shared);
    run_for(t, 10);
    ASSERT_EQ(ws_frames_alive(), 0); /* the dropped buffer gave its references back */
    cl_close(&cl[0]);
    cl_close(&cl[1]);
    fx_free(t);
}

static int raise_fd_limit(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < (rlim_t) want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t) want ? rl.rlim_max : (rlim_t) want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return (int) rl.rlim_cur;
}

static int all_written_pred(void *arg)
{
    struct fx *t = arg;
    for (int i = 0; i < t->accepted; i++)
        if (t->conns[i] && ws_conn_queued(t->conns[i]) > 0)
            return 0;
    return 1;
}

TEST(one_shared_frame_to_a_thousand_connections)
{
    int limit = raise_fd_limit(2 * 1000 + 64);
    int n = limit >= 2 * 1000 + 64 ? 1000 : (limit - 64) / 2;
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl *cls = calloc((size_t) n, sizeof *cls);
    ASSERT_OK(open_clients(t, cls, n, 0));
    ASSERT_EQ(ws_server_count(t->ws), n);

    char text[2048];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char) ('a' + i % 26);
    struct ws_frame *f = ws_frame_text(text, sizeof text);
    ASSERT_EQ(ws_frames_alive(), 1);
    for (int i = 0; i < n; i++)
        ASSERT_OK(ws_send_frame(t->conns[i], f));
    ws_frame_unref(f); /* the senders' reference: the buffers hold theirs */
    ASSERT_EQ(ws_frames_alive(), 1);
    ASSERT(run_until(t, all_written_pred, t, 5000));
    ASSERT_EQ(ws_frames_alive(), 0); /* freed once, after the last receiver wrote it */
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(cl_frame(t, &cls[i], 2000), 1);
        ASSERT_EQ(cls[i].pl_len, sizeof text);
        ASSERT(memcmp(cls[i].pl, text, sizeof text) == 0);
    }

    /* a small frame is copied: the sender's unref frees it at once */
    struct ws_frame *small = ws_frame_text("{\"t\":\"moved\"}", 13);
    for (int i = 0; i < n; i++)
        ASSERT_OK(ws_send_frame(t->conns[i], small));
    ws_frame_unref(small);
    ASSERT_EQ(ws_frames_alive(), 0);
    for (int i = 0; i < n; i++) {
        ASSERT_EQ(cl_frame(t, &cls[i], 2000), 1);
        ASSERT_STR((char *) cls[i].pl, "{\"t\":\"moved\"}");
    }
    struct ws_stats st = stats(t);
    ASSERT_EQ(st.frames_shared, 2 * (uint64_t) n);
    for (int i = 0; i < n; i++)
        cl_close(&cls[i]);
    free(cls);
    fx_free(t);
    ASSERT_EQ(ws_frames_alive(), 0);
}

TEST(twenty_sends_in_one_turn_are_one_write)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    run_for(t, 10);
    uint64_t w0 = stats(t).writes;
    for (int i = 0; i < 20; i++) {
        char m[32];
        int len = snprintf(m, sizeof m, "{\"seq\":%d}", i);
        ASSERT_OK(ws_send_text(t->conns[0], m, (size_t) len));
    }
    event_base_loop(t->base, EVLOOP_NONBLOCK); /* one turn */
    ASSERT_EQ(stats(t).writes - w0, 1);
    for (int i = 0; i < 20; i++) {
        char m[32];
        snprintf(m, sizeof m, "{\"seq\":%d}", i);
        ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
        ASSERT_STR((char *) cl.pl, m);
    }

    /* the same from inside the message callback (what a handler does) */
    t->burst_in_msg = 20;
    w0 = stats(t).writes;
    ASSERT_OK(cl_send_text(&cl, "go"));
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_EQ(stats(t).writes - w0, 1);
    cl_close(&cl);
    fx_free(t);
}

TEST(flush_interval_gathers_several_turns_into_one_write)
{
    struct ws_opts o = test_opts();
    o.flush_interval_ms = 40;
    struct fx *t = fx_new(&o);
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    run_for(t, 60);
    uint64_t w0 = stats(t).writes;
    /* after a quiet spell: written at the end of the turn */
    double t0 = now_ms();
    ASSERT_OK(ws_send_text(t->conns[0], "zero", 4));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_STR((char *) cl.pl, "zero");
    if (now_ms() - t0 > 30)
        FAIL_AT("the first message after a quiet spell waited %.0f ms", now_ms() - t0);
    ASSERT_EQ(stats(t).writes - w0, 1);
    /* within the interval after that write: gathered until the interval's end, one write */
    ASSERT_OK(ws_send_text(t->conns[0], "one", 3));
    run_for(t, 10); /* several loop turns */
    ASSERT_OK(ws_send_text(t->conns[0], "two", 3));
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    double took = now_ms() - t0;
    ASSERT_STR((char *) cl.pl, "one");
    ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
    ASSERT_STR((char *) cl.pl, "two");
    ASSERT_EQ(stats(t).writes - w0, 2);
    if (took < 35 || took > 500)
        FAIL_AT("written %.0f ms after the first, expected ~40", took);
    cl_close(&cl);
    fx_free(t);
}

TEST(garbage_never_crashes_and_always_closes_once)
{
    enum { N = 200 };
    struct ws_opts o = test_opts();
    o.max_message_bytes = 4096;
    struct fx *t = fx_new(&o);
    t->echo = 1;
    static struct cl cls[N];
    ASSERT_OK(open_clients(t, cls, N, 0));
    unsigned seed = 12345;
    static unsigned char buf[16384];
    for (int i = 0; i < N; i++) {
        size_t n = 0;
        int frames = 1 + (int) (rand_r(&seed) % 6);
        for (int k = 0; k < frames && n < sizeof buf - 6100; k++) {
            unsigned char payload[6000];
            size_t pl = rand_r(&seed) % (k == 0 ? 6000 : 300);
            int noisy = rand_r(&seed) % 3 == 0; /* else clean ASCII */
            for (size_t b = 0; b < pl; b++)
                payload[b] =
                    (unsigned char) (noisy && rand_r(&seed) % 3 == 0 ? (size_t) rand_r(&seed)
                                                                     : 'a' + b % 26);
            int op = (int[]){0, 1, 1, 1, 2, 3, 8, 9, 10, 11}[rand_r(&seed) % 10];
            size_t fl = mk(buf + n, rand_r(&seed) % 4 != 0, op, rand_r(&seed) % 8 != 0, payload,
                           op >= 8 && pl > 125 && rand_r(&seed) % 2 ? (size_t) 125 : pl);
            if (rand_r(&seed) % 3 == 0) /* flip a bit somewhere in the frame */
                buf[n + rand_r(&seed) % fl] ^= (unsigned char) (1u << (rand_r(&seed) % 8));
            n += fl;
        }
        if (i % 10 == 0) /* or just noise */
            for (n = 0; n < 500; n++)
                buf[n] = (unsigned char) rand_r(&seed);
        cl_send(&cls[i], buf, n);
    }
    run_for(t, 100);
    for (int i = 0; i < N; i++)
        cl_close(&cls[i]); /* whatever state each is in, the peer now goes away */
    ASSERT(wait_closed(t, N, 5000));
    run_for(t, 20);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(t->recs[i].closed, 1);
    ASSERT_EQ(ws_server_count(t->ws), 0);
    struct ws_stats st = stats(t);
    printf("# garbage: %llu protocol, %llu utf8, %llu too big, %llu unsupported, %llu normal, "
           "%llu abnormal; %llu messages passed\n",
           (unsigned long long) st.closes_protocol, (unsigned long long) st.closes_utf8,
           (unsigned long long) st.closes_too_big, (unsigned long long) st.closes_unsupported,
           (unsigned long long) st.closes_normal, (unsigned long long) st.closes_abnormal,
           (unsigned long long) st.messages_in);
    fx_free(t);
}

struct pong_client {
    struct fx *t;
    struct cl *cl;
    int pings;
};

static int answer_pings_pred(void *arg)
{
    struct pong_client *p = arg;
    cl_pump(p->cl);
    while (cl_take_frame(p->cl) == 1) {
        if (p->cl->op == 9) {
            p->pings++;
            cl_send_frame(p->cl, 1, 0xa, p->cl->pl, p->cl->pl_len);
        }
    }
    return 0;
}

TEST(idle_timeout_and_pings)
{
    struct ws_opts o = test_opts();
    o.idle_timeout_ms = 300;
    o.ping_interval_ms = 100;
    o.close_timeout_ms = 100;
    struct fx *t = fx_new(&o);
    struct cl cl[2];
    double t0 = now_ms();
    ASSERT_OK(open_clients(t, cl, 2, 0));
    /* cl[0] is silent; cl[1] answers every ping */
    struct pong_client p = {t, &cl[1], 0};
    run_until(t, answer_pings_pred, &p, 1600);
    ASSERT_EQ(t->recs[0].closed, 1);
    ASSERT_EQ(t->recs[0].code, 1001);
    double took = t->recs[0].closed_at - t0;
    if (took < 300 || took > 1500)
        FAIL_AT("idle close after %.0f ms, expected 400-500", took);
    ASSERT(t->conns[1] != NULL); /* alive: it answered */
    ASSERT(p.pings >= 3);
    struct ws_stats st = stats(t);
    ASSERT_EQ(st.closes_idle, 1);
    ASSERT_EQ(st.ctx_live, 0); /* an idle client holds no wslay context */
    /* the silent one got pings, then the close */
    int pings = 0, close = 0;
    cl_pump(&cl[0]);
    while (cl_take_frame(&cl[0]) == 1) {
        pings += cl[0].op == 9;
        close += cl[0].op == 8 && close_code(&cl[0]) == 1001;
    }
    ASSERT(pings >= 1);
    ASSERT_EQ(close, 1);
    cl_close(&cl[0]);
    cl_close(&cl[1]);
    fx_free(t);
}

TEST(a_quiet_tick_in_the_middle_of_a_message_keeps_its_state)
{
    struct ws_opts o = test_opts();
    o.idle_timeout_ms = 2000;
    o.ping_interval_ms = 50;
    struct fx *t = fx_new(&o);
    t->echo = 1;
    struct cl cl;
    ASSERT_OK(open_clients(t, &cl, 1, 0));
    ASSERT_OK(cl_send_frame(&cl, 0, 1, "hello ", 6));
    unsigned char f[32];
    size_t n = mk(f, 1, 0, 1, "world", 5);
    ASSERT_OK(cl_send(&cl, f, 3)); /* and half a header */
    run_for(t, 250);               /* pings go out; the client says nothing */
    ASSERT_OK(cl_send(&cl, f + 3, n - 3));
    int got = 0;
    for (int i = 0; i < 10 && !got; i++) {
        ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
        if (cl.op == 1) {
            ASSERT_STR((char *) cl.pl, "hello world");
            got = 1;
        }
    }
    ASSERT(got);
    run_for(t, 250);
    ASSERT_EQ(stats(t).ctx_live, 0); /* and once quiet, the context goes */
    ASSERT_OK(cl_send_text(&cl, "again"));
    for (got = 0; !got;) {
        ASSERT_EQ(cl_frame(t, &cl, 2000), 1);
        if (cl.op == 1) {
            ASSERT_STR((char *) cl.pl, "again");
            got = 1;
        }
    }
    cl_close(&cl);
    fx_free(t);
}

TEST(server_free_closes_every_connection_once)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    struct cl cl[5];
    ASSERT_OK(open_clients(t, cl, 5, 0));
    ws_close(t->conns[2], 1000, "closing already");
    struct ws_frame *f = ws_frame_text("queued", 6);
    ws_send_frame(t->conns[3], f);
    ws_frame_unref(f);
    struct ws_server *s = t->ws;
    t->ws = NULL;
    ws_server_free(s);
    ASSERT_EQ(t->closed, 5);
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(t->recs[i].closed, 1);
        ASSERT_EQ(t->recs[i].code, 1001);
    }
    ASSERT_EQ(ws_frames_alive(), 0);
    /* a client hears the close (best effort), then EOF */
    ASSERT_EQ(cl_frame(t, &cl[0], 2000), 1);
    ASSERT_EQ(cl[0].op, 8);
    ASSERT_EQ(close_code(&cl[0]), 1001);
    ASSERT_EQ(cl_frame(t, &cl[0], 2000), -1);
    for (int i = 0; i < 5; i++)
        cl_close(&cl[i]);
    fx_free(t);
}

TEST(server_free_from_inside_callbacks)
{
    struct ws_opts o = test_opts();
    struct fx *t = fx_new(&o);
    t->free_in_closed = 1;
    struct cl cl[5];
    ASSERT_OK(open_clients(t, cl, 5, 0));
    ASSERT_OK(cl_send_close(&cl[1], 1000, "bye"));
    ASSERT(wait_closed(t, 5, 2000));
    run_for(t, 20);
    ASSERT_EQ(t->closed, 5);
    ASSERT(t->ws == NULL);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(t->recs[i].closed, 1);
    ASSERT_EQ(t->recs[1].code, 1000);
    ASSERT_EQ(t->recs[0].code, 1001);
    for (int i = 0; i < 5; i++)
        cl_close(&cl[i]);
    fx_free(t);

    /* from inside the message callback, with more frames behind it in the same read */
    t = fx_new(&o);
    t->free_in_msg = 1;
    ASSERT_OK(open_clients(t, cl, 3, 0));
    unsigned char buf[64];
    size_t n = mk(buf, 1, 1, 1, "a", 1);
    n += mk(buf + n, 1, 1, 1, "b", 1);
    ASSERT_OK(cl_send(&cl[0], buf, n));
    ASSERT(wait_closed(t, 3, 2000));
    run_for(t, 20);
    ASSERT_EQ(t->msgs, 1);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(t->recs[i].closed, 1);
        ASSERT_EQ(t->recs[i].code, 1001);
        cl_close(&cl[i]);
    }
    fx_free(t);
}

TEST(max_connections_and_draining_refuse)
{
    struct ws_opts o = test_opts();
    o.max_connections = 2;
    struct fx *t = fx_new(&o);
    struct cl cl[3];
    ASSERT_OK(open_clients(t, cl, 2, 0));
    ASSERT_OK(cl_open(t, &cl[2], 0));
    t->recs[MAXC - 1].idx = 3;
    ASSERT(run_until(t, all_accepted_pred, t, 2000));
    ASSERT(t->conns[2] == NULL);
    ASSERT_EQ(cl_frame(t, &cl[2], 2000), -1); /* closed at once */
    ASSERT_EQ(stats(t).refused, 1);
    ASSERT_EQ(ws_server_count(t->ws), 2);

    ws_server_close_all(t->ws, 1001, "shutting down");
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(expect_close(t, &cl[i], 1001));
        ASSERT_OK(cl_send_close(&cl[i], 1001, ""));
    }
    ASSERT(wait_closed(t, 2, 2000));
    ASSERT_EQ(ws_server_count(t->ws), 0);
    struct cl late;
    ASSERT_OK(cl_open(t, &late, 0));
    t->recs[MAXC - 1].idx = 4;
    ASSERT(run_until(t, all_accepted_pred, t, 2000));
    ASSERT(t->conns[3] == NULL); /* draining */
    for (int i = 0; i < 3; i++)
        cl_close(&cl[i]);
    cl_close(&late);
    fx_free(t);
}

struct msgs_wait {
    struct fx *t;
    int n;
};

static int msgs_pred(void *arg)
{
    struct msgs_wait *w = arg;
    return w->t->msgs >= w->n;
}

TEST(idle_connections_are_small)
{
    int n = MAXC - 1;
    int limit = raise_fd_limit(2 * n + 64);
    if (limit < 2 * n + 64)
        n = (limit - 64) / 2;
    struct ws_opts o = test_opts();
    o.ping_interval_ms = 100;
    o.idle_timeout_ms = 5000;
    struct fx *t = fx_new(&o);
    struct cl *cls = calloc((size_t) n, sizeof *cls);
    /* warm up the allocator and libevent's tables with a first batch, then measure */
    ASSERT_OK(open_clients(t, cls, 50, 0));
    run_for(t, 20);
    long rss0 = rss_kib();
    ASSERT_OK(open_clients(t, cls + 50, n - 50, 0));
    run_for(t, 20);
    ASSERT_EQ(stats(t).ctx_live, 0); /* connected, nothing said: no wslay context */
    long connected = (rss_kib() - rss0) * 1024 / (n - 50);

    /* all of them talk at once (a context each), then go quiet */
    for (int i = 0; i < n; i++)
        ASSERT_OK(cl_send_text(&cls[i], "{\"t\":\"hi\"}"));
    struct msgs_wait w = {t, n};
    ASSERT(run_until(t, msgs_pred, &w, 5000));
    ASSERT(stats(t).ctx_live > 0);
    run_for(t, 350); /* quiet ticks */
    ASSERT_EQ(stats(t).ctx_live, 0);
    long after = (rss_kib() - rss0) * 1024 / (n - 50);
    printf("# RSS per idle connection: %ld bytes connected, %ld after all talked at once "
           "(%d connections; the test's client side included)\n",
           connected, after, n);
#ifndef __SANITIZE_ADDRESS__ /* ASan's redzones and quarantine make RSS meaningless */
    ASSERT(connected <= 4 * 1024);
    ASSERT(after <= 16 * 1024);
#endif
    for (int i = 0; i < n; i++)
        cl_close(&cls[i]);
    free(cls);
    fx_free(t);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_init("test", LOG_WARN);
    RUN(idle_connections_are_small); /* first: on a fresh heap, so that RSS means something */
    RUN(handshake_rfc_example);
    RUN(a_frame_split_between_the_request_and_the_socket);
    RUN(text_echo);
    RUN(ping_gets_pong_with_the_same_payload);
    RUN(client_initiated_close);
    RUN(a_frame_and_the_fin_together_close_at_once);
    RUN(server_initiated_close);
    RUN(close_from_inside_the_message_callback);
    RUN(unmasked_frame_is_a_protocol_error);
    RUN(binary_is_unsupported);
    RUN(invalid_utf8_closes_1007_and_valid_multibyte_passes);
    RUN(too_big_closes_1009_before_the_payload);
    RUN(fragmented_message_is_reassembled);
    RUN(flood_gets_rate_limited_then_closed);
    RUN(a_client_that_never_reads_is_dropped_at_the_cap);
    RUN(one_shared_frame_to_a_thousand_connections);
    RUN(twenty_sends_in_one_turn_are_one_write);
    RUN(flush_interval_gathers_several_turns_into_one_write);
    RUN(idle_timeout_and_pings);
    RUN(a_quiet_tick_in_the_middle_of_a_message_keeps_its_state);
    RUN(garbage_never_crashes_and_always_closes_once);
    RUN(server_free_closes_every_connection_once);
    RUN(server_free_from_inside_callbacks);
    RUN(max_connections_and_draining_refuse);
    log_deinit();
    return test_summary();
}
