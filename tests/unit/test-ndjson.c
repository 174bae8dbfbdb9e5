/* test-ndjson: the block reader's lines, numbers and offsets, and the record validator (incl. JSONTestSuite). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "record/record_check.h"
#include "record/record_ndjson.h"
#include "tap.h"
#include "testutil.h"

#define READ_BLOCK (256 * 1024)   /* ndjson.c's read size: buffers hold max_record_bytes + this + 1 */

static char *dir;

/* Write @len bytes to a fresh temp file and return it open for reading. */
static int temp_file(const void *data, size_t len)
{
	static int seq;
	char name[32], *path;
	int fd;

	snprintf(name, sizeof(name), "f%d.ndjson", ++seq);
	path = path_join(dir, name);
	write_file(path, data, len, 0600);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		abort();
	return fd;
}

struct want_line {
	const char *data;       /* NULL: too long */
	uint64_t lineno;
	off_t start, end;
};

/* Read all of @text (from @offset, numbering from @first) and compare with @want. */
static void reads_as(const char *what, const char *text, size_t max, off_t offset, uint64_t first,
		     const struct want_line *want, size_t n_want)
{
	struct ndjson_reader *r;
	struct ndjson_line ln;
	int fd = temp_file(text, strlen(text)), rc;
	size_t i = 0;
	bool same = true;

	if (record_ndjson_reader_new(&r, fd, offset, first, max) < 0) {
		ok(false, "%s: reader opens", what);
		close(fd);
		return;
	}
	while ((rc = record_ndjson_reader_next(r, &ln)) == 1) {
		const struct want_line *w = i < n_want ? &want[i] : NULL;
		bool match = w && ln.lineno == w->lineno && ln.start_offset == w->start && ln.end_offset == w->end &&
			     (w->data ? !ln.too_long && ln.len == strlen(w->data) && !memcmp(ln.data, w->data, ln.len)
				      : ln.too_long && !ln.data);

		if (!match) {
			diag("  line %zu: got #%" PRIu64 " [%lld,%lld) too_long=%d '%.*s'", i, ln.lineno,
			     (long long)ln.start_offset, (long long)ln.end_offset, ln.too_long,
			     ln.data ? (int)ln.len : 0, ln.data ? ln.data : "");
			if (w)
				diag("  line %zu: want #%" PRIu64 " [%lld,%lld) '%s'", i, w->lineno, (long long)w->start,
				     (long long)w->end, w->data ? w->data : "(too long)");
			same = false;
		}
		i++;
	}
	rc = rc == 0 ? record_ndjson_reader_next(r, &ln) : rc;   /* end of file stays end of file */
	ok(same && rc == 0 && i == n_want, "%s: %zu line(s) with exact text, numbers and offsets", what, n_want);
	record_ndjson_reader_free(r);
	close(fd);
}

static void reader_lines(void)
{
	static const struct want_line lf_crlf[] = {
		{ "{\"a\":1}", 1, 0, 8 }, { "{\"b\":2}", 2, 8, 17 }, { "x", 3, 17, 20 },
	};
	static const struct want_line blanks[] = {
		{ "a", 1, 0, 2 }, { "b", 5, 9, 11 }, { "c", 7, 12, 16 },
	};
	static const struct want_line last_no_nl[] = { { "a", 1, 0, 2 }, { "last", 2, 2, 6 } };
	static const struct want_line too_long[] = {
		{ "short", 1, 0, 6 }, { NULL, 2, 6, 47 }, { "after", 3, 47, 53 },
	};
	static const struct want_line too_long_last[] = { { "ok", 1, 0, 3 }, { NULL, 2, 3, 43 } };
	static const struct want_line from_offset[] = { { "three", 3, 8, 14 }, { "four", 4, 14, 19 } };
	static const struct want_line trimmed[] = { { "{\"a\": 1}", 1, 0, 13 } };

	reads_as("LF and CRLF lines", "{\"a\":1}\n{\"b\":2}\r\nx\r\n", 64, 0, 1, lf_crlf, 3);
	reads_as("blank lines count for numbering only", "a\n\n   \n\r\nb\n\nc \t\n", 64, 0, 1, blanks, 3);
	reads_as("last line without a newline", "a\nlast", 64, 0, 1, last_no_nl, 2);
	reads_as("a line over max_record_bytes is reported and skipped",
		 "short\n0123456789012345678901234567890123456789\nafter\n", 16, 0, 1, too_long, 3);
	reads_as("an over-long last line without a newline", "ok\n0123456789012345678901234567890123456789", 16, 0,
		 1, too_long_last, 2);
	reads_as("start at an offset with a first line number", "one\ntwo\nthree\nfour\n", 64, 8, 3, from_offset, 2);
	reads_as("blanks around a record are trimmed, inner ones kept", " \t{\"a\": 1} \r\n", 64, 0, 1, trimmed, 1);
	reads_as("an empty file has no lines", "", 64, 0, 1, NULL, 0);
	reads_as("a file of blank lines has no lines", "\n \n\r\n", 64, 0, 1, NULL, 0);
}

