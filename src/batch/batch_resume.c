/* batch_resume: after a restart, go on with the journal's open batches and hand back files it never named. */
#include "batch/batch_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record/record_source.h"
#include "state/state_counters.h"
#include "util/fileio.h"
#include "util/jsonstr.h"
#include "util/layout.h"

/* Whether a file of the batch is CSV or TSV: the CSV options cut its rows. */
static bool holds_csv(const struct batch *b)
{
	struct source_kind k;

	for (size_t i = 0; i < b->n_members; i++)
		if (record_source_kind_of(b->members[i].name, &k) == 0 && k.format != SOURCE_NDJSON)
			return true;
	return false;
}

/* Where a file of a journaled batch is now, when it is no longer in .work/. */
enum whereabouts { IN_WORK, IN_DONE, IN_FAILED, IN_SPOOL, GONE };

static enum whereabouts member_whereabouts(struct batch *b, const struct member *m, bool doubt)
{
	char wn[LAYOUT_NAME_MAX + 1];
	enum whereabouts w = GONE;
	int wfd = batch_workdir(b), dfd, ffd;
	struct stat st;

	spool_work_work_name(m->fid, m->name, wn);
	if (wfd >= 0 && fstatat(wfd, wn, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return IN_WORK;
	dfd = b->env.after_upload == AFTER_UPLOAD_ARCHIVE ? fileio_open_dir(b->env.wf->done_dir) : -1;
	ffd = batch_subdir(b, "failed", false);
	if (spool_work_holds(dfd, m->fid, m->name, &m->ident, doubt))
		w = IN_DONE;
	else if (spool_work_holds(ffd, m->fid, m->name, &m->ident, false))
		w = IN_FAILED;
	else if (spool_work_holds(spool_work_dir(b->env.wf), m->fid, m->name, &m->ident, false))
		w = IN_SPOOL;
	if (dfd >= 0)
		close(dfd);
	if (ffd >= 0)
		close(ffd);
	return w;
}

/*
 * A live batch of the journal whose files left .work/ ended before the restart, its last
 * records lost with damage to the journal (state_journal_in_doubt), or it was archived (the file in
 * done/ as it was): never resume it, never call it failed. A file in done/ (or, with
 * after_upload = delete, gone) means the batch was completed: the rest of its files are
 * archived now. Otherwise, say where the files are. Returns whether the batch was ended here.
 */
static bool ended_before_restart(struct batch *b)
{
	bool doubt = state_journal_in_doubt(b->env.journal, b->jb.id), del = b->env.after_upload == AFTER_UPLOAD_DELETE;
	size_t count[GONE + 1] = { 0 };
	char where[1024], dst[LAYOUT_NAME_MAX + 1];
	size_t len = 0;

	for (size_t i = 0; i < b->n_members; i++) {
		enum whereabouts w = member_whereabouts(b, &b->members[i], doubt);
		static const char *const what[] = { "still in .work/", "in done/", "in failed/", "back in the spool",
						    "gone" };

		count[w]++;
		if (len < sizeof(where) - 1)
			len += (size_t)snprintf(where + len, sizeof(where) - len, "%s%s %s", i ? ", " : "",
						b->members[i].name, what[w]);
	}
	if (count[IN_DONE] || (doubt && del && count[GONE] && !count[IN_FAILED] && !count[IN_SPOOL])) {
		/* COMPLETED is durable before any file is archived or deleted: the server has it all. */
		int dfd = -1, sr;

		if (!del)
			dfd = batch_done_dir(b);
		for (size_t i = 0; i < b->n_members; i++) {
			int r;

			if (member_whereabouts(b, &b->members[i], doubt) != IN_WORK)
				continue;
			if (del) {
				spool_work_work_name(b->members[i].fid, b->members[i].name, dst);
				r = unlinkat(b->env.wf->workfd, dst, 0) < 0 ? -errno : 0;
			} else {
				r = dfd < 0 ? dfd : spool_work_move(b->env.wf, b->members[i].fid, b->members[i].name, dfd, dst);
			}
			if (r < 0 && r != -ENOENT)
				batch_log(b, LOG_LVL_ERROR, -1, "%s: uploaded, but cannot %s it: %s", b->members[i].name,
					 del ? "delete" : "archive", strerror(-r));
		}
		if (count[IN_WORK] && (sr = spool_work_sync(b->env.wf, dfd)) < 0)
			batch_log(b, LOG_LVL_ERROR, -1, "%s: cannot make its archiving durable: %s", b->jb.name,
				 strerror(-sr));
		if (dfd >= 0)
			close(dfd);
		batch_log(b, LOG_LVL_INFO, -1, "%s: batch %s was completed before the restart (%s; the journal's records "
			 "of its end were lost): nothing to resume", b->jb.name, b->jb.uuid, where);
		b->jb.state = BATCH_ARCHIVED;
	} else if (doubt && !count[IN_WORK]) {
		batch_log(b, LOG_LVL_WARNING, -1, "%s: batch %s ended before the restart, how the journal cannot tell (its "
			 "last records were in the damaged bytes): %s; nothing to resume", b->jb.name, b->jb.uuid, where);
		b->jb.state = count[IN_FAILED] ? BATCH_FAILED : count[IN_SPOOL] ? BATCH_RELEASED : BATCH_ARCHIVED;
	} else {
		return false;
	}
	if (state_journal_put(b->env.journal, &b->jb) < 0)
		batch_ended(b);
	else
		batch_durable(b, batch_ended);
	return true;
}

/*
 * A file of a journaled batch cannot be opened: gone or changed fails the batch for good; any
 * other error (EMFILE, EACCES, EIO) may pass, so the batch waits and is tried again.
 */
static int resume_failed(struct batch *b, int r, const char *why)
{
	if (r == -ENOENT || r == -ESTALE) {
		batch_fail(b, 0, why, NULL);
		return 0;
	}
	batch_log(b, LOG_LVL_ERROR, -1, "%s; trying again in %g s", why, b->cfg->retry_max_seconds);
	batch_end_here(b);
	b->ops.ended(b->userdata, BATCH_END_HELD);
	return -EAGAIN;
}

/* skip_unchanged: an empty first range at the resume point; the worker cuts and decides on from there. */
static int resume_range(struct batch *b)
{
	struct record_body *c = &b->pl.body[0];
	int r = record_cut_body_begin(c);

	if (r < 0)
		return r;
	c->start_offset = c->end_offset = (off_t)b->jb.offset;
	c->start_line = c->end_line = b->jb.lineno;
	record_cut_body_finish(c, &b->pl.params, false);
	b->decided_first = true;
	return 0;
}

int batch_resume(struct batch *b, const struct journal_batch *from, const struct conn_config *cfg,
		 struct record_check *v, struct upload_client *client, struct ratelimit *limiter)
{
	const struct journal_member *jm;
	const struct journal_range *dmg;
	char why[PATH_MAX + 128];
	size_t n = state_journal_members(b->env.journal, from->id, &jm);
	int fd, r = 0;

	b->jb = *from;
	b->unchanged = 0;
	b->decided_first = false;
	batch_use(b, cfg, v, client, limiter);
	batch_enter(b, BATCH_OPENING, BW_NONE, -1);
	b->n_members = 0;
	/* Rebuild the batch's files from its member records. */
	for (size_t i = 0; i < n; i++) {
		struct member *m;

		if (batch_grow_members(b) < 0) {
			r = -ENOMEM;
			break;
		}
		m = &b->members[b->n_members++];
		m->rej.len = 0;
		m->rejected = 0;
		m->rejected_lines = m->rejected_counted_size = 0;       /* counted again unless it has no rejected file */
		m->fid = jm[i].file_id;
		m->ident = jm[i].ident;
		m->rejected_size = jm[i].rejected_size;
		snprintf(m->name, sizeof(m->name), "%s", jm[i].name);
	}
	if (r == 0 && n != from->n_members)
		r = -EBADMSG;
	batch_set_params(b);
	if (r == -EBADMSG && state_journal_damage(b->env.journal, &dmg)) {
		/* Its other files, unnamed now, went back to the spool at start: these follow them. */
		batch_log(b, LOG_LVL_WARNING, -1, "%s: batch %s: the journal lost the records of %zu of its %" PRIu32 " files "
			 "(damaged bytes): its files go back to the spool and up again in a new batch; this one stays open "
			 "at the server", from->name, from->uuid,
			 (size_t)from->n_members - n, from->n_members);
		batch_release_files(b, 0, "the journal lost the records of some of its files (damaged bytes): handed back "
				    "to the spool, to go up again in a new batch");
		return 0;
	}
	if (r == 0 && from->state == BATCH_OPEN && ended_before_restart(b))
		return 0;
	if (r == 0 && from->state == BATCH_OPEN && from->dest && from->dest != batch_destination(b->cfg)) {
		/* Its requests went to one place; the rest must not go to another under its batch_uuid. */
		batch_fail(b, 0, "the batch was opened at another destination (base_url or uuid of the connection "
			  "changed while dcsyncd was stopped): it cannot be finished there, and is not sent elsewhere", NULL);
		return 0;
	}
	if (r == 0 && from->state == BATCH_OPEN && holds_csv(b) && from->csv_opts != record_csv_options_hash(&b->cfg->csv)) {
		/* Its first requests were cut with other types or fields: the rest must not join them. */
		batch_fail(b, 0, "the batch was opened with other CSV options (csv_columns, csv_delimiter or csv_empty "
			  "changed while dcsyncd was stopped): its rows are not sent under its batch_uuid cut another way", NULL);
		return 0;
	}
	if (r < 0) {
		batch_fail(b, 0, "the journal does not list every file of this batch", NULL);
		return 0;
	}
	if (from->state == BATCH_COMPLETED) {
		batch_log(b, LOG_LVL_INFO, -1, "%s: batch %s was completed before the restart: finishing its %s", from->name,
			 from->uuid, b->env.after_upload == AFTER_UPLOAD_DELETE ? "delete" : "archive");
		batch_completed(b);
		return 0;
	}
	batch_log(b, LOG_LVL_INFO, -1, "%s: resuming batch %s (%zu file(s)) at request %" PRIu32 ", line %" PRIu64
		 " (%" PRIu64 " records already acknowledged)", from->name, from->uuid, b->n_members, from->acks + 1,
		 from->lineno, from->records);
	if (b->n_members == 1) {
		/* One file: read on from the last acknowledged offset. */
		fd = batch_reopen_member(b, &b->members[0], why, sizeof(why));
		if (fd < 0) {
			return resume_failed(b, fd, why);
		}
		b->fd = fd;
		if (spool_work_rejected_truncate(b->env.wf, from->name, from->rejected_size) < 0 || record_pipeline_read_at(&b->pl, fd, from->name, from->offset, from->lineno) < 0 ||
		    (b->pl.store ? resume_range(b) : record_pipeline_cut(&b->pl, 0)) < 0) {
			batch_fail(b, 0, record_pipeline_read_error(&b->pl, "cannot read the file or its rejected file"), NULL);
			return 0;
		}
		batch_opened(b);
		return 0;
	}
	/* Several files are one request: cut it again, the same files in the same order. */
	if (record_cut_body_begin(&b->pl.body[0]) < 0) {
		batch_fail(b, 0, "out of memory", NULL);
		return 0;
	}
	record_pipeline_note_fields(&b->pl, b->pl.fields[0]);
	for (size_t i = 0; i < b->n_members; i++) {
		struct member *m = &b->members[i];

		fd = batch_reopen_member(b, m, why, sizeof(why));
		if (fd < 0) {
			return resume_failed(b, fd, why);
		}
		b->pl.body[0].member = (uint32_t)i;
		r = spool_work_rejected_truncate(b->env.wf, m->name, m->rejected_size);
		if (r == 0)
			r = record_pipeline_read_at(&b->pl, fd, m->name, 0, 1);
		if (r == 0)
			r = record_cut_fill(&b->pl.body[0], &b->pl.params, b->pl.reader, b->validator, record_reject_on_reject, &m->rej);
		close(fd);
		m->rejected = b->pl.body[0].rejected;
		if (r != CUT_FILL_EOF) {
			batch_fail(b, 0, record_pipeline_read_error(&b->pl, "cannot cut the batch's request again from its files"), NULL);
			return 0;
		}
	}
	record_cut_body_finish(&b->pl.body[0], &b->pl.params, true);
	batch_opened(b);
	return 0;
}

/*
 * Files of .work/ that no live batch names and that are named <id>-@name, whatever the id
 * (SIZE_MAX: cannot tell); the last one's id in *@fid and its entry in @entry.
 */
static size_t orphans_named(struct batch *b, int wfd, const char *name, uint64_t *fid, char *entry)
{
	char want[LAYOUT_NAME_MAX + 1], *end;
	struct dirent *de;
	size_t n = 0;
	uint64_t id;
	/* A description of its own: a dup would share the position of another scan of .work/. */
	int fd = openat(wfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return SIZE_MAX;
	}
	while ((de = readdir(d))) {
		id = strtoull(de->d_name, &end, 10);
		if (end == de->d_name || *end != '-' || state_journal_file_live(b->env.journal, id))
			continue;
		spool_work_work_name(id, name, want);
		if (strcmp(want, de->d_name))
			continue;
		n++;
		*fid = id;
		snprintf(entry, LAYOUT_NAME_MAX + 1, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

/*
 * Damage took the member record of a one-file batch whose own records survive: its file is the
 * one orphan of .work/ named <id>-<the batch's name>. Named again (with the identity it has now),
 * the batch resumes where it stood instead of leaving its batch_uuid open at the server. Two
 * orphans of that name (an older take never journaled): which is the batch's is not known, and
 * neither is named. Before any orphan is handed back, so that the count sees them all.
 */
static void adopt_orphans(struct batch *b, int wfd)
{
	char entry[LAYOUT_NAME_MAX + 1];
	const struct journal_member *m;
	const struct journal_batch *jb;
	struct journal_member jm;
	struct stat st;
	uint64_t fid = 0;

	for (size_t i = 0; i < state_journal_count(b->env.journal); i++) {
		jb = state_journal_at(b->env.journal, i);
		if (strcmp(jb->connection, b->env.name) || jb->n_members != 1 ||
		    state_journal_members(b->env.journal, jb->id, &m) != 0 || orphans_named(b, wfd, jb->name, &fid, entry) != 1 ||
		    fstatat(wfd, entry, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		jm = (struct journal_member){ .batch_id = jb->id, .file_id = fid };
		snprintf(jm.name, sizeof(jm.name), "%s", jb->name);
		spool_work_identity(&st, &jm.ident);
		jm.rejected_size = spool_work_rejected_size(b->env.wf, jb->name);
		if (state_journal_put_member(b->env.journal, &jm) < 0)
			continue;
		/* The put may move the journal's arrays: jb is read again at the next turn. */
		jb = state_journal_at(b->env.journal, i);
		batch_log(b, LOG_LVL_WARNING, -1, "%s: in %s/.work/, its member record lost in the damaged journal: named "
			 "again for batch %s, which goes on where it stood", jb->name, b->env.wf->dir, jb->uuid);
	}
}

/* Files left in .work/ that no live batch of the journal names were never sent: back to the spool. */
int batch_release_orphans(struct batch *b)
{
	int wfd = batch_workdir(b), dfd = spool_work_dir(b->env.wf), fd;
	const struct journal_range *dmg;
	bool damaged = state_journal_damage(b->env.journal, &dmg) > 0;
	struct dirent *de;
	DIR *d;

	if (wfd < 0 || dfd < 0)
		return wfd < 0 ? wfd : dfd;
	if (damaged)
		adopt_orphans(b, wfd);
	if ((fd = dup(wfd)) < 0)
		return -errno;
	if (!(d = fdopendir(fd))) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		char *dash, *end, dst[LAYOUT_NAME_MAX + 1];
		uint64_t id;
		int r;

		if (de->d_name[0] == '.')
			continue;
		id = strtoull(de->d_name, &end, 10);
		dash = end;
		if (dash == de->d_name || *dash != '-')
			continue;
		if (state_journal_file_live(b->env.journal, id))
			continue;
		/* Renamed but never journaled: nothing of it was sent. Hand it back in its place. */
		snprintf(dst, sizeof(dst), "%s", dash + 1);
		r = fileio_move_at(wfd, de->d_name, dfd, dst);
		if (r == -EEXIST) {
			snprintf(dst, sizeof(dst), "%s", de->d_name);
			r = fileio_move_at(wfd, de->d_name, dfd, dst);
		}
		if (r < 0)
			batch_log(b, LOG_LVL_ERROR, -1, "%s: in .work/ before a restart: cannot put it back: %s",
				 dash + 1, strerror(-r));
		else if (damaged)
			batch_log(b, LOG_LVL_WARNING, -1, "%s: in %s/.work/, but no record of the damaged journal names it: back "
				 "in the spool as %s, to go up in a new batch (if a request of it left before, its old batch "
				 "stays open at the server)", dash + 1, b->env.wf->dir, dst);
		else
			batch_log(b, LOG_LVL_INFO, -1, "%s: taken before a restart but never sent: back in the spool as %s",
				 dash + 1, dst);
	}
	closedir(d);
	return 0;
}
