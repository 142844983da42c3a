/* backup.c -- `mmo backup` and `mmo restore` (backup.h says what a backup folder holds).
 *
 * Blocking libpq and hiredis, and pg_dump/pg_restore run as child processes: a command, never
 * the event loop. Every failure prints one line on stderr ("mmo backup: ..."), after the
 * message of the tool that failed, and the command exits 1. */
#include "backup.h"
#include "conf.h"
#include "log.h"
#include "mem.h"
#include "sentinel.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REDIS_MAGIC   "MMO-REDIS-DUMP 1\n"
#define REDIS_BATCH   256
#define MAX_DATABASES (CONF_MAX_SHARDS + 1)
#define MANIFEST      "manifest.json"
#define SUMS          "SHA256SUMS"
#define MAX_KEY_BYTES (512u << 20)
#define MAX_MANIFEST  (64 << 20)
#define MANIFEST_FMT  2 /* the newest this writes and reads */

static const char *who = "mmo backup";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", who);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- a growing string -------------------------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_add(b, tmp, n < (int) sizeof tmp ? (size_t) n : sizeof tmp - 1);
}

/* s as a JSON string, quotes included */
static void buf_json(struct buf *b, const char *s)
{
    size_t n = strlen(s), cap = n * 6 + 1;
    char *e = xmalloc(cap);
    size_t m = log_json_escape(e, cap, s, n);
    buf_add(b, "\"", 1);
    buf_add(b, e, m);
    buf_add(b, "\"", 1);
    free(e);
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ---- files --------------------------------------------------------------------------------- */

/* sha256 of a file as lowercase hex, and its size. 0, or -1 with errno set. */
static int file_sha256(const char *path, char hex[65], long long *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    unsigned char chunk[65536], out[32];
    size_t n;
    long long total = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        EVP_DigestUpdate(md, chunk, n);
        total += (long long) n;
    }
    int bad = ferror(f);
    fclose(f);
    EVP_DigestFinal_ex(md, out, NULL);
    EVP_MD_CTX_free(md);
    if (bad) {
        errno = EIO;
        return -1;
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", out[i]);
    if (size)
        *size = total;
    return 0;
}

static int write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        say("cannot write %s: %s", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

static char *read_all(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= max)
        buf_add(&b, chunk, n);
    fclose(f);
    if (b.p == NULL)
        buf_add(&b, "", 0);
    if (len)
        *len = b.len;
    return b.p;
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
    char *p = xstrdup(dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            say("cannot create %s: %s", p, strerror(errno));
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0755) < 0 && errno != EEXIST ? -1 : 0;
    if (rc < 0)
        say("cannot create %s: %s", p, strerror(errno));
    free(p);
    return rc;
}

/* ---- external commands ------------------------------------------------------------------- */

/* "--dbname=<conninfo>" for pg_dump/pg_restore without the password, which goes to *password
 * (or NULL) to be passed as PGPASSWORD: a command line is visible to every user (ps). */
static char *dbname_arg(const char *conninfo, char **password)
{
    *password = NULL;
    char *perr = NULL;
    struct buf b = {0};
    buf_printf(&b, "--dbname=");
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) { /* as it is: libpq will say what is wrong with it */
        PQfreemem(perr);
        buf_add(&b, conninfo, strlen(conninfo));
        return b.p;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "password") == 0) {
            *password = xstrdup(o->val);
            continue;
        }
        buf_printf(&b, "%s%s='", b.len > 9 ? " " : "", o->keyword);
        for (const char *v = o->val; *v; v++) {
            if (*v == '\'' || *v == '\\')
                buf_add(&b, "\\", 1);
            buf_add(&b, v, 1);
        }
        buf_add(&b, "'", 1);
    }
    PQconninfoFree(opts);
    return b.p;
}

/* Run argv[0] (from $MMO_PG_BIN when set, else PATH) to completion, at most timeout_s
 * seconds; its stderr is ours. 0, or -1 after saying why. */
static int run_tool(const char *what, char **argv, const char *password, int timeout_s)
{
    char exe[1024];
    const char *bin = getenv("MMO_PG_BIN");
    if (bin && bin[0])
        snprintf(exe, sizeof exe, "%s/%s", bin, argv[0]);
    else
        snprintf(exe, sizeof exe, "%s", argv[0]);
    int pfd[2];
    if (pipe(pfd) < 0 || fcntl(pfd[1], F_SETFD, FD_CLOEXEC) < 0) {
        say("pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        close(pfd[0]);
        int dn = open("/dev/null", O_RDONLY);
        if (dn >= 0)
            dup2(dn, 0);
        setenv("PGCONNECT_TIMEOUT", "10", 0);
        if (password)
            setenv("PGPASSWORD", password, 1);
        execvp(exe, argv);
        int e = errno;
        ssize_t w = write(pfd[1], &e, sizeof e);
        (void) w;
        _exit(127);
    }
    close(pfd[1]);
    int e = 0;
    ssize_t n = read(pfd[0], &e, sizeof e); /* EOF at exec, the errno when exec failed */
    close(pfd[0]);
    int st = 0;
    if (n == (ssize_t) sizeof e) {
        waitpid(pid, &st, 0);
        say("cannot run %s for %s: %s (set MMO_PG_BIN to the directory of the PostgreSQL "
            "client programs)",
            exe, what, strerror(e));
        return -1;
    }
    struct timespec start, now, tick = {0, 20 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            say("waitpid: %s", strerror(errno));
            return -1;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            say("%s for %s did not finish in %d s: stopped (--timeout)", argv[0], what, timeout_s);
            return -1;
        }
        nanosleep(&tick, NULL);
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st))
        say("%s for %s failed (exit status %d; its message is above)", argv[0], what,
            WEXITSTATUS(st));
    else
        say("%s for %s ended by signal %d", argv[0], what, WTERMSIG(st));
    return -1;
}

