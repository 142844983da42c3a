/* queue_cli.c -- `mmo queue`: the game event stream and its dead letters, for operators.
 *
 *   mmo queue [stats]            stream length, the consumer group's pending and lag, dead letters
 *   mmo queue dead [--limit N]   the oldest N dead letters (20): entry, tries, error, event
 *   mmo queue show ID            one dead letter, whole
 *   mmo queue requeue ID|--all   back into the stream (the event keeps its id: it still has its
 *                                effect at most once), and out of the dead letters
 *   mmo queue drop ID|--all      out of the dead letters, for good
 *
 * A command-line tool, not the node: it talks to Redis with hiredis' blocking API, each call
 * bounded by redis.timeout_ms. The key names are those of scripts/lib/pipeline.lua. */
#include "queue_cli.h"
#include "conf.h"
#include "rds_set.h"
#include "sentinel.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM "mmo:events"
#define GROUP  "workers"
#define DEAD   "mmo:events:dead"

/* The Redis instance the stream is placed on (scripts/lib/queue.lua's AT; core/rds_set.h). */
static const char *stream_instance(const struct conf *c)
{
    struct rds_set names = {.n = 1};
    names.name[0] = c->redis_name;
    for (int i = 0; i < c->nredis_instances && names.n < RDS_SET_MAX; i++)
        names.name[names.n++] = c->redis_instances[i].name;
    static const char tag[] = "stream:" STREAM;
    return names.name[rds_set_place(&names, tag, sizeof tag - 1)];
}

static redisContext *connect_redis(const struct conf *c)
{
    struct timeval ct = {c->redis_connect_timeout_ms / 1000,
                         (c->redis_connect_timeout_ms % 1000) * 1000};
    char host[SENTINEL_HOST_MAX], err[400];
    int port;
    if (sentinel_resolve_conf(c, stream_instance(c), host, sizeof host, &port, err, sizeof err) <
        0) {
        fprintf(stderr, "mmo queue: redis: %s\n", err);
        return NULL;
    }
    redisContext *r = redisConnectWithTimeout(host, port, ct);
    if (r == NULL || r->err) {
        fprintf(stderr, "mmo queue: redis %s:%d: %s\n", host, port,
                r ? r->errstr : "out of memory");
        if (r)
            redisFree(r);
        return NULL;
    }
    struct timeval t = {c->redis_timeout_ms / 1000, (c->redis_timeout_ms % 1000) * 1000};
    redisSetTimeout(r, t);
    return r;
}

/* A reply, or NULL with the reason printed. The caller frees it. */
static redisReply *call(redisContext *r, const char *what, redisReply *reply)
{
    if (reply == NULL) {
        fprintf(stderr, "mmo queue: %s: %s\n", what, r->errstr[0] ? r->errstr : "no answer");
        return NULL;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "mmo queue: %s: %s\n", what, reply->str);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

static long long integer(redisContext *r, const char *what, const char *cmd)
{
    redisReply *x = call(r, what, redisCommand(r, cmd));
    long long v = x && x->type == REDIS_REPLY_INTEGER ? x->integer : -1;
    if (x)
        freeReplyObject(x);
    return v;
}

static int stats(redisContext *r)
{
    long long len = integer(r, "XLEN", "XLEN " STREAM);
    long long dead = integer(r, "XLEN", "XLEN " DEAD);
    if (len < 0 || dead < 0)
        return 1;
    printf("stream %s: %lld entries\n", STREAM, len);
    redisReply *g = call(r, "XINFO GROUPS", redisCommand(r, "XINFO GROUPS " STREAM));
    if (g && g->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < g->elements; i++) {
            redisReply *h = g->element[i];
            printf("group");
            for (size_t k = 0; h->type == REDIS_REPLY_ARRAY && k + 1 < h->elements; k += 2) {
                redisReply *v = h->element[k + 1];
                if (v->type == REDIS_REPLY_INTEGER)
                    printf(" %s=%lld", h->element[k]->str, v->integer);
                else if (v->type == REDIS_REPLY_STRING || v->type == REDIS_REPLY_STATUS)
                    printf(" %s=%s", h->element[k]->str, v->str);
            }
            printf("\n");
        }
    }
    if (g)
        freeReplyObject(g);
    printf("dead letters %s: %lld\n", DEAD, dead);
    return 0;
}

/* entry = [id, [field, value, ...]] */
static const char *field(const redisReply *entry, const char *name)
{
    const redisReply *f = entry->element[1];
    for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2)
        if (strcmp(f->element[k]->str, name) == 0)
            return f->element[k + 1]->str;
    return "";
}

