/* record_pipeline: an open batch's request bodies: the one being sent and the next ones, cut ahead on a worker thread. */
#include "record/record_pipeline.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/crashpoint.h"
#include "util/log.h"

static void ahead_done(void *userdata, int r);

int record_pipeline_init(struct pipeline *p, struct ev_loop *loop, size_t fields_max, const struct pipeline_ops *ops,
		  void *userdata)
{
	int r;

	memset(p, 0, sizeof(*p));
	p->ops = *ops;
	p->userdata = userdata;
	for (int i = 0; i < PIPELINE_DEPTH; i++) {
		if ((r = record_cut_body_init(&p->body[i], RECORD_MAX_PER_REQUEST)) < 0 ||
		    (r = state_catalog_new(&p->fields[i], fields_max)) < 0)
			return r;
	}
	return record_worker_new(&p->worker, loop, ahead_done, p);
}

void record_pipeline_release(struct pipeline *p)
{
	record_worker_free(p->worker);
	p->worker = NULL;
	for (int i = 0; i < PIPELINE_DEPTH; i++) {
		record_cut_body_release(&p->body[i]);
		free(p->rej[i].buf);
		state_catalog_free(p->fields[i]);
	}
	free(p->refused);
	p->refused = NULL;
	record_source_free(p->reader);
	p->reader = NULL;
}

void record_pipeline_start(struct pipeline *p, const struct cut_params *params, struct record_check *v,
		    const struct read_opts *read)
{
	p->params = *params;
	p->validator = v;
	p->read = *read;
	p->cur = 0;
	p->n_ahead = 0;
	p->ahead_error = 0;
	p->cutting = true;
}

void record_pipeline_cancel(struct pipeline *p)
{
	record_worker_cancel(p->worker);
	p->want_next = false;
	p->stepping = false;
	p->step_queued = false;
	p->cutting = false;
}

void record_pipeline_reset(struct pipeline *p)
{
	/* A cut ahead is of no use any more, and it reads an fd the batch is about to close. */
	record_pipeline_cancel(p);
	p->ahead_error = 0;
	p->n_ahead = 0;
	p->refused_len = 0;
	p->refused_unknown = false;
	for (int i = 0; i < PIPELINE_DEPTH; i++)
		record_reject_reset(&p->rej[i]);
}

void record_pipeline_wait(struct pipeline *p)
{
	record_worker_wait(p->worker);
}

int record_pipeline_read_at(struct pipeline *p, int fd, const char *name, uint64_t offset, uint64_t lineno)
{
	/* One reader, and its buffer, serves every file of the connection. */
	return record_source_open(&p->reader, fd, name, p->read.csv, (off_t)offset, lineno, &p->read.limits);
}

const char *record_pipeline_read_error(const struct pipeline *p, const char *fallback)
{
	const char *why = p->reader ? record_source_error(p->reader) : NULL;

	return why ? why : fallback;
}

int record_pipeline_read_on(struct pipeline *p, int fd, const char *name)
{
	record_cut_body_reseal(record_pipeline_current(p), &p->params, false);
	return record_pipeline_read_at(p, fd, name, (uint64_t)record_source_offset(p->reader), record_source_lineno(p->reader));
}

int record_pipeline_recut_current(struct pipeline *p, int fd, const char *name)
{
	struct record_body *c = record_pipeline_current(p);
	int r;

	record_pipeline_wait(p);
	if ((r = record_pipeline_read_at(p, fd, name, (uint64_t)c->start_offset, c->start_line)) < 0)
		return r;
	record_reject_reset(&p->rej[p->cur]);
	record_pipeline_note_fields(p, p->fields[p->cur]);
	if ((r = record_cut_body_begin(c)) < 0)
		return r;
	/* Everything it holds is sent (p->params skips nothing): leaving out is never needed for safety. */
	r = record_cut_fill(c, &p->params, p->reader, p->validator, record_reject_on_reject, &p->rej[p->cur]);
	if (r >= 0)
		record_cut_body_finish(c, &p->params, r == CUT_FILL_EOF);
	return r;
}

void record_pipeline_note_fields(struct pipeline *p, struct catalog *fields)
{
	state_catalog_clear(fields);
	record_check_set_catalog(p->validator, p->read.field_catalog ? fields : NULL);
}

/* The store failed: send the rest of the batch whole, and have the store forgotten before the next. */
static void store_broke(struct pipeline *p, int err)
{
	int r;

	if (p->store_broken)
		return;
	p->store_broken = true;
	r = state_store_request_forget(p->store_dir);
	log_error("store %s: %s; this batch goes up whole%s", p->store_dir, strerror(-err),
		  r < 0 ? " (and the store cannot be marked to be forgotten: it is not trusted again until it is)" :
			  ", and the store is forgotten before the next");
}

