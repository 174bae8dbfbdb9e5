/* batch: one Opti-X batch: its files taken from the spool, opened durably, sent request by request, completed. */
#include "batch/batch_priv.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <systemd/sd-id128.h>

#include "spool/spool.h"
#include "state/state_counters.h"
#include "state/state_store.h"
#include "util/crashpoint.h"
#include "util/layout.h"
#include "wire/wire_retry.h"

/* Files a multi-file batch may hold: bounds the journal and memory of one batch. */
#define GROUP_FILES_MAX 1000

static void take_next_body(struct batch *b);
static void process_current(struct batch *b);

void batch_use(struct batch *b, const struct conn_config *cfg, struct record_check *v,
		struct upload_client *client, struct ratelimit *limiter)
{
	b->cfg = cfg;
	b->validator = v;
	b->client = client;
	b->limiter = limiter;
}

static void format_uuid(char out[37])
{
	sd_id128_t id;

	if (sd_id128_randomize(&id) < 0)
		memset(&id, 0, sizeof(id));
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 id.bytes[0], id.bytes[1], id.bytes[2], id.bytes[3], id.bytes[4], id.bytes[5],
		 id.bytes[6], id.bytes[7], id.bytes[8], id.bytes[9], id.bytes[10], id.bytes[11],
		 id.bytes[12], id.bytes[13], id.bytes[14], id.bytes[15]);
}

static void stepped(void *userdata, int r)
{
	struct batch *b = userdata;

	b->after_step(b, r);
}

/* The request body just made current: its rejected lines go to disk now. */
static int flush_current(struct batch *b)
{
	const struct record_body *body = record_pipeline_current(&b->pl);
	struct record_rejects *rb = &b->pl.rej[b->pl.cur];

	batch_rejects_log(b, b->jb.name, body->rejected, rb);
	b->env.stats->records_rejected += body->rejected;
	return batch_rejects_flush(b, &b->members[0], rb);
}

/* The pipeline cut the body take_next_body waited for. */
static void pipeline_ready(void *userdata)
{
	take_next_body(userdata);
}

static void cut_failed(void *userdata, int r)
{
	struct batch *b = userdata;

	batch_log(b, LOG_LVL_ERROR, -1, "%s: read failed at offset %" PRIu64 ": %s", b->jb.name,
		 (uint64_t)record_source_offset(b->pl.reader), record_pipeline_read_error(&b->pl, strerror(-r)));
}

/* Cut the next requests while the server works on this one. */
static void cut_ahead(struct batch *b)
{
	int r = record_pipeline_ahead(&b->pl);

	/* Without a thread the next request is simply cut on the loop when it is due. */
	if (r < 0)
		batch_log(b, LOG_LVL_WARNING, -1, "cannot start a cut thread (%s): cutting on the main loop", strerror(-r));
}

static void step_next_body(struct batch *b)
{
	crashpoint("after-ack");
	if (b->stop_after_ack) {
		/* Stopping: the acknowledgement is durable, the next start resumes right here. */
		batch_log(b, LOG_LVL_INFO, -1, "%s: stopping after request %" PRIu32 " of batch %s; it resumes at the next start",
			 b->jb.name, b->jb.acks, b->jb.uuid);
		batch_end_here(b);
		b->ops.ended(b->userdata, BATCH_END_STOPPED);
		return;
	}
	take_next_body(b);
}

/* Make the next request current: cut ahead already, being cut (then wait for it), or cut now. */
static void take_next_body(struct batch *b)
{
	int r = record_pipeline_next(&b->pl);

	if (r == PIPELINE_PENDING)
		return;         /* pipeline_ready comes back here */
	if (r < 0) {
		/* A failed cut left the reader somewhere in the range: no second try from there. */
		batch_fail(b, 0, record_pipeline_read_error(&b->pl, "cannot read the file"), NULL);
		return;
	}
	if (flush_current(b) < 0) {
		/* Rejected records could not be written: keep them safe by not moving on. */
		batch_fail(b, 0, "cannot write rejected records", NULL);
		return;
	}
	process_current(b);
}




static void body_acked(struct batch *b);
static void body_done(struct batch *b);
static void empty_done(struct batch *b);

static void refusals_stored(struct batch *b, int r)
{
	(void)r;        /* a store that failed is not trusted for this batch (record_pipeline_store_refused) */
	body_acked(b);
}

/*
 * The current body is done: acknowledged at the server, or (@unsent) never sent, having no valid
 * record. Record it and go on; the last one completes the batch only once the file is whole. A
 * body that check cut again (unsent, the file grew past a line it ended on) may now hold
 * records: they are sent first.
 */
static void body_settle(struct batch *b, bool unsent)
{
	struct record_body *ch = record_pipeline_current(&b->pl);
	int whole;

	if (!ch->last || b->req.completed) {
		body_acked(b);
		return;
	}
	whole = batch_check_whole(b, unsent ? empty_done : body_done, unsent);
	if (whole == REQUEST_FAILED || whole == REQUEST_WAIT)
		return;
	if (unsent && ch->n_records) {
		process_current(b);
		return;
	}
	/* Grown (read on), or nothing of the batch is at the server: nothing to complete here. */
	if (whole == REQUEST_GREW || b->jb.records + ch->n_records - b->req.server_rejected == 0) {
		body_acked(b);
		return;
	}
	/*
	 * The last request's records were all refused: complete the batch by sending the last
	 * acknowledged record again (it replaces itself), never with an empty "data".
	 */
	if (!b->req.last_record.len && batch_find_last_record(b) < 0) {
		batch_fail(b, 0, "cannot find an acknowledged record to complete the batch with", NULL);
		return;
	}
	if (wire_request_resend_last(&b->req) < 0)
		batch_fail(b, 0, "out of memory", NULL);
}

static void body_done(struct batch *b)
{
	body_settle(b, false);
}

static void empty_done(struct batch *b)
{
	body_settle(b, true);
}

static void body_acked(struct batch *b)
{
	struct record_body *ch = record_pipeline_current(&b->pl);
	int r;

	if (record_pipeline_refusals(&b->pl)) {
		/* Known to the store before the acknowledgement is journaled: a resume never sends them again. */
		b->after_step = refusals_stored;
		if ((r = record_pipeline_step(&b->pl, record_pipeline_store_refused)) != PIPELINE_PENDING)
			refusals_stored(b, r);
		return;
	}
	b->jb.acks++;
	if (state_catalog_count(b->pl.fields[b->pl.cur]) || state_catalog_overflow(b->pl.fields[b->pl.cur])) {
		b->ops.fields(b->userdata, b->pl.fields[b->pl.cur]);
		state_catalog_clear(b->pl.fields[b->pl.cur]);
	}
	b->jb.offset = (uint64_t)ch->end_offset;
	b->jb.lineno = ch->end_line;
	b->jb.records += ch->n_records - b->req.server_rejected;
	b->jb.rejected += ch->rejected + b->req.server_rejected;
	if (b->n_members == 1)
		b->jb.rejected_size = spool_work_rejected_size(b->env.wf, b->jb.name);
	b->env.stats->file_records = b->jb.records;
	/* The file's own bytes, not the stream's: a compressed file's decompressed offset passes its size. */
	b->env.stats->file_offset = ch->end_file_offset;
	b->unchanged += ch->unchanged;
	b->env.stats->records_unchanged += ch->unchanged;
	if (ch->last) {
		b->jb.state = BATCH_COMPLETED;
		if (state_journal_put(b->env.journal, &b->jb) < 0) {
			batch_fail(b, 0, "out of memory", NULL);
			return;
		}
		batch_durable(b, batch_completed);
		return;
	}
	if (state_journal_put(b->env.journal, &b->jb) < 0) {
		batch_fail(b, 0, "out of memory", NULL);
		return;
	}
	batch_durable(b, step_next_body);
}

