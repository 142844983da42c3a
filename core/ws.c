/* ws.c -- WebSocket connections: read and parse with wslay, write coalesced, close cleanly.
 *
 * Ownership: the server owns its connections; a connection owns its socket, its output
 * evbuffer (which holds references to shared frames), its wslay context (only while it is
 * not idle) and the bytes that came with the upgrade request. A frame is owned by its
 * references: the caller's, and one per output buffer that holds it.
 *
 * Reading: one event per connection, edge-triggered for read and write, added once. wslay's
 * recv callback reads the socket into a scratch buffer shared by the server, at most
 * READ_BUDGET of it per connection per loop turn (the rest waits for the next turn, so one
 * client cannot hold the loop). wslay checks masking, opcodes, fragmentation, UTF-8 (checked
 * in 1.1.1 too, and tested here), lengths against max_message_bytes, and queues pongs and
 * the echo of a close; its send callback appends them to the output buffer.
 *
 * Writing: data frames are encoded here into the same output buffer. A connection written to
 * goes on the server's dirty list once, and one event, made active, flushes the whole list at
 * the end of the loop turn: one writev per connection per turn. With flush_interval_ms,
 * flushes are at least that far apart: output that comes within the interval after a flush
 * waits for a timer set to the interval's end, so that what a client is owed over a few turns
 * goes in one write; output after a quiet spell, or when a turn outlasted the interval, is
 * flushed at the end of the turn. Output that does not fit in the socket waits for its
 * EV_WRITE edge.
 *
 * Closing: our close frame (ws_close, idle, flood, 1003) waits close_timeout_ms for the peer's;
 * a close from the peer is echoed; then the socket is closed (the server closes first, as RFC
 * 6455 asks). After a protocol error wslay has stopped reading: the close frame is written,
 * the socket shut for writing, and what the peer still sends is read and dropped until it
 * closes or close_timeout_ms ("lingering", so that the close frame is not lost in a reset).
 *
 * Re-entrancy (STYLE 2.3): every entry point from libevent, and ws_server_free, raises
 * s->depth; a finished connection only moves to the graveyard, and the graveyard (and the
 * server itself, once ws_server_free was called) is freed when depth falls back to 0. */
#include "ws.h"
#include "ipcap.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "mem.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <wslay/wslay.h>

#define SCRATCH          65536 /* one recv() */
#define READ_BUDGET      4     /* recv()s of SCRATCH per connection per loop turn */
#define FRAME_REF_MIN    1024  /* shared frames this big or bigger are referenced, not copied */
#define FLOOD_WINDOW     5000  /* ms: the third rate-limited message within it closes */
#define FLOOD_STRIKES    3
#define CLOSE_REASON_MAX 123

#define D_MAX_CONNECTIONS 10000
#define D_MAX_MESSAGE     65536
#define D_MAX_QUEUED      (1 << 20)
#define D_IDLE_MS         60000
#define D_PING_MS         20000
#define D_CLOSE_MS        5000
#define D_MSG_RATE        20.0
#define D_MSG_BURST       40

static const char GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
static const char RATE_LIMITED[] =
    "{\"t\":\"error\",\"code\":\"rate_limited\",\"message\":\"too many messages\"}";

enum reason {
    R_NONE,
    R_NORMAL,
    R_PROTOCOL,
    R_UNSUPPORTED,
    R_UTF8,
    R_TOO_BIG,
    R_FLOOD,
    R_SLOW,
    R_IDLE,
    R_ABNORMAL,
    R_SHUTDOWN,
};

struct ws_frame {
    int refs;
    size_t len;
    unsigned char data[]; /* header + payload */
};

static long frames_alive;

