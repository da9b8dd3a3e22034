/*
 * key.c - validation and safe display of logical image keys.
 *
 * key_validate() makes one pass over the bytes with an explicit length (so
 * an embedded NUL is seen, not silently ending the key): a hand-written
 * UTF-8 decoder that rejects what RFC 3629 forbids (stray continuation
 * bytes, overlong forms, surrogates, code points above U+10FFFF, truncated
 * sequences) and the control characters C0, DEL and C1, while a segment
 * tracker rejects a leading '/', empty segments ("a//b", "a/"), "." and
 * "..".  It stops at the first problem and reports its byte offset.
 *
 * A segment with '%' or '\' gets a second look (hidden_traversal()), for
 * the consumers that decode or translate a key before using it as a path:
 * an HTTP server or CDN serving public URLs, a proxy in front of an S3
 * server, a Windows client of a mirror.  The segment is percent-decoded
 * again and again until nothing changes ("%252e" -> "%2e" -> "."); if any
 * form, cut at '/' and '\', has a "." or ".." piece, or a decoding yields a
 * NUL, a control character or an overlong UTF-8 form (the "%c0%ae" trick),
 * the key is refused.  Literal '%' and '\' stay allowed: "100%.jpg",
 * "a%20b", "a%2Fb" and "back\slash" are keys like any other.
 *
 * key_escape() renders any byte string in printable ASCII for messages and
 * logs; the escaped form never contains a newline, a quote or a control
 * byte, so a hostile key cannot forge log lines or break out of quotes.
 */
#include "key.h"

#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* How much of a hostile key an error message quotes (escaped). */
#define KEY_QUOTE_MAX 96

static size_t escape_width(unsigned char c)
{
	if (c == '\\' || c == '"')
		return 2;
	if (c < 0x20 || c >= 0x7f)
		return 4;
	return 1;
}

static size_t escape_one(unsigned char c, char *out)
{
	static const char hex[] = "0123456789abcdef";

	if (c == '\\' || c == '"') {
		out[0] = '\\';
		out[1] = (char)c;
		return 2;
	}
	if (c < 0x20 || c >= 0x7f) {
		out[0] = '\\';
		out[1] = 'x';
		out[2] = hex[c >> 4];
		out[3] = hex[c & 15];
		return 4;
	}
	out[0] = (char)c;
	return 1;
}

void key_escape(const char *key, size_t len, char *out, size_t out_size)
{
	const unsigned char *k = (const unsigned char *)key;
	size_t total = 0, limit, pos = 0;

	if (out == NULL || out_size == 0)
		return;
	if (key == NULL)
		len = 0;
	for (size_t i = 0; i < len && total < out_size; i++)
		total += escape_width(k[i]);
	if (total < out_size) {
		/* Everything fits. */
		for (size_t i = 0; i < len; i++)
			pos += escape_one(k[i], out + pos);
		out[pos] = '\0';
		return;
	}
	/* Cut: whole escapes only, then "..." as far as room allows. */
	limit = out_size > 4 ? out_size - 4 : 0;
	for (size_t i = 0; i < len && pos + escape_width(k[i]) <= limit; i++)
		pos += escape_one(k[i], out + pos);
	for (int d = 0; d < 3 && pos + 1 < out_size; d++)
		out[pos++] = '.';
	out[pos] = '\0';
}

static bool key_fail(struct err *e, const char *key, size_t len, const char *fmt, ...) PRINTF(4, 5);

static bool key_fail(struct err *e, const char *key, size_t len, const char *fmt, ...)
{
	char esc[KEY_QUOTE_MAX], what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	key_escape(key, len, esc, sizeof(esc));
	return err_set(e, ERR_INVALID, "invalid key \"%s\": %s", esc, what);
}

/* A "." or ".." piece between '/' or '\' separators in s[0..n). */
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

/*
 * The segment s[0..n) as a decoding consumer may see it (see the top of the
 * file).  Returns NULL when it is harmless, else what is wrong with it.
 * Each round shortens the text by at least two bytes, so this ends.
 */
