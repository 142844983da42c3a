/* loadbot.h -- a WebSocket load generator for one node (tools/loadbot/README.md).
 *
 * One process, one libevent loop. main.c owns the options, the phases (ramp, steady, closing)
 * and the reports; conn.c one bot's connection (TCP connect, the RFC 6455 upgrade, wslay's
 * client context, join, moves, what comes back); setup.c the blocking HTTP calls made before
 * the loop runs (login, POST /api/admin/bots) and the small JSON scanner; stats.c counters,
 * latency histograms and /proc sampling.
 *
 * Ownership: main.c owns the bot array (struct lb) and every bot in it; a bot owns its socket,
 * its two events and its wslay context until bot_close. Nothing is freed from inside a wslay
 * callback: a connection that ends is marked and closed after wslay_event_recv returns. */
#ifndef LOADBOT_H
#define LOADBOT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event;
struct event_base;
struct wslay_event_context;

#define LB_RING      64 /* moves remembered per bot: 6.4 s at 10 Hz */
#define LB_MAX_CODES 16 /* distinct error codes / close codes / failure reasons counted */
#define LB_MAX_BOTS  20000
#define LB_MAX_PORTS 16 /* --ports: nodes the bots are spread over */
#define LB_MAX_WATCH 8  /* --watch-pid and --watch-extra processes */

/* ---- options ----------------------------------------------------------------------------- */

struct lb_opts {
    char host[256];
    char port[8];
    char url[512];
    /* --ports: bot i connects to ports[i % nports] on host (reconnects too); without it, one:
     * the port of url */
    int nports;
    char ports[LB_MAX_PORTS][8];
    int bots;
    double rate;     /* moves per second per bot; 0: idle */
    double duration; /* seconds of steady state after the ramp */
    char region[32];
    double spread;
    double ramp; /* connection attempts per second */
    const char *admin_password;
    const char *bots_file; /* --bots-file: the saved answer of POST /api/admin/bots */
    char prefix[8];
    int json;
    int peer;      /* --peer: no HTTP set-up; ids 1..N, positions made here */
    int watch_pid; /* --watch-pid: the first of them (the node's CPU% and RSS reported) */
    /* --watch-pid P[,P...] then --watch-extra P[,P...]: the first nwatch_node are nodes (their
     * CPU and RSS summed as the node's), the others only reported (e.g. Redis) */
    int watch[LB_MAX_WATCH], nwatch, nwatch_node;
    double step;       /* world units per move */
    double radius;     /* --radius: the view radius, to count what each move is owed; 0: no */
    double timeout_s;  /* connect + upgrade + welcome must take at most this */
    double ramp_grace; /* seconds allowed after the last attempt for the stragglers */
    int quiet;         /* --quiet: no per-second lines */
    int move_in_ramp;  /* --move-in-ramp: moves from the welcome, not from the steady start */
    double chat;       /* --chat: region chat messages per second per bot, with the moves */
    int no_reconnect;  /* --no-reconnect: a bot whose connection ends stays closed */
    unsigned seed;
};

/* ---- statistics -------------------------------------------------------------------------- */

#define LB_HIST_BUCKETS 800

/* Latencies in microseconds, log-linear buckets (about 3% wide). */
struct lb_hist {
    uint64_t n, max_us, sum_us;
    uint32_t b[LB_HIST_BUCKETS];
};

/* A small "name -> count" table: error codes, close codes, failure reasons. */
struct lb_codes {
    int n;
    char name[LB_MAX_CODES][40];
    uint64_t count[LB_MAX_CODES];
    uint64_t other;
};

struct lb_counters {
    uint64_t moves_sent;
    uint64_t moved_recv; /* "moved" messages received */
    uint64_t matched;    /* of which matched to a move of this process (latency sampled) */
    uint64_t unmatched;  /* moved about a bot/position not in the ring (too late or foreign) */
    uint64_t appear, vanish, pong, welcome, other_msgs;
    uint64_t nearby_sum;   /* "nearby" entries in the welcomes */
    uint64_t corrects;     /* "correct": a move refused */
    uint64_t errors;       /* "error" messages (by code in struct lb's error_codes) */
    uint64_t closed;       /* unexpected closes (by code in close_codes) */
    uint64_t connect_fail; /* connect / upgrade / join failures (by reason in fail_reasons) */
    uint64_t owed;         /* --radius: moved messages owed: bots within the radius per move */
    uint64_t bytes_in;
    uint64_t recv_calls, send_calls;
    uint64_t chat_sent, chat_recv; /* --chat: "chat" messages sent and received */
    uint64_t reconnects;           /* bots that joined again after an unexpected close */
    /* --ports with more than one: owed and matched for pairs of bots on the same port and on
     * different ports (same node, cross-node) */
    uint64_t owed_same, owed_cross, matched_same, matched_cross;
};