#define BOM "\xEF\xBB\xBF"

/* A UTF-8 byte order mark is skipped at offset 0 of a file only; elsewhere it is line text. */
static void reader_bom(void)
{
	static const struct want_line first[] = { { "{\"a\":1}", 1, 3, 11 }, { "{\"b\":2}", 2, 11, 20 } };
	static const struct want_line crlf_blank[] = { { "x", 2, 5, 8 } };
	static const struct want_line middle[] = { { "a", 1, 0, 2 }, { BOM "b", 2, 2, 7 } };
	static const struct want_line at_offset[] = { { BOM "b", 2, 2, 7 } };
	static const struct want_line partial[] = { { "\xEF\xBB", 1, 0, 3 } };
	const char *a = "a1\n", *b = BOM "b1\n";
	struct ndjson_reader *r;
	struct ndjson_line ln;
	int fa = temp_file(a, strlen(a)), fb = temp_file(b, strlen(b));

	reads_as("a BOM at the start of the file is skipped", BOM "{\"a\":1}\n{\"b\":2}\r\n", 64, 0, 1, first, 2);
	reads_as("a BOM before a blank first line", BOM "\r\nx\r\n", 64, 0, 1, crlf_blank, 1);
	reads_as("a file of only a BOM has no lines", BOM, 64, 0, 1, NULL, 0);
	reads_as("a BOM on line 2 is part of the line", "a\n" BOM "b\n", 64, 0, 1, middle, 2);
	reads_as("a BOM where reading resumes (not offset 0) is part of the line", "a\n" BOM "b\n", 64, 2, 2,
		 at_offset, 1);
	reads_as("two bytes of a BOM are not one", "\xEF\xBB\n", 64, 0, 1, partial, 1);

	if (record_ndjson_reader_new(&r, fa, 0, 1, 64) < 0)
		abort();
	ok(record_ndjson_reader_next(r, &ln) == 1 && ln.len == 2 && !memcmp(ln.data, "a1", 2), "first file read");
	ok(record_ndjson_reader_reset(r, fb, 0, 1) == 0 && record_ndjson_reader_next(r, &ln) == 1 && ln.len == 2 &&
		   !memcmp(ln.data, "b1", 2) && ln.start_offset == 3,
	   "after reset onto a file with a BOM: skipped there too");
	record_ndjson_reader_free(r);
	close(fa);
	close(fb);
}

static void reader_unget(void)
{
	const char *text = "first\nsecond\n";
	struct ndjson_reader *r;
	struct ndjson_line a, b, c;
	int fd = temp_file(text, strlen(text));

	if (record_ndjson_reader_new(&r, fd, 0, 1, 64) < 0)
		abort();
	record_ndjson_reader_next(r, &a);
	is_int(record_ndjson_reader_offset(r), 6, "offset after the first line is the second's start");
	is_int(record_ndjson_reader_lineno(r), 2, "line number after the first line is 2");
	record_ndjson_reader_unget(r);
	is_int(record_ndjson_reader_offset(r), 0, "after unget the offset is the handed-back line's");
	is_int(record_ndjson_reader_lineno(r), 1, "after unget the line number is the handed-back line's");
	ok(record_ndjson_reader_next(r, &b) == 1 && b.len == 5 && !memcmp(b.data, "first", 5) && b.lineno == 1 &&
		   b.start_offset == 0 && b.end_offset == 6,
	   "unget: the next call returns the same line");
	ok(record_ndjson_reader_next(r, &c) == 1 && c.len == 6 && !memcmp(c.data, "second", 6) && c.lineno == 2,
	   "then reading goes on with the following line");
	record_ndjson_reader_free(r);
	close(fd);
}

