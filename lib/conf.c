/*
 * conf.c - imgsyncd.conf: grammar, validation, secrets.
 *
 * Design:
 * - libconfuse parses.  Every option has a validate callback
 *   (cfg_set_validate_func); it runs while the lexer's line is the line of
 *   the option, so a bad value is reported on its own line, in file order.
 *   The callback also records the line of every option the file sets, which
 *   serves the checks made after parsing (cross-field rules, secrets) and
 *   refuses an option set twice.
 * - libconfuse's own messages arrive through cfg_set_error_function: the
 *   first one is kept as "FILE:LINE: message", common ones reworded to say
 *   what to do.  libconfuse never prints.
 * - prescan() walks the text once before libconfuse does (comments,
 *   strings, braces).  It notes where each top-level section opens, which
 *   libconfuse forgets; it blanks out comments, because libconfuse 3.3
 *   counts a comment's newline more than once (every later line number
 *   would be wrong) and refuses a comment inside a list; and it finds what
 *   libconfuse 3.3 lets pass: a section never closed, a list assigned twice.
 * - Secrets: never formatted into a message.  Text on the line of an inline
 *   secret that libconfuse cannot parse (an unquoted secret with '+' or a
 *   space) is not echoed, and as a last guard every message is scrubbed of
 *   any secret known at that point.
 * - libconfuse's lexer is global state: a mutex serialises conf_load(), and
 *   the callbacks find the load in progress through a static pointer.
 * - The result is a plain struct; the libconfuse tree is freed before
 *   returning.  Sizes are strings: bytes, or a number with K, M, G or T
 *   (optionally followed by "i" and/or "B"), always powers of 1024.
 */
#include "conf.h"

#include <confuse.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libintl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"

#define KIB (UINT64_C(1024))
#define MIB (KIB * 1024)
#define GIB (MIB * 1024)
#define TIB (GIB * 1024)

#define CONF_FILE_MAX	(1024 * 1024) /* a bigger "config" is a mistake */
#define SECRET_FILE_MAX (16 * 1024)   /* session tokens can be a few KiB */
#define S3_PART_MIN	(5 * MIB)
#define S3_PART_MAX	(5 * GIB)
#define S3_PUT_MAX	(5 * GIB)
#define RANGE_MIN	(1 * MIB) /* smaller ranges cost the server more than they gain */
#define SCRUB_MIN	4	  /* shorter "secrets" would mangle every message */

/* ---- the grammar ---- */

static int parse_int_cb(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result);
static int parse_bool_cb(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result);

static cfg_opt_t database_opts[] = {
    CFG_STR("conninfo", "", CFGF_NONE),
    CFG_STR("channel", "imgsync", CFGF_NONE),
    CFG_END(),
};

static cfg_opt_t store_opts[] = {
    CFG_STR("type", 0, CFGF_NODEFAULT),
    CFG_STR("layout", "plain", CFGF_NONE),
    CFG_STR("public_url", 0, CFGF_NODEFAULT),
    /* fs */
    CFG_STR("root", 0, CFGF_NODEFAULT),
    CFG_BOOL_CB("fsync", cfg_true, CFGF_NONE, parse_bool_cb),
    CFG_BOOL_CB("prune_empty_dirs", cfg_false, CFGF_NONE, parse_bool_cb),
    /* s3 */
    CFG_STR("endpoint", 0, CFGF_NODEFAULT),
    CFG_STR("region", 0, CFGF_NODEFAULT),
    CFG_STR("bucket", 0, CFGF_NODEFAULT),
    CFG_STR("prefix", "", CFGF_NONE),
    CFG_BOOL_CB("path_style", cfg_false, CFGF_NONE, parse_bool_cb),
    CFG_STR("access_key_id", 0, CFGF_NODEFAULT),
    CFG_STR("access_key_id_file", 0, CFGF_NODEFAULT),
    CFG_STR("secret_access_key", 0, CFGF_NODEFAULT),
    CFG_STR("secret_access_key_file", 0, CFGF_NODEFAULT),
    CFG_STR("session_token_file", 0, CFGF_NODEFAULT),
    CFG_BOOL_CB("tls_verify", cfg_true, CFGF_NONE, parse_bool_cb),
    CFG_STR("ca_file", 0, CFGF_NODEFAULT),
    CFG_STR("multipart_threshold", "64M", CFGF_NONE),
    CFG_STR("part_size", "16M", CFGF_NONE),
    CFG_STR("range_size", "32M", CFGF_NONE),
    CFG_INT_CB("connect_timeout", 10, CFGF_NONE, parse_int_cb),
    CFG_INT_CB("low_speed_time", 60, CFGF_NONE, parse_int_cb),
    CFG_END(),
};

static cfg_opt_t sync_opts[] = {
    CFG_STR_LIST("mirrors", 0, CFGF_NONE),
    CFG_END(),
};

static cfg_opt_t transfer_opts[] = {
    CFG_INT_CB("concurrency", 32, CFGF_NONE, parse_int_cb),
    CFG_INT_CB("max_attempts", 8, CFGF_NONE, parse_int_cb),
    CFG_INT_CB("stop_timeout", 20, CFGF_NONE, parse_int_cb),
    CFG_END(),
};

static cfg_opt_t root_opts[] = {
    CFG_SEC("database", database_opts, CFGF_NONE),
    CFG_SEC("store", store_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
    CFG_SEC("sync", sync_opts, CFGF_NONE),
    CFG_SEC("transfer", transfer_opts, CFGF_NONE),
    CFG_END(),
};

static const struct {
	const char *name;
	const cfg_opt_t *opts;
} sections[] = {
    {"database", database_opts},
    {"store", store_opts},
    {"sync", sync_opts},
    {"transfer", transfer_opts},
};

/* Options that only one store type understands. */
static const char *const fs_only[] = {"root", "fsync", "prune_empty_dirs", NULL};
static const char *const s3_only[] = {
    "endpoint",
    "region",
    "bucket",
    "prefix",
    "path_style",
    "access_key_id",
    "access_key_id_file",
    "secret_access_key",
    "secret_access_key_file",
    "session_token_file",
    "tls_verify",
    "ca_file",
    "multipart_threshold",
    "part_size",
    "range_size",
    "connect_timeout",
    "low_speed_time",
    NULL,
};

static const struct {
	const char *sec, *name;
	long min, max;
} int_ranges[] = {
    {"transfer", "concurrency", 1, 1024},  {"transfer", "max_attempts", 1, 1000},
    {"transfer", "stop_timeout", 1, 3600}, {"store", "connect_timeout", 1, 300},
    {"store", "low_speed_time", 1, 3600},
};

/* ---- the load in progress ---- */

struct opt_line {
	const cfg_opt_t *opt; /* unique per section instance */
	unsigned idx;	      /* the element, for lists */
	int line;
};

struct sec_start {
	char kw[16];
	int line;
};

struct parse {
	const char *path;
	struct err *e;
	bool failed; /* *e holds the first error */
	bool oom;
	struct opt_line *lines;
	size_t nlines, caplines;
	struct sec_start *starts; /* top-level sections, in file order */
	size_t nstarts, capstarts;
	int unterminated_line; /* a string the prescan found unterminated */
	int ml_start, ml_end;  /* the first string running over more than one line */
	int mirrors_set[2];    /* lines of the first two "mirrors =" */
	int list_line;	       /* the first "NAME = {" of an option that is no list */
	int nobrace_line;      /* the first section keyword with no "{" after it */
	char list_opt[32];
	int unclosed_line; /* a top-level section the prescan saw no end of */
	int closed_database, closed_sync, closed_transfer;
	const cfg_t *secret_sec; /* section and line of the last inline secret */
	int secret_line;
};

static pthread_mutex_t conf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct parse *P;

/* Printable rendering of a user value, for messages. */
static const char *show(const char *s, char *buf, size_t n)
{
	size_t i = 0;

	if (s == NULL)
		s = "";
	for (; *s && i + 4 < n; s++)
		buf[i++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
	if (*s && n > 4) {
		memcpy(buf + i, "...", 3);
		i += 3;
	}
	buf[i] = '\0';
	return buf;
}

/* "store \"NAME\": ", "transfer: " or "" for the top level. */
static void label(const cfg_t *sec, char *buf, size_t n)
{
	char t[80];

	if (sec == NULL || sec->name == NULL || strcmp(sec->name, "root") == 0)
		buf[0] = '\0';
	else if (sec->title)
		snprintf(buf, n, "%s \"%s\": ", sec->name, show(sec->title, t, sizeof(t)));
	else
		snprintf(buf, n, "%s: ", sec->name);
}

static void failv(const cfg_t *sec, int line, const char *fmt, va_list ap) PRINTF(3, 0);
static void failv(const cfg_t *sec, int line, const char *fmt, va_list ap)
{
	char lab[128], msg[800];

	if (P->failed)
		return;
	P->failed = true;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* One line whatever the file holds: libconfuse's own messages quote
	 * the text as it is (a newline in a string). */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	label(sec, lab, sizeof(lab));
	if (line > 0)
		err_set(P->e, ERR_CONFIG, "%s:%d: %s%s", P->path, line, lab, msg);
	else
		err_set(P->e, ERR_CONFIG, "%s: %s%s", P->path, lab, msg);
}

/* Record the first error; returns -1 for libconfuse callbacks. */
static int fail(const cfg_t *sec, int line, const char *fmt, ...) PRINTF(3, 4);
static int fail(const cfg_t *sec, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	failv(sec, line, fmt, ap);
	va_end(ap);
	return -1;
}

static int fail_oom(void)
{
	if (!P->failed)
		err_set(P->e, ERR_NOMEM, "%s: out of memory", P->path);
	P->failed = true;
	P->oom = true;
	return -1;
}

static char *sdup(const char *s)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		fail_oom();
	return d;
}

static bool warn(struct conf *c, int line, const char *fmt, ...) PRINTF(3, 4);
static bool warn(struct conf *c, int line, const char *fmt, ...)
{
	char msg[800], *w, **v;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	v = realloc(c->warnings, (c->nwarnings + 1) * sizeof(*v));
	if (v == NULL)
		return fail_oom(), false;
	c->warnings = v;
	if (line > 0) {
		if (asprintf(&w, "%s:%d: %s", P->path, line, msg) < 0)
			w = NULL;
	} else if (asprintf(&w, "%s: %s", P->path, msg) < 0) {
		w = NULL;
	}
	if (w == NULL)
		return fail_oom(), false;
	c->warnings[c->nwarnings++] = w;
	return true;
}

/* ---- small parsers and checks ---- */

static bool parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mult = 1;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	while (*p == ' ')
		p++;
	switch (toupper((unsigned char)*p)) {
	case 'K':
		mult = KIB;
		break;
	case 'M':
		mult = MIB;
		break;
	case 'G':
		mult = GIB;
		break;
	case 'T':
		mult = TIB;
		break;
	}
	if (mult != 1) {
		p++;
		if (*p == 'i')
			p++;
	}
	if (*p == 'B')
		p++;
	if (*p != '\0' || v > UINT64_MAX / mult)
		return false;
	*out = v * mult;
	return true;
}

