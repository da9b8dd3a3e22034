/*
 * host.c - process identities for same-host takeover (see host.h).
 */
#include "host.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The start time (field 22 of /proc/PID/stat, clock ticks since boot), or
 * 0 when there is no such process; -1 when it cannot be read for another
 * reason (a process /proc hides from us, with hidepid, exists all the same:
 * kill(pid, 0) tells, whatever /proc shows). */
static long long start_time(pid_t pid)
{
	char path[64], buf[1024];
	FILE *f;
	size_t n;
	const char *p;
	long long t;
	int field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return kill(pid, 0) < 0 && errno == ESRCH ? 0 : -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: skip to the last ')' */
	p = strrchr(buf, ')');
	if (p == NULL)
		return -1;
	p++; /* at the space before field 3 (the state); each step, the next field */
	for (field = 3; field < 22 && p != NULL; field++)
		p = strchr(p + 1, ' ');
	if (p == NULL || sscanf(p, " %lld", &t) != 1)
		return -1;
	return t;
}

static bool boot_and_ns(char *out, size_t size)
{
	char boot[64] = "";
	struct stat ns;
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	if (f == NULL)
		return false;
	if (fgets(boot, sizeof(boot), f) == NULL)
		boot[0] = '\0';
	fclose(f);
	boot[strcspn(boot, "\n")] = '\0';
	if (boot[0] == '\0' || stat("/proc/self/ns/pid", &ns) != 0)
		return false;
	snprintf(out, size, "%s/%llu:%llu", boot, (unsigned long long)ns.st_dev,
		 (unsigned long long)ns.st_ino);
	return true;
}

void host_ident(char *out, size_t size)
{
	char where[HOST_IDENT_MAX];
	long long t = start_time(getpid());

	if (t <= 0 || !boot_and_ns(where, sizeof(where))) {
		snprintf(out, size, "%s", "");
		return;
	}
	snprintf(out, size, "%s/%lld", where, t);
}

bool host_process_gone(const char *ident, pid_t pid)
{
	char where[HOST_IDENT_MAX];
	size_t n;
	const char *slash;
	long long then, now;
	char *end;

	if (ident == NULL || pid <= 0 || !boot_and_ns(where, sizeof(where)))
		return false;
	n = strlen(where);
	if (strncmp(ident, where, n) != 0 || ident[n] != '/')
		return false; /* another boot, another namespace: we cannot know */
	slash = ident + n + 1;
	then = strtoll(slash, &end, 10);
	if (*end != '\0' || then <= 0)
		return false;
	now = start_time(pid);
	if (now < 0)
		return false;
	return now != then; /* no such process, or another one with the pid */
}
