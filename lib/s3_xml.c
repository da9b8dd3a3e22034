/*
 * s3_xml.c - S3 response documents through expat.
 *
 * One generic walker (s3_xml_parse) keeps the element path and the text of
 * the innermost element, and reports each element at its end tag; the
 * document-specific parsers are small callbacks on top.  Expat >= 2.4
 * refuses entity-expansion bombs by itself; we also refuse any DOCTYPE.
 */
#include "s3_xml.h"

#include "key.h"

#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XML_PATH_MAX 512

struct walker {
	XML_Parser p;
	char path[XML_PATH_MAX];
	size_t plen;
	size_t depth, overflow; /* overflow: levels beyond XML_PATH_MAX */
	struct buf text;
	s3_xml_fn fn;
	void *arg;
	struct err *e;
	bool failed;
};

static void stop(struct walker *w)
{
	w->failed = true;
	XML_StopParser(w->p, XML_FALSE);
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct walker *w = ud;
	size_t n = strlen(name);

	(void)attrs;
	w->depth++;
	buf_reset(&w->text);
	if (w->overflow || w->plen + n + 2 > sizeof(w->path)) {
		w->overflow++;
		return;
	}
	if (w->plen)
		w->path[w->plen++] = '/';
	memcpy(w->path + w->plen, name, n + 1);
	w->plen += n;
}

static void on_end(void *ud, const XML_Char *name)
{
	struct walker *w = ud;
	char *slash;

	(void)name;
	w->depth--;
	if (w->overflow) {
		w->overflow--;
		return;
	}
	if (!w->failed && !w->fn(w->arg, w->path, buf_str(&w->text), w->text.len, w->e)) {
		stop(w);
		return;
	}
	buf_reset(&w->text);
	slash = strrchr(w->path, '/');
	w->plen = slash ? (size_t)(slash - w->path) : 0;
	w->path[w->plen] = '\0';
}

static void on_text(void *ud, const XML_Char *s, int len)
{
	struct walker *w = ud;

	if (w->failed)
		return;
	if (w->text.len + (size_t)len > S3_XML_TEXT_MAX) {
		err_set(w->e, ERR_INVALID, "S3 answered with an XML element longer than %d bytes",
			S3_XML_TEXT_MAX);
		stop(w);
		return;
	}
	buf_append(&w->text, s, (size_t)len);
}

static void on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
		       int has_internal)
{
	struct walker *w = ud;

	(void)name, (void)sysid, (void)pubid, (void)has_internal;
	err_set(w->e, ERR_INVALID, "S3 answered with an XML document type declaration; refused");
	stop(w);
}

bool s3_xml_parse(const char *doc, size_t len, s3_xml_fn fn, void *arg, struct err *e)
{
	struct walker w = {.fn = fn, .arg = arg, .e = e, .text = BUF_INIT};
	bool ok;

	if (len > (size_t)1 << 30)
		return err_set(e, ERR_INVALID, "S3 answered with an oversized XML document");
	w.p = XML_ParserCreate("UTF-8");
	if (w.p == NULL)
		return err_set(e, ERR_NOMEM, "out of memory creating an XML parser");
	XML_SetUserData(w.p, &w);
	XML_SetElementHandler(w.p, on_start, on_end);
	XML_SetCharacterDataHandler(w.p, on_text);
	XML_SetStartDoctypeDeclHandler(w.p, on_doctype);
	ok = XML_Parse(w.p, doc, (int)len, XML_TRUE) == XML_STATUS_OK && !w.failed;
	if (!ok && !w.failed)
		err_set(e, ERR_INVALID, "S3 answered with malformed XML (line %lu: %s)",
			(unsigned long)XML_GetCurrentLineNumber(w.p),
			XML_ErrorString(XML_GetErrorCode(w.p)));
	else if (ok && !buf_ok(&w.text, e))
		ok = false;
	XML_ParserFree(w.p);
	buf_free(&w.text);
	return ok;
}

static void copy_text(char *dst, size_t size, const char *text, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, text, len);
	dst[len] = '\0';
}

static bool error_cb(void *arg, const char *path, const char *text, size_t len, struct err *e)
{
	struct s3_error *out = arg;

	(void)e;
	if (strcmp(path, "Error") == 0)
		out->present = true;
	else if (strcmp(path, "Error/Code") == 0)
		copy_text(out->code, sizeof(out->code), text, len);
	else if (strcmp(path, "Error/Message") == 0)
		copy_text(out->message, sizeof(out->message), text, len);
	else if (strcmp(path, "Error/Region") == 0)
		copy_text(out->region, sizeof(out->region), text, len);
	else if (strcmp(path, "Error/Endpoint") == 0)
		copy_text(out->endpoint, sizeof(out->endpoint), text, len);
	return true;
}

bool s3_xml_error(const char *doc, size_t len, struct s3_error *out)
{
	struct err ignored;

	memset(out, 0, sizeof(*out));
	if (len == 0 || !s3_xml_parse(doc, len, error_cb, out, &ignored)) {
		memset(out, 0, sizeof(*out));
		return false;
	}
	return out->present;
}