static const char *fmt_size(uint64_t v, char *buf, size_t n)
{
	static const struct {
		uint64_t unit;
		const char *name;
	} units[] = {{TIB, "TiB"}, {GIB, "GiB"}, {MIB, "MiB"}, {KIB, "KiB"}};

	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (v >= units[i].unit && v % units[i].unit == 0) {
			snprintf(buf, n, "%llu %s", (unsigned long long)(v / units[i].unit),
				 units[i].name);
			return buf;
		}
	snprintf(buf, n, "%llu bytes", (unsigned long long)v);
	return buf;
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static bool has_space_or_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* "http://" or "https://" (any case), then the rest. */
static const char *url_rest(const char *u)
{
	if (strncasecmp(u, "https://", 8) == 0)
		return u + 8;
	if (strncasecmp(u, "http://", 7) == 0)
		return u + 7;
	return NULL;
}

static int check_url(const cfg_t *sec, int line, const char *name, const char *v, bool endpoint)
{
	char b[160];
	const char *rest = url_rest(v);
	size_t hostlen;

	if (rest == NULL)
		return fail(sec, line, "%s \"%s\" must start with http:// or https://", name,
			    show(v, b, sizeof(b)));
	if (has_space_or_ctl(v))
		return fail(sec, line, "%s \"%s\" must not contain spaces or control characters",
			    name, show(v, b, sizeof(b)));
	hostlen = strcspn(rest, "/?#");
	if (hostlen == 0)
		return fail(sec, line, "%s \"%s\" has no host name", name, show(v, b, sizeof(b)));
	if (memchr(rest, '@', hostlen))
		return fail(sec, line, "%s must not contain a user name or password", name);
	if (endpoint && rest[hostlen] != '\0' && strcmp(rest + hostlen, "/") != 0)
		return fail(sec, line,
			    "endpoint \"%s\" must be scheme://host[:port] with no path; "
			    "put a key prefix in prefix",
			    show(v, b, sizeof(b)));
	return 0;
}

static int check_bucket_chars(const cfg_t *sec, int line, const char *v)
{
	char b[160];
	size_t n = strlen(v);

	show(v, b, sizeof(b));
	if (n < 3 || n > 63)
		return fail(sec, line,
			    "bucket \"%s\" is not a valid S3 bucket name: it must be 3 to 63 "
			    "characters long",
			    b);
	for (const char *p = v; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-_", *p))
			return fail(sec, line,
				    "bucket \"%s\" is not a valid S3 bucket name: it may contain "
				    "only letters, digits, '.', '-' and '_'",
				    b);
	if (!isalnum((unsigned char)v[0]) || !isalnum((unsigned char)v[n - 1]))
		return fail(sec, line,
			    "bucket \"%s\" is not a valid S3 bucket name: it must begin and end "
			    "with a letter or digit",
			    b);
	if (strstr(v, ".."))
		return fail(
		    sec, line,
		    "bucket \"%s\" is not a valid S3 bucket name: it must not contain \"..\"", b);
	return 0;
}

static bool looks_like_ipv4(const char *v)
{
	unsigned a, b, c, d;
	char tail;

	return sscanf(v, "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4;
}

static bool valid_store_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

static bool valid_channel(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || isdigit((unsigned char)s[0]))
		return false;
	for (; *s; s++)
		if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

static int check_path(const cfg_t *sec, int line, const char *name, const char *v)
{
	char b[160];

	if (v[0] != '/')
		return fail(sec, line, "%s \"%s\" is not an absolute path", name,
			    show(v, b, sizeof(b)));
	if (has_ctl(v))
		return fail(sec, line, "%s \"%s\" contains control characters", name,
			    show(v, b, sizeof(b)));
	return 0;
}

static int check_prefix(const cfg_t *sec, int line, const char *v)
{
	char b[160];
	const char *p = v;

	show(v, b, sizeof(b));
	if (strlen(v) > 512)
		return fail(sec, line, "prefix is longer than 512 bytes");
	if (has_ctl(v))
		return fail(sec, line, "prefix \"%s\" contains control characters", b);
	if (v[0] == '/')
		return fail(sec, line, "prefix \"%s\" must not start with \"/\"", b);
	while (*p) {
		size_t n = strcspn(p, "/");

		if ((n == 0 && p[n] == '/') || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return fail(
			    sec, line,
			    "prefix \"%s\" must not contain an empty, \".\" or \"..\" segment", b);
		p += n;
		if (*p == '/')
			p++;
	}
	return 0;
}

/*
 * What libpq will make of conninfo, checked now rather than at the first
 * connection.  libpq's message quotes the text; it is shown only when the
 * text cannot hold a password ("password=", or user:password@ in a URI).
 */
static bool may_hold_password(const char *v)
{
	const char *auth = strstr(v, "://"), *at;

	if (strstr(v, "password") != NULL)
		return true;
	if (auth == NULL || (at = strchr(auth + 3, '@')) == NULL)
		return false;
	return memchr(auth + 3, ':', (size_t)(at - auth - 3)) != NULL; /* user:password@ */
}

static int check_conninfo(const cfg_t *sec, int line, const char *v)
{
	PQconninfoOption *opts;
	char *msg = NULL;
	int rc = 0;

	if (v[0] == '\0')
		return 0;
	opts = PQconninfoParse(v, &msg);
	if (opts == NULL) {
		size_t n = msg ? strlen(msg) : 0;

		while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
			msg[--n] = '\0';
		if (msg == NULL)
			rc = fail_oom();
		else if (may_hold_password(v))
			rc = fail(sec, line,
				  "conninfo is not a valid libpq connection string or URI (not "
				  "shown: it may hold a password)");
		else
			rc = fail(sec, line, "conninfo is not a valid libpq connection string: %s",
				  msg);
	}
	PQconninfoFree(opts);
	PQfreemem(msg);
	return rc;
}

/* ---- libconfuse callbacks ---- */

static int parse_int_cb(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	char b[80];
	char *end;
	long v;

	errno = 0;
	v = strtol(value, &end, 10);
	if (end == value || *end != '\0' || isspace((unsigned char)*value))
		return fail(cfg, cfg->line, "%s must be a whole number, not \"%s\"", opt->name,
			    show(value, b, sizeof(b)));
	if (errno == ERANGE) {
		for (size_t i = 0; i < sizeof(int_ranges) / sizeof(int_ranges[0]); i++)
			if (strcmp(cfg->name, int_ranges[i].sec) == 0 &&
			    strcmp(opt->name, int_ranges[i].name) == 0)
				return fail(cfg, cfg->line,
					    "%s must be between %ld and %ld, not %s", opt->name,
					    int_ranges[i].min, int_ranges[i].max,
					    show(value, b, sizeof(b)));
		return fail(cfg, cfg->line, "%s is out of range: %s", opt->name,
			    show(value, b, sizeof(b)));
	}
	*(long *)result = v;
	return 0;
}

static int parse_bool_cb(cfg_t *cfg, cfg_opt_t *opt, const char *value, void *result)
{
	char b[80];
	int v = cfg_parse_boolean(value);

	if (v < 0)
		return fail(cfg, cfg->line, "%s must be true or false, not \"%s\"", opt->name,
			    show(value, b, sizeof(b)));
	*(int *)result = v;
	return 0;
}

/*
 * Note the line of an option, or of each element of a list; refuse a value
 * option set twice.  (A list's callback also runs at its closing brace.  A
 * list assigned twice is caught by the prescan.)
 */
static int record_line(cfg_t *sec, cfg_opt_t *opt)
{
	bool list = (opt->flags & CFGF_LIST) != 0;
	unsigned idx = list && opt->nvalues > 0 ? opt->nvalues - 1 : 0;

	for (size_t i = 0; i < P->nlines; i++) {
		if (P->lines[i].opt != opt || P->lines[i].idx != idx)
			continue;
		if (list)
			return 0;
		return fail(sec, sec->line, "%s is set twice (first at line %d)", opt->name,
			    P->lines[i].line);
	}
	if (P->nlines == P->caplines) {
		size_t cap = P->caplines ? 2 * P->caplines : 32;
		struct opt_line *v = realloc(P->lines, cap * sizeof(*v));

		if (v == NULL)
			return fail_oom();
		P->lines = v;
		P->caplines = cap;
	}
	P->lines[P->nlines].opt = opt;
	P->lines[P->nlines].idx = idx;
	P->lines[P->nlines].line = sec->line;
	P->nlines++;
	return 0;
}

static int check_str(cfg_t *sec, const char *name, const char *v)
{
	const char *s = sec->name;
	int line = sec->line;
	char b[160];
	uint64_t size;

	if (v == NULL)
		return 0;
	/* Only a quote missing makes one of these values span lines (a "\n"
	 * escape is the control character it stands for, refused below). */
	if (strchr(v, '\n') && strcmp(name, "conninfo") != 0 && P->ml_start && P->ml_start < line)
		return fail(sec, P->ml_start,
			    "the value of %s runs on over more than one line; is a closing quote "
			    "missing?",
			    name);
	show(v, b, sizeof(b));
	if (strcmp(s, "database") == 0) {
		if (strcmp(name, "conninfo") == 0)
			return check_conninfo(sec, line, v);
		if (strcmp(name, "channel") == 0 && !valid_channel(v))
			return fail(sec, line,
				    "channel \"%s\" must be a plain identifier: lowercase letters, "
				    "digits and '_', not starting with a digit, at most 63 bytes",
				    b);
		return 0;
	}
	if (strcmp(s, "sync") == 0) {
		if (v[0] == '\0')
			return fail(sec, line, "%s contains an empty store name", name);
		return 0;
	}
	if (strcmp(s, "store") != 0)
		return 0;

	if (strcmp(name, "type") == 0) {
		if (strcmp(v, "fs") != 0 && strcmp(v, "s3") != 0)
			return fail(sec, line, "type \"%s\" is unknown; use \"fs\" or \"s3\"", b);
	} else if (strcmp(name, "layout") == 0) {
		enum layout_kind k;

		if (!layout_parse(v, &k))
			return fail(sec, line,
				    "layout \"%s\" is unknown; use \"plain\" or \"imageattach\"",
				    b);
	} else if (strcmp(name, "root") == 0 || strcmp(name, "ca_file") == 0 ||
		   strcmp(name, "access_key_id_file") == 0 ||
		   strcmp(name, "secret_access_key_file") == 0 ||
		   strcmp(name, "session_token_file") == 0) {
		return check_path(sec, line, name, v);
	} else if (strcmp(name, "endpoint") == 0) {
		return check_url(sec, line, name, v, true);
	} else if (strcmp(name, "public_url") == 0) {
		return check_url(sec, line, name, v, false);
	} else if (strcmp(name, "region") == 0) {
		if (v[0] == '\0' || strlen(v) > 64 ||
		    strspn(v, "abcdefghijklmnopqrstuvwxyz"
			      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			      "0123456789._-") != strlen(v))
			return fail(sec, line,
				    "region \"%s\" may contain only letters, digits, '.', '-' and "
				    "'_' (1 to 64 of them)",
				    b);
	} else if (strcmp(name, "bucket") == 0) {
		return check_bucket_chars(sec, line, v);
	} else if (strcmp(name, "prefix") == 0) {
		return check_prefix(sec, line, v);
	} else if (strcmp(name, "access_key_id") == 0) {
		/* Not echoed: an access key id is half a credential. */
		if (v[0] == '\0')
			return fail(sec, line, "access_key_id is empty");
		if (has_space_or_ctl(v))
			return fail(sec, line,
				    "access_key_id contains spaces or control characters");
	} else if (strcmp(name, "secret_access_key") == 0) {
		if (v[0] == '\0')
			return fail(sec, line, "secret_access_key is empty");
		if (has_ctl(v))
			return fail(sec, line, "secret_access_key contains control characters");
	} else if (strcmp(name, "multipart_threshold") == 0 || strcmp(name, "part_size") == 0) {
		char l[32], m[32];
		bool part = strcmp(name, "part_size") == 0;

		if (!parse_size(v, &size))
			return fail(sec, line,
				    "%s \"%s\" is not a size; write bytes or a number with K, M, G "
				    "or T (powers of 1024), e.g. \"16M\"",
				    name, b);
		if (part && size < S3_PART_MIN)
			return fail(sec, line, "part_size %s is below the S3 minimum of %s",
				    fmt_size(size, l, sizeof(l)),
				    fmt_size(S3_PART_MIN, m, sizeof(m)));
		if (part && size > S3_PART_MAX)
			return fail(sec, line, "part_size %s is above the S3 maximum of %s",
				    fmt_size(size, l, sizeof(l)),
				    fmt_size(S3_PART_MAX, m, sizeof(m)));
		if (!part && size > S3_PUT_MAX)
			return fail(sec, line,
				    "multipart_threshold %s is above the S3 single-upload limit of "
				    "%s",
				    fmt_size(size, l, sizeof(l)),
				    fmt_size(S3_PUT_MAX, m, sizeof(m)));
	} else if (strcmp(name, "range_size") == 0) {
		char l[32], m[32], n[32];

		if (!parse_size(v, &size))
			return fail(
			    sec, line,
			    "range_size \"%s\" is not a size; write bytes or a number with K, "
			    "M, G or T (powers of 1024), e.g. \"32M\"",
			    b);
		if (size < RANGE_MIN || size > S3_PUT_MAX)
			return fail(sec, line, "range_size %s is outside %s to %s",
				    fmt_size(size, l, sizeof(l)), fmt_size(RANGE_MIN, m, sizeof(m)),
				    fmt_size(S3_PUT_MAX, n, sizeof(n)));
	}
	return 0;
}

static int check_int(cfg_t *sec, const char *name, long v)
{
	for (size_t i = 0; i < sizeof(int_ranges) / sizeof(int_ranges[0]); i++)
		if (strcmp(sec->name, int_ranges[i].sec) == 0 &&
		    strcmp(name, int_ranges[i].name) == 0 &&
		    (v < int_ranges[i].min || v > int_ranges[i].max))
			return fail(sec, sec->line, "%s must be between %ld and %ld, not %ld", name,
				    int_ranges[i].min, int_ranges[i].max, v);
	return 0;
}

/* Validate callback of every value option. */
static int on_value(cfg_t *sec, cfg_opt_t *opt)
{
	bool list = (opt->flags & CFGF_LIST) != 0;

	if (strcmp(opt->name, "secret_access_key") == 0) {
		P->secret_sec = sec;
		P->secret_line = sec->line;
	}
	if (record_line(sec, opt) != 0)
		return -1;
	if (opt->type == CFGT_STR && opt->nvalues > 0)
		return check_str(sec, opt->name, cfg_opt_getnstr(opt, list ? opt->nvalues - 1 : 0));
	if (opt->type == CFGT_INT)
		return check_int(sec, opt->name, cfg_opt_getnint(opt, 0));
	return 0;
}

/* The n-th (0-based) top-level section called kw, from the prescan. */
static int section_line(const char *kw, size_t n)
{
	for (size_t i = 0; i < P->nstarts; i++)
		if (strcmp(P->starts[i].kw, kw) == 0 && n-- == 0)
			return P->starts[i].line;
	return 0;
}

/* Validate callback of the single sections: each may appear once. */
static int on_section(cfg_t *root, cfg_opt_t *opt)
{
	int *closed = strcmp(opt->name, "database") == 0 ? &P->closed_database
		      : strcmp(opt->name, "sync") == 0	 ? &P->closed_sync
							 : &P->closed_transfer;

	(*closed)++;
	if (*closed > 1)
		return fail(NULL, section_line(opt->name, (size_t)*closed - 1),
			    "section %s appears twice (first at line %d); merge them", opt->name,
			    section_line(opt->name, 0));
	(void)root;
	return 0;
}

/* Edit distance counting a swap of neighbours as one edit, for "did you
 * mean". */
static size_t distance(const char *a, const char *b)
{
	unsigned char d[65][65];
	size_t la = strlen(a), lb = strlen(b);

	if (la > 64 || lb > 64)
		return 99;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned char)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned char)j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			unsigned best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);

			if (d[i - 1][j] + 1u < best)
				best = d[i - 1][j] + 1u;
			if (d[i][j - 1] + 1u < best)
				best = d[i][j - 1] + 1u;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1u < best)
				best = d[i - 2][j - 2] + 1u;
			d[i][j] = (unsigned char)best;
		}
	return d[la][lb];
}