struct ws_conn {
    struct ws_server *srv;
    struct ws_conn *prev, *next; /* open connections */
    struct ws_conn *dirty_next;  /* the dirty list: output to flush this turn */
    struct ws_conn *more_next;   /* the backlog: input left for the next turn */
    struct ws_conn *grave_next;  /* finished, to be freed */
    struct event *ev;            /* read | write, edge-triggered, persistent */
    struct event *timer;         /* ping / idle / close, on common timeouts */
    struct evbuffer *out;
    wslay_event_context_ptr ctx; /* NULL while idle */
    char *pre;                   /* bytes that came after the upgrade request */
    size_t pre_len, pre_off;
    uint64_t fed;    /* bytes given to wslay since ctx was made */
    uint64_t framed; /* sizes of the frames wslay has started since then */
    void *ud;
    double tokens;
    uint64_t tokens_at; /* ms */
    uint64_t strike_at; /* ms: first strike of the current window */
    int fd;
    int rx_budget;
    uint16_t cb_code; /* what the closed callback will say */
    uint8_t reason;   /* enum reason */
    uint8_t strikes;
    unsigned finished : 1;   /* the closed callback has fired (or is firing) */
    unsigned dirty : 1;      /* on the dirty list */
    unsigned in_more : 1;    /* on the backlog */
    unsigned wblocked : 1;   /* the socket is full: wait for EV_WRITE */
    unsigned close_sent : 1; /* our close frame is queued: nothing may follow it */
    unsigned close_rcvd : 1; /* the peer's close frame arrived */
    unsigned failing : 1;    /* wslay stopped reading after an error: linger after the flush */
    unsigned lingering : 1;  /* shut for writing; reading and dropping until EOF */
    unsigned slow : 1;       /* over max_queued_bytes: drop at the next flush */
    unsigned in_frag : 1;    /* a fragmented message is being received */
    unsigned rx_seen : 1;    /* something arrived since the last tick */
    unsigned pinged : 1;     /* a ping is out, and nothing arrived since */
    unsigned msg_seen : 1;   /* a data message arrived since the last tick */
    unsigned rx_drained : 1; /* this turn: the socket said EAGAIN or gave a short read */
    unsigned rx_hup : 1;     /* EV_CLOSED seen: the peer's FIN waits behind the data */
    unsigned rx_eof : 1;     /* the peer shut its side */
    unsigned rx_err : 1;     /* the socket failed */
    unsigned rx_more : 1;    /* this turn's budget is spent with input maybe left */
    char ip[46];
};

struct ws_server {
    struct event_base *base;
    struct ws_opts o;
    ws_message_cb *on_message;
    ws_closed_cb *on_closed;
    void *ud;
    struct ws_conn *conns; /* open */
    struct ws_conn *dirty, *dirty_tail;
    struct ws_conn *more;
    struct ws_conn *grave;
    struct event *flush_ev; /* made active (end of the turn), or a timer (flush_interval) */
    struct timeval flush_tv;
    struct timeval last_flush; /* when the dirty list was last flushed (loop's cached time) */
    struct event *more_ev;
    const struct timeval *t_tick, *t_rest, *t_close;
    unsigned char *scratch;
    size_t sc_len, sc_off;
    int depth;
    unsigned flush_scheduled : 1;
    unsigned more_scheduled : 1;
    unsigned draining : 1;
    unsigned freeing : 1;
    int pinging; /* ping_interval < idle_timeout */
    struct ws_stats st;
};

static void conn_flush(struct ws_conn *c);
static void conn_read(struct ws_conn *c);
static void conn_check_done(struct ws_conn *c);
static void finish(struct ws_conn *c, int code, enum reason why);
static void server_destroy(struct ws_server *s);

/* ---- entering and leaving: frees wait until nothing of ours is on the stack ---------------- */

static void conn_free_mem(struct ws_conn *c)
{
    if (c->ctx) {
        wslay_event_context_free(c->ctx);
        c->srv->st.ctx_live--;
    }
    evbuffer_free(c->out); /* unrefs the frames it still holds */
    event_free(c->ev);
    event_free(c->timer);
    free(c->pre);
    free(c);
}

static void enter(struct ws_server *s)
{
    s->depth++;
}

/* s may be freed on return. */
static void leave(struct ws_server *s)
{
    if (--s->depth > 0)
        return;
    if (s->freeing) {
        server_destroy(s);
        return;
    }
    struct ws_conn **pp = &s->grave;
    while (*pp) {
        struct ws_conn *c = *pp;
        if (c->dirty || c->in_more) { /* still on a list: freed after it is popped */
            pp = &c->grave_next;
            continue;
        }
        *pp = c->grave_next;
        conn_free_mem(c);
    }
}

/* ---- time ------------------------------------------------------------------------------- */

static uint64_t now_ms(struct ws_server *s)
{
    struct timeval tv;
    event_base_gettimeofday_cached(s->base, &tv);
    return (uint64_t) tv.tv_sec * 1000 + (uint64_t) tv.tv_usec / 1000;
}

static const struct timeval *common_timeout(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return event_base_init_common_timeout(base, &tv);
}

/* ---- output ----------------------------------------------------------------------------- */

static void mark_dirty(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    if (c->dirty || c->finished)
        return;
    c->dirty = 1;
    c->dirty_next = NULL;
    if (s->dirty_tail)
        s->dirty_tail->dirty_next = c;
    else
        s->dirty = c;
    s->dirty_tail = c;
    if (!s->flush_scheduled) {
        s->flush_scheduled = 1;
        /* flushes at least flush_interval apart, counted from the last one: after a quiet
         * spell the first output leaves at the end of this turn; under load, when a turn
         * outlasts the interval, every turn flushes and nothing waits a full interval more */
        struct timeval now, since, wait;
        if (s->o.flush_interval_ms > 0) {
            event_base_gettimeofday_cached(s->base, &now);
            timersub(&now, &s->last_flush, &since);
            if (timercmp(&since, &s->flush_tv, <)) {
                timersub(&s->flush_tv, &since, &wait);
                evtimer_add(s->flush_ev, &wait);
                return;
            }
        }
        event_active(s->flush_ev, EV_WRITE, 0);
    }
}

