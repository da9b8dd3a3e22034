/*
 * test_layout.c - layout_key() and mime_extension() against the names
 * SQLAlchemy-ImageAttach itself produces.
 *
 * Every expected string below was computed with CPython 3.11 using
 * ImageAttach's own formulas (stores/fs.py get_path(), stores/s3.py
 * get_key(), uuid.UUID(...).int for UUID ids) and
 * mimetypes.MimeTypes().guess_extension(); the test itself is pure C.
 */
#include <stdbool.h>
#include <string.h>

#include "buf.h"
#include "key.h"
#include "layout.h"
#include "mimetypes.h"
#include "tap.h"

/* Build a key; returns the buffer's string (static copy) or NULL on error. */
static const char *build(enum layout_shape shape, const char *prefix, const char *type,
			 const char *id, const char *w, const char *h, const char *mime,
			 struct err *e)
{
	static char last[2048];
	struct image_attrs a = {type, id, w, h, mime};
	struct buf b = BUF_INIT;
	bool res;

	err_clear(e);
	res = layout_key(LAYOUT_IMAGEATTACH, shape, prefix, NULL, &a, &b, e);
	if (res)
		snprintf(last, sizeof(last), "%s", buf_str(&b));
	buf_free(&b);
	return res ? last : NULL;
}

static void fs_is(const char *type, const char *id, const char *w, const char *h, const char *mime,
		  const char *want)
{
	struct err e;
	const char *got = build(LAYOUT_SHAPE_FS, NULL, type, id, w, h, mime, &e);

	is_str(got, want, "fs  id=%s %sx%s %s", id, w, h, mime);
	if (!got)
		tap_diag("error: %s", e.msg);
}

static void s3_is(const char *prefix, const char *type, const char *id, const char *w,
		  const char *h, const char *mime, const char *want)
{
	struct err e;
	const char *got = build(LAYOUT_SHAPE_OBJECT, prefix, type, id, w, h, mime, &e);

	is_str(got, want, "obj id=%s %sx%s %s prefix '%s'", id, w, h, mime,
	       prefix ? prefix : "(null)");
	if (!got)
		tap_diag("error: %s", e.msg);
}

