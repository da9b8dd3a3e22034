/*
 * s3.c - the S3 store: requests signed with SigV4 (sigv4.c), carried by
 * libcurl's multi interface on our loop (http.c), answers parsed by expat
 * (s3_xml.c).
 *
 * An operation (struct store_req) is made of one or more HTTP exchanges
 * (struct s3_call).  Calls of an operation are linked so it can be
 * cancelled whole.
 *
 * Upload integrity, reading every byte of the source once where possible:
 *  - objects up to S3_BUFFER_MAX are read into memory once, hashed (MD5 and
 *    SHA-256) in the same pass and sent with Content-MD5 and a signed
 *    payload: the server refuses corrupted bytes (BadDigest);
 *  - larger objects up to multipart_threshold stream from the descriptor,
 *    hashed while sent, with Content-MD5 when the caller knows the checksum
 *    already; otherwise the server's ETag (the MD5 of what it stored) is
 *    compared with what was sent, and a mismatch fails the put;
 *  - above the threshold, a multipart upload: parts stream from the
 *    descriptor (pread at their offsets, several in parallel), each part's
 *    MD5 is computed while sending and checked against the part's ETag, a
 *    bad part is sent again, and the object becomes visible only when
 *    CompleteMultipartUpload succeeds.  Any failure aborts the upload.
 *    The ETag of such an object is no checksum of its content, so the MD5
 *    of the whole (the caller's, or one hashing pass on the worker pool
 *    first) is stored with it as x-amz-meta-imgsync-md5, and its CRC-32C
 *    (computed in the same pass) as x-amz-meta-imgsync-crc32c;
 * Downloads (above range_size: in ranges, the hash following the ranges
 * in order as they complete, read back on the worker pool while later ranges
 * come in; below: hashed while written) are checked against the object's
 * x-amz-meta-imgsync-crc32c where it has one (several GB/s, where MD5 runs
 * at 0.75), else a plain-MD5 ETag or x-amz-meta-imgsync-md5: a byte
 * changed on the way is caught whatever the object's size.
 * Reading small objects into memory runs on the worker pool, unless the
 * page cache holds them whole (read_cached(): on the loop, up to 256 KiB);
 * the streaming reads and writes inside curl's callbacks run on the loop
 * (page cache speed on local disks; a slow network file system slows the
 * loop).
 *
 * Keys are encoded once, by sigv4_uri_encode, for both the URL and the
 * signature, and curl is told not to touch the path (PATH_AS_IS).
 *
 * Copies between buckets of one server (copy(), where can_copy()) never
 * bring the bytes here: CopyObject, or UploadPartCopy parts on the same
 * multipart machinery as uploads; see "Copy on the server" below.
 */
#include "store.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "digest.h"
#include "log.h"
#include "s3_xml.h"
#include "sigv4.h"

#define S3_BUFFER_MAX (1024 * 1024)
/* read and hashed on the loop when cached (read_cached) */
#define S3_LOOP_READ_MAX (256 * 1024)
/* A GET asks for the first range_size bytes; a bigger object comes in
 * ranges of that size, S3_GET_STREAMS of them in flight at once, each
 * written at its offset (one connection gives a fraction of what a server
 * and the loopback can carry).  Fewer, bigger ranges cost the server less
 * (radosgw: 1.2 CPU s per GiB in 8 MiB ranges, 1.1 in 32 MiB ones); a
 * failed range is asked for again whole. */
#define S3_GET_STREAMS	  4
#define S3_PART_PARALLEL  4
#define S3_PART_ATTEMPTS  3
#define S3_MAX_PARTS	  10000
#define S3_MIN_PART	  (5ull * 1024 * 1024)
#define S3_LIST_BODY_MAX  (32u * 1024 * 1024)
#define S3_ERROR_BODY_MAX (64u * 1024)
#define S3_MAX_HEADERS	  8
/* user metadata: the MD5 of an object whose ETag is not one (multipart) */
#define S3_META_MD5 "x-amz-meta-imgsync-md5"
/* beside it: what a download checks at memory speed (crc32c.h) */
#define S3_META_CRC "x-amz-meta-imgsync-crc32c"

struct s3_store {
	struct store base;
	char *url_base;	   /* "https://bucket.host:port" or "http://host:port" */
	char *host_hdr;	   /* value of Host: */
	char *bucket_path; /* raw path of the bucket: "/base/bucket" or "/base" or "" */
	char *endpoint;	   /* for messages */
	struct sigv4_creds creds;
	uint64_t threshold, part_size;
	size_t live; /* requests allocated and not freed yet */
	/* If-Match is sent with the bare ETag: the server compares the
	 * header's bytes with it (radosgw), learnt from a refusal (put_done) */
	bool if_match_bare;
	bool no_nowait; /* preadv2(RWF_NOWAIT) unsupported here (read_cached) */
};

enum s3_kind { S3_PUT, S3_GET, S3_STAT, S3_DEL, S3_LIST, S3_ABORT, S3_COPY };

enum part_state { PART_TODO, PART_INFLIGHT, PART_DONE };

struct s3_part {
	unsigned char md5[16]; /* of the bytes sent */
	char etag[72];	       /* as the server returned it: Complete sends it back */
	bool have_md5;	       /* md5 known (a copied part: its ETag was an MD5) */
	int attempts;
	enum part_state state;
};

struct s3_call;

struct store_req {
	struct s3_store *st;
	enum s3_kind kind;
	char *key;
	store_done_fn done;
	void *arg;
	struct obj_info *info;
	struct store_list *list;
	struct s3_call *calls; /* in flight */
	bool cancelled, finished;

	/* put */
	int fd;
	uint64_t size;
	unsigned char md5[16];
	bool have_md5;
	uint32_t crc; /* the source's CRC-32C, with its MD5 in a hashing pass */
	bool have_crc;
	char content_type[128];
	unsigned char *mem;
	struct workq_job job;
	bool in_pool;
	/* put and copy: only where the key is free (If-None-Match: *; a
	 * multipart upload or a copy, which radosgw does not check it for,
	 * looks first) */
	bool if_absent;
	/* ... or only over the object stat() reported with this tag, "ETAG:SIZE"
	 * (If-Match: "ETAG"; a multipart upload or a copy looks first too) */
	char if_tag[STORE_TAG_MAX];
	char if_match_etag[STORE_TAG_MAX + 2]; /* of if_tag, quoted: the header (set_if_match) */
	bool looked;			       /* ... and found what it may write over */
	bool rechecked;			       /* put: a refused If-Match was looked into */
	bool src_given;			       /* copy: src_info was given */

	/* multipart */
	char *upload_id;
	struct s3_part *parts;
	uint64_t part_size; /* of this upload: grows for huge objects */
	uint32_t nparts;
	uint32_t next_part; /* no part below this index is waiting to be sent */
	uint32_t parts_done;
	int inflight;
	bool failing;
	struct err err; /* the first failure of a multipart upload */
	/* AbortMultipartUpload: its attempts, and the wait before the next */
	unsigned abort_attempts;
	struct loop_timer abort_timer;

	/* copy: the object is made from src_key of src, on the server */
	struct s3_store *src; /* borrowed; outlives the request */
	char *src_key;
	char *copy_source; /* value of x-amz-copy-source: "/bucket/key", key encoded */
	char src_etag[72]; /* x-amz-copy-source-if-match; "" for none */
	bool src_has_md5;  /* src_md5 is the MD5 of the source */
	unsigned char src_md5[16];
	bool src_has_crc; /* and src_crc its CRC-32C */
	uint32_t src_crc;
	bool src_known;	 /* size, etag and content type learnt (src_info or a HEAD) */
	bool replace_ct; /* content_type was given: metadata directive REPLACE */

	/* get of a big object, in ranges (see S3_GET_STREAMS) */
	int out_fd;	       /* a dup of the caller's: the hashing job reads it back */
	uint64_t total;	       /* the object's size, from the first answer */
	uint64_t next_off;     /* the first byte not asked for yet */
	struct obj_info ginfo; /* what the first answer said */
	char if_match[80];     /* "ETag": every range from the same object */
	bool gfailed;
	/* the MD5 of [0, hashed_to), the first range's hashed as it came; a job
	 * on the pool adds [hashed_to, hash_to), the ranges in before any
	 * still in flight (it alone writes hash_failed and hash_err) */
	EVP_MD_CTX *gmd5;
	bool gcrc_mode; /* the object has a CRC-32C: gcrc instead (s3_call.crc_mode) */
	uint32_t gcrc;
	uint64_t hashed_to, hash_to;
	bool hash_failed;
	struct err hash_err;
	bool writeback;	    /* STORE_GET_DURABLE: the hashing job starts writeback too */
	uint64_t synced_to; /* writeback started for [0, synced_to) (job only) */
};

typedef void (*call_done_fn)(struct s3_call *c, const struct err *e);

struct s3_call {
	struct store_req *r;
	struct s3_call *next, **pprev;
	CURL *easy;
	struct curl_slist *hdrs;
	char errbuf[CURL_ERROR_SIZE];
	const char *method;
	struct buf resp;
	size_t resp_max;
	long status;
	/* request body: from memory (curl's POST data), or from fd at
	 * [off, off + len) (on_read()) */
	const unsigned char *mem;
	char *post; /* a small POST body (XML), owned by the call */
	int in_fd;
	uint64_t off, len, pos;
	/* response body to a descriptor */
	int out_fd;
	uint64_t received;
	EVP_MD_CTX *md5; /* MD5 of the body sent or received */
	/* a download of an object with a CRC-32C: crc instead of md5 */
	bool crc_mode;
	uint32_t crc;
	uint32_t part;
	/* the object addressed, when not the operation's (a copy's source) */
	struct s3_store *at;
	const char *at_key;
	bool copy;	   /* CopyObject or UploadPartCopy: a result document, even in a 200 */
	const char *range; /* CURLOPT_RANGE of a GET, "FIRST-LAST"; NULL for all */
	char range_buf[48];
	uint64_t out_off; /* where the response body goes in out_fd */
	unsigned attempt; /* a range of a download: its attempt, from 1 */
	call_done_fn on_done;
	struct err local; /* a local failure met by a curl callback */
	char s3code[64];  /* the S3 error code of a failed answer, "" if none */
};

static void req_finish(struct store_req *r, const struct err *e);
static bool mpu_start(struct store_req *r, struct err *e);

/* --- helpers --- */

static void md5_final(EVP_MD_CTX *ctx, unsigned char out[16])
{
	unsigned int n = 16;

	EVP_DigestFinal_ex(ctx, out, &n);
}

static bool etag_is_md5(const char *etag)
{
	if (strlen(etag) != 32)
		return false;
	for (const char *p = etag; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
		      (*p >= 'A' && *p <= 'F')))
			return false;
	return true;
}

static bool etag_matches(const char *etag, const unsigned char md5[16])
{
	char hex[33];

	hex_encode(md5, 16, hex);
	return strcasecmp(etag, hex) == 0;
}

