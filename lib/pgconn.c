/*
 * pgconn.c - libpq in non-blocking mode on the loop.
 *
 * The socket is always watched for input while connected (notifications
 * arrive unasked); output is watched only while PQflush() has more to
 * send.  libpq may replace the socket during PQconnectPoll (several hosts
 * in the conninfo), so the watcher is re-armed after every poll step.
 *
 * Known limit: PQconnectStartParams resolves host names synchronously; use
 * an IP address (hostaddr) or a unix socket where DNS may be slow.
 */
#include "pgconn.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

enum pg_state { PG_DOWN, PG_CONNECTING, PG_SETUP, PG_READY };

static const char *const state_names[] = {"down", "connecting", "setup", "ready"};

struct pgq {
	struct pgq *next;
	char *sql; /* NULL for the internal setup query */
	int nparams;
	char **params;
	pg_result_fn cb;
	void *arg;
};

struct pgconn {
	struct loop *loop;
	struct pgconn_cfg cfg;
	char *conninfo, *channel;
	PGconn *conn;
	enum pg_state state;
	struct loop_io io;
	bool io_armed;
	struct loop_timer retry, deadline;
	int failures;
	struct pgq *head, *tail; /* head is in flight when busy */
	bool busy;
	PGresult *last;
};

static void pg_step(struct pgconn *pg);

static void q_free(struct pgq *q)
{
	for (int i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q->params);
	free(q->sql);
	free(q);
}

static void set_state(struct pgconn *pg, enum pg_state s)
{
	if (pg->state != s)
		log_debug("postgres: %s -> %s", state_names[pg->state], state_names[s]);
	pg->state = s;
}

