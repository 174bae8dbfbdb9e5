/* test-pipeline: the cut-ahead ring on its worker thread: order, depth, cancel and reset, failed cuts, rejects, field names. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "record/record_pipeline.h"
#include "util/log.h"
#include "tap.h"
#include "testutil.h"

#define UUID "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
#define PER_REQUEST 1000

static char *dir;

/* @n records, one a line; record i carries "b<k>" with k the request it belongs in at PER_REQUEST each. */
static struct text records(unsigned n)
{
	struct text t = { 0 };

	for (unsigned i = 1; i <= n; i++)
		text_add(&t, "{\"id\":%u,\"name\":\"customer %u\",\"b%u\":1}\n", i, i, (i - 1) / PER_REQUEST);
	return t;
}

static char *write_temp(const char *name, const void *data, size_t len)
{
	char *path = path_join(dir, name);

	write_file(path, data, len, 0600);
	return path;
}

/* Where each line of a text starts: line[k] for k = 1..n, line[n + 1] = its end. */
struct lines {
	size_t *start;
	size_t n;
};

static struct lines index_lines(const struct text *t)
{
	struct lines l = { calloc(t->len + 2, sizeof(size_t)), 0 };

	if (!l.start)
		abort();
	for (size_t i = 0, begin = 0; i < t->len; i++) {
		if (t->s[i] == '\n') {
			l.start[++l.n] = begin;
			begin = i + 1;
		}
	}
	l.start[l.n + 1] = t->len;
	return l;
}

struct t {
	struct ev_loop *loop;
	struct pipeline p;
	struct read_opts read;
	struct csv_options csv;        /* none: NDJSON */
	struct record_check *v;
	struct cut_params params;
	unsigned ready, cut_failed;
	int cut_err;
};

static void op_ready(void *userdata)
{
	((struct t *)userdata)->ready++;
}

static void op_cut_failed(void *userdata, int err)
{
	struct t *t = userdata;

	t->cut_failed++;
	t->cut_err = err;
}

static const struct pipeline_ops ops = { .ready = op_ready, .cut_failed = op_cut_failed };

static void setup(struct t *t, bool field_catalog)
{
	memset(t, 0, sizeof(*t));
	t->loop = ev_loop_new(EVFLAG_AUTO);
	/* How the file is read: no csv options (NDJSON), max_record_bytes, field_catalog. */
	t->read.csv = &t->csv;
	t->read.limits.max_record_bytes = 4096;
	t->read.field_catalog = field_catalog;
	t->params = (struct cut_params){ UUID, -1, PER_REQUEST, 64u << 20, NULL, false };
	if (!t->loop || record_check_new(&t->v, "id", NULL, 0) < 0 || record_pipeline_init(&t->p, t->loop, 100, &ops, t) < 0)
		abort();
	record_pipeline_start(&t->p, &t->params, t->v, &t->read);
}

static void teardown(struct t *t)
{
	record_pipeline_reset(&t->p);
	record_pipeline_release(&t->p);
	record_check_free(t->v);
	ev_loop_destroy(t->loop);
}

/* Run the loop until the worker has nothing left to deliver (a cut ahead chains the next). */
static void drain(struct t *t)
{
	for (unsigned guard = 0; record_worker_busy(t->p.worker) && guard < 10000; guard++)
		ev_run(t->loop, EVRUN_ONCE);
}

/* Run the loop until ops.ready has come @n times. */
static void wait_ready(struct t *t, unsigned n)
{
	for (unsigned guard = 0; t->ready < n && record_worker_busy(t->p.worker) && guard < 10000; guard++)
		ev_run(t->loop, EVRUN_ONCE);
}

/* The running totals of a walk through a file's bodies. */
struct walk {
	const struct text *file;
	struct lines lines;
	unsigned bodies;
	uint64_t records;
	off_t end_offset;
	uint64_t end_line;
	unsigned not_contiguous, not_identical, bad_lines, last_early, bad_fields, bad_rejects;
	bool check_fields, fields_off;
	const uint64_t *rejected;       /* lines rejected locally, 0-terminated */
};

/* The rejected lines of [from, to). */
static unsigned expected_rejects(const struct walk *w, uint64_t from, uint64_t to, uint64_t *out, unsigned max)
{
	unsigned n = 0;

	for (const uint64_t *r = w->rejected; r && *r; r++)
		if (*r >= from && *r < to && n < max)
			out[n++] = *r;
	return n;
}