static const char *closest(const char *name, const cfg_opt_t *opts)
{
	const char *best = NULL;
	size_t bestd = 3;

	for (; opts->name; opts++) {
		size_t d = distance(name, opts->name);

		if (d < bestd && d * 3 <= strlen(opts->name)) {
			best = opts->name;
			bestd = d;
		}
	}
	return best;
}

static const char *owning_section(const char *name, const char *except)
{
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		if (except && strcmp(sections[i].name, except) == 0)
			continue;
		for (const cfg_opt_t *o = sections[i].opts; o->name; o++)
			if (strcmp(o->name, name) == 0)
				return sections[i].name;
	}
	return NULL;
}

static void unknown_option(cfg_t *sec, int line, const char *name)
{
	char b[80], list[600];
	const char *hint, *owner;
	size_t n = 0;

	show(name, b, sizeof(b));
	if (strcmp(name, "include") == 0) {
		fail(sec, line,
		     "include is not supported: the configuration is one file (a reload "
		     "re-reads just that file)");
		return;
	}
	if (strcmp(sec->name, "root") == 0) {
		owner = owning_section(name, NULL);
		if (owner && strcmp(owner, "store") == 0)
			fail(NULL, line, "\"%s\" must be inside a store \"NAME\" { ... } section",
			     b);
		else if (owner)
			fail(NULL, line, "\"%s\" must be inside the %s section", b, owner);
		else if ((hint = closest(name, root_opts)))
			fail(NULL, line, "unknown section \"%s\"; did you mean \"%s\"?", b, hint);
		else
			fail(NULL, line,
			     "unknown section \"%s\"; the sections are database, store \"NAME\", "
			     "sync and transfer",
			     b);
		return;
	}
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (strcmp(sections[i].name, name) == 0) {
			fail(sec, line, "unknown option \"%s\"; is a \"}\" missing before it?", b);
			return;
		}
	if ((hint = closest(name, sec->opts))) {
		fail(sec, line, "unknown option \"%s\"; did you mean \"%s\"?", b, hint);
		return;
	}
	if ((owner = owning_section(name, sec->name))) {
		fail(sec, line, "unknown option \"%s\"; it belongs in the %s section", b, owner);
		return;
	}
	list[0] = '\0';
	for (const cfg_opt_t *o = sec->opts; o->name && n < sizeof(list); o++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", o->name);
	fail(sec, line, "unknown option \"%s\"; valid options: %s", b, list);
}

static bool is_msg(const char *fmt, const char *english)
{
	return strcmp(fmt, english) == 0 || strcmp(fmt, dgettext("confuse", english)) == 0;
}

static void duplicate_store(cfg_t *root, int line, const char *title)
{
	cfg_opt_t *opt = cfg_getopt(root, "store");
	unsigned n = cfg_opt_size(opt);
	int first = 0, here = section_line("store", n);
	char b[80];

	for (unsigned i = 0; i < n; i++)
		if (strcmp(cfg_title(cfg_opt_getnsec(opt, i)), title) == 0)
			first = section_line("store", i);
	fail(NULL, here ? here : line,
	     "store \"%s\" is defined twice (first at line %d); give each store its own name",
	     show(title, b, sizeof(b)), first);
}

/* libconfuse's error function: keep the first message, reworded. */
static void on_cfg_error(cfg_t *cfg, const char *fmt, va_list ap) PRINTF(2, 0);
static void on_cfg_error(cfg_t *cfg, const char *fmt, va_list ap)
{
	char b[80], msg[600];
	int line = cfg ? cfg->line : 0;

	if (P == NULL || P->failed)
		return;
	if (cfg && cfg == P->secret_sec && line == P->secret_line) {
		fail(cfg, line,
		     "cannot parse the line of secret_access_key (not shown: it holds a secret); "
		     "put the value in double quotes");
		return;
	}
	/* An error where a string spanning lines ends: a quote missing or one
	 * too many, back where the string opened. */
	if (P->ml_end && line == P->ml_end) {
		fail(NULL, P->ml_start,
		     "the string opened on this line runs on to line %d; is a quote missing or "
		     "one too many?",
		     P->ml_end);
		return;
	}
	if (cfg == NULL) {
		vsnprintf(msg, sizeof(msg), fmt, ap);
		fail(NULL, 0, "%s", msg);
	} else if (is_msg(fmt, "no such option '%s'")) {
		unknown_option(cfg, line, va_arg(ap, const char *));
	} else if (is_msg(fmt, "found duplicate title '%s'")) {
		duplicate_store(cfg, line, va_arg(ap, const char *));
	} else if (is_msg(fmt, "missing title for section '%s'")) {
		fail(cfg, line, "a %s needs a name: %s \"NAME\" { ... }", va_arg(ap, const char *),
		     "store");
	} else if (is_msg(fmt, "missing opening brace for section '%s'")) {
		const char *name = va_arg(ap, const char *);

		/* libconfuse notices on the next line; the keyword is where it is missing */
		if (P->nobrace_line && P->nobrace_line <= line)
			fail(NULL, P->nobrace_line, "missing \"{\" to open the %s section", name);
		else
			fail(cfg, line, "missing \"{\" to open the %s section", name);
	} else if (is_msg(fmt, "missing equal sign after option '%s'")) {
		fail(cfg, line, "missing \"=\" after %s", va_arg(ap, const char *));
	} else if (is_msg(fmt, "attempt to append to non-list option '%s'")) {
		fail(cfg, line, "\"+=\" works only for lists; write %s = ...",
		     va_arg(ap, const char *));
	} else if (is_msg(fmt, "unexpected token '%s'") && line == P->list_line) {
		fail(cfg, line, "%s takes one value, not a list { ... }",
		     show(P->list_opt, b, sizeof(b)));
	} else if (is_msg(fmt, "unexpected token '%s'")) {
		fail(cfg, line, "unexpected \"%s\"", show(va_arg(ap, const char *), b, sizeof(b)));
	} else if (is_msg(fmt, "premature end of file")) {
		if (P->unterminated_line)
			fail(NULL, P->unterminated_line,
			     "unterminated string: a closing quote is missing");
		else
			fail(cfg, line, "unexpected end of file; is a \"}\" or a value missing?");
	} else if (is_msg(fmt, "unexpected closing brace")) {
		fail(cfg, line, "unexpected \"}\": no section is open");
	} else if (is_msg(fmt, "unterminated string constant")) {
		/* libconfuse says so at the end of the file; the prescan knows
		 * where the string opened */
		if (P->unterminated_line)
			fail(NULL, P->unterminated_line,
			     "unterminated string: a closing quote is missing");
		else
			fail(cfg, line, "unterminated string: a closing quote is missing");
	} else {
		vsnprintf(msg, sizeof(msg), fmt, ap);
		fail(cfg, line, "%s", msg);
	}
}

/* cfg_set_validate_func returns the previous callback (NULL here), so its
 * result says nothing; the tests prove every option is validated. */
static void install_validators(cfg_t *cfg)
{
	char path[64];

	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
		if (strcmp(sections[i].name, "store") != 0)
			(void)cfg_set_validate_func(cfg, sections[i].name, on_section);
		for (const cfg_opt_t *o = sections[i].opts; o->name; o++) {
			snprintf(path, sizeof(path), "%s|%s", sections[i].name, o->name);
			(void)cfg_set_validate_func(cfg, path, on_value);
		}
	}
}

