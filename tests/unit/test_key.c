/*
 * test_key.c - key_validate() against hostile keys, key_escape().
 *
 * Keys are passed with an explicit length (sizeof literal - 1) so embedded
 * NULs reach the validator.  Every rejection must be ERR_INVALID, name the
 * problem (and its byte offset where the test says so), and carry no raw
 * control or non-ASCII byte: a hostile key must not be able to forge a log
 * line through the error message.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "key.h"
#include "tap.h"

static bool msg_is_clean(const char *m)
{
	for (const unsigned char *p = (const unsigned char *)m; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			return false;
	return true;
}

static void accept_n(const char *k, size_t len, const char *name)
{
	struct err e;

	err_clear(&e);
	if (!ok(key_validate(k, len, &e), "accepts %s", name))
		tap_diag("message: %s", e.msg);
}

static void reject_n(const char *k, size_t len, const char *needle, const char *name)
{
	struct err e;
	bool res;

	err_clear(&e);
	res = key_validate(k, len, &e);
	if (!ok(!res && e.code == ERR_INVALID && msg_is_clean(e.msg) &&
		    (needle == NULL || strstr(e.msg, needle) != NULL),
		"rejects %s", name))
		tap_diag("result %d, code %s, message: %s (wanted \"%s\")", res,
			 err_code_name(e.code), e.msg, needle ? needle : "");
}

#define ACCEPT(lit, name)	  accept_n(lit, sizeof(lit) - 1, name)
#define REJECT(lit, needle, name) reject_n(lit, sizeof(lit) - 1, needle, name)

static void test_accepted(void)
{
	ACCEPT("a", "one byte");
	ACCEPT("a/b/c.jpg", "nested key");
	ACCEPT("a..b", "'..' inside a segment");
	ACCEPT(".hidden", "leading dot");
	ACCEPT("a/.b", "dot file in a folder");
	ACCEPT("a/b.", "trailing dot");
	ACCEPT("...", "'...' segment");
	ACCEPT("a/.../b", "'...' middle segment");
	ACCEPT("..a/b..", "dots around names");
	ACCEPT("with space/and more.png", "spaces");
	ACCEPT("a+b=c%20*~!@#$&()[]{};:,'\"<>?`|^", "punctuation + = % * ~ and friends");
	ACCEPT("back\\slash", "backslash (not a separator on POSIX or S3)");
	ACCEPT("caf\xc3\xa9/na\xc3\xafve.jpg", "Latin-1 letters in UTF-8");
	ACCEPT("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e/\xe5\x86\x99\xe7\x9c\x9f.jpg", "CJK");
	ACCEPT("\xf0\x9f\x98\x80.png", "emoji U+1F600");
	ACCEPT("\xc2\xa0", "U+00A0, first code point after C1");
	ACCEPT("\xdf\xbf", "U+07FF, last 2-byte");
	ACCEPT("\xe0\xa0\x80", "U+0800, first 3-byte");
	ACCEPT("\xed\x9f\xbf", "U+D7FF, just below the surrogates");
	ACCEPT("\xee\x80\x80", "U+E000, just above the surrogates");
	ACCEPT("\xef\xbf\xbf", "U+FFFF");
	ACCEPT("\xf0\x90\x80\x80", "U+10000, first 4-byte");
	ACCEPT("\xf4\x8f\xbf\xbf", "U+10FFFF, the last code point");
}

static void test_length(void)
{
	char k[KEY_MAX + 2];
	struct err e;

	reject_n("", 0, "empty", "empty key");
	err_clear(&e);
	ok(!key_validate(NULL, 0, &e) && e.code == ERR_INVALID, "rejects a NULL key");

	memset(k, 'a', sizeof(k));
	accept_n(k, KEY_MAX, "1024 bytes");
	reject_n(k, KEY_MAX + 1, "1025 bytes long, more than the 1024", "1025 bytes");
	err_clear(&e);
	ok(!key_validate(k, KEY_MAX + 1, &e) && strlen(e.msg) < 200 && strstr(e.msg, "...\""),
	   "the message quotes a long key cut short (%zu bytes)", strlen(e.msg));

	/* 256 four-byte emoji = exactly 1024 bytes; one more ASCII byte is too many. */
	for (int i = 0; i < 256; i++)
		memcpy(k + 4 * i, "\xf0\x9f\x98\x80", 4);
	accept_n(k, KEY_MAX, "256 emoji (1024 bytes)");
	k[KEY_MAX] = 'x';
	reject_n(k, KEY_MAX + 1, "more than the 1024", "256 emoji + 1 byte");
}