/* May n more bytes be queued? If not, c is marked to be dropped as too slow. */
static int room_for(struct ws_conn *c, size_t n)
{
    if (c->slow)
        return 0;
    if (evbuffer_get_length(c->out) + n > (size_t) c->srv->o.max_queued_bytes) {
        c->slow = 1;
        mark_dirty(c);
        return 0;
    }
    return 1;
}

/* The header of an unmasked server frame; returns its length (2, 4 or 10). */
static size_t put_header(unsigned char *h, unsigned opcode, size_t len)
{
    h[0] = (unsigned char) (0x80 | opcode);
    if (len < 126) {
        h[1] = (unsigned char) len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (unsigned char) (len >> 8);
        h[3] = (unsigned char) len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
    return 10;
}

static int sendable(const struct ws_conn *c)
{
    return !c->finished && !c->close_sent && !c->close_rcvd && !c->failing && !c->slow;
}

static int queue_frame(struct ws_conn *c, unsigned opcode, const void *payload, size_t len)
{
    unsigned char h[10];
    size_t hl = put_header(h, opcode, len);
    if (!room_for(c, hl + len))
        return ERR_CLOSED;
    evbuffer_add(c->out, h, hl);
    if (len)
        evbuffer_add(c->out, payload, len);
    mark_dirty(c);
    return 0;
}

static int valid_close_code(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* Queue our close frame (nothing may follow it) and wait close_timeout_ms for the peer's. */
static void send_close(struct ws_conn *c, int code, const char *reason, enum reason why)
{
    if (c->finished || c->close_sent)
        return;
    unsigned char p[2 + CLOSE_REASON_MAX];
    size_t rl = reason ? strlen(reason) : 0;
    if (rl > CLOSE_REASON_MAX)
        rl = CLOSE_REASON_MAX;
    if (!valid_close_code(code))
        code = 1000;
    p[0] = (unsigned char) (code >> 8);
    p[1] = (unsigned char) code;
    if (rl)
        memcpy(p + 2, reason, rl);
    c->close_sent = 1;
    if (c->ctx)
        wslay_event_shutdown_write(c->ctx); /* no pong or echo after our close */
    if (!c->close_rcvd) {
        c->cb_code = (uint16_t) code;
        c->reason = (uint8_t) why;
    }
    queue_frame(c, 0x8, p, 2 + rl); /* when it does not fit, c is dropped as slow */
    evtimer_add(c->timer, c->srv->t_close);
}

/* ---- shared frames ----------------------------------------------------------------------- */

struct ws_frame *ws_frame_text(const char *text, size_t len)
{
    struct ws_frame *f = xmalloc(sizeof *f + 10 + len);
    f->refs = 1;
    size_t hl = put_header(f->data, 0x1, len);
    memcpy(f->data + hl, text, len);
    f->len = hl + len;
    frames_alive++;
    return f;
}

void ws_frame_unref(struct ws_frame *f)
{
    if (f && --f->refs == 0) {
        free(f);
        frames_alive--;
    }
}

long ws_frames_alive(void)
{
    return frames_alive;
}

static void frame_cleanup(const void *data, size_t len, void *extra)
{
    ws_frame_unref(extra);
}

int ws_send_frame(struct ws_conn *c, struct ws_frame *f)
{
    if (!sendable(c))
        return ERR_CLOSED;
    if (!room_for(c, f->len))
        return ERR_CLOSED;
    if (f->len >= FRAME_REF_MIN) {
        f->refs++;
        if (evbuffer_add_reference(c->out, f->data, f->len, frame_cleanup, f) != 0) {
            f->refs--;
            return ERR_CLOSED;
        }
    } else {
        evbuffer_add(c->out, f->data, f->len);
    }
    c->srv->st.messages_out++;
    c->srv->st.frames_shared++;
    mark_dirty(c);
    return 0;
}

int ws_send_text(struct ws_conn *c, const char *text, size_t len)
{
    if (!sendable(c))
        return ERR_CLOSED;
    int rc = queue_frame(c, 0x1, text, len);
    if (rc == 0)
        c->srv->st.messages_out++;
    return rc;
}

void ws_close(struct ws_conn *c, int code, const char *reason)
{
    if (c->finished || c->close_sent || c->failing || c->slow)
        return;
    send_close(c, code, reason, R_NORMAL);
}

/* ---- wslay's callbacks ---------------------------------------------------------------------- */

/* Fill the server's scratch buffer from c's socket: 1 when it holds bytes, 0 when there is
 * nothing to read this turn (EAGAIN, a short read before, or the budget spent), -1 when the
 * peer is gone (rx_eof or rx_err set). */
static int fill_scratch(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    if (s->sc_off < s->sc_len)
        return 1;
    for (;;) {
        if (c->rx_drained || c->rx_budget == 0) {
            if (!c->rx_drained)
                c->rx_more = 1;
            return 0;
        }
        ssize_t n = recv(c->fd, s->scratch, SCRATCH, 0);
        if (n > 0) {
            s->sc_len = (size_t) n;
            s->sc_off = 0;
            s->st.bytes_in += (uint64_t) n;
            c->rx_seen = 1;
            if (c->pinged) {
                /* the answer to our ping: back to ticking (rather than waiting out the
                 * rest of the idle timeout), at most once per ping */
                c->pinged = 0;
                if (!c->close_sent && !c->close_rcvd && !c->failing)
                    evtimer_add(c->timer, s->t_tick);
            }
            c->rx_budget--;
            /* a short read: the socket is empty (edge-triggered), unless the peer's FIN came
             * in the same edge: then read once more to meet it, as no event will follow */
            if (n < SCRATCH && !c->rx_hup)
                c->rx_drained = 1;
            return 1;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->rx_drained = 1;
            continue;
        }
        if (n == 0)
            c->rx_eof = 1;
        else
            c->rx_err = 1;
        return -1;
    }
}

static ssize_t wsl_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct ws_conn *c = ud;
    struct ws_server *s = c->srv;
    if (c->finished) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (c->pre) {
        size_t n = c->pre_len - c->pre_off;
        if (n > len)
            n = len;
        memcpy(buf, c->pre + c->pre_off, n);
        c->pre_off += n;
        if (c->pre_off == c->pre_len) {
            free(c->pre);
            c->pre = NULL;
        }
        c->fed += n;
        return (ssize_t) n;
    }
    int r = fill_scratch(c);
    if (r <= 0) {
        wslay_event_set_error(ctx, r == 0 ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    size_t n = s->sc_len - s->sc_off;
    if (n > len)
        n = len;
    memcpy(buf, s->scratch + s->sc_off, n);
    s->sc_off += n;
    c->fed += n;
    return (ssize_t) n;
}

static ssize_t wsl_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                        void *ud)
{
    struct ws_conn *c = ud;
    if (c->finished) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    if (room_for(c, len)) {
        evbuffer_add(c->out, data, len);
        mark_dirty(c);
    }
    return (ssize_t) len; /* dropped when it does not fit: c is being dropped as slow */
}

static void wsl_frame_start(wslay_event_context_ptr ctx,
                            const struct wslay_event_on_frame_recv_start_arg *arg, void *ud)
{
    struct ws_conn *c = ud;
    uint64_t len = arg->payload_length;
    /* wslay has refused unmasked frames and non-minimal lengths before this point */
    c->framed += 2 + 4 + (len < 126 ? 0 : len <= 0xffff ? 2 : 8) + len;
    if (!wslay_is_ctrl_frame(arg->opcode))
        c->in_frag = !arg->fin;
    if (arg->opcode == WSLAY_BINARY_FRAME && !c->close_sent)
        send_close(c, 1003, "binary messages are not supported", R_UNSUPPORTED);
}

/* Token bucket; 1 when the message may pass. */
static int rate_ok(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    uint64_t now = now_ms(s);
    if (now > c->tokens_at) {
        c->tokens += (double) (now - c->tokens_at) * s->o.msg_rate / 1000.0;
        if (c->tokens > s->o.msg_burst)
            c->tokens = s->o.msg_burst;
    }
    c->tokens_at = now;
    if (c->tokens >= 1.0) {
        c->tokens -= 1.0;
        return 1;
    }
    s->st.rate_limited++;
    if (c->strikes == 0 || now - c->strike_at > FLOOD_WINDOW) {
        c->strikes = 0;
        c->strike_at = now;
    }
    c->strikes++;
    if (queue_frame(c, 0x1, RATE_LIMITED, sizeof RATE_LIMITED - 1) == 0)
        s->st.messages_out++;
    if (c->strikes >= FLOOD_STRIKES) {
        log_debug("ws", "%s: too many messages, closing", c->ip);
        send_close(c, 1008, "too many messages", R_FLOOD);
    }
    return 0;
}

static void wsl_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                    void *ud)
{
    struct ws_conn *c = ud;
    struct ws_server *s = c->srv;
    if (c->finished)
        return;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        c->msg_seen = 1;
        if (!sendable(c) || !rate_ok(c))
            return; /* after our close, messages are dropped */
        s->st.messages_in++;
        if (s->on_message)
            s->on_message(c, (const char *) arg->msg, arg->msg_length, s->ud);
        return;
    case WSLAY_CONNECTION_CLOSE:
        c->close_rcvd = 1;
        if (!c->close_sent) {
            c->cb_code = arg->status_code ? arg->status_code : 1005;
            c->reason = R_NORMAL;
        }
        return;
    default: return; /* ping (wslay queued the pong), pong, binary (closing) */
    }
}

