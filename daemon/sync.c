/*
 * sync.c - claim, copy, delete, report.
 *
 * Claims: up to transfer.concurrency items are in hand at once; a claim
 * asks for the free slots, and asks again when it got all it asked for.
 * Claims run when the connection comes up, on every notification, when
 * slots free up, when a retry falls due, and on a slow poll.
 *
 * Leases: a claim leases an item for SYNC_LEASE_MS and names the claim with
 * a token; results and renewals echo the token, so nothing meant for an
 * older claim of the key can touch a newer one.  The heartbeat renews the
 * tokens in hand and answers with those it renewed: an item whose token is
 * missing lost its lease and is dropped at once, and an item whose lease
 * could not be renewed (the database unreachable) is dropped a heartbeat
 * before it would expire.  Local deadlines count from the moment the claim
 * was sent, so they never outlast the lease the server granted.
 *
 * Removes delete an object only if it is still the one that was removed: a
 * store holding a different size, or an object modified after the removal,
 * keeps it (the application wrote the key again meanwhile).
 *
 * Results: every finished item appends one JSON object to a batch; the
 * batch goes to imgsync.complete() whenever no completion is in flight, so
 * a busy daemon writes many results per round trip and an idle one writes
 * each at once.  A batch lost with the connection is sent again after the
 * reconnect (the SQL side ignores results for leases no longer held).
 *
 * Errors: a failure that cannot heal by waiting (access denied, a source
 * that is missing, a key a layout cannot map) kills the item at once; the
 * others are retried with exponential backoff and full jitter.  A store
 * that is unreachable or failing (network, 5xx, throttling) does not spend
 * the item's attempts: an outage of any length is waited out.  Failures of
 * the object itself (integrity, local I/O) count up to transfer.max_attempts.
 * Dead items keep their last error for imgsyncctl.
 */
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "digest.h"
#include "log.h"
#include "sql.h"

#define SYNC_LEASE_MS	  60000
#define SYNC_LEASE	  "60 seconds"
#define SYNC_HEARTBEAT_MS 10000
#define SYNC_POLL_MS	  10000
#define SYNC_CLAIM_MAX	  200
/* Round trips are shared: while items are in flight, a claim waits for a
 * few free slots (concurrency / SYNC_CLAIM_SHARE) and results for a few
 * more of them (concurrency / SYNC_BATCH_SHARE), at most SYNC_BATCH_WAIT_MS;
 * PostgreSQL's cost per call, not per row, is what many small images pay. */
#define SYNC_CLAIM_SHARE    4
#define SYNC_BATCH_SHARE    4
#define SYNC_BATCH_WAIT_MS  5
#define SYNC_PUT_GRACE_S    30 /* see put_wait_s() */
#define SYNC_BACKOFF_BASE_S 1.0
#define SYNC_BACKOFF_CAP_S  300.0

struct item;

/* A migration's verify step hashing on the worker pool (see mig_back_done). */
struct vjob {
	struct workq_job job; /* first: the pool hands this pointer back */
	struct item *it;      /* NULL once the item is gone */
	struct op *op;	      /* a mirror's comparison (mirror_compared), or NULL */
	int a, b;
	unsigned char ma[16], mb[16];
	bool ok;
	struct err err;
};

/* A configuration and the stores opened from it.  Each item works with the
 * generation that was current when it was claimed, to its end: a reload
 * swaps in a new one for new claims, and an old one is released (closed by
 * its owner) once its last item is over, on the loop's next turn: that
 * item may end inside a callback of one of the generation's stores, which
 * must not be closed under it. */
struct sync_gen {
	const struct conf *conf;
	struct store **stores;
	int refs; /* items using it */
	void (*release)(void *arg);
	void *release_arg;
	struct sync_gen *next_retired;
};

/* One store operation of an item. */
struct op {
	struct item *it;
	int store; /* index in conf->stores */
	struct store_req *req;
	struct obj_info info;
	bool busy, ok;
	bool stored;	 /* a put succeeded: the store holds this version now */
	bool torn;	 /* a put succeeded with bytes that are not this version (the
			  * source written again while read, a size or read-back
			  * that differs): a stray for the next attempt to replace */
	bool stat_phase; /* remove: looking before deleting */
	/* a mirror's copy that found the key taken (mirror_taken) */
	bool taken;
	bool has_check; /* check: what the key holds, read, to compare */
	int check;
	struct vjob *vjob; /* the comparison, on the pool */
	/* a put that waits only for a sync it shares with other puts
	 * (sync_put_parked): its slot lends itself to another claim */
	bool parked;
};

/* The migration duty of an item (see "Migrations" in sql/001_base.sql). */
struct mig {
	long long id; /* 0: none */
	char *step;   /* "copy" or "delete-source" */
	char *source, *target;
	bool move, dry_run, verify;
	bool started;
	bool server_copy;  /* the target copies from the source itself (same S3 server) */
	bool direct;	   /* spool is the source's own file (open_fd) */
	bool adopt;	   /* spool is the target's (spool()): adopt() it */
	struct vjob *vjob; /* verify: the hashing on the pool, if under way */
	char *src_tag;	   /* delete-source: the source's tag when it was copied;
			    * copy: set when the previous attempt deleted the
			    * source copy just as the key was written again
			    * (mig_source_moved()) */
	char copied_tag[sizeof(((struct obj_info *)0)->tag)]; /* copy: the tag read */
	int src, tgt;					      /* store indexes */
	int spool, check; /* the copy, and the target read back (verify) */
	struct op get, put, back, del;
	struct obj_info known; /* what the copy writes (put's known, copy's src_info) */
	bool taken;	       /* the target had the key already: looked at */
	bool comparing;	       /* ... read back, to compare with the source */
	bool replace;	       /* ... an earlier version: written over */
	const char *outcome;   /* "done", "skipped" or NULL */
	uint64_t bytes;
	const char *home;    /* the image's new home store */
	const char *unstore; /* a store that no longer holds it */
	const char *next_step;
	double next_delay; /* ... not before this many seconds (see mig_copied) */
};

struct item {
	struct item *next, **pprev;
	struct sync *sy;
	struct sync_gen *g;
	char *key, *origin, *mimetype, *claimed_at;
	char *attr[5]; /* object_type, object_id, width, height, mimetype */
	struct image_attrs attrs;
	bool remove, missing, deleted;
	long long gen, version, token;
	int attempts;
	bool size_known;
	uint64_t size;	      /* recorded size of the version, if known */
	double changed_at;    /* when the home copy was written (a remove: when removed) */
	char *stores;	      /* comma-separated stores holding the current version */
	char *stale;	      /* comma-separated stores holding a superseded version */
	double stale_until;   /* copies written later are not that version */
	char *strays;	      /* "store=TAG@TIME,...": copies an earlier attempt wrote of
			       * a version written again meanwhile (work.strays) */
	char **stray;	      /* per configured store: its "TAG@TIME" in strays, or NULL */
	bool stray_elsewhere; /* strays names a store not configured here */
	bool unstaled;	      /* their copies were looked at */
	struct op *sops;      /* one per configured store: deleting those copies */
	int spool;
	bool direct;	/* spool is the source's own file (open_fd) */
	int adopt;	/* or the spool() of this store, the one mirror to copy to; -1 */
	int src;	/* index of the source store, put only */
	int busy;	/* operations in flight */
	struct op *ops; /* one per configured store */
	struct obj_info got;
	bool failed, permanent;
	bool torn; /* an op is torn: what was read is not the version */
	struct err err;
	uint64_t lease_deadline;
	uint64_t t0;
	uint64_t hb_seq; /* the last heartbeat that named its token */
	int nparked;	 /* its ops parked (op.parked) */
	struct mig mig;
};

struct sync {
	struct loop *loop;
	struct sync_gen *g; /* the current configuration */
	struct pgconn *pg;
	long long daemon;
	char daemon_s[24];
	struct item *items;
	int nitems;
	bool claiming, claim_again, in_claimed;
	int claim_asked;
	uint64_t claim_sent_at;
	bool advancing;
	bool advance_due;  /* a migration may want keys handed out */
	bool exchange_adv; /* the exchange in flight advances the migrations */
	struct buf batch;  /* results not yet sent: "{...},{...}" */
	int nbatch;
	uint64_t batch_since; /* when the oldest result of the batch came */
	struct buf sent;      /* the batch in flight, without its brackets */
	int nsent;
	double batch_delay, sent_delay; /* soonest retry among them, seconds */
	bool completing;
	bool heartbeating;
	uint64_t hb_sent_at, hb_seq;
	int hb_ms; /* SYNC_HEARTBEAT_MS, or IMGSYNC_HEARTBEAT_MS's (tests) */
	struct loop_timer poll, heartbeat, stop_timer, flush_retry, batch_wait;
	struct sync_gen *retired; /* old generations to release (release_timer) */
	struct loop_timer release_timer;
	uint64_t objects_done, bytes_done;
	/* ops parked (op.parked), and parked items as last counted (when, by
	 * loop_now(): claim_room() counts at most once per millisecond) */
	int nparked_ops, parked_items;
	uint64_t parked_at;
	bool stopping, stop_sent, deadline_passed;
	void (*stopped)(void *);
	void *stopped_arg;
	const char *spool_dir;
};

static void claim(struct sync *s);
static void flush_results(struct sync *s);
static void send_results(struct sync *s, bool now);
static void maybe_stopped(struct sync *s);