static void header_value(CURL *easy, const char *name, char *out, size_t size)
{
	struct curl_header *h;

	out[0] = '\0';
	if (curl_easy_header(easy, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h->value)
		snprintf(out, size, "%s", h->value);
}

/* ETag without quotes. */
static void response_etag(CURL *easy, char *out, size_t size)
{
	size_t n;

	header_value(easy, "ETag", out, size);
	n = strlen(out);
	if (n >= 2 && out[0] == '"' && out[n - 1] == '"') {
		memmove(out, out + 1, n - 2);
		out[n - 2] = '\0';
	}
}

/* SSE-KMS and SSE-C objects have ETags that are not the MD5 of the content. */
static bool etag_comparable(CURL *easy)
{
	char v[64];

	header_value(easy, "x-amz-server-side-encryption", v, sizeof(v));
	if (strcmp(v, "aws:kms") == 0 || strcmp(v, "aws:kms:dsse") == 0)
		return false;
	header_value(easy, "x-amz-server-side-encryption-customer-algorithm", v, sizeof(v));
	return v[0] == '\0';
}

/* a rewrite with the same content keeps the tag: deleting that is harmless */
static void set_tag(struct obj_info *info)
{
	info->tag[0] = '\0';
	if (info->etag[0])
		snprintf(info->tag, sizeof(info->tag), "%.58s:%llu", info->etag,
			 (unsigned long long)info->size);
}

/* x-amz-meta-imgsync-crc32c: eight hex digits (into OUT, unless NULL). */
static bool meta_crc(CURL *easy, uint32_t *out)
{
	char v[16];
	unsigned char b[4];

	header_value(easy, S3_META_CRC, v, sizeof(v));
	if (strlen(v) != 8 || !hex_decode(v, 8, b))
		return false;
	if (out)
		*out = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
	return true;
}

static void crc_hex(uint32_t crc, char out[9])
{
	snprintf(out, 9, "%08x", (unsigned)crc);
}

/* What a download checks a whole object against, as metadata of an
 * upload in parts or a copy that replaces the source's: the MD5 and the
 * CRC-32C given (NULL: not known), written as hex into HEX. */
struct sums_hex {
	char md5[33], crc[9];
};

static size_t add_sums(struct sigv4_pair *extra, size_t nx, const unsigned char *md5,
		       const uint32_t *crc, struct sums_hex *hex)
{
	if (md5) {
		hex_encode(md5, 16, hex->md5);
		extra[nx++] = (struct sigv4_pair){S3_META_MD5, hex->md5};
	}
	if (crc) {
		crc_hex(*crc, hex->crc);
		extra[nx++] = (struct sigv4_pair){S3_META_CRC, hex->crc};
	}
	return nx;
}

static void fill_info(struct s3_call *c, struct obj_info *info)
{
	curl_off_t len = -1;
	long ft = -1;
	char *ct = NULL;

	memset(info, 0, sizeof(*info));
	curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
	if (len >= 0)
		info->size = (uint64_t)len;
	response_etag(c->easy, info->etag, sizeof(info->etag));
	if (etag_is_md5(info->etag) && etag_comparable(c->easy)) {
		info->has_md5 = hex_decode(info->etag, 32, info->md5);
	} else {
		/* uploaded in parts by imgsync: the MD5 it stored with the object */
		char meta[72];

		header_value(c->easy, S3_META_MD5, meta, sizeof(meta));
		if (etag_is_md5(meta))
			info->has_md5 = hex_decode(meta, 32, info->md5);
	}
	info->has_crc32c = meta_crc(c->easy, &info->crc32c);
	curl_easy_getinfo(c->easy, CURLINFO_FILETIME, &ft);
	if (ft > 0)
		info->mtime = ft;
	curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
	if (ct)
		snprintf(info->content_type, sizeof(info->content_type), "%s", ct);
	set_tag(info);
}

/* --- turning an answer into an error an operator can act on --- */

static const char *what_key(struct store_req *r)
{
	return r->key && r->key[0] ? r->key : "(bucket)";
}

/* The error an S3 error document (or, without one, the status) stands for.
 * A copy's messages name its source: missing, changed or unreadable. */
static void explain_error(struct store_req *r, struct s3_call *c, const struct s3_error *x,
			  struct err *e)
{
	struct s3_store *st = r->st;
	const struct store_cfg *cfg = st->base.cfg;
	/* the bucket of the object this call addressed */
	const struct store_cfg *bcfg = c->at ? c->at->base.cfg : cfg;
	const char *code = x->code;
	char keyesc[2400];

	if (c->copy)
		snprintf(keyesc, sizeof(keyesc), "\"%s\" (from \"%s\" in bucket \"%s\")", r->key,
			 r->src_key, r->src->base.cfg->bucket);
	else if (c->at_key)
		snprintf(keyesc, sizeof(keyesc), "\"%s\" (the source of a copy)", c->at_key);
	else
		snprintf(keyesc, sizeof(keyesc), "\"%s\"", what_key(r));
	snprintf(c->s3code, sizeof(c->s3code), "%s", code);
#define IS(s) (strcmp(code, s) == 0)
	if (IS("NoSuchBucket") && c->copy)
		err_set(e, ERR_NOTFOUND,
			"%s %s: bucket \"%s\" or the source's bucket \"%s\" does not exist at %s "
			"(NoSuchBucket)",
			c->method, keyesc, cfg->bucket, r->src->base.cfg->bucket, st->endpoint);
	else if (IS("NoSuchBucket"))
		err_set(e, ERR_NOTFOUND,
			"bucket \"%s\" does not exist at %s (NoSuchBucket): create it, or fix "
			"bucket in store \"%s\"",
			bcfg->bucket, st->endpoint, bcfg->name);
	else if ((IS("NoSuchKey") || IS("PreconditionFailed") || c->status == 412) &&
		 r->if_tag[0] && !c->copy && c->at_key == NULL &&
		 (strcmp(c->method, "PUT") == 0 || strcmp(c->method, "POST") == 0))
		/* If-Match: AWS answers NoSuchKey where the key holds nothing */
		err_set(e, ERR_EXISTS,
			"%s %s: the key no longer holds the object looked at (written again, or "
			"removed: %s); not replaced",
			c->method, keyesc, code);
	else if (IS("NoSuchKey") && c->copy)
		err_set(e, ERR_NOTFOUND, "%s %s: the source object does not exist (NoSuchKey)",
			c->method, keyesc);
	else if (IS("NoSuchKey"))
		err_set(e, ERR_NOTFOUND, "%s %s: no such object in bucket \"%s\" (NoSuchKey)",
			c->method, keyesc, bcfg->bucket);
	else if (IS("NotFound") && c->copy)
		err_set(e, ERR_NOTFOUND,
			"%s %s: not found (HTTP 404 without details: the source object, or a "
			"bucket, does not exist)",
			c->method, keyesc);
	else if (IS("NotFound"))
		err_set(e, ERR_NOTFOUND,
			"%s %s: not found (HTTP 404 without details: the object, or bucket \"%s\" "
			"itself, does not exist)",
			c->method, keyesc, bcfg->bucket);
	else if ((IS("PreconditionFailed") || c->status == 412) && r->if_absent && !c->copy)
		err_set(e, ERR_EXISTS, "%s %s: the key holds an object already (%s); not replaced",
			c->method, keyesc, code);
	else if (IS("PreconditionFailed") || c->status == 412)
		/* otherwise only copies send conditions: x-amz-copy-source-if-match */
		err_set(e, ERR_INTEGRITY,
			"%s %s: the source changed since it was read (its ETag is no longer "
			"\"%s\": %s); read it again and retry",
			c->method, keyesc, r->src_etag, code);
	else if (c->copy && (IS("AccessDenied") || IS("Forbidden")))
		err_set(e, ERR_DENIED,
			"%s %s: access denied (%s%s%s): the credentials of store \"%s\" must be "
			"allowed to read bucket \"%s\" and to write bucket \"%s\"",
			c->method, keyesc, code, x->message[0] ? ": " : "", x->message, cfg->name,
			r->src->base.cfg->bucket, cfg->bucket);
	else if (IS("InvalidAccessKeyId"))
		err_set(e, ERR_DENIED,
			"%s %s: the server does not know the access key id of store \"%s\" "
			"(InvalidAccessKeyId): check access_key_id",
			c->method, keyesc, cfg->name);
	else if (IS("SignatureDoesNotMatch"))
		err_set(e, ERR_DENIED,
			"%s %s: the server refused the request signature (SignatureDoesNotMatch): "
			"check the secret access key of store \"%s\" (secret_access_key_file), and "
			"that no proxy rewrites requests",
			c->method, keyesc, cfg->name);
	else if (IS("AccessDenied") || IS("Forbidden") || IS("AllAccessDisabled") ||
		 IS("AccountProblem") || IS("InvalidToken") || IS("ExpiredToken"))
		err_set(e, ERR_DENIED,
			"%s %s in bucket \"%s\": access denied (%s%s%s): check the credentials of "
			"store \"%s\" and that its policy allows this action",
			c->method, keyesc, bcfg->bucket, code, x->message[0] ? ": " : "",
			x->message, cfg->name);
	else if (IS("RequestTimeTooSkewed") || IS("RequestExpired"))
		err_set(e, ERR_TRANSIENT,
			"%s %s: the server's clock and this host's differ too much (%s): fix the "
			"time on this host (NTP)",
			c->method, keyesc, code);
	else if (IS("AuthorizationHeaderMalformed") && x->region[0])
		err_set(e, ERR_DENIED,
			"%s %s: bucket \"%s\" expects region \"%s\": set region = \"%s\" in "
			"store \"%s\"",
			c->method, keyesc, bcfg->bucket, x->region, x->region, cfg->name);
	else if (IS("PermanentRedirect") || c->status == 301)
		err_set(e, ERR_DENIED,
			"%s %s: bucket \"%s\" must be reached at another endpoint%s%s%s: fix "
			"endpoint/region in store \"%s\"",
			c->method, keyesc, bcfg->bucket, x->endpoint[0] ? " (" : "", x->endpoint,
			x->endpoint[0] ? ")" : "", cfg->name);
	else if (IS("BadDigest") || IS("InvalidDigest") || IS("XAmzContentSHA256Mismatch"))
		err_set(e, ERR_INTEGRITY,
			"%s %s: the server received different bytes than were sent (%s); the "
			"transfer will be retried",
			c->method, keyesc, code);
	else if (IS("SlowDown") || IS("ServiceUnavailable") || IS("InternalError") ||
		 IS("RequestTimeout") || c->status >= 500 || c->status == 429)
		err_set(e, ERR_TRANSIENT, "%s %s: the server is busy or failing (HTTP %ld %s%s%s)",
			c->method, keyesc, c->status, code, x->message[0] ? ": " : "", x->message);
	else if (IS("EntityTooLarge") || IS("EntityTooSmall") || IS("InvalidPart") ||
		 IS("InvalidPartOrder") || IS("NoSuchUpload"))
		err_set(e, ERR_TRANSIENT, "%s %s: multipart upload refused (%s%s%s)", c->method,
			keyesc, code, x->message[0] ? ": " : "", x->message);
	else
		err_set(e, ERR_INVALID, "%s %s: the server answered HTTP %ld %s%s%s", c->method,
			keyesc, c->status, code, x->message[0] ? ": " : "", x->message);
#undef IS
}

static void explain(struct store_req *r, struct s3_call *c, struct err *e)
{
	struct s3_error x;

	if (!s3_xml_error(buf_str(&c->resp), c->resp.len, &x)) {
		memset(&x, 0, sizeof(x));
		/* HEAD answers carry no body: name the status. */
		snprintf(x.code, sizeof(x.code), "%s",
			 c->status == 404   ? "NotFound"
			 : c->status == 403 ? "Forbidden"
			 : c->status == 400 ? "BadRequest"
			 : c->status == 301 ? "PermanentRedirect"
			 : c->status == 412 ? "PreconditionFailed"
			 : c->status == 500 ? "InternalError"
			 : c->status == 503 ? "ServiceUnavailable"
					    : "HTTPError");
		/* a body that is no error document: say so, it may be a proxy's */
		if (c->resp.len > 0)
			snprintf(x.message, sizeof(x.message),
				 "its body (%zu bytes%s) is not an S3 error document", c->resp.len,
				 c->resp.len >= S3_ERROR_BODY_MAX ? " or more" : "");
	}
	explain_error(r, c, &x, e);
}

static void explain_transport(struct store_req *r, struct s3_call *c, CURLcode rc, struct err *e)
{
	const char *detail = c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc);
	const struct store_cfg *cfg = r->st->base.cfg;

	switch (rc) {
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_ISSUER_ERROR:
		if (cfg->ca_file && cfg->ca_file[0])
			err_set(
			    e, ERR_DENIED,
			    "%s \"%s\": TLS certificate verification failed: the TLS certificate "
			    "of %s is not trusted (%s): it is not signed by a CA in ca_file "
			    "\"%s\", or does not name the endpoint's host; fix ca_file or "
			    "endpoint in store \"%s\"",
			    c->method, what_key(r), r->st->endpoint, detail, cfg->ca_file,
			    cfg->name);
		else
			err_set(
			    e, ERR_DENIED,
			    "%s \"%s\": TLS certificate verification failed: the TLS certificate "
			    "of %s is not trusted (%s): it is not signed by a CA this host "
			    "trusts, or does not name the endpoint's host; for a private CA set "
			    "ca_file = \"/path/to/ca.pem\" in store \"%s\" (see imgsyncd.conf(5))",
			    c->method, what_key(r), r->st->endpoint, detail, cfg->name);
		break;
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		err_set(e, ERR_CONFIG,
			"%s \"%s\": TLS certificate verification cannot start: ca_file \"%s\" of "
			"store \"%s\" holds no usable CA certificate (%s); it must be PEM",
			c->method, what_key(r), cfg->ca_file ? cfg->ca_file : "(none)", cfg->name,
			detail);
		break;
	case CURLE_SSL_CONNECT_ERROR:
		err_set(e, ERR_TRANSIENT,
			"%s \"%s\": the TLS handshake with %s failed (%s): is the endpoint https "
			"on that port?",
			c->method, what_key(r), r->st->endpoint, detail);
		break;
	case CURLE_COULDNT_RESOLVE_HOST:
		err_set(e, ERR_TRANSIENT, "%s \"%s\": cannot resolve the host of %s (%s)",
			c->method, what_key(r), r->st->endpoint, detail);
		break;
	case CURLE_ABORTED_BY_CALLBACK:
	case CURLE_READ_ERROR:
	case CURLE_WRITE_ERROR:
		if (e->code == ERR_OK)
			err_set(e, ERR_IO, "%s \"%s\": local I/O failed (%s)", c->method,
				what_key(r), detail);
		break;
	default:
		err_set(e, ERR_TRANSIENT, "%s \"%s\": cannot talk to %s: %s", c->method,
			what_key(r), r->st->endpoint, detail);
		break;
	}
}

/* An answer to a write that cannot be read (s3_xml said why): the write
 * may or may not have happened, and a garbled answer is worth another try,
 * a counted one (integrity), as for a corrupted transfer. */
static void unreadable_answer(struct err *e, const char *op, const char *key)
{
	if (e->code == ERR_INVALID)
		e->code = ERR_INTEGRITY;
	err_prefix(e, "%s \"%s\": ", op, key);
}

