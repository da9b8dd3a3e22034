/*
 * test_s3_xml - the S3 response parsers on documents shaped like real
 * answers (AWS's documented examples, radosgw's and moto's variants) and
 * hostile ones.
 */
#include <stdlib.h>
#include <string.h>

#include "s3_xml.h"
#include "tap.h"

#define DOC(s) s, sizeof(s) - 1

static void test_error(void)
{
	struct s3_error x;

	ok(s3_xml_error(DOC("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			    "<Error><Code>NoSuchKey</Code><Message>The resource you requested "
			    "does not exist</Message><Resource>/mybucket/myfoto.jpg</Resource>"
			    "<RequestId>4442587FB7D0A2F9</RequestId></Error>"),
			&x),
	   "error document recognised");
	is_str(x.code, "NoSuchKey", "error code");
	is_str(x.message, "The resource you requested does not exist", "error message");
	ok(s3_xml_error(DOC("<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region "
			    "'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1"
			    "</Region></Error>"),
			&x),
	   "region error");
	is_str(x.region, "eu-west-1", "expected region extracted");
	/* radosgw: empty message */
	ok(s3_xml_error(DOC("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>"
			    "SignatureDoesNotMatch</Code><Message></Message><BucketName>b"
			    "</BucketName></Error>"),
			&x),
	   "radosgw error with empty message");
	is_str(x.code, "SignatureDoesNotMatch", "radosgw code");
	is_str(x.message, "", "empty message");
	ok(!s3_xml_error(DOC(""), &x), "empty body is not an error document");
	ok(!s3_xml_error(DOC("<ListBucketResult/>"), &x), "other document is not an error");
	ok(!s3_xml_error(DOC("<Error><Code>Unclosed"), &x), "truncated XML is not an error doc");
	ok(!s3_xml_error(DOC("<html><body>502 Bad Gateway</body></html>"), &x),
	   "a proxy's HTML page is not an error document");
}