/* --- small helpers --- */

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p)
{
	size_t n;
	unsigned min;
	unsigned cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, min = 0x80, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, min = 0x800, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, min = 0x10000, cp = p[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* A JSON string; bytes that are not valid UTF-8 (a message cut in the
 * middle of a character) become U+FFFD, so the batch always parses. */
static void json_str(struct buf *b, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;

	buf_putc(b, '"');
	while (*p) {
		size_t n = utf8_len(p);

		if (n == 0) {
			buf_puts(b, "\\ufffd");
			p++;
		} else if (*p == '"' || *p == '\\') {
			buf_putc(b, '\\');
			buf_putc(b, (char)*p++);
		} else if (*p < 0x20) {
			buf_printf(b, "\\u%04x", *p++);
		} else {
			buf_append(b, p, n);
			p += n;
		}
	}
	buf_putc(b, '"');
}

/* The leases in hand for the heartbeat SEQ, as array literals: the
 * items' keys, {"a","b"}, by which the rows are found, and their claim
 * tokens, {1,2}, in the same order; each item named remembers SEQ. */
static void lease_arrays(struct buf *keys, struct buf *tokens, struct item *items, uint64_t seq)
{
	buf_putc(keys, '{');
	buf_putc(tokens, '{');
	for (struct item *it = items; it; it = it->next) {
		pg_array_elem(keys, it->key);
		buf_printf(tokens, "%lld", it->token);
		if (it->next) {
			buf_putc(keys, ',');
			buf_putc(tokens, ',');
		}
		it->hb_seq = seq;
	}
	buf_putc(keys, '}');
	buf_putc(tokens, '}');
}

static int store_index(const struct sync_gen *g, const char *name)
{
	for (size_t i = 0; i < g->conf->nstores; i++)
		if (strcmp(g->conf->stores[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Whether a comma-separated list of store names (NULL: empty) has name. */
static bool listed(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; p && *p;) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);

		if (len == n && memcmp(p, name, n) == 0)
			return true;
		p = c ? c + 1 : p + len;
	}
	return false;
}

/* Whether the catalog lists store among those holding the current version. */
static bool holds(const struct item *it, const char *store)
{
	return listed(it->stores, store);
}

/* A tag as a JSON string's content: tags are printable ASCII (a file's
 * numbers, an ETag); one that is not (a hostile server's ETag) becomes "",
 * which matches nothing. */
static const char *json_safe_tag(const char *tag)
{
	for (const char *p = tag; *p; p++)
		if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\' || *p == ',' || *p == '=')
			return "";
	return tag;
}

/* it->strays ("store=TAG@TIME,...", from the claim) by configured store:
 * it->stray.  false when out of memory. */
static bool parse_strays(struct item *it)
{
	size_t n = it->g->conf->nstores;

	if (it->strays == NULL || it->strays[0] == '\0')
		return true;
	if ((it->stray = calloc(n, sizeof(*it->stray))) == NULL)
		return false;
	for (const char *p = it->strays; *p;) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		const char *eq = memchr(p, '=', len);

		for (size_t i = 0; eq && i < n; i++)
			if (strlen(it->g->conf->stores[i].name) == (size_t)(eq - p) &&
			    memcmp(it->g->conf->stores[i].name, p, (size_t)(eq - p)) == 0) {
				free(it->stray[i]);
				if ((it->stray[i] = strndup(eq + 1, len - (size_t)(eq - p) - 1)) ==
				    NULL)
					return false;
				eq = NULL;
			}
		if (eq)
			it->stray_elsewhere = true;
		p = c ? c + 1 : p + len;
	}
	return true;
}

/* Whether o is the very copy an earlier attempt left in store i: its tag
 * ("TAG@TIME"), and written no later than that attempt's end (an S3 tag
 * is the content's: the same bytes written again later are not it). */
static bool is_stray(const struct item *it, int i, const struct obj_info *o)
{
	const char *t = it->stray ? it->stray[i] : NULL;
	const char *at = t ? strrchr(t, '@') : NULL;
	size_t n = at ? (size_t)(at - t) : 0;

	return at && o->tag[0] && strncmp(t, o->tag, n) == 0 && o->tag[n] == '\0' &&
	       (o->mtime <= 0 || o->mtime <= strtoll(at + 1, NULL, 10));
}

static bool is_permanent(enum err_code c)
{
	return c == ERR_DENIED || c == ERR_INVALID || c == ERR_CONFIG || c == ERR_NOTFOUND;
}

static void item_fail(struct item *it, const struct err *e, bool permanent)
{
	if (it->failed)
		return; /* the first failure is the one to report */
	it->failed = true;
	it->permanent = permanent;
	it->err = *e;
}

/* OP is no longer parked (its put is over, or cancelled): every op that
 * parked comes here before its item is freed, from its done() or from
 * item_cancel_ops(). */
static void op_unpark(struct op *op)
{
	if (!op->parked)
		return;
	op->parked = false;
	op->it->nparked--;
	op->it->sy->nparked_ops--;
	op->it->sy->parked_at = 0; /* count again */
}

/* OP's put wrote an object that is not the item's version (struct
 * op.torn).  The catalog never records it there; the result names it
 * (item_finish(): "torn"), the queue keeps it in work.strays, and the next
 * attempt replaces it (is_stray()) -- without that, the copy the next
 * attempt finds there, written after the catalog's record, would look
 * like another writer's and never be replaced. */
static void op_torn(struct op *op)
{
	op->torn = op->info.tag[0] != '\0';
	op->stored = op->ok = false;
	op->it->torn = true;
}

static void op_cancel(struct op *op)
{
	if (op->busy && op->req)
		op->it->g->stores[op->store]->ops->cancel(op->it->g->stores[op->store], op->req);
	op_unpark(op);
	op->busy = false;
	op->req = NULL;
}

static void item_cancel_ops(struct item *it)
{
	for (size_t i = 0; i < it->g->conf->nstores; i++) {
		op_cancel(&it->ops[i]);
		if (it->sops)
			op_cancel(&it->sops[i]);
	}
	op_cancel(&it->mig.get);
	op_cancel(&it->mig.put);
	op_cancel(&it->mig.back);
	op_cancel(&it->mig.del);
}

static void gen_release(struct sync_gen *g)
{
	if (g->release)
		g->release(g->release_arg);
	free(g);
}

/* Release the retired generations whose stores are quiet (or all, at the
 * end: NOW); the others are looked at again later. */
static void release_retired(struct sync *s, bool now)
{
	struct sync_gen **pp = &s->retired;

	while (*pp) {
		struct sync_gen *g = *pp;
		bool busy = false;

		for (size_t i = 0; i < g->conf->nstores && !now && !busy; i++)
			busy = g->stores[i]->ops->busy && g->stores[i]->ops->busy(g->stores[i]);
		if (busy) {
			pp = &g->next_retired;
			continue;
		}
		*pp = g->next_retired;
		gen_release(g);
	}
	if (s->retired)
		loop_timer_set(s->loop, &s->release_timer, 250);
}

static void on_release_timer(void *arg)
{
	release_retired(arg, false);
}

/* A generation no item uses any more and no claim will: released soon. */
static void gen_retire(struct sync *s, struct sync_gen *g)
{
	g->next_retired = s->retired;
	s->retired = g;
	loop_timer_set(s->loop, &s->release_timer, 0);
}

static void item_free(struct item *it)
{
	if (it->pprev) {
		*it->pprev = it->next;
		if (it->next)
			it->next->pprev = it->pprev;
		it->sy->nitems--;
	}
	if (it->spool >= 0)
		close(it->spool);
	if (it->mig.spool >= 0)
		close(it->mig.spool);
	if (it->mig.check >= 0)
		close(it->mig.check);
	if (it->mig.vjob)
		it->mig.vjob->it = NULL; /* it finishes without us */
	for (size_t i = 0; it->ops && i < it->g->conf->nstores; i++) {
		if (it->ops[i].has_check)
			close(it->ops[i].check);
		if (it->ops[i].vjob)
			it->ops[i].vjob->it = NULL;
	}
	free(it->mig.step);
	free(it->mig.src_tag);
	free(it->mig.source);
	free(it->mig.target);
	free(it->key);
	free(it->origin);
	free(it->mimetype);
	free(it->claimed_at);
	free(it->stores);
	free(it->stale);
	free(it->strays);
	for (size_t i = 0; it->stray && i < it->g->conf->nstores; i++)
		free(it->stray[i]);
	free(it->stray);
	free(it->sops);
	for (int i = 0; i < 5; i++)
		free(it->attr[i]);
	free(it->ops);
	if (it->g && --it->g->refs == 0 && it->g != it->sy->g)
		gen_retire(it->sy, it->g);
	free(it);
}

/* When the object was written, in seconds (0: unknown).  A whole-second
 * time (S3's Last-Modified) counts as the end of its second: compared with
 * the catalog's times, an object is taken for written later rather than
 * earlier, never for an earlier version it may not be. */
static double written_at(const struct obj_info *o)
{
	if (o->mtime <= 0)
		return 0;
	return (double)o->mtime + (o->mtime_fine ? o->mtime_ns / 1e9 : 1.0);
}

/* The same, with a whole second counting as its start: the earliest the
 * object can have been written. */
static double written_from(const struct obj_info *o)
{
	return o->mtime_fine ? written_at(o) : (double)(o->mtime > 0 ? o->mtime : 0);
}

/* The wall clock, to compare with objects' times and the catalog's. */
static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double backoff_s(int attempts)
{
	double cap = SYNC_BACKOFF_BASE_S;

	for (int i = 1; i < attempts && cap < SYNC_BACKOFF_CAP_S; i++)
		cap *= 2;
	if (cap > SYNC_BACKOFF_CAP_S)
		cap = SYNC_BACKOFF_CAP_S;
	/* full jitter, at least a quarter second */
	return 0.25 + (cap - 0.25) * ((double)random() / RAND_MAX);
}

static void start_migrate(struct item *it);

/* A copy read straight from the source's file (open_fd): whether the file
 * was written while it was read, by its tag before and after (fstat on an
 * open descriptor: no disk access). */
static bool source_changed(const struct item *it, int fd, struct err *e)
{
	struct stat sb;
	char tag[sizeof(it->got.tag)];

	if (!it->got.tag[0] || fstat(fd, &sb) < 0)
		return false;
	store_file_tag(&sb, tag, sizeof(tag));
	if (strcmp(tag, it->got.tag) == 0)
		return false;
	err_set(e, ERR_INTEGRITY, "the source was written again while it was copied");
	return true;
}

/* ,"url":"..." - where the image can be fetched in store `name`, for
 * imgsync.url() and watched URL columns; nothing if this daemon does not
 * have the store. */
static void json_url(struct buf *b, struct item *it, const char *name)
{
	int i = name ? store_index(it->g, name) : -1;
	struct buf key = BUF_INIT, url = BUF_INIT;
	struct err e = {0};

	if (i < 0)
		return;
	if (store_key(it->g->stores[i], it->key, &it->attrs, &key, &e) &&
	    it->g->stores[i]->ops->url(it->g->stores[i], buf_str(&key), &url, &e)) {
		buf_puts(b, ",\"url\":");
		json_str(b, buf_str(&url));
	} else
		log_msg(LOG_DEBUG, &(struct log_fields){.key = it->key, .store = name},
			"no URL for \"%s\" in %s: %s", it->key, name, e.msg);
	buf_free(&key);
	buf_free(&url);
}

/* ,"FIELD":{"store":"TAG@TIME",...}: the objects the item's puts wrote,
 * those that hold its version (TORN false: struct op.stored) or those
 * that do not (struct op.torn); TIME is a second after now, no earlier
 * than the store's own time of the object. */
static void json_copies(struct buf *b, const struct item *it, const char *field, bool torn)
{
	size_t n = it->g->conf->nstores;
	bool first = true;
	char at[24];

	snprintf(at, sizeof(at), "@%lld", (long long)time(NULL) + 1);
	for (size_t i = 0; i <= n; i++) {
		const struct op *op = i < n ? &it->ops[i] : &it->mig.put;
		const char *name = i < n ? it->g->conf->stores[i].name : it->mig.target;

		if (!(torn ? op->torn : op->stored) || !op->info.tag[0] || name == NULL)
			continue;
		if (first)
			buf_printf(b, ",\"%s\":{", field);
		else
			buf_putc(b, ',');
		json_str(b, name);
		buf_printf(b, ":\"%s%s\"", json_safe_tag(op->info.tag), at);
		first = false;
	}
	if (!first)
		buf_putc(b, '}');
}

/* The item is over: log it, queue its result, free it, claim more. */
static void item_finish(struct item *it)
{
	struct sync *s = it->sy;
	struct log_fields f = {.key = it->key};
	struct buf *b = &s->batch;
	const char *what = it->remove ? "remove" : "put";
	/* store-wide trouble (unreachable, 5xx, throttled) spends no attempt */
	bool counted = it->err.code != ERR_TRANSIENT;
	bool dead =
	    it->failed && (it->permanent || (counted && it->attempts >= it->g->conf->max_attempts));
	double delay = it->failed && !dead ? backoff_s(it->attempts) : 0;
	bool first = true;

	if (!it->failed) {
		struct buf where = BUF_INIT;

		for (size_t i = 0; i < it->g->conf->nstores; i++)
			if (it->ops[i].ok && (int)i != it->src)
				buf_printf(&where, "%s%s", where.len ? ", " : "",
					   it->g->conf->stores[i].name);
		s->objects_done++;
		if (!it->remove)
			s->bytes_done += it->got.size;
		if (it->remove)
			log_msg(LOG_DEBUG, &f, "removed \"%s\" from %s in %llu ms", it->key,
				where.len ? buf_str(&where) : "no store (it was nowhere)",
				(unsigned long long)(loop_now(s->loop) - it->t0));
		else if (it->src >= 0)
			log_msg(LOG_DEBUG, &f,
				"copied \"%s\" from %s to %s (%llu bytes) in %llu ms", it->key,
				it->g->conf->stores[it->src].name, buf_str(&where),
				(unsigned long long)it->got.size,
				(unsigned long long)(loop_now(s->loop) - it->t0));
		else if (!it->mig.id)
			log_msg(LOG_DEBUG, &f, "put \"%s\": every mirror holds it already",
				it->key);
		if (it->mig.id && it->mig.outcome)
			log_msg(LOG_DEBUG,
				&(struct log_fields){.key = it->key, .migration = it->mig.id},
				"migration %lld: \"%s\" %s%s%s", it->mig.id, it->key,
				it->mig.next_step ? "copied to "
				: it->mig.unstore ? "moved to "
						  : it->mig.outcome,
				it->mig.next_step || it->mig.unstore ? it->mig.target : "",
				it->mig.next_step ? ", verified; the source copy goes next" : "");
		buf_free(&where);
	} else if (dead)
		log_msg(LOG_ERR, &f, "%s \"%s\" failed for good after %d attempt%s: %s", what,
			it->key, it->attempts, it->attempts == 1 ? "" : "s", it->err.msg);
	else if (!counted)
		log_msg(LOG_WARNING, &f, "%s \"%s\" failed (next try in %.1f s): %s", what, it->key,
			delay, it->err.msg);
	else
		log_msg(LOG_WARNING, &f, "%s \"%s\" failed (attempt %d of %d, next in %.1f s): %s",
			what, it->key, it->attempts, it->g->conf->max_attempts, delay, it->err.msg);

	if (s->nbatch)
		buf_putc(b, ',');
	else
		s->batch_since = loop_now(s->loop);
	buf_puts(b, "{\"key\":");
	json_str(b, it->key);
	buf_printf(b,
		   ",\"gen\":%lld,\"token\":%lld,\"op\":\"%s\",\"ok\":%s,\"version\":%lld,"
		   "\"started_at\":",
		   it->gen, it->token, what, it->failed ? "false" : "true", it->version);
	json_str(b, it->claimed_at);
	if (it->failed) {
		buf_puts(b, ",\"error\":");
		json_str(b, it->err.msg);
		buf_printf(b, ",\"permanent\":%s,\"counted\":%s,\"delay\":%.3f",
			   it->permanent ? "true" : "false", counted ? "true" : "false", delay);
	}
	if (!it->remove) {
		buf_puts(b, ",\"stores\":[");
		for (size_t i = 0; i < it->g->conf->nstores; i++) {
			if (!it->ops[i].stored)
				continue;
			if (!first)
				buf_putc(b, ',');
			json_str(b, it->g->conf->stores[i].name);
			first = false;
		}
		if (it->mig.put.stored) {
			if (!first)
				buf_putc(b, ',');
			json_str(b, it->mig.target);
		}
		buf_putc(b, ']');
		/* the copies' tags and when they were written: should the
		 * image have been written again meanwhile, they are strays the
		 * next item deletes; torn ones are strays in any case */
		json_copies(b, it, "wrote", false);
		json_copies(b, it, "torn", true);
		/* what was read: a put's source, or a migration's where the
		 * catalog has no size (one it has stays: the delete step checks
		 * the source against it); not a read the source's writer tore */
		if ((it->src >= 0 || (it->mig.put.stored && !it->size_known)) &&
		    (it->got.size || !it->failed) && !it->torn)
			buf_printf(b, ",\"size\":%llu", (unsigned long long)it->got.size);
		if (it->got.has_md5) {
			char hex[33];

			hex_encode(it->got.md5, 16, hex);
			buf_printf(b, ",\"checksum\":\"%s\"", hex);
		}
		if (!it->failed)
			json_url(b, it, it->mig.home ? it->mig.home : it->origin);
	}
	if (it->mig.id) {
		buf_printf(b, ",\"migration\":%lld", it->mig.id);
		if (!it->failed && it->mig.outcome)
			buf_printf(b, ",\"mig\":\"%s\",\"mig_bytes\":%llu", it->mig.outcome,
				   (unsigned long long)it->mig.bytes);
		if (!it->failed && it->mig.home) {
			buf_puts(b, ",\"home\":");
			json_str(b, it->mig.home);
		}
		if (!it->failed && it->mig.unstore) {
			buf_puts(b, ",\"unstore\":");
			json_str(b, it->mig.unstore);
		}
		if (!it->failed && it->mig.next_step)
			buf_printf(b, ",\"next_step\":\"%s\"", it->mig.next_step);
		if (!it->failed && it->mig.next_step && it->mig.next_delay > 0)
			buf_printf(b, ",\"delay\":%.3f", it->mig.next_delay);
		if (!it->failed && it->mig.next_step && it->mig.copied_tag[0]) {
			buf_puts(b, ",\"src_tag\":");
			json_str(b, it->mig.copied_tag);
		}
		/* the source copy the delete step took: should the key have
		 * been written again meanwhile, the next attempt may find it
		 * gone (mig_source_moved()) */
		if (!it->failed && it->mig.unstore && it->mig.src_tag && it->mig.src_tag[0] &&
		    strcmp(it->mig.step, "delete-source") == 0) {
			buf_puts(b, ",\"deleted_tag\":");
			json_str(b, it->mig.src_tag);
		}
	}
	buf_putc(b, '}');
	s->nbatch++;
	if (delay > 0 && (s->batch_delay == 0 || delay < s->batch_delay))
		s->batch_delay = delay; /* a claim is timed when the server has the result */
	item_free(it);
	flush_results(s);
	claim(s);
	maybe_stopped(s);
}

static void start_unstale(struct item *it);

/* A stage of the item is over: the copies its put superseded next, then
 * its migration duty, if it has them. */
static void item_done(struct item *it)
{
	if ((it->stale || it->strays) && !it->unstaled && !it->failed && !it->remove &&
	    !it->deleted) {
		start_unstale(it);
		return;
	}
	if (it->mig.id && !it->mig.started && !it->failed && !it->remove) {
		start_migrate(it);
		return;
	}
	if (it->mig.id && it->remove && !it->failed)
		it->mig.outcome = "skipped"; /* removed: nothing to migrate */
	item_finish(it);
}

/* --- puts --- */

/* --- a mirror's copy that found the key taken --- */

static void put_done(void *arg, const struct err *e);
static void vjob_work(struct workq_job *job);
static void vjob_done(struct workq_job *job);
static void vjob_free(struct workq_job *job);
static int spool_open(struct sync *s, struct store *lender, bool *adopted, struct err *e);

/* --- a copy that found its key taken (a move's, or a mirror's) --- */

/* What a copy that may only create its object does with the object o it
 * found under the key in store i, which the catalog does not record there
 * (or records an earlier version there: work.stale).  A replacement is
 * written only over o (obj_info.if_tag).
 * COMPARED: what reading it back showed (-1 not read, 0 other bytes, 1 the
 * source's); READ: the source's bytes are here to compare with; VERIFY:
 * the bytes must be compared, whatever MD5s say.  Logs what it decides;
 * sets *e for TAKEN_LEAVE. */
enum taken {
	TAKEN_KEEP,    /* the same bytes (an attempt whose result was lost) */
	TAKEN_COMPARE, /* read it back (read_back) and ask again */
	TAKEN_REPLACE, /* an earlier version, or this item's own stray */
	TAKEN_LEAVE    /* another writer's */
};

static enum taken taken_verdict(const struct item *it, int i, const struct obj_info *o,
				int compared, bool read, bool verify, struct err *e)
{
	const char *name = it->g->conf->stores[i].name;
	/* an MD5 the store computed (a plain ETag), not one stored beside a
	 * multipart object, which says what was meant to arrive */
	bool plain = o->has_md5 && strlen(o->etag) == 32 && strchr(o->etag, '-') == NULL;
	bool same = compared == 1;
	bool older = o->mtime > 0 && it->changed_at > 0 && written_at(o) <= it->changed_at + 1.0;
	double now = (double)time(NULL);

	if (is_stray(it, i, o)) {
		log_msg(LOG_INFO, &(struct log_fields){.key = it->key, .store = name},
			"store \"%s\" holds a copy of \"%s\" an earlier attempt wrote of a "
			"version written again meanwhile: replacing it",
			name, it->key);
		return TAKEN_REPLACE;
	}
	if (older && listed(it->stale, name))
		return TAKEN_REPLACE; /* the earlier version the catalog knows is there:
				       * not worth reading back */
	if (compared < 0 && o->size == it->got.size) {
		if (read && (verify || !(plain && it->got.has_md5)))
			return TAKEN_COMPARE;
		/* No bytes here to read back (a copy on the server): the MD5s
		 * the stores keep decide, also one stored beside a multipart
		 * object, which is made only of parts checked one by one, and
		 * deleted when the whole fails its check (s3.c drop_written). */
		same = o->has_md5 && it->got.has_md5 && (plain || !read) &&
		       memcmp(o->md5, it->got.md5, 16) == 0;
	}
	if (same) {
		log_msg(LOG_INFO, &(struct log_fields){.key = it->key, .store = name},
			"store \"%s\" holds \"%s\" already (an earlier attempt copied it): kept",
			name, it->key);
		return TAKEN_KEEP;
	}
	if (older) {
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key, .store = name},
			"store \"%s\" holds an earlier \"%s\" (%llu bytes) that the catalog does "
			"not record there: replacing it with the current version",
			name, it->key, (unsigned long long)o->size);
		return TAKEN_REPLACE;
	}
	/* Written after the catalog recorded this version (or at a time
	 * unknown): another writer's, most likely the application's newer
	 * version, its put() about to commit (which makes this item start
	 * over).  Never replaced: waited for while recent (SYNC_PUT_GRACE_S,
	 * spending no attempt), then a failure that counts. */
	if (o->mtime > 0 && (double)o->mtime >= now - SYNC_PUT_GRACE_S &&
	    (double)o->mtime <= now + 2.0)
		err_set(e, ERR_TRANSIENT,
			"store \"%s\" holds another \"%s\" (%llu bytes), written %.0f s after the "
			"catalog's record of the one being copied, %.0f s ago: not replacing it; "
			"waiting for the application's put() of it",
			name, it->key, (unsigned long long)o->size,
			(double)o->mtime - it->changed_at, now - (double)o->mtime);
	else
		err_set(e, ERR_INTEGRITY,
			"store \"%s\" holds another \"%s\" (%llu bytes) that the catalog does not "
			"record, written %s the catalog's record of the one being copied: not "
			"replacing it; if it is the image, record it with imgsync.put('%s', '%s'), "
			"otherwise delete it",
			name, it->key, (unsigned long long)o->size,
			o->mtime > 0 ? "after" : "(its time unknown) maybe after", it->key, name);
	return TAKEN_LEAVE;
}

