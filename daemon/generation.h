/*
 * generation.h - a configuration and the stores opened from it.
 *
 * imgsyncd runs on one generation at a time.  A reload (SIGHUP) builds the
 * next one aside: the file parsed and validated, every store opened; only
 * when all of that worked does the engine switch to it (sync_reconfigure).
 * Items in flight finish with the generation they were claimed under, which
 * is freed after its last item.  Settings that cannot change under a
 * running daemon (the database connection) make the reload fail whole.
 */
#ifndef IMGSYNC_GENERATION_H
#define IMGSYNC_GENERATION_H

#include <stddef.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "store.h"

struct generation {
	struct conf *conf;     /* owned */
	struct store **stores; /* one per conf->stores[], owned */
	size_t opened;
};

/* Open every store of conf (taking conf over, also on failure).  Errors
 * name the file and line of the store that failed; code ERR_CONFIG for a
 * mistake in the file, another for the machine's state (a missing root). */
bool gen_open(struct conf *conf, const struct store_env *env, struct generation **out,
	      struct err *e) WUR;

/* Close the stores and free everything; a void * for sync_reconfigure(). */
void gen_free(void *generation);

/* Why next cannot replace cur without a restart ("" if it can), and what
 * the change does, in short, for the log. */
void gen_compare(const struct conf *cur, const struct conf *next, struct buf *restart,
		 struct buf *changes);

#endif