void hist_add(struct lb_hist *h, uint64_t us);
/* The value below which a fraction q of the samples lie (bucket upper bound), in microseconds;
 * 0 when empty. */
uint64_t hist_quantile(const struct lb_hist *h, double q);
void hist_merge(struct lb_hist *into, const struct lb_hist *from);

void codes_add(struct lb_codes *c, const char *name, size_t len);

/* Monotonic clock, microseconds. */
uint64_t now_us(void);
/* Busy time of the whole machine (all CPUs, /proc/stat), microseconds; -1 if unknown. */
int64_t machine_busy_us(void);
/* CPU time (user + system) of this process, microseconds. */
uint64_t self_cpu_us(void);
/* Of process pid: CPU time (all threads), microseconds; -1 if gone. */
int64_t proc_cpu_us(int pid);
/* Of process pid: VmRSS in KiB; -1 if gone. */
long proc_rss_kib(int pid);

/* ---- the bots -------------------------------------------------------------------------------- */

enum bot_state {
    BOT_NEW,        /* not tried yet */
    BOT_CONNECTING, /* TCP connect in progress */
    BOT_UPGRADING,  /* upgrade request sent, waiting for 101 */
    BOT_OPEN,       /* WebSocket open, join sent, no welcome yet */
    BOT_JOINED,     /* welcome received: it moves */
    BOT_CLOSING,    /* our close frame queued, waiting for the peer's */
    BOT_DONE,       /* closed (after a failure, an unexpected close, or at the end) */
};

struct move_rec {
    int32_t cx, cy; /* position in hundredths of a unit */
    uint64_t t_us;  /* when it was sent */
};

struct bot {
    struct lb *lb;
    int64_t id;
    char *token; /* NULL in --peer mode */
    int port_i;  /* the index in o.ports of the port it connects to */
    double x, y, heading;
    double next_move_us;
    double next_chat_us; /* --chat: when this bot speaks next; 0: not scheduled yet */
    enum bot_state state;
    int fd;
    struct event *rev, *wev;
    struct wslay_event_context *ctx;
    uint64_t started_us; /* connect attempt began */
    char *io;            /* upgrade: request left to send, then the response read so far */
    size_t io_len, io_off;
    char accept[29]; /* the Sec-WebSocket-Accept we expect */
    uint8_t *pre;    /* bytes read after the 101 answer: wslay reads them first */
    size_t pre_len, pre_off;
    int reading;       /* the upgrade request is sent; reading the answer */
    int eof, sock_err; /* from the wslay callbacks */
    int drained;       /* a recv returned less than asked: the socket is empty */
    uint64_t rx_at_us; /* when the last bytes read reached the socket (kernel time, monotonic) */
    uint8_t hold[14], hold_len;    /* a frame header waiting for its payload (send_cb) */
    int join_refused, peer_closed; /* set in wslay callbacks, acted on after */
    unsigned close_code;
    uint32_t seq;
    int cell, gnext, gprev; /* --radius: the grid cell, neighbours in its list (-1: none) */
    uint8_t ring_head, ring_n;
    struct move_rec ring[LB_RING];
    /* after an unexpected close: tried again at retry_at_us (0: not to be), the retries-th
     * time since it was last joined; rejoin: this connection is such a try */
    uint64_t retry_at_us;
    int retries, rejoin;
};

enum lb_phase { PH_RAMP, PH_STEADY, PH_CLOSING, PH_DONE };

