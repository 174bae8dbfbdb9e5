/* test-batch: whole batches on a recorded wire, with a real loop, real files and a real journal: send, acknowledge, split, complete, archive, fail, hand back, resume. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ev.h>
#include <yajl/yajl_tree.h>

#include "batch/batch.h"
#include "config/config.h"
#include "record/record_worker.h"
#include "spool/spool.h"
#include "spool/spool_queue.h"
#include "state/state_counters.h"
#include "state/state_journal.h"
#include "util/fileio.h"
#include "util/layout.h"
#include "tap.h"
#include "testutil.h"
#include "wireutil.h"

#define MAX_SENDS 64
#define HOLD (-1)               /* a status that leaves the request in flight until the test answers */
#define GUARD_SECONDS 60.0      /* the loop gives up after this long: only a hang gets there */

/*
 * The network is the test's: linked with -Wl,--wrap=wire_upload_client_send, every body the batch
 * sends lands in __wrap_wire_upload_client_send, which notes it together with what the journal on
 * disk said at that moment, and the answer comes from the loop as curl's would. The "client" the
 * batch is given is a struct wire.
 */
struct on_disk {
	size_t live;            /* live batches in the journal as a fresh replay reads it */
	enum batch_state state;
	char uuid[37];
	uint32_t acks;
	uint64_t records, offset, lineno;
	size_t members;         /* its member records */
	uint64_t file_size;     /* the first member's size, as journaled */
};

struct wire {
	struct ev_loop *loop;
	struct request *req;    /* what the answers go to, as wire_upload_client_new's userdata */
	const char *state_dir;
	ev_timer answer;
	bool in_flight;
	size_t n;
	struct sent s[MAX_SENDS];
	struct on_disk disk[MAX_SENDS];
	long status[MAX_SENDS]; /* the answer to send i; 0: the rule below */
	long bad_id, bad_status;        /* a body holding record bad_id is answered bad_status, others 200 */
	const char *response;   /* the body of a non-2xx answer */
	void (*on_send)(struct wire *w, size_t i);      /* called as body i leaves, before the batch goes on */
	void *hook;
	const char *watched;    /* a file whose size is noted at each send */
	off_t watched_size[MAX_SENDS];
};

int __wrap_wire_upload_client_send(struct upload_client *c, const char *body, size_t len);

static void read_disk(const char *state_dir, struct on_disk *d)
{
	struct journal *j;

	memset(d, 0, sizeof(*d));
	if (state_journal_open_readonly(&j, state_dir) < 0)
		abort();
	d->live = state_journal_count(j);
	if (d->live) {
		const struct journal_batch *b = state_journal_at(j, 0);
		const struct journal_member *m;

		d->members = state_journal_members(j, b->id, &m);
		d->file_size = d->members ? m[0].ident.size : 0;
		d->state = b->state;
		snprintf(d->uuid, sizeof(d->uuid), "%s", b->uuid);
		d->acks = b->acks;
		d->records = b->records;
		d->offset = b->offset;
		d->lineno = b->lineno;
	}
	state_journal_free(j);
}

static long status_of(const struct wire *w, size_t i)
{
	const struct sent *s = &w->s[i];

	if (w->status[i])
		return w->status[i];
	return w->bad_id && s->first <= w->bad_id && w->bad_id <= s->last ? w->bad_status : 200;
}

static void wire_answer(struct wire *w, long status)
{
	const struct upload_result res = {
		.status = status,
		.error = "",
		.body = status / 100 == 2 ? "" : w->response ? w->response : "{\"error\":\"refused\"}",
		.retry_after = -1,
		.elapsed = 0.01,
	};

	w->in_flight = false;
	wire_request_on_response(w->req, &res);
}

static void answer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct wire *w = t->data;

	(void)loop;
	(void)revents;
	wire_answer(w, status_of(w, w->n - 1));
}

int __wrap_wire_upload_client_send(struct upload_client *c, const char *body, size_t len)
{
	struct wire *w = (struct wire *)c;

	if (w->in_flight || w->n >= MAX_SENDS)
		abort();        /* one request at a time; more than this is a runaway batch */
	parse_sent(&w->s[w->n], body, len);
	read_disk(w->state_dir, &w->disk[w->n]);
	w->watched_size[w->n] = w->watched ? file_size(w->watched) : -1;
	w->in_flight = true;
	if (w->on_send)
		w->on_send(w, w->n);
	if (status_of(w, w->n++) != HOLD) {
		ev_timer_set(&w->answer, 0., 0.);
		ev_timer_start(w->loop, &w->answer);
	}
	return 0;
}

/* The ranges sent, as "1-4 5-8 9-10*" (* batch_completed:true). */
static const char *ranges(const struct wire *w, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < w->n && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%ld-%ld%s", i ? " " : "", w->s[i].first, w->s[i].last,
					w->s[i].completed ? "*" : "");
	return buf;
}