bool s3_url_decode(const char *in, size_t len, char **out, struct err *e)
{
	char *o = malloc(len + 1), *p = o;

	*out = NULL;
	if (o == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < len; i++) {
		unsigned char v;

		if (in[i] == '%' && i + 2 < len && hex_decode(in + i + 1, 2, &v)) {
			if (v == 0) {
				free(o);
				return err_set(e, ERR_INVALID,
					       "S3 listed a key with a NUL byte (%%00) in it");
			}
			*p++ = (char)v;
			i += 2;
		} else if (in[i] == '+')
			*p++ = ' ';
		else
			*p++ = in[i];
	}
	*p = '\0';
	*out = o;
	return true;
}

struct list_state {
	struct store_list *out;
	char *key;
	unsigned long long size;
	bool truncated;
	bool url_encoded;
	bool is_list;
};

static bool list_cb(void *arg, const char *path, const char *text, size_t len, struct err *e)
{
	struct list_state *s = arg;
	struct store_list *l = s->out;

	if (strcmp(path, "ListBucketResult") == 0) {
		s->is_list = true;
	} else if (strcmp(path, "ListBucketResult/EncodingType") == 0) {
		s->url_encoded = len == 3 && memcmp(text, "url", 3) == 0;
	} else if (strcmp(path, "ListBucketResult/Contents/Key") == 0) {
		free(s->key);
		s->key = strndup(text, len);
		if (s->key == NULL)
			return err_set(e, ERR_NOMEM, "out of memory");
	} else if (strcmp(path, "ListBucketResult/Contents/Size") == 0) {
		char tmp[32];
		bool bad = len == 0 || len >= sizeof(tmp);

		copy_text(tmp, sizeof(tmp), text, len);
		s->size = 0;
		for (size_t i = 0; i < len && !bad; i++) {
			unsigned d = (unsigned)(text[i] - '0');

			bad = text[i] < '0' || text[i] > '9' || s->size > (UINT64_MAX - d) / 10;
			if (!bad)
				s->size = s->size * 10 + d;
		}
		if (bad) {
			char shown[40];

			key_escape(text, len, shown, sizeof(shown));
			return err_set(e, ERR_INVALID, "S3 listed an object with size \"%s\"",
				       shown);
		}
	} else if (strcmp(path, "ListBucketResult/Contents") == 0) {
		if (s->key == NULL)
			return err_set(e, ERR_INVALID, "S3 listed an object without a key");
		if (l->n % 256 == 0) {
			struct store_list_entry *v = realloc(l->v, (l->n + 256) * sizeof(*v));

			if (v == NULL)
				return err_set(e, ERR_NOMEM, "out of memory");
			l->v = v;
		}
		l->v[l->n].key = s->key;
		l->v[l->n].size = s->size;
		l->n++;
		s->key = NULL;
		s->size = 0;
	} else if (strcmp(path, "ListBucketResult/IsTruncated") == 0) {
		s->truncated = len == 4 && memcmp(text, "true", 4) == 0;
	} else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0) {
		free(l->next);
		l->next = strndup(text, len);
		if (l->next == NULL)
			return err_set(e, ERR_NOMEM, "out of memory");
	}
	return true;
}

bool s3_xml_list(const char *doc, size_t len, struct store_list *out, struct err *e)
{
	struct list_state s = {.out = out};

	memset(out, 0, sizeof(*out));
	if (!s3_xml_parse(doc, len, list_cb, &s, e))
		goto fail;
	if (!s.is_list) {
		err_set(e, ERR_INVALID, "S3 answered a listing with something else");
		goto fail;
	}
	if (s.truncated && (out->next == NULL || out->next[0] == '\0')) {
		err_set(e, ERR_INVALID,
			"S3 said the listing is truncated but gave no continuation "
			"token");
		goto fail;
	}
	if (!s.truncated) {
		free(out->next);
		out->next = NULL;
	}
	if (s.url_encoded) {
		for (size_t i = 0; i < out->n; i++) {
			char *dec;

			if (!s3_url_decode(out->v[i].key, strlen(out->v[i].key), &dec, e))
				goto fail;
			free(out->v[i].key);
			out->v[i].key = dec;
		}
	}
	free(s.key);
	return true;
fail:
	free(s.key);
	store_list_free(out);
	return false;
}

struct one_state {
	const char *want;
	const char *want2; /* an alternative spelling some servers use */
	char *value;
	struct s3_error *error;
};

static bool one_cb(void *arg, const char *path, const char *text, size_t len, struct err *e)
{
	struct one_state *s = arg;

	if (s->error)
		(void)error_cb(s->error, path, text, len, e);
	if (strcmp(path, s->want) == 0 || (s->want2 && strcmp(path, s->want2) == 0)) {
		free(s->value);
		s->value = strndup(text, len);
		if (s->value == NULL)
			return err_set(e, ERR_NOMEM, "out of memory");
	}
	return true;
}

