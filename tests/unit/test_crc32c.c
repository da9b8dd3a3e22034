/* Units for lib/crc32c.c: the published check values (RFC 3720 B.4, and
 * the "123456789" check of every CRC catalogue), the instruction and the
 * tables agreeing at every length and alignment, and a CRC carried over
 * pieces equal to the CRC of the whole. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "crc32c.h"
#include "tap.h"

static void vector(const char *name, const unsigned char *p, size_t n, uint32_t want)
{
	uint32_t hw = crc32c(0, p, n), sw = crc32c_sw(0, p, n);

	ok(hw == want, "%s: %08x (want %08x)", name, hw, want);
	ok(sw == want, "%s, by table: %08x", name, sw);
}

int main(void)
{
	unsigned char buf[4096 + 16], zeros[32] = {0}, ones[32], inc[32], dec[32];
	uint64_t x = 88172645463325252ull;
	int bad = 0, badsplit = 0;

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		inc[i] = (unsigned char)i;
		dec[i] = (unsigned char)(31 - i);
	}
	vector("\"123456789\"", (const unsigned char *)"123456789", 9, 0xE3069283u);
	vector("32 bytes of zeros", zeros, 32, 0x8A9136AAu);
	vector("32 bytes of ones", ones, 32, 0x62A8AB43u);
	vector("32 incrementing bytes", inc, 32, 0x46DD794Eu);
	vector("32 decrementing bytes", dec, 32, 0x113FDB5Cu);
	ok(crc32c(0, NULL, 0) == 0, "nothing: 0");

	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
	for (size_t off = 0; off < 16; off++)
		for (size_t n = 0; n <= 4096; n += n < 64 ? 1 : 61)
			bad += crc32c(0, buf + off, n) != crc32c_sw(0, buf + off, n);
	ok(bad == 0, "instruction and tables agree at every alignment and length (%d differ)", bad);
	for (size_t cut = 0; cut <= 4096; cut += 7) {
		uint32_t whole = crc32c(0, buf, 4096);

		badsplit += crc32c(crc32c(0, buf, cut), buf + cut, 4096 - cut) != whole;
		badsplit += crc32c_sw(crc32c(0, buf, cut), buf + cut, 4096 - cut) != whole;
	}
	ok(badsplit == 0, "a CRC carried over two pieces is the whole's (%d differ)", badsplit);
	{
		uint32_t before = crc32c(0, buf, 4096);

		buf[1000] ^= 0x10;
		ok(crc32c(0, buf, 4096) != before, "one bit changed changes the CRC");
	}
	return tap_done();
}
