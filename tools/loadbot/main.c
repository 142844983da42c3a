/* main.c -- loadbot: options, the phases of a run, the reports.
 *
 *   ramp     bots connect at --ramp per second (at most --ramp attempts in flight), upgrade,
 *            join; a joined bot starts moving at once. The ramp ends when every bot joined or
 *            failed (or N/ramp + --ramp-grace seconds passed: the stragglers fail).
 *   steady   --duration seconds; the summary counts this window only.
 *   closing  every bot sends a close frame; 3 s at most for the answers, then the sockets go.
 *
 * One timer every 10 ms starts connections and sends the moves that are due; another every
 * second prints a line and moves the phases on. SIGINT/SIGTERM: go to closing at once (the
 * summary says "interrupted"); a second signal stops without waiting. */
#include "loadbot.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#define TICK_US       10000
#define CLOSE_WAIT_US 3000000

struct snap {
    struct lb_counters c;
    uint64_t t_us, self_cpu;
    int64_t node_cpu, machine; /* node_cpu: the sum over the nodes watched */
    int64_t wcpu[LB_MAX_WATCH];
    int joined;
};

static struct lb L;
volatile int lb_setup_signal;
static struct snap s_start, s_last, s_win0, s_win1;
static int have_window;
static struct event *ev_tick, *ev_report, *ev_int, *ev_term, *ev_usr1;
static long rss_before = -1, rss_max = -1, rss_last = -1, rss_ramp_end = -1;

/* ---- options ----------------------------------------------------------------------------------
 */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadbot [options]\n"
            "  --url URL              the node (http://127.0.0.1:8080); WebSocket on /ws\n"
            "  --ports P1,P2,...      spread the bots over these ports of the url's host: bot i\n"
            "                         connects to P[i %% n] (the set-up still uses --url); the\n"
            "                         latency is also reported for pairs on the same port and\n"
            "                         on different ports (same node, cross-node)\n"
            "  --bots N               bots (100; at most %d)\n"
            "  --rate R               moves per second per bot (10; 0: idle, joined)\n"
            "  --duration S           seconds of steady state after the ramp (30)\n"
            "  --region ID            region of the bots (r1)\n"
            "  --spread L             side of the square the bots stand in (200)\n"
            "  --ramp C               connection attempts per second (500)\n"
            "  --admin-password P     admin password (default: $MMO_ADMIN_PASSWORD)\n"
            "  --prefix P             bot account prefix, 2-6 lower-case letters (lb)\n"
            "  --bots-file F          read the bots from F, a saved answer of POST\n"
            "                         /api/admin/bots (no login, no call; the first N are used)\n"
            "  --step U               world units per move (0.45: always within the speed rule)\n"
            "  --timeout S            connect + upgrade + welcome within this (10)\n"
            "  --ramp-grace S         after the last attempt, wait this for stragglers (30)\n"
            "  --watch-pid PID[,PID]  report that process's CPU%% and RSS (the node's; several:\n"
            "                         the nodes, summed, and each one in \"watched\")\n"
            "  --watch-extra PID[,..] report these processes' CPU%% too (e.g. Redis), each one\n"
            "  --radius R             the view radius: count the moved messages each move is\n"
            "                         owed (joined bots within R), to report the share delivered\n"
            "  --peer                 the Node peer (tools/bench/ws-peer): no set-up calls,\n"
            "                         ids 1..N, join carries x and y, no token\n"
            "  --chat R               region chat messages per second per bot, sent when\n"
            "                         moves are (0; every bot in the region receives each)\n"
            "  --move-in-ramp         a bot moves as soon as it joined (default: all bots start\n"
            "                         moving when the ramp ends, each at a random phase)\n"
            "  --no-reconnect         a bot whose connection ends stays closed (default: it\n"
            "                         tries again, with its token, after 0.5 s doubling to 8 s)\n"
            "  --seed N               random seed (default: from the clock)\n"
            "  --json                 the summary as one JSON line on stdout\n"
            "  --quiet                no per-second lines on stderr\n",
            LB_MAX_BOTS);
}

static int parse_url(struct lb_opts *o, const char *url)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0 || strncmp(p, "ws://", 5) == 0)
        p = strchr(p, '/') + 2;
    else if (strstr(p, "://"))
        return -1; /* https, wss: not supported */
    const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
    if (slash && colon && colon > slash)
        colon = NULL;
    size_t hl = colon ? (size_t) (colon - p) : slash ? (size_t) (slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof o->host)
        return -1;
    memcpy(o->host, p, hl);
    o->host[hl] = 0;
    if (colon) {
        size_t pl = slash ? (size_t) (slash - colon - 1) : strlen(colon + 1);
        if (pl == 0 || pl >= sizeof o->port)
            return -1;
        memcpy(o->port, colon + 1, pl);
        o->port[pl] = 0;
    } else {
        strcpy(o->port, "80");
    }
    snprintf(o->url, sizeof o->url, "http://%s:%s", o->host, o->port);
    return 0;
}

static double num_arg(const char *name, const char *v, double lo, double hi)
{
    char *e;
    double d = strtod(v, &e);
    if (*v == 0 || *e != 0 || !(d >= lo && d <= hi)) {
        fprintf(stderr, "loadbot: %s must be a number from %g to %g, got '%s'\n", name, lo, hi, v);
        exit(2);
    }
    return d;
}

/* A comma-separated list of whole numbers from lo to hi, at most max of them, appended to
 * out[*n]. */
