/* world.c -- players in the live world; messages encoded once per event.
 *
 * Ownership: the world owns its players (a hash by id) and, through core/aoi.c, their
 * entities. Connections are the caller's (opaque pointers); frames are the sink's. */
#include "world.h"
#include "aoi.h"
#include "err.h"
#include "log.h"
#include "mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wp {
    int64_t id;
    uint64_t gen; /* this stay in the world: a new one each join (safe handles) */
    int64_t guild;
    char name[80]; /* JSON-escaped */
    struct aoi_ent *ent;
    void *conn; /* NULL: detached (this node's, connection lost) or another node's */
    double at;
    int64_t since; /* when this stay began on its home node (ms, wall clock): the later wins */
    double seen;   /* another node's: last heard of; detached: when; monotonic s */
    char home[48]; /* the node it plays on; "" for this node */
    int dirty;
    struct wp *next;  /* hash chain */
    struct wp *dnext; /* dirty list */
};

struct world {
    struct aoi *aoi;
    struct world_sink sink;
    struct world_bus bus;
    struct wp **buckets;
    size_t nbuckets, count;
    uint64_t gen_seq; /* the last generation given */
    struct wp *dirty;
    /* the event being told: frames about `subject` are built once, on first need */
    struct wp *subject;
    void *f_moved, *f_appear, *f_vanish;
};

/* ---- numbers and messages ------------------------------------------------------------------ */

static int fmt_num(char *out, size_t cap, double d)
{
    if (d == (double) (long long) d && fabs(d) < 1e15)
        return snprintf(out, cap, "%lld", (long long) d);
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(out, cap, "%.*g", prec, d);
        if (prec == 17 || strtod(out, NULL) == d)
            return n;
    }
    return 0;
}

/* p's message of kind; e is p's entity (p->ent is not set yet while p enters). */
static void *frame_of(struct world *w, int kind, struct wp *p, struct aoi_ent *e)
{
    char buf[256], x[32], y[32];
    double px = aoi_ent_x(e), py = aoi_ent_y(e);
    int n = 0;
    switch (kind) {
    case AOI_MOVED:
        fmt_num(x, sizeof x, px);
        fmt_num(y, sizeof y, py);
        n = snprintf(buf, sizeof buf, "{\"t\":\"moved\",\"id\":%lld,\"x\":%s,\"y\":%s}",
                     (long long) p->id, x, y);
        break;
    case AOI_APPEAR:
        fmt_num(x, sizeof x, px);
        fmt_num(y, sizeof y, py);
        n = snprintf(buf, sizeof buf,
                     "{\"t\":\"appear\",\"id\":%lld,\"name\":\"%s\",\"x\":%s,\"y\":%s}",
                     (long long) p->id, p->name, x, y);
        break;
    default: n = snprintf(buf, sizeof buf, "{\"t\":\"vanish\",\"id\":%lld}", (long long) p->id);
    }
    return w->sink.frame_new(buf, (size_t) n, w->sink.ud);
}

static void on_aoi(int kind, struct aoi_ent *receiver, struct aoi_ent *subject, void *ud)
{
    struct world *w = ud;
    struct wp *to = aoi_ent_ud(receiver), *about = aoi_ent_ud(subject);
    if (to->conn == NULL)
        return; /* another node's player (its node tells it) or one without a connection */
    if (about == w->subject) {
        void **slot =
            kind == AOI_MOVED ? &w->f_moved : (kind == AOI_APPEAR ? &w->f_appear : &w->f_vanish);
        if (*slot == NULL)
            *slot = frame_of(w, kind, about, subject);
        w->sink.frame_send(to->conn, *slot, w->sink.ud);
    } else {
        void *f = frame_of(w, kind, about, subject); /* news of another, for the subject */
        w->sink.frame_send(to->conn, f, w->sink.ud);
        w->sink.frame_unref(f, w->sink.ud);
    }
}

static void begin(struct world *w, struct wp *subject)
{
    w->subject = subject;
    w->f_moved = w->f_appear = w->f_vanish = NULL;
}

static void end(struct world *w)
{
    void *fs[3] = {w->f_moved, w->f_appear, w->f_vanish};
    for (int i = 0; i < 3; i++)
        if (fs[i])
            w->sink.frame_unref(fs[i], w->sink.ud);
    begin(w, NULL);
}

/* ---- the player table ------------------------------------------------------------------------ */

