/*
 * ctl_verify.c - `imgsyncctl verify`: the catalog against what the stores
 * hold.
 *
 *   imgsyncctl verify [--checksum] STORE_A [STORE_B]
 *
 * What is compared.  The catalog (imgsync.images) records, per image, the
 * stores holding its current version (`stores`), its size and its MD5
 * (`checksum`), both once the daemon has seen the content.  For each store
 * named, verify lists every object under the store's own prefix and
 * reports, one line each:
 *
 *   missing STORE KEY        the catalog records the image in STORE, the
 *                            store has no object at its physical key;
 *   extra STORE PKEY         an object no image recorded in STORE maps to
 *                            (a stray file, a copy a move left behind, an
 *                            image removed from the catalog);
 *   mismatch STORE KEY: ...  the object's size differs from the catalog's;
 *                            with --checksum, its MD5 differs from the
 *                            catalog's checksum.  Where the catalog has no
 *                            size (or checksum) yet and both stores hold the
 *                            image, the two copies are compared instead;
 *   invalid STORE KEY: ...   the image's attributes give no physical key in
 *                            the store's layout.
 *
 * KEY is the logical key, followed by "(at PKEY)" where the physical key
 * differs.  Images with work queued (a put, remove or migration step not
 * yet done) are changing while we look: they are skipped and counted in
 * the summary, so that a verify on a live system reports only what the
 * daemon will not mend by itself.  Work that went dead is not skipped.
 *
 * Sizes come from the listings, for free.  Content costs a request per
 * object, so it is compared only with --checksum (alias --content): each
 * object's MD5 is taken from a stat where the store keeps one (S3 does for
 * single-part uploads, as the ETag), otherwise the object is read into a
 * temporary file and hashed.  Up to VERIFY_WINDOW requests run at once.
 *
 * How.  The catalog is read once, in one read-only snapshot, through a
 * cursor: a round trip per 10,000 images, never a query per image.  The
 * results stay in memory and the images borrow their strings.  For each
 * store every image is mapped with store_key() and the physical keys are
 * sorted; each listed object is then found with bsearch.  Memory is
 * O(images), time O((images + objects) log images).
 *
 * Exit status: 0 when nothing differs, 1 when something does, 64 for a
 * usage error (an unknown store), 69 when a store or the database cannot
 * be reached, and the sysexits code of what a store answered otherwise
 * (77 access denied, 76 a garbled answer, 74 local I/O).
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "digest.h"
#include "http.h"
#include "key.h"
#include "loop.h"
#include "sql.h"
#include "store.h"
#include "workq.h"

#define VERIFY_WINDOW	 16  /* --checksum requests in flight, at most */
#define VERIFY_RETRY_MS	 250 /* first backoff after a transient store error */
#define VERIFY_RETRY_MAX 4000

#define VERIFY_USAGE "usage: imgsyncctl verify [--checksum] STORE_A [STORE_B]"

/* Columns of SQL_VERIFY_DECLARE. */
enum {
	C_KEY,
	C_TYPE,
	C_ID,
	C_WIDTH,
	C_HEIGHT,
	C_MIME,
	C_SIZE,
	C_CHECKSUM,
	C_DELETED,
	C_IN_A,
	C_IN_B,
	C_BUSY,
	C_COUNT
};

/* An image as one store holds it. */
struct vcopy {
	char *pkey;    /* its physical key there (owned); NULL where the layout gives none */
	bool in;       /* the catalog records it there (and it is not removed) */
	bool seen;     /* the listing has its physical key */
	bool bad;      /* a difference was reported for it */
	bool has_md5;  /* --checksum read its MD5 */
	uint64_t size; /* the listed size */
	unsigned char md5[DIGEST_MD5_LEN];
};

struct vimg {
	const char *key; /* borrowed from the catalog's result */
	struct image_attrs attrs;
	bool size_known, has_md5, deleted, busy;
	uint64_t size;
	unsigned char md5[DIGEST_MD5_LEN];
	struct vcopy at[2];
};

/* A physical key and its image, sorted by key. */
struct vref {
	const char *pkey; /* the image's vcopy.pkey */
	struct vimg *img;
};

struct vstore {
	const struct store_cfg *cfg;
	struct store *st;
	struct buf prefix; /* the listing stays under it */
	struct vref *refs;
	size_t nrefs;
};