static void list_arg(const char *name, const char *v, double lo, double hi, int *out, int *n,
                     int max)
{
    char buf[256];
    if (strlen(v) >= sizeof buf) {
        fprintf(stderr, "loadbot: %s: too long\n", name);
        exit(2);
    }
    strcpy(buf, v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == max) {
            fprintf(stderr, "loadbot: %s: at most %d in all\n", name, max);
            exit(2);
        }
        double d = num_arg(name, t, lo, hi);
        if (d != floor(d)) {
            fprintf(stderr, "loadbot: %s: whole numbers, got '%s'\n", name, t);
            exit(2);
        }
        out[(*n)++] = (int) d;
    }
}

static void parse_args(int argc, char **argv, struct lb_opts *o)
{
    enum {
        O_URL = 256,
        O_BOTS,
        O_RATE,
        O_DUR,
        O_REGION,
        O_SPREAD,
        O_RAMP,
        O_PW,
        O_PREFIX,
        O_JSON,
        O_PEER,
        O_WATCH,
        O_STEP,
        O_TIMEOUT,
        O_GRACE,
        O_QUIET,
        O_SEED,
        O_RADIUS,
        O_MOVE_IN_RAMP,
        O_CHAT,
        O_NO_RECONNECT,
        O_BOTS_FILE,
        O_PORTS,
        O_WATCH_EXTRA,
        O_HELP
    };
    static const struct option longs[] = {
        {"url", 1, 0, O_URL},
        {"bots", 1, 0, O_BOTS},
        {"rate", 1, 0, O_RATE},
        {"duration", 1, 0, O_DUR},
        {"region", 1, 0, O_REGION},
        {"spread", 1, 0, O_SPREAD},
        {"ramp", 1, 0, O_RAMP},
        {"admin-password", 1, 0, O_PW},
        {"prefix", 1, 0, O_PREFIX},
        {"json", 0, 0, O_JSON},
        {"peer", 0, 0, O_PEER},
        {"watch-pid", 1, 0, O_WATCH},
        {"step", 1, 0, O_STEP},
        {"timeout", 1, 0, O_TIMEOUT},
        {"ramp-grace", 1, 0, O_GRACE},
        {"quiet", 0, 0, O_QUIET},
        {"seed", 1, 0, O_SEED},
        {"radius", 1, 0, O_RADIUS},
        {"move-in-ramp", 0, 0, O_MOVE_IN_RAMP},
        {"chat", 1, 0, O_CHAT},
        {"no-reconnect", 0, 0, O_NO_RECONNECT},
        {"bots-file", 1, 0, O_BOTS_FILE},
        {"ports", 1, 0, O_PORTS},
        {"watch-extra", 1, 0, O_WATCH_EXTRA},
        {"help", 0, 0, O_HELP},
        {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    parse_url(o, "http://127.0.0.1:8080");
    o->bots = 100;
    o->rate = 10;
    o->duration = 30;
    strcpy(o->region, "r1");
    o->spread = 200;
    o->ramp = 500;
    o->admin_password = getenv("MMO_ADMIN_PASSWORD");
    strcpy(o->prefix, "lb");
    o->step = 0.45;
    o->timeout_s = 10;
    o->ramp_grace = 30;
    o->seed = (unsigned) now_us() ^ (unsigned) getpid();
    int c, ports[LB_MAX_PORTS], nports = 0, extra[LB_MAX_WATCH], nextra = 0;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case O_URL:
            if (parse_url(o, optarg) < 0) {
                fprintf(stderr, "loadbot: --url must be http://host[:port], got '%s'\n", optarg);
                exit(2);
            }
            break;
        case O_BOTS: o->bots = (int) num_arg("--bots", optarg, 1, LB_MAX_BOTS); break;
        case O_RATE: o->rate = num_arg("--rate", optarg, 0, 1000); break;
        case O_DUR: o->duration = num_arg("--duration", optarg, 0, 86400); break;
        case O_REGION:
            if (strlen(optarg) >= sizeof o->region || strpbrk(optarg, "\"\\")) {
                fprintf(stderr, "loadbot: --region: a region id\n");
                exit(2);
            }
            strcpy(o->region, optarg);
            break;
        case O_SPREAD: o->spread = num_arg("--spread", optarg, 1, 100000); break;
        case O_RAMP: o->ramp = num_arg("--ramp", optarg, 1, 100000); break;
        case O_PW: o->admin_password = optarg; break;
        case O_PREFIX: {
            size_t n = strlen(optarg);
            int ok = n >= 2 && n <= 6;
            for (size_t i = 0; i < n; i++)
                ok = ok && optarg[i] >= 'a' && optarg[i] <= 'z';
            if (!ok) {
                fprintf(stderr, "loadbot: --prefix: 2-6 lower-case letters\n");
                exit(2);
            }
            strcpy(o->prefix, optarg);
            break;
        }
        case O_JSON: o->json = 1; break;
        case O_PEER: o->peer = 1; break;
        case O_WATCH:
            list_arg("--watch-pid", optarg, 1, 1 << 30, o->watch, &o->nwatch_node, LB_MAX_WATCH);
            break;
        case O_WATCH_EXTRA:
            list_arg("--watch-extra", optarg, 1, 1 << 30, extra, &nextra, LB_MAX_WATCH);
            break;
        case O_PORTS: list_arg("--ports", optarg, 1, 65535, ports, &nports, LB_MAX_PORTS); break;
        case O_STEP: o->step = num_arg("--step", optarg, 0.01, 1000); break;
        case O_TIMEOUT: o->timeout_s = num_arg("--timeout", optarg, 0.1, 600); break;
        case O_GRACE: o->ramp_grace = num_arg("--ramp-grace", optarg, 0, 3600); break;
        case O_QUIET: o->quiet = 1; break;
        case O_RADIUS: o->radius = num_arg("--radius", optarg, 0, 100000); break;
        case O_MOVE_IN_RAMP: o->move_in_ramp = 1; break;
        case O_CHAT: o->chat = num_arg("--chat", optarg, 0, 100); break;
        case O_NO_RECONNECT: o->no_reconnect = 1; break;
        case O_BOTS_FILE: o->bots_file = optarg; break;
        case O_SEED: o->seed = (unsigned) num_arg("--seed", optarg, 0, 4294967295.0); break;
        case O_HELP:
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "loadbot: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    if (o->nwatch_node + nextra > LB_MAX_WATCH) {
        fprintf(stderr, "loadbot: --watch-pid and --watch-extra: at most %d in all\n",
                LB_MAX_WATCH);
        exit(2);
    }
    o->nwatch = o->nwatch_node;
    for (int i = 0; i < nextra; i++)
        o->watch[o->nwatch++] = extra[i];
    o->watch_pid = o->nwatch_node ? o->watch[0] : 0;
    if (nports == 0) {
        o->nports = 1;
        strcpy(o->ports[0], o->port);
    } else {
        o->nports = nports;
        for (int i = 0; i < nports; i++)
            snprintf(o->ports[i], sizeof o->ports[i], "%d", ports[i]);
    }
    if (o->peer && o->chat > 0) {
        fprintf(stderr, "loadbot: --chat is for a node (the peer has no chat)\n");
        exit(2);
    }
}

/* ---- phases -----------------------------------------------------------------------------------
 */

/* The RSS of the nodes watched, summed; -1 if none, or one is gone. */
static long nodes_rss_kib(void)
{
    long sum = L.o.nwatch_node ? 0 : -1;
    for (int i = 0; i < L.o.nwatch_node && sum >= 0; i++) {
        long r = proc_rss_kib(L.o.watch[i]);
        sum = r < 0 ? -1 : sum + r;
    }
    return sum;
}

static void take(struct snap *s)
{
    s->c = L.c;
    s->t_us = now_us();
    s->self_cpu = self_cpu_us();
    s->node_cpu = L.o.nwatch_node ? 0 : -1;
    for (int i = 0; i < L.o.nwatch; i++) {
        s->wcpu[i] = proc_cpu_us(L.o.watch[i]);
        if (i < L.o.nwatch_node && s->node_cpu >= 0)
            s->node_cpu = s->wcpu[i] < 0 ? -1 : s->node_cpu + s->wcpu[i];
    }
    s->machine = machine_busy_us();
    s->joined = L.joined;
}

static void begin_closing(void)
{
    if (L.phase >= PH_CLOSING)
        return;
    if (L.phase == PH_STEADY || !have_window) {
        take(&s_win1);
        if (!have_window) /* interrupted during the ramp: the window is the whole run */
            have_window = 2;
    }
    L.phase = PH_CLOSING;
    L.close_start_us = now_us();
    for (int i = 0; i < L.nbots; i++)
        bot_close_begin(&L.bots[i]);
}

static void finish(void)
{
    L.phase = PH_DONE;
    for (int i = 0; i < L.nbots; i++)
        bot_close(&L.bots[i]);
    event_base_loopbreak(L.base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    if (L.interrupted || L.phase >= PH_CLOSING) {
        finish();
        return;
    }
    L.interrupted = (int) sig;
    if (!L.o.quiet)
        fprintf(stderr, "loadbot: %s: closing (a second signal stops at once)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
    begin_closing();
}

/* SIGUSR1: the counters so far, one line on stderr (for a script that measures the node
 * meanwhile, e.g. system calls per delivered message), and the latency of the moved messages
 * of the seconds reported since the last mark (lat_n samples; tools/bench/soak) */
static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
    struct lb_hist *m = &L.mark_hist;
    fprintf(stderr,
            "loadbot mark {\"t_s\":%.6f,\"moves_sent\":%llu,\"moved_recv\":%llu,\"owed\":%llu,"
            "\"appear\":%llu,\"vanish\":%llu,\"joined\":%d,\"chat_sent\":%llu,"
            "\"chat_recv\":%llu,\"errors\":%llu,\"closed\":%llu,\"lat_n\":%llu,"
            "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_max_ms\":%.3f}\n",
            (double) (now_us() - L.t0_us) / 1e6, (unsigned long long) L.c.moves_sent,
            (unsigned long long) L.c.moved_recv, (unsigned long long) L.c.owed,
            (unsigned long long) L.c.appear, (unsigned long long) L.c.vanish, L.joined,
            (unsigned long long) L.c.chat_sent, (unsigned long long) L.c.chat_recv,
            (unsigned long long) L.c.errors, (unsigned long long) L.c.closed,
            (unsigned long long) m->n, (double) hist_quantile(m, 0.5) / 1000,
            (double) hist_quantile(m, 0.99) / 1000, (double) m->max_us / 1000);
    memset(m, 0, sizeof *m);
}

/* every 10 ms: start connections (ramp), send the moves that are due */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = now_us();
    if (L.retrying > 0) /* bots closed without our asking, due for another try */
        for (int i = 0; i < L.nbots; i++)
            if (bot_retry_due(&L.bots[i], now)) {
                L.retrying--;
                bot_start(&L.bots[i]);
            }
    if (L.phase == PH_RAMP && L.next_bot < L.nbots) {
        double due = L.o.ramp * (double) (now - L.t0_us) / 1e6 + 1;
        int cap = (int) (L.o.ramp > 100 ? L.o.ramp : 100); /* attempts in flight */
        while (L.next_bot < L.nbots && L.next_bot < due && L.connecting < cap)
            bot_start(&L.bots[L.next_bot++]);
        if (L.next_bot == L.nbots)
            L.ramp_end_us = now;
    }
    if (L.o.rate > 0 && ((L.phase == PH_RAMP && L.o.move_in_ramp) || L.phase == PH_STEADY)) {
        double period = 1e6 / L.o.rate;
        for (int i = 0; i < L.nbots; i++) {
            struct bot *b = &L.bots[i];
            if (b->state != BOT_JOINED || b->next_move_us > (double) now)
                continue;
            bot_move(b, now_us());
            b->next_move_us += period;
            if (b->next_move_us < (double) now) /* fell behind: no catching up in a burst */
                b->next_move_us = (double) now + period;
        }
    }
    if (L.o.chat > 0 && ((L.phase == PH_RAMP && L.o.move_in_ramp) || L.phase == PH_STEADY)) {
        double period = 1e6 / L.o.chat;
        for (int i = 0; i < L.nbots; i++) {
            struct bot *b = &L.bots[i];
            if (b->state != BOT_JOINED)
                continue;
            if (b->next_chat_us == 0) /* the first at a random phase */
                b->next_chat_us = (double) now + lb_rand(&L) * period;
            if (b->next_chat_us > (double) now)
                continue;
            bot_chat(b);
            b->next_chat_us += period;
            if (b->next_chat_us < (double) now)
                b->next_chat_us = (double) now + period;
        }
    }
}

static double pct_of(uint64_t cpu_us, uint64_t wall_us)
{
    return wall_us ? 100.0 * (double) cpu_us / (double) wall_us : 0;
}

/* every second: a line, time-outs, the phase */
static void on_report(evutil_socket_t fd, short what, void *arg)
{
    struct snap s;
    take(&s);
    uint64_t dt = s.t_us - s_last.t_us;
    double sec = (double) dt / 1e6;
    struct lb_hist *h = &L.sec_hist;
    long rss = nodes_rss_kib();
    if (L.phase == PH_STEADY) {
        hist_merge(&L.steady_hist, h);
        hist_merge(&L.sock_steady_hist, &L.sock_sec_hist);
        for (int i = 0; i < 2; i++) {
            hist_merge(&L.hop_steady[i], &L.hop_sec[i]);
            hist_merge(&L.hop_sock_steady[i], &L.hop_sock_sec[i]);
        }
        rss_last = rss;
        if (rss > rss_max)
            rss_max = rss;
    }
    hist_merge(&L.all_hist, h);
    hist_merge(&L.mark_hist, h);
    hist_merge(&L.sock_all_hist, &L.sock_sec_hist);
    for (int i = 0; i < 2; i++) {
        hist_merge(&L.hop_all[i], &L.hop_sec[i]);
        hist_merge(&L.hop_sock_all[i], &L.hop_sock_sec[i]);
    }
    if (!L.o.quiet) {
        static const char *names[] = {"ramp", "steady", "closing", "done"};
        char node[64] = "";
        if (L.o.watch_pid && s.node_cpu >= 0 && s_last.node_cpu >= 0)
            snprintf(node, sizeof node, " node %3.0f%% %ld MiB",
                     pct_of((uint64_t) (s.node_cpu - s_last.node_cpu), dt), rss / 1024);
        char hop[64] = "";
        if (L.o.nports > 1)
            snprintf(hop, sizeof hop, " | p99 same port %.2f other %.2f",
                     (double) hist_quantile(&L.hop_sec[0], 0.99) / 1000,
                     (double) hist_quantile(&L.hop_sec[1], 0.99) / 1000);
        fprintf(stderr,
                "%5.0fs %-7s open %5d joined %5d | moves %7.0f/s moved %8.0f/s | ms p50 %6.2f "
                "p99 %7.2f p99.9 %7.2f%s | err %llu corr %llu closed %llu fail %llu | cpu lb "
                "%3.0f%%%s\n",
                (double) (s.t_us - L.t0_us) / 1e6, names[L.phase], L.open, L.joined,
                (double) (s.c.moves_sent - s_last.c.moves_sent) / sec,
                (double) (s.c.moved_recv - s_last.c.moved_recv) / sec,
                (double) hist_quantile(h, 0.5) / 1000, (double) hist_quantile(h, 0.99) / 1000,
                (double) hist_quantile(h, 0.999) / 1000, hop, (unsigned long long) s.c.errors,
                (unsigned long long) s.c.corrects, (unsigned long long) s.c.closed,
                (unsigned long long) s.c.connect_fail, pct_of(s.self_cpu - s_last.self_cpu, dt),
                node);
    }
    memset(h, 0, sizeof *h);
    memset(&L.sock_sec_hist, 0, sizeof L.sock_sec_hist);
    memset(L.hop_sec, 0, sizeof L.hop_sec);
    memset(L.hop_sock_sec, 0, sizeof L.hop_sock_sec);
    s_last = s;

    /* connections that take too long */
    uint64_t limit = (uint64_t) (L.o.timeout_s * 1e6);
    if (L.phase == PH_RAMP)
        for (int i = 0; i < L.next_bot; i++) {
            struct bot *b = &L.bots[i];
            if ((b->state == BOT_CONNECTING || b->state == BOT_UPGRADING || b->state == BOT_OPEN) &&
                s.t_us - b->started_us > limit)
                bot_fail(b, b->state == BOT_CONNECTING  ? "timeout: connect"
                            : b->state == BOT_UPGRADING ? "timeout: upgrade"
                                                        : "timeout: welcome");
        }

    switch (L.phase) {
    case PH_RAMP: {
        int all_tried = L.next_bot == L.nbots;
        uint64_t ramp_limit =
            (uint64_t) (((double) L.nbots / L.o.ramp + L.o.ramp_grace + L.o.timeout_s) * 1e6);
        if (all_tried && L.connecting == 0) {
            /* fallthrough to steady */
        } else if (s.t_us - L.t0_us > ramp_limit) {
            for (int i = 0; i < L.nbots; i++) {
                struct bot *b = &L.bots[i];
                if (b->state == BOT_NEW || b->state == BOT_CONNECTING ||
                    b->state == BOT_UPGRADING || b->state == BOT_OPEN) {
                    if (b->state == BOT_NEW) {
                        b->state = BOT_DONE;
                        L.c.connect_fail++;
                        codes_add(&L.fail_reasons, "timeout: ramp (never tried)", 27);
                    } else {
                        bot_fail(b, "timeout: ramp");
                    }
                }
            }
            L.next_bot = L.nbots;
        } else {
            break;
        }
        L.phase = PH_STEADY;
        L.steady_start_us = s.t_us;
        if (L.o.rate > 0 && !L.o.move_in_ramp) /* everyone starts now, at a random phase */
            for (int i = 0; i < L.nbots; i++)
                L.bots[i].next_move_us = (double) s.t_us + lb_rand(&L) * 1e6 / L.o.rate;
        take(&s_win0);
        have_window = 1;
        rss_ramp_end = rss;
        rss_max = rss;
        if (!L.o.quiet)
            fprintf(stderr, "loadbot: ramp done in %.1f s: %d of %d joined; steady for %.0f s\n",
                    (double) (s.t_us - L.t0_us) / 1e6, L.joined, L.nbots, L.o.duration);
        if (L.o.duration <= 0)
            begin_closing();
        break;
    }
    case PH_STEADY:
        if ((double) (s.t_us - L.steady_start_us) >= L.o.duration * 1e6 - 5000) {
            L.steady_end_us = s.t_us;
            begin_closing();
        }
        break;
    case PH_CLOSING: break;
    case PH_DONE: break;
    }
}

/* while closing, check often whether everything is closed */
static void on_close_check(evutil_socket_t fd, short what, void *arg)
{
    if (L.phase != PH_CLOSING)
        return;
    if (L.open == 0 || now_us() - L.close_start_us > CLOSE_WAIT_US)
        finish();
}

/* ---- the summary ------------------------------------------------------------------------------
 */

static void codes_json(FILE *f, const char *name, const struct lb_codes *c)
{
    fprintf(f, ",\"%s\":{", name);
    for (int i = 0; i < c->n; i++)
        fprintf(f, "%s\"%s\":%llu", i ? "," : "", c->name[i], (unsigned long long) c->count[i]);
    if (c->other)
        fprintf(f, "%s\"(others)\":%llu", c->n ? "," : "", (unsigned long long) c->other);
    fprintf(f, "}");
}

static void codes_text(FILE *f, const struct lb_codes *c)
{
    for (int i = 0; i < c->n; i++)
        fprintf(f, "%s%s %llu", i ? ", " : " (", c->name[i], (unsigned long long) c->count[i]);
    if (c->other)
        fprintf(f, ", others %llu", (unsigned long long) c->other);
    if (c->n)
        fprintf(f, ")");
}

/* The latency of pairs on the same port or on different ports, as JSON. */
static void hop_json(FILE *f, const char *name, const struct lb_hist *h, const struct lb_hist *hs,
                     uint64_t matched, uint64_t owed)
{
    fprintf(f,
            "\"%s\":{\"matched\":%llu,\"owed\":%llu,\"delivered_pct\":%.2f,\"lat_p50_ms\":%.3f,"
            "\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f,\"sock_p50_ms\":%.3f,"
            "\"sock_p99_ms\":%.3f,\"sock_p999_ms\":%.3f}",
            name, (unsigned long long) matched, (unsigned long long) owed,
            owed ? 100.0 * (double) matched / (double) owed : -1,
            (double) hist_quantile(h, 0.5) / 1000, (double) hist_quantile(h, 0.99) / 1000,
            (double) hist_quantile(h, 0.999) / 1000, (double) h->max_us / 1000,
            (double) hist_quantile(hs, 0.5) / 1000, (double) hist_quantile(hs, 0.99) / 1000,
            (double) hist_quantile(hs, 0.999) / 1000);
}

static void hop_text(FILE *f, const char *name, const struct lb_hist *h, const struct lb_hist *hs,
                     uint64_t matched, uint64_t owed)
{
    fprintf(f, "  %-12s %llu matched", name, (unsigned long long) matched);
    if (owed)
        fprintf(f, " (%.2f%% of %llu owed)", 100.0 * (double) matched / (double) owed,
                (unsigned long long) owed);
    fprintf(f,
            ": p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms; at the socket p50 %.2f, "
            "p99 %.2f, p99.9 %.2f ms\n",
            (double) hist_quantile(h, 0.5) / 1000, (double) hist_quantile(h, 0.99) / 1000,
            (double) hist_quantile(h, 0.999) / 1000, (double) h->max_us / 1000,
            (double) hist_quantile(hs, 0.5) / 1000, (double) hist_quantile(hs, 0.99) / 1000,
            (double) hist_quantile(hs, 0.999) / 1000);
}

static void summary(void)
{
    const struct lb_opts *o = &L.o;
    struct snap *a = &s_win0, *b = &s_win1;
    const struct lb_hist *h = &L.steady_hist, *hs = &L.sock_steady_hist;
    const struct lb_hist *hop = L.hop_steady, *hop_s = L.hop_sock_steady;
    if (have_window == 2) { /* interrupted in the ramp: the whole run */
        a = &s_start;
        h = &L.all_hist;
        hs = &L.sock_all_hist;
        hop = L.hop_all;
        hop_s = L.hop_sock_all;
    }
    if (!have_window) {
        take(b);
        *a = *b;
    }
    uint64_t wall = b->t_us - a->t_us;
    double sec = wall ? (double) wall / 1e6 : 1e-9;
    uint64_t moves = b->c.moves_sent - a->c.moves_sent, moved = b->c.moved_recv - a->c.moved_recv;
    uint64_t matched = b->c.matched - a->c.matched, owed = b->c.owed - a->c.owed;
    double lb_cpu = pct_of(b->self_cpu - a->self_cpu, wall);
    double node_cpu = (o->watch_pid && a->node_cpu >= 0 && b->node_cpu >= 0)
                          ? pct_of((uint64_t) (b->node_cpu - a->node_cpu), wall)
                          : -1;
    double machine = a->machine >= 0 && b->machine >= 0
                         ? pct_of((uint64_t) (b->machine - a->machine), wall)
                         : -1;
    /* each process watched, and what other processes took: the machine less loadbot and the
     * watched processes */
    double wpct[LB_MAX_WATCH], watched = 0;
    for (int i = 0; i < o->nwatch; i++) {
        wpct[i] = a->wcpu[i] >= 0 && b->wcpu[i] >= 0
                      ? pct_of((uint64_t) (b->wcpu[i] - a->wcpu[i]), wall)
                      : -1;
        watched += wpct[i] > 0 ? wpct[i] : 0;
    }
    double others = machine >= 0 ? machine - lb_cpu - watched : -1;
    if (others < 0 && machine >= 0)
        others = 0;
    double nearby = L.c.welcome ? (double) L.c.nearby_sum / (double) L.c.welcome : 0;
    double p50 = (double) hist_quantile(h, 0.5) / 1000,
           p99 = (double) hist_quantile(h, 0.99) / 1000,
           p999 = (double) hist_quantile(h, 0.999) / 1000, pmax = (double) h->max_us / 1000,
           mean = h->n ? (double) h->sum_us / (double) h->n / 1000 : 0;
    double s50 = (double) hist_quantile(hs, 0.5) / 1000,
           s99 = (double) hist_quantile(hs, 0.99) / 1000,
           s999 = (double) hist_quantile(hs, 0.999) / 1000, smax = (double) hs->max_us / 1000;
    double delivered = owed ? 100.0 * (double) moved / (double) owed : -1;
    double per_conn = (rss_before > 0 && rss_last > 0 && b->joined > 0)
                          ? (double) (rss_last - rss_before) / b->joined
                          : -1;
    double ramp_s = (double) ((L.steady_start_us ? L.steady_start_us : b->t_us) - L.t0_us) / 1e6;
    const char *window = have_window == 1 ? "steady" : have_window == 2 ? "whole run" : "none";
    int ncpu = (int) sysconf(_SC_NPROCESSORS_ONLN);
    if (o->json) {
        FILE *f = stdout;
        fprintf(f,
                "{\"mode\":\"%s\",\"url\":\"%s\",\"bots\":%d,\"rate\":%g,\"duration_s\":%g,"
                "\"spread\":%g,\"step\":%g,\"radius\":%g,\"window\":\"%s\",\"window_s\":%.3f,"
                "\"ramp_s\":%.3f,\"interrupted\":%s,\"joined\":%d,\"nearby_avg\":%.2f,"
                "\"moves_sent\":%llu,\"moves_per_s\":%.1f,\"moved_recv\":%llu,"
                "\"moved_per_s\":%.1f,\"moved_per_move\":%.2f,\"owed\":%llu,"
                "\"delivered_pct\":%.2f,\"matched\":%llu,\"unmatched\":%llu,",
                o->peer ? "peer" : "node", o->url, o->bots, o->rate, o->duration, o->spread,
                o->step, o->radius, window, sec, ramp_s, L.interrupted ? "true" : "false",
                b->joined, nearby, (unsigned long long) moves, (double) moves / sec,
                (unsigned long long) moved, (double) moved / sec,
                moves ? (double) moved / (double) moves : 0, (unsigned long long) owed, delivered,
                (unsigned long long) matched,
                (unsigned long long) (b->c.unmatched - a->c.unmatched));
        fprintf(f,
                "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f,"
                "\"lat_mean_ms\":%.3f,\"sock_p50_ms\":%.3f,\"sock_p99_ms\":%.3f,"
                "\"sock_p999_ms\":%.3f,\"sock_max_ms\":%.3f,\"appear\":%llu,\"vanish\":%llu,"
                "\"pong\":%llu,\"corrects\":%llu,\"errors\":%llu,\"chat_sent\":%llu,"
                "\"chat_recv\":%llu",
                p50, p99, p999, pmax, mean, s50, s99, s999, smax,
                (unsigned long long) (b->c.appear - a->c.appear),
                (unsigned long long) (b->c.vanish - a->c.vanish),
                (unsigned long long) (b->c.pong - a->c.pong),
                (unsigned long long) (b->c.corrects - a->c.corrects),
                (unsigned long long) (b->c.errors - a->c.errors),
                (unsigned long long) (b->c.chat_sent - a->c.chat_sent),
                (unsigned long long) (b->c.chat_recv - a->c.chat_recv));
        codes_json(f, "error_codes", &L.error_codes);
        fprintf(f, ",\"closed\":%llu,\"reconnects\":%llu",
                (unsigned long long) (b->c.closed - a->c.closed),
                (unsigned long long) (b->c.reconnects - a->c.reconnects));
        codes_json(f, "close_codes", &L.close_codes);
        fprintf(f, ",\"connect_fail\":%llu", (unsigned long long) L.c.connect_fail);
        codes_json(f, "fail_reasons", &L.fail_reasons);
        fprintf(f,
                ",\"lb_cpu_pct\":%.1f,\"recv_calls\":%llu,\"send_calls\":%llu,\"ncpu\":%d,"
                "\"machine_busy_pct\":%.1f,\"others_pct\":%.1f,\"node_pid\":%d,"
                "\"node_cpu_pct\":%.1f,\"node_rss_before_kib\":%ld,\"node_rss_ramp_end_kib\":%ld,"
                "\"node_rss_max_kib\":%ld,\"node_rss_end_kib\":%ld,"
                "\"node_rss_per_conn_kib\":%.2f",
                lb_cpu, (unsigned long long) (b->c.recv_calls - a->c.recv_calls),
                (unsigned long long) (b->c.send_calls - a->c.send_calls), ncpu, machine, others,
                o->watch_pid, node_cpu, rss_before, rss_ramp_end, rss_max, rss_last, per_conn);
        if (o->nwatch > 1) {
            fprintf(f, ",\"watched\":[");
            for (int i = 0; i < o->nwatch; i++)
                fprintf(f, "%s{\"pid\":%d,\"role\":\"%s\",\"cpu_pct\":%.1f}", i ? "," : "",
                        o->watch[i], i < o->nwatch_node ? "node" : "extra", wpct[i]);
            fprintf(f, "]");
        }
        if (o->nports > 1) {
            fprintf(f, ",\"ports\":[");
            for (int i = 0; i < o->nports; i++)
                fprintf(f, "%s%s", i ? "," : "", o->ports[i]);
            fprintf(f, "],\"hop\":{");
            hop_json(f, "same", &hop[0], &hop_s[0], b->c.matched_same - a->c.matched_same,
                     b->c.owed_same - a->c.owed_same);
            fprintf(f, ",");
            hop_json(f, "cross", &hop[1], &hop_s[1], b->c.matched_cross - a->c.matched_cross,
                     b->c.owed_cross - a->c.owed_cross);
            fprintf(f, "}");
        }
        fprintf(f, "}\n");
        fflush(f);
        return;
    }
    FILE *f = stdout;
    fprintf(f, "loadbot summary (%s %s): %d bots, %g moves/s each, step %g, spread %g\n",
            o->peer ? "peer" : "node", o->url, o->bots, o->rate, o->step, o->spread);
    fprintf(f, "  window       %s, %.1f s (ramp %.1f s)%s\n", window, sec, ramp_s,
            L.interrupted ? "; interrupted" : "");
    fprintf(f,
            "  joined       %d of %d at the end of the window; welcomes listed %.1f nearby on "
            "average\n",
            b->joined, o->bots, nearby);
    fprintf(f, "  moves sent   %.0f/s (%llu)\n", (double) moves / sec, (unsigned long long) moves);
    fprintf(f, "  moved recv   %.0f/s (%llu), %.2f per move; %llu matched, %llu unmatched\n",
            (double) moved / sec, (unsigned long long) moved,
            moves ? (double) moved / (double) moves : 0, (unsigned long long) matched,
            (unsigned long long) (b->c.unmatched - a->c.unmatched));
    if (owed)
        fprintf(f,
                "  delivered    %.2f%% of the %llu owed (joined bots within radius %g per move)\n",
                delivered, (unsigned long long) owed, o->radius);
    fprintf(f,
            "  latency      move sent -> moved received: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, "
            "max %.2f ms, mean %.2f ms\n",
            p50, p99, p999, pmax, mean);
    fprintf(f,
            "  at socket    move sent -> moved in loadbot's socket (kernel time, loadbot's backlog "
            "left out): p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms\n",
            s50, s99, s999, smax);
    if (o->nports > 1) {
        fprintf(f, "  ports        %d:", o->nports);
        for (int i = 0; i < o->nports; i++)
            fprintf(f, " %s", o->ports[i]);
        fprintf(f,
                " (bot i on port i mod %d); move sent -> moved received, by where the two are:\n",
                o->nports);
        hop_text(f, "same port", &hop[0], &hop_s[0], b->c.matched_same - a->c.matched_same,
                 b->c.owed_same - a->c.owed_same);
        hop_text(f, "other port", &hop[1], &hop_s[1], b->c.matched_cross - a->c.matched_cross,
                 b->c.owed_cross - a->c.owed_cross);
    }
    fprintf(f, "  other msgs   appear %llu, vanish %llu, pong %llu, chat sent %llu received %llu\n",
            (unsigned long long) (b->c.appear - a->c.appear),
            (unsigned long long) (b->c.vanish - a->c.vanish),
            (unsigned long long) (b->c.pong - a->c.pong),
            (unsigned long long) (b->c.chat_sent - a->c.chat_sent),
            (unsigned long long) (b->c.chat_recv - a->c.chat_recv));
    fprintf(f, "  errors       %llu error messages",
            (unsigned long long) (b->c.errors - a->c.errors));
    codes_text(f, &L.error_codes);
    fprintf(f, "; %llu corrects; %llu unexpected closes",
            (unsigned long long) (b->c.corrects - a->c.corrects),
            (unsigned long long) (b->c.closed - a->c.closed));
    codes_text(f, &L.close_codes);
    fprintf(f, "; %llu reconnected", (unsigned long long) (b->c.reconnects - a->c.reconnects));
    fprintf(f, "; %llu connect failures", (unsigned long long) L.c.connect_fail);
    codes_text(f, &L.fail_reasons);
    fprintf(f, "\n  cpu          loadbot %.0f%% of one core", lb_cpu);
    if (node_cpu >= 0 && o->nwatch_node == 1)
        fprintf(f, "; watched pid %d %.0f%%", o->watch_pid, node_cpu);
    else if (node_cpu >= 0)
        fprintf(f, "; watched nodes %.0f%%", node_cpu);
    for (int i = 0; i < o->nwatch && o->nwatch > 1; i++)
        fprintf(f, "%spid %d %.0f%%%s", i ? ", " : " (", o->watch[i], wpct[i],
                i == o->nwatch - 1 ? ")" : "");
    if (machine >= 0)
        fprintf(f, "; machine %.0f%% of %d00%% (others %.0f%%)", machine, ncpu, others);
    fprintf(f, "\n");
    if (o->watch_pid)
        fprintf(f,
                "  watched rss  %.1f MiB before the first connection, %.1f MiB at the end of the "
                "ramp, %.1f MiB at the end of the window (max %.1f): %.2f KiB per joined "
                "connection\n",
                rss_before / 1024.0, rss_ramp_end / 1024.0, rss_last / 1024.0, rss_max / 1024.0,
                per_conn);
}

/* ---- main -------------------------------------------------------------------------------------
 */

static int resolve(void)
{
    for (int i = 0; i < L.o.nports; i++) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
        int rc = getaddrinfo(L.o.host, L.o.ports[i], &hints, &ai);
        if (rc != 0) {
            fprintf(stderr, "loadbot: %s: %s\n", L.o.host, gai_strerror(rc));
            return -1;
        }
        memcpy(&L.addr[i], ai->ai_addr, ai->ai_addrlen);
        L.addrlen[i] = ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    return 0;
}

static int raise_nofile(int want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t) want) {
        fprintf(stderr,
                "loadbot: %d bots need about %d file descriptors; the limit is %llu (ulimit -n)\n",
                L.o.bots, want, (unsigned long long) rl.rlim_cur);
        return -1;
    }
    return 0;
}

