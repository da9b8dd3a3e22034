/*
 * test_conf.c - conf_load(): valid files into the struct, golden error
 * messages, secrets.
 *
 * Run from the repository root (paths are relative: tests/conf/...).
 *
 * Golden errors, OpenBSD-regress style: every tests/conf/bad-NAME.conf must
 * fail with exactly the one line in tests/conf/bad-NAME.err.  They run with
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set (so an s3 store gets that
 * far), except files named bad-noenv-*, which run with neither.
 *
 * Secret tests write their files under a mkdtemp directory, removed at the
 * end.  Every error and warning any test produced is finally searched for
 * every secret used: none may appear.
 *
 * The shipped etc/imgsyncd.conf reads its secret from
 * secret_access_key_file = "/etc/imgsync/s3-secret"; the test provides it
 * the way systemd's LoadCredential= would, through $CREDENTIALS_DIRECTORY.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "tap.h"

#define ENV_KEY_ID     "AKIDENVTEST"
#define ENV_SECRET     "EnvSecret+Distinctive/0123456789abcdef"
#define ENV_TOKEN      "EnvToken-Distinctive-0f1e2d3c4b5a"
#define FILE_SECRET    "FileSecret-Distinctive-9f8e7d6c5b4a"
#define CRED_SECRET    "CredSecret-Distinctive-a1b2c3d4e5f6"
#define INLINE_SECRET  "InlineSecret-Distinctive-77aa88bb"
#define FILE_TOKEN     "FileToken-Distinctive-1234abcd"
#define FULL_SECRET    "full+Secret/Value=42" /* tests/conf/ok-full.conf */
#define UNQUOTED_PART1 "wJalrXUtnFEMIK7MDENG" /* tests/conf/bad-secret-*.conf */
#define UNQUOTED_PART2 "bPxRfiCYzEXAMPLEKEY"

static const char *const secrets[] = {
    ENV_SECRET, ENV_TOKEN,   FILE_SECRET,    CRED_SECRET,    INLINE_SECRET,
    FILE_TOKEN, FULL_SECRET, UNQUOTED_PART1, UNQUOTED_PART2,
};

static char tmp[256];
static char *created[64];
static size_t ncreated;
static char *messages[512];
static size_t nmessages;

static void keep(const char *msg)
{
	if (nmessages < sizeof(messages) / sizeof(messages[0]))
		messages[nmessages++] = strdup(msg);
}

static void keep_warnings(const struct conf *c)
{
	for (size_t i = 0; i < c->nwarnings; i++)
		keep(c->warnings[i]);
}

static char *tmp_path(const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", tmp, name) < 0)
		abort();
	return p;
}

static void note_created(const char *path)
{
	for (size_t i = 0; i < ncreated; i++)
		if (strcmp(created[i], path) == 0)
			return;
	if (ncreated < sizeof(created) / sizeof(created[0]))
		created[ncreated++] = strdup(path);
}

/* Write a file under tmp; returns its path (static storage of the caller). */
static void write_file(const char *path, mode_t mode, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void write_file(const char *path, mode_t mode, const char *fmt, ...)
{
	va_list ap;
	FILE *f = fopen(path, "w");

	if (f == NULL) {
		perror(path);
		exit(2);
	}
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	chmod(path, mode);
	note_created(path);
}

static void make_dir(const char *path)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		perror(path);
		exit(2);
	}
	note_created(path);
}

static void env_clear(void)
{
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("CREDENTIALS_DIRECTORY");
}

static void env_keys(void)
{
	env_clear();
	setenv("AWS_ACCESS_KEY_ID", ENV_KEY_ID, 1);
	setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET, 1);
}

static struct conf *load_ok(const char *path)
{
	struct conf *c = NULL;
	struct err e;

	if (!ok(conf_load(path, &c, &e), "%s loads", path)) {
		tap_diag("%s", e.msg);
		keep(e.msg);
		return NULL;
	}
	keep_warnings(c);
	return c;
}

static void load_bad(const char *path, const char *want, const char *what)
{
	struct conf *c = (struct conf *)1;
	struct err e;
	bool loaded = conf_load(path, &c, &e);

	ok(!loaded && c == NULL, "%s: refused", what);
	if (loaded) {
		conf_free(c);
		return;
	}
	keep(e.msg);
	is_int(e.code, ERR_CONFIG, "%s: ERR_CONFIG", what);
	is_str(e.msg, want, "%s: message", what);
}