/* --- one HTTP exchange --- */

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
	struct s3_call *c = ud;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
	if (c->out_fd >= 0 && status >= 200 && status < 300) {
		for (size_t done = 0; done < n;) {
			ssize_t w = pwrite(c->out_fd, data + done, n - done,
					   (off_t)(c->out_off + c->received + done));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				err_sys(&c->local, errno, "writing \"%s\" to a local file",
					what_key(c->r));
				return 0;
			}
			done += (size_t)w;
		}
		/* the headers are in: a CRC-32C stored with the object is
		 * checked at memory speed, where MD5 runs at 0.75 GB/s */
		if (c->md5 && c->received == 0)
			c->crc_mode = meta_crc(c->easy, NULL);
		if (c->crc_mode)
			c->crc = crc32c(c->crc, data, n);
		else if (c->md5)
			EVP_DigestUpdate(c->md5, data, n);
		c->received += n;
		return n;
	}
	/* A long copy may send whitespace before its result to keep the
	 * connection alive: not kept, so it does not count against the cap. */
	if (c->copy && c->resp.len == 0) {
		while (n > 0 && (*data == ' ' || *data == '\t' || *data == '\r' || *data == '\n')) {
			data++;
			n--;
		}
		if (n == 0)
			return size * nmemb;
	}
	/* Error documents and XML answers: capped, the rest dropped.  An
	 * error document is kept to S3_ERROR_BODY_MAX even where a success
	 * may be bigger (a listing): a server answering errors of any size
	 * costs no memory. */
	if (status >= 300 && c->resp_max > S3_ERROR_BODY_MAX) {
		size_t room = c->resp.len < S3_ERROR_BODY_MAX ? S3_ERROR_BODY_MAX - c->resp.len : 0;

		buf_append(&c->resp, data, n < room ? n : room);
		return c->resp.oom ? 0 : size * nmemb;
	}
	if (c->resp.len + n > c->resp_max) {
		if (c->resp_max > S3_ERROR_BODY_MAX) {
			err_set(&c->local, ERR_INVALID, "S3 answered with more than %zu bytes",
				c->resp_max);
			return 0;
		}
		n = c->resp.len < c->resp_max ? c->resp_max - c->resp.len : 0;
		buf_append(&c->resp, data, n);
		return size * nmemb;
	}
	buf_append(&c->resp, data, n);
	return c->resp.oom ? 0 : size * nmemb;
}

static size_t on_read(char *dst, size_t size, size_t nmemb, void *ud)
{
	struct s3_call *c = ud;
	size_t want = size * nmemb;
	ssize_t n;

	if (c->pos >= c->len)
		return 0;
	if (want > c->len - c->pos)
		want = (size_t)(c->len - c->pos);
	do
		n = pread(c->in_fd, dst, want, (off_t)(c->off + c->pos));
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		err_sys(&c->local, errno, "reading the source of \"%s\"", what_key(c->r));
		return CURL_READFUNC_ABORT;
	}
	if (n == 0) {
		err_set(&c->local, ERR_INTEGRITY,
			"the source of \"%s\" is shorter than its size; did it change?",
			what_key(c->r));
		return CURL_READFUNC_ABORT;
	}
	if (c->md5)
		EVP_DigestUpdate(c->md5, dst, (size_t)n);
	c->pos += (uint64_t)n;
	return (size_t)n;
}

/* curl rewinds a body when it must send it again (a redirect, a retry on a
 * reused connection that the server had closed). */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
	struct s3_call *c = ud;

	if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > c->len)
		return CURL_SEEKFUNC_CANTSEEK;
	c->pos = (uint64_t)offset;
	if (c->md5) {
		if (offset != 0)
			return CURL_SEEKFUNC_CANTSEEK;
		EVP_DigestInit_ex(c->md5, EVP_md5(), NULL);
	}
	return CURL_SEEKFUNC_OK;
}

static void call_free(struct s3_call *c)
{
	if (c == NULL)
		return;
	if (c->pprev) {
		*c->pprev = c->next;
		if (c->next)
			c->next->pprev = c->pprev;
	}
	if (c->easy)
		http_easy_put(c->r->st->base.env.http, c->easy);
	curl_slist_free_all(c->hdrs);
	buf_free(&c->resp);
	EVP_MD_CTX_free(c->md5);
	free(c->post);
	free(c);
}

static void call_finished(void *arg, CURLcode rc)
{
	struct s3_call *c = arg;
	struct store_req *r = c->r;
	struct err e = {0};
	bool ok;

	curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
	if (rc != CURLE_OK) {
		e = c->local; /* a local failure recorded by a callback */
		explain_transport(r, c, rc, &e);
		ok = false;
	} else if (c->status < 200 || c->status >= 300) {
		explain(r, c, &e);
		ok = false;
	} else
		ok = true;
	c->on_done(c, ok ? NULL : &e);
}

struct qparam {
	const char *name;
	const char *value;
};

/*
 * IMGSYNC_CURL_VERBOSE: libcurl's trace of each exchange on standard error,
 * as its own would print it (text "* ", headers out "> ", in "< "; no
 * bodies), except the value of a session token: the one secret that goes
 * in a header (a signature is good for its one request only).
 */
static void trace_lines(char mark, const char *data, size_t size)
{
	static const char token[] = "x-amz-security-token:";

	while (size > 0) {
		const char *nl = memchr(data, '\n', size);
		size_t n = nl ? (size_t)(nl - data) + 1 : size;
		size_t shown = n;

		while (shown > 0 && (data[shown - 1] == '\n' || data[shown - 1] == '\r'))
			shown--;
		if (shown > 0 || mark == '*') {
			if (shown >= sizeof(token) - 1 &&
			    strncasecmp(data, token, sizeof(token) - 1) == 0)
				fprintf(stderr, "%c %.*s (hidden)\n", mark,
					(int)(sizeof(token) - 1), data);
			else
				fprintf(stderr, "%c %.*s\n", mark, (int)shown, data);
		}
		data += n;
		size -= n;
	}
}

static int trace_http(CURL *easy, curl_infotype type, char *data, size_t size, void *arg)
{
	(void)easy;
	(void)arg;
	if (type == CURLINFO_TEXT)
		trace_lines('*', data, size);
	else if (type == CURLINFO_HEADER_OUT)
		trace_lines('>', data, size);
	else if (type == CURLINFO_HEADER_IN)
		trace_lines('<', data, size);
	return 0;
}

/* Build, sign and start one request.  body: mem/len, fd/off/len or post. */
static bool call_start(struct store_req *r, struct s3_call *c, const char *method,
		       const struct qparam *q, size_t nq, const char *payload_hash,
		       const struct sigv4_pair *extra, size_t nextra, struct err *e)
{
	struct s3_store *st = r->st;
	const struct store_cfg *cfg = st->base.cfg;
	/* the object addressed; signed with st's credentials, which can_copy
	 * made sure are the same */
	struct s3_store *at = c->at ? c->at : st;
	struct buf path = BUF_INIT, url = BUF_INIT, auth = BUF_INIT, line = BUF_INIT;
	struct sigv4_pair hdrs[S3_MAX_HEADERS + 4];
	struct sigv4_pair qs[8];
	struct sigv4_request sr;
	char date[17];
	size_t nh = 0;
	bool ok = false;

	c->method = method;
	c->easy = http_easy_get(st->base.env.http);
	if (c->easy == NULL)
		return err_set(e, ERR_NOMEM, "out of memory (curl handle)");

	/* the raw path, encoded once for the URL and once inside the signer */
	buf_puts(&path, at->bucket_path);
	if (r->kind != S3_LIST) {
		buf_putc(&path, '/');
		buf_puts(&path, c->at_key ? c->at_key : r->key);
	} else if (path.len == 0)
		buf_putc(&path, '/');
	buf_puts(&url, at->url_base);
	sigv4_uri_encode(&url, buf_str(&path), path.len, true);
	for (size_t i = 0; i < nq; i++) {
		buf_putc(&url, i ? '&' : '?');
		sigv4_uri_encode(&url, q[i].name, strlen(q[i].name), false);
		if (q[i].value[0] || strcmp(q[i].name, "uploads") != 0) {
			buf_putc(&url, '=');
			sigv4_uri_encode(&url, q[i].value, strlen(q[i].value), false);
		}
		qs[i] = (struct sigv4_pair){q[i].name, q[i].value};
	}

	sigv4_amz_date(time(NULL), date);
	hdrs[nh++] = (struct sigv4_pair){"host", at->host_hdr};
	hdrs[nh++] = (struct sigv4_pair){"x-amz-date", date};
	hdrs[nh++] = (struct sigv4_pair){"x-amz-content-sha256", payload_hash};
	if (cfg->session_token && cfg->session_token[0])
		hdrs[nh++] = (struct sigv4_pair){"x-amz-security-token", cfg->session_token};
	for (size_t i = 0; i < nextra && nh < sizeof(hdrs) / sizeof(hdrs[0]); i++)
		hdrs[nh++] = extra[i];
	sr = (struct sigv4_request){
	    .method = method,
	    .path = buf_str(&path),
	    .path_len = path.len,
	    .query = qs,
	    .nquery = nq,
	    .headers = hdrs,
	    .nheaders = nh,
	    .payload_hash = payload_hash,
	};
	if (!buf_ok(&path, e) || !buf_ok(&url, e) ||
	    !sigv4_authorization(&sr, &st->creds, date, &auth, e))
		goto out;

	for (size_t i = 0; i < nh; i++) {
		struct curl_slist *n;

		buf_reset(&line);
		buf_printf(&line, "%s: %s", hdrs[i].name, hdrs[i].value);
		if (!buf_ok(&line, e) || (n = curl_slist_append(c->hdrs, buf_str(&line))) == NULL)
			goto nomem;
		c->hdrs = n;
	}
	buf_reset(&line);
	buf_printf(&line, "Authorization: %s", buf_str(&auth));
	if (!buf_ok(&line, e))
		goto out;
	{
		const char *fixed[] = {buf_str(&line), "Expect:", "Accept:"};

		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
			struct curl_slist *n = curl_slist_append(c->hdrs, fixed[i]);

			if (n == NULL)
				goto nomem;
			c->hdrs = n;
		}
	}
	/* a body held in memory goes as curl's POST data, with the method
	 * PUT: sent from where it is, with no upload buffer of 64 KiB kept
	 * by each easy handle (a PUT streamed from a file needs one) */
	bool mem_put = c->mem != NULL;
	if (strcmp(method, "POST") == 0 || mem_put) {
		/* curl would add a form Content-Type to a POST without one */
		bool given = false;

		for (size_t i = 0; i < nextra; i++)
			given |= strcasecmp(extra[i].name, "content-type") == 0;
		if (!given) {
			struct curl_slist *n = curl_slist_append(c->hdrs, "Content-Type:");

			if (n == NULL)
				goto nomem;
			c->hdrs = n;
		}
	}

	curl_easy_setopt(c->easy, CURLOPT_URL, buf_str(&url));
	curl_easy_setopt(c->easy, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->hdrs);
	curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->easy, CURLOPT_USERAGENT, "imgsync/" IMGSYNC_VERSION);
	curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(c->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS, cfg->connect_timeout_ms);
	curl_easy_setopt(c->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c->easy, CURLOPT_LOW_SPEED_TIME, cfg->low_speed_time_s);
	curl_easy_setopt(c->easy, CURLOPT_SSL_VERIFYPEER, cfg->tls_verify ? 1L : 0L);
	curl_easy_setopt(c->easy, CURLOPT_SSL_VERIFYHOST, cfg->tls_verify ? 2L : 0L);
	if (cfg->ca_file && cfg->ca_file[0])
		curl_easy_setopt(c->easy, CURLOPT_CAINFO, cfg->ca_file);
	curl_easy_setopt(c->easy, CURLOPT_FILETIME, 1L);
	if (c->range)
		curl_easy_setopt(c->easy, CURLOPT_RANGE, c->range);
	/* big downloads: fewer, larger writes */
	if (c->out_fd >= 0)
		curl_easy_setopt(c->easy, CURLOPT_BUFFERSIZE, 256L * 1024);
	if (getenv("IMGSYNC_CURL_VERBOSE")) {
		curl_easy_setopt(c->easy, CURLOPT_DEBUGFUNCTION, trace_http);
		curl_easy_setopt(c->easy, CURLOPT_VERBOSE, 1L);
	}
	curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
	if (mem_put) {
		curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, (const char *)c->mem);
		curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->len);
		curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, "PUT");
	} else if (strcmp(method, "PUT") == 0) {
		curl_easy_setopt(c->easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c->easy, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c->easy, CURLOPT_READDATA, c);
		curl_easy_setopt(c->easy, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(c->easy, CURLOPT_SEEKDATA, c);
		curl_easy_setopt(c->easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->len);
	} else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->post ? c->post : "");
		curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)(c->post ? strlen(c->post) : 0));
	} else if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(c->easy, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "DELETE") == 0) {
		curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
	}

	if (!http_start(st->base.env.http, c->easy, call_finished, c, e))
		goto out;
	/* link into the operation for cancel */
	c->next = r->calls;
	if (r->calls)
		r->calls->pprev = &c->next;
	r->calls = c;
	c->pprev = &r->calls;
	ok = true;
	goto out;
nomem:
	err_set(e, ERR_NOMEM, "out of memory building a request");
out:
	if (auth.p)
		explicit_bzero(auth.p, auth.len);
	if (line.p)
		explicit_bzero(line.p, line.len);
	buf_free(&path);
	buf_free(&url);
	buf_free(&auth);
	buf_free(&line);
	return ok;
}

static struct s3_call *call_new(struct store_req *r, call_done_fn on_done, size_t resp_max)
{
	struct s3_call *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->r = r;
	c->in_fd = -1;
	c->out_fd = -1;
	c->on_done = on_done;
	c->resp_max = resp_max;
	return c;
}

/* --- operations --- */

static struct store_req *req_new(struct s3_store *st, enum s3_kind kind, const char *key,
				 store_done_fn done, void *arg, struct err *e)
{
	struct store_req *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->key = strdup(key ? key : "")) == NULL) {
		free(r);
		err_set(e, ERR_NOMEM, "out of memory");
		return NULL;
	}
	r->st = st;
	st->live++;
	r->kind = kind;
	r->done = done;
	r->arg = arg;
	r->fd = -1;
	r->out_fd = -1;
	return r;
}

static void req_free(struct store_req *r)
{
	while (r->calls) {
		struct s3_call *c = r->calls;

		http_cancel(r->st->base.env.http, c->easy);
		call_free(c);
	}
	free(r->key);
	free(r->src_key);
	free(r->copy_source);
	free(r->mem);
	free(r->upload_id);
	free(r->parts);
	if (r->out_fd >= 0)
		close(r->out_fd);
	EVP_MD_CTX_free(r->gmd5);
	loop_timer_cancel(r->st->base.env.loop, &r->abort_timer);
	r->st->live--;
	free(r);
}

