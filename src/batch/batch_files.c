/* batch_files: a batch's files: taken into .work/, checked whole, their rejected lines, done/, failed/ with error.json, back to the spool. */
#include "batch/batch_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "record/record_check.h"
#include "spool/spool.h"
#include "spool/spool_queue.h"
#include "state/state_counters.h"
#include "util/crashpoint.h"
#include "util/jsonstr.h"
#include "util/layout.h"

struct log_ctx batch_log_ctx(const struct batch *b, long status)
{
	return (struct log_ctx){
		.connection = b->env.name,
		.file = b->active ? b->jb.name : NULL,
		.batch_uuid = b->active ? b->jb.uuid : NULL,
		.http_status = status,
		.records = -1,
	};
}

void batch_log(const struct batch *b, enum log_level lvl, long status, const char *fmt, ...)
{
	struct log_ctx ctx = batch_log_ctx(b, status);
	va_list ap;

	va_start(ap, fmt);
	log_vconn(lvl, &ctx, fmt, ap);
	va_end(ap);
}

/* The workfiles put a directory right (a link, or writable by exporters): say so. */
static int batch_said_fixed(struct batch *b, int fd, bool fixed, const char *what)
{
	if (fixed && b->env.wf->foreign >= 0)
		batch_log(b, LOG_LVL_WARNING, -1, "%s was owned by uid %ld, not by dcsyncd's user: set aside as .not-dcsyncd-%ld-* "
			 "beside it, untouched, and a private directory made in its place (mode 0750)", what,
			 b->env.wf->foreign, b->env.wf->foreign);
	else if (fixed)
		batch_log(b, LOG_LVL_WARNING, -1, "%s was not as dcsyncd makes it (a link, or writable by others): made a "
			 "private directory again (mode 0750)", what);
	else if (fd == -EPERM && b->env.wf->foreign >= 0)
		batch_log(b, LOG_LVL_ERROR, -1, "%s is owned by uid %ld, not by dcsyncd's user, and cannot be set aside: "
			 "nothing is written into it", what, b->env.wf->foreign);
	b->env.wf->foreign = -1;
	return fd;
}

int batch_subdir(struct batch *b, const char *sub, bool create)
{
	char what[PATH_MAX];
	bool fixed;
	int fd = spool_work_subdir(b->env.wf, sub, create, &fixed);

	snprintf(what, sizeof(what), "%s/%s", b->env.wf->dir, sub);
	return batch_said_fixed(b, fd, fixed, what);
}

int batch_workdir(struct batch *b)
{
	char what[PATH_MAX];
	bool fixed;
	int fd = spool_work_work(b->env.wf, &fixed);

	snprintf(what, sizeof(what), "%s/.work", b->env.wf->dir);
	return batch_said_fixed(b, fd, fixed, what);
}

int batch_done_dir(struct batch *b)
{
	bool fixed;
	int fd = spool_work_done(b->env.wf, &fixed);

	return batch_said_fixed(b, fd, fixed, b->env.wf->done_dir);
}

/* Room kept under rejected_max_bytes for the closing entry (config_keys: the cap is at least 4096). */
#define REJECTED_CLOSING_ROOM 256

/* The buffer cut at keep for rejected_max_bytes, and the closing entry, padded with blanks so the
 * file ends at the cap exactly: a later flush (also after a restart) sees it closed by its size alone. */
static int capped(struct batch *b, const char *name, struct record_rejects *rb, size_t keep, uint64_t have, uint64_t cap)
{
	char end[REJECTED_CLOSING_ROOM];
	int n = snprintf(end, sizeof(end), "{\"line\":null,\"error\":\"rejected_max_bytes=%" PRIu64 " reached: further "
			 "rejected lines of this file are counted, not copied\",\"record\":null}", cap);
	int r;

	batch_log(b, LOG_LVL_WARNING, -1, "%s: its rejected lines reached rejected_max_bytes=%" PRIu64 ": further ones "
		  "are counted, not copied", name, cap);
	rb->len = keep;
	if ((r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, end, (size_t)n)) < 0)
		return r;
	while (r == 0 && have + rb->len < cap - 1)
		r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, " ", 1);
	return r < 0 ? r : jsonstr_raw(&rb->buf, &rb->len, &rb->cap, "\n", 1);
}