static void reader_reset_to_another_file(void)
{
	const char *a = "a1\na2\n", *b = "skip\nb2\nb3\n";
	struct ndjson_reader *r;
	struct ndjson_line ln;
	int fa = temp_file(a, strlen(a)), fb = temp_file(b, strlen(b));

	if (record_ndjson_reader_new(&r, fa, 0, 1, 64) < 0)
		abort();
	record_ndjson_reader_next(r, &ln);
	record_ndjson_reader_unget(r);
	is_int(record_ndjson_reader_reset(r, fb, 5, 2), 0, "reset onto another file at an offset");
	ok(record_ndjson_reader_next(r, &ln) == 1 && ln.len == 2 && !memcmp(ln.data, "b2", 2) && ln.lineno == 2 &&
		   ln.start_offset == 5 && ln.end_offset == 8,
	   "after reset: the new file's line, not the handed-back one of the old file");
	ok(record_ndjson_reader_next(r, &ln) == 1 && !memcmp(ln.data, "b3", 2) && record_ndjson_reader_next(r, &ln) == 0,
	   "then to the new file's end");
	is_int(record_ndjson_reader_reset(r, fa, 0, 1), 0, "reset back to the first file");
	ok(record_ndjson_reader_next(r, &ln) == 1 && !memcmp(ln.data, "a1", 2) && ln.lineno == 1, "reads it from the start");
	record_ndjson_reader_free(r);
	close(fa);
	close(fb);
}

/* Deterministic pseudo-random numbers for reproducible big files. */
static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static void reader_big_file_exact(void)
{
	const size_t max = 9000, target = (2u << 20) + 12345;
	char *text = malloc(target + max + 16);
	size_t len = 0, n = 0, *start = malloc(sizeof(size_t) * target / 2), *dlen = malloc(sizeof(size_t) * target / 2);
	bool *crlf = malloc(sizeof(bool) * target / 2);
	uint32_t seed = 42;
	struct ndjson_reader *r;
	struct ndjson_line ln;
	size_t i = 0, boundaries = 0;
	bool same = true;
	int fd, rc;

	/* Lines of 1..8999 bytes, some CRLF, so many straddle the 256 KiB read blocks. */
	while (len < target) {
		size_t l = 1 + lcg(&seed) % (max - 1);

		start[n] = len;
		dlen[n] = l;
		for (size_t k = 0; k < l; k++)
			text[len + k] = (char)('a' + (n + k) % 26);
		len += l;
		crlf[n] = lcg(&seed) % 4 == 0;
		if (crlf[n])
			text[len++] = '\r';
		text[len++] = '\n';
		if (start[n] / READ_BLOCK != (len - 1) / READ_BLOCK)
			boundaries++;
		n++;
	}
	fd = temp_file(text, len);
	if (record_ndjson_reader_new(&r, fd, 0, 1, max) < 0)
		abort();
	while ((rc = record_ndjson_reader_next(r, &ln)) == 1) {
		size_t end = start[i] + dlen[i] + (crlf[i] ? 2 : 1);

		if (i >= n || ln.too_long || ln.lineno != i + 1 || ln.len != dlen[i] ||
		    memcmp(ln.data, text + start[i], dlen[i]) || ln.start_offset != (off_t)start[i] ||
		    ln.end_offset != (off_t)end) {
			if (same)
				diag("  first mismatch at line %zu", i + 1);
			same = false;
		}
		i++;
	}
	ok(boundaries >= 8, "big file: %zu lines cross a 256 KiB boundary", boundaries);
	ok(same && rc == 0 && i == n, "big file (%zu bytes, %zu lines): every line read exactly", len, n);
	record_ndjson_reader_free(r);
	close(fd);
	free(text);
	free(start);
	free(dlen);
	free(crlf);
}

