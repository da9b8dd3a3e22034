/*
 * buf.h - growable byte buffer, always NUL-terminated.
 *
 * Ownership: the struct is the caller's (usually on the stack or embedded);
 * buf_free() releases the bytes.  Growth beyond BUF_MAX fails with ERR_NOMEM
 * rather than eating the machine: every buffer in imgsync holds metadata
 * (keys, headers, XML documents), never image bytes.
 */
#ifndef IMGSYNC_BUF_H
#define IMGSYNC_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define BUF_MAX (64u * 1024 * 1024)

struct buf {
	char *p;    /* NULL until the first append; then always NUL-terminated */
	size_t len; /* bytes used, excluding the terminating NUL */
	size_t cap; /* bytes allocated */
	bool oom;   /* sticky: an append failed; the contents are truncated */
};

#define BUF_INIT                                                                                   \
	{                                                                                          \
		NULL, 0, 0, false                                                                  \
	}

bool buf_reserve(struct buf *b, size_t extra) WUR;
/* Appends never fail loudly; they set b->oom, checked once with buf_ok(). */
void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) PRINTF(2, 3);
/* Lower-case hex of len bytes. */
void buf_hex(struct buf *b, const unsigned char *data, size_t len);
/* The contents, or "" for an empty buffer (never NULL). */
const char *buf_str(const struct buf *b);
bool buf_ok(const struct buf *b, struct err *e) WUR;
void buf_reset(struct buf *b);
void buf_free(struct buf *b);
/* Hand the bytes to the caller (malloc'd, NUL-terminated; never NULL unless oom). */
char *buf_steal(struct buf *b);

/* Small helpers used across modules. */
void hex_encode(const unsigned char *in, size_t len, char *out /* 2*len+1 */);
bool hex_decode(const char *in, size_t len, unsigned char *out /* len/2 */);
int hex_value(char c);	      /* 0..15, or -1 for a non-hex character */
char *xstrdup(const char *s); /* NULL in, NULL out; aborts never */
void secure_free(char *s);    /* wipes a secret string, then frees it */

#endif