/* Bytes read, yet not one record nor one rejected line (see below). */
static bool yields_nothing(uint64_t records, uint64_t rejected, off_t bytes)
{
	return records == 0 && rejected == 0 && bytes > 0;
}

static void process_current(struct batch *b)
{
	struct record_body *body = record_pipeline_current(&b->pl);

	wire_request_begin(&b->req, body, b->jb.acks + 1);
	if (!body->last && !body->n_records && !body->rejected && !body->unchanged) {
		/* skip_unchanged: the first range, left to the worker to decide (see batch_start): nothing to record. */
		take_next_body(b);
		return;
	}
	if (body->last && b->n_members == 1 && yields_nothing(b->jb.records + body->n_records + b->unchanged + body->unchanged,
							    b->jb.rejected + body->rejected, (off_t)b->members[0].ident.size)) {
		/*
		 * Bytes read, yet not one record nor one rejected line: a CSV of a header only, lines
		 * the reader took for one (another line end than it knows), blank lines. Archiving it
		 * would call a file whose data went nowhere a success.
		 */
		char why[160];

		snprintf(why, sizeof(why), "no record in %llu bytes read (a header only, or nothing but blank lines)",
			 (unsigned long long)b->members[0].ident.size);
		batch_fail(b, 0, why, NULL);
		return;
	}
	if (body->n_records == 0) {
		/* Nothing valid in this range: a file with no valid record sends nothing at all. */
		empty_done(b);
		return;
	}
	wire_request_send(&b->req);
	cut_ahead(b);
}

/* The server refused one record: it goes to the rejected file of the file it came from. */
static int server_refused(void *userdata, uint32_t member, uint64_t line, const char *reason, const char *data,
			  size_t len, const char *key, size_t key_len)
{
	struct batch *b = userdata;
	struct member *m = &b->members[member];
	const char *name = m->name;
	struct record_rejects rb = { 0 };
	int r;

	batch_log(b, LOG_LVL_WARNING, -1, "%s: line %" PRIu64 " refused by the server: %s", name, line, reason);
	if ((r = record_reject_add(&rb, line, reason, data, len)) == 0)
		r = batch_rejects_flush(b, m, &rb);
	free(rb.buf);
	/* skip_unchanged: the API does not hold it, so its key must not complete as known. */
	if (r == 0)
		(void)record_pipeline_refused(&b->pl, key, key_len);
	return r;
}

static void request_failed(void *userdata, long status, const char *why, const char *response)
{
	batch_fail(userdata, status, why, response);
}

static bool request_stopping(void *userdata, const char *what)
{
	return batch_stopping_here(userdata, what);
}

static void send_again(struct batch *b)
{
	wire_request_send(&b->req);
}

static int may_complete(void *userdata)
{
	int whole = batch_check_whole(userdata, send_again, true);

	/* The body is no longer the last: what was appended is cut ahead while it is sent. */
	if (whole == REQUEST_GREW)
		cut_ahead(userdata);
	return whole;
}

static void request_done(void *userdata)
{
	body_done(userdata);
}