/* ---- prescan: where each top-level section opens ---- */

static bool add_start(const char *kw, size_t kwlen, int line)
{
	if (P->nstarts == P->capstarts) {
		size_t cap = P->capstarts ? 2 * P->capstarts : 8;
		struct sec_start *v = realloc(P->starts, cap * sizeof(*v));

		if (v == NULL)
			return fail_oom(), false;
		P->starts = v;
		P->capstarts = cap;
	}
	if (kwlen >= sizeof(P->starts[0].kw))
		kwlen = sizeof(P->starts[0].kw) - 1;
	memcpy(P->starts[P->nstarts].kw, kw, kwlen);
	P->starts[P->nstarts].kw[kwlen] = '\0';
	P->starts[P->nstarts].line = line;
	P->nstarts++;
	return true;
}

static bool is_section(const char *kw, size_t n)
{
	for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (strlen(sections[i].name) == n && memcmp(sections[i].name, kw, n) == 0)
			return true;
	return false;
}

/*
 * libconfuse replaces ${NAME} (bare or in double quotes) with the
 * environment variable NAME, and an unset one with nothing: a root or a
 * bucket would silently lose a part.  ${NAME:-default} is fine.  The name
 * of an option holding a secret is not shown (nor the variable's name, a
 * piece of the secret's text).
 */
