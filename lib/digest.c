/*
 * digest.c - hashes of local files (OpenSSL EVP).
 */
#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <sys/types.h>
#include <unistd.h>

bool digest_update_fd(void *ctx, int fd, uint64_t off, uint64_t len, struct err *e)
{
	unsigned char buf[65536];

	while (len > 0) {
		ssize_t k =
		    pread(fd, buf, len < sizeof(buf) ? (size_t)len : sizeof(buf), (off_t)off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return err_sys(e, errno, "cannot read a file to hash it");
		if (k == 0)
			return err_set(e, ERR_IO, "a file to hash ended %llu bytes early",
				       (unsigned long long)len);
		if (EVP_DigestUpdate(ctx, buf, (size_t)k) != 1)
			return err_set(e, ERR_NOMEM, "OpenSSL could not compute a hash");
		off += (uint64_t)k;
		len -= (uint64_t)k;
	}
	return true;
}

bool digest_md5_fd(int fd, unsigned char out[DIGEST_MD5_LEN], struct err *e)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char buf[65536];
	unsigned int n = DIGEST_MD5_LEN;
	off_t off = 0;
	ssize_t k;
	bool ok;

	if (ctx == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1;
	while (ok && (k = pread(fd, buf, sizeof(buf), off)) != 0) {
		if (k < 0) {
			if (errno == EINTR)
				continue;
			err_sys(e, errno, "cannot read a file to hash it");
			EVP_MD_CTX_free(ctx);
			return false;
		}
		ok = EVP_DigestUpdate(ctx, buf, (size_t)k) == 1;
		off += k;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, out, &n) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return err_set(e, ERR_NOMEM, "OpenSSL could not compute an MD5");
	return true;
}
