/* batch_end: how an open batch waits and ends: made durable, a file still being written, completed whole, archived, failed, handed back. */
#include "batch/batch_priv.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-id128.h>

#include "spool/spool.h"
#include "state/state_counters.h"
#include "util/crashpoint.h"
#include "util/layout.h"
#include "util/timer.h"
#include "wire/wire_retry.h"

void batch_enter(struct batch *b, enum batch_phase phase, enum batch_wait wait, double delay)
{
	static const char *const phases[] = { "idle", "opening", "sending", "archiving", "failing" };
	static const char *const waits[] = { "", " (journal wait)", " (settle wait)" };

	/* Only an open batch waits. */
	assert(wait == BW_NONE || phase != BATCH_IDLE);
	if (b->phase != phase || b->wait != wait)
		batch_log(b, LOG_LVL_DEBUG, -1, "batch %s%s -> %s%s", phases[b->phase], waits[b->wait], phases[phase],
			  waits[wait]);
	b->phase = phase;
	b->wait = wait;
	timer_arm(b->env.loop, &b->timer, delay);
}


static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct batch *b = w->data;

	(void)loop;
	(void)revents;
	if (b->wait == BW_SYNC) {
		batch_durable(b, b->after_sync);
	} else if (b->wait == BW_SETTLE) {
		batch_enter(b, b->phase, BW_NONE, -1);
		b->after_settle(b);
	}
}