static bool check_env(const char *s, size_t n, int line, const char *opt, size_t optlen)
{
	for (const char *p = s; p + 1 < s + n; p++) {
		const char *name, *close;
		char var[128], b[80];
		size_t len;

		if (p[0] != '$' || p[1] != '{')
			continue;
		name = p + 2;
		close = memchr(name, '}', (size_t)(s + n - name));
		len = close ? (size_t)(close - name) : (size_t)(s + n - name);
		if (memmem(name, len, ":-", 2) != NULL)
			continue;
		if (len >= sizeof(var))
			len = sizeof(var) - 1;
		memcpy(var, name, len);
		var[len] = '\0';
		if (getenv(var) != NULL)
			continue;
		if (optlen == strlen("secret_access_key") &&
		    memcmp(opt, "secret_access_key", optlen) == 0) {
			fail(
			    NULL, line,
			    "the value of secret_access_key names an environment variable (\"${\") "
			    "that is not set (not shown: it holds a secret); put the secret in "
			    "secret_access_key_file");
			return false;
		}
		fail(NULL, line,
		     "the environment variable %s is not set (${%s}); set it, or write "
		     "${%s:-DEFAULT}",
		     show(var, b, sizeof(b)), b, b);
		return false;
	}
	return true;
}

/*
 * Follows libconfuse's lexer closely enough to count lines and braces, and
 * blanks out comments (keeping their newlines): libconfuse 3.3 counts the
 * newline ending a comment more than once, which would put every later
 * message on the wrong line, and refuses a comment inside a list.
 */
static bool prescan(char *s, size_t n)
{
	char *p = s, *end = s + n;
	const char *kw = NULL, *prev = NULL, *opt = "";
	size_t kwlen = 0, prevlen = 0, optlen = 0;
	int line = 1, depth = 0, kwline = 0, ntok = 0, prevline = 0;
	char prev_tok = 0;

	while (p < end) {
		char c = *p, tok;
		const char *word = NULL; /* the text of a word or quoted string */
		size_t wordlen = 0;
		int tokline = line;

		if (c == '\n') {
			line++;
			p++;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\r') {
			p++;
			continue;
		}
		if (c == '#' || (c == '/' && p + 1 < end && p[1] == '/')) {
			while (p < end && *p != '\n')
				*p++ = ' ';
			continue;
		}
		if (c == '/' && p + 1 < end && p[1] == '*') {
			*p++ = ' ';
			*p++ = ' ';
			for (; p < end && !(*p == '*' && p + 1 < end && p[1] == '/'); p++)
				if (*p == '\n')
					line++;
				else
					*p = ' ';
			if (p == end) {
				fail(NULL, tokline,
				     "unterminated comment: a closing */ is missing");
				return false;
			}
			*p++ = ' ';
			*p++ = ' ';
			continue;
		}
		if (c == '"' || c == '\'') {
			for (p++, word = p; p < end && *p != c; p++) {
				if (*p == '\\' && p + 1 < end)
					p++;
				if (*p == '\n')
					line++;
			}
			wordlen = (size_t)(p - word);
			if (p >= end && !P->unterminated_line)
				P->unterminated_line = tokline;
			if (p < end && line > tokline && !P->ml_start) {
				P->ml_start = tokline;
				P->ml_end = line;
			}
			if (c == '"' && !check_env(word, wordlen, tokline, opt, optlen))
				return false;
			p = p < end ? p + 1 : end;
			tok = 's';
		} else if (strchr("{}()=,", c)) {
			p++;
			tok = c;
			if (c == '=' && prev) {
				opt = prev;
				optlen = prevlen;
			}
		} else if (c == '+' && p + 1 < end && p[1] == '=') {
			p += 2;
			tok = '+';
		} else if (c == '$' && p + 1 < end && p[1] == '{') {
			const char *at = p;

			while (p < end && *p != '}' && *p != '\n')
				p++;
			p = p < end && *p == '}' ? p + 1 : p;
			if (!check_env(at, (size_t)(p - at), tokline, opt, optlen))
				return false;
			tok = 's';
		} else {
			word = p;
			while (p < end && !strchr(" \t\r\n#\"'={}()+,*", *p) &&
			       !(*p == '/' && p + 1 < end && (p[1] == '/' || p[1] == '*')))
				p++;
			if (p == word) {
				p++; /* a character the lexer eats */
				continue;
			}
			wordlen = (size_t)(p - word);
			tok = 'w';
		}
		if (depth == 0) {
			if (word && ntok == 0) {
				kw = word;
				kwlen = wordlen;
				kwline = tokline;
				ntok = 1;
			} else if ((tok == 'w' || tok == 's') && ntok == 1) {
				ntok = 2;
			} else if (tok == '{' && ntok > 0) {
				if (!add_start(kw, kwlen, kwline))
					return false;
				ntok = 0;
			} else {
				/* a section keyword with no "{" after it (and its title) */
				if (ntok > 0 && !P->nobrace_line && is_section(kw, kwlen))
					P->nobrace_line = kwline;
				ntok = 0;
			}
		}
		if (tok == '{' && depth >= 1 && prev_tok == '=' && !P->list_line &&
		    !(optlen == 7 && memcmp(opt, "mirrors", 7) == 0)) {
			P->list_line = tokline;
			snprintf(P->list_opt, sizeof(P->list_opt), "%.*s", (int)optlen, opt);
		}
		if (depth == 1 && tok == '=' && prev && prevlen == 7 &&
		    memcmp(prev, "mirrors", 7) == 0) {
			if (P->mirrors_set[0] == 0)
				P->mirrors_set[0] = prevline;
			else if (P->mirrors_set[1] == 0)
				P->mirrors_set[1] = prevline;
		}
		prev = word;
		prevlen = wordlen;
		prevline = tokline;
		prev_tok = tok;
		if (tok == '{') {
			if (depth++ == 0)
				P->unclosed_line =
				    P->nstarts ? P->starts[P->nstarts - 1].line : tokline;
		} else if (tok == '}' && depth > 0 && --depth == 0) {
			P->unclosed_line = 0;
		}
	}
	return true;
}