struct verify;

/* One --checksum request slot. */
struct vslot {
	struct verify *v;
	int fd; /* temporary file a get writes into */
	bool active, getting;
	int si;
	struct vimg *img;
	int attempts;
	struct obj_info info;
	struct store_req *req;
	struct loop_timer retry;
};

struct verify {
	const struct conf *conf;
	struct store_env env;
	struct vstore s[2];
	int ns;
	bool checksum;

	PGresult **res; /* the catalog, kept: images borrow its strings */
	size_t nres;
	struct vimg *img;
	size_t nimg;

	long long missing, extra, mismatched, invalid;

	/* --checksum */
	struct vslot slots[VERIFY_WINDOW];
	int active;
	int next_si;
	size_t next_ref;
	bool failed;
	int failed_si; /* the store whose failure stopped it */
	struct err err;
};

/* --- output --- */

static void put_copy(const struct verify *v, const char *what, int si, const struct vimg *img)
{
	const struct vcopy *c = &img->at[si];

	printf("%s %s %s", what, v->s[si].cfg->name, img->key);
	if (c->pkey && strcmp(c->pkey, img->key) != 0)
		printf(" (at %s)", c->pkey);
}

/* A listed key may be anything the store holds: shown escaped unless it is
 * a valid key, so that it cannot forge lines. */
static void put_listed_key(const char *key)
{
	struct err ignored;
	char esc[4 * KEY_MAX + 8];

	if (key_validate(key, strlen(key), &ignored)) {
		fputs(key, stdout);
		return;
	}
	key_escape(key, strlen(key), esc, sizeof(esc));
	printf("\"%s\"", esc);
}

/* sysexits code for a store's failure */
static int store_exit(enum err_code code)
{
	switch (code) {
	case ERR_DENIED:
		return EX_NOPERM;
	case ERR_CONFIG:
		return EX_CONFIG;
	case ERR_IO:
		return EX_IOERR;
	case ERR_NOMEM:
		return EX_OSERR;
	case ERR_INVALID:
	case ERR_INTEGRITY:
		return EX_PROTOCOL;
	default:
		return EX_UNAVAILABLE;
	}
}

/* "imgsyncctl: verify: cannot list store "cloud": what it said"; returns the exit status */
static int store_fail(const struct vstore *vs, const char *what, const struct err *e)
{
	const char *msg = e->msg;
	char named[96];

	/* S3's messages begin with the store's name already */
	snprintf(named, sizeof(named), "store \"%s\": ", vs->cfg->name);
	if (strncmp(msg, named, strlen(named)) == 0)
		msg += strlen(named);
	fprintf(stderr, "imgsyncctl: verify: %s store \"%s\": %s\n", what, vs->cfg->name, msg);
	return store_exit(e->code);
}

/* --- the catalog --- */

static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	if (s == NULL || *s < '0' || *s > '9')
		return false;
	*out = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0';
}

static const char *col(const PGresult *r, int row, int c)
{
	return PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c);
}

static bool is_true(const PGresult *r, int row, int c)
{
	return !PQgetisnull(r, row, c) && PQgetvalue(r, row, c)[0] == 't';
}

static bool add_rows(struct verify *v, const PGresult *r, struct err *e)
{
	size_t n = (size_t)PQntuples(r);
	struct vimg *grown;

	if (PQnfields(r) != C_COUNT)
		return err_set(e, ERR_INVALID, "reading the catalog: %d columns, not %d",
			       PQnfields(r), C_COUNT);
	grown = realloc(v->img, (v->nimg + n) * sizeof(*grown));
	if (grown == NULL)
		return err_set(e, ERR_NOMEM, "out of memory reading the catalog");
	v->img = grown;
	for (size_t i = 0; i < n; i++) {
		struct vimg *img = &v->img[v->nimg++];
		const char *sum = col(r, (int)i, C_CHECKSUM);
		int row = (int)i;

		memset(img, 0, sizeof(*img));
		img->key = PQgetvalue(r, row, C_KEY);
		img->attrs = (struct image_attrs){col(r, row, C_TYPE), col(r, row, C_ID),
						  col(r, row, C_WIDTH), col(r, row, C_HEIGHT),
						  col(r, row, C_MIME)};
		img->size_known = parse_u64(col(r, row, C_SIZE), &img->size);
		img->has_md5 = sum && strlen(sum) == 2 * DIGEST_MD5_LEN &&
			       hex_decode(sum, 2 * DIGEST_MD5_LEN, img->md5);
		img->deleted = is_true(r, row, C_DELETED);
		img->busy = is_true(r, row, C_BUSY);
		img->at[0].in = !img->deleted && is_true(r, row, C_IN_A);
		img->at[1].in = v->ns == 2 && !img->deleted && is_true(r, row, C_IN_B);
	}
	return true;
}

