/*
 * fuzz_s3_xml.c - the parsers of what an S3 server answers (s3_xml.h),
 * on any bytes a hostile or broken server could send.
 *
 * Input: one byte choosing the parser, then the document.
 *
 * Invariants:
 * - every parser gives the same answer twice, and frees what it allocated
 *   (LeakSanitizer runs at the end of each input);
 * - the walker reports element paths that are "A/B/C" (no empty name, no
 *   leading, trailing or double '/'), at most as deep as the document, with
 *   text no longer than S3_XML_TEXT_MAX; every failure is ERR_INVALID (or
 *   ERR_NOMEM) with a message;
 * - <Error>: false leaves the struct all zero; true means present, every
 *   field NUL-terminated within its array;
 * - a listing: on failure nothing is left allocated or set; on success
 *   every entry has a key without a NUL byte cut into it, the size of each
 *   is exactly the decimal number the document gives (a size that does not
 *   fit in 64 bits is refused, not wrapped), and a continuation token is
 *   there exactly when the listing says it is truncated;
 * - UploadId, CompleteMultipartUpload and CopyObject results hold what
 *   they promise (non-empty id, NUL-terminated ETag within its buffer);
 * - a time S3 writes, once parsed, prints back as the same calendar date
 *   and time (no "February 31st" quietly becoming March 3rd).
 */
#include "fuzz.h"

#include <time.h>

#include "s3_xml.h"

struct walk {
	size_t calls;
	char last[S3_XML_TEXT_MAX + 1];
	/* Contents/Size texts and whether each Contents has a Key, in order */
	char sizes[64][40];
	bool size_long[64];
	size_t nsizes;
	/* EncodingType url; the current Key has "%00"; an entry's Key had */
	bool url_encoded, cur_nul, nul_key;
};

static bool walk_cb(void *arg, const char *path, const char *text, size_t len, struct err *e)
{
	struct walk *w = arg;
	size_t n = strlen(path);

	(void)e;
	w->calls++;
	CHECK(n > 0 && path[0] != '/' && path[n - 1] != '/' && strstr(path, "//") == NULL,
	      "element path \"%s\"", path);
	CHECK(n < 512, "element path of %zu bytes", n);
	CHECK(len <= S3_XML_TEXT_MAX, "element text of %zu bytes", len);
	CHECK(text[len] == '\0', "element text not NUL-terminated");
	if (strcmp(path, "ListBucketResult/EncodingType") == 0)
		w->url_encoded = len == 3 && memcmp(text, "url", 3) == 0;
	if (strcmp(path, "ListBucketResult/Contents/Key") == 0)
		w->cur_nul = strstr(text, "%00") != NULL; /* the last Key of an entry counts */
	if (strcmp(path, "ListBucketResult/Contents") == 0) {
		w->nul_key = w->nul_key || w->cur_nul;
		w->cur_nul = false;
	}
	if (strcmp(path, "ListBucketResult/Contents/Size") == 0 && w->nsizes < 64) {
		w->size_long[w->nsizes] = len >= sizeof(w->sizes[0]);
		snprintf(w->sizes[w->nsizes], sizeof(w->sizes[0]), "%.*s", (int)len, text);
		w->nsizes++;
	}
	return true;
}

static bool nul_within(const char *s, size_t size)
{
	return memchr(s, '\0', size) != NULL;
}

static void check_error_struct(const struct s3_error *x, bool present)
{
	static const struct s3_error zero;

	if (!present) {
		CHECK(memcmp(x, &zero, sizeof(zero)) == 0, "no <Error>, yet fields are set");
		return;
	}
	CHECK(nul_within(x->code, sizeof(x->code)) && nul_within(x->message, sizeof(x->message)) &&
		  nul_within(x->region, sizeof(x->region)) &&
		  nul_within(x->endpoint, sizeof(x->endpoint)),
	      "an <Error> field is not NUL-terminated");
}

/* The size a listing must report for this text, or false if it must refuse. */
static bool expected_size(const char *t, bool too_long, unsigned long long *out)
{
	unsigned long long v = 0;

	if (too_long || *t == '\0')
		return false;
	for (; *t; t++) {
		if (*t < '0' || *t > '9')
			return false;
		if (v > (~0ULL - (unsigned)(*t - '0')) / 10)
			return false;
		v = v * 10 + (unsigned)(*t - '0');
	}
	*out = v;
	return true;
}

