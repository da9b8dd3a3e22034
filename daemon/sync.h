/*
 * sync.h - the work engine of imgsyncd: claims queued items, copies and
 * deletes objects, and reports results, all on the loop.
 *
 * An item's life:  CLAIMED -> (put) GET from the source into a spool file
 * -> PUT to every mirror lacking the current version, in parallel
 * -> DONE;  or (remove) DELETE from every store -> DONE.  DONE items leave
 * their result in a batch that one imgsync.complete() call writes back.
 *
 * The engine owns its items; the stores, the connection and the
 * configuration are borrowed and outlive it.
 */
#ifndef IMGSYNC_SYNC_H
#define IMGSYNC_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "err.h"
#include "loop.h"
#include "pgconn.h"
#include "store.h"

struct sync;

struct sync_stats {
	int in_flight; /* items being worked */
	int results;   /* results waiting to be written back */
	uint64_t objects_done, bytes_done;
};

/* release(release_arg) is called once no item uses conf and stores any
 * more: after a reload, or from sync_free(). */
bool sync_new(struct loop *l, const struct conf *conf, struct store **stores,
	      void (*release)(void *arg), void *release_arg, struct pgconn *pg, struct sync **out,
	      struct err *e) WUR;
void sync_free(struct sync *s);

/* The daemon's id in imgsync.daemons; claims start once it is set. */
void sync_set_daemon(struct sync *s, long long id);
/* The connection is (again) ready: resend what was lost, claim. */
void sync_connected(struct sync *s);
/* Something may be waiting (a notification, a poll). */
void sync_wake(struct sync *s);
/* Stop claiming; finish what is in flight within grace_ms, then abandon
 * it; write back results; release the leases; then call done(arg). */
void sync_stop(struct sync *s, uint64_t grace_ms, void (*done)(void *arg), void *arg);
void sync_stats(const struct sync *s, struct sync_stats *out);
/* store_env.parked for the stores sync_new() and sync_reconfigure() are
 * given: a put that waits only for a sync it shares with others lends its
 * transfer slot to a new claim, up to as many again as transfer.concurrency. */
void sync_put_parked(void *arg);

/* Work from now on with conf and stores (a reload).  Items in flight finish
 * with the configuration they were claimed under; once the last of them is
 * over, the previous configuration's release(release_arg) is called (for
 * the last one, from sync_free()).  Nothing is released when this fails. */
bool sync_reconfigure(struct sync *s, const struct conf *conf, struct store **stores,
		      void (*release)(void *arg), void *release_arg, struct err *e) WUR;

#endif