static void reader_skips_huge_line(void)
{
	/* Longer than a whole buffer: dropped without being held, the next line intact. */
	size_t huge = 3 * READ_BLOCK + 7, len = huge + 32;
	char *text = malloc(len);
	struct ndjson_reader *r;
	struct ndjson_line ln;
	int fd;

	memcpy(text, "a\n", 2);
	memset(text + 2, 'x', huge);
	memcpy(text + 2 + huge, "\n{\"id\":2}\n", 10);
	len = 2 + huge + 10;
	fd = temp_file(text, len);
	if (record_ndjson_reader_new(&r, fd, 0, 1, 100) < 0)
		abort();
	record_ndjson_reader_next(r, &ln);
	ok(record_ndjson_reader_next(r, &ln) == 1 && ln.too_long && ln.lineno == 2 && ln.start_offset == 2 &&
		   ln.end_offset == (off_t)(3 + huge),
	   "a line of 3 read blocks is too_long, line 2, exact range");
	ok(record_ndjson_reader_next(r, &ln) == 1 && !ln.too_long && ln.lineno == 3 && ln.len == 8 &&
		   !memcmp(ln.data, "{\"id\":2}", 8),
	   "the line after it is read intact as line 3");
	record_ndjson_reader_free(r);
	close(fd);
	free(text);
}

/*
 * Whether a line is too long must not depend on where the read block ends: a record of exactly
 * max_record_bytes with CRLF is accepted, also when the block ends between its CR and LF.
 */
static void reader_limit_independent_of_block_end(void)
{
	const size_t max = 100, cap = max + READ_BLOCK + 1;
	size_t len = 0, before = cap - 1 - max;  /* the record's CR is the buffer's last byte */
	char *text = malloc(cap + 16);
	struct ndjson_reader *r;
	struct ndjson_line ln;
	uint64_t lineno = 0;
	int fd;

	while (len < before) {
		size_t l = before - len > 100 ? 99 : before - len - 1;

		memset(text + len, 'f', l);
		text[len + l] = '\n';
		len += l + 1;
		lineno++;
	}
	memset(text + len, 'y', max);
	memcpy(text + len + max, "\r\nz\n", 4);
	fd = temp_file(text, len + max + 4);
	if (record_ndjson_reader_new(&r, fd, 0, 1, max) < 0)
		abort();
	for (uint64_t i = 0; i < lineno; i++)
		record_ndjson_reader_next(r, &ln);
	ok(record_ndjson_reader_next(r, &ln) == 1 && !ln.too_long && ln.len == max && ln.start_offset == (off_t)before,
	   "a %zu-byte record + CRLF whose CR ends the read block is not too_long", max);
	ok(record_ndjson_reader_next(r, &ln) == 1 && ln.len == 1 && ln.data[0] == 'z', "the next line follows");
	record_ndjson_reader_free(r);
	close(fd);

	/* The same record read from its own offset: no block boundary near it. */
	fd = temp_file(text, len + max + 4);
	if (record_ndjson_reader_new(&r, fd, (off_t)before, lineno + 1, max) < 0)
		abort();
	ok(record_ndjson_reader_next(r, &ln) == 1 && !ln.too_long && ln.len == max,
	   "the same record read from its own offset is accepted");
	record_ndjson_reader_free(r);
	close(fd);
	free(text);
}

/* ---- validator ---- */

struct verdict {
	const char *data;
	const char *reason;     /* NULL: accepted; else a substring of the refusal */
};

/* @s made printable for a TAP line: control and non-ASCII bytes as \xNN. */
static const char *show(const char *s)
{
	static char buf[512];
	size_t n = 0;

	for (; *s && n < sizeof(buf) - 5; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c >= 0x7f)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\\x%02x", c);
		else
			buf[n++] = (char)c;
	}
	buf[n] = '\0';
	return buf;
}