void batch_set_params(struct batch *b)
{
	struct source_kind kind;
	const struct cut_params params = {
		.batch_uuid = b->jb.uuid,
		.ttl_seconds = b->jb.ttl,      /* as the batch was opened: a resume cuts the same requests */
		.max_records = b->jb.cut_records,
		.max_bytes = b->jb.cut_bytes,
	};

	const struct log_ctx ctx = batch_log_ctx(b, -1);

	const struct retry_policy retry = {
		.initial_seconds = b->cfg->retry_initial_seconds,
		.max_seconds = b->cfg->retry_max_seconds,
		.max_elapsed_seconds = b->cfg->retry_max_elapsed_seconds,
	};
	const struct read_opts read = {
		.csv = &b->cfg->csv,
		.limits = { b->cfg->max_record_bytes, b->cfg->zstd_window_max_mib },
		.field_catalog = b->cfg->field_catalog,
	};

	record_pipeline_start(&b->pl, &params, b->validator, &read);
	record_pipeline_skip(&b->pl, b->jb.decided ? batch_store(b) : NULL, b->store_dir, b->jb.decided);
	wire_request_bind(&b->req, &retry, b->client, b->limiter, b->env.stats, &ctx, &params);
	b->started = ev_now(b->env.loop);
	b->retries_before = b->env.stats->retries;
	if (b->n_members > 1)
		snprintf(b->env.stats->file, sizeof(b->env.stats->file), "%zu files", b->n_members);
	else
		snprintf(b->env.stats->file, sizeof(b->env.stats->file), "%s", b->jb.name);
	b->env.stats->file_size = 0;
	for (size_t i = 0; i < b->n_members; i++)
		b->env.stats->file_size += b->members[i].ident.size;
	/* A resumed compressed file is read again from its start: its share is known at the next acknowledgement. */
	if (record_source_kind_of(b->jb.name, &kind) == 0 && kind.comp != COMPRESSION_NONE)
		b->env.stats->file_offset = 0;
	else
		b->env.stats->file_offset = b->jb.offset;
	b->env.stats->file_records = b->jb.records;
}

int batch_grow_members(struct batch *b)
{
	struct member *m;

	if (b->n_members < b->cap_members)
		return 0;
	m = reallocarray(b->members, b->cap_members ? b->cap_members * 2 : 8, sizeof(*m));
	if (!m)
		return -ENOMEM;
	memset(m + b->cap_members, 0, (b->cap_members ? b->cap_members : 8) * sizeof(*m));
	b->members = m;
	b->cap_members = b->cap_members ? b->cap_members * 2 : 8;
	return 0;
}


/*
 * Small files queued together fill one request: append whole files after the first while
 * they fit. The first that does not fit is rolled back and kept (taken, not journaled) to
 * start the next batch; a large file therefore always gets a batch of its own.
 */
static void gather_small_files(struct batch *b)
{
	struct record_body *ch = &b->pl.body[0];
	struct spool_entry e;

	while (b->n_members < GROUP_FILES_MAX && !b->have_carry && spool_intake_next(b->env.in, &e)) {
		/* What the request holds before this file: taken back if the file does not fit. */
		const struct body_mark before = record_cut_body_mark(ch);
		struct member *m;
		int fd, r;

		if (batch_grow_members(b) < 0) {
			(void)spool_intake_hand_back(b->env.in, e.name, e.mtime_ns);
			free(e.name);
			break;
		}
		m = &b->members[b->n_members];
		fd = batch_take_file(b, &e, m);
		free(e.name);
		if (fd < 0)
			continue;
		ch->member = (uint32_t)b->n_members;
		record_pipeline_note_fields(&b->pl, b->member_fields);     /* its names count only if it stays in this request */
		r = record_pipeline_read_at(&b->pl, fd, m->name, 0, 1);
		if (r == 0)
			r = record_cut_fill(ch, &b->pl.params, b->pl.reader, b->validator, record_reject_on_reject, &m->rej);
		close(fd);
		m->rejected = ch->rejected;
		/* A file that yields nothing from the bytes read is not gathered: alone, it fails. */
		if (r == CUT_FILL_EOF && !yields_nothing(ch->n_records - before.n_records, ch->rejected - before.rejected,
							 record_source_offset(b->pl.reader))) {
			(void)state_catalog_merge(b->pl.fields[0], b->member_fields);
			b->n_members++;
			continue;
		}
		record_cut_body_rollback(ch, &before);
		record_reject_reset(&m->rej);
		m->rejected = 0;
		b->carry = *m;
		b->carry.rej = (struct record_rejects){ 0 };
		b->have_carry = true;
	}
}