/* ---- valid files ---- */

static void test_minimal(void)
{
	struct conf *c;
	const struct store_cfg *s;

	env_clear();
	c = load_ok("tests/conf/ok-minimal.conf");
	if (c == NULL)
		return;
	is_str(c->path, "tests/conf/ok-minimal.conf", "minimal: path");
	is_str(c->db_conninfo, "", "minimal: conninfo defaults to \"\"");
	is_str(c->db_channel, "imgsync", "minimal: channel defaults to imgsync");
	is_int(c->concurrency, 32, "minimal: concurrency defaults to 32");
	is_int(c->max_attempts, 8, "minimal: max_attempts defaults to 8");
	is_int(c->nmirrors, 0, "minimal: no mirrors");
	is_int(c->nwarnings, 0, "minimal: no warnings");
	is_int(c->nstores, 1, "minimal: one store");
	s = conf_store(c, "local");
	ok(s == &c->stores[0], "minimal: conf_store finds local");
	ok(conf_store(c, "cloud") == NULL, "minimal: conf_store of an unknown name is NULL");
	if (s) {
		is_str(s->type, "fs", "minimal: type");
		is_int(s->line, 2, "minimal: store line");
		is_str(s->root, "/srv/images", "minimal: root without trailing slash");
		is_int(s->layout, LAYOUT_PLAIN, "minimal: layout defaults to plain");
		ok(s->fsync, "minimal: fsync defaults to true");
		is_str(s->prefix, "", "minimal: prefix is \"\"");
		ok(s->public_url == NULL, "minimal: no public_url");
		ok(s->bucket == NULL && s->endpoint == NULL && s->secret_access_key == NULL,
		   "minimal: no s3 fields");
	}
	conf_free(c);
}

static void test_full(void)
{
	struct conf *c;
	const struct store_cfg *l, *s;
	struct stat st;
	char want[512];

	env_keys(); /* the file's own values must win */
	c = load_ok("tests/conf/ok-full.conf");
	if (c == NULL)
		return;
	is_str(c->db_conninfo, "host=db.internal dbname=myapp user=imgsync", "full: conninfo");
	is_str(c->db_channel, "imgsync_test", "full: channel");
	is_int(c->concurrency, 1024, "full: concurrency");
	is_int(c->max_attempts, 1, "full: max_attempts");
	is_int(c->nstores, 2, "full: two stores");
	l = conf_store(c, "local");
	s = conf_store(c, "cloud");
	ok(l == &c->stores[0] && s == &c->stores[1], "full: stores in file order");
	if (l == NULL || s == NULL) {
		conf_free(c);
		return;
	}
	is_int(l->line, 7, "full: local line");
	is_str(l->root, "/var/lib/myapp/images", "full: root");
	is_int(l->layout, LAYOUT_IMAGEATTACH, "full: local layout");
	ok(!l->fsync, "full: fsync = false");
	is_str(l->public_url, "https://static.example.com/", "full: local public_url");

	is_int(s->line, 15, "full: cloud line");
	is_str(s->type, "s3", "full: cloud type");
	is_str(s->endpoint, "https://minio.internal:9000", "full: endpoint without trailing /");
	is_str(s->region, "garage", "full: region");
	is_str(s->bucket, "My_Images", "full: bucket (uppercase allowed with path_style)");
	is_str(s->prefix, "prod/images/", "full: prefix");
	ok(s->path_style, "full: path_style");
	is_str(s->access_key_id, "AKIDFULLTEST", "full: inline access_key_id beats the env");
	is_str(s->secret_access_key, FULL_SECRET, "full: inline secret beats the env");
	is_str(s->secret_source, "secret_access_key", "full: secret_source");
	ok(s->session_token == NULL, "full: no session token (keys not from the env)");
	ok(!s->tls_verify, "full: tls_verify = false");
	is_str(s->ca_file, "/dev/null", "full: ca_file");
	is_int(s->multipart_threshold, 1024ull * 1024 * 1024, "full: multipart_threshold 1G");
	is_int(s->part_size, 100ull * 1024 * 1024, "full: part_size 100MiB");
	is_int(s->range_size, 64ull * 1024 * 1024, "full: range_size 64M");
	is_int(s->connect_timeout_ms, 3000, "full: connect_timeout in ms");
	is_int(s->low_speed_time_s, 120, "full: low_speed_time");
	is_int(s->layout, LAYOUT_PLAIN, "full: cloud layout");
	is_str(s->public_url, "https://cdn.example.com/images/", "full: cloud public_url");

	is_int(c->nmirrors, 2, "full: two mirrors");
	if (c->nmirrors == 2) {
		is_str(c->mirrors[0], "cloud", "full: mirror 0");
		is_str(c->mirrors[1], "local", "full: mirror 1");
	}
	/* tls_verify warning always; the inline-secret one depends on the
	 * checkout's file mode (test_inline_secret_mode pins it down). */
	ok(c->nwarnings >= 1, "full: warnings");
	if (c->nwarnings >= 1)
		is_str(c->warnings[0],
		       "tests/conf/ok-full.conf:24: store \"cloud\": tls_verify = false: the "
		       "server's certificate is not checked",
		       "full: tls_verify warning");
	if (stat("tests/conf/ok-full.conf", &st) == 0 && (st.st_mode & S_IROTH)) {
		snprintf(want, sizeof(want),
			 "tests/conf/ok-full.conf: holds a secret_access_key and is readable by "
			 "others; chmod 640 it or use secret_access_key_file");
		is_int(c->nwarnings, 2, "full: inline secret in a world-readable file");
		if (c->nwarnings == 2)
			is_str(c->warnings[1], want, "full: inline secret warning");
	} else {
		is_int(c->nwarnings, 1, "full: no warning for a file others cannot read");
	}
	conf_free(c);
}

