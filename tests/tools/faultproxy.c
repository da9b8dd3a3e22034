/*
 * faultproxy - an HTTP/1.1 proxy between imgsyncd and a real S3 server that
 * injects the faults S3 clients meet in the wild, so the end-to-end tests
 * can show that none of them loses or corrupts an image.
 *
 *   faultproxy --upstream http://127.0.0.1:PORT [--port N] [--port-file F]
 *              [--stats F] [--seed N] [--control F] [--FAULT P ...]
 *              [--stall-seconds S] [--huge-bytes N] [--only TEXT]
 *              [--except TEXT]
 *
 * It listens on 127.0.0.1 (a port the kernel chooses unless --port says
 * otherwise; written to --port-file, and printed with the seed) and sends
 * every request on to the upstream server over a connection of its own per
 * client connection, keep-alive on both sides.  Requests are forwarded byte
 * for byte, Host header and signature untouched.  For each request one draw
 * of a seeded PRNG picks at most one fault, each FAULT with probability P:
 *
 *   error500          answer 500 InternalError (S3 XML body) instead of forwarding
 *   error503          answer 503 SlowDown instead of forwarding
 *   reset_request     forward part of the request body, then reset both connections
 *   reset_response    forward part of the response body, then reset the client
 *   stall             hold the response for stall_seconds (default 3) first
 *   truncate          close cleanly in the middle of a body Content-Length promised
 *   corrupt_response  flip one byte of a successful GET's body
 *   corrupt_request   flip one byte of a PUT's body on its way to the server
 *   garbage_list      answer a ListObjects with a document that is not XML
 *   garbage_xml       the same for the answers to POSTs (multipart uploads) and copies
 *   garbage_error     answer 500 with a body that is not XML instead of forwarding
 *   huge_error        answer 500 with an error body of huge_bytes (default 50 MB)
 *   no_etag           drop the ETag header of a PUT's answer
 *   wrong_etag        change one digit of the ETag of a PUT's or GET's answer
 *   stall_request     hold the request for stall_seconds before sending it on
 *   wrong_range       change the last digit of the total in a 206 answer's
 *                     Content-Range (the body is the range asked for)
 *
 * A fault that does not apply to a request (a body fault on a request with
 * no body, say) is not injected and not counted.  --only TEXT limits faults
 * to requests whose target contains TEXT, --except TEXT (alternatives
 * separated by "|") to those whose head
 * (request line and headers) does not contain TEXT.  The same settings, one
 * "name value" per line, may be given in the --control file, read again
 * whenever it changes: tests switch modes on a running proxy that way.
 *
 * Counters go to the --stats file ("name count" lines) and to stdout on
 * SIGTERM: an injected fault's at once, before its effect is over, so a
 * test that saw the effect reads the count; the traffic's (requests,
 * connections) within 200 ms, not a file written per request.  Each
 * injection is logged on stderr with the request line.
 *
 * One thread per client connection, blocking I/O: simple enough to trust.
 * Only what forwarding needs is parsed: the request and status lines,
 * Content-Length, Transfer-Encoding: chunked and Connection: close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)
#define BUF_SIZE (64 * 1024)
#define NONE	 UINT64_MAX

enum fault {
	F_500,
	F_503,
	F_RESET_REQ,
	F_RESET_RESP,
	F_STALL,
	F_TRUNCATE,
	F_CORRUPT_RESP,
	F_CORRUPT_REQ,
	F_GARBAGE_LIST,
	F_GARBAGE_XML,
	F_GARBAGE_ERROR,
	F_HUGE_ERROR,
	F_NO_ETAG,
	F_WRONG_ETAG,
	F_STALL_REQ,
	F_WRONG_RANGE,
	F_COUNT,
	F_NONE = F_COUNT,
};

static const char *const fault_names[F_COUNT] = {
    "error500",	    "error503",	   "reset_request",    "reset_response",
    "stall",	    "truncate",	   "corrupt_response", "corrupt_request",
    "garbage_list", "garbage_xml", "garbage_error",    "huge_error",
    "no_etag",	    "wrong_etag",  "stall_request",    "wrong_range",
};

struct settings {
	double p[F_COUNT];
	double stall_s;
	uint64_t huge_bytes;
	char only[256];
	char except[256];
};

/* Everything shared between threads, under one lock. */
static struct {
	pthread_mutex_t lock;
	struct settings base, cur;
	const char *control;
	struct timespec control_mtime;
	off_t control_size;
	bool control_seen;
	uint64_t rng;
	uint64_t injected[F_COUNT];
	uint64_t requests, forwarded, connections, upstream_errors;
	bool unsaved; /* traffic counted since the --stats file was written */
} g = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct sockaddr_storage upstream_addr;
static socklen_t upstream_len;
static const char *stats_path;
static volatile sig_atomic_t stopping;

