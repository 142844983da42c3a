/* migrate.h -- schema migrations and seed data: the `mmo migrate` and `mmo seed` commands.
 *
 * These run as CLI subcommands, never on the event loop, so they use blocking libpq.
 *
 * Migrations are files sql_dir/NNNN_name.sql (four digits, '_', a name of [A-Za-z0-9_-],
 * ".sql"), numbered 0001, 0002, ... with no gap and no duplicate. They are forward-only: each
 * runs once, in its own transaction, and is recorded in schema_migrations(version, name,
 * checksum, applied_at) with the SHA-256 of its content. A file that changed after it was
 * applied is refused (add a new migration instead). A migration file must not contain
 * BEGIN/COMMIT/ROLLBACK, nor statements that cannot run in a transaction block.
 *
 * Seeds are sql_dir/seed/NAME.sql, run in name order in one transaction; they must be
 * idempotent (INSERT ... ON CONFLICT). seed_run then makes sure the account `admin` exists.
 *
 * Both hold the session advisory lock MIGRATE_LOCK_KEY while they work, so nodes that migrate
 * or seed at the same time run one after the other. Progress lines go to stdout. */
#ifndef CORE_MIGRATE_H
#define CORE_MIGRATE_H

#include <stddef.h>

/* Key of the PostgreSQL advisory lock held while migrating or seeding ("mmomigr" in ASCII). */
#define MIGRATE_LOCK_KEY 0x6d6d6f6d696772LL

/* Largest migration or seed file read, in bytes. */
#define MIGRATE_MAX_FILE (16 * 1024 * 1024)

/* One migration file as read from disk. */
struct migrate_file {
    int version;       /* NNNN */
    char *name;        /* the part after "NNNN_", without ".sql" */
    char *path;        /* sql_dir "/" NNNN_name.sql, as printed in messages */
    char *sql;         /* the content, NUL-terminated */
    size_t len;        /* bytes in sql */
    char checksum[65]; /* SHA-256 of the content, lowercase hex */
};

/* Read the migrations of sql_dir, sorted by version. Returns how many (>= 0) and sets *out
 * (owned by the caller: migrate_list_free), or -1 with a one-line message in err (cap bytes):
 * unreadable directory or file, a .sql file not named NNNN_name.sql, a duplicate or missing
 * number. Files not ending in ".sql", hidden files and directories are ignored. */
int migrate_list(const char *sql_dir, struct migrate_file **out, char *err, size_t cap);
/* Free what migrate_list returned (files may be NULL). */
void migrate_list_free(struct migrate_file *files, int n);

/* Apply the pending migrations of sql_dir to the database of conninfo (a libpq connection
 * string; NULL or "" uses libpq's defaults), creating schema_migrations if missing. Checks
 * every applied migration first: if one changed or is unknown, nothing is applied. Prints one
 * line per migration applied (with dry_run: per migration that would be applied, and nothing
 * is changed) or "up to date". Returns 0, or -1 with a one-line message in err. A migration
 * that fails is rolled back entirely; the ones before it stay applied. */
int migrate_run(const char *conninfo, const char *sql_dir, int dry_run, char *err, size_t cap);

/* Print one line per migration of sql_dir: applied (with its time) or pending. Returns the
 * number pending (>= 0), or -1 with a one-line message in err (including a changed or unknown
 * applied migration). Changes nothing. */
int migrate_status(const char *conninfo, const char *sql_dir, char *err, size_t cap);

/* Run sql_dir/seed/NAME.sql in name order in one transaction, then create the account `admin`
 * (roles player, moderator, designer, admin) if no account has that name. Its password is
 * $MMO_ADMIN_PASSWORD (8 characters or more) or, when that is unset or empty, a random one
 * printed once to stdout as "admin password: <pw>". An existing admin is left as it is.
 * Refuses to run unless every migration of sql_dir is applied. Returns 0, or -1 with a
 * one-line message in err; on failure nothing is seeded. */
int seed_run(const char *conninfo, const char *sql_dir, char *err, size_t cap);

/* Like seed_run, for a shard database (config.lua section shards): the same seed files (the
 * item catalogue and the regions are needed there), no admin account. */
int seed_run_shard(const char *conninfo, const char *sql_dir, char *err, size_t cap);

#endif