static void print_letter(const redisReply *e, int whole)
{
    const char *ev = field(e, "e")[0] ? field(e, "e") : field(e, "j");
    printf("%s  entry %s  tries %s  error: %s\n", e->element[0]->str, field(e, "entry"),
           field(e, "tries"), field(e, "error"));
    if (whole)
        printf("  event: %s\n", ev);
    else
        printf("  event: %.160s%s\n", ev, strlen(ev) > 160 ? "..." : "");
}

static redisReply *letters(redisContext *r, const char *from, const char *to, long n)
{
    redisReply *x =
        call(r, "XRANGE", redisCommand(r, "XRANGE " DEAD " %s %s COUNT %ld", from, to, n));
    if (x && x->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(x);
        return NULL;
    }
    return x;
}

static int list(redisContext *r, long n)
{
    redisReply *x = letters(r, "-", "+", n);
    if (x == NULL)
        return 1;
    for (size_t i = 0; i < x->elements; i++)
        print_letter(x->element[i], 0);
    if (x->elements == 0)
        printf("no dead letters\n");
    freeReplyObject(x);
    return 0;
}

/* requeue or drop one letter (the array element e); 0 when done */
static int act(redisContext *r, const redisReply *e, int requeue)
{
    const char *id = e->element[0]->str;
    if (requeue) {
        const char *name = field(e, "e")[0] ? "e" : "j"; /* a game event, or a job */
        const char *ev = field(e, name);
        if (ev[0] == '\0') {
            fprintf(stderr, "mmo queue: %s holds no event to requeue\n", id);
            return 1;
        }
        redisReply *a = call(r, "XADD", redisCommand(r, "XADD " STREAM " * %s %s", name, ev));
        if (a == NULL)
            return 1;
        printf("requeued %s as %s\n", id, a->str);
        freeReplyObject(a);
    }
    redisReply *d = call(r, "XDEL", redisCommand(r, "XDEL " DEAD " %s", id));
    if (d == NULL)
        return 1;
    if (!requeue)
        printf("dropped %s\n", id);
    freeReplyObject(d);
    return 0;
}

static int one_or_all(redisContext *r, const char *id, int requeue)
{
    int all = strcmp(id, "--all") == 0;
    int rc = 0, done = 0;
    for (;;) {
        redisReply *x = all ? letters(r, "-", "+", 500) : letters(r, id, id, 1);
        if (x == NULL)
            return 1;
        if (x->elements == 0) {
            freeReplyObject(x);
            break;
        }
        for (size_t i = 0; i < x->elements; i++) {
            rc |= act(r, x->element[i], requeue);
            done++;
        }
        freeReplyObject(x);
        if (!all || rc)
            break;
    }
    if (done == 0 && !all) {
        fprintf(stderr, "mmo queue: no dead letter %s\n", id);
        return 1;
    }
    if (all)
        printf("%d dead letter(s) %s\n", done, requeue ? "requeued" : "dropped");
    return rc;
}

int queue_cli(const struct conf *c, int argc, char **argv)
{
    /* argv: what follows "queue", options removed by the caller */
    const char *sub = argc > 0 ? argv[0] : "stats";
    long limit = 20;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--limit") == 0)
            limit = strtol(argv[i + 1], NULL, 10);
    if (limit < 1 || limit > 100000) {
        fprintf(stderr, "mmo queue: --limit must be 1 to 100000\n");
        return 2;
    }
    int needs_id =
        strcmp(sub, "show") == 0 || strcmp(sub, "requeue") == 0 || strcmp(sub, "drop") == 0;
    if (needs_id && (argc < 2 || argv[1][0] == '\0')) {
        fprintf(stderr, "mmo queue %s: which dead letter? (an id from mmo queue dead%s)\n", sub,
                strcmp(sub, "show") == 0 ? "" : ", or --all");
        return 2;
    }
    if (!needs_id && strcmp(sub, "stats") != 0 && strcmp(sub, "dead") != 0) {
        fprintf(stderr, "mmo queue: unknown subcommand %s (stats, dead, show, requeue, drop)\n",
                sub);
        return 2;
    }
    redisContext *r = connect_redis(c);
    if (r == NULL)
        return 1;
    int rc;
    if (strcmp(sub, "stats") == 0) {
        rc = stats(r);
    } else if (strcmp(sub, "dead") == 0) {
        rc = list(r, limit);
    } else if (strcmp(sub, "show") == 0) {
        redisReply *x = letters(r, argv[1], argv[1], 1);
        rc = x == NULL || x->elements == 0;
        if (x && x->elements)
            print_letter(x->element[0], 1);
        else if (x)
            fprintf(stderr, "mmo queue: no dead letter %s\n", argv[1]);
        if (x)
            freeReplyObject(x);
    } else {
        rc = one_or_all(r, argv[1], strcmp(sub, "requeue") == 0);
    }
    redisFree(r);
    return rc;
}