static bool msg_is_clean(const char *m)
{
	for (const unsigned char *p = (const unsigned char *)m; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			return false;
	return true;
}

/* Expect an ERR_INVALID whose message contains `needle`. */
static void fails(enum layout_shape shape, const char *type, const char *id, const char *w,
		  const char *h, const char *mime, const char *needle, const char *name)
{
	struct err e;
	const char *got = build(shape, NULL, type, id, w, h, mime, &e);

	if (!ok(got == NULL && e.code == ERR_INVALID && strstr(e.msg, needle) &&
		    msg_is_clean(e.msg),
		"rejects %s", name))
		tap_diag("got '%s', code %s, message: %s (wanted \"%s\")", got ? got : "(null)",
			 err_code_name(e.code), e.msg, needle);
}

static void test_mime(void)
{
	int unsorted = 0;

	is_str(mime_extension("image/jpeg"), ".jpe", "image/jpeg -> .jpe (ImageAttach)");
	is_str(mime_extension("image/png"), ".png", "image/png -> .png");
	is_str(mime_extension("image/gif"), ".gif", "image/gif -> .gif");
	is_str(mime_extension("image/svg+xml"), ".svg", "image/svg+xml -> .svg");
	is_str(mime_extension("image/tiff"), ".tiff", "image/tiff -> .tiff (first of .tiff .tif)");
	is_str(mime_extension("image/bmp"), ".bmp", "image/bmp -> .bmp");
	is_str(mime_extension("image/avif"), ".avif", "image/avif -> .avif");
	is_str(mime_extension("image/heic"), ".heic", "image/heic -> .heic");
	is_str(mime_extension("image/vnd.microsoft.icon"), ".ico", "ico");
	is_str(mime_extension("application/octet-stream"), ".bin", "octet-stream -> .bin");
	/* Python 3.11's strict built-in table has no image/webp (only the
	 * non-strict one does), nor image/x-icon, image/jpg, image/pjpeg. */
	is_str(mime_extension("image/webp"), NULL, "image/webp -> None in 3.11's strict table");
	is_str(mime_extension("image/x-icon"), NULL, "image/x-icon -> None");
	is_str(mime_extension("image/jpg"), NULL, "image/jpg -> None (non-strict only)");
	is_str(mime_extension("image/pjpeg"), NULL, "image/pjpeg -> None");
	is_str(mime_extension("image/x-unknown"), NULL, "unknown type -> None");
	is_str(mime_extension(""), NULL, "empty type -> None");
	is_str(mime_extension(NULL), NULL, "NULL type -> NULL");
	is_str(mime_extension("image/png; q=1"), NULL, "parameters are not stripped (Python)");
	is_str(mime_extension(" image/png"), NULL, "blanks are not stripped (Python)");
	/* ImageAttach compares 'image/jpeg' exactly; Python lower-cases after. */
	is_str(mime_extension("IMAGE/JPEG"), ".jpg", "IMAGE/JPEG -> .jpg (not .jpe)");
	is_str(mime_extension("Image/PNG"), ".png", "lookup is case-insensitive");
	is_str(mime_extension("video/quic\xe2\x84\xaatime"), ".mov",
	       "U+212A KELVIN SIGN lower-cases to 'k' as in Python");
	is_str(mime_extension("image/\xc3\xa9"), NULL, "non-ASCII type -> None");

	is_int(mime_table_len, 95, "Python 3.11 table has 95 types");
	is_str(mime_table_python_version, "3.11", "table generated from Python 3.11");
	for (size_t i = 0; i < mime_table_len; i++) {
		const char *t = mime_table[i].type;

		if (i > 0 && strcmp(mime_table[i - 1].type, t) >= 0)
			unsorted++;
		for (const char *p = t; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				unsorted++;
		if (mime_extension(t) != mime_table[i].ext && strcmp(t, "image/jpeg") != 0)
			unsorted++;
	}
	ok(unsorted == 0, "table is sorted, lower case, and every entry is found");
}

static void test_fs_ids(void)
{
	const char *t = "user-picture";

	fs_is(t, "0", "10", "20", "image/png", "user-picture/0/0/0.10x20.png");
	fs_is(t, "999", "10", "20", "image/png", "user-picture/999/0/999.10x20.png");
	fs_is(t, "1000", "10", "20", "image/png", "user-picture/0/1/1000.10x20.png");
	fs_is(t, "1001", "10", "20", "image/png", "user-picture/1/1/1001.10x20.png");
	fs_is(t, "1999", "10", "20", "image/png", "user-picture/999/1/1999.10x20.png");
	fs_is(t, "2000", "10", "20", "image/png", "user-picture/0/2/2000.10x20.png");
	fs_is(t, "123456789", "10", "20", "image/png",
	      "user-picture/789/123456/123456789.10x20.png");
	/* 2^64, 2^64 + 1, 2^128 - 1 */
	fs_is(t, "18446744073709551616", "10", "20", "image/png",
	      "user-picture/616/18446744073709551/18446744073709551616.10x20.png");
	fs_is(t, "18446744073709551617", "10", "20", "image/png",
	      "user-picture/617/18446744073709551/18446744073709551617.10x20.png");
	fs_is(t, "340282366920938463463374607431768211455", "10", "20", "image/png",
	      "user-picture/455/340282366920938463463374607431768211/"
	      "340282366920938463463374607431768211455.10x20.png");
	fs_is(t, "10000000000000000000000000000000000000000", "10", "20", "image/png",
	      "user-picture/0/10000000000000000000000000000000000000/"
	      "10000000000000000000000000000000000000000.10x20.png");
}

static void test_fs_negative(void)
{
	const char *t = "user-picture";

	/* Python floor semantics: -5 % 1000 == 995, -5 // 1000 == -1. */
	fs_is(t, "-1", "10", "20", "image/png", "user-picture/999/-1/-1.10x20.png");
	fs_is(t, "-5", "10", "20", "image/png", "user-picture/995/-1/-5.10x20.png");
	fs_is(t, "-999", "10", "20", "image/png", "user-picture/1/-1/-999.10x20.png");
	fs_is(t, "-1000", "10", "20", "image/png", "user-picture/0/-1/-1000.10x20.png");
	fs_is(t, "-1001", "10", "20", "image/png", "user-picture/999/-2/-1001.10x20.png");
	fs_is(t, "-1999", "10", "20", "image/png", "user-picture/1/-2/-1999.10x20.png");
	fs_is(t, "-2000", "10", "20", "image/png", "user-picture/0/-2/-2000.10x20.png");
	fs_is(t, "-999999", "10", "20", "image/png", "user-picture/1/-1000/-999999.10x20.png");
	fs_is(t, "-1000000", "10", "20", "image/png", "user-picture/0/-1000/-1000000.10x20.png");
	fs_is(t, "-123456789", "10", "20", "image/png",
	      "user-picture/211/-123457/-123456789.10x20.png");
	fs_is(t, "-18446744073709551616", "10", "20", "image/png",
	      "user-picture/384/-18446744073709552/-18446744073709551616.10x20.png");
	fs_is(t, "-9999999999999999999999999999999999999999", "10", "20", "image/png",
	      "user-picture/1/-10000000000000000000000000000000000000/"
	      "-9999999999999999999999999999999999999999.10x20.png");
}

static void test_normalisation(void)
{
	/* int("007") == 7, int("-0") == 0, int("-007") == -7 */
	fs_is("x", "007", "010", "0020", "image/png", "x/7/0/7.10x20.png");
	fs_is("x", "-0", "007", "-3", "image/png", "x/0/0/0.7x-3.png");
	fs_is("x", "0000", "0", "0", "image/png", "x/0/0/0.0x0.png");
	s3_is(NULL, "x", "-007", "1", "1", "image/png", "x/-7/1x1.png");
	/* 32 decimal digits are an integer, not an undashed UUID. */
	s3_is(NULL, "x", "12345678901234567890123456789012", "1", "1", "image/png",
	      "x/12345678901234567890123456789012/1x1.png");
}

static void test_uuid(void)
{
	/* int(uuid.UUID('6ba7b810-9dad-11d1-80b4-00c04fd430c8')) */
	fs_is("t", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "1", "2", "image/jpeg",
	      "t/704/143098242404177361603877621312831893/"
	      "143098242404177361603877621312831893704.1x2.jpe");
	s3_is(NULL, "t", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "1", "2", "image/jpeg",
	      "t/143098242404177361603877621312831893704/1x2.jpe");
	s3_is(NULL, "t", "6BA7B8109DAD11D180B400C04FD430C8", "1", "2", "image/gif",
	      "t/143098242404177361603877621312831893704/1x2.gif");
	s3_is(NULL, "t", "00000000-0000-0000-0000-000000000000", "1", "2", "image/gif",
	      "t/0/1x2.gif");
	fs_is("t", "00000000-0000-0000-0000-0000000003e8", "1", "2", "image/gif",
	      "t/0/1/1000.1x2.gif");
	s3_is(NULL, "t", "ffffffff-ffff-ffff-ffff-ffffffffffff", "1", "2", "image/gif",
	      "t/340282366920938463463374607431768211455/1x2.gif");
	fs_is("t", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFE", "1", "2", "image/gif",
	      "t/454/340282366920938463463374607431768211/"
	      "340282366920938463463374607431768211454.1x2.gif");
}

static void test_ext(void)
{
	fs_is("comics-cover", "123", "10", "20", "image/jpeg", "comics-cover/123/0/123.10x20.jpe");
	fs_is("comics-cover", "123", "10", "20", "image/gif", "comics-cover/123/0/123.10x20.gif");
	fs_is("comics-cover", "123", "10", "20", "image/svg+xml",
	      "comics-cover/123/0/123.10x20.svg");
	fs_is("comics-cover", "123", "10", "20", "image/x-unknown",
	      "comics-cover/123/0/123.10x20None");
	s3_is(NULL, "comics-cover", "123", "10", "20", "image/x-unknown",
	      "comics-cover/123/10x20None");
	s3_is(NULL, "comics-cover", "123", "10", "20", "image/webp", "comics-cover/123/10x20None");
	s3_is(NULL, "comics-cover", "123", "10", "20", "IMAGE/JPEG", "comics-cover/123/10x20.jpg");
}

static void test_object_shape(void)
{
	const char *t = "comics-cover";

	s3_is(NULL, "user-picture", "0", "10", "20", "image/png", "user-picture/0/10x20.png");
	s3_is(NULL, "user-picture", "18446744073709551617", "10", "20", "image/png",
	      "user-picture/18446744073709551617/10x20.png");
	s3_is(NULL, "user-picture", "-1001", "10", "20", "image/png",
	      "user-picture/-1001/10x20.png");
	s3_is("", t, "123", "10", "20", "image/png", "comics-cover/123/10x20.png");
	s3_is("images", t, "123", "10", "20", "image/png", "images/comics-cover/123/10x20.png");
	/* S3Store strips blanks, then trailing slashes, from its prefix. */
	s3_is("images/", t, "123", "10", "20", "image/png", "images/comics-cover/123/10x20.png");
	s3_is(" images// ", t, "123", "10", "20", "image/png", "images/comics-cover/123/10x20.png");
	s3_is("a/b", t, "123", "10", "20", "image/png", "a/b/comics-cover/123/10x20.png");
	s3_is("/", t, "123", "10", "20", "image/png", "comics-cover/123/10x20.png");
	s3_is("  ", t, "123", "10", "20", "image/png", "comics-cover/123/10x20.png");
	s3_is(NULL, "comics.cover", "1", "2", "3", "image/png", "comics.cover/1/2x3.png");
	s3_is(NULL, "\xec\x82\xac\xec\xa7\x84", "1", "2", "3", "image/png",
	      "\xec\x82\xac\xec\xa7\x84/1/2x3.png");
}

static void test_bad_attrs(void)
{
	const enum layout_shape F = LAYOUT_SHAPE_FS;
	struct image_attrs none = {NULL, NULL, NULL, NULL, NULL};
	struct buf b = BUF_INIT;
	struct err e;

	fails(F, NULL, "1", "2", "3", "image/png", "attribute object_type is missing",
	      "missing object_type");
	fails(F, "t", NULL, "2", "3", "image/png", "attribute object_id is missing",
	      "missing object_id");
	fails(F, "t", "1", NULL, "3", "image/png", "attribute width is missing", "missing width");
	fails(F, "t", "1", "2", NULL, "image/png", "attribute height is missing", "missing height");
	fails(F, "t", "1", "2", "3", NULL, "attribute mimetype is missing", "missing mimetype");
	err_clear(&e);
	ok(!layout_key(LAYOUT_IMAGEATTACH, F, NULL, "k", NULL, &b, &e) && e.code == ERR_INVALID &&
	       strstr(e.msg, "no attributes"),
	   "rejects NULL attrs: %s", e.msg);
	err_clear(&e);
	ok(!layout_key(LAYOUT_IMAGEATTACH, F, NULL, "k", &none, &b, &e) &&
	       strstr(e.msg, "object_type is missing"),
	   "all attributes absent: names the first");

	fails(F, "", "1", "2", "3", "image/png", "object_type is empty", "empty object_type");
	fails(F, "a/b", "1", "2", "3", "image/png", "contains '/'", "object_type with '/'");
	fails(F, "../x", "1", "2", "3", "image/png", "contains '/'", "object_type '../x'");
	fails(F, "/x", "1", "2", "3", "image/png", "contains '/'", "object_type '/x'");
	fails(F, "..", "1", "2", "3", "image/png", "'..' path segment", "object_type '..'");
	fails(F, ".", "1", "2", "3", "image/png", "'.' path segment", "object_type '.'");
	fails(F, "a\nb", "1", "2", "3", "image/png", "control character 0x0A",
	      "object_type with a newline");
	fails(F, "a\xff", "1", "2", "3", "image/png", "invalid UTF-8",
	      "object_type with invalid UTF-8");

	fails(F, "t", "", "2", "3", "image/png", "object_id is empty", "empty object_id");
	fails(F, "t", "+5", "2", "3", "image/png", "neither a decimal integer nor a UUID",
	      "object_id '+5'");
	fails(F, "t", "1.0", "2", "3", "image/png", "object_id \"1.0\"", "object_id '1.0'");
	fails(F, "t", "1e3", "2", "3", "image/png", "neither", "object_id '1e3'");
	fails(F, "t", " 5", "2", "3", "image/png", "neither", "object_id ' 5'");
	fails(F, "t", "5 ", "2", "3", "image/png", "neither", "object_id '5 '");
	fails(F, "t", "-", "2", "3", "image/png", "neither", "object_id '-'");
	fails(F, "t", "--5", "2", "3", "image/png", "neither", "object_id '--5'");
	fails(F, "t", "1_000", "2", "3", "image/png", "neither", "object_id '1_000'");
	fails(F, "t", "0x10", "2", "3", "image/png", "neither", "object_id '0x10'");
	fails(F, "t", "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", "2", "3", "image/png", "neither",
	      "UUID in braces");
	fails(F, "t", "6ba7b810-9dad11d1-80b4-00c04fd430c8-", "2", "3", "image/png", "neither",
	      "UUID with misplaced dashes");
	fails(F, "t", "6ba7b8109dad11d180b400c04fd430c", "2", "3", "image/png", "neither",
	      "31 hex digits");
	fails(F, "t", "6ba7b810-9dad-11d1-80b4-00c04fd430cg", "2", "3", "image/png", "neither",
	      "UUID with a non-hex digit");
	fails(F, "t", "1\n2", "2", "3", "image/png", "\"1\\x0a2\"",
	      "object_id with a newline, escaped in the message");
	fails(F, "t", "1", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "3", "image/png",
	      "attribute width \"6ba7b810", "UUID as width");
	fails(F, "t", "1", "2.5", "3", "image/png", "is not a decimal integer", "width 2.5");
	fails(F, "t", "1", "2", "", "image/png", "height is empty", "empty height");
	fails(F, "t", "1", "2", "+3", "image/png", "attribute height \"+3\"", "height +3");
	buf_free(&b);
}

static void test_too_long(void)
{
	char type[1100], id[1100];
	struct err e;

	memset(type, 'a', 1010);
	type[1010] = '\0';
	ok(build(LAYOUT_SHAPE_OBJECT, NULL, type, "1", "2", "3", "image/png", &e) != NULL,
	   "1010-byte object_type still fits in 1024");
	memset(type, 'a', 1020);
	type[1020] = '\0';
	ok(build(LAYOUT_SHAPE_OBJECT, NULL, type, "1", "2", "3", "image/png", &e) == NULL &&
	       e.code == ERR_INVALID && strstr(e.msg, "more than the 1024") &&
	       strstr(e.msg, "physical key"),
	   "an imageattach key over 1024 bytes is rejected: %.80s", e.msg);
	memset(id, '9', 1025);
	id[1025] = '\0';
	ok(build(LAYOUT_SHAPE_FS, NULL, "t", id, "2", "3", "image/png", &e) == NULL &&
	       strstr(e.msg, "object_id is 1025 bytes long"),
	   "a 1025-digit id is rejected early");
}

static void plain_is(const char *prefix, const char *key, const char *want)
{
	struct buf b = BUF_INIT;
	struct err e;
	bool res;

	err_clear(&e);
	res = layout_key(LAYOUT_PLAIN, LAYOUT_SHAPE_OBJECT, prefix, key, NULL, &b, &e);
	is_str(res ? buf_str(&b) : NULL, want, "plain '%s' + '%s'", prefix ? prefix : "(null)",
	       key ? key : "(null)");
	if (!res && want)
		tap_diag("error: %s", e.msg);
	buf_free(&b);
}

static void test_plain(void)
{
	struct image_attrs a = {"t", "1", "2", "3", "image/png"};
	struct buf b = BUF_INIT;
	struct err e;

	plain_is(NULL, "a/b.jpg", "a/b.jpg");
	plain_is("", "a/b.jpg", "a/b.jpg");
	plain_is("pre/", "a/b.jpg", "pre/a/b.jpg");
	plain_is("pre-", "a/b.jpg", "pre-a/b.jpg");
	plain_is(NULL, "../etc/passwd", NULL);
	plain_is("pre/", "/abs", NULL);
	plain_is("pre/", "a//b", NULL);
	plain_is(NULL, "", NULL);
	plain_is(NULL, NULL, NULL);
	plain_is("/", "a", NULL);     /* physical key would be absolute */
	plain_is("pre//", "a", NULL); /* empty segment from the prefix */
	plain_is("../", "a", NULL);   /* traversal from the prefix */

	/* Plain ignores attributes; it appends and leaves out alone on failure. */
	buf_puts(&b, "X:");
	ok(layout_key(LAYOUT_PLAIN, LAYOUT_SHAPE_FS, NULL, "k", &a, &b, &e) &&
	       strcmp(buf_str(&b), "X:k") == 0,
	   "layout_key appends to out");
	ok(layout_key(LAYOUT_IMAGEATTACH, LAYOUT_SHAPE_FS, NULL, NULL, &a, &b, &e) &&
	       strcmp(buf_str(&b), "X:kt/1/0/1.2x3.png") == 0,
	   "imageattach appends too: %s", buf_str(&b));
	buf_reset(&b);
	buf_puts(&b, "X:");
	ok(!layout_key(LAYOUT_PLAIN, LAYOUT_SHAPE_FS, "/", "k", NULL, &b, &e) &&
	       strcmp(buf_str(&b), "X:") == 0 && b.len == 2,
	   "a rejected physical key leaves out unchanged");
	ok(!layout_key(LAYOUT_PLAIN, LAYOUT_SHAPE_FS, NULL, "k\x01", NULL, &b, &e) &&
	       e.code == ERR_INVALID && strstr(e.msg, "control character 0x01") &&
	       strcmp(buf_str(&b), "X:") == 0,
	   "a rejected logical key names the problem: %s", e.msg);
	ok(!layout_key((enum layout_kind)42, LAYOUT_SHAPE_FS, NULL, "k", NULL, &b, &e) &&
	       e.code == ERR_INVALID,
	   "unknown layout kind is rejected");
	buf_free(&b);
}

static void test_names(void)
{
	enum layout_kind k = LAYOUT_PLAIN;

	ok(layout_parse("imageattach", &k) && k == LAYOUT_IMAGEATTACH, "parse imageattach");
	ok(layout_parse("plain", &k) && k == LAYOUT_PLAIN, "parse plain");
	ok(!layout_parse("Plain", &k) && !layout_parse("", &k) && !layout_parse(NULL, &k) &&
	       !layout_parse("image-attach", &k),
	   "unknown layout names are refused");
	is_str(layout_name(LAYOUT_PLAIN), "plain", "name of plain");
	is_str(layout_name(LAYOUT_IMAGEATTACH), "imageattach", "name of imageattach");
}

/* layout_unkey(): want is "KEY" (plain), "TYPE ID W H EXT" (imageattach)
 * or NULL for a refusal whose message holds want_err. */
static void unkey_is(enum layout_kind kind, enum layout_shape shape, const char *prefix,
		     const char *phys, const char *want, const char *want_err)
{
	struct layout_parts p;
	struct err e;
	char got[600];
	bool res;

	err_clear(&e);
	res = layout_unkey(kind, shape, prefix, phys, &p, &e);
	if (!res) {
		ok(want == NULL && e.code == ERR_INVALID && strstr(e.msg, want_err),
		   "unkey '%s': refused: %s", phys, e.msg);
		return;
	}
	if (kind == LAYOUT_PLAIN)
		snprintf(got, sizeof(got), "%s", p.logical_key);
	else
		snprintf(got, sizeof(got), "%s %s %s %s %s", p.object_type, p.object_id, p.width,
			 p.height, p.ext);
	is_str(got, want, "unkey '%s' (prefix '%s')", phys, prefix ? prefix : "");
	layout_parts_free(&p);
}

static void test_unkey(void)
{
	const enum layout_kind P = LAYOUT_PLAIN, I = LAYOUT_IMAGEATTACH;
	const enum layout_shape F = LAYOUT_SHAPE_FS, O = LAYOUT_SHAPE_OBJECT;

	unkey_is(P, O, NULL, "a/b.jpg", "a/b.jpg", NULL);
	unkey_is(P, O, "pre/", "pre/a/b.jpg", "a/b.jpg", NULL);
	unkey_is(P, O, "pre-", "pre-a", "a", NULL);
	unkey_is(P, O, "pre/", "other/a", NULL, "is not under the store's prefix");
	unkey_is(P, O, "pre/", "pre/", NULL, "empty path segment");
	unkey_is(P, O, "pre", "pre", NULL, "plain layout: logical key: invalid key: empty");
	unkey_is(P, O, NULL, "a/../b", NULL, "'..' path segment");

	unkey_is(I, F, NULL, "user/456/123/123456.640x480.jpe", "user 123456 640 480 .jpe", NULL);
	unkey_is(I, F, NULL, "user/995/-1/-5.1x2None", "user -5 1 2 None", NULL);
	unkey_is(I, F, NULL, "user/0/0/0.0x0.png", "user 0 0 0 .png", NULL);
	unkey_is(I, F, " img/ ", "img/user/1/0/1.2x3.png", "user 1 2 3 .png", NULL);
	unkey_is(I, F, NULL, "user/456/124/123456.640x480.jpe", NULL,
		 "not <id % 1000>/<id // 1000>");
	unkey_is(I, F, NULL, "user/456/123/0123456.640x480.jpe", NULL, "<id>.");
	unkey_is(I, F, NULL, "user/456/123/123456.640x480.nope", NULL, "no mimetype gives");
	unkey_is(I, F, NULL, "user/456/123456.640x480.jpe", NULL, "is not <object_type>/");
	unkey_is(I, O, "p", "p/user/5/3x4.png", "user 5 3 4 .png", NULL);
	unkey_is(I, O, "p", "q/user/5/3x4.png", NULL, "prefix");
	unkey_is(I, O, NULL, "user/-0/3x4.png", NULL, "no <id>");
	unkey_is(I, O, NULL, "user/5/03x4.png", NULL, "<W>x");
	unkey_is(I, O, NULL, "user/5/3x.png", NULL, "<H>");
	unkey_is(I, O, NULL, "user/5/6/3x4.png", NULL, "is not <object_type>/<id>/");
}

int main(void)
{
	test_mime();
	test_fs_ids();
	test_fs_negative();
	test_normalisation();
	test_uuid();
	test_ext();
	test_object_shape();
	test_bad_attrs();
	test_too_long();
	test_plain();
	test_names();
	test_unkey();
	return tap_done();
}
