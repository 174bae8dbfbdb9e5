/* test-request: one POST of a batch on a recorded wire: 413/422 bisection, retries, rate waits, completing, counters. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "connection/connection.h"
#include "wire/wire_request.h"
#include "cututil.h"
#include "tap.h"
#include "testutil.h"
#include "wireutil.h"

#define UUID "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
#define MAX_RECORD 4096
#define MAX_SENDS 64

/*
 * The network is the test's: the test links with -Wl,--wrap=wire_upload_client_send, so every body
 * request.c sends lands here, and the test answers with wire_request_on_response() itself. The
 * "client" request.c is bound to is a struct wire.
 */
struct wire {
	size_t n;
	struct sent s[MAX_SENDS];
	char *last;             /* a copy of the last body sent */
	size_t last_len;
	bool fail;              /* wire_upload_client_send fails */
};

int __real_wire_upload_client_send(struct upload_client *c, const char *body, size_t len);
int __wrap_wire_upload_client_send(struct upload_client *c, const char *body, size_t len);

int __wrap_wire_upload_client_send(struct upload_client *c, const char *body, size_t len)
{
	struct wire *w = (struct wire *)c;

	if (w->fail)
		return -EIO;
	if (w->n < MAX_SENDS) {
		parse_sent(&w->s[w->n], body, len);
		w->s[w->n].envelope_ok = w->s[w->n].envelope_ok && !strcmp(w->s[w->n].uuid, UUID);
	}
	w->n++;
	free(w->last);
	w->last = malloc(len ? len : 1);
	if (!w->last)
		abort();
	memcpy(w->last, body, len);
	w->last_len = len;
	return 0;
}

static const struct sent *last_sent(const struct wire *w)
{
	return w->n && w->n <= MAX_SENDS ? &w->s[w->n - 1] : NULL;
}

/* What the request told the batch, and what the batch answers. */
struct t {
	struct ev_loop *loop;
	struct request q;
	struct wire wire;
	struct retry_policy retry;
	struct conn_stats stats;
	struct ratelimits *limits;
	struct cut_params params;
	int may_complete_answer;
	unsigned may_complete_calls, done, refused, failed, auth, stopping_calls, errors, rate_calls;
	uint32_t ref_member;
	uint64_t ref_line;
	char ref_reason[256], ref_data[256], fail_why[512], fail_response[256], stopping_what[256];
	long fail_status, auth_status, error_status;
	bool stopping, rate_waiting;
};

static int op_may_complete(void *userdata)
{
	struct t *t = userdata;

	t->may_complete_calls++;
	/* What the batch does before it says so: the file grew, the body is no longer the last. */
	if (t->may_complete_answer == REQUEST_GREW)
		record_cut_body_reseal(t->q.body, &t->params, false);
	return t->may_complete_answer;
}

static void op_done(void *userdata)
{
	((struct t *)userdata)->done++;
}

static int op_refused(void *userdata, uint32_t member, uint64_t line, const char *reason, const char *data, size_t len,
		      const char *key, size_t key_len)
{
	struct t *t = userdata;

	t->refused++;
	t->ref_member = member;
	t->ref_line = line;
	snprintf(t->ref_reason, sizeof(t->ref_reason), "%s", reason);
	snprintf(t->ref_data, sizeof(t->ref_data), "%.*s", (int)len, data);
	(void)key;
	(void)key_len;
	return 0;
}

static void op_failed(void *userdata, long status, const char *why, const char *response)
{
	struct t *t = userdata;

	t->failed++;
	t->fail_status = status;
	snprintf(t->fail_why, sizeof(t->fail_why), "%s", why);
	snprintf(t->fail_response, sizeof(t->fail_response), "%s", response ? response : "(null)");
}

static void op_auth_refused(void *userdata, long status)
{
	struct t *t = userdata;

	t->auth++;
	t->auth_status = status;
}

