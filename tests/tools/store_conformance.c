/*
 * store_conformance - the one suite every store backend passes (TAP).
 *
 *   store_conformance -c CONF -s STORE [-p PREFIX] [-m MANIFEST_OUT] [-S SEEDED]
 *                     [-C SOURCE_STORE] [-N OTHER_STORE]...
 *   store_conformance -c CONF -s STORE --probe KEY    (prints: CODE MESSAGE)
 *   store_conformance -c CONF -s STORE --url KEY      (prints the object URL)
 *
 * The suite: round trips of empty, small, buffered-limit and multipart-sized
 * objects; every hostile key of the list (stored and read back byte-exact,
 * or refused with ERR_INVALID where the backend cannot represent it);
 * overwrite; delete of a missing key; a listing of more than one page, in
 * order, without duplicates, limited to its prefix; an upload whose source
 * is shorter than announced fails and leaves nothing behind.  Objects left
 * for the independent client are written to MANIFEST_OUT as
 * "KEYHEX SIZE SHA256HEX"; objects the independent client wrote (SEEDED:
 * "KEYHEX SIZE SHA256HEX") are read back and compared.
 *
 * With -C, server-side copies from SOURCE_STORE (another bucket of the same
 * server) into STORE: small, empty and multipart-sized objects (the copy
 * limit is min(5 GiB, multipart_threshold), so a small threshold makes
 * UploadPartCopy parts), every hostile key, Content-Type kept and replaced,
 * a missing source (ERR_NOTFOUND), a source rewritten since its stat
 * (ERR_INTEGRITY), cancels in flight; copies are recorded in MANIFEST_OUT.
 * Backends without copy must refuse it.  Each -N names a store that STORE
 * must not copy from on the server (another endpoint or identity).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../unit/tap.h"
#include "conf.h"
#include "digest.h"
#include "store.h"

static struct store *S;
static struct store *SRC;	/* -C: a second store on the same server, to copy from */
static struct store *NOCOPY[4]; /* -N: stores S must not copy from on the server */
static size_t nnocopy;
static const char *PREFIX = "";
static FILE *manifest;
static int fs_backend;

static int tmpfile_fd(void)
{
	char path[] = "/tmp/imgsync-conf-XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0) {
		perror("mkstemp");
		exit(2);
	}
	unlink(path);
	return fd;
}

/* Deterministic content: a simple PRNG keyed by seed, written into fd. */
static int fill_content(int fd, uint64_t size, unsigned seed)
{
	unsigned char buf[65536];
	uint64_t x = seed * 2654435761u + 1, done = 0;

	while (done < size) {
		size_t n = size - done < sizeof(buf) ? (size_t)(size - done) : sizeof(buf);

		for (size_t i = 0; i < n; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			buf[i] = (unsigned char)x;
		}
		if (pwrite(fd, buf, n, (off_t)done) != (ssize_t)n) {
			perror("pwrite");
			exit(2);
		}
		done += n;
	}
	return fd;
}

static int make_content(uint64_t size, unsigned seed)
{
	return fill_content(tmpfile_fd(), size, seed);
}

