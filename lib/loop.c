/*
 * loop.c - epoll reactor with a timer heap and deferred calls.
 *
 * A turn runs deferred calls first (they may arm timers or watchers), waits
 * in epoll_wait for the nearest timer, dispatches I/O events, then fires due
 * timers.  Removing a watcher during dispatch clears its remaining events in
 * the batch, so a callback may free another watcher's owner safely.
 */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOOP_BATCH 64

struct deferred {
	loop_fn fn;
	void *arg;
};

struct loop {
	int epfd;
	uint64_t now;
	struct loop_timer **heap;
	size_t nheap, capheap;
	struct deferred *defer, *running;
	size_t ndefer, capdefer, caprunning;
	struct epoll_event batch[LOOP_BATCH];
	int nbatch, ibatch; /* events of the batch being dispatched */
};

uint64_t loop_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool loop_new(struct loop **out, struct err *e)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		free(l);
		return err_sys(e, errno, "epoll_create1");
	}
	l->now = loop_clock_ms();
	*out = l;
	return true;
}

void loop_free(struct loop *l)
{
	if (l == NULL)
		return;
	close(l->epfd);
	free(l->heap);
	free(l->defer);
	free(l->running);
	free(l);
}

uint64_t loop_now(struct loop *l)
{
	return l->now;
}

void loop_io_init(struct loop_io *io, int fd, loop_io_fn cb, void *arg)
{
	memset(io, 0, sizeof(*io));
	io->fd = fd;
	io->cb = cb;
	io->arg = arg;
}

bool loop_io_set(struct loop *l, struct loop_io *io, uint32_t events, struct err *e)
{
	struct epoll_event ev = {.events = events, .data.ptr = io};

	if (epoll_ctl(l->epfd, io->added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, io->fd, &ev) < 0)
		return err_sys(e, errno, "epoll_ctl(fd %d)", io->fd);
	io->added = true;
	io->events = events;
	return true;
}

void loop_io_del(struct loop *l, struct loop_io *io)
{
	if (!io->added)
		return;
	/* The fd may already be closed (curl closes before telling us). */
	(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
	io->added = false;
	for (int i = l->ibatch; i < l->nbatch; i++)
		if (l->batch[i].data.ptr == io)
			l->batch[i].data.ptr = NULL;
}

/* --- timers: a binary min-heap on due_ms --- */

static void heap_swap(struct loop *l, size_t a, size_t b)
{
	struct loop_timer *t = l->heap[a];

	l->heap[a] = l->heap[b];
	l->heap[b] = t;
	l->heap[a]->heap_idx = a + 1;
	l->heap[b]->heap_idx = b + 1;
}

static void heap_up(struct loop *l, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (l->heap[p]->due_ms <= l->heap[i]->due_ms)
			break;
		heap_swap(l, i, p);
		i = p;
	}
}

static void heap_down(struct loop *l, size_t i)
{
	for (;;) {
		size_t c = 2 * i + 1, m = i;

		if (c < l->nheap && l->heap[c]->due_ms < l->heap[m]->due_ms)
			m = c;
		if (c + 1 < l->nheap && l->heap[c + 1]->due_ms < l->heap[m]->due_ms)
			m = c + 1;
		if (m == i)
			return;
		heap_swap(l, i, m);
		i = m;
	}
}

void loop_timer_init(struct loop_timer *t, loop_fn cb, void *arg)
{
	memset(t, 0, sizeof(*t));
	t->cb = cb;
	t->arg = arg;
}

bool loop_timer_armed(const struct loop_timer *t)
{
	return t->heap_idx != 0;
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
	size_t i;

	if (!t->heap_idx)
		return;
	i = t->heap_idx - 1;
	t->heap_idx = 0;
	l->nheap--;
	if (i == l->nheap)
		return;
	l->heap[i] = l->heap[l->nheap];
	l->heap[i]->heap_idx = i + 1;
	heap_up(l, i);
	heap_down(l, i);
}

void loop_timer_set(struct loop *l, struct loop_timer *t, uint64_t delay_ms)
{
	loop_timer_cancel(l, t);
	if (l->nheap == l->capheap) {
		size_t cap = l->capheap ? 2 * l->capheap : 64;
		struct loop_timer **h = realloc(l->heap, cap * sizeof(*h));

		if (h == NULL)
			abort(); /* a lost timer would hang a transfer forever */
		l->heap = h;
		l->capheap = cap;
	}
	t->due_ms = loop_clock_ms() + delay_ms;
	l->heap[l->nheap] = t;
	t->heap_idx = ++l->nheap;
	heap_up(l, l->nheap - 1);
}

bool loop_defer(struct loop *l, loop_fn fn, void *arg, struct err *e)
{
	if (l->ndefer == l->capdefer) {
		size_t cap = l->capdefer ? 2 * l->capdefer : 64;
		struct deferred *d = realloc(l->defer, cap * sizeof(*d));

		if (d == NULL)
			return err_set(e, ERR_NOMEM, "out of memory queueing a callback");
		l->defer = d;
		l->capdefer = cap;
	}
	l->defer[l->ndefer++] = (struct deferred){fn, arg};
	return true;
}

/* Whether it ran any. */
static bool run_deferred(struct loop *l)
{
	struct deferred *d;
	size_t n, cap;

	/* Swap queues once: calls deferred by these run on the next turn. */
	if (l->ndefer == 0)
		return false;
	d = l->running;
	cap = l->caprunning;
	l->running = l->defer;
	l->caprunning = l->capdefer;
	n = l->ndefer;
	l->defer = d;
	l->capdefer = cap;
	l->ndefer = 0;
	for (size_t i = 0; i < n; i++)
		l->running[i].fn(l->running[i].arg);
	return true;
}

static void run_timers(struct loop *l)
{
	l->now = loop_clock_ms();
	while (l->nheap && l->heap[0]->due_ms <= l->now) {
		struct loop_timer *t = l->heap[0];

		loop_timer_cancel(l, t);
		t->cb(t->arg);
	}
}

bool loop_run_once(struct loop *l, int max_wait_ms, struct err *e)
{
	int timeout = max_wait_ms, n;
	bool ran;

	/* A deferred call may be what the caller waits for (loop_run_until's
	 * flag): having run one, the turn only looks, it does not wait. */
	ran = run_deferred(l);
	l->now = loop_clock_ms();
	if (ran || l->ndefer)
		timeout = 0;
	else if (l->nheap) {
		uint64_t due = l->heap[0]->due_ms;
		int t = due <= l->now ? 0 : (int)(due - l->now > 3600000 ? 3600000 : due - l->now);

		if (timeout < 0 || t < timeout)
			timeout = t;
	}
	n = epoll_wait(l->epfd, l->batch, LOOP_BATCH, timeout);
	if (n < 0) {
		if (errno == EINTR)
			return true;
		return err_sys(e, errno, "epoll_wait");
	}
	l->now = loop_clock_ms();
	l->nbatch = n;
	for (l->ibatch = 0; l->ibatch < l->nbatch;) {
		struct epoll_event *ev = &l->batch[l->ibatch++];
		struct loop_io *io = ev->data.ptr;

		if (io != NULL)
			io->cb(io->arg, io->fd, ev->events);
	}
	l->nbatch = l->ibatch = 0;
	run_timers(l);
	return true;
}

bool loop_run_until(struct loop *l, const bool *done, struct err *e)
{
	while (!*done)
		if (!loop_run_once(l, -1, e))
			return false;
	return true;
}