static size_t slot_of(const struct world *w, int64_t id)
{
    uint64_t h = (uint64_t) id * 0x9E3779B97F4A7C15ULL;
    return (size_t) (h >> 20) & (w->nbuckets - 1);
}

static struct wp *find(const struct world *w, int64_t id)
{
    for (struct wp *p = w->buckets[slot_of(w, id)]; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

static void grow(struct world *w)
{
    size_t old = w->nbuckets;
    struct wp **ob = w->buckets;
    w->nbuckets = old * 2;
    w->buckets = xcalloc(w->nbuckets, sizeof *w->buckets);
    for (size_t i = 0; i < old; i++) {
        struct wp *p = ob[i], *next;
        for (; p; p = next) {
            next = p->next;
            size_t s = slot_of(w, p->id);
            p->next = w->buckets[s];
            w->buckets[s] = p;
        }
    }
    free(ob);
}

static void undirty(struct world *w, struct wp *p)
{
    if (p->dirty) {
        struct wp **dp = &w->dirty;
        while (*dp != p)
            dp = &(*dp)->dnext;
        *dp = p->dnext;
        p->dirty = 0;
    }
}

static void unlink_player(struct world *w, struct wp *p)
{
    struct wp **pp = &w->buckets[slot_of(w, p->id)];
    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    undirty(w, p);
    w->count--;
}

static void mark_dirty(struct world *w, struct wp *p)
{
    if (!p->dirty) {
        p->dirty = 1;
        p->dnext = w->dirty;
        w->dirty = p;
    }
}

/* Into the table and the world at (x, y) of region r (appear to whoever sees it). */
static void insert(struct world *w, struct wp *p, int r, double x, double y)
{
    if (w->count >= w->nbuckets)
        grow(w);
    size_t s = slot_of(w, p->id);
    p->next = w->buckets[s];
    w->buckets[s] = p;
    w->count++;
    begin(w, p);
    p->ent = aoi_enter(w->aoi, p->id, r, x, y, p);
    end(w);
}

/* Out of the table and the world (vanish to whoever saw it), freed. */
static void drop(struct world *w, struct wp *p)
{
    unlink_player(w, p);
    begin(w, p);
    aoi_leave(w->aoi, p->ent);
    end(w);
    free(p);
}

/* ---- the API ------------------------------------------------------------------------------------
 */

struct world *world_new(double view_radius, const struct world_sink *sink)
{
    struct world *w = xcalloc(1, sizeof *w);
    w->sink = *sink;
    w->aoi = aoi_new(view_radius, on_aoi, w);
    w->nbuckets = 1024;
    w->buckets = xcalloc(w->nbuckets, sizeof *w->buckets);
    return w;
}

void world_set_bus(struct world *w, const struct world_bus *bus)
{
    if (bus)
        w->bus = *bus;
    else
        memset(&w->bus, 0, sizeof w->bus);
}

static void tell_joined(struct world *w, const struct wp *p)
{
    if (w->bus.joined)
        w->bus.joined(p->id, p->name, p->guild, p->since, aoi_ent_x(p->ent), aoi_ent_y(p->ent),
                      w->bus.ud);
}

static int64_t stamp_ms(double now)
{
    return (int64_t) (now * 1000.0);
}

void world_free(struct world *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->nbuckets; i++) {
        struct wp *p = w->buckets[i], *next;
        for (; p; p = next) {
            next = p->next;
            free(p);
        }
    }
    free(w->buckets);
    aoi_free(w->aoi); /* frees the entities */
    free(w);
}

int world_region_add(struct world *w, const char *id, double x0, double y0, double x1, double y1)
{
    int r = aoi_region_find(w->aoi, id);
    if (r >= 0)
        return 0; /* regions do not move while a node runs; a reload re-adds them */
    return aoi_region_add(w->aoi, id, x0, y0, x1, y1) < 0 ? ERR_INVALID : 0;
}

int world_regions(const struct world *w)
{
    return aoi_regions(w->aoi);
}

int world_join(struct world *w, void *conn, int64_t id, const char *name, int64_t guild,
               const char *region, double x, double y, double now, void **replaced)
{
    *replaced = NULL;
    int r = aoi_region_find(w->aoi, region);
    if (r < 0 || aoi_region_at(w->aoi, x, y) != r)
        return ERR_INVALID;
    struct wp *p = find(w, id);
    if (p) {
        /* the same player on a new connection: the old one is replaced, the entity stays where
         * it is (a detached player comes back; another node's becomes this node's) */
        *replaced = p->conn != conn ? p->conn : NULL;
        p->conn = conn;
        if (p->home[0] || *replaced == NULL) {
            int64_t t = stamp_ms(now);
            p->since = t > p->since ? t : p->since + 1;
            if (p->home[0])
                p->at = now;
            p->home[0] = '\0';
            tell_joined(w, p);
        }
        return 0;
    }
    p = xcalloc(1, sizeof *p);
    p->id = id;
    p->gen = ++w->gen_seq;
    p->guild = guild;
    p->conn = conn;
    p->at = now;
    p->since = stamp_ms(now);
    log_json_escape(p->name, sizeof p->name, name, strlen(name));
    insert(w, p, r, x, y);
    tell_joined(w, p);
    return 0;
}

int world_move(struct world *w, int64_t id, double x, double y, double now)
{
    struct wp *p = find(w, id);
    if (p == NULL || p->home[0])
        return ERR_NOTFOUND;
    int r = aoi_region_at(w->aoi, x, y);
    if (r < 0)
        return ERR_INVALID;
    begin(w, p);
    int rc = aoi_move(w->aoi, p->ent, r, x, y);
    end(w);
    if (rc == 0) {
        p->at = now;
        mark_dirty(w, p);
        if (w->bus.moved)
            w->bus.moved(id, x, y, w->bus.ud);
    }
    return rc;
}

int world_leave(struct world *w, int64_t id, void *conn)
{
    struct wp *p = find(w, id);
    if (p == NULL || p->conn != conn || conn == NULL)
        return ERR_NOTFOUND;
    drop(w, p);
    if (w->bus.left)
        w->bus.left(id, w->bus.ud);
    return 0;
}

int world_detach(struct world *w, int64_t id, void *conn, double mono)
{
    struct wp *p = find(w, id);
    if (p == NULL || p->conn != conn || conn == NULL)
        return ERR_NOTFOUND;
    p->conn = NULL;
    p->seen = mono;
    return 0;
}

/* ---- players of other nodes ---------------------------------------------------------------- */

/* A remote name is what its node escaped for JSON: refuse anything that could break out. */
static int name_ok(const char *name)
{
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *) name; *c; c++, n++)
        if (*c < 0x20 || *c == '"' || *c == '\\')
            return 0;
    return n > 0 && n < sizeof(((struct wp *) 0)->name);
}

