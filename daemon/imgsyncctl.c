/*
 * imgsyncctl - the admin's tool.  It talks only to PostgreSQL (and, for
 * verify, to the stores) and prints errors in one line a human can act on.
 * Blocking libpq is right here: one command, one connection, then exit.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf.h"
#include "ctl.h"
#include "schema.h"
#include "sql.h"

static PGconn *conn;
static struct conf *conf; /* NULL when run with -d and no configuration */

static void die(int code, const char *fmt, const char *arg)
{
	fprintf(stderr, "imgsyncctl: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	PQfinish(conn);
	exit(code);
}

static const char *pq_err(void)
{
	static char msg[512];
	size_t n;

	snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return msg;
}

PGresult *ctl_exec(PGconn *c, const char *sql, int n, const char *const *params, struct err *e)
{
	PGresult *r =
	    n || params ? PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0) : PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);
	const char *prim, *hint, *msg;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return r;
	prim = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	hint = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
	msg = prim ? prim : r ? PQresultErrorMessage(r) : PQerrorMessage(c);
	/* the server's message (and hint), without severity and context; a lost
	 * connection is worth trying again, a refused statement is not */
	err_set(e, PQstatus(c) == CONNECTION_OK ? ERR_INVALID : ERR_TRANSIENT, "%s%s%s%s", msg,
		hint ? " (" : "", hint ? hint : "", hint ? ")" : "");
	e->msg[strcspn(e->msg, "\n")] = '\0';
	PQclear(r);
	return NULL;
}

/* Run a statement; die with the server's message unless it succeeds. */
static PGresult *run(const char *sql, int n, const char *const *params)
{
	struct err e;
	PGresult *r = ctl_exec(conn, sql, n, params, &e);

	if (r == NULL)
		die(e.code == ERR_TRANSIENT ? EX_UNAVAILABLE : EX_SOFTWARE, "%s", e.msg);
	return r;
}

static void connect_db(const char *conninfo)
{
	conn = PQconnectdb(conninfo ? conninfo : "");
	if (PQstatus(conn) != CONNECTION_OK)
		die(EX_UNAVAILABLE, "cannot connect to PostgreSQL: %s", pq_err());
	PQclear(run("SET client_min_messages = warning", 0, NULL));
}

static int cmd_init(const char *channel)
{
	int applied = 0, last = 0;
	char ver[16];

	PQclear(run("BEGIN", 0, NULL));
	PQclear(run(SQL_INIT_LOCK, 0, NULL));
	PQclear(run(SQL_VERSION_TABLE, 0, NULL));
	for (int i = 0; i < schema_nsteps; i++) {
		const struct schema_step *s = &schema_steps[i];
		const char *p[2] = {ver, s->name};
		PGresult *r;

		snprintf(ver, sizeof(ver), "%d", s->version);
		r = run(SQL_VERSION_APPLIED, 1, p);
		last = s->version;
		if (PQntuples(r) > 0) {
			PQclear(r);
			continue;
		}
		PQclear(r);
		PQclear(run(s->sql, 0, NULL));
		PQclear(run(SQL_VERSION_RECORD, 2, p));
		printf("applied %s\n", s->name);
		applied++;
	}
	/* without a configuration (-d), the channel is left as it is */
	if (channel) {
		const char *p[1] = {channel};

		PQclear(run(SQL_SET_CHANNEL, 1, p));
	}
	PQclear(run("COMMIT", 0, NULL));
	printf("imgsync schema is at version %d%s", last, applied ? "" : " (nothing to do)");
	if (channel)
		printf("; notifications go to channel \"%s\"", channel);
	printf("\n");
	return EX_OK;
}

static int cmd_migrations(void);