/* ---- after parsing: build the struct ---- */

/* The line where the file sets an option (element idx of a list), or 0. */
static int elem_line(cfg_t *sec, const char *name, unsigned idx)
{
	const cfg_opt_t *opt = cfg_getopt(sec, name);

	for (size_t i = 0; i < P->nlines; i++)
		if (P->lines[i].opt == opt && P->lines[i].idx == idx)
			return P->lines[i].line;
	return 0;
}

static int opt_line(cfg_t *sec, const char *name)
{
	return elem_line(sec, name, 0);
}

/*
 * Whether this process is in group gid.  A secret file its group may read
 * is fine when that group is the daemon's own (root:imgsync 0640, for a
 * daemon reading it without LoadCredential=); any other group is a leak.
 */
static bool own_group(gid_t gid)
{
	gid_t groups[256];
	int n;

	if (gid == getegid())
		return true;
	n = getgroups((int)(sizeof(groups) / sizeof(groups[0])), groups);
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

static const char *group_name(gid_t gid, char *out, size_t n)
{
	struct group gr, *res = NULL;
	char buf[1024];

	if (getgrgid_r(gid, &gr, buf, sizeof(buf), &res) == 0 && res && res->gr_name)
		snprintf(out, n, "%s", res->gr_name);
	else
		snprintf(out, n, "%lu", (unsigned long)gid);
	return out;
}

/*
 * Read a one-line secret file.  With $CREDENTIALS_DIRECTORY set (systemd's
 * LoadCredential=), a file of the same base name there wins.  One trailing
 * "\n" or "\r\n" is stripped.  *source gets the path actually read.
 */
static bool read_secret_file(struct conf *c, cfg_t *sec, const char *opt, int line,
			     const char *path, char **out, char **source)
{
	const char *cred = getenv("CREDENTIALS_DIRECTORY"), *base, *used = path;
	char *alt = NULL, *data = NULL, b[160], ab[160];
	bool tried_alt = false, ok = false;
	struct stat st;
	size_t len = 0;
	int fd = -1;

	base = strrchr(path, '/');
	base = base ? base + 1 : path;
	if (cred && *cred && *base) {
		if (asprintf(&alt, "%s/%s", cred, base) < 0)
			return fail_oom(), false;
		tried_alt = true;
		fd = open(alt, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd >= 0) {
			used = alt;
		} else if (errno != ENOENT) {
			fail(sec, line, "cannot read %s \"%s\" from $CREDENTIALS_DIRECTORY: %s",
			     opt, show(alt, ab, sizeof(ab)), strerror(errno));
			goto out;
		}
	}
	if (fd < 0) {
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (fd < 0) {
			fail(sec, line, "cannot read %s \"%s\": %s%s", opt,
			     show(path, b, sizeof(b)), strerror(errno),
			     tried_alt ? " (nor is it in $CREDENTIALS_DIRECTORY)" : "");
			goto out;
		}
	}
	show(used, b, sizeof(b));
	if (fstat(fd, &st) != 0) {
		fail(sec, line, "cannot read %s \"%s\": %s", opt, b, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		fail(sec, line, "%s \"%s\" is not a regular file", opt, b);
		goto out;
	}
	if (st.st_size > SECRET_FILE_MAX) {
		fail(sec, line, "%s \"%s\" is larger than %d KiB; it must hold the secret alone",
		     opt, b, SECRET_FILE_MAX / 1024);
		goto out;
	}
	data = malloc(SECRET_FILE_MAX + 2);
	if (data == NULL) {
		fail_oom();
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, data + len, SECRET_FILE_MAX + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail(sec, line, "cannot read %s \"%s\": %s", opt, b, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > SECRET_FILE_MAX) {
			fail(sec, line,
			     "%s \"%s\" is larger than %d KiB; it must hold the secret "
			     "alone",
			     opt, b, SECRET_FILE_MAX / 1024);
			goto out;
		}
	}
	if (len >= 2 && data[len - 2] == '\r' && data[len - 1] == '\n')
		len -= 2;
	else if (len >= 1 && data[len - 1] == '\n')
		len -= 1;
	data[len] = '\0';
	if (len == 0) {
		fail(sec, line, "%s \"%s\" is empty", opt, b);
		goto out;
	}
	if (memchr(data, '\n', len) || memchr(data, '\r', len) || memchr(data, '\0', len)) {
		fail(sec, line, "%s \"%s\" has more than one line; it must hold the secret alone",
		     opt, b);
		goto out;
	}
	if (has_ctl(data)) {
		fail(sec, line, "%s \"%s\" contains control characters", opt, b);
		goto out;
	}
	if (st.st_mode & S_IROTH) {
		if (!warn(c, line,
			  "secret file %s is readable by others; chmod 600 it (or 640 with "
			  "imgsyncd's group)",
			  b))
			goto out;
	} else if ((st.st_mode & S_IRGRP) && !own_group(st.st_gid)) {
		char g[64];

		if (!warn(c, line,
			  "secret file %s is readable by group %s, which imgsyncd is not in; "
			  "chmod 600 it, or chgrp it to imgsyncd's group",
			  b, group_name(st.st_gid, g, sizeof(g))))
			goto out;
	}
	*source = sdup(used);
	if (*source == NULL)
		goto out;
	*out = data;
	data = NULL;
	ok = true;
out:
	if (data) {
		explicit_bzero(data, SECRET_FILE_MAX + 2);
		free(data);
	}
	if (fd >= 0)
		close(fd);
	free(alt);
	return ok;
}

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static bool load_credentials(struct conf *c, cfg_t *sec, struct store_cfg *st)
{
	const char *kid = cfg_getstr(sec, "access_key_id");
	const char *kid_file = cfg_getstr(sec, "access_key_id_file");
	const char *secret = cfg_getstr(sec, "secret_access_key");
	const char *secret_file = cfg_getstr(sec, "secret_access_key_file");
	const char *token_file = cfg_getstr(sec, "session_token_file");
	bool kid_env = false, secret_env = false;
	char *src = NULL;

	if (kid && kid_file)
		return fail(sec, opt_line(sec, "access_key_id_file"),
			    "set access_key_id or access_key_id_file, not both"),
		       false;
	if (secret && secret_file)
		return fail(sec, opt_line(sec, "secret_access_key_file"),
			    "set secret_access_key or secret_access_key_file, not both"),
		       false;

	if (kid) {
		st->access_key_id = sdup(kid);
	} else if (kid_file) {
		if (!read_secret_file(c, sec, "access_key_id_file",
				      opt_line(sec, "access_key_id_file"), kid_file,
				      &st->access_key_id, &src))
			return false;
		free(src);
		src = NULL;
		if (has_space_or_ctl(st->access_key_id))
			return fail(sec, opt_line(sec, "access_key_id_file"),
				    "access_key_id_file \"%s\" contains spaces", kid_file),
			       false;
	} else if (env_nonempty("AWS_ACCESS_KEY_ID")) {
		st->access_key_id = sdup(getenv("AWS_ACCESS_KEY_ID"));
		kid_env = true;
		if (st->access_key_id && has_space_or_ctl(st->access_key_id))
			return fail(sec, st->line,
				    "the environment variable AWS_ACCESS_KEY_ID contains spaces"),
			       false;
	} else {
		return fail(sec, st->line,
			    "no access key id; set access_key_id or access_key_id_file, or the "
			    "environment variable AWS_ACCESS_KEY_ID"),
		       false;
	}
	if (st->access_key_id == NULL)
		return false;

	if (secret_file) {
		if (!read_secret_file(c, sec, "secret_access_key_file",
				      opt_line(sec, "secret_access_key_file"), secret_file,
				      &st->secret_access_key, &st->secret_source))
			return false;
	} else if (secret) {
		st->secret_access_key = sdup(secret);
		st->secret_source = sdup("secret_access_key");
	} else if (env_nonempty("AWS_SECRET_ACCESS_KEY")) {
		st->secret_access_key = sdup(getenv("AWS_SECRET_ACCESS_KEY"));
		st->secret_source = sdup("environment AWS_SECRET_ACCESS_KEY");
		secret_env = true;
	} else {
		return fail(sec, st->line,
			    "no secret access key; set secret_access_key_file (also looked up in "
			    "$CREDENTIALS_DIRECTORY), secret_access_key, or the environment "
			    "variable AWS_SECRET_ACCESS_KEY"),
		       false;
	}
	if (st->secret_access_key == NULL || st->secret_source == NULL)
		return false;

	if (token_file) {
		if (!read_secret_file(c, sec, "session_token_file",
				      opt_line(sec, "session_token_file"), token_file,
				      &st->session_token, &src))
			return false;
		free(src);
	} else if (kid_env && secret_env && env_nonempty("AWS_SESSION_TOKEN")) {
		/* Temporary credentials come as a set: take the token only
		 * with a key pair that came from the environment too. */
		st->session_token = sdup(getenv("AWS_SESSION_TOKEN"));
		if (st->session_token == NULL)
			return false;
	}
	return true;
}

static bool build_s3(struct conf *c, cfg_t *sec, struct store_cfg *st)
{
	const char *bucket = cfg_getstr(sec, "bucket");
	const char *endpoint = cfg_getstr(sec, "endpoint");
	const char *region = cfg_getstr(sec, "region");
	const char *ca = cfg_getstr(sec, "ca_file");
	int bline = opt_line(sec, "bucket");
	char b[160], l[32], m[32];
	bool https;

	if (bucket == NULL)
		return fail(sec, st->line,
			    "bucket is missing; an \"s3\" store needs bucket = \"NAME\""),
		       false;
	if (endpoint == NULL && region == NULL)
		return fail(sec, st->line,
			    "set endpoint (any S3-compatible server), region (AWS), or both"),
		       false;
	st->path_style = cfg_getbool(sec, "path_style");
	if (endpoint) {
		size_t n = strlen(endpoint);

		while (n > 0 && endpoint[n - 1] == '/')
			n--;
		st->endpoint = strndup(endpoint, n);
		if (st->endpoint == NULL)
			return fail_oom(), false;
	} else {
		if (strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region))
			return fail(sec, opt_line(sec, "region"),
				    "region \"%s\" cannot form an AWS endpoint; set endpoint",
				    show(region, b, sizeof(b))),
			       false;
		if (asprintf(&st->endpoint, "https://s3.%s.amazonaws.com", region) < 0) {
			st->endpoint = NULL;
			return fail_oom(), false;
		}
	}
	https = strncasecmp(st->endpoint, "https://", 8) == 0;
	st->region = sdup(region ? region : "us-east-1");
	st->bucket = sdup(bucket);
	if (st->region == NULL || st->bucket == NULL)
		return false;

	show(bucket, b, sizeof(b));
	if (!st->path_style) {
		for (const char *p = bucket; *p; p++)
			if (isupper((unsigned char)*p) || *p == '_')
				return fail(sec, bline,
					    "bucket \"%s\" has uppercase letters or '_', which "
					    "virtual-hosted style cannot address; rename the "
					    "bucket or "
					    "set path_style = true",
					    b),
				       false;
		if (looks_like_ipv4(bucket))
			return fail(sec, bline,
				    "bucket \"%s\" looks like an IP address; set path_style = true",
				    b),
			       false;
		if (https && strchr(bucket, '.'))
			return fail(sec, bline,
				    "bucket \"%s\" has dots, which break TLS certificate checks "
				    "with virtual-hosted style over https; set path_style = true",
				    b),
			       false;
	}

	free(st->prefix);
	st->prefix = sdup(cfg_getstr(sec, "prefix"));
	st->tls_verify = cfg_getbool(sec, "tls_verify");
	if (!st->tls_verify && https &&
	    !warn(c, opt_line(sec, "tls_verify"),
		  "store \"%s\": tls_verify = false: the server's certificate is not checked",
		  show(st->name, b, sizeof(b))))
		return false;
	if (ca) {
		if (access(ca, R_OK) != 0)
			return fail(sec, opt_line(sec, "ca_file"), "cannot read ca_file \"%s\": %s",
				    show(ca, b, sizeof(b)), strerror(errno)),
			       false;
		st->ca_file = sdup(ca);
		if (st->ca_file == NULL)
			return false;
	}

	/* Both were checked when set, and the defaults are valid. */
	if (!parse_size(cfg_getstr(sec, "multipart_threshold"), &st->multipart_threshold) ||
	    !parse_size(cfg_getstr(sec, "part_size"), &st->part_size) ||
	    !parse_size(cfg_getstr(sec, "range_size"), &st->range_size))
		return fail(sec, st->line, "internal error: bad size default"), false;
	if (st->multipart_threshold < st->part_size) {
		int tl = opt_line(sec, "multipart_threshold"), pl = opt_line(sec, "part_size");

		return fail(sec, tl > pl ? tl : pl,
			    "multipart_threshold (%s%s) is smaller than part_size (%s%s); raise "
			    "multipart_threshold or lower part_size",
			    fmt_size(st->multipart_threshold, l, sizeof(l)),
			    tl ? "" : ", the default", fmt_size(st->part_size, m, sizeof(m)),
			    pl ? "" : ", the default"),
		       false;
	}
	st->connect_timeout_ms = cfg_getint(sec, "connect_timeout") * 1000;
	st->low_speed_time_s = cfg_getint(sec, "low_speed_time");
	return load_credentials(c, sec, st);
}

static bool build_store(struct conf *c, cfg_t *sec, size_t idx)
{
	struct store_cfg *st = &c->stores[idx];
	const char *type = cfg_getstr(sec, "type");
	const char *const *wrong;
	bool s3;

	st->line = section_line("store", idx);
	st->name = sdup(cfg_title(sec));
	st->prefix = sdup("");
	if (st->name == NULL || st->prefix == NULL)
		return false;
	if (!valid_store_name(st->name))
		return fail(sec, st->line,
			    "the name may contain only letters, digits, '.', '-' and '_', must "
			    "start with a letter or digit and have at most 63 characters"),
		       false;
	if (type == NULL)
		return fail(sec, st->line, "type is missing; add type = \"fs\" or type = \"s3\""),
		       false;
	st->type = sdup(type);
	if (st->type == NULL)
		return false;
	s3 = strcmp(type, "s3") == 0;
	for (wrong = s3 ? fs_only : s3_only; *wrong; wrong++) {
		int line = opt_line(sec, *wrong);

		if (line)
			return fail(sec, line, "%s applies only to \"%s\" stores, not \"%s\"",
				    *wrong, s3 ? "fs" : "s3", type),
			       false;
	}
	if (!layout_parse(cfg_getstr(sec, "layout"), &st->layout))
		return fail(sec, st->line, "internal error: bad layout default"), false;
	if (cfg_getstr(sec, "public_url")) {
		st->public_url = sdup(cfg_getstr(sec, "public_url"));
		if (st->public_url == NULL)
			return false;
	}
	if (s3)
		return build_s3(c, sec, st);

	if (cfg_getstr(sec, "root") == NULL)
		return fail(sec, st->line, "root is missing; set root = \"/absolute/directory\""),
		       false;
	st->root = sdup(cfg_getstr(sec, "root"));
	if (st->root == NULL)
		return false;
	for (size_t n = strlen(st->root); n > 1 && st->root[n - 1] == '/'; n--)
		st->root[n - 1] = '\0';
	st->fsync = cfg_getbool(sec, "fsync");
	st->prune_empty_dirs = cfg_getbool(sec, "prune_empty_dirs");
	return true;
}

static bool build_mirrors(struct conf *c, cfg_t *cfg)
{
	cfg_t *sync = cfg_getsec(cfg, "sync");
	unsigned n = cfg_size(sync, "mirrors");
	char b[80], names[600];
	size_t len = 0;

	if (P->mirrors_set[1])
		return fail(sync, P->mirrors_set[1],
			    "mirrors is set twice (first at line %d); list every store in one "
			    "mirrors = { ... }",
			    P->mirrors_set[0]),
		       false;
	if (n == 0)
		return true;
	c->mirrors = calloc(n, sizeof(*c->mirrors));
	if (c->mirrors == NULL)
		return fail_oom(), false;
	names[0] = '\0';
	for (size_t i = 0; i < c->nstores && len < sizeof(names); i++)
		len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", i ? ", " : "",
					c->stores[i].name);
	for (unsigned i = 0; i < n; i++) {
		const char *name = cfg_getnstr(sync, "mirrors", i);
		int line = elem_line(sync, "mirrors", i);

		show(name, b, sizeof(b));
		if (conf_store(c, name) == NULL)
			return fail(sync, line,
				    "mirrors names store \"%s\", which is not defined; the stores "
				    "are: %s",
				    b, names),
			       false;
		for (size_t j = 0; j < c->nmirrors; j++)
			if (strcmp(c->mirrors[j], name) == 0)
				return fail(sync, line, "mirrors names store \"%s\" twice", b),
				       false;
		c->mirrors[c->nmirrors] = sdup(name);
		if (c->mirrors[c->nmirrors] == NULL)
			return false;
		c->nmirrors++;
	}
	return true;
}

