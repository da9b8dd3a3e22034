#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

static const char *log_ident = "imgsync";
static int log_verbosity; /* 0: info and above; 1+: debug */
static bool log_journal;

/* stderr is the journal when JOURNAL_STREAM names its device and inode. */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *ident, int verbosity)
{
	log_ident = ident;
	log_verbosity = verbosity;
	log_journal = stderr_is_journal();
}

void log_set_verbosity(int verbosity)
{
	log_verbosity = verbosity;
}

void log_msg(int prio, const struct log_fields *f, const char *fmt, ...)
{
	static const char *const names[] = {"emerg",   "alert",	 "crit", "error",
					    "warning", "notice", "info", "debug"};
	char msg[2048];
	va_list ap;

	if (prio == LOG_DEBUG && log_verbosity < 1)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (log_journal) {
		char mig[32];

		snprintf(mig, sizeof(mig), "%lld", f ? f->migration : 0);
		sd_journal_send(
		    "MESSAGE=%s", msg, "PRIORITY=%d", prio, "SYSLOG_IDENTIFIER=%s", log_ident,
		    f && f->key ? "IMGSYNC_KEY=%s" : "IMGSYNC_KEY=", f && f->key ? f->key : "",
		    f && f->store ? "IMGSYNC_STORE=%s" : "IMGSYNC_STORE=",
		    f && f->store ? f->store : "",
		    f && f->migration ? "IMGSYNC_MIGRATION=%s" : "IMGSYNC_MIGRATION=",
		    f && f->migration ? mig : "", NULL);
		return;
	}
	fprintf(stderr, "%s: %s: %s\n", log_ident, names[prio & 7], msg);
}