static const struct wslay_event_callbacks WSL_CALLBACKS = {
    wsl_recv, wsl_send, NULL, wsl_frame_start, NULL, NULL, wsl_msg,
};

/* ---- wslay's context: made when bytes arrive, given back when idle --------------------- */

static int ctx_acquire(struct ws_conn *c)
{
    if (c->ctx)
        return 0;
    if (wslay_event_context_server_init(&c->ctx, &WSL_CALLBACKS, c) != 0) {
        c->ctx = NULL;
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(c->ctx, (uint64_t) c->srv->o.max_message_bytes);
    if (c->close_sent)
        wslay_event_shutdown_write(c->ctx);
    c->fed = c->framed = 0;
    c->srv->st.ctx_live++;
    return 0;
}

/* Free wslay's context if it holds nothing: every byte given to it belongs to a complete
 * frame, no fragmented message is open, and no close is under way. */
static void ctx_release(struct ws_conn *c)
{
    if (c->ctx == NULL || c->fed != c->framed || c->in_frag || c->pre || c->close_sent ||
        c->close_rcvd || c->failing || wslay_event_get_queued_msg_count(c->ctx) > 0)
        return;
    wslay_event_context_free(c->ctx);
    c->ctx = NULL;
    c->srv->st.ctx_live--;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void want_more(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    if (c->in_more)
        return;
    c->in_more = 1;
    c->more_next = s->more;
    s->more = c;
    if (!s->more_scheduled) {
        static const struct timeval zero = {0, 0};
        s->more_scheduled = 1;
        evtimer_add(s->more_ev, &zero); /* the next loop turn, after the others had theirs */
    }
}

/* Best effort, for a connection about to be closed: one write, no waiting. */
static void write_once(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    if (c->wblocked || evbuffer_get_length(c->out) == 0)
        return;
    int n = evbuffer_write(c->out, c->fd);
    s->st.writes++;
    if (n > 0)
        s->st.bytes_out += (uint64_t) n;
}

/* A socket that is only waited on: read and drop until EOF. */
static void read_and_drop(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    free(c->pre);
    c->pre = NULL;
    for (int i = 0; i < READ_BUDGET; i++) {
        ssize_t n = recv(c->fd, s->scratch, SCRATCH, 0);
        if (n > 0) {
            s->st.bytes_in += (uint64_t) n;
            if (n < SCRATCH && !c->rx_hup)
                return;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF or an error: the handshake is as done as it will be */
        write_once(c);
        finish(c, c->cb_code, (enum reason) c->reason);
        return;
    }
    want_more(c);
}

static enum reason reason_of(int code)
{
    switch (code) {
    case 1007: return R_UTF8;
    case 1009: return R_TOO_BIG;
    case 1003: return R_UNSUPPORTED;
    default: return R_PROTOCOL;
    }
}

static void conn_read(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    if (c->finished)
        return;
    if (c->lingering || c->failing || c->close_rcvd) {
        read_and_drop(c);
        return;
    }
    c->rx_budget = READ_BUDGET;
    c->rx_drained = c->rx_more = 0;
    s->sc_len = s->sc_off = 0;
    if (c->ctx == NULL && c->pre == NULL) {
        /* an idle connection gets its wslay context only when bytes arrive */
        int got = fill_scratch(c);
        if (got < 0) {
            finish(c, c->close_sent ? c->cb_code : 1006,
                   c->close_sent ? (enum reason) c->reason : R_ABNORMAL);
            return;
        }
        if (got == 0) {
            if (c->rx_more)
                want_more(c);
            return;
        }
    }
    if (ctx_acquire(c) != 0) {
        log_error("ws", "out of memory for a wslay context");
        s->sc_len = s->sc_off = 0;
        finish(c, 1011, R_ABNORMAL);
        return;
    }
    int r = wslay_event_recv(c->ctx);
    s->sc_len = s->sc_off = 0; /* what wslay did not take follows a close or an error */
    if (c->finished)
        return;
    if (r == WSLAY_ERR_CALLBACK_FAILURE && (c->rx_eof || c->rx_err)) {
        if (c->close_sent || c->close_rcvd)
            finish(c, c->cb_code, (enum reason) c->reason);
        else
            finish(c, 1006, R_ABNORMAL);
        return;
    }
    if (r != 0) {
        /* a frame wslay's frame layer refused (a fragmented or long control frame, a bad
         * length): wslay queued an empty close; ours says 1002 instead */
        wslay_event_shutdown_write(c->ctx);
        if (!c->close_sent) {
            log_debug("ws", "%s: protocol error", c->ip);
            send_close(c, 1002, NULL, R_PROTOCOL);
        }
    } else {
        if (wslay_event_send(c->ctx) != 0 || c->finished)
            return;
        if (!c->close_sent && wslay_event_get_close_sent(c->ctx)) {
            /* wslay's own close: the echo of the peer's, or an error it found */
            c->close_sent = 1;
            if (!c->close_rcvd) {
                int code = wslay_event_get_status_code_sent(c->ctx);
                log_debug("ws", "%s: closing with %d", c->ip, code);
                c->cb_code = (uint16_t) code;
                c->reason = (uint8_t) reason_of(code);
            }
            evtimer_add(c->timer, s->t_close);
        }
    }
    if (!c->close_rcvd && !wslay_event_get_read_enabled(c->ctx))
        c->failing = 1; /* wslay stopped reading after an error: linger once flushed */
    if (c->rx_more)
        want_more(c);
    else if (!c->msg_seen)
        ctx_release(c); /* only control frames lately (a pong): an idle client */
    conn_check_done(c);
}

/* ---- writing and finishing ------------------------------------------------------------- */

/* The connection is gone: fire the closed callback once and hand the memory to the
 * graveyard (freed by leave()). Always called with s->depth > 0. */
static void finish(struct ws_conn *c, int code, enum reason why)
{
    struct ws_server *s = c->srv;
    if (c->finished)
        return;
    c->finished = 1;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->st.conns--;
    event_del(c->ev);
    event_del(c->timer);
    if (c->fd >= 0) {
        close(c->fd);
        ipcap_give(s->o.ipcap, c->ip); /* the place its HTTP connection took */
    }
    c->fd = -1;
    if (c->ctx)
        wslay_event_shutdown_read(c->ctx); /* a wslay_event_recv under way stops */
    switch (why) {
    case R_NORMAL: s->st.closes_normal++; break;
    case R_PROTOCOL: s->st.closes_protocol++; break;
    case R_UNSUPPORTED: s->st.closes_unsupported++; break;
    case R_UTF8: s->st.closes_utf8++; break;
    case R_TOO_BIG: s->st.closes_too_big++; break;
    case R_FLOOD: s->st.closes_flood++; break;
    case R_SLOW: s->st.closes_slow++; break;
    case R_IDLE: s->st.closes_idle++; break;
    case R_SHUTDOWN: s->st.closes_shutdown++; break;
    case R_ABNORMAL:
    case R_NONE: s->st.closes_abnormal++; break;
    }
    c->grave_next = s->grave;
    s->grave = c;
    if (s->on_closed)
        s->on_closed(c, code, s->ud);
}

/* Over max_queued_bytes: say so if the socket takes it, then close. */
static void drop_slow(struct ws_conn *c)
{
    static const unsigned char close_frame[] = {0x88, 10,  1008 >> 8, 1008 & 0xff, 't', 'o',
                                                'o',  ' ', 's',       'l',         'o', 'w'};
    log_debug("ws", "%s: too slow, %zu bytes queued", c->ip, evbuffer_get_length(c->out));
    if (!c->close_sent)
        evbuffer_add(c->out, close_frame, sizeof close_frame);
    write_once(c);
    finish(c, 1008, R_SLOW);
}

static void conn_flush(struct ws_conn *c)
{
    struct ws_server *s = c->srv;
    if (c->finished)
        return;
    if (c->slow) {
        drop_slow(c);
        return;
    }
    while (!c->wblocked && evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        s->st.writes++;
        if (n > 0) {
            s->st.bytes_out += (uint64_t) n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->wblocked = 1; /* the EV_WRITE edge resumes */
            break;
        }
        /* the peer is gone */
        if (c->close_sent || c->close_rcvd)
            finish(c, c->cb_code, (enum reason) c->reason);
        else
            finish(c, 1006, R_ABNORMAL);
        return;
    }
    conn_check_done(c);
}

/* Once the output is written: after both close frames, close the socket; after an error,
 * shut it for writing and linger. */
static void conn_check_done(struct ws_conn *c)
{
    if (c->finished || c->slow || evbuffer_get_length(c->out) > 0)
        return;
    if (c->close_sent && c->close_rcvd) {
        finish(c, c->cb_code, (enum reason) c->reason);
        return;
    }
    if (c->failing && !c->lingering) {
        c->lingering = 1;
        shutdown(c->fd, SHUT_WR);
        event_active(c->ev, EV_READ, 0); /* wslay stopped early: input may wait unseen */
    }
}

/* ---- events -------------------------------------------------------------------------------- */

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct ws_conn *c = arg;
    struct ws_server *s = c->srv;
    enter(s);
    /* output that is not blocked is on the dirty list: written at the end of the turn */
    if ((what & EV_WRITE) && c->wblocked) {
        c->wblocked = 0;
        conn_flush(c);
    }
    if (what & EV_CLOSED)
        c->rx_hup = 1;
    if (what & (EV_READ | EV_CLOSED))
        conn_read(c);
    leave(s);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct ws_server *s = arg;
    enter(s);
    event_base_gettimeofday_cached(s->base, &s->last_flush);
    while (s->dirty) {
        struct ws_conn *c = s->dirty;
        s->dirty = c->dirty_next;
        if (s->dirty == NULL)
            s->dirty_tail = NULL;
        c->dirty = 0;
        conn_flush(c);
    }
    s->flush_scheduled = 0;
    leave(s);
}

static void on_more(evutil_socket_t fd, short what, void *arg)
{
    struct ws_server *s = arg;
    enter(s);
    struct ws_conn *list = s->more;
    s->more = NULL;
    s->more_scheduled = 0;
    while (list) {
        struct ws_conn *c = list;
        list = c->more_next;
        c->in_more = 0;
        conn_read(c);
    }
    leave(s);
}

/* One timer per connection, on three common timeouts: the tick (ping interval), the rest of
 * the idle timeout after a ping, and the close timeout. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct ws_conn *c = arg;
    struct ws_server *s = c->srv;
    enter(s);
    if (c->finished) {
        /* nothing */
    } else if (c->close_sent || c->close_rcvd || c->failing) {
        finish(c, c->cb_code, (enum reason) c->reason); /* the peer never finished it */
    } else if (c->rx_seen) {
        c->rx_seen = 0;
        c->pinged = 0;
        c->msg_seen = 0;
        evtimer_add(c->timer, s->t_tick);
    } else if (s->pinging && !c->pinged) {
        static const unsigned char ping[] = {0x89, 0x00};
        ctx_release(c); /* quiet for a whole tick: give wslay's context back */
        if (room_for(c, sizeof ping)) {
            evbuffer_add(c->out, ping, sizeof ping);
            mark_dirty(c);
        }
        c->pinged = 1;
        evtimer_add(c->timer, s->t_rest);
    } else {
        log_debug("ws", "%s: idle, closing", c->ip);
        send_close(c, 1001, "idle", R_IDLE);
    }
    leave(s);
}

