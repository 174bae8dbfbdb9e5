/* test-cut: record_cut_next's request bodies: record and byte caps, envelope, rejects, determinism, slices. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "record/record_cut.h"
#include "record/record_ndjson.h"
#include "cututil.h"
#include "tap.h"
#include "testutil.h"

#define UUID "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
#define MAX_RECORD 4096
#define TAIL_RESERVE 128        /* cut.c keeps this much room for the body's closing envelope */

static char *dir;

/* @n records {"id":i,...}, i from 1. */
static struct text records(unsigned n)
{
	struct text t = { 0 };

	for (unsigned i = 1; i <= n; i++)
		text_add(&t, "{\"id\":%u,\"name\":\"customer %u\"}\n", i, i);
	return t;
}

static char *write_temp(const struct text *t)
{
	static int seq;
	char name[32];
	char *path;

	snprintf(name, sizeof(name), "b%d.ndjson", ++seq);
	path = path_join(dir, name);
	write_file(path, t->s, t->len, 0600);
	return path;
}

struct rejects {
	size_t n;
	uint64_t line[16];
	bool had_data[16];
	char reason[16][256];
	int stop_after;         /* return 1 after this many rejects (0: never) */
};

static int on_reject(void *userdata, uint64_t lineno, const char *reason, const char *data, size_t len)
{
	struct rejects *rj = userdata;

	(void)len;
	if (rj->n < 16) {
		rj->line[rj->n] = lineno;
		rj->had_data[rj->n] = data != NULL;
		snprintf(rj->reason[rj->n], sizeof(rj->reason[0]), "%s", reason);
	}
	rj->n++;
	return rj->stop_after && rj->n == (size_t)rj->stop_after;
}

/* Cut all of @path into at most @max request bodies (each record_cut_body_init'ed here); returns how many. */
static size_t cut_all(const char *path, const struct cut_params *p, struct record_body *out, size_t max,
		      struct rejects *rj)
{
	return cut_file_into(path, p, MAX_RECORD, out, max, rj ? on_reject : NULL, rj);
}

static void release_all(struct record_body *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		record_cut_body_release(&c[i]);
}

/* The body parsed as JSON (NULL if it is not). */
static yajl_val parse_body(const struct record_body *c)
{
	char *s = malloc(c->len + 1), err[256];
	yajl_val v;

	memcpy(s, c->body, c->len);
	s[c->len] = '\0';
	v = yajl_tree_parse(s, err, sizeof(err));
	free(s);
	return v;
}

static void cuts_at_max_records(void)
{
	const struct cut_params p = { UUID, -1, 5000, 64u << 20 };
	struct record_body c[8];
	struct text t = records(12345);
	char *path = write_temp(&t);
	size_t n = cut_all(path, &p, c, 8, NULL);

	if (is_int(n, 3, "12,345 records, batch_records 5000: three request bodies")) {
		ok(c[0].n_records == 5000 && c[1].n_records == 5000 && c[2].n_records == 2345,
		   "cut_at_5000: 5000, 5000, 2345 records (got %u, %u, %u)", c[0].n_records, c[1].n_records,
		   c[2].n_records);
		ok(!c[0].last && !c[1].last && c[2].last, "last flags false, false, true");
		ok(c[0].start_offset == 0 && c[0].end_offset == c[1].start_offset &&
			   c[1].end_offset == c[2].start_offset && c[2].end_offset == (off_t)t.len,
		   "request body file ranges are contiguous and cover the file");
		ok(c[0].start_line == 1 && c[1].start_line == 5001 && c[2].start_line == 10001 && c[2].end_line == 12346,
		   "request body line ranges: 1, 5001, 10001, ending before 12346");
		ok(c[1].rec_line[0] == 5001 && c[2].rec_line[2344] == 12345, "records keep their line numbers");
	}
	release_all(c, n);
	free(path);
	free(t.s);
}