static void test_region(void)
{
	struct conf *c;
	const struct store_cfg *s;

	env_keys();
	setenv("AWS_SESSION_TOKEN", ENV_TOKEN, 1);
	c = load_ok("tests/conf/ok-region.conf");
	if (c == NULL)
		return;
	s = conf_store(c, "aws");
	if (ok(s != NULL, "region: store aws")) {
		is_str(s->endpoint, "https://s3.eu-west-1.amazonaws.com",
		       "region: endpoint derived from region");
		is_str(s->region, "eu-west-1", "region: region");
		is_str(s->bucket, "myapp-images.eu", "region: dotted bucket with path_style");
		ok(s->path_style, "region: path_style = yes");
		ok(s->tls_verify, "region: tls_verify defaults to true");
		is_int(s->multipart_threshold, 8ull * 1024 * 1024, "region: plain byte count");
		is_int(s->part_size, 5ull * 1024 * 1024, "region: \"5 MiB\"");
		is_int(s->connect_timeout_ms, 10000, "region: connect_timeout default");
		is_int(s->low_speed_time_s, 60, "region: low_speed_time default");
		is_str(s->access_key_id, ENV_KEY_ID, "region: access key id from the env");
		is_str(s->secret_access_key, ENV_SECRET, "region: secret from the env");
		is_str(s->secret_source, "environment AWS_SECRET_ACCESS_KEY",
		       "region: secret_source");
		is_str(s->session_token, ENV_TOKEN, "region: session token from the env");
		is_str(s->prefix, "", "region: prefix default");
	}
	is_int(c->nwarnings, 0, "region: no warnings");
	conf_free(c);
	unsetenv("AWS_SESSION_TOKEN");
}

static void test_syntax(void)
{
	struct conf *c;

	env_clear();
	c = load_ok("tests/conf/ok-syntax.conf");
	if (c == NULL)
		return;
	is_int(c->nstores, 3, "syntax: three stores");
	if (c->nstores == 3) {
		is_str(c->stores[0].name, "a", "syntax: single-quoted title");
		is_int(c->stores[0].line, 5, "syntax: line after comments");
		ok(!c->stores[0].fsync, "syntax: fsync = off");
		is_str(c->stores[1].root, "/srv/b", "syntax: one-line store");
		is_int(c->stores[1].line, 10, "syntax: line of the one-line store");
		is_str(c->stores[2].name, "c", "syntax: quoted keyword");
		is_int(c->stores[2].line, 11, "syntax: line of the quoted keyword");
		is_str(c->stores[2].root, "/srv/c", "syntax: single-quoted value");
	}
	is_int(c->nmirrors, 2, "syntax: comments inside a list");
	is_int(c->concurrency, 7, "syntax: concurrency");
	conf_free(c);
}