static void test_traversal(void)
{
	REJECT("..", "'..' path segment at byte 0", "'..'");
	REJECT(".", "'.' path segment at byte 0", "'.'");
	REJECT("../a", "'..' path segment at byte 0", "'../a'");
	REJECT("a/..", "'..' path segment at byte 2", "'a/..'");
	REJECT("a/../b", "'..' path segment at byte 2", "'a/../b'");
	REJECT("x/y/../../..", "'..' path segment at byte 4", "'x/y/../../..'");
	REJECT("../../etc/passwd", "'..'", "'../../etc/passwd'");
	REJECT("./a", "'.' path segment at byte 0", "'./a'");
	REJECT("a/.", "'.' path segment at byte 2", "'a/.'");
	REJECT("a/./b", "'.' path segment at byte 2", "'a/./b'");
	REJECT("/a", "starts with '/' at byte 0", "absolute '/a'");
	REJECT("/etc/passwd", "starts with '/'", "absolute '/etc/passwd'");
	REJECT("/", "starts with '/'", "'/'");
	REJECT("//", "starts with '/'", "'//'");
	REJECT("a//b", "empty path segment at byte 2", "'a//b'");
	REJECT("abc//d", "empty path segment at byte 4", "'abc//d'");
	REJECT("a/", "empty path segment at byte 2 (trailing '/')", "trailing '/'");
	REJECT("a/b/", "trailing '/'", "'a/b/'");
}

/* What an HTTP server, a CDN or a Windows client would turn into "..". */
static void test_hidden_traversal(void)
{
	REJECT("%2e%2e", "percent-encoded '.' or '..' path segment at byte 0", "'%2e%2e'");
	REJECT("a/%2E%2E/b", "percent-encoded '.' or '..' path segment at byte 2",
	       "'%2E%2E' upper case");
	REJECT("a/.%2e", "percent-encoded", "'.%2e'");
	REJECT("%2e./b", "percent-encoded", "'%2e.'");
	REJECT("%2e", "percent-encoded", "'%2e' (a hidden '.')");
	REJECT("a/%252e%252e/b", "percent-encoded", "double-encoded '%252e%252e'");
	REJECT("%25252e%25252e", "percent-encoded", "triple-encoded");
	REJECT("a/..%2fetc", "percent-encoded", "'..%2f' (encoded slash after '..')");
	REJECT("a/x%2F..%2Fy", "percent-encoded", "'..' between encoded slashes");
	REJECT("a/..%5cwin", "percent-encoded", "'..%5c' (encoded backslash)");
	REJECT("..\\windows", "with '\\' as a separator at byte 0", "'..\\' literal backslash");
	REJECT("a/b\\..\\c", "with '\\' as a separator at byte 2", "'\\..\\' inside a segment");
	REJECT("a/x%00.jpg", "percent-encoded NUL or control character at byte 2", "'%00'");
	REJECT("a%0d%0aSet-Cookie", "percent-encoded NUL or control", "encoded CR LF");
	REJECT("a%250a", "percent-encoded NUL or control", "double-encoded LF");
	REJECT("%c0%ae%c0%ae/x", "percent-encoded overlong UTF-8 at byte 0",
	       "'%c0%ae' overlong dots");
	REJECT("%e0%80%ae", "percent-encoded overlong UTF-8", "3-byte overlong dot");
	REJECT("%f0%80%80%ae", "percent-encoded overlong UTF-8", "4-byte overlong dot");
	ACCEPT("100%.jpg", "a lone '%'");
	ACCEPT("a%20b/c%2Bd", "ordinary percent escapes");
	ACCEPT("a%2Fb", "an encoded slash between names");
	ACCEPT("%2e%2e%2e", "'...' encoded");
	ACCEPT("x%2e%2e", "encoded dots inside a name");
	ACCEPT("%zz%2", "'%' not followed by two hex digits");
	ACCEPT("caf%C3%A9", "percent-encoded UTF-8");
	ACCEPT("%E0%A4%95", "percent-encoded U+0915 (E0 with a valid continuation)");
	ACCEPT("%E0a", "percent-encoded Latin-1 a-grave before ASCII");
	ACCEPT("a\\b", "backslash between names");
}