static int cmd_status(bool watch)
{
	bool tty = isatty(STDOUT_FILENO);

	for (;;) {
		PGresult *r = run(SQL_QUEUE_STATUS, 0, NULL);

		if (watch && tty)
			printf("\033[H\033[J");
		printf("queue: %s pending, %s in flight, %s retrying, %s dead", PQgetvalue(r, 0, 0),
		       PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
		if (strcmp(PQgetvalue(r, 0, 4), "0") != 0)
			printf("; oldest waiting %s s", PQgetvalue(r, 0, 4));
		printf("\n");
		PQclear(r);
		(void)cmd_migrations();
		if (!watch)
			return EX_OK;
		fflush(stdout);
		sleep(2);
	}
}

static int cmd_workers(void)
{
	PGresult *r = run(SQL_WORKERS, 0, NULL);

	printf("%-4s %-20s %-7s %-8s %-8s %9s %12s %14s %s\n", "id", "host", "pid", "version",
	       "state", "in-flight", "objects", "bytes", "heartbeat");
	for (int i = 0; i < PQntuples(r); i++)
		printf("%-4s %-20s %-7s %-8s %-8s %9s %12s %14s %ss ago\n", PQgetvalue(r, i, 0),
		       PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
		       PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
		       PQgetvalue(r, i, 7), PQgetvalue(r, i, 8));
	if (PQntuples(r) == 0)
		printf("no imgsyncd is running\n");
	PQclear(r);
	return EX_OK;
}

static int cmd_retry(const char *prefix)
{
	const char *p[1] = {prefix ? prefix : ""};
	PGresult *r = run(SQL_RETRY_DEAD, 1, p);

	printf("%s dead item(s) queued again\n", PQgetvalue(r, 0, 0));
	PQclear(r);
	return EX_OK;
}

/* --- migrations --- */

struct mstat {
	char id[24], source[64], target[64], mode[8], state[16], error[300];
	long long total, done, failed, skipped, bytes;
	double ops, bps;
	long long eta;
};

static void mstat_row(PGresult *r, int i, struct mstat *m)
{
	snprintf(m->id, sizeof(m->id), "%s", PQgetvalue(r, i, 0));
	snprintf(m->source, sizeof(m->source), "%s", PQgetvalue(r, i, 1));
	snprintf(m->target, sizeof(m->target), "%s", PQgetvalue(r, i, 2));
	snprintf(m->mode, sizeof(m->mode), "%s", PQgetvalue(r, i, 3));
	snprintf(m->state, sizeof(m->state), "%s", PQgetvalue(r, i, 4));
	m->total = atoll(PQgetvalue(r, i, 5));
	m->done = atoll(PQgetvalue(r, i, 6));
	m->failed = atoll(PQgetvalue(r, i, 7));
	m->skipped = atoll(PQgetvalue(r, i, 8));
	m->bytes = atoll(PQgetvalue(r, i, 9));
	m->ops = atof(PQgetvalue(r, i, 10));
	m->bps = atof(PQgetvalue(r, i, 11));
	m->eta = atoll(PQgetvalue(r, i, 12));
	snprintf(m->error, sizeof(m->error), "%s", PQgetvalue(r, i, 13));
}

static const char *human_bytes(double b, char *out, size_t size)
{
	const char *unit[] = {"B", "kB", "MB", "GB", "TB"};
	int u = 0;

	while (b >= 1000 && u < 4) {
		b /= 1000;
		u++;
	}
	snprintf(out, size, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
	return out;
}

static const char *human_eta(long long s, char *out, size_t size)
{
	if (s < 0)
		snprintf(out, size, "--:--");
	else if (s >= 3600)
		snprintf(out, size, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(out, size, "%lld:%02lld", s / 60, s % 60);
	return out;
}

/* One migration in one line; with a bar when the output is a terminal. */
static void mstat_print(const struct mstat *m, bool bar, bool cr)
{
	long long ended = m->done + m->failed + m->skipped;
	int pct = m->total ? (int)(100 * ended / m->total) : (strcmp(m->state, "done") ? 0 : 100);
	char b1[32], b2[32], eta[32], bars[32];
	int fill = pct * 20 / 100;

	for (int i = 0; i < 20; i++)
		bars[i] = i < fill ? '#' : '.';
	bars[20] = '\0';
	if (bar)
		printf("%s%s [%s] %3d%% %lld/%lld", cr ? "\r\033[K" : "", m->id, bars, pct, ended,
		       m->total);
	else
		printf("migration %s %s %s -> %s: %s, %lld/%lld (%d%%)", m->id, m->mode, m->source,
		       m->target, m->state, ended, m->total, pct);
	printf(", %lld failed, %lld skipped, %s, %.1f obj/s, %s/s, ETA %s", m->failed, m->skipped,
	       human_bytes((double)m->bytes, b1, sizeof(b1)), m->ops,
	       human_bytes(m->bps, b2, sizeof(b2)), human_eta(m->eta, eta, sizeof(eta)));
	if (bar)
		printf(" %s", m->state);
	if (!cr || !bar)
		printf("\n");
	if (m->error[0] && (!bar || !cr))
		printf("    last error: %s\n", m->error);
	fflush(stdout);
}

static bool mstat_get(const char *id, struct mstat *m)
{
	const char *p[1] = {id};
	PGresult *r = run(SQL_MIGRATION_ONE, 1, p);
	bool found = PQntuples(r) == 1;

	if (found)
		mstat_row(r, 0, m);
	PQclear(r);
	return found;
}

static bool ended(const char *state)
{
	return strcmp(state, "done") == 0 || strcmp(state, "failed") == 0 ||
	       strcmp(state, "cancelled") == 0;
}

/* LISTEN for the end of migrations (the schema notifies "<channel>_migrations"
 * when one ends), so that --wait returns at once rather than at its next
 * look; without it (an older schema) --wait just looks every half second. */
static bool listen_ends(void)
{
	PGresult *r = PQexec(conn, "SELECT imgsync.migrations_channel()");
	char *ident = NULL, *sql = NULL;
	bool ok = false;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
	    (ident = PQescapeIdentifier(conn, PQgetvalue(r, 0, 0), strlen(PQgetvalue(r, 0, 0)))) &&
	    (sql = malloc(strlen(ident) + 8))) {
		PGresult *l;

		sprintf(sql, "LISTEN %s", ident);
		l = PQexec(conn, sql);
		ok = PQresultStatus(l) == PGRES_COMMAND_OK;
		PQclear(l);
	}
	PQclear(r);
	PQfreemem(ident);
	free(sql);
	return ok;
}

/* Up to ms milliseconds, or until a notification arrives. */
static void wait_notify(int ms)
{
	struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
	PGnotify *n;

	if (pfd.fd >= 0 && poll(&pfd, 1, ms) > 0)
		(void)PQconsumeInput(conn);
	while ((n = PQnotifies(conn)) != NULL)
		PQfreemem(n);
}

/* Follow a migration to its end: 0 when done, 1 when it failed or was cancelled. */
static int wait_migration(const char *id)
{
	bool tty = isatty(STDOUT_FILENO), listening = listen_ends();
	struct mstat m;
	time_t last = 0;

	for (;;) {
		if (!mstat_get(id, &m))
			die(EX_SOFTWARE, "migration %s vanished", id);
		if (ended(m.state))
			break;
		if (tty)
			mstat_print(&m, true, true);
		else if (time(NULL) >= last + 5) {
			mstat_print(&m, false, false);
			last = time(NULL);
		}
		if (listening)
			wait_notify(500);
		else
			usleep(500000);
	}
	if (tty)
		printf("\r\033[K");
	mstat_print(&m, false, false);
	return strcmp(m.state, "done") == 0 ? EX_OK : 1;
}

static int cmd_migrate(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"copy", no_argument, NULL, 'C'},
	    {"dry-run", no_argument, NULL, 'n'},
	    {"prefix", required_argument, NULL, 'p'},
	    {"follow", no_argument, NULL, 'f'},
	    {"verify", no_argument, NULL, 'v'},
	    {"wait", no_argument, NULL, 'w'},
	    {NULL, 0, NULL, 0},
	};
	const char *mode = "move", *prefix = NULL, *dry = NULL, *verify = NULL, *follow = NULL;
	bool wait = false;
	PGresult *r;
	char id[24];
	int ch;

	optind = 0; /* glibc: a full reset, permutation state included */
	/* options may follow the store names: let getopt permute */
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'C':
			mode = "copy";
			break;
		case 'n':
			dry = "true";
			break;
		case 'p':
			prefix = optarg;
			break;
		case 'f':
			follow = "true";
			break;
		case 'v':
			verify = "true";
			break;
		case 'w':
			wait = true;
			break;
		default:
			die(EX_USAGE, "%s",
			    "usage: imgsyncctl migrate SOURCE TARGET [--copy] [--dry-run] "
			    "[--prefix P] [--follow] [--verify] [--wait]");
		}
	}
	if (argc - optind != 2)
		die(EX_USAGE, "%s", "migrate needs a SOURCE and a TARGET store");
	for (int i = 0; i < 2 && conf; i++)
		if (conf_store(conf, argv[optind + i]) == NULL) {
			static char msg[300];

			snprintf(msg, sizeof(msg), "no store named \"%s\" in %s", argv[optind + i],
				 conf->path);
			die(EX_USAGE, "%s", msg);
		}
	{
		const char *p[7] = {argv[optind], argv[optind + 1], mode,  dry,
				    prefix,	  verify,	    follow};

		r = run(SQL_START_MIGRATION, 7, p);
	}
	snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	printf("migration %s started: %s from %s to %s%s\n", id, mode, argv[optind],
	       argv[optind + 1], dry ? " (dry run)" : "");
	fflush(stdout);
	return wait ? wait_migration(id) : EX_OK;
}