static double rand01(struct batch *b)
{
	/* xorshift64*: jitter needs spread, not secrecy. */
	b->rng ^= b->rng >> 12;
	b->rng ^= b->rng << 25;
	b->rng ^= b->rng >> 27;
	return (double)((b->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}


void batch_record_end(struct batch *b, enum history_outcome o, long status, const char *why)
{
	struct history_entry e = {
		.outcome = o,
		.http_status = status > 0 ? status : 0,
		.records_sent = b->jb.records,
		.records_unchanged = b->unchanged,
		.records_rejected = b->jb.rejected,
		.requests = b->req.sent,
		.retries = b->env.stats->retries - b->retries_before,
		.started = b->started,
		.finished = ev_time(),
	};

	snprintf(e.connection, sizeof(e.connection), "%s", b->env.name);
	snprintf(e.batch_uuid, sizeof(e.batch_uuid), "%s", b->jb.uuid);
	snprintf(e.reason, sizeof(e.reason), "%s", why ? why : "");
	for (size_t i = 0; i < b->n_members; i++) {
		(void)state_history_entry_add_name(&e, b->members[i].name);
		/* Small files of a group, and a completed file, were read whole. */
		if (b->n_members > 1 || o == HISTORY_ARCHIVED)
			e.bytes_read += b->members[i].ident.size;
	}
	/* A large file is read as far as it was this run: its reader is the batch's while it has its fd. */
	if (b->n_members == 1 && o != HISTORY_ARCHIVED && b->fd >= 0 && b->pl.reader)
		e.bytes_read = record_source_file_offset(b->pl.reader);
	b->ops.finished(b->userdata, &e);
}


/* The batch is over here: its fd, pipeline, request and waits; the journal says where it stands. */
void batch_end_here(struct batch *b)
{
	/* A cut ahead of this batch is of no use any more, and it reads the fd closed below. */
	record_pipeline_reset(&b->pl);
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
	for (size_t i = 0; i < b->n_members; i++)
		record_reject_reset(&b->members[i].rej);
	b->n_members = 0;
	wire_request_reset(&b->req);
	b->settle_logged = false;
	batch_enter(b, BATCH_IDLE, BW_NONE, -1);
	b->env.stats->file[0] = '\0';
}


void batch_ended(struct batch *b)
{
	int r;

	batch_end_here(b);
	/* Between batches is a quiet moment to keep the journal small over months of running. */
	if ((r = state_journal_compact(b->env.journal, false)) < 0)
		batch_log(b, LOG_LVL_WARNING, -1, "journal compaction failed: %s (retried after the next batch)", strerror(-r));
	b->ops.ended(b->userdata, BATCH_END_NEXT);
}


/* SIGTERM: nothing is in flight and the batch would wait: leave it to the journal and the next start. */
bool batch_stopping_here(struct batch *b, const char *what)
{
	if (!b->stop_after_ack)
		return false;
	batch_log(b, LOG_LVL_INFO, -1, "%s: stopping (%s) at request %" PRIu32 " of batch %s; it resumes at the next start",
		 b->jb.name, what, b->jb.acks + 1, b->jb.uuid);
	batch_end_here(b);
	b->ops.ended(b->userdata, BATCH_END_STOPPED);
	return true;
}


void batch_wait_settle(struct batch *b, double delay, void (*again)(struct batch *b))
{
	if (batch_stopping_here(b, "the file is still being written"))
		return;
	b->after_settle = again;
	batch_enter(b, b->phase, BW_SETTLE, delay < 0.05 ? 0.05 : delay);
}


/* Make the journal durable, then take @step; until it can be, hold everything and try again. */
void batch_durable(struct batch *b, void (*step)(struct batch *b))
{
	int r = state_journal_sync(b->env.journal);
	double delay;

	if (r == 0) {
		if (b->journal_error_logged)
			batch_log(b, LOG_LVL_INFO, -1, "journal is writable again: resuming uploads");
		b->journal_error_logged = false;
		b->sync_attempt = 0;
		batch_enter(b, b->phase, BW_NONE, -1);
		step(b);
		return;
	}
	if (!b->journal_error_logged)
		batch_log(b, LOG_LVL_ERROR, -1, "cannot make the journal durable in %s: %s; holding uploads until it can be written",
		     b->env.state_dir, strerror(-r));
	b->journal_error_logged = true;
	b->after_sync = step;
	delay = wire_retry_backoff(0.5, 30, b->sync_attempt++, 0.5 + rand01(b) / 2);
	batch_enter(b, b->phase, BW_SYNC, delay);
}


bool batch_stoppable(const struct batch *b)
{
	return b->phase != BATCH_IDLE && (b->wait == BW_SETTLE || wire_request_waiting(&b->req));
}


void batch_stop(struct batch *b)
{
	if (b->phase == BATCH_IDLE)
		return;
	batch_end_here(b);
	b->ops.ended(b->userdata, BATCH_END_STOPPED);
}


/* The batch's files fail for good: failed/<name> beside <name>.error.json; the batch stays open at the server. */
void batch_fail(struct batch *b, long status, const char *why, const char *response)
{
	char dst[LAYOUT_NAME_MAX + 1];
	size_t moved = 0;
	int ffd, r, sync_r;

	/* No more cutting for this batch, even while the journal holds up its end. */
	batch_enter(b, BATCH_FAILING, BW_NONE, -1);
	record_pipeline_cancel(&b->pl);
	ffd = batch_subdir(b, "failed", true);
	for (size_t i = 0; i < b->n_members; i++) {
		r = ffd < 0 ? ffd : spool_work_move(b->env.wf, b->members[i].fid, b->members[i].name, ffd, dst);
		if (r < 0 && r != -ENOENT)
			batch_log(b, LOG_LVL_ERROR, status, "%s: cannot move it to %s/failed/: %s", b->members[i].name,
				 b->env.wf->dir, strerror(-r));
		moved += r == 0;
		/* The error is written even for a file gone from .work/: the reason must be somewhere. */
		if (ffd >= 0)
			(void)batch_error_json(b, ffd, b->members[i].name, r == 0 ? dst : b->members[i].name, status,
					       why, response);
	}
	sync_r = spool_work_sync(b->env.wf, ffd);
	if (ffd >= 0)
		close(ffd);
	/* Never claim a move that did not happen: a file already gone from .work/ is not in failed/. */
	if (moved)
		batch_log(b, LOG_LVL_ERROR, status, "%s: failed for good: %s; moved to %s/failed/", b->jb.name, why, b->env.wf->dir);
	else
		batch_log(b, LOG_LVL_ERROR, status, "%s: failed for good: %s; nothing was moved to %s/failed/ (no file of "
			 "it is left in .work/)", b->jb.name, why, b->env.wf->dir);
	b->env.stats->files_failed += b->n_members;
	batch_record_end(b, HISTORY_FAILED, status, why);
	if (sync_r < 0) {
		/* FAILED would name moves a crash may undo: the batch stays open in the journal, so a
		 * restart finds its file wherever it is (in .work/: sent again, failing alike). */
		batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot make the move to failed/ durable: %s; the journal keeps "
			 "the batch open", b->jb.name, strerror(-sync_r));
		batch_ended(b);
		return;
	}
	b->jb.state = BATCH_FAILED;
	if (state_journal_put(b->env.journal, &b->jb) < 0) {
		batch_ended(b);
		return;
	}
	batch_durable(b, batch_ended);
}


/* Nothing was acknowledged: hand the files back to the spool, untouched. */
void batch_release_files(struct batch *b, long status, const char *why)
{
	char dst[LAYOUT_NAME_MAX + 1];
	int dfd = spool_work_dir(b->env.wf), r;

	record_pipeline_cancel(&b->pl);       /* the files leave: nothing more to cut of them */

	for (size_t i = 0; i < b->n_members; i++) {
		struct member *m = &b->members[i];

		r = dfd < 0 ? dfd : spool_work_move(b->env.wf, m->fid, m->name, dfd, dst);

		/* Its rejected lines are written again when it goes up: take back this attempt's. */
		(void)spool_work_rejected_truncate(b->env.wf, m->name, m->rejected_size);
		if (r == 0)
			(void)spool_intake_hand_back(b->env.in, dst, m->ident.mtime_ns);
		else if (r != -ENOENT)
			batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot move it back to %s: %s", m->name, b->env.wf->dir, strerror(-r));
	}
	if ((r = spool_work_sync(b->env.wf, dfd)) < 0) {
		/* RELEASED would name moves a crash may undo: the open batch resumes wherever its files are. */
		batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot make the move back to the spool durable: %s; the journal "
			 "keeps the batch open", b->jb.name, strerror(-r));
	} else {
		b->jb.state = BATCH_RELEASED;
		if (state_journal_put(b->env.journal, &b->jb) == 0)
			(void)state_journal_sync(b->env.journal);
	}
	b->env.stats->files_released += b->n_members;
	batch_record_end(b, HISTORY_HANDED_BACK, status, why);
	batch_end_here(b);
	b->ops.ended(b->userdata, BATCH_END_HELD);
}


