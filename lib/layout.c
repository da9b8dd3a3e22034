/*
 * layout.c - logical key / image attributes -> a store's physical key.
 *
 * LAYOUT_PLAIN is prefix + logical key.  LAYOUT_IMAGEATTACH reproduces
 * SQLAlchemy-ImageAttach byte for byte:
 *
 *   stores/fs.py  BaseFileSystemStore.get_path():
 *     object_type / str(id % 1000) / str(id // 1000) / '{id}.{w}x{h}{ext}'
 *   stores/s3.py  S3Store.get_key():
 *     '{object_type}/{id}/{w}x{h}{ext}', '{prefix}/' in front if prefix
 *     (the constructor strips blanks and trailing '/' from the prefix)
 *   ext: stores/fs.py guess_extension(): '.jpe' if mimetype == 'image/jpeg'
 *     (exact comparison), else mimetypes.guess_extension(mimetype), which
 *     str.format() renders as "None" when it returns None.
 *
 * Ids are Python ints of any size, so no fixed-width arithmetic is used on
 * them: a decimal id stays a digit string, and since 1000 = 10^3,
 * id // 1000 and id % 1000 are the string without / with only its last
 * three digits, adjusted to floor semantics for negative ids (-5 % 1000 ==
 * 995, -5 // 1000 == -1) with a decimal increment.  A UUID id (entity.py
 * uses uuid.UUID.int) is converted from 128-bit hex to decimal by repeated
 * division of four 32-bit limbs.  Every attribute is checked before the
 * key is built, and the result must pass key_validate(); on any failure
 * `out` is left as it was.
 *
 * mime_extension() is a bsearch() in the table generated from Python by
 * tests/tools/gen-mimetypes.py (mimetypes.c).
 */
#include "layout.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"
#include "mimetypes.h"

/* An arbitrary-precision integer as normalised decimal text. */
struct decnum {
	bool neg;	    /* never set for zero */
	const char *digits; /* no leading zeros; "0" for zero */
	size_t n;
	char own[48]; /* storage for digits computed here (UUIDs) */
};

bool layout_parse(const char *name, enum layout_kind *out)
{
	if (name == NULL)
		return false;
	if (strcmp(name, "plain") == 0) {
		*out = LAYOUT_PLAIN;
		return true;
	}
	if (strcmp(name, "imageattach") == 0) {
		*out = LAYOUT_IMAGEATTACH;
		return true;
	}
	return false;
}

const char *layout_name(enum layout_kind kind)
{
	switch (kind) {
	case LAYOUT_PLAIN:
		return "plain";
	case LAYOUT_IMAGEATTACH:
		return "imageattach";
	}
	return "unknown";
}

static int cmp_mime(const void *key, const void *elem)
{
	return strcmp(key, ((const struct mime_ext *)elem)->type);
}

const char *mime_extension(const char *mimetype)
{
	char lower[128];
	const struct mime_ext *hit;
	size_t n = 0;

	if (mimetype == NULL)
		return NULL;
	/* ImageAttach compares before any lower-casing: "IMAGE/JPEG" -> ".jpg". */
	if (strcmp(mimetype, "image/jpeg") == 0)
		return ".jpe";
	/* Python's str.lower().  The only non-ASCII character it lowers to
	 * ASCII is U+212A KELVIN SIGN (-> 'k'); anything else non-ASCII
	 * cannot match the all-ASCII table, so it is copied unchanged. */
	for (const unsigned char *p = (const unsigned char *)mimetype; *p; p++) {
		if (n + 1 >= sizeof(lower))
			return NULL; /* longer than any type in the table */
		if (p[0] == 0xe2 && p[1] == 0x84 && p[2] == 0xaa) {
			lower[n++] = 'k';
			p += 2;
		} else if (*p >= 'A' && *p <= 'Z') {
			lower[n++] = (char)(*p - 'A' + 'a');
		} else {
			lower[n++] = (char)*p;
		}
	}
	lower[n] = '\0';
	hit = bsearch(lower, mime_table, mime_table_len, sizeof(mime_table[0]), cmp_mime);
	return hit ? hit->ext : NULL;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool bad_attr(struct err *e, const char *name, const char *value, const char *what)
{
	char esc[96];

	key_escape(value, strlen(value), esc, sizeof(esc));
	return err_set(e, ERR_INVALID, "imageattach layout: attribute %s \"%s\" %s", name, esc,
		       what);
}

static bool missing_attr(struct err *e, const char *name)
{
	return err_set(e, ERR_INVALID,
		       "imageattach layout: attribute %s is missing (attrs needs object_type, "
		       "object_id, width, height and mimetype)",
		       name);
}

/* "-?[0-9]+" as Python's int() reads it and str() prints it. */
static bool parse_decimal(const char *s, struct decnum *num)
{
	const char *d = s;

	num->neg = false;
	if (*d == '-') {
		num->neg = true;
		d++;
	}
	if (*d == '\0')
		return false;
	for (const char *p = d; *p; p++)
		if (!is_digit(*p))
			return false;
	while (d[0] == '0' && d[1] != '\0')
		d++;
	num->digits = d;
	num->n = strlen(d);
	if (num->n == 1 && d[0] == '0')
		num->neg = false; /* int("-0") == 0 */
	return true;
}

/* 8-4-4-4-12 hex digits, or 32 hex digits without dashes; any case. */
static bool parse_uuid(const char *s, uint32_t w[4])
{
	size_t len = strlen(s), nib = 0;
	bool dashed = len == 36;

	if (len != 36 && len != 32)
		return false;
	memset(w, 0, 4 * sizeof(w[0]));
	for (size_t i = 0; i < len; i++) {
		int v;

		if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
			if (s[i] != '-')
				return false;
			continue;
		}
		v = hex_value(s[i]);
		if (v < 0)
			return false;
		w[nib / 8] = (w[nib / 8] << 4) | (uint32_t)v;
		nib++;
	}
	return nib == 32;
}