static bool op_stopping(void *userdata, const char *what)
{
	struct t *t = userdata;

	t->stopping_calls++;
	snprintf(t->stopping_what, sizeof(t->stopping_what), "%s", what);
	return t->stopping;
}

static void op_error(void *userdata, long status, const char *what)
{
	struct t *t = userdata;

	if (what)
		t->errors++;            /* NULL: a split, noted but not retried */
	t->error_status = status;
}

static void op_rate(void *userdata, bool waiting)
{
	struct t *t = userdata;

	t->rate_calls++;
	t->rate_waiting = waiting;
}

static const struct request_ops ops = {
	.may_complete = op_may_complete,
	.done = op_done,
	.refused = op_refused,
	.failed = op_failed,
	.stopping = op_stopping,
};

static char *dir;

/* A request bound as a batch binds it; @rate_requests per @rate_window seconds (0: unlimited). */
static void setup(struct t *t, unsigned rate_requests, double rate_window)
{
	struct log_ctx ctx = LOG_CTX_NONE;
	const struct request_report report = { op_auth_refused, op_error, op_rate, t };

	memset(t, 0, sizeof(*t));
	t->loop = ev_loop_new(EVFLAG_AUTO);
	/* Only what request.c reads. */
	t->retry.initial_seconds = 0.01;
	t->retry.max_seconds = 0.05;
	t->retry.max_elapsed_seconds = 0;
	t->params = (struct cut_params){ UUID, -1, RECORD_MAX_PER_REQUEST, 64u << 20, NULL, false };
	ctx.connection = "test";
	ctx.file = "t.ndjson";
	ctx.batch_uuid = UUID;
	if (!t->loop || wire_ratelimits_new(&t->limits) < 0 || wire_request_init(&t->q, t->loop, &ops, t, &report) < 0)
		abort();
	wire_request_bind(&t->q, &t->retry, (struct upload_client *)&t->wire,
		     wire_ratelimit_get(t->limits, "key", rate_requests, rate_window), &t->stats, &ctx, &t->params);
}

static void teardown(struct t *t)
{
	wire_request_reset(&t->q);
	wire_request_release(&t->q);
	wire_ratelimits_free(t->limits);
	ev_loop_destroy(t->loop);
	free(t->wire.last);
}

/* The line of record @id, as records() writes it. */
static int record_line(char *buf, size_t size, long id)
{
	return snprintf(buf, size, "{\"id\":%ld,\"name\":\"customer %ld\"}", id, id);
}

/* A file of records with ids @first.. (@n of them), one a line. */
static char *write_records(long first, unsigned n)
{
	static int seq;
	char name[32], line[128], *path;
	size_t len = 0, cap = (size_t)n * 64 + 1;
	char *s = malloc(cap);

	if (!s)
		abort();
	for (unsigned i = 0; i < n; i++) {
		int k = record_line(line, sizeof(line), first + (long)i);

		memcpy(s + len, line, (size_t)k);
		len += (size_t)k;
		s[len++] = '\n';
	}
	snprintf(name, sizeof(name), "r%d.ndjson", ++seq);
	path = path_join(dir, name);
	write_file(path, s, len, 0600);
	free(s);
	return path;
}

/* Cut the bodies of @path, @max_records each, into @out (record_cut_body_init'ed here); returns how many. */
static size_t cut_file(const char *path, unsigned max_records, struct record_body *out, size_t max)
{
	const struct cut_params p = { UUID, -1, max_records, 64u << 20, NULL, false };

	return cut_file_into(path, &p, MAX_RECORD, out, max, NULL, NULL);
}

static void answer(struct t *t, long status, double retry_after, const char *body)
{
	const struct upload_result res = {
		.status = status, .error = "", .body = body ? body : "", .retry_after = retry_after, .elapsed = 0.01,
	};

	wire_request_on_response(&t->q, &res);
}