/* One connection "shop" as the daemon sets it up, with its batch and what the batch told. */
struct h {
	char *dir, *spool, *state;
	struct ev_loop *loop;
	ev_timer guard;
	double deadline;
	bool timed_out;
	struct config *config;
	const struct conn_config *cfg;
	struct journal *j;
	struct workfiles wf;
	struct intake in;
	struct record_check *v;
	struct ratelimits *limits;
	struct ratelimit *limiter;
	struct conn_stats stats;
	struct batch b;
	struct wire wire;
	unsigned ended, finished_ok, finished_failed, auth;
	enum batch_end how;
	long fail_status;
	char fail_why[512];
	uint64_t records, rejected;     /* of the batch, when it finished */
};

static void op_ended(void *userdata, enum batch_end how)
{
	struct h *h = userdata;

	h->ended++;
	h->how = how;
}

static void op_finished(void *userdata, const struct history_entry *e)
{
	struct h *h = userdata;

	if (e->outcome == HISTORY_HANDED_BACK)
		return;
	if (e->outcome == HISTORY_ARCHIVED)
		h->finished_ok++;
	else
		h->finished_failed++;
	h->fail_status = e->http_status;
	snprintf(h->fail_why, sizeof(h->fail_why), "%s", e->reason);
	h->records = e->records_sent;
	h->rejected = e->records_rejected;
}

/* What the connection does on 401/403 (auth_pause): files nothing was acknowledged of go back. */
static void op_auth_refused(void *userdata, long status)
{
	struct h *h = userdata;

	h->auth++;
	batch_release_carry(&h->b);
	if (batch_untouched(&h->b))
		batch_release_files(&h->b, status, "the API refused the keys");
}

static void op_fields(void *userdata, struct catalog *acked)
{
	(void)userdata;
	(void)acked;
}

static void op_error(void *userdata, long status, const char *what)
{
	(void)userdata;
	(void)status;
	(void)what;
}

static void op_rate(void *userdata, bool waiting)
{
	(void)userdata;
	(void)waiting;
}

static const struct batch_ops ops = {
	.ended = op_ended,
	.finished = op_finished,
	.fields = op_fields,
};

static void on_ready(void *userdata)
{
	(void)userdata;
}

static void guard_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct h *h = t->data;

	(void)revents;
	if (ev_now(loop) >= h->deadline)
		h->timed_out = true;
}

/* The daemon's [connection shop] section, with @extra lines (retries quick unless they say); after_upload is the daemon's. */
static void load_config(struct h *h, const char *extra)
{
	char *path = path_join(h->dir, "dcsyncd.conf"), err[1024];
	struct text t = { 0 };

	config_free(h->config);
	text_add(&t, "[daemon]\nspool_dir = %s\nstate_dir = %s\n\n[connection shop]\n"
		 "uuid = 9ce27b8c-8b16-427a-8d00-f40b816bc092\nprimary_key = id\napi_key = k\nbrand_key = b\n"
		 "%s%s", h->spool, h->state, strstr(extra, "retry_initial_seconds") ? "" : "retry_initial_seconds = 0.01\n", extra);
	write_file(path, t.s, t.len, 0600);
	if (config_load(path, &h->config, err, sizeof(err)) < 0) {
		fprintf(stderr, "config_load: %s\n", err);
		abort();
	}
	h->cfg = config_find_conn(h->config, "shop");
	free(t.s);
	free(path);
}

/* What a start of the daemon makes: the journal replayed, the connection's files and intake, its batch. */
static void start(struct h *h, enum after_upload after)
{
	const struct batch_env env = {
		.name = "shop",
		.loop = h->loop,
		.journal = NULL,        /* set below */
		.wf = &h->wf,
		.in = &h->in,
		.stats = &h->stats,
		.state_dir = h->state,
		.settle_seconds = 0,
		.after_upload = after,
		.report = { op_auth_refused, op_error, op_rate, h },
	};
	struct batch_env e = env;

	if (state_journal_open(&h->j, h->state, NULL) < 0 || spool_work_init(&h->wf, h->spool, h->state, "shop") < 0 ||
	    fileio_mkdirs(h->wf.dir, 0770) < 0 || spool_intake_init(&h->in, h->loop, &h->wf, "shop", 0, on_ready, h) < 0)
		abort();
	e.journal = h->j;
	if (batch_init(&h->b, &e, 100, &ops, h) < 0)
		abort();
	h->wire.req = &h->b.req;
}

/* What a stop of the daemon leaves: only the files and the journal on disk. */
static void stop(struct h *h)
{
	batch_release(&h->b);
	spool_intake_release(&h->in);
	spool_work_release(&h->wf);
	state_journal_free(h->j);
	h->j = NULL;
}

static void setup(struct h *h, const char *extra, enum after_upload after)
{
	memset(h, 0, sizeof(*h));
	h->dir = tmpdir_new("batch");
	h->spool = path_join(h->dir, "spool");
	h->state = path_join(h->dir, "state");
	if (mkdir(h->spool, 0755) < 0 || mkdir(h->state, 0755) < 0 || !(h->loop = ev_loop_new(EVFLAG_AUTO)) ||
	    record_check_new(&h->v, "id", NULL, 0) < 0 || wire_ratelimits_new(&h->limits) < 0 ||
	    !(h->limiter = wire_ratelimit_get(h->limits, "k", 0, 0)))
		abort();
	load_config(h, extra);
	h->wire.loop = h->loop;
	h->wire.state_dir = h->state;
	ev_timer_init(&h->wire.answer, answer_cb, 0., 0.);
	h->wire.answer.data = &h->wire;
	ev_timer_init(&h->guard, guard_cb, 1., 1.);
	h->guard.data = h;
	ev_timer_start(h->loop, &h->guard);
	start(h, after);
}

