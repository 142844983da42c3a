/* test_migrate.c -- core/migrate.c against a real PostgreSQL.
 *
 * Needs MMO_TEST_PG (a libpq connection string for a server where we may CREATE DATABASE) and
 * MMO_SQL_DIR (the project's sql/ directory); `tools/dev test` sets both. The tests create
 * their own databases (mmo_migrate_test_<pid>, ..._real) and temp directories, and drop them
 * at the end. They run in order: each one starts from the state the previous one left. */
#include "mem.h"
#include "migrate.h"
#include "test.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SQL_T1   "CREATE TABLE t1 (id int PRIMARY KEY);\n"
#define SHA_T1   "2bce1ba8261098c46cf86cb191ad327b8f31c24a00f575fd16e0fd4aed9f9622"
#define ADMIN_PW "correct horse battery staple"

static struct {
    const char *pg;       /* MMO_TEST_PG: the maintenance connection */
    const char *real_sql; /* MMO_SQL_DIR */
    char db[64];          /* database for the temp-dir migrations */
    char db_real[80];     /* database for the project's sql/ */
    char *conninfo;       /* -> db */
    char *conninfo_real;  /* -> db_real */
    char dir[128];        /* temp sql dir */
    PGconn *c;            /* -> db, for checks */
    PGconn *r;            /* -> db_real, for checks */
} T;

/* ---- helpers ----------------------------------------------------------------------------- */

/* base with its dbname replaced by dbname; heap string. */
static char *conninfo_for(const char *base, const char *dbname)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &errmsg);
    if (opts == NULL) {
        fprintf(stderr, "MMO_TEST_PG is not a connection string: %s\n", errmsg ? errmsg : "");
        exit(2);
    }
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || strcmp(o->keyword, "dbname") == 0)
            continue;
        fprintf(f, "%s='", o->keyword);
        for (const char *p = o->val; *p; p++)
            fprintf(f, "%s%c", (*p == '\'' || *p == '\\') ? "\\" : "", *p);
        fprintf(f, "' ");
    }
    fprintf(f, "dbname='%s'", dbname);
    fclose(f);
    PQconninfoFree(opts);
    return out;
}

static PGconn *connect_or_die(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect (%s): %s\n", conninfo, PQerrorMessage(c));
        exit(2);
    }
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

/* Run sql; returns 0 if it succeeded. */
static int exec_sql(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}

