/*
 * imgsyncctl - the admin's tool.  It talks only to PostgreSQL (and, for
 * verify, to the stores) and prints errors in one line a human can act on.
 * Blocking libpq is right here: one command, one connection, then exit.
 */
#include <getopt.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "conf.h"
#include "schema.h"
#include "sql.h"

static PGconn *conn;

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

/* Run a statement; die with the server's message unless it succeeds. */
static PGresult *run(const char *sql, int n, const char *const *params)
{
	PGresult *r = n || params ? PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0)
				  : PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(r);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		static char msg[1024];

		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
		msg[strcspn(msg, "\n")] = '\0';
		PQclear(r);
		die(EX_SOFTWARE, "%s", msg);
	}
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

static int cmd_status(void)
{
	PGresult *r = run(SQL_QUEUE_STATUS, 0, NULL);

	printf("queue: %s pending, %s in flight, %s retrying, %s dead", PQgetvalue(r, 0, 0),
	       PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
	if (strcmp(PQgetvalue(r, 0, 4), "0") != 0)
		printf("; oldest waiting %s s", PQgetvalue(r, 0, 4));
	printf("\n");
	PQclear(r);
	return EX_OK;
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

static void usage(FILE *f)
{
	fprintf(f,
		"usage: imgsyncctl [-c FILE] [-d CONNINFO] COMMAND\n"
		"\n"
		"  init                install or upgrade the imgsync schema\n"
		"  status              the work queue\n"
		"  workers             the running imgsyncd daemons\n"
		"  retry [PREFIX]      queue dead items (whose key starts with PREFIX) again\n"
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
	struct conf *conf = NULL;
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
	if (strcmp(cmd, "init") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "workers") == 0 ||
	    strcmp(cmd, "retry") == 0)
		connect_db(conninfo);
	if (strcmp(cmd, "init") == 0)
		rc = cmd_init(channel);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status();
	else if (strcmp(cmd, "workers") == 0)
		rc = cmd_workers();
	else if (strcmp(cmd, "retry") == 0)
		rc = cmd_retry(optind < argc ? argv[optind] : NULL);
	else {
		fprintf(stderr, "imgsyncctl: unknown command \"%s\"\n", cmd);
		usage(stderr);
		rc = EX_USAGE;
	}
	PQfinish(conn);
	conf_free(conf);
	return rc;
}