static void first_decided(struct batch *b, int r)
{
	if (r < 0) {
		batch_fail(b, 0, "cannot decide which records the API holds already", NULL);
		return;
	}
	batch_opened(b);
}

void batch_opened(struct batch *b)
{
	int r;

	batch_enter(b, BATCH_SENDING, BW_NONE, -1);
	crashpoint("after-open");
	if (b->pl.store && !b->decided_first) {
		/* Body 0 was cut on the loop with its keys noted: its lookups are the worker's. */
		b->decided_first = true;
		b->after_step = first_decided;
		if ((r = record_pipeline_step(&b->pl, record_pipeline_decide_first)) == PIPELINE_PENDING)
			return;
		if (r < 0) {
			first_decided(b, r);
			return;
		}
	}
	if (b->n_members > 1) {
		b->pl.cur = 0;
		b->pl.body[0].rejected = 0;
		for (size_t i = 0; i < b->n_members; i++) {
			struct member *m = &b->members[i];

			b->pl.body[0].rejected += m->rejected;
			batch_rejects_log(b, m->name, m->rejected, &m->rej);
			b->env.stats->records_rejected += m->rejected;
			if (batch_rejects_flush(b, m, &m->rej) < 0) {
				batch_fail(b, 0, "cannot write rejected records", NULL);
				return;
			}
		}
	} else if ((b->pl.cur = 0, flush_current(b)) < 0) {
		batch_fail(b, 0, "cannot write rejected records", NULL);
		return;
	}
	process_current(b);
}

/* The batch's first file into @first: the carried-over one, or the oldest ready one. Its fd, or -errno. */
static int take_first(struct batch *b, struct member *first)
{
	char why[PATH_MAX + 128];
	struct spool_entry e;
	int fd;

	if (b->have_carry) {
		struct record_rejects keep = first->rej;

		*first = b->carry;
		first->rej = keep;
		b->have_carry = false;
		if ((fd = batch_reopen_member(b, first, why, sizeof(why))) < 0)
			batch_log(b, LOG_LVL_ERROR, -1, "%s", why);
		return fd;
	}
	do {
		if (!spool_intake_next(b->env.in, &e))
			return -ENOENT;
		fd = batch_take_file(b, &e, first);
		free(e.name);
	} while (fd < 0);
	return fd;
}

/* A fresh journal record for a batch of one file, @first, read from @fd. */
static void new_record(struct batch *b, const struct member *first, int fd)
{
	memset(&b->jb, 0, sizeof(b->jb));
	b->jb.state = BATCH_OPEN;
	snprintf(b->jb.connection, sizeof(b->jb.connection), "%s", b->cfg->name);
	snprintf(b->jb.name, sizeof(b->jb.name), "%s", first->name);
	format_uuid(b->jb.uuid);
	b->jb.cut_records = b->cfg->batch_records;
	b->jb.dest = batch_destination(b->cfg);
	b->jb.csv_opts = record_csv_options_hash(&b->cfg->csv);
	b->jb.ttl = b->cfg->ttl_seconds;
	b->jb.resend = b->cfg->unchanged_resend_seconds > 0 ? (uint64_t)b->cfg->unchanged_resend_seconds : 0;
	b->jb.cut_bytes = b->cfg->batch_bytes;
	b->jb.lineno = 1;
	b->n_members = 1;
	batch_enter(b, BATCH_OPENING, BW_NONE, -1);
	b->fd = fd;
	b->unchanged = 0;
	b->decided_first = false;
	if (!b->cfg->skip_unchanged)
		batch_store_unused(b);
	else if (batch_store(b))
		b->jb.decided = batch_decision_time();
	batch_set_params(b);
}

/*
 * Cut the first request from the first file, and when that file ends in it, the small files
 * after it that fit. CUT_FILL_EOF: the request holds all of the batch's files; CUT_FILL_FULL:
 * the one file goes on in later requests; or -errno.
 */
