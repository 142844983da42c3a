/* backup.h -- `mmo backup` and `mmo restore`: the databases and Redis of a world, to a folder
 * and back (docs/reliability.md, "Backup and restore"; docs/operators.md, "Backups").
 *
 * A backup is one folder backup-YYYYMMDDTHHMMSSZ/ holding:
 *   shard<N>.pgdump   pg_dump --format=custom of the main database (N = 0) and of each shard
 *   redis.dump        every key of database 0 of the home Redis instance (redis.host/port or
 *                     its sentinels): SCAN, then DUMP and PTTL per key
 *   redis-<name>.dump the same for each other instance of redis.instances
 *   manifest.json     time, node version, migration version, and per file its size, sha256,
 *                     source (host, port, database: never a password) and what it holds (row
 *                     counts per table; instance name and key count). Home's Redis entry is
 *                     "redis", the others' "redis_instances"; format 1 when Redis is one
 *                     instance (as before there could be several), 2 when there are others
 *                     (so that an mmo that knows only format 1 refuses it rather than
 *                     restoring home alone)
 *   SHA256SUMS        sha256 of every other file, in `sha256sum -c` format
 * The row counts come from the same snapshot as the dump (pg_export_snapshot + pg_dump
 * --snapshot), so they match it exactly even while a node writes.
 *
 * Restore checks every checksum before it writes anything. Then, still before writing, it
 * matches each Redis dump with the configured instance of the same name: home's with home
 * (redis.name must be the backup's; a backup that names no instance, made before there could
 * be several, is home's whatever its name), every other with the instance of redis.instances
 * of that name (its address may differ: placement goes by names). A dump whose instance is not
 * configured is refused, force or not: keys are placed by instance names (core/rds_set.h), so
 * restoring them anywhere else would leave regions' keys and streams where no node looks. An
 * instance configured but not in the backup also means placement differs from the backup's:
 * refused unless force, which restores anyway and leaves that instance alone (as changing the
 * list with the world stopped would: docs/operations.md, "Several Redis instances"). Then it
 * refuses a target database that has relations, or a target instance that has keys (unless
 * force), runs pg_restore per database, RESTOREs each dump into its instance, and verifies the
 * row counts and each instance's key count against the manifest.
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

/* Restore the backup folder dir into the databases and Redis instances of c. Returns the exit
 * code: 0, or 1 with the reason on stderr. force: restore over a database that is not empty
 * (pg_restore --clean --if-exists) and over existing Redis keys (RESTORE ... REPLACE), and into
 * a configuration with instances the backup lacks (left alone); never into one that lacks an
 * instance of the backup or names home otherwise. */
int restore_run(const struct conf *c, const char *dir, int force, int timeout_s);

#endif
