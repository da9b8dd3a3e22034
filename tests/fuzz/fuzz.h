/*
 * fuzz.h - what every libFuzzer harness of imgsync shares.
 *
 * CHECK() states an invariant of the code under test.  It holds for every
 * input, so a failure is a bug: it prints the invariant and aborts, which
 * libFuzzer reports as a crash and keeps the input that caused it.  It is
 * not assert(): NDEBUG never turns it off.
 */
#ifndef IMGSYNC_FUZZ_H
#define IMGSYNC_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "invariant failed at %s:%d: %s\n  ", __FILE__, __LINE__,   \
				#cond);                                                            \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Printable ASCII only: no control byte, no byte above 0x7e. */
static inline bool fuzz_printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return false;
	return true;
}

/* A NUL-terminated copy of the input (the harnesses' strings). */
/* UTF-8 text without a control character (C0, DEL or C1); other bytes pass. */
static inline bool fuzz_printable_utf8(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return false;
		if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
			return false;
	}
	return true;
}

static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif
