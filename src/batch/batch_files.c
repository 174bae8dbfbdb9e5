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
#include "state/state_counters.h"
#include "util/crashpoint.h"
#include "util/jsonstr.h"
#include "util/layout.h"

struct log_ctx batch_log_ctx(const struct batch *b, long status)
{
	return (struct log_ctx){
		.connection = b->env.name,
		.file = (b->phase != BATCH_IDLE) ? b->jb.name : NULL,
		.batch_uuid = (b->phase != BATCH_IDLE) ? b->jb.uuid : NULL,
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

/*
 * The buffer cut at keep, and the closing entry naming the cap reached. Past rejected_max_bytes
 * it is padded with blanks so the file ends at the cap exactly; past rejected_max_lines it is
 * the entry after the last allowed one: either way a later flush (also after a restart) sees the
 * file closed by its size or its count alone.
 */
static int capped(struct batch *b, const char *name, struct record_rejects *rb, size_t keep, uint64_t have,
		  bool by_lines)
{
	const char *key = by_lines ? "rejected_max_lines" : "rejected_max_bytes";
	uint64_t cap = by_lines ? b->cfg->rejected_max_lines : b->cfg->rejected_max_bytes;
	char end[REJECTED_CLOSING_ROOM];
	int n = snprintf(end, sizeof(end), "{\"line\":null,\"error\":\"%s=%" PRIu64 " reached: further "
			 "rejected lines of this file are counted, not copied\",\"record\":null}", key, cap);
	int r;

	batch_log(b, LOG_LVL_WARNING, -1, "%s: its rejected lines reached %s=%" PRIu64 ": further ones "
		  "are counted, not copied", name, key, cap);
	rb->len = keep;
	if ((r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, end, (size_t)n)) < 0)
		return r;
	while (r == 0 && !by_lines && have + rb->len < b->cfg->rejected_max_bytes - 1)
		r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, " ", 1);
	return r < 0 ? r : jsonstr_raw(&rb->buf, &rb->len, &rb->cap, "\n", 1);
}

/*
 * The size and entries of @m's rejected file: counted from the file when it is not the size it had
 * after our last append (a restart, a truncation on resume, an earlier drop of the same name), so a
 * file is read at most once a batch, up to rejected_max_bytes.
 */
static int rejected_count(struct batch *b, struct member *m, uint64_t *have, uint64_t *lines)
{
	int r;

	*have = spool_work_rejected_size(b->env.wf, m->name);
	if (*have == m->rejected_counted_size) {
		*lines = m->rejected_lines;
		return 0;
	}
	if ((r = spool_work_rejected_lines(b->env.wf, m->name, have, lines)) < 0)
		return r;
	m->rejected_counted_size = *have;
	m->rejected_lines = *lines;
	return 0;
}

/* Append a buffer of rejected lines to <name>.rejected.ndjson, once the batch holding them is durable. */
int batch_rejects_flush(struct batch *b, struct member *m, struct record_rejects *rb)
{
	char rn[LAYOUT_NAME_MAX + 1], what[PATH_MAX];
	const char *name = m->name;
	bool fixed = false, replaced = false, by_lines = false, closing;
	size_t keep = 0, entries = 0;
	const char *nl;
	uint64_t have, lines, room, max_lines = b->cfg->rejected_max_lines;
	int r;

	if (!rb->len)
		return 0;
	if ((r = rejected_count(b, m, &have, &lines)) < 0)
		goto out;
	/* One file may not fill the spool's disk through rejected/: past either cap, whole entries
	 * only, then one closing entry; later lines are counted (in the log and totals), not copied.
	 * Closed already: past cap - room in bytes, or the closing entry after max_lines. */
	room = have > b->cfg->rejected_max_bytes - REJECTED_CLOSING_ROOM || lines > max_lines ? 0 :
	       b->cfg->rejected_max_bytes - REJECTED_CLOSING_ROOM - have;
	for (const char *p = rb->buf; room && (nl = memchr(p, '\n', rb->len - (size_t)(p - rb->buf))); p = nl + 1) {
		if ((size_t)(nl + 1 - rb->buf) > room)
			break;
		if (lines + entries == max_lines) {
			by_lines = true;
			break;
		}
		entries++;
		keep = (size_t)(nl + 1 - rb->buf);
	}
	closing = keep < rb->len && room;
	if (closing)
		r = capped(b, name, rb, keep, have, by_lines);
	else
		rb->len = keep;
	if (r == 0 && rb->len)
		r = spool_work_rejected_append(b->env.wf, name, rb->buf, rb->len, &fixed, &replaced);
	if (r == 0) {
		/* Ours now, as counted: the next flush of this file need not read it. */
		m->rejected_counted_size = (replaced ? 0 : have) + rb->len;
		m->rejected_lines = (replaced ? 0 : lines) + entries + closing;
	} else {
		m->rejected_counted_size = UINT64_MAX;
	}
	snprintf(what, sizeof(what), "%s/rejected", b->env.wf->dir);
	(void)batch_said_fixed(b, 0, fixed, what);
	spool_work_rejected_name(name, rn);
	if (replaced)
		batch_log(b, LOG_LVL_WARNING, -1, "%s/rejected/%s was not a file dcsyncd made (a link or another user's "
			 "file): removed, never written through", b->env.wf->dir, rn);
out:
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
		(void)spool_intake_hand_back(b->env.in, dst, b->carry.ident.mtime_ns);
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
	const struct source_limits limits = { b->cfg->max_record_bytes, b->cfg->zstd_window_max_mib };
	struct source *r = NULL;
	struct ndjson_line ln;
	char reason[256];
	int rc;

	if (b->fd < 0)
		return -ENOENT;
	if ((rc = record_source_open(&r, b->fd, b->jb.name, &b->cfg->csv, 0, 1, &limits)) < 0) {
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

int batch_journal_member(struct batch *b, size_t i)
{
	const struct member *m = &b->members[i];
	struct journal_member jm = {
		.batch_id = b->jb.id,
		.file_id = m->fid,
		.index = (uint32_t)i,
		.ident = m->ident,
		.rejected_size = m->rejected_size,
	};

	snprintf(jm.name, sizeof(jm.name), "%s", m->name);
	return state_journal_put_member(b->env.journal, &jm);
}