/* Answer every request: @status for those holding record @bad, 200 for the rest; the ranges sent, as "1-8 1-4* ...". */
static void answer_all(struct t *t, long bad, long status, char *seq, size_t size)
{
	size_t len = 0;

	seq[0] = '\0';
	for (unsigned guard = 0; t->q.state == REQ_SENDING && guard < 100; guard++) {
		const struct sent *s = last_sent(&t->wire);

		if (!s)
			break;
		if (len < size)
			len += (size_t)snprintf(seq + len, size - len, "%s%ld-%ld%s", len ? " " : "", s->first, s->last,
						s->completed ? "*" : "");
		answer(t, s->first <= bad && bad <= s->last ? status : 200, -1, "{\"error\":\"record too large\"}");
	}
}

/* Run the loop until @n bodies have been sent (the timer of a wait fired), or nothing waits any more. */
static void run_until_sent(struct t *t, size_t n)
{
	for (unsigned guard = 0; t->wire.n < n && wire_request_waiting(&t->q) && guard < 1000; guard++)
		ev_run(t->loop, EVRUN_ONCE);
}

static void one_body_one_request(void)
{
	struct t t;
	struct record_body b;
	char *path = write_records(1, 100);

	setup(&t, 0, 0);
	if (cut_file(path, 5000, &b, 1) != 1)
		abort();
	wire_request_begin(&t.q, &b, 1);
	wire_request_send(&t.q);
	is_int(t.wire.n, 1, "100 records: one request");
	ok(t.wire.n == 1 && t.wire.s[0].n == 100 && t.wire.s[0].first == 1 && t.wire.s[0].last == 100 &&
		   t.wire.s[0].contiguous && t.wire.s[0].envelope_ok,
	   "it holds records 1..100 in order, in the batch's envelope");
	ok(t.wire.last_len == b.len && !memcmp(t.wire.last, b.body, b.len), "the body goes as cut, byte for byte");
	ok(t.wire.n == 1 && t.wire.s[0].completed && t.may_complete_calls == 1,
	   "the body is the batch's last: may_complete asked once, batch_completed:true");
	is_int(t.q.state, REQ_SENDING, "the request is in flight");
	ok(t.stats.requests == 1 && t.stats.bytes_sent == b.len, "stats: 1 request, its bytes");
	answer(&t, 200, -1, "");
	is_int(t.done, 1, "200: ops.done once");
	ok(t.q.completed && t.q.state == REQ_IDLE && !ev_is_active(&t.q.timer), "the batch is completed, the request idle");
	ok(t.stats.records_sent == 100 && t.stats.by_status[0].status == 200 && t.stats.by_status[0].requests == 1 &&
		   t.stats.by_status[0].records == 100 && t.stats.last_success == ev_now(t.loop),
	   "stats: 100 records sent, by_status {200, 1 request, 100 records}, last_success now");
	ok(t.failed == 0 && t.refused == 0 && t.errors == 0 && t.auth == 0, "nothing failed, refused or retried");
	teardown(&t);
	record_cut_body_release(&b);
	free(path);
}

/* Past 15 distinct statuses the last slot is "other": no status's count moves to another's name. */
static void statuses_past_the_slots_are_other(void)
{
	struct conn_stats st;
	size_t n = sizeof(st.by_status) / sizeof(st.by_status[0]);
	bool exact = true;

	memset(&st, 0, sizeof(st));
	for (long s = 500; s < 500 + (long)n + 4; s++)
		wire_request_count_status(&st, s, 10);
	wire_request_count_status(&st, 503, 7);
	wire_request_count_status(&st, 599, 1);
	for (size_t i = 0; i < n - 1; i++)
		exact = exact && st.by_status[i].status == 500 + (long)i &&
			st.by_status[i].requests == (i == 3 ? 2u : 1u) && st.by_status[i].records == (i == 3 ? 17u : 10u);
	ok(exact, "the first 15 statuses keep a slot each (503 seen again counted in its own)");
	ok(st.by_status[n - 1].status == STATUS_OTHER && st.by_status[n - 1].requests == 6 &&
		   st.by_status[n - 1].records == 51,
	   "the 16th slot counts every further status as other (6 requests, 51 records), never relabelled");
}