void batch_archive(struct batch *b)
{
	char dst[LAYOUT_NAME_MAX + 1];
	double took = ev_now(b->env.loop) - b->started;
	bool ok = true, del = b->env.after_upload == AFTER_UPLOAD_DELETE;
	size_t changed = 0;
	int dfd = -1, r;

	batch_enter(b, BATCH_ARCHIVING, BW_NONE, -1);
	crashpoint("before-archive");
	if (!del && (r = dfd = batch_done_dir(b)) < 0)
		batch_log(b, LOG_LVL_ERROR, -1, "cannot open %s: %s", b->env.wf->done_dir, strerror(-r));
	for (size_t i = 0; i < b->n_members; i++) {
		const struct member *m = &b->members[i];

		if (batch_changed(b, m)) {
			int ffd = batch_subdir(b, "failed", true);
			char why[512];

			snprintf(why, sizeof(why), "the file changed after its batch was completed (it was %" PRIu64
				 " bytes then): what was written after that was not sent; move it back into the spool "
				 "to send it whole", m->ident.size);
			batch_log(b, LOG_LVL_ERROR, -1, "%s: %s; moved to %s/failed/", m->name, why, b->env.wf->dir);
			r = ffd < 0 ? ffd : spool_work_move(b->env.wf, m->fid, m->name, ffd, dst);
			if (r == 0)
				(void)batch_error_json(b, ffd, m->name, dst, 0, why, NULL);
			if (ffd >= 0)
				close(ffd);
			b->env.stats->files_failed++;
			changed++;
			continue;
		}
		if (del) {
			spool_work_work_name(m->fid, m->name, dst);
			r = b->env.wf->workfd < 0 ? -EBADF : unlinkat(b->env.wf->workfd, dst, 0) < 0 ? -errno : 0;
		} else {
			r = dfd < 0 ? dfd : spool_work_move(b->env.wf, m->fid, m->name, dfd, dst);
		}
		if (r < 0 && r != -ENOENT) {
			/* Complete at the server; the file stays in .work/ and the next start retries the move. */
			batch_log(b, LOG_LVL_ERROR, -1, "%s: uploaded, but cannot %s it: %s", m->name,
				 del ? "delete" : "archive", strerror(-r));
			ok = false;
		}
	}
	if (ok && (r = spool_work_sync(b->env.wf, dfd)) < 0) {
		/* ARCHIVED would name moves a crash may undo: COMPLETED stays, and its replay moves again. */
		batch_log(b, LOG_LVL_ERROR, -1, "%s: uploaded, but cannot make its archiving durable: %s; the next "
			 "start archives it again", b->jb.name, strerror(-r));
		ok = false;
	}
	if (dfd >= 0)
		close(dfd);
	if (ok) {
		b->jb.state = BATCH_ARCHIVED;
		/* Made durable with the next sync: replay of COMPLETED redoes an idempotent move. */
		(void)state_journal_put(b->env.journal, &b->jb);
	}
	crashpoint("after-archive");
	{
		struct log_ctx ctx = batch_log_ctx(b, -1);

		char unchanged[48] = "";

		ctx.records = (long long)b->jb.records;
		ctx.unchanged = b->unchanged;
		if (b->unchanged)
			snprintf(unchanged, sizeof(unchanged), ", %" PRIu64 " unchanged (not sent)", b->unchanged);
		if (b->n_members > 1)
			log_msg(LOG_LVL_INFO, &ctx, "%s: %zu files (%s ... %s) in one batch: %" PRIu64 " records sent, %"
				PRIu64 " rejected, %" PRIu64 " requests, %.2f s%s", b->env.name, b->n_members,
				b->members[0].name, b->members[b->n_members - 1].name, b->jb.records, b->jb.rejected,
				b->req.sent, took, unchanged);
		else
			log_msg(LOG_LVL_INFO, &ctx, "%s: %s: %" PRIu64 " records sent, %" PRIu64 " rejected, %" PRIu64
				" requests, %.2f s%s", b->env.name, b->jb.name, b->jb.records, b->jb.rejected,
				b->req.sent, took, unchanged);
	}
	/* A file that changed after completion went to failed/ above: it is not counted twice. */
	b->env.stats->files_done += b->n_members - changed;
	{
		char why[160] = "";

		if (changed == b->n_members)
			snprintf(why, sizeof(why), "changed after its batch was completed: moved to failed/");
		else if (changed)
			snprintf(why, sizeof(why), "%zu of its %zu files changed after the batch was completed: moved to "
				 "failed/, the rest archived", changed, b->n_members);
		batch_record_end(b, changed == b->n_members ? HISTORY_FAILED : HISTORY_ARCHIVED, 0, changed ? why : NULL);
	}
	batch_ended(b);
}


