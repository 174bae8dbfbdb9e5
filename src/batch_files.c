/* batch_files: a batch's files: taken into .work/, checked whole, their rejected lines, done/, failed/ with error.json, back to the spool. */
#include "batch_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "connection.h"
#include "crashpoint.h"
#include "jsonstr.h"
#include "layout.h"
#include "spool.h"

/* The workfiles put a directory right (a link, or writable by exporters): say so. */
static int batch_said_fixed(struct batch *b, int fd, bool fixed, const char *what)
{
	if (fixed)
		batch_log(b, LOG_LVL_WARNING, -1, "%s was not as dcsyncd makes it (a link, or writable by others): made a "
			 "private directory again (mode 0750)", what);
	return fd;
}

int batch_subdir(struct batch *b, const char *sub, bool create)
{
	char what[PATH_MAX];
	bool fixed;
	int fd = workfiles_subdir(b->env.wf, sub, create, &fixed);

	snprintf(what, sizeof(what), "%s/%s", b->env.wf->dir, sub);
	return batch_said_fixed(b, fd, fixed, what);
}

int batch_workdir(struct batch *b)
{
	char what[PATH_MAX];
	bool fixed;
	int fd = workfiles_work(b->env.wf, &fixed);

	snprintf(what, sizeof(what), "%s/.work", b->env.wf->dir);
	return batch_said_fixed(b, fd, fixed, what);
}

int batch_done_dir(struct batch *b)
{
	bool fixed;
	int fd = workfiles_done(b->env.wf, &fixed);

	return batch_said_fixed(b, fd, fixed, b->env.wf->done_dir);
}

/* Append a buffer of rejected lines to <name>.rejected.ndjson, once the batch holding them is durable. */
int batch_rejects_flush(struct batch *b, const char *name, struct rejbuf *rb)
{
	char rn[LAYOUT_NAME_MAX + 1], what[PATH_MAX];
	bool fixed, replaced;
	int r;

	if (!rb->len)
		return 0;
	r = workfiles_rejected_append(b->env.wf, name, rb->buf, rb->len, &fixed, &replaced);
	snprintf(what, sizeof(what), "%s/rejected", b->env.wf->dir);
	(void)batch_said_fixed(b, 0, fixed, what);
	workfiles_rejected_name(name, rn);
	if (replaced)
		batch_log(b, LOG_LVL_WARNING, -1, "%s/rejected/%s was not a file dcsyncd made (a link or another user's "
			 "file): removed, never written through", b->env.wf->dir, rn);
	if (r < 0)
		batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot write rejected records to %s/rejected/: %s", name, b->env.wf->dir,
			 strerror(-r));
	rb->len = 0;
	rb->first_line = rb->last_line = 0;
	return r;
}

void batch_rejects_log(struct batch *b, const char *name, uint64_t n, const struct rejbuf *rb)
{
	char rn[LAYOUT_NAME_MAX + 1];

	/* One line per rejected record at warning level would drown a log on a bad export. */
	if (!n)
		return;
	workfiles_rejected_name(name, rn);
	if (rb->first_line)
		batch_log(b, LOG_LVL_WARNING, -1, "%s: %" PRIu64 " line(s) rejected between lines %" PRIu64 " and %" PRIu64
			 ", see %s/rejected/%s", name, n, rb->first_line, rb->last_line, b->env.wf->dir, rn);
	else
		batch_log(b, LOG_LVL_WARNING, -1, "%s: %" PRIu64 " line(s) rejected, see %s/rejected/%s", name, n, b->env.wf->dir, rn);
}

