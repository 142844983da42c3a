/* ws.h -- WebSocket (RFC 6455), server side, on libevent; client frames parsed by wslay.
 *
 * A connection arrives already upgraded: the HTTP layer authenticates `GET /ws`, answers
 * nothing, detaches the socket (http_detach) and hands it to ws_accept, which writes the 101
 * answer and speaks WebSocket from then on. The node speaks JSON text only: a binary message
 * closes with 1003.
 *
 * Input: client frames must be masked (1002 otherwise); text is valid UTF-8 (1007); a message,
 * reassembled from its fragments, is at most max_message_bytes (1009, refused from the frame
 * header before its payload is buffered); pings are answered with the same payload; a close is
 * echoed. Each complete message goes to the message callback, after a per-connection token
 * bucket (msg_rate, msg_burst).
 *
 * Output: everything a connection is owed (data frames, shared frames, pongs, pings, the
 * close) goes into one buffer in order, and every connection written to during a loop turn is
 * flushed once at the end of that turn: a burst of 20 messages to one client is one writev
 * (or once per flush_interval_ms, which trades that much latency for fewer writes).
 * A broadcast is encoded once (ws_frame_text) and queued to each receiver (ws_send_frame):
 * large frames by reference (zero copy), small ones copied, which is cheaper below ~1 KiB.
 * A client whose queued output passes max_queued_bytes is dropped (1008).
 *
 * Lifetime: ws_accept's connection lives until the closed callback has fired for it (exactly
 * once: handshake done, error, timeout, slow, peer gone, or the server freed) and returned.
 * ws_close, ws_send_* and ws_server_free may be called from inside any callback of this module.
 * Callbacks never fire from inside the call that caused them, except ws_server_free, which
 * fires every remaining closed callback before returning.
 *
 * Memory: an idle connection holds ~0.7 KiB in this module; wslay's context (~9.4 KiB) is
 * allocated when bytes arrive and given back after a quiet ping interval. Writing with
 * writev may raise SIGPIPE: the process ignores it (main.c). */
#ifndef CORE_WS_H
#define CORE_WS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct http_detached;
struct ws_server;
struct ws_conn;
struct ws_frame;

/* Limits. A field <= 0 takes the default in brackets. */
struct ws_opts {
    int max_connections;   /* ws_accept refuses beyond [10000] (check ws_server_count first) */
    int max_message_bytes; /* a message over this closes with 1009 [65536] */
    int max_queued_bytes;  /* output queued for one client over this: dropped, 1008 [1 MiB] */
    int idle_timeout_ms;   /* nothing received (a pong counts): close 1001 [60000]; checked on
                              the ping tick, so it fires within idle..idle+ping_interval */
    int ping_interval_ms;  /* a client quiet this long is pinged [20000]; >= idle: no pings */
    int close_timeout_ms;  /* after our close frame, wait this long for the peer's [5000] */
    double msg_rate;       /* messages per second per connection [20] */
    int msg_burst;         /* bucket size [40]; a message beyond gets a rate_limited error and
                              is dropped; the third within 5 s closes with 1008 */
    int flush_interval_ms; /* 0 [0]: output is written at the end of each loop turn; > 0: at
                              most this long after it was queued, in fewer, larger writes */
    struct ipcap *ipcap;   /* the HTTP server's (http_opts): a connection gives its address's
                              place back when it closes (NULL: none) */
};

struct ws_stats {
    int conns;         /* open now (closing ones included) */
    int ctx_live;      /* of them, holding a wslay context (not idle) */
    uint64_t accepted; /* ws_accept succeeded */
    uint64_t refused;  /* ws_accept refused: full, draining or a bad key */
    uint64_t messages_in;
    uint64_t messages_out;  /* data messages queued: ws_send_text + ws_send_frame */
    uint64_t frames_shared; /* of which ws_send_frame */
    uint64_t rate_limited;  /* messages dropped by the token bucket */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t writes; /* write system calls (writev) */
    /* closes, by reason (the closed callback's code in brackets) */
    uint64_t closes_normal;      /* a close handshake, started by either side [its code] */
    uint64_t closes_protocol;    /* a malformed or unmasked frame [1002] */
    uint64_t closes_unsupported; /* a binary message [1003] */
    uint64_t closes_utf8;        /* text that is not UTF-8 [1007] */
    uint64_t closes_too_big;     /* a message over max_message_bytes [1009] */
    uint64_t closes_flood;       /* the third rate-limited message within 5 s [1008] */
    uint64_t closes_slow;        /* queued output over max_queued_bytes [1008] */
    uint64_t closes_idle;        /* idle_timeout_ms without input [1001] */
    uint64_t closes_abnormal;    /* the peer left without a close handshake [1006] */
    uint64_t closes_shutdown;    /* ws_server_free [1001] */
};

