/*
 * mimetypes.h - internal: Python's built-in MIME type -> extension table,
 * generated into mimetypes.c by tests/tools/gen-mimetypes.py.  Use
 * mime_extension() (layout.h) rather than the table itself.
 */
#ifndef IMGSYNC_MIMETYPES_H
#define IMGSYNC_MIMETYPES_H

#include <stddef.h>

struct mime_ext {
	const char *type; /* lower case */
	const char *ext;  /* with the leading dot */
};

/* Sorted by type with strcmp() order. */
extern const struct mime_ext mime_table[];
extern const size_t mime_table_len;
/* "3.11": the Python version the table was taken from. */
extern const char mime_table_python_version[];

#endif