static void teardown(struct h *h)
{
	stop(h);
	ev_timer_stop(h->loop, &h->wire.answer);
	ev_timer_stop(h->loop, &h->guard);
	ev_loop_destroy(h->loop);
	wire_ratelimits_free(h->limits);
	record_check_free(h->v);
	config_free(h->config);
	free(h->spool);
	free(h->state);
	tmpdir_remove(h->dir);
}

/* Run the loop until @cond holds; the guard timer only stops a hang. */
#define RUN_UNTIL(h, cond)                                                             \
	do {                                                                           \
		(h)->timed_out = false;                                                \
		ev_now_update((h)->loop);                                              \
		(h)->deadline = ev_now((h)->loop) + GUARD_SECONDS;                     \
		while (!(cond) && !(h)->timed_out)                                     \
			ev_run((h)->loop, EVRUN_ONCE);                                 \
		if ((h)->timed_out)                                                    \
			diag("the loop gave up waiting for: %s", #cond);               \
	} while (0)

static int batch_go(struct h *h)
{
	return batch_start(&h->b, h->cfg, h->v, (struct upload_client *)&h->wire, h->limiter);
}

/* Queue what is in the spool, start a batch with it and run the loop until that batch ended. */
static void run_batch(struct h *h)
{
	unsigned ended = h->ended;

	spool_intake_scan(&h->in);
	is_int(batch_go(h), 0, "batch_start");
	RUN_UNTIL(h, h->ended > ended);
}

static int batch_go_on(struct h *h, const struct journal_batch *jb)
{
	return batch_resume(&h->b, jb, h->cfg, h->v, (struct upload_client *)&h->wire, h->limiter);
}

/* <spool>/shop/<name>: @n records with ids @first.., one a line, and @bad invalid lines after line 2; mtime @age s ago. */
static char *drop(struct h *h, const char *name, long first, unsigned n, unsigned bad, int age)
{
	char *path, *conn = path_join(h->spool, "shop");
	struct text t = { 0 };
	struct timespec ts[2];

	for (unsigned i = 0; i < n; i++) {
		text_add(&t, "{\"id\":%ld,\"name\":\"customer %ld\"}\n", first + (long)i, first + (long)i);
		for (unsigned k = 0; i == 1 && k < bad; k++)
			text_add(&t, "{not json\n");
	}
	path = path_join(conn, name);
	write_file(path, t.s, t.len, 0644);
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= age;
	ts[1] = ts[0];
	if (utimensat(AT_FDCWD, path, ts, 0) < 0)
		abort();
	free(conn);
	free(t.s);
	return path;
}

/* Bytes of the first @n lines of @path. */
static uint64_t offset_after_lines(const char *text, unsigned n)
{
	const char *p = text;

	for (unsigned i = 0; i < n && (p = strchr(p, '\n')); i++)
		p++;
	return p ? (uint64_t)(p - text) : 0;
}

/* The files in <dir>/<sub> (no directory, no name starting with '.'), sorted: "a b c". */
static const char *list(const char *dir, const char *sub, char *buf, size_t size)
{
	char *path = path_join(dir, sub);
	char *names[64];
	size_t n = 0, len = 0;
	struct dirent *de;
	DIR *d = opendir(path);

	buf[0] = '\0';
	while (d && (de = readdir(d)) && n < 64)
		if (de->d_name[0] != '.' && de->d_type != DT_DIR)
			names[n++] = strdup(de->d_name);
	if (d)
		closedir(d);
	for (size_t i = 0; i < n; i++)
		for (size_t k = i + 1; k < n; k++)
			if (strcmp(names[k], names[i]) < 0) {
				char *x = names[i];

				names[i] = names[k];
				names[k] = x;
			}
	for (size_t i = 0; i < n; i++) {
		if (len < size)
			len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? " " : "", names[i]);
		free(names[i]);
	}
	free(path);
	return buf;
}

/* A member of a parsed JSON object: its number (-1 if none), its string ("(none)" if none). */
static long long json_int(yajl_val v, const char *key)
{
	const char *path[] = { key, NULL };
	yajl_val x = v ? yajl_tree_get(v, path, yajl_t_number) : NULL;

	return x && YAJL_IS_INTEGER(x) ? YAJL_GET_INTEGER(x) : -1;
}

static const char *json_str(yajl_val v, const char *key)
{
	const char *path[] = { key, NULL };
	yajl_val x = v ? yajl_tree_get(v, path, yajl_t_string) : NULL;

	return x && YAJL_GET_STRING(x) ? YAJL_GET_STRING(x) : "(none)";
}

static unsigned count_of(const char *s, const char *what)
{
	unsigned n = 0;

	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

static bool same_uuid(const struct wire *w, size_t from, size_t to, const char *uuid)
{
	for (size_t i = from; i < to; i++)
		if (!w->s[i].envelope_ok || strcmp(w->s[i].uuid, uuid))
			return false;
	return true;
}

static void sends_a_file_in_requests_of_at_most_5000_records(void)
{
	struct h h;
	char buf[512];
	char *path, *text, *done;
	size_t len, len2;

	setup(&h, "", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "big.ndjson", 1, 12001, 0, 10);
	text = read_whole(path, &len);
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-5000 5001-10000 10001-12001*",
	       "12001 records: three requests of at most 5000, in order, batch_completed only on the last");
	ok(h.wire.n == 3 && h.wire.s[0].contiguous && h.wire.s[1].contiguous && h.wire.s[2].contiguous,
	   "each request holds its records once, in file order");
	ok(h.wire.n == 3 && same_uuid(&h.wire, 0, 3, h.wire.disk[0].uuid) && strlen(h.wire.s[0].uuid) == 36,
	   "the three carry one batch_uuid, the one the journal held before the first was sent");
	ok(h.wire.n == 3 && h.wire.disk[0].live == 1 && h.wire.disk[0].state == BATCH_OPEN && h.wire.disk[0].acks == 0,
	   "the batch was durable (OPEN, nothing acknowledged) before its first request left");
	ok(h.wire.n == 3 && h.wire.disk[1].acks == 1 && h.wire.disk[1].records == 5000 &&
		   h.wire.disk[1].lineno == 5001 && h.wire.disk[1].offset == offset_after_lines(text, 5000),
	   "before request 2: acknowledgement 1 is durable (acks 1, 5000 records, line 5001, its byte offset)");
	ok(h.wire.n == 3 && h.wire.disk[2].acks == 2 && h.wire.disk[2].records == 10000 &&
		   h.wire.disk[2].lineno == 10001 && h.wire.disk[2].offset == offset_after_lines(text, 10000),
	   "before request 3: acknowledgement 2 is durable (acks 2, 10000 records, line 10001)");
	ok(h.ended == 1 && h.how == BATCH_END_NEXT && h.finished_ok == 1 && h.finished_failed == 0 && h.records == 12001,
	   "the batch went up: ended once (next), finished ok with 12001 records");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "big.ndjson", "after_upload = archive: the file is in done/shop/");
	done = path_join(h.wf.done_dir, "big.ndjson");
	{
		char *got = read_whole(done, &len2);

		ok(got && len2 == len && !memcmp(got, text, len), "byte for byte as dropped");
		free(got);
	}
	is_str(list(h.wf.dir, ".work", buf, sizeof(buf)), "", "nothing is left in .work/");
	is_str(list(h.spool, "shop", buf, sizeof(buf)), "", "nor in the spool");
	is_int(state_journal_count(h.j), 0, "the journal holds no live batch");
	ok(h.stats.files_done == 1 && h.stats.records_sent == 12001 && h.stats.requests == 3,
	   "stats: 1 file done, 12001 records sent, 3 requests");
	free(done);
	free(text);
	free(path);
	teardown(&h);
}

static void a_413_splits_the_request_and_the_record_goes_to_rejected(void)
{
	struct h h;
	char buf[512], *rej, *p, *path;
	size_t len;

	setup(&h, "batch_records = 4\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 10, 0, 10);
	h.wire.bad_id = 6;
	h.wire.bad_status = 413;
	h.wire.response = "{\"error\":\"too large\"}";
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-4 5-8 5-6 5-5 6-6 7-8 9-10*",
	       "413 on the body holding record 6: halved until record 6 is alone; the batch goes on after it");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid), "all under one batch_uuid");
	ok(h.wire.n == 7 && h.wire.disk[6].acks == 2 && h.wire.disk[6].records == 7,
	   "before the last body: 2 bodies acknowledged, 7 records (record 6 is not counted)");
	ok(h.finished_ok == 1 && h.records == 9 && h.rejected == 1, "completed: 9 records up, 1 rejected");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "f.ndjson", "archived");
	rej = path_join(h.wf.dir, "rejected/f.ndjson.rejected.ndjson");
	p = read_whole(rej, &len);
	ok(p && strstr(p, "\"line\":6") && strstr(p, "customer 6") && strstr(p, "HTTP 413") && !strstr(p, "customer 5"),
	   "rejected/f.ndjson.rejected.ndjson holds line 6, its record and the server's answer, and nothing else");
	free(p);
	free(rej);
	free(path);
	teardown(&h);
}

static void a_422_on_the_last_record_completes_with_the_last_acknowledged_one(void)
{
	struct h h;
	char buf[512], *path;

	setup(&h, "batch_records = 4\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 10, 0, 10);
	h.wire.bad_id = 10;
	h.wire.bad_status = 422;
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-4 5-8 9-10* 9-9 10-10* 9-9*",
	       "422 bisects the last body; record 10 refused, the batch completes by sending record 9 again");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid), "all under one batch_uuid");
	ok(h.finished_ok == 1 && h.records == 9 && h.rejected == 1, "completed: 9 records up, 1 rejected");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "f.ndjson", "archived");
	free(path);
	teardown(&h);
}