struct finish_ctx {
	struct store_req *r;
	bool failed;
	struct err e;
};

static void req_finish(struct store_req *r, const struct err *e)
{
	struct err msg;

	if (r->finished)
		return;
	r->finished = true;
	if (!r->cancelled) {
		if (e) {
			msg = *e;
			err_prefix(&msg, "store \"%s\": ", r->st->base.cfg->name);
		}
		r->done(r->arg, e ? &msg : NULL);
	}
	if (r->in_pool)
		return; /* the hashing job frees it */
	req_free(r);
}

/* The object just written is not what was meant (the server stored other
 * bytes, the source changed while read): nobody may read it, and a retry
 * that may only create the key (if_absent) must not find it.  Deleted,
 * then the request fails with e. */
static void dropped(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct err saved = r->err;

	if (e && c->status != 404)
		log_warn("store \"%s\": could not delete \"%s\", written with content that "
			 "failed its check: %s",
			 r->st->base.cfg->name, r->key, e->msg);
	call_free(c);
	req_finish(r, &saved);
}

static void drop_written(struct store_req *r, const struct err *e)
{
	struct s3_call *d = call_new(r, dropped, S3_ERROR_BODY_MAX);
	struct err de = {0};

	r->err = *e;
	if (d == NULL || !call_start(r, d, "DELETE", NULL, 0, SIGV4_EMPTY_SHA256, NULL, 0, &de)) {
		call_free(d);
		log_warn("store \"%s\": could not delete \"%s\", written with content that failed "
			 "its check",
			 r->st->base.cfg->name, r->key);
		de = r->err;
		req_finish(r, &de);
	}
}

/* single PUT */

static bool head(struct store_req *r, struct s3_store *at, const char *key, call_done_fn on_done,
		 struct err *e);
static void set_if_match(struct store_req *r);
static bool put_single(struct store_req *r, struct err *e);

/* A PUT refused by its If-Match, the key looked at again: where it still
 * holds the object the condition named, the server compared the header's
 * bytes with its bare ETag (radosgw 16 does, where AWS and RFC 9110 quote
 * it): the PUT goes again with the ETag bare, as the store's later ones
 * will.  Otherwise the object changed, and the refusal stands. */
static void if_match_rechecked(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct obj_info now = {0};
	struct err pe = {0};

	if (e == NULL)
		fill_info(c, &now);
	call_free(c);
	if (e == NULL && strcmp(now.tag, r->if_tag) == 0) {
		r->st->if_match_bare = true;
		set_if_match(r);
		if (put_single(r, &pe))
			return;
	} else
		err_set(&pe, ERR_EXISTS,
			"PUT \"%s\": the key no longer holds the object looked at (written again, "
			"or removed); not replaced",
			r->key);
	req_finish(r, &pe);
}

static void put_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct err ie;
	unsigned char sent[16];
	char etag[72];

	if (e) {
		struct err copy = *e;

		call_free(c);
		/* refused by If-Match: the object changed, or the server wants
		 * the ETag bare; a look tells (if_match_rechecked) */
		if (e->code == ERR_EXISTS && r->if_tag[0] && !r->st->if_match_bare &&
		    !r->rechecked) {
			r->rechecked = true;
			if (head(r, NULL, NULL, if_match_rechecked, &ie))
				return;
		}
		req_finish(r, &copy);
		return;
	}
	if (c->md5)
		md5_final(c->md5, sent);
	else
		memcpy(sent, r->md5, 16);
	response_etag(c->easy, etag, sizeof(etag));
	if (!r->have_md5) { /* streamed once: the ETag is the check */
		if (etag[0] == '\0') {
			err_set(&ie, ERR_INTEGRITY,
				"PUT \"%s\": the server's answer has no ETag, so what it stored "
				"cannot be checked against what was sent; the transfer will be "
				"retried (is a proxy dropping headers?)",
				r->key);
			call_free(c);
			req_finish(r, &ie);
			return;
		}
		memcpy(r->md5, sent, 16);
		r->have_md5 = true;
	} else if (memcmp(sent, r->md5, 16) != 0) {
		err_set(&ie, ERR_INTEGRITY, "the source of \"%s\" changed while it was uploaded",
			r->key);
		call_free(c);
		drop_written(r, &ie);
		return;
	}
	if (etag_is_md5(etag) && etag_comparable(c->easy) && !etag_matches(etag, r->md5)) {
		err_set(&ie, ERR_INTEGRITY,
			"PUT \"%s\": the server stored different bytes (ETag %s) than were sent",
			r->key, etag);
		call_free(c);
		drop_written(r, &ie);
		return;
	}
	if (r->info) {
		memset(r->info, 0, sizeof(*r->info));
		r->info->size = r->size;
		r->info->has_md5 = true;
		memcpy(r->info->md5, r->md5, 16);
		snprintf(r->info->etag, sizeof(r->info->etag), "%s", etag);
		snprintf(r->info->content_type, sizeof(r->info->content_type), "%s",
			 r->content_type);
		set_tag(r->info);
	}
	call_free(c);
	req_finish(r, NULL);
}

/* Start the PUT; false (nothing started, done() not called) on failure. */
static bool put_single(struct store_req *r, struct err *e)
{
	struct s3_call *c = call_new(r, put_done, S3_ERROR_BODY_MAX);
	struct sigv4_pair extra[3];
	unsigned char b64[32];
	size_t nx = 0;

	/* A body read into memory was hashed as it was read: the bytes sent are
	 * those, and its Content-MD5, a signed header, makes the server refuse
	 * any others (BadDigest).  One streamed from the file is hashed while
	 * sent, to catch a file that changes meanwhile (or to learn its MD5),
	 * and checked against the ETag.  Either way the payload goes as
	 * UNSIGNED-PAYLOAD, as the parts of a multipart upload do: a signed
	 * SHA-256 would bind the body no better than the signed MD5 already
	 * does against a corrupted byte, and costs the client a second hash of
	 * every byte and the server a check of it (radosgw spent 7-30 % more
	 * CPU per PUT of 50 KiB with it, in three rounds of bench/s3ceiling's
	 * "sha256" against "new,md5,type" on fresh servers). */
	if (c == NULL || (r->mem == NULL && (c->md5 = EVP_MD_CTX_new()) == NULL)) {
		call_free(c);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	if (c->md5)
		EVP_DigestInit_ex(c->md5, EVP_md5(), NULL);
	if (r->have_md5) {
		EVP_EncodeBlock(b64, r->md5, 16);
		extra[nx++] = (struct sigv4_pair){"content-md5", (const char *)b64};
	}
	if (r->content_type[0])
		extra[nx++] = (struct sigv4_pair){"content-type", r->content_type};
	if (r->if_absent)
		extra[nx++] = (struct sigv4_pair){"if-none-match", "*"};
	else if (r->if_tag[0])
		extra[nx++] = (struct sigv4_pair){"if-match", r->if_match_etag};
	c->mem = r->mem;
	c->in_fd = r->fd;
	c->len = r->size;
	if (!call_start(r, c, "PUT", NULL, 0, SIGV4_UNSIGNED_PAYLOAD, extra, nx, e)) {
		call_free(c);
		return false;
	}
	return true;
}

/* The sum a small source, read whole into r->mem, is sent with:
 * Content-MD5. */
static void hash_mem(struct store_req *r)
{
	unsigned int n = 16;

	EVP_Digest(r->mem, (size_t)r->size, r->md5, &n, EVP_md5(), NULL);
	r->have_md5 = true;
}

/*
 * Reading the source on the worker pool, off the loop: small objects are
 * read whole, then hashed (MD5: hash_mem()); larger ones are
 * hashed (MD5 and CRC-32C) for the multipart upload's metadata, then
 * streamed.
 */
static void read_work(struct workq_job *job)
{
	struct store_req *r = (struct store_req *)((char *)job - offsetof(struct store_req, job));
	size_t chunk = 1 << 20;
	EVP_MD_CTX *md5 = NULL;
	unsigned char *buf = NULL;
	uint64_t off = 0;

	if (r->size <= S3_BUFFER_MAX)
		r->mem = malloc(r->size ? r->size : 1);
	else if ((md5 = EVP_MD_CTX_new()) != NULL)
		buf = malloc(chunk);
	if (r->size <= S3_BUFFER_MAX ? r->mem == NULL : buf == NULL) {
		err_set(&r->err, ERR_NOMEM, "out of memory");
		goto out;
	}
	if (md5)
		EVP_DigestInit_ex(md5, EVP_md5(), NULL);
	while (off < r->size) {
		unsigned char *dst = r->mem ? r->mem + off : buf;
		size_t want = r->size - off < chunk ? (size_t)(r->size - off) : chunk;
		ssize_t k = pread(r->fd, dst, want, (off_t)off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k < 0)
				err_sys(&r->err, errno, "reading the source of \"%s\"", r->key);
			else
				err_set(&r->err, ERR_INTEGRITY,
					"the source of \"%s\" is shorter than %llu bytes; did it "
					"change?",
					r->key, (unsigned long long)r->size);
			goto out;
		}
		if (md5) { /* a big one: its MD5 and CRC-32C, for the metadata */
			EVP_DigestUpdate(md5, dst, (size_t)k);
			r->crc = crc32c(r->crc, dst, (size_t)k);
		}
		off += (uint64_t)k;
	}
	if (md5) {
		md5_final(md5, r->md5);
		r->have_md5 = r->have_crc = true;
	} else
		hash_mem(r);
out:
	EVP_MD_CTX_free(md5);
	free(buf);
}

/*
 * The same, on the loop, for a small source the page cache holds whole
 * (preadv2 with RWF_NOWAIT fails rather than wait for the disk): a
 * migration's sources were mostly written or read moments ago, and a trip
 * through the pool costs two thread wake-ups per image, a fair part of the
 * daemon's CPU at a thousand images a second.  Up to S3_LOOP_READ_MAX, so
 * hashing keeps the loop from its other transfers for at most a fraction of
 * a millisecond.  Anything else (not cached, short, an error, a file system
 * without RWF_NOWAIT) goes to the pool, which reads it again and says what
 * went wrong.
 */
static bool read_cached(struct store_req *r)
{
#ifdef RWF_NOWAIT
	uint64_t off = 0;

	if (r->size > S3_LOOP_READ_MAX || r->st->no_nowait)
		return false;
	r->mem = malloc(r->size ? r->size : 1);
	if (r->mem == NULL)
		return false;
	while (off < r->size) {
		struct iovec iov = {r->mem + off, (size_t)(r->size - off)};
		ssize_t k = preadv2(r->fd, &iov, 1, (off_t)off, RWF_NOWAIT);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k < 0 && errno == EOPNOTSUPP)
				r->st->no_nowait = true;
			free(r->mem);
			r->mem = NULL;
			return false;
		}
		off += (uint64_t)k;
	}
	hash_mem(r);
	return true;
#else
	(void)r;
	return false;
#endif
}

static bool mpu_put_start(struct store_req *r, struct err *e);

/* A source hashed (read_work(), read_cached()): its upload. */
static bool put_hashed(struct store_req *r, struct err *e)
{
	return r->size > r->st->threshold ? mpu_put_start(r, e) : put_single(r, e);
}

static void read_done(struct workq_job *job)
{
	struct store_req *r = (struct store_req *)((char *)job - offsetof(struct store_req, job));
	struct err e = {0};

	r->in_pool = false;
	if (r->finished) { /* cancelled meanwhile */
		req_free(r);
		return;
	}
	if (!r->have_md5) {
		e = r->err;
		req_finish(r, &e);
		return;
	}
	if (!put_hashed(r, &e))
		req_finish(r, &e);
}

/* multipart */

static void mpu_pump(struct store_req *r);
static void copy_verify_done(struct s3_call *c, const struct err *e);
static void copy_head_done(struct s3_call *c, const struct err *e);
static bool head_source(struct store_req *r, call_done_fn on_done, struct err *e);

static bool abort_start(struct store_req *r, struct err *e);
static bool copy_begin(struct store_req *r, struct err *e);

/* If-Match's value for r->if_tag ("ETAG:SIZE", set_tag()): the ETag,
 * quoted unless the store learnt otherwise (if_match_rechecked). */
static void set_if_match(struct store_req *r)
{
	const char *colon = strrchr(r->if_tag, ':');

	snprintf(r->if_match_etag, sizeof(r->if_match_etag),
		 r->st->if_match_bare ? "%.*s" : "\"%.*s\"", (int)(colon - r->if_tag), r->if_tag);
}

/* The write's condition: only over the object with the tag the caller
 * looked at. */
static void set_if_tag(struct store_req *r, const struct obj_info *known)
{
	if (known == NULL || strrchr(known->if_tag, ':') == NULL)
		return;
	snprintf(r->if_tag, sizeof(r->if_tag), "%s", known->if_tag);
	set_if_match(r);
}

/* A HEAD of key in store at (NULL, NULL: the request's own object). */
static bool head(struct store_req *r, struct s3_store *at, const char *key, call_done_fn on_done,
		 struct err *e)
{
	struct s3_call *c = call_new(r, on_done, S3_ERROR_BODY_MAX);