static void place(struct world *w, struct wp *p, int r, double x, double y)
{
    if (aoi_ent_x(p->ent) == x && aoi_ent_y(p->ent) == y && aoi_ent_region(p->ent) == r)
        return;
    begin(w, p);
    aoi_move(w->aoi, p->ent, r, x, y);
    end(w);
}

int world_remote_join(struct world *w, const char *home, int64_t id, const char *name,
                      int64_t guild, int64_t since, double x, double y, double mono)
{
    int r = aoi_region_at(w->aoi, x, y);
    if (r < 0 || id <= 0 || !name_ok(name) || home[0] == '\0' ||
        strlen(home) >= sizeof(((struct wp *) 0)->home))
        return ERR_INVALID;
    struct wp *p = find(w, id);
    if (p) {
        if (since < p->since || (since == p->since && strcmp(home, p->home) != 0))
            return 1; /* an older stay (the one held is later): ignored */
        if (p->home[0] == '\0') {
            /* this node's player joined on another node since: it is that node's now */
            void *conn = p->conn;
            p->conn = NULL;
            undirty(w, p);
            snprintf(p->home, sizeof p->home, "%s", home);
            if (conn && w->sink.taken)
                w->sink.taken(conn, w->sink.ud);
        } else if (strcmp(p->home, home) != 0) {
            snprintf(p->home, sizeof p->home, "%s", home);
        }
        p->since = since;
        p->seen = mono;
        p->guild = guild > 0 ? guild : 0;
        snprintf(p->name, sizeof p->name, "%s", name);
        place(w, p, r, x, y);
        return 0;
    }
    p = xcalloc(1, sizeof *p);
    p->id = id;
    p->gen = ++w->gen_seq;
    p->guild = guild > 0 ? guild : 0;
    p->since = since;
    p->seen = mono;
    snprintf(p->home, sizeof p->home, "%s", home);
    snprintf(p->name, sizeof p->name, "%s", name);
    insert(w, p, r, x, y);
    return 0;
}

