/*
 * sigv4_canon - print what lib/sigv4 signs, for comparison with another
 * signer (tests/unit/sigv4-botocore.sh compares it with botocore).
 *
 *   sigv4_canon METHOD HOST PATH_HEX [QUERYNAME_HEX=VALUE_HEX ...]
 *
 * PATH_HEX and the query names and values are the raw bytes, hex-encoded,
 * so any byte reaches the signer untouched by the shell.  The request is
 * signed at 20130524T000000Z with the headers host, x-amz-content-sha256
 * (UNSIGNED-PAYLOAD) and x-amz-date, access key AKIDEXAMPLE, the suite's
 * example secret, region us-east-1, service s3.  Output:
 *
 *   authorization: <Authorization header value>
 *   signature: <hex>
 *   canonical-request:
 *   <the canonical request, verbatim, up to the end of the output>
 *
 * Exit status: 0 signed, 1 the signer refused the request, 2 bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "sigv4.h"

#define AMZ_DATE "20130524T000000Z"

static char *unhex(const char *s, size_t len)
{
	char *out;

	if (len % 2)
		return NULL;
	out = malloc(len / 2 + 1);
	if (out == NULL)
		return NULL;
	if (!hex_decode(s, len, (unsigned char *)out)) {
		free(out);
		return NULL;
	}
	out[len / 2] = '\0';
	return out;
}

static int usage(void)
{
	fprintf(stderr, "usage: sigv4_canon METHOD HOST PATH_HEX [QUERYNAME_HEX=VALUE_HEX ...]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct sigv4_creds creds = {
	    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "s3"};
	struct buf canon = BUF_INIT, sh = BUF_INIT, auth = BUF_INIT;
	struct sigv4_pair headers[3], *query = NULL;
	struct sigv4_request req;
	struct err e = {0};
	size_t nquery = 0, path_len;
	char *path = NULL;
	const char *sig;
	int rc = 2;

	if (argc < 4)
		return usage();
	path_len = strlen(argv[3]) / 2;
	path = unhex(argv[3], strlen(argv[3]));
	if (path == NULL || strlen(path) != path_len) {
		fprintf(stderr, "sigv4_canon: PATH_HEX is not hex (or holds a NUL byte)\n");
		goto out;
	}
	query = calloc((size_t)argc, sizeof(*query));
	if (query == NULL)
		goto out;
	for (int i = 4; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		char *name, *value;

		if (eq == NULL) {
			fprintf(stderr, "sigv4_canon: '%s' is not NAME_HEX=VALUE_HEX\n", argv[i]);
			goto out;
		}
		name = unhex(argv[i], (size_t)(eq - argv[i]));
		value = unhex(eq + 1, strlen(eq + 1));
		query[nquery].name = name;
		query[nquery].value = value;
		nquery++;
		if (name == NULL || value == NULL) {
			fprintf(stderr, "sigv4_canon: '%s' is not NAME_HEX=VALUE_HEX\n", argv[i]);
			goto out;
		}
	}
	headers[0] = (struct sigv4_pair){"Host", argv[2]};
	headers[1] = (struct sigv4_pair){"X-Amz-Content-SHA256", SIGV4_UNSIGNED_PAYLOAD};
	headers[2] = (struct sigv4_pair){"X-Amz-Date", AMZ_DATE};
	req = (struct sigv4_request){
	    .method = argv[1],
	    .path = path,
	    .path_len = path_len,
	    .query = query,
	    .nquery = nquery,
	    .headers = headers,
	    .nheaders = 3,
	    .payload_hash = SIGV4_UNSIGNED_PAYLOAD,
	};
	rc = 1;
	if (!sigv4_canonical_request(&req, &canon, &sh, &e) ||
	    !sigv4_authorization(&req, &creds, AMZ_DATE, &auth, &e)) {
		fprintf(stderr, "sigv4_canon: %s\n", e.msg);
		goto out;
	}
	sig = strstr(buf_str(&auth), "Signature=");
	printf("authorization: %s\n", buf_str(&auth));
	printf("signature: %s\n", sig ? sig + 10 : "");
	printf("canonical-request:\n%s", buf_str(&canon));
	rc = fflush(stdout) == 0 ? 0 : 1;
out:
	for (size_t i = 0; i < nquery; i++) {
		free((char *)query[i].name);
		free((char *)query[i].value);
	}
	free(query);
	free(path);
	buf_free(&canon);
	buf_free(&sh);
	buf_free(&auth);
	return rc;
}
