/*
 * fuzz_conf.c - conf_load() on any file: the grammar (libconfuse plus the
 * prescan), every validation and cross-check, the secrets.
 *
 * The input is written to /tmp/imgsync-fuzz/conf.PID, next to a secret
 * file a config may name (/tmp/imgsync-fuzz/cloud.secret, mode 0600: the
 * seeds and the dictionary name it); AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY are set, so S3 stores can be complete.
 *
 * Invariants:
 * - the same file gives the same result twice (libconfuse's lexer is
 *   global state: nothing of one load may leak into the next);
 * - a refusal is ERR_CONFIG (or ERR_NOMEM) reading "FILE:LINE: message" with
 *   1 <= LINE <= the lines of the file, or "FILE: message"; no control
 *   byte in it; never a secret (the environment's, the secret file's);
 * - an accepted config holds what conf.h promises: at least one store;
 *   each named validly, once, of type fs (absolute root) or s3 (endpoint,
 *   bucket, region, both keys, part_size within S3's limits and not above
 *   multipart_threshold); mirrors naming defined stores, once each; ranges
 *   of concurrency, max_attempts, stop_timeout; warnings "FILE:..." with no
 *   secret in them.
 */
#include "fuzz.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"

#define ENV_SECRET  "EnvSecretMarker+0123456789"
#define FILE_SECRET "FileSecretMarker/9876543210"

#define DIR "/tmp/imgsync-fuzz"

static char path[96];

static void remove_conf(void)
{
	unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char tmp[128];
	int fd;

	(void)argc, (void)argv;
	if (mkdir(DIR, 0700) != 0 && errno != EEXIST)
		abort();
	snprintf(path, sizeof(path), DIR "/conf.%ld", (long)getpid());
	/* the secret file, written aside and renamed: other fuzzers may read it */
	snprintf(tmp, sizeof(tmp), DIR "/cloud.secret.%ld", (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, FILE_SECRET "\n", sizeof(FILE_SECRET)) != sizeof(FILE_SECRET))
		abort();
	close(fd);
	if (rename(tmp, DIR "/cloud.secret") != 0)
		abort();
	atexit(remove_conf);
	setenv("AWS_ACCESS_KEY_ID", "AKIDFUZZ", 1);
	setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET, 1);
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("CREDENTIALS_DIRECTORY");
	return 0;
}

/* The input itself holds a marker: then the file may show it legitimately. */
static bool marker_in_input;

static void check_text(const char *what, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		CHECK(*p >= 0x20 && *p != 0x7f, "control byte 0x%02x in %s \"%s\"", *p, what, s);
	CHECK(marker_in_input || (strstr(s, ENV_SECRET) == NULL && strstr(s, FILE_SECRET) == NULL),
	      "a secret in %s \"%s\"", what, s);
}

