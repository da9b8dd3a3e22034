/*
 * fuzz_key.c - key_validate() and key_escape() on any bytes.
 *
 * Invariants:
 * - key_validate() agrees with a second, independent statement of the rules
 *   of key.h (a table of well-formed UTF-8 from the Unicode standard, the
 *   segment rules, and the decoded forms a web server, a CDN or a Windows
 *   client would see), in both directions;
 * - an accepted key, joined to a store's root, can never name the root
 *   itself or anything outside it: not as it is, not percent-decoded any
 *   number of times, not with '\' read as a separator, and not as the
 *   physical key the plain layout makes of it with a prefix;
 * - a refused key gets ERR_INVALID and a printable one-line message;
 * - the same input gives the same answer and message twice;
 * - key_escape() writes printable ASCII within the size given, and
 *   un-escaping it gives back the key (or a prefix of it, then "...").
 *
 * The notification payloads imgsyncd refuses are shown through
 * key_escape() too, so this harness covers that display as well.
 */
#include "fuzz.h"

#include "buf.h"
#include "key.h"
#include "layout.h"

/* ---- the rules again, written differently ---- */

/* Length of the well-formed UTF-8 sequence at s (Unicode Table 3-7), or 0. */
static size_t wf_utf8(const unsigned char *s, size_t n)
{
	static const struct {
		unsigned char lead_lo, lead_hi, second_lo, second_hi;
		size_t len;
	} t[] = {
	    {0xc2, 0xdf, 0x80, 0xbf, 2}, {0xe0, 0xe0, 0xa0, 0xbf, 3}, {0xe1, 0xec, 0x80, 0xbf, 3},
	    {0xed, 0xed, 0x80, 0x9f, 3}, {0xee, 0xef, 0x80, 0xbf, 3}, {0xf0, 0xf0, 0x90, 0xbf, 4},
	    {0xf1, 0xf3, 0x80, 0xbf, 4}, {0xf4, 0xf4, 0x80, 0x8f, 4},
	};

	if (s[0] < 0x80)
		return 1;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		if (s[0] < t[i].lead_lo || s[0] > t[i].lead_hi)
			continue;
		if (n < t[i].len || s[1] < t[i].second_lo || s[1] > t[i].second_hi)
			return 0;
		for (size_t j = 2; j < t[i].len; j++)
			if (s[j] < 0x80 || s[j] > 0xbf)
				return 0;
		return t[i].len;
	}
	return 0;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One round of %XX decoding of the whole text; false if nothing changed. */
static bool decode_round(unsigned char *s, size_t *n, bool *ctl)
{
	size_t m = 0;
	bool changed = false;

	for (size_t i = 0; i < *n; i++) {
		if (s[i] == '%' && i + 2 < *n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			unsigned char c = (unsigned char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));

			if (c < 0x20 || c == 0x7f)
				*ctl = true;
			s[m++] = c;
			i += 2;
			changed = true;
		} else {
			s[m++] = s[i];
		}
	}
	*n = m;
	return changed;
}

/* Walk the pieces between separators from the root: false if a ".." would
 * go above the root, or (with below) if the walk ends at the root itself. */
static bool confined(const unsigned char *s, size_t n, const char *seps, bool below)
{
	long depth = 0;
	size_t start = 0;

	for (size_t i = 0; i <= n; i++) {
		size_t len;

		if (i < n && strchr(seps, s[i]) == NULL)
			continue;
		len = i - start;
		if (len == 2 && s[start] == '.' && s[start + 1] == '.') {
			if (--depth < 0)
				return false;
		} else if (len > 0 && !(len == 1 && s[start] == '.')) {
			depth++;
		}
		start = i + 1;
	}
	return !below || depth > 0;
}

static bool has_dot_piece(const unsigned char *s, size_t n)
{
	size_t start = 0;

	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '/' && s[i] != '\\')
			continue;
		if ((i - start == 1 && s[start] == '.') ||
		    (i - start == 2 && s[start] == '.' && s[start + 1] == '.'))
			return true;
		start = i + 1;
	}
	return false;
}

static bool overlong_after_decoding(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char nx = i + 1 < n ? s[i + 1] : 0;

		if (s[i] == 0xc0 || s[i] == 0xc1 || (s[i] == 0xe0 && nx >= 0x80 && nx < 0xa0) ||
		    (s[i] == 0xf0 && nx >= 0x80 && nx < 0x90))
			return true;
	}
	return false;
}

static bool reference_valid(const unsigned char *k, size_t n)
{
	unsigned char d[KEY_MAX];
	size_t start = 0, m = n;
	bool ctl = false;

	if (n == 0 || n > KEY_MAX || k[0] == '/')
		return false;
	for (size_t i = 0; i < n;) {
		size_t l = wf_utf8(k + i, n - i);

		if (l == 0 || k[i] < 0x20 || k[i] == 0x7f || (k[i] == 0xc2 && k[i + 1] < 0xa0))
			return false;
		i += l;
	}
	for (size_t i = 0; i <= n; i++) {
		if (i < n && k[i] != '/')
			continue;
		if (i == start)
			return false; /* empty segment */
		start = i + 1;
	}
	/* As decoders see it: no "." or ".." piece in any decoded form. */
	memcpy(d, k, n);
	for (int round = 0;; round++) {
		if (has_dot_piece(d, m))
			return false;
		if (!decode_round(d, &m, &ctl))
			break;
		if (ctl || overlong_after_decoding(d, m))
			return false;
	}
	return true;
}

/* ---- key_escape ---- */

/* Un-escape out; true if it reproduces k[0..n) (whole) or a prefix of it
 * followed by dots (cut). */