/* ---- PostgreSQL -------------------------------------------------------------------------- */

struct table {
    char *name; /* schema.table, quoted where needed */
    long long rows;
};

struct database {
    int shard;
    const char *conninfo;
    char file[32];
    char *source; /* host:port/dbname */
    char sha[65];
    long long size;
    struct table *t;
    int nt;
    long long rows;
};

static void database_clear(struct database *d)
{
    for (int i = 0; i < d->nt; i++)
        free(d->t[i].name);
    free(d->t);
    free(d->source);
    d->t = NULL;
    d->nt = 0;
    d->source = NULL;
}

static PGconn *pg_open(const char *conninfo, int shard, int timeout_s)
{
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {"10", who + 4, conninfo ? conninfo : "", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        char *m = c ? PQerrorMessage(c) : "out of memory";
        size_t n = strlen(m);
        while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
            n--;
        say("shard %d: cannot connect to PostgreSQL: %.*s", shard, (int) n, m);
        PQfinish(c);
        return NULL;
    }
    char set[96];
    snprintf(set, sizeof set, "SET statement_timeout = %lld", (long long) timeout_s * 1000);
    PGresult *r = PQexec(c, set);
    PQclear(r);
    return c;
}

/* One query; NULL after saying why. */
static PGresult *pg_query(PGconn *c, int shard, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK)
        return r;
    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    say("shard %d: %s: %s", shard, sql, m ? m : PQerrorMessage(c));
    PQclear(r);
    return NULL;
}

static char *source_of(PGconn *c)
{
    char s[512];
    snprintf(s, sizeof s, "%s:%s/%s", PQhost(c), PQport(c), PQdb(c));
    return xstrdup(s);
}

/* The tables of the database and the rows of each, into d->t (sorted by name, bytewise). */
static int count_tables(PGconn *c, struct database *d)
{
    PGresult *r = pg_query(
        c, d->shard,
        "SELECT t FROM (SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN "
        "pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname "
        "NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)') s "
        "ORDER BY t COLLATE \"C\"");
    if (r == NULL)
        return -1;
    d->nt = PQntuples(r);
    d->t = xcalloc((size_t) d->nt + 1, sizeof *d->t);
    d->rows = 0;
    for (int i = 0; i < d->nt; i++)
        d->t[i].name = xstrdup(PQgetvalue(r, i, 0));
    PQclear(r);
    for (int i = 0; i < d->nt; i++) {
        char sql[600];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", d->t[i].name);
        PGresult *q = pg_query(c, d->shard, sql);
        if (q == NULL)
            return -1;
        d->t[i].rows = atoll(PQgetvalue(q, 0, 0));
        d->rows += d->t[i].rows;
        PQclear(q);
    }
    return 0;
}

