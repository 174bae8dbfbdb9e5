/* test-misc: crc32c vectors, JSON string escaping, the spool queue and file names, spool_move, back-off bounds. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "connection.h"
#include "crc32c.h"
#include "jsonstr.h"
#include "spool.h"
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

static void pops_in_order(const char *what, struct spool_queue *q, const char *const *want, size_t n)
{
	struct spool_entry e;
	char got[256] = "", exp[256] = "";
	while (spool_queue_pop(q, &e) == 1) {
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s ", e.name);
		free(e.name);
	}
	for (size_t i = 0; i < n; i++)
		snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp), "%s ", want[i]);
	is_str(got, exp, "%s", what);
}

static void spool_queue_order(void)
{
	struct spool_queue q = { 0 };
	struct spool_entry e;
	static const char *const order1[] = { "a", "b", "d", "c" };
	static const char *const order2[] = { "c", "a", "b", "d" };

	spool_queue_add(&q, "c", 300);
	spool_queue_add(&q, "b", 100);
	spool_queue_add(&q, "a", 100);
	spool_queue_add(&q, "d", 200);
	spool_queue_add(&q, "b", 100);
	is_int(spool_queue_len(&q), 4, "a name queued twice is queued once");
	is_int(spool_queue_oldest(&q), 100, "oldest mtime");
	pops_in_order("popped by (mtime, name): a b d c", &q, order1, 4);
	ok(spool_queue_pop(&q, &e) == 0 && spool_queue_len(&q) == 0 && spool_queue_oldest(&q) == 0,
	   "empty queue: pop gives 0, oldest 0");

	spool_queue_add(&q, "c", 300);
	spool_queue_add(&q, "b", 100);
	spool_queue_add(&q, "a", 100);
	spool_queue_add(&q, "d", 200);
	spool_queue_add(&q, "c", 50);   /* rewritten in place: ordered by its newest mtime */
	is_int(spool_queue_len(&q), 4, "a re-added name with a new mtime is still queued once");
	pops_in_order("re-added name takes its new mtime's place: c a b d", &q, order2, 4);

	/* Interleaved adds and pops. */
	spool_queue_add(&q, "m", 500);
	spool_queue_add(&q, "n", 600);
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "m"), "interleaved: m first");
	free(e.name);
	spool_queue_add(&q, "z", 550);
	spool_queue_add(&q, "y", 550);
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "y"), "interleaved: then y (550, before z by name)");
	free(e.name);
	spool_queue_add(&q, "m", 500);  /* taken already: a new drop under the same name queues again */
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "m"), "a name popped earlier can be queued again");
	free(e.name);
	pops_in_order("the rest: z n", &q, (const char *const[]){ "z", "n" }, 2);

	for (int i = 0; i < 100; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%03d", 99 - i);
		spool_queue_add(&q, name, 1000);
	}
	{
		bool sorted = true;
		char prev[16] = "";

		for (int i = 0; i < 100; i++) {
			if (spool_queue_pop(&q, &e) != 1 || strcmp(prev, e.name) >= 0)
				sorted = false;
			if (e.name)
				snprintf(prev, sizeof(prev), "%s", e.name);
			free(e.name);
			e.name = NULL;
		}
		ok(sorted, "100 files with one mtime come out by name");
	}
	spool_queue_add(&q, "left", 1);
	spool_queue_add(&q, "over", 2);
	spool_queue_clear(&q);
	is_int(spool_queue_len(&q), 0, "clear empties the queue");
	spool_queue_add(&q, "left", 1);
	spool_queue_release(&q);
}

