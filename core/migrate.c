/* migrate.c -- `mmo migrate` and `mmo seed`: numbered SQL files applied once, in order.
 *
 * Blocking libpq on purpose: these are one-shot commands that run before (or beside) the
 * server, never inside its event loop. Every failure ends as one line in the caller's err
 * buffer; the detail from PostgreSQL is folded into that line. */
#include "migrate.h"
#include "mem.h"

#include <crypt.h>
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define ADMIN_NAME         "admin"
#define ADMIN_ROLES        "{player,moderator,designer,admin}"
#define ADMIN_MIN_PASSWORD 8
#define ADMIN_GEN_PASSWORD 20

/* ---- small helpers ----------------------------------------------------------------------- */

static void set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fold s onto one line in place: runs of whitespace become one space, ends trimmed. */
static void one_line(char *s)
{
    char *w = s;
    int space = 0;
    for (const char *r = s; *r; r++) {
        if (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r') {
            space = 1;
            continue;
        }
        if (space && w != s)
            *w++ = ' ';
        space = 0;
        *w++ = *r;
    }
    *w = '\0';
}

static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (err == NULL || cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    one_line(err);
}

static char *join_path(const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    size_t nl = strlen(name);
    char *p = xmalloc(dl + 1 + nl + 1);
    memcpy(p, dir, dl);
    p[dl] = '/';
    memcpy(p + dl + 1, name, nl + 1);
    return p;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

/* Read a whole file as a NUL-terminated string. Returns 0, or -1 with err set. */
static int read_file(const char *path, char **out, size_t *len, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = 0, size = 4096;
    char *buf = xmalloc(size);
    for (;;) {
        if (n + 1 >= size) {
            if (size > MIGRATE_MAX_FILE) {
                set_err(err, cap, "%s: larger than %d bytes", path, MIGRATE_MAX_FILE);
                goto fail;
            }
            size *= 2;
            buf = xrealloc(buf, size);
        }
        size_t r = fread(buf + n, 1, size - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        set_err(err, cap, "%s: read error", path);
        goto fail;
    }
    if (memchr(buf, '\0', n) != NULL) {
        set_err(err, cap, "%s: contains a NUL byte (not a SQL text file)", path);
        goto fail;
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
fail:
    fclose(f);
    free(buf);
    return -1;
}

static int sha256_hex(const char *data, size_t len, char out[65])
{
    static const char HEX[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = HEX[md[i] >> 4];
        out[2 * i + 1] = HEX[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t sl = strlen(s), xl = strlen(suffix);
    return sl >= xl && strcmp(s + sl - xl, suffix) == 0;
}

static int is_regular(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* "NNNN_name.sql" -> version, or -1 when the name has another shape. */
static int parse_name(const char *file)
{
    size_t len = strlen(file);
    if (len < 4 + 1 + 1 + 4)
        return -1;
    for (int i = 0; i < 4; i++)
        if (file[i] < '0' || file[i] > '9')
            return -1;
    if (file[4] != '_')
        return -1;
    for (size_t i = 5; i < len - 4; i++) {
        char c = file[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
        if (!ok)
            return -1;
    }
    return (file[0] - '0') * 1000 + (file[1] - '0') * 100 + (file[2] - '0') * 10 + (file[3] - '0');
}

/* ---- reading the files ------------------------------------------------------------------- */

static int cmp_version(const void *a, const void *b)
{
    const struct migrate_file *x = a, *y = b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    return strcmp(x->path, y->path);
}

void migrate_list_free(struct migrate_file *files, int n)
{
    for (int i = 0; files != NULL && i < n; i++) {
        free(files[i].name);
        free(files[i].path);
        free(files[i].sql);
    }
    free(files);
}

int migrate_list(const char *sql_dir, struct migrate_file **out, char *err, size_t cap)
{
    *out = NULL;
    DIR *d = opendir(sql_dir);
    if (d == NULL) {
        set_err(err, cap, "%s: %s", sql_dir, strerror(errno));
        return -1;
    }
    struct migrate_file *files = NULL;
    int n = 0, size = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *fn = de->d_name;
        if (fn[0] == '.' || !has_suffix(fn, ".sql"))
            continue;
        char *path = join_path(sql_dir, fn);
        if (!is_regular(path)) {
            free(path);
            continue;
        }
        int version = parse_name(fn);
        if (version < 0) {
            set_err(err, cap,
                    "%s: a migration is named NNNN_name.sql (4 digits, then [A-Za-z0-9_-])", path);
            free(path);
            goto fail;
        }
        if (n == size) {
            size = size ? size * 2 : 16;
            files = xrealloc(files, (size_t) size * sizeof *files);
        }
        struct migrate_file *f = &files[n++];
        memset(f, 0, sizeof *f);
        f->version = version;
        f->path = path;
        f->name = xstrndup(fn + 5, strlen(fn) - 5 - 4);
        if (read_file(path, &f->sql, &f->len, err, cap) < 0)
            goto fail;
        if (sha256_hex(f->sql, f->len, f->checksum) < 0) {
            set_err(err, cap, "%s: SHA-256 failed (libcrypto)", path);
            goto fail;
        }
    }
    closedir(d);
    d = NULL;
    if (n > 1)
        qsort(files, (size_t) n, sizeof *files, cmp_version);
    for (int i = 0; i < n; i++) {
        if (i > 0 && files[i].version == files[i - 1].version) {
            set_err(err, cap, "%s and %s have the same number %04d; renumber one of them",
                    files[i - 1].path, files[i].path, files[i].version);
            goto fail;
        }
        if (files[i].version != i + 1) {
            set_err(err, cap, "%s: migration %04d is missing (numbers start at 0001, no gaps)",
                    files[i].path, i + 1);
            goto fail;
        }
    }
    *out = files;
    return n;
fail:
    if (d != NULL)
        closedir(d);
    migrate_list_free(files, n);
    return -1;
}

/* ---- talking to PostgreSQL --------------------------------------------------------------- */

static PGconn *db_connect(const char *conninfo, const char *app, char *err, size_t cap)
{
    /* keywords before dbname are defaults that the connection string may override */
    const char *keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *vals[] = {"10", app, conninfo ? conninfo : "", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        set_err(err, cap, "cannot connect to PostgreSQL: %s",
                c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    if (PQsetClientEncoding(c, "UTF8") != 0) {
        set_err(err, cap, "cannot set client_encoding UTF8: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Line (1-based) of the character at 1-based position pos in the UTF-8 text sql. */
static int line_of(const char *sql, long pos)
{
    int line = 1;
    long chars = 0;
    for (const unsigned char *p = (const unsigned char *) sql; *p; p++) {
        if ((*p & 0xc0) != 0x80 && ++chars >= pos)
            break;
        if (*p == '\n')
            line++;
    }
    return line;
}

/* Describe a failed result of running file (path, sql; both may be NULL) into err. */
static void result_err(PGconn *c, PGresult *r, const char *path, const char *sql, char *err,
                       size_t cap)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (msg == NULL)
        msg = PQerrorMessage(c);
    if (path != NULL && sql != NULL && pos != NULL)
        set_err(err, cap, "%s:%d: %s (SQLSTATE %s)", path, line_of(sql, atol(pos)), msg,
                state ? state : "?");
    else if (path != NULL)
        set_err(err, cap, "%s: %s (SQLSTATE %s)", path, msg, state ? state : "?");
    else
        set_err(err, cap, "%s", msg);
}

/* Run sql (no parameters); 0 when it succeeded, else -1 with err set (what: context). */
static int exec_ok(PGconn *c, const char *sql, const char *what, char *err, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    char detail[512];
    result_err(c, r, NULL, NULL, detail, sizeof detail);
    set_err(err, cap, "%s: %s", what, detail);
    PQclear(r);
    return -1;
}

/* Run a file's SQL inside the open transaction. Returns 0; -1 with err set when it failed (the
 * transaction is then aborted); -2 when the file ended the transaction itself (what it ran
 * before that is committed). */
static int exec_file(PGconn *c, const char *path, const char *sql, char *err, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        PQclear(r);
        set_err(err, cap, "%s: COPY from/to the client is not supported in SQL files", path);
        return -1;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        result_err(c, r, path, sql, err, cap);
        PQclear(r);
        return -1;
    }
    PQclear(r);
    if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
        set_err(err, cap,
                "%s: ends the transaction it runs in (what came before that was committed and "
                "not recorded); remove its BEGIN/COMMIT/ROLLBACK",
                path);
        return -2;
    }
    return 0;
}

static void rollback(PGconn *c)
{
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
}

static int take_lock(PGconn *c, char *err, size_t cap)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)", (long long) MIGRATE_LOCK_KEY);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        result_err(c, r, NULL, NULL, err, cap);
        PQclear(r);
        return -1;
    }
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (got)
        return 0;
    printf("waiting for the migration lock (another node is migrating or seeding)\n");
    fflush(stdout);
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long) MIGRATE_LOCK_KEY);
    return exec_ok(c, sql, "taking the migration lock", err, cap);
}

/* Connect, quiet the notices, take the lock. NULL with err set on failure. */
static PGconn *open_locked(const char *conninfo, const char *app, char *err, size_t cap)
{
    PGconn *c = db_connect(conninfo, app, err, cap);
    if (c == NULL)
        return NULL;
    if (exec_ok(c, "SET client_min_messages = warning", "setup", err, cap) < 0 ||
        take_lock(c, err, cap) < 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Closing the session also releases its advisory lock. */
static void close_locked(PGconn *c)
{
    if (c == NULL)
        return;
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        rollback(c);
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", (long long) MIGRATE_LOCK_KEY);
    PQclear(PQexec(c, sql));
    PQfinish(c);
}

/* ---- the applied set --------------------------------------------------------------------- */

/* Rows of schema_migrations, checked against the files. */
struct applied {
    PGresult *res; /* NULL when the table does not exist */
    int n;         /* rows, versions 1..n */
};

static const char *applied_at(const struct applied *a, int i)
{
    return PQgetvalue(a->res, i, 3);
}

/* Load the applied migrations and check them against files[0..n): every applied version has
 * its file, with the same name and checksum, and they are 1..k with no hole. */
static int load_applied(PGconn *c, const struct migrate_file *files, int n, struct applied *a,
                        char *err, size_t cap)
{
    memset(a, 0, sizeof *a);
    PGresult *r = PQexec(c, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        result_err(c, r, NULL, NULL, err, cap);
        PQclear(r);
        return -1;
    }
    int exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists)
        return 0;
    r = PQexec(c, "SELECT version, name, checksum, "
                  "to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                  "FROM schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        result_err(c, r, NULL, NULL, err, cap);
        PQclear(r);
        return -1;
    }
    a->res = r;
    a->n = PQntuples(r);
    for (int i = 0; i < a->n; i++) {
        int v = atoi(PQgetvalue(r, i, 0));
        const char *name = PQgetvalue(r, i, 1);
        const char *sum = PQgetvalue(r, i, 2);
        if (v > n) {
            set_err(err, cap,
                    "the database has migration %04d_%s applied but there is no such file; "
                    "this checkout is older than the database",
                    v, name);
            return -1;
        }
        if (v != i + 1) {
            set_err(err, cap, "schema_migrations has a hole: version %04d is not recorded", i + 1);
            return -1;
        }
        const struct migrate_file *f = &files[i];
        if (strcmp(f->checksum, sum) != 0) {
            set_err(err, cap,
                    "%s was changed after it was applied (checksum %.12s, applied %.12s); "
                    "add a new migration instead",
                    f->path, f->checksum, sum);
            return -1;
        }
        if (strcmp(f->name, name) != 0) {
            set_err(err, cap,
                    "%s was renamed after it was applied (as %04d_%s.sql); rename it back", f->path,
                    v, name);
            return -1;
        }
    }
    return 0;
}

static void applied_free(struct applied *a)
{
    PQclear(a->res);
    a->res = NULL;
}

static const char CREATE_TABLE[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   " version integer PRIMARY KEY,"
                                   " name text NOT NULL,"
                                   " checksum text NOT NULL,"
                                   " applied_at timestamptz NOT NULL DEFAULT now())";

static int apply_one(PGconn *c, const struct migrate_file *f, char *err, size_t cap)
{
    double t0 = now_ms();
    if (exec_ok(c, "BEGIN", f->path, err, cap) < 0)
        return -1;
    int frc = exec_file(c, f->path, f->sql, err, cap);
    if (frc == -2)
        return -1;
    if (frc < 0)
        goto fail;
    char version[16];
    snprintf(version, sizeof version, "%d", f->version);
    const char *params[] = {version, f->name, f->checksum};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO schema_migrations (version, name, checksum, applied_at)"
                               " VALUES ($1, $2, $3, now())",
                               3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char detail[512];
        result_err(c, r, NULL, NULL, detail, sizeof detail);
        set_err(err, cap, "%s: recording it failed: %s", f->path, detail);
        PQclear(r);
        goto fail;
    }
    PQclear(r);
    if (exec_ok(c, "COMMIT", f->path, err, cap) < 0)
        goto fail;
    printf("applied %s (%.0f ms)\n", f->path, now_ms() - t0);
    fflush(stdout);
    return 0;
fail:
    rollback(c);
    size_t used = strlen(err);
    if (used + 1 < cap)
        snprintf(err + used, cap - used, "; the migration was rolled back");
    return -1;
}

int migrate_run(const char *conninfo, const char *sql_dir, int dry_run, char *err, size_t cap)
{
    struct migrate_file *files = NULL;
    struct applied a = {NULL, 0};
    int rc = -1;
    int n = migrate_list(sql_dir, &files, err, cap);
    if (n < 0)
        return -1;
    PGconn *c = open_locked(conninfo, "mmo migrate", err, cap);
    if (c == NULL)
        goto done;
    if (!dry_run && exec_ok(c, CREATE_TABLE, "creating schema_migrations", err, cap) < 0)
        goto done;
    if (load_applied(c, files, n, &a, err, cap) < 0)
        goto done;
    if (a.n == n) {
        printf("up to date (%d migration%s applied)\n", n, n == 1 ? "" : "s");
        fflush(stdout);
        rc = 0;
        goto done;
    }
    for (int i = a.n; i < n; i++) {
        if (dry_run) {
            printf("would apply %s\n", files[i].path);
            continue;
        }
        if (apply_one(c, &files[i], err, cap) < 0)
            goto done;
    }
    fflush(stdout);
    rc = 0;
done:
    applied_free(&a);
    close_locked(c);
    migrate_list_free(files, n);
    return rc;
}

int migrate_status(const char *conninfo, const char *sql_dir, char *err, size_t cap)
{
    struct migrate_file *files = NULL;
    struct applied a = {NULL, 0};
    int rc = -1;
    int n = migrate_list(sql_dir, &files, err, cap);
    if (n < 0)
        return -1;
    PGconn *c = db_connect(conninfo, "mmo migrate", err, cap);
    if (c == NULL)
        goto done;
    if (load_applied(c, files, n, &a, err, cap) < 0)
        goto done;
    for (int i = 0; i < n; i++) {
        if (i < a.n)
            printf("applied  %s  %s\n", files[i].path, applied_at(&a, i));
        else
            printf("pending  %s\n", files[i].path);
    }
    fflush(stdout);
    rc = n - a.n;
done:
    applied_free(&a);
    PQfinish(c);
    migrate_list_free(files, n);
    return rc;
}

/* ---- seed -------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Paths of sql_dir/seed/NAME.sql in name order; a missing seed directory gives none. */
static int list_seeds(const char *sql_dir, char ***out, char *err, size_t cap)
{
    *out = NULL;
    char *dir = join_path(sql_dir, "seed");
    DIR *d = opendir(dir);
    if (d == NULL) {
        int e = errno;
        if (e == ENOENT) {
            free(dir);
            return 0;
        }
        set_err(err, cap, "%s: %s", dir, strerror(e));
        free(dir);
        return -1;
    }
    char **paths = NULL;
    int n = 0, size = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !has_suffix(de->d_name, ".sql"))
            continue;
        char *path = join_path(dir, de->d_name);
        if (!is_regular(path)) {
            free(path);
            continue;
        }
        if (n == size) {
            size = size ? size * 2 : 16;
            paths = xrealloc(paths, (size_t) size * sizeof *paths);
        }
        paths[n++] = path;
    }
    closedir(d);
    free(dir);
    if (n > 1)
        qsort(paths, (size_t) n, sizeof *paths, cmp_str);
    *out = paths;
    return n;
}

static void free_strs(char **v, int n)
{
    for (int i = 0; v != NULL && i < n; i++)
        free(v[i]);
    free(v);
}

/* A random password of len characters from [A-Za-z0-9] (getrandom, no modulo bias). */
static int gen_password(char *out, size_t len)
{
    static const char ALPHA[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const unsigned limit = 256 - 256 % 62; /* 248: bytes at or above are discarded */
    size_t o = 0;
    while (o < len) {
        unsigned char buf[64];
        ssize_t got = getrandom(buf, sizeof buf, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (ssize_t i = 0; i < got && o < len; i++)
            if (buf[i] < limit)
                out[o++] = ALPHA[buf[i] % 62];
        explicit_bzero(buf, sizeof buf);
    }
    out[len] = '\0';
    return 0;
}

/* yescrypt hash of pw into out (cap bytes). 0, or -1 with err set. */
static int hash_password(const char *pw, char *out, size_t cap_out, char *err, size_t cap)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, (int) sizeof salt) == NULL) {
        set_err(err, cap, "crypt_gensalt_rn($y$) failed: %s", strerror(errno));
        return -1;
    }
    struct crypt_data *cd = xcalloc(1, sizeof *cd); /* 32 KB: not on the stack */
    const char *h = crypt_r(pw, salt, cd);
    int rc = -1;
    if (h == NULL || h[0] == '*')
        set_err(err, cap, "crypt_r failed: %s", strerror(errno));
    else if (strlen(h) >= cap_out)
        set_err(err, cap, "password hash too long");
    else {
        memcpy(out, h, strlen(h) + 1);
        rc = 0;
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

/* Create the admin account when no account is named admin (inside the seed transaction).
 * *created is 1 when it did; *generated then says whether pw was generated here. */
static int ensure_admin(PGconn *c, char *pw, size_t pw_cap, int *created, int *generated, char *err,
                        size_t cap)
{
    *created = *generated = 0;
    PGresult *r = PQexec(c, "SELECT 1 FROM accounts WHERE lower(username) = '" ADMIN_NAME "'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        result_err(c, r, NULL, NULL, err, cap);
        PQclear(r);
        return -1;
    }
    int exists = PQntuples(r) > 0;
    PQclear(r);
    if (exists)
        return 0;

    const char *env = getenv("MMO_ADMIN_PASSWORD");
    if (env != NULL && *env != '\0') {
        if (strlen(env) < ADMIN_MIN_PASSWORD) {
            set_err(err, cap, "MMO_ADMIN_PASSWORD is shorter than %d characters",
                    ADMIN_MIN_PASSWORD);
            return -1;
        }
        if (strlen(env) >= pw_cap) {
            set_err(err, cap, "MMO_ADMIN_PASSWORD is longer than %zu characters", pw_cap - 1);
            return -1;
        }
        memcpy(pw, env, strlen(env) + 1);
    } else {
        if (gen_password(pw, ADMIN_GEN_PASSWORD) < 0) {
            set_err(err, cap, "getrandom failed: %s", strerror(errno));
            return -1;
        }
        *generated = 1;
    }
    char hash[256];
    if (hash_password(pw, hash, sizeof hash, err, cap) < 0)
        return -1;
    const char *params[] = {hash};
    r = PQexecParams(c,
                     "INSERT INTO accounts (username, password_hash, roles)"
                     " VALUES ('" ADMIN_NAME "', $1, '" ADMIN_ROLES "')"
                     " ON CONFLICT ((lower(username))) DO NOTHING RETURNING id",
                     1, NULL, params, NULL, NULL, 0);
    explicit_bzero(hash, sizeof hash);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char detail[512];
        result_err(c, r, NULL, NULL, detail, sizeof detail);
        set_err(err, cap, "creating the admin account: %s", detail);
        PQclear(r);
        return -1;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return 0;
    }
    const char *id = PQgetvalue(r, 0, 0);
    char target[64];
    snprintf(target, sizeof target, "account:%s", id);
    PQclear(r);
    const char *aparams[] = {target};
    r = PQexecParams(c,
                     "INSERT INTO audit_log (actor, action, target, data)"
                     " VALUES (NULL, 'account.create', $1,"
                     " '{\"username\": \"" ADMIN_NAME "\", \"roles\": [\"player\", \"moderator\","
                     " \"designer\", \"admin\"], \"by\": \"mmo seed\"}')",
                     1, NULL, aparams, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        char detail[512];
        result_err(c, r, NULL, NULL, detail, sizeof detail);
        set_err(err, cap, "auditing the admin account: %s", detail);
        PQclear(r);
        return -1;
    }
    PQclear(r);
    *created = 1;
    return 0;
}

static int seed(const char *conninfo, const char *sql_dir, int with_admin, char *err, size_t cap)
{
    struct migrate_file *files = NULL;
    struct applied a = {NULL, 0};
    char **seeds = NULL;
    int nseeds = 0, rc = -1, created = 0, generated = 0;
    char pw[256] = "";
    PGconn *c = NULL;
    int n = migrate_list(sql_dir, &files, err, cap);
    if (n < 0)
        return -1;
    if ((nseeds = list_seeds(sql_dir, &seeds, err, cap)) < 0) {
        nseeds = 0;
        goto done;
    }
    if ((c = open_locked(conninfo, "mmo seed", err, cap)) == NULL)
        goto done;
    if (load_applied(c, files, n, &a, err, cap) < 0)
        goto done;
    if (a.n < n) {
        set_err(err, cap,
                "the database is not migrated (%d of %d migrations applied); run `mmo "
                "migrate` first",
                a.n, n);
        goto done;
    }
    if (exec_ok(c, "BEGIN", "seed", err, cap) < 0)
        goto done;
    for (int i = 0; i < nseeds; i++) {
        char *sql = NULL;
        size_t len = 0;
        if (read_file(seeds[i], &sql, &len, err, cap) < 0)
            goto done;
        int frc = exec_file(c, seeds[i], sql, err, cap);
        free(sql);
        if (frc < 0)
            goto done;
    }
    if (with_admin && ensure_admin(c, pw, sizeof pw, &created, &generated, err, cap) < 0)
        goto done;
    if (exec_ok(c, "COMMIT", "seed", err, cap) < 0)
        goto done;
    for (int i = 0; i < nseeds; i++)
        printf("seeded %s\n", seeds[i]);
    if (!with_admin)
        ; /* a shard: no accounts there */
    else if (created && generated)
        printf("admin password: %s\n", pw);
    else if (created)
        printf("admin account created (password from MMO_ADMIN_PASSWORD)\n");
    else
        printf("admin account exists (unchanged)\n");
    fflush(stdout);
    rc = 0;
done:
    if (rc < 0 && c != NULL && PQtransactionStatus(c) != PQTRANS_IDLE) {
        rollback(c);
        size_t used = strlen(err);
        if (used + 1 < cap)
            snprintf(err + used, cap - used, "; nothing was seeded");
    }
    explicit_bzero(pw, sizeof pw);
    applied_free(&a);
    close_locked(c);
    free_strs(seeds, nseeds);
    migrate_list_free(files, n);
    return rc;
}

int seed_run(const char *conninfo, const char *sql_dir, char *err, size_t cap)
{
    return seed(conninfo, sql_dir, 1, err, cap);
}

int seed_run_shard(const char *conninfo, const char *sql_dir, char *err, size_t cap)
{
    return seed(conninfo, sql_dir, 0, err, cap);
}