static void exact_multiples_end_without_empty_body(void)
{
	const struct cut_params p = { UUID, -1, 5000, 64u << 20 };
	struct record_body c[4];
	struct text t = records(5000), t2 = records(10000);
	char *path = write_temp(&t), *path2 = write_temp(&t2);
	size_t n = cut_all(path, &p, c, 4, NULL);

	ok(n == 1 && c[0].n_records == 5000 && c[0].last, "exactly 5000 records: one request body, last");
	release_all(c, n);
	n = cut_all(path2, &p, c, 4, NULL);
	ok(n == 2 && c[0].n_records == 5000 && !c[0].last && c[1].n_records == 5000 && c[1].last,
	   "exactly 10,000 records: two request bodies of 5000, the second last, no third");
	release_all(c, n);

	/* Asked again after the last request body: an empty, last request body. */
	{
		struct record_check *v;
		struct source *r = NULL;
		struct record_body a, b;
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (record_source_open(&r, fd, "t.ndjson", NULL, 0, 1, MAX_RECORD) < 0 || record_check_new(&v, "id", NULL, 0) < 0 ||
		    record_cut_body_init(&a, 5000) < 0 || record_cut_body_init(&b, 5000) < 0)
			abort();
		ok(record_cut_next(&a, &p, r, v, NULL, NULL) == 0 && record_cut_next(&b, &p, r, v, NULL, NULL) == 0 &&
			   b.n_records == 0 && b.last && b.start_offset == (off_t)t.len,
		   "a cut past the end: no records, last, at the end of the file");
		record_cut_body_release(&a);
		record_cut_body_release(&b);
		record_check_free(v);
		record_source_free(r);
		close(fd);
	}
	free(path);
	free(path2);
	free(t.s);
	free(t2.s);
}

static void byte_cap_is_respected_and_filled(void)
{
	const size_t max_bytes = 20000;
	const struct cut_params p = { UUID, 86400, 5000, max_bytes };
	struct text t = { 0 };
	struct record_body c[64];
	uint32_t seed = 7;
	size_t n, over = 0, underfull = 0, total = 0;
	char *path;

	/* Records of 40..3000 bytes. */
	for (unsigned i = 1; i <= 300; i++) {
		seed = seed * 1103515245u + 12345u;
		text_add(&t, "{\"id\":%u,\"pad\":\"%0*d\"}\n", i, (int)(30 + (seed >> 8) % 2960), 0);
	}
	path = write_temp(&t);
	n = cut_all(path, &p, c, 64, NULL);
	for (size_t i = 0; i < n; i++) {
		total += c[i].n_records;
		if (c[i].len > max_bytes)
			over++;
		if (i + 1 < n) {
			/* The next request body's first record did not fit (within the tail reserve). */
			size_t used = c[i].rec_off[c[i].n_records - 1] + c[i].rec_len[c[i].n_records - 1];

			if (used + 1 + c[i + 1].rec_len[0] + TAIL_RESERVE <= max_bytes)
				underfull++;
		}
	}
	ok(n > 10 && total == 300, "300 records of 40..3000 bytes in %zu request bodies, none lost", n);
	is_int(over, 0, "no body is longer than batch_bytes (%zu)", max_bytes);
	is_int(underfull, 0, "every request body is as full as possible: the next record would not have fit");
	release_all(c, n);
	free(path);
	free(t.s);
}

