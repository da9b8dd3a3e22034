/*
 * sql.h - every statement imgsync sends, in one place, mirroring sql/.
 * Parameters are always bound ($1...), never formatted into the text.
 * The queue's rules live in the SQL functions themselves (sql/001_base.sql).
 */
#ifndef IMGSYNC_SQL_H
#define IMGSYNC_SQL_H

/* schema management (imgsyncctl init, imgsyncd start) */
#define SQL_INIT_LOCK "SELECT pg_advisory_xact_lock(hashtext('imgsync schema'))"
#define SQL_VERSION_TABLE                                                                          \
	"CREATE SCHEMA IF NOT EXISTS imgsync; "                                                    \
	"CREATE TABLE IF NOT EXISTS imgsync.schema_version ("                                      \
	"version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT "    \
	"now())"
#define SQL_VERSION_APPLIED "SELECT 1 FROM imgsync.schema_version WHERE version = $1"
#define SQL_VERSION_RECORD  "INSERT INTO imgsync.schema_version (version, name) VALUES ($1, $2)"
#define SQL_SET_CHANNEL	    "UPDATE imgsync.settings SET value = $1 WHERE name = 'channel'"
/* whether the schema is there at all (a query on a missing table fails to parse) */
#define SQL_SCHEMA_EXISTS                                                                          \
	"SELECT to_regclass('imgsync.schema_version') IS NOT NULL "                                \
	"AND to_regclass('imgsync.settings') IS NOT NULL"
/* the highest step applied, and the channel the database notifies */
#define SQL_SCHEMA_VERSION                                                                         \
	"SELECT (SELECT max(version) FROM imgsync.schema_version), "                               \
	"(SELECT value FROM imgsync.settings WHERE name = 'channel')"

/* the daemon */
#define SQL_REGISTER	  "SELECT imgsync.register_daemon($1, $2, $3, $4, $5::text[])"
#define SQL_DAEMON_STORES "SELECT imgsync.daemon_stores($1, $2::text[])"
/* same-host daemons not stopped, and releasing those found gone */
#define SQL_HOST_DAEMONS "SELECT id, pid, instance FROM imgsync.host_daemons($1, $2)"
#define SQL_REAP_DAEMON	 "SELECT imgsync.reap_daemon($1, $2)"
/* the STATUS= line: pending and dead work, the running migrations in short */
#define SQL_STATUS_SUMMARY                                                                         \
	"SELECT (SELECT count(*) FROM imgsync.work WHERE state = 'pending'), "                     \
	"(SELECT count(*) FROM imgsync.work WHERE state = 'dead'), "                               \
	"(SELECT string_agg(format('%s %s->%s %s/%s%s%s', id, source, target, "                    \
	"done + failed + skipped, total, "                                                         \
	"CASE WHEN objects_per_s > 0 THEN format(', %s/s', round(objects_per_s)) ELSE '' END, "    \
	"CASE WHEN eta IS NOT NULL THEN format(', ETA %s s', ceil(extract(epoch FROM eta))) "      \
	"ELSE '' END), '; ' ORDER BY id) "                                                         \
	"FROM imgsync.migration_status WHERE state = 'running')"
/* layout attributes come as columns: no JSON parsing in C */
#define SQL_CLAIM_COLS                                                                             \
	"key, op, gen, attempts, token, origin, mimetype, attrs->>'object_type', "                 \
	"attrs->>'object_id', attrs->>'width', attrs->>'height', "                                 \
	"coalesce(attrs->>'mimetype', mimetype), version, array_to_string(stores, ','), deleted, " \
	"size, changed_at, "                                                                       \
	"to_char(claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "            \
	"migration, step, m_source, m_target, m_mode, m_dry_run, m_verify, source_tag, "           \
	"array_to_string(stale, ','), stale_until, strays "
#define SQL_CLAIM "SELECT " SQL_CLAIM_COLS "FROM imgsync.claim($1, $2, $3::interval)"
/* results, advance and claim at once: the claim's columns, then
 * "deferred" and "running" */
#define SQL_EXCHANGE                                                                               \
	"SELECT " SQL_CLAIM_COLS ", deferred, running "                                            \
	"FROM imgsync.exchange($1, $2::jsonb, $3, $4, $5::interval, $6)"