/* The worker's thread: one decision of skip_unchanged. */
static int decide(void *userdata, const char *rec, size_t len, const char *key, size_t key_len, uint64_t pos)
{
	struct pipeline *p = userdata;
	unsigned char canon[STATE_KEY_MAX];
	size_t cl;
	int r;

	if (p->store_broken || state_key_canon(key, key_len, canon, &cl) < 0)
		return 1;       /* a key not stored is never skipped */
	r = state_store_decide(p->store, canon, cl, state_key_hash_record(rec, len), p->ttl, pos, p->decided_at);
	if (r < 0) {
		store_broke(p, r);
		return 1;
	}
	return r == STORE_SKIP ? 0 : 1;
}

void record_pipeline_skip(struct pipeline *p, struct store *s, const char *dir, uint64_t decided_at)
{
	p->store = s;
	p->store_dir = dir;
	p->decided_at = decided_at;
	p->ttl = p->params.ttl_seconds <= 0 ? 0 : p->params.ttl_seconds > UINT32_MAX ? UINT32_MAX : (uint32_t)p->params.ttl_seconds;
	p->store_begun = false;
	p->store_broken = false;
	p->refused_len = 0;
	p->refused_unknown = false;
	p->skip = (struct cut_skip){ .decide = decide, .userdata = p };
	p->params.skip = NULL;
	p->params.note_keys = s != NULL;
}

/* Before a body's decisions: the batch opened in the store, one transaction for the body. */
static void store_enter(struct pipeline *p)
{
	int r;

	if (!p->store_broken && !p->store_begun) {
		if ((r = state_store_batch_begin(p->store, p->params.batch_uuid)) < 0)
			store_broke(p, r);
		p->store_begun = true;
	}
	if (!p->store_broken && (r = state_store_txn_begin(p->store)) < 0)
		store_broke(p, r);
}

/* What the body sends is durable in the store before the body can be sent (invariant 5). */
static void store_leave(struct pipeline *p)
{
	int r;

	if (p->store_broken) {
		state_store_txn_abort(p->store);
		return;
	}
	if ((r = state_store_txn_commit(p->store)) < 0)
		store_broke(p, r);
	crashpoint("store-pending");    /* the body's keys pending, the body not sent */
}

static int cut_into(struct pipeline *p, int idx)
{
	struct cut_params cp = p->params;
	int r;

	if (!p->store)
		return record_cut_next(&p->body[idx], &p->params, p->reader, p->validator, record_reject_on_reject, &p->rej[idx]);
	cp.skip = &p->skip;
	cp.note_keys = false;
	store_enter(p);
	r = record_cut_next(&p->body[idx], &cp, p->reader, p->validator, record_reject_on_reject, &p->rej[idx]);
	store_leave(p);
	return r;
}

int record_pipeline_decide_first(struct pipeline *p)
{
	struct cut_params cp = p->params;
	int r;

	cp.skip = &p->skip;
	store_enter(p);
	r = record_cut_decide(&p->body[0], &cp);
	store_leave(p);
	return r;
}

int record_pipeline_store_completed(struct pipeline *p)
{
	int r;

	if (!p->store_begun && !p->store_broken && (r = state_store_batch_begin(p->store, p->params.batch_uuid)) < 0)
		store_broke(p, r);
	/* A batch whose decisions were not all kept in the store cannot tell it what it sent. */
	r = p->store_broken ? state_store_forget_all(p->store) : state_store_batch_complete(p->store, p->params.batch_uuid, p->decided_at);
	if (r < 0)
		log_error("store %s: cannot record batch %s as completed: %s", p->store_dir, p->params.batch_uuid,
			  strerror(-r));
	return r < 0 ? r : 0;
}

int record_pipeline_refused(struct pipeline *p, const char *key, size_t key_len)
{
	unsigned char canon[STATE_KEY_MAX];
	size_t cl;

	if (!p->store)
		return 0;
	if (!key) {
		p->refused_unknown = true;
		return 0;
	}
	if (state_key_canon(key, key_len, canon, &cl) < 0)
		return 0;       /* never stored: nothing to forget */
	if (p->refused_len + 2 + cl > p->refused_cap) {
		size_t cap = p->refused_cap ? p->refused_cap * 2 : 4096;
		unsigned char *n;

		while (cap < p->refused_len + 2 + cl)
			cap *= 2;
		if (!(n = realloc(p->refused, cap))) {
			p->refused_unknown = true;
			return -ENOMEM;
		}
		p->refused = n;
		p->refused_cap = cap;
	}
	p->refused[p->refused_len++] = (unsigned char)(cl >> 8);
	p->refused[p->refused_len++] = (unsigned char)cl;
	memcpy(p->refused + p->refused_len, canon, cl);
	p->refused_len += cl;
	return 0;
}