/* One line from libpq's (possibly multi-line) message. */
static void one_line(char *dst, size_t size, const char *src)
{
	size_t n;

	snprintf(dst, size, "%s", src && src[0] ? src : "connection lost");
	n = strlen(dst);
	while (n && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
		dst[--n] = '\0';
	for (char *p = dst; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

/* Watch the connection's socket for events.  fresh: register it anew, as
 * after a PQconnectPoll step, which may have closed the socket and opened
 * another under the same number (epoll forgot the closed one). */
static bool arm(struct pgconn *pg, uint32_t events, bool fresh)
{
	int fd = pg->conn ? PQsocket(pg->conn) : -1;

	if (pg->io_armed && (fresh || fd != pg->io.fd || events == 0)) {
		loop_io_del(pg->loop, &pg->io);
		pg->io_armed = false;
	}
	if (fd < 0 || events == 0)
		return true;
	if (!pg->io_armed)
		pg->io.fd = fd;
	if (!loop_io_set(pg->loop, &pg->io, events, NULL)) {
		log_error("postgres: cannot watch the connection's socket");
		return false;
	}
	pg->io_armed = true;
	return true;
}

/* Fail every queued query.  The queue is detached first: what a callback
 * queues now waits for the next connection instead of failing here. */
static void fail_queue(struct pgconn *pg, const char *msg)
{
	struct pgq *list = pg->head;

	pg->head = pg->tail = NULL;
	while (list) {
		struct pgq *q = list;

		list = q->next;
		if (q->cb)
			q->cb(q->arg, NULL, msg);
		q_free(q);
	}
}

/* Drop the connection, fail every query, schedule a reconnect. */
static void pg_lost(struct pgconn *pg, const char *why)
{
	char msg[512];
	bool was_up = pg->state == PG_READY;
	uint64_t cap, delay;

	one_line(msg, sizeof(msg), why);
	(void)arm(pg, 0, false);
	loop_timer_cancel(pg->loop, &pg->deadline);
	if (pg->last) {
		PQclear(pg->last);
		pg->last = NULL;
	}
	PQfinish(pg->conn);
	pg->conn = NULL;
	pg->busy = false;
	set_state(pg, PG_DOWN);
	fail_queue(pg, msg);
	if (!was_up)
		pg->failures++;
	/* capped exponential backoff with full jitter: 0..min(30 s, 250 ms * 2^n) */
	cap = 250ull << (pg->failures < 7 ? pg->failures : 7);
	if (cap > 30000)
		cap = 30000;
	delay = was_up ? 0 : (uint64_t)random() % (cap + 1);
	loop_timer_set(pg->loop, &pg->retry, delay);
	if (pg->cfg.on_state)
		pg->cfg.on_state(pg->cfg.arg, false, msg);
}

static void on_deadline(void *arg)
{
	struct pgconn *pg = arg;

	pg_lost(pg, pg->state == PG_CONNECTING || pg->state == PG_SETUP
			? "no answer while connecting (timed out)"
			: "no answer to a query within 45 s: the connection is presumed dead");
}

static void send_next(struct pgconn *pg)
{
	struct pgq *q = pg->head;
	int rc;

	if (pg->busy || q == NULL || (pg->state != PG_READY && q->sql != NULL))
		return;
	if (q->sql == NULL) {
		/* setup: session settings and LISTEN, one simple-protocol string */
		char *ch = PQescapeIdentifier(pg->conn, pg->channel, strlen(pg->channel));
		char sql[600];

		if (ch == NULL) {
			pg_lost(pg, PQerrorMessage(pg->conn));
			return;
		}
		/* The session's own settings, whatever the role or database sets:
		 * imgsyncd gives way to a lock the application holds (its statement
		 * fails and is tried again), and its connection, idle between
		 * heartbeats, is not one for idle_session_timeout (PostgreSQL 14)
		 * to close. */
		snprintf(sql, sizeof(sql),
			 "SET application_name = 'imgsyncd'; SET statement_timeout = '30s'; "
			 "SET lock_timeout = '" PG_LOCK_TIMEOUT "'; "
			 "SET idle_in_transaction_session_timeout = 0; %sLISTEN %s",
			 PQserverVersion(pg->conn) >= 140000 ? "SET idle_session_timeout = 0; "
							     : "",
			 ch);
		PQfreemem(ch);
		rc = PQsendQuery(pg->conn, sql);
	} else
		rc = PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL,
				       (const char *const *)q->params, NULL, NULL, 0);
	if (!rc) {
		pg_lost(pg, PQerrorMessage(pg->conn));
		return;
	}
	pg->busy = true;
	loop_timer_set(pg->loop, &pg->deadline, PG_QUERY_TIMEOUT_MS);
	rc = PQflush(pg->conn);
	if (rc < 0) {
		pg_lost(pg, PQerrorMessage(pg->conn));
		return;
	}
	if (!arm(pg, EPOLLIN | (rc == 1 ? EPOLLOUT : 0), false))
		pg_lost(pg, "cannot watch the connection's socket");
}

static void notifications(struct pgconn *pg)
{
	PGnotify *n;

	while (pg->conn && (n = PQnotifies(pg->conn)) != NULL) {
		if (pg->cfg.on_notify)
			pg->cfg.on_notify(pg->cfg.arg, n->relname, n->extra ? n->extra : "");
		PQfreemem(n);
	}
}

/* Collect results of the query in flight; run its callback when complete. */
static void results(struct pgconn *pg)
{
	while (pg->busy && pg->conn && !PQisBusy(pg->conn)) {
		PGresult *r = PQgetResult(pg->conn);
		struct pgq *q;
		bool setup;

		if (r != NULL) {
			/* keep the last (an error stays visible to the caller) */
			if (pg->last && PQresultStatus(pg->last) == PGRES_FATAL_ERROR) {
				PQclear(r);
				continue;
			}
			PQclear(pg->last);
			pg->last = r;
			continue;
		}
		/* the query is over */
		q = pg->head;
		pg->head = q->next;
		if (pg->head == NULL)
			pg->tail = NULL;
		pg->busy = false;
		loop_timer_cancel(pg->loop, &pg->deadline);
		r = pg->last;
		pg->last = NULL;
		setup = q->sql == NULL;
		if (setup) {
			if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) {
				char msg[512];

				snprintf(msg, sizeof(msg), "setting up the session failed: %s",
					 r ? PQresultErrorMessage(r) : "no result");
				PQclear(r);
				q_free(q);
				pg_lost(pg, msg);
				return;
			}
			PQclear(r);
			q_free(q);
			pg->failures = 0;
			set_state(pg, PG_READY);
			log_info("postgres: connected, listening on channel \"%s\"", pg->channel);
			if (pg->cfg.on_state)
				pg->cfg.on_state(pg->cfg.arg, true, NULL);
		} else {
			const char *msg = NULL;
			char buf[512];

			if (r && PQresultStatus(r) == PGRES_FATAL_ERROR) {
				/* the server's message and hint, without severity and
				 * context lines */
				const char *prim = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
				const char *hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
				char full[512];

				snprintf(full, sizeof(full), "%s%s%s%s",
					 prim ? prim : PQresultErrorMessage(r), hint ? " (" : "",
					 hint ? hint : "", hint ? ")" : "");
				one_line(buf, sizeof(buf), full);
				msg = buf;
			}
			if (q->cb)
				q->cb(q->arg, r, msg);
			PQclear(r);
			q_free(q);
		}
		if (pg->conn == NULL)
			return; /* a callback freed or lost the connection */
		send_next(pg);
	}
}

static void on_io(void *arg, int fd, uint32_t events)
{
	struct pgconn *pg = arg;

	(void)fd;
	if (pg->state == PG_CONNECTING) {
		pg_step(pg);
		return;
	}
	if (events & EPOLLOUT) {
		int rc = PQflush(pg->conn);

		if (rc < 0) {
			pg_lost(pg, PQerrorMessage(pg->conn));
			return;
		}
		if (!arm(pg, EPOLLIN | (rc == 1 ? EPOLLOUT : 0), false)) {
			pg_lost(pg, "cannot watch the connection's socket");
			return;
		}
		notifications(pg); /* PQflush may have read some */
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		if (!PQconsumeInput(pg->conn)) {
			pg_lost(pg, PQerrorMessage(pg->conn));
			return;
		}
		notifications(pg);
		results(pg);
		if (pg->conn)
			notifications(pg);
	}
}

/* Advance PQconnectPoll. */
static void pg_step(struct pgconn *pg)
{
	switch (PQconnectPoll(pg->conn)) {
	case PGRES_POLLING_READING:
		if (!arm(pg, EPOLLIN, true))
			pg_lost(pg, "cannot watch the connection's socket");
		return;
	case PGRES_POLLING_WRITING:
		if (!arm(pg, EPOLLOUT, true))
			pg_lost(pg, "cannot watch the connection's socket");
		return;
	case PGRES_POLLING_FAILED:
		pg_lost(pg, PQerrorMessage(pg->conn));
		return;
	default:
		break;
	}
	/* connected */
	loop_timer_cancel(pg->loop, &pg->deadline);
	if (PQsetnonblocking(pg->conn, 1) != 0) {
		pg_lost(pg, PQerrorMessage(pg->conn));
		return;
	}
	set_state(pg, PG_SETUP);
	if (!arm(pg, EPOLLIN, true)) {
		pg_lost(pg, "cannot watch the connection's socket");
		return;
	}
	send_next(pg); /* the setup query sits at the head */
}

/* What the server says outside a result: a FATAL before it closes the
 * connection (terminated, idle too long, shutting down), a WARNING. */
static void on_notice(void *arg, const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char line[512];

	(void)arg;
	one_line(line, sizeof(line), msg ? msg : PQresultErrorMessage(res));
	if (sev && (strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0 ||
		    strcmp(sev, "LOG") == 0 || strncmp(sev, "DEBUG", 5) == 0))
		log_debug("postgres: %s", line);
	else
		log_warn("postgres says: %s%s%s", sev ? sev : "", sev ? ": " : "", line);
}

static void on_retry(void *arg)
{
	pg_connect(arg);
}

void pg_connect(struct pgconn *pg)
{
	/* our defaults first: the operator's conninfo (dbname) overrides them */
	static const char *const keys[] = {"keepalives",
					   "keepalives_idle",
					   "keepalives_interval",
					   "keepalives_count",
					   "application_name",
					   "dbname",
					   NULL};
	/* the session's settings (lock_timeout...) come with the setup query,
	 * where neither the role's nor the conninfo's options override them */
	const char *vals[] = {"1", "10", "5", "3", "imgsyncd", pg->conninfo, NULL};
	struct pgq *setup;

	if (pg->state != PG_DOWN)
		return;
	loop_timer_cancel(pg->loop, &pg->retry);
	setup = calloc(1, sizeof(*setup));
	if (setup == NULL) {
		loop_timer_set(pg->loop, &pg->retry, 1000);
		return;
	}
	/* the setup query goes first, ahead of anything queued while down */
	setup->next = pg->head;
	pg->head = setup;
	if (pg->tail == NULL)
		pg->tail = setup;
	pg->conn = PQconnectStartParams(keys, vals, 1);
	set_state(pg, PG_CONNECTING);
	if (pg->conn == NULL || PQstatus(pg->conn) == CONNECTION_BAD) {
		pg_lost(pg, pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
		return;
	}
	PQsetNoticeReceiver(pg->conn, on_notice, pg);
	loop_timer_set(pg->loop, &pg->deadline, PG_CONNECT_TIMEOUT_MS);
	pg_step(pg);
}

bool pg_new(struct loop *l, const struct pgconn_cfg *cfg, struct pgconn **out, struct err *e)
{
	struct pgconn *pg = calloc(1, sizeof(*pg));

	if (pg == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	pg->loop = l;
	pg->cfg = *cfg;
	pg->conninfo = strdup(cfg->conninfo ? cfg->conninfo : "");
	pg->channel = strdup(cfg->channel);
	if (pg->conninfo == NULL || pg->channel == NULL) {
		pg_free(pg);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	loop_io_init(&pg->io, -1, on_io, pg);
	loop_timer_init(&pg->retry, on_retry, pg);
	loop_timer_init(&pg->deadline, on_deadline, pg);
	*out = pg;
	return true;
}

void pg_free(struct pgconn *pg)
{
	if (pg == NULL)
		return;
	pg->cfg.on_state = NULL;
	(void)arm(pg, 0, false);
	loop_timer_cancel(pg->loop, &pg->retry);
	loop_timer_cancel(pg->loop, &pg->deadline);
	PQclear(pg->last);
	PQfinish(pg->conn);
	pg->conn = NULL;
	/* callbacks see the connection gone; what they queue is dropped */
	while (pg->head)
		fail_queue(pg, "shutting down");
	free(pg->conninfo);
	free(pg->channel);
	free(pg);
}

bool pg_ready(const struct pgconn *pg)
{
	return pg->state == PG_READY;
}

int pg_failures(const struct pgconn *pg)
{
	return pg->failures;
}

int pg_pending(const struct pgconn *pg)
{
	int n = 0;

	for (struct pgq *q = pg->head; q; q = q->next)
		n++;
	return n;
}

bool pg_query(struct pgconn *pg, const char *sql, int nparams, const char *const *params,
	      pg_result_fn cb, void *arg)
{
	struct pgq *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return false;
	q->sql = strdup(sql);
	q->params = nparams ? calloc((size_t)nparams, sizeof(char *)) : NULL;
	q->nparams = nparams;
	q->cb = cb;
	q->arg = arg;
	if (q->sql == NULL || (nparams && q->params == NULL))
		goto nomem;
	for (int i = 0; i < nparams; i++)
		if (params[i] && (q->params[i] = strdup(params[i])) == NULL)
			goto nomem;
	if (pg->tail)
		pg->tail->next = q;
	else
		pg->head = q;
	pg->tail = q;
	if (pg->state == PG_READY)
		send_next(pg);
	return true;
nomem:
	q_free(q);
	return false;
}

void pg_array_elem(struct buf *b, const char *s)
{
	buf_putc(b, '"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_putc(b, '\\');
		buf_putc(b, *s);
	}
	buf_putc(b, '"');
}
