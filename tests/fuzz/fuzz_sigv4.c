/*
 * fuzz_sigv4.c - the SigV4 canonical request (and the signature on top) for
 * any method, path, query and headers.
 *
 * Input: lines.  The first is the method, the second the path (its bytes
 * as they are, NUL included: the length is passed).  Every other line is a
 * query parameter "?name=value" (no '=': a name with an empty value), a
 * header "name:value", or, without either, a header with no value.
 *
 * Invariants, for every request the signer accepts:
 * - the canonical request is: method, the path encoded, the query, one line
 *   per distinct header name, an empty line, the signed header list, the
 *   payload hash: 6 + (distinct names) lines, nothing else;
 * - the path line uses only unreserved characters, '/' and %XX (upper-case
 *   hex), and decodes to the path exactly;
 * - the query line is name=value pairs, each decoding to one given pair,
 *   as many as given, sorted;
 * - header lines are sorted, lower case, named as the signed header list
 *   names them (a ';'-separated list that splits back into those names),
 *   and hold no control byte;
 * - the same request twice gives the same text; the headers given in
 *   another order (same-name headers keeping theirs) give the same text;
 * - the Authorization value is well formed, the same twice, and its
 *   signature is 64 lower-case hex digits.
 * A refused request gets ERR_INVALID (never a crash) and a message without
 * control bytes.
 */
#include "fuzz.h"

#include <ctype.h>

#include "buf.h"
#include "sigv4.h"

#define MAXP 64
#define AUTH_HEAD                                                                                  \
	"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, "             \
	"SignedHeaders="

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1; /* lower case is not canonical */
}

/* Decode s[0..n) (unreserved, keep, %XX upper case only) into out; false
 * if it is not in canonical encoded form. */
static bool decode_canonical(const char *s, size_t n, bool keep_slash, struct buf *out)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= n || (hi = hexval(s[i + 1])) < 0 ||
			    (lo = hexval(s[i + 2])) < 0)
				return false;
			c = (unsigned char)(hi << 4 | lo);
			/* what could have stayed itself must have */
			if (isalnum(c) || strchr("-._~", c) || (keep_slash && c == '/'))
				return false;
			buf_putc(out, (char)c);
			i += 2;
		} else if (isalnum(c) || strchr("-._~", c) || (keep_slash && c == '/')) {
			buf_putc(out, (char)c);
		} else {
			return false;
		}
	}
	return true;
}