/* The decimal text of the 128-bit big-endian integer w (uuid.UUID.int). */
static void u128_to_decimal(uint32_t w[4], struct decnum *num)
{
	char rev[40];
	size_t n = 0;

	do {
		uint64_t rem = 0;
		bool zero = true;

		for (int j = 0; j < 4; j++) {
			uint64_t cur = (rem << 32) | w[j];

			w[j] = (uint32_t)(cur / 10);
			rem = cur % 10;
			if (w[j])
				zero = false;
		}
		rev[n++] = (char)('0' + rem);
		if (zero)
			break;
	} while (n < sizeof(rev));
	for (size_t i = 0; i < n; i++)
		num->own[i] = rev[n - 1 - i];
	num->own[n] = '\0';
	num->neg = false;
	num->digits = num->own;
	num->n = n;
}

static bool parse_int_attr(const char *name, const char *value, bool allow_uuid, struct decnum *num,
			   struct err *e)
{
	uint32_t w[4];

	if (value == NULL)
		return missing_attr(e, name);
	if (value[0] == '\0')
		return err_set(e, ERR_INVALID, "imageattach layout: attribute %s is empty", name);
	if (strlen(value) > KEY_MAX)
		return err_set(e, ERR_INVALID,
			       "imageattach layout: attribute %s is %zu bytes long; the key "
			       "could not fit in %d bytes",
			       name, strlen(value), KEY_MAX);
	/* Decimal first: an all-digit value is an integer id, even 32 digits. */
	if (parse_decimal(value, num))
		return true;
	if (allow_uuid && parse_uuid(value, w)) {
		u128_to_decimal(w, num);
		return true;
	}
	return bad_attr(e, name, value,
			allow_uuid ? "is neither a decimal integer nor a UUID"
				   : "is not a decimal integer");
}

static void put_num(struct buf *out, const struct decnum *num)
{
	if (num->neg)
		buf_putc(out, '-');
	buf_append(out, num->digits, num->n);
}

/* Decimal digits of d (n > 0, no leading zeros) plus one. */
static void put_incremented(struct buf *out, const char *d, size_t n)
{
	size_t i = n;

	while (i > 0 && d[i - 1] == '9')
		i--;
	if (i == 0)
		buf_putc(out, '1');
	else
		buf_append(out, d, i - 1);
	if (i > 0)
		buf_putc(out, (char)(d[i - 1] + 1));
	for (size_t j = i; j < n; j++)
		buf_putc(out, '0');
}

/* str(id % 1000) + "/" + str(id // 1000), Python floor semantics. */
static void put_fs_buckets(struct buf *out, const struct decnum *id)
{
	size_t qn = id->n > 3 ? id->n - 3 : 0; /* digits of |id| // 1000 */
	const char *low = id->digits + qn;     /* |id| % 1000, maybe zero-padded */
	unsigned r = 0;

	for (const char *p = low; p < id->digits + id->n; p++)
		r = r * 10 + (unsigned)(*p - '0');
	if (!id->neg) {
		buf_printf(out, "%u/", r);
		if (qn == 0)
			buf_putc(out, '0');
		else
			buf_append(out, id->digits, qn);
		return;
	}
	/* id = -m, m > 0: floor division rounds towards minus infinity. */
	if (r == 0) {
		buf_puts(out, "0/-"); /* r == 0 implies m >= 1000, so qn > 0 */
		buf_append(out, id->digits, qn);
		return;
	}
	buf_printf(out, "%u/-", 1000 - r);
	if (qn == 0)
		buf_putc(out, '1');
	else
		put_incremented(out, id->digits, qn);
}