static int cut_first(struct batch *b)
{
	struct record_body *ch = &b->pl.body[0];
	struct member *first = &b->members[0];
	off_t end;
	uint64_t lineno;
	int r;

	if ((r = record_cut_body_begin(ch)) < 0 || (r = record_pipeline_read_at(&b->pl, b->fd, first->name, 0, 1)) < 0)
		return r;
	ch->member = 0;
	first->rej.len = 0;
	record_pipeline_note_fields(&b->pl, b->pl.fields[0]);
	r = record_cut_fill(ch, &b->pl.params, b->pl.reader, b->validator, record_reject_on_reject, &first->rej);
	if (r < 0)
		return r;
	if (b->pl.store && r != CUT_FILL_EOF) {
		/*
		 * skip_unchanged, a file of several requests: its records are decided as they are cut,
		 * on the worker (a request holds batch_records records to send, however many it leaves
		 * out). This first range, cut on the loop undecided, is dropped and cut again from the start.
		 */
		if ((r = record_cut_body_begin(ch)) < 0 || (r = record_pipeline_read_at(&b->pl, b->fd, first->name, 0, 1)) < 0)
			return r;
		ch->start_offset = ch->end_offset = 0;
		ch->start_line = ch->end_line = 1;
		record_reject_reset(&first->rej);
		state_catalog_clear(b->pl.fields[0]);
		b->decided_first = true;
		return CUT_FILL_FULL;
	}
	first->rejected = ch->rejected;
	if (r != CUT_FILL_EOF)
		return r;
	end = record_source_offset(b->pl.reader);
	lineno = record_source_lineno(b->pl.reader);
	if (!yields_nothing(ch->n_records, ch->rejected, end))
		gather_small_files(b);
	/* A file that did not fit was read with the same reader: point it back at the end of this one. */
	if (b->n_members == 1 && (r = record_pipeline_read_at(&b->pl, b->fd, b->members[0].name, (uint64_t)end, lineno)) < 0)
		return r;
	return CUT_FILL_EOF;
}

/*
 * Name the batch's files in the journal, a member record each. One file is read on from b->fd
 * by later requests; several fill the one request, cut again whole on a resume.
 */
static int journal_files(struct batch *b, bool whole)
{
	struct record_body *ch = &b->pl.body[0];
	int r;

	b->jb.id = state_journal_new_id(b->env.journal);
	b->jb.n_members = (uint32_t)b->n_members;
	for (size_t i = 0; i < b->n_members; i++) {
		b->members[i].rejected_size = spool_work_rejected_size(b->env.wf, b->members[i].name);
		if ((r = batch_journal_member(b, i)) < 0)
			return r;
	}
	if (b->n_members == 1) {
		struct record_rejects t = b->pl.rej[0];

		/* Its rejected lines are flushed with each request as it goes, from the pipeline's buffer. */
		b->pl.rej[0] = b->members[0].rej;
		b->members[0].rej = t;
		b->jb.rejected_size = b->members[0].rejected_size;
		record_cut_body_finish(ch, &b->pl.params, whole);
		return 0;
	}
	close(b->fd);
	b->fd = -1;
	record_cut_body_finish(ch, &b->pl.params, true);
	return 0;
}

/* Start the next batch: the carried-over file or the oldest queued one, plus small files after it. */
int batch_start(struct batch *b, const struct conn_config *cfg, struct record_check *v,
		struct upload_client *client, struct ratelimit *limiter)
{
	char why[PATH_MAX + 128] = "";
	int fd, r;

