/* Units for lib/loop.c: deferred calls and timers reach a caller waiting
 * in loop_run_until() without any other event to wake it (a turn that ran
 * a deferred call must not then sleep in epoll_wait with nothing armed). */
#include <signal.h>
#include <stdbool.h>
#include <unistd.h>

#include "loop.h"
#include "tap.h"

static struct loop *L;
static bool flag;
static int order[4], norder;

static void set_flag(void *arg)
{
	(void)arg;
	flag = true;
}

static void defer_again(void *arg)
{
	struct err e = {0};

	order[norder++] = 1;
	if (!loop_defer(L, set_flag, arg, &e))
		tap_diag("%s", e.msg);
}

static void timer_defers(void *arg)
{
	struct err e = {0};

	order[norder++] = 2;
	if (!loop_defer(L, set_flag, arg, &e))
		tap_diag("%s", e.msg);
}

static void on_alarm(int sig)
{
	(void)sig;
	/* a hang is a failure, not a test that never ends */
	static const char msg[] = "not ok - the loop slept with a deferred call done\n";

	(void)!write(1, msg, sizeof(msg) - 1);
	_exit(1);
}

int main(void)
{
	struct loop_timer t;
	struct err e = {0};

	signal(SIGALRM, on_alarm);
	alarm(10);
	if (!ok(loop_new(&L, &e), "loop_new"))
		return tap_done();

	flag = false;
	ok(loop_defer(L, set_flag, NULL, &e), "defer a call");
	ok(loop_run_until(L, &flag, &e) && flag,
	   "loop_run_until returns once a deferred call set its flag, no event needed");

	flag = false;
	norder = 0;
	ok(loop_defer(L, defer_again, NULL, &e), "defer a call that defers another");
	ok(loop_run_until(L, &flag, &e) && flag && norder == 1,
	   "... the second runs on a later turn, and the wait ends with it");

	flag = false;
	norder = 0;
	loop_timer_init(&t, timer_defers, NULL);
	loop_timer_set(L, &t, 5);
	ok(loop_run_until(L, &flag, &e) && flag && norder == 1 && order[0] == 2,
	   "a timer's deferred call ends the wait too");
	ok(!loop_timer_armed(&t), "the timer is spent");

	loop_free(L);
	return tap_done();
}