/* ---- the handshake ------------------------------------------------------------------------- */

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

int ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes are 22 base64 digits and "==": the last digit carries 2 bits */
    if (key == NULL || len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (int i = 0; i < 22; i++)
        if (b64_value(key[i]) < 0)
            return 0;
    return (b64_value(key[21]) & 0xf) == 0;
}

void ws_accept_value(const char *key, size_t len, char out[29])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    CORE_ASSERT(m != NULL);
    int ok = EVP_DigestInit_ex(m, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(m, key, len) == 1 &&
             EVP_DigestUpdate(m, GUID, sizeof GUID - 1) == 1 &&
             EVP_DigestFinal_ex(m, md, &mdlen) == 1 && mdlen == 20;
    EVP_MD_CTX_free(m);
    CORE_ASSERT(ok);
    EVP_EncodeBlock((unsigned char *) out, md, 20); /* 28 characters and a NUL */
}

/* Give d's resources back to nobody: close and free. */
static void refuse(struct ws_server *s, struct http_detached *d)
{
    s->st.refused++;
    if (d->fd >= 0) {
        close(d->fd);
        ipcap_give(s->o.ipcap, d->remote_ip);
    }
    free(d->in);
    free(d->out);
    d->fd = -1;
    d->in = d->out = NULL;
    d->in_len = d->out_len = 0;
}