static void body_is_the_documented_envelope(void)
{
	const char *rec1 = "{\"id\":\"a\",\"big\":123456789012345678901234567890,\"price\":1.10,\"e\":1E+2}";
	const char *rec2 = "{ \"id\" : 2 , \"s\" : \"\\u00e9t\\u00e9 \xc3\xa9\" }";
	struct text t = { 0 };
	struct cut_params p = { UUID, 3600, 5000, 1u << 20 };
	struct record_body c[2];
	char *path;
	size_t n;

	text_add(&t, "%s\r\n%s\n", rec1, rec2);
	path = write_temp(&t);
	for (int pass = 0; pass < 2; pass++) {
		yajl_val root, data, uuid, done, ttl;
		const char *dpath[] = { "data", NULL }, *upath[] = { "batch_uuid", NULL },
			   *cpath[] = { "batch_completed", NULL }, *tpath[] = { "ttl_seconds", NULL };

		p.ttl_seconds = pass == 0 ? 3600 : -1;
		n = cut_all(path, &p, c, 2, NULL);
		root = parse_body(&c[0]);
		data = yajl_tree_get(root, dpath, yajl_t_array);
		uuid = yajl_tree_get(root, upath, yajl_t_string);
		done = yajl_tree_get(root, cpath, yajl_t_any);
		ttl = yajl_tree_get(root, tpath, yajl_t_any);
		ok(n == 1 && root && YAJL_IS_OBJECT(root), "ttl %lld: the body is valid JSON", p.ttl_seconds);
		ok(data && data->u.array.len == 2, "ttl %lld: data holds the 2 records", p.ttl_seconds);
		ok(YAJL_IS_STRING(uuid) && !strcmp(uuid->u.string, UUID), "ttl %lld: batch_uuid", p.ttl_seconds);
		ok(YAJL_IS_TRUE(done), "ttl %lld: batch_completed true on the last request body", p.ttl_seconds);
		if (pass == 0)
			ok(YAJL_IS_INTEGER(ttl) && YAJL_GET_INTEGER(ttl) == 3600, "ttl_seconds 3600 is sent");
		else
			ok(ttl == NULL && !memmem(c[0].body, c[0].len, "ttl_seconds", 11), "ttl < 0: no ttl_seconds");
		ok(c[0].n_records == 2 && c[0].rec_len[0] == strlen(rec1) &&
			   !memcmp(c[0].body + c[0].rec_off[0], rec1, strlen(rec1)) && c[0].rec_len[1] == strlen(rec2) &&
			   !memcmp(c[0].body + c[0].rec_off[1], rec2, strlen(rec2)),
		   "ttl %lld: records copied byte for byte (big integer, 1.10, escapes, spacing)", p.ttl_seconds);
		yajl_tree_free(root);
		release_all(c, n);
	}
	{
		char exact[512];

		snprintf(exact, sizeof(exact), "{\"data\":[%s,%s],\"batch_uuid\":\"" UUID "\",\"batch_completed\":true}",
			 rec1, rec2);
		n = cut_all(path, &p, c, 2, NULL);
		ok(c[0].len == strlen(exact) && !memcmp(c[0].body, exact, c[0].len), "the whole body, exactly");
		release_all(c, n);
	}
	free(path);
	free(t.s);
}

static void rejected_lines_go_to_the_callback(void)
{
	struct text t = { 0 };
	const struct cut_params p = { UUID, -1, 5000, 1u << 20 };
	struct rejects rj = { 0 };
	struct record_body c[2];
	char *path, big[MAX_RECORD + 100];
	size_t n;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	text_add(&t, "{\"id\":1}\n");
	text_add(&t, "{\"id\":2,}\n");               /* 2: invalid JSON */
	text_add(&t, "\n");                          /* 3: blank */
	text_add(&t, "{\"id\":4}\n");
	text_add(&t, "{\"name\":\"no key\"}\n");     /* 5: no primary key */
	text_add(&t, "{\"s\":\"%s\"}\n", big);       /* 6: too long */
	text_add(&t, "{\"id\":7}\n");
	path = write_temp(&t);
	n = cut_all(path, &p, c, 2, &rj);
	if (is_int(rj.n, 3, "three lines rejected")) {
		ok(rj.line[0] == 2 && rj.line[1] == 5 && rj.line[2] == 6, "reject callback gets lines 2, 5, 6 in order");
		ok(strstr(rj.reason[0], "invalid JSON") && strstr(rj.reason[1], "primary key 'id' missing") &&
			   strstr(rj.reason[2], "longer than max_record_bytes"),
		   "each with its reason");
		ok(rj.had_data[0] && rj.had_data[1] && !rj.had_data[2], "the too-long line comes without data");
	}
	ok(n == 1 && c[0].n_records == 3 && c[0].rejected == 3 && c[0].last, "one request body: 3 records, 3 rejected");
	ok(c[0].rec_line[0] == 1 && c[0].rec_line[1] == 4 && c[0].rec_line[2] == 7, "records of lines 1, 4, 7");
	ok(!memmem(c[0].body, c[0].len, "no key", 6) && !memmem(c[0].body, c[0].len, "xxxx", 4) &&
		   !memmem(c[0].body, c[0].len, "\"id\":2", 6),
	   "rejected lines are not in the body");
	release_all(c, n);

	/* The callback may end the request's range after a rejected line. */
	memset(&rj, 0, sizeof(rj));
	rj.stop_after = 1;
	n = cut_all(path, &p, c, 2, &rj);
	ok(n == 2 && c[0].n_records == 1 && !c[0].last && c[0].end_line == 3 && c[1].start_line == 3 &&
		   c[1].n_records == 2 && c[1].last,
	   "reject callback returning 1 ends the range after that line; the next cut goes on");
	release_all(c, n);
	free(path);
	free(t.s);
}