static void a_400_fails_the_file_to_failed_with_its_error(void)
{
	struct h h;
	char buf[512], *path, *ej, *p, err[256];
	struct on_disk d;
	size_t len;
	yajl_val v;

	setup(&h, "batch_records = 4\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 10, 0, 10);
	h.wire.status[1] = 400;
	h.wire.response = "{\"error\":\"bad envelope\"}";
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-4 5-8", "request 2 answered 400: nothing more is sent");
	ok(h.ended == 1 && h.how == BATCH_END_NEXT && h.finished_failed == 1 && h.fail_status == 400,
	   "finished as failed with 400, ended (next)");
	is_str(h.fail_why, "the server answered HTTP 400", "why");
	is_str(list(h.wf.dir, "failed", buf, sizeof(buf)), "f.ndjson f.ndjson.error.json",
	       "the file is in failed/ beside its error.json");
	is_str(list(h.wf.dir, ".work", buf, sizeof(buf)), "", ".work/ is empty");
	ej = path_join(h.wf.dir, "failed/f.ndjson.error.json");
	p = read_whole(ej, &len);
	v = p ? yajl_tree_parse(p, err, sizeof(err)) : NULL;
	ok(json_int(v, "status") == 400 && json_int(v, "request") == 2 && json_int(v, "records_sent") == 4,
	   "error.json: status 400, request 2, 4 records sent before it");
	is_str(json_str(v, "error"), "the server answered HTTP 400", "error.json: the reason");
	is_str(json_str(v, "response"), "{\"error\":\"bad envelope\"}", "error.json: the server's answer");
	is_str(json_str(v, "batch_uuid"), h.wire.s[0].uuid, "error.json: the batch_uuid sent");
	is_str(json_str(v, "file"), "f.ndjson", "error.json: the file");
	read_disk(h.state, &d);
	ok(d.live == 0 && state_journal_count(h.j) == 0, "the journal on disk holds no live batch (FAILED is durable)");
	yajl_tree_free(v);
	free(p);
	free(ej);
	free(path);
	teardown(&h);
}

static void after_upload_delete_removes_the_file(void)
{
	struct h h;
	char buf[512], *path;

	setup(&h, "", AFTER_UPLOAD_DELETE);
	path = drop(&h, "f.ndjson", 1, 3, 0, 10);
	run_batch(&h);
	ok(h.finished_ok == 1 && h.wire.n == 1 && h.wire.s[0].completed, "one request, completed");
	is_str(list(h.wf.dir, ".work", buf, sizeof(buf)), "", "after_upload = delete: gone from .work/");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "", "and not in done/");
	ok(access(path, F_OK) < 0, "nor back in the spool");
	free(path);
	teardown(&h);
}

static void small_files_share_one_request_and_the_one_that_does_not_fit_starts_the_next(void)
{
	struct h h;
	char buf[512], *p[3];

	setup(&h, "batch_records = 10\n", AFTER_UPLOAD_ARCHIVE);
	p[0] = drop(&h, "a.ndjson", 1, 3, 0, 30);
	p[1] = drop(&h, "b.ndjson", 4, 4, 0, 20);
	p[2] = drop(&h, "c.ndjson", 8, 5, 0, 10);
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-7*", "a (3) and b (4) fill one request; c (5) does not fit");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "a.ndjson b.ndjson", "a and b archived");
	ok(h.b.have_carry && !strcmp(h.b.carry.name, "c.ndjson"), "c is taken for the next batch");
	is_str(list(h.spool, "shop", buf, sizeof(buf)), "", "nothing is left in the spool (c waits in .work/)");
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-7* 8-12*", "c goes up alone in the next batch");
	ok(h.wire.n == 2 && strcmp(h.wire.s[0].uuid, h.wire.s[1].uuid), "under a batch_uuid of its own");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "a.ndjson b.ndjson c.ndjson", "all three archived");
	ok(h.finished_ok == 2 && h.stats.files_done == 3, "two batches, three files done");
	for (int i = 0; i < 3; i++)
		free(p[i]);
	teardown(&h);
}

/*
 * The batch is left to the journal: its file stays in .work/ and the journal keeps the batch at
 * the last acknowledged cut (@acks), the batch_uuid the wire saw.
 */
static void left_to_the_journal(struct h *h, uint32_t acks, const char *what)
{
	char buf[512];
	struct on_disk d;

	read_disk(h->state, &d);
	ok(h->how == BATCH_END_STOPPED && !batch_active(&h->b), "%s: ended, stopped", what);
	ok(d.live == 1 && d.state == BATCH_OPEN && d.acks == acks && d.records == acks * 100u && d.lineno == acks * 100u + 1 &&
		   !strcmp(d.uuid, h->wire.s[0].uuid),
	   "%s: the journal on disk keeps the batch open after %u acknowledgement(s), with the batch_uuid sent", what, acks);
	list(h->wf.dir, ".work", buf, sizeof(buf));
	ok(strchr(buf, '-') && !strcmp(strchr(buf, '-'), "-f.ndjson"), "%s: its file stays in .work/ (%s)", what, buf);
	is_str(list(h->spool, "shop", buf, sizeof(buf)), "", "nothing went back to the spool");
}