struct ws_conn *ws_accept(struct ws_server *s, struct http_detached *d, const char *key,
                          size_t key_len)
{
    if (s->draining || s->freeing || s->st.conns >= s->o.max_connections ||
        !ws_key_valid(key, key_len)) {
        refuse(s, d);
        return NULL;
    }
    struct ws_conn *c = xcalloc(1, sizeof *c);
    c->srv = s;
    c->fd = d->fd;
    snprintf(c->ip, sizeof c->ip, "%s", d->remote_ip);
    c->out = evbuffer_new();
    if (d->out_len)
        evbuffer_add(c->out, d->out, d->out_len);
    free(d->out);
    if (d->in_len) {
        c->pre = d->in;
        c->pre_len = d->in_len;
    } else {
        free(d->in);
    }
    d->fd = -1;
    d->in = d->out = NULL;
    d->in_len = d->out_len = 0;

    char head[160], accept[29];
    ws_accept_value(key, key_len, accept);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    evbuffer_add(c->out, head, (size_t) n);

    c->tokens = s->o.msg_burst;
    c->tokens_at = now_ms(s);
    c->reason = R_NONE;
    c->ev =
        event_new(s->base, c->fd, EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET, on_io, c);
    c->timer = evtimer_new(s->base, on_timer, c);
    event_add(c->ev, NULL);
    evtimer_add(c->timer, s->t_tick);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->st.conns++;
    s->st.accepted++;
    /* read what came with the request, and what is in the socket already (no edge for it);
     * activated before the flush, so that the answers to those frames go in the same write */
    event_active(c->ev, EV_READ, 0);
    mark_dirty(c);
    return c;
}