static void split_413_halves(void)
{
	struct t t;
	struct record_body b;
	char *path = write_records(1, 8), seq[256], line[128];

	setup(&t, 0, 0);
	if (cut_file(path, 5000, &b, 1) != 1)
		abort();
	wire_request_begin(&t.q, &b, 1);
	wire_request_send(&t.q);
	answer_all(&t, 6, 413, seq, sizeof(seq));
	is_str(seq, "1-8* 1-4 5-8* 5-6 5-5 6-6 7-8*",
	       "413 halves [lo,hi): record 6 alone is refused, the rest goes on; only the ranges reaching the end complete");
	is_int(t.may_complete_calls, 3, "may_complete asked only for the three requests with batch_completed:true");
	ok(t.refused == 1 && t.ref_member == 0 && t.ref_line == 6, "ops.refused once: file 0, line 6");
	record_line(line, sizeof(line), 6);
	is_str(t.ref_data, line, "the refused record's bytes as in the file");
	is_str(t.ref_reason, "HTTP 413: {\"error\":\"record too large\"}", "the reason is the server's answer");
	is_int(t.done, 1, "ops.done exactly once, at the end");
	ok(t.q.server_rejected == 1 && t.stats.records_rejected == 1 && t.stats.records_sent == 7,
	   "server_rejected 1; stats: 1 rejected, 7 sent");
	ok(t.stats.requests == 7 && t.stats.by_status[0].status == 413 && t.stats.by_status[0].requests == 4 &&
		   t.stats.by_status[0].records == 15 && t.stats.by_status[1].status == 200 &&
		   t.stats.by_status[1].requests == 3 && t.stats.by_status[1].records == 7,
	   "stats: 7 requests; by_status 413: 4 requests of 15 records, 200: 3 of 7");
	ok(t.error_status == 413 && t.stats.retries == 0 && t.errors == 0, "a 413 is noted, and is no retry");
	ok(t.q.completed && t.failed == 0, "the batch completed with the last range");
	teardown(&t);
	record_cut_body_release(&b);
	free(path);
}

/* A body of two files (a multi-file batch): the refused record is named by its file and its own line. */
static void refused_names_member_and_line(void)
{
	const struct cut_params p = { UUID, -1, 5000, 64u << 20, NULL, false };
	struct t t;
	struct record_body b;
	struct record_check *v;
	char *paths[2] = { write_records(1, 3), write_records(11, 4) }, seq[256], line[128];

	setup(&t, 0, 0);
	if (record_cut_body_init(&b, 5000) < 0 || record_cut_body_begin(&b) < 0 || record_check_new(&v, "id", NULL, 0) < 0)
		abort();
	for (uint32_t m = 0; m < 2; m++) {
		struct source *r = NULL;
		int fd = open(paths[m], O_RDONLY | O_CLOEXEC);

		b.member = m;
		if (fd < 0 || record_source_open(&r, fd, "t.ndjson", NULL, 0, 1, &(const struct source_limits){ MAX_RECORD, 0 }) < 0 ||
		    record_cut_fill(&b, &p, r, v, NULL, NULL) != CUT_FILL_EOF)
			abort();
		record_source_free(r);
		close(fd);
	}
	record_cut_body_finish(&b, &p, false);
	wire_request_begin(&t.q, &b, 4);
	wire_request_send(&t.q);
	answer_all(&t, 13, 422, seq, sizeof(seq));
	is_str(seq, "1-14 1-3 11-14 11-12 13-14 13-13 14-14", "422 bisects like 413");
	ok(t.refused == 1 && t.ref_member == 1 && t.ref_line == 3, "record 13 refused as file 1, line 3 (got %u, %" PRIu64 ")",
	   t.ref_member, t.ref_line);
	record_line(line, sizeof(line), 13);
	is_str(t.ref_data, line, "its bytes");
	ok(t.may_complete_calls == 0 && !t.q.completed && t.done == 1,
	   "not the batch's last body: may_complete never asked, nothing completes, done once");
	record_check_free(v);
	teardown(&t);
	record_cut_body_release(&b);
	free(paths[0]);
	free(paths[1]);
}