static void check_escape(const unsigned char *k, size_t n, size_t out_size)
{
	char *out = malloc(out_size + 1);
	size_t i = 0, pos = 0, len;

	if (out == NULL)
		abort();
	memset(out, 'Z', out_size + 1);
	key_escape((const char *)k, n, out, out_size);
	CHECK(out[out_size] == 'Z', "key_escape wrote past %zu bytes", out_size);
	len = strnlen(out, out_size);
	CHECK(len < out_size, "key_escape left no NUL within %zu bytes", out_size);
	CHECK(fuzz_printable(out), "key_escape wrote a non-printable byte");
	while (pos < len) {
		unsigned char want;

		if (out[pos] == '\\') {
			CHECK(pos + 1 < len, "dangling backslash in \"%s\"", out);
			if (out[pos + 1] == 'x') {
				CHECK(pos + 3 < len && hexval((unsigned char)out[pos + 2]) >= 0 &&
					  hexval((unsigned char)out[pos + 3]) >= 0,
				      "bad \\x escape in \"%s\"", out);
				want = (unsigned char)(hexval((unsigned char)out[pos + 2]) * 16 +
						       hexval((unsigned char)out[pos + 3]));
				pos += 4;
			} else {
				CHECK(out[pos + 1] == '\\' || out[pos + 1] == '"',
				      "unknown escape in \"%s\"", out);
				want = (unsigned char)out[pos + 1];
				pos += 2;
			}
		} else {
			CHECK(out[pos] != '"', "unescaped quote in \"%s\"", out);
			if (i == n || out[pos] != (char)k[i]) {
				/* only the "..." of a cut may differ */
				CHECK(strspn(out + pos, ".") == len - pos && len - pos <= 3,
				      "escape of %zu bytes differs at output byte %zu", n, pos);
				CHECK(i < n, "dots after the whole key");
				break;
			}
			want = k[i];
			pos++;
		}
		CHECK(i < n && want == k[i], "un-escaping gives another key at byte %zu", i);
		i++;
	}
	if (i < n)
		CHECK(len >= 1 && out[len - 1] == '.' ? true : out_size <= 1,
		      "a cut escape (%zu of %zu bytes, size %zu) does not end with dots", i, n,
		      out_size);
	if (out_size > 4 * n)
		CHECK(i == n, "escape cut although %zu bytes were room enough", out_size);
	free(out);
}

/* ---- the harness ---- */

static void check_plain_layout(const char *key)
{
	static const char *const prefixes[] = {"", "images/", "a/b-"};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		struct buf out = BUF_INIT;
		struct err e;
		bool ok;

		err_clear(&e);
		ok = layout_key(LAYOUT_PLAIN, LAYOUT_SHAPE_FS, prefixes[i], key, NULL, &out, &e);
		if (strlen(prefixes[i]) + strlen(key) > KEY_MAX) {
			CHECK(!ok && strstr(e.msg, "more than the 1024 allowed"),
			      "a physical key over %d bytes: %s", KEY_MAX, ok ? "accepted" : e.msg);
			buf_free(&out);
			continue;
		}
		CHECK(ok, "plain layout refused an accepted key: %s", e.msg);
		CHECK(strlen(prefixes[i]) + strlen(key) == out.len &&
			  strncmp(out.p, prefixes[i], strlen(prefixes[i])) == 0 &&
			  strcmp(out.p + strlen(prefixes[i]), key) == 0,
		      "plain layout is not prefix + key");
		CHECK(confined((const unsigned char *)out.p, out.len, "/", true),
		      "physical key \"%s\" leaves the root", out.p);
		buf_free(&out);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct err e, e2;
	bool ok, ref;

	err_clear(&e);
	err_clear(&e2);
	ok = key_validate((const char *)data, size, &e);
	CHECK(ok == key_validate((const char *)data, size, &e2) && strcmp(e.msg, e2.msg) == 0,
	      "key_validate is not deterministic");
	ref = reference_valid(data, size);
	CHECK(ok == ref, "key_validate says %s, the rules say %s (%s)", ok ? "valid" : "invalid",
	      ref ? "valid" : "invalid", e.msg);
	if (!ok) {
		CHECK(e.code == ERR_INVALID, "refused with code %s", err_code_name(e.code));
		CHECK(strncmp(e.msg, "invalid key", 11) == 0, "message \"%s\"", e.msg);
		CHECK(fuzz_printable(e.msg), "message has a raw control or non-ASCII byte");
		CHECK(strlen(e.msg) < 400, "message is %zu bytes long", strlen(e.msg));
	} else {
		unsigned char d[KEY_MAX];
		size_t m = size;
		bool ctl = false;
		char *key = fuzz_strndup(data, size);

		CHECK(memchr(data, 0, size) == NULL, "a key with a NUL was accepted");
		CHECK(confined(data, size, "/", true), "accepted key leaves the root as it is");
		CHECK(confined(data, size, "/\\", false), "accepted key leaves the root with '\\'");
		memcpy(d, data, size);
		while (decode_round(d, &m, &ctl)) {
			CHECK(!ctl, "accepted key decodes to a control character");
			CHECK(confined(d, m, "/\\", false),
			      "accepted key leaves the root once decoded");
			CHECK(!has_dot_piece(d, m), "accepted key decodes to a '.' or '..' piece");
		}
		check_plain_layout(key);
		free(key);
	}

	/* key_escape at a few sizes: whole, cut anywhere, degenerate. */
	check_escape(data, size, 4 * size + 1);
	check_escape(data, size, 1);
	check_escape(data, size, 2);
	check_escape(data, size, 5);
	check_escape(data, size, 96);
	if (size > 0)
		check_escape(data, size, 1 + data[0] % 64);
	return 0;
}