static void cutting_again_gives_the_same_body(void)
{
	const struct cut_params p = { UUID, 600, 50, 6000 };
	struct text t = { 0 };
	struct record_body c[256];
	uint32_t seed = 99;
	size_t n, differ = 0;
	char *path;
	struct record_check *v;
	int fd;

	for (unsigned i = 1; i <= 2000; i++) {
		seed = seed * 1103515245u + 12345u;
		if ((seed >> 8) % 17 == 0)
			text_add(&t, "not json %u\n", i);
		else if ((seed >> 8) % 23 == 0)
			text_add(&t, "\r\n");
		else
			text_add(&t, "{\"id\":%u,\"pad\":\"%0*d\"}\r\n", i, (int)((seed >> 8) % 400), 0);
	}
	path = write_temp(&t);
	n = cut_all(path, &p, c, 256, NULL);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (record_check_new(&v, "id", NULL, 0) < 0)
		abort();
	for (size_t i = 0; i < n; i++) {
		struct source *r = NULL;
		struct record_body again;

		if (record_source_open(&r, fd, "t.ndjson", NULL, c[i].start_offset, c[i].start_line, MAX_RECORD) < 0 ||
		    record_cut_body_init(&again, p.max_records) < 0 || record_cut_next(&again, &p, r, v, NULL, NULL) < 0)
			abort();
		if (again.len != c[i].len || memcmp(again.body, c[i].body, again.len) ||
		    again.end_offset != c[i].end_offset || again.end_line != c[i].end_line || again.last != c[i].last ||
		    again.rejected != c[i].rejected) {
			diag("  request body %zu differs when cut again from offset %lld", i, (long long)c[i].start_offset);
			differ++;
		}
		record_cut_body_release(&again);
		record_source_free(r);
	}
	ok(n > 20 && c[n - 1].last, "2000 mixed lines cut into %zu request bodies", n);
	is_int(differ, 0, "cutting again from each request body's start offset and line gives the identical request body");
	record_check_free(v);
	close(fd);
	release_all(c, n);
	free(path);
	free(t.s);
}