static void bisection_is_logarithmic(void)
{
	struct t t;
	struct record_body b;
	char *path = write_records(1, 5000), line[128];
	unsigned char *acked = calloc(5001, 1);
	unsigned twice = 0, missing = 0;

	setup(&t, 0, 0);
	if (!acked || cut_file(path, 5000, &b, 1) != 1 || b.n_records != 5000)
		abort();
	wire_request_begin(&t.q, &b, 1);
	wire_request_send(&t.q);
	for (unsigned guard = 0; t.q.state == REQ_SENDING && guard < 200; guard++) {
		const struct sent *s = last_sent(&t.wire);
		bool bad;

		if (!s)
			break;          /* more than MAX_SENDS: far from O(log n) */
		bad = s->first <= 3217 && 3217 <= s->last;

		if (!bad)
			for (long id = s->first; id <= s->last; id++)
				twice += acked[id]++ != 0;
		answer(&t, bad ? 413 : 200, -1, "too large");
	}
	for (long id = 1; id <= 5000; id++)
		missing += id != 3217 && !acked[id];
	diag("one bad record among 5000: %zu requests", t.wire.n);
	ok(t.wire.n >= 14 && t.wire.n <= 27, "one bad record among 5000 costs O(log n) requests: 14..27 (1 + 2 x 13)");
	ok(twice == 0 && missing == 0 && acked[3217] == 0, "every other record acknowledged exactly once");
	ok(t.refused == 1 && t.ref_line == 3217 && t.done == 1 && t.q.server_rejected == 1,
	   "record 3217 refused, ops.done once");
	record_line(line, sizeof(line), 3217);
	is_str(t.ref_data, line, "the refused record's bytes");
	is_int(t.stats.records_sent, 4999, "stats: 4999 records sent");
	teardown(&t);
	record_cut_body_release(&b);
	free(acked);
	free(path);
}

static void retry_after_503(void)
{
	struct t t;
	struct record_body b[2];
	char *path = write_records(1, 20);
	double left;

	setup(&t, 0, 0);
	if (cut_file(path, 10, b, 2) != 2)
		abort();
	wire_request_begin(&t.q, &b[0], 1);
	wire_request_send(&t.q);
	answer(&t, 503, -1, "busy");
	left = t.q.wait;
	ok(t.q.state == REQ_RETRY_WAIT && ev_is_active(&t.q.timer) && left >= 0 && left <= 0.05,
	   "503: REQ_RETRY_WAIT, the timer armed for at most retry_max_seconds (%.3f s)", left);
	ok(t.wire.n == 1 && t.errors == 1 && t.error_status == 503 && t.failed == 0 && t.done == 0,
	   "nothing sent yet; report.error once with 503");
	ok(t.stats.retries == 1 && t.stats.last_error_status == 0,
	   "stats: 1 retry; the last error is the connection's to note (report.error), not the request's");
	run_until_sent(&t, 2);
	ok(t.wire.n == 2 && t.wire.s[1].len == t.wire.s[0].len && t.wire.s[1].first == 1 && t.wire.s[1].last == 10 &&
		   t.q.state == REQ_SENDING,
	   "the timer sends the same request again");
	answer(&t, 200, -1, "");
	ok(t.done == 1 && t.q.attempt == 0 && t.stats.records_sent == 10, "200: done, the attempts start over");

	/* Retry-After: honoured over the back-off, capped at retry_max_seconds (the policy the request copied at bind). */
	t.q.retry.initial_seconds = 0.001;
	t.q.retry.max_seconds = 100;
	wire_request_begin(&t.q, &b[1], 2);
	wire_request_send(&t.q);
	answer(&t, 503, 7, "busy");
	left = t.q.wait;
	ok(t.q.state == REQ_RETRY_WAIT && ev_is_active(&t.q.timer) && left == 7, "Retry-After: 7 is honoured (%.3f s)", left);
	wire_request_send(&t.q);
	answer(&t, 503, 1000, "busy");
	left = t.q.wait;
	ok(t.q.state == REQ_RETRY_WAIT && ev_is_active(&t.q.timer) && left == 100,
	   "Retry-After: 1000 is capped at retry_max_seconds 100 (%.3f s)", left);
	wire_request_reset(&t.q);
	ok(t.q.state == REQ_IDLE && !ev_is_active(&t.q.timer), "wire_request_reset ends the wait");
	ok(t.stats.requests == 4 && t.stats.retries == 3, "stats: 4 requests, 3 retries");
	teardown(&t);
	record_cut_body_release(&b[0]);
	record_cut_body_release(&b[1]);
	free(path);
}

