/*
 * err.h - the one error convention of libimgsync.
 *
 * Every fallible function returns bool (true = success), is marked WUR so
 * the compiler refuses an ignored result, and fills a caller-owned
 * struct err on failure.  The message is written for the operator: it names
 * what failed (key, store, file:line) and, where known, what to do.  The
 * code tells the caller what kind of failure it was, so that retry logic
 * never has to parse a message.
 */
#ifndef IMGSYNC_ERR_H
#define IMGSYNC_ERR_H

#include <stdarg.h>
#include <stdbool.h>

#define WUR	     __attribute__((warn_unused_result))
#define PRINTF(a, b) __attribute__((format(printf, a, b)))

enum err_code {
	ERR_OK = 0,
	ERR_INVALID,   /* bad input (key, argument, response); permanent */
	ERR_NOTFOUND,  /* object, bucket or file does not exist */
	ERR_DENIED,    /* credentials refused or access denied; permanent */
	ERR_TRANSIENT, /* network trouble, 5xx, throttling: retry later */
	ERR_INTEGRITY, /* checksum or size mismatch: retry the transfer */
	ERR_CONFIG,    /* configuration error */
	ERR_IO,	       /* local system error (disk full, permission, ...) */
	ERR_NOMEM,     /* out of memory */
	ERR_EXISTS,    /* a write that may only create found the key taken, or
			* one that may only replace what was looked at found
			* it changed */
};

struct err {
	enum err_code code;
	char msg[1024];
};

/* Set code and message; returns false so callers can `return err_set(...)`. */
bool err_set(struct err *e, enum err_code code, const char *fmt, ...) PRINTF(3, 4);
bool err_setv(struct err *e, enum err_code code, const char *fmt, va_list ap);
/* Like err_set, appending ": strerror(errnum)". */
bool err_sys(struct err *e, int errnum, const char *fmt, ...) PRINTF(3, 4);
/* Prepend context to an existing message ("store cloud: " + msg). */
void err_prefix(struct err *e, const char *fmt, ...) PRINTF(2, 3);
void err_clear(struct err *e);
const char *err_code_name(enum err_code code);
/* Whether a failure of this kind may succeed when tried again. */
bool err_retryable(enum err_code code);

#endif