static void fuzz_list(const char *doc, size_t len, const struct walk *w, bool walked)
{
	struct store_list l, l2;
	struct err e, e2;
	bool ok = s3_xml_list(doc, len, &l, &e);

	CHECK(ok == s3_xml_list(doc, len, &l2, &e2), "s3_xml_list is not deterministic");
	if (!ok) {
		CHECK(l.n == 0 && l.v == NULL && l.next == NULL, "a failed listing left entries");
		CHECK(e.code == ERR_INVALID || e.code == ERR_NOMEM, "listing failed with %s",
		      err_code_name(e.code));
		CHECK(e.msg[0] != '\0', "a failed listing has no message");
		return;
	}
	CHECK(walked, "a listing the walker refuses was accepted");
	CHECK(l.n == l2.n, "entry counts differ");
	CHECK(l.next == NULL || l.next[0] != '\0', "an empty continuation token");
	for (size_t i = 0; i < l.n; i++) {
		CHECK(l.v[i].key != NULL, "entry %zu has no key", i);
		CHECK(strcmp(l.v[i].key, l2.v[i].key) == 0 && l.v[i].size == l2.v[i].size,
		      "entry %zu differs between two parses", i);
	}
	/* Every size the document gives must be a 64-bit decimal number. */
	for (size_t i = 0; i < w->nsizes; i++) {
		unsigned long long want;

		CHECK(expected_size(w->sizes[i], w->size_long[i], &want),
		      "listing accepted the size \"%s\"", w->sizes[i]);
	}
	CHECK(!(w->url_encoded && w->nul_key), "a key decoding to a NUL byte was accepted");
	store_list_free(&l);
	store_list_free(&l2);
}

static void fuzz_time(const char *s, size_t len)
{
	int64_t t;
	int y, mo, d, h, mi, sec, n = 0;

	if (!s3_xml_time(s, len, &t))
		return;
	if (sscanf(s, "%d-%d-%dT%d:%d:%d%n", &y, &mo, &d, &h, &mi, &sec, &n) == 6) {
		time_t tt = (time_t)t;
		struct tm tm;

		CHECK(gmtime_r(&tt, &tm) != NULL, "time out of range");
		CHECK(tm.tm_year + 1900 == y && tm.tm_mon + 1 == mo && tm.tm_mday == d &&
			  tm.tm_hour == h && tm.tm_min == mi && tm.tm_sec == sec,
		      "\"%.*s\" became %04d-%02d-%02dT%02d:%02d:%02d", (int)len, s,
		      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		      tm.tm_sec);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct walk w, w2;
	const char *doc;
	size_t len;
	struct err e, e2;
	bool ok, walked;

	if (size < 1 || size > 65536)
		return 0;
	doc = (const char *)data + 1;
	len = size - 1;

	memset(&w, 0, sizeof(w));
	memset(&w2, 0, sizeof(w2));
	err_clear(&e);
	err_clear(&e2);
	walked = s3_xml_parse(doc, len, walk_cb, &w, &e);
	ok = s3_xml_parse(doc, len, walk_cb, &w2, &e2);
	CHECK(walked == ok && w.calls == w2.calls && strcmp(e.msg, e2.msg) == 0,
	      "s3_xml_parse is not deterministic");
	if (!walked)
		CHECK((e.code == ERR_INVALID || e.code == ERR_NOMEM) && e.msg[0],
		      "walker failed with %s \"%s\"", err_code_name(e.code), e.msg);

	switch (data[0] % 6) {
	case 0: {
		struct s3_error x, x2;
		bool present = s3_xml_error(doc, len, &x);

		CHECK(present == s3_xml_error(doc, len, &x2) && memcmp(&x, &x2, sizeof(x)) == 0,
		      "s3_xml_error is not deterministic");
		CHECK(!present || walked, "an <Error> the walker refuses");
		check_error_struct(&x, present);
		break;
	}
	case 1:
		fuzz_list(doc, len, &w, walked);
		break;
	case 2: {
		char *id = NULL;

		if (s3_xml_upload_id(doc, len, &id, &e)) {
			CHECK(id && id[0], "an empty UploadId was accepted");
			free(id);
		}
		break;
	}
	case 3: {
		char etag[80];
		struct s3_error x;

		memset(etag, 'Z', sizeof(etag));
		if (s3_xml_complete(doc, len, etag, sizeof(etag), &x, &e)) {
			check_error_struct(&x, x.present);
			if (!x.present)
				CHECK(nul_within(etag, sizeof(etag)), "ETag not NUL-terminated");
		}
		break;
	}
	case 4: {
		char etag[80];
		int64_t mtime = 42;
		struct s3_error x;

		memset(etag, 'Z', sizeof(etag));
		if (s3_xml_copy_result(doc, len, etag, sizeof(etag), &mtime, &x, &e)) {
			check_error_struct(&x, x.present);
			if (!x.present)
				CHECK(nul_within(etag, sizeof(etag)) && etag[0] != '\0',
				      "copy result without an ETag");
		} else {
			CHECK(e.msg[0] != '\0', "a failed copy result has no message");
		}
		break;
	}
	case 5:
		fuzz_time(doc, len);
		break;
	}
	return 0;
}