struct lb {
    struct lb_opts o;
    struct event_base *base;
    struct sockaddr_storage addr[LB_MAX_PORTS]; /* o.ports resolved */
    socklen_t addrlen[LB_MAX_PORTS];
    struct bot *bots;
    int nbots;
    /* id -> bot index + 1 (0: empty), open addressing */
    int64_t *map_key;
    int *map_val;
    size_t map_cap;
    double bx0, by0, bx1, by1; /* where bots walk */
    enum lb_phase phase;
    int interrupted;
    int next_bot; /* next bot to try */
    int connecting, open, joined, closing;
    int retrying; /* bots waiting for another try (schedule_retry) */
    uint64_t t0_us, ramp_end_us, steady_start_us, steady_end_us, close_start_us;
    uint64_t last_open_us;
    struct lb_counters c;
    struct lb_codes error_codes, close_codes, fail_reasons;
    struct lb_hist sec_hist, steady_hist, all_hist;
    struct lb_hist mark_hist; /* the seconds reported since the last SIGUSR1 mark */
    /* the same, up to the kernel's receive time of the bytes (SO_TIMESTAMPNS): loadbot's own
     * backlog left out */
    struct lb_hist sock_sec_hist, sock_steady_hist, sock_all_hist;
    /* --ports with more than one: the same, [0] for pairs on the same port, [1] on different
     * ports */
    struct lb_hist hop_sec[2], hop_steady[2], hop_all[2];
    struct lb_hist hop_sock_sec[2], hop_sock_steady[2], hop_sock_all[2];
    uint32_t rng;
    /* --radius: a grid of cells of side radius over the walking area; heads of bot lists */
    int *grid, gw, gh;
};

/* conn.c */
/* Start bot b's connection (non-blocking connect). Failures are counted, b becomes BOT_DONE. */
void bot_start(struct bot *b);
/* Send one move (a small step inside the walking area); b must be BOT_JOINED. */
void bot_move(struct bot *b, uint64_t now);
/* Send one region chat message; b must be BOT_JOINED. */
void bot_chat(struct bot *b);
/* Begin the close handshake (code 1000); a bot that is not open is closed at once. */
void bot_close_begin(struct bot *b);
/* Close the socket and free what the bot holds; state BOT_DONE. Idempotent. */
void bot_close(struct bot *b);
/* A bot that did not get through connect + upgrade + welcome in time. */
void bot_fail(struct bot *b, const char *reason);
/* Due for another try after an unexpected close (bot_start it), at now? */
int bot_retry_due(const struct bot *b, uint64_t now);
/* --radius: the grid of joined bots. */
void grid_init(struct lb *lb);
void grid_insert(struct bot *b);
void grid_remove(struct bot *b);
/* Joined bots other than b within the radius of b's position; *same: how many of them are on
 * b's port. */
int grid_count(const struct bot *b, int *same);
/* A random number in [0, 1). */
double lb_rand(struct lb *lb);
/* The bot with that player id, or NULL. */
struct bot *lb_find(struct lb *lb, int64_t id);

/* main.c: SIGINT/SIGTERM received before the loop runs (the set-up gives up when it is set) */
extern volatile int lb_setup_signal;

/* setup.c */
/* Blocking HTTP/1.1 request to o's host:port with Connection: close; every wait bounded by
 * timeout_s. body may be NULL; auth (a bearer token) may be NULL. On success returns 0 and sets
 * *status and *resp (malloc'd, NUL-terminated, the caller frees); -1 on a network error
 * (message on stderr). */
int http_call(const struct lb_opts *o, const char *method, const char *path, const char *auth,
              const char *body, double timeout_s, int *status, char **resp);
/* Log in as admin and fetch the bots (POST /api/admin/bots). Fills lb->bots. 0 or -1. */
int setup_bots(struct lb *lb);
/* --peer: bots 1..N at random in the square; no network. */
void setup_peer_bots(struct lb *lb);

/* JSON scanning (setup.c), on a buffer of len bytes that need not be NUL-terminated.
 * json_skip: the end of the value starting at p (after whitespace), or NULL if malformed. */
const char *json_skip(const char *p, const char *end);
/* Iterate a top-level object: call json_next with *p at '{' first; returns 1 with key/value
 * spans set, 0 at the end, -1 if malformed. Key spans exclude the quotes. */
int json_next(const char **p, const char *end, const char **k, size_t *klen, const char **v,
              const char **vend);
/* A value span as a number (strtod on a bounded copy); 0 if not a number. */
int json_num(const char *v, const char *vend, double *out);

#endif