static void test_list(void)
{
	struct store_list l;
	struct err e = {0};

	ok(s3_xml_list(DOC("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			   "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
			   "<Name>bucket</Name><Prefix>p%2F</Prefix><KeyCount>2</KeyCount>"
			   "<MaxKeys>2</MaxKeys><EncodingType>url</EncodingType>"
			   "<IsTruncated>true</IsTruncated>"
			   "<Contents><Key>p/a%20b%2Bc.jpg</Key><LastModified>2009-10-12T17:50:30."
			   "000Z</LastModified><ETag>&quot;fba9dede5f27731c9771645a39863328&quot;"
			   "</ETag><Size>434234</Size><StorageClass>STANDARD</StorageClass>"
			   "</Contents>"
			   "<Contents><Key>p/%E3%83%95%E3%82%A1%0A</Key><Size>0</Size></Contents>"
			   "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOw"
			   "M=</NextContinuationToken></ListBucketResult>"),
		       &l, &e),
	   "list page parsed");
	is_int(l.n, 2, "two entries");
	if (l.n == 2) {
		is_str(l.v[0].key, "p/a b+c.jpg", "url-encoded key decoded");
		is_int(l.v[0].size, 434234, "size");
		is_str(l.v[1].key, "p/ファ\n", "unicode and a newline survive the listing");
	}
	is_str(l.next, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=", "continuation token");
	store_list_free(&l);

	ok(s3_xml_list(DOC("<ListBucketResult><IsTruncated>false</IsTruncated>"
			   "<Contents><Key>plain+key</Key><Size>1</Size></Contents>"
			   "</ListBucketResult>"),
		       &l, &e),
	   "last page, keys not url-encoded");
	ok(l.n == 1 && strcmp(l.v[0].key, "plain+key") == 0, "key kept as is without EncodingType");
	ok(l.next == NULL, "no token on the last page");
	store_list_free(&l);

	ok(!s3_xml_list(DOC("<ListBucketResult><IsTruncated>true</IsTruncated>"
			    "</ListBucketResult>"),
			&l, &e),
	   "truncated without a token is refused: %s", e.msg);
	ok(!s3_xml_list(DOC("<ListBucketResult><Contents><Key>k</Key><Size>-1</Size>"
			    "</Contents></ListBucketResult>"),
			&l, &e),
	   "negative size refused: %s", e.msg);
	ok(!s3_xml_list(DOC("<ListBucketResult><Contents><Key>k</Key><Size>18446744073709551616"
			    "</Size></Contents></ListBucketResult>"),
			&l, &e),
	   "a size above 2^64-1 is refused, not wrapped or clamped: %s", e.msg);
	ok(s3_xml_list(DOC("<ListBucketResult><Contents><Key>k</Key><Size>18446744073709551615"
			   "</Size></Contents></ListBucketResult>"),
		       &l, &e) &&
	       l.n == 1 && l.v[0].size == UINT64_MAX,
	   "a size of 2^64-1 is read exactly");
	store_list_free(&l);
	ok(!s3_xml_list(DOC("<ListBucketResult><Contents><Size>1</Size></Contents>"
			    "</ListBucketResult>"),
			&l, &e),
	   "entry without a key refused: %s", e.msg);
	ok(!s3_xml_list(DOC("<Error><Code>AccessDenied</Code></Error>"), &l, &e),
	   "an error document is not a listing: %s", e.msg);
	ok(!s3_xml_list(DOC("<ListBucketResult><Contents><Key>a"), &l, &e),
	   "truncated document refused: %s", e.msg);
}

static void test_multipart(void)
{
	struct s3_error x;
	struct err e = {0};
	char etag[72], *id = NULL;

	ok(s3_xml_upload_id(
	       DOC("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/"
		   "2006-03-01/\"><Bucket>example-bucket</Bucket><Key>example-object"
		   "</Key><UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVw"
		   "bG9hZA</UploadId></InitiateMultipartUploadResult>"),
	       &id, &e),
	   "upload id parsed");
	is_str(id, "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA", "upload id");
	free(id);
	id = NULL;
	ok(!s3_xml_upload_id(DOC("<InitiateMultipartUploadResult><UploadId></UploadId>"
				 "</InitiateMultipartUploadResult>"),
			     &id, &e),
	   "empty upload id refused: %s", e.msg);

	ok(s3_xml_complete(DOC("<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/"
			       "doc/2006-03-01/\"><Location>http://b.s3.amazonaws.com/k</Location>"
			       "<Bucket>b</Bucket><Key>k</Key><ETag>\"3858f62230ac3c915f300c664312"
			       "c11f-9\"</ETag></CompleteMultipartUploadResult>"),
			   etag, sizeof(etag), &x, &e),
	   "complete result parsed");
	ok(!x.present, "no error in a good result");
	is_str(etag, "3858f62230ac3c915f300c664312c11f-9", "ETag without quotes");

	/* S3 may answer 200 and put the failure in the body */
	ok(s3_xml_complete(DOC("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n"
			       "<Error><Code>InternalError</Code><Message>We encountered an "
			       "internal error. Please try again.</Message><RequestId>656c76696e67"
			       "6027</RequestId></Error>"),
			   etag, sizeof(etag), &x, &e),
	   "error inside a 200 answer parsed");
	ok(x.present && strcmp(x.code, "InternalError") == 0,
	   "the error in the body of a 200 answer is reported: %s", x.code);

	ok(s3_xml_complete(DOC("<CompleteMultipartUploadResponse><ETag>&quot;abc-2&quot;</ETag>"
			       "</CompleteMultipartUploadResponse>"),
			   etag, sizeof(etag), &x, &e) &&
	       strcmp(etag, "abc-2") == 0,
	   "moto's ...Response root accepted");
	ok(!s3_xml_complete(DOC("<CompleteMultipartUploadResult></CompleteMultipartUploadResult>"),
			    etag, sizeof(etag), &x, &e),
	   "a result without ETag or error is an error: %s", e.msg);
	ok(!s3_xml_complete(DOC(""), etag, sizeof(etag), &x, &e),
	   "an empty 200 answer is an error: %s", e.msg);
}

static void test_copy(void)
{
	struct s3_error x;
	struct err e = {0};
	char etag[72];
	int64_t mtime = -1, t;

	/* AWS's documented CopyObject answer */
	ok(s3_xml_copy_result(
	       DOC("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		   "<LastModified>2009-10-12T17:50:30.000Z</LastModified>"
		   "<ETag>\"9b2cf535f27731c974343645a3985328\"</ETag>"
		   "</CopyObjectResult>"),
	       etag, sizeof(etag), &mtime, &x, &e),
	   "CopyObjectResult parsed");
	ok(!x.present, "no error in a good result");
	is_str(etag, "9b2cf535f27731c974343645a3985328", "ETag without quotes");
	is_int(mtime, 1255369830, "LastModified in seconds since the epoch");
	/* radosgw escapes the quotes; UploadPartCopy answers CopyPartResult */
	ok(s3_xml_copy_result(DOC("<CopyPartResult><LastModified>2024-02-29T23:59:59Z"
				  "</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>"),
			      etag, sizeof(etag), &mtime, &x, &e) &&
	       strcmp(etag, "abc") == 0,
	   "CopyPartResult parsed");
	is_int(mtime, 1709251199, "LastModified without fractions");
	/* whitespace sent to keep a long copy's connection alive, then an error */
	ok(s3_xml_copy_result(DOC("   \n  \r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				  "<Error><Code>SlowDown</Code><Message>Reduce your request rate."
				  "</Message></Error>"),
			      etag, sizeof(etag), &mtime, &x, &e),
	   "error inside a 200 answer after keep-alive whitespace parsed");
	ok(x.present && strcmp(x.code, "SlowDown") == 0, "the error is reported: %s", x.code);
	ok(s3_xml_copy_result(DOC("<CopyObjectResult><ETag>\"e\"</ETag><LastModified>yesterday"
				  "</LastModified></CopyObjectResult>"),
			      etag, sizeof(etag), &mtime, &x, &e) &&
	       mtime == 0,
	   "an unreadable LastModified is unknown (0)");
	ok(!s3_xml_copy_result(DOC("<CopyObjectResult><LastModified>2009-10-12T17:50:30.000Z"
				   "</LastModified></CopyObjectResult>"),
			       etag, sizeof(etag), &mtime, &x, &e),
	   "a result without ETag is an error: %s", e.msg);
	ok(!s3_xml_copy_result(DOC("<CopyObjectResult><ETag>\"\"</ETag></CopyObjectResult>"), etag,
			       sizeof(etag), &mtime, &x, &e),
	   "an empty ETag is an error: %s", e.msg);
	ok(!s3_xml_copy_result(DOC("<ListBucketResult><ETag>x</ETag></ListBucketResult>"), etag,
			       sizeof(etag), &mtime, &x, &e),
	   "another document is an error: %s", e.msg);
	ok(!s3_xml_copy_result(DOC(" \n "), etag, sizeof(etag), &mtime, &x, &e),
	   "an answer of whitespace only is an error: %s", e.msg);
	ok(!s3_xml_copy_result(DOC("<CopyObjectResult><ETag>\"abc"), etag, sizeof(etag), &mtime, &x,
			       &e),
	   "a truncated answer is an error: %s", e.msg);

	ok(s3_xml_time(DOC("1970-01-01T00:00:00Z"), &t) && t == 0, "the epoch");
	ok(s3_xml_time(DOC("2000-01-01T00:00:00+00:00"), &t) && t == 946684800, "+00:00");
	ok(!s3_xml_time(DOC("2000-01-01T00:00:00+02:00"), &t), "another zone is refused");
	ok(!s3_xml_time(DOC("2000-01-01"), &t), "a date alone is refused");
	ok(!s3_xml_time(DOC(""), &t), "empty is refused");
	ok(!s3_xml_time(DOC("2009-02-31T00:00:00Z"), &t), "February 31st is refused");
	ok(!s3_xml_time(DOC("2009-01-01T24:00:00Z"), &t), "24:00:00 is refused");
	ok(s3_xml_time(DOC("2008-02-29T23:59:59.999Z"), &t) && t == 1204329599,
	   "February 29th of a leap year");
}

static void test_hostile(void)
{
	struct store_list l;
	struct err e = {0};
	size_t n = 4 * S3_XML_TEXT_MAX;
	char *big = malloc(n + 200);
	struct s3_error x;

	ok(!s3_xml_list(DOC("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
			    "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>"
			    "<ListBucketResult><Contents><Key>&lol2;</Key><Size>1</Size>"
			    "</Contents></ListBucketResult>"),
			&l, &e),
	   "a document type declaration is refused: %s", e.msg);
	ok(!s3_xml_list(DOC("<?xml version=\"1.0\"?><!DOCTYPE x SYSTEM \"file:///etc/passwd\">"
			    "<ListBucketResult/>"),
			&l, &e),
	   "an external entity is refused");
	strcpy(big, "<ListBucketResult><Contents><Key>");
	memset(big + strlen(big), 'k', n);
	strcpy(big + 33 + n, "</Key><Size>1</Size></Contents></ListBucketResult>");
	ok(!s3_xml_list(big, strlen(big), &l, &e), "an over-long element is refused: %s", e.msg);
	free(big);
	ok(!s3_xml_error(DOC("\x00\x01\x02garbage"), &x), "binary garbage is no error document");
	ok(!s3_xml_list(DOC("not xml at all"), &l, &e), "garbage listing refused: %s", e.msg);
}

static void test_url_decode(void)
{
	char *out;
	struct err e;
	struct store_list l;

	ok(s3_url_decode("a%2Fb+c%zz%4", 12, &out, &e), "decode");
	is_str(out, "a/b c%zz%4", "bad escapes are kept literally");
	free(out);
	ok(!s3_url_decode("a%00b", 5, &out, &e) && out == NULL && e.code == ERR_INVALID,
	   "a %%00 is refused, not cut into the key: %s", e.msg);
	ok(!s3_xml_list(DOC("<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>"
			    "a.jpg%00.txt</Key><Size>1</Size></Contents></ListBucketResult>"),
			&l, &e) &&
	       l.n == 0 && e.code == ERR_INVALID,
	   "a listing with a key decoding to a NUL is refused: %s", e.msg);
}

int main(void)
{
	test_error();
	test_list();
	test_multipart();
	test_copy();
	test_hostile();
	test_url_decode();
	return tap_done();
}
