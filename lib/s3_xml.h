/*
 * s3_xml.h - parsers for the XML documents S3 answers with, on expat.
 *
 * Pure functions of a byte buffer: no I/O, bounded memory (element text is
 * capped at S3_XML_TEXT_MAX; longer text is an error), every string the
 * result holds is malloc'd and owned by the result.
 */
#ifndef IMGSYNC_S3_XML_H
#define IMGSYNC_S3_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

#define S3_XML_TEXT_MAX 8192

struct s3_error {
	char code[64];
	char message[256];
	char region[64];    /* AuthorizationHeaderMalformed names the right region */
	char endpoint[256]; /* PermanentRedirect names the right endpoint */
	bool present;	    /* the document was an <Error> */
};

/* Each element's text at its end tag, with its path from the root
 * ("ListBucketResult/Contents/Key").  Return false to stop with *e set. */
typedef bool (*s3_xml_fn)(void *arg, const char *path, const char *text, size_t len, struct err *e);
bool s3_xml_parse(const char *doc, size_t len, s3_xml_fn fn, void *arg, struct err *e) WUR;

/* Fill err if doc is an S3 <Error> document; false if it is not one. */
bool s3_xml_error(const char *doc, size_t len, struct s3_error *out);

/* ListObjectsV2 (encoding-type=url): entries, and next token when truncated. */
bool s3_xml_list(const char *doc, size_t len, struct store_list *out, struct err *e) WUR;

/* InitiateMultipartUploadResult/UploadId. */
bool s3_xml_upload_id(const char *doc, size_t len, char **upload_id, struct err *e) WUR;

/* CompleteMultipartUploadResult/ETag (quotes removed), or an <Error>, which
 * may arrive in the body of a 200 response. */
bool s3_xml_complete(const char *doc, size_t len, char *etag, size_t etag_size,
		     struct s3_error *error, struct err *e) WUR;

/* CopyObjectResult or CopyPartResult: ETag (quotes removed) and
 * LastModified (seconds since the epoch, 0 when absent or unreadable), or
 * an <Error>, which may arrive in the body of a 200 response (error->present
 * then, and true returned).  Whitespace before the document (sent by some
 * servers to keep a long copy's connection alive) is skipped. */
bool s3_xml_copy_result(const char *doc, size_t len, char *etag, size_t etag_size, int64_t *mtime,
			struct s3_error *error, struct err *e) WUR;

/* An ISO 8601 UTC time as S3 writes it ("2009-10-12T17:50:30.000Z") in
 * seconds since the epoch; false if it is not one. */
bool s3_xml_time(const char *text, size_t len, int64_t *out);

/* Decode %XX and '+' (encoding-type=url keys); a %00 is ERR_INVALID (it
 * would cut the key short). */
bool s3_url_decode(const char *in, size_t len, char **out, struct err *e) WUR;

#endif