bool record_pipeline_refusals(const struct pipeline *p)
{
	return p->store && (p->refused_len || p->refused_unknown);
}

/* The worker's thread, the loop waiting: the refused keys into the store, durably. */
int record_pipeline_store_refused(struct pipeline *p)
{
	size_t at = 0, cl;
	int r = 0;

	if (p->refused_unknown && !p->store_broken) {
		/* Which key the server refused cannot be told: nothing this batch sent is taken for held. */
		log_warning("store %s: a refused record's key lies past 64 KiB into it", p->store_dir);
		store_broke(p, -ENOKEY);
	}
	if (!p->store_broken && (r = state_store_txn_begin(p->store)) == 0) {
		while (r == 0 && at < p->refused_len) {
			cl = (size_t)p->refused[at] << 8 | p->refused[at + 1];
			r = state_store_refused(p->store, p->refused + at + 2, cl);
			at += 2 + cl;
		}
		if (r == 0)
			r = state_store_txn_commit(p->store);
		else
			state_store_txn_abort(p->store);
	}
	if (r < 0)
		store_broke(p, r);
	p->refused_len = 0;
	p->refused_unknown = false;
	return 0;
}

static int step_job(void *arg)
{
	struct pipeline *p = arg;

	return p->step_fn(p);
}

int record_pipeline_step(struct pipeline *p, int (*fn)(struct pipeline *p))
{
	p->step_fn = fn;
	if (record_worker_busy(p->worker) && !p->stepping) {
		/* A cut ahead holds the store (and may commit its keys): the step runs after it, on the worker. */
		p->step_queued = true;
		return PIPELINE_PENDING;
	}
	if (!record_worker_busy(p->worker) && record_worker_submit(p->worker, step_job, p) == 0) {
		p->stepping = true;
		return PIPELINE_PENDING;
	}
	return fn(p);
}

int record_pipeline_cut(struct pipeline *p, int idx)
{
	int r;

	record_pipeline_note_fields(p, p->fields[idx]);
	if ((r = cut_into(p, idx)) < 0)
		p->ops.cut_failed(p->userdata, r);
	return r;
}

/* On the worker thread: touches only what the worker owns (see record_pipeline.h). */
static int ahead_job(void *arg)
{
	struct pipeline *p = arg;

	return cut_into(p, p->ahead_idx);
}

int record_pipeline_ahead(struct pipeline *p)
{
	int r;

	if (!p->cutting || p->ahead_error || record_worker_busy(p->worker) || p->n_ahead == PIPELINE_DEPTH - 1 ||
	    p->body[((unsigned)p->cur + p->n_ahead) % PIPELINE_DEPTH].last)
		return 0;
	p->ahead_idx = (p->cur + 1 + (int)p->n_ahead) % PIPELINE_DEPTH;
	record_pipeline_note_fields(p, p->fields[p->ahead_idx]);
	r = record_worker_submit(p->worker, ahead_job, p);
	if (r < 0 && !p->warned) {
		p->warned = true;
		return r;
	}
	return 0;
}

static void ahead_done(void *userdata, int r)
{
	struct pipeline *p = userdata;

	if (p->stepping) {
		p->stepping = false;
		p->ops.stepped(p->userdata, r);
		return;
	}
	if (r < 0) {
		p->ops.cut_failed(p->userdata, r);
		p->ahead_error = r;
	} else {
		p->n_ahead++;
	}
	if (p->step_queued) {
		p->step_queued = false;
		if (record_worker_submit(p->worker, step_job, p) == 0) {
			p->stepping = true;
			return;
		}
		p->ops.stepped(p->userdata, p->step_fn(p));
		return;
	}
	if (p->want_next) {
		p->want_next = false;
		p->ops.ready(p->userdata);
	}
	/* The batch may have ended in ops.ready: then record_pipeline_cancel left nothing to cut for. */
	(void)record_pipeline_ahead(p);
}

int record_pipeline_next(struct pipeline *p)
{
	int next = (p->cur + 1) % PIPELINE_DEPTH, r;

	if (p->n_ahead) {
		p->n_ahead--;
	} else if (record_worker_busy(p->worker)) {
		p->want_next = true;
		return PIPELINE_PENDING;
	} else if (p->ahead_error) {
		return p->ahead_error;
	} else if (p->store && !p->warned && record_pipeline_ahead(p) == 0 && record_worker_busy(p->worker)) {
		/* skip_unchanged: a cut may look up a whole file's keys; that is the worker's, never the loop's. */
		p->want_next = true;
		return PIPELINE_PENDING;
	} else if ((r = record_pipeline_cut(p, next)) < 0) {
		return r;
	}
	p->cur = next;
	return 0;
}
