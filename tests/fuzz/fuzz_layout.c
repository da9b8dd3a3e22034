/*
 * fuzz_layout.c - layout_key() (catalog entry -> physical key) and
 * layout_unkey() (physical key -> catalog entry), both ways.
 *
 * Input: one byte of flags (bit 0: imageattach, bit 1: the S3 shape, bit 2:
 * the input is a physical key to take apart), then fields separated by NUL
 * bytes: prefix, logical key, object_type, object_id, width, height,
 * mimetype.  A missing field is absent (NULL); with bit 2 the first field is
 * the prefix and the second the physical key.
 *
 * Invariants:
 * - the same input gives the same answer twice;
 * - on failure, out is untouched and the message is ERR_INVALID, printable;
 * - on success, the physical key passes key_validate(), never leaves a
 *   store's root, and is prefix + key (plain); for imageattach its pieces
 *   are the attributes, normalised, with fs buckets that match Python's
 *   floor % and // (checked with native arithmetic where the id fits);
 * - key -> path -> key: layout_unkey() of what layout_key() made gives the
 *   logical key or the normalised attributes back;
 * - path -> key -> path: whatever layout_unkey() accepts, layout_key() makes
 *   again from what it returned, byte for byte.
 */
#include "fuzz.h"

#include "buf.h"
#include "key.h"
#include "layout.h"
#include "mimetypes.h"

#define NFIELDS 7

/* "-?[0-9]+" normalised as Python's str(int(s)). */
static void normalise_int(const char *s, char *out, size_t size)
{
	bool neg = s[0] == '-';
	const char *d = s + neg;

	while (d[0] == '0' && d[1])
		d++;
	if (strcmp(d, "0") == 0)
		neg = false;
	snprintf(out, size, "%s%s", neg ? "-" : "", d);
}

static bool all_digits(const char *s)
{
	if (*s == '-')
		s++;
	return *s && strspn(s, "0123456789") == strlen(s);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The decimal text of a UUID's 128-bit integer, by native arithmetic. */
static bool uuid_decimal(const char *s, char *out)
{
	unsigned __int128 v = 0;
	char rev[48];
	size_t len = strlen(s), n = 0, nib = 0;

	if (len != 32 && len != 36)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
			if (s[i] != '-')
				return false;
			continue;
		}
		if (hexval(s[i]) < 0)
			return false;
		v = v << 4 | (unsigned)hexval(s[i]);
		nib++;
	}
	if (nib != 32)
		return false;
	do {
		rev[n++] = (char)('0' + (int)(v % 10));
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = rev[n - 1 - i];
	out[n] = '\0';
	return true;
}

/* What the prefix becomes in front of an imageattach key. */
static void ia_prefix(const char *prefix, char *out, size_t size)
{
	const char *s = prefix ? prefix : "";
	size_t n;

#define BLANK(c) ((c) == ' ' || ((c) >= '\t' && (c) <= '\r') || ((c) >= 0x1c && (c) <= 0x1f))
	while (*s && BLANK(*s))
		s++;
	n = strlen(s);
	while (n > 0 && BLANK(s[n - 1]))
		n--;
#undef BLANK
	while (n > 0 && s[n - 1] == '/')
		n--;
	snprintf(out, size, "%.*s%s", (int)n, s, n ? "/" : "");
}

static void check_confined(const char *k)
{
	long depth = 0;

	for (const char *p = k; *p;) {
		size_t n = strcspn(p, "/");

		CHECK(!(n == 2 && p[0] == '.' && p[1] == '.'), "'..' in physical key \"%s\"", k);
		if (n > 0 && !(n == 1 && p[0] == '.'))
			depth++;
		p += n;
		if (*p == '/')
			p++;
	}
	CHECK(depth > 0, "physical key \"%s\" names the root", k);
}