/* Python's str.strip() (ASCII whitespace) then rstrip('/'), as S3Store does. */
static void normalise_prefix(const char *prefix, const char **start, size_t *len)
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
	*start = s;
	*len = n;
}

static bool imageattach_key(enum layout_shape shape, const char *prefix,
			    const struct image_attrs *a, struct buf *out, struct err *e)
{
	struct decnum id, w, h;
	const char *ext, *p;
	size_t plen;
	struct err sub;

	if (a == NULL)
		return err_set(e, ERR_INVALID,
			       "imageattach layout: the image has no attributes (attrs needs "
			       "object_type, object_id, width, height and mimetype)");
	if (a->object_type == NULL)
		return missing_attr(e, "object_type");
	if (a->object_type[0] == '\0')
		return err_set(e, ERR_INVALID,
			       "imageattach layout: attribute object_type is empty");
	if (strchr(a->object_type, '/') != NULL)
		return bad_attr(e, "object_type", a->object_type,
				"contains '/'; it must be a single path segment");
	if (!key_validate(a->object_type, strlen(a->object_type), &sub))
		return err_set(e, ERR_INVALID, "imageattach layout: attribute object_type: %s",
			       sub.msg);
	if (!parse_int_attr("object_id", a->object_id, true, &id, e) ||
	    !parse_int_attr("width", a->width, false, &w, e) ||
	    !parse_int_attr("height", a->height, false, &h, e))
		return false;
	if (a->mimetype == NULL)
		return missing_attr(e, "mimetype");
	ext = mime_extension(a->mimetype);
	if (ext == NULL)
		ext = "None"; /* '{3}'.format(None), ImageAttach's own quirk */

	normalise_prefix(prefix, &p, &plen);
	if (plen > 0) {
		buf_append(out, p, plen);
		buf_putc(out, '/');
	}
	buf_puts(out, a->object_type);
	buf_putc(out, '/');
	if (shape == LAYOUT_SHAPE_FS) {
		put_fs_buckets(out, &id);
		buf_putc(out, '/');
		put_num(out, &id);
		buf_putc(out, '.');
	} else {
		put_num(out, &id);
		buf_putc(out, '/');
	}
	put_num(out, &w);
	buf_putc(out, 'x');
	put_num(out, &h);
	buf_puts(out, ext);
	return true;
}

bool layout_key(enum layout_kind kind, enum layout_shape shape, const char *prefix,
		const char *logical_key, const struct image_attrs *attrs, struct buf *out,
		struct err *e)
{
	size_t start = out->len;
	bool ok;

	switch (kind) {
	case LAYOUT_PLAIN:
		if (logical_key == NULL)
			return err_set(e, ERR_INVALID, "plain layout: the logical key is missing");
		if (!key_validate(logical_key, strlen(logical_key), e))
			return false;
		if (prefix)
			buf_puts(out, prefix);
		buf_puts(out, logical_key);
		ok = true;
		break;
	case LAYOUT_IMAGEATTACH:
		ok = imageattach_key(shape, prefix, attrs, out, e);
		break;
	default:
		return err_set(e, ERR_INVALID, "unknown layout %d", (int)kind);
	}
	if (!ok)
		return false;
	if (!buf_ok(out, e))
		return false;
	/* The physical key must be as safe as a logical one (prefix included). */
	if (!key_validate(out->p + start, out->len - start, e)) {
		err_prefix(e, "%s layout: physical key: ", layout_name(kind));
		out->len = start;
		out->p[start] = '\0';
		return false;
	}
	return true;
}

/* ---- physical key -> parts ---- */

static bool unkey_fail(struct err *e, const char *physical, const char *what)
{
	char esc[160];

	key_escape(physical, strlen(physical), esc, sizeof(esc));
	return err_set(e, ERR_INVALID, "physical key \"%s\" %s", esc, what);
}

/* "-?[0-9]+" as put_num() writes it: no leading zero, no "-0".  Returns
 * the length taken from s, 0 if there is no such number there. */
static size_t span_number(const char *s)
{
	size_t n = s[0] == '-' ? 1 : 0, d = strspn(s + n, "0123456789");

	if (d == 0 || (s[n] == '0' && (d > 1 || n == 1)))
		return 0;
	return n + d;
}

static bool known_ext(const char *ext)
{
	if (strcmp(ext, "None") == 0 || strcmp(ext, ".jpe") == 0)
		return true;
	for (size_t i = 0; i < mime_table_len; i++)
		if (strcmp(mime_table[i].ext, ext) == 0)
			return true;
	return false;
}

static char *dup_n(const char *s, size_t n, bool *oom)
{
	char *d = strndup(s, n);

	if (d == NULL)
		*oom = true;
	return d;
}