static int64_t mtime_of(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}


/* The batch's one file grew since it was taken: its identity is what it is now, in the journal too. */
static int note_grown(struct batch *b, const struct stat *st)
{
	struct member *m = &b->members[0];

	spool_work_identity(st, &m->ident);
	m->trusted = false;  /* someone writes it: from now on only stillness tells */
	m->changed_ns = batch_mono_ns();
	b->env.stats->file_size = m->ident.size;
	return batch_journal_member(b, 0);
}


/*
 * What was read of a plain file ended without a line end, and nothing of the current body has
 * gone up yet: its last line was cut while its writer paused in the middle of it.
 */
static bool ended_mid_line(struct batch *b, uint64_t read)
{
	struct source_kind kind;
	char last;

	if (!read || b->req.lo != 0 || b->req.server_rejected || record_source_kind_of(b->jb.name, &kind) < 0 ||
	    kind.comp != COMPRESSION_NONE)
		return false;
	return pread(b->fd, &last, 1, (off_t)read - 1) == 1 && last != '\n' && last != '\r';
}

/*
 * The file grew past a line the current body ended on unterminated: the body is cut again from
 * its start, so that line goes up whole. Its rejected lines, written when it became current,
 * are taken back and written again. Sent at once when the body no longer ends the file, else
 * looked at again (@again) as the file's end.
 */
static int recut_current(struct batch *b, void (*again)(struct batch *b))
{
	struct record_body *body = record_pipeline_current(&b->pl);
	int r;

	b->env.stats->records_rejected -= body->rejected;
	if ((r = spool_work_rejected_truncate(b->env.wf, b->jb.name, b->jb.rejected_size)) == 0)
		r = record_pipeline_recut_current(&b->pl, b->fd, b->jb.name);
	if (r >= 0) {
		batch_rejects_log(b, b->jb.name, body->rejected, &b->pl.rej[b->pl.cur]);
		b->env.stats->records_rejected += body->rejected;
		if (batch_rejects_flush(b, &b->members[0], &b->pl.rej[b->pl.cur]) < 0)
			r = -EIO;
	}
	if (r < 0) {
		batch_fail(b, 0, record_pipeline_read_error(&b->pl, "cannot cut its last request again"), NULL);
		return REQUEST_FAILED;
	}
	batch_log(b, LOG_LVL_INFO, -1, "%s: its last line was cut mid-line (the writer paused in it): its request is cut "
		 "again from line %" PRIu64, b->jb.name, body->start_line);
	wire_request_begin(&b->req, body, b->jb.acks + 1);
	if (r != CUT_FILL_EOF)
		return REQUEST_GREW;
	batch_wait_settle(b, 0, again);
	return REQUEST_WAIT;
}

