/*
 * sigv4.c - AWS Signature Version 4, S3 flavour (see sigv4.h).
 *
 * Design: three pure steps, each building text in a struct buf.
 *   1. canonical request: method, URI-encoded path (never normalised, never
 *      double-encoded), canonical query (encoded pairs sorted bytewise by
 *      name then value), canonical headers (lower-cased names sorted with a
 *      stable sort so that same-name values join with ',' in the order given,
 *      values trimmed and folded), signed header list, payload hash;
 *   2. string to sign: algorithm, date, scope, SHA-256 of step 1;
 *   3. signature: HMAC-SHA256 chain "AWS4"+secret -> date -> region ->
 *      service -> "aws4_request", then HMAC of step 2 with the last key.
 * Input that cannot be signed safely (CR/LF or control bytes in a header,
 * a path not starting with '/', a malformed date) is refused with
 * ERR_INVALID rather than signed into a request that would be rejected or,
 * worse, smuggle a header.  Every buffer holding key material is wiped with
 * OPENSSL_cleanse before it is released.
 */
#include "sigv4.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SHA256_LEN 32
#define ALGORITHM  "AWS4-HMAC-SHA256"

static bool is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

void sigv4_uri_encode(struct buf *out, const char *s, size_t len, bool keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_unreserved(c) || (keep_slash && c == '/')) {
			buf_putc(out, (char)c);
		} else {
			char pct[3] = {'%', digits[c >> 4], digits[c & 15]};

			buf_append(out, pct, sizeof(pct));
		}
	}
}

void sigv4_amz_date(time_t t, char out[17])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
		out[0] = '\0';
}

static bool sha256(const void *data, size_t len, unsigned char md[SHA256_LEN])
{
	unsigned int mdlen = 0;

	return EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == SHA256_LEN;
}

void sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[SHA256_LEN];

	/* An empty string on failure, which no signer step accepts as a hash. */
	if (!sha256(data, len, md)) {
		out[0] = '\0';
		return;
	}
	hex_encode(md, sizeof(md), out);
}

static bool hmac256(const void *key, size_t keylen, const void *msg, size_t msglen,
		    unsigned char md[SHA256_LEN])
{
	unsigned int mdlen = 0;

	if (keylen > INT_MAX)
		return false;
	return HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, md, &mdlen) != NULL &&
	       mdlen == SHA256_LEN;
}

/* --- validation ------------------------------------------------------- */

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static bool valid_method(const char *m)
{
	if (m == NULL || *m == '\0')
		return false;
	for (; *m; m++)
		if (*m < 'A' || *m > 'Z')
			return false;
	return true;
}

/* An HTTP header name: a token of RFC 9110 (letters, digits and
 * !#$%&'*+-.^_`|~).  Anything else could not be sent as a name, and ';'
 * would make the signed header list name other headers than those signed. */
static bool valid_header_name(const char *n)
{
	if (n == NULL || *n == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *)n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || (*p != '\0' && strchr("!#$%&'*+-.^_`|~", *p))))
			return false;
	return true;
}

/* Header values may hold any byte but CR, LF and other controls (tab is fine). */
static bool valid_header_value(const char *v)
{
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (is_ctl(*p) && *p != '\t')
			return false;
	return true;
}