static void retries_give_up(void)
{
	struct t t;
	struct record_body b;
	char *path = write_records(1, 5);
	unsigned guard;

	setup(&t, 0, 0);
	t.q.retry.initial_seconds = 0.005;
	t.q.retry.max_seconds = 0.01;
	t.q.retry.max_elapsed_seconds = 0.04;
	if (cut_file(path, 5000, &b, 1) != 1)
		abort();
	wire_request_begin(&t.q, &b, 1);
	wire_request_send(&t.q);
	for (guard = 0; t.failed == 0 && guard < 1000; guard++) {
		if (t.q.state == REQ_SENDING)
			answer(&t, 503, -1, "still busy");
		else if (wire_request_waiting(&t.q))
			ev_run(t.loop, EVRUN_ONCE);
		else
			break;
	}
	diag("gave up after %zu requests", t.wire.n);
	ok(t.failed == 1 && t.fail_status == 503, "retry_max_elapsed_seconds: ops.failed once, with 503");
	ok(!strncmp(t.fail_why, "gave up after ", 14) &&
		   strstr(t.fail_why, " s of retries (retry_max_elapsed_seconds): HTTP 503") != NULL,
	   "why: %s", t.fail_why);
	is_str(t.fail_response, "still busy", "the server's last answer goes with it");
	ok(t.wire.n >= 2 && t.q.state == REQ_IDLE && !ev_is_active(&t.q.timer) && t.done == 0,
	   "it retried before giving up; nothing waits after");
	teardown(&t);
	record_cut_body_release(&b);
	free(path);
}