/* failed/<name>.error.json beside the failed file: written atomically, never through a link. */
static int batch_error_json(struct batch *b, int failedfd, const char *name, const char *failed_name,
			    long status, const char *why, const char *response)
{
	char *buf = NULL, head[1024], when[32];
	size_t len = 0, cap = 0;
	time_t now = time(NULL);
	struct tm tm;
	int r;

	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(head, sizeof(head), "{\"connection\":\"%s\",\"batch_uuid\":\"%s\",\"status\":%ld,"
		 "\"request\":%" PRIu32 ",\"records_sent\":%" PRIu64 ",\"time\":\"%s\",\"file\":",
		 b->cfg->name, b->jb.uuid, status, b->jb.acks + 1, b->jb.records, when);
	if ((r = jsonstr_raw(&buf, &len, &cap, head, strlen(head))) < 0 ||
	    (r = jsonstr_append(&buf, &len, &cap, name, strlen(name))) < 0 ||
	    (r = jsonstr_raw(&buf, &len, &cap, ",\"error\":", 9)) < 0 ||
	    (r = jsonstr_append(&buf, &len, &cap, why, strlen(why))) < 0 ||
	    (r = jsonstr_raw(&buf, &len, &cap, ",\"response\":", 12)) < 0 ||
	    (r = jsonstr_append(&buf, &len, &cap, response ? response : "", response ? strlen(response) : 0)) < 0 ||
	    (r = jsonstr_raw(&buf, &len, &cap, "}\n", 2)) < 0)
		goto out;
	r = workfiles_error_json(failedfd, failed_name, buf, len);
out:
	if (r < 0)
		batch_log(b, LOG_LVL_ERROR, status, "%s: cannot write %s/failed/%s.error.json: %s", name, b->env.wf->dir,
			 failed_name, strerror(-r));
	free(buf);
	return r;
}

/* The batch's files fail for good: failed/<name> beside <name>.error.json; the batch stays open at the server. */
void batch_fail(struct batch *b, long status, const char *why, const char *response)
{
	char dst[LAYOUT_NAME_MAX + 1];
	size_t moved = 0;
	int ffd, r;

	/* No more parsing for this batch, even while the journal holds up its end. */
	pipeline_cancel(&b->pl);
	ffd = batch_subdir(b, "failed", true);
	for (size_t i = 0; i < b->n_members; i++) {
		r = ffd < 0 ? ffd : workfiles_move(b->env.wf, b->members[i].fid, b->members[i].name, ffd, dst);
		if (r < 0 && r != -ENOENT)
			batch_log(b, LOG_LVL_ERROR, status, "%s: cannot move it to %s/failed/: %s", b->members[i].name,
				 b->env.wf->dir, strerror(-r));
		moved += r == 0;
		/* The error is written even for a file gone from .work/: the reason must be somewhere. */
		if (ffd >= 0)
			(void)batch_error_json(b, ffd, b->members[i].name, r == 0 ? dst : b->members[i].name, status,
					       why, response);
	}
	workfiles_sync(b->env.wf, ffd);
	if (ffd >= 0)
		close(ffd);
	/* Never claim a move that did not happen: a file already gone from .work/ is not in failed/. */
	if (moved)
		batch_log(b, LOG_LVL_ERROR, status, "%s: failed for good: %s; moved to %s/failed/", b->jb.name, why, b->env.wf->dir);
	else
		batch_log(b, LOG_LVL_ERROR, status, "%s: failed for good: %s; nothing was moved to %s/failed/ (no file of "
			 "it is left in .work/)", b->jb.name, why, b->env.wf->dir);
	b->env.stats->files_failed += b->n_members;
	b->env.stats->last_error_time = ev_now(b->env.loop);
	b->env.stats->last_error_status = status;
	b->ops.finished(b->userdata, false, status, why);
	b->jb.state = BATCH_FAILED;
	if (journal_put(b->env.journal, &b->jb) < 0) {
		batch_ended(b);
		return;
	}
	batch_durable(b, batch_ended);
}

/* 401/403 before anything was acknowledged: hand the files back to the spool, untouched. */
void batch_release_files(struct batch *b)
{
	char dst[LAYOUT_NAME_MAX + 1];
	int dfd = workfiles_dir(b->env.wf);

	pipeline_cancel(&b->pl);       /* the files leave: nothing more to cut of them */

	for (size_t i = 0; i < b->n_members; i++) {
		struct member *m = &b->members[i];
		int r = dfd < 0 ? dfd : workfiles_move(b->env.wf, m->fid, m->name, dfd, dst);

		/* Its rejected lines are written again when it goes up: take back this attempt's. */
		(void)workfiles_rejected_truncate(b->env.wf, m->name, m->rejected_size);
		if (r == 0)
			(void)spool_queue_add(&b->env.in->queue, dst, m->ident.mtime_ns);
		else if (r != -ENOENT)
			batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot move it back to %s: %s", m->name, b->env.wf->dir, strerror(-r));
	}
	workfiles_sync(b->env.wf, dfd);
	b->jb.state = BATCH_RELEASED;
	if (journal_put(b->env.journal, &b->jb) == 0)
		(void)journal_sync(b->env.journal);
	batch_end_here(b);
	b->ops.ended(b->userdata, BATCH_END_HELD);
}