static void spool_names(void)
{
	static const struct {
		const char *name;
		bool eligible;
	} cases[] = {
		{ "orders.ndjson", true },   { "orders.jsonl", true },       { "2024-01-01.part-3.ndjson", true },
		{ ".orders.ndjson", false }, { ".hidden.jsonl", false },     { "orders.ndjson.tmp", false },
		{ "orders.tmp", false },     { "orders.json", false },       { "orders.csv", true },
		{ ".ndjson", false },        { "ndjson", false },            { "orders.ndjson~", false },
		{ "orders.jsonl.part", false },
		/* the formats of issue 15: the name says the format, compression last */
		{ "orders.tsv", true },      { "orders.csv.gz", true },      { "feed.ndjson.zst", true },
		{ "feed.jsonl.gz", true },   { "orders.tsv.zst", true },     { "orders.gz", false },
		{ "orders.csv.gz.tmp", false }, { ".orders.csv.gz", false }, { "orders.gz.csv", true },
		{ "orders.csv.bz2", false }, { "orders.zst", false },        { "orders.CSV", false },
		{ "orders.csv.GZ", false },  { ".csv", false },              { "csv.gz", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(spool_name_eligible(cases[i].name) == cases[i].eligible, "spool_name_eligible(\"%s\") is %s",
		   cases[i].name, cases[i].eligible ? "true" : "false");
	ok(spool_name_kind("orders.CSV.gz") == SPOOL_NAME_WRONG_CASE, "orders.CSV.gz: a name in the wrong case");
	ok(spool_name_kind("orders.tsv.ZST") == SPOOL_NAME_WRONG_CASE, "orders.tsv.ZST: a name in the wrong case");
	ok(spool_name_kind("orders.csv.bz2") == SPOOL_NAME_OTHER, "orders.csv.bz2: another name");
}

/* What the connection does with each scanned name: queue it when it is a drop and ready. */
static int scan_dir = -1;

static void scan_ready(void *userdata, const char *name)
{
	struct spool_look look;

	/* As root (the owner) the lease answers; unprivileged, the settle time of 0 lets old files in. */
	if (spool_name_kind(name) == SPOOL_NAME_DROP && spool_inspect(scan_dir, name, -1, 0, &look) == 0 &&
	    look.verdict == SPOOL_READY)
		(void)spool_queue_add(userdata, name, look.mtime_ns);
}

static void spool_files(void)
{
	char *dir = tmpdir_new("spool");
	char *a = path_join(dir, "a.ndjson"), *b = path_join(dir, "b.ndjson"), *c = path_join(dir, "c.jsonl"),
	     *open_w = path_join(dir, "writing.ndjson"), *skip = path_join(dir, ".x.ndjson"), *moved;
	struct timespec older[2] = { { 1700000000, 5 }, { 1700000000, 5 } };
	struct timespec newer[2] = { { 1700000100, 0 }, { 1700000100, 0 } };
	struct spool_queue q = { 0 };
	struct spool_entry e;
	char *data = NULL;
	size_t len;
	int wfd;

	write_file(a, "{\"id\":1}\n", 9, 0640);
	write_file(b, "{\"id\":2}\n", 9, 0640);
	write_file(c, "{\"id\":3}\n", 9, 0640);
	write_file(skip, "x\n", 2, 0640);
	utimensat(AT_FDCWD, b, older, 0);   /* b oldest, then a and c by name (same mtime) */
	utimensat(AT_FDCWD, a, newer, 0);
	utimensat(AT_FDCWD, c, newer, 0);
	wfd = open(open_w, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
	scan_dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	is_int(spool_scan(dir, scan_ready, &q), 0, "spool_scan");
	close(scan_dir);
	is_int(spool_queue_len(&q), 3, "scan queues the 3 eligible closed files (not a dot-file, not one open for writing)");
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "b.ndjson") && e.mtime_ns == 1700000000000000005,
	   "oldest first, with its mtime in ns");
	free(e.name);
	pops_in_order("then a.ndjson and c.jsonl (same mtime) by name", &q,
		      (const char *const[]){ "a.ndjson", "c.jsonl" }, 2);
	spool_queue_release(&q);
	close(wfd);

	moved = path_join(dir, "moved.ndjson");
	is_int(spool_move_at(AT_FDCWD, a, AT_FDCWD, moved), 0, "spool_move_at renames");
	ok(access(a, F_OK) < 0 && (data = read_whole(moved, &len)) && len == 9 && !memcmp(data, "{\"id\":1}\n", 9),
	   "the file is at its new name with its content");
	free(data);
	data = NULL;
	is_int(spool_move_at(AT_FDCWD, b, AT_FDCWD, moved), -EEXIST, "spool_move_at never replaces an existing file");
	ok((data = read_whole(moved, &len)) && !memcmp(data, "{\"id\":1}", 8) && access(b, F_OK) == 0,
	   "both files untouched after the refusal");
	free(data);
	free(a);
	free(b);
	free(c);
	free(open_w);
	free(skip);
	free(moved);
	tmpdir_remove(dir);
}

static void backoff_bounds(void)
{
	static const double rnds[] = { 0, 1e-9, 0.25, 0.5, 0.999999 };
	unsigned bad = 0, not_monotone = 0;

	for (size_t k = 0; k < sizeof(rnds) / sizeof(rnds[0]); k++) {
		double prev = 0;

		for (unsigned n = 0; n < 80; n++) {
			double cap = fmin(300, 0.5 * pow(2, n)), d = connection_backoff(0.5, 300, n, rnds[k]);

			if (!(d >= 0 && d <= cap && fabs(d - rnds[k] * cap) <= 1e-9 * cap))
				bad++;
			if (d < prev)
				not_monotone++;
			prev = d;
		}
	}
	is_int(bad, 0, "backoff = rnd * min(max, initial * 2^n), so 0 <= d <= min(max, initial * 2^n), n = 0..79");
	is_int(not_monotone, 0, "for a given rnd the delay never shrinks as attempts grow");
	ok(connection_backoff(1, 300, 0, 0.999) < 1 && connection_backoff(1, 300, 3, 0.999) > 7.9,
	   "attempt 0 stays under initial; attempt 3 reaches ~8x initial");
	is_int(connection_backoff(2, 60, 7, 0) * 1000, 0, "rnd 0 gives no delay");
	ok(connection_backoff(2, 60, 1000, 0.999999) <= 60 && connection_backoff(2, 60, 1000, 0.999999) > 59.9,
	   "attempt 1000: capped at max, finite");
	ok(connection_backoff(2, 60, 4294967295u, 0.5) == 30, "attempt UINT_MAX: max * rnd");
}

int main(void)
{
	crc32c_vectors();
	jsonstr_escaping();
	spool_queue_order();
	spool_names();
	spool_files();
	backoff_bounds();
	return done_testing();
}
