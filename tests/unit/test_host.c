/* Units for lib/host.c: a process's identity must stay the same for its
 * whole life (a successor that took a live daemon for dead would release
 * its leases while it works), and change when the pid is another
 * process's. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host.h"
#include "tap.h"

/* Field 22 of /proc/PID/stat, read independently of lib/host.c. */
static long long stat_start(pid_t pid)
{
	char path[64], buf[1024], *p;
	long long t = -1;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
	 * majflt, cmajflt, utime, stime, cutime, cstime, priority, nice,
	 * num_threads, itrealvalue, starttime */
	if (p == NULL || sscanf(p + 1,
				" %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
				"%*d %*d %*d %lld",
				&t) != 1)
		return -1;
	return t;
}

int main(void)
{
	char id[HOST_IDENT_MAX], again[HOST_IDENT_MAX];
	const char *last;
	void *big[64];
	pid_t child;

	host_ident(id, sizeof(id));
	if (id[0] == '\0') {
		tap_skip("no /proc here: no process identity");
		return tap_done();
	}
	last = strrchr(id, '/');
	ok(last && atoll(last + 1) == stat_start(getpid()),
	   "the identity ends with the start time (/proc/PID/stat field 22): %s", id);
	ok(!host_process_gone(id, getpid()), "this process is not gone");
	/* memory, time and children change many fields of /proc/PID/stat, not
	 * the identity */
	for (int i = 0; i < 64; i++) {
		big[i] = malloc(1 << 20);
		if (big[i])
			memset(big[i], i, 1 << 20);
	}
	for (volatile long spin = 0; spin < 50000000; spin++)
		;
	host_ident(again, sizeof(again));
	is_str(again, id, "the identity is the same after 64 MiB and some CPU time");
	ok(!host_process_gone(id, getpid()), "... and the process is still not gone");
	for (int i = 0; i < 64; i++)
		free(big[i]);

	child = fork();
	if (child == 0) {
		pause();
		_exit(0);
	}
	{
		char cid[HOST_IDENT_MAX + 32], wrong[HOST_IDENT_MAX + 32];
		int len = (int)(last - id);

		snprintf(cid, sizeof(cid), "%.*s/%lld", len, id, stat_start(child));
		snprintf(wrong, sizeof(wrong), "%.*s/%lld", len, id, stat_start(child) + 1);
		ok(!host_process_gone(cid, child), "a live child is not gone: %s", cid);
		ok(host_process_gone(wrong, child),
		   "a live pid with another start time is another process: gone");
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		ok(host_process_gone(cid, child), "the child, killed and reaped, is gone");
	}
	return tap_done();
}