/* Text that goes verbatim into a line or a scope field. */
static bool valid_token(const char *s, const char *forbidden)
{
	if (s == NULL || *s == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (is_ctl(*p) || *p == ' ' || strchr(forbidden, *p))
			return false;
	return true;
}

static bool valid_amz_date(const char *d)
{
	if (d == NULL || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
		return false;
	for (int i = 0; i < 15; i++)
		if (i != 8 && (d[i] < '0' || d[i] > '9'))
			return false;
	return true;
}

static bool valid_creds(const struct sigv4_creds *c, struct err *e)
{
	if (c == NULL || !valid_token(c->access_key_id, "/,="))
		return err_set(e, ERR_CONFIG, "sigv4: the access key id is empty or malformed");
	if (c->secret_access_key == NULL || *c->secret_access_key == '\0')
		return err_set(e, ERR_CONFIG, "sigv4: the secret access key is empty");
	if (!valid_token(c->region, "/"))
		return err_set(e, ERR_CONFIG, "sigv4: the region is empty or malformed");
	if (!valid_token(c->service, "/"))
		return err_set(e, ERR_CONFIG, "sigv4: the service name is empty or malformed");
	return true;
}

/* --- canonical request ------------------------------------------------ */

struct qpair {
	char *name;  /* encoded */
	char *value; /* encoded */
};

static int qpair_cmp(const void *a, const void *b)
{
	const struct qpair *x = a, *y = b;
	int r = strcmp(x->name, y->name);

	return r ? r : strcmp(x->value, y->value);
}

static char *encode_dup(const char *s)
{
	struct buf b = BUF_INIT;

	sigv4_uri_encode(&b, s, strlen(s), false);
	return buf_steal(&b);
}

static bool canonical_query(const struct sigv4_request *req, struct buf *out, struct err *e)
{
	struct qpair *q;
	bool okay = true;

	if (req->nquery == 0)
		return true;
	if (req->query == NULL)
		return err_set(e, ERR_INVALID, "sigv4: %zu query parameters but no array",
			       req->nquery);
	q = calloc(req->nquery, sizeof(*q));
	if (q == NULL)
		return err_set(e, ERR_NOMEM, "sigv4: out of memory sorting the query");
	for (size_t i = 0; i < req->nquery && okay; i++) {
		const char *value = req->query[i].value ? req->query[i].value : "";

		if (req->query[i].name == NULL) {
			okay = err_set(e, ERR_INVALID, "sigv4: query parameter %zu has no name", i);
			break;
		}
		q[i].name = encode_dup(req->query[i].name);
		q[i].value = encode_dup(value);
		if (q[i].name == NULL || q[i].value == NULL)
			okay = err_set(e, ERR_NOMEM, "sigv4: out of memory encoding the query");
	}
	if (okay) {
		qsort(q, req->nquery, sizeof(*q), qpair_cmp);
		for (size_t i = 0; i < req->nquery; i++) {
			if (i)
				buf_putc(out, '&');
			buf_puts(out, q[i].name);
			buf_putc(out, '=');
			buf_puts(out, q[i].value);
		}
	}
	for (size_t i = 0; i < req->nquery; i++) {
		free(q[i].name);
		free(q[i].value);
	}
	free(q);
	return okay;
}

struct hdr {
	char *name;	   /* lower-cased */
	const char *value; /* as given */
	size_t order;	   /* position in the request, for a stable sort */
};

static int hdr_cmp(const void *a, const void *b)
{
	const struct hdr *x = a, *y = b;
	int r = strcmp(x->name, y->name);

	if (r)
		return r;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Trim leading and trailing blanks and fold inner runs of blanks to one space. */
static void put_trimmed(struct buf *out, const char *v)
{
	bool pending_space = false, started = false;

	for (; *v; v++) {
		if (*v == ' ' || *v == '\t') {
			pending_space = started;
			continue;
		}
		if (pending_space)
			buf_putc(out, ' ');
		pending_space = false;
		started = true;
		buf_putc(out, *v);
	}
}

static bool canonical_headers(const struct sigv4_request *req, struct buf *out,
			      struct buf *signed_headers, struct err *e)
{
	struct hdr *h;
	size_t n = req->nheaders;
	bool okay = true;

	if (n == 0 || req->headers == NULL)
		return err_set(e, ERR_INVALID, "sigv4: no headers to sign (host is required)");
	h = calloc(n, sizeof(*h));
	if (h == NULL)
		return err_set(e, ERR_NOMEM, "sigv4: out of memory sorting the headers");
	for (size_t i = 0; i < n; i++) {
		const char *name = req->headers[i].name, *value = req->headers[i].value;

		if (!valid_header_name(name)) {
			okay = err_set(e, ERR_INVALID, "sigv4: header %zu has an invalid name", i);
			break;
		}
		if (value == NULL)
			value = "";
		if (!valid_header_value(value)) {
			okay =
			    err_set(e, ERR_INVALID,
				    "sigv4: header '%s' holds a line break or control byte", name);
			break;
		}
		h[i].name = xstrdup(name);
		if (h[i].name == NULL) {
			okay = err_set(e, ERR_NOMEM, "sigv4: out of memory copying headers");
			break;
		}
		for (char *p = h[i].name; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		h[i].value = value;
		h[i].order = i;
	}
	if (okay) {
		qsort(h, n, sizeof(*h), hdr_cmp);
		for (size_t i = 0; i < n; i++) {
			bool same = i > 0 && strcmp(h[i - 1].name, h[i].name) == 0;

			if (same) {
				buf_putc(out, ',');
			} else {
				if (i > 0) {
					buf_putc(out, '\n');
					buf_putc(signed_headers, ';');
				}
				buf_puts(out, h[i].name);
				buf_putc(out, ':');
				buf_puts(signed_headers, h[i].name);
			}
			put_trimmed(out, h[i].value);
		}
		buf_putc(out, '\n');
	}
	for (size_t i = 0; i < n; i++)
		free(h[i].name);
	free(h);
	return okay;
}

bool sigv4_canonical_request(const struct sigv4_request *req, struct buf *out,
			     struct buf *signed_headers, struct err *e)
{
	size_t path_len;

	if (req == NULL || !valid_method(req->method))
		return err_set(e, ERR_INVALID, "sigv4: the HTTP method is missing or malformed");
	if (req->path == NULL)
		return err_set(e, ERR_INVALID, "sigv4: the request has no path");
	path_len = req->path_len ? req->path_len : strlen(req->path);
	if (path_len == 0 || req->path[0] != '/')
		return err_set(e, ERR_INVALID, "sigv4: the request path does not start with '/'");
	if (memchr(req->path, '\0', path_len) != NULL)
		return err_set(e, ERR_INVALID, "sigv4: the request path holds a NUL byte");
	if (!valid_token(req->payload_hash, ""))
		return err_set(e, ERR_INVALID, "sigv4: the payload hash is missing or malformed");

	buf_reset(out);
	buf_reset(signed_headers);
	buf_puts(out, req->method);
	buf_putc(out, '\n');
	sigv4_uri_encode(out, req->path, path_len, true);
	buf_putc(out, '\n');
	if (!canonical_query(req, out, e))
		return false;
	buf_putc(out, '\n');
	if (!canonical_headers(req, out, signed_headers, e))
		return false;
	buf_putc(out, '\n');
	buf_append(out, buf_str(signed_headers), signed_headers->len);
	buf_putc(out, '\n');
	buf_puts(out, req->payload_hash);
	if (!buf_ok(out, e) || !buf_ok(signed_headers, e)) {
		err_prefix(e, "sigv4: canonical request: ");
		return false;
	}
	return true;
}

/* --- string to sign and signature ------------------------------------- */

static void put_scope(struct buf *out, const char *amz_date, const struct sigv4_creds *c)
{
	buf_append(out, amz_date, 8);
	buf_printf(out, "/%s/%s/aws4_request", c->region, c->service);
}

bool sigv4_string_to_sign(const char *amz_date, const struct sigv4_creds *c,
			  const char *canonical_request, struct buf *out, struct err *e)
{
	unsigned char md[SHA256_LEN];

	if (!valid_amz_date(amz_date))
		return err_set(e, ERR_INVALID, "sigv4: '%s' is not a YYYYMMDDTHHMMSSZ date",
			       amz_date ? amz_date : "(null)");
	if (!valid_creds(c, e))
		return false;
	if (canonical_request == NULL)
		return err_set(e, ERR_INVALID, "sigv4: no canonical request to sign");
	if (!sha256(canonical_request, strlen(canonical_request), md))
		return err_set(e, ERR_INVALID, "sigv4: SHA-256 failed in OpenSSL");
	buf_reset(out);
	buf_puts(out, ALGORITHM "\n");
	buf_puts(out, amz_date);
	buf_putc(out, '\n');
	put_scope(out, amz_date, c);
	buf_putc(out, '\n');
	buf_hex(out, md, sizeof(md));
	if (!buf_ok(out, e)) {
		err_prefix(e, "sigv4: string to sign: ");
		return false;
	}
	return true;
}

/* The hex signature of string_to_sign; every derived key is wiped. */
static bool signature(const char *amz_date, const struct sigv4_creds *c, const char *string_to_sign,
		      char hex[2 * SHA256_LEN + 1], struct err *e)
{
	size_t slen = strlen(c->secret_access_key);
	unsigned char k1[SHA256_LEN], k2[SHA256_LEN], sig[SHA256_LEN];
	char *secret;
	bool okay;

	secret = malloc(slen + 5);
	if (secret == NULL)
		return err_set(e, ERR_NOMEM, "sigv4: out of memory deriving the signing key");
	memcpy(secret, "AWS4", 4);
	memcpy(secret + 4, c->secret_access_key, slen + 1);
	/* Never in place: each step reads one key and writes the other. */
	okay = hmac256(secret, slen + 4, amz_date, 8, k1) &&
	       hmac256(k1, sizeof(k1), c->region, strlen(c->region), k2) &&
	       hmac256(k2, sizeof(k2), c->service, strlen(c->service), k1) &&
	       hmac256(k1, sizeof(k1), "aws4_request", 12, k2) &&
	       hmac256(k2, sizeof(k2), string_to_sign, strlen(string_to_sign), sig);
	OPENSSL_cleanse(secret, slen + 5);
	free(secret);
	OPENSSL_cleanse(k1, sizeof(k1));
	OPENSSL_cleanse(k2, sizeof(k2));
	if (!okay) {
		OPENSSL_cleanse(sig, sizeof(sig));
		return err_set(e, ERR_INVALID, "sigv4: HMAC-SHA256 failed in OpenSSL");
	}
	hex_encode(sig, sizeof(sig), hex);
	OPENSSL_cleanse(sig, sizeof(sig));
	return true;
}

bool sigv4_authorization(const struct sigv4_request *req, const struct sigv4_creds *c,
			 const char *amz_date, struct buf *out, struct err *e)
{
	struct buf canon = BUF_INIT, sh = BUF_INIT, sts = BUF_INIT;
	char sig[2 * SHA256_LEN + 1];
	bool okay;

	okay = sigv4_canonical_request(req, &canon, &sh, e) &&
	       sigv4_string_to_sign(amz_date, c, buf_str(&canon), &sts, e) &&
	       signature(amz_date, c, buf_str(&sts), sig, e);
	if (okay) {
		buf_reset(out);
		buf_printf(out, ALGORITHM " Credential=%s/", c->access_key_id);
		put_scope(out, amz_date, c);
		buf_printf(out, ", SignedHeaders=%s, Signature=%s", buf_str(&sh), sig);
		okay = buf_ok(out, e);
	}
	buf_free(&canon);
	buf_free(&sh);
	buf_free(&sts);
	return okay;
}