#define SQL_CLAIM_NCOLS	      29
#define SQL_EXCHANGE_DEFERRED SQL_CLAIM_NCOLS
#define SQL_EXCHANGE_RUNNING  (SQL_CLAIM_NCOLS + 1)
/* hand running migrations' next keys to the queue (at most $1 queued each);
 * answers with the number of migrations still running */
#define SQL_ADVANCE  "SELECT imgsync.advance_migrations($1)"
#define SQL_COMPLETE "SELECT * FROM imgsync.complete($1, $2::jsonb, $3)"
/* answers with the tokens still held, each renewed or not (application-locked) */
#define SQL_HEARTBEAT                                                                              \
	"SELECT * FROM imgsync.heartbeat($1, $2::text[], $3::bigint[], $4, $5, $6, $7, $8::interval)"
#define SQL_STOP  "SELECT imgsync.stop_daemon($1)"
#define SQL_EVENT "SELECT imgsync.log_event($1, $2, $3)"
/* an admin command arrived as a NOTIFY payload (parsed and checked in SQL) */
#define SQL_COMMAND "SELECT imgsync.command($1)"
/* LISTEN takes no parameter: the channel is quoted with PQescapeIdentifier */

/* imgsyncctl */
#define SQL_QUEUE_STATUS                                                                           \
	"SELECT pending, in_flight, retrying, dead, "                                              \
	"coalesce(extract(epoch FROM oldest_age)::bigint, 0) FROM imgsync.queue_status"
#define SQL_WORKERS                                                                                \
	"SELECT id, host, pid, version, state, in_flight, objects_done, bytes_done, "              \
	"extract(epoch FROM now() - heartbeat_at)::bigint FROM imgsync.workers ORDER BY id"
#define SQL_RETRY_DEAD "SELECT imgsync.retry_dead($1)"
#define SQL_START_MIGRATION                                                                        \
	"SELECT imgsync.start_migration($1, $2, $3, jsonb_strip_nulls(jsonb_build_object("         \
	"'dry_run', $4::boolean, 'prefix', $5::text, 'verify', $6::boolean, 'follow', "            \
	"$7::boolean)))"
#define SQL_MIGRATION_ONE                                                                          \
	"SELECT id, source, target, mode, state, total, done, failed, skipped, bytes_done, "       \
	"objects_per_s, bytes_per_s, coalesce(extract(epoch FROM eta)::bigint, -1), "              \
	"coalesce(last_error, '') FROM imgsync.migration_status WHERE id = $1"
/* the active migrations and those ended in the last day */
#define SQL_MIGRATIONS                                                                             \
	"SELECT id, source, target, mode, state, total, done, failed, skipped, bytes_done, "       \
	"objects_per_s, bytes_per_s, coalesce(extract(epoch FROM eta)::bigint, -1), "              \
	"coalesce(last_error, '') FROM imgsync.migration_status "                                  \
	"WHERE finished_at IS NULL OR finished_at > now() - interval '1 day' ORDER BY id"
#define SQL_PAUSE	 "SELECT imgsync.pause_migration($1)"
#define SQL_RESUME	 "SELECT imgsync.resume_migration($1)"
#define SQL_CANCEL	 "SELECT imgsync.cancel_migration($1)"
#define SQL_RETRY_FAILED "SELECT imgsync.retry_failed($1)"

/* imgsyncctl verify: the whole catalog in one read-only snapshot, through a
 * cursor (bounded memory per round trip, never a query per image).  $1, $2:
 * the stores compared.  Layout attributes come as columns, as in the claim;
 * the last column says whether queued work is changing the image. */
#define SQL_VERIFY_BEGIN "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
#define SQL_VERIFY_DECLARE                                                                         \
	"DECLARE imgsync_verify NO SCROLL CURSOR FOR "                                             \
	"SELECT i.key, i.attrs->>'object_type', i.attrs->>'object_id', i.attrs->>'width', "        \
	"i.attrs->>'height', coalesce(i.attrs->>'mimetype', i.mimetype), i.size, i.checksum, "     \
	"i.deleted, $1::text = ANY (i.stores), $2::text = ANY (i.stores), w.key IS NOT NULL "      \
	"FROM imgsync.images i "                                                                   \
	"LEFT JOIN imgsync.work w ON w.key = i.key AND w.state = 'pending'"
#define SQL_VERIFY_FETCH "FETCH 10000 FROM imgsync_verify"
#define SQL_VERIFY_END	 "COMMIT"

#endif