/* Whether a request's head contains one of the "|"-separated texts. */
static bool excepted(const char *head, const char *except)
{
	char alt[256];

	for (const char *p = except; *p;) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);

		snprintf(alt, sizeof(alt), "%.*s", (int)n, p);
		if (alt[0] && strstr(head, alt))
			return true;
		p += n + (bar != NULL);
	}
	return false;
}

/* --- settings --- */

static bool set_option(struct settings *s, const char *name, const char *val)
{
	char n[64];
	char *end;
	size_t i;

	for (i = 0; name[i] && i < sizeof(n) - 1; i++)
		n[i] = name[i] == '-' ? '_' : name[i];
	n[i] = '\0';
	if (strcmp(n, "only") == 0) {
		snprintf(s->only, sizeof(s->only), "%s", val);
		return true;
	}
	if (strcmp(n, "except") == 0) {
		snprintf(s->except, sizeof(s->except), "%s", val);
		return true;
	}
	if (strcmp(n, "stall_seconds") == 0) {
		s->stall_s = strtod(val, &end);
		return *end == '\0' && s->stall_s >= 0;
	}
	if (strcmp(n, "huge_bytes") == 0) {
		s->huge_bytes = strtoull(val, &end, 10);
		return *end == '\0';
	}
	for (int f = 0; f < F_COUNT; f++)
		if (strcmp(n, fault_names[f]) == 0) {
			s->p[f] = strtod(val, &end);
			return *end == '\0' && s->p[f] >= 0 && s->p[f] <= 1;
		}
	return false;
}

/* The control file's settings over the command line's, read again when it
 * changed.  Called with the lock held. */
static void control_reload(void)
{
	struct stat sb;
	FILE *f;
	char line[512];

	if (g.control == NULL)
		return;
	if (stat(g.control, &sb) < 0) {
		if (g.control_seen)
			g.cur = g.base;
		g.control_seen = false;
		return;
	}
	if (g.control_seen && sb.st_mtim.tv_sec == g.control_mtime.tv_sec &&
	    sb.st_mtim.tv_nsec == g.control_mtime.tv_nsec && sb.st_size == g.control_size)
		return;
	f = fopen(g.control, "r");
	if (f == NULL)
		return;
	g.control_seen = true;
	g.control_mtime = sb.st_mtim;
	g.control_size = sb.st_size;
	g.cur = g.base;
	while (fgets(line, sizeof(line), f)) {
		char *name = strtok(line, " \t\r\n"), *val = strtok(NULL, "\r\n");

		if (name == NULL || name[0] == '#')
			continue;
		while (val && (*val == ' ' || *val == '\t'))
			val++;
		if (!set_option(&g.cur, name, val ? val : ""))
			fprintf(stderr, "faultproxy: %s: ignoring \"%s\"\n", g.control, name);
	}
	fclose(f);
	fprintf(stderr, "faultproxy: settings from %s applied\n", g.control);
}

/* xorshift64*: fast, and reproducible from the seed printed at start. */
static uint64_t rng_next_locked(void)
{
	g.rng ^= g.rng >> 12;
	g.rng ^= g.rng << 25;
	g.rng ^= g.rng >> 27;
	return g.rng * 2685821657736338717ull;
}

static uint64_t rnd_below(uint64_t n)
{
	uint64_t r;

	pthread_mutex_lock(&g.lock);
	r = rng_next_locked();
	pthread_mutex_unlock(&g.lock);
	return n ? r % n : 0;
}