/* ---- the server ---------------------------------------------------------------------------- */

struct ws_server *ws_server_new(struct event_base *base, const struct ws_opts *opts,
                                ws_message_cb *on_message, ws_closed_cb *on_closed, void *ud)
{
    struct ws_server *s = xcalloc(1, sizeof *s);
    s->base = base;
    s->o = *opts;
    struct ws_opts *o = &s->o;
    if (o->max_connections <= 0)
        o->max_connections = D_MAX_CONNECTIONS;
    if (o->max_message_bytes <= 0)
        o->max_message_bytes = D_MAX_MESSAGE;
    if (o->max_queued_bytes <= 0)
        o->max_queued_bytes = D_MAX_QUEUED;
    if (o->idle_timeout_ms <= 0)
        o->idle_timeout_ms = D_IDLE_MS;
    if (o->ping_interval_ms <= 0)
        o->ping_interval_ms = D_PING_MS;
    if (o->close_timeout_ms <= 0)
        o->close_timeout_ms = D_CLOSE_MS;
    if (o->msg_rate <= 0)
        o->msg_rate = D_MSG_RATE;
    if (o->msg_burst <= 0)
        o->msg_burst = D_MSG_BURST;
    s->on_message = on_message;
    s->on_closed = on_closed;
    s->ud = ud;
    s->pinging = o->ping_interval_ms < o->idle_timeout_ms;
    if (s->pinging) {
        s->t_tick = common_timeout(base, o->ping_interval_ms);
        s->t_rest = common_timeout(base, o->idle_timeout_ms - o->ping_interval_ms);
    } else {
        s->t_tick = common_timeout(base, o->idle_timeout_ms);
        s->t_rest = s->t_tick;
    }
    s->t_close = common_timeout(base, o->close_timeout_ms);
    s->flush_ev = event_new(base, -1, 0, on_flush, s);
    s->flush_tv.tv_sec = o->flush_interval_ms / 1000;
    s->flush_tv.tv_usec = (o->flush_interval_ms % 1000) * 1000;
    s->more_ev = evtimer_new(base, on_more, s);
    s->scratch = xmalloc(SCRATCH);
    return s;
}