/* A restart: a new batch over the same journal and files; the journal's batch is resumed. */
static void restart_and_resume(struct h *h, const char *extra)
{
	const struct journal_batch *jb;
	char before[512], buf[512];

	list(h->wf.dir, ".work", before, sizeof(before));
	stop(h);
	load_config(h, extra);
	start(h, AFTER_UPLOAD_ARCHIVE);
	is_int(batch_release_orphans(&h->b), 0, "batch_release_orphans");
	ok(before[0] && !strcmp(list(h->wf.dir, ".work", buf, sizeof(buf)), before) &&
		   !strcmp(list(h->spool, "shop", buf, sizeof(buf)), ""),
	   "the files of the journal's open batch are no orphans: they stay in .work/ (%s)", before);
	ok(state_journal_count(h->j) == 1 && (jb = state_journal_at(h->j, 0)) && jb->state == BATCH_OPEN, "replay: one open batch");
	is_int(batch_go_on(h, state_journal_at(h->j, 0)), 0, "batch_resume");
}

static void a_stop_while_a_request_waits_leaves_the_batch_and_a_restart_resumes_it_at_the_same_cut(void)
{
	struct h h;
	char buf[512], *path;

	/* A retry wait that does not end while the test looks. */
	setup(&h, "batch_records = 100\nretry_initial_seconds = 600\nretry_max_seconds = 600\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 250, 0, 10);
	h.wire.status[1] = 503;
	spool_intake_scan(&h.in);
	is_int(batch_go(&h), 0, "batch_start");
	RUN_UNTIL(&h, h.b.req.state == REQ_RETRY_WAIT);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-100 101-200", "request 2 answered 503: it waits to be sent again");
	ok(batch_stoppable(&h.b), "batch_stoppable: nothing is in flight");
	is_int(h.b.phase, BATCH_SENDING, "the batch is sending while its request waits");
	h.b.stop_after_ack = true;
	batch_stop(&h.b);
	ok(h.ended == 1 && h.b.phase == BATCH_IDLE, "batch_stop: ops.ended at once, the batch idle");
	left_to_the_journal(&h, 1, "stopped in a retry wait");

	/* The restart runs on batch_records = 50: the batch keeps the cut it was opened with. */
	restart_and_resume(&h, "batch_records = 50\n");
	RUN_UNTIL(&h, h.ended == 2);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-100 101-200 101-200 201-250*",
	       "after the restart: request 2 again from record 101, at the cut of 100 the batch was opened with");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid), "under the batch_uuid of before the restart");
	ok(h.wire.n == 4 && h.wire.disk[2].acks == 1 && h.wire.disk[3].acks == 2 && h.wire.disk[3].records == 200,
	   "acknowledgements go on from the journal's: 1, then 2 before the last request");
	ok(h.finished_ok == 1 && h.records == 250, "completed with all 250 records");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "f.ndjson", "archived");
	is_int(state_journal_count(h.j), 0, "no live batch left");
	free(path);
	teardown(&h);
}

static void a_stop_with_a_request_in_flight_waits_for_its_answer(void)
{
	struct h h;
	char buf[512], *path;

	setup(&h, "batch_records = 100\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 250, 0, 10);
	h.wire.status[1] = HOLD;
	spool_intake_scan(&h.in);
	is_int(batch_go(&h), 0, "batch_start");
	RUN_UNTIL(&h, h.wire.n == 2);
	ok(h.wire.in_flight && !batch_stoppable(&h.b), "request 2 in flight: not stoppable");
	h.b.stop_after_ack = true;      /* SIGTERM: connection_drain(c, true) */
	wire_answer(&h.wire, 200);
	RUN_UNTIL(&h, h.ended);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-100 101-200", "nothing sent after the answer");
	left_to_the_journal(&h, 2, "stopped after the answer in flight");
	restart_and_resume(&h, "batch_records = 100\n");
	RUN_UNTIL(&h, h.ended == 2);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-100 101-200 201-250*",
	       "the restart sends only what was not acknowledged, under the same batch_uuid");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid) && h.finished_ok == 1 && h.records == 250,
	   "one batch_uuid; completed with 250 records");
	free(path);
	teardown(&h);
}

static void a_503_is_sent_again_in_the_same_batch(void)
{
	struct h h;
	char buf[512], *path;

	setup(&h, "batch_records = 100\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 250, 0, 10);
	h.wire.status[1] = 503;
	run_batch(&h);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-100 101-200 101-200 201-250*", "request 2 sent again after its wait");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid) && h.finished_ok == 1 && h.records == 250 &&
		   h.stats.retries == 1,
	   "one batch_uuid, 250 records, one retry");
	ok(h.wire.n == 4 && h.wire.disk[2].acks == 1, "the retry goes out with acknowledgement 1 still the last");
	free(path);
	teardown(&h);
}

/* Its writer goes on appending in place: records 151..180 to the file, in .work/ now (the same inode). */
static void append_in_place(struct h *h)
{
	char wn[LAYOUT_NAME_MAX + 1], *work, *p;
	struct text t = { 0 };
	int fd;

	spool_work_work_name(h->b.members[0].fid, "f.ndjson", wn);
	work = path_join(h->wf.dir, ".work");
	p = path_join(work, wn);
	for (long id = 151; id <= 180; id++)
		text_add(&t, "{\"id\":%ld,\"name\":\"customer %ld\"}\n", id, id);
	fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || write(fd, t.s, t.len) != (ssize_t)t.len || close(fd) < 0)
		abort();
	free(p);
	free(work);
	free(t.s);
}

