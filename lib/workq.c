/*
 * workq.c - thread pool whose completions come back through an eventfd.
 *
 * Two singly linked FIFO lists under one mutex: "todo" (taken by threads)
 * and "finished" (drained by the loop when the eventfd fires; a thread
 * signals it only when it makes that list non-empty).
 */
#include "workq.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WORKQ_MAX_THREADS 64

struct jobq {
	struct workq_job *head, *tail;
};

struct workq {
	struct loop *loop;
	struct loop_io io;
	int efd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct jobq todo, finished;
	bool stop;
	int nthreads;
	pthread_t threads[WORKQ_MAX_THREADS];
};

static void jobq_push(struct jobq *q, struct workq_job *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static struct workq_job *jobq_pop(struct jobq *q)
{
	struct workq_job *j = q->head;

	if (j) {
		q->head = j->next;
		if (q->head == NULL)
			q->tail = NULL;
	}
	return j;
}

/* set by workq_keep() during the work() of this thread's job */
static _Thread_local bool kept;

void workq_keep(void)
{
	kept = true;
}

void workq_finish(struct workq *wq, struct workq_job *j)
{
	uint64_t one = 1;
	bool wake;

	/* Only the first of a run of completions wakes the loop: it takes the
	 * whole list at once (under the mutex, so none is missed), and a
	 * wake-up per job cost the loop a turn each. */
	pthread_mutex_lock(&wq->mu);
	wake = wq->finished.head == NULL;
	jobq_push(&wq->finished, j);
	pthread_mutex_unlock(&wq->mu);
	/* A full eventfd counter cannot happen: it holds 2^64-2. */
	if (wake && write(wq->efd, &one, sizeof(one)) < 0) {
	}
}

static void *worker(void *arg)
{
	struct workq *wq = arg;

	for (;;) {
		struct workq_job *j;

		pthread_mutex_lock(&wq->mu);
		while (!wq->stop && wq->todo.head == NULL)
			pthread_cond_wait(&wq->cv, &wq->mu);
		if (wq->stop) {
			pthread_mutex_unlock(&wq->mu);
			return NULL;
		}
		j = jobq_pop(&wq->todo);
		pthread_mutex_unlock(&wq->mu);
		kept = false;
		j->work(j);
		if (!kept) /* else another owns it now: not to be touched */
			workq_finish(wq, j);
	}
}

static void on_event(void *arg, int fd, uint32_t events)
{
	struct workq *wq = arg;
	struct jobq done;
	uint64_t n;

	(void)events;
	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&wq->mu);
	done = wq->finished;
	wq->finished.head = wq->finished.tail = NULL;
	pthread_mutex_unlock(&wq->mu);
	for (struct workq_job *j; (j = jobq_pop(&done)) != NULL;)
		j->done(j);
}

bool workq_new(struct loop *l, int nthreads, struct workq **out, struct err *e)
{
	struct workq *wq;
	int rc;

	if (nthreads < 1)
		nthreads = 1;
	if (nthreads > WORKQ_MAX_THREADS)
		nthreads = WORKQ_MAX_THREADS;
	wq = calloc(1, sizeof(*wq));
	if (wq == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	wq->loop = l;
	wq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (wq->efd < 0) {
		free(wq);
		return err_sys(e, errno, "eventfd");
	}
	pthread_mutex_init(&wq->mu, NULL);
	pthread_cond_init(&wq->cv, NULL);
	loop_io_init(&wq->io, wq->efd, on_event, wq);
	if (!loop_io_set(l, &wq->io, EPOLLIN, e)) {
		workq_free(wq);
		return false;
	}
	for (int i = 0; i < nthreads; i++) {
		rc = pthread_create(&wq->threads[i], NULL, worker, wq);
		if (rc != 0) {
			workq_free(wq);
			return err_sys(e, rc, "pthread_create");
		}
		wq->nthreads++;
	}
	*out = wq;
	return true;
}

void workq_free(struct workq *wq)
{
	if (wq == NULL)
		return;
	pthread_mutex_lock(&wq->mu);
	wq->stop = true;
	pthread_cond_broadcast(&wq->cv);
	pthread_mutex_unlock(&wq->mu);
	for (int i = 0; i < wq->nthreads; i++)
		pthread_join(wq->threads[i], NULL);
	for (struct jobq *q = &wq->todo; q; q = q == &wq->todo ? &wq->finished : NULL)
		for (struct workq_job *j; (j = jobq_pop(q)) != NULL;)
			if (j->discard)
				j->discard(j);
	loop_io_del(wq->loop, &wq->io);
	close(wq->efd);
	pthread_cond_destroy(&wq->cv);
	pthread_mutex_destroy(&wq->mu);
	free(wq);
}

void workq_submit(struct workq *wq, struct workq_job *job)
{
	pthread_mutex_lock(&wq->mu);
	jobq_push(&wq->todo, job);
	pthread_cond_signal(&wq->cv);
	pthread_mutex_unlock(&wq->mu);
}