static void server_destroy(struct ws_server *s)
{
    CORE_ASSERT(s->conns == NULL);
    while (s->grave) {
        struct ws_conn *c = s->grave;
        s->grave = c->grave_next;
        conn_free_mem(c);
    }
    event_free(s->flush_ev);
    event_free(s->more_ev);
    free(s->scratch);
    free(s);
}

void ws_server_free(struct ws_server *s)
{
    if (s == NULL || s->freeing)
        return;
    s->freeing = 1;
    s->draining = 1;
    enter(s);
    while (s->conns) {
        struct ws_conn *c = s->conns;
        if (!c->close_sent && !c->slow) {
            static const unsigned char bye[] = {0x88, 2, 1001 >> 8, 1001 & 0xff};
            evbuffer_add(c->out, bye, sizeof bye); /* best effort: one write, no wait */
        }
        write_once(c);
        finish(c, 1001, R_SHUTDOWN);
    }
    leave(s); /* frees s now, or when the callback we are inside of returns */
}

int ws_server_count(const struct ws_server *s)
{
    return s->st.conns;
}

void ws_server_close_all(struct ws_server *s, int code, const char *reason)
{
    s->draining = 1;
    for (struct ws_conn *c = s->conns; c; c = c->next)
        ws_close(c, code, reason);
}

void ws_server_stats(const struct ws_server *s, struct ws_stats *out)
{
    *out = s->st;
}

/* ---- the connection's accessors -------------------------------------------------------- */

void ws_conn_set_ud(struct ws_conn *c, void *ud)
{
    c->ud = ud;
}

void *ws_conn_ud(const struct ws_conn *c)
{
    return c->ud;
}

const char *ws_conn_ip(const struct ws_conn *c)
{
    return c->ip;
}

size_t ws_conn_queued(const struct ws_conn *c)
{
    return evbuffer_get_length(c->out);
}
