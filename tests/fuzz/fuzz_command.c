/*
 * fuzz_command.c - the admin commands that arrive as NOTIFY payloads.
 *
 * imgsyncd hands a payload to imgsync.command() as a bound parameter; the
 * parsing and checking is SQL (sql/001_base.sql).  Each input is run in a
 * transaction that is rolled back, against the PostgreSQL database named by
 * IMGSYNC_FUZZ_CONNINFO (with the imgsync schema; tests/e2e/fuzz-command.sh
 * makes one).  Invariants: a command is either done or refused as a data
 * error of its own (class 22, or a RAISE: P0001), never a syntax error, an
 * undefined object or an internal error (what SQL formatted from the input
 * would give; 54001: nested too deep, 55006: a migration under way); a refusal says what was wrong on one line, without a control
 * character; and the catalog can still be read afterwards.
 */
#include <libpq-fe.h>

#include "fuzz.h"

static PGconn *conn;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *ci = getenv("IMGSYNC_FUZZ_CONNINFO");

	(void)argc;
	(void)argv;
	if (ci == NULL || ci[0] == '\0') {
		fprintf(stderr, "fuzz_command: set IMGSYNC_FUZZ_CONNINFO to a database with the "
				"imgsync schema (tests/e2e/fuzz-command.sh does)\n");
		exit(2);
	}
	conn = PQconnectdb(ci);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "fuzz_command: %s", PQerrorMessage(conn));
		exit(2);
	}
	return 0;
}

static void exec_ok(const char *sql)
{
	PGresult *r = PQexec(conn, sql);

	CHECK(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
	      "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *payload;
	const char *p[1];
	PGresult *r;

	/* a NOTIFY payload is text: no NUL, and at most 8000 bytes */
	if (size > 8000 || memchr(data, 0, size) != NULL)
		return 0;
	payload = malloc(size + 1);
	if (payload == NULL)
		return 0;
	memcpy(payload, data, size);
	payload[size] = '\0';
	p[0] = payload;
	exec_ok("BEGIN");
	r = PQexecParams(conn, "SELECT imgsync.command($1)", 1, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

		CHECK(state && (strncmp(state, "22", 2) == 0 || strcmp(state, "P0001") == 0 ||
				strcmp(state, "54001") == 0 || strcmp(state, "55006") == 0),
		      "SQLSTATE %s for payload [%s]: %s", state ? state : "(none)", payload,
		      PQresultErrorMessage(r));
		/* invalid UTF-8 (22021) is refused by PostgreSQL before imgsync sees it */
		if (strcmp(state, "22021") != 0)
			CHECK(msg && msg[0] && fuzz_printable_utf8(msg),
			      "a refusal with a control character or none: [%s]", msg ? msg : "");
		PQclear(r);
		exec_ok("ROLLBACK");
	} else {
		PQclear(r);
		exec_ok("SELECT count(*) FROM imgsync.images, imgsync.migrations");
		exec_ok("ROLLBACK");
	}
	free(payload);
	return 0;
}