static void sha256_fd(int fd, char out[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char buf[65536], md[32];
	unsigned int mdlen = 32;
	off_t off = 0;
	ssize_t n;

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		off += n;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	hex_encode(md, 32, out);
}

static uint64_t fd_size(int fd)
{
	struct stat sb;

	return fstat(fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

static uint32_t crc_fd(int fd)
{
	uint32_t crc = 0;
	struct err e = {0};

	if (!digest_crc32c_fd(&crc, fd, 0, fd_size(fd), &e))
		tap_diag("%s", e.msg);
	return crc;
}

static void record(const char *key, int fd)
{
	char sha[65];
	size_t n = strlen(key);
	char *hex = malloc(2 * n + 1);

	if (manifest == NULL || hex == NULL) {
		free(hex);
		return;
	}
	hex_encode((const unsigned char *)key, n, hex);
	sha256_fd(fd, sha);
	fprintf(manifest, "%s %llu %s\n", hex, (unsigned long long)fd_size(fd), sha);
	free(hex);
}

/* PREFIX + key, in one of a few static buffers: a call may take two. */
static char *pkey(const char *key)
{
	static char buf[4][4096];
	static unsigned n;
	char *b = buf[n++ % 4];

	snprintf(b, sizeof(buf[0]), "%s%s", PREFIX, key);
	return b;
}

static int round_trip_fd(const char *name, const char *key, int src, uint64_t size, int keep);

/* Put, stat, get and compare; returns whether all held. */
static int round_trip(const char *name, const char *key, uint64_t size, unsigned seed, int keep)
{
	return round_trip_fd(name, key, make_content(size, seed), size, keep);
}

/* The same from src, which it closes. */
static int round_trip_fd(const char *name, const char *key, int src, uint64_t size, int keep)
{
	int dst = tmpfile_fd(), good = 1;
	struct obj_info pi, si, gi;
	struct err e = {0};
	char a[65], b[65];

	if (!ok(store_put_sync(S, key, src, size, &pi, &e), "%s: put", name)) {
		tap_diag("%s", e.msg);
		close(src);
		close(dst);
		return 0;
	}
	good &= ok(store_stat_sync(S, key, &si, &e), "%s: stat", name);
	if (!good)
		tap_diag("%s", e.msg);
	else
		is_int(si.size, size, "%s: stat size", name);
	good &= ok(store_get_sync(S, key, dst, &gi, &e), "%s: get", name);
	if (!good)
		tap_diag("%s", e.msg);
	sha256_fd(src, a);
	sha256_fd(dst, b);
	is_int(fd_size(dst), size, "%s: got %llu bytes", name, (unsigned long long)size);
	is_str(b, a, "%s: content byte-exact", name);
	if (pi.has_md5 && si.has_md5)
		ok(memcmp(pi.md5, si.md5, 16) == 0, "%s: checksum reported by stat matches", name);
	/* uploaded in parts: a CRC-32C goes with it, which downloads check */
	if (good && !fs_backend && size > S->cfg->multipart_threshold)
		ok(si.has_crc32c && si.crc32c == crc_fd(src),
		   "%s: stat reports the CRC-32C of the content (%08x)", name, (unsigned)si.crc32c);
	if (good && si.tag[0]) {
		is_str(gi.tag, si.tag, "%s: get and stat give the same tag", name);
		/* what a put reports is what a later look finds: a copy left
		 * behind is recognised by it (work.strays); "" where the
		 * answer did not say (radosgw 16 after a multipart upload) */
		if (pi.tag[0])
			is_str(pi.tag, si.tag, "%s: put and stat give the same tag", name);
	}
	if (keep)
		record(key, src);
	close(src);
	close(dst);
	return good && strcmp(a, b) == 0;
}

static bool put_known(struct store *s, bool adopt, const char *key, int fd, uint64_t size,
		      const struct obj_info *known, struct err *e);

/* A put told the MD5 and the CRC-32C (as after a download that checked
 * them) skips its hashing pass, and still stores the CRC-32C. */
static void put_told_sums(uint64_t size)
{
	int src = make_content(size, 12);
	struct obj_info known = {0}, si = {0};
	struct err e = {0};
	const char *k = pkey("sizes/big-known");

	known.has_md5 = digest_md5_fd(src, known.md5, &e);
	known.has_crc32c = true;
	known.crc32c = crc_fd(src);
	if (ok(known.has_md5 && put_known(S, false, k, src, size, &known, &e),
	       "multipart-sized, MD5 and CRC-32C told: put"))
		ok(store_stat_sync(S, k, &si, &e) && si.has_crc32c && si.crc32c == known.crc32c,
		   "... stored with the CRC-32C it was told (%08x)", (unsigned)known.crc32c);
	else
		tap_diag("%s", e.msg);
	ok(store_del_sync(S, k, &e), "... deleted");
	close(src);
}

static void test_sizes(void)
{
	const uint64_t mib = 1024 * 1024;
	uint64_t big = S->cfg->multipart_threshold + S->cfg->part_size + 12345;

	if (fs_backend)
		big = 7 * mib + 3;
	round_trip("empty object", pkey("sizes/empty"), 0, 1, 1);
	round_trip("one byte", pkey("sizes/one"), 1, 2, 1);
	round_trip("50 KiB image", pkey("sizes/img.jpg"), 50 * 1024, 3, 1);
	/* the largest read and hashed on the loop when cached, and one more */
	round_trip("256 KiB image", pkey("sizes/256k.jpg"), 256 * 1024, 10, 1);
	round_trip("256 KiB + 1", pkey("sizes/256k+1.jpg"), 256 * 1024 + 1, 11, 1);
	round_trip("exactly 1 MiB", pkey("sizes/1mib"), mib, 4, 1);
	round_trip("1 MiB + 1 (streamed)", pkey("sizes/1mib+1"), mib + 1, 5, 1);
	round_trip("multipart-sized", pkey("sizes/big"), big, 6, 1);
	if (!fs_backend) {
		/* downloads come in ranges of range_size, four at a time */
		uint64_t range = S->cfg->range_size;

		round_trip("exactly one download range", pkey("sizes/range"), range, 7, 1);
		round_trip("one download range + 1", pkey("sizes/range+1"), range + 1, 8, 1);
		round_trip("six download ranges", pkey("sizes/6ranges"), 5 * range + 7, 9, 1);
		put_told_sums(big);
	}
}

/* Whether no page of fd's first size bytes is in the page cache. */
static bool evict(int fd, uint64_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t npages = (size_t)((size + (uint64_t)page - 1) / (uint64_t)page);
	unsigned char vec[512];
	void *map;
	bool cold = true;

	if (size == 0 || npages > sizeof(vec) || fdatasync(fd) < 0 ||
	    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
		return false;
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return false;
	if (mincore(map, (size_t)size, vec) < 0)
		cold = false;
	for (size_t i = 0; cold && i < npages; i++)
		cold = !(vec[i] & 1);
	munmap(map, (size_t)size);
	return cold;
}

/*
 * Sources the caches do not hold: stores may serve cached sources on the
 * loop (s3.c read_cached(), fs.c open_cached()) and must fall back to the
 * pool for the rest.  The page cache is emptied for one file with
 * posix_fadvise; the kernel's name caches only as a whole (drop_caches,
 * root only), which is cheap enough once.
 */
static void test_cold(void)
{
	const uint64_t size = 50 * 1024;
	int src = make_content(size, 31);

	if (evict(src, size))
		round_trip_fd("50 KiB image read from the disk, not the page cache",
			      pkey("cold/img.jpg"), src, size, 1);
	else {
		tap_skip("the page cache kept the source (a tmpfs under /tmp?)");
		close(src);
	}
	if (S->ops->open_fd && S->cfg->root) {
		const char *k = pkey("cold/open.jpg");
		struct open_how how = {.flags = O_RDONLY | O_CLOEXEC,
				       .resolve = RESOLVE_BENEATH | RESOLVE_CACHED};
		struct obj_info o;
		struct err e = {0};
		int rootfd = open(S->cfg->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), dc, fd = -1;
		bool dropped = false;
		char x[65], y[65];

		round_trip("open_fd's object, written", k, size, 32, 0);
		dc = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
		if (dc >= 0 && rootfd >= 0 && write(dc, "2", 1) == 1) {
			fd = (int)syscall(SYS_openat2, rootfd, k, &how, sizeof(how));
			dropped = fd < 0 && errno == EAGAIN;
			if (fd >= 0)
				close(fd);
			fd = -1;
		}
		if (dc >= 0)
			close(dc);
		if (rootfd >= 0)
			close(rootfd);
		if (!dropped) {
			tap_skip(
			    "could not empty the kernel's name caches (drop_caches needs root)");
			return;
		}
		ok(store_open_fd_sync(S, k, &fd, &o, &e),
		   "open_fd of an object whose path is in no cache");
		src = make_content(size, 32);
		if (fd >= 0) {
			sha256_fd(fd, x);
			sha256_fd(src, y);
			is_str(x, y, "... gives its bytes");
			close(fd);
		} else
			tap_diag("%s", e.msg);
		close(src);
	}
}

/* Keys every backend must store and return byte-exact. */
static const char *const good_keys[] = {
    "plain.jpg",
    "with space.jpg",
    "plus+sign.png",
    "tilde~name.gif",
    "equals=sign.jpg",
    "percent%20literal.jpg",
    "percent%zz.jpg",
    "star*name.jpg",
    "semi;colon,comma.jpg",
    "quote'paren(x)!.jpg",
    "at@dollar$amp&.jpg",
    "colon:hash#frag.jpg",
    "question?mark.jpg",
    "brackets[1]{2}<3>.jpg",
    "caret^pipe|backtick`.jpg",
    "double\"quote.jpg",
    "back\\slash.jpg",
    "unicode/ファイル/é.png",
    "emoji/😀.gif",
    "combining/e\xcc\x81.jpg", /* e + U+0301, differs from é by normalisation */
    "Case/UPPER.JPG",
    "case/upper.jpg",
    "deep/a/b/c/d/e/f/g/h/i/j/k/l.jpg",
    "dot.in.name/..hidden..",
    ".dotfile",
    "a..b/c...d",
    "trailing space ",
    " leading space",
};

/* Keys an object store holds but a file system cannot represent. */
static const char *const s3_only_keys[] = {
    "runs//of///slashes",
    "dots/../up",
    "dots/./here",
    "trailing/slash/",
};

static void test_keys(void)
{
	char longkey[1100];
	struct err e = {0};
	unsigned seed = 100;
	size_t n;

	for (size_t i = 0; i < sizeof(good_keys) / sizeof(good_keys[0]); i++) {
		char name[200];

		snprintf(name, sizeof(name), "key %zu", i);
		round_trip(name, pkey(good_keys[i]), 100 + i, seed++, 1);
	}
	/* the longest key: 1024 bytes in all, segments of at most 255 bytes */
	n = snprintf(longkey, sizeof(longkey), "%s", PREFIX);
	while (n < 1024) {
		longkey[n] = (n - strlen(PREFIX)) % 200 == 199 ? '/' : 'k';
		n++;
	}
	longkey[1023] = 'z';
	longkey[1024] = '\0';
	round_trip("1024-byte key", longkey, 10, seed++, 1);

	for (size_t i = 0; i < sizeof(s3_only_keys) / sizeof(s3_only_keys[0]); i++) {
		char name[200];
		int src = make_content(7, seed++);
		struct obj_info info;

		snprintf(name, sizeof(name), "object-store key \"%s\"", s3_only_keys[i]);
		if (fs_backend) {
			bool put = store_put_sync(S, pkey(s3_only_keys[i]), src, 7, &info, &e);

			ok(!put && e.code == ERR_INVALID, "%s: refused by the fs store (%s)", name,
			   put ? "stored!" : e.msg);
		} else
			round_trip(name, pkey(s3_only_keys[i]), 7, seed++, 1);
		close(src);
	}
}

static void test_overwrite_delete(void)
{
	struct err e = {0};
	struct obj_info info;
	const char *k = pkey("overwrite/me.jpg");
	int dst;

	round_trip("first version", k, 1000, 500, 0);
	round_trip("second version", k, 2000, 501, 1);
	ok(store_del_sync(S, pkey("missing/never-was.jpg"), &e),
	   "delete of a missing key succeeds");
	ok(store_del_sync(S, pkey("missing-dir/x/y.jpg"), &e),
	   "delete under a missing directory succeeds");
	round_trip("to delete", pkey("deleteme/x.jpg"), 10, 502, 0);
	ok(store_del_sync(S, pkey("deleteme/x.jpg"), &e), "delete");
	ok(!store_stat_sync(S, pkey("deleteme/x.jpg"), &info, &e) && e.code == ERR_NOTFOUND,
	   "stat after delete: not found (%s)", e.msg);
	dst = tmpfile_fd();
	ok(!store_get_sync(S, pkey("deleteme/x.jpg"), dst, &info, &e) && e.code == ERR_NOTFOUND,
	   "get after delete: not found");
	close(dst);
	ok(store_del_sync(S, pkey("deleteme/x.jpg"), &e), "delete twice succeeds");
}

static bool copy_all(int from, int to)
{
	char buf[8192];
	off_t off = 0;
	ssize_t n;

	while ((n = pread(from, buf, sizeof(buf), off)) > 0) {
		if (write(to, buf, (size_t)n) != n)
			return false;
		off += n;
	}
	return n == 0;
}

/* Tags: the same for stat and get of one version, another for a rewrite;
 * del_if deletes only the version it names. */
static void test_tags(void)
{
	struct err e = {0};
	struct obj_info a, g, b;
	const char *k = pkey("tags/t.jpg");
	int src, dst = tmpfile_fd();

	round_trip("tagged, first version", k, 3000, 600, 0);
	ok(store_stat_sync(S, k, &a, &e) && a.tag[0], "stat reports a tag (%s)", a.tag);
	ok(store_get_sync(S, k, dst, &g, &e), "get");
	is_str(g.tag, a.tag, "get reports the same tag");
	usleep(20000); /* file times tick in milliseconds */
	round_trip("tagged, rewritten (same size)", k, 3000, 601, 0);
	ok(store_stat_sync(S, k, &b, &e) && strcmp(a.tag, b.tag) != 0,
	   "a rewrite changes the tag (%s)", b.tag);
	close(dst);
	if (S->ops->open_fd) {
		int fd = -1;
		char x[65], y[65];
		struct obj_info o;

		ok(store_open_fd_sync(S, k, &fd, &o, &e), "open_fd gives the object's own file");
		is_str(o.tag, b.tag, "... with the same tag as stat");
		dst = tmpfile_fd();
		ok(store_get_sync(S, k, dst, &o, &e), "get");
		if (fd >= 0) {
			sha256_fd(fd, x);
			sha256_fd(dst, y);
			is_str(x, y, "... and the same bytes as get");
			close(fd);
		}
		close(dst);
		ok(!store_open_fd_sync(S, pkey("tags/none.jpg"), &fd, &o, &e) &&
		       e.code == ERR_NOTFOUND,
		   "open_fd of a missing object: not found");
	}
	if (S->ops->del_if == NULL) {
		tap_diag("%s: no del_if (a mover stats, compares and deletes)", S->ops->type);
		return;
	}
	ok(!store_del_if_sync(S, k, a.tag, &e) && e.code == ERR_INTEGRITY,
	   "del_if with the old version's tag refuses: %s", e.msg);
	ok(store_stat_sync(S, k, &g, &e) && strcmp(g.tag, b.tag) == 0,
	   "... and the rewritten object is untouched");
	ok(store_del_if_sync(S, k, b.tag, &e), "del_if with the current tag deletes");
	ok(!store_stat_sync(S, k, &g, &e) && e.code == ERR_NOTFOUND, "... it is gone");
	ok(store_del_if_sync(S, k, b.tag, &e), "del_if of a missing object succeeds");
	if (!fs_backend)
		return;
	/* an application writing the file in place, as SQLAlchemy-ImageAttach does */
	round_trip("tagged, before an in-place write", k, 500, 602, 0);
	ok(store_stat_sync(S, k, &a, &e), "stat");
	usleep(20000);
	{
		struct buf path = BUF_INIT;
		int fd;

		buf_printf(&path, "%s/%s", S->cfg->root, k);
		fd = open(buf_str(&path), O_WRONLY | O_TRUNC);
		src = make_content(500, 603);
		ok(fd >= 0 && copy_all(src, fd), "the file is written again in place");
		if (fd >= 0)
			close(fd);
		close(src);
		buf_free(&path);
	}
	ok(!store_del_if_sync(S, k, a.tag, &e) && e.code == ERR_INTEGRITY,
	   "del_if after an in-place write refuses: %s", e.msg);
	ok(store_stat_sync(S, k, &b, &e) && b.size == 500 && strcmp(a.tag, b.tag) != 0,
	   "... the file is back under its name, with the new tag");
	/* a delete killed after setting the file aside: its retry finishes it */
	{
		struct buf from = BUF_INIT, to = BUF_INIT;
		struct stat sb;

		round_trip("tagged, to be set aside", k, 100, 604, 0);
		ok(store_stat_sync(S, k, &a, &e), "stat");
		buf_printf(&from, "%s/%s", S->cfg->root, k);
		buf_printf(&to, "%s/%s/.t.jpg.imgsync-0badc0de", S->cfg->root, pkey("tags"));
		ok(rename(buf_str(&from), buf_str(&to)) == 0,
		   "a file set aside, as by a killed delete");
		ok(store_del_if_sync(S, k, a.tag, &e), "the retried del_if succeeds");
		ok(stat(buf_str(&to), &sb) < 0 && errno == ENOENT,
		   "... and unlinks what the killed one set aside");
		buf_free(&from);
		buf_free(&to);
	}
}

/* Many puts in flight at once, through the loop. */
struct batch {
	int inflight, failed, done;
	struct err last;
};

static void batch_done(void *arg, const struct err *e)
{
	struct batch *b = arg;

	b->inflight--;
	b->done++;
	if (e) {
		b->failed++;
		b->last = *e;
	}
}

static void test_listing(void)
{
	const int N = 1005;
	struct batch b = {0};
	struct err e = {0};
	int src = make_content(3, 900), seen = 0, pages = 0, sorted = 1, inprefix = 1;
	char prev[2048] = "", key[256], pfx[256];
	char *token = NULL;
	struct obj_info *infos = calloc(N, sizeof(*infos));

	for (int i = 0; i < N;) {
		while (b.inflight < 32 && i < N) {
			struct store_req *r;

			snprintf(key, sizeof(key), "%slist/item-%05d", PREFIX, i);
			if (!S->ops->put(S, key, src, 3, NULL, &infos[i], batch_done, &b, &r, &e)) {
				b.failed++;
				b.last = e;
			} else
				b.inflight++;
			i++;
		}
		if (!loop_run_once(S->env.loop, -1, &e))
			break;
	}
	while (b.inflight > 0 && loop_run_once(S->env.loop, -1, &e))
		;
	if (!ok(b.failed == 0, "%d concurrent puts", N))
		tap_diag("%d failed, last: %s", b.failed, b.last.msg);
	/* a sibling that shares the prefix's characters but not the prefix */
	snprintf(key, sizeof(key), "%slist-sibling", PREFIX);
	if (!store_put_sync(S, key, src, 3, NULL, &e))
		tap_diag("sibling: %s", e.msg);

	snprintf(pfx, sizeof(pfx), "%slist/", PREFIX);
	do {
		struct store_list l;

		if (!ok(store_list_sync(S, pfx, token, &l, &e), "list page %d", pages + 1)) {
			tap_diag("%s", e.msg);
			break;
		}
		pages++;
		tap_diag("page %d: %zu keys, next %s", pages, l.n, l.next ? l.next : "(none)");
		for (size_t i = 0; i < l.n; i++) {
			if (strcmp(l.v[i].key, prev) <= 0)
				sorted = 0;
			if (strncmp(l.v[i].key, pfx, strlen(pfx)) != 0)
				inprefix = 0;
			snprintf(prev, sizeof(prev), "%s", l.v[i].key);
			seen++;
		}
		free(token);
		token = l.next ? strdup(l.next) : NULL;
		store_list_free(&l);
	} while (token && pages < 10);
	free(token);
	is_int(seen, N, "listing returned every key once");
	ok(pages >= 2, "listing took %d pages", pages);
	ok(sorted, "keys come in byte order without duplicates");
	ok(inprefix, "only keys under the prefix");
	free(infos);
	close(src);
}

static void test_short_source(void)
{
	/* The source ends before the size announced: the put must fail, and
	 * no object (and for S3 no multipart upload) may remain. */
	uint64_t size = fs_backend ? 100000 : S->cfg->multipart_threshold + 1;
	int src = make_content(size - 50, 77);
	struct obj_info info;
	struct err e = {0};
	const char *k = pkey("short/source.bin");

	ok(!store_put_sync(S, k, src, size, &info, &e) && e.code == ERR_INTEGRITY,
	   "a source shorter than announced fails: %s", e.msg);
	ok(!store_stat_sync(S, k, &info, &e) && e.code == ERR_NOTFOUND,
	   "nothing is left under the key");
	close(src);
}

/* Cancel operations in flight, then close the descriptors and free the
 * outputs at once: nothing may touch them afterwards (ASan watches), and a
 * cancelled multipart upload must not stay open (the driver checks). */
static void test_cancel(void)
{
	uint64_t big = fs_backend ? 4u << 20 : S->cfg->multipart_threshold + 4 * S->cfg->part_size;
	int src = make_content(big, 31), dst = tmpfile_fd();
	struct obj_info *pi = calloc(1, sizeof(*pi)), *gi = calloc(1, sizeof(*gi));
	struct store_list *li = calloc(1, sizeof(*li));
	struct store_req *rp, *rg, *rl;
	struct batch b = {0};
	struct err e = {0};
	uint64_t until;
	bool started, in_flight = false;

	round_trip("object to read while cancelling", pkey("cancel/src"), 1000, 32, 0);
	started = S->ops->put(S, pkey("cancel/big"), src, big, NULL, pi, batch_done, &b, &rp, &e);
	ok(started, "start a big put");
	/* let a multipart upload get its id and start parts */
	until = loop_clock_ms() + 40;
	while (loop_clock_ms() < until && loop_run_once(S->env.loop, 50, &e))
		;
	ok(S->ops->get(S, pkey("cancel/src"), dst, 0, gi, batch_done, &b, &rg, &e), "start a get");
	ok(S->ops->list(S, pkey("cancel/"), NULL, li, batch_done, &b, &rl, &e), "start a list");
	if (started && b.done == 0) {
		S->ops->cancel(S, rp);
		in_flight = true;
	}
	tap_diag("the put was %s when cancelled", b.done ? "already done" : "in flight");
	S->ops->cancel(S, rg);
	S->ops->cancel(S, rl);
	/* its upload is aborted in the background: the store may not be
	 * closed under that (busy()) */
	if (S->ops->busy && in_flight)
		ok(S->ops->busy(S), "a put cancelled in flight keeps the store busy (its abort)");
	close(src);
	close(dst);
	free(pi);
	free(gi);
	free(li);
	/* cancelled at once, before its first request leaves: nothing may stay
	 * open (the driver checks).  The harder case, a cancel after
	 * CreateMultipartUpload was sent but before its answer, needs a proxy
	 * that stalls answers to hit every time (the fault tests). */
	src = make_content(big, 33);
	if (ok(S->ops->put(S, pkey("cancel/at-once"), src, big, NULL, NULL, batch_done, &b, &rp,
			   &e),
	       "start another big put"))
		S->ops->cancel(S, rp);
	close(src);
	/* give background work (an abort, pool jobs) time to end; a store that
	 * says when it has, until then */
	until = loop_clock_ms() + (S->ops->busy ? 15000 : 1500);
	while (loop_clock_ms() < until && (!S->ops->busy || S->ops->busy(S)) &&
	       loop_run_once(S->env.loop, 50, &e))
		;
	if (S->ops->busy)
		ok(!S->ops->busy(S), "then the store is no longer busy: its own requests are over");
	ok(b.done <= 1, "no callback after cancel (%d)", b.done);
	ok(store_del_sync(S, pkey("cancel/big"), &e), "the store works on after cancels");
}

/* Parked notices (store_env.parked): a put's comes before its done(), at
 * most once, and a put cancelled before either sends neither.  An fs store
 * with fsync whose file system it syncs in groups (lib/fs.c) sends them
 * for puts that wait for their group: some must come among 64 at once. */
struct parked_put {
	int parked, done, late; /* late: parked after done */
	bool cancelled, failed;
};

static void pp_parked(void *arg)
{
	struct parked_put *p = arg;

	p->late += p->done > 0;
	p->parked++;
}

static int pp_inflight;

static void pp_done(void *arg, const struct err *e)
{
	struct parked_put *p = arg;

	p->done++;
	p->failed |= e != NULL;
	pp_inflight--;
}

/* Whether lib/fs.c syncs puts to S in groups (see fs_open_store()). */
static bool fs_groups(void)
{
	const char *no = getenv("IMGSYNC_FS_NO_GROUP_SYNC");
	struct statfs f;
	struct utsname u;
	int major = 0, minor = 0;

	if (!fs_backend || !S->cfg->fsync || (no && strcmp(no, "1") == 0) ||
	    statfs(S->cfg->root, &f) < 0 || uname(&u) < 0 ||
	    sscanf(u.release, "%d.%d", &major, &minor) != 2 || major * 100 + minor < 508)
		return false;
	/* ext2/3/4, XFS, Btrfs, tmpfs */
	return f.f_type == 0xEF53 || f.f_type == 0x58465342 || f.f_type == (long)0x9123683E ||
	       f.f_type == 0x01021994;
}

static void test_parked(void)
{
	enum { N = 64 };
	struct parked_put *p = calloc(N, sizeof(*p));
	struct obj_info *info = calloc(N, sizeof(*info));
	int src = make_content(1024, 41), parked = 0, late = 0, twice = 0, undone = 0, failed = 0,
	    after_cancel = 0, cancelled = 0;
	struct err e = {0};
	uint64_t until;

	S->env.parked = pp_parked;
	for (int i = 0; i < N; i++) {
		struct store_req *r;
		char k[64];

		snprintf(k, sizeof(k), "parked/%02d", i);
		if (!S->ops->put(S, pkey(k), src, 1024, NULL, &info[i], pp_done, &p[i], &r, &e)) {
			p[i].failed = true;
			continue;
		}
		pp_inflight++;
		if (i % 8 == 7) { /* some cancelled at once */
			S->ops->cancel(S, r);
			p[i].cancelled = true;
			pp_inflight--;
		}
	}
	while (pp_inflight > 0 && loop_run_once(S->env.loop, -1, &e))
		;
	/* a notice for a cancelled put would come by now */
	until = loop_clock_ms() + 200;
	while (loop_clock_ms() < until && loop_run_once(S->env.loop, 50, &e))
		;
	S->env.parked = NULL;
	for (int i = 0; i < N; i++) {
		if (p[i].cancelled) {
			cancelled++;
			after_cancel += p[i].parked + p[i].done;
			continue;
		}
		parked += p[i].parked;
		late += p[i].late;
		twice += p[i].parked > 1;
		undone += p[i].done != 1;
		failed += p[i].failed;
	}
	ok(failed == 0 && undone == 0, "%d puts with a parked callback: each done once (%d failed)",
	   N - cancelled, failed);
	ok(late == 0 && twice == 0, "... no put parked after its done (%d) or twice (%d)", late,
	   twice);
	ok(after_cancel == 0, "... no parked or done for the %d cancelled (%d)", cancelled,
	   after_cancel);
	if (fs_groups())
		ok(parked > 0, "... puts synced in groups parked (%d)", parked);
	else
		tap_diag("%d puts parked (this store does not sync puts in groups)", parked);
	free(p);
	free(info);
	close(src);
}

/* --- server-side copy (-C SRC: another bucket of the same server) --- */

static void wait_batch(struct batch *b)
{
	struct err e = {0};

	while (b->inflight > 0 && loop_run_once(S->env.loop, -1, &e))
		;
}

/* A put that sends a Content-Type. */
/* A put (or an adopt) told what KNOWN says, waited for. */
static bool put_known(struct store *s, bool adopt, const char *key, int fd, uint64_t size,
		      const struct obj_info *known, struct err *e)
{
	struct obj_info out;
	struct batch b = {0};
	struct store_req *r;

	if (!(adopt ? s->ops->adopt : s->ops->put)(s, key, fd, size, known, &out, batch_done, &b,
						   &r, e))
		return false;
	b.inflight++;
	wait_batch(&b);
	if (b.failed)
		*e = b.last;
	return b.failed == 0;
}

static bool put_typed(struct store *s, const char *key, int fd, uint64_t size, const char *ct,
		      struct err *e)
{
	struct obj_info known = {0};

	snprintf(known.content_type, sizeof(known.content_type), "%s", ct);
	return put_known(s, false, key, fd, size, &known, e);
}

/* Put into SRC (typed when ct), then stat it there. */
static bool copy_source(const char *key, int fd, const char *ct, struct obj_info *si)
{
	struct err e = {0};
	bool r = ct ? put_typed(SRC, key, fd, fd_size(fd), ct, &e)
		    : store_put_sync(SRC, key, fd, fd_size(fd), NULL, &e);

	if (r)
		r = store_stat_sync(SRC, key, si, &e);
	if (!r)
		tap_diag("source \"%s\": %s", key, e.msg);
	return r;
}

/* Copy, then check what dst holds: the bytes of src_fd (get), the size
 * and Content-Type (stat), and what copy reported. */
static int copy_check(const char *name, struct store *from, const char *src_key,
		      const char *dst_key, int src_fd, const struct obj_info *si,
		      const char *want_ct)
{
	struct obj_info ci, di, gi;
	struct err e = {0};
	int dst = tmpfile_fd(), good;
	char a[65], b[65];

	if (!ok(store_copy_sync(S, from, src_key, dst_key, si, &ci, &e), "%s: copy", name)) {
		tap_diag("%s", e.msg);
		close(dst);
		return 0;
	}
	good = ok(ci.size == fd_size(src_fd), "%s: copy reports the size (%llu)", name,
		  (unsigned long long)ci.size);
	/* radosgw 16 answers CompleteMultipartUpload with an empty ETag */
	good &= ok(ci.etag[0] != '\0' || fd_size(src_fd) > S->cfg->multipart_threshold,
		   "%s: copy reports an ETag (%s)", name, ci.etag[0] ? ci.etag : "none");
	if (ci.has_md5 && si && si->has_md5)
		good &=
		    ok(memcmp(ci.md5, si->md5, 16) == 0, "%s: copy reports the source's MD5", name);
	if (!ok(store_get_sync(S, dst_key, dst, &gi, &e), "%s: get the copy", name))
		tap_diag("%s", e.msg);
	sha256_fd(src_fd, a);
	sha256_fd(dst, b);
	good &= ok(strcmp(a, b) == 0, "%s: the copy is byte-exact", name);
	if (ok(store_stat_sync(S, dst_key, &di, &e), "%s: stat the copy", name)) {
		good &= ok(di.size == fd_size(src_fd), "%s: stat size (%llu)", name,
			   (unsigned long long)di.size);
		if (want_ct)
			good &= ok(strcmp(di.content_type, want_ct) == 0,
				   "%s: Content-Type %s (want %s)", name, di.content_type, want_ct);
		if (ci.has_md5 && di.has_md5)
			good &= ok(memcmp(ci.md5, di.md5, 16) == 0,
				   "%s: the MD5 copy reported is the one stat reports", name);
		if (di.tag[0] && ci.tag[0])
			good &= ok(strcmp(ci.tag, di.tag) == 0,
				   "%s: copy and stat give the same tag (%s, %s)", name, ci.tag,
				   di.tag);
	} else
		tap_diag("%s", e.msg);
	if (good)
		record(dst_key, src_fd);
	close(dst);
	return good;
}

static void test_copy_unsupported(void)
{
	struct obj_info info = {0};
	struct err e = {0};
	bool r;

	ok(!store_can_copy(S, SRC), "store \"%s\" does not copy from \"%s\" on the server",
	   S->cfg->name, SRC->cfg->name);
	r = store_copy_sync(S, SRC, pkey("x"), pkey("y"), NULL, &info, &e);
	ok(!r && e.code == ERR_INVALID, "store_copy_sync refuses: %s", r ? "copied!" : e.msg);
}

/* A copy of src_key given a CRC-32C that does not match its bytes (the
 * metadata replaced): a download of it refuses them. */
static void bad_crc_check(const char *name, const char *src_key, const char *dst_key, int src_fd,
			  const struct obj_info *si)
{
	struct obj_info bad = *si, ci, gi;
	struct err e = {0};
	int dst = tmpfile_fd();

	bad.has_crc32c = true;
	bad.crc32c = crc_fd(src_fd) ^ 1;
	snprintf(bad.content_type, sizeof(bad.content_type), "image/png");
	if (ok(store_copy_sync(S, SRC, src_key, dst_key, &bad, &ci, &e),
	       "%s: copy with a wrong CRC-32C stored", name))
		ok(!store_get_sync(S, dst_key, dst, &gi, &e) && e.code == ERR_INTEGRITY &&
		       strstr(e.msg, "CRC-32C"),
		   "%s: a download of it fails: the bytes do not match the CRC-32C (%s)", name,
		   e.msg);
	else
		tap_diag("%s", e.msg);
	close(dst);
	ok(store_del_sync(S, dst_key, &e), "%s: delete it", name);
}

static void test_copy_basic(void)
{
	struct obj_info si, x;
	struct err e = {0};
	int src = make_content(50 * 1024, 700), empty = make_content(0, 701);
	const char *sk = "copysrc/img.jpg";
	char skey[4096];

	ok(store_can_copy(S, SRC), "store \"%s\" copies from \"%s\" on the server", S->cfg->name,
	   SRC->cfg->name);
	ok(store_can_copy(S, S), "a store copies within its own bucket");
	for (size_t i = 0; i < nnocopy; i++)
		ok(!store_can_copy(S, NOCOPY[i]) && !store_can_copy(NOCOPY[i], S),
		   "no server-side copy between \"%s\" and \"%s\" (another server or identity)",
		   S->cfg->name, NOCOPY[i]->cfg->name);

	snprintf(skey, sizeof(skey), "%s", pkey(sk));
	if (copy_source(skey, src, "image/jpeg", &si)) {
		struct obj_info kept = si, repl = si;

		is_str(si.content_type, "image/jpeg", "the source has its Content-Type");
		copy_check("copy of a 50 KiB image", SRC, skey, pkey("copy/img.jpg"), src, &si,
			   "image/jpeg");
		kept.content_type[0] = '\0';
		copy_check("Content-Type kept", SRC, skey, pkey("copy/ct-kept.jpg"), src, &kept,
			   "image/jpeg");
		snprintf(repl.content_type, sizeof(repl.content_type), "image/webp");
		copy_check("Content-Type replaced", SRC, skey, pkey("copy/ct-replaced.jpg"), src,
			   &repl, "image/webp");
		copy_check("copy without src_info (a HEAD first)", SRC, skey,
			   pkey("copy/no-info.jpg"), src, NULL, "image/jpeg");
		if (!fs_backend)
			bad_crc_check("50 KiB", skey, pkey("copy/bad-crc.jpg"), src, &si);
		{
			/* within one bucket, and the same object again (a copy onto itself
			 * with the type replaced is allowed) */
			struct obj_info within;

			if (ok(store_stat_sync(S, pkey("copy/img.jpg"), &within, &e),
			       "stat the first copy"))
				copy_check("copy within one bucket", S, pkey("copy/img.jpg"),
					   pkey("copy/within.jpg"), src, &within, NULL);
		}
	}
	if (copy_source(pkey("copysrc/empty"), empty, NULL, &si))
		copy_check("copy of an empty object", SRC, pkey("copysrc/empty"),
			   pkey("copy/empty"), empty, &si, NULL);

	/* a missing source */
	memset(&x, 0, sizeof(x));
	x.size = 10;
	ok(!store_copy_sync(S, SRC, pkey("copysrc/missing/never.jpg"), pkey("copy/missing.jpg"), &x,
			    &si, &e) &&
	       e.code == ERR_NOTFOUND,
	   "copy of a missing source: not found (%s)", e.msg);
	ok(!store_copy_sync(S, SRC, pkey("copysrc/missing/never.jpg"), pkey("copy/missing.jpg"),
			    NULL, &si, &e) &&
	       e.code == ERR_NOTFOUND,
	   "copy of a missing source without src_info: not found (%s)", e.msg);
	x.size = S->cfg->multipart_threshold + 1;
	ok(!store_copy_sync(S, SRC, pkey("copysrc/missing/never.jpg"), pkey("copy/missing.jpg"), &x,
			    &si, &e) &&
	       e.code == ERR_NOTFOUND,
	   "multipart copy of a missing source: not found (%s)", e.msg);
	/* with a Content-Type given, no HEAD first: the parts themselves fail */
	snprintf(x.content_type, sizeof(x.content_type), "image/jpeg");
	ok(!store_copy_sync(S, SRC, pkey("copysrc/missing/never.jpg"), pkey("copy/missing.jpg"), &x,
			    &si, &e) &&
	       e.code == ERR_NOTFOUND,
	   "UploadPartCopy of a missing source: not found (%s)", e.msg);
	ok(!store_stat_sync(S, pkey("copy/missing.jpg"), &si, &e) && e.code == ERR_NOTFOUND,
	   "no object made of a missing source");
	ok(!store_copy_sync(S, SRC, "", pkey("copy/x"), NULL, &si, &e) && e.code == ERR_INVALID,
	   "an empty source key is refused");
	close(src);
	close(empty);
}

static void test_copy_keys(void)
{
	unsigned seed = 800;

	for (size_t i = 0; i < sizeof(good_keys) / sizeof(good_keys[0]) +
				   sizeof(s3_only_keys) / sizeof(s3_only_keys[0]);
	     i++) {
		size_t ng = sizeof(good_keys) / sizeof(good_keys[0]);
		const char *k = i < ng ? good_keys[i] : s3_only_keys[i - ng];
		char name[300], skey[2048], dkey[2048];
		int src = make_content(100 + i, seed++);
		struct obj_info si;

		snprintf(name, sizeof(name), "copy of key %zu \"%s\"", i, k);
		snprintf(skey, sizeof(skey), "%scopysrc/k/%s", PREFIX, k);
		snprintf(dkey, sizeof(dkey), "%scopy/k/%s", PREFIX, k);
		if (copy_source(skey, src, NULL, &si))
			copy_check(name, SRC, skey, dkey, src, &si, NULL);
		close(src);
	}
}

/* A source rewritten between its stat and the copy: refused by the server
 * (412), or caught by the store where the server ignores the condition. */
static void test_copy_changed(void)
{
	struct obj_info si, out;
	struct err e = {0};
	int v1 = make_content(2000, 710), v2 = make_content(2000, 711);
	const char *k = pkey("copysrc/changing.jpg");
	bool r;

	if (copy_source(k, v1, "image/jpeg", &si)) {
		if (!store_put_sync(SRC, k, v2, 2000, NULL, &e))
			tap_diag("rewrite: %s", e.msg);
		r = store_copy_sync(S, SRC, k, pkey("copy/changed.jpg"), &si, &out, &e);
		ok(!r && e.code == ERR_INTEGRITY,
		   "copy of a source rewritten since its stat fails as changed: %s",
		   r ? "copied!" : e.msg);
		tap_diag("the server %s x-amz-copy-source-if-match",
			 strstr(e.msg, "PreconditionFailed") ? "honours" : "ignores");
	}
	close(v1);
	close(v2);
}

static void test_copy_multipart(void)
{
	uint64_t big = S->cfg->multipart_threshold + S->cfg->part_size + 12345;
	int src = make_content(big, 720), v2 = make_content(big, 721);
	struct obj_info si, out;
	struct err e = {0};
	char skey[4096];
	bool r;

	snprintf(skey, sizeof(skey), "%s", pkey("copysrc/big image.tiff"));
	if (!copy_source(skey, src, "image/tiff", &si)) {
		close(src);
		close(v2);
		return;
	}
	{
		struct obj_info kept = si, repl = si;

		copy_check("multipart copy (UploadPartCopy)", SRC, skey, pkey("copy/big+1.tiff"),
			   src, &si, "image/tiff");
		kept.content_type[0] = '\0';
		copy_check("multipart copy, Content-Type kept", SRC, skey,
			   pkey("copy/big+kept.tiff"), src, &kept, "image/tiff");
		snprintf(repl.content_type, sizeof(repl.content_type), "image/x-tiff");
		copy_check("multipart copy, Content-Type replaced", SRC, skey,
			   pkey("copy/big+repl.tiff"), src, &repl, "image/x-tiff");
		copy_check("multipart copy without src_info", SRC, skey,
			   pkey("copy/big+noinfo.tiff"), src, NULL, "image/tiff");
		/* in parts, downloaded in ranges: the CRC-32C carried across them */
		bad_crc_check("multipart", skey, pkey("copy/big-bad-crc.tiff"), src, &si);
	}
	if (store_put_sync(SRC, skey, v2, big, NULL, &e)) {
		r = store_copy_sync(S, SRC, skey, pkey("copy/big-changed.tiff"), &si, &out, &e);
		ok(!r && e.code == ERR_INTEGRITY,
		   "multipart copy of a source rewritten since its stat fails as changed: %s",
		   r ? "copied!" : e.msg);
		ok(!store_stat_sync(S, pkey("copy/big-changed.tiff"), &out, &e) &&
		       e.code == ERR_NOTFOUND,
		   "and leaves no object");
	} else
		tap_diag("rewrite: %s", e.msg);
	close(src);
	close(v2);
}

/* Copies cancelled in flight: no callback, nothing touched afterwards,
 * no multipart upload left open (the driver checks the bucket). */
static void test_copy_cancel(void)
{
	uint64_t big = S->cfg->multipart_threshold + 4 * S->cfg->part_size;
	int src = make_content(big, 730), small = make_content(3000, 731);
	struct obj_info si, ssi, *o[4];
	struct store_req *r[4];
	struct batch b = {0};
	struct err e = {0};
	bool started[4] = {0}, cancelled[4] = {0};
	uint64_t until;
	const char *keys[4] = {"copy/cancel/big-in-flight", "copy/cancel/big-at-once",
			       "copy/cancel/small-at-once", "copy/cancel/head-at-once"};
	char dkeys[4][4096];

	if (!copy_source(pkey("copysrc/cancel-big"), src, "image/png", &si) ||
	    !copy_source(pkey("copysrc/cancel-small"), small, NULL, &ssi)) {
		close(src);
		close(small);
		return;
	}
	for (int i = 0; i < 4; i++) {
		o[i] = calloc(1, sizeof(*o[i]));
		snprintf(dkeys[i], sizeof(dkeys[i]), "%s", pkey(keys[i]));
	}
	/* a multipart copy, cancelled once parts are on their way */
	started[0] = S->ops->copy(S, SRC, pkey("copysrc/cancel-big"), dkeys[0], &si, o[0],
				  batch_done, &b, &r[0], &e);
	ok(started[0], "start a multipart copy");
	until = loop_clock_ms() + 60;
	while (loop_clock_ms() < until && b.done == 0 && loop_run_once(S->env.loop, 20, &e))
		;
	if (started[0] && b.done == 0) {
		S->ops->cancel(S, r[0]);
		cancelled[0] = true;
	}
	tap_diag("the multipart copy was %s when cancelled", b.done ? "already done" : "in flight");
	/* cancelled before their first request leaves */
	started[1] = S->ops->copy(S, SRC, pkey("copysrc/cancel-big"), dkeys[1], &si, o[1],
				  batch_done, &b, &r[1], &e);
	started[2] = S->ops->copy(S, SRC, pkey("copysrc/cancel-small"), dkeys[2], &ssi, o[2],
				  batch_done, &b, &r[2], &e);
	started[3] = S->ops->copy(S, SRC, pkey("copysrc/cancel-small"), dkeys[3], NULL, o[3],
				  batch_done, &b, &r[3], &e);
	ok(started[1] && started[2] && started[3], "start three more copies");
	for (int i = 1; i < 4; i++)
		if (started[i]) {
			S->ops->cancel(S, r[i]);
			cancelled[i] = true;
		}
	for (int i = 0; i < 4; i++)
		free(o[i]); /* nothing may write into them now */
	until = loop_clock_ms() + 1500;
	while (loop_clock_ms() < until && loop_run_once(S->env.loop, 50, &e))
		;
	ok(b.done == (cancelled[0] ? 0 : 1), "no callback after cancel (%d)", b.done);
	for (int i = 0; i < 2; i++)
		if (cancelled[i])
			ok(!store_stat_sync(S, dkeys[i], &si, &e) && e.code == ERR_NOTFOUND,
			   "a cancelled multipart copy leaves no object (%s)", keys[i]);
	ok(store_copy_sync(S, SRC, pkey("copysrc/cancel-small"), pkey("copy/cancel/after"), &ssi,
			   &si, &e),
	   "the store copies on after cancels");
	close(src);
	close(small);
}

static void test_copy(void)
{
	if (SRC == NULL)
		return;
	if (!S->ops->copy || !S->ops->can_copy) {
		test_copy_unsupported();
		return;
	}
	test_copy_basic();
	test_copy_keys();
	test_copy_changed();
	test_copy_multipart();
	test_copy_cancel();
}

/* A put (or adopt, or copy) given if_absent: ERR_EXISTS where the key
 * holds an object, which stays as it was. */
static bool put_if_absent(bool adopt, const char *key, int fd, uint64_t size, struct err *e)
{
	return put_known(S, adopt, key, fd, size, &(struct obj_info){.if_absent = true}, e);
}

/* Whether key holds exactly the content of fd. */
static bool holds_content(const char *key, int fd)
{
	int dst = tmpfile_fd();
	struct obj_info gi;
	struct err e = {0};
	char a[65], b[65];
	bool r = store_get_sync(S, key, dst, &gi, &e);

	if (r) {
		sha256_fd(fd, a);
		sha256_fd(dst, b);
		r = strcmp(a, b) == 0;
	} else
		tap_diag("%s", e.msg);
	close(dst);
	return r;
}

static void if_absent_check(const char *name, bool adopt, uint64_t size, unsigned seed)
{
	char key[4096];
	int first = make_content(size, seed), second = make_content(size + 1, seed + 1);
	struct err e = {0};
	bool r;

	snprintf(key, sizeof(key), "%s", pkey("absent/"));
	snprintf(key + strlen(key), sizeof(key) - strlen(key), "%u.jpg", seed);
	if (!store_del_sync(S, key, &e))
		tap_diag("%s", e.msg);
	if (ok(put_if_absent(false, key, first, size, &e), "%s: creates a new object", name))
		ok(holds_content(key, first), "%s: the new object is byte-exact", name);
	else
		tap_diag("%s", e.msg);
	if (adopt) {
		int sp = S->ops->spool(S);

		fill_content(sp, size + 1, seed + 1);
		r = put_if_absent(true, key, sp, size + 1, &e);
		close(sp);
	} else
		r = put_if_absent(false, key, second, size + 1, &e);
	ok(!r && e.code == ERR_EXISTS, "%s: over an existing object: ERR_EXISTS (%s)", name,
	   r ? "replaced it!" : e.msg);
	ok(holds_content(key, first), "%s: the object there is left as it was", name);
	record(key, first);
	close(first);
	close(second);
}

/* CHECK(name, adopt, size, seed) for each way a write goes: small (read
 * whole), above 1 MiB (streamed where allowed), multipart (S3), adopt
 * (where the store lends spool files); seeds from SEED on, 3 apart. */
static void each_write_way(const char *what,
			   void (*check)(const char *name, bool adopt, uint64_t size,
					 unsigned seed),
			   unsigned seed)
{
	char name[128];
	int sp;

	snprintf(name, sizeof(name), "%s put, 50 KiB", what);
	check(name, false, 50 * 1024, seed);
	snprintf(name, sizeof(name), "%s put, 1 MiB + 1", what);
	check(name, false, 1024 * 1024 + 1, seed + 3);
	if (!fs_backend) {
		snprintf(name, sizeof(name), "%s put, multipart", what);
		check(name, false, S->cfg->multipart_threshold + 12345, seed + 6);
	}
	if (S->ops->spool && S->ops->adopt && (sp = S->ops->spool(S)) >= 0) {
		close(sp);
		snprintf(name, sizeof(name), "%s adopt", what);
		check(name, true, 70 * 1024, seed + 9);
	}
}

/* A conditional copy's set-up: SRC's DIR/copysrc.jpg holds SRC_FD (*si),
 * S's DIR/copydst.jpg holds OLD (10 bytes); their keys in skey and dkey
 * (4096 bytes each).  A failure is a failed check. */
static bool copy_over_setup(const char *dir, int src_fd, int old, char *skey, char *dkey,
			    struct obj_info *si)
{
	struct err e = {0};
	bool r;

	snprintf(skey, 4096, "%s%s/copysrc.jpg", PREFIX, dir);
	snprintf(dkey, 4096, "%s%s/copydst.jpg", PREFIX, dir);
	r = copy_source(skey, src_fd, NULL, si) && store_put_sync(S, dkey, old, 10, NULL, &e);
	return ok(r, "%s copy: set-up (%s)", dir, r ? "done" : e.msg[0] ? e.msg : "the source");
}

static void test_if_absent(void)
{
	each_write_way("if_absent", if_absent_check, 1300);
	if (SRC && store_can_copy(S, SRC)) {
		int src = make_content(20 * 1024, 1308), old = make_content(10, 1309);
		struct obj_info si, known, out;
		struct err e = {0};
		char skey[4096], dkey[4096];
		bool r;

		if (copy_over_setup("absent", src, old, skey, dkey, &si)) {
			known = si;
			known.if_absent = true;
			r = store_copy_sync(S, SRC, skey, dkey, &known, &out, &e);
			ok(!r && e.code == ERR_EXISTS,
			   "if_absent copy over an existing object: ERR_EXISTS (%s)",
			   r ? "replaced it!" : e.msg);
			ok(holds_content(dkey, old), "if_absent copy: the object there is left");
			record(dkey, old);
			if (!store_del_sync(S, pkey("absent/copynew.jpg"), &e))
				tap_diag("%s", e.msg);
			r = store_copy_sync(S, SRC, skey, pkey("absent/copynew.jpg"), &known, &out,
					    &e);
			ok(r, "if_absent copy to a free key (%s)", r ? "copied" : e.msg);
			ok(holds_content(pkey("absent/copynew.jpg"), src),
			   "if_absent copy: byte-exact");
			record(pkey("absent/copynew.jpg"), src);
		}
		close(src);
		close(old);
	}
}

/* A put (or adopt, or copy) given if_tag replaces only the object stat()
 * reported with that tag: ERR_EXISTS where the key was written again since,
 * or holds nothing, and what is there stays. */
static bool put_if_tag(bool adopt, const char *key, int fd, uint64_t size, const char *tag,
		       struct err *e)
{
	struct obj_info known = {0};

	snprintf(known.if_tag, sizeof(known.if_tag), "%s", tag);
	if (adopt) {
		int sp = S->ops->spool(S);
		bool r;

		if (sp < 0)
			return err_set(e, ERR_IO, "no spool file");
		r = copy_all(fd, sp) && put_known(S, true, key, sp, size, &known, e);
		close(sp);
		return r;
	}
	return put_known(S, false, key, fd, size, &known, e);
}

static void if_tag_check(const char *name, bool adopt, uint64_t size, unsigned seed)
{
	char key[4096];
	int v1 = make_content(size, seed), v2 = make_content(size + 1, seed + 1),
	    v3 = make_content(size + 2, seed + 2);
	struct obj_info a = {0}, b = {0};
	struct err e = {0};
	bool r;

	snprintf(key, sizeof(key), "%s", pkey("iftag/"));
	snprintf(key + strlen(key), sizeof(key) - strlen(key), "%u.jpg", seed);
	if (!store_put_sync(S, key, v1, size, NULL, &e) || !store_stat_sync(S, key, &a, &e) ||
	    !a.tag[0]) {
		ok(false, "%s: set-up (%s)", name, e.msg[0] ? e.msg : "no tag");
		goto out;
	}
	r = put_if_tag(adopt, key, v2, size + 1, a.tag, &e);
	ok(r, "%s: over the object looked at (%s)", name, r ? "replaced" : e.msg);
	ok(holds_content(key, v2), "%s: the new object is byte-exact", name);
	r = put_if_tag(adopt, key, v3, size + 2, a.tag, &e);
	ok(!r && e.code == ERR_EXISTS, "%s: over an object written since: ERR_EXISTS (%s)", name,
	   r ? "replaced it!" : e.msg);
	ok(holds_content(key, v2), "%s: the object written since is left as it was", name);
	if (store_stat_sync(S, key, &b, &e) && store_del_sync(S, key, &e)) {
		r = put_if_tag(adopt, key, v3, size + 2, b.tag, &e);
		ok(!r && e.code == ERR_EXISTS, "%s: where the object was removed: ERR_EXISTS (%s)",
		   name, r ? "created it!" : e.msg);
		ok(!store_stat_sync(S, key, &b, &e) && e.code == ERR_NOTFOUND,
		   "%s: ... and the key still holds nothing", name);
	} else
		ok(false, "%s: set-up (%s)", name, e.msg);
out:
	close(v1);
	close(v2);
	close(v3);
}

static void test_if_tag(void)
{
	each_write_way("if_tag", if_tag_check, 1400);
	if (SRC && store_can_copy(S, SRC)) {
		int src = make_content(20 * 1024, 1412), old = make_content(10, 1413),
		    newer = make_content(11, 1414);
		struct obj_info si, known, out, a;
		struct err e = {0};
		char skey[4096], dkey[4096];
		bool r;

		if (copy_over_setup("iftag", src, old, skey, dkey, &si) &&
		    ok(store_stat_sync(S, dkey, &a, &e) &&
			   store_put_sync(S, dkey, newer, 11, NULL, &e),
		       "if_tag copy: the destination written again (%s)",
		       e.msg[0] ? e.msg : "done")) {
			known = si;
			snprintf(known.if_tag, sizeof(known.if_tag), "%s", a.tag);
			r = store_copy_sync(S, SRC, skey, dkey, &known, &out, &e);
			ok(!r && e.code == ERR_EXISTS,
			   "if_tag copy over an object written since: ERR_EXISTS (%s)",
			   r ? "replaced it!" : e.msg);
			ok(holds_content(dkey, newer), "if_tag copy: the object there is left");
			if (ok(store_stat_sync(S, dkey, &a, &e), "if_tag copy: stat (%s)",
			       e.msg[0] ? e.msg : "done")) {
				snprintf(known.if_tag, sizeof(known.if_tag), "%s", a.tag);
				r = store_copy_sync(S, SRC, skey, dkey, &known, &out, &e);
				ok(r, "if_tag copy over the object looked at (%s)",
				   r ? "copied" : e.msg);
				ok(holds_content(dkey, src), "if_tag copy: byte-exact");
			}
			record(dkey, src);
		}
		close(src);
		close(old);
		close(newer);
	}
}

/* spool() and adopt(): a download written once, straight where it lands. */
static void adopt_check(const char *name, const char *key, uint64_t size, uint64_t fill,
			unsigned seed)
{
	int sp = S->ops->spool(S), want, dst = tmpfile_fd();
	struct obj_info pi, gi;
	struct err e = {0};
	struct stat sb;
	char a[65], b[65];

	if (!ok(sp >= 0, "%s: spool() gives a file", name)) {
		close(dst);
		return;
	}
	ok(fstat(sp, &sb) == 0 && sb.st_nlink == 0 && S_ISREG(sb.st_mode),
	   "%s: the spool file has no name", name);
	fill_content(sp, fill, seed);
	want = make_content(size, seed); /* the first size bytes of the same content */
	if (!ok(store_adopt_sync(S, key, sp, size, &pi, &e), "%s: adopt", name))
		tap_diag("%s", e.msg);
	is_int(pi.size, size, "%s: adopt reports %llu bytes", name, (unsigned long long)size);
	if (!ok(store_get_sync(S, key, dst, &gi, &e), "%s: get", name))
		tap_diag("%s", e.msg);
	sha256_fd(want, a);
	sha256_fd(dst, b);
	is_str(b, a, "%s: content byte-exact", name);
	close(sp);
	close(want);
	close(dst);
}

static void test_spool(void)
{
	struct obj_info info;
	struct err e = {0};
	struct stat sb;
	char path[4096];
	mode_t um = umask(022);
	int fd, dst;

	umask(um);
	if (S->ops->spool == NULL || S->ops->adopt == NULL) {
		tap_skip("this store type lends no spool files");
		return;
	}
	if (getenv("IMGSYNC_FS_NO_TMPFILE") && strcmp(getenv("IMGSYNC_FS_NO_TMPFILE"), "1") == 0) {
		fd = S->ops->spool(S);
		ok(fd < 0, "without O_TMPFILE spool() lends nothing (callers use their own)");
		if (fd >= 0)
			close(fd);
		return;
	}
	adopt_check("adopted image in new directories", pkey("spool/a/b/new.jpg"), 1024 * 1024 + 3,
		    1024 * 1024 + 3, 901);
	snprintf(path, sizeof(path), "%s/%s", S->cfg->root, pkey("spool/a/b/new.jpg"));
	if (stat(path, &sb) < 0)
		memset(&sb, 0, sizeof(sb));
	ok(sb.st_nlink == 1 && (sb.st_mode & 0777) == (0644 & ~um),
	   "adopted file: one link, mode %o like a put's (%o)", (unsigned)(sb.st_mode & 0777),
	   (unsigned)(0644 & ~um));
	round_trip("to be replaced", pkey("spool/over.jpg"), 5000, 902, 0);
	adopt_check("adopted over an existing image", pkey("spool/over.jpg"), 7000, 7000, 903);
	adopt_check("adopted empty image", pkey("spool/empty.jpg"), 0, 0, 904);
	/* a spool file longer than the size given is not the object: copied */
	adopt_check("spool file longer than stated: its first bytes copied",
		    pkey("spool/longer.jpg"), 3000, 9000, 905);
	/* files spool() did not make are copied: the object stays apart */
	for (int named = 1; named >= 0; named--) {
		char tmpl[] = "/tmp/imgsync-conf-XXXXXX", a[65], b[65];
		const char *what = named ? "a file with a name" : "a file whose name was removed";
		int want = make_content(4000, 906);

		fd = mkstemp(tmpl);
		if (fd < 0)
			continue;
		if (!named)
			unlink(tmpl);
		fill_content(fd, 4000, 906);
		if (!ok(store_adopt_sync(S, pkey("spool/named.jpg"), fd, 4000, &info, &e),
			"adopt of %s: copied", what))
			tap_diag("%s", e.msg);
		fill_content(fd, 4000, 907);
		dst = tmpfile_fd();
		ok(store_get_sync(S, pkey("spool/named.jpg"), dst, &info, &e), "%s: get", what);
		sha256_fd(want, a);
		sha256_fd(dst, b);
		is_str(b, a, "%s: the object is not that file (writing it changed nothing)", what);
		if (named)
			unlink(tmpl);
		close(want);
		close(dst);
		close(fd);
	}
}

/* fs: puts into fresh directories while deletes prune emptied siblings. */
static void test_put_delete_race(void)
{
	struct batch b = {0};
	struct err e = {0};
	int src = make_content(10, 55), ok_puts = 0, i;
	char key[256];
	struct store_req *r;

	for (i = 0; i < 600 || b.inflight > 0;) {
		while (b.inflight < 16 && i < 600) {
			snprintf(key, sizeof(key), "%srace/d%d/e%d/f", PREFIX, i % 7, i % 13);
			if (i % 3 == 2) {
				if (S->ops->del(S, key, batch_done, &b, &r, &e))
					b.inflight++;
			} else if (S->ops->put(S, key, src, 10, NULL, NULL, batch_done, &b, &r,
					       &e)) {
				b.inflight++;
				ok_puts++;
			}
			i++;
		}
		if (!loop_run_once(S->env.loop, -1, &e))
			break;
	}
	if (!ok(b.failed == 0, "%d puts racing deletes that prune directories: none failed",
		ok_puts))
		tap_diag("%d failed, last: %s", b.failed, b.last.msg);
	close(src);
}

/* fs only: nothing under the root may lead outside it. */
static void test_fs_containment(void)
{
	char outside[] = "/tmp/imgsync-outside-XXXXXX", path[4096], secret[4200];
	const char *root = S->cfg->root;
	struct obj_info info;
	struct err e = {0};
	int src = make_content(10, 4242), dst = tmpfile_fd(), fd;
	bool r;

	if (mkdtemp(outside) == NULL)
		exit(2);
	snprintf(secret, sizeof(secret), "%s/secret.txt", outside);
	fd = open(secret, O_WRONLY | O_CREAT, 0600);
	if (fd < 0 || write(fd, "secret", 6) != 6)
		exit(2);
	close(fd);
	snprintf(path, sizeof(path), "%s/%sescape", root, PREFIX);
	mkdir(path, 0755); /* the prefix directory may not exist yet */
	rmdir(path);
	snprintf(path, sizeof(path), "%s/%s", root, PREFIX);
	if (PREFIX[0])
		mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%sescape", root, PREFIX);
	if (symlink(outside, path) < 0)
		exit(2);
	snprintf(path, sizeof(path), "%s/%spasswd.jpg", root, PREFIX);
	if (symlink("/etc/passwd", path) < 0)
		exit(2);
	snprintf(path, sizeof(path), "%s/%sdotdot", root, PREFIX);
	if (symlink("../../../../../../../../..", path) < 0)
		exit(2);

	r = store_put_sync(S, pkey("escape/planted.jpg"), src, 10, &info, &e);
	ok(!r, "put through a symlink to outside the root is refused (%s)", r ? "stored!" : e.msg);
	snprintf(path, sizeof(path), "%s/planted.jpg", outside);
	ok(access(path, F_OK) != 0, "nothing was written outside the root");
	r = store_get_sync(S, pkey("escape/secret.txt"), dst, &info, &e);
	ok(!r, "get through a symlinked directory to outside is refused (%s)", r ? "read!" : e.msg);
	r = store_get_sync(S, pkey("passwd.jpg"), dst, &info, &e);
	ok(!r, "get of a symlink to /etc/passwd is refused (%s)", r ? "read!" : e.msg);
	r = store_stat_sync(S, pkey("dotdot/etc/passwd"), &info, &e);
	ok(!r, "stat through a symlink to / is refused (%s)", r ? "found!" : e.msg);
	r = store_del_sync(S, pkey("escape/secret.txt"), &e);
	ok(access(secret, F_OK) == 0, "delete through a symlink leaves the outside file alone");
	is_int(fd_size(dst), 0, "no outside byte was read");

	snprintf(path, sizeof(path), "%s/%sescape", root, PREFIX);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%spasswd.jpg", root, PREFIX);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%sdotdot", root, PREFIX);
	unlink(path);
	unlink(secret);
	rmdir(outside);
	close(src);
	close(dst);
}

static void test_seeded(const char *path)
{
	FILE *f = fopen(path, "r");
	char hex[4096], sha[80];
	unsigned long long size;
	int n = 0;

	if (f == NULL) {
		tap_skip("no objects seeded by an independent client");
		return;
	}
	while (fscanf(f, "%4095s %llu %79s", hex, &size, sha) == 3) {
		size_t kl = strlen(hex) / 2;
		char *key = calloc(1, kl + 1);
		int dst = tmpfile_fd();
		struct obj_info info;
		struct err e = {0};
		char got[65];

		if (key == NULL || !hex_decode(hex, strlen(hex), (unsigned char *)key))
			exit(2);
		if (ok(store_get_sync(S, key, dst, &info, &e), "read seeded object %d", n)) {
			sha256_fd(dst, got);
			is_str(got, sha, "seeded object %d byte-exact", n);
		} else
			tap_diag("%s", e.msg);
		free(key);
		close(dst);
		n++;
	}
	fclose(f);
	ok(n > 0, "%d seeded objects read", n);
}

static void test_url(void)
{
	struct buf u = BUF_INIT;
	struct err e = {0};

	ok(S->ops->url(S, pkey("with space+plus.jpg"), &u, &e), "url");
	ok(strstr(buf_str(&u), "with%20space%2Bplus.jpg") != NULL, "url encodes the key: %s",
	   buf_str(&u));
	buf_free(&u);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"probe", required_argument, NULL, 'P'},
	    {"url", required_argument, NULL, 'U'},
	    {NULL, 0, NULL, 0},
	};
	const char *conf_path = NULL, *store_name = NULL, *seeded = NULL, *probe = NULL,
		   *url = NULL, *copy_from = NULL, *nocopy[4];
	struct store_env env = {0};
	struct conf *conf = NULL;
	struct err e = {0};
	int ch, rc;

	while ((ch = getopt_long(argc, argv, "c:s:p:m:S:C:N:", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		case 's':
			store_name = optarg;
			break;
		case 'p':
			PREFIX = optarg;
			break;
		case 'm':
			manifest = fopen(optarg, "w");
			break;
		case 'S':
			seeded = optarg;
			break;
		case 'C':
			copy_from = optarg;
			break;
		case 'N':
			if (nnocopy == sizeof(nocopy) / sizeof(nocopy[0]))
				return 2;
			nocopy[nnocopy++] = optarg;
			break;
		case 'P':
			probe = optarg;
			break;
		case 'U':
			url = optarg;
			break;
		default:
			return 2;
		}
	}
	if (conf_path == NULL || store_name == NULL) {
		fprintf(stderr, "usage: store_conformance -c CONF -s STORE [...]\n");
		return 2;
	}
	if (!conf_load(conf_path, &conf, &e) || conf_store(conf, store_name) == NULL) {
		fprintf(stderr, "%s\n", conf ? "no such store" : e.msg);
		conf_free(conf);
		return 2;
	}
	if (!loop_new(&env.loop, &e) || !http_new(env.loop, &env.http, &e) ||
	    !workq_new(env.loop, 4, &env.wq, &e) ||
	    !store_open(conf_store(conf, store_name), &env, &S, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		return 2;
	}
	if (copy_from && (conf_store(conf, copy_from) == NULL ||
			  !store_open(conf_store(conf, copy_from), &env, &SRC, &e))) {
		fprintf(stderr, "-C %s: %s\n", copy_from, SRC ? e.msg : "no such store");
		return 2;
	}
	for (size_t i = 0; i < nnocopy; i++)
		if (conf_store(conf, nocopy[i]) == NULL ||
		    !store_open(conf_store(conf, nocopy[i]), &env, &NOCOPY[i], &e)) {
			fprintf(stderr, "-N %s: cannot open it\n", nocopy[i]);
			return 2;
		}
	fs_backend = strcmp(S->ops->type, "fs") == 0;
	if (probe) {
		struct obj_info info;

		if (store_stat_sync(S, probe, &info, &e))
			printf("ok %llu\n", (unsigned long long)info.size);
		else
			printf("%s %s\n", err_code_name(e.code), e.msg);
		rc = 0;
	} else if (url) {
		struct buf u = BUF_INIT;

		rc = S->ops->url(S, url, &u, &e) ? 0 : 1;
		printf("%s\n", rc ? e.msg : buf_str(&u));
		buf_free(&u);
	} else {
		test_sizes();
		test_keys();
		test_overwrite_delete();
		test_tags();
		test_cold();
		test_listing();
		test_short_source();
		test_url();
		test_cancel();
		test_parked();
		test_copy();
		test_if_absent();
		test_if_tag();
		if (fs_backend) {
			test_fs_containment();
			test_spool();
			test_put_delete_race();
		}
		if (seeded)
			test_seeded(seeded);
		rc = tap_done();
	}
	if (manifest)
		fclose(manifest);
	for (size_t i = 0; i < nnocopy; i++)
		store_close(NOCOPY[i]);
	store_close(SRC);
	store_close(S);
	workq_free(env.wq);
	http_free(env.http);
	loop_free(env.loop);
	conf_free(conf);
	curl_global_cleanup();
	return rc;
}