/*
 * Before a batch is completed: is the file all there, all read, and done being written? A file
 * written in place may have been taken while its writer paused: it is completed only once
 * nobody has it open (a lease says so, or inotify did when it was taken and nobody can open it
 * in .work/) or it has been still for settle_seconds; never with less than it holds. A file
 * that grew is read on in the same batch. @again is called when it is time to look again.
 */
int batch_check_whole(struct batch *b, void (*again)(struct batch *b), bool unsent)
{
	const struct file_identity *id = &b->members[0].ident;
	struct stat st;
	char why[512];
	uint64_t read;
	double age;
	int lease;

	if (b->n_members > 1 || b->fd < 0) {
		/* Small files read whole into one request: each must still be what was read. */
		for (size_t i = 0; i < b->n_members; i++) {
			if (batch_changed(b, &b->members[i])) {
				snprintf(why, sizeof(why), "%s changed after it was read (still being written in place?): "
					 "its batch is not completed", b->members[i].name);
				batch_fail(b, 0, why, NULL);
				return REQUEST_FAILED;
			}
		}
		return REQUEST_WHOLE;
	}
	if (fstat(b->fd, &st) < 0) {
		snprintf(why, sizeof(why), "cannot look at the file: %s", strerror(errno));
		batch_fail(b, 0, why, NULL);
		return REQUEST_FAILED;
	}
	if (st.st_nlink == 0) {
		batch_fail(b, 0, "the file was deleted from .work/ while its batch was open: the batch is not completed "
			  "(the records sent so far stay in an open batch at the server)", NULL);
		return REQUEST_FAILED;
	}
	/* The reader is at the end of what it read (blank lines after the last record included), in the file's bytes. */
	read = record_source_file_offset(b->pl.reader);
	if ((uint64_t)st.st_size < read || (uint64_t)st.st_size < id->size ||
	    ((uint64_t)st.st_size == id->size && mtime_of(&st) != id->mtime_ns)) {
		snprintf(why, sizeof(why), "the file was truncated or rewritten while its batch was open (%lld bytes now, "
			 "%" PRIu64 " read): the batch is not completed with partial data", (long long)st.st_size, read);
		batch_fail(b, 0, why, NULL);
		return REQUEST_FAILED;
	}
	/* It grew; what was cut ahead may hold the new bytes already: the file is what it is now. */
	if (((uint64_t)st.st_size > id->size || (uint64_t)st.st_size > read) && note_grown(b, &st) < 0) {
		batch_fail(b, 0, "out of memory", NULL);
		return REQUEST_FAILED;
	}
	if ((uint64_t)st.st_size > read) {
		batch_log(b, LOG_LVL_INFO, -1, "%s: grew to %lld bytes after %" PRIu64 " were read: reading on in the same batch",
			 b->jb.name, (long long)st.st_size, read);
		if (unsent && ended_mid_line(b, read))
			return recut_current(b, again);
		if (record_pipeline_read_on(&b->pl, b->fd, b->jb.name) < 0) {
			batch_fail(b, 0, record_pipeline_read_error(&b->pl, "cannot read the file"), NULL);
			return REQUEST_FAILED;
		}
		return REQUEST_GREW;
	}
	lease = spool_lease_probe(b->fd);
	/* Still for as long as we saw it so (its mtime may be a day ahead: cp -p from a fast clock). */
	age = (double)(batch_mono_ns() - b->members[0].changed_ns) / 1e9;
	if (lease == 0 || (lease < 0 && !b->members[0].trusted && age < b->env.settle_seconds)) {
		if (!b->settle_logged)
			batch_log(b, LOG_LVL_INFO, -1, "%s: %s: its batch is completed once it has been still for %g s",
				 b->jb.name, lease == 0 ? "still open for writing" : "changed moments ago",
				 b->env.settle_seconds);
		b->settle_logged = true;
		batch_wait_settle(b, lease == 0 ? 1.0 : b->env.settle_seconds - age, again);
		return REQUEST_WAIT;
	}
	return REQUEST_WHOLE;
}

void batch_wait_init(struct batch *b)
{
	sd_id128_t seed;

	ev_timer_init(&b->timer, timer_cb, 0., 0.);
	b->timer.data = b;
	if (sd_id128_randomize(&seed) < 0)
		seed.qwords[0] = (uint64_t)time(NULL);
	b->rng = seed.qwords[0] | 1;
}