static bool build(struct conf *c, cfg_t *cfg, const struct stat *fst)
{
	cfg_t *db = cfg_getsec(cfg, "database"), *tr = cfg_getsec(cfg, "transfer");
	unsigned n = cfg_size(cfg, "store");
	bool inline_secret = false;

	c->db_conninfo = sdup(cfg_getstr(db, "conninfo"));
	c->db_channel = sdup(cfg_getstr(db, "channel"));
	if (c->db_conninfo == NULL || c->db_channel == NULL)
		return false;
	c->concurrency = (int)cfg_getint(tr, "concurrency");
	c->max_attempts = (int)cfg_getint(tr, "max_attempts");
	c->stop_timeout = (int)cfg_getint(tr, "stop_timeout");

	if (n == 0)
		return fail(NULL, 0,
			    "no store is defined; add a store \"NAME\" { type = ... } "
			    "section"),
		       false;
	c->stores = calloc(n, sizeof(*c->stores));
	if (c->stores == NULL)
		return fail_oom(), false;
	c->nstores = n;
	for (unsigned i = 0; i < n; i++) {
		cfg_t *sec = cfg_getnsec(cfg, "store", i);

		if (!build_store(c, sec, i))
			return false;
		if (cfg_getstr(sec, "secret_access_key"))
			inline_secret = true;
	}
	if (!build_mirrors(c, cfg))
		return false;
	if (inline_secret && (fst->st_mode & S_IROTH))
		return warn(c, 0,
			    "holds a secret_access_key and is readable by others; chmod 640 it "
			    "or use secret_access_key_file");
	return true;
}