static void validator_cases(void)
{
	static const struct verdict cases[] = {
		{ "{\"id\":\"c-1\",\"name\":\"x\"}", NULL },
		{ "{\"id\":42}", NULL },
		{ "{\"name\":\"x\",\"id\":-7.5e3}", NULL },
		{ "{\"id\":123456789012345678901234567890}", NULL },
		{ "{\"id\":1.10,\"amount\":1e400}", NULL },
		{ "{\"id\":1,\"nested\":{\"id\":null,\"list\":[{\"id\":[]}]}}", NULL },
		{ "{ \"id\" : \"\\u00e9t\\u00e9\" , \"emoji\":\"\xf0\x9f\x98\x80\" }", NULL },
		{ "{\"name\":\"x\"}", "primary key 'id' missing" },
		{ "{\"nested\":{\"id\":1}}", "primary key 'id' missing" },
		{ "{\"id\":null}", "primary key 'id' is not a string or number" },
		{ "{\"id\":true}", "primary key 'id' is not a string or number" },
		{ "{\"id\":{\"k\":1}}", "primary key 'id' is not a string or number" },
		{ "{\"id\":[1]}", "primary key 'id' is not a string or number" },
		{ "{\"id\":1,\"id\":2}", "primary key 'id' appears twice" },
		{ "[{\"id\":1}]", "not a JSON object" },
		{ "\"id\"", "not a JSON object" },
		{ "42", "not a JSON object" },
		{ "null", "not a JSON object" },
		{ "{\"id\":1}{\"id\":2}", "trailing garbage" },
		{ "{\"id\":1} x", "invalid JSON" },
		{ "{\"id\":1,}", "invalid JSON" },
		{ "{\"id\":1", "invalid JSON" },
		{ "{\"id\":\"\xff\"}", "invalid JSON" },
		{ "{\"id\":\"\xc3\"}", "invalid JSON" },
		{ "{\"id\":\"a\tb\"}", "invalid JSON" },
		{ "{\"id\":1,\f\"x\":2}", "" },     /* JSON whitespace is space, tab, LF and CR only */
		{ "{\"id\":1,\v\"x\":2}", "" },
	};
	struct record_check *v;
	char reason[256];

	if (record_check_new(&v, "id", NULL, 0) < 0)
		abort();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct verdict *c = &cases[i];
		int r = record_check_one(v, c->data, strlen(c->data), reason, sizeof(reason));

		if (!c->reason)
			ok(r == 0, "valid: %s", show(c->data)) || (diag("  reason: %s", reason), 0);
		else
			ok(r == -EINVAL && reason[0] && strstr(reason, c->reason), "refused (%s): %s",
			   c->reason[0] ? c->reason : "any reason", show(c->data)) ||
				(diag("  got %d: '%s'", r, reason), 0);
	}
	{
		static const char nul[] = "{\"id\":\"a\0b\"}";
		int r = record_check_one(v, nul, sizeof(nul) - 1, reason, sizeof(reason));

		ok(r == -EINVAL && strstr(reason, "NUL byte"), "refused: a NUL byte in the line (%s)", reason);
	}
	record_check_free(v);
}

/* Nesting: the record's object is level 1; max_depth levels pass, one more is refused. */
static char *nested(int levels, const char *open, const char *close)
{
	size_t n = strlen("{\"id\":1,\"v\":") + (size_t)levels * (strlen(open) + strlen(close)) + 2;
	char *s = malloc(n), *p = s;

	if (!s)
		abort();
	p += sprintf(p, "{\"id\":1,\"v\":");
	for (int i = 0; i < levels; i++)
		p += sprintf(p, "%s", open);
	for (int i = 0; i < levels; i++)
		p += sprintf(p, "%s", close);
	sprintf(p, "}");
	return s;
}