/* Look at what store op->store holds under the item's key (op->info; op
 * busy, DONE follows). */
static bool look_taken(struct item *it, struct op *op, store_done_fn done, struct err *e)
{
	struct store *st = it->g->stores[op->store];
	struct buf key = BUF_INIT;

	op->busy = store_key(st, it->key, &it->attrs, &key, e) &&
		   st->ops->stat(st, buf_str(&key), &op->info, done, op, &op->req, e);
	buf_free(&key);
	return op->busy;
}

/* Read what store op->store holds under the item's key into a new spool
 * file (op->info says what it was), to compare it with the source: the
 * file (op busy; DONE follows), or -1 with *e. */
static int read_back(struct item *it, struct op *op, store_done_fn done, struct err *e)
{
	struct store *st = it->g->stores[op->store];
	struct buf key = BUF_INIT;
	int fd = spool_open(it->sy, NULL, NULL, e);

	if (fd >= 0 &&
	    !(store_key(st, it->key, &it->attrs, &key, e) &&
	      st->ops->get(st, buf_str(&key), fd, 0, &op->info, done, op, &op->req, e))) {
		close(fd);
		fd = -1;
	}
	buf_free(&key);
	op->busy = fd >= 0;
	return fd;
}

/* Hash files a and b on the pool of store i, for vjob_done (a mirror's
 * comparison when OP, else the migration's); *out names the job until
 * then. */
static bool vjob_start(struct item *it, struct op *op, int i, int a, int b, struct vjob **out,
		       struct err *e)
{
	struct vjob *v = calloc(1, sizeof(*v));

	if (v == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	v->a = fcntl(a, F_DUPFD_CLOEXEC, 0);
	v->b = fcntl(b, F_DUPFD_CLOEXEC, 0);
	if (v->a < 0 || v->b < 0) {
		err_sys(e, errno, "dup");
		if (v->a >= 0)
			close(v->a);
		if (v->b >= 0)
			close(v->b);
		free(v);
		return false;
	}
	v->it = it;
	v->op = op;
	v->job.work = vjob_work;
	v->job.done = vjob_done;
	v->job.discard = vjob_free;
	*out = v;
	workq_submit(it->g->stores[i]->env.wq, &v->job);
	return true;
}

static bool item_parked(const struct item *it);

/* An operation of the item's put is over: the item, once none is left. */
static void put_over(struct item *it)
{
	struct err m;

	if (it->busy == 0) {
		if (!it->failed && it->direct && source_changed(it, it->spool, &m)) {
			item_fail(it, &m, false); /* the copies may mix two versions */
			for (size_t i = 0; i < it->g->conf->nstores; i++)
				if (it->ops[i].stored)
					op_torn(&it->ops[i]);
		}
		item_done(it);
	} else if (it->nparked > 0 && item_parked(it)) {
		it->sy->parked_at = 0; /* what is left of it waits for the disk only */
		claim(it->sy);
	}
}

static void mirror_fail(struct item *it, struct op *op, struct err *e)
{
	err_prefix(e, "copying to store \"%s\": ", it->g->conf->stores[op->store].name);
	item_fail(it, e, is_permanent(e->code) && e->code != ERR_NOTFOUND);
}

/* Write the copy to mirror OP: only creating the object (IF_ABSENT; a key
 * found taken is looked at, mirror_taken), or only over the object looked
 * at (IF_TAG, its tag; a newer one written since stays). */
static bool mirror_write(struct item *it, struct op *op, bool if_absent, const char *if_tag,
			 struct err *pe)
{
	struct store *st = it->g->stores[op->store];
	struct obj_info known = it->got;
	struct buf key = BUF_INIT;
	bool ok;

