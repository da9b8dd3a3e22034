/*
 * loop.h - the one event loop: epoll for file descriptors, a binary heap of
 * timers, and a queue of deferred calls.
 *
 * Ownership: watchers (struct loop_io) and timers (struct loop_timer) are
 * owned and embedded by their users; the loop only links them.  A watcher
 * may be removed, and freed, from any callback, including its own: pending
 * events for it in the current batch are dropped.  Deferred calls run on
 * the next turn of the loop, never inside the call that queued them, so
 * "done" callbacks can rely on their caller having returned.
 *
 * Nothing here blocks except loop_run_once() in epoll_wait().
 */
#ifndef IMGSYNC_LOOP_H
#define IMGSYNC_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "err.h"

struct loop;

typedef void (*loop_io_fn)(void *arg, int fd, uint32_t events);
typedef void (*loop_fn)(void *arg);

struct loop_io {
	int fd;
	uint32_t events; /* EPOLLIN | EPOLLOUT ... */
	loop_io_fn cb;
	void *arg;
	bool added;
};

struct loop_timer {
	uint64_t due_ms; /* monotonic */
	loop_fn cb;
	void *arg;
	size_t heap_idx; /* position + 1 in the heap; 0 when not armed */
};

bool loop_new(struct loop **out, struct err *e) WUR;
void loop_free(struct loop *l);

/* Monotonic milliseconds, refreshed at each turn of the loop. */
uint64_t loop_now(struct loop *l);
uint64_t loop_clock_ms(void);

void loop_io_init(struct loop_io *io, int fd, loop_io_fn cb, void *arg);
/* Watch for events (0 = keep registered but report nothing). */
bool loop_io_set(struct loop *l, struct loop_io *io, uint32_t events, struct err *e) WUR;
void loop_io_del(struct loop *l, struct loop_io *io);

void loop_timer_init(struct loop_timer *t, loop_fn cb, void *arg);
void loop_timer_set(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);
bool loop_timer_armed(const struct loop_timer *t);

/* Run fn(arg) on the next turn. */
bool loop_defer(struct loop *l, loop_fn fn, void *arg, struct err *e) WUR;

/* One turn: deferred calls, then wait at most max_wait_ms (-1: until
 * something happens) for events, dispatch them, then due timers. */
bool loop_run_once(struct loop *l, int max_wait_ms, struct err *e) WUR;
/* Turn the loop until *done becomes true. */
bool loop_run_until(struct loop *l, const bool *done, struct err *e) WUR;

#endif