static const char *hidden_traversal(const unsigned char *s, size_t n)
{
	unsigned char cur[KEY_MAX], next[KEY_MAX];
	bool decoded = false;

	if (memchr(s, '%', n) == NULL && memchr(s, '\\', n) == NULL)
		return NULL;
	memcpy(cur, s, n);
	for (;;) {
		size_t m = 0;
		bool changed = false;

		if (has_dot_piece(cur, n))
			return decoded ? "percent-encoded '.' or '..' path segment"
				       : "'.' or '..' path segment with '\\' as a separator";
		for (size_t i = 0; i < n; i++) {
			int hi, lo;

			if (cur[i] == '%' && i + 2 < n && (hi = hex_value((char)cur[i + 1])) >= 0 &&
			    (lo = hex_value((char)cur[i + 2])) >= 0) {
				unsigned char c = (unsigned char)(hi << 4 | lo);

				if (c < 0x20 || c == 0x7f)
					return "percent-encoded NUL or control character";
				next[m++] = c;
				i += 2;
				changed = true;
			} else {
				next[m++] = cur[i];
			}
		}
		if (!changed)
			return NULL;
		/* Valid UTF-8 never has these, so only a decoding made them. */
		for (size_t i = 0; i < m; i++)
			if (next[i] == 0xc0 || next[i] == 0xc1 ||
			    (i + 1 < m && next[i] == 0xe0 && next[i + 1] >= 0x80 &&
			     next[i + 1] < 0xa0) ||
			    (i + 1 < m && next[i] == 0xf0 && next[i + 1] >= 0x80 &&
			     next[i + 1] < 0x90))
				return "percent-encoded overlong UTF-8";
		decoded = true;
		memcpy(cur, next, m);
		n = m;
	}
}

static bool is_cont(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/*
 * Decode one UTF-8 character starting at k[i] (k[i] >= 0x80).  On success
 * stores the code point and the sequence length; on failure stores a
 * description of the problem and the offset of the offending byte.
 */
static bool utf8_decode(const unsigned char *k, size_t len, size_t i, uint32_t *cp, size_t *n,
			const char **why, size_t *where)
{
	unsigned char c = k[i];
	uint32_t v, min;
	size_t need;

	*where = i;
	if (c < 0xc0) {
		*why = "unexpected UTF-8 continuation byte";
		return false;
	}
	if (c < 0xe0) {
		need = 1;
		v = c & 0x1f;
		min = 0x80;
	} else if (c < 0xf0) {
		need = 2;
		v = c & 0x0f;
		min = 0x800;
	} else if (c < 0xf8) {
		need = 3;
		v = c & 0x07;
		min = 0x10000;
	} else {
		*why = "invalid UTF-8 lead byte";
		return false;
	}
	for (size_t j = 1; j <= need; j++) {
		if (i + j >= len) {
			*why = "truncated UTF-8 sequence (the key ends inside it)";
			return false;
		}
		if (!is_cont(k[i + j])) {
			*why = "truncated UTF-8 sequence (missing continuation byte)";
			*where = i + j;
			return false;
		}
		v = (v << 6) | (k[i + j] & 0x3f);
	}
	if (v < min) {
		*why = "overlong UTF-8 encoding";
		return false;
	}
	if (v >= 0xd800 && v <= 0xdfff) {
		*why = "UTF-8 encoded surrogate (U+D800..U+DFFF)";
		return false;
	}
	if (v > 0x10ffff) {
		*why = "UTF-8 code point above U+10FFFF";
		return false;
	}
	*cp = v;
	*n = need + 1;
	return true;
}

bool key_validate(const char *key, size_t len, struct err *e)
{
	const unsigned char *k = (const unsigned char *)key;
	size_t seg = 0; /* offset where the current segment starts */
	size_t i = 0;
	const char *why;

	if (key == NULL)
		return err_set(e, ERR_INVALID, "invalid key: missing (NULL)");
	if (len == 0)
		return err_set(e, ERR_INVALID, "invalid key: empty");
	if (len > KEY_MAX)
		return key_fail(e, key, len, "%zu bytes long, more than the %d allowed", len,
				KEY_MAX);
	if (k[0] == '/')
		return key_fail(e, key, len, "starts with '/' at byte 0 (keys are relative)");
	while (i <= len) {
		if (i == len || k[i] == '/') {
			size_t n = i - seg;

			if (n == 0)
				return key_fail(e, key, len, "empty path segment at byte %zu%s", i,
						i == len ? " (trailing '/')" : " ('//')");
			if (n == 1 && k[seg] == '.')
				return key_fail(e, key, len, "'.' path segment at byte %zu", seg);
			if (n == 2 && k[seg] == '.' && k[seg + 1] == '.')
				return key_fail(e, key, len, "'..' path segment at byte %zu", seg);
			if ((why = hidden_traversal(k + seg, n)) != NULL)
				return key_fail(e, key, len, "%s at byte %zu", why, seg);
			if (i == len)
				break;
			seg = ++i;
			continue;
		}
		if (k[i] < 0x80) {
			if (k[i] == 0)
				return key_fail(e, key, len, "NUL byte at byte %zu", i);
			if (k[i] < 0x20 || k[i] == 0x7f)
				return key_fail(e, key, len, "control character 0x%02X at byte %zu",
						k[i], i);
			i++;
		} else {
			size_t n, where;
			uint32_t cp;

			if (!utf8_decode(k, len, i, &cp, &n, &why, &where))
				return key_fail(e, key, len, "%s at byte %zu", why, where);
			if (cp <= 0x9f)
				return key_fail(e, key, len,
						"C1 control character U+%04X at byte %zu",
						(unsigned)cp, i);
			i += n;
		}
	}
	return true;
}