static void test_nul(void)
{
	REJECT("a\0b", "NUL byte at byte 1", "NUL inside");
	REJECT("\0", "NUL byte at byte 0", "a lone NUL");
	REJECT("a/\0", "NUL byte at byte 2", "NUL after a slash");
	REJECT("a.jpg\0../../etc/passwd", "NUL byte at byte 5", "NUL truncation trick");
}

static void test_controls(void)
{
	char k[8], msg[64];
	int bad = 0;

	/* C0: every byte 0x01..0x1F, in the middle of a key. */
	for (int c = 1; c < 0x20; c++) {
		struct err e;

		snprintf(k, sizeof(k), "ab%cd", c);
		snprintf(msg, sizeof(msg), "control character 0x%02X at byte 2", c);
		err_clear(&e);
		if (key_validate(k, 4, &e) || e.code != ERR_INVALID || !strstr(e.msg, msg) ||
		    !msg_is_clean(e.msg)) {
			tap_diag("C0 0x%02X: %s", c, e.msg);
			bad++;
		}
	}
	ok(bad == 0, "rejects every C0 control 0x01..0x1F with its offset");
	REJECT("line\nbreak", "control character 0x0A at byte 4", "newline");
	REJECT("tab\there", "control character 0x09", "tab");
	REJECT("esc\x1b[31m", "control character 0x1B", "ANSI escape");
	REJECT("del\x7f", "control character 0x7F at byte 3", "DEL");

	/* C1: U+0080..U+009F, encoded C2 80..C2 9F. */
	bad = 0;
	for (int c = 0x80; c < 0xa0; c++) {
		struct err e;

		k[0] = 'x';
		k[1] = (char)0xc2;
		k[2] = (char)c;
		snprintf(msg, sizeof(msg), "C1 control character U+%04X at byte 1", c);
		err_clear(&e);
		if (key_validate(k, 3, &e) || e.code != ERR_INVALID || !strstr(e.msg, msg) ||
		    !msg_is_clean(e.msg)) {
			tap_diag("C1 U+%04X: %s", c, e.msg);
			bad++;
		}
	}
	ok(bad == 0, "rejects every C1 control U+0080..U+009F with its offset");
	REJECT("a\xc2\x85", "U+0085", "NEL (U+0085)");
	REJECT("a\xc2\x9b", "U+009B", "CSI (U+009B)");
}

static void test_utf8(void)
{
	REJECT("\x80", "unexpected UTF-8 continuation byte at byte 0", "lone continuation 0x80");
	REJECT("ab\xbf", "continuation byte at byte 2", "lone continuation 0xBF");
	REJECT("\xc0\x80", "overlong UTF-8 encoding at byte 0", "overlong NUL C0 80");
	REJECT("\xc0\xaf", "overlong", "overlong '/' C0 AF");
	REJECT("\xc1\xbf", "overlong", "overlong C1 BF");
	REJECT("a\xe0\x80\x80", "overlong UTF-8 encoding at byte 1", "overlong 3-byte NUL");
	REJECT("\xe0\x80\xae\xe0\x80\xae", "overlong", "overlong 3-byte '..'");
	REJECT("\xe0\x9f\xbf", "overlong", "overlong U+07FF in 3 bytes");
	REJECT("\xf0\x80\x80\x80", "overlong", "overlong 4-byte NUL");
	REJECT("\xf0\x8f\xbf\xbf", "overlong", "overlong U+FFFF in 4 bytes");
	REJECT("\xed\xa0\x80", "surrogate", "surrogate U+D800");
	REJECT("\xed\xbf\xbf", "surrogate", "surrogate U+DFFF");
	REJECT("\xed\xa0\xbd\xed\xb8\x80", "surrogate", "CESU-8 surrogate pair");
	REJECT("\xf4\x90\x80\x80", "above U+10FFFF", "U+110000");
	REJECT("\xf7\xbf\xbf\xbf", "above U+10FFFF", "U+1FFFFF");
	REJECT("\xf8\x88\x80\x80\x80", "invalid UTF-8 lead byte", "5-byte form F8");
	REJECT("\xfc\x84\x80\x80\x80\x80", "invalid UTF-8 lead byte", "6-byte form FC");
	REJECT("ok\xfe", "invalid UTF-8 lead byte at byte 2", "byte FE");
	REJECT("ok\xff", "invalid UTF-8 lead byte at byte 2", "byte FF");
	REJECT("ab\xc3", "truncated UTF-8 sequence (the key ends inside it)", "truncated 2-byte");
	REJECT("ab\xe2\x82", "truncated UTF-8 sequence (the key ends inside it) at byte 2",
	       "truncated 3-byte");
	REJECT("\xf0\x9f\x98", "(the key ends inside it)", "truncated 4-byte");
	REJECT("\xc3"
	       "A",
	       "missing continuation byte) at byte 1", "2-byte with ASCII after");
	REJECT("a\xe2\x28\xa1", "missing continuation byte) at byte 2", "3-byte broken");
	REJECT("\xf0\x9f"
	       "A\x80",
	       "missing continuation byte) at byte 2", "4-byte broken");
	REJECT("\xe9t\xe9.jpg", "missing continuation byte", "Latin-1, not UTF-8");
	REJECT("\xc3/", "missing continuation byte", "lead byte before '/'");
}