/* A mimetype whose extension is ext, for rebuilding a key (NULL: none). */
static const char *mime_for_ext(const char *ext)
{
	if (strcmp(ext, ".jpe") == 0)
		return "image/jpeg";
	if (strcmp(ext, "None") == 0)
		return "x-imgsync/unknown";
	static char upper[128];

	for (size_t i = 0; i < mime_table_len; i++) {
		if (strcmp(mime_table[i].ext, ext) != 0)
			continue;
		if (strcmp(mime_extension(mime_table[i].type), ext) == 0)
			return mime_table[i].type;
		/* "image/jpeg" itself gives ".jpe"; any other case gives the table's */
		snprintf(upper, sizeof(upper), "%s", mime_table[i].type);
		upper[0] = (char)(upper[0] - 'a' + 'A');
		if (strcmp(mime_extension(upper), ext) == 0)
			return upper;
	}
	return NULL;
}

static void check_forward_imageattach(enum layout_shape shape, const char *prefix,
				      const struct image_attrs *a, const char *phys)
{
	char pre[1100], id[1100], w[1100], h[1100], want[4400];
	const char *ext = mime_extension(a->mimetype);

	ia_prefix(prefix, pre, sizeof(pre));
	if (!all_digits(a->object_id))
		CHECK(uuid_decimal(a->object_id, id), "accepted id \"%s\"", a->object_id);
	else
		normalise_int(a->object_id, id, sizeof(id));
	normalise_int(a->width, w, sizeof(w));
	normalise_int(a->height, h, sizeof(h));
	if (ext == NULL)
		ext = "None";
	if (shape == LAYOUT_SHAPE_OBJECT) {
		snprintf(want, sizeof(want), "%s%s/%s/%sx%s%s", pre, a->object_type, id, w, h, ext);
		CHECK(strcmp(phys, want) == 0, "S3 shape \"%s\", expected \"%s\"", phys, want);
		return;
	}
	/* fs: the buckets against native floor arithmetic where the id fits */
	if (strlen(id) <= 18) {
		long long v = strtoll(id, NULL, 10), r = v % 1000, q = v / 1000;

		if (r < 0) {
			r += 1000;
			q -= 1;
		}
		snprintf(want, sizeof(want), "%s%s/%lld/%lld/%s.%sx%s%s", pre, a->object_type, r, q,
			 id, w, h, ext);
		CHECK(strcmp(phys, want) == 0, "fs shape \"%s\", expected \"%s\"", phys, want);
	} else {
		snprintf(want, sizeof(want), "/%s.%sx%s%s", id, w, h, ext);
		CHECK(strlen(phys) > strlen(want) &&
			  strcmp(phys + strlen(phys) - strlen(want), want) == 0,
		      "fs shape \"%s\" does not end in \"%s\"", phys, want);
	}
}

