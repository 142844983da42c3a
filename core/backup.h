/* backup.h -- `mmo backup` and `mmo restore`: the databases and Redis of a world, to a folder
 * and back (docs/reliability.md, "Backup and restore"; docs/operators.md, "Backups").
 *
 * A backup is one folder backup-YYYYMMDDTHHMMSSZ/ holding:
 *   shard<N>.pgdump   pg_dump --format=custom of the main database (N = 0) and of each shard
 *   redis.dump        every key of Redis database 0: SCAN, then DUMP and PTTL per key
 *   manifest.json     time, node version, migration version, and per file its size, sha256,
 *                     source (host, port, database: never a password) and what it holds (row
 *                     counts per table, key count)
 *   SHA256SUMS        sha256 of every other file, in `sha256sum -c` format
 * The row counts come from the same snapshot as the dump (pg_export_snapshot + pg_dump
 * --snapshot), so they match it exactly even while a node writes.
 *
 * Restore checks every checksum before it writes anything, refuses a target database that
 * has relations or a Redis that has keys (unless force), then runs pg_restore per database
 * and RESTOREs the keys, and verifies the row counts and the key count against the manifest.
 *
 * Blocking on purpose (a command, never the event loop); every external command, connection
 * and statement is bounded by timeout_s. pg_dump/pg_restore come from $MMO_PG_BIN when set
 * (a directory), else from PATH. */
#ifndef CORE_BACKUP_H
#define CORE_BACKUP_H

struct conf;

/* Write a backup folder under dir (created if missing). Prints its path as the last line of
 * stdout. Returns the exit code: 0, or 1 with the reason on stderr (nothing half-written is
 * left under a backup-* name). */
int backup_run(const struct conf *c, const char *dir, int timeout_s);

/* Restore the backup folder dir into the databases and Redis of c. Returns the exit code: 0,
 * or 1 with the reason on stderr. force: restore over a database that is not empty (pg_restore
 * --clean --if-exists) and over existing Redis keys (RESTORE ... REPLACE). */
int restore_run(const struct conf *c, const char *dir, int force, int timeout_s);

#endif