static void append_as_request_1_leaves(struct wire *w, size_t i)
{
	if (i == 0)
		append_in_place(w->hook);
}

/*
 * A file of 150 records, requests of 100, grown by 30 while request 1 is out: @early, as it
 * leaves (before the next body is cut ahead), else once the last body was cut ahead.
 */
static void grows_while_open(bool early, const char *what)
{
	struct h h;
	char buf[512], *done, *path;
	long next = 1;
	bool in_order = true;
	off_t dropped;

	setup(&h, "batch_records = 100\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 150, 0, 10);
	dropped = file_size(path);
	h.wire.status[0] = HOLD;
	if (early) {
		h.wire.on_send = append_as_request_1_leaves;
		h.wire.hook = &h;
	}
	spool_intake_scan(&h.in);
	is_int(batch_go(&h), 0, "%s: batch_start", what);
	RUN_UNTIL(&h, h.wire.n == 1 && h.b.pl.n_ahead == 1 && !record_worker_busy(h.b.pl.worker));
	if (!early)
		append_in_place(&h);
	wire_answer(&h.wire, 200);
	RUN_UNTIL(&h, h.ended);
	for (size_t i = 0; i < h.wire.n; i++) {
		in_order = in_order && h.wire.s[i].contiguous && h.wire.s[i].first == next &&
			   h.wire.s[i].completed == (i == h.wire.n - 1);
		next = h.wire.s[i].last + 1;
	}
	ok(in_order && next == 181, "%s: records 1..180 sent once each, in order, batch_completed only on the last (%s)",
	   what, ranges(&h.wire, buf, sizeof(buf)));
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid) && h.finished_ok == 1 && h.records == 180,
	   "%s: one batch_uuid; completed with the 30 appended records too", what);
	ok(h.wire.disk[0].members == 1 && h.wire.disk[0].file_size == (uint64_t)dropped,
	   "%s: the journal names the one file by a member record, at its size when taken", what);
	/* Read on after it grew, the next acknowledgement makes the new size durable before the last request. */
	ok(early || (h.wire.n == 3 && h.wire.disk[2].members == 1 && h.wire.disk[2].file_size > (uint64_t)dropped),
	   "%s: the grown size is journaled (member record put again): %" PRIu64 " before the last request",
	   what, h.wire.disk[h.wire.n - 1].file_size);
	done = path_join(h.wf.done_dir, "f.ndjson");
	is_int(file_size(done), dropped + 30 * (off_t)strlen("{\"id\":151,\"name\":\"customer 151\"}\n"),
	       "%s: archived whole: done/f.ndjson holds the 150 lines and the 30 appended", what);
	is_str(list(h.wf.dir, "failed", buf, sizeof(buf)), "", "%s: nothing in failed/", what);
	free(done);
	free(path);
	teardown(&h);
}

static void a_file_that_grows_while_its_batch_is_open_is_read_on_in_the_same_batch(void)
{
	grows_while_open(false, "grown after the last body was cut");
	grows_while_open(true, "grown before the next body was cut");
}

static void a_multi_file_batch_stopped_is_cut_again_from_its_files_at_the_restart(void)
{
	struct h h;
	char buf[512], *p[2];
	struct on_disk d;

	setup(&h, "batch_records = 10\nretry_initial_seconds = 600\nretry_max_seconds = 600\n", AFTER_UPLOAD_ARCHIVE);
	p[0] = drop(&h, "a.ndjson", 1, 3, 0, 20);
	p[1] = drop(&h, "b.ndjson", 4, 4, 1, 10);
	h.wire.status[0] = 503;
	spool_intake_scan(&h.in);
	is_int(batch_go(&h), 0, "batch_start");
	RUN_UNTIL(&h, h.b.req.state == REQ_RETRY_WAIT);
	h.b.stop_after_ack = true;
	batch_stop(&h.b);
	read_disk(h.state, &d);
	ok(h.how == BATCH_END_STOPPED && d.live == 1 && d.state == BATCH_OPEN && d.acks == 0 && !strcmp(d.uuid, h.wire.s[0].uuid),
	   "stopped in a retry wait: the journal keeps the batch of a and b open");
	restart_and_resume(&h, "batch_records = 10\n");
	RUN_UNTIL(&h, h.ended == 2);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-7* 1-7*", "the same one request again, a then b");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid) && h.finished_ok == 1, "under the same batch_uuid; completed");
	ok(h.wire.n == 2 && h.wire.s[1].len == h.wire.s[0].len, "byte for byte the same length as before the restart");
	is_str(list(h.wf.done_dir, ".", buf, sizeof(buf)), "a.ndjson b.ndjson", "both archived");
	{
		char *rej = path_join(h.wf.dir, "rejected/b.ndjson.rejected.ndjson"), *r;
		size_t len;

		r = read_whole(rej, &len);
		ok(r && strstr(r, "\"line\":3") && count_of(r, "\"line\":") == 1, "b's invalid line is in rejected/ once, not twice");
		free(r);
		free(rej);
	}
	free(p[0]);
	free(p[1]);
	teardown(&h);
}