/* One complete text message (valid UTF-8, not NUL-terminated). text is borrowed until the
 * callback returns. */
typedef void ws_message_cb(struct ws_conn *c, const char *text, size_t len, void *ud);
/* The connection is gone; fires exactly once per accepted connection. code: the close code
 * (see struct ws_stats). c is freed after the callback returns; drop every pointer to it. */
typedef void ws_closed_cb(struct ws_conn *c, int code, void *ud);

/* A server: the set of WebSocket connections of one event_base. opts is copied. */
struct ws_server *ws_server_new(struct event_base *base, const struct ws_opts *opts,
                                ws_message_cb *on_message, ws_closed_cb *on_closed, void *ud);
/* Close every connection at once (a close frame 1001 is tried, without waiting), fire its
 * closed callback (code 1001), free it, then free the server. Safe from inside a callback:
 * the memory goes when that callback returns. */
void ws_server_free(struct ws_server *s);
/* Connections open (closing ones included). */
int ws_server_count(const struct ws_server *s);
/* Shutdown: start the close handshake on every connection (code, reason as ws_close) and
 * refuse new ones; each closed callback fires when its handshake ends or close_timeout_ms. */
void ws_server_close_all(struct ws_server *s, int code, const char *reason);
/* Counters since ws_server_new. */
void ws_server_stats(const struct ws_server *s, struct ws_stats *out);

/* Is key (Sec-WebSocket-Key, len bytes) the base64 of 16 bytes? */
int ws_key_valid(const char *key, size_t len);
/* Sec-WebSocket-Accept for key: base64(SHA-1(key + RFC 6455 GUID)), NUL-terminated. */
void ws_accept_value(const char *key, size_t len, char out[29]);

/* Take over a detached connection: d's fd, in and out become the connection's (d is emptied);
 * out (earlier answers) is written first, then the 101 answer with Sec-WebSocket-Accept, and
 * in (bytes after the request) is read as the first frames. Returns NULL, with the fd closed
 * and the buffers freed, when the server is full (max_connections), draining, or key is not
 * valid (check ws_server_count and ws_key_valid first to answer 503 / 400). Never calls a
 * callback from inside. */
struct ws_conn *ws_accept(struct ws_server *s, struct http_detached *d, const char *key,
                          size_t key_len);

void ws_conn_set_ud(struct ws_conn *c, void *ud);
void *ws_conn_ud(const struct ws_conn *c);
/* The peer's address, NUL-terminated; valid while c lives. */
const char *ws_conn_ip(const struct ws_conn *c);
/* Output queued for c and not yet written, in bytes. */
size_t ws_conn_queued(const struct ws_conn *c);

/* Queue a text message (copied; text must be UTF-8, not checked). 0, or ERR_CLOSED once c is
 * closing or gone, or when it would pass max_queued_bytes (then c is dropped with 1008). */
int ws_send_text(struct ws_conn *c, const char *text, size_t len);
/* Start the close handshake: code (1000-1003, 1007-1011, 3000-4999; others become 1000) and
 * reason (copied, cut at 123 bytes; NULL for none). The closed callback fires later, with
 * code. A no-op when c is already closing. */
void ws_close(struct ws_conn *c, int code, const char *reason);

/* One server text frame, encoded once (header + payload, unmasked), reference count 1 (the
 * caller's). text is copied. */
struct ws_frame *ws_frame_text(const char *text, size_t len);
/* Queue f to c. The frame gains a reference while c holds it (frames of 1 KiB and more are
 * referenced, not copied), so the caller may unref its own at once. Returns as
 * ws_send_text. */
int ws_send_frame(struct ws_conn *c, struct ws_frame *f);
/* Drop a reference; the last one frees f. NULL is ignored. */
void ws_frame_unref(struct ws_frame *f);
/* Frames alive in the process (tests, metrics). */
long ws_frames_alive(void);

#endif