int world_remote_move(struct world *w, const char *home, int64_t id, double x, double y,
                      double mono)
{
    struct wp *p = find(w, id);
    if (p == NULL || p->home[0] == '\0' || strcmp(p->home, home) != 0)
        return ERR_NOTFOUND;
    int r = aoi_region_at(w->aoi, x, y);
    if (r < 0)
        return ERR_INVALID;
    p->seen = mono;
    place(w, p, r, x, y);
    return 0;
}

int world_remote_leave(struct world *w, const char *home, int64_t id)
{
    struct wp *p = find(w, id);
    if (p == NULL || p->home[0] == '\0' || strcmp(p->home, home) != 0)
        return ERR_NOTFOUND;
    drop(w, p);
    return 0;
}

int world_expire(struct world *w, double mono, double ttl, double grace)
{
    int n = 0;
    for (size_t b = 0; b < w->nbuckets; b++) {
        struct wp *p = w->buckets[b], *next;
        for (; p; p = next) {
            next = p->next;
            int remote = p->home[0] != '\0';
            if (p->conn || mono - p->seen <= (remote ? ttl : grace))
                continue;
            int64_t id = p->id;
            drop(w, p);
            if (!remote && w->bus.left)
                w->bus.left(id, w->bus.ud);
            n++;
        }
    }
    return n;
}

void world_each_local(const struct world *w,
                      void (*fn)(int64_t id, const char *name, int64_t guild, int64_t since,
                                 double x, double y, void *arg),
                      void *arg)
{
    for (size_t b = 0; b < w->nbuckets; b++)
        for (const struct wp *p = w->buckets[b]; p; p = p->next)
            if (p->home[0] == '\0')
                fn(p->id, p->name, p->guild, p->since, aoi_ent_x(p->ent), aoi_ent_y(p->ent), arg);
}

int world_position(const struct world *w, int64_t id, double *x, double *y, const char **region,
                   double *at)
{
    struct wp *p = find(w, id);
    if (p == NULL)
        return ERR_NOTFOUND;
    *x = aoi_ent_x(p->ent);
    *y = aoi_ent_y(p->ent);
    *region = aoi_region_id(w->aoi, aoi_ent_region(p->ent));
    *at = p->at;
    return 0;
}

int world_who(const struct world *w, int64_t id, const char **name, int64_t *guild)
{
    struct wp *p = find(w, id);
    if (p == NULL)
        return ERR_NOTFOUND;
    *name = p->name;
    *guild = p->guild;
    return 0;
}

uint64_t world_generation(const struct world *w, int64_t id)
{
    struct wp *p = find(w, id);
    return p ? p->gen : 0;
}

int world_set_guild(struct world *w, int64_t id, int64_t guild)
{
    struct wp *p = find(w, id);
    if (p == NULL)
        return ERR_NOTFOUND;
    p->guild = guild > 0 ? guild : 0;
    if (p->home[0] == '\0')
        tell_joined(w, p);
    return 0;
}

void *world_conn(const struct world *w, int64_t id)
{
    struct wp *p = find(w, id);
    return p ? p->conn : NULL;
}

struct visit {
    void (*fn)(int64_t, const char *, double, double, void *);
    void *arg;
};

static void visit_one(struct aoi_ent *e, void *arg)
{
    struct visit *v = arg;
    struct wp *p = aoi_ent_ud(e);
    v->fn(p->id, p->name, aoi_ent_x(e), aoi_ent_y(e), v->arg);
}

void world_each_visible(struct world *w, int64_t id,
                        void (*fn)(int64_t id, const char *name, double x, double y, void *arg),
                        void *arg)
{
    struct wp *p = find(w, id);
    if (p == NULL)
        return;
    struct visit v = {fn, arg};
    aoi_each_visible(w->aoi, p->ent, visit_one, &v);
}

struct fan {
    struct world *w;
    void *frame;
    int64_t guild;
    int n;
};

static void send_one(struct aoi_ent *e, void *arg)
{
    struct fan *f = arg;
    struct wp *p = aoi_ent_ud(e);
    if (p->conn == NULL)
        return;
    f->w->sink.frame_send(p->conn, f->frame, f->w->sink.ud);
    f->n++;
}

int world_send_region(struct world *w, const char *region, const char *text, size_t len)
{
    int r = aoi_region_find(w->aoi, region);
    if (r < 0 || aoi_region_count(w->aoi, r) == 0)
        return 0;
    struct fan f = {w, w->sink.frame_new(text, len, w->sink.ud), 0, 0};
    aoi_each_in_region(w->aoi, r, send_one, &f);
    w->sink.frame_unref(f.frame, w->sink.ud);
    return f.n;
}