	if (c == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	c->at = at;
	c->at_key = key;
	if (!call_start(r, c, "HEAD", NULL, 0, SIGV4_EMPTY_SHA256, NULL, 0, e)) {
		call_free(c);
		return false;
	}
	return true;
}

/* The key was looked at before a write that may only create it, or only
 * replace the object looked at earlier (if_tag). */
static void target_looked(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct err pe = {0};
	bool ok;

	/* a 403: credentials that may write but not list the bucket cannot
	 * tell a missing key from a forbidden one; the write's own condition
	 * is all there is then */
	if (e && e->code != ERR_NOTFOUND && e->code != ERR_DENIED) {
		pe = *e;
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	if (e == NULL && r->if_tag[0]) {
		struct obj_info now;

		fill_info(c, &now);
		if (strcmp(now.tag, r->if_tag) != 0)
			err_set(&pe, ERR_EXISTS,
				"\"%s\" changed since it was looked at (written again); not "
				"replaced",
				r->key);
	} else if (e == NULL)
		err_set(&pe, ERR_EXISTS, "\"%s\" exists already; not replaced", r->key);
	else if (e->code == ERR_NOTFOUND && r->if_tag[0])
		err_set(&pe, ERR_EXISTS, "\"%s\" was removed since it was looked at; not replaced",
			r->key);
	call_free(c);
	if (pe.code) {
		req_finish(r, &pe);
		return;
	}
	r->looked = true;
	if (r->kind == S3_PUT)
		ok = mpu_start(r, &pe);
	else
		ok = r->src_given ? copy_begin(r, &pe) : head_source(r, copy_head_done, &pe);
	if (!ok)
		req_finish(r, &pe);
}

/* A multipart upload or a server-side copy that may only create the
 * object, or only replace the one looked at, looks first: radosgw 16 does
 * not check If-None-Match on CompleteMultipartUpload (AWS does, and
 * If-Match; both are sent), and CopyObject takes no condition on its
 * target.  Only a writer slipping in between the look and the write goes
 * unnoticed there.  A single PUT needs no look: its condition is checked
 * (If-Match by radosgw, moto and AWS alike; see if_match_rechecked). */
static bool look_first(struct store_req *r, struct err *e)
{
	return head(r, NULL, NULL, target_looked, e);
}

static bool mpu_put_start(struct store_req *r, struct err *e)
{
	return (r->if_absent || r->if_tag[0]) && !r->looked ? look_first(r, e) : mpu_start(r, e);
}

/* The abort is over, done or given up; the request with it. */
static void abort_end(struct store_req *r, const struct err *e)
{
	struct err saved = r->err;

	if (e)
		log_warn("store \"%s\": could not abort the multipart upload of \"%s\" (%s); "
			 "a bucket lifecycle rule for incomplete uploads cleans it up",
			 r->st->base.cfg->name, r->key, e->msg);
	if (r->kind == S3_ABORT) { /* detached, after a cancel: nobody waits */
		req_free(r);
		return;
	}
	req_finish(r, &saved);
}

static void abort_again(void *arg)
{
	struct store_req *r = arg;
	struct err e = {0};

	if (!abort_start(r, &e))
		abort_end(r, &e);
}

static void abort_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;

	call_free(c);
	/* A server failing for a moment, or (as S3 warns) parts of the upload
	 * still arriving: the abort is worth asking again, after a pause. */
	if (e && err_retryable(e->code) && r->abort_attempts < S3_PART_ATTEMPTS) {
		loop_timer_init(&r->abort_timer, abort_again, r);
		loop_timer_set(r->st->base.env.loop, &r->abort_timer, 1000u * r->abort_attempts);
		return;
	}
	abort_end(r, e);
}

static bool abort_start(struct store_req *r, struct err *e)
{
	struct s3_call *c = call_new(r, abort_done, S3_ERROR_BODY_MAX);
	struct qparam q[1] = {{"uploadId", r->upload_id}};

	if (c == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	if (!call_start(r, c, "DELETE", q, 1, SIGV4_EMPTY_SHA256, NULL, 0, e)) {
		call_free(c);
		return false;
	}
	r->abort_attempts++;
	return true;
}

/* Record the first failure; once nothing is in flight, abort the upload. */
static void mpu_fail(struct store_req *r, const struct err *e)
{
	struct err e2 = {0};

	if (e && !r->failing) {
		r->failing = true;
		r->err = *e;
	}
	if (r->inflight > 0)
		return;
	if (r->upload_id == NULL || !abort_start(r, &e2)) {
		struct err saved = r->err;

		req_finish(r, &saved);
	}
}

static void complete_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct s3_error x;
	struct err pe = {0};
	char etag[72], want[72];
	EVP_MD_CTX *ctx;
	unsigned char all[16];

	r->inflight--;
	if (e) {
		struct err copy = *e;

		call_free(c);
		mpu_fail(r, &copy);
		return;
	}
	/* A 200 answer may still carry an <Error> in its body. */
	if (!s3_xml_complete(buf_str(&c->resp), c->resp.len, etag, sizeof(etag), &x, &pe)) {
		unreadable_answer(&pe, "CompleteMultipartUpload", r->key);
		call_free(c);
		mpu_fail(r, &pe);
		return;
	}
	if (etag[0] == '\0') /* radosgw 16 leaves the element empty, but sends the header */
		response_etag(c->easy, etag, sizeof(etag));
	if (x.present) {
		err_set(&pe, ERR_TRANSIENT,
			"CompleteMultipartUpload of \"%s\" failed inside a 200 answer (%s%s%s)",
			r->key, x.code, x.message[0] ? ": " : "", x.message);
		call_free(c);
		mpu_fail(r, &pe);
		return;
	}
	/* The ETag of a multipart object is MD5(part MD5s) "-" part count
	 * (where ETags are MD5s at all: not with SSE-KMS or SSE-C). */
	ctx = EVP_MD_CTX_new();
	for (uint32_t i = 0; ctx && i < r->nparts; i++)
		if (!r->parts[i].have_md5) {
			EVP_MD_CTX_free(ctx);
			ctx = NULL;
		}
	if (ctx) {
		EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
		for (uint32_t i = 0; i < r->nparts; i++)
			EVP_DigestUpdate(ctx, r->parts[i].md5, 16);
		md5_final(ctx, all);
		EVP_MD_CTX_free(ctx);
		hex_encode(all, 16, want);
		snprintf(want + 32, sizeof(want) - 32, "-%u", r->nparts);
		if (strchr(etag, '-') && etag_comparable(c->easy) && strcasecmp(etag, want) != 0) {
			err_set(&pe, ERR_INTEGRITY,
				"multipart upload of \"%s\": the server's ETag %s is not %s",
				r->key, etag, want);
			call_free(c);
			free(r->upload_id); /* complete: nothing to abort any more */
			r->upload_id = NULL;
			drop_written(r, &pe);
			return;
		}
	}
	if (r->info) {
		memset(r->info, 0, sizeof(*r->info));
		r->info->size = r->size;
		snprintf(r->info->etag, sizeof(r->info->etag), "%s", etag);
		snprintf(r->info->content_type, sizeof(r->info->content_type), "%s",
			 r->content_type);
		/* every part was copied from the version src_etag names (checked
		 * below): the content is that version's */
		if (r->kind == S3_COPY && r->src_etag[0] && r->src_has_md5) {
			r->info->has_md5 = true;
			memcpy(r->info->md5, r->src_md5, 16);
		}
		set_tag(r->info);
	}
	call_free(c);
	free(r->upload_id); /* complete: nothing to abort any more */
	r->upload_id = NULL;
	if (r->kind == S3_COPY && r->src_etag[0]) {
		if (!head_source(r, copy_verify_done, &pe))
			req_finish(r, &pe);
		return;
	}
	req_finish(r, NULL);
}

static void mpu_complete(struct store_req *r)
{
	struct s3_call *c = call_new(r, complete_done, S3_ERROR_BODY_MAX);
	struct buf body = BUF_INIT;
	struct qparam q[1];
	struct sigv4_pair extra[2] = {{"content-type", "application/xml"}, {"if-none-match", "*"}};
	char hash[65];
	struct err e = {0};

	if (c == NULL) {
		mpu_fail(r, &(struct err){ERR_NOMEM, "out of memory"});
		return;
	}
	buf_puts(&body,
		 "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
	for (uint32_t i = 0; i < r->nparts; i++)
		buf_printf(&body, "<Part><PartNumber>%u</PartNumber><ETag>\"%s\"</ETag></Part>",
			   i + 1, r->parts[i].etag);
	buf_puts(&body, "</CompleteMultipartUpload>");
	if (!buf_ok(&body, &e)) {
		call_free(c);
		buf_free(&body);
		mpu_fail(r, &e);
		return;
	}
	c->post = buf_steal(&body);
	sigv4_sha256_hex(c->post, strlen(c->post), hash);
	q[0] = (struct qparam){"uploadId", r->upload_id};
	r->inflight++;
	if (r->if_tag[0])
		extra[1] = (struct sigv4_pair){"if-match", r->if_match_etag};
	if (!call_start(r, c, "POST", q, 1, hash, extra, r->if_absent || r->if_tag[0] ? 2 : 1,
			&e)) {
		r->inflight--;
		call_free(c);
		mpu_fail(r, &e);
	}
}

static void part_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct s3_part *p = &r->parts[c->part - 1];
	struct err pe;
	char etag[72];

	r->inflight--;
	if (!e && c->copy) {
		struct s3_error x;
		int64_t mtime;

		if (!s3_xml_copy_result(buf_str(&c->resp), c->resp.len, etag, sizeof(etag), &mtime,
					&x, &pe)) {
			unreadable_answer(&pe, "UploadPartCopy", r->key);
			e = &pe;
		} else if (x.present) {
			explain_error(r, c, &x, &pe);
			e = &pe;
		} else {
			snprintf(p->etag, sizeof(p->etag), "%s", etag);
			p->have_md5 = etag_is_md5(etag) && etag_comparable(c->easy) &&
				      hex_decode(etag, 32, p->md5);
		}
	} else if (!e) {
		md5_final(c->md5, p->md5);
		p->have_md5 = true;
		response_etag(c->easy, etag, sizeof(etag));
		if (etag[0] == '\0') {
			err_set(&pe, ERR_TRANSIENT, "part %u of \"%s\": the server gave no ETag",
				c->part, r->key);
			e = &pe;
		} else if (etag_is_md5(etag) && etag_comparable(c->easy) &&
			   !etag_matches(etag, p->md5)) {
			err_set(&pe, ERR_INTEGRITY,
				"part %u of \"%s\": the server stored different bytes (ETag %s)",
				c->part, r->key, etag);
			e = &pe;
		} else
			snprintf(p->etag, sizeof(p->etag), "%s", etag);
	} else {
		pe = *e;
		e = &pe;
	}
	/* a changed source stays changed: no point in copying the part again */
	if (e && err_retryable(e->code) && p->attempts < S3_PART_ATTEMPTS && !r->failing &&
	    strcmp(c->s3code, "PreconditionFailed") != 0) {
		log_debug("store \"%s\": retrying part %u of \"%s\": %s", r->st->base.cfg->name,
			  c->part, r->key, e->msg);
		p->state = PART_TODO;
		if (c->part - 1 < r->next_part)
			r->next_part = c->part - 1;
		call_free(c);
		mpu_pump(r);
		return;
	}
	call_free(c);
	if (e) {
		p->state = PART_TODO;
		mpu_fail(r, e);
		return;
	}
	p->state = PART_DONE;
	r->parts_done++;
	mpu_pump(r);
}

/* UploadPartCopy of part i: its range of the source, from the version
 * x-amz-copy-source-if-match names. */
static bool copy_part_start(struct store_req *r, uint32_t i, struct err *e)
{
	struct s3_call *c = call_new(r, part_done, S3_ERROR_BODY_MAX);
	uint64_t off = (uint64_t)i * r->part_size;
	uint64_t len = r->size - off < r->part_size ? r->size - off : r->part_size;
	char num[16], range[64], ifmatch[80];
	struct qparam q[2];
	struct sigv4_pair extra[3];
	size_t nx = 0;

	if (c == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	c->copy = true;
	c->part = i + 1;
	r->parts[i].attempts++;
	snprintf(num, sizeof(num), "%u", i + 1);
	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	q[0] = (struct qparam){"partNumber", num};
	q[1] = (struct qparam){"uploadId", r->upload_id};
	extra[nx++] = (struct sigv4_pair){"x-amz-copy-source", r->copy_source};
	extra[nx++] = (struct sigv4_pair){"x-amz-copy-source-range", range};
	if (r->src_etag[0]) {
		snprintf(ifmatch, sizeof(ifmatch), "\"%s\"", r->src_etag);
		extra[nx++] = (struct sigv4_pair){"x-amz-copy-source-if-match", ifmatch};
	}
	if (!call_start(r, c, "PUT", q, 2, SIGV4_EMPTY_SHA256, extra, nx, e)) {
		call_free(c);
		return false;
	}
	c->method = "UploadPartCopy";
	return true;
}

static void mpu_pump(struct store_req *r)
{
	if (r->failing) {
		mpu_fail(r, NULL);
		return;
	}
	for (uint32_t i = r->next_part; i < r->nparts && r->inflight < S3_PART_PARALLEL; i++) {
		struct s3_part *p = &r->parts[i];
		struct s3_call *c;
		struct qparam q[2];
		char num[16];
		struct err e = {0};

		if (p->state != PART_TODO)
			continue;
		if (r->kind == S3_COPY) {
			if (!copy_part_start(r, i, &e)) {
				mpu_fail(r, &e);
				return;
			}
			p->state = PART_INFLIGHT;
			r->inflight++;
			continue;
		}
		c = call_new(r, part_done, S3_ERROR_BODY_MAX);
		if (c == NULL || (c->md5 = EVP_MD_CTX_new()) == NULL) {
			call_free(c);
			mpu_fail(r, &(struct err){ERR_NOMEM, "out of memory"});
			return;
		}
		EVP_DigestInit_ex(c->md5, EVP_md5(), NULL);
		c->part = i + 1;
		c->in_fd = r->fd;
		c->off = (uint64_t)i * r->part_size;
		c->len = r->size - c->off < r->part_size ? r->size - c->off : r->part_size;
		p->attempts++;
		snprintf(num, sizeof(num), "%u", i + 1);
		q[0] = (struct qparam){"partNumber", num};
		q[1] = (struct qparam){"uploadId", r->upload_id};
		if (!call_start(r, c, "PUT", q, 2, SIGV4_UNSIGNED_PAYLOAD, NULL, 0, &e)) {
			call_free(c);
			mpu_fail(r, &e);
			return;
		}
		p->state = PART_INFLIGHT;
		r->inflight++;
	}
	while (r->next_part < r->nparts && r->parts[r->next_part].state == PART_DONE)
		r->next_part++;
	if (r->parts_done == r->nparts && r->inflight == 0)
		mpu_complete(r);
}

static void create_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct err pe = {0};

	r->inflight--;
	if (r->cancelled) {
		/* cancelled while the upload was being created: abort it now
		 * that its id is known, nobody waiting */
		bool have =
		    !e && s3_xml_upload_id(buf_str(&c->resp), c->resp.len, &r->upload_id, &pe);

		call_free(c);
		r->kind = S3_ABORT;
		if (!have || !abort_start(r, &pe))
			req_free(r);
		return;
	}
	if (e) {
		pe = *e;
		call_free(c);
		mpu_fail(r, &pe);
		return;
	}
	if (!s3_xml_upload_id(buf_str(&c->resp), c->resp.len, &r->upload_id, &pe)) {
		unreadable_answer(&pe, "CreateMultipartUpload", r->key);
		call_free(c);
		mpu_fail(r, &pe);
		return;
	}
	call_free(c);
	mpu_pump(r);
}

/* Start CreateMultipartUpload, for a put or a copy of r->size bytes with
 * r->content_type; false (nothing started) on failure. */
static bool mpu_start(struct store_req *r, struct err *e)
{
	struct s3_call *c;
	uint64_t part = r->st->part_size;
	struct qparam q[1] = {{"uploads", ""}};
	struct sigv4_pair extra[3];
	struct sums_hex hex;
	size_t nx = 0;

	/* at most 10,000 parts: grow this upload's part size in whole MiB */
	if ((r->size + part - 1) / part > S3_MAX_PARTS) {
		part = (r->size + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
		part = (part + (1 << 20) - 1) & ~((uint64_t)(1 << 20) - 1);
	}
	r->part_size = part;
	r->nparts = (uint32_t)((r->size + part - 1) / part);
	r->parts = calloc(r->nparts, sizeof(*r->parts));
	c = call_new(r, create_done, S3_ERROR_BODY_MAX);
	if (c == NULL || r->parts == NULL) {
		call_free(c);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	if (r->content_type[0])
		extra[nx++] = (struct sigv4_pair){"content-type", r->content_type};
	if (r->kind == S3_PUT)
		nx = add_sums(extra, nx, r->have_md5 ? r->md5 : NULL, r->have_crc ? &r->crc : NULL,
			      &hex);
	else if (r->kind == S3_COPY && r->src_etag[0])
		nx = add_sums(extra, nx, r->src_has_md5 ? r->src_md5 : NULL,
			      r->src_has_crc ? &r->src_crc : NULL, &hex);
	if (!call_start(r, c, "POST", q, 1, SIGV4_EMPTY_SHA256, extra, nx, e)) {
		call_free(c);
		return false;
	}
	r->inflight++;
	return true;
}

static bool s3_put(struct store *s, const char *key, int fd, uint64_t size,
		   const struct obj_info *known, struct obj_info *out, store_done_fn done,
		   void *arg, struct store_req **req, struct err *e)
{
	struct s3_store *st = (struct s3_store *)s;
	struct store_req *r;
	bool started;

	if (key == NULL || key[0] == '\0' || strlen(key) > 1024)
		return err_set(e, ERR_INVALID, "store \"%s\": an S3 key is 1 to 1024 bytes",
			       s->cfg->name);
	r = req_new(st, S3_PUT, key, done, arg, e);
	if (r == NULL)
		return false;
	r->fd = fd;
	r->size = size;
	r->info = out;
	if (known && known->content_type[0])
		snprintf(r->content_type, sizeof(r->content_type), "%s", known->content_type);
	if (known && known->has_md5 && size > S3_BUFFER_MAX) {
		memcpy(r->md5, known->md5, 16);
		r->have_md5 = true;
		r->crc = known->crc32c; /* checked, as the MD5 is, by a download */
		r->have_crc = known->has_crc32c;
	}
	r->if_absent = known && known->if_absent;
	set_if_tag(r, known);
	if (size > st->threshold && r->have_md5)
		started = mpu_put_start(r, e);
	else if (size <= st->threshold &&
		 (r->have_md5 || (size > S3_BUFFER_MAX && !r->if_absent && !r->if_tag[0])))
		started =
		    put_single(r, e); /* streamed; Content-MD5 if known, else the ETag checks */
	else if (read_cached(r))
		started = put_hashed(r, e);
	else { /* small: read and hashed; in parts: hashed first (read_done starts it);
		* one that may only create its object, or only replace the one looked
		* at, is hashed first too: with Content-MD5 the server refuses bytes
		* damaged on the way, where a check of the ETag afterwards leaves a
		* bad object that a retry would find in its way should deleting it
		* fail */
		r->job.work = read_work;
		r->job.done = read_done;
		r->in_pool = true;
		workq_submit(s->env.wq, &r->job);
		started = true;
	}
	if (!started) {
		req_free(r);
		err_prefix(e, "store \"%s\": ", s->cfg->name);
		return false;
	}
	*req = r;
	return true;
}

/*
 * Copy on the server (CopyObject, or UploadPartCopy parts for objects above
 * min(5 GiB, multipart_threshold)), between buckets of one server that the
 * same credentials reach.  When the source's ETag is known (src_info, or a
 * HEAD of the source), every request names that version
 * (x-amz-copy-source-if-match), so a source rewritten meanwhile fails with
 * 412 instead of being copied half old, half new.  Some servers ignore the
 * condition (radosgw 16, moto), so the result is checked too: a single
 * copy's plain-MD5 ETag must be the source's, and where ETags cannot be
 * compared (multipart sources, multipart copies) a HEAD of the source after
 * the copy must still show the same ETag; a multipart copy that fails this
 * may mix two versions and is deleted.  Either way the error is
 * ERR_INTEGRITY: read the source again and retry.  A multipart upload
 * copies no metadata: its Content-Type is the one given or, failing that,
 * the one a HEAD of the source reports.
 */

#define S3_COPY_MAX (5ull << 30) /* the largest CopyObject S3 accepts */

static uint64_t copy_single_max(const struct s3_store *st)
{
	return st->threshold < S3_COPY_MAX ? st->threshold : S3_COPY_MAX;
}

static void copy_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct s3_error x;
	struct err pe = {0};
	char etag[72];
	int64_t mtime;
	bool md5;

	if (e) {
		pe = *e;
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	/* A 200 answer may still carry an <Error> in its body. */
	if (!s3_xml_copy_result(buf_str(&c->resp), c->resp.len, etag, sizeof(etag), &mtime, &x,
				&pe)) {
		unreadable_answer(&pe, "CopyObject", r->key);
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	if (x.present) {
		explain_error(r, c, &x, &pe);
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	md5 = etag_is_md5(etag) && etag_comparable(c->easy);
	if (md5 && r->src_etag[0] && r->src_has_md5 && !etag_matches(etag, r->src_md5)) {
		err_set(
		    &pe, ERR_INTEGRITY,
		    "CopyObject \"%s\" (from \"%s\" in bucket \"%s\"): the source changed since "
		    "it was read (its ETag is %s now, not %s; the copy holds the new content); "
		    "read it again and retry",
		    r->key, r->src_key, r->src->base.cfg->bucket, etag, r->src_etag);
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	if (r->info) {
		memset(r->info, 0, sizeof(*r->info));
		r->info->size = r->size;
		snprintf(r->info->etag, sizeof(r->info->etag), "%s", etag);
		r->info->mtime = mtime;
		snprintf(r->info->content_type, sizeof(r->info->content_type), "%s",
			 r->content_type);
		if (md5)
			r->info->has_md5 = hex_decode(etag, 32, r->info->md5);
		else if (r->src_etag[0] && r->src_has_md5) {
			r->info->has_md5 = true;
			memcpy(r->info->md5, r->src_md5, 16);
		}
		set_tag(r->info);
	}
	call_free(c);
	/* the same MD5 proves the content; otherwise ask the source again */
	if (r->src_etag[0] && !(md5 && r->src_has_md5)) {
		if (!head_source(r, copy_verify_done, &pe))
			req_finish(r, &pe);
		return;
	}
	req_finish(r, NULL);
}

/* A multipart copy found mixed is deleted; its error is kept in r->err. */
static void copy_verify_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct obj_info info;
	struct err pe = {0};

	if (e && c->status == 404) {
		/* deleted since, after the copy read it (reading a missing source
		 * fails): the copy holds the version asked for */
		call_free(c);
		req_finish(r, NULL);
		return;
	}
	if (e) {
		pe = *e;
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	fill_info(c, &info);
	call_free(c);
	if (strcmp(info.etag, r->src_etag) == 0) {
		req_finish(r, NULL);
		return;
	}
	if (r->parts == NULL) {
		err_set(&pe, ERR_INTEGRITY,
			"CopyObject \"%s\" (from \"%s\" in bucket \"%s\"): the source changed "
			"since it was read (its ETag is %s now, not %s; the copy holds the new "
			"content); read it again and retry",
			r->key, r->src_key, r->src->base.cfg->bucket, info.etag, r->src_etag);
		req_finish(r, &pe);
		return;
	}
	/* parts may come from either version: a mix nobody must read */
	err_set(&pe, ERR_INTEGRITY,
		"multipart copy of \"%s\" (from \"%s\" in bucket \"%s\"): the source changed "
		"since it was read (its ETag is %s now, not %s) and the server did not refuse "
		"it; the copy was deleted: read the source again and retry",
		r->key, r->src_key, r->src->base.cfg->bucket, info.etag, r->src_etag);
	drop_written(r, &pe);
}

/* A HEAD of a copy's source: before the copy, for its size, ETag and
 * Content-Type (copy_head_done); once the copy is made, whether it is still
 * the version src_etag names (copy_verify_done): servers that ignore
 * x-amz-copy-source-if-match (radosgw 16, moto) would otherwise copy a
 * rewritten source silently. */
static bool head_source(struct store_req *r, call_done_fn on_done, struct err *e)
{
	return head(r, r->src, r->src_key, on_done, e);
}

/* The sums of the copy's source, as a stat or the caller saw it. */
static void src_sums(struct store_req *r, const struct obj_info *info)
{
	r->src_has_md5 = info->has_md5;
	memcpy(r->src_md5, info->md5, 16);
	r->src_has_crc = info->has_crc32c;
	r->src_crc = info->crc32c;
}

/* CopyObject; false (nothing started) on failure. */
static bool copy_single(struct store_req *r, struct err *e)
{
	struct s3_call *c = call_new(r, copy_done, S3_ERROR_BODY_MAX);
	struct sigv4_pair extra[6];
	struct sums_hex hex;
	char ifmatch[80];
	size_t nx = 0;

	if (c == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	c->copy = true;
	extra[nx++] = (struct sigv4_pair){"x-amz-copy-source", r->copy_source};
	if (r->src_etag[0]) {
		snprintf(ifmatch, sizeof(ifmatch), "\"%s\"", r->src_etag);
		extra[nx++] = (struct sigv4_pair){"x-amz-copy-source-if-match", ifmatch};
	}
	extra[nx++] =
	    (struct sigv4_pair){"x-amz-metadata-directive", r->replace_ct ? "REPLACE" : "COPY"};
	if (r->replace_ct)
		extra[nx++] = (struct sigv4_pair){"content-type", r->content_type};
	/* REPLACE drops the source's metadata: its sums go along again (the
	 * MD5 where the ETag is not it) */
	if (r->replace_ct && r->src_etag[0])
		nx = add_sums(extra, nx,
			      r->src_has_md5 && !etag_is_md5(r->src_etag) ? r->src_md5 : NULL,
			      r->src_has_crc ? &r->src_crc : NULL, &hex);
	if (!call_start(r, c, "PUT", NULL, 0, SIGV4_EMPTY_SHA256, extra, nx, e)) {
		call_free(c);
		return false;
	}
	c->method = "CopyObject";
	return true;
}

/* With what is known of the source, start the copy the size calls for. */
static bool copy_begin(struct store_req *r, struct err *e)
{
	if (r->size <= copy_single_max(r->st))
		return copy_single(r, e);
	if (r->content_type[0] == '\0' && !r->src_known)
		return head_source(r, copy_head_done,
				   e); /* the parts will not carry the source's type */
	return mpu_start(r, e);
}

static void copy_head_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct obj_info info;
	struct err pe = {0};

	if (e) {
		pe = *e;
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	fill_info(c, &info);
	call_free(c);
	if (r->src_etag[0] && strcmp(r->src_etag, info.etag) != 0) {
		err_set(&pe, ERR_INTEGRITY,
			"copy of \"%s\" (in bucket \"%s\") to \"%s\": the source changed since it "
			"was read (its ETag is %s now, not %s); read it again and retry",
			r->src_key, r->src->base.cfg->bucket, r->key, info.etag, r->src_etag);
		req_finish(r, &pe);
		return;
	}
	if (!r->src_known) {
		r->size = info.size;
		src_sums(r, &info);
	}
	/* from now on every request names the version seen here */
	snprintf(r->src_etag, sizeof(r->src_etag), "%s", info.etag);
	if (r->content_type[0] == '\0')
		snprintf(r->content_type, sizeof(r->content_type), "%s", info.content_type);
	r->src_known = true;
	if (!copy_begin(r, &pe))
		req_finish(r, &pe);
}

static bool same_str(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Conservative: one server reached the same way with the same identity,
 * so a request signed for dst may name an object of src. */
static bool s3_can_copy(struct store *dst, struct store *src)
{
	const struct s3_store *a = (const struct s3_store *)dst, *b = (const struct s3_store *)src;
	const struct store_cfg *ca = dst->cfg, *cb = src->cfg;

	if (dst->ops != &s3_store_ops || src->ops != &s3_store_ops)
		return false;
	return same_str(a->endpoint, b->endpoint) && same_str(a->creds.region, b->creds.region) &&
	       ca->path_style == cb->path_style && same_str(ca->access_key_id, cb->access_key_id) &&
	       same_str(ca->secret_access_key, cb->secret_access_key) &&
	       same_str(ca->session_token, cb->session_token) && ca->tls_verify == cb->tls_verify &&
	       same_str(ca->ca_file, cb->ca_file);
}

static bool s3_copy(struct store *dst, struct store *src, const char *src_key, const char *dst_key,
		    const struct obj_info *src_info, struct obj_info *out, store_done_fn done,
		    void *arg, struct store_req **req, struct err *e)
{
	struct s3_store *st = (struct s3_store *)dst;
	struct store_req *r;
	struct buf b = BUF_INIT;
	bool started;

	if (dst_key == NULL || dst_key[0] == '\0' || strlen(dst_key) > 1024 || src_key == NULL ||
	    src_key[0] == '\0' || strlen(src_key) > 1024)
		return err_set(e, ERR_INVALID, "store \"%s\": an S3 key is 1 to 1024 bytes",
			       dst->cfg->name);
	if (!s3_can_copy(dst, src))
		return err_set(e, ERR_INVALID,
			       "store \"%s\": cannot copy from store \"%s\" on the server (another "
			       "backend, server or set of credentials)",
			       dst->cfg->name, src->cfg->name);
	r = req_new(st, S3_COPY, dst_key, done, arg, e);
	if (r == NULL)
		return false;
	r->src = (struct s3_store *)src;
	r->info = out;
	/* "/bucket/key", the key percent-encoded as in a path */
	buf_putc(&b, '/');
	buf_puts(&b, src->cfg->bucket);
	buf_putc(&b, '/');
	sigv4_uri_encode(&b, src_key, strlen(src_key), true);
	r->src_key = strdup(src_key);
	if (!buf_ok(&b, e) || r->src_key == NULL) {
		buf_free(&b);
		req_free(r);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	r->copy_source = buf_steal(&b);
	if (src_info) {
		r->size = src_info->size;
		snprintf(r->src_etag, sizeof(r->src_etag), "%s", src_info->etag);
		src_sums(r, src_info);
		snprintf(r->content_type, sizeof(r->content_type), "%s", src_info->content_type);
		r->replace_ct = r->content_type[0] != '\0';
	}
	r->src_given = src_info != NULL;
	r->if_absent = src_info && src_info->if_absent;
	set_if_tag(r, src_info);
	started = r->if_absent || r->if_tag[0] ? look_first(r, e)
		  : src_info		       ? copy_begin(r, e)
					       : head_source(r, copy_head_done, e);
	if (!started) {
		req_free(r);
		err_prefix(e, "store \"%s\": ", dst->cfg->name);
		return false;
	}
	*req = r;
	return true;
}

/* GET, HEAD, DELETE */

/* The MD5 of the bytes received against what the object says it is
 * (fill_info: its ETag, or the MD5 imgsync stored with a multipart upload). */
static bool get_check(struct store_req *r, const unsigned char got[16], struct obj_info *info,
		      struct err *e)
{
	if (info->has_md5 && memcmp(got, info->md5, 16) != 0) {
		char want[33];

		hex_encode(info->md5, 16, want);
		if (etag_is_md5(info->etag))
			return err_set(e, ERR_INTEGRITY,
				       "GET \"%s\": the bytes received do not match the object's "
				       "ETag %s",
				       r->key, info->etag);
		return err_set(e, ERR_INTEGRITY,
			       "GET \"%s\": the bytes received do not match the MD5 stored with "
			       "the object (%s %s)",
			       r->key, S3_META_MD5, want);
	}
	info->has_md5 = true;
	memcpy(info->md5, got, 16);
	return true;
}

/* The same with the CRC-32C the object was stored with: what the MD5
 * stored beside it is then the MD5 of too. */
static bool get_check_crc(struct store_req *r, uint32_t got, struct obj_info *info, struct err *e)
{
	char want[9], have[9];

	if (!info->has_crc32c || got != info->crc32c) {
		crc_hex(info->crc32c, want);
		crc_hex(got, have);
		return err_set(
		    e, ERR_INTEGRITY,
		    "GET \"%s\": the bytes received do not match the CRC-32C stored with "
		    "the object (%s %s, received %s)",
		    r->key, S3_META_CRC, info->has_crc32c ? want : "(none)", have);
	}
	return true;
}

/* The bytes received, hashed by CRC (in CRC-32C mode) or MD5 (else),
 * against the object's sums. */
static bool get_verify(struct store_req *r, bool crc_mode, uint32_t crc, EVP_MD_CTX *md5,
		       struct obj_info *info, struct err *e)
{
	unsigned char got[16];

	if (crc_mode)
		return get_check_crc(r, crc, info, e);
	md5_final(md5, got);
	return get_check(r, got, info, e);
}

/* A ranged download's MD5 (or CRC-32C) goes on with the ranges that are
 * in, read back from the file (the page cache), off the loop. */
static void get_hash_work(struct workq_job *job)
{
	struct store_req *r = (struct store_req *)((char *)job - offsetof(struct store_req, job));

	if (r->gcrc_mode ? !digest_crc32c_fd(&r->gcrc, r->out_fd, r->hashed_to,
					     r->hash_to - r->hashed_to, &r->hash_err)
			 : !digest_update_fd(r->gmd5, r->out_fd, r->hashed_to,
					     r->hash_to - r->hashed_to, &r->hash_err))
		r->hash_failed = true;
	/* a hint: the pages go to disk while later ranges arrive (the first
	 * range's too, hashed as it came); an error here would show again,
	 * and be reported, at the caller's fsync */
	else if (r->writeback) {
		(void)sync_file_range(r->out_fd, (off_t)r->synced_to,
				      (off_t)(r->hash_to - r->synced_to), SYNC_FILE_RANGE_WRITE);
		r->synced_to = r->hash_to;
	}
}

static void range_pump(struct store_req *r);

static void get_hash_done(struct workq_job *job)
{
	struct store_req *r = (struct store_req *)((char *)job - offsetof(struct store_req, job));

	r->in_pool = false;
	if (r->finished) { /* cancelled meanwhile */
		req_free(r);
		return;
	}
	if (r->hash_failed && !r->gfailed) {
		r->gfailed = true;
		r->err = r->hash_err;
	}
	r->hashed_to = r->hash_to;
	range_pump(r);
}

/* Every range in and hashed: the check, and the end. */
static void get_ranged_end(struct store_req *r)
{
	struct err e = {0};

	if (!get_verify(r, r->gcrc_mode, r->gcrc, r->gmd5, &r->ginfo, &e)) {
		req_finish(r, &e);
		return;
	}
	if (r->info)
		*r->info = r->ginfo;
	req_finish(r, NULL);
}

static void range_done(struct s3_call *c, const struct err *e);

/* A range of a big object, from the same version (If-Match); attempt
 * counts from 1. */
static bool range_get(struct store_req *r, uint64_t off, uint64_t len, unsigned attempt,
		      struct err *e)
{
	struct s3_call *c = call_new(r, range_done, S3_ERROR_BODY_MAX);
	struct sigv4_pair extra[1] = {{"if-match", r->if_match}};

	if (c == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	c->out_fd = r->out_fd;
	c->out_off = off;
	c->len = len;
	c->attempt = attempt;
	snprintf(c->range_buf, sizeof(c->range_buf), "%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + len - 1));
	c->range = c->range_buf;
	if (!call_start(r, c, "GET", NULL, 0, SIGV4_EMPTY_SHA256, extra, 1, e)) {
		call_free(c);
		return false;
	}
	r->inflight++;
	return true;
}

/* The next range not asked for yet. */
static bool range_start(struct store_req *r, struct err *e)
{
	uint64_t range = r->st->base.cfg->range_size;
	uint64_t len = r->total - r->next_off < range ? r->total - r->next_off : range;

	if (!range_get(r, r->next_off, len, 1, e))
		return false;
	r->next_off += len;
	return true;
}

/* Ranges in flight up to S3_GET_STREAMS; the hash over those in before the
 * first still in flight, one job at a time; the end once all are in and
 * hashed (or, after a failure, once none is in flight or in the pool). */
static void range_pump(struct store_req *r)
{
	struct err e = {0};
	uint64_t frontier;

	while (!r->gfailed && r->inflight < S3_GET_STREAMS && r->next_off < r->total)
		if (!range_start(r, &e)) {
			r->gfailed = true;
			r->err = e;
		}
	if (r->in_pool)
		return; /* get_hash_done comes back here */
	if (r->gfailed) {
		if (r->inflight == 0) {
			e = r->err;
			req_finish(r, &e);
		}
		return;
	}
	frontier = r->next_off;
	for (struct s3_call *c = r->calls; c; c = c->next)
		if (c->out_off < frontier)
			frontier = c->out_off;
	if (frontier > r->hashed_to) {
		r->hash_to = frontier;
		r->job.work = get_hash_work;
		r->job.done = get_hash_done;
		r->in_pool = true;
		workq_submit(r->st->base.env.wq, &r->job);
		return;
	}
	if (r->inflight == 0 && r->hashed_to == r->total)
		get_ranged_end(r);
}

/* "bytes FIRST-LAST/TOTAL" of a 206 answer. */
static bool content_range(struct s3_call *c, uint64_t *first, uint64_t *last, uint64_t *total)
{
	char v[96];
	unsigned long long a, b, t;
	int end = 0;

	header_value(c->easy, "Content-Range", v, sizeof(v));
	if (sscanf(v, "bytes %llu-%llu/%llu%n", &a, &b, &t, &end) != 3 || v[end] != '\0' || a > b ||
	    b >= t)
		return false;
	*first = a;
	*last = b;
	*total = t;
	return true;
}

static void range_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	uint64_t a, b, t;
	struct err ie;

	r->inflight--;
	if (e) {
		ie = *e;
		if (c->status == 412)
			err_set(&ie, ERR_TRANSIENT,
				"GET \"%s\": the object changed while it was downloaded", r->key);
	} else if (c->status != 206 || !content_range(c, &a, &b, &t) || a != c->out_off ||
		   b + 1 != c->out_off + c->len || t != r->total || c->received != c->len) {
		e = &ie;
		err_set(&ie, ERR_INTEGRITY,
			"GET \"%s\": the answer to a range request (bytes %s) is not that range "
			"(HTTP %ld, %llu bytes)",
			r->key, c->range_buf, c->status, (unsigned long long)c->received);
	}
	/* A range that failed on the way (a reset, a 5xx, a cut or garbled
	 * answer) is asked for again, like a part of an upload, rather than
	 * the whole object; an object that changed (412) is not. */
	if (e && !r->gfailed && c->status != 412 && err_retryable(ie.code) &&
	    c->attempt < S3_PART_ATTEMPTS) {
		struct err re;
		uint64_t off = c->out_off, len = c->len;
		unsigned attempt = c->attempt + 1;

		log_msg(LOG_DEBUG, &(struct log_fields){.key = r->key},
			"store \"%s\": %s; asking for that range again (attempt %u of %d)",
			r->st->base.cfg->name, ie.msg, attempt, S3_PART_ATTEMPTS);
		call_free(c);
		if (range_get(r, off, len, attempt, &re)) {
			range_pump(r);
			return;
		}
		ie = re;
	} else
		call_free(c);
	if (e && !r->gfailed) {
		r->gfailed = true;
		r->err = ie;
	}
	range_pump(r);
}

/* The first answer of a big object: the rest comes in ranges. */
static bool get_ranged(struct store_req *r, struct s3_call *c, uint64_t total, struct err *e)
{
	fill_info(c, &r->ginfo);
	r->ginfo.size = total;
	if (r->ginfo.etag[0] == '\0')
		return err_set(e, ERR_INTEGRITY,
			       "GET \"%s\": the answer has no ETag, so the rest of the object "
			       "cannot be asked for from the same version (is a proxy dropping "
			       "headers?)",
			       r->key);
	set_tag(&r->ginfo);
	snprintf(r->if_match, sizeof(r->if_match), "\"%s\"", r->ginfo.etag);
	r->out_fd = fcntl(c->out_fd, F_DUPFD_CLOEXEC, 0);
	if (r->out_fd < 0)
		return err_sys(e, errno, "GET \"%s\"", r->key);
	r->next_off = c->received;
	r->total = total;
	/* the first range was hashed as it came: the MD5 goes on from there */
	r->gmd5 = c->md5;
	c->md5 = NULL;
	r->gcrc_mode = c->crc_mode;
	r->gcrc = c->crc;
	r->hashed_to = c->received;
	return true;
}

static bool get_first(struct store_req *r, int fd, bool ranged, struct err *e);

static void get_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct obj_info info;
	uint64_t a, b, total;
	struct err ie;

	if (e && c->status == 416 && c->range) {
		/* an empty object has no first byte: ask for all of it */
		int fd = c->out_fd;

		call_free(c);
		if (!get_first(r, fd, false, &ie))
			req_finish(r, &ie);
		return;
	}
	if (e) {
		struct err copy = *e;

		call_free(c);
		req_finish(r, &copy);
		return;
	}
	if (c->status == 206) {
		if (!content_range(c, &a, &b, &total) || a != 0 || b + 1 != c->received) {
			err_set(&ie, ERR_INTEGRITY,
				"GET \"%s\": the answer to the first range request is not that "
				"range (%llu bytes)",
				r->key, (unsigned long long)c->received);
			call_free(c);
			req_finish(r, &ie);
			return;
		}
		if (total > c->received) {
			if (!get_ranged(r, c, total, &ie)) {
				call_free(c);
				req_finish(r, &ie);
				return;
			}
			call_free(c);
			range_pump(r);
			return;
		}
	}
	fill_info(c, &info);
	if (c->status == 206)
		info.size = c->received; /* the whole object came as the first range */
	if (info.size == 0 && c->received > 0) {
		curl_off_t len = -1;

		curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
		if (len < 0)
			info.size = c->received; /* chunked: curl checked the framing */
	}
	if (c->received != info.size) {
		err_set(&ie, ERR_INTEGRITY, "GET \"%s\": received %llu of %llu bytes", r->key,
			(unsigned long long)c->received, (unsigned long long)info.size);
		call_free(c);
		req_finish(r, &ie);
		return;
	}
	if (!get_verify(r, c->crc_mode, c->crc, c->md5, &info, &ie)) {
		call_free(c);
		req_finish(r, &ie);
		return;
	}
	set_tag(&info);
	if (r->info)
		*r->info = info;
	call_free(c);
	req_finish(r, NULL);
}

/* The first GET of a download: the first range_size bytes (all of a
 * small object), or the whole object when RANGED is false. */
static bool get_first(struct store_req *r, int fd, bool ranged, struct err *e)
{
	struct s3_call *c = call_new(r, get_done, S3_ERROR_BODY_MAX);

	if (c == NULL || (c->md5 = EVP_MD_CTX_new()) == NULL) {
		call_free(c);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	EVP_DigestInit_ex(c->md5, EVP_md5(), NULL);
	c->out_fd = fd;
	if (ranged) {
		snprintf(c->range_buf, sizeof(c->range_buf), "0-%llu",
			 (unsigned long long)r->st->base.cfg->range_size - 1);
		c->range = c->range_buf;
	}
	if (!call_start(r, c, "GET", NULL, 0, SIGV4_EMPTY_SHA256, NULL, 0, e)) {
		call_free(c);
		return false;
	}
	return true;
}

/* A diagnostic GET of one byte answered: its error document explains what
 * the bodiless HEAD could not. */
static void diag_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct err out = e ? *e : r->err;

	if (e)
		snprintf(out.msg, sizeof(out.msg), "%s", e->msg);
	call_free(c);
	req_finish(r, &out);
}

static void stat_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;

	if (!e) {
		if (r->info)
			fill_info(c, r->info);
		call_free(c);
		req_finish(r, NULL);
		return;
	}
	r->err = *e;
	if ((c->status == 400 || c->status == 403) && c->resp.len == 0) {
		struct s3_call *d = call_new(r, diag_done, S3_ERROR_BODY_MAX);
		struct sigv4_pair range[1] = {{"range", "bytes=0-0"}};
		struct err se = {0};

		call_free(c);
		if (d && call_start(r, d, "GET", NULL, 0, SIGV4_EMPTY_SHA256, range, 1, &se)) {
			d->method = "HEAD";
			return;
		}
		call_free(d);
	} else
		call_free(c);
	{
		struct err copy = r->err;

		req_finish(r, &copy);
	}
}

static void del_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;

	/* Deleting what is not there succeeds. */
	if (e && c->status == 404 && strcmp(c->s3code, "NoSuchBucket") != 0)
		e = NULL;
	if (e) {
		struct err copy = *e;

		call_free(c);
		req_finish(r, &copy);
		return;
	}
	call_free(c);
	req_finish(r, NULL);
}

static bool s3_simple(struct store *s, enum s3_kind kind, const char *key, int fd,
		      struct obj_info *out, store_done_fn done, void *arg, struct store_req **req,
		      struct err *e)
{
	struct s3_store *st = (struct s3_store *)s;
	struct store_req *r;
	struct s3_call *c;

	if (key == NULL || key[0] == '\0' || strlen(key) > 1024)
		return err_set(e, ERR_INVALID, "store \"%s\": an S3 key is 1 to 1024 bytes",
			       s->cfg->name);
	r = req_new(st, kind, key, done, arg, e);
	if (r == NULL)
		return false;
	r->info = out;
	if (kind == S3_GET) {
		if (!get_first(r, fd, true, e)) {
			req_free(r);
			err_prefix(e, "store \"%s\": ", s->cfg->name);
			return false;
		}
		*req = r;
		return true;
	}
	/* HEAD or DELETE */
	c = call_new(r, kind == S3_STAT ? stat_done : del_done, S3_ERROR_BODY_MAX);
	if (c == NULL) {
		req_free(r);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	if (!call_start(r, c, kind == S3_STAT ? "HEAD" : "DELETE", NULL, 0, SIGV4_EMPTY_SHA256,
			NULL, 0, e)) {
		call_free(c);
		req_free(r);
		err_prefix(e, "store \"%s\": ", s->cfg->name);
		return false;
	}
	*req = r;
	return true;
}

static bool s3_get(struct store *s, const char *key, int fd, unsigned flags, struct obj_info *out,
		   store_done_fn done, void *arg, struct store_req **req, struct err *e)
{
	if (!s3_simple(s, S3_GET, key, fd, out, done, arg, req, e))
		return false;
	(*req)->writeback = flags & STORE_GET_DURABLE;
	return true;
}

static bool s3_stat(struct store *s, const char *key, struct obj_info *out, store_done_fn done,
		    void *arg, struct store_req **req, struct err *e)
{
	return s3_simple(s, S3_STAT, key, -1, out, done, arg, req, e);
}

static bool s3_del(struct store *s, const char *key, store_done_fn done, void *arg,
		   struct store_req **req, struct err *e)
{
	return s3_simple(s, S3_DEL, key, -1, NULL, done, arg, req, e);
}

/* ListObjectsV2 */

static void list_done(struct s3_call *c, const struct err *e)
{
	struct store_req *r = c->r;
	struct err pe = {0};

	if (e) {
		pe = *e;
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	if (!s3_xml_list(buf_str(&c->resp), c->resp.len, r->list, &pe)) {
		call_free(c);
		req_finish(r, &pe);
		return;
	}
	call_free(c);
	req_finish(r, NULL);
}

static bool s3_list(struct store *s, const char *prefix, const char *token, struct store_list *out,
		    store_done_fn done, void *arg, struct store_req **req, struct err *e)
{
	struct s3_store *st = (struct s3_store *)s;
	struct store_req *r = req_new(st, S3_LIST, "", done, arg, e);
	struct s3_call *c;
	struct qparam q[5];
	size_t nq = 0;

	if (r == NULL)
		return false;
	memset(out, 0, sizeof(*out));
	r->list = out;
	c = call_new(r, list_done, S3_LIST_BODY_MAX);
	if (c == NULL) {
		req_free(r);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	/* sorted by name, as the signature wants them anyway */
	if (token && token[0])
		q[nq++] = (struct qparam){"continuation-token", token};
	q[nq++] = (struct qparam){"encoding-type", "url"};
	q[nq++] = (struct qparam){"list-type", "2"};
	q[nq++] = (struct qparam){"max-keys", "1000"};
	if (prefix && prefix[0])
		q[nq++] = (struct qparam){"prefix", prefix};
	if (!call_start(r, c, "GET", q, nq, SIGV4_EMPTY_SHA256, NULL, 0, e)) {
		call_free(c);
		req_free(r);
		err_prefix(e, "store \"%s\": ", s->cfg->name);
		return false;
	}
	*req = r;
	return true;
}

static void s3_cancel(struct store *s, struct store_req *r)
{
	struct store_req *a;
	struct err e = {0};

	r->cancelled = true;
	r->finished = true;
	if (r->in_pool)
		return; /* read_done frees it */
	if ((r->kind == S3_PUT || r->kind == S3_COPY) && r->parts && r->upload_id == NULL &&
	    r->inflight > 0)
		return; /* CreateMultipartUpload in flight: create_done aborts and frees */
	/* An open multipart upload is aborted in the background, so its parts
	 * are not kept (and billed) until a lifecycle rule removes them. */
	if (r->upload_id && (a = req_new(r->st, S3_ABORT, r->key, NULL, NULL, &e)) != NULL) {
		a->upload_id = r->upload_id;
		r->upload_id = NULL;
		if (!abort_start(a, &e)) {
			log_warn("store \"%s\": could not abort the multipart upload of \"%s\": %s",
				 s->cfg->name, a->key, e.msg);
			req_free(a);
		}
	}
	req_free(r);
}

static bool s3_url(struct store *s, const char *key, struct buf *out, struct err *e)
{
	struct s3_store *st = (struct s3_store *)s;
	const char *pub = s->cfg->public_url;

	if (pub && pub[0])
		buf_puts(out, pub);
	else {
		buf_puts(out, st->url_base);
		buf_puts(out, st->bucket_path);
	}
	store_url_append_key(out, key);
	return buf_ok(out, e);
}

/* --- open --- */

static bool s3_open(const struct store_cfg *cfg, const struct store_env *env, struct store **out,
		    struct err *e)
{
	struct s3_store *st;
	CURLU *u = NULL;
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	struct buf b = BUF_INIT;
	bool ok = false;

	(void)env;
	{
		struct curl_header *h;

		if (curl_easy_header(NULL, "ETag", 0, CURLH_HEADER, -1, &h) == CURLHE_NOT_BUILT_IN)
			return err_set(e, ERR_CONFIG,
				       "this libcurl lacks the header API (7.84+) that ETag checks "
				       "need");
	}
	if (cfg->endpoint == NULL || cfg->bucket == NULL)
		return err_set(e, ERR_CONFIG, "endpoint and bucket are required");
	if (cfg->access_key_id == NULL || cfg->secret_access_key == NULL)
		return err_set(e, ERR_CONFIG, "credentials are missing");
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	u = curl_url();
	if (u == NULL || curl_url_set(u, CURLUPART_URL, cfg->endpoint, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		err_set(e, ERR_CONFIG, "endpoint \"%s\" is not a URL", cfg->endpoint);
		goto out;
	}
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
		err_set(e, ERR_CONFIG, "endpoint \"%s\" must be http:// or https://",
			cfg->endpoint);
		goto out;
	}
	(void)curl_url_get(u, CURLUPART_PORT, &port, 0);
	(void)curl_url_get(u, CURLUPART_PATH, &path, 0);
	/* Host: header and URL authority */
	if (!cfg->path_style) {
		buf_puts(&b, cfg->bucket);
		buf_putc(&b, '.');
	}
	buf_puts(&b, host);
	if (port) {
		buf_putc(&b, ':');
		buf_puts(&b, port);
	}
	st->host_hdr = buf_steal(&b);
	buf_printf(&b, "%s://%s", scheme, st->host_hdr ? st->host_hdr : "");
	st->url_base = buf_steal(&b);
	/* bucket path: the endpoint's own path (without trailing '/'), then the bucket */
	if (path && strcmp(path, "/") != 0) {
		size_t n = strlen(path);

		while (n && path[n - 1] == '/')
			n--;
		buf_append(&b, path, n);
	}
	if (cfg->path_style) {
		buf_putc(&b, '/');
		buf_puts(&b, cfg->bucket);
	}
	st->bucket_path = buf_steal(&b);
	st->endpoint = strdup(cfg->endpoint);
	if (!st->host_hdr || !st->url_base || !st->bucket_path || !st->endpoint) {
		err_set(e, ERR_NOMEM, "out of memory");
		goto out;
	}
	st->creds = (struct sigv4_creds){
	    .access_key_id = cfg->access_key_id,
	    .secret_access_key = cfg->secret_access_key,
	    .region = cfg->region ? cfg->region : "us-east-1",
	    .service = "s3",
	};
	st->threshold = cfg->multipart_threshold;
	st->part_size = cfg->part_size < S3_MIN_PART ? S3_MIN_PART : cfg->part_size;
	if (st->threshold < st->part_size)
		st->threshold = st->part_size;
	*out = &st->base;
	ok = true;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	buf_free(&b);
	if (!ok) {
		free(st->host_hdr);
		free(st->url_base);
		free(st->bucket_path);
		free(st->endpoint);
		free(st);
	}
	return ok;
}

static bool s3_busy(const struct store *s)
{
	return ((const struct s3_store *)s)->live > 0;
}

static void s3_close(struct store *s)
{
	struct s3_store *st = (struct s3_store *)s;

	free(st->host_hdr);
	free(st->url_base);
	free(st->bucket_path);
	free(st->endpoint);
	free(st);
}

const struct store_ops s3_store_ops = {
    .type = "s3",
    .shape = LAYOUT_SHAPE_OBJECT,
    .open = s3_open,
    .close = s3_close,
    .busy = s3_busy,
    .put = s3_put,
    .get = s3_get,
    .stat = s3_stat,
    .del = s3_del,
    .list = s3_list,
    .cancel = s3_cancel,
    .url = s3_url,
    .can_copy = s3_can_copy,
    .copy = s3_copy,
};