/* path -> key -> path, for any physical key layout_unkey() accepts. */
static void check_unkey(enum layout_kind kind, enum layout_shape shape, const char *prefix,
			const char *phys, bool must_accept, const struct image_attrs *from)
{
	struct layout_parts parts;
	struct err e;
	struct buf again = BUF_INIT;
	struct image_attrs a;
	bool ok;

	err_clear(&e);
	ok = layout_unkey(kind, shape, prefix, phys, &parts, &e);
	if (!ok) {
		CHECK(!must_accept, "layout_unkey refused what layout_key made: %s", e.msg);
		CHECK(e.code == ERR_INVALID && fuzz_printable(e.msg), "unkey message \"%s\"",
		      e.msg);
		return;
	}
	if (kind == LAYOUT_PLAIN) {
		CHECK(parts.logical_key != NULL, "no logical key");
		if (from == NULL && must_accept)
			; /* the caller compares */
		ok = layout_key(kind, shape, prefix, parts.logical_key, NULL, &again, &e);
	} else {
		CHECK(parts.object_type && parts.object_id && parts.width && parts.height &&
			  parts.ext,
		      "imageattach parts missing");
		if (from) {
			char id[1100], w[1100], h[1100];

			if (!all_digits(from->object_id))
				CHECK(uuid_decimal(from->object_id, id), "uuid");
			else
				normalise_int(from->object_id, id, sizeof(id));
			normalise_int(from->width, w, sizeof(w));
			normalise_int(from->height, h, sizeof(h));
			CHECK(strcmp(parts.object_type, from->object_type) == 0 &&
				  strcmp(parts.object_id, id) == 0 && strcmp(parts.width, w) == 0 &&
				  strcmp(parts.height, h) == 0,
			      "key -> path -> key: \"%s\" gave %s/%s/%s/%s", phys,
			      parts.object_type, parts.object_id, parts.width, parts.height);
		}
		a.object_type = parts.object_type;
		a.object_id = parts.object_id;
		a.width = parts.width;
		a.height = parts.height;
		a.mimetype = mime_for_ext(parts.ext);
		CHECK(a.mimetype != NULL, "unkey accepted extension \"%s\"", parts.ext);
		ok = layout_key(kind, shape, prefix, NULL, &a, &again, &e);
	}
	CHECK(ok, "path -> key -> path: layout_key refused what layout_unkey gave for \"%s\": %s",
	      phys, e.msg);
	CHECK(strcmp(buf_str(&again), phys) == 0, "path -> key -> path: \"%s\" became \"%s\"", phys,
	      buf_str(&again));
	buf_free(&again);
	layout_parts_free(&parts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *f[NFIELDS] = {0};
	char *text;
	size_t nf = 0, pos = 0;
	enum layout_kind kind;
	enum layout_shape shape;
	struct image_attrs a;
	struct buf out = BUF_INIT, out2 = BUF_INIT;
	struct err e, e2;
	bool ok, ok2;

	if (size < 1 || size > 8192)
		return 0;
	kind = data[0] & 1 ? LAYOUT_IMAGEATTACH : LAYOUT_PLAIN;
	shape = data[0] & 2 ? LAYOUT_SHAPE_OBJECT : LAYOUT_SHAPE_FS;
	text = fuzz_strndup(data + 1, size - 1);
	while (nf < NFIELDS && pos <= size - 1) {
		f[nf++] = text + pos;
		pos += strlen(text + pos) + 1;
	}

	if (data[0] & 4) {
		if (f[1])
			check_unkey(kind, shape, f[0], f[1], false, NULL);
		free(text);
		return 0;
	}

	a = (struct image_attrs){f[2], f[3], f[4], f[5], f[6]};
	buf_puts(&out, "before/");
	buf_puts(&out2, "before/");
	err_clear(&e);
	err_clear(&e2);
	ok = layout_key(kind, shape, f[0], f[1], &a, &out, &e);
	ok2 = layout_key(kind, shape, f[0], f[1], &a, &out2, &e2);
	CHECK(ok == ok2 && strcmp(buf_str(&out), buf_str(&out2)) == 0 && strcmp(e.msg, e2.msg) == 0,
	      "layout_key is not deterministic");
	CHECK(!out.oom, "out of memory");
	CHECK(strncmp(buf_str(&out), "before/", 7) == 0, "layout_key changed what out held");
	if (!ok) {
		CHECK(out.len == 7, "a failed layout_key left %zu bytes in out", out.len - 7);
		CHECK(e.code == ERR_INVALID, "failed with %s: %s", err_code_name(e.code), e.msg);
		CHECK(fuzz_printable(e.msg), "message has raw bytes: %s", e.msg);
	} else {
		const char *phys = out.p + 7;
		struct err v;

		CHECK(key_validate(phys, out.len - 7, &v), "physical key \"%s\" is invalid: %s",
		      phys, v.msg);
		check_confined(phys);
		if (kind == LAYOUT_PLAIN) {
			size_t pl = f[0] ? strlen(f[0]) : 0;

			CHECK(strncmp(phys, f[0] ? f[0] : "", pl) == 0 &&
				  strcmp(phys + pl, f[1]) == 0,
			      "plain: \"%s\" is not prefix + key", phys);
			/* the prefix may end inside a segment: unkey still splits there */
			check_unkey(kind, shape, f[0], phys, true, NULL);
			{
				struct layout_parts parts;

				CHECK(layout_unkey(kind, shape, f[0], phys, &parts, &v) &&
					  strcmp(parts.logical_key, f[1]) == 0,
				      "key -> path -> key: \"%s\" gave another key", f[1]);
				layout_parts_free(&parts);
			}
		} else {
			check_forward_imageattach(shape, f[0], &a, phys);
			check_unkey(kind, shape, f[0], phys, true, &a);
		}
	}
	buf_free(&out);
	buf_free(&out2);
	free(text);
	return 0;
}