/* "PATH:LINE: ..." or "PATH: ...": the line, 0 for none. */
static long msg_line(const char *what, const char *m)
{
	size_t pl = strlen(path);
	char *end;
	long line;

	CHECK(strncmp(m, path, pl) == 0 && m[pl] == ':', "%s \"%s\" does not start with the file",
	      what, m);
	if (m[pl + 1] == ' ')
		return 0;
	CHECK(isdigit((unsigned char)m[pl + 1]), "%s \"%s\": no line number", what, m);
	line = strtol(m + pl + 1, &end, 10);
	CHECK(end[0] == ':' && end[1] == ' ' && end[2] != '\0', "%s \"%s\": no message", what, m);
	return line;
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

static void check_conf(const struct conf *c, long nlines)
{
	CHECK(c->nstores >= 1, "no store");
	CHECK(c->db_conninfo && c->db_channel, "database defaults");
	CHECK(c->concurrency >= 1 && c->concurrency <= 1024, "concurrency %d", c->concurrency);
	CHECK(c->max_attempts >= 1 && c->max_attempts <= 1000, "max_attempts %d", c->max_attempts);
	CHECK(c->stop_timeout >= 1 && c->stop_timeout <= 3600, "stop_timeout %d", c->stop_timeout);
	for (size_t i = 0; i < c->nstores; i++) {
		const struct store_cfg *s = &c->stores[i];

		CHECK(s->name && valid_name(s->name), "store name");
		CHECK(s->line >= 1 && s->line <= nlines, "store line %d of %ld", s->line, nlines);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(c->stores[j].name, s->name) != 0, "store %s twice", s->name);
		CHECK(conf_store(c, s->name) == s, "conf_store(%s)", s->name);
		CHECK(s->type && (strcmp(s->type, "fs") == 0 || strcmp(s->type, "s3") == 0),
		      "store type");
		CHECK(s->prefix != NULL, "prefix NULL");
		if (strcmp(s->type, "fs") == 0) {
			CHECK(s->root && s->root[0] == '/', "fs root");
			CHECK(s->endpoint == NULL && s->bucket == NULL &&
				  s->secret_access_key == NULL,
			      "fs store with S3 settings");
		} else {
			CHECK(s->endpoint && (strncasecmp(s->endpoint, "http://", 7) == 0 ||
					      strncasecmp(s->endpoint, "https://", 8) == 0),
			      "endpoint \"%s\"", s->endpoint);
			CHECK(s->bucket && strlen(s->bucket) >= 3 && strlen(s->bucket) <= 63,
			      "bucket");
			CHECK(s->region && s->region[0], "region");
			CHECK(s->access_key_id && s->access_key_id[0] && s->secret_access_key &&
				  s->secret_access_key[0] && s->secret_source,
			      "credentials");
			CHECK(marker_in_input || (strstr(s->secret_source, ENV_SECRET) == NULL &&
						  strstr(s->secret_source, FILE_SECRET) == NULL),
			      "secret_source holds the secret");
			CHECK(s->part_size >= 5ull << 20 && s->part_size <= 5ull << 30,
			      "part_size");
			CHECK(s->multipart_threshold >= s->part_size &&
				  s->multipart_threshold <= 5ull << 30,
			      "multipart_threshold");
			CHECK(s->prefix[0] != '/', "prefix \"%s\"", s->prefix);
			CHECK(s->connect_timeout_ms >= 1000 && s->connect_timeout_ms <= 300000,
			      "connect_timeout");
		}
	}
	for (size_t i = 0; i < c->nmirrors; i++) {
		CHECK(conf_store(c, c->mirrors[i]) != NULL, "mirror %s undefined", c->mirrors[i]);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(c->mirrors[i], c->mirrors[j]) != 0, "mirror twice");
	}
	for (size_t i = 0; i < c->nwarnings; i++) {
		long l = msg_line("warning", c->warnings[i]);

		CHECK(l >= 0 && l <= nlines, "warning on line %ld of %ld", l, nlines);
		check_text("a warning", c->warnings[i]);
		for (size_t j = 0; j < c->nstores; j++)
			if (c->stores[j].secret_access_key &&
			    strlen(c->stores[j].secret_access_key) >= 8)
				CHECK(strstr(c->warnings[i], c->stores[j].secret_access_key) ==
					  NULL,
				      "a warning quotes a secret");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *c = NULL, *c2 = NULL;
	struct err e, e2;
	long nlines = 1;
	bool ok, ok2;
	int fd;

	if (size > 65536)
		return 0;
	for (size_t i = 0; i < size; i++)
		nlines += data[i] == '\n';
	marker_in_input = memmem(data, size, "SecretMarker", 12) != NULL;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	close(fd);

	ok = conf_load(path, &c, &e);
	ok2 = conf_load(path, &c2, &e2);
	CHECK(ok == ok2, "conf_load: %s, then %s", ok ? "accepted" : e.msg,
	      ok2 ? "accepted" : e2.msg);
	if (!ok) {
		long line;

		CHECK(c == NULL, "a refused config was returned");
		CHECK(strcmp(e.msg, e2.msg) == 0, "two messages: \"%s\" and \"%s\"", e.msg, e2.msg);
		CHECK(e.code == ERR_CONFIG || e.code == ERR_NOMEM, "refused with %s: %s",
		      err_code_name(e.code), e.msg);
		line = msg_line("message", e.msg);
		CHECK(line >= 0 && line <= nlines, "message on line %ld of %ld: %s", line, nlines,
		      e.msg);
		check_text("the message", e.msg);
		return 0;
	}
	CHECK(c != NULL && c2 != NULL, "accepted without a config");
	CHECK(c->nstores == c2->nstores && c->nmirrors == c2->nmirrors &&
		  c->nwarnings == c2->nwarnings,
	      "two loads differ");
	check_conf(c, nlines);
	conf_free(c);
	conf_free(c2);
	return 0;
}
