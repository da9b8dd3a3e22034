#include "err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

bool err_setv(struct err *e, enum err_code code, const char *fmt, va_list ap)
{
	if (e == NULL)
		return false;
	e->code = code;
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	return false;
}

bool err_set(struct err *e, enum err_code code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_setv(e, code, fmt, ap);
	va_end(ap);
	return false;
}

bool err_sys(struct err *e, int errnum, const char *fmt, ...)
{
	va_list ap;
	enum err_code code;
	size_t n;

	if (e == NULL)
		return false;
	switch (errnum) {
	case ENOENT:
	case ENOTDIR: /* a path component is a file: nothing is there either */
		code = ERR_NOTFOUND;
		break;
	case ENOMEM:
		code = ERR_NOMEM;
		break;
	default:
		code = ERR_IO;
		break;
	}
	va_start(ap, fmt);
	err_setv(e, code, fmt, ap);
	va_end(ap);
	n = strlen(e->msg);
	snprintf(e->msg + n, sizeof(e->msg) - n, ": %s", strerror(errnum));
	return false;
}

void err_prefix(struct err *e, const char *fmt, ...)
{
	char old[sizeof(e->msg)];
	va_list ap;
	int n;

	if (e == NULL)
		return;
	memcpy(old, e->msg, sizeof(old));
	va_start(ap, fmt);
	n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(e->msg) - 1) {
		size_t room = sizeof(e->msg) - (size_t)n - 1;
		size_t len = strnlen(old, room);

		memcpy(e->msg + n, old, len);
		e->msg[(size_t)n + len] = '\0';
	}
}

void err_clear(struct err *e)
{
	if (e == NULL)
		return;
	e->code = ERR_OK;
	e->msg[0] = '\0';
}

const char *err_code_name(enum err_code code)
{
	static const char *const names[] = {
	    [ERR_OK] = "ok",
	    [ERR_INVALID] = "invalid",
	    [ERR_NOTFOUND] = "not-found",
	    [ERR_DENIED] = "denied",
	    [ERR_TRANSIENT] = "transient",
	    [ERR_INTEGRITY] = "integrity",
	    [ERR_CONFIG] = "config",
	    [ERR_IO] = "io",
	    [ERR_NOMEM] = "no-memory",
	    [ERR_EXISTS] = "exists",
	};

	if ((unsigned)code < sizeof(names) / sizeof(names[0]) && names[code])
		return names[code];
	return "unknown";
}

bool err_retryable(enum err_code code)
{
	return code == ERR_TRANSIENT || code == ERR_INTEGRITY || code == ERR_IO ||
	       code == ERR_NOMEM;
}
