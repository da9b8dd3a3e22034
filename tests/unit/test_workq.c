/* Units for lib/workq.c: every job's completion reaches the loop, once, and
 * without waiting for a later job to wake it (a pool thread signals the
 * loop only when it makes the list of finished jobs non-empty, so a missed
 * signal would leave a finished job undelivered while the loop sleeps).
 * A third of the jobs keep themselves (workq_keep()) and are handed back
 * by a finisher job, as lib/fs.c's group sync does: each is delivered once,
 * and only after the hand-back; the finisher, kept too, never is. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "tap.h"
#include "workq.h"

#define NJOBS	 200000
#define INFLIGHT 64

struct job {
	struct workq_job wj; /* first: the pool hands this pointer back */
	int id;
	bool released;	   /* a kept job: handed back by the finisher */
	struct job *knext; /* in the kept list */
};

static struct workq *wq;
static struct job jobs[INFLIGHT];
static unsigned char delivered[NJOBS];
static atomic_int worked; /* jobs whose completion is due (work() returned, or handed back) */
static int ndone, nsubmitted, twice, discarded, early, finisher_delivered;
static bool keeping = true;

/* the kept jobs, and whether the finisher runs: under kmu */
static pthread_mutex_t kmu = PTHREAD_MUTEX_INITIALIZER;
static struct job *kept_head;
static bool finishing;
static struct workq_job finisher;

static bool kept_id(int id)
{
	return keeping && id % 3 == 0;
}

static void finish_work(struct workq_job *j)
{
	(void)j;
	for (;;) {
		struct job *list;

		pthread_mutex_lock(&kmu);
		list = kept_head;
		kept_head = NULL;
		if (list == NULL) {
			finishing = false;
			pthread_mutex_unlock(&kmu);
			workq_keep();
			return;
		}
		pthread_mutex_unlock(&kmu);
		for (struct job *k = list, *next; k; k = next) {
			next = k->knext;
			k->released = true;
			atomic_fetch_add(&worked, 1);
			workq_finish(wq, &k->wj);
		}
	}
}

static void finish_done(struct workq_job *j)
{
	(void)j;
	finisher_delivered++;
}

static void work(struct workq_job *j)
{
	struct job *jb = (struct job *)j;
	volatile unsigned x = 0;

	/* uneven lengths, so that the threads finish in every order */
	for (int i = 0; i < (jb->id * 7919) % 97; i++)
		x += (unsigned)i;
	if (kept_id(jb->id)) {
		pthread_mutex_lock(&kmu);
		jb->knext = kept_head;
		kept_head = jb;
		if (!finishing) {
			finishing = true;
			workq_submit(wq, &finisher);
		}
		pthread_mutex_unlock(&kmu);
		workq_keep(); /* jb is the finisher's now */
		return;
	}
	atomic_fetch_add(&worked, 1);
}

static void submit(struct job *jb);

static void done(struct workq_job *j)
{
	struct job *jb = (struct job *)j;

	if (delivered[jb->id]++)
		twice++;
	if (kept_id(jb->id) && !jb->released)
		early++;
	ndone++;
	/* refilled from the completion, as the daemon does */
	if (nsubmitted < NJOBS)
		submit(jb);
}

static void discard(struct workq_job *j)
{
	(void)j;
	discarded++;
}

static void submit(struct job *jb)
{
	jb->wj.work = work;
	jb->wj.done = done;
	jb->wj.discard = discard;
	jb->id = nsubmitted++;
	jb->released = false;
	workq_submit(wq, &jb->wj);
}

int main(void)
{
	struct loop *l;
	struct err e = {0};
	int stalls = 0, turns = 0;
	uint64_t t0;

	finisher.work = finish_work;
	finisher.done = finish_done;
	if (!loop_new(&l, &e) || !workq_new(l, 8, &wq, &e)) {
		printf("Bail out! %s\n", e.msg);
		return 1;
	}
	for (int i = 0; i < INFLIGHT; i++)
		submit(&jobs[i]);
	t0 = loop_clock_ms();
	while (ndone < NJOBS && loop_clock_ms() - t0 < 120000) {
		int before = ndone;
		uint64_t t = loop_clock_ms();

		if (!loop_run_once(l, 2000, &e)) {
			printf("Bail out! %s\n", e.msg);
			return 1;
		}
		turns++;
		/* the loop slept with nothing delivered although every job in
		 * flight had finished (each takes microseconds): a wake-up was
		 * lost */
		if (ndone == before && loop_clock_ms() - t >= 1500 &&
		    atomic_load(&worked) == nsubmitted) {
			stalls++;
			break;
		}
	}
	ok(ndone == NJOBS, "all %d completions reached the loop (%d in %d turns)", NJOBS, ndone,
	   turns);
	ok(stalls == 0, "no finished job waited undelivered for a second");
	ok(twice == 0, "no completion was delivered twice");
	ok(early == 0, "a kept job was delivered only once handed back (%d early)", early);
	ok(finisher_delivered == 0, "the finisher, kept, was never delivered (%d)",
	   finisher_delivered);

	/* jobs still queued when the pool goes are handed to discard(), not
	 * delivered */
	keeping = false;
	ndone = nsubmitted = discarded = 0;
	memset(delivered, 0, sizeof(delivered));
	for (int i = 0; i < INFLIGHT; i++)
		submit(&jobs[i]);
	workq_free(wq);
	ok(ndone == 0 && discarded == INFLIGHT,
	   "workq_free discards the %d jobs it will not deliver (discarded %d, delivered %d)",
	   INFLIGHT, discarded, ndone);
	loop_free(l);
	return tap_done();
}