/* Check the body made current against the file, as the batch would flush and use it. */
static void check_current(struct t *t, struct walk *w)
{
	const struct record_body *b = record_pipeline_current(&t->p);
	struct record_rejects *rb = &t->p.rej[t->p.cur];
	uint64_t want[16], line = (uint64_t)b->start_line;
	unsigned n_want = expected_rejects(w, (uint64_t)b->start_line, b->end_line, want, 16), k = 0;

	w->bodies++;
	if (b->start_offset != w->end_offset || b->start_line != w->end_line || b->n_records == 0)
		w->not_contiguous++;
	for (uint32_t i = 0; i < b->n_records; i++, line++) {
		while (k < n_want && want[k] == line) {
			line++;
			k++;
		}
		if (b->rec_line[i] != line)
			w->bad_lines++;
		if (b->rec_line[i] >= 1 && b->rec_line[i] <= w->lines.n) {
			size_t from = w->lines.start[b->rec_line[i]], len = w->lines.start[b->rec_line[i] + 1] - from - 1;

			if (b->rec_len[i] != len || memcmp(b->body + b->rec_off[i], w->file->s + from, len))
				w->not_identical++;
		} else {
			w->not_identical++;
		}
	}
	/* Its rejected lines, in its own record_rejects: {"line":N,...} each. */
	{
		unsigned seen = 0, wrong = 0;
		const char *s = rb->buf, *end = rb->buf ? rb->buf + rb->len : NULL;

		while (s && s < end) {
			unsigned long long got;

			if (sscanf(s, "{\"line\":%llu,", &got) != 1 || seen >= n_want || got != want[seen])
				wrong++;
			seen++;
			s = memchr(s, '\n', (size_t)(end - s));
			s = s ? s + 1 : end;
		}
		if (wrong || seen != n_want || b->rejected != n_want)
			w->bad_rejects++;
	}
	if (w->check_fields) {
		struct catalog *c = t->p.fields[t->p.cur];
		char bk[16];
		const struct catalog_field *id = state_catalog_find(c, "id"), *fb;

		snprintf(bk, sizeof(bk), "b%u", (unsigned)((b->rec_line[0] - 1) / PER_REQUEST));
		fb = state_catalog_find(c, bk);
		if (w->fields_off ? state_catalog_count(c) != 0
				  : state_catalog_count(c) != 3 || !id || id->records != b->n_records || !fb || fb->records != b->n_records)
			w->bad_fields++;
	}
	if (b->last != (b->end_offset == (off_t)w->file->len))
		w->last_early++;
	w->records += b->n_records;
	w->end_offset = b->end_offset;
	w->end_line = b->end_line;
	record_reject_reset(rb);       /* the batch's flush_current writes them out and empties it */
}

/* Open @path into the pipeline and cut body 0 on this thread. */
static int open_and_cut(struct t *t, const char *path, const char *name, int *fd)
{
	int r;

	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		abort();
	if ((r = record_pipeline_read_at(&t->p, *fd, name, 0, 1)) < 0)
		return r;
	return record_pipeline_cut(&t->p, 0);
}

/*
 * Walk every body as the batch does: cut ahead, take the next (waiting for ops.ready when it is
 * still being cut). The first step asks while the worker cuts (PIPELINE_PENDING); after each
 * step the worker fills the ring before the next. Returns 0 or the error record_pipeline_next gave.
 */
static int walk_all(struct t *t, struct walk *w, unsigned *pending, unsigned *max_ahead, unsigned *over)
{
	int r = 0;

	check_current(t, w);
	for (unsigned step = 0; !record_pipeline_current(&t->p)->last && step < 1000; step++) {
		if (record_pipeline_ahead(&t->p) < 0)
			return -ECHILD;
		r = record_pipeline_next(&t->p);
		if (r == PIPELINE_PENDING) {
			++*pending;
			wait_ready(t, t->ready + 1);
			r = record_pipeline_next(&t->p);
		}
		if (r != 0)
			return r;
		check_current(t, w);
		drain(t);
		if (t->p.n_ahead > *max_ahead)
			*max_ahead = t->p.n_ahead;
		*over += t->p.n_ahead > PIPELINE_DEPTH - 1;
	}
	return 0;
}