static int send_where(struct world *w, int64_t guild, int all, const char *text, size_t len)
{
    void *frame = NULL;
    int n = 0;
    for (size_t i = 0; i < w->nbuckets; i++)
        for (struct wp *p = w->buckets[i]; p; p = p->next) {
            if (p->conn == NULL || (!all && p->guild != guild))
                continue;
            if (frame == NULL)
                frame = w->sink.frame_new(text, len, w->sink.ud);
            w->sink.frame_send(p->conn, frame, w->sink.ud);
            n++;
        }
    if (frame)
        w->sink.frame_unref(frame, w->sink.ud);
    return n;
}

int world_send_player(struct world *w, int64_t id, const char *text, size_t len)
{
    struct wp *p = find(w, id);
    if (p == NULL || p->conn == NULL)
        return 0;
    void *frame = w->sink.frame_new(text, len, w->sink.ud);
    w->sink.frame_send(p->conn, frame, w->sink.ud);
    w->sink.frame_unref(frame, w->sink.ud);
    return 1;
}

int world_send_guild(struct world *w, int64_t guild, const char *text, size_t len)
{
    return guild > 0 ? send_where(w, guild, 0, text, len) : 0;
}

int world_send_all(struct world *w, const char *text, size_t len)
{
    return send_where(w, 0, 1, text, len);
}

char *world_snapshot(const struct world *w, const char *region, size_t *len)
{
    int r = aoi_region_find(w->aoi, region);
    if (r < 0)
        return NULL;
    /* per player at most: the id (20), the name (80, escaped), two numbers (32 each), the
     * guild (20) and punctuation */
    size_t cap = 256 + (size_t) aoi_region_count(w->aoi, r) * 200, n = 0;
    char *out = xmalloc(cap);
    char esc[128];
    log_json_escape(esc, sizeof esc, region, strlen(region));
    n += (size_t) snprintf(out, cap, "{\"t\":\"observed\",\"region\":\"%s\",\"players\":[", esc);
    int first = 1;
    for (size_t b = 0; b < w->nbuckets; b++) {
        for (const struct wp *p = w->buckets[b]; p; p = p->next) {
            if (aoi_ent_region(p->ent) != r)
                continue;
            if (cap - n < 256) { /* the count said fewer players: grow */
                cap *= 2;
                out = xrealloc(out, cap);
            }
            char x[32], y[32];
            fmt_num(x, sizeof x, aoi_ent_x(p->ent));
            fmt_num(y, sizeof y, aoi_ent_y(p->ent));
            n += (size_t) snprintf(out + n, cap - n, "%s[%lld,\"%s\",%s,%s,%lld]", first ? "" : ",",
                                   (long long) p->id, p->name, x, y, (long long) p->guild);
            first = 0;
        }
    }
    n += (size_t) snprintf(out + n, cap - n, "]}");
    *len = n;
    return out;
}

int world_each_in_rects(const struct world *w, const char *region, const double *rects, int n,
                        void (*fn)(int rect, int64_t guild, void *arg), void *arg)
{
    int r = aoi_region_find(w->aoi, region);
    if (r < 0)
        return ERR_NOTFOUND;
    int seen = 0;
    for (size_t b = 0; b < w->nbuckets; b++) {
        for (const struct wp *p = w->buckets[b]; p; p = p->next) {
            if (aoi_ent_region(p->ent) != r)
                continue;
            seen++;
            double x = aoi_ent_x(p->ent), y = aoi_ent_y(p->ent);
            for (int i = 0; i < n; i++) {
                const double *q = rects + 4 * i;
                if (x >= q[0] && y >= q[1] && x < q[2] && y < q[3]) {
                    fn(i, p->guild, arg);
                    break;
                }
            }
        }
    }
    return seen;
}

int world_online(const struct world *w, const char *region)
{
    if (region == NULL)
        return (int) w->count;
    return aoi_region_count(w->aoi, aoi_region_find(w->aoi, region));
}

int world_take_dirty(struct world *w,
                     void (*fn)(int64_t id, const char *region, double x, double y, double at,
                                void *arg),
                     void *arg)
{
    int n = 0;
    while (w->dirty) {
        struct wp *p = w->dirty;
        w->dirty = p->dnext;
        p->dirty = 0;
        fn(p->id, aoi_region_id(w->aoi, aoi_ent_region(p->ent)), aoi_ent_x(p->ent),
           aoi_ent_y(p->ent), p->at, arg);
        n++;
    }
    return n;
}
