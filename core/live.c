/* live.c -- live notifications across nodes (live.h). */
#include "live.h"
#include "auth.h"
#include "log.h"
#include "mem.h"
#include "rds.h"
#include "realtime.h"
#include "world.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct live {
    struct rds *rds;
    struct rds_sub *sub;
    struct realtime *rt;
    struct auth *auth;
    struct world *w;
    char *sender;
    size_t sender_len;
    uint64_t published, received, failed;
};

static void on_published(struct redisReply **replies, int n, int status, void *ud)
{
    struct live *l = ud;
    if (status != 0 || n < 1 || replies[0]->type == REDIS_REPLY_ERROR) {
        l->failed++;
        log_debug("live", "a notification was not published to other nodes");
    }
}

static void publish(struct live *l, char kind, const char *target, size_t tlen, const char *text,
                    size_t len)
{
    size_t n = l->sender_len + 1 + 1 + 1 + tlen + 1 + len;
    char *msg = xmalloc(n);
    char *p = msg;
    memcpy(p, l->sender, l->sender_len), p += l->sender_len;
    *p++ = '\t';
    *p++ = kind;
    *p++ = '\t';
    memcpy(p, target, tlen), p += tlen;
    *p++ = '\t';
    memcpy(p, text, len);
    /* rds copies the arguments: msg is ours to free at once */
    if (rds_publish(l->rds, LIVE_CHANNEL, msg, n, on_published, l) != 0)
        l->failed++;
    else
        l->published++;
    free(msg);
}

int live_send_region(struct live *l, const char *region, const char *text, size_t len)
{
    publish(l, 'r', region, strlen(region), text, len);
    return world_send_region(l->w, region, text, len);
}

int live_send_guild(struct live *l, int64_t guild, const char *text, size_t len)
{
    char g[24];
    int gn = snprintf(g, sizeof g, "%lld", (long long) guild);
    publish(l, 'g', g, (size_t) gn, text, len);
    return world_send_guild(l->w, guild, text, len);
}

int live_send_all(struct live *l, const char *text, size_t len)
{
    publish(l, 'a', "", 0, text, len);
    return world_send_all(l->w, text, len);
}

static int close_text(char *out, size_t cap, int code, const char *reason)
{
    return snprintf(out, cap, "%d\t%s", code, reason ? reason : "");
}

int live_close_account(struct live *l, int64_t account, int code, const char *reason)
{
    char a[24], t[160];
    int an = snprintf(a, sizeof a, "%lld", (long long) account);
    int tn = close_text(t, sizeof t, code, reason);
    publish(l, 'c', a, (size_t) an, t, tn < (int) sizeof t ? (size_t) tn : sizeof t - 1);
    return realtime_close_account(l->rt, account, code, reason);
}

int live_close_session(struct live *l, const char *sid, int code, const char *reason)
{
    char t[160];
    int tn = close_text(t, sizeof t, code, reason);
    publish(l, 's', sid, strlen(sid), t, tn < (int) sizeof t ? (size_t) tn : sizeof t - 1);
    return realtime_close_sid(l->rt, sid, code, reason);
}

void live_forget_session(struct live *l, const char *sid)
{
    publish(l, 'f', sid, strlen(sid), "", 0);
    if (l->auth)
        auth_session_forget(l->auth, sid);
}

/* "<code>\t<reason>" for target (an account or a session id) */
static void close_by(struct live *l, char kind, const char *target, const char *text, size_t len)
{
    char buf[160];
    if (len >= sizeof buf)
        len = sizeof buf - 1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    char *tab = strchr(buf, '\t');
    long code = strtol(buf, NULL, 10);
    if (tab == NULL || code < 1000 || code > 4999)
        return;
    if (kind == 'c')
        realtime_close_account(l->rt, strtoll(target, NULL, 10), (int) code, tab + 1);
    else
        realtime_close_sid(l->rt, target, (int) code, tab + 1);
}

/* "<sender>\t<kind>\t<target>\t<json>" from another node: delivered to our players */
static void on_message(const char *msg, size_t len, void *ud)
{
    struct live *l = ud;
    const char *end = msg + len;
    const char *t1 = memchr(msg, '\t', len);
    if (t1 == NULL || end - t1 < 4 || t1[2] != '\t')
        return;
    if ((size_t) (t1 - msg) == l->sender_len && memcmp(msg, l->sender, l->sender_len) == 0)
        return; /* our own: delivered when sent */
    char kind = t1[1];
    const char *target = t1 + 3;
    const char *t3 = memchr(target, '\t', (size_t) (end - target));
    if (t3 == NULL)
        return;
    const char *text = t3 + 1;
    size_t tlen = (size_t) (end - text), glen = (size_t) (t3 - target);
    char buf[128];
    if (glen >= sizeof buf)
        return;
    memcpy(buf, target, glen);
    buf[glen] = '\0';
    l->received++;
    if (kind == 'r')
        world_send_region(l->w, buf, text, tlen);
    else if (kind == 'g')
        world_send_guild(l->w, strtoll(buf, NULL, 10), text, tlen);
    else if (kind == 'a')
        world_send_all(l->w, text, tlen);
    else if (kind == 'c' || kind == 's')
        close_by(l, kind, buf, text, tlen);
    else if (kind == 'f' && l->auth && auth_sid_valid(buf, glen))
        auth_session_forget(l->auth, buf);
}

struct live *live_new(struct event_base *base, const struct rds_opts *ro, struct rds *rds,
                      struct realtime *rt, struct auth *auth, const char *sender)
{
    struct live *l = xcalloc(1, sizeof *l);
    l->rds = rds;
    l->rt = rt;
    l->auth = auth;
    l->w = realtime_world(rt);
    l->sender = xstrdup(sender);
    l->sender_len = strlen(sender);
    l->sub = rds_sub_new(base, ro, LIVE_CHANNEL, on_message, NULL, l);
    return l;
}

void live_free(struct live *l)
{
    if (l == NULL)
        return;
    rds_sub_free(l->sub);
    free(l->sender);
    free(l);
}

void live_stats(const struct live *l, uint64_t *published, uint64_t *received, uint64_t *failed)
{
    *published = l->published;
    *received = l->received;
    *failed = l->failed;
}