/* ---- the file ---- */

static bool read_conf_file(const char *path, char **text, size_t *len, struct stat *st)
{
	char *data = NULL;
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		return fail(NULL, 0, "cannot open: %s", strerror(errno)), false;
	if (fstat(fd, st) != 0) {
		fail(NULL, 0, "cannot read: %s", strerror(errno));
		goto bad;
	}
	if (!S_ISREG(st->st_mode)) {
		fail(NULL, 0, "not a regular file");
		goto bad;
	}
	data = malloc(CONF_FILE_MAX + 1);
	if (data == NULL) {
		fail_oom();
		goto bad;
	}
	for (;;) {
		ssize_t r = read(fd, data + n, CONF_FILE_MAX + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail(NULL, 0, "cannot read: %s", strerror(errno));
			goto bad;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > CONF_FILE_MAX) {
			fail(NULL, 0, "larger than %d KiB; is this a configuration file?",
			     CONF_FILE_MAX / 1024);
			goto bad;
		}
	}
	close(fd);
	data[n] = '\0';
	if (memchr(data, '\0', n) != NULL) {
		size_t at = (size_t)((char *)memchr(data, '\0', n) - data);
		int line = 1;

		for (size_t i = 0; i < at; i++)
			line += data[i] == '\n';
		fail(NULL, line, "a NUL byte; is this a text file?");
		free(data);
		return false;
	}
	*text = data;
	*len = n;
	return true;
bad:
	free(data);
	close(fd);
	return false;
}

/* Replace every occurrence of secret in s (a NUL-terminated buffer). */
static void scrub(char *s, const char *secret)
{
	static const char mask[] = "[secret]";
	size_t sl, ml = sizeof(mask) - 1;
	char *p, *q = s;

	if (s == NULL || secret == NULL || (sl = strlen(secret)) < SCRUB_MIN)
		return;
	/* In place: never longer than what it replaces. */
	while ((p = strstr(q, secret)) != NULL) {
		if (sl >= ml) {
			memcpy(p, mask, ml);
			memmove(p + ml, p + sl, strlen(p + sl) + 1);
			q = p + ml;
		} else {
			memset(p, '*', sl);
			q = p + sl;
		}
	}
}

static void scrub_all(char *s, const struct conf *c, cfg_t *cfg)
{
	/* Not the file name the message starts with: the operator chose it, and
	 * a short secret that happens to be part of it would mangle it. */
	if (s && P && strncmp(s, P->path, strlen(P->path)) == 0)
		s += strlen(P->path);
	if (c)
		for (size_t i = 0; i < c->nstores; i++) {
			scrub(s, c->stores[i].secret_access_key);
			scrub(s, c->stores[i].session_token);
		}
	if (cfg)
		for (unsigned i = 0; i < cfg_size(cfg, "store"); i++)
			scrub(s, cfg_getstr(cfg_getnsec(cfg, "store", i), "secret_access_key"));
}

bool conf_load(const char *path, struct conf **out, struct err *e)
{
	struct parse p;
	struct conf *c = NULL;
	cfg_t *cfg = NULL;
	char *text = NULL;
	size_t len = 0;
	struct stat st;

	*out = NULL;
	err_clear(e);
	pthread_mutex_lock(&conf_lock);
	memset(&p, 0, sizeof(p));
	p.path = path;
	p.e = e;
	P = &p;

	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		fail_oom();
		goto done;
	}
	c->path = sdup(path);
	if (c->path == NULL || !read_conf_file(path, &text, &len, &st) || !prescan(text, len))
		goto done;
	cfg = cfg_init(root_opts, CFGF_NONE);
	if (cfg == NULL) {
		fail_oom();
		goto done;
	}
	cfg_set_error_function(cfg, on_cfg_error);
	install_validators(cfg);
	free(cfg->filename);
	cfg->filename = strdup(path);
	if (cfg->filename == NULL) {
		fail_oom();
		goto done;
	}
	if (len > 0) {
		FILE *fp = fmemopen(text, len, "r");
		int rc;

		if (fp == NULL) {
			fail_oom();
			goto done;
		}
		rc = cfg_parse_fp(cfg, fp);
		fclose(fp);
		if (rc != CFG_SUCCESS && !p.failed) {
			if (p.unterminated_line)
				fail(NULL, p.unterminated_line,
				     "unterminated string: a closing quote is missing");
			else
				fail(NULL, 0, "cannot parse the file");
		}
		if (p.failed)
			goto done;
		/* libconfuse 3.3 takes the end of the file as the end of an
		 * open section. */
		if (p.unclosed_line) {
			fail(NULL, p.unclosed_line,
			     "the section opened on this line is never closed; a \"}\" is missing");
			goto done;
		}
	}
	if (!build(c, cfg, &st) && !p.failed)
		fail_oom();
done:
	if (p.failed || p.oom) {
		if (e)
			scrub_all(e->msg, c, cfg);
		conf_free(c);
		c = NULL;
	} else {
		for (size_t i = 0; i < c->nwarnings; i++)
			scrub_all(c->warnings[i], c, cfg);
		*out = c;
	}
	if (cfg)
		cfg_free(cfg);
	if (text) {
		explicit_bzero(text, len);
		free(text);
	}
	free(p.lines);
	free(p.starts);
	P = NULL;
	pthread_mutex_unlock(&conf_lock);
	return c != NULL;
}

void conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nstores; i++) {
		struct store_cfg *s = &c->stores[i];

		free(s->name);
		free(s->type);
		free(s->root);
		free(s->endpoint);
		free(s->region);
		free(s->bucket);
		free(s->prefix);
		secure_free(s->access_key_id);
		secure_free(s->secret_access_key);
		secure_free(s->session_token);
		free(s->secret_source);
		free(s->public_url);
		free(s->ca_file);
	}
	free(c->stores);
	for (size_t i = 0; i < c->nmirrors; i++)
		free(c->mirrors[i]);
	free(c->mirrors);
	for (size_t i = 0; i < c->nwarnings; i++)
		free(c->warnings[i]);
	free(c->warnings);
	free(c->db_conninfo);
	free(c->db_channel);
	free(c->path);
	free(c);
}

const struct store_cfg *conf_store(const struct conf *c, const char *name)
{
	if (c == NULL || name == NULL)
		return NULL;
	for (size_t i = 0; i < c->nstores; i++)
		if (c->stores[i].name && strcmp(c->stores[i].name, name) == 0)
			return &c->stores[i];
	return NULL;
}