/* The file taken for the next batch goes back to the spool: never journaled, nothing of it sent. */
void batch_release_carry(struct batch *b)
{
	char dst[LAYOUT_NAME_MAX + 1];
	int dfd = workfiles_dir(b->env.wf), r;

	if (!b->have_carry)
		return;
	b->have_carry = false;
	r = dfd < 0 ? dfd : workfiles_move(b->env.wf, b->carry.fid, b->carry.name, dfd, dst);
	if (r == 0)
		(void)spool_queue_add(&b->env.in->queue, dst, b->carry.ident.mtime_ns);
	else if (r != -ENOENT)
		batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot move it back to %s: %s (the next start does)", b->carry.name,
			 b->env.wf->dir, strerror(-r));
}

/* A file that changed after its batch was completed: what was read went up, the rest did not. */
bool batch_changed(struct batch *b, const struct member *m)
{
	return workfiles_changed(b->env.wf, m->fid, m->name, &m->ident);
}

void batch_archive(struct batch *b)
{
	char dst[LAYOUT_NAME_MAX + 1];
	double took = ev_now(b->env.loop) - b->started;
	bool ok = true, del = b->env.after_upload == AFTER_UPLOAD_DELETE;
	int dfd = -1, r;

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
			r = ffd < 0 ? ffd : workfiles_move(b->env.wf, m->fid, m->name, ffd, dst);
			if (r == 0)
				(void)batch_error_json(b, ffd, m->name, dst, 0, why, NULL);
			if (ffd >= 0)
				close(ffd);
			b->env.stats->files_failed++;
			continue;
		}
		if (del) {
			workfiles_work_name(m->fid, m->name, dst);
			r = b->env.wf->workfd < 0 ? -EBADF : unlinkat(b->env.wf->workfd, dst, 0) < 0 ? -errno : 0;
		} else {
			r = dfd < 0 ? dfd : workfiles_move(b->env.wf, m->fid, m->name, dfd, dst);
		}
		if (r < 0 && r != -ENOENT) {
			/* Complete at the server; the file stays in .work/ and the next start retries the move. */
			batch_log(b, LOG_LVL_ERROR, -1, "%s: uploaded, but cannot %s it: %s", m->name,
				 del ? "delete" : "archive", strerror(-r));
			ok = false;
		}
	}
	workfiles_sync(b->env.wf, dfd);
	if (dfd >= 0)
		close(dfd);
	if (ok) {
		b->jb.state = BATCH_ARCHIVED;
		/* Made durable with the next sync: replay of COMPLETED redoes an idempotent move. */
		(void)journal_put(b->env.journal, &b->jb);
	}
	crashpoint("after-archive");
	{
		struct log_ctx ctx = batch_log_ctx(b, -1);

		ctx.records = (long long)b->jb.records;
		if (b->n_members > 1)
			log_msg(LOG_LVL_INFO, &ctx, "%s: %zu files (%s ... %s) in one batch: %" PRIu64 " records sent, %"
				PRIu64 " rejected, %" PRIu64 " requests, %.2f s", b->env.name, b->n_members,
				b->members[0].name, b->members[b->n_members - 1].name, b->jb.records, b->jb.rejected,
				b->req.sent, took);
		else
			log_msg(LOG_LVL_INFO, &ctx, "%s: %s: %" PRIu64 " records sent, %" PRIu64 " rejected, %" PRIu64
				" requests, %.2f s", b->env.name, b->jb.name, b->jb.records, b->jb.rejected,
				b->req.sent, took);
	}
	b->env.stats->files_done += b->n_members;
	b->ops.finished(b->userdata, true, 0, NULL);
	batch_ended(b);
}