static void validator_max_depth(void)
{
	struct record_check *v;
	char reason[256], *s;
	int r;

	if (record_check_new(&v, "id", NULL, 0) < 0)
		abort();
	s = nested(RECORD_DEFAULT_MAX_DEPTH - 1, "[", "]");
	is_int(record_check_one(v, s, strlen(s), reason, sizeof(reason)), 0,
	       "default: 64 levels (the record and 63 arrays) accepted");
	free(s);
	s = nested(RECORD_DEFAULT_MAX_DEPTH, "[", "]");
	r = record_check_one(v, s, strlen(s), reason, sizeof(reason));
	ok(r == -EINVAL && !strcmp(reason, "nested deeper than max_depth (64 levels of objects and arrays)"),
	   "default: 65 levels refused: '%s'", reason);
	free(s);
	s = nested(RECORD_DEFAULT_MAX_DEPTH, "{\"a\":", "}");
	r = record_check_one(v, s, strlen(s), reason, sizeof(reason));
	ok(r == -EINVAL && strstr(reason, "max_depth"), "65 levels of objects refused too: '%s'", reason);
	free(s);
	s = nested(100000, "[", "]");
	r = record_check_one(v, s, strlen(s), reason, sizeof(reason));
	ok(r == -EINVAL && strstr(reason, "max_depth"), "100,000 levels refused: '%s'", reason);
	free(s);

	record_check_set_max_depth(v, 3);
	s = nested(2, "[", "]");
	is_int(record_check_one(v, s, strlen(s), reason, sizeof(reason)), 0, "max_depth 3: 3 levels accepted");
	free(s);
	s = nested(3, "[{\"x\":", "}]");
	r = record_check_one(v, s, strlen(s), reason, sizeof(reason));
	ok(r == -EINVAL && !strcmp(reason, "nested deeper than max_depth (3 levels of objects and arrays)"),
	   "max_depth 3: 4 levels refused: '%s'", reason);
	free(s);
	s = "{\"id\":1,\"a\":[1],\"b\":{\"c\":[2]},\"d\":[[3]]}";
	is_int(record_check_one(v, s, strlen(s), reason, sizeof(reason)), 0,
	       "max_depth 3: siblings do not add up, only nesting counts");
	record_check_set_max_depth(v, 1);
	s = "{\"id\":1,\"a\":2}";
	is_int(record_check_one(v, s, strlen(s), reason, sizeof(reason)), 0, "max_depth 1: a flat record passes");
	s = "{\"id\":1,\"a\":[]}";
	ok(record_check_one(v, s, strlen(s), reason, sizeof(reason)) == -EINVAL, "max_depth 1: an array inside is refused");
	record_check_free(v);
}

static void validator_required_fields(void)
{
	char *req[] = { "name", "email" };
	struct record_check *v;
	char reason[256];
	const char *both = "{\"id\":1,\"email\":null,\"name\":\"x\"}", *one = "{\"id\":1,\"name\":\"x\"}",
		   *deep = "{\"id\":1,\"name\":\"x\",\"o\":{\"email\":\"e\"}}";

	if (record_check_new(&v, "id", req, 2) < 0)
		abort();
	is_int(record_check_one(v, both, strlen(both), reason, sizeof(reason)), 0,
	       "required fields present (any value) accepted");
	ok(record_check_one(v, one, strlen(one), reason, sizeof(reason)) == -EINVAL &&
		   !strcmp(reason, "required field 'email' missing"),
	   "required field missing refused: '%s'", reason);
	ok(record_check_one(v, deep, strlen(deep), reason, sizeof(reason)) == -EINVAL &&
		   strstr(reason, "'email' missing"),
	   "a required field only in a nested object does not count");
	is_int(record_check_one(v, both, strlen(both), reason, sizeof(reason)), 0,
	       "a refused record leaves no state behind for the next one");
	record_check_free(v);
}

/* ---- JSONTestSuite ---- */

/*
 * Each file's content becomes the value of "v" in {"id":1,"v":<content>}; y_ must be accepted,
 * n_ refused, i_ either. Could an n_ case turn valid once wrapped? By class: trailing garbage and
 * several values (n_structure_trailing_#, n_structure_double_array, ...) leave the extra text
 * inside the object, where it is just as invalid; empty or blank documents (n_structure_no_data,
 * n_single_space) give "v":} ; a BOM or a NUL byte stays a bad byte; unclosed or unopened
 * brackets unbalance the object. None does, so the list below is empty; a name put here would be
 * expected accepted, never skipped.
 *
 * n_structure_whitespace_formfeed ([\f]) is refused by strict JSON but yajl takes \f (and \v) for
 * blanks: it fails until the validator refuses those bytes itself.
 */