/* ---- golden errors ---- */

static int select_bad(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return strncmp(d->d_name, "bad-", 4) == 0 && n > 5 &&
	       strcmp(d->d_name + n - 5, ".conf") == 0;
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s = NULL;
	size_t n = 0;
	ssize_t r;

	if (f == NULL)
		return NULL;
	r = getdelim(&s, &n, '\0', f);
	fclose(f);
	if (r < 0) {
		free(s);
		return strdup("");
	}
	if (r > 0 && s[r - 1] == '\n')
		s[r - 1] = '\0';
	return s;
}

static bool file_has(const char *path, const char *needle)
{
	char *text = read_text(path);
	bool has = text && strstr(text, needle);

	free(text);
	return has;
}

static void test_golden(void)
{
	struct dirent **list;
	int n = scandir("tests/conf", &list, select_bad, alphasort);

	unsetenv("IMGSYNC_TEST_UNSET"); /* bad-env-unset.conf */

	if (!ok(n > 50, "tests/conf has the broken configs (%d)", n))
		return;
	for (int i = 0; i < n; i++) {
		char conf[300], errf[300], *want;

		snprintf(conf, sizeof(conf), "tests/conf/%s", list[i]->d_name);
		snprintf(errf, sizeof(errf), "tests/conf/%.*s.err",
			 (int)strlen(list[i]->d_name) - 5, list[i]->d_name);
		if (strstr(list[i]->d_name, "-noenv"))
			env_clear();
		else
			env_keys();
		want = read_text(errf);
		/* configs naming @T@ need secret files: tests/unit/check-config.sh */
		if (ok(want != NULL, "%s exists", errf) && !file_has(conf, "@T@"))
			load_bad(conf, want, list[i]->d_name);
		free(want);
		free(list[i]);
	}
	free(list);
	env_clear();
}

static void test_missing_file(void)
{
	struct conf *c = (struct conf *)1;
	struct err e;

	ok(!conf_load("tests/conf/does-not-exist.conf", &c, &e) && c == NULL,
	   "missing file: refused");
	is_str(e.msg, "tests/conf/does-not-exist.conf: cannot open: No such file or directory",
	       "missing file: message");
	is_int(e.code, ERR_CONFIG, "missing file: ERR_CONFIG");
	conf_free(NULL);
	ok(conf_store(NULL, "x") == NULL, "conf_store(NULL) is NULL");
}

/* ---- secrets ---- */

#define S3_STORE                                                                                   \
	"store \"cloud\" {\n"                                                                      \
	"\ttype = \"s3\"\n"                                                                        \
	"\tendpoint = \"https://s3.example.com\"\n"                                                \
	"\tbucket = \"images\"\n"

/* A config with one s3 store and extra lines (from line 5 on). */
static char *s3_conf(const char *name, const char *extra)
{
	char *path = tmp_path(name);

	write_file(path, 0600, S3_STORE "%s}\n", extra);
	return path;
}