void layout_parts_free(struct layout_parts *p)
{
	if (p == NULL)
		return;
	free(p->logical_key);
	free(p->object_type);
	free(p->object_id);
	free(p->width);
	free(p->height);
	free(p->ext);
	memset(p, 0, sizeof(*p));
}

static bool imageattach_unkey(enum layout_shape shape, const char *prefix, const char *physical,
			      struct layout_parts *out, struct err *e)
{
	const char *p = physical, *seg[4], *file, *f;
	size_t plen, nseg = shape == LAYOUT_SHAPE_FS ? 4 : 3, idn, wn, hn;
	const char *pre;
	bool oom = false;

	normalise_prefix(prefix, &pre, &plen);
	if (plen > 0) {
		if (strncmp(p, pre, plen) != 0 || p[plen] != '/')
			return unkey_fail(e, physical, "is not under the store's prefix");
		p += plen + 1;
	}
	for (size_t i = 0; i < nseg; i++) {
		seg[i] = p;
		p = strchr(p, '/');
		if ((p == NULL) != (i == nseg - 1))
			return unkey_fail(e, physical,
					  shape == LAYOUT_SHAPE_FS
					      ? "is not <object_type>/<id % 1000>/<id // 1000>/"
						"<id>.<W>x<H><ext>"
					      : "is not <object_type>/<id>/<W>x<H><ext>");
		if (p)
			p++;
	}
	file = seg[nseg - 1];
	if (shape == LAYOUT_SHAPE_FS) {
		struct buf b = BUF_INIT;
		struct decnum id;
		bool same;

		idn = span_number(file);
		if (idn == 0 || file[idn] != '.')
			return unkey_fail(e, physical,
					  "has no <id>. at the start of its file name");
		id.neg = file[0] == '-';
		id.digits = file + id.neg;
		id.n = idn - id.neg;
		put_fs_buckets(&b, &id);
		buf_putc(&b, '/');
		same = b.oom || (strncmp(seg[1], b.p, b.len) == 0 && seg[1] + b.len == seg[3]);
		oom = b.oom;
		buf_free(&b);
		if (!same)
			return unkey_fail(e, physical,
					  "has directories that are not <id % 1000>/<id // 1000>");
		f = file + idn + 1;
	} else {
		idn = span_number(seg[1]);
		if (idn == 0 || seg[1][idn] != '/')
			return unkey_fail(e, physical, "has no <id> after the object type");
		f = file;
	}
	wn = span_number(f);
	if (wn == 0 || f[wn] != 'x')
		return unkey_fail(e, physical, "has no <W>x in its file name");
	hn = span_number(f + wn + 1);
	if (hn == 0)
		return unkey_fail(e, physical, "has no <H> in its file name");
	if (!known_ext(f + wn + 1 + hn))
		return unkey_fail(e, physical, "ends in an extension no mimetype gives");
	out->object_type = dup_n(seg[0], (size_t)(seg[1] - 1 - seg[0]), &oom);
	out->object_id =
	    shape == LAYOUT_SHAPE_FS ? dup_n(file, idn, &oom) : dup_n(seg[1], idn, &oom);
	out->width = dup_n(f, wn, &oom);
	out->height = dup_n(f + wn + 1, hn, &oom);
	out->ext = dup_n(f + wn + 1 + hn, strlen(f + wn + 1 + hn), &oom);
	if (oom)
		return err_set(e, ERR_NOMEM, "out of memory");
	return true;
}

bool layout_unkey(enum layout_kind kind, enum layout_shape shape, const char *prefix,
		  const char *physical, struct layout_parts *out, struct err *e)
{
	struct err sub;
	size_t plen = prefix ? strlen(prefix) : 0;
	bool ok;

	memset(out, 0, sizeof(*out));
	if (physical == NULL)
		return err_set(e, ERR_INVALID, "no physical key");
	if (!key_validate(physical, strlen(physical), &sub))
		return err_set(e, ERR_INVALID, "physical key: %s", sub.msg);
	switch (kind) {
	case LAYOUT_PLAIN:
		if (strncmp(physical, prefix ? prefix : "", plen) != 0)
			return unkey_fail(e, physical, "is not under the store's prefix");
		if (!key_validate(physical + plen, strlen(physical + plen), &sub))
			return err_set(e, ERR_INVALID, "plain layout: logical key: %s", sub.msg);
		out->logical_key = strdup(physical + plen);
		ok = out->logical_key != NULL || err_set(e, ERR_NOMEM, "out of memory");
		break;
	case LAYOUT_IMAGEATTACH:
		ok = imageattach_unkey(shape, prefix, physical, out, e);
		break;
	default:
		return err_set(e, ERR_INVALID, "unknown layout %d", (int)kind);
	}
	if (!ok)
		layout_parts_free(out);
	return ok;
}