static const char *const n_valid_when_wrapped[] = { NULL };

static bool listed(const char *const *list, const char *name)
{
	for (; *list; list++)
		if (!strcmp(*list, name))
			return true;
	return false;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void jsontestsuite(const char *suite)
{
	DIR *d = suite ? opendir(suite) : NULL;
	struct dirent *e;
	char **names = NULL, reason[512];
	size_t n = 0, by_reader = 0;
	struct record_check *v;
	char *ndjson = NULL;
	size_t nd_len = 0, nd_cap = 0;
	int *direct;

	if (!d) {
		skip("JSONTestSuite not found (%s)", suite ? suite : "no path given");
		return;
	}
	while ((e = readdir(d))) {
		if (strlen(e->d_name) < 6 || strcmp(e->d_name + strlen(e->d_name) - 5, ".json"))
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	direct = calloc(n, sizeof(*direct));
	if (record_check_new(&v, "id", NULL, 0) < 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		char *path = path_join(suite, names[i]), *content, *wrapped;
		size_t clen = 0, wlen;
		int r;

		content = read_whole(path, &clen);
		free(path);
		if (!content) {
			ok(false, "%s: readable", names[i]);
			continue;
		}
		wlen = clen + 14;
		wrapped = malloc(wlen + 1);
		memcpy(wrapped, "{\"id\":1,\"v\":", 12);
		memcpy(wrapped + 12, content, clen);
		memcpy(wrapped + 12 + clen, "}\n", 2);
		r = record_check_one(v, wrapped, wlen - 1, reason, sizeof(reason));
		direct[i] = r;
		if (names[i][0] == 'y' || listed(n_valid_when_wrapped, names[i]))
			ok(r == 0, "%s: accepted", names[i]) || (diag("  reason: %s", reason), 0);
		else if (names[i][0] == 'n')
			ok(r == -EINVAL && reason[0], "%s: refused (%s)", names[i], reason) || (diag("  got %d", r), 0);
		else
			ok(r == 0 || (r == -EINVAL && reason[0]), "%s: either verdict, no crash (%s)", names[i],
			   r ? reason : "accepted");
		/* Lines without a raw newline also go through a file and the reader. */
		if (!memchr(wrapped, '\n', wlen - 1)) {
			while (nd_len + wlen > nd_cap)
				ndjson = realloc(ndjson, nd_cap = nd_cap ? 2 * nd_cap : 1 << 20);
			memcpy(ndjson + nd_len, wrapped, wlen);
			nd_len += wlen;
			by_reader++;
		} else {
			direct[i] = 1;  /* not in the file */
		}
		free(content);
		free(wrapped);
	}
	{
		struct ndjson_reader *r;
		struct ndjson_line ln;
		int fd = temp_file(ndjson, nd_len), rc;
		size_t i = 0, seen = 0;
		bool same = true;

		if (record_ndjson_reader_new(&r, fd, 0, 1, 1 << 20) < 0)
			abort();
		while ((rc = record_ndjson_reader_next(r, &ln)) == 1) {
			while (i < n && direct[i] == 1)
				i++;
			if (i == n || ln.too_long ||
			    record_check_one(v, ln.data, ln.len, reason, sizeof(reason)) != direct[i]) {
				diag("  %s: verdict differs through the reader", i < n ? names[i] : "(extra line)");
				same = false;
			}
			i++;
			seen++;
		}
		ok(same && rc == 0 && seen == by_reader,
		   "JSONTestSuite through a file and the reader: %zu lines, same verdicts", by_reader);
		record_ndjson_reader_free(r);
		close(fd);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(direct);
	free(ndjson);
	record_check_free(v);
}

int main(int argc, char **argv)
{
	dir = tmpdir_new("ndjson");
	reader_lines();
	reader_bom();
	reader_unget();
	reader_reset_to_another_file();
	reader_big_file_exact();
	reader_skips_huge_line();
	reader_limit_independent_of_block_end();
	validator_cases();
	validator_max_depth();
	validator_required_fields();
	jsontestsuite(argc > 1 ? argv[1] : getenv("JSONTESTSUITE_DIR"));
	tmpdir_remove(dir);
	return done_testing();
}
