/*
 * workq.h - a small pool of threads for blocking disk work.
 *
 * The loop must never wait on the disk (fsync, rename, a cold read).  Such
 * work is packaged as a job: work() runs on a pool thread and must touch
 * nothing but the job; done() then runs on the loop thread.  Jobs are
 * embedded in their owner, which must outlive done().
 *
 * The queue is unbounded in jobs but bounded in practice by the callers'
 * own concurrency limits (transfer.concurrency).
 */
#ifndef IMGSYNC_WORKQ_H
#define IMGSYNC_WORKQ_H

#include <stdbool.h>

#include "err.h"
#include "loop.h"

struct workq;

struct workq_job {
	void (*work)(struct workq_job *job); /* on a pool thread */
	void (*done)(struct workq_job *job); /* on the loop thread */
	/* optional: workq_free hands a job it will not deliver to this, so a
	 * job that owns itself can be freed */
	void (*discard)(struct workq_job *job);
	struct workq_job *next;
};

bool workq_new(struct loop *l, int nthreads, struct workq **out, struct err *e) WUR;
/* Waits for running jobs, runs no more; pending jobs' done() is not called
 * (their discard(), if set, is). */
void workq_free(struct workq *wq);
void workq_submit(struct workq *wq, struct workq_job *job);
/* Called from inside work(): the job is not finished when work() returns;
 * whoever it was handed to calls workq_finish() for it later, from any
 * thread (done() then runs on the loop as usual).  Until then the pool
 * touches it no more: it may be finished (and freed by its done()) before
 * work() has even returned. */
void workq_keep(void);
void workq_finish(struct workq *wq, struct workq_job *job);

#endif