/* Keep a result; it is freed with the verify. */
static bool keep_result(struct verify *v, PGresult *r, struct err *e)
{
	PGresult **grown = realloc(v->res, (v->nres + 1) * sizeof(*grown));

	if (grown == NULL) {
		PQclear(r);
		return err_set(e, ERR_NOMEM, "out of memory reading the catalog");
	}
	v->res = grown;
	v->res[v->nres++] = r;
	return true;
}

static bool load_catalog(struct verify *v, PGconn *conn, struct err *e)
{
	const char *p[2] = {v->s[0].cfg->name, v->s[v->ns - 1].cfg->name};
	PGresult *r;

	if ((r = ctl_exec(conn, SQL_VERIFY_BEGIN, 0, NULL, e)) == NULL)
		return false;
	PQclear(r);
	if ((r = ctl_exec(conn, SQL_VERIFY_DECLARE, 2, p, e)) == NULL)
		return false;
	PQclear(r);
	for (;;) {
		if ((r = ctl_exec(conn, SQL_VERIFY_FETCH, 0, NULL, e)) == NULL)
			return false;
		if (PQntuples(r) == 0) {
			PQclear(r);
			break;
		}
		if (!keep_result(v, r, e) || !add_rows(v, r, e))
			return false;
	}
	if ((r = ctl_exec(conn, SQL_VERIFY_END, 0, NULL, e)) == NULL)
		return false;
	PQclear(r);
	return true;
}

/* --- mapping catalog keys to physical keys --- */

static int ref_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vref *)a)->pkey, ((const struct vref *)b)->pkey);
}

static int ref_find(const void *key, const void *elem)
{
	return strcmp(key, ((const struct vref *)elem)->pkey);
}

/* What the store's listing is limited to: its prefix, as its layout
 * joins it (layout.h: imageattach strips blanks and trailing '/' and adds
 * one '/'; plain uses the prefix verbatim). */
static void list_prefix(const struct store_cfg *cfg, struct buf *out)
{
	const char *p = cfg->prefix ? cfg->prefix : "";
	size_t n;

	if (cfg->layout == LAYOUT_PLAIN) {
		buf_puts(out, p);
		return;
	}
	while (*p == ' ' || (*p >= '\t' && *p <= '\r') || (*p >= 0x1c && *p <= 0x1f))
		p++;
	n = strlen(p);
	while (n > 0 && (p[n - 1] == ' ' || (p[n - 1] >= '\t' && p[n - 1] <= '\r') ||
			 (p[n - 1] >= 0x1c && p[n - 1] <= 0x1f) || p[n - 1] == '/'))
		n--;
	if (n > 0) {
		buf_append(out, p, n);
		buf_putc(out, '/');
	}
}

/* Every image's physical key in store si, sorted.  Images recorded there
 * whose key cannot be made are reported as invalid. */
static bool map_store(struct verify *v, int si, struct err *e)
{
	struct vstore *vs = &v->s[si];
	struct buf k = BUF_INIT;

	list_prefix(vs->cfg, &vs->prefix);
	if (!buf_ok(&vs->prefix, e))
		return false;
	vs->refs = v->nimg ? calloc(v->nimg, sizeof(*vs->refs)) : NULL;
	if (v->nimg && vs->refs == NULL)
		return err_set(e, ERR_NOMEM, "out of memory mapping keys");
	for (size_t i = 0; i < v->nimg; i++) {
		struct vimg *img = &v->img[i];
		struct vcopy *c = &img->at[si];
		struct err ke = {0};

		buf_reset(&k);
		if (!store_key(vs->st, img->key, &img->attrs, &k, &ke)) {
			if (ke.code == ERR_NOMEM) {
				buf_free(&k);
				*e = ke;
				return false;
			}
			if (c->in && !img->busy) {
				c->bad = true;
				v->invalid++;
				put_copy(v, "invalid", si, img);
				printf(": %s\n", ke.msg);
			}
			continue;
		}
		if ((c->pkey = buf_steal(&k)) == NULL) {
			buf_free(&k);
			return err_set(e, ERR_NOMEM, "out of memory mapping keys");
		}
		vs->refs[vs->nrefs++] = (struct vref){c->pkey, img};
	}
	buf_free(&k);
	if (vs->nrefs)
		qsort(vs->refs, vs->nrefs, sizeof(*vs->refs), ref_cmp);
	return true;
}