static void test_secret_precedence(void)
{
	char *secret = tmp_path("cloud.secret"), *cred = tmp_path("cred");
	char *cred_secret = tmp_path("cred/cloud.secret"), *extra, *path;
	struct conf *c;
	char want[1024];

	make_dir(cred);
	write_file(secret, 0600, "%s\n", FILE_SECRET);
	write_file(cred_secret, 0400, "%s\r\n", CRED_SECRET);
	if (asprintf(&extra, "\tsecret_access_key_file = \"%s\"\n", secret) < 0)
		abort();
	path = s3_conf("file.conf", extra);

	/* 1. the file beats the environment */
	env_keys();
	if ((c = load_ok(path))) {
		is_str(c->stores[0].secret_access_key, FILE_SECRET,
		       "secret: file beats the env, newline stripped");
		is_str(c->stores[0].secret_source, secret, "secret: source is the file");
		is_str(c->stores[0].access_key_id, ENV_KEY_ID, "secret: key id from the env");
		ok(c->stores[0].session_token == NULL, "secret: no token without the env pair");
		is_int(c->nwarnings, 0, "secret: no warning for 0600");
		conf_free(c);
	}

	/* 2. $CREDENTIALS_DIRECTORY beats the configured path */
	setenv("CREDENTIALS_DIRECTORY", cred, 1);
	if ((c = load_ok(path))) {
		is_str(c->stores[0].secret_access_key, CRED_SECRET,
		       "secret: $CREDENTIALS_DIRECTORY wins, \\r\\n stripped");
		is_str(c->stores[0].secret_source, cred_secret, "secret: source is the credential");
		conf_free(c);
	}

	/* 3. ... and falls back to the path when it lacks the file */
	unlink(cred_secret);
	if ((c = load_ok(path))) {
		is_str(c->stores[0].secret_access_key, FILE_SECRET,
		       "secret: fallback to the path when the credential is absent");
		conf_free(c);
	}

	/* 4. neither: the message says where it looked */
	unlink(secret);
	snprintf(want, sizeof(want),
		 "%s:5: store \"cloud\": cannot read secret_access_key_file \"%s\": No such "
		 "file or directory (nor is it in $CREDENTIALS_DIRECTORY)",
		 path, secret);
	load_bad(path, want, "secret file in neither place");
	unsetenv("CREDENTIALS_DIRECTORY");
	free(extra);
	free(path);

	/* 5. inline beats the environment */
	path = s3_conf("inline.conf", "\tsecret_access_key = \"" INLINE_SECRET "\"\n");
	env_keys();
	if ((c = load_ok(path))) {
		is_str(c->stores[0].secret_access_key, INLINE_SECRET, "secret: inline beats env");
		is_str(c->stores[0].secret_source, "secret_access_key", "secret: source is inline");
		is_int(c->nwarnings, 0, "secret: inline in a 0600 file: no warning");
		conf_free(c);
	}

	/* 6. nothing anywhere: the three ways */
	env_clear();
	setenv("AWS_ACCESS_KEY_ID", ENV_KEY_ID, 1);
	free(path);
	path = s3_conf("none.conf", "");
	snprintf(want, sizeof(want),
		 "%s:1: store \"cloud\": no secret access key; set secret_access_key_file (also "
		 "looked up in $CREDENTIALS_DIRECTORY), secret_access_key, or the environment "
		 "variable AWS_SECRET_ACCESS_KEY",
		 path);
	load_bad(path, want, "no secret anywhere");
	setenv("AWS_ACCESS_KEY_ID", "", 1); /* empty counts as unset */
	setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET, 1);
	snprintf(want, sizeof(want),
		 "%s:1: store \"cloud\": no access key id; set access_key_id or "
		 "access_key_id_file, or the environment variable AWS_ACCESS_KEY_ID",
		 path);
	load_bad(path, want, "no access key id anywhere");
	env_clear();
	free(path);
	free(secret);
	free(cred);
	free(cred_secret);
}

static void test_key_id_and_token_files(void)
{
	char *id = tmp_path("cloud.id"), *tok = tmp_path("cloud.token"), *cred = tmp_path("cred2");
	char *cred_id = tmp_path("cred2/cloud.id"), *extra, *path;
	struct conf *c;

	make_dir(cred);
	write_file(id, 0600, "AKIDFROMFILE\n");
	write_file(cred_id, 0600, "AKIDFROMCRED");
	write_file(tok, 0600, "%s\n", FILE_TOKEN);
	if (asprintf(&extra,
		     "\taccess_key_id_file = \"%s\"\n"
		     "\tsession_token_file = \"%s\"\n",
		     id, tok) < 0)
		abort();
	path = s3_conf("idfile.conf", extra);
	env_keys();
	setenv("AWS_SESSION_TOKEN", ENV_TOKEN, 1);
	if ((c = load_ok(path))) {
		is_str(c->stores[0].access_key_id, "AKIDFROMFILE", "key id: file beats the env");
		is_str(c->stores[0].session_token, FILE_TOKEN, "token: session_token_file");
		conf_free(c);
	}
	setenv("CREDENTIALS_DIRECTORY", cred, 1);
	if ((c = load_ok(path))) {
		is_str(c->stores[0].access_key_id, "AKIDFROMCRED",
		       "key id: $CREDENTIALS_DIRECTORY wins, no newline needed");
		conf_free(c);
	}
	env_clear();
	free(extra);
	free(path);
	free(id);
	free(tok);
	free(cred);
	free(cred_id);
}

