/* test-text: crc32c vectors, JSON string escaping, escaping for the log. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "util/crc32c.h"
#include "util/jsonstr.h"
#include "util/log.h"
#include "tap.h"
#include "testutil.h"

static void crc32c_vectors(void)
{
	unsigned char zeros[32] = { 0 }, ones[32], inc[32], dec[32];

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		inc[i] = (unsigned char)i;
		dec[i] = (unsigned char)(31 - i);
	}
	is_int(crc32c(0, "123456789", 9), 0xE3069283u, "crc32c(\"123456789\") = 0xE3069283");
	is_int(crc32c(0, "", 0), 0, "crc32c of nothing = 0");
	/* RFC 3720, B.4 */
	is_int(crc32c(0, zeros, 32), 0x8A9136AAu, "crc32c(32 x 00) = 0x8A9136AA");
	is_int(crc32c(0, ones, 32), 0x62A8AB43u, "crc32c(32 x FF) = 0x62A8AB43");
	is_int(crc32c(0, inc, 32), 0x46DD794Eu, "crc32c(00..1F) = 0x46DD794E");
	is_int(crc32c(0, dec, 32), 0x113FDB5Cu, "crc32c(1F..00) = 0x113FDB5C");
	is_int(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xE3069283u, "crc32c continues across calls");
}

/* jsonstr_append(@in) must give exactly @want, and a JSON string yajl accepts. */
static void escapes(const char *what, const char *in, size_t n, const char *want)
{
	char *buf = NULL, err[128];
	size_t len = 0, cap = 0;
	yajl_val v;
	int r = jsonstr_append(&buf, &len, &cap, in, n);

	if (!ok(r == 0 && len == strlen(want) && !strcmp(buf, want), "jsonstr: %s", what))
		diag("  got %s / want %s", buf ? buf : "(null)", want);
	v = buf ? yajl_tree_parse(buf, err, sizeof(err)) : NULL;
	ok(YAJL_IS_STRING(v), "jsonstr: %s: valid JSON string", what);
	yajl_tree_free(v);
	free(buf);
}

static void jsonstr_escaping(void)
{
	escapes("plain text kept", "hello world", 11, "\"hello world\"");
	escapes("empty string", "", 0, "\"\"");
	escapes("quote and backslash", "a\"b\\c", 5, "\"a\\\"b\\\\c\"");
	escapes("newline, tab, CR", "1\n2\t3\r", 6, "\"1\\n2\\t3\\r\"");
	escapes("other control bytes and DEL as \\u00XX", "\x01\x08\x0c\x1f\x7f", 5, "\"\\u0001\\u0008\\u000c\\u001f\\u007f\"");
	escapes("NUL byte", "a\0b", 3, "\"a\\u0000b\"");
	escapes("valid multibyte UTF-8 kept", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
		"\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
	escapes("stray continuation and 0xFF bytes", "\x80x\xff", 3, "\"\\u0080x\\u00ff\"");
	escapes("truncated sequence at the end", "ok\xc3", 3, "\"ok\\u00c3\"");
	escapes("truncated sequence before ASCII", "\xe2\x82z", 3, "\"\\u00e2\\u0082z\"");
	escapes("overlong encoding", "\xc0\xaf", 2, "\"\\u00c0\\u00af\"");
	escapes("UTF-16 surrogate encoded in UTF-8", "\xed\xa0\x80", 3, "\"\\u00ed\\u00a0\\u0080\"");
	escapes("code point above U+10FFFF", "\xf4\x90\x80\x80", 4, "\"\\u00f4\\u0090\\u0080\\u0080\"");

	{
		char *buf = NULL;
		size_t len = 0, cap = 0;
		char big[3000];

		memset(big, 'x', sizeof(big));
		jsonstr_raw(&buf, &len, &cap, "{\"k\":", 5);
		jsonstr_append(&buf, &len, &cap, big, sizeof(big));
		jsonstr_raw(&buf, &len, &cap, "}", 1);
		ok(len == 5 + 3002 + 1 && buf[len] == '\0' && !memcmp(buf, "{\"k\":\"xxx", 9) && !strcmp(buf + len - 3, "x\"}"),
		   "jsonstr: appends after existing text, grows the buffer, stays NUL-terminated");
		free(buf);
	}
}

/* What reaches a terminal or the notify socket: no control character, C0, DEL or C1, gets through raw. */
static void defang(void)
{
	char out[64];

	log_defang(out, sizeof(out), "a\nWATCHDOG=1\x1b[2J\x7f");
	is_str(out, "a\\x0aWATCHDOG=1\\x1b[2J\\x7f", "C0 controls and DEL escaped");
	log_defang(out, sizeof(out), "x\xc2\x9b" "31m\xc2\x85y");
	is_str(out, "x\\u009b31m\\u0085y", "C1 controls (UTF-8 CSI, NEL) escaped");
	log_defang(out, sizeof(out), "caf\xc3\xa9 \xc2\xa0\xc2");
	is_str(out, "caf\xc3\xa9 \xc2\xa0\xc2", "other UTF-8 (a no-break space too) and a lone lead byte kept");
	log_defang(out, 8, "\x01\x02\x03");
	ok(strlen(out) < 8, "bounded by the output's size (%s)", out);
}

int main(void)
{
	crc32c_vectors();
	defang();
	jsonstr_escaping();
	return done_testing();
}
