/*
 * ctl.h - what imgsyncctl's command files share with imgsyncctl.c.
 *
 * imgsyncctl.c owns the connection (blocking libpq: one command, one
 * connection, then exit) and the configuration; a command file gets both
 * borrowed and returns a sysexits code.  Messages are one line on stderr,
 * "imgsyncctl: ...", written for the admin who reads them.
 */
#ifndef IMGSYNC_CTL_H
#define IMGSYNC_CTL_H

#include <libpq-fe.h>

#include "conf.h"
#include "err.h"

/* Run a statement with bound parameters (n of them; NULL entries are SQL
 * NULL).  Returns its result (PQclear it), or NULL with the server's
 * message in *e: ERR_TRANSIENT when the connection is gone, ERR_INVALID
 * when the server refused the statement. */
PGresult *ctl_exec(PGconn *conn, const char *sql, int n, const char *const *params, struct err *e);

/* imgsyncctl verify ARGS... (argv[0] is "verify"); see ctl_verify.c. */
int ctl_verify(PGconn *conn, const struct conf *conf, int argc, char **argv);

#endif