static void write_stats(FILE *out)
{
	for (int f = 0; f < F_COUNT; f++)
		fprintf(out, "%s %llu\n", fault_names[f], (unsigned long long)g.injected[f]);
	fprintf(out, "requests %llu\nforwarded %llu\nconnections %llu\nupstream_errors %llu\n",
		(unsigned long long)g.requests, (unsigned long long)g.forwarded,
		(unsigned long long)g.connections, (unsigned long long)g.upstream_errors);
}

/* Atomically, so a reader never sees half a file.  Called with the lock held. */
static void save_stats(void)
{
	char tmp[4096];
	FILE *f;

	if (stats_path == NULL)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path);
	f = fopen(tmp, "w");
	if (f == NULL)
		return;
	write_stats(f);
	if (fclose(f) == 0 && rename(tmp, stats_path) == 0)
		g.unsaved = false;
}

static void count(enum fault f, const char *reqline)
{
	pthread_mutex_lock(&g.lock);
	g.injected[f]++;
	save_stats();
	pthread_mutex_unlock(&g.lock);
	fprintf(stderr, "faultproxy: %s: %s\n", fault_names[f], reqline);
}

static void bump(uint64_t *counter)
{
	pthread_mutex_lock(&g.lock);
	(*counter)++;
	g.unsaved = true;
	pthread_mutex_unlock(&g.lock);
}

/* --- buffered reading --- */

struct rbuf {
	int fd;
	size_t off, len;
	char b[BUF_SIZE];
};