	snprintf(known.content_type, sizeof(known.content_type), "%s",
		 it->attrs.mimetype ? it->attrs.mimetype : "");
	known.if_absent = if_absent;
	snprintf(known.if_tag, sizeof(known.if_tag), "%s", if_tag ? if_tag : "");
	ok = store_key(st, it->key, &it->attrs, &key, pe) &&
	     (op->store == it->adopt ? st->ops->adopt
				     : st->ops->put)(st, buf_str(&key), it->spool, it->got.size,
						     &known, &op->info, put_done, op, &op->req, pe);
	buf_free(&key);
	if (ok) {
		op->busy = true;
		it->busy++;
	}
	return ok;
}

static void mirror_fetched(void *arg, const struct err *e);

/* Apply taken_verdict() to what mirror OP holds (op->info; COMPARED as
 * there). */
static void mirror_verdict(struct item *it, struct op *op, int compared)
{
	struct err e = {0};

	switch (taken_verdict(it, op->store, &op->info, compared, true, false, &e)) {
	case TAKEN_COMPARE:
		op->check = read_back(it, op, mirror_fetched, &e);
		op->has_check = op->check >= 0;
		if (op->has_check) {
			it->busy++;
			return;
		}
		break;
	case TAKEN_KEEP:
		op->ok = op->stored = true;
		return;
	case TAKEN_REPLACE:
		if (mirror_write(it, op, false, op->info.tag, &e))
			return;
		break;
	case TAKEN_LEAVE:
		break;
	}
	mirror_fail(it, op, &e);
}

/* what the mirror holds, compared with the source on the pool */
static void mirror_compared(struct item *it, struct op *op, const struct vjob *v)
{
	struct err e = {0};

	op->vjob = NULL;
	it->busy--;
	if (!v->ok) {
		e = v->err;
		mirror_fail(it, op, &e);
	} else {
		bool same = op->info.size == it->got.size && memcmp(v->ma, v->mb, 16) == 0;

		if (same && !it->got.has_md5) {
			it->got.has_md5 = true;
			memcpy(it->got.md5, v->ma, 16);
		}
		mirror_verdict(it, op, same);
	}
	put_over(it);
}

static void mirror_fetched(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct err pe = {0};

	op->busy = false;
	op->req = NULL;
	it->busy--;
	if (e && e->code == ERR_NOTFOUND) { /* gone meanwhile: create it after all */
		if (!mirror_write(it, op, true, NULL, &pe))
			mirror_fail(it, op, &pe);
	} else if (e) {
		pe = *e;
		err_prefix(&pe, "reading what it holds: ");
		mirror_fail(it, op, &pe);
	} else if (!vjob_start(it, op, op->store, it->spool, op->check, &op->vjob, &pe)) {
		mirror_fail(it, op, &pe);
	} else
		it->busy++;
	put_over(it);
}

/* the mirror's key, looked at after the copy found it taken */
static void mirror_looked(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct err pe = {0};

	op->busy = false;
	op->req = NULL;
	it->busy--;
	if (e && e->code == ERR_NOTFOUND) { /* gone meanwhile: create it after all */
		if (!mirror_write(it, op, true, NULL, &pe))
			mirror_fail(it, op, &pe);
	} else if (e) {
		pe = *e;
		err_prefix(&pe, "looking at what it holds: ");
		mirror_fail(it, op, &pe);
	} else
		mirror_verdict(it, op, -1);
	put_over(it);
}

/* The copy to mirror OP found the key taken: look at what is there. */
static void mirror_taken(struct item *it, struct op *op)
{
	struct err e = {0};

	op->taken = true;
	if (look_taken(it, op, mirror_looked, &e)) {
		it->busy++;
	} else {
		err_prefix(&e, "looking at what it holds: ");
		mirror_fail(it, op, &e);
	}
}

static void put_done(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	const struct store_cfg *c = &it->g->conf->stores[op->store];

	op_unpark(op);
	op->busy = false;
	op->req = NULL;
	it->busy--;
	if (e && e->code == ERR_EXISTS && !op->taken) {
		mirror_taken(it, op);
		put_over(it);
		return;
	}
	if (e) {
		struct err m = *e;

		err_prefix(&m, "copying to store \"%s\": ", c->name);
		item_fail(it, &m, is_permanent(e->code) && e->code != ERR_NOTFOUND);
	} else if (op->info.size != it->got.size) {
		struct err m;

		err_set(&m, ERR_INTEGRITY, "store \"%s\" holds %llu bytes, not %llu", c->name,
			(unsigned long long)op->info.size, (unsigned long long)it->got.size);
		item_fail(it, &m, false);
		op_torn(op);
	} else {
		op->ok = true;
		op->stored = true;
		/* a store that hashed what it stored gives the catalog a checksum */
		if (!it->got.has_md5 && op->info.has_md5) {
			it->got.has_md5 = true;
			memcpy(it->got.md5, op->info.md5, 16);
		}
	}
	put_over(it);
}

static void get_done(void *arg, const struct err *e)
{
	struct op *src = arg;
	struct item *it = src->it;

	src->busy = false;
	src->req = NULL;
	it->busy--;
	if (e) {
		struct err m = *e;

		err_prefix(&m, "%s store \"%s\": ",
			   e->code == ERR_NOTFOUND ? "the source is missing from" : "reading from",
			   it->g->conf->stores[src->store].name);
		item_fail(it, &m, is_permanent(e->code));
		item_done(it);
		return;
	}
	src->ok = true;
	it->got = src->info;
	for (size_t i = 0; i < it->g->conf->nmirrors; i++) {
		int t = store_index(it->g, it->g->conf->mirrors[i]);
		struct op *op;
		struct err pe = {0};

		if (t < 0 || t == it->src || holds(it, it->g->conf->stores[t].name))
			continue;
		op = &it->ops[t];
		/* A mirror holding an earlier version (work.stale) is looked at
		 * first, and only that object replaced: the application may write
		 * a newer one there while the copy is on its way (mirror_looked).
		 * Elsewhere the copy only creates the object. */
		if (listed(it->stale, it->g->conf->stores[t].name))
			mirror_taken(it, op);
		else if (!mirror_write(it, op, true, NULL, &pe)) {
			err_prefix(&pe, "copying to store \"%s\": ", it->g->conf->stores[t].name);
			item_fail(it, &pe, is_permanent(pe.code));
		}
	}
	if (it->busy == 0)
		item_done(it);
}

/* get() flags for a download into a file that store ADOPT (an index; -1
 * for none) will take: it fsyncs the file, writeback may start early. */
static unsigned get_flags(const struct sync_gen *g, int adopt)
{
	return adopt >= 0 && g->conf->stores[adopt].fsync ? STORE_GET_DURABLE : 0;
}

/* A file for a download from another store to land in: one LENDER lends
 * on its own disk (spool(); *adopted, and adopt() then takes the file
 * itself: written once), else an unnamed file in the spool directory. */
static int spool_open(struct sync *s, struct store *lender, bool *adopted, struct err *e)
{
	int fd;

	if (adopted)
		*adopted = false;
	if (lender && adopted && lender->ops->spool && (fd = lender->ops->spool(lender)) >= 0) {
		*adopted = true;
		return fd;
	}
	fd = open(s->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		err_sys(e, errno, "cannot create a spool file in %s", s->spool_dir);
	return fd;
}

static void start_put(struct item *it)
{
	struct sync *s = it->sy;
	struct store *src;
	struct buf key = BUF_INIT;
	struct err e = {0};
	int need = 0, last = -1;
	bool ok;

	if (it->missing || it->deleted) {
		item_done(it); /* removed meanwhile: nothing to copy */
		return;
	}
	/* mirrors that lack the current version */
	for (size_t i = 0; i < it->g->conf->nmirrors; i++)
		if (strcmp(it->g->conf->mirrors[i], it->origin) != 0 &&
		    !holds(it, it->g->conf->mirrors[i])) {
			need++;
			last = store_index(it->g, it->g->conf->mirrors[i]);
		}
	if (need == 0) {
		item_done(it);
		return;
	}
	/* the source: the store written to, else any store holding this version */
	it->src = store_index(it->g, it->origin);
	for (size_t i = 0; it->src < 0 && i < it->g->conf->nstores; i++)
		if (holds(it, it->g->conf->stores[i].name))
			it->src = (int)i;
	if (it->src < 0) {
		err_set(&e, ERR_CONFIG,
			"no configured store holds it (written to store \"%s\", copies in \"%s\")",
			it->origin, it->stores ? it->stores : "");
		item_fail(it, &e, true);
		item_done(it);
		return;
	}
	src = it->g->stores[it->src];
	if (src->ops->open_fd) {
		/* a local file: the mirrors read it directly, once */
		it->direct = true;
		ok = store_key(src, it->key, &it->attrs, &key, &e) &&
		     src->ops->open_fd(src, buf_str(&key), &it->spool, &it->ops[it->src].info,
				       get_done, &it->ops[it->src], &it->ops[it->src].req, &e);
	} else {
		/* the one mirror to copy to may lend its own file */
		bool adopted;

		if ((it->spool = spool_open(s, need == 1 && last >= 0 ? it->g->stores[last] : NULL,
					    &adopted, &e)) < 0) {
			item_fail(it, &e, false);
			item_done(it);
			return;
		}
		if (adopted)
			it->adopt = last;
		ok = store_key(src, it->key, &it->attrs, &key, &e) &&
		     src->ops->get(src, buf_str(&key), it->spool, get_flags(it->g, it->adopt),
				   &it->ops[it->src].info, get_done, &it->ops[it->src],
				   &it->ops[it->src].req, &e);
	}
	if (!ok) {
		err_prefix(&e, "reading from store \"%s\": ", it->g->conf->stores[it->src].name);
		item_fail(it, &e, is_permanent(e.code));
		buf_free(&key);
		item_done(it);
		return;
	}
	buf_free(&key);
	it->ops[it->src].busy = true;
	it->busy++;
}

/* --- removes, and copies a put superseded --- */

static void del_done(void *arg, const struct err *e);

/* Whether the object a remove found is still the image that was removed:
 * not if its size differs from the recorded one, or it was modified after
 * the removal (the application wrote the key again since). */
static bool still_removed_one(const struct item *it, const struct obj_info *o)
{
	if (it->size_known && o->size != it->size)
		return false;
	if (o->mtime > 0 && written_at(o) > it->changed_at + 1.0)
		return false;
	return true;
}

/* Whether a copy in a store that a put to another store left is the
 * version that put superseded: written no later than the catalog last
 * recorded a copy of it (a second's grace: an application may write the
 * file after its transaction began), and before the put.  A copy written
 * later is another writer's (a put to that store may be about to commit)
 * and stays, as does one whose time is unknown.  A whole-second time
 * (S3's Last-Modified) counts as the end of its second. */
static bool superseded(const struct item *it, const struct obj_info *o)
{
	double written = written_at(o);
	double limit = it->stale_until + 1.0;

	if (o->mtime <= 0 || it->stale_until <= 0)
		return false;
	return written <= (limit < it->changed_at ? limit : it->changed_at);
}

/* Delete what OP looked at.  A superseded copy goes only while it is
 * still the copy looked at, where the store can say (del_if): no writer
 * slips in between. */
static bool op_delete(struct item *it, struct op *op, const char *key, struct err *e)
{
	struct store *st = it->g->stores[op->store];

	if (!it->remove && op->info.tag[0] && st->ops->del_if)
		return st->ops->del_if(st, key, op->info.tag, del_done, op, &op->req, e);
	return st->ops->del(st, key, del_done, op, &op->req, e);
}

static void remove_looked(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	const struct store_cfg *c = &it->g->conf->stores[op->store];
	struct buf key = BUF_INIT;
	struct err de = {0};

	op->busy = false;
	op->req = NULL;
	op->stat_phase = false;
	it->busy--;
	if (e && e->code == ERR_NOTFOUND) {
		op->ok = true; /* nothing there: deleted */
	} else if (e) {
		struct err m = *e;

		err_prefix(&m, "deleting from store \"%s\": ", c->name);
		item_fail(it, &m, is_permanent(e->code));
	} else if (it->remove && !is_stray(it, op->store, &op->info) &&
		   !still_removed_one(it, &op->info)) {
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key, .store = c->name},
			"not deleting \"%s\" from store \"%s\": it was written after the removal "
			"(%llu bytes); the application wrote the key again",
			it->key, c->name, (unsigned long long)op->info.size);
		op->ok = true;
	} else if (!it->remove && !is_stray(it, op->store, &op->info) &&
		   !listed(it->stale, c->name)) {
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key, .store = c->name},
			"not deleting \"%s\" from store \"%s\": it is not the copy an earlier "
			"attempt left there (%llu bytes); it was written again since",
			it->key, c->name, (unsigned long long)op->info.size);
		op->ok = true;
	} else if (!it->remove && !is_stray(it, op->store, &op->info) &&
		   !superseded(it, &op->info)) {
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key, .store = c->name},
			"not deleting the copy of \"%s\" in store \"%s\" that its put to store "
			"\"%s\" superseded: it was written after that version was recorded "
			"(%llu bytes), by the application writing the key there again",
			it->key, c->name, it->origin, (unsigned long long)op->info.size);
		op->ok = true;
	} else if (!store_key(it->g->stores[op->store], it->key, &it->attrs, &key, &de) ||
		   !op_delete(it, op, buf_str(&key), &de)) {
		err_prefix(&de, "deleting from store \"%s\": ", c->name);
		item_fail(it, &de, is_permanent(de.code));
	} else {
		op->busy = true;
		it->busy++;
	}
	buf_free(&key);
	if (it->busy == 0)
		item_done(it);
}

static void del_done(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;

	op->busy = false;
	op->req = NULL;
	it->busy--;
	if (e && !it->remove && e->code == ERR_INTEGRITY) {
		log_msg(LOG_NOTICE,
			&(struct log_fields){.key = it->key,
					     .store = it->g->conf->stores[op->store].name},
			"not deleting the copy of \"%s\" in store \"%s\" that its put to store "
			"\"%s\" superseded: it was written again while being looked at",
			it->key, it->g->conf->stores[op->store].name, it->origin);
		op->ok = true;
	} else if (e) {
		struct err m = *e;

		err_prefix(&m, "deleting from store \"%s\": ", it->g->conf->stores[op->store].name);
		item_fail(it, &m, is_permanent(e->code));
	} else {
		op->ok = true;
		if (!it->remove)
			log_msg(LOG_DEBUG,
				&(struct log_fields){.key = it->key,
						     .store = it->g->conf->stores[op->store].name},
				"deleted the copy of \"%s\" in store \"%s\" that its put to store "
				"\"%s\" superseded",
				it->key, it->g->conf->stores[op->store].name, it->origin);
	}
	if (it->busy == 0)
		item_done(it);
}

/* Look at the item's key in store i (OP), then remove_looked() decides
 * whether to delete it.  A layout that cannot map the image cannot have
 * stored it: nothing to look at. */
static void look_before_delete(struct item *it, struct op *op, int i)
{
	struct store *st = it->g->stores[i];
	struct buf key = BUF_INIT;
	struct err e = {0};

	*op = (struct op){.it = it, .store = i};
	if (!store_key(st, it->key, &it->attrs, &key, &e)) {
		buf_free(&key);
		return;
	}
	if (!st->ops->stat(st, buf_str(&key), &op->info, remove_looked, op, &op->req, &e)) {
		err_prefix(&e, "deleting from store \"%s\": ", it->g->conf->stores[i].name);
		item_fail(it, &e, is_permanent(e.code));
	} else {
		op->stat_phase = true;
		op->busy = true;
		it->busy++;
	}
	buf_free(&key);
}

static bool is_mirror(const struct sync_gen *g, const char *name)
{
	for (size_t i = 0; i < g->conf->nmirrors; i++)
		if (strcmp(g->conf->mirrors[i], name) == 0)
			return true;
	return false;
}

/* The application put the image to another store than the one(s) holding
 * it: the copies there are an earlier version.  Each is looked at and
 * deleted if it predates the put, except where the put wrote the new
 * version (its store, the mirrors).  So is a copy an earlier attempt wrote
 * of a version superseded while it was in flight (a stray), if it is still
 * that copy.  A store this daemon does not know is left alone. */
