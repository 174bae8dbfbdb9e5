/* pipeline: an open batch's request bodies: the one being sent and the next ones, cut ahead on a worker thread. */
#include "record/record_pipeline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void ahead_done(void *userdata, int r);

int record_pipeline_init(struct pipeline *p, struct ev_loop *loop, size_t fields_max, const struct pipeline_ops *ops,
		  void *userdata)
{
	int r;

	memset(p, 0, sizeof(*p));
	p->ops = *ops;
	p->userdata = userdata;
	for (int i = 0; i < PIPELINE_DEPTH; i++) {
		if ((r = record_cut_body_init(&p->body[i], CONFIG_MAX_BATCH_RECORDS)) < 0 ||
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
	record_source_free(p->reader);
	p->reader = NULL;
}

void record_pipeline_start(struct pipeline *p, const struct cut_params *params, struct record_check *v,
		    const struct conn_config *cfg)
{
	p->params = *params;
	p->validator = v;
	p->cfg = cfg;
	p->cur = 0;
	p->n_ahead = 0;
	p->ahead_error = 0;
	p->cutting = true;
}

void record_pipeline_cancel(struct pipeline *p)
{
	record_worker_cancel(p->worker);
	p->want_next = false;
	p->cutting = false;
}

void record_pipeline_reset(struct pipeline *p)
{
	/* A cut ahead is of no use any more, and it reads an fd the batch is about to close. */
	record_pipeline_cancel(p);
	p->ahead_error = 0;
	p->n_ahead = 0;
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
	return record_source_open(&p->reader, fd, name, &p->cfg->csv, (off_t)offset, lineno, p->cfg->max_record_bytes);
}

const char *record_pipeline_read_error(const struct pipeline *p, const char *fallback)
{
	const char *why = p->reader ? record_source_error(p->reader) : NULL;

	return why ? why : fallback;
}

int record_pipeline_read_on(struct pipeline *p, int fd, const char *name)
{
	record_cut_body_reseal(pipeline_current(p), &p->params, false);
	return record_pipeline_read_at(p, fd, name, (uint64_t)record_source_offset(p->reader), record_source_lineno(p->reader));
}

void record_pipeline_note_fields(struct pipeline *p, struct catalog *fields)
{
	state_catalog_clear(fields);
	record_check_set_catalog(p->validator, p->cfg->field_catalog ? fields : NULL);
}

static int cut_into(struct pipeline *p, int idx)
{
	return record_cut_next(&p->body[idx], &p->params, p->reader, p->validator, record_reject_on_reject, &p->rej[idx]);
}

int record_pipeline_cut(struct pipeline *p, int idx)
{
	int r;

	record_pipeline_note_fields(p, p->fields[idx]);
	if ((r = cut_into(p, idx)) < 0)
		p->ops.cut_failed(p->userdata, r);
	return r;
}

/* On the worker thread: touches only what the worker owns (see pipeline.h). */
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

	if (r < 0) {
		p->ops.cut_failed(p->userdata, r);
		p->ahead_error = r;
	} else {
		p->n_ahead++;
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
	} else if ((r = record_pipeline_cut(p, next)) < 0) {
		return r;
	}
	p->cur = next;
	return 0;
}