static void in_order(void)
{
	struct text file = records(12345);
	char *path = write_temp("ordered.ndjson", file.s, file.len);
	struct walk w = { .file = &file, .lines = index_lines(&file), .end_line = 1, .check_fields = true };
	unsigned pending = 0, max_ahead = 0, over = 0;
	struct t t;
	int fd, r;

	setup(&t, true);
	is_int(open_and_cut(&t, path, "ordered.ndjson", &fd), 0, "record_pipeline_cut(0) on the loop's thread");
	r = walk_all(&t, &w, &pending, &max_ahead, &over);
	is_int(r, 0, "every body came out");
	is_int(w.bodies, 13, "12,345 records at 1,000 a request: 13 bodies");
	ok(w.records == 12345 && w.end_offset == (off_t)file.len && w.end_line == 12346,
	   "they hold 12,345 records, end at the file's end and before line 12,346");
	is_int(w.not_contiguous, 0, "each body starts where the one before ended (offsets and lines)");
	is_int(w.bad_lines, 0, "records keep their line numbers, in order");
	is_int(w.not_identical, 0, "records byte-identical to the file's lines");
	is_int(w.last_early, 0, "only the body at the file's end is marked last");
	ok(pending == 1 && t.ready == 1, "the first next was PIPELINE_PENDING while the worker cut, then ops.ready once (%u, %u)",
	   pending, t.ready);
	is_int(over, 0, "never more than PIPELINE_DEPTH-1 bodies ahead");
	is_int(max_ahead, PIPELINE_DEPTH - 1, "the ring fills up to PIPELINE_DEPTH-1 ahead");
	is_int(w.bad_fields, 0, "field_catalog: each body's fields (id, name, b<k>) noted in its own catalog, counted per record");
	is_int(w.bad_rejects, 0, "no rejects");
	is_int(record_pipeline_ahead(&t.p), 0, "after the last body: record_pipeline_ahead");
	ok(!record_worker_busy(t.p.worker) && t.p.n_ahead == 0 && t.cut_failed == 0, "cuts nothing past the last body");
	teardown(&t);
	close(fd);

	/* field_catalog off: nothing noted. */
	w = (struct walk){ .file = &file, .lines = w.lines, .end_line = 1, .check_fields = true, .fields_off = true };
	pending = max_ahead = over = 0;
	setup(&t, false);
	r = open_and_cut(&t, path, "ordered.ndjson", &fd);
	r = r ? r : walk_all(&t, &w, &pending, &max_ahead, &over);
	ok(r == 0 && w.bodies == 13 && w.not_identical == 0, "without field_catalog: the same 13 bodies");
	is_int(w.bad_fields, 0, "without field_catalog: no field noted in any body's catalog");
	teardown(&t);
	close(fd);
	free(w.lines.start);
	free(file.s);
	free(path);
}

static void cancel_and_reset(void)
{
	struct text file = records(5000);
	char *path = write_temp("cancel.ndjson", file.s, file.len);
	struct t t;
	int fd, r;

	setup(&t, false);
	r = open_and_cut(&t, path, "cancel.ndjson", &fd);
	ok(r == 0 && record_pipeline_ahead(&t.p) == 0 && record_worker_busy(t.p.worker), "a cut ahead runs");
	is_int(record_pipeline_next(&t.p), PIPELINE_PENDING, "record_pipeline_next waits for it");
	record_pipeline_cancel(&t.p);
	ok(!record_worker_busy(t.p.worker) && !t.p.want_next, "record_pipeline_cancel: nothing runs, nothing waited for");
	for (int i = 0; i < 5; i++)
		ev_run(t.loop, EVRUN_NOWAIT);
	ok(t.ready == 0 && t.cut_failed == 0 && t.p.n_ahead == 0, "no callback after it, nothing counted ahead");
	ok(record_pipeline_ahead(&t.p) == 0 && !record_worker_busy(t.p.worker), "record_pipeline_ahead after cancel starts nothing");
	record_pipeline_reset(&t.p);
	close(fd);

	/* Again from the start: the ring fills, then record_pipeline_reset drops it. */
	record_pipeline_start(&t.p, &t.params, t.v, &t.read);
	r = open_and_cut(&t, path, "cancel.ndjson", &fd);
	ok(r == 0 && record_pipeline_current(&t.p)->start_line == 1 && record_pipeline_current(&t.p)->n_records == PER_REQUEST,
	   "after a reset the pipeline starts again");
	(void)record_pipeline_ahead(&t.p);
	drain(&t);
	is_int(t.p.n_ahead, PIPELINE_DEPTH - 1, "and cuts ahead");
	(void)record_pipeline_ahead(&t.p);
	is_int(t.ready, 0, "no ops.ready when nobody waited");
	/* A cut ahead in flight when the batch ends: take both, the next one is being cut. */
	ok(record_pipeline_next(&t.p) == 0 && record_pipeline_next(&t.p) == 0 && record_pipeline_current(&t.p)->start_line == 2001 &&
		   record_pipeline_ahead(&t.p) == 0 && record_worker_busy(t.p.worker),
	   "the two ahead taken in order (body 3 from line 2001), one more cut ahead runs");
	record_pipeline_reset(&t.p);
	for (int i = 0; i < 5; i++)
		ev_run(t.loop, EVRUN_NOWAIT);
	ok(!record_worker_busy(t.p.worker) && t.p.n_ahead == 0 && t.ready == 0 && t.cut_failed == 0,
	   "record_pipeline_reset: nothing runs, nothing ahead, no callback after");
	teardown(&t);
	close(fd);
	free(file.s);
	free(path);
}

