/*
 * pgconn.h - one PostgreSQL connection driven by the loop, never blocking.
 *
 * States: DOWN (waiting to reconnect) -> CONNECTING (PQconnectPoll) ->
 * SETUP (session settings and LISTEN) -> READY.  Any failure goes back to
 * DOWN and a reconnect after a capped, jittered backoff.
 *
 * Queries run one at a time, in the order given.  Every pg_query() gets
 * exactly one callback: with the final result, or with res NULL when the
 * connection was lost first (the caller decides whether to resend).  A
 * query unanswered for PG_QUERY_TIMEOUT_MS declares the connection dead:
 * a half-open TCP connection is not waited on forever.  The result passed
 * to a callback is freed when it returns.
 *
 * Each session sets its own statement_timeout, lock_timeout and idle
 * timeouts (the role's or the database's settings do not apply), and what
 * the server says outside a query (a FATAL before it closes the
 * connection, a WARNING) goes to the log, not to stderr.
 */
#ifndef IMGSYNC_PGCONN_H
#define IMGSYNC_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "buf.h"
#include "err.h"
#include "loop.h"

#define PG_QUERY_TIMEOUT_MS   45000
#define PG_CONNECT_TIMEOUT_MS 15000
/* How long a statement waits for a lock before it fails (and is tried again
 * later): imgsyncd gives way to the application's transactions, which hold
 * their rows as long as they like, and never deadlocks with them. */
#define PG_LOCK_TIMEOUT "250ms"

struct pgconn;

typedef void (*pg_result_fn)(void *arg, PGresult *res, const char *error);
/* up: READY (LISTEN is in place); !up: the connection was lost. */
typedef void (*pg_state_fn)(void *arg, bool up, const char *why);
typedef void (*pg_notify_fn)(void *arg, const char *channel, const char *payload);

struct pgconn_cfg {
	const char *conninfo; /* libpq conninfo or URI; "" for PG* variables */
	const char *channel;  /* LISTENed to after every connect */
	pg_state_fn on_state;
	pg_notify_fn on_notify;
	void *arg;
};

bool pg_new(struct loop *l, const struct pgconn_cfg *cfg, struct pgconn **out, struct err *e) WUR;
/* Fails queued queries (res NULL) without calling on_state. */
void pg_free(struct pgconn *pg);
void pg_connect(struct pgconn *pg);
bool pg_ready(const struct pgconn *pg);
/* Consecutive failed connection attempts since the last success. */
int pg_failures(const struct pgconn *pg);
/* Queue a statement; params are copied.  False only when out of memory. */
bool pg_query(struct pgconn *pg, const char *sql, int nparams, const char *const *params,
	      pg_result_fn cb, void *arg) WUR;
/* Queries queued or in flight. */
int pg_pending(const struct pgconn *pg);
/* Appends S as one element of an array literal ({"a","b"}, for a text[]
 * parameter): quoted, '"' and '\\' escaped, so that any string comes back
 * byte for byte (the word NULL and "" included). */
void pg_array_elem(struct buf *b, const char *s);

#endif
