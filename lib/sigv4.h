/*
 * sigv4.h - AWS Signature Version 4 for S3, computed with OpenSSL.
 *
 * S3 flavour: the path is URI-encoded once (every byte except unreserved
 * A-Za-z0-9-._~ and '/' becomes %XX, upper-case hex) and never normalised:
 * "//", "." and ".." segments are signed as they are sent.  Query names and
 * values are encoded the same way, '/' included, and sorted by encoded name
 * then value.  Header names are lower-cased, values trimmed with inner
 * whitespace runs folded to one space, and headers of the same name joined
 * with ',' in the order given.
 *
 * Everything here is pure: no I/O, no clock.  The caller passes the time.
 */
#ifndef IMGSYNC_SIGV4_H
#define IMGSYNC_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "err.h"

#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_EMPTY_SHA256     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct sigv4_pair {
	const char *name;  /* raw (not encoded) */
	const char *value; /* raw; may be "" (never NULL) */
};

struct sigv4_request {
	const char *method;		/* "GET", "PUT", ... */
	const char *path;		/* raw path, e.g. "/bucket/a b+c"; encoded here */
	size_t path_len;		/* bytes of path (any byte but NUL); 0: strlen(path) */
	const struct sigv4_pair *query; /* raw names and values */
	size_t nquery;
	const struct sigv4_pair *headers; /* every header to sign, host and x-amz-date included */
	size_t nheaders;
	const char *payload_hash; /* lower-case hex SHA-256, or SIGV4_UNSIGNED_PAYLOAD */
};

struct sigv4_creds {
	const char *access_key_id;
	const char *secret_access_key;
	const char *region;  /* "us-east-1" */
	const char *service; /* "s3" */
};

/* Percent-encode bytes the S3 way (unreserved kept; '/' kept if keep_slash). */
void sigv4_uri_encode(struct buf *out, const char *s, size_t len, bool keep_slash);

/* "20150830T123600Z" (16 chars + NUL) from a UTC time. */
void sigv4_amz_date(time_t t, char out[17]);

bool sigv4_canonical_request(const struct sigv4_request *req, struct buf *out,
			     struct buf *signed_headers, struct err *e) WUR;
bool sigv4_string_to_sign(const char *amz_date, const struct sigv4_creds *c,
			  const char *canonical_request, struct buf *out, struct err *e) WUR;
/* The value of the Authorization header for req at amz_date. */
bool sigv4_authorization(const struct sigv4_request *req, const struct sigv4_creds *c,
			 const char *amz_date, struct buf *out, struct err *e) WUR;

/* Hash helpers shared with the S3 store (OpenSSL EVP underneath).  Writes ""
 * if OpenSSL fails, which the signer then refuses as a payload hash. */
void sigv4_sha256_hex(const void *data, size_t len, char out[65]);

#endif
