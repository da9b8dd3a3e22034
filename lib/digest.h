/*
 * digest.h - hashes of local files, for comparing what stores hold.
 *
 * Reads with pread from offset 0 to the end of the file, so the caller's
 * file offset is untouched.  Blocking disk reads: call it from a tool, a
 * workq job, or on the loop only for files just written (page-cache speed).
 */
#ifndef IMGSYNC_DIGEST_H
#define IMGSYNC_DIGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define DIGEST_MD5_LEN 16

/* MD5 of the whole content of fd.  Errors: ERR_IO (read), ERR_NOMEM. */
bool digest_md5_fd(int fd, unsigned char out[DIGEST_MD5_LEN], struct err *e) WUR;

/* Add [off, off + len) of fd to a hash in progress: ctx is an OpenSSL
 * EVP_MD_CTX * (void * here, so that this header needs no OpenSSL), for a
 * file filled in order over time.  Errors: ERR_IO (read, or the file ends
 * early), ERR_NOMEM. */
bool digest_update_fd(void *ctx, int fd, uint64_t off, uint64_t len, struct err *e) WUR;

/* The same for a CRC-32C in progress (crc32c.h; *crc starts at 0). */
bool digest_crc32c_fd(uint32_t *crc, int fd, uint64_t off, uint64_t len, struct err *e) WUR;

#endif