	batch_use(b, cfg, v, client, limiter);
	if ((r = batch_grow_members(b)) < 0)
		return r;
	if ((fd = take_first(b, &b->members[0])) < 0)
		return fd;
	new_record(b, &b->members[0], fd);
	if ((r = cut_first(b)) < 0 || (r = journal_files(b, r == CUT_FILL_EOF)) < 0)
		goto fail;
	batch_set_params(b);
	/* The renames into .work/ must be durable before the batch that names them. */
	if (fsync(b->env.wf->workfd) < 0) {
		r = -errno;
		snprintf(why, sizeof(why), "cannot make its move into .work/ durable: %s", strerror(-r));
		goto fail;
	}
	if ((r = state_journal_put(b->env.journal, &b->jb)) < 0)
		goto fail;
	batch_log(b, LOG_LVL_DEBUG, -1, "%s: batch %s opened (%zu file(s), %" PRIu32 " records in the first request)",
		 b->jb.name, b->jb.uuid, b->n_members, b->pl.body[0].n_records);
	batch_durable(b, batch_opened);
	return 0;
fail:
	/* Logged once, by batch_fail: what the reader said (the file's own fault), else what failed here. */
	if (!why[0] && record_pipeline_read_error(&b->pl, NULL))
		snprintf(why, sizeof(why), "%s", record_pipeline_read_error(&b->pl, NULL));
	else if (!why[0])
		snprintf(why, sizeof(why), "cannot start the batch: %s", strerror(-r));
	batch_fail(b, 0, why, NULL);
	return 0;
}

static const struct pipeline_ops pipeline_ops = { .ready = pipeline_ready, .cut_failed = cut_failed, .stepped = stepped };
static const struct request_ops request_ops = {
	.may_complete = may_complete,
	.done = request_done,
	.refused = server_refused,
	.failed = request_failed,
	.stopping = request_stopping,
};

int batch_init(struct batch *b, const struct batch_env *env, size_t fields_max, const struct batch_ops *ops,
	       void *userdata)
{
	int r;

	memset(b, 0, sizeof(*b));
	b->env = *env;
	b->ops = *ops;
	b->userdata = userdata;
	b->fd = -1;
	batch_wait_init(b);
	if ((r = record_pipeline_init(&b->pl, env->loop, fields_max, &pipeline_ops, b)) < 0 ||
	    (r = wire_request_init(&b->req, env->loop, &request_ops, b, &env->report)) < 0 ||
	    (r = state_catalog_new(&b->member_fields, fields_max)) < 0)
		return r;
	return 0;
}

void batch_release(struct batch *b)
{
	if (batch_active(b))
		batch_end_here(b);
	if (b->env.loop)
		ev_timer_stop(b->env.loop, &b->timer);
	record_pipeline_release(&b->pl);
	state_store_close(b->store);
	free(b->store_dir);
	wire_request_release(&b->req);
	state_catalog_free(b->member_fields);
	for (size_t i = 0; i < b->cap_members; i++)
		free(b->members[i].rej.buf);
	free(b->members);
	free(b->carry.rej.buf);
	memset(b, 0, sizeof(*b));
	b->fd = -1;
}

void batch_send_again(struct batch *b)
{
	wire_request_send(&b->req);
}

bool batch_untouched(const struct batch *b)
{
	return batch_active(b) && b->jb.acks == 0 && b->jb.records == 0 && !b->req.answered;
}

/* ---- what the connection asks and tells ---- */

bool batch_active(const struct batch *b) { return b->phase != BATCH_IDLE; }
bool batch_has_carry(const struct batch *b) { return b->have_carry; }
bool batch_rate_waiting(const struct batch *b) { return b->req.state == REQ_RATE_WAIT; }
const char *batch_open_name(const struct batch *b) { return batch_active(b) ? b->jb.name : ""; }
const char *batch_open_uuid(const struct batch *b) { return batch_active(b) ? b->jb.uuid : ""; }
void batch_set_after_upload(struct batch *b, enum after_upload after) { b->env.after_upload = after; }
void batch_set_stop_after_ack(struct batch *b, bool stop) { b->stop_after_ack = stop; }
void batch_wait_cut(struct batch *b) { record_pipeline_wait(&b->pl); }

void batch_on_response(void *batch, const struct upload_result *res)
{
	struct batch *b = batch;

	wire_request_on_response(&b->req, res);
}
