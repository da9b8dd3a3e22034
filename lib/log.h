/*
 * log.h - operator-facing logging.
 *
 * Messages go to the systemd journal with structured fields when stderr is
 * connected to it (JOURNAL_STREAM), otherwise as plain lines on stderr.
 * Fields name the object key, store and migration a message is about, so
 * `journalctl IMGSYNC_STORE=cloud` finds them.  A log line never contains
 * a secret: callers pass names and keys, never credentials.
 */
#ifndef IMGSYNC_LOG_H
#define IMGSYNC_LOG_H

#include <stdbool.h>
#include <syslog.h>

#include "err.h"

struct log_fields {
	const char *key;     /* IMGSYNC_KEY */
	const char *store;   /* IMGSYNC_STORE */
	long long migration; /* IMGSYNC_MIGRATION, 0 = none */
};

void log_init(const char *ident, int verbosity);
void log_set_verbosity(int verbosity);
/* prio is a syslog priority (LOG_ERR ... LOG_DEBUG). */
void log_msg(int prio, const struct log_fields *f, const char *fmt, ...) PRINTF(3, 4);

#define log_error(...)	log_msg(LOG_ERR, NULL, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)	log_msg(LOG_DEBUG, NULL, __VA_ARGS__)

#endif