static void start_unstale(struct item *it)
{
	int origin = store_index(it->g, it->origin);
	size_t named = 1, known = 0;

	it->unstaled = true;
	if ((it->sops = calloc(it->g->conf->nstores, sizeof(*it->sops))) == NULL) {
		struct err e;

		err_set(&e, ERR_TRANSIENT, "out of memory");
		item_fail(it, &e, false);
		item_done(it);
		return;
	}
	for (const char *p = it->stale; p && (p = strchr(p, ',')) != NULL; p++)
		named++;
	if (it->stale == NULL)
		named = 0;
	for (size_t i = 0; i < it->g->conf->nstores; i++) {
		const char *name = it->g->conf->stores[i].name;

		if (listed(it->stale, name))
			known++;
		else if (it->stray == NULL || it->stray[i] == NULL)
			continue;
		if ((int)i == origin || is_mirror(it->g, name) || holds(it, name))
			continue;
		if (it->mig.id && !it->mig.dry_run && strcmp(it->mig.target, name) == 0 &&
		    (strcmp(it->origin, it->mig.source) == 0 || holds(it, it->mig.source)))
			continue; /* its migration copies the new version there next */
		look_before_delete(it, &it->sops[i], (int)i);
	}
	if (known < named)
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key},
			"\"%s\": of the stores that may hold an earlier version (%s), those not "
			"in this daemon's configuration are left alone",
			it->key, it->stale);
	if (it->stray_elsewhere)
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key},
			"\"%s\": of the stores that may hold a copy an earlier attempt wrote of a "
			"version written again meanwhile (%s), those not in this daemon's "
			"configuration are left alone",
			it->key, it->strays);
	if (it->busy == 0)
		item_done(it);
}

static void start_remove(struct item *it)
{
	if (it->missing || !it->deleted) {
		item_done(it); /* gone already, or written again since */
		return;
	}
	for (size_t i = 0; i < it->g->conf->nstores; i++)
		look_before_delete(it, &it->ops[i], (int)i);
	if (it->busy == 0)
		item_done(it);
}

/* --- migrations --- */

/* MD5 of a spool file (local, just written: page-cache speed). */
static void mig_fail(struct item *it, const struct err *e, const char *what)
{
	struct err m = *e;

	err_prefix(&m, "migration %lld from \"%s\" to \"%s\", %s: ", it->mig.id,
		   it->mig.source ? it->mig.source : "?", it->mig.target ? it->mig.target : "?",
		   what);
	item_fail(it, &m, is_permanent(e->code));
}

/* How long a move waits before taking the home copy O (the source, the
 * store the application writes to) for what the catalog records: O was
 * written more than GRACE s after the catalog's record of the image, less
 * than SYNC_PUT_GRACE_S ago, and the application's put() of it may be
 * about to commit.  The seconds left of SYNC_PUT_GRACE_S, or 0: no wait.
 * A whole second counts as its start (written_from()): an S3 object
 * written in the second of its put() is taken for the one put, or every
 * fresh image of a follow move from S3 would wait; what is left open is
 * one written again in place in the very second of its previous put(),
 * and copied before the new put() commits.  A time in the future (a clock
 * set wrong, a restored file) says nothing: that wait would never end. */
static double put_wait_s(const struct item *it, const struct obj_info *o, double grace)
{
	double written = written_from(o), now = wall_s();

	/* copies elsewhere are imgsync's own, written after the put() */
	if (it->origin == NULL || strcmp(it->origin, it->mig.source) != 0)
		return 0;
	if (it->changed_at <= 0 || written <= 0 || written <= it->changed_at + grace ||
	    written + SYNC_PUT_GRACE_S <= now || written > now + 2.0)
		return 0;
	return written + SYNC_PUT_GRACE_S - now;
}

/* The copy is in place and verified.  A move's source copy goes next --
 * not at once if the application wrote it after the catalog's record of
 * the version being moved (while put_wait_s() says its put() may come, or while
 * its put() transaction was open) and moments ago: those may be newer
 * bytes whose put() is about to commit and name that file.  The delete
 * then waits for the put (which starts the key over, the new version
 * copied) for what is left of SYNC_PUT_GRACE_S.  The copy holds the bytes
 * meanwhile; a file no put() follows is deleted when the wait is over. */
static void mig_copied(struct item *it)
{
	struct mig *m = &it->mig;

	m->put.stored = true;
	snprintf(m->copied_tag, sizeof(m->copied_tag), "%s", it->got.tag);
	if (m->move) {
		m->home = m->target;
		m->next_step = "delete-source";
		m->next_delay = put_wait_s(it, &it->got, 0);
		if (m->next_delay > 0)
			log_msg(
			    LOG_INFO, &(struct log_fields){.key = it->key, .migration = m->id},
			    "migration %lld: \"%s\" was written %.3f s after the catalog's record "
			    "of it: its source copy goes in %.0f s, unless a put() of it comes "
			    "first",
			    m->id, it->key, written_from(&it->got) - it->changed_at, m->next_delay);
	} else {
		m->outcome = "done";
		m->bytes = it->got.size;
	}
}

/* verify: the source and the target's copy read back, hashed on the
 * worker pool (whole objects: not on the loop).  The job owns itself and
 * its descriptors; an item that goes first (abandoned) leaves it to end
 * alone. */

static void vjob_free(struct workq_job *job)
{
	struct vjob *v = (struct vjob *)job;

	close(v->a);
	close(v->b);
	free(v);
}

static void vjob_work(struct workq_job *job)
{
	struct vjob *v = (struct vjob *)job;

	v->ok = digest_md5_fd(v->a, v->ma, &v->err) && digest_md5_fd(v->b, v->mb, &v->err);
}

static void mig_verdict(struct item *it, const struct obj_info *o, int compared);
static bool mig_write(struct item *it, struct err *pe);
static void mirror_compared(struct item *it, struct op *op, const struct vjob *v);

static void vjob_done(struct workq_job *job)
{
	struct vjob *v = (struct vjob *)job;
	struct item *it = v->it;
	struct mig *m;

	if (it == NULL) {
		vjob_free(job);
		return;
	}
	if (v->op) {
		mirror_compared(it, v->op, v);
		vjob_free(job);
		return;
	}
	m = &it->mig;
	m->vjob = NULL;
	if (!v->ok) {
		mig_fail(it, &v->err, "verifying");
	} else if (m->comparing) {
		/* the target's copy (mig_target_looked): this version, or another */
		bool same = m->back.info.size == it->got.size && memcmp(v->ma, v->mb, 16) == 0;

		m->comparing = false;
		if (same) {
			it->got.has_md5 = true;
			memcpy(it->got.md5, v->ma, 16);
		}
		vjob_free(job);
		mig_verdict(it, &m->back.info, same);
		return;
	} else if (m->back.info.size != it->got.size || memcmp(v->ma, v->mb, 16) != 0) {
		struct err ve;

		err_set(&ve, ERR_INTEGRITY,
			"the copy in store \"%s\" differs from the source (%llu vs %llu bytes)",
			m->target, (unsigned long long)m->back.info.size,
			(unsigned long long)it->got.size);
		mig_fail(it, &ve, "verifying");
		op_torn(&m->put);
	} else {
		it->got.has_md5 = true;
		memcpy(it->got.md5, v->ma, 16);
		mig_copied(it);
	}
	vjob_free(job);
	item_finish(it);
}

static void mig_back_done(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct mig *m = &it->mig;
	struct err ve = {0};

	op->busy = false;
	op->req = NULL;
	if (e && e->code == ERR_NOTFOUND && m->comparing) {
		/* the copy found in the target went meanwhile: create it after all */
		m->comparing = false;
		if (!mig_write(it, &ve)) {
			mig_fail(it, &ve, "copying to the target");
			item_finish(it);
		}
		return;
	}
	if (e) {
		mig_fail(it, e, "reading the target copy back");
		item_finish(it);
		return;
	}
	if (!vjob_start(it, NULL, m->tgt, m->spool, m->check, &m->vjob, &ve)) {
		mig_fail(it, &ve, "verifying");
		item_finish(it);
	}
}

/* Apply taken_verdict() to what the target holds (o; COMPARED as there). */
static void mig_verdict(struct item *it, const struct obj_info *o, int compared)
{
	struct mig *m = &it->mig;
	struct err e = {0};

	switch (taken_verdict(it, m->tgt, o, compared, m->spool >= 0, m->verify, &e)) {
	case TAKEN_COMPARE:
		m->comparing = true;
		if ((m->check = read_back(it, &m->back, mig_back_done, &e)) >= 0)
			return;
		break;
	case TAKEN_KEEP:
		m->put.info = *o;
		mig_copied(it);
		item_finish(it);
		return;
	case TAKEN_REPLACE:
		m->replace = true;
		snprintf(m->known.if_tag, sizeof(m->known.if_tag), "%s", o->tag);
		if (mig_write(it, &e))
			return;
		break;
	case TAKEN_LEAVE:
		break;
	}
	mig_fail(it, &e, "copying to the target");
	item_finish(it);
}

/* the target's copy, looked at after the copy found the key taken */
static void mig_target_looked(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct err pe = {0};

	op->busy = false;
	op->req = NULL;
	if (e && e->code == ERR_NOTFOUND) { /* gone meanwhile: create it after all */
		if (!mig_write(it, &pe)) {
			mig_fail(it, &pe, "copying to the target");
			item_finish(it);
		}
		return;
	}
	if (e) {
		mig_fail(it, e, "looking at the target's copy");
		item_finish(it);
		return;
	}
	mig_verdict(it, &op->info, -1);
}

/* The copy found the target's key taken: look at what is there. */
static void mig_target_taken(struct item *it)
{
	struct mig *m = &it->mig;
	struct err e = {0};

	m->taken = true;
	m->back = (struct op){.it = it, .store = m->tgt};
	if (!look_taken(it, &m->back, mig_target_looked, &e)) {
		mig_fail(it, &e, "looking at the target's copy");
		item_finish(it);
	}
}

static void mig_put_done(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct mig *m = &it->mig;
	struct err ve = {0};

	op_unpark(op);
	op->busy = false;
	op->req = NULL;
	if (e && e->code == ERR_EXISTS && !m->taken) {
		mig_target_taken(it);
		return;
	}
	if (e) {
		mig_fail(it, e, "copying to the target");
		item_finish(it);
		return;
	}
	if (op->info.size != it->got.size) {
		err_set(&ve, ERR_INTEGRITY, "store \"%s\" holds %llu bytes, not %llu", m->target,
			(unsigned long long)op->info.size, (unsigned long long)it->got.size);
		mig_fail(it, &ve, "verifying");
		op_torn(op);
		item_finish(it);
		return;
	}
	if (!it->got.has_md5 && op->info.has_md5) {
		it->got.has_md5 = true;
		memcpy(it->got.md5, op->info.md5, 16);
	}
	if (m->direct && source_changed(it, m->spool, &ve)) {
		mig_fail(it, &ve, "copying"); /* the copy may mix two versions */
		op_torn(op);
		item_finish(it);
		return;
	}
	if (!m->verify) {
		mig_copied(it);
		item_finish(it);
		return;
	}
	/* verify: read the target's copy back and compare the content */
	if (m->check >= 0)
		close(m->check); /* what the key held before (mig_target_looked) */
	m->back = (struct op){.it = it, .store = m->tgt};
	if ((m->check = read_back(it, &m->back, mig_back_done, &ve)) < 0) {
		mig_fail(it, &ve, "reading the target copy back");
		item_finish(it);
	}
}

/* A home copy (the store the application writes to) written more than a
 * second after the catalog's record of it (the last put(), or the move that
 * made it the home; the second is the application's to write the file after
 * its put() began), moments ago (put_wait_s()): the application's put() of those bytes has most
 * likely not committed yet.
 * Moving them now would record them under the old version and delete the
 * source, and the put() that follows would name a file that is gone.  So
 * wait for it (not spending attempts) -- for SYNC_PUT_GRACE_S at most: a
 * file written long after its put() (restored, touched) moves as it is. */
static bool written_after_put(const struct item *it, const struct obj_info *o, struct err *e)
{
	double wait = put_wait_s(it, o, 1.0);

	if (wait <= 0)
		return false;
	err_set(e, ERR_TRANSIENT,
		"the source was written %.1f s after the catalog's record of \"%s\" (its put()), "
		"%.0f s ago: waiting for the application's put() of it (at most %.0f s more)",
		written_from(o) - it->changed_at, it->key, SYNC_PUT_GRACE_S - wait, wait);
	return true;
}

/* Write the copy to the target (m->known describes it).  The catalog
 * does not list the target (start_migrate), so its copy is only created:
 * a key taken already may be the application's newer version, written
 * there moments ago, that no copy in flight may replace.  See
 * mig_target_taken(). */
static bool mig_write(struct item *it, struct err *pe)
{
	struct mig *m = &it->mig;
	struct store *tgt = it->g->stores[m->tgt];
	struct buf key = BUF_INIT;
	bool ok;

	m->known.if_absent = !m->replace;
	if (!m->replace)
		m->known.if_tag[0] = '\0';
	m->put = (struct op){.it = it, .store = m->tgt};
	if (m->server_copy) {
		struct buf skey = BUF_INIT;

		/* the source as looked at (its ETag) is what gets copied, or nothing */
		ok =
		    store_key(it->g->stores[m->src], it->key, &it->attrs, &skey, pe) &&
		    store_key(tgt, it->key, &it->attrs, &key, pe) &&
		    tgt->ops->copy(tgt, it->g->stores[m->src], buf_str(&skey), buf_str(&key),
				   &m->known, &m->put.info, mig_put_done, &m->put, &m->put.req, pe);
		buf_free(&skey);
	} else {
		ok = store_key(tgt, it->key, &it->attrs, &key, pe) &&
		     (m->adopt ? tgt->ops->adopt : tgt->ops->put)(
			 tgt, buf_str(&key), m->spool, it->got.size, &m->known, &m->put.info,
			 mig_put_done, &m->put, &m->put.req, pe);
	}
	buf_free(&key);
	if (ok)
		m->put.busy = true;
	return ok;
}

/* The target's copy, looked at because the source is gone
 * (mig_source_moved()): the copy the previous attempt wrote is the image. */
