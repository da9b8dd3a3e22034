/*
 * s3ceiling - the PUT rate an S3 server sustains for a minimal client.
 *
 *   s3ceiling ENDPOINT BUCKET CONNECTIONS SECONDS [SIZE [EXTRAS]]
 *   (credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, region in
 *    AWS_REGION, default us-east-1)
 *
 * CONNECTIONS keep-alive HTTP/1.1 connections (curl multi, one transfer in
 * flight on each), each PUTting SIZE-byte objects (default 51200) from one
 * buffer in memory, path-style, signed with SigV4 (lib/sigv4.h) over
 * UNSIGNED-PAYLOAD: no hashing, no files, no database.  Keys cycle over
 * ceiling/00000 .. ceiling/09999, so the bucket never holds more than
 * 10,000 objects.  Runs for SECONDS, then prints one line:
 *
 *   puts=N errors=E seconds=S puts_per_s=R mb_per_s=M cpu_s=C maxrss_kib=K
 *
 * (MB = 10^6 bytes; cpu_s is this process's user+system time).  Exits 1 if
 * any PUT failed.
 *
 * EXTRAS, a comma-separated list, adds what an imgsync PUT carries, to see
 * what each costs the server: md5 (Content-MD5), sha256 (the payload's
 * SHA-256 signed instead of UNSIGNED-PAYLOAD), type (Content-Type), absent
 * (If-None-Match: *, each key new: ceiling/<pid>-<n>), new (each key new,
 * without If-None-Match; otherwise 10,000 keys are written over and over).
 * The hashes are of
 * the one body, computed once.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>
#include <unistd.h>

#include "buf.h"
#include "sigv4.h"

#define NKEYS 10000

struct conn {
	CURL *easy;
	struct curl_slist *hdrs;
};

static const char *endpoint, *bucket, *host;
static struct sigv4_creds creds;
static char *body;
static size_t body_len;
static unsigned long next_key;
static bool x_md5, x_sha256, x_type, x_absent, x_new;
static char md5_b64[32], sha256_hex[65];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

static void die(const char *what)
{
	fprintf(stderr, "s3ceiling: %s\n", what);
	exit(2);
}

/* Sign and (re)start one PUT on conn's easy handle. */
static void start(CURLM *multi, struct conn *c)
{
	char path[256], url[512], date[17], line[1024];
	struct buf auth = BUF_INIT;
	struct err e;

	const char *ph = x_sha256 ? sha256_hex : SIGV4_UNSIGNED_PAYLOAD;
	size_t nh = 0;

	if (x_absent || x_new)
		snprintf(path, sizeof(path), "/%s/ceiling/%ld-%lu", bucket, (long)getpid(),
			 next_key++);
	else
		snprintf(path, sizeof(path), "/%s/ceiling/%05lu", bucket, next_key++ % NKEYS);
	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	sigv4_amz_date(time(NULL), date);
	/* sorted by name, as SigV4 wants them */
	struct sigv4_pair hdrs[7];
	if (x_md5)
		hdrs[nh++] = (struct sigv4_pair){"content-md5", md5_b64};
	if (x_type)
		hdrs[nh++] = (struct sigv4_pair){"content-type", "image/jpeg"};
	hdrs[nh++] = (struct sigv4_pair){"host", host};
	if (x_absent)
		hdrs[nh++] = (struct sigv4_pair){"if-none-match", "*"};
	hdrs[nh++] = (struct sigv4_pair){"x-amz-content-sha256", ph};
	hdrs[nh++] = (struct sigv4_pair){"x-amz-date", date};
	struct sigv4_request req = {
	    .method = "PUT",
	    .path = path,
	    .headers = hdrs,
	    .nheaders = nh,
	    .payload_hash = ph,
	};
	if (!sigv4_authorization(&req, &creds, date, &auth, &e))
		die(e.msg);
	curl_slist_free_all(c->hdrs);
	c->hdrs = NULL;
	for (size_t i = 0; i < nh; i++) {
		if (strcmp(hdrs[i].name, "host") == 0)
			continue;
		snprintf(line, sizeof(line), "%s: %s", hdrs[i].name, hdrs[i].value);
		c->hdrs = curl_slist_append(c->hdrs, line);
	}
	snprintf(line, sizeof(line), "Authorization: %s", buf_str(&auth));
	buf_free(&auth);
	c->hdrs = curl_slist_append(c->hdrs, line);
	c->hdrs = curl_slist_append(c->hdrs, "Expect:");
	if (!x_type)
		c->hdrs = curl_slist_append(c->hdrs, "Content-Type:");
	c->hdrs = curl_slist_append(c->hdrs, "Accept:");
	if (c->hdrs == NULL)
		die("out of memory");
	curl_easy_setopt(c->easy, CURLOPT_URL, url);
	curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->hdrs);
	curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
	if (curl_multi_add_handle(multi, c->easy) != CURLM_OK)
		die("curl_multi_add_handle failed");
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 7) {
		fprintf(stderr,
			"usage: s3ceiling ENDPOINT BUCKET CONNECTIONS SECONDS [SIZE [EXTRAS]]\n");
		return 64;
	}
	endpoint = argv[1];
	bucket = argv[2];
	int n = atoi(argv[3]);
	double seconds = atof(argv[4]);
	body_len = argc > 5 ? strtoul(argv[5], NULL, 10) : 51200;
	creds.access_key_id = getenv("AWS_ACCESS_KEY_ID");
	creds.secret_access_key = getenv("AWS_SECRET_ACCESS_KEY");
	creds.region = getenv("AWS_REGION") ? getenv("AWS_REGION") : "us-east-1";
	creds.service = "s3";
	if (n < 1 || n > 1024 || seconds <= 0 || body_len == 0)
		die("bad CONNECTIONS, SECONDS or SIZE");
	if (!creds.access_key_id || !creds.secret_access_key)
		die("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set");
	host = strstr(endpoint, "://");
	if (host == NULL)
		die("ENDPOINT must be http://host[:port]");
	host += 3;

	body = malloc(body_len);
	if (body == NULL)
		die("out of memory");
	srand(42);
	for (size_t i = 0; i < body_len; i++)
		body[i] = (char)rand();
	if (argc > 6) {
		char *list = strdup(argv[6]), *save = NULL;
		unsigned char md[32];
		unsigned int mdlen;

		for (char *w = strtok_r(list, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
			if (strcmp(w, "md5") == 0)
				x_md5 = true;
			else if (strcmp(w, "sha256") == 0)
				x_sha256 = true;
			else if (strcmp(w, "type") == 0)
				x_type = true;
			else if (strcmp(w, "absent") == 0)
				x_absent = true;
			else if (strcmp(w, "new") == 0)
				x_new = true;
			else
				die("EXTRAS: md5, sha256, type, absent, new");
		}
		free(list);
		EVP_Digest(body, body_len, md, &mdlen, EVP_md5(), NULL);
		EVP_EncodeBlock((unsigned char *)md5_b64, md, 16);
		EVP_Digest(body, body_len, md, &mdlen, EVP_sha256(), NULL);
		for (int i = 0; i < 32; i++)
			snprintf(sha256_hex + 2 * i, 3, "%02x", md[i]);
	}

	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURLM *multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)n);
	struct conn *conns = calloc((size_t)n, sizeof(*conns));
	if (multi == NULL || conns == NULL)
		die("out of memory");
	for (int i = 0; i < n; i++) {
		conns[i].easy = curl_easy_init();
		if (conns[i].easy == NULL)
			die("curl_easy_init failed");
		start(multi, &conns[i]);
	}

	unsigned long nput = 0, errors = 0;
	double t0 = now_s(), end = t0 + seconds;
	int running = n;
	while (running > 0) {
		int still, left;
		CURLMsg *m;

		curl_multi_perform(multi, &still);
		while ((m = curl_multi_info_read(multi, &left)) != NULL) {
			struct conn *c;
			long code = 0;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
			curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
			if (m->data.result == CURLE_OK && code == 200) {
				nput++;
			} else {
				if (errors++ < 5)
					fprintf(stderr, "s3ceiling: PUT failed: %s, HTTP %ld\n",
						curl_easy_strerror(m->data.result), code);
			}
			curl_multi_remove_handle(multi, m->easy_handle);
			if (now_s() < end)
				start(multi, c);
			else
				running--;
		}
		if (running > 0)
			curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	double el = now_s() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	printf("puts=%lu errors=%lu seconds=%.3f puts_per_s=%.1f mb_per_s=%.2f cpu_s=%.2f "
	       "maxrss_kib=%ld\n",
	       nput, errors, el, (double)nput / el, (double)nput * (double)body_len / el / 1e6, cpu,
	       ru.ru_maxrss);
	for (int i = 0; i < n; i++) {
		curl_easy_cleanup(conns[i].easy);
		curl_slist_free_all(conns[i].hdrs);
	}
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	free(conns);
	free(body);
	return errors ? 1 : 0;
}