bool s3_xml_upload_id(const char *doc, size_t len, char **upload_id, struct err *e)
{
	struct one_state s = {.want = "InitiateMultipartUploadResult/UploadId"};

	if (!s3_xml_parse(doc, len, one_cb, &s, e)) {
		free(s.value);
		return false;
	}
	if (s.value == NULL || s.value[0] == '\0') {
		free(s.value);
		return err_set(e, ERR_INVALID, "S3 started a multipart upload without an UploadId");
	}
	*upload_id = s.value;
	return true;
}

bool s3_xml_complete(const char *doc, size_t len, char *etag, size_t etag_size,
		     struct s3_error *error, struct err *e)
{
	/* moto answers with a ...Response root element */
	struct one_state s = {.want = "CompleteMultipartUploadResult/ETag",
			      .want2 = "CompleteMultipartUploadResponse/ETag",
			      .error = error};
	const char *v;
	size_t n;

	memset(error, 0, sizeof(*error));
	if (!s3_xml_parse(doc, len, one_cb, &s, e)) {
		free(s.value);
		return false;
	}
	if (error->present) {
		free(s.value);
		return true; /* the caller reports the error */
	}
	if (s.value == NULL) {
		return err_set(e, ERR_INVALID,
			       "S3 answered CompleteMultipartUpload without an ETag or an error");
	}
	v = s.value;
	n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v++;
		n -= 2;
	}
	copy_text(etag, etag_size, v, n);
	free(s.value);
	return true;
}

bool s3_xml_time(const char *text, size_t len, int64_t *out)
{
	char tmp[40], *p;
	struct tm tm = {0}, want, back;
	time_t t;

	if (len == 0 || len >= sizeof(tmp))
		return false;
	memcpy(tmp, text, len);
	tmp[len] = '\0';
	p = strptime(tmp, "%Y-%m-%dT%H:%M:%S", &tm);
	if (p == NULL)
		return false;
	want = tm;
	if (*p == '.') /* fractions of a second */
		while (*++p >= '0' && *p <= '9')
			;
	if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
		return false;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return false;
	/* A date that does not exist ("February 31st", "24:00:00") is not
	 * quietly moved to the next day: refused. */
	if (gmtime_r(&t, &back) == NULL || back.tm_year != want.tm_year ||
	    back.tm_mon != want.tm_mon || back.tm_mday != want.tm_mday ||
	    back.tm_hour != want.tm_hour || back.tm_min != want.tm_min ||
	    back.tm_sec != want.tm_sec)
		return false;
	*out = (int64_t)t;
	return true;
}

struct copy_state {
	char *etag;
	char *mtime;
	struct s3_error *error;
	bool is_copy;
};

static bool copy_cb(void *arg, const char *path, const char *text, size_t len, struct err *e)
{
	struct copy_state *s = arg;
	char **dst = NULL;

	(void)error_cb(s->error, path, text, len, e);
	if (strcmp(path, "CopyObjectResult") == 0 || strcmp(path, "CopyPartResult") == 0)
		s->is_copy = true;
	else if (strcmp(path, "CopyObjectResult/ETag") == 0 ||
		 strcmp(path, "CopyPartResult/ETag") == 0)
		dst = &s->etag;
	else if (strcmp(path, "CopyObjectResult/LastModified") == 0 ||
		 strcmp(path, "CopyPartResult/LastModified") == 0)
		dst = &s->mtime;
	if (dst) {
		free(*dst);
		*dst = strndup(text, len);
		if (*dst == NULL)
			return err_set(e, ERR_NOMEM, "out of memory");
	}
	return true;
}

bool s3_xml_copy_result(const char *doc, size_t len, char *etag, size_t etag_size, int64_t *mtime,
			struct s3_error *error, struct err *e)
{
	struct copy_state s = {.error = error};
	bool ok = false;
	const char *v;
	size_t n;

	memset(error, 0, sizeof(*error));
	*mtime = 0;
	while (len > 0 && (*doc == ' ' || *doc == '\t' || *doc == '\r' || *doc == '\n')) {
		doc++;
		len--;
	}
	if (len == 0) {
		err_set(e, ERR_INVALID, "S3 answered a copy with an empty body");
		goto out;
	}
	if (!s3_xml_parse(doc, len, copy_cb, &s, e))
		goto out;
	if (error->present) {
		ok = true; /* the caller reports the error */
		goto out;
	}
	if (!s.is_copy || s.etag == NULL) {
		err_set(e, ERR_INVALID, "S3 answered a copy without a %s",
			s.is_copy ? "ETag" : "CopyObjectResult or an error");
		goto out;
	}
	v = s.etag;
	n = strlen(v);
	if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
		v++;
		n -= 2;
	}
	if (n == 0) {
		err_set(e, ERR_INVALID, "S3 answered a copy with an empty ETag");
		goto out;
	}
	copy_text(etag, etag_size, v, n);
	if (s.mtime && !s3_xml_time(s.mtime, strlen(s.mtime), mtime))
		*mtime = 0;
	ok = true;
out:
	free(s.etag);
	free(s.mtime);
	return ok;
}