static void mig_moved_looked(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct mig *m = &it->mig;
	struct err pe = {0};

	op->busy = false;
	op->req = NULL;
	/* The copy moved was written before the catalog last recorded that
	 * version (stale_until: the copy's own result), a second's grace for
	 * a whole-second time.  Not bound by this version's record, as
	 * superseded() is: the put()'s transaction may have begun before the
	 * copy landed. */
	if (e || op->info.mtime <= 0 || it->stale_until <= 0 ||
	    written_from(&op->info) > it->stale_until + 1.0) {
		err_set(
		    &pe, ERR_NOTFOUND,
		    "the source copy is gone; this migration moved it to store \"%s\" as the "
		    "image was written again, but %s",
		    m->target,
		    e ? "the copy there is gone too"
		      : "the copy there was written after the catalog's record of the one moved");
		mig_fail(it, &pe, "reading the source");
		item_finish(it);
		return;
	}
	log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key, .migration = m->id},
		"migration %lld: \"%s\" was moved to %s while the application's put() of it "
		"was under way; the source copy is gone, so what that put() named was the copy "
		"moved (%llu bytes): it is the image, in %s",
		m->id, it->key, m->target, (unsigned long long)op->info.size, m->target);
	it->got = op->info;
	m->put.info = op->info;
	m->put.stored = true;
	m->outcome = "done";
	m->bytes = op->info.size;
	m->home = m->target;
	m->unstore = m->source;
	item_finish(it);
}

/* The source of a move's copy is gone (E).  When the previous attempt
 * deleted it (work.source_tag kept at the restart: see complete()) just as
 * the application's put() of the key began, that put() named bytes written
 * before the delete -- which takes the file only while it holds the bytes
 * copied: a write after it makes a new file -- so the copy in the target
 * (the version the put superseded there: stale) is the image.  Looks at
 * it (mig_moved_looked()); false: not that case. */
static bool mig_source_moved(struct item *it, const struct err *e)
{
	struct mig *m = &it->mig;
	struct err pe = {0};

	if (e->code != ERR_NOTFOUND || !m->move || m->src_tag == NULL || !m->src_tag[0] ||
	    strcmp(m->step, "copy") != 0 || !listed(it->stale, m->target) || it->origin == NULL ||
	    strcmp(it->origin, m->source) != 0)
		return false;
	m->back = (struct op){.it = it, .store = m->tgt};
	return look_taken(it, &m->back, mig_moved_looked, &pe);
}

static void mig_get_done(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct mig *m = &it->mig;
	struct err pe = {0};

	op->busy = false;
	op->req = NULL;
	if (e && mig_source_moved(it, e))
		return;
	if (e) {
		mig_fail(it, e, "reading the source");
		item_finish(it);
		return;
	}
	it->got = op->info;
	if (written_after_put(it, &op->info, &pe)) {
		mig_fail(it, &pe, "reading the source");
		item_finish(it);
		return;
	}
	m->known = op->info;
	snprintf(m->known.content_type, sizeof(m->known.content_type), "%s",
		 it->attrs.mimetype ? it->attrs.mimetype : "");
	if (!mig_write(it, &pe)) {
		mig_fail(it, &pe, "copying to the target");
		item_finish(it);
	}
}

/* dry run: the size of what would move */
static void mig_measured(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;

	op->busy = false;
	op->req = NULL;
	if (e)
		mig_fail(it, e, "looking at the source");
	else {
		it->mig.outcome = "done";
		it->mig.bytes = op->info.size;
	}
	item_finish(it);
}

static void mig_deleted(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;

	op->busy = false;
	op->req = NULL;
	if (e)
		mig_fail(it, e, "deleting the source copy");
	else {
		it->mig.outcome = "done";
		it->mig.unstore = it->mig.source;
	}
	item_finish(it);
}

/* the source copy, looked at before deleting: still the copied version? */
static void mig_looked(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct mig *m = &it->mig;
	struct buf key = BUF_INIT;
	struct err de = {0};

	op->busy = false;
	op->req = NULL;
	m->bytes = it->size;
	if (e && e->code == ERR_NOTFOUND) {
		m->outcome = "done"; /* gone already */
		m->unstore = m->source;
	} else if (e) {
		mig_fail(it, e, "looking at the source copy");
	} else if (it->size_known && op->info.size != it->size) {
		err_set(&de, ERR_INVALID,
			"the source copy is %llu bytes, the image %llu: it changed behind the "
			"catalog's back; not deleting it",
			(unsigned long long)op->info.size, (unsigned long long)it->size);
		mig_fail(it, &de, "deleting the source copy");
	} else if (m->src_tag && op->info.tag[0] && strcmp(m->src_tag, op->info.tag) != 0) {
		/* Written again since the copy (in place, its put() not committed
		 * yet?): those bytes are nowhere else.  Once the catalog records the
		 * new version the key starts over from the copy. */
		err_set(&de, ERR_INTEGRITY,
			"the source copy changed since it was copied (written again?); not "
			"deleting it");
		mig_fail(it, &de, "deleting the source copy");
	} else {
		m->bytes = op->info.size;
		m->del = (struct op){.it = it, .store = m->src};
		if (!store_key(it->g->stores[m->src], it->key, &it->attrs, &key, &de) ||
		    !it->g->stores[m->src]->ops->del(it->g->stores[m->src], buf_str(&key),
						     mig_deleted, &m->del, &m->del.req, &de))
			mig_fail(it, &de, "deleting the source copy");
		else
			m->del.busy = true;
	}
	buf_free(&key);
	if (!m->del.busy)
		item_finish(it);
}

/* Look at the migration's source (DONE goes on). */
static void mig_stat_source(struct item *it, store_done_fn done)
{
	struct mig *m = &it->mig;
	struct store *src = it->g->stores[m->src];
	struct buf key = BUF_INIT;
	struct err e = {0};
	bool ok;

	m->get = (struct op){.it = it, .store = m->src};
	ok = store_key(src, it->key, &it->attrs, &key, &e) &&
	     src->ops->stat(src, buf_str(&key), &m->get.info, done, &m->get, &m->get.req, &e);
	buf_free(&key);
	if (!ok) {
		mig_fail(it, &e, "looking at the source");
		item_finish(it);
	} else
		m->get.busy = true;
}

static void mig_start_copy(struct item *it);

/* A move whose target holds the image's version already (a mirror copied
 * it) has the source copy looked at: one written after the catalog's
 * record is not what the target holds.  Recent, its put() is waited for;
 * older (written behind the catalog's back), it is copied over the
 * target's as any source is.  Otherwise its tag is what the delete step
 * deletes only if still there, as after a copy. */
static void mig_held_looked(void *arg, const struct err *e)
{
	struct op *op = arg;
	struct item *it = op->it;
	struct mig *m = &it->mig;
	struct err pe = {0};
	const struct obj_info *o = &op->info;
	double written = written_from(o);

	op->busy = false;
	op->req = NULL;
	if (e && e->code == ERR_NOTFOUND) {
		m->outcome = "done"; /* gone already */
		m->bytes = it->size;
		m->unstore = m->source;
	} else if (e) {
		mig_fail(it, e, "looking at the source");
	} else if (written_after_put(it, o, &pe)) {
		mig_fail(it, &pe, "looking at the source");
	} else if (it->changed_at > 0 && written > it->changed_at + 1.0 &&
		   written <= wall_s() + 2.0) {
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key, .migration = m->id},
			"migration %lld: the source copy of \"%s\" was written %.0f s after the "
			"catalog's record of the version store \"%s\" holds: copying it there",
			m->id, it->key, written - it->changed_at, m->target);
		m->replace = true; /* over the catalog's version */
		mig_start_copy(it);
		return;
	} else {
		it->got = *o;
		mig_copied(it);
		m->put.stored = false;
	}
	item_finish(it);
}

/* Start the item's migration duty: copy (and verify), or delete the source. */
static void start_migrate(struct item *it)
{
	struct mig *m = &it->mig;
	struct buf key = BUF_INIT;
	struct err e = {0};
	bool in_src, in_tgt, ok;

	m->started = true;
	if (it->missing || it->deleted) {
		m->outcome = "skipped";
		item_finish(it);
		return;
	}
	m->src = store_index(it->g, m->source);
	m->tgt = store_index(it->g, m->target);
	if (m->src < 0 || m->tgt < 0) {
		err_set(&e, ERR_CONFIG, "store \"%s\" is not in this daemon's configuration",
			m->src < 0 ? m->source : m->target);
		mig_fail(it, &e, "starting");
		item_finish(it);
		return;
	}
	in_src = strcmp(it->origin, m->source) == 0 || holds(it, m->source);
	in_tgt = strcmp(it->origin, m->target) == 0 || holds(it, m->target);
	if (strcmp(m->step, "delete-source") == 0 && in_tgt) {
		if (!in_src) {
			m->outcome = "done";
			m->bytes = it->size;
			item_finish(it);
			return;
		}
		struct store *src = it->g->stores[m->src];

		if (src->ops->del_if && m->src_tag && m->src_tag[0]) {
			/* one step: deleted only if still what was copied */
			m->bytes = it->size;
			m->del = (struct op){.it = it, .store = m->src};
			ok = store_key(src, it->key, &it->attrs, &key, &e) &&
			     src->ops->del_if(src, buf_str(&key), m->src_tag, mig_deleted, &m->del,
					      &m->del.req, &e);
			buf_free(&key);
			if (!ok) {
				mig_fail(it, &e, "deleting the source copy");
				item_finish(it);
			} else
				m->del.busy = true;
			return;
		}
		m->get = (struct op){.it = it, .store = m->src};
		ok = store_key(src, it->key, &it->attrs, &key, &e) &&
		     src->ops->stat(src, buf_str(&key), &m->get.info, mig_looked, &m->get,
				    &m->get.req, &e);
		buf_free(&key);
		if (!ok) {
			mig_fail(it, &e, "looking at the source copy");
			item_finish(it);
		} else
			m->get.busy = true;
		return;
	}
	if (!in_src) {
		/* moved already (an earlier run), or never in the source */
		m->outcome = in_tgt ? "done" : "skipped";
		m->bytes = in_tgt ? it->size : 0;
		item_finish(it);
		return;
	}
	if (m->dry_run) {
		mig_stat_source(it, mig_measured);
		return;
	}
	if (in_tgt && m->move) {
		/* the target holds this version already (a mirror, or an earlier
		 * run): the source is looked at before it goes (mig_held_looked) */
		mig_stat_source(it, mig_held_looked);
		return;
	}
	if (in_tgt) {
		/* a copy: the target holds this version already */
		it->got.size = it->size;
		mig_copied(it);
		m->put.stored = false;
		item_finish(it);
		return;
	}
	mig_start_copy(it);
}

/* Copy the source to the target (mig_get_done() goes on). */
static void mig_start_copy(struct item *it)
{
	struct sync *s = it->sy;
	struct mig *m = &it->mig;
	struct buf key = BUF_INIT;
	struct err e = {0};
	bool ok;

	/* Between buckets of one S3 server the server copies: a look at the
	 * source (its size and ETag) and a copy request, no bytes through here.
	 * With verify the source is read all the same, to compare with the
	 * target's copy read back. */
	m->server_copy = store_can_copy(it->g->stores[m->tgt], it->g->stores[m->src]);
	log_msg(LOG_DEBUG, &(struct log_fields){.key = it->key, .migration = m->id},
		"migration %lld: copying \"%s\" from %s to %s%s", m->id, it->key, m->source,
		m->target, m->server_copy ? " (server-side)" : "");
	m->get = (struct op){.it = it, .store = m->src};
	if (m->server_copy && !m->verify) {
		mig_stat_source(it, mig_get_done);
		return;
	}
	if (it->g->stores[m->src]->ops->open_fd) {
		struct store *src = it->g->stores[m->src];

		/* a local file: the target reads it directly, once */
		m->direct = true;
		ok = store_key(src, it->key, &it->attrs, &key, &e) &&
		     src->ops->open_fd(src, buf_str(&key), &m->spool, &m->get.info, mig_get_done,
				       &m->get, &m->get.req, &e);
		buf_free(&key);
		if (!ok) {
			mig_fail(it, &e, "reading the source");
			item_finish(it);
		} else
			m->get.busy = true;
		return;
	}
	/* the target may lend its own file (not for a server-side copy, which
	 * reads the source only to verify) */
	m->spool = spool_open(s, m->server_copy ? NULL : it->g->stores[m->tgt], &m->adopt, &e);
	if (m->spool < 0) {
		mig_fail(it, &e, "copying");
		item_finish(it);
		return;
	}
	ok = store_key(it->g->stores[m->src], it->key, &it->attrs, &key, &e) &&
	     it->g->stores[m->src]->ops->get(it->g->stores[m->src], buf_str(&key), m->spool,
					     get_flags(it->g, m->adopt ? m->tgt : -1), &m->get.info,
					     mig_get_done, &m->get, &m->get.req, &e);
	buf_free(&key);
	if (!ok) {
		mig_fail(it, &e, "reading the source");
		item_finish(it);
	} else
		m->get.busy = true;
}

/* --- claiming --- */

static char *col(PGresult *r, int row, int c)
{
	return PQgetisnull(r, row, c) ? NULL : strdup(PQgetvalue(r, row, c));
}

/* The items of a claim's answer (rows without a key are an exchange's
 * other answers). */