/* Append a buffer of rejected lines to <name>.rejected.ndjson, once the batch holding them is durable. */
int batch_rejects_flush(struct batch *b, const char *name, struct record_rejects *rb)
{
	char rn[LAYOUT_NAME_MAX + 1], what[PATH_MAX];
	bool fixed, replaced;
	size_t keep = rb->len;
	uint64_t have, cap = b->cfg->rejected_max_bytes;
	int r;

	if (!rb->len)
		return 0;
	/* One file may not fill the spool's disk through rejected/: past the cap, whole entries only,
	 * then one closing entry; later lines are counted (in the log and totals), not copied. */
	have = spool_work_rejected_size(b->env.wf, name);
	if (have > cap - REJECTED_CLOSING_ROOM) {
		keep = 0;               /* closed already: only the closing entry passes cap - room */
	} else if (have + rb->len > cap - REJECTED_CLOSING_ROOM) {
		while (keep && (have + keep > cap - REJECTED_CLOSING_ROOM || rb->buf[keep - 1] != '\n'))
			keep--;
	}
	r = 0;
	if (keep < rb->len && have <= cap - REJECTED_CLOSING_ROOM) {
		r = capped(b, name, rb, keep, have, cap);
		keep = rb->len;
	}
	if (keep && !r)
		r = spool_work_rejected_append(b->env.wf, name, rb->buf, keep, &fixed, &replaced);
	else
		fixed = replaced = false;
	snprintf(what, sizeof(what), "%s/rejected", b->env.wf->dir);
	(void)batch_said_fixed(b, 0, fixed, what);
	spool_work_rejected_name(name, rn);
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

void batch_rejects_log(struct batch *b, const char *name, uint64_t n, const struct record_rejects *rb)
{
	char rn[LAYOUT_NAME_MAX + 1];

	/* One line per rejected record at warning level would drown a log on a bad export. */
	if (!n)
		return;
	spool_work_rejected_name(name, rn);
	if (rb->first_line)
		batch_log(b, LOG_LVL_WARNING, -1, "%s: %" PRIu64 " line(s) rejected between lines %" PRIu64 " and %" PRIu64
			 ", see %s/rejected/%s", name, n, rb->first_line, rb->last_line, b->env.wf->dir, rn);
	else
		batch_log(b, LOG_LVL_WARNING, -1, "%s: %" PRIu64 " line(s) rejected, see %s/rejected/%s", name, n, b->env.wf->dir, rn);
}

/* failed/<name>.error.json beside the failed file: written atomically, never through a link. */
int batch_error_json(struct batch *b, int failedfd, const char *name, const char *failed_name,
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
	r = spool_work_error_json(failedfd, failed_name, buf, len);
out:
	if (r < 0)
		batch_log(b, LOG_LVL_ERROR, status, "%s: cannot write %s/failed/%s.error.json: %s", name, b->env.wf->dir,
			 failed_name, strerror(-r));
	free(buf);
	return r;
}

/* The file taken for the next batch goes back to the spool: never journaled, nothing of it sent. */
void batch_release_carry(struct batch *b)
{
	char dst[LAYOUT_NAME_MAX + 1];
	int dfd = spool_work_dir(b->env.wf), r;

	if (!b->have_carry)
		return;
	b->have_carry = false;
	r = dfd < 0 ? dfd : spool_work_move(b->env.wf, b->carry.fid, b->carry.name, dfd, dst);
	if (r == 0)
		(void)spool_queue_add(&b->env.in->queue, dst, b->carry.ident.mtime_ns);
	else if (r != -ENOENT)
		batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot move it back to %s: %s (the next start does)", b->carry.name,
			 b->env.wf->dir, strerror(-r));
}

