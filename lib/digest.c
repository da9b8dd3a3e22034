/*
 * digest.c - hashes of local files (OpenSSL EVP; CRC-32C: crc32c.c).
 */
#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <sys/types.h>
#include <unistd.h>

#include "crc32c.h"

static bool md5_add(void *ctx, const void *p, size_t n)
{
	return EVP_DigestUpdate(ctx, p, n) == 1;
}

static bool crc_add(void *ctx, const void *p, size_t n)
{
	*(uint32_t *)ctx = crc32c(*(uint32_t *)ctx, p, n);
	return true;
}

/* Add [off, off + len) of fd to ctx; with to_end, the file may end sooner. */
static bool update_with(bool (*add)(void *ctx, const void *p, size_t n), void *ctx, int fd,
			uint64_t off, uint64_t len, bool to_end, struct err *e)
{
	unsigned char buf[65536];

	while (len > 0) {
		ssize_t k =
		    pread(fd, buf, len < sizeof(buf) ? (size_t)len : sizeof(buf), (off_t)off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return err_sys(e, errno, "cannot read a file to hash it");
		if (k == 0 && to_end)
			return true;
		if (k == 0)
			return err_set(e, ERR_IO, "a file to hash ended %llu bytes early",
				       (unsigned long long)len);
		if (!add(ctx, buf, (size_t)k))
			return err_set(e, ERR_NOMEM, "OpenSSL could not compute a hash");
		off += (uint64_t)k;
		len -= (uint64_t)k;
	}
	return true;
}

static bool update(EVP_MD_CTX *ctx, int fd, uint64_t off, uint64_t len, bool to_end, struct err *e)
{
	return update_with(md5_add, ctx, fd, off, len, to_end, e);
}

bool digest_update_fd(void *ctx, int fd, uint64_t off, uint64_t len, struct err *e)
{
	return update(ctx, fd, off, len, false, e);
}

bool digest_crc32c_fd(uint32_t *crc, int fd, uint64_t off, uint64_t len, struct err *e)
{
	return update_with(crc_add, crc, fd, off, len, false, e);
}

bool digest_md5_fd(int fd, unsigned char out[DIGEST_MD5_LEN], struct err *e)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n = DIGEST_MD5_LEN;
	bool ok;

	if (ctx == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return err_set(e, ERR_NOMEM, "OpenSSL could not compute an MD5");
	}
	if (!update(ctx, fd, 0, UINT64_MAX, true, e)) {
		EVP_MD_CTX_free(ctx);
		return false;
	}
	ok = EVP_DigestFinal_ex(ctx, out, &n) == 1;
	EVP_MD_CTX_free(ctx);
	return ok ? true : err_set(e, ERR_NOMEM, "OpenSSL could not compute an MD5");
}