static char *lower_dup(const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		abort();
	for (char *p = d; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return d;
}

/* Split at '\n' in place; returns the number of lines. */
static size_t split_lines(char *s, size_t n, char **line, size_t *len, size_t max)
{
	size_t k = 0, start = 0;

	for (size_t i = 0; i <= n && k < max; i++)
		if (i == n || s[i] == '\n') {
			line[k] = s + start;
			len[k] = i - start;
			if (i < n)
				s[i] = '\0';
			k++;
			start = i + 1;
		}
	return k;
}

static void check_canonical(const struct sigv4_request *req, const char *canon, const char *sh)
{
	char *copy = strdup(canon), *line[MAXP * 2 + 8];
	size_t len[MAXP * 2 + 8], nl, ndistinct = 0;
	char *names[MAXP];
	struct buf b = BUF_INIT;

	if (copy == NULL)
		abort();
	/* distinct header names, lower case */
	for (size_t i = 0; i < req->nheaders; i++) {
		char *l = lower_dup(req->headers[i].name);
		bool seen = false;

		for (size_t j = 0; j < ndistinct; j++)
			seen = seen || strcmp(names[j], l) == 0;
		if (seen)
			free(l);
		else
			names[ndistinct++] = l;
	}
	for (const char *p = canon; *p; p++)
		CHECK(*p == '\n' || !((unsigned char)*p < 0x20 || *p == 0x7f),
		      "control byte 0x%02x in the canonical request", *p);
	nl = split_lines(copy, strlen(copy), line, len, sizeof(line) / sizeof(line[0]));
	CHECK(nl == 6 + ndistinct, "%zu lines for %zu distinct headers", nl, ndistinct);
	CHECK(strcmp(line[0], req->method) == 0, "method line \"%s\"", line[0]);

	CHECK(decode_canonical(line[1], len[1], true, &b), "path line \"%s\" is not canonical",
	      line[1]);
	CHECK(b.len == (req->path_len ? req->path_len : strlen(req->path)) &&
		  memcmp(buf_str(&b), req->path, b.len) == 0,
	      "path line \"%s\" does not decode to the path", line[1]);

	/* query: pairs, sorted, each one of those given */
	{
		size_t npairs = 0;
		const char *prev = NULL;
		size_t prevlen = 0;

		for (const char *q = line[2]; len[2] > 0 && q <= line[2] + len[2];) {
			size_t plen = strcspn(q, "&");
			const char *eq = memchr(q, '=', plen);
			struct buf nm = BUF_INIT, vl = BUF_INIT;
			bool found = false;

			CHECK(eq != NULL, "query pair without '=' in \"%s\"", line[2]);
			CHECK(decode_canonical(q, (size_t)(eq - q), false, &nm) &&
				  decode_canonical(eq + 1, plen - (size_t)(eq - q) - 1, false, &vl),
			      "query \"%s\" is not canonical", line[2]);
			for (size_t i = 0; i < req->nquery && !found; i++)
				found = strcmp(req->query[i].name, buf_str(&nm)) == 0 &&
					strcmp(req->query[i].value, buf_str(&vl)) == 0 &&
					strlen(req->query[i].name) == nm.len &&
					strlen(req->query[i].value) == vl.len;
			CHECK(found, "query pair \"%.*s\" was not given", (int)plen, q);
			if (prev) {
				/* sorted by encoded name then value: byte order of "name=" parts */
				const char *peq = memchr(prev, '=', prevlen);
				size_t pn = (size_t)(peq - prev), cn = (size_t)(eq - q);
				int c = memcmp(prev, q, pn < cn ? pn : cn);

				if (c == 0 && pn != cn)
					c = pn < cn ? -1 : 1;
				if (c == 0) {
					size_t pv = prevlen - pn - 1, cv = plen - cn - 1;

					c = memcmp(peq + 1, eq + 1, pv < cv ? pv : cv);
					if (c == 0)
						c = pv < cv ? -1 : pv > cv;
				}
				CHECK(c <= 0, "query not sorted: \"%s\"", line[2]);
			}
			prev = q;
			prevlen = plen;
			npairs++;
			buf_free(&nm);
			buf_free(&vl);
			q += plen + 1;
		}
		CHECK(npairs == req->nquery, "%zu query pairs for %zu given", npairs, req->nquery);
	}

	/* headers: sorted, named as the signed header list says */
	{
		char *shc = strdup(sh), *tok, *save = NULL;
		const char *prev = NULL;
		size_t k = 0;

		if (shc == NULL)
			abort();
		for (tok = strtok_r(shc, ";", &save); tok; tok = strtok_r(NULL, ";", &save), k++) {
			const char *h = line[3 + k];
			size_t tl = strlen(tok);
			bool given = false;

			CHECK(k < ndistinct, "more signed headers than distinct names");
			CHECK(strncmp(h, tok, tl) == 0 && h[tl] == ':',
			      "header line \"%s\" is not named %s", h, tok);
			for (size_t j = 0; j < ndistinct; j++)
				given = given || strcmp(names[j], tok) == 0;
			CHECK(given, "signed header \"%s\" was not given", tok);
			CHECK(prev == NULL || strcmp(prev, tok) < 0, "headers not sorted: %s", sh);
			prev = tok;
		}
		CHECK(k == ndistinct, "signed headers \"%s\" name %zu headers, %zu given", sh, k,
		      ndistinct);
		free(shc);
	}
	CHECK(len[3 + ndistinct] == 0, "no empty line after the headers");
	CHECK(strcmp(line[4 + ndistinct], sh) == 0, "signed header line");
	CHECK(strcmp(line[5 + ndistinct], req->payload_hash) == 0, "payload hash line");
	for (size_t j = 0; j < ndistinct; j++)
		free(names[j]);
	buf_free(&b);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text, *line[MAXP + 2];
	size_t len[MAXP + 2], nl;
	struct sigv4_pair q[MAXP], h[MAXP], h2[MAXP];
	struct sigv4_request req = {0};
	struct buf canon = BUF_INIT, sh = BUF_INIT, canon2 = BUF_INIT, sh2 = BUF_INIT;
	struct buf auth = BUF_INIT, auth2 = BUF_INIT;
	struct sigv4_creds creds = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
				    "us-east-1", "s3"};
	struct err e, e2;
	bool ok;

	if (size > 4096)
		return 0;
	text = fuzz_strndup(data, size);
	nl = split_lines(text, size, line, len, MAXP + 2);
	if (nl < 2) {
		free(text);
		return 0;
	}
	req.method = line[0];
	req.path = line[1];
	req.path_len = len[1];
	req.query = q;
	req.headers = h;
	req.payload_hash = SIGV4_UNSIGNED_PAYLOAD;
	for (size_t i = 2; i < nl; i++) {
		char *l = line[i], *sep;

		if (l[0] == '?') {
			sep = strchr(l + 1, '=');
			if (sep)
				*sep++ = '\0';
			q[req.nquery].name = l + 1;
			q[req.nquery].value = sep ? sep : "";
			req.nquery++;
		} else {
			sep = strchr(l, ':');
			if (sep)
				*sep++ = '\0';
			h[req.nheaders].name = l;
			h[req.nheaders].value = sep ? sep : "";
			req.nheaders++;
		}
	}

	err_clear(&e);
	ok = sigv4_canonical_request(&req, &canon, &sh, &e);
	CHECK(!canon.oom && !sh.oom, "out of memory");
	if (!ok) {
		CHECK(e.code == ERR_INVALID, "refused with %s: %s", err_code_name(e.code), e.msg);
		for (const char *p = e.msg; *p; p++)
			CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "control byte in \"%s\"",
			      e.msg);
		goto out;
	}
	CHECK(sigv4_canonical_request(&req, &canon2, &sh2, &e2), "accepted once only");
	CHECK(strcmp(buf_str(&canon), buf_str(&canon2)) == 0 &&
		  strcmp(buf_str(&sh), buf_str(&sh2)) == 0,
	      "not deterministic");
	check_canonical(&req, buf_str(&canon), buf_str(&sh));

	/* Reversed header order; headers of one name keep theirs.  A stable
	 * reversal: walk distinct names backwards, each name's headers forwards. */
	{
		size_t k = 0;
		bool used[MAXP] = {0};

		for (size_t i = req.nheaders; i-- > 0;) {
			if (used[i])
				continue;
			for (size_t j = 0; j < req.nheaders; j++)
				if (!used[j] && strcasecmp(h[j].name, h[i].name) == 0) {
					used[j] = true;
					h2[k++] = h[j];
				}
		}
		req.headers = h2;
		CHECK(sigv4_canonical_request(&req, &canon2, &sh2, &e2) &&
			  strcmp(buf_str(&canon), buf_str(&canon2)) == 0,
		      "header order changed the canonical request");
		req.headers = h;
	}

	err_clear(&e);
	if (sigv4_authorization(&req, &creds, "20150830T123600Z", &auth, &e)) {
		const char *sig;

		CHECK(sigv4_authorization(&req, &creds, "20150830T123600Z", &auth2, &e2) &&
			  strcmp(buf_str(&auth), buf_str(&auth2)) == 0,
		      "authorization not deterministic");
		CHECK(strncmp(buf_str(&auth), AUTH_HEAD, strlen(AUTH_HEAD)) == 0,
		      "authorization \"%s\"", buf_str(&auth));
		sig = strstr(buf_str(&auth), ", Signature=");
		CHECK(sig && strlen(sig + 12) == 64 && strspn(sig + 12, "0123456789abcdef") == 64,
		      "signature in \"%s\"", buf_str(&auth));
		CHECK((size_t)(sig - buf_str(&auth)) == strlen(AUTH_HEAD) + sh.len &&
			  memcmp(buf_str(&auth) + strlen(AUTH_HEAD), buf_str(&sh), sh.len) == 0,
		      "SignedHeaders differ from the canonical request's");
	} else {
		CHECK(false, "canonical request accepted but not signed: %s", e.msg);
	}
out:
	buf_free(&canon);
	buf_free(&sh);
	buf_free(&canon2);
	buf_free(&sh2);
	buf_free(&auth);
	buf_free(&auth2);
	free(text);
	return 0;
}