static void claims_back(struct sync *s, PGresult *res, const char *error)
{
	int n = 0;

	s->claiming = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res) {
			log_error("claiming work failed: %s", error ? error : "unexpected answer");
			/* a lock or statement timeout: again in a second, not at the
			 * next poll (the connection's return claims after a loss) */
			if (!s->stopping && (!loop_timer_armed(&s->poll) ||
					     s->poll.due_ms > loop_clock_ms() + 1000))
				loop_timer_set(s->loop, &s->poll, 1000);
		}
		return;
	}
	for (int i = 0; i < PQntuples(res); i++)
		n += !PQgetisnull(res, i, 0);
	if (s->stopping) {
		/* stop_daemon releases their leases; nothing has been done yet */
		s->claim_again = false;
		maybe_stopped(s);
		return;
	}
	s->in_claimed = true; /* items finishing at once must not each claim */
	for (int i = 0; i < PQntuples(res); i++) {
		struct item *it;

		if (PQgetisnull(res, i, 0))
			continue;
		it = calloc(1, sizeof(*it));

		if (it == NULL ||
		    (it->ops = calloc(s->g->conf->nstores, sizeof(*it->ops))) == NULL) {
			free(it);
			log_error("out of memory: an item is left to its lease");
			continue;
		}
		it->sy = s;
		it->g = s->g;
		s->g->refs++;
		it->spool = -1;
		it->adopt = -1;
		it->src = -1;
		it->t0 = loop_now(s->loop);
		/* the server's lease started no later than our sending the claim */
		it->lease_deadline = s->claim_sent_at + SYNC_LEASE_MS;
		it->key = col(res, i, 0);
		it->remove = strcmp(PQgetvalue(res, i, 1), "remove") == 0;
		it->gen = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		it->attempts = atoi(PQgetvalue(res, i, 3));
		it->token = strtoll(PQgetvalue(res, i, 4), NULL, 10);
		it->origin = col(res, i, 5);
		it->missing = it->origin == NULL;
		it->mimetype = col(res, i, 6);
		for (int a = 0; a < 5; a++)
			it->attr[a] = col(res, i, 7 + a);
		it->attrs = (struct image_attrs){it->attr[0], it->attr[1], it->attr[2], it->attr[3],
						 it->attr[4]};
		it->version = strtoll(PQgetvalue(res, i, 12), NULL, 10);
		it->stores = col(res, i, 13);
		it->stale = col(res, i, 26);
		it->stale_until =
		    PQgetisnull(res, i, 27) ? 0 : strtod(PQgetvalue(res, i, 27), NULL);
		if (it->stale && !it->stale[0]) {
			free(it->stale);
			it->stale = NULL;
		}
		it->strays = col(res, i, 28);
		if (!parse_strays(it)) {
			item_free(it);
			log_error("out of memory: an item is left to its lease");
			continue;
		}
		it->deleted = PQgetvalue(res, i, 14)[0] == 't';
		it->size_known = !PQgetisnull(res, i, 15);
		it->size = it->size_known ? strtoull(PQgetvalue(res, i, 15), NULL, 10) : 0;
		it->changed_at = PQgetisnull(res, i, 16) ? 0 : strtod(PQgetvalue(res, i, 16), NULL);
		it->claimed_at = col(res, i, 17);
		it->mig.spool = it->mig.check = -1;
		if (!PQgetisnull(res, i, 18)) {
			it->mig.id = strtoll(PQgetvalue(res, i, 18), NULL, 10);
			it->mig.step = col(res, i, 19);
			it->mig.source = col(res, i, 20);
			it->mig.target = col(res, i, 21);
			it->mig.move = strcmp(PQgetvalue(res, i, 22), "move") == 0;
			it->mig.dry_run = PQgetvalue(res, i, 23)[0] == 't';
			it->mig.verify = PQgetvalue(res, i, 24)[0] == 't';
			it->mig.src_tag = col(res, i, 25);
			if (!it->mig.step || !it->mig.source || !it->mig.target)
				it->mig.id = 0;
		}
		for (size_t k = 0; k < s->g->conf->nstores; k++)
			it->ops[k] = (struct op){.it = it, .store = (int)k};
		if (it->key == NULL || it->claimed_at == NULL) {
			item_free(it);
			continue;
		}
		it->next = s->items;
		if (s->items)
			s->items->pprev = &it->next;
		s->items = it;
		it->pprev = &s->items;
		s->nitems++;
		if (it->remove)
			start_remove(it);
		else if (strcmp(PQgetvalue(res, i, 1), "migrate") == 0)
			item_done(it); /* its migration duty (none if it ended meanwhile) */
		else
			start_put(it);
	}
	s->in_claimed = false;
	/* all we asked for: more may be waiting */
	if (n >= s->claim_asked || s->claim_again)
		claim(s);
}

static void claimed(void *arg, PGresult *res, const char *error)
{
	claims_back(arg, res, error);
}

/* ROW, COL: the answer of advance_migrations() */
static void advance_back(struct sync *s, PGresult *res, int row, int col, const char *error)
{
	s->advancing = false;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK && row >= 0) {
		/* while migrations run, every claim hands out their next keys */
		if (atoll(PQgetvalue(res, row, col)) > 0)
			s->advance_due = true;
	} else if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
		s->advance_due = true;
	} else if (res) {
		log_error("advancing migrations failed: %s", error ? error : "unexpected answer");
		s->advance_due = true;
	} else
		s->advance_due = true; /* the connection's return claims again */
}

static void advanced(void *arg, PGresult *res, const char *error)
{
	advance_back(arg, res, 0, 0, error);
}

/* Whether OP keeps the item from being parked: busy and not parked, or
 * comparing on the pool; *parked counts the parked ones. */
static bool op_active(const struct op *op, int *parked)
{
	if (op->vjob || (op->busy && !op->parked))
		return true;
	*parked += op->busy;
	return false;
}

/* Whether all the item is waiting for is puts parked (sync_put_parked). */
static bool item_parked(const struct item *it)
{
	int parked = 0;

	if (it->mig.vjob || op_active(&it->mig.get, &parked) || op_active(&it->mig.put, &parked) ||
	    op_active(&it->mig.back, &parked) || op_active(&it->mig.del, &parked))
		return false;
	for (size_t i = 0; i < it->g->conf->nstores; i++)
		if (op_active(&it->ops[i], &parked) ||
		    (it->sops && op_active(&it->sops[i], &parked)))
			return false;
	return parked > 0;
}

/* Whether anything but its result follows OP's put in its item: a
 * migration's read-back (verify), its duty after a mirror's put, copies of
 * an earlier version to delete.  Such a put keeps its slot: what follows
 * is a transfer again. */
static bool more_follows(const struct item *it, const struct op *op)
{
	if (op == &it->mig.put)
		return it->mig.verify;
	return it->mig.id != 0 || (it->stale && it->stale[0]) || (it->strays && it->strays[0]);
}

/* The store of the put OP (the done arg of every put: see store_env)
 * needs nothing more of it but a sync it shares with other puts: once its
 * item waits for nothing else, it leaves its transfer slot to a new claim. */
void sync_put_parked(void *arg)
{
	struct op *op = arg;
	struct item *it = op->it;

	if (!op->busy || op->parked || more_follows(it, op))
		return;
	op->parked = true;
	it->nparked++;
	it->sy->nparked_ops++;
	it->sy->parked_at = 0; /* count again */
	if (item_parked(it))
		claim(it->sy);
}

/* Items whose only work in flight is parked puts: counted again at most
 * once per millisecond (a walk of the items in hand), and only while some
 * put is parked at all. */
static int parked_items(struct sync *s)
{
	uint64_t now = loop_now(s->loop);

	if (s->nparked_ops == 0)
		return 0;
	if (s->parked_at != now) {
		s->parked_items = 0;
		for (const struct item *it = s->items; it; it = it->next)
			s->parked_items += it->nparked > 0 && item_parked(it);
		s->parked_at = now;
	}
	return s->parked_items;
}

/* How many items a claim would ask for now; 0: none is worth a claim.
 * Parked items (item_parked()) hold no transfer slot, up to as many
 * again as transfer.concurrency: they still hold descriptors. */
static int claim_room(struct sync *s)
{
	int conc = s->g->conf->concurrency, parked = parked_items(s), free_slots;

	free_slots = conc - (s->nitems - parked);
	if (free_slots > 2 * conc - s->nitems)
		free_slots = 2 * conc - s->nitems;
	if (s->stopping || s->daemon == 0 || !pg_ready(s->pg) || free_slots <= 0)
		return 0;
	if (s->nitems > parked && free_slots < conc / SYNC_CLAIM_SHARE)
		return 0; /* the items in flight claim again as they finish */
	return free_slots < SYNC_CLAIM_MAX ? free_slots : SYNC_CLAIM_MAX;
}

/* Work may have become ready since the claim in flight, if any, looked (a
 * notification; the poll, for retries falling due and expired leases):
 * claim, or have that claim's answer claim again. */
static void claim_fresh(struct sync *s)
{
	if (s->claiming && claim_room(s) > 0)
		s->claim_again = true;
	claim(s);
}

static void claim(struct sync *s)
{
	char n[16];
	const char *p[3] = {s->daemon_s, n, SYNC_LEASE};
	int room = claim_room(s);

	if (room == 0)
		return;
	/* the claim in flight asked for these slots already (it may have just
	 * left with the results that freed them) */
	if (s->claiming && room <= s->claim_asked)
		return;
	if (s->claiming || s->in_claimed || s->completing) {
		/* a completion in flight: its answer claims (with its results) */
		s->claim_again = true;
		return;
	}
	if (s->nbatch > 0) {
		send_results(s, true); /* results waiting: claim with them */
		if (s->claiming)
			return;
	}
	s->claim_asked = room;
	snprintf(n, sizeof(n), "%d", s->claim_asked);
	/* running migrations first hand their next keys to the queue (the
	 * cursor is their checkpoint); only while some run, or when one may
	 * have started (a notification, the poll); one query at a time */
	if (s->advance_due && !s->advancing) {
		s->advance_due = false;
		char win[16];
		const char *ap[1] = {win};

		snprintf(win, sizeof(win), "%d", 2 * s->g->conf->concurrency + 64);
		s->advancing = pg_query(s->pg, SQL_ADVANCE, 1, ap, advanced, s);
	}
	log_debug("claiming %d (%d in hand, %d of them parked)", room, s->nitems, parked_items(s));
	if (!pg_query(s->pg, SQL_CLAIM, 3, p, claimed, s)) {
		log_error("out of memory queueing a claim");
		return;
	}
	s->claim_sent_at = loop_now(s->loop);
	s->claiming = true;
	s->claim_again = false;
}

/* --- results --- */

/* A batch that did not make it goes back in front of the pending one. */
static void requeue_sent(struct sync *s)
{
	struct buf merged = BUF_INIT;

	if (s->nsent == 0)
		return;
	buf_append(&merged, buf_str(&s->sent), s->sent.len);
	if (s->nbatch) {
		buf_putc(&merged, ',');
		buf_append(&merged, buf_str(&s->batch), s->batch.len);
	}
	buf_free(&s->batch);
	s->batch = merged;
	s->nbatch += s->nsent;
	if (s->sent_delay > 0 && (s->batch_delay == 0 || s->sent_delay < s->batch_delay))
		s->batch_delay = s->sent_delay;
	s->sent_delay = 0;
	buf_reset(&s->sent);
	s->nsent = 0;
}

/* The answer to a batch of results; COL holds the results to send again.
 * WITH_CLAIM: the batch went with a claim, which saw the rows it made ready. */
static void results_back(struct sync *s, PGresult *res, int col, bool with_claim, const char *error)
{
	int deferred = 0;

	s->completing = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res) {
			log_error("writing %d result(s) back failed: %s; trying again", s->nsent,
				  error ? error : "unexpected answer");
			loop_timer_set(s->loop, &s->flush_retry, 1000);
		}
		requeue_sent(s); /* the reconnect (or the timer) sends it again */
		return;
	}
	if (s->sent_delay > 0 && !s->stopping) {
		/* look again when the soonest retry falls due on the server */
		uint64_t ms = (uint64_t)(s->sent_delay * 1000) + 100;

		if (!loop_timer_armed(&s->poll) || s->poll.due_ms > loop_clock_ms() + ms)
			loop_timer_set(s->loop, &s->poll, ms);
	}
	buf_reset(&s->sent);
	s->nsent = 0;
	s->sent_delay = 0;
	/* results that met a row the application holds: again, a little later */
	for (int i = 0; i < PQntuples(res); i++) {
		if (PQgetisnull(res, i, col))
			continue;
		if (s->nbatch)
			buf_putc(&s->batch, ',');
		buf_puts(&s->batch, PQgetvalue(res, i, col));
		s->nbatch++;
		deferred++;
	}
	if (deferred > 0 && s->nbatch) {
		log_debug("%d result(s) met rows the application holds; sending them again",
			  deferred);
		loop_timer_set(s->loop, &s->flush_retry, 200);
	} else
		flush_results(s);
	/* rows released as "written again" are ready now; after a claim in the
	 * same transaction, only if it asked for too few (claims_back) or a
	 * notification came meanwhile: at a steady trickle of puts, each
	 * result would otherwise cost an empty claim */
	if (!with_claim || s->claim_again)
		claim(s);
	maybe_stopped(s);
}

static void completed(void *arg, PGresult *res, const char *error)
{
	results_back(arg, res, 0, false, error);
}

/* An exchange: the claimed items first (so that the claim the results'
 * answer may start counts them), then the rest. */