/* --- listing --- */

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static long backoff_ms(int attempt)
{
	long ms = VERIFY_RETRY_MS;

	while (--attempt > 0 && ms < VERIFY_RETRY_MAX)
		ms *= 2;
	return ms < VERIFY_RETRY_MAX ? ms : VERIFY_RETRY_MAX;
}

/* One page, tried again after transient failures. */
static bool list_page(struct verify *v, struct vstore *vs, const char *token, struct store_list *l,
		      struct err *e)
{
	for (int attempt = 1;; attempt++) {
		if (store_list_sync(vs->st, buf_str(&vs->prefix), token, l, e))
			return true;
		if (!err_retryable(e->code) || attempt >= v->conf->max_attempts)
			return false;
		sleep_ms(backoff_ms(attempt));
	}
}

/* A listed object: mark the images it is a copy of, or report it extra. */
static void listed(struct verify *v, int si, const struct store_list_entry *o)
{
	struct vstore *vs = &v->s[si];
	const struct vref *hit = NULL, *lo, *hi, *end = vs->refs + vs->nrefs;
	const struct vimg *unrecorded = NULL;
	bool held = false, busy = false;

	if (vs->nrefs)
		hit = bsearch(o->key, vs->refs, vs->nrefs, sizeof(*vs->refs), ref_find);
	if (hit) {
		/* images sharing a physical key sit side by side */
		for (lo = hit; lo > vs->refs && strcmp(lo[-1].pkey, o->key) == 0; lo--)
			;
		for (hi = hit; hi < end && strcmp(hi->pkey, o->key) == 0; hi++)
			;
		for (const struct vref *r = lo; r < hi; r++) {
			struct vcopy *c = &r->img->at[si];

			c->seen = true;
			c->size = o->size;
			held |= c->in;
			busy |= r->img->busy;
			if (!c->in)
				unrecorded = r->img;
		}
	}
	if (held || busy)
		return;
	v->extra++;
	printf("extra %s ", vs->cfg->name);
	put_listed_key(o->key);
	if (unrecorded && unrecorded->deleted)
		printf(": image \"%s\" was removed from the catalog", unrecorded->key);
	else if (unrecorded)
		printf(": the catalog does not record image \"%s\" in %s", unrecorded->key,
		       vs->cfg->name);
	printf("\n");
}

static int list_store(struct verify *v, int si)
{
	struct vstore *vs = &v->s[si];
	char *token = NULL;
	struct err e = {0};

	do {
		struct store_list l;

		if (!list_page(v, vs, token, &l, &e)) {
			free(token);
			return store_fail(vs, "cannot list", &e);
		}
		for (size_t i = 0; i < l.n; i++)
			listed(v, si, &l.v[i]);
		free(token);
		token = l.next;
		l.next = NULL;
		store_list_free(&l);
	} while (token);
	return EX_OK;
}

/* Missing copies and sizes that differ from the catalog's, in key order. */
static void report_store(struct verify *v, int si)
{
	const struct vstore *vs = &v->s[si];

	for (size_t i = 0; i < vs->nrefs; i++) {
		struct vimg *img = vs->refs[i].img;
		struct vcopy *c = &img->at[si];

		if (!c->in || img->busy)
			continue;
		if (!c->seen) {
			c->bad = true;
			v->missing++;
			put_copy(v, "missing", si, img);
			printf("\n");
		} else if (img->size_known && c->size != img->size) {
			c->bad = true;
			v->mismatched++;
			put_copy(v, "mismatch", si, img);
			printf(": size %llu in the store, %llu in the catalog\n",
			       (unsigned long long)c->size, (unsigned long long)img->size);
		}
	}
}