static int cmd_on_migration(const char *sql, const char *what, const char *id)
{
	const char *p[1] = {id};
	char *end;

	if (id == NULL || strtoll(id, &end, 10) <= 0 || *end)
		die(EX_USAGE, "%s needs the number of a migration (see imgsyncctl status)", what);
	PQclear(run(sql, 1, p));
	if (strcmp(what, "cancelled") == 0) {
		/* a follow migration that had caught up ends as done */
		struct mstat m;

		if (mstat_get(id, &m) && strcmp(m.state, "cancelled") != 0)
			what = strcmp(m.state, "done") == 0 ? "ended, done (it had caught up)"
							    : m.state;
	}
	printf("migration %s: %s\n", id, what);
	return EX_OK;
}

static int cmd_migrations(void)
{
	PGresult *r = run(SQL_MIGRATIONS, 0, NULL);
	bool tty = isatty(STDOUT_FILENO);

	for (int i = 0; i < PQntuples(r); i++) {
		struct mstat m;

		mstat_row(r, i, &m);
		if (tty && !ended(m.state)) {
			printf("migration %s %s %s -> %s\n  ", m.id, m.mode, m.source, m.target);
			mstat_print(&m, true, false);
		} else
			mstat_print(&m, false, false);
	}
	if (PQntuples(r) == 0)
		printf("no migration in the last day\n");
	PQclear(r);
	return EX_OK;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: imgsyncctl [-c FILE] [-d CONNINFO] COMMAND\n"
		"\n"
		"  init                install or upgrade the imgsync schema\n"
		"  status [--watch]    the work queue and the migrations of the last day\n"
		"  workers             the running imgsyncd daemons\n"
		"  migrate SOURCE TARGET [--copy] [--dry-run] [--prefix P] [--follow] [--verify]\n"
		"          [--wait]    move (or copy) every image from one store to another\n"
		"  pause ID, resume ID, cancel ID\n"
		"                      hold, continue or end a migration\n"
		"  retry ID            try a migration's failed images again\n"
		"  retry-dead [PREFIX] queue dead items (whose key starts with PREFIX) again\n"
		"  verify [--checksum] STORE_A [STORE_B]\n"
		"                      compare the catalog with what the stores hold: one line\n"
		"                      per missing, extra or mismatched object, then a summary;\n"
		"                      exit 1 on a difference.  Sizes come from the listings;\n"
		"                      --checksum also compares each object's MD5 (from the\n"
		"                      store's metadata where it keeps one, else by reading\n"
		"                      the object).  Images with work queued are skipped\n"
		"\n"
		"  -c, --config FILE      configuration (default %s)\n"
		"  -d, --dbname CONNINFO  database to use instead of the configuration's\n",
		CONF_DEFAULT_PATH);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"dbname", required_argument, NULL, 'd'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = CONF_DEFAULT_PATH, *conninfo = NULL, *cmd, *channel = NULL;
	struct err e = {0};
	int ch, rc;

	while ((ch = getopt_long(argc, argv, "+c:d:hV", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			conninfo = optarg;
			break;
		case 'h':
			usage(stdout);
			return EX_OK;
		case 'V':
			printf("imgsyncctl %s\n", IMGSYNC_VERSION);
			return EX_OK;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EX_USAGE;
	}
	cmd = argv[optind++];
	/* The database section is all most commands need; with -d the
	 * configuration may be missing (an admin without access to it). */
	if (conf_load(path, &conf, &e)) {
		if (conninfo == NULL)
			conninfo = conf->db_conninfo;
		channel = conf->db_channel;
	} else if (conninfo == NULL) {
		fprintf(stderr, "imgsyncctl: %s\n", e.msg);
		return EX_CONFIG;
	}
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		conf_free(conf);
		return EX_OK;
	}
	if (strcmp(cmd, "verify") == 0 && conf == NULL) {
		/* the stores are in the configuration, whatever -d says */
		fprintf(stderr, "imgsyncctl: verify needs the stores of the configuration: %s\n",
			e.msg);
		return EX_CONFIG;
	}
	connect_db(conninfo);
	if (strcmp(cmd, "init") == 0)
		rc = cmd_init(channel);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(optind < argc && strcmp(argv[optind], "--watch") == 0);
	else if (strcmp(cmd, "workers") == 0)
		rc = cmd_workers();
	else if (strcmp(cmd, "migrate") == 0)
		rc = cmd_migrate(argc - optind + 1, argv + optind - 1);
	else if (strcmp(cmd, "pause") == 0)
		rc = cmd_on_migration(SQL_PAUSE, "paused", optind < argc ? argv[optind] : NULL);
	else if (strcmp(cmd, "resume") == 0)
		rc = cmd_on_migration(SQL_RESUME, "resumed", optind < argc ? argv[optind] : NULL);
	else if (strcmp(cmd, "cancel") == 0)
		rc = cmd_on_migration(SQL_CANCEL, "cancelled", optind < argc ? argv[optind] : NULL);
	else if (strcmp(cmd, "retry") == 0)
		rc = cmd_on_migration(SQL_RETRY_FAILED, "failed images queued again",
				      optind < argc ? argv[optind] : NULL);
	else if (strcmp(cmd, "retry-dead") == 0)
		rc = cmd_retry(optind < argc ? argv[optind] : NULL);
	else if (strcmp(cmd, "verify") == 0)
		rc = ctl_verify(conn, conf, argc - optind + 1, argv + optind - 1);
	else {
		fprintf(stderr, "imgsyncctl: unknown command \"%s\"\n", cmd);
		usage(stderr);
		rc = EX_USAGE;
	}
	PQfinish(conn);
	conf_free(conf);
	return rc;
}