static void rate_limit(void)
{
	struct t t;
	struct record_body b[2];
	char *path = write_records(1, 2);
	double left;

	/* 429 cuts the budget: 0.7 x the 21 sends of the window = 14 (of 100). */
	setup(&t, 100, 60);
	if (cut_file(path, 1, b, 2) != 2)
		abort();
	for (int i = 0; i < 20; i++) {
		wire_request_begin(&t.q, &b[0], 1);
		wire_request_send(&t.q);
		answer(&t, 200, -1, "");
	}
	wire_request_begin(&t.q, &b[0], 1);
	wire_request_send(&t.q);
	is_int(wire_ratelimit_budget(t.q.limiter), 100, "budget 100 before the 429");
	answer(&t, 429, -1, "slow down");
	is_int(wire_ratelimit_budget(t.q.limiter), 14, "429 cuts the limiter's budget to 0.7 x 21 sent");
	ok(t.q.state == REQ_RETRY_WAIT && t.errors == 1 && t.error_status == 429, "429 is retried");
	t.rate_calls = 0;
	wire_request_send(&t.q);
	left = t.q.wait;
	ok(t.q.state == REQ_RATE_WAIT && t.wire.n == 21 && t.stats.rate_waits == 1 && t.rate_calls == 1 && t.rate_waiting,
	   "21 sent, budget 14: the next one waits for the rate limit (REQ_RATE_WAIT, ops.rate(true), stats.rate_waits 1)");
	ok(left > 0 && left <= 60 * 1.02 + 0.05, "the timer is armed for when a slot frees (%.3f s)", left);
	teardown(&t);

	/* A rate wait that ends: one request a window of 10 ms. */
	setup(&t, 1, 0.01);
	wire_request_begin(&t.q, &b[0], 1);
	wire_request_send(&t.q);
	answer(&t, 200, -1, "");
	wire_request_begin(&t.q, &b[1], 2);
	wire_request_send(&t.q);
	ok(t.q.state == REQ_RATE_WAIT && t.wire.n == 1 && ev_is_active(&t.q.timer), "1 a window: the second waits");
	run_until_sent(&t, 2);
	ok(t.wire.n == 2 && t.q.state == REQ_SENDING && !t.rate_waiting && t.wire.s[1].first == 2,
	   "the timer sends it once the slot frees; ops.rate(false)");
	ok(t.stats.requests == 2 && t.stats.rate_waits == 1, "stats: 2 requests, 1 rate wait");
	answer(&t, 200, -1, "");

	/* SIGTERM: no rate wait, no retry wait: the batch ends there. */
	wire_request_begin(&t.q, &b[0], 3);
	t.stopping = true;
	wire_request_send(&t.q);
	ok(t.wire.n == 2 && t.q.state == REQ_IDLE && !ev_is_active(&t.q.timer) && t.stats.rate_waits == 1 &&
		   !strcmp(t.stopping_what, "waiting for the rate limit"),
	   "ops.stopping true: the rate wait ends without sending");
	teardown(&t);

	setup(&t, 0, 0);
	wire_request_begin(&t.q, &b[0], 1);
	wire_request_send(&t.q);
	t.stopping = true;
	answer(&t, 503, -1, "");
	ok(t.wire.n == 1 && t.q.state == REQ_IDLE && !ev_is_active(&t.q.timer) && t.stats.retries == 0 &&
		   t.errors == 0 && t.stopping_calls == 1 && !strcmp(t.stopping_what, "HTTP 503"),
	   "ops.stopping true: a 503 ends without a retry wait");
	teardown(&t);
	record_cut_body_release(&b[0]);
	record_cut_body_release(&b[1]);
	free(path);
}

static void auth_and_fatal(void)
{
	struct t t;
	struct record_body b;
	char *path = write_records(1, 3);

	setup(&t, 0, 0);
	if (cut_file(path, 5000, &b, 1) != 1)
		abort();
	wire_request_begin(&t.q, &b, 1);
	wire_request_send(&t.q);
	answer(&t, 401, -1, "");
	ok(t.auth == 1 && t.auth_status == 401 && t.failed == 0 && t.errors == 0 && t.q.state == REQ_IDLE &&
		   !ev_is_active(&t.q.timer),
	   "401: report.auth_refused, no retry timer");
	wire_request_send(&t.q);
	answer(&t, 403, -1, "");
	ok(t.wire.n == 2 && t.auth == 2 && t.auth_status == 403, "403 after wire_request_send again: report.auth_refused");
	wire_request_send(&t.q);
	answer(&t, 400, -1, "{\"error\":\"bad envelope\"}");
	ok(t.failed == 1 && t.fail_status == 400 && t.done == 0 && t.q.state == REQ_IDLE, "400: ops.failed");
	is_str(t.fail_why, "the server answered HTTP 400", "why");
	is_str(t.fail_response, "{\"error\":\"bad envelope\"}", "the server's answer goes with it");
	ok(t.stats.records_sent == 0 && t.stats.retries == 0 && t.stats.requests == 3, "stats: 3 requests, none sent a record");

	t.wire.fail = true;
	wire_request_send(&t.q);
	ok(t.failed == 2 && !strcmp(t.fail_why, "cannot start the request") && t.stats.requests == 3 &&
		   t.q.state == REQ_IDLE,
	   "wire_upload_client_send fails: ops.failed, nothing counted");
	teardown(&t);
	record_cut_body_release(&b);
	free(path);
}