/* Where the catalog has no size yet, the two copies must agree. */
static void report_sizes_between(struct verify *v)
{
	const struct vstore *vs = &v->s[1];

	for (size_t i = 0; i < vs->nrefs; i++) {
		struct vimg *img = vs->refs[i].img;
		struct vcopy *a = &img->at[0], *b = &img->at[1];

		if (img->size_known || img->busy || !a->in || !b->in || !a->seen || !b->seen ||
		    a->size == b->size)
			continue;
		b->bad = true;
		v->mismatched++;
		put_copy(v, "mismatch", 1, img);
		printf(": size %llu in the store, %llu in %s (the catalog records no size)\n",
		       (unsigned long long)b->size, (unsigned long long)a->size, v->s[0].cfg->name);
	}
}

/* --- --checksum: an MD5 per object, VERIFY_WINDOW requests at a time --- */

static void slot_start(struct vslot *sl);
static void slot_next(struct vslot *sl);

static bool wants_md5(const struct vimg *img, int si)
{
	const struct vcopy *c = &img->at[si];

	return c->in && c->seen && !c->bad && !img->busy;
}

/* Stop everything after a failure that retrying will not mend. */
static void checksum_abort(struct verify *v, int si, const struct err *e)
{
	if (!v->failed) {
		v->failed = true;
		v->failed_si = si;
		v->err = *e;
	}
	for (int i = 0; i < VERIFY_WINDOW; i++) {
		struct vslot *sl = &v->slots[i];
		struct store *st;

		if (!sl->active)
			continue;
		st = v->s[sl->si].st;
		if (sl->req)
			st->ops->cancel(st, sl->req);
		loop_timer_cancel(v->env.loop, &sl->retry);
		sl->req = NULL;
		sl->active = false;
		v->active--;
	}
}

static void slot_retry(void *arg)
{
	slot_start(arg);
}

static void slot_error(struct vslot *sl, const struct err *e)
{
	struct verify *v = sl->v;
	struct vcopy *c = &sl->img->at[sl->si];

	if (e->code == ERR_NOTFOUND) {
		/* gone since the listing */
		c->seen = false;
		c->bad = true;
		v->missing++;
		put_copy(v, "missing", sl->si, sl->img);
		printf(" (removed while verify ran)\n");
		slot_next(sl);
		return;
	}
	if (err_retryable(e->code) && ++sl->attempts < v->conf->max_attempts) {
		loop_timer_set(v->env.loop, &sl->retry, (uint64_t)backoff_ms(sl->attempts));
		return;
	}
	checksum_abort(v, sl->si, e);
}

static void slot_done(void *arg, const struct err *e)
{
	struct vslot *sl = arg;
	struct vcopy *c = &sl->img->at[sl->si];
	struct err he = {0};

	sl->req = NULL;
	if (e) {
		slot_error(sl, e);
		return;
	}
	if (!sl->getting && !sl->info.has_md5) {
		/* no MD5 kept with the object: read it */
		sl->getting = true;
		sl->attempts = 0;
		slot_start(sl);
		return;
	}
	if (sl->getting) {
		if (!digest_md5_fd(sl->fd, c->md5, &he)) {
			checksum_abort(sl->v, sl->si, &he);
			return;
		}
	} else
		memcpy(c->md5, sl->info.md5, DIGEST_MD5_LEN);
	c->has_md5 = true;
	slot_next(sl);
}

static void slot_start(struct vslot *sl)
{
	struct store *st = sl->v->s[sl->si].st;
	const char *pkey = sl->img->at[sl->si].pkey;
	struct err e = {0};
	bool ok;

	if (sl->getting) {
		if (ftruncate(sl->fd, 0) < 0) {
			err_sys(&e, errno, "cannot empty a temporary file");
			checksum_abort(sl->v, sl->si, &e);
			return;
		}
		ok = st->ops->get(st, pkey, sl->fd, 0, &sl->info, slot_done, sl, &sl->req, &e);
	} else
		ok = st->ops->stat(st, pkey, &sl->info, slot_done, sl, &sl->req, &e);
	if (!ok) {
		sl->req = NULL;
		slot_error(sl, &e);
	}
}