/* Relations (tables, views, sequences...) outside the system schemas; -1 on failure. */
static long long count_relations(PGconn *c, int shard)
{
    PGresult *r = pg_query(c, shard,
                           "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                           "c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
                           "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND "
                           "n.nspname !~ '^pg_(toast|temp)'");
    if (r == NULL)
        return -1;
    long long n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

/* pg_dump of one database into dir/d->file, the row counts from the same snapshot. */
static int dump_database(struct database *d, const char *dir, int timeout_s, int *migration)
{
    PGconn *c = pg_open(d->conninfo, d->shard, timeout_s);
    if (c == NULL)
        return -1;
    d->source = source_of(c);
    int rc = -1;
    char *path = path_join(dir, d->file);
    PGresult *r = pg_query(c, d->shard, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    if (r == NULL)
        goto done;
    PQclear(r);
    if ((r = pg_query(c, d->shard, "SELECT pg_export_snapshot()")) == NULL)
        goto done;
    char snapshot[128];
    snprintf(snapshot, sizeof snapshot, "--snapshot=%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (count_tables(c, d) < 0)
        goto done;
    if (migration) {
        r = pg_query(c, d->shard,
                     "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 ELSE "
                     "(SELECT coalesce(max(version), 0) FROM schema_migrations) END");
        if (r == NULL)
            goto done;
        *migration = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    char file[1100], what[32], *password;
    snprintf(file, sizeof file, "--file=%s", path);
    snprintf(what, sizeof what, "shard %d", d->shard);
    char *db = dbname_arg(d->conninfo, &password);
    char *argv[] = {"pg_dump", "--format=custom", "--no-password", snapshot, file, db, NULL};
    int ran = run_tool(what, argv, password, timeout_s);
    free(db);
    free(password);
    if (ran < 0)
        goto done;
    if (file_sha256(path, d->sha, &d->size) < 0) {
        say("cannot read %s: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(path);
    PQfinish(c);
    return rc;
}

/* ---- Redis ------------------------------------------------------------------------------- */

/* One Redis instance of a world: home (redis.dump) or one of redis.instances
 * (redis-<name>.dump). At backup, the instances of the configuration; at restore, those of the
 * manifest, each matched with the configured instance of its name. */
struct rinst {
    const char *name; /* borrowed (conf or manifest): what placement hashes */
    int home;
    const char *file; /* fname at backup; the manifest's at restore */
    char fname[48];
    char addr[SENTINEL_HOST_MAX + 8]; /* host:port, as resolved */
    char sha[65];
    long long size, keys;
    const struct jv *e; /* restore: its manifest entry */
    redisContext *r;    /* restore: the target */
};

/* The instances of c, home first (names borrowed from c); how many. */
static int redis_list(const struct conf *c, struct rinst *ri)
{
    memset(ri, 0, sizeof *ri * CONF_MAX_REDIS);
    ri[0].name = c->redis_name;
    ri[0].home = 1;
    snprintf(ri[0].fname, sizeof ri[0].fname, "redis.dump");
    ri[0].file = ri[0].fname;
    int n = 1;
    for (int i = 0; i < c->nredis_instances && n < CONF_MAX_REDIS; i++, n++) {
        ri[n].name = c->redis_instances[i].name;
        snprintf(ri[n].fname, sizeof ri[n].fname, "redis-%.32s.dump", ri[n].name);
        ri[n].file = ri[n].fname;
    }
    return n;
}

/* A connection to instance ri of c (its address, or asked of its sentinels), its replies
 * bounded by timeout_s; ri->addr set. NULL after saying why. */
static redisContext *redis_open(const struct conf *c, struct rinst *ri, int timeout_s)
{
    struct timeval ct = {c->redis_connect_timeout_ms / 1000,
                         (c->redis_connect_timeout_ms % 1000) * 1000};
    char host[SENTINEL_HOST_MAX], err[400];
    int port;
    const char *name = ri->home ? c->redis_name : ri->name;
    if (sentinel_resolve_conf(c, ri->home ? NULL : ri->name, host, sizeof host, &port, err,
                              sizeof err) < 0) {
        say("redis %s: %s", name, err);
        return NULL;
    }
    snprintf(ri->addr, sizeof ri->addr, "%s:%d", host, port);
    redisContext *r = redisConnectWithTimeout(host, port, ct);
    if (r == NULL || r->err) {
        say("redis %s (%s): %s", name, ri->addr, r ? r->errstr : "out of memory");
        if (r)
            redisFree(r);
        return NULL;
    }
    struct timeval t = {timeout_s, 0};
    redisSetTimeout(r, t);
    return r;
}

/* A reply of the expected type, or NULL after saying why (the caller frees it). */
static redisReply *redis_reply(redisContext *r, const char *what, int type)
{
    void *v = NULL;
    if (redisGetReply(r, &v) != REDIS_OK || v == NULL) {
        say("redis: %s: %s", what, r->errstr[0] ? r->errstr : "no answer");
        return NULL;
    }
    redisReply *x = v;
    if (x->type == REDIS_REPLY_ERROR || (type >= 0 && x->type != type)) {
        say("redis: %s: %s", what, x->type == REDIS_REPLY_ERROR ? x->str : "unexpected reply");
        freeReplyObject(x);
        return NULL;
    }
    return x;
}

static long long redis_dbsize(redisContext *r)
{
    redisAppendCommand(r, "DBSIZE");
    redisReply *x = redis_reply(r, "DBSIZE", REDIS_REPLY_INTEGER);
    long long n = x ? x->integer : -1;
    if (x)
        freeReplyObject(x);
    return n;
}

static void put_u32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

static void put_i64(FILE *f, int64_t v)
{
    uint64_t u = (uint64_t) v;
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char) (u >> (56 - 8 * i));
    fwrite(b, 1, 8, f);
}

/* Every key of database 0 of instance ri into dir/ri->file: DUMP and PTTL, written as records
 * of our own (REDIS_MAGIC, then 'K' keylen key payloadlen payload pttl, big-endian; 'E' count
 * at the end); ri->keys, sha and size set. */
static int dump_redis(const struct conf *c, struct rinst *ri, const char *dir, int timeout_s)
{
    redisContext *r = redis_open(c, ri, timeout_s);
    if (r == NULL)
        return -1;
    char *path = path_join(dir, ri->file);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        say("cannot write %s: %s", path, strerror(errno));
        free(path);
        redisFree(r);
        return -1;
    }
    fputs(REDIS_MAGIC, f);
    char cursor[32] = "0";
    long long n = 0;
    int rc = -1;
    do {
        redisAppendCommand(r, "SCAN %s COUNT 1000", cursor);
        redisReply *s = redis_reply(r, "SCAN", REDIS_REPLY_ARRAY);
        if (s == NULL)
            goto done;
        snprintf(cursor, sizeof cursor, "%s", s->element[0]->str);
        redisReply *ks = s->element[1];
        for (size_t i = 0; i < ks->elements; i++) {
            const char *argv[2] = {"DUMP", ks->element[i]->str};
            size_t lens[2] = {4, ks->element[i]->len};
            redisAppendCommandArgv(r, 2, argv, lens);
            argv[0] = "PTTL";
            redisAppendCommandArgv(r, 2, argv, lens);
        }
        for (size_t i = 0; i < ks->elements; i++) {
            redisReply *d = redis_reply(r, "DUMP", -1);
            redisReply *t = d ? redis_reply(r, "PTTL", REDIS_REPLY_INTEGER) : NULL;
            if (d == NULL || t == NULL) {
                if (d)
                    freeReplyObject(d);
                freeReplyObject(s);
                goto done;
            }
            /* gone since SCAN (nil), or expiring now: not in the backup */
            if (d->type == REDIS_REPLY_STRING && t->integer != -2) {
                fputc('K', f);
                put_u32(f, (uint32_t) ks->element[i]->len);
                fwrite(ks->element[i]->str, 1, ks->element[i]->len, f);
                put_u32(f, (uint32_t) d->len);
                fwrite(d->str, 1, d->len, f);
                put_i64(f, t->integer);
                n++;
            }
            freeReplyObject(d);
            freeReplyObject(t);
        }
        freeReplyObject(s);
    } while (strcmp(cursor, "0") != 0);
    fputc('E', f);
    put_i64(f, n);
    ri->keys = n;
    rc = 0;
done:
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || ferror(f)) {
        say("cannot write %s: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    redisFree(r);
    if (rc == 0 && file_sha256(path, ri->sha, &ri->size) < 0) {
        say("cannot read %s: %s", path, strerror(errno));
        rc = -1;
    }
    free(path);
    return rc;
}

static int get_bytes(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n ? 0 : -1;
}

static int get_u32(FILE *f, uint32_t *v)
{
    unsigned char b[4];
    if (get_bytes(f, b, 4) < 0)
        return -1;
    *v = (uint32_t) b[0] << 24 | (uint32_t) b[1] << 16 | (uint32_t) b[2] << 8 | b[3];
    return 0;
}

static int get_i64(FILE *f, int64_t *v)
{
    unsigned char b[8];
    if (get_bytes(f, b, 8) < 0)
        return -1;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | b[i];
    *v = (int64_t) u;
    return 0;
}

/* Read REDIS_BATCH replies of RESTORE; -1 on the first error. */
static int restore_replies(redisContext *r, int pending)
{
    int rc = 0;
    for (int i = 0; i < pending; i++) {
        redisReply *x = redis_reply(r, "RESTORE", REDIS_REPLY_STATUS);
        if (x == NULL)
            rc = -1;
        else
            freeReplyObject(x);
    }
    return rc;
}

/* RESTORE every record of path; *keys: how many. */
static int restore_redis(redisContext *r, const char *path, int force, long long *keys)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        say("cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char magic[sizeof REDIS_MAGIC];
    int rc = -1, pending = 0;
    long long n = 0;
    char *key = NULL, *val = NULL;
    if (get_bytes(f, magic, sizeof REDIS_MAGIC - 1) < 0 ||
        memcmp(magic, REDIS_MAGIC, sizeof REDIS_MAGIC - 1) != 0) {
        say("%s is not a Redis dump of mmo backup", path);
        goto done;
    }
    for (;;) {
        int tag = fgetc(f);
        if (tag == 'E')
            break;
        uint32_t kl, vl;
        int64_t ttl;
        if (tag != 'K' || get_u32(f, &kl) < 0 || kl > MAX_KEY_BYTES)
            goto bad;
        key = xrealloc(key, kl + 1);
        if (get_bytes(f, key, kl) < 0 || get_u32(f, &vl) < 0 || vl > MAX_KEY_BYTES)
            goto bad;
        val = xrealloc(val, vl + 1);
        if (get_bytes(f, val, vl) < 0 || get_i64(f, &ttl) < 0)
            goto bad;
        char ttls[24];
        snprintf(ttls, sizeof ttls, "%lld", (long long) (ttl > 0 ? ttl : 0));
        const char *argv[5] = {"RESTORE", key, ttls, val, "REPLACE"};
        size_t lens[5] = {7, kl, strlen(ttls), vl, 7};
        redisAppendCommandArgv(r, force ? 5 : 4, argv, lens);
        n++;
        if (++pending == REDIS_BATCH) {
            if (restore_replies(r, pending) < 0)
                goto done;
            pending = 0;
        }
    }
    int64_t count;
    if (get_i64(f, &count) < 0 || count != n)
        goto bad;
    if (restore_replies(r, pending) < 0)
        goto done;
    pending = 0;
    *keys = n;
    rc = 0;
    goto done;
bad:
    say("%s is cut short or damaged (after %lld keys)", path, n);
done:
    if (pending)
        restore_replies(r, pending);
    free(key);
    free(val);
    fclose(f);
    return rc;
}

/* ---- backup ------------------------------------------------------------------------------ */

static void remove_partial(const char *dir, const struct database *d, int nd,
                           const struct rinst *ri, int nr)
{
    for (int i = 0; i < nd; i++) {
        char *p = path_join(dir, d[i].file);
        unlink(p);
        free(p);
    }
    for (int i = 0; i < nr; i++) {
        char *p = path_join(dir, ri[i].file);
        unlink(p);
        free(p);
    }
    const char *names[] = {MANIFEST, SUMS};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char *p = path_join(dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
}

/* One Redis instance's entry of the manifest (the same shape for home and the others). */
static void manifest_redis(struct buf *b, const struct rinst *ri)
{
    buf_printf(b, "{\"instance\": ");
    buf_json(b, ri->name);
    buf_printf(b, ", \"file\": \"%s\", \"size\": %lld, \"sha256\": \"%s\", \"source\": ", ri->file,
               ri->size, ri->sha);
    char src[sizeof ri->addr + 2];
    snprintf(src, sizeof src, "%s/0", ri->addr);
    buf_json(b, src);
    buf_printf(b, ", \"keys\": %lld}", ri->keys);
}

/* Format 1 when Redis is one instance (as before there could be several), 2 with others in
 * "redis_instances": a reader of format 1 alone refuses it instead of restoring home alone. */
static int write_manifest(const char *dir, const char *stamp, const struct database *d, int nd,
                          int migration, const struct rinst *ri, int nr)
{
    struct buf b = {0};
    buf_printf(&b, "{\n  \"format\": %d,\n  \"created_at\": ", nr > 1 ? 2 : 1);
    buf_json(&b, stamp);
    buf_printf(&b, ",\n  \"node_version\": \"%s\",\n  \"node_commit\": \"%s\",\n", MMO_VERSION,
               MMO_GIT_COMMIT);
    buf_printf(&b, "  \"migration_version\": %d,\n  \"databases\": [\n", migration);
    for (int i = 0; i < nd; i++) {
        buf_printf(&b, "    {\"shard\": %d, \"file\": \"%s\", \"size\": %lld, \"sha256\": \"%s\", ",
                   d[i].shard, d[i].file, d[i].size, d[i].sha);
        buf_add(&b, "\"source\": ", 10);
        buf_json(&b, d[i].source);
        buf_printf(&b, ", \"rows\": %lld, \"tables\": {", d[i].rows);
        for (int k = 0; k < d[i].nt; k++) {
            buf_add(&b, k ? ", " : "", k ? 2 : 0);
            buf_json(&b, d[i].t[k].name);
            buf_printf(&b, ": %lld", d[i].t[k].rows);
        }
        buf_printf(&b, "}}%s\n", i + 1 < nd ? "," : "");
    }
    buf_printf(&b, "  ],\n  \"redis\": ");
    manifest_redis(&b, &ri[0]);
    if (nr > 1) {
        buf_printf(&b, ",\n  \"redis_instances\": [\n");
        for (int i = 1; i < nr; i++) {
            buf_printf(&b, "    ");
            manifest_redis(&b, &ri[i]);
            buf_printf(&b, "%s\n", i + 1 < nr ? "," : "");
        }
        buf_printf(&b, "  ]");
    }
    buf_printf(&b, "\n}\n");
    char *p = path_join(dir, MANIFEST);
    int rc = write_file(p, b.p, b.len);
    free(p);
    free(b.p);
    return rc;
}

static int write_sums(const char *dir, const struct database *d, int nd, const struct rinst *ri,
                      int nr)
{
    char msha[65];
    char *mp = path_join(dir, MANIFEST);
    int rc = file_sha256(mp, msha, NULL);
    free(mp);
    if (rc < 0)
        return -1;
    struct buf b = {0};
    for (int i = 0; i < nd; i++)
        buf_printf(&b, "%s  %s\n", d[i].sha, d[i].file);
    for (int i = 0; i < nr; i++)
        buf_printf(&b, "%s  %s\n", ri[i].sha, ri[i].file);
    buf_printf(&b, "%s  " MANIFEST "\n", msha);
    char *p = path_join(dir, SUMS);
    rc = write_file(p, b.p, b.len);
    free(p);
    free(b.p);
    return rc;
}

int backup_run(const struct conf *c, const char *dir, int timeout_s)
{
    who = "mmo backup";
    if (make_dirs(dir) < 0)
        return 1;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32], name[64];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    strftime(name, sizeof name, "backup-%Y%m%dT%H%M%SZ", &tm);
    char tmpname[96];
    snprintf(tmpname, sizeof tmpname, ".%s.partial-%d", name, (int) getpid());
    char *tmp = path_join(dir, tmpname);
    if (mkdir(tmp, 0700) < 0) {
        say("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return 1;
    }
    struct database d[MAX_DATABASES];
    memset(d, 0, sizeof d);
    struct rinst ri[CONF_MAX_REDIS];
    int all = redis_list(c, ri);
    int nd = 0, nr = 0, migration = 0, rc = 1;
    char *final = NULL;
    for (int i = -1; i < c->nshards; i++, nd++) {
        d[nd].shard = i < 0 ? 0 : c->shards[i].id;
        d[nd].conninfo = i < 0 ? c->pg_conninfo : c->shards[i].conninfo;
        snprintf(d[nd].file, sizeof d[nd].file, "shard%d.pgdump", d[nd].shard);
        if (dump_database(&d[nd], tmp, timeout_s, i < 0 ? &migration : NULL) < 0) {
            nd++;
            goto fail;
        }
        printf("shard %d (%s): %d tables, %lld rows, %lld bytes\n", d[nd].shard, d[nd].source,
               d[nd].nt, d[nd].rows, d[nd].size);
    }
    for (; nr < all; nr++) {
        if (dump_redis(c, &ri[nr], tmp, timeout_s) < 0) {
            nr++;
            goto fail;
        }
        printf("redis %s (%s): %lld keys, %lld bytes -> %s\n", ri[nr].name, ri[nr].addr,
               ri[nr].keys, ri[nr].size, ri[nr].file);
    }
    if (write_manifest(tmp, stamp, d, nd, migration, ri, nr) < 0 ||
        write_sums(tmp, d, nd, ri, nr) < 0)
        goto fail;
    final = path_join(dir, name);
    for (int k = 2; access(final, F_OK) == 0 && k < 100; k++) {
        free(final);
        char alt[80];
        snprintf(alt, sizeof alt, "%s-%d", name, k);
        final = path_join(dir, alt);
    }
    if (rename(tmp, final) < 0) {
        say("cannot rename %s to %s: %s", tmp, final, strerror(errno));
        goto fail;
    }
    chmod(final, 0755);
    printf("%s\n", final);
    rc = 0;
    goto out;
fail:
    remove_partial(tmp, d, nd, ri, nr);
    say("no backup was made");
out:
    for (int i = 0; i < nd; i++)
        database_clear(&d[i]);
    free(final);
    free(tmp);
    return rc;
}

/* ---- the manifest, read back: a small JSON reader ---------------------------------------- */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
    int type;
    double num;
    char *str;
    int n;
    char **keys; /* J_OBJ */
    struct jv *items;
};

static void jv_free(struct jv *v)
{
    free(v->str);
    for (int i = 0; i < v->n; i++) {
        if (v->keys)
            free(v->keys[i]);
        jv_free(&v->items[i]);
    }
    free(v->keys);
    free(v->items);
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p, char **out)
{
    struct buf b = {0};
    buf_add(&b, "", 0);
    for (p++; *p && *p != '"'; p++) {
        if ((unsigned char) *p < 0x20)
            goto bad;
        if (*p != '\\') {
            buf_add(&b, p, 1);
            continue;
        }
        p++;
        const char *esc = *p ? strchr("\"\\/bfnrt", *p) : NULL;
        if (*p == 'u') {
            unsigned cp = 0;
            for (int i = 1; i <= 4; i++) {
                int h = p[i] >= '0' && p[i] <= '9'   ? p[i] - '0'
                        : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
                        : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10
                                                     : -1;
                if (h < 0)
                    goto bad;
                cp = cp << 4 | (unsigned) h;
            }
            char u[3];
            size_t n;
            if (cp < 0x80) { /* UTF-8; a surrogate half is kept as it is (we never write one) */
                u[0] = (char) cp, n = 1;
            } else if (cp < 0x800) {
                u[0] = (char) (0xc0 | cp >> 6), u[1] = (char) (0x80 | (cp & 0x3f)), n = 2;
            } else {
                u[0] = (char) (0xe0 | cp >> 12), u[1] = (char) (0x80 | (cp >> 6 & 0x3f));
                u[2] = (char) (0x80 | (cp & 0x3f)), n = 3;
            }
            buf_add(&b, u, n);
            p += 4;
        } else if (esc && *p) {
            buf_add(&b, &"\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"], 1);
        } else {
            goto bad;
        }
    }
    if (*p != '"')
        goto bad;
    *out = b.p;
    return p + 1;
bad:
    free(b.p);
    return NULL;
}

static const char *json_value(const char *p, struct jv *v, int depth)
{
    memset(v, 0, sizeof *v);
    p = skip_ws(p);
    if (depth > 16)
        return NULL;
    if (*p == '"') {
        v->type = J_STR;
        return json_string(p, &v->str);
    }
    if (*p == '{' || *p == '[') {
        int obj = *p == '{';
        v->type = obj ? J_OBJ : J_ARR;
        p = skip_ws(p + 1);
        if (*p == (obj ? '}' : ']'))
            return p + 1;
        for (;;) {
            /* the slot first, zeroed, so that jv_free can free a half-read value */
            v->items = xrealloc(v->items, sizeof *v->items * (size_t) (v->n + 1));
            memset(&v->items[v->n], 0, sizeof *v->items);
            if (obj) {
                v->keys = xrealloc(v->keys, sizeof *v->keys * (size_t) (v->n + 1));
                v->keys[v->n] = NULL;
            }
            struct jv *item = &v->items[v->n++];
            if (obj) {
                if (*p != '"' || (p = json_string(p, &v->keys[v->n - 1])) == NULL)
                    return NULL;
                p = skip_ws(p);
                if (*p++ != ':')
                    return NULL;
            }
            if ((p = json_value(p, item, depth + 1)) == NULL)
                return NULL;
            p = skip_ws(p);
            if (*p == ',') {
                p = skip_ws(p + 1);
                continue;
            }
            return *p == (obj ? '}' : ']') ? p + 1 : NULL;
        }
    }
    char *end;
    v->num = strtod(p, &end);
    if (end != p) {
        v->type = J_NUM;
        return end;
    }
    static const char *const lits[] = {"null", "true", "false"};
    for (int i = 0; i < 3; i++)
        if (strncmp(p, lits[i], strlen(lits[i])) == 0) {
            v->type = i ? J_BOOL : J_NULL;
            v->num = i == 1;
            return p + strlen(lits[i]);
        }
    return NULL;
}

static const struct jv *jv_get(const struct jv *o, const char *key, int type)
{
    for (int i = 0; o && o->type == J_OBJ && i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return o->items[i].type == type ? &o->items[i] : NULL;
    return NULL;
}

/* ---- restore ----------------------------------------------------------------------------- */

/* Every line of SHA256SUMS checked against its file, manifest.json among them; *nfiles: how
 * many. 0, or -1 after saying what does not match. */
static int check_sums(const char *dir, int *nfiles)
{
    char *sp = path_join(dir, SUMS);
    char *sums = read_all(sp, 1 << 20, NULL);
    free(sp);
    if (sums == NULL) {
        say("%s/%s: %s (not a backup folder?)", dir, SUMS, strerror(errno));
        return -1;
    }
    int rc = 0, n = 0, has_manifest = 0;
    char *save = NULL;
    for (char *line = strtok_r(sums, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char want[65], name[256];
        if (sscanf(line, "%64s  %255s", want, name) != 2 || strchr(name, '/') || name[0] == '.') {
            say("%s: a line is not \"sha256  file\": %.80s", SUMS, line);
            rc = -1;
            break;
        }
        char got[65];
        char *p = path_join(dir, name);
        int ok = file_sha256(p, got, NULL);
        free(p);
        if (ok < 0) {
            say("%s: %s", name, strerror(errno));
            rc = -1;
        } else if (strcmp(got, want) != 0) {
            say("%s: checksum mismatch (the backup was changed or damaged)", name);
            rc = -1;
        }
        has_manifest |= strcmp(name, MANIFEST) == 0;
        n++;
    }
    free(sums);
    if (rc == 0 && !has_manifest) {
        say("%s does not list %s", SUMS, MANIFEST);
        rc = -1;
    }
    *nfiles = n;
    return rc;
}

/* The manifest's entries that name a file: "redis" (home; NULL when missing), then each of
 * "redis_instances", then each of "databases"; i from 0 to manifest_entries(m) - 1. */
static const struct jv *manifest_entry(const struct jv *m, int i)
{
    const struct jv *others = jv_get(m, "redis_instances", J_ARR);
    const struct jv *dbs = jv_get(m, "databases", J_ARR);
    int no = others ? others->n : 0;
    if (i == 0)
        return jv_get(m, "redis", J_OBJ);
    return i - 1 < no ? &others->items[i - 1] : &dbs->items[i - 1 - no];
}

static int manifest_entries(const struct jv *m)
{
    const struct jv *others = jv_get(m, "redis_instances", J_ARR);
    const struct jv *dbs = jv_get(m, "databases", J_ARR);
    return 1 + (others ? others->n : 0) + (dbs ? dbs->n : 0);
}

/* Every file the manifest names, against its sum and size there. 0, or -1 after saying. */
static int check_manifest_files(const char *dir, const struct jv *m)
{
    int rc = 0, n = manifest_entries(m);
    for (int i = 0; rc == 0 && i < n; i++) {
        const struct jv *e = manifest_entry(m, i);
        const struct jv *file = jv_get(e, "file", J_STR), *sha = jv_get(e, "sha256", J_STR),
                        *size = jv_get(e, "size", J_NUM);
        if (!file || !sha || !size || strchr(file->str, '/')) {
            say("%s: an entry lacks file, sha256 or size", MANIFEST);
            rc = -1;
            break;
        }
        char got[65];
        long long bytes = 0;
        char *p = path_join(dir, file->str);
        int ok = file_sha256(p, got, &bytes);
        free(p);
        if (ok < 0 || strcmp(got, sha->str) != 0 || bytes != (long long) size->num) {
            say("%s: does not match %s (the backup was changed or damaged)", file->str, MANIFEST);
            rc = -1;
        }
    }
    if (rc == 0 && jv_get(m, "databases", J_ARR) == NULL) {
        say("%s: no databases", MANIFEST);
        rc = -1;
    }
    return rc;
}

/* The connection string of the shard with this id in c, or NULL. */
static const char *conninfo_of(const struct conf *c, int shard)
{
    if (shard == 0)
        return c->pg_conninfo;
    for (int i = 0; i < c->nshards; i++)
        if (c->shards[i].id == shard)
            return c->shards[i].conninfo;
    return NULL;
}

/* Row counts of the restored database against the manifest's entry e. */
static int verify_database(PGconn *pc, struct database *d, const struct jv *e)
{
    if (count_tables(pc, d) < 0)
        return -1;
    const struct jv *tables = jv_get(e, "tables", J_OBJ);
    int bad = tables == NULL || tables->n != d->nt;
    for (int k = 0; !bad && k < d->nt; k++) {
        const struct jv *want = jv_get(tables, d->t[k].name, J_NUM);
        if (want == NULL || (long long) want->num != d->t[k].rows) {
            say("shard %d: table %s has %lld rows, the backup %lld", d->shard, d->t[k].name,
                d->t[k].rows, want ? (long long) want->num : -1LL);
            bad = 1;
        }
    }
    if (bad) {
        if (tables == NULL || tables->n != d->nt)
            say("shard %d: %d tables restored, the backup has %d", d->shard, d->nt,
                tables ? tables->n : 0);
        return -1;
    }
    return 0;
}

static int restore_databases(const struct conf *c, const char *dir, const struct jv *dbs, int force,
                             int timeout_s)
{
    int nd = dbs->n > MAX_DATABASES ? MAX_DATABASES : dbs->n;
    struct database d[MAX_DATABASES];
    PGconn *pc[MAX_DATABASES] = {0};
    memset(d, 0, sizeof d);
    int rc = -1;
    /* every target first: reachable, and empty unless force; nothing written yet */
    for (int i = 0; i < nd; i++) {
        const struct jv *shard = jv_get(&dbs->items[i], "shard", J_NUM);
        d[i].shard = shard ? (int) shard->num : -1;
        d[i].conninfo = conninfo_of(c, d[i].shard);
        if (d[i].conninfo == NULL) {
            say("the backup holds shard %d; the configuration names no such shard (config.lua "
                "section shards)",
                d[i].shard);
            goto done;
        }
        if ((pc[i] = pg_open(d[i].conninfo, d[i].shard, timeout_s)) == NULL)
            goto done;
        d[i].source = source_of(pc[i]);
        long long rel = count_relations(pc[i], d[i].shard);
        if (rel < 0)
            goto done;
        if (rel > 0 && !force) {
            say("shard %d (%s) is not empty (%lld tables, sequences or views): nothing restored "
                "(restore into an empty database, or pass --force to replace what the backup "
                "holds)",
                d[i].shard, d[i].source, rel);
            goto done;
        }
    }
    for (int i = 0; i < nd; i++) {
        const struct jv *file = jv_get(&dbs->items[i], "file", J_STR);
        char *path = path_join(dir, file->str);
        char what[32], *password;
        snprintf(what, sizeof what, "shard %d", d[i].shard);
        char *db = dbname_arg(d[i].conninfo, &password);
        char *argv[] = {"pg_restore",
                        "--no-password",
                        "--exit-on-error",
                        "--single-transaction",
                        "--no-owner",
                        db,
                        force ? "--clean" : path,
                        force ? "--if-exists" : NULL,
                        force ? path : NULL,
                        NULL};
        int r = run_tool(what, argv, password, timeout_s);
        free(path);
        free(db);
        free(password);
        if (r < 0)
            goto done;
        if (verify_database(pc[i], &d[i], &dbs->items[i]) < 0)
            goto done;
        printf("shard %d (%s) <- %s: %d tables, %lld rows; row counts match the backup\n",
               d[i].shard, d[i].source, file->str, d[i].nt, d[i].rows);
    }
    rc = 0;
done:
    for (int i = 0; i < nd; i++) {
        PQfinish(pc[i]);
        database_clear(&d[i]);
    }
    return rc;
}

/* The backup's Redis instances ("redis", then "redis_instances" of manifest m) into ri, each
 * matched with the configured instance of its name: home with home (a backup that names no
 * instance, made before there could be several, is home's whatever home is called now), every
 * other with the one of redis.instances of that name. Then the configured instances the backup
 * lacks: placement by names would differ, so refused unless force, and left alone with it.
 * Nothing is connected to. The count, or -1 after saying why (nothing written). */
static int plan_redis(const struct conf *c, const struct jv *m, struct rinst *ri, int force)
{
    const struct jv *others = jv_get(m, "redis_instances", J_ARR);
    int n = 1 + (others ? others->n : 0);
    if (n > CONF_MAX_REDIS) {
        say("%s: %d Redis instances, more than %d: nothing restored", MANIFEST, n, CONF_MAX_REDIS);
        return -1;
    }
    memset(ri, 0, sizeof *ri * CONF_MAX_REDIS);
    int used[CONF_MAX_REDIS] = {0}; /* configured: 0 is home, 1 + k is redis.instances[k] */
    struct buf names = {0};         /* the backup's, for the message */
    int rc = -1;
    for (int i = 0; i < n; i++) {
        const struct jv *e = i == 0 ? jv_get(m, "redis", J_OBJ) : &others->items[i - 1];
        const struct jv *name = jv_get(e, "instance", J_STR);
        ri[i].e = e;
        ri[i].home = i == 0;
        ri[i].file = jv_get(e, "file", J_STR)->str; /* there: check_manifest_files */
        ri[i].name = name ? name->str : c->redis_name;
        buf_printf(&names, "%s\"%s\"", i ? ", " : "", ri[i].name);
        int at = -1;
        if (i == 0 && strcmp(ri[i].name, c->redis_name) == 0)
            at = 0;
        for (int k = 0; i > 0 && name && k < c->nredis_instances; k++)
            if (strcmp(c->redis_instances[k].name, name->str) == 0)
                at = 1 + k;
        if (i == 0 && at < 0) {
            say("the backup's home Redis instance is \"%s\", this configuration's is \"%s\" "
                "(redis.name, MMO_REDIS_NAME): nothing restored (what no tag places lives on "
                "home, and placement goes by names: restore with redis.name \"%s\")",
                ri[i].name, c->redis_name, ri[i].name);
            goto done;
        }
        if (at < 0) {
            say("the backup holds Redis instance \"%s\" (%s); the configuration has no "
                "instance of that name besides home (redis.instances, MMO_REDIS_INSTANCES): "
                "nothing restored (configure an instance named \"%s\", at any address)",
                name ? name->str : "?", ri[i].file, name ? name->str : "?");
            goto done;
        }
        if (used[at]) {
            say("%s names Redis instance \"%s\" twice: nothing restored", MANIFEST, ri[i].name);
            goto done;
        }
        used[at] = 1;
    }
    for (int k = 0; k < c->nredis_instances; k++) {
        const char *extra = c->redis_instances[k].name;
        if (used[1 + k])
            continue;
        if (!force) {
            say("Redis instance \"%s\" is configured but not in the backup, which has %s: "
                "placement by instance names would differ from the backup's (regions' keys, "
                "streams and channels would be looked for on other instances): nothing "
                "restored (configure the backup's instances, at any address; or pass --force "
                "to restore anyway and leave \"%s\" alone)",
                extra, names.p, extra);
            goto done;
        }
        say("Redis instance \"%s\" is not in the backup (which has %s): left alone (--force; "
            "placement by instance names differs from the backup's: see docs/operations.md, "
            "\"Several Redis instances\")",
            extra, names.p);
    }
    rc = n;
done:
    free(names.p);
    return rc;
}

int restore_run(const struct conf *c, const char *dir, int force, int timeout_s)
{
    who = "mmo restore";
    struct stat st;
    if (stat(dir, &st) < 0) {
        say("%s: %s", dir, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        say("%s: not a directory (give the backup-* folder that mmo backup made)", dir);
        return 1;
    }
    /* checksums before anything else: a changed byte and nothing is read further or written */
    int nfiles = 0;
    if (check_sums(dir, &nfiles) < 0) {
        say("nothing restored");
        return 1;
    }
    char *mp = path_join(dir, MANIFEST);
    char *text = read_all(mp, MAX_MANIFEST, NULL);
    free(mp);
    if (text == NULL) {
        say("%s/%s: %s (not a backup folder?)", dir, MANIFEST, strerror(errno));
        return 1;
    }
    struct jv m;
    const char *end = json_value(text, &m, 0);
    free(text);
    int rc = 1, nr = 0;
    struct rinst ri[CONF_MAX_REDIS];
    if (end == NULL || m.type != J_OBJ) {
        say("%s/%s is not valid JSON", dir, MANIFEST);
        goto done;
    }
    if (check_manifest_files(dir, &m) < 0) {
        say("nothing restored");
        goto done;
    }
    const struct jv *fmt = jv_get(&m, "format", J_NUM);
    if (fmt == NULL || (int) fmt->num < 1 || (int) fmt->num > MANIFEST_FMT ||
        jv_get(&m, "redis", J_OBJ) == NULL) {
        say("%s: format %d is not one this mmo reads (1 to %d)", MANIFEST, fmt ? (int) fmt->num : 0,
            MANIFEST_FMT);
        goto done;
    }
    printf("checksums: %d files match\n", nfiles);
    /* every Redis target: configured under the backup's names, reachable, empty unless force */
    if ((nr = plan_redis(c, &m, ri, force)) < 0) {
        nr = 0;
        goto done;
    }
    for (int i = 0; i < nr; i++) {
        if ((ri[i].r = redis_open(c, &ri[i], timeout_s)) == NULL) {
            say("nothing restored");
            goto done;
        }
        long long before = redis_dbsize(ri[i].r);
        if (before < 0)
            goto done;
        if (before > 0 && !force) {
            say("redis %s (%s) is not empty (%lld keys): nothing restored (restore into an "
                "empty Redis, or pass --force to replace the keys the backup holds)",
                ri[i].name, ri[i].addr, before);
            goto done;
        }
    }
    if (restore_databases(c, dir, jv_get(&m, "databases", J_ARR), force, timeout_s) < 0)
        goto done;
    for (int i = 0; i < nr; i++) {
        long long keys = 0;
        const struct jv *want = jv_get(ri[i].e, "keys", J_NUM);
        char *rpath = path_join(dir, ri[i].file);
        int bad = restore_redis(ri[i].r, rpath, force, &keys) < 0;
        free(rpath);
        long long after = bad ? -1 : redis_dbsize(ri[i].r);
        if (bad)
            goto done;
        if (want == NULL || (long long) want->num != keys || after < keys ||
            (!force && after != keys)) {
            say("redis %s: %lld keys restored, %lld in it now, the backup lists %lld", ri[i].name,
                keys, after, want ? (long long) want->num : -1LL);
            goto done;
        }
        printf("redis %s (%s) <- %s: %lld keys; the key count matches the backup\n", ri[i].name,
               ri[i].addr, ri[i].file, keys);
    }
    const struct jv *at = jv_get(&m, "created_at", J_STR), *ver = jv_get(&m, "node_version", J_STR);
    const struct jv *mig = jv_get(&m, "migration_version", J_NUM);
    printf("restored %s (made %s by mmo %s, migration %d)\n", dir, at ? at->str : "?",
           ver ? ver->str : "?", mig ? (int) mig->num : 0);
    rc = 0;
done:
    for (int i = 0; i < nr; i++)
        if (ri[i].r)
            redisFree(ri[i].r);
    jv_free(&m);
    return rc;
}