/* Take a file out of the exporters' way into .work/ and open it. Returns the fd or a negative errno. */
int batch_take_file(struct batch *b, const char *name, struct member *m)
{
	char wn[LAYOUT_NAME_MAX + 1];
	struct stat st;
	int fd;

	{
		struct rejbuf keep = m->rej;

		memset(m, 0, sizeof(*m));
		m->rej = keep;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->fid = journal_new_id(b->env.journal);
	workfiles_work_name(m->fid, m->name, wn);
	if ((fd = intake_take(b->env.in, name, wn, &st, &m->trusted)) < 0)
		return fd;
	crashpoint("after-rename");
	workfiles_identity(&st, &m->ident);
	return fd;
}

static int64_t mtime_of(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/*
 * Before a batch is completed: is the file all there, all read, and done being written? A file
 * written in place may have been taken while its writer paused: it is completed only once
 * nobody has it open (a lease says so, or inotify did when it was taken and nobody can open it
 * in .work/) or it has been still for settle_seconds; never with less than it holds. A file
 * that grew is read on in the same batch. @again is called when it is time to look again.
 */
int batch_check_whole(struct batch *b, void (*again)(struct batch *b))
{
	struct timespec now;
	struct stat st;
	char why[512];
	uint64_t read;
	double age;
	int lease;

	if (b->jb.n_members || b->fd < 0) {
		/* Small files read whole into one request: each must still be what was read. */
		for (size_t i = 0; i < b->n_members; i++) {
			if (batch_changed(b, &b->members[i])) {
				snprintf(why, sizeof(why), "%s changed after it was read (still being written in place?): "
					 "its batch is not completed", b->members[i].name);
				batch_fail(b, 0, why, NULL);
				return BATCH_WHOLE_FAILED;
			}
		}
		return BATCH_WHOLE_YES;
	}
	if (fstat(b->fd, &st) < 0) {
		snprintf(why, sizeof(why), "cannot look at the file: %s", strerror(errno));
		batch_fail(b, 0, why, NULL);
		return BATCH_WHOLE_FAILED;
	}
	if (st.st_nlink == 0) {
		batch_fail(b, 0, "the file was deleted from .work/ while its batch was open: the batch is not completed "
			  "(the records sent so far stay in an open batch at the server)", NULL);
		return BATCH_WHOLE_FAILED;
	}
	/* The reader is at the end of what it read (blank lines after the last record included), in the file's bytes. */
	read = source_file_offset(b->pl.reader);
	if ((uint64_t)st.st_size < read || (uint64_t)st.st_size < b->jb.ident.size ||
	    ((uint64_t)st.st_size == b->jb.ident.size && mtime_of(&st) != b->jb.ident.mtime_ns)) {
		snprintf(why, sizeof(why), "the file was truncated or rewritten while its batch was open (%lld bytes now, "
			 "%" PRIu64 " read): the batch is not completed with partial data", (long long)st.st_size, read);
		batch_fail(b, 0, why, NULL);
		return BATCH_WHOLE_FAILED;
	}
	if ((uint64_t)st.st_size > read) {
		batch_log(b, LOG_LVL_INFO, -1, "%s: grew to %lld bytes after %" PRIu64 " were read: reading on in the same batch",
			 b->jb.name, (long long)st.st_size, read);
		workfiles_identity(&st, &b->jb.ident);
		b->members[0].ident = b->jb.ident;
		b->members[0].trusted = false;  /* someone writes it: from now on only stillness tells */
		b->env.stats->file_size = b->jb.ident.size;
		if (pipeline_read_on(&b->pl, b->fd, b->jb.name) < 0) {
			batch_fail(b, 0, pipeline_read_error(&b->pl, "cannot read the file"), NULL);
			return BATCH_WHOLE_FAILED;
		}
		return BATCH_WHOLE_GREW;
	}
	lease = spool_lease_probe(b->fd);
	clock_gettime(CLOCK_REALTIME, &now);
	age = (double)((int64_t)now.tv_sec * 1000000000 + now.tv_nsec - mtime_of(&st)) / 1e9;
	if (lease == 0 || (lease < 0 && !b->members[0].trusted && age < b->env.settle_seconds)) {
		if (!b->settle_logged)
			batch_log(b, LOG_LVL_INFO, -1, "%s: %s: its batch is completed once it has been still for %g s",
				 b->jb.name, lease == 0 ? "still open for writing" : "changed moments ago",
				 b->env.settle_seconds);
		b->settle_logged = true;
		batch_wait_settle(b, lease == 0 ? 1.0 : b->env.settle_seconds - age, again);
		return BATCH_WHOLE_WAIT;
	}
	return BATCH_WHOLE_YES;
}