/* Give the slot the next object, or retire it. */
static void slot_next(struct vslot *sl)
{
	struct verify *v = sl->v;

	while (v->next_si < v->ns) {
		const struct vstore *vs = &v->s[v->next_si];

		while (v->next_ref < vs->nrefs) {
			struct vimg *img = vs->refs[v->next_ref++].img;

			if (!wants_md5(img, v->next_si))
				continue;
			sl->si = v->next_si;
			sl->img = img;
			sl->getting = false;
			sl->attempts = 0;
			slot_start(sl);
			return;
		}
		v->next_si++;
		v->next_ref = 0;
	}
	sl->active = false;
	v->active--;
}

static int tmp_fd(struct err *e)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/imgsyncctl-verify-XXXXXX", dir && *dir ? dir : "/tmp");
	if ((fd = mkstemp(path)) < 0) {
		err_sys(e, errno, "cannot create a temporary file in %s",
			dir && *dir ? dir : "/tmp");
		return -1;
	}
	unlink(path);
	return fd;
}

static int read_checksums(struct verify *v)
{
	struct err e = {0};

	for (int i = 0; i < VERIFY_WINDOW; i++) {
		struct vslot *sl = &v->slots[i];

		sl->v = v;
		loop_timer_init(&sl->retry, slot_retry, sl);
		if ((sl->fd = tmp_fd(&e)) < 0) {
			fprintf(stderr, "imgsyncctl: verify: %s\n", e.msg);
			return EX_CANTCREAT;
		}
	}
	for (int i = 0; i < VERIFY_WINDOW && !v->failed; i++) {
		v->slots[i].active = true;
		v->active++;
		slot_next(&v->slots[i]);
	}
	while (v->active > 0)
		if (!loop_run_once(v->env.loop, -1, &e)) {
			checksum_abort(v, 0, &e);
			break;
		}
	if (v->failed)
		return store_fail(&v->s[v->failed_si], "cannot read an object of", &v->err);
	return EX_OK;
}

static void report_checksums(struct verify *v)
{
	char a[2 * DIGEST_MD5_LEN + 1], b[2 * DIGEST_MD5_LEN + 1];

	for (int si = 0; si < v->ns; si++) {
		const struct vstore *vs = &v->s[si];

		for (size_t i = 0; i < vs->nrefs; i++) {
			struct vimg *img = vs->refs[i].img;
			struct vcopy *c = &img->at[si];

			if (!c->has_md5 || !img->has_md5 ||
			    memcmp(c->md5, img->md5, DIGEST_MD5_LEN) == 0)
				continue;
			c->bad = true;
			v->mismatched++;
			hex_encode(c->md5, DIGEST_MD5_LEN, a);
			hex_encode(img->md5, DIGEST_MD5_LEN, b);
			put_copy(v, "mismatch", si, img);
			printf(": MD5 %s in the store, %s in the catalog\n", a, b);
		}
	}
	if (v->ns < 2)
		return;
	for (size_t i = 0; i < v->s[1].nrefs; i++) {
		struct vimg *img = v->s[1].refs[i].img;
		struct vcopy *c0 = &img->at[0], *c1 = &img->at[1];

		if (img->has_md5 || !c0->has_md5 || !c1->has_md5 ||
		    memcmp(c0->md5, c1->md5, DIGEST_MD5_LEN) == 0)
			continue;
		c1->bad = true;
		v->mismatched++;
		hex_encode(c1->md5, DIGEST_MD5_LEN, a);
		hex_encode(c0->md5, DIGEST_MD5_LEN, b);
		put_copy(v, "mismatch", 1, img);
		printf(": MD5 %s in the store, %s in %s (the catalog records no checksum)\n", a, b,
		       v->s[0].cfg->name);
	}
}

/* --- the command --- */

static int open_env(struct verify *v)
{
	struct err e = {0};

	if (!loop_new(&v->env.loop, &e) || !http_new(v->env.loop, &v->env.http, &e) ||
	    !workq_new(v->env.loop, 4, &v->env.wq, &e)) {
		fprintf(stderr, "imgsyncctl: verify: %s\n", e.msg);
		return EX_OSERR;
	}
	for (int i = 0; i < v->ns; i++)
		if (!store_open(v->s[i].cfg, &v->env, &v->s[i].st, &e)) {
			fprintf(stderr, "imgsyncctl: verify: %s\n", e.msg);
			return store_exit(e.code);
		}
	return EX_OK;
}