static void exchanged(void *arg, PGresult *res, const char *error)
{
	struct sync *s = arg;
	bool adv = s->exchange_adv;
	int running = -1;

	s->exchange_adv = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		/* one failure, said once: the results' path retries */
		s->claiming = false;
		if (adv) {
			s->advancing = false;
			s->advance_due = true;
		}
		results_back(s, res, SQL_EXCHANGE_DEFERRED, false, error);
		return;
	}
	claims_back(s, res, error);
	if (adv) {
		for (int i = 0; i < PQntuples(res) && running < 0; i++)
			if (!PQgetisnull(res, i, SQL_EXCHANGE_RUNNING))
				running = i;
		advance_back(s, res, running, SQL_EXCHANGE_RUNNING, error);
	}
	results_back(s, res, SQL_EXCHANGE_DEFERRED, true, error);
}

static void on_flush_retry(void *arg)
{
	flush_results(arg);
}

static void flush_results(struct sync *s)
{
	send_results(s, false);
}

/* The batch to imgsync.complete(), or with a claim to imgsync.exchange()
 * when slots are free; unless NOW, a small batch waits a little for more
 * while items are in flight. */
static void send_results(struct sync *s, bool now)
{
	struct buf arr = BUF_INIT;
	struct buf tmp;
	char max[16], n[16], win[16];
	const char *p[6];
	int room;

	if (s->completing || s->nbatch == 0 || !pg_ready(s->pg))
		return;
	if (!now && s->nitems > 0 && !s->stopping &&
	    s->nbatch < s->g->conf->concurrency / SYNC_BATCH_SHARE) {
		uint64_t waited = loop_now(s->loop) - s->batch_since;

		if (waited < SYNC_BATCH_WAIT_MS) {
			if (!loop_timer_armed(&s->batch_wait))
				loop_timer_set(s->loop, &s->batch_wait,
					       SYNC_BATCH_WAIT_MS - waited);
			return;
		}
	}
	loop_timer_cancel(s->loop, &s->batch_wait);
	tmp = s->sent;
	s->sent = s->batch;
	s->batch = tmp;
	buf_reset(&s->batch);
	s->nsent = s->nbatch;
	s->nbatch = 0;
	s->sent_delay = s->batch_delay;
	s->batch_delay = 0;
	buf_putc(&arr, '[');
	buf_append(&arr, buf_str(&s->sent), s->sent.len);
	buf_putc(&arr, ']');
	snprintf(max, sizeof(max), "%d", s->g->conf->max_attempts);
	p[0] = s->daemon_s;
	p[1] = buf_str(&arr);
	p[2] = max;
	room = s->claiming || s->in_claimed ? 0 : claim_room(s);
	if (room > 0) {
		/* with a claim (and the migrations' advance) in the same transaction */
		snprintf(n, sizeof(n), "%d", room);
		snprintf(win, sizeof(win), "%d",
			 s->advance_due && !s->advancing ? 2 * s->g->conf->concurrency + 64 : 0);
		p[3] = n;
		p[4] = SYNC_LEASE;
		p[5] = win;
		log_debug("claiming %d with %d results (%d in hand, %d of them parked)", room,
			  s->nsent, s->nitems, parked_items(s));
		if (buf_ok(&arr, NULL) && pg_query(s->pg, SQL_EXCHANGE, 6, p, exchanged, s)) {
			s->completing = s->claiming = true;
			s->claim_asked = room;
			s->claim_sent_at = loop_now(s->loop);
			s->claim_again = false;
			if (strcmp(win, "0") != 0) {
				s->advance_due = false;
				s->advancing = s->exchange_adv = true;
			}
		} else {
			log_error("out of memory writing results back");
			requeue_sent(s);
		}
	} else if (!buf_ok(&arr, NULL) || !pg_query(s->pg, SQL_COMPLETE, 3, p, completed, s)) {
		log_error("out of memory writing results back");
		requeue_sent(s);
	} else
		s->completing = true;
	buf_free(&arr);
}

/* --- heartbeat and leases --- */

static void abandon(struct item *it, const char *why)
{
	log_msg(LOG_WARNING, &(struct log_fields){.key = it->key}, "abandoning \"%s\": %s", it->key,
		why);
	item_cancel_ops(it);
	item_free(it);
}

static void heartbeat_done(void *arg, PGresult *res, const char *error)
{
	struct sync *s = arg;
	int n;
	bool lost = false;

	s->heartbeating = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res)
			log_error("heartbeat failed: %s", error ? error : "unexpected answer");
		return;
	}
	/* Items the heartbeat named and missing from its answer lost their
	 * lease: another daemon may hold the key now.  The others were
	 * claimed after it left, even in the same millisecond: their claims'
	 * answers came later, so they are not in its tokens. */
	n = PQntuples(res);
	for (struct item *it = s->items, *next; it; it = next) {
		int row = -1;

		next = it->next;
		if (it->hb_seq != s->hb_seq)
			continue;
		for (int i = 0; i < n && row < 0; i++)
			if (strtoll(PQgetvalue(res, i, 0), NULL, 10) == it->token)
				row = i;
		/* held but not renewed: the application holds its row; the lease
		 * runs on, and the deadline with it */
		if (row < 0) {
			abandon(it, "its lease was lost (expired and taken, or released)");
			lost = true;
		} else if (PQgetvalue(res, row, 1)[0] == 't')
			it->lease_deadline = s->hb_sent_at + SYNC_LEASE_MS;
	}
	if (lost) {
		claim(s); /* their slots are free */
		maybe_stopped(s);
	}
}

static void send_heartbeat(struct sync *s, uint64_t now)
{
	struct buf keys = BUF_INIT, tokens = BUF_INIT;
	char in_flight[16], objects[24], bytes[24];
	const char *p[8];

	lease_arrays(&keys, &tokens, s->items, ++s->hb_seq);
	snprintf(in_flight, sizeof(in_flight), "%d", s->nitems);
	snprintf(objects, sizeof(objects), "%llu", (unsigned long long)s->objects_done);
	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)s->bytes_done);
	p[0] = s->daemon_s;
	p[1] = buf_str(&keys);
	p[2] = buf_str(&tokens);
	p[3] = s->stopping ? "stopping" : "running";
	p[4] = in_flight;
	p[5] = objects;
	p[6] = bytes;
	p[7] = SYNC_LEASE;
	if (buf_ok(&keys, NULL) && buf_ok(&tokens, NULL) &&
	    pg_query(s->pg, SQL_HEARTBEAT, 8, p, heartbeat_done, s)) {
		s->heartbeating = true;
		s->hb_sent_at = now;
	}
	buf_free(&keys);
	buf_free(&tokens);
}

static void on_heartbeat(void *arg)
{
	struct sync *s = arg;
	uint64_t now = loop_now(s->loop);
	bool dropped = false;

	loop_timer_set(s->loop, &s->heartbeat, s->hb_ms);
	/* Drop what cannot be renewed before the next heartbeat: once a lease
	 * runs out another daemon may take the key. */
	for (struct item *it = s->items, *next; it; it = next) {
		next = it->next;
		if (now + (uint64_t)s->hb_ms + 5000 >= it->lease_deadline) {
			abandon(it, "its lease could not be renewed in time (database "
				    "unreachable)");
			dropped = true;
		}
	}
	if (s->daemon != 0 && pg_ready(s->pg) && !s->heartbeating)
		send_heartbeat(s, now);
	if (dropped)
		maybe_stopped(s); /* a stop waiting for them goes on */
}

static void on_poll(void *arg)
{
	struct sync *s = arg;

	loop_timer_set(s->loop, &s->poll, SYNC_POLL_MS);
	s->advance_due = true;
	claim_fresh(s);
}

/* --- stopping --- */

static void stop_done(void *arg, PGresult *res, const char *error)
{
	struct sync *s = arg;

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
		log_warn("could not release this daemon's leases: %s; they expire in %d s",
			 error ? error : "connection lost", SYNC_LEASE_MS / 1000);
	if (s->stopped)
		s->stopped(s->stopped_arg);
}

static void maybe_stopped(struct sync *s)
{
	const char *p[1] = {s->daemon_s};

	if (!s->stopping || s->stop_sent || s->nitems > 0)
		return;
	if (!s->deadline_passed && pg_ready(s->pg) && (s->nbatch > 0 || s->completing))
		return; /* results first, until the deadline */
	s->stop_sent = true;
	loop_timer_cancel(s->loop, &s->stop_timer);
	if (s->daemon == 0 || !pg_ready(s->pg) || !pg_query(s->pg, SQL_STOP, 1, p, stop_done, s)) {
		if (s->nbatch + s->nsent)
			log_warn("%d result(s) could not be written back; their items will be "
				 "done again",
				 s->nbatch + s->nsent);
		if (s->stopped)
			s->stopped(s->stopped_arg);
	}
}

static void on_stop_deadline(void *arg)
{
	struct sync *s = arg;

	for (struct item *it = s->items, *next; it; it = next) {
		next = it->next;
		log_msg(LOG_NOTICE, &(struct log_fields){.key = it->key},
			"abandoning \"%s\" to stop in time; it stays queued", it->key);
		item_cancel_ops(it);
		item_free(it);
	}
	/* No more waiting for the database: results not written are redone by
	 * whoever claims their items next. */
	s->deadline_passed = true;
	maybe_stopped(s);
}

void sync_stop(struct sync *s, uint64_t grace_ms, void (*done)(void *arg), void *arg)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->stopped = done;
	s->stopped_arg = arg;
	loop_timer_cancel(s->loop, &s->poll);
	loop_timer_set(s->loop, &s->stop_timer, grace_ms);
	if (s->nitems)
		log_info("stopping: waiting up to %llu ms for %d item(s) in flight",
			 (unsigned long long)grace_ms, s->nitems);
	maybe_stopped(s);
}

/* --- the rest --- */

void sync_set_daemon(struct sync *s, long long id)
{
	s->daemon = id;
	snprintf(s->daemon_s, sizeof(s->daemon_s), "%lld", id);
}

void sync_connected(struct sync *s)
{
	if (!loop_timer_armed(&s->heartbeat))
		loop_timer_set(s->loop, &s->heartbeat, s->hb_ms);
	if (!s->stopping && !loop_timer_armed(&s->poll))
		loop_timer_set(s->loop, &s->poll, SYNC_POLL_MS);
	s->advance_due = true;
	flush_results(s);
	claim_fresh(s);
	maybe_stopped(s);
}

void sync_wake(struct sync *s)
{
	s->advance_due = true; /* a migration may have been started or resumed */
	claim_fresh(s);
}

bool sync_reconfigure(struct sync *s, const struct conf *conf, struct store **stores,
		      void (*release)(void *arg), void *release_arg, struct err *e)
{
	struct sync_gen *g = calloc(1, sizeof(*g)), *old = s->g;

	if (g == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	g->conf = conf;
	g->stores = stores;
	g->release = release;
	g->release_arg = release_arg;
	s->g = g;
	if (old->refs == 0)
		gen_retire(s, old);
	claim(s); /* more room, perhaps */
	return true;
}

void sync_stats(const struct sync *s, struct sync_stats *out)
{
	out->in_flight = s->nitems;
	out->results = s->nbatch + s->nsent;
	out->objects_done = s->objects_done;
	out->bytes_done = s->bytes_done;
}

/* The heartbeat's period: IMGSYNC_HEARTBEAT_MS (1 to SYNC_HEARTBEAT_MS)
 * makes it shorter, so that tests meet its races often. */
static int heartbeat_ms(void)
{
	const char *v = getenv("IMGSYNC_HEARTBEAT_MS");
	char *end;
	long ms;

	if (v == NULL || v[0] == '\0')
		return SYNC_HEARTBEAT_MS;
	errno = 0;
	ms = strtol(v, &end, 10);
	if (errno || *end || ms < 1 || ms > SYNC_HEARTBEAT_MS) {
		log_warn("IMGSYNC_HEARTBEAT_MS=%s ignored: milliseconds from 1 to %d expected", v,
			 SYNC_HEARTBEAT_MS);
		return SYNC_HEARTBEAT_MS;
	}
	return (int)ms;
}

bool sync_new(struct loop *l, const struct conf *conf, struct store **stores,
	      void (*release)(void *arg), void *release_arg, struct pgconn *pg, struct sync **out,
	      struct err *e)
{
	struct sync *s = calloc(1, sizeof(*s));
	const char *tmp = getenv("TMPDIR");

	if (s == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	s->loop = l;
	if ((s->g = calloc(1, sizeof(*s->g))) == NULL) {
		free(s);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	s->g->conf = conf;
	s->g->stores = stores;
	s->g->release = release;
	s->g->release_arg = release_arg;
	s->pg = pg;
	s->spool_dir = tmp && tmp[0] == '/' ? tmp : "/var/tmp";
	s->hb_ms = heartbeat_ms();
	loop_timer_init(&s->poll, on_poll, s);
	loop_timer_init(&s->heartbeat, on_heartbeat, s);
	loop_timer_init(&s->stop_timer, on_stop_deadline, s);
	loop_timer_init(&s->flush_retry, on_flush_retry, s);
	loop_timer_init(&s->batch_wait, on_flush_retry, s);
	loop_timer_init(&s->release_timer, on_release_timer, s);
	*out = s;
	return true;
}

void sync_free(struct sync *s)
{
	if (s == NULL)
		return;
	while (s->items) {
		struct item *it = s->items;

		item_cancel_ops(it);
		item_free(it);
	}
	loop_timer_cancel(s->loop, &s->poll);
	loop_timer_cancel(s->loop, &s->heartbeat);
	loop_timer_cancel(s->loop, &s->stop_timer);
	loop_timer_cancel(s->loop, &s->flush_retry);
	loop_timer_cancel(s->loop, &s->batch_wait);
	loop_timer_cancel(s->loop, &s->release_timer);
	release_retired(s, true);
	buf_free(&s->batch);
	buf_free(&s->sent);
	gen_release(s->g);
	free(s);
}