static void slices_halve_a_body(void)
{
	const struct cut_params p = { UUID, -1, 5000, 1u << 20 };
	struct text t = records(9);
	struct record_body c[1], lo, hi;
	char *path = write_temp(&t);
	size_t n = cut_all(path, &p, c, 1, NULL);
	yajl_val a, b;
	const char *dpath[] = { "data", NULL }, *cpath[] = { "batch_completed", NULL };
	bool same = true;

	if (record_cut_body_init(&lo, 5000) < 0 || record_cut_body_init(&hi, 5000) < 0)
		abort();
	ok(record_cut_body_part(&lo, &c[0], &p, 0, 4, false) == 0 && record_cut_body_part(&hi, &c[0], &p, 4, 9, true) == 0,
	   "record_cut_body_part: two halves of 9 records");
	a = parse_body(&lo);
	b = parse_body(&hi);
	ok(a && b, "both halves are valid JSON");
	ok(lo.n_records == 4 && hi.n_records == 5 &&
		   yajl_tree_get(a, dpath, yajl_t_array)->u.array.len == 4 &&
		   yajl_tree_get(b, dpath, yajl_t_array)->u.array.len == 5,
	   "halves hold 4 and 5 records");
	ok(YAJL_IS_FALSE(yajl_tree_get(a, cpath, yajl_t_any)) && YAJL_IS_TRUE(yajl_tree_get(b, cpath, yajl_t_any)),
	   "batch_completed as asked: false, then true");
	for (uint32_t i = 0; i < 9; i++) {
		const struct record_body *h = i < 4 ? &lo : &hi;
		uint32_t k = i < 4 ? i : i - 4;

		if (h->rec_len[k] != c[0].rec_len[i] ||
		    memcmp(h->body + h->rec_off[k], c[0].body + c[0].rec_off[i], h->rec_len[k]) ||
		    h->rec_line[k] != c[0].rec_line[i])
			same = false;
	}
	ok(same, "the halves' records, in order, are the request body's, byte for byte, with their lines");
	ok(lo.start_offset == c[0].start_offset && hi.end_offset == c[0].end_offset,
	   "the halves keep the request body's file range");
	yajl_tree_free(a);
	yajl_tree_free(b);
	record_cut_body_release(&lo);
	record_cut_body_release(&hi);
	release_all(c, n);
	free(path);
	free(t.s);
}

/* The steps of a multi-file request: fill from two files, stamp members, take the second back. */
static void fill_from_two_files(void)
{
	const struct cut_params p = { UUID, -1, 5000, 1u << 20 };
	struct text ta = records(3), tb = records(2);
	char *pa = write_temp(&ta), *pb = write_temp(&tb);
	int fa = open(pa, O_RDONLY | O_CLOEXEC), fb = open(pb, O_RDONLY | O_CLOEXEC);
	struct record_check *v;
	struct source *r = NULL;
	struct record_body c;
	size_t len_a;
	yajl_val root;
	const char *dpath[] = { "data", NULL };

	if (record_check_new(&v, "id", NULL, 0) < 0 || record_source_open(&r, fa, "t.ndjson", NULL, 0, 1, MAX_RECORD) < 0 ||
	    record_cut_body_init(&c, 5000) < 0 || record_cut_body_begin(&c) < 0)
		abort();
	c.member = 0;
	is_int(record_cut_fill(&c, &p, r, v, NULL, NULL), CUT_FILL_EOF, "first file: filled to its end");
	len_a = c.len;
	record_source_open(&r, fb, "t.ndjson", NULL, 0, 1, MAX_RECORD);
	c.member = 1;
	is_int(record_cut_fill(&c, &p, r, v, NULL, NULL), CUT_FILL_EOF, "second file: filled to its end");
	ok(c.n_records == 5 && c.rec_member[2] == 0 && c.rec_member[3] == 1 && c.rec_line[3] == 1,
	   "records stamped with their file and line");
	record_cut_body_truncate(&c, len_a, 3);
	record_cut_body_finish(&c, &p, true);
	root = parse_body(&c);
	ok(c.n_records == 3 && YAJL_IS_ARRAY(yajl_tree_get(root, dpath, yajl_t_array)) &&
		   yajl_tree_get(root, dpath, yajl_t_array)->u.array.len == 3 && c.last,
	   "record_cut_body_truncate takes the second file back; the finished body is valid with 3 records");
	yajl_tree_free(root);
	record_cut_body_release(&c);
	record_source_free(r);
	record_check_free(v);
	close(fa);
	close(fb);
	free(pa);
	free(pb);
	free(ta.s);
	free(tb.s);
}

int main(void)
{
	dir = tmpdir_new("batch");
	cuts_at_max_records();
	exact_multiples_end_without_empty_body();
	byte_cap_is_respected_and_filled();
	body_is_the_documented_envelope();
	rejected_lines_go_to_the_callback();
	cutting_again_gives_the_same_body();
	slices_halve_a_body();
	fill_from_two_files();
	tmpdir_remove(dir);
	return done_testing();
}