static void completing(void)
{
	struct t t;
	struct record_body b[2];
	char *path = write_records(1, 3), line[128];

	setup(&t, 0, 0);
	if (cut_file(path, 2, b, 2) != 2 || !b[1].last)
		abort();
	wire_request_begin(&t.q, &b[0], 1);
	is_int(wire_request_resend_last(&t.q), -ENOENT, "wire_request_resend_last before any acknowledgement: -ENOENT");
	ok(t.wire.n == 0, "and nothing sent");

	/* The last body: the batch says no, grew, then whole. */
	wire_request_begin(&t.q, &b[1], 2);
	t.may_complete_answer = REQUEST_WAIT;
	wire_request_send(&t.q);
	ok(t.may_complete_calls == 1 && t.wire.n == 0 && t.q.state == REQ_IDLE, "REQUEST_WAIT: nothing sent");
	t.may_complete_answer = REQUEST_GREW;
	wire_request_send(&t.q);
	ok(t.may_complete_calls == 2 && t.wire.n == 1 && !t.wire.s[0].completed && !t.q.completes,
	   "REQUEST_GREW (the batch resealed the body): sent with batch_completed:false");
	ok(t.wire.n == 1 && t.wire.s[0].envelope_ok && t.wire.s[0].n == 1 && t.wire.last_len == b[1].len &&
		   !memcmp(t.wire.last, b[1].body, b[1].len),
	   "the body goes as resealed, byte for byte: whole JSON, its record, batch_completed:false");
	record_cut_body_reseal(&b[1], &t.params, true);    /* as if it had not grown: the rest completes with it */
	answer(&t, 200, -1, "");
	ok(t.done == 1 && !t.q.completed, "acknowledged: done, the batch not completed");

	/* Body 1 acknowledged, body 2 (the last) all refused: complete with record 2 again. */
	t.may_complete_answer = REQUEST_WHOLE;
	wire_request_begin(&t.q, &b[0], 1);
	wire_request_send(&t.q);
	answer(&t, 200, -1, "");
	wire_request_begin(&t.q, &b[1], 2);
	wire_request_send(&t.q);
	ok(t.may_complete_calls == 3 && t.wire.s[t.wire.n - 1].completed, "REQUEST_WHOLE: batch_completed:true");
	answer(&t, 422, -1, "bad");
	ok(t.refused == 1 && t.ref_line == 3 && t.done == 3 && !t.q.completed, "record 3 refused: done, not completed");
	is_int(wire_request_resend_last(&t.q), 0, "wire_request_resend_last");
	ok(t.wire.n == 4 && t.wire.s[3].n == 1 && t.wire.s[3].first == 2 && t.wire.s[3].completed && t.wire.s[3].envelope_ok,
	   "sends the last acknowledged record (id 2) again with batch_completed:true");
	record_line(line, sizeof(line), 2);
	ok(strstr(t.wire.last, line) != NULL, "its bytes as in the file");
	is_int(t.may_complete_calls, 3, "may_complete not asked for it");
	answer(&t, 200, -1, "");
	ok(t.q.completed && t.done == 4 && t.stats.records_sent == 3, "200: completed, done; the record sent again is not counted twice (1+2)");
	teardown(&t);
	record_cut_body_release(&b[0]);
	record_cut_body_release(&b[1]);
	free(path);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	dir = tmpdir_new("request");
	one_body_one_request();
	statuses_past_the_slots_are_other();
	split_413_halves();
	refused_names_member_and_line();
	bisection_is_logarithmic();
	retry_after_503();
	retries_give_up();
	rate_limit();
	auth_and_fatal();
	completing();
	tmpdir_remove(dir);
	return done_testing();
}