static void test_secret_file_contents(void)
{
	char *secret = tmp_path("odd.secret"), *extra, *path, want[1024];
	struct conf *c;

	if (asprintf(&extra, "\tsecret_access_key_file = \"%s\"\n", secret) < 0)
		abort();
	path = s3_conf("odd.conf", extra);
	env_keys();

	write_file(secret, 0600, "%s", FILE_SECRET);
	if ((c = load_ok(path))) {
		is_str(c->stores[0].secret_access_key, FILE_SECRET, "secret file without newline");
		conf_free(c);
	}
	write_file(secret, 0600, "%s\n\n", FILE_SECRET);
	snprintf(want, sizeof(want),
		 "%s:5: store \"cloud\": secret_access_key_file \"%s\" has more than one line; it "
		 "must hold the secret alone",
		 path, secret);
	load_bad(path, want, "only one newline is stripped");
	write_file(secret, 0600, "\n");
	snprintf(want, sizeof(want),
		 "%s:5: store \"cloud\": secret_access_key_file \"%s\" is empty", path, secret);
	load_bad(path, want, "empty secret file");

	/* modes */
	write_file(secret, 0644, "%s\n", FILE_SECRET);
	if ((c = load_ok(path))) {
		snprintf(want, sizeof(want),
			 "%s:5: secret file %s is readable by others; chmod 600 it (or 640 with "
			 "imgsyncd's group)",
			 path, secret);
		is_int(c->nwarnings, 1, "0644 secret file: one warning");
		if (c->nwarnings == 1)
			is_str(c->warnings[0], want, "0644 secret file: the warning");
		conf_free(c);
	}
	/* 0640 in the daemon's own group: how it reads the file without
	 * LoadCredential=, nothing to warn about */
	chmod(secret, 0640);
	if ((c = load_ok(path))) {
		is_int(c->nwarnings, 0, "0640 secret file of our own group: no warning");
		conf_free(c);
	}
	/* 0640 in a group the daemon is not in: that group reads the secret */
	if (geteuid() == 0 && getegid() != 65534 && chown(secret, (uid_t)-1, 65534) == 0) {
		if ((c = load_ok(path))) {
			is_int(c->nwarnings, 1, "0640 secret file of another group: one warning");
			ok(c->nwarnings == 1 && strstr(c->warnings[0], "is readable by group ") &&
			       strstr(c->warnings[0],
				      ", which imgsyncd is not in; chmod 600 it, or "
				      "chgrp it to imgsyncd's group"),
			   "0640 secret file of another group: the warning names the group (%s)",
			   c->nwarnings ? c->warnings[0] : "");
			conf_free(c);
		}
	} else {
		ok(1, "# SKIP not root: cannot give a file to another group");
	}
	env_clear();
	free(extra);
	free(path);
	free(secret);
}

static void test_inline_secret_mode(void)
{
	char *path = s3_conf("inline644.conf", "\tsecret_access_key = \"" INLINE_SECRET "\"\n");
	char want[1024];
	struct conf *c;

	env_keys();
	chmod(path, 0644);
	if ((c = load_ok(path))) {
		snprintf(want, sizeof(want),
			 "%s: holds a secret_access_key and is readable by others; chmod 640 it or "
			 "use secret_access_key_file",
			 path);
		is_int(c->nwarnings, 1, "inline secret, 0644 config: one warning");
		if (c->nwarnings == 1)
			is_str(c->warnings[0], want, "inline secret, 0644 config: the warning");
		conf_free(c);
	}
	chmod(path, 0640);
	if ((c = load_ok(path))) {
		is_int(c->nwarnings, 0, "inline secret, 0640 config: no warning");
		conf_free(c);
	}
	env_clear();
	free(path);
}

/* A secret that appears verbatim where the message would show a value. */
static void test_scrub(void)
{
	char *path = tmp_path("scrub.conf");
	struct conf *c = NULL;
	struct err e;

	/* The operator pasted the secret into the endpoint by mistake. */
	write_file(path, 0600,
		   "store \"cloud\" {\n"
		   "\ttype = \"s3\"\n"
		   "\tsecret_access_key = \"%s\"\n"
		   "\tendpoint = \"%s\"\n"
		   "}\n",
		   INLINE_SECRET, INLINE_SECRET);
	ok(!conf_load(path, &c, &e), "scrub: refused");
	keep(e.msg);
	ok(strstr(e.msg, "[secret]") != NULL, "scrub: the value is masked: %s", e.msg);
	free(path);
}