static void on_setup_signal(int sig)
{
    lb_setup_signal = sig;
}

/* A signal during the set-up: nothing is connected yet; say so and stop. */
static int setup_interrupted(void)
{
    fprintf(stderr, "loadbot: %s during the set-up: stopped\n",
            lb_setup_signal == SIGINT ? "SIGINT" : "SIGTERM");
    return 128 + lb_setup_signal;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv, &L.o);
    L.rng = L.o.seed ? L.o.seed : 1;
    signal(SIGPIPE, SIG_IGN);
    /* until the loop's own handlers are in place: note the signal (no SA_RESTART, so a
     * blocking wait of the set-up returns with EINTR and gives up) */
    struct sigaction sa = {.sa_handler = on_setup_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (raise_nofile(L.o.bots + 64) < 0)
        return 1;
    if (resolve() < 0)
        return 1;
    if (L.o.peer)
        setup_peer_bots(&L);
    else if (setup_bots(&L) < 0)
        return lb_setup_signal ? setup_interrupted() : 1;
    /* id -> bot */
    L.map_cap = 1;
    while (L.map_cap < (size_t) L.nbots * 2)
        L.map_cap *= 2;
    L.map_key = calloc(L.map_cap, sizeof *L.map_key);
    L.map_val = calloc(L.map_cap, sizeof *L.map_val);
    if (!L.map_key || !L.map_val)
        abort();
    for (int i = 0; i < L.nbots; i++) {
        struct bot *b = &L.bots[i];
        b->lb = &L;
        b->fd = -1;
        b->heading = lb_rand(&L) * 2 * M_PI;
        b->port_i = i % L.o.nports;
        if (lb_find(&L, b->id)) {
            fprintf(stderr, "loadbot: player id %lld twice in the bots\n", (long long) b->id);
            return 1;
        }
        size_t mask = L.map_cap - 1,
               j = (size_t) ((uint64_t) b->id * 0x9E3779B97F4A7C15ull >> 17) & mask;
        while (L.map_val[j])
            j = (j + 1) & mask;
        L.map_key[j] = b->id;
        L.map_val[j] = i + 1;
    }

    if (L.o.radius > 0)
        grid_init(&L);

    struct event_config *cfg = event_config_new();
    event_config_avoid_method(cfg, "select");
    event_config_avoid_method(cfg, "poll");
    L.base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!L.base) {
        fprintf(stderr, "loadbot: event_base_new failed\n");
        return 1;
    }
    ev_tick = event_new(L.base, -1, EV_PERSIST, on_tick, NULL);
    ev_report = event_new(L.base, -1, EV_PERSIST, on_report, NULL);
    struct event *ev_close = event_new(L.base, -1, EV_PERSIST, on_close_check, NULL);
    ev_int = evsignal_new(L.base, SIGINT, on_signal, NULL);
    ev_term = evsignal_new(L.base, SIGTERM, on_signal, NULL);
    ev_usr1 = evsignal_new(L.base, SIGUSR1, on_usr1, NULL);
    event_add(ev_usr1, NULL);
    struct timeval tick = {0, TICK_US}, sec = {1, 0}, cc = {0, 50000};
    event_add(ev_int, NULL);
    event_add(ev_term, NULL);
    if (lb_setup_signal)
        return setup_interrupted();

    rss_before = nodes_rss_kib();
    char ports[32] = "";
    if (L.o.nports > 1)
        snprintf(ports, sizeof ports, " over %d ports", L.o.nports);
    if (!L.o.quiet)
        fprintf(stderr, "loadbot: %d bots to %s (%s)%s, ramp %g/s, %g moves/s each, %g s steady\n",
                L.nbots, L.o.url, L.o.peer ? "peer" : "node", ports, L.o.ramp, L.o.rate,
                L.o.duration);
    L.t0_us = now_us();
    take(&s_start);
    s_last = s_start;
    event_add(ev_tick, &tick);
    event_add(ev_report, &sec);
    event_add(ev_close, &cc);
    event_base_dispatch(L.base);

    summary();
    for (int i = 0; i < L.nbots; i++) {
        bot_close(&L.bots[i]);
        free(L.bots[i].token);
    }
    event_free(ev_tick);
    event_free(ev_report);
    event_free(ev_close);
    event_free(ev_int);
    event_free(ev_term);
    event_free(ev_usr1);
    free(L.grid);
    event_base_free(L.base);
    free(L.bots);
    free(L.map_key);
    free(L.map_val);
    return 0;
}
