/*
 * key.h - validation of logical image keys (SPEC.md "Key layouts").
 *
 * A logical key is non-empty, at most KEY_MAX bytes, valid UTF-8 (no
 * overlongs, no surrogates, nothing above U+10FFFF), has no NUL or control
 * character (C0, DEL, C1), no leading '/', and no empty, "." or ".."
 * segment between slashes (so no "//" run and no trailing '/').  Nor may
 * a segment turn into a "." or ".." once percent-decoded (any number of
 * times) or cut at backslashes ("%2e%2e", ".%252e", "..%5c..", "..\x"),
 * nor decode to a NUL, a control character or an overlong UTF-8 form.
 */
#ifndef IMGSYNC_KEY_H
#define IMGSYNC_KEY_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

#define KEY_MAX 1024

/* On failure the message says what is wrong and where (byte offset),
 * quoting the key only in escaped form so a hostile key cannot forge log
 * lines. */
bool key_validate(const char *key, size_t len, struct err *e) WUR;

/* Printable, escaped rendering of any byte string for messages:
 * non-printable and non-ASCII bytes become \xNN, backslash and quote are
 * escaped, and the result is cut at out_size with "..." appended. */
void key_escape(const char *key, size_t len, char *out, size_t out_size);

#endif
