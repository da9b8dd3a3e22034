/*
 * conf.h - imgsyncd.conf as a plain, immutable struct.
 *
 * conf_load() parses the file with libconfuse, validates every value, loads
 * secrets (from a file, $CREDENTIALS_DIRECTORY or the environment) and
 * returns a struct that nobody modifies afterwards; a reload builds a new
 * one and swaps it whole.  Nothing outside conf.c includes <confuse.h>.
 *
 * Every error reads "FILE:LINE: message" (or "FILE: message" for the file
 * as a whole) and has code ERR_CONFIG (ERR_NOMEM when memory runs out).
 * Warnings (conf->warnings) read the same way.  No message ever contains a
 * secret.  conf_load() is safe to call from any thread (calls are
 * serialised: libconfuse's lexer is global state).
 */
#ifndef IMGSYNC_CONF_H
#define IMGSYNC_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "layout.h"

#define CONF_DEFAULT_PATH "/etc/imgsync/imgsyncd.conf"

struct store_cfg {
	char *name; /* the section title: store "NAME" */
	char *type; /* "fs" or "s3": looked up in the store registry */
	int line;   /* line of the store section, for messages */
	enum layout_kind layout;

	/* type fs */
	char *root; /* absolute directory */
	bool fsync; /* fsync files and directories (default true) */
	/* remove directories a delete left empty (default false: an application
	 * creating a file there at that moment would fail) */
	bool prune_empty_dirs;

	/* type s3 */
	char *endpoint; /* "https://host[:port]" or "http://..." */
	char *region;	/* default "us-east-1" */
	char *bucket;
	char *prefix;	 /* "" when unset */
	bool path_style; /* default false */
	char *access_key_id;
	char *secret_access_key; /* secret: never printed */
	char *session_token;	 /* secret, optional */
	/* Where the secret came from, for messages: the file read, "secret_access_key"
	 * or "environment AWS_SECRET_ACCESS_KEY".  Never the secret itself. */
	char *secret_source;
	char *public_url;	      /* optional base of public links */
	bool tls_verify;	      /* default true */
	char *ca_file;		      /* optional CA bundle */
	uint64_t multipart_threshold; /* bytes; default 64 MiB */
	uint64_t part_size;	      /* bytes; default 16 MiB, >= 5 MiB */
	uint64_t range_size;	      /* downloads in ranges of it; default 32 MiB */
	long connect_timeout_ms;      /* connect_timeout (seconds) * 1000; default 10000 */
	long low_speed_time_s; /* abort a transfer slower than 1 byte/s for this long; default 60 */
};

struct conf {
	char *path; /* the file it was read from */

	char *db_conninfo; /* default "" (libpq defaults and PG* variables) */
	char *db_channel;  /* default "imgsync" */

	struct store_cfg *stores;
	size_t nstores;

	char **mirrors; /* store names, each one of stores[] */
	size_t nmirrors;

	int concurrency;  /* default 32, 1..1024 */
	int max_attempts; /* default 8, >= 1 */
	int stop_timeout; /* seconds in-flight work gets after SIGTERM; default 20, 1..3600 */

	char **warnings; /* things worth telling the operator (e.g. secret file mode) */
	size_t nwarnings;
};

bool conf_load(const char *path, struct conf **out, struct err *e) WUR;
void conf_free(struct conf *c);
const struct store_cfg *conf_store(const struct conf *c, const char *name);

#endif