/* A file that changed after its batch was completed: what was read went up, the rest did not. */
bool batch_changed(struct batch *b, const struct member *m)
{
	return spool_work_changed(b->env.wf, m->fid, m->name, &m->ident);
}

int64_t batch_mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Take a file out of the exporters' way into .work/ and open it. Returns the fd or a negative errno. */
int batch_take_file(struct batch *b, const struct spool_entry *e, struct member *m)
{
	const char *name = e->name;
	char wn[LAYOUT_NAME_MAX + 1];
	struct stat st;
	int fd;

	{
		struct record_rejects keep = m->rej;

		memset(m, 0, sizeof(*m));
		m->rej = keep;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->fid = state_journal_new_id(b->env.journal);
	spool_work_work_name(m->fid, m->name, wn);
	if ((fd = spool_intake_take(b->env.in, e, wn, &st, &m->trusted)) < 0)
		return fd;
	crashpoint("after-rename");
	spool_work_identity(&st, &m->ident);
	/* Not trusted: taken only after it was seen unchanged for settle_seconds. */
	m->changed_ns = batch_mono_ns() - (int64_t)(b->env.settle_seconds * 1e9);
	return fd;
}

/* After a restart the last acknowledged record is not in memory: find it before the resume point. */
int batch_find_last_record(struct batch *b)
{
	struct source *r = NULL;
	struct ndjson_line ln;
	char reason[256];
	int rc;

	if (b->fd < 0)
		return -ENOENT;
	if ((rc = record_source_open(&r, b->fd, b->jb.name, &b->cfg->csv, 0, 1, b->cfg->max_record_bytes)) < 0) {
		record_source_free(r);
		return rc;
	}
	record_check_set_catalog(b->validator, NULL);
	b->req.last_record.len = 0;
	while ((rc = record_source_next(r, &ln)) == 1 && (uint64_t)ln.end_offset <= b->jb.offset) {
		if (!ln.too_long && !ln.error && record_check_one(b->validator, ln.data, ln.len, reason, sizeof(reason)) == 0) {
			b->req.last_record.len = 0;
			if ((rc = jsonstr_raw(&b->req.last_record.buf, &b->req.last_record.len, &b->req.last_record.cap, ln.data,
					      ln.len)) < 0)
				break;
		}
	}
	record_source_free(r);
	if (rc < 0)
		return rc;
	return b->req.last_record.len ? 0 : -ENOENT;
}

/* Open a file of a journaled batch and check it is still the file the batch opened with. */
/*
 * Open a file of a journaled batch and check it is still the file the batch opened with (or
 * that file grown: what was appended is read on). A negative errno: -ENOENT gone, -ESTALE
 * changed, anything else (EMFILE, EACCES, EIO) may pass.
 */
int batch_reopen_member(struct batch *b, struct member *m, char *why, size_t whylen)
{
	bool grew = false;
	int fd = spool_work_reopen(b->env.wf, m->fid, m->name, &m->ident, &grew);

	if (fd == -ESTALE)
		snprintf(why, whylen, "%s: the file changed since its batch opened (device, inode, size or mtime differ)",
			 m->name);
	else if (fd == -ENOENT)
		snprintf(why, whylen, "%s: the file of an open batch is gone from %s/.work/", m->name, b->env.wf->dir);
	else if (fd < 0)
		snprintf(why, whylen, "%s: cannot open the file of an open batch in %s/.work/: %s", m->name, b->env.wf->dir,
			 strerror(-fd));
	/* Unchanged since it was taken ready: still nobody's to write. Grown: someone writes it. */
	m->trusted = !grew;
	m->changed_ns = batch_mono_ns();
	return fd;
}