static void test_message_escaping(void)
{
	static const char forged[] = "evil\n2024-01-01 imgsyncd[1]: ERROR forged \"line\"";
	struct err e;

	err_clear(&e);
	ok(!key_validate(forged, sizeof(forged) - 1, &e), "a log-forging key is rejected");
	ok(msg_is_clean(e.msg), "its message has no raw control byte: %s", e.msg);
	ok(strstr(e.msg, "evil\\x0a2024") != NULL, "the newline is shown as \\x0a");
	ok(strstr(e.msg, "\\\"line\\\"") != NULL, "quotes inside the key are escaped");

	err_clear(&e);
	ok(!key_validate("a\0b", 3, &e) && strstr(e.msg, "\"a\\x00b\""),
	   "a NUL is shown as \\x00 and the rest of the key is still quoted: %s", e.msg);
	err_clear(&e);
	ok(!key_validate("\xc3\xa9/\xff", 4, &e) && strstr(e.msg, "\"\\xc3\\xa9/\\xff\""),
	   "non-ASCII bytes are shown as \\xNN: %s", e.msg);
}

static void test_escape(void)
{
	char out[64];

	key_escape("abc", 3, out, sizeof(out));
	is_str(out, "abc", "escape: plain text unchanged");
	key_escape("a\"b\\c", 5, out, sizeof(out));
	is_str(out, "a\\\"b\\\\c", "escape: quote and backslash");
	key_escape("\0\x1f\x7f\x80\xff", 5, out, sizeof(out));
	is_str(out, "\\x00\\x1f\\x7f\\x80\\xff", "escape: controls and high bytes");
	key_escape("abcdefg", 7, out, 8);
	is_str(out, "abcdefg", "escape: exactly fits (7 chars + NUL in 8)");
	key_escape("abcdefgh", 8, out, 8);
	is_str(out, "abcd...", "escape: cut with ... in 8 bytes");
	key_escape("a\x01zzzzzz", 8, out, 8);
	is_str(out, "a...", "escape: never splits an escape sequence");
	key_escape("abcdef", 6, out, 3);
	is_str(out, "..", "escape: tiny buffer gets what dots fit");
	memset(out, 'Z', sizeof(out));
	key_escape("abcdef", 6, out, 1);
	is_str(out, "", "escape: one-byte buffer is just the NUL");
	key_escape(NULL, 5, out, sizeof(out));
	is_str(out, "", "escape: NULL key is empty");
	key_escape("", 0, out, sizeof(out));
	is_str(out, "", "escape: empty key");
}

int main(void)
{
	test_accepted();
	test_length();
	test_traversal();
	test_hidden_traversal();
	test_nul();
	test_controls();
	test_utf8();
	test_message_escaping();
	test_escape();
	return tap_done();
}