/* First value of the first row as a heap string ("" when NULL; NULL on error or no row). */
static char *value(PGconn *c, const char *sql, const char *param)
{
    PGresult *r = PQexecParams(c, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    char *v = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        v = xstrdup(PQgetvalue(r, 0, 0));
    else if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "query failed: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return v;
}

static long count(PGconn *c, const char *sql)
{
    char *v = value(c, sql, NULL);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

static int table_exists(PGconn *c, const char *name)
{
    char *v = value(c, "SELECT to_regclass($1) IS NOT NULL", name);
    int yes = v && strcmp(v, "t") == 0;
    free(v);
    return yes;
}

static void write_file(const char *dir, const char *name, const char *content)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CORE_ASSERT(f != NULL);
    fputs(content, f);
    fclose(f);
}

static void remove_file(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new directory under $TMPDIR (tools/dev test points it into the run's temp dir) or /tmp. */
static void make_temp_dir(char *out, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, cap, "%s/mmo-migrate-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    CORE_ASSERT(mkdtemp(out) != NULL);
}

static int contains(const char *s, const char *needle)
{
    return s != NULL && strstr(s, needle) != NULL;
}

/* Run seed_run with stdout captured into a heap string (*out). */
static int seed_captured(const char *conninfo, const char *dir, char **out, char *err, size_t cap)
{
    char path[160];
    make_temp_dir(path, sizeof path - 8);
    strcat(path, "/out");
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    CORE_ASSERT(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    int rc = seed_run(conninfo, dir, err, cap);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    size_t len = (size_t) lseek(fd, 0, SEEK_END);
    char *buf = xcalloc(1, len + 1);
    CORE_ASSERT(pread(fd, buf, len, 0) == (ssize_t) len);
    close(fd);
    unlink(path);
    *strrchr(path, '/') = '\0';
    rmdir(path);
    fputs(buf, stdout); /* still show it, as the command would */
    *out = buf;
    return rc;
}

static int password_ok(const char *pw, const char *hash)
{
    struct crypt_data *cd = xcalloc(1, sizeof *cd);
    const char *h = crypt_r(pw, hash, cd);
    int ok = h != NULL && strcmp(h, hash) == 0;
    free(cd);
    return ok;
}

/* ---- migrate_list ------------------------------------------------------------------------ */

TEST(list_sorts_reads_and_hashes)
{
    char dir[128];
    make_temp_dir(dir, sizeof dir);
    write_file(dir, "0002_second.sql", "SELECT 2;\n");
    write_file(dir, "0001_first.sql", SQL_T1);
    write_file(dir, "README.md", "not a migration\n");
    write_file(dir, ".0003_hidden.sql", "SELECT 3;\n");
    char sub[160];
    snprintf(sub, sizeof sub, "%s/seed", dir);
    mkdir(sub, 0755);
    char err[256] = "";
    struct migrate_file *f = NULL;
    int n = migrate_list(dir, &f, err, sizeof err);
    rm_tree(dir);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(f[0].version, 1);
    ASSERT_STR(f[0].name, "first");
    ASSERT(contains(f[0].path, "/0001_first.sql"));
    ASSERT_STR(f[0].sql, SQL_T1);
    ASSERT_STR(f[0].checksum, SHA_T1);
    ASSERT_EQ(f[1].version, 2);
    ASSERT_STR(f[1].name, "second");
    migrate_list_free(f, n);
}

/* migrate_list on a directory holding the given files fails with err containing needle. */
static int list_fails(const char *names[], const char *needle)
{
    char dir[128];
    make_temp_dir(dir, sizeof dir);
    for (int i = 0; names[i] != NULL; i++)
        write_file(dir, names[i], "SELECT 1;\n");
    char err[256] = "";
    struct migrate_file *f = NULL;
    int n = migrate_list(dir, &f, err, sizeof err);
    rm_tree(dir);
    if (n >= 0) {
        migrate_list_free(f, n);
        fprintf(stderr, "expected an error containing \"%s\", got %d files\n", needle, n);
        return 0;
    }
    if (!contains(err, needle) || strchr(err, '\n') != NULL) {
        fprintf(stderr, "error \"%s\" lacks \"%s\" or is not one line\n", err, needle);
        return 0;
    }
    return f == NULL;
}

TEST(list_refuses_gaps_duplicates_and_bad_names)
{
    const char *gap[] = {"0001_a.sql", "0003_c.sql", NULL};
    ASSERT(list_fails(gap, "0003_c.sql: migration 0002 is missing"));
    const char *late[] = {"0002_b.sql", NULL};
    ASSERT(list_fails(late, "migration 0001 is missing"));
    const char *dup[] = {"0001_a.sql", "0002_b.sql", "0002_c.sql", NULL};
    ASSERT(list_fails(dup, "have the same number 0002"));
    const char *bad[] = {"0001_a.sql", "2_b.sql", NULL};
    ASSERT(list_fails(bad, "2_b.sql: a migration is named NNNN_name.sql"));
    const char *space[] = {"0001_a b.sql", NULL};
    ASSERT(list_fails(space, "NNNN_name.sql"));
    char err[256] = "";
    struct migrate_file *f = NULL;
    ASSERT_EQ(migrate_list("/nonexistent/mmo-sql", &f, err, sizeof err), -1);
    ASSERT(contains(err, "/nonexistent/mmo-sql"));
}

/* ---- migrate_run on a temp directory ----------------------------------------------------- */

TEST(applies_in_order_and_records_checksums)
{
    write_file(T.dir, "0001_t1.sql", SQL_T1);
    write_file(T.dir, "0002_t2.sql",
               "-- depends on 0001\nCREATE TABLE t2 (id int REFERENCES t1 (id));\n"
               "INSERT INTO t1 VALUES (1), (2);\nINSERT INTO t2 VALUES (1);\n");
    char err[256] = "";
    ASSERT_OK(migrate_run(T.conninfo, T.dir, 0, err, sizeof err));
    ASSERT(table_exists(T.c, "t1"));
    ASSERT(table_exists(T.c, "t2"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM t2"), 1);
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 2);
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations WHERE version = 1"
                         " AND name = 't1' AND checksum = '" SHA_T1 "'"),
              1);
    /* the checksum PostgreSQL computes of the same content */
    char *ok = value(T.c,
                     "SELECT checksum = encode(sha256(convert_to($1, 'UTF8')), 'hex')"
                     " FROM schema_migrations WHERE version = 2",
                     "-- depends on 0001\nCREATE TABLE t2 (id int REFERENCES t1 (id));\n"
                     "INSERT INTO t1 VALUES (1), (2);\nINSERT INTO t2 VALUES (1);\n");
    ASSERT_STR(ok, "t");
    free(ok);
}

TEST(applying_twice_is_a_no_op)
{
    char *before = value(T.c,
                         "SELECT string_agg(version || name || checksum || applied_at, ',' "
                         "ORDER BY version) FROM schema_migrations",
                         NULL);
    char err[256] = "";
    ASSERT_OK(migrate_run(T.conninfo, T.dir, 0, err, sizeof err));
    ASSERT_OK(migrate_run(T.conninfo, T.dir, 0, err, sizeof err));
    char *after = value(T.c,
                        "SELECT string_agg(version || name || checksum || applied_at, ',' "
                        "ORDER BY version) FROM schema_migrations",
                        NULL);
    ASSERT_STR(before, after);
    free(before);
    free(after);
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM t1"), 2);
    ASSERT_EQ(migrate_status(T.conninfo, T.dir, err, sizeof err), 0);
}

TEST(dry_run_changes_nothing)
{
    write_file(T.dir, "0003_t3.sql", "CREATE TABLE t3 (x int);\n");
    char err[256] = "";
    ASSERT_EQ(migrate_status(T.conninfo, T.dir, err, sizeof err), 1);
    ASSERT_OK(migrate_run(T.conninfo, T.dir, 1, err, sizeof err));
    ASSERT(!table_exists(T.c, "t3"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 2);
    ASSERT_OK(migrate_run(T.conninfo, T.dir, 0, err, sizeof err));
    ASSERT(table_exists(T.c, "t3"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 3);
}

TEST(a_changed_applied_file_is_refused)
{
    write_file(T.dir, "0001_t1.sql", SQL_T1 "-- an innocent comment\n");
    write_file(T.dir, "0004_t4.sql", "CREATE TABLE t4 (x int);\n");
    char err[512] = "";
    ASSERT_EQ(migrate_run(T.conninfo, T.dir, 0, err, sizeof err), -1);
    fprintf(stderr, "(expected) %s\n", err);
    char want[256];
    snprintf(want, sizeof want, "%s/0001_t1.sql was changed after it was applied", T.dir);
    ASSERT(contains(err, want));
    ASSERT(contains(err, "add a new migration instead"));
    ASSERT(strchr(err, '\n') == NULL);
    ASSERT(!table_exists(T.c, "t4"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 3);
    ASSERT_EQ(migrate_status(T.conninfo, T.dir, err, sizeof err), -1);
    ASSERT_EQ(migrate_run(T.conninfo, T.dir, 1, err, sizeof err), -1); /* dry run too */
    write_file(T.dir, "0001_t1.sql", SQL_T1);
    remove_file(T.dir, "0004_t4.sql");
}

TEST(a_renamed_applied_file_is_refused)
{
    remove_file(T.dir, "0003_t3.sql");
    write_file(T.dir, "0003_third.sql", "CREATE TABLE t3 (x int);\n");
    char err[512] = "";
    ASSERT_EQ(migrate_run(T.conninfo, T.dir, 0, err, sizeof err), -1);
    ASSERT(contains(err, "0003_third.sql was renamed after it was applied (as 0003_t3.sql)"));
    remove_file(T.dir, "0003_third.sql");
    write_file(T.dir, "0003_t3.sql", "CREATE TABLE t3 (x int);\n");
}

TEST(a_failing_migration_rolls_back_completely)
{
    write_file(T.dir, "0004_t4.sql",
               "CREATE TABLE t4 (x int);\nINSERT INTO t4 VALUES (1);\nCREATE TABL oops (x int);\n");
    write_file(T.dir, "0005_t5.sql", "CREATE TABLE t5 (x int);\n");
    char err[512] = "";
    ASSERT_EQ(migrate_run(T.conninfo, T.dir, 0, err, sizeof err), -1);
    fprintf(stderr, "(expected) %s\n", err);
    char want[256];
    snprintf(want, sizeof want, "%s/0004_t4.sql:3: syntax error", T.dir);
    ASSERT(contains(err, want));
    ASSERT(contains(err, "the migration was rolled back"));
    ASSERT(!table_exists(T.c, "t4"));
    ASSERT(!table_exists(T.c, "t5"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 3);
    /* an error found when executing, not parsing: still all or nothing */
    write_file(
        T.dir, "0004_t4.sql",
        "CREATE TABLE t4 (x int);\nINSERT INTO t4 VALUES (1);\nINSERT INTO t1 VALUES (1);\n");
    ASSERT_EQ(migrate_run(T.conninfo, T.dir, 0, err, sizeof err), -1);
    ASSERT(contains(err, "duplicate key value"));
    ASSERT(!table_exists(T.c, "t4"));
    /* fixed, it applies, and the one after it too */
    write_file(T.dir, "0004_t4.sql", "CREATE TABLE t4 (x int);\nINSERT INTO t4 VALUES (1);\n");
    ASSERT_OK(migrate_run(T.conninfo, T.dir, 0, err, sizeof err));
    ASSERT(table_exists(T.c, "t4"));
    ASSERT(table_exists(T.c, "t5"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 5);
}

TEST(a_file_that_ends_the_transaction_is_reported)
{
    write_file(T.dir, "0006_t6.sql", "CREATE TABLE t6 (x int);\nCOMMIT;\n");
    char err[512] = "";
    ASSERT_EQ(migrate_run(T.conninfo, T.dir, 0, err, sizeof err), -1);
    ASSERT(contains(err, "0006_t6.sql: ends the transaction it runs in"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 5);
    ASSERT_OK(exec_sql(T.c, "DROP TABLE t6"));
    remove_file(T.dir, "0006_t6.sql");
}

TEST(a_gap_in_the_directory_is_refused_before_connecting)
{
    write_file(T.dir, "0007_t7.sql", "CREATE TABLE t7 (x int);\n");
    char err[512] = "";
    ASSERT_EQ(migrate_run("host=/nonexistent", T.dir, 0, err, sizeof err), -1);
    ASSERT(contains(err, "migration 0006 is missing"));
    remove_file(T.dir, "0007_t7.sql");
}

TEST(a_bad_connection_is_one_line)
{
    char err[512] = "";
    ASSERT_EQ(migrate_run("host=127.0.0.1 port=1 connect_timeout=2", T.dir, 0, err, sizeof err),
              -1);
    ASSERT(contains(err, "cannot connect to PostgreSQL"));
    ASSERT(strchr(err, '\n') == NULL);
}

static int waitpid_ms(pid_t pid, int *status, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

TEST(nodes_migrating_at_once_take_turns)
{
    write_file(T.dir, "0006_t6.sql", "CREATE TABLE t6 (x int);\n");
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%lld)", (long long) MIGRATE_LOCK_KEY);
    ASSERT_OK(exec_sql(T.c, lock));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        char err[512] = "";
        int rc = migrate_run(T.conninfo, T.dir, 0, err, sizeof err);
        if (rc < 0)
            fprintf(stderr, "child: %s\n", err);
        fflush(stdout);
        _exit(rc == 0 ? 0 : 1);
    }
    int status = 0;
    int done = waitpid_ms(pid, &status, 700);
    int t6_early = table_exists(T.c, "t6");
    snprintf(lock, sizeof lock, "SELECT pg_advisory_unlock(%lld)", (long long) MIGRATE_LOCK_KEY);
    ASSERT_OK(exec_sql(T.c, lock));
    if (!done)
        done = waitpid_ms(pid, &status, 20000);
    ASSERT(done);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT(!t6_early);
    ASSERT(table_exists(T.c, "t6"));
    ASSERT_EQ(count(T.c, "SELECT count(*) FROM schema_migrations"), 6);
}

TEST(seed_refuses_a_database_that_is_not_migrated)
{
    write_file(T.dir, "0007_t7.sql", "CREATE TABLE t7 (x int);\n");
    char err[512] = "";
    ASSERT_EQ(seed_run(T.conninfo, T.dir, err, sizeof err), -1);
    ASSERT(contains(err, "not migrated (6 of 7 migrations applied)"));
    ASSERT(contains(err, "mmo migrate"));
    remove_file(T.dir, "0007_t7.sql");
}

/* ---- the project's sql/ ------------------------------------------------------------------ */

TEST(the_project_migrations_apply)
{
    char err[512] = "";
    ASSERT_OK(migrate_run(T.conninfo_real, T.real_sql, 0, err, sizeof err));
    const char *tables[] = {"accounts", "audit_log", "regions", "items", "schema_migrations"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++)
        ASSERT(table_exists(T.r, tables[i]));
    long n = count(T.r, "SELECT count(*) FROM schema_migrations");
    ASSERT(n >= 3);
    ASSERT_OK(migrate_run(T.conninfo_real, T.real_sql, 0, err, sizeof err));
    ASSERT_EQ(count(T.r, "SELECT count(*) FROM schema_migrations"), n);
    ASSERT_EQ(migrate_status(T.conninfo_real, T.real_sql, err, sizeof err), 0);
}

TEST(the_project_schema_holds_its_rules)
{
    PGconn *c = T.r;
    /* usernames are unique whatever their case */
    ASSERT_OK(exec_sql(c, "BEGIN"));
    ASSERT_OK(exec_sql(c, "INSERT INTO accounts (username, password_hash) VALUES ('Bob', 'x')"));
    ASSERT_EQ(exec_sql(c, "INSERT INTO accounts (username, password_hash) VALUES ('bOB', 'x')"),
              -1);
    ASSERT_OK(exec_sql(c, "ROLLBACK"));
    char *roles = value(c,
                        "INSERT INTO accounts (username, password_hash) VALUES ('carol', 'x') "
                        "RETURNING roles",
                        NULL);
    ASSERT_STR(roles, "{player}");
    free(roles);
    ASSERT_EQ(exec_sql(c, "INSERT INTO accounts (username, password_hash, roles) "
                          "VALUES ('dave', 'x', '{player,emperor}')"),
              -1);
    ASSERT_OK(exec_sql(c, "DELETE FROM accounts WHERE username = 'carol'"));
    /* the audit log is append-only */
    ASSERT_OK(exec_sql(c, "INSERT INTO audit_log (action, target) VALUES ('test.event', 'x')"));
    ASSERT_EQ(exec_sql(c, "UPDATE audit_log SET action = 'forged'"), -1);
    ASSERT(contains(PQerrorMessage(c), "append-only"));
    ASSERT_EQ(exec_sql(c, "DELETE FROM audit_log"), -1);
    ASSERT_EQ(exec_sql(c, "TRUNCATE audit_log"), -1);
    ASSERT_EQ(count(c, "SELECT count(*) FROM audit_log WHERE action = 'test.event'"), 1);
    char *data = value(c, "SELECT data::text FROM audit_log WHERE action = 'test.event'", NULL);
    ASSERT_STR(data, "{}");
    free(data);
    /* regions are proper rectangles; items stack at least 1 */
    ASSERT_EQ(exec_sql(c, "INSERT INTO regions VALUES ('bad', 'Bad', 10, 0, 5, 10)"), -1);
    ASSERT_EQ(exec_sql(c, "INSERT INTO items (id, name, kind, stack) VALUES ('x', 'X', 'm', 0)"),
              -1);
}

static char *snapshot(PGconn *c)
{
    return value(c,
                 "SELECT md5(concat_ws('|',"
                 " (SELECT string_agg(concat_ws(',', id, name, x0, y0, x1, y1, xmin), ';'"
                 "   ORDER BY id) FROM regions),"
                 " (SELECT string_agg(concat_ws(',', id, name, kind, stack, effects, xmin), ';'"
                 "   ORDER BY id) FROM items),"
                 " (SELECT string_agg(concat_ws(',', id, username, password_hash, roles, xmin),"
                 "   ';' ORDER BY id) FROM accounts),"
                 " (SELECT count(*) FROM audit_log)))",
                 NULL);
}

TEST(seed_is_idempotent_and_creates_the_admin)
{
    setenv("MMO_ADMIN_PASSWORD", ADMIN_PW, 1);
    char err[512] = "";
    char *out = NULL;
    ASSERT_OK(seed_captured(T.conninfo_real, T.real_sql, &out, err, sizeof err));
    ASSERT(!contains(out, ADMIN_PW)); /* a given password is never printed */
    ASSERT(!contains(out, "admin password:"));
    free(out);
    PGconn *c = T.r;
    ASSERT_EQ(count(c, "SELECT count(*) FROM regions"), 4);
    ASSERT_EQ(count(c, "SELECT count(*) FROM regions WHERE id IN ('r1', 'r2', 'r3', 'r4')"), 4);
    /* they tile the 2000 x 2000 world: right total area, inside it, no overlap */
    ASSERT_EQ(count(c, "SELECT sum((x1 - x0) * (y1 - y0)) FROM regions"), 4000000);
    ASSERT_EQ(count(c, "SELECT count(*) FROM regions WHERE x0 < 0 OR y0 < 0 OR x1 > 2000"
                       " OR y1 > 2000"),
              0);
    ASSERT_EQ(count(c, "SELECT count(*) FROM regions a JOIN regions b ON a.id < b.id"
                       " AND a.x0 < b.x1 AND b.x0 < a.x1 AND a.y0 < b.y1 AND b.y0 < a.y1"),
              0);
    ASSERT(count(c, "SELECT count(*) FROM items") >= 10);
    ASSERT_EQ(count(c, "SELECT count(*) FROM items WHERE effects ? 'heal'"), 2);
    ASSERT_EQ(count(c, "SELECT count(*) FROM items WHERE kind = 'weapon'"), 2);
    char *roles = value(c, "SELECT roles FROM accounts WHERE username = 'admin'", NULL);
    ASSERT_STR(roles, "{player,moderator,designer,admin}");
    free(roles);
    ASSERT_EQ(count(c, "SELECT count(*) FROM audit_log WHERE action = 'account.create'"), 1);
    char *hash = value(c, "SELECT password_hash FROM accounts WHERE username = 'admin'", NULL);
    ASSERT(hash != NULL && strncmp(hash, "$y$", 3) == 0);
    ASSERT(password_ok(ADMIN_PW, hash));
    ASSERT(!password_ok("correct horse battery stapler", hash));
    free(hash);

    char *before = snapshot(c);
    unsetenv("MMO_ADMIN_PASSWORD"); /* an existing admin is kept, password or not */
    ASSERT_OK(seed_captured(T.conninfo_real, T.real_sql, &out, err, sizeof err));
    ASSERT(!contains(out, "admin password:"));
    free(out);
    char *after = snapshot(c);
    ASSERT(before != NULL);
    ASSERT_STR(before, after);
    free(before);
    free(after);
}

TEST(seed_generates_and_prints_an_admin_password_once)
{
    PGconn *c = T.r;
    ASSERT_OK(exec_sql(c, "DELETE FROM accounts WHERE username = 'admin'"));
    char err[512] = "";
    char *out = NULL;
    setenv("MMO_ADMIN_PASSWORD", "short", 1);
    ASSERT_EQ(seed_run(T.conninfo_real, T.real_sql, err, sizeof err), -1);
    ASSERT(contains(err, "MMO_ADMIN_PASSWORD is shorter than"));
    ASSERT_EQ(count(c, "SELECT count(*) FROM accounts WHERE username = 'admin'"), 0);
    unsetenv("MMO_ADMIN_PASSWORD");
    ASSERT_OK(seed_captured(T.conninfo_real, T.real_sql, &out, err, sizeof err));
    const char *p = out ? strstr(out, "admin password: ") : NULL;
    ASSERT(p != NULL);
    p += strlen("admin password: ");
    size_t len = strcspn(p, "\n");
    char pw[128];
    ASSERT(len >= 16 && len < sizeof pw);
    memcpy(pw, p, len);
    pw[len] = '\0';
    free(out);
    for (size_t i = 0; i < len; i++)
        ASSERT((pw[i] >= 'a' && pw[i] <= 'z') || (pw[i] >= 'A' && pw[i] <= 'Z') ||
               (pw[i] >= '0' && pw[i] <= '9'));
    char *hash = value(c, "SELECT password_hash FROM accounts WHERE username = 'admin'", NULL);
    ASSERT(hash != NULL);
    ASSERT(password_ok(pw, hash));
    free(hash);
    ASSERT_OK(seed_captured(T.conninfo_real, T.real_sql, &out, err, sizeof err));
    ASSERT(!contains(out, "admin password:"));
    ASSERT(!contains(out, pw));
    free(out);
}

TEST(a_failing_seed_seeds_nothing)
{
    char dir[128], path[256], target[PATH_MAX], seed[160];
    make_temp_dir(dir, sizeof dir);
    struct migrate_file *files = NULL;
    char err[512] = "";
    int n = migrate_list(T.real_sql, &files, err, sizeof err);
    ASSERT(n > 0);
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%04d_%s.sql", dir, files[i].version, files[i].name);
        CORE_ASSERT(realpath(files[i].path, target) != NULL);
        CORE_ASSERT(symlink(target, path) == 0);
    }
    migrate_list_free(files, n);
    snprintf(seed, sizeof seed, "%s/seed", dir);
    mkdir(seed, 0755);
    write_file(seed, "0001_ok.sql", "INSERT INTO regions VALUES ('rx', 'X', 0, 0, 1, 1);\n");
    write_file(seed, "0002_bad.sql",
               "INSERT INTO regions VALUES ('ry', 'Y', 0, 0, 1, 1);\n"
               "INSERT INTO nowhere VALUES (1);\n");
    ASSERT_OK(exec_sql(T.r, "DELETE FROM accounts WHERE username = 'admin'"));
    setenv("MMO_ADMIN_PASSWORD", ADMIN_PW, 1);
    int rc = seed_run(T.conninfo_real, dir, err, sizeof err);
    fprintf(stderr, "(expected) %s\n", err);
    rm_tree(dir);
    ASSERT_EQ(rc, -1);
    ASSERT(contains(err, "/seed/0002_bad.sql:2: relation \"nowhere\" does not exist"));
    ASSERT(contains(err, "nothing was seeded"));
    ASSERT_EQ(count(T.r, "SELECT count(*) FROM regions WHERE id IN ('rx', 'ry')"), 0);
    ASSERT_EQ(count(T.r, "SELECT count(*) FROM accounts WHERE username = 'admin'"), 0);
    unsetenv("MMO_ADMIN_PASSWORD");
}

/* ---- setup ------------------------------------------------------------------------------- */

static void drop_databases(PGconn *m)
{
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", T.db);
    if (exec_sql(m, sql) < 0)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(m));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", T.db_real);
    if (exec_sql(m, sql) < 0)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(m));
}

int main(void)
{
    T.pg = test_env("MMO_TEST_PG");
    T.real_sql = test_env("MMO_SQL_DIR");
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(T.db, sizeof T.db, "mmo_migrate_test_%d", (int) getpid());
    snprintf(T.db_real, sizeof T.db_real, "%s_real", T.db);
    PGconn *m = connect_or_die(T.pg);
    drop_databases(m);
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", T.db);
    CORE_ASSERT(exec_sql(m, sql) == 0);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", T.db_real);
    CORE_ASSERT(exec_sql(m, sql) == 0);
    T.conninfo = conninfo_for(T.pg, T.db);
    T.conninfo_real = conninfo_for(T.pg, T.db_real);
    T.c = connect_or_die(T.conninfo);
    T.r = connect_or_die(T.conninfo_real);
    make_temp_dir(T.dir, sizeof T.dir);

    RUN(list_sorts_reads_and_hashes);
    RUN(list_refuses_gaps_duplicates_and_bad_names);
    RUN(applies_in_order_and_records_checksums);
    RUN(applying_twice_is_a_no_op);
    RUN(dry_run_changes_nothing);
    RUN(a_changed_applied_file_is_refused);
    RUN(a_renamed_applied_file_is_refused);
    RUN(a_failing_migration_rolls_back_completely);
    RUN(a_file_that_ends_the_transaction_is_reported);
    RUN(a_gap_in_the_directory_is_refused_before_connecting);
    RUN(a_bad_connection_is_one_line);
    RUN(nodes_migrating_at_once_take_turns);
    RUN(seed_refuses_a_database_that_is_not_migrated);
    RUN(the_project_migrations_apply);
    RUN(the_project_schema_holds_its_rules);
    RUN(seed_is_idempotent_and_creates_the_admin);
    RUN(seed_generates_and_prints_an_admin_password_once);
    RUN(a_failing_seed_seeds_nothing);

    PQfinish(T.c);
    PQfinish(T.r);
    drop_databases(m);
    PQfinish(m);
    rm_tree(T.dir);
    free(T.conninfo);
    free(T.conninfo_real);
    return test_summary();
}