/* The sample with its commented-out S3 store and mirror enabled: lines
 * "#<not space, not #>" lose their '#', "# mirrors" loses "# ". */
static char *uncommented_sample(void)
{
	char *path = tmp_path("sample-full.conf"), line[1024];
	FILE *in = fopen("etc/imgsyncd.conf", "r"), *out = fopen(path, "w");

	if (in == NULL || out == NULL)
		abort();
	while (fgets(line, sizeof(line), in)) {
		char *p = line + strspn(line, " \t");

		if (line[0] == '#' && line[1] != ' ' && line[1] != '#' && line[1] != '\n')
			fputs(line + 1, out);
		else if (strncmp(p, "# mirrors", 9) == 0) {
			fwrite(line, 1, (size_t)(p - line), out);
			fputs(p + 2, out);
		} else
			fputs(line, out);
	}
	fclose(in);
	fclose(out);
	return path;
}

static void test_sample(void)
{
	char *cred = tmp_path("sample-cred"), *secret = tmp_path("sample-cred/s3-secret");
	char *full;
	struct conf *c;
	const struct store_cfg *s;

	env_clear();
	c = load_ok("etc/imgsyncd.conf");
	if (c) {
		is_int(c->nwarnings, 0, "sample: no warnings");
		is_str(c->db_conninfo, "dbname=myapp", "sample: conninfo");
		is_str(c->db_channel, "imgsync", "sample: channel");
		is_int(c->nstores, 1, "sample as shipped: one store (S3 commented out)");
		ok(conf_store(c, "local") != NULL, "sample: store local");
		is_int(c->nmirrors, 0, "sample as shipped: no mirror");
		is_int(c->concurrency, 32, "sample: concurrency");
		conf_free(c);
	}

	/* its documented S3 store, enabled, with the secret from systemd */
	make_dir(cred);
	write_file(secret, 0600, "%s\n", CRED_SECRET);
	setenv("CREDENTIALS_DIRECTORY", cred, 1);
	full = uncommented_sample();
	c = load_ok(full);
	if (c) {
		is_int(c->nstores, 2, "sample enabled: two stores");
		s = conf_store(c, "cloud");
		if (ok(s != NULL, "sample enabled: store cloud")) {
			is_str(s->secret_access_key, CRED_SECRET,
			       "sample: secret through $CREDENTIALS_DIRECTORY");
			is_str(s->endpoint, "https://s3.eu-west-1.amazonaws.com",
			       "sample: endpoint");
		}
		is_int(c->nmirrors, 1, "sample enabled: one mirror");
		conf_free(c);
	}
	unlink(full);
	env_clear();
	free(full);
	free(cred);
	free(secret);
}

static void test_no_secret_in_messages(void)
{
	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		size_t hits = 0;

		for (size_t j = 0; j < nmessages; j++)
			if (messages[j] && strstr(messages[j], secrets[i])) {
				hits++;
				tap_diag("leak: %s", messages[j]);
			}
		ok(hits == 0, "no message of %zu shows secret %zu", nmessages, i);
	}
	ok(nmessages > 80, "enough messages were checked (%zu)", nmessages);
}

int main(void)
{
	const char *t = getenv("TMPDIR");

	snprintf(tmp, sizeof(tmp), "%s/imgsync-test-conf.XXXXXX", t && *t ? t : "/tmp");
	if (mkdtemp(tmp) == NULL) {
		perror("mkdtemp");
		return 2;
	}

	test_minimal();
	test_full();
	test_region();
	test_syntax();
	test_golden();
	test_missing_file();
	test_secret_precedence();
	test_key_id_and_token_files();
	test_secret_file_contents();
	test_inline_secret_mode();
	test_scrub();
	test_sample();
	test_no_secret_in_messages();

	while (ncreated > 0) {
		char *p = created[--ncreated];

		if (remove(p) != 0 && errno != ENOENT)
			perror(p);
		free(p);
	}
	if (rmdir(tmp) != 0)
		perror(tmp);
	for (size_t i = 0; i < nmessages; i++)
		free(messages[i]);
	return tap_done();
}