/* A gzip member of @t, then bytes that are no gzip. */
static char *write_corrupt_gz(const struct text *t)
{
	static const char junk[] = "this is no gzip member\n";
	z_stream z = { 0 };
	size_t cap = t->len + 1024, len;
	unsigned char *out = malloc(cap + sizeof(junk));
	char *path;

	if (!out || deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	z.next_in = (unsigned char *)t->s;
	z.avail_in = (uInt)t->len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		abort();
	len = cap - z.avail_out;
	deflateEnd(&z);
	memcpy(out + len, junk, sizeof(junk) - 1);
	path = write_temp("corrupt.ndjson.gz", out, len + sizeof(junk) - 1);
	free(out);
	return path;
}

static void failed_cuts(void)
{
	struct text file = records(12345);
	char *path = write_corrupt_gz(&file);
	struct walk w = { .file = &file, .lines = index_lines(&file), .end_line = 1 };
	unsigned pending = 0, max_ahead = 0, over = 0;
	const char *why;
	struct t t;
	int fd, r;

	setup(&t, false);
	is_int(open_and_cut(&t, path, "corrupt.ndjson.gz", &fd), 0, "a .gz corrupt after its first part: body 0 cuts");
	r = walk_all(&t, &w, &pending, &max_ahead, &over);
	diag("%u bodies before the corrupt part, error %d", w.bodies, r);
	is_int(r, -EBADMSG, "a later cut fails: record_pipeline_next returns -EBADMSG");
	ok(w.bodies >= 2 && w.not_identical == 0 && w.not_contiguous == 0, "the bodies before it were whole and in order");
	ok(t.cut_failed == 1 && t.cut_err == -EBADMSG, "ops.cut_failed once, with the error");
	is_int(record_pipeline_next(&t.p), -EBADMSG, "asked again: the same error");
	ok(record_pipeline_ahead(&t.p) == 0 && !record_worker_busy(t.p.worker) && t.cut_failed == 1,
	   "no second try from there, no second ops.cut_failed");
	why = record_pipeline_read_error(&t.p, "fallback");
	ok(!strncmp(why, "the gzip data is corrupt at byte ", 33), "record_pipeline_read_error: the reader's reason: %s", why);
	teardown(&t);
	close(fd);
	free(path);

	/* On the loop's thread: an fd that is closed. */
	path = write_temp("closed.ndjson", file.s, file.len);
	setup(&t, false);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || record_pipeline_read_at(&t.p, fd, "closed.ndjson", 0, 1) < 0)
		abort();
	close(fd);
	r = record_pipeline_cut(&t.p, 0);
	ok(r == -EBADF && t.cut_failed == 1 && t.cut_err == -EBADF, "record_pipeline_cut of a closed fd: -EBADF, ops.cut_failed once");
	is_str(record_pipeline_read_error(&t.p, "cannot read the file"), "cannot read the file",
	       "record_pipeline_read_error: the caller's words when the reader has no reason");
	teardown(&t);
	free(w.lines.start);
	free(file.s);
	free(path);
}

static void rejects_per_body(void)
{
	static const uint64_t bad[] = { 5, 1500, 2999, 0 };
	struct text file = { 0 };
	char *path;
	struct walk w = { .file = &file, .end_line = 1, .rejected = bad };
	unsigned pending = 0, max_ahead = 0, over = 0;
	struct t t;
	int fd, r;

	for (unsigned i = 1; i <= 3000; i++) {
		if (i == 5)
			text_add(&file, "not json\n");
		else if (i == 1500)
			text_add(&file, "{\"name\":\"no id\"}\n");
		else if (i == 2999)
			text_add(&file, "{\n");
		else
			text_add(&file, "{\"id\":%u,\"name\":\"customer %u\"}\n", i, i);
	}
	w.lines = index_lines(&file);
	path = write_temp("rejects.ndjson", file.s, file.len);
	setup(&t, false);
	r = open_and_cut(&t, path, "rejects.ndjson", &fd);
	r = r ? r : walk_all(&t, &w, &pending, &max_ahead, &over);
	ok(r == 0 && w.bodies == 3 && w.records == 2997, "3000 lines, 3 rejected: 3 bodies, 2997 records");
	is_int(w.bad_rejects, 0, "each body's rejected lines (5; 1500; 2999) in its own p->rej[i], with their line numbers");
	is_int(w.bad_lines, 0, "records keep their line numbers around the rejected ones");
	is_int(w.not_identical, 0, "records byte-identical");
	teardown(&t);
	close(fd);
	free(w.lines.start);
	free(file.s);
	free(path);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	dir = tmpdir_new("pipeline");
	in_order();
	cancel_and_reset();
	failed_cuts();
	rejects_per_body();
	tmpdir_remove(dir);
	return done_testing();
}