static void verify_free(struct verify *v)
{
	for (int i = 0; i < VERIFY_WINDOW; i++)
		if (v->slots[i].fd >= 0)
			close(v->slots[i].fd);
	for (int i = 0; i < v->ns; i++) {
		store_close(v->s[i].st);
		free(v->s[i].refs);
		buf_free(&v->s[i].prefix);
	}
	if (v->env.wq)
		workq_free(v->env.wq);
	if (v->env.http) {
		http_free(v->env.http);
		curl_global_cleanup(); /* http_new() initialised it */
	}
	if (v->env.loop)
		loop_free(v->env.loop);
	for (size_t i = 0; i < v->nimg; i++) {
		free(v->img[i].at[0].pkey);
		free(v->img[i].at[1].pkey);
	}
	free(v->img);
	for (size_t i = 0; i < v->nres; i++)
		PQclear(v->res[i]);
	free(v->res);
}

static int run(struct verify *v, PGconn *conn)
{
	long long checked = 0, skipped = 0;
	struct err e = {0};
	int rc;

	if ((rc = open_env(v)) != EX_OK)
		return rc;
	if (!load_catalog(v, conn, &e)) {
		fprintf(stderr, "imgsyncctl: verify: reading the catalog: %s\n", e.msg);
		return e.code == ERR_TRANSIENT ? EX_UNAVAILABLE
		       : e.code == ERR_NOMEM   ? EX_OSERR
					       : EX_SOFTWARE;
	}
	for (int si = 0; si < v->ns; si++) {
		if (!map_store(v, si, &e)) {
			fprintf(stderr, "imgsyncctl: verify: %s\n", e.msg);
			return EX_OSERR;
		}
		if ((rc = list_store(v, si)) != EX_OK)
			return rc;
		report_store(v, si);
	}
	if (v->ns == 2)
		report_sizes_between(v);
	if (v->checksum) {
		fflush(stdout);
		if ((rc = read_checksums(v)) != EX_OK)
			return rc;
		report_checksums(v);
	}
	for (size_t i = 0; i < v->nimg; i++) {
		const struct vimg *img = &v->img[i];
		bool involved = img->at[0].in || img->at[1].in;

		if (img->busy)
			skipped += involved || img->at[0].seen || img->at[1].seen;
		else
			checked += involved;
	}
	printf("verify %s%s%s: %lld images checked, %lld missing, %lld extra, %lld mismatched",
	       v->s[0].cfg->name, v->ns == 2 ? " " : "", v->ns == 2 ? v->s[1].cfg->name : "",
	       checked, v->missing, v->extra, v->mismatched);
	if (v->invalid)
		printf(", %lld invalid", v->invalid);
	if (skipped)
		printf("; %lld skipped while work is queued for them", skipped);
	printf("%s\n", v->checksum ? " (sizes and checksums)" : " (sizes)");
	return v->missing || v->extra || v->mismatched || v->invalid ? 1 : EX_OK;
}

int ctl_verify(PGconn *conn, const struct conf *conf, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"checksum", no_argument, NULL, 'c'},
	    {"content", no_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0},
	};
	struct verify v = {.conf = conf};
	int ch, rc;

	optind = 0; /* glibc: a full reset, permutation state included */
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (ch != 'c') {
			fprintf(stderr, "imgsyncctl: %s\n", VERIFY_USAGE);
			return EX_USAGE;
		}
		v.checksum = true;
	}
	if (argc - optind < 1 || argc - optind > 2) {
		fprintf(stderr, "imgsyncctl: verify needs one or two stores; %s\n", VERIFY_USAGE);
		return EX_USAGE;
	}
	for (int i = optind; i < argc; i++) {
		const struct store_cfg *cfg = conf_store(conf, argv[i]);

		if (cfg == NULL) {
			fprintf(stderr, "imgsyncctl: no store named \"%s\" in %s\n", argv[i],
				conf->path);
			return EX_USAGE;
		}
		if (v.ns == 1 && cfg == v.s[0].cfg)
			continue; /* the same store twice: once is enough */
		v.s[v.ns++].cfg = cfg;
	}
	for (int i = 0; i < VERIFY_WINDOW; i++)
		v.slots[i].fd = -1;
	rc = run(&v, conn);
	fflush(stdout);
	verify_free(&v);
	return rc;
}