static void after_a_restart_a_batch_whose_last_records_are_all_refused_completes_with_one_from_the_file(void)
{
	struct h h;
	char buf[512], *path;

	setup(&h, "batch_records = 4\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 10, 0, 10);
	h.wire.status[1] = HOLD;
	spool_intake_scan(&h.in);
	is_int(batch_go(&h), 0, "batch_start");
	RUN_UNTIL(&h, h.wire.n == 2);
	h.b.stop_after_ack = true;
	wire_answer(&h.wire, 200);
	RUN_UNTIL(&h, h.ended);
	restart_and_resume(&h, "batch_records = 4\n");
	h.wire.status[2] = h.wire.status[3] = h.wire.status[4] = 422;
	RUN_UNTIL(&h, h.ended == 2);
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-4 5-8 9-10* 9-9 10-10* 8-8*",
	       "records 9 and 10 refused: the batch completes with record 8, read again from the file");
	ok(same_uuid(&h.wire, 0, h.wire.n, h.wire.s[0].uuid) && h.finished_ok == 1 && h.records == 8 && h.rejected == 2,
	   "one batch_uuid; completed with 8 records, 2 rejected");
	free(path);
	teardown(&h);
}

static void a_401_before_any_acknowledgement_hands_the_file_back(void)
{
	struct h h;
	char buf[512], *path, *text, *back, *rej;
	size_t len, len2;
	struct on_disk d;

	setup(&h, "batch_records = 100\n", AFTER_UPLOAD_ARCHIVE);
	path = drop(&h, "f.ndjson", 1, 250, 1, 10);
	text = read_whole(path, &len);
	h.wire.status[0] = 401;
	rej = path_join(h.wf.dir, "rejected/f.ndjson.rejected.ndjson");
	h.wire.watched = rej;
	run_batch(&h);
	ok(h.wire.n == 1 && h.wire.watched_size[0] > 0, "the invalid line was in rejected/ when request 1 left");
	ok(h.auth == 1 && h.ended == 1 && h.how == BATCH_END_HELD && h.finished_ok == 0 && h.finished_failed == 0,
	   "401: ops.auth_refused; the batch ends held, neither done nor failed");
	is_str(ranges(&h.wire, buf, sizeof(buf)), "1-100", "one request went");
	is_str(list(h.spool, "shop", buf, sizeof(buf)), "f.ndjson", "the file is back in the spool under its name");
	back = read_whole(path, &len2);
	ok(back && len2 == len && !memcmp(back, text, len), "untouched");
	is_int(file_size(rej), 0, "the line it rejected is taken back from rejected/ (written again when it goes up)");
	is_str(list(h.wf.dir, ".work", buf, sizeof(buf)), "", ".work/ is empty");
	is_int(spool_queue_len(&h.in.queue), 1, "queued again");
	read_disk(h.state, &d);
	ok(d.live == 0 && state_journal_count(h.j) == 0, "the journal keeps no live batch of it (RELEASED is durable)");
	free(rej);
	free(back);
	free(text);
	free(path);
	teardown(&h);
}

static void a_file_in_work_no_batch_names_goes_back_at_start(void)
{
	struct h h;
	char buf[512], *work, *orphan;

	setup(&h, "", AFTER_UPLOAD_ARCHIVE);
	work = path_join(h.wf.dir, ".work");
	if (mkdir(work, 0750) < 0)
		abort();
	orphan = path_join(work, "77-o.ndjson");
	write_file(orphan, "{\"id\":1}\n", 9, 0644);
	is_int(batch_release_orphans(&h.b), 0, "batch_release_orphans");
	is_str(list(h.spool, "shop", buf, sizeof(buf)), "o.ndjson", "77-o.ndjson goes back to the spool as o.ndjson");
	is_str(list(h.wf.dir, ".work", buf, sizeof(buf)), "", ".work/ is empty");
	free(orphan);
	free(work);
	teardown(&h);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	sends_a_file_in_requests_of_at_most_5000_records();
	a_413_splits_the_request_and_the_record_goes_to_rejected();
	a_422_on_the_last_record_completes_with_the_last_acknowledged_one();
	a_400_fails_the_file_to_failed_with_its_error();
	after_upload_delete_removes_the_file();
	small_files_share_one_request_and_the_one_that_does_not_fit_starts_the_next();
	a_stop_while_a_request_waits_leaves_the_batch_and_a_restart_resumes_it_at_the_same_cut();
	a_stop_with_a_request_in_flight_waits_for_its_answer();
	a_503_is_sent_again_in_the_same_batch();
	a_file_that_grows_while_its_batch_is_open_is_read_on_in_the_same_batch();
	a_multi_file_batch_stopped_is_cut_again_from_its_files_at_the_restart();
	after_a_restart_a_batch_whose_last_records_are_all_refused_completes_with_one_from_the_file();
	a_401_before_any_acknowledgement_hands_the_file_back();
	a_file_in_work_no_batch_names_goes_back_at_start();
	return done_testing();
}