/* More bytes into the buffer: > 0 read, 0 end of stream, < 0 error. */
static ssize_t rb_fill(struct rbuf *r)
{
	ssize_t k;

	if (r->off == r->len)
		r->off = r->len = 0;
	else if (r->len == sizeof(r->b)) {
		memmove(r->b, r->b + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	do
		k = recv(r->fd, r->b + r->len, sizeof(r->b) - r->len, 0);
	while (k < 0 && errno == EINTR);
	if (k > 0)
		r->len += (size_t)k;
	return k;
}

/* Up to and including the first occurrence of `end` ("\r\n\r\n" for a
 * head, "\r\n" for a chunk line) into out (NUL-terminated): its length, 0
 * at a clean end of stream before any byte, -1 on error or overflow. */
static int rb_until(struct rbuf *r, const char *end, char *out, size_t max)
{
	size_t el = strlen(end);

	for (;;) {
		char *p = memmem(r->b + r->off, r->len - r->off, end, el);

		if (p) {
			size_t n = (size_t)(p - (r->b + r->off)) + el;

			if (n > max)
				return -1;
			memcpy(out, r->b + r->off, n);
			out[n] = '\0';
			r->off += n;
			return (int)n;
		}
		if (r->len - r->off >= max)
			return -1;
		ssize_t k = rb_fill(r);
		if (k == 0 && r->len == r->off)
			return 0;
		if (k <= 0)
			return -1;
	}
}

static bool send_all(int fd, const char *p, size_t n)
{
	if (fd < 0)
		return true; /* discarding */
	while (n > 0) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}

/* n body bytes from src to dst (dst < 0: read and drop).  Stops after
 * `cut` bytes (returns 0); flips the byte at offset `flip`.  1 when all n
 * went, -1 on an I/O error. */
static int forward_body(struct rbuf *src, int dst, uint64_t n, uint64_t cut, uint64_t flip)
{
	uint64_t done = 0;

	while (done < n) {
		size_t take;

		if (done == cut)
			return 0;
		if (src->off == src->len && rb_fill(src) <= 0)
			return -1;
		take = src->len - src->off;
		if (take > n - done)
			take = (size_t)(n - done);
		if (cut != NONE && take > cut - done)
			take = (size_t)(cut - done);
		if (flip != NONE && flip >= done && flip < done + take)
			src->b[src->off + (flip - done)] ^= 0x5a;
		if (!send_all(dst, src->b + src->off, take))
			return -1;
		src->off += take;
		done += take;
	}
	return 1;
}

/* A chunked body, chunk lines and trailers included, passed on unchanged. */
static bool forward_chunked(struct rbuf *src, int dst)
{
	char line[1024];

	for (;;) {
		int n = rb_until(src, "\r\n", line, sizeof(line) - 1);
		unsigned long long size;

		if (n <= 0 || !send_all(dst, line, (size_t)n))
			return false;
		size = strtoull(line, NULL, 16);
		if (size == 0)
			break;
		if (forward_body(src, dst, size + 2, NONE, NONE) != 1)
			return false;
	}
	for (;;) { /* trailers, up to the empty line */
		int n = rb_until(src, "\r\n", line, sizeof(line) - 1);

		if (n <= 0 || !send_all(dst, line, (size_t)n))
			return false;
		if (n == 2)
			return true;
	}
}

/* --- messages --- */

struct msg {
	char method[16];
	char reqline[512]; /* for the log */
	const char *target;
	int status;
	uint64_t clen;
	bool has_clen, chunked, close;
};

static bool header_is(const char *line, const char *name)
{
	size_t n = strlen(name);

	return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

static const char *header_value(const char *line)
{
	const char *v = strchr(line, ':') + 1;

	while (*v == ' ' || *v == '\t')
		v++;
	return v;
}

/* The first line and the framing headers of a head (NUL-terminated). */
static bool parse_head(char *head, bool request, struct msg *m)
{
	char *eol = strstr(head, "\r\n");
	char *line;

	memset(m, 0, sizeof(*m));
	if (eol == NULL)
		return false;
	snprintf(m->reqline, sizeof(m->reqline), "%.*s", (int)(eol - head), head);
	if (request) {
		char *sp = strchr(m->reqline, ' ');

		if (sp == NULL || sp - m->reqline >= (long)sizeof(m->method))
			return false;
		memcpy(m->method, m->reqline, (size_t)(sp - m->reqline));
		m->target = sp + 1;
		m->close = strstr(m->reqline, "HTTP/1.0") != NULL;
	} else {
		if (strncmp(head, "HTTP/1.", 7) != 0)
			return false;
		m->status = atoi(head + 9);
		m->close = strncmp(head, "HTTP/1.0", 8) == 0;
	}
	for (line = eol + 2; *line && strncmp(line, "\r\n", 2) != 0;) {
		char *next = strstr(line, "\r\n");

		if (next == NULL)
			return false;
		*next = '\0';
		if (header_is(line, "Content-Length")) {
			m->clen = strtoull(header_value(line), NULL, 10);
			m->has_clen = true;
		} else if (header_is(line, "Transfer-Encoding"))
			m->chunked = strcasestr(header_value(line), "chunked") != NULL;
		else if (header_is(line, "Connection"))
			m->close = strcasestr(header_value(line), "close") != NULL;
		*next = '\r';
		line = next + 2;
	}
	return true;
}

/* The header line `name` in a head: its start, or NULL. */
static char *find_header(char *head, const char *name)
{
	for (char *line = strstr(head, "\r\n"); line; line = strstr(line + 2, "\r\n"))
		if (header_is(line + 2, name))
			return line + 2;
	return NULL;
}

static bool send_error(int fd, int status, const char *code, const char *message, bool head_only)
{
	char body[1024], out[2048];
	int bl, hl;

	bl = snprintf(body, sizeof(body),
		      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		      "<Error><Code>%s</Code><Message>%s</Message>"
		      "<RequestId>faultproxy-%llu</RequestId></Error>",
		      code, message, (unsigned long long)rnd_below(1000000000));
	hl = snprintf(out, sizeof(out),
		      "HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
		      "x-amz-request-id: faultproxy\r\nContent-Length: %d\r\n\r\n",
		      status, status == 503 ? "Slow Down" : "Internal Server Error",
		      head_only ? 0 : bl);
	return send_all(fd, out, (size_t)hl) && (head_only || send_all(fd, body, (size_t)bl));
}

/* --- one client connection --- */

struct conn {
	int ufd;    /* upstream, -1 until needed or after it closed */
	bool reset; /* end the client's connection with a reset */
	struct rbuf cin, uin;
	char head[HEAD_MAX + 1], rhead[HEAD_MAX + 1];
};

/* A reset (RST), not a clean close: what a crashed peer or a middlebox does. */
static void reset_fd(int fd)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static void upstream_close(struct conn *c)
{
	if (c->ufd >= 0)
		close(c->ufd);
	c->ufd = -1;
	c->uin.fd = -1;
	c->uin.off = c->uin.len = 0;
}

/* An upstream connection that is open and was not closed by the server
 * while idle (a kept-alive connection the server timed out). */
static bool upstream_ready(struct conn *c)
{
	if (c->ufd >= 0) {
		struct pollfd p = {.fd = c->ufd, .events = POLLIN};

		if (poll(&p, 1, 0) == 0)
			return true;
		upstream_close(c); /* EOF or stray bytes: start afresh */
	}
	c->ufd = socket(upstream_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->ufd < 0)
		return false;
	if (connect(c->ufd, (struct sockaddr *)&upstream_addr, upstream_len) < 0) {
		upstream_close(c);
		return false;
	}
	setsockopt(c->ufd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
	setsockopt(c->ufd, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){.tv_sec = 300},
		   sizeof(struct timeval));
	c->uin.fd = c->ufd;
	c->uin.off = c->uin.len = 0;
	return true;
}

/* Hold for `s` seconds; false if the client went away meanwhile. */
static bool stall(int cfd, double s)
{
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		double left;
		struct pollfd p = {.fd = cfd, .events = POLLIN};
		char b;

		clock_gettime(CLOCK_MONOTONIC, &now);
		left = s - (double)(now.tv_sec - t0.tv_sec) - (now.tv_nsec - t0.tv_nsec) / 1e9;
		if (left <= 0)
			return true;
		if (poll(&p, 1, (int)(left * 1000) + 1) > 0 &&
		    recv(cfd, &b, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
			return false;
		if (p.revents & POLLIN)
			usleep(10000); /* bytes of a next request: nothing to do yet */
	}
}

static const char garbage[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
			      "<ListBucketResult><Name>&undefined;</Name><Contents><Key>a\x01"
			      "</Contents><<IsTruncated>maybe</IsTruncated>\xff\xfe";

/* An answer whose body is the garbage above. */
static bool send_garbage(int fd, int status, bool head_only)
{
	char out[256];
	int ol = snprintf(out, sizeof(out),
			  "HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\n"
			  "Content-Length: %zu\r\n\r\n",
			  status, status == 200 ? "OK" : "Internal Server Error",
			  head_only ? 0 : sizeof(garbage) - 1);

	return send_all(fd, out, (size_t)ol) &&
	       (head_only || send_all(fd, garbage, sizeof(garbage) - 1));
}

/* A 500 whose body is `size` bytes: an error document that never ends. */
static bool send_huge_error(int fd, uint64_t size, bool head_only)
{
	static const char start[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				    "<Error><Code>InternalError</Code><Message>";
	char out[512], fill[BUF_SIZE];
	uint64_t sent;
	int hl;

	if (size < sizeof(start))
		size = sizeof(start);
	hl = snprintf(out, sizeof(out),
		      "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
		      "Content-Length: %llu\r\n\r\n",
		      (unsigned long long)(head_only ? 0 : size));
	if (!send_all(fd, out, (size_t)hl))
		return false;
	if (head_only)
		return true;
	if (!send_all(fd, start, sizeof(start) - 1))
		return false;
	memset(fill, 'x', sizeof(fill));
	for (sent = sizeof(start) - 1; sent < size;) {
		size_t n = size - sent < sizeof(fill) ? (size_t)(size - sent) : sizeof(fill);

		if (!send_all(fd, fill, n))
			return false;
		sent += n;
	}
	return true;
}

/* One request and its answer; false when the connection is over. */
static bool serve_one(struct conn *c)
{
	int cfd = c->cin.fd, hl, rl;
	struct msg q, a;
	struct settings s;
	enum fault f = F_NONE;
	uint64_t cut = NONE, flip = NONE;
	int r;

	hl = rb_until(&c->cin, "\r\n\r\n", c->head, HEAD_MAX);
	if (hl <= 0)
		return false;
	if (!parse_head(c->head, true, &q)) {
		send_error(cfd, 400, "BadRequest", "faultproxy could not parse the request", false);
		return false;
	}

	pthread_mutex_lock(&g.lock);
	g.requests++;
	g.unsaved = true;
	control_reload();
	s = g.cur;
	if ((s.only[0] == '\0' || strstr(q.target, s.only)) && !excepted(c->head, s.except)) {
		double x = (double)(rng_next_locked() >> 11) * 0x1.0p-53;

		for (int i = 0; i < F_COUNT && f == F_NONE; i++) {
			if (x < s.p[i])
				f = (enum fault)i;
			x -= s.p[i];
		}
	}
	pthread_mutex_unlock(&g.lock);

	/* Expect: 100-continue is answered here, so the server never sends a
	 * 100 of its own and the client's body follows at once */
	char *expect = find_header(c->head, "Expect");

	if (expect) {
		char *end = strstr(expect, "\r\n") + 2;
		char v[64];

		snprintf(v, sizeof(v), "%.*s", (int)(end - 2 - expect), expect);
		if (strcasestr(v, "100-continue")) {
			memmove(expect, end, strlen(end) + 1);
			hl -= (int)(end - expect);
			if (!send_all(cfd, "HTTP/1.1 100 Continue\r\n\r\n", 25))
				return false;
		}
	}

	if (f == F_500 || f == F_503 || f == F_GARBAGE_ERROR) {
		/* the body is read (and dropped) so the connection stays usable */
		if (q.chunked ? !forward_chunked(&c->cin, -1)
			      : forward_body(&c->cin, -1, q.clen, NONE, NONE) != 1)
			return false;
		count(f, q.reqline);
		if (f == F_GARBAGE_ERROR)
			return send_garbage(cfd, 500, strcmp(q.method, "HEAD") == 0) && !q.close;
		if (f == F_500)
			return send_error(cfd, 500, "InternalError",
					  "We encountered an internal error. Please try again.",
					  strcmp(q.method, "HEAD") == 0) &&
			       !q.close;
		return send_error(cfd, 503, "SlowDown", "Please reduce your request rate.",
				  strcmp(q.method, "HEAD") == 0) &&
		       !q.close;
	}

	if (f == F_STALL_REQ) { /* the request arrives late: a writer may come first */
		count(F_STALL_REQ, q.reqline);
		if (!stall(cfd, s.stall_s))
			return false;
	}
	if (!upstream_ready(c) || !send_all(c->ufd, c->head, (size_t)hl)) {
		/* the server closed a kept-alive connection: once more on a new one */
		upstream_close(c);
		if (!upstream_ready(c) || !send_all(c->ufd, c->head, (size_t)hl)) {
			bump(&g.upstream_errors);
			send_error(cfd, 503, "ServiceUnavailable",
				   "faultproxy cannot reach the server", false);
			return false;
		}
	}

	if (q.chunked)
		r = forward_chunked(&c->cin, c->ufd) ? 1 : -1;
	else {
		if (f == F_RESET_REQ && q.clen >= 2)
			cut = 1 + rnd_below(q.clen - 1);
		else if (f == F_CORRUPT_REQ && strcmp(q.method, "PUT") == 0 && q.clen >= 1)
			flip = rnd_below(q.clen);
		r = forward_body(&c->cin, c->ufd, q.clen, cut, flip);
	}
	if (r == 0) {
		count(F_RESET_REQ, q.reqline);
		upstream_close(c);
		c->reset = true;
		return false;
	}
	if (r < 0)
		return false;
	if (flip != NONE)
		count(F_CORRUPT_REQ, q.reqline);

	do /* interim answers (1xx) pass on as they are */
		rl = rb_until(&c->uin, "\r\n\r\n", c->rhead, HEAD_MAX);
	while (rl > 0 && parse_head(c->rhead, false, &a) && a.status / 100 == 1 &&
	       send_all(cfd, c->rhead, (size_t)rl));
	if (rl <= 0 || !parse_head(c->rhead, false, &a) || a.status / 100 == 1) {
		bump(&g.upstream_errors);
		upstream_close(c);
		return false;
	}
	bump(&g.forwarded);
	bool head_req = strcmp(q.method, "HEAD") == 0;
	bool body = !head_req && a.status >= 200 && a.status != 204 && a.status != 304;
	bool is_get = strcmp(q.method, "GET") == 0, is_put = strcmp(q.method, "PUT") == 0;

	if (f == F_STALL) {
		count(F_STALL, q.reqline);
		if (!stall(cfd, s.stall_s)) {
			upstream_close(c);
			return false;
		}
	}

	/* hostile answers in place of the server's */
	bool is_copy = is_put && find_header(c->head, "x-amz-copy-source") != NULL;

	if (f == F_HUGE_ERROR ||
	    (f == F_GARBAGE_LIST && is_get && strstr(q.target, "list-type=") && a.status == 200) ||
	    (f == F_GARBAGE_XML && (strcmp(q.method, "POST") == 0 || is_copy) && a.status == 200)) {
		if (body && (a.chunked	  ? !forward_chunked(&c->uin, -1)
			     : a.has_clen ? forward_body(&c->uin, -1, a.clen, NONE, NONE) != 1
					  : true)) {
			upstream_close(c);
			return false;
		}
		if (a.close || (body && !a.chunked && !a.has_clen))
			upstream_close(c);
		count(f, q.reqline);
		if (f == F_HUGE_ERROR)
			return send_huge_error(cfd, s.huge_bytes, head_req) && !q.close;
		return send_garbage(cfd, 200, false) && !q.close;
	}
	if (f == F_NO_ETAG && is_put) {
		char *h = find_header(c->rhead, "ETag");

		if (h) {
			char *end = strstr(h, "\r\n") + 2;

			memmove(h, end, strlen(end) + 1);
			rl -= (int)(end - h);
			count(f, q.reqline);
		}
	}
	if (f == F_WRONG_ETAG && (is_put || is_get) && a.status / 100 == 2) {
		char *h = find_header(c->rhead, "ETag");
		char *v = h ? strpbrk(h + 5, "0123456789abcdefABCDEF") : NULL;

		if (v && v < strstr(h, "\r\n")) {
			*v = *v == '0' ? '1' : '0';
			count(f, q.reqline);
		}
	}

	if (f == F_WRONG_RANGE && is_get && a.status == 206) {
		char *h = find_header(c->rhead, "Content-Range");
		char *eol = h ? strstr(h, "\r\n") : NULL;

		if (eol && eol[-1] >= '0' && eol[-1] <= '9') {
			eol[-1] = eol[-1] == '0' ? '1' : '0';
			count(f, q.reqline);
		}
	}

	if (!send_all(cfd, c->rhead, (size_t)rl))
		return false;
	if (!body) {
		if (a.close)
			upstream_close(c);
		return !a.close && !q.close;
	}
	if (a.chunked) {
		if (!forward_chunked(&c->uin, cfd)) {
			upstream_close(c);
			return false;
		}
	} else if (a.has_clen) {
		cut = flip = NONE;
		if ((f == F_RESET_RESP || f == F_TRUNCATE) && a.clen >= 2)
			cut = 1 + rnd_below(a.clen - 1);
		else if (f == F_CORRUPT_RESP && is_get && a.status / 100 == 2 && a.clen >= 1)
			flip = rnd_below(a.clen);
		r = forward_body(&c->uin, cfd, a.clen, cut, flip);
		if (r == 0) {
			count(f, q.reqline);
			upstream_close(c);
			if (f == F_TRUNCATE) {
				shutdown(cfd, SHUT_WR); /* a clean end, too early */
				return false;
			}
			c->reset = true;
			return false;
		}
		if (r < 0) {
			upstream_close(c);
			return false;
		}
		if (flip != NONE)
			count(F_CORRUPT_RESP, q.reqline);
	} else {						  /* ends when the server closes */
		forward_body(&c->uin, cfd, NONE - 1, NONE, NONE); /* -1 at the end */
		upstream_close(c);
		return false;
	}
	if (a.close)
		upstream_close(c);
	return !a.close && !q.close;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;

	while (serve_one(c))
		;
	if (c->reset)
		reset_fd(c->cin.fd);
	else
		close(c->cin.fd);
	upstream_close(c);
	free(c);
	return NULL;
}

/* --- main --- */

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: faultproxy --upstream http://HOST:PORT [--port N] [--port-file F] "
		"[--stats F] [--seed N] [--control F] [--FAULT P ...]\n"
		"  [--stall-seconds S] [--huge-bytes N] [--only TEXT] [--except TEXT]\nfaults:");
	for (int f = 0; f < F_COUNT; f++)
		fprintf(stderr, " %s", fault_names[f]);
	fputc('\n', stderr);
	exit(64);
}

static bool resolve_upstream(const char *url)
{
	char host[256], port[16] = "80";
	const char *p = url, *colon, *slash;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;

	if (strncmp(p, "http://", 7) != 0)
		return false;
	p += 7;
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = p + strlen(p);
	colon = memchr(p, ':', (size_t)(slash - p));
	if (colon) {
		snprintf(host, sizeof(host), "%.*s", (int)(colon - p), p);
		snprintf(port, sizeof(port), "%.*s", (int)(slash - colon - 1), colon + 1);
	} else
		snprintf(host, sizeof(host), "%.*s", (int)(slash - p), p);
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return false;
	memcpy(&upstream_addr, res->ai_addr, res->ai_addrlen);
	upstream_len = res->ai_addrlen;
	freeaddrinfo(res);
	return true;
}

int main(int argc, char **argv)
{
	const char *upstream = NULL, *port_file = NULL;
	uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	int port = 0, lfd;
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sin);

	g.base.stall_s = 3;
	g.base.huge_bytes = 50u << 20;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strncmp(o, "--", 2) != 0 || v == NULL)
			usage();
		o += 2;
		i++;
		if (strcmp(o, "upstream") == 0)
			upstream = v;
		else if (strcmp(o, "port") == 0)
			port = atoi(v);
		else if (strcmp(o, "port-file") == 0)
			port_file = v;
		else if (strcmp(o, "stats") == 0)
			stats_path = v;
		else if (strcmp(o, "seed") == 0)
			seed = strtoull(v, NULL, 10);
		else if (strcmp(o, "control") == 0)
			g.control = v;
		else if (!set_option(&g.base, o, v)) {
			fprintf(stderr, "faultproxy: bad option --%s %s\n", o, v);
			usage();
		}
	}
	if (upstream == NULL)
		usage();
	if (!resolve_upstream(upstream)) {
		fprintf(stderr, "faultproxy: cannot resolve upstream %s (http://HOST:PORT)\n",
			upstream);
		return 69;
	}
	g.cur = g.base;
	/* splitmix64 of the seed: never the all-zero state xorshift cannot leave */
	g.rng = seed + 0x9e3779b97f4a7c15ull;
	g.rng = (g.rng ^ (g.rng >> 30)) * 0xbf58476d1ce4e5b9ull;
	g.rng = (g.rng ^ (g.rng >> 27)) * 0x94d049bb133111ebull;
	g.rng ^= g.rng >> 31;
	if (g.rng == 0)
		g.rng = 1;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(lfd, 512) < 0 || getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0) {
		perror("faultproxy: listen");
		return 71;
	}
	port = ntohs(sin.sin_port);
	printf("faultproxy: listening on 127.0.0.1:%d, forwarding to %s, seed %llu\n", port,
	       upstream, (unsigned long long)seed);
	fflush(stdout);
	pthread_mutex_lock(&g.lock);
	save_stats();
	pthread_mutex_unlock(&g.lock);
	if (port_file) {
		char tmp[4096];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		f = fopen(tmp, "w");
		if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
		    rename(tmp, port_file) < 0) {
			perror("faultproxy: port file");
			return 73;
		}
	}

	while (!stopping) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};

		if (poll(&p, 1, 200) > 0) {
			int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			struct conn *c;
			pthread_t t;

			if (cfd < 0)
				continue;
			c = malloc(sizeof(*c));
			if (c == NULL) {
				close(cfd);
				continue;
			}
			c->ufd = -1;
			c->reset = false;
			c->cin.fd = cfd;
			c->cin.off = c->cin.len = 0;
			c->uin.fd = -1;
			c->uin.off = c->uin.len = 0;
			setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
			bump(&g.connections);
			if (pthread_create(&t, NULL, conn_main, c) != 0) {
				close(cfd);
				free(c);
				continue;
			}
			pthread_detach(t);
		}
		pthread_mutex_lock(&g.lock);
		if (g.unsaved)
			save_stats();
		pthread_mutex_unlock(&g.lock);
	}
	pthread_mutex_lock(&g.lock);
	save_stats();
	write_stats(stdout);
	fflush(stdout);
	pthread_mutex_unlock(&g.lock);
	return 0;
}
