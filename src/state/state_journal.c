/* state_journal: durable per-batch state in <state_dir>/journal, replayed at start to resume batches. */
/*
 * Ordering rules (the daemon follows them exactly; tests crash between every pair):
 *  1. The file is renamed into <spool>/<conn>/.work/ first; a file found there without a live
 *     journal entry was never sent and goes back to the spool at start.
 *  2. A batch's member records (each file's id, name and identity) and then its OPEN record
 *     (batch_uuid, cut parameters) are durable before its first request leaves.
 *  3. A request's acknowledgement (offset, records, requests acknowledged) is durable before
 *     the next request of that batch leaves; a crash in between re-sends the unacknowledged
 *     request with the same batch_uuid and the same records, which the API accepts.
 *  4. COMPLETED is durable before the file is archived or deleted.
 *  5. The archive/delete is recorded (ARCHIVED) once it is done; a crash before that finds a
 *     COMPLETED batch and finishes the move, which is idempotent.
 * Records are framed and checked by state_jrec.c. Replay keeps the last state of each batch;
 * compaction writes only live batches to a temporary file, fsyncs it, renames it over the
 * journal and fsyncs the directory. The journal holds what recovery needs and nothing else: the
 * connections' totals live in <state_dir>/totals (state_totals.c).
 */
#include "state/state_journal.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/state_jrec.h"
#include "util/crashpoint.h"
#include "util/fileio.h"
#include "util/log.h"

#define COMPACT_BYTES (1u << 20)

struct journal {
	int fd;
	int dirfd;
	char *path;
	char *tmp_path;
	uint64_t next_id;
	uint64_t size;          /* durable, well-formed length of the file */
	struct journal_batch *live;
	size_t n_live;
	struct journal_member *members;  /* of live batches, grouped by batch in index order */
	size_t n_members;
	bool readonly;
	bool keep_as_is;        /* damaged and not copied aside: never rewritten this run */
	struct journal_range *damage;   /* stretches replay skipped, in file order */
	size_t n_damage;
	uint64_t *doubt;        /* live batches whose last surviving record precedes damage */
	size_t n_doubt;
	char *damaged_copy;     /* where the damaged journal was kept, or NULL */
	char *pending;          /* records queued for the next sync */
	size_t pending_len;
	size_t pending_cap;
	int sync_error;         /* -errno of the last state_journal_sync that failed, 0 once one succeeds */
};

static int apply_member(struct journal *j, const struct journal_member *m)
{
	size_t i;

	if (m->file_id >= j->next_id)
		j->next_id = m->file_id + 1;
	for (i = 0; i < j->n_members; i++)
		if (j->members[i].batch_id == m->batch_id && j->members[i].index == m->index)
			break;
	if (i == j->n_members) {
		struct journal_member *n = realloc(j->members, (j->n_members + 1) * sizeof(*n));

		if (!n)
			return -ENOMEM;
		j->members = n;
		j->n_members++;
	}
	j->members[i] = *m;
	return 0;
}

static int queue(struct journal *j, const struct jrec_buf *w)
{
	if (j->pending_len + 8 + w->n > j->pending_cap) {
		size_t cap = j->pending_cap ? j->pending_cap * 2 : 16384;
		char *p;

		while (cap < j->pending_len + 8 + w->n)
			cap *= 2;
		p = realloc(j->pending, cap);
		if (!p)
			return -ENOMEM;
		j->pending = p;
		j->pending_cap = cap;
	}
	state_jrec_frame((unsigned char *)j->pending + j->pending_len, w);
	memcpy(j->pending + j->pending_len + 8, w->b, w->n);
	j->pending_len += 8 + w->n;
	return 0;
}

/* ---- in-memory state ---- */

const struct journal_batch *state_journal_find(const struct journal *j, uint64_t id);

static bool is_live(enum batch_state s)
{
	return s == BATCH_OPEN || s == BATCH_COMPLETED;
}

static int apply(struct journal *j, const struct journal_batch *b)
{
	size_t i;

	if (b->id >= j->next_id)
		j->next_id = b->id + 1;
	for (i = 0; i < j->n_live; i++)
		if (j->live[i].id == b->id)
			break;
	if (!is_live(b->state)) {
		size_t k = 0;

		for (size_t m = 0; m < j->n_members; m++)
			if (j->members[m].batch_id != b->id)
				j->members[k++] = j->members[m];
		j->n_members = k;
		if (i < j->n_live)
			memmove(&j->live[i], &j->live[i + 1], (j->n_live - i - 1) * sizeof(*j->live));
		if (i < j->n_live)
			j->n_live--;
		return 0;
	}
	if (i == j->n_live) {
		struct journal_batch *n = realloc(j->live, (j->n_live + 1) * sizeof(*n));

		if (!n)
			return -ENOMEM;
		j->live = n;
		j->n_live++;
		/* ids only grow, so appending keeps id order */
	}
	j->live[i] = *b;
	return 0;
}

int state_journal_compact(struct journal *j, bool force);

/* ---- replay ---- */


/* Where the last surviving record of each live batch lies: what says if later ones may be lost. */
struct last_seen {
	uint64_t id;
	size_t pos;
};

static int note_seen(struct last_seen **seen, size_t *n, const struct journal_batch *b, size_t pos)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if ((*seen)[i].id == b->id)
			break;
	if (!is_live(b->state)) {
		if (i < *n)
			(*seen)[i] = (*seen)[--*n];
		return 0;
	}
	if (i == *n) {
		struct last_seen *s = realloc(*seen, (*n + 1) * sizeof(**seen));

		if (!s)
			return -ENOMEM;
		*seen = s;
		(*n)++;
	}
	(*seen)[i] = (struct last_seen){ .id = b->id, .pos = pos };
	return 0;
}

static int add_damage(struct journal *j, uint64_t start, uint64_t end)
{
	struct journal_range *d = realloc(j->damage, (j->n_damage + 1) * sizeof(*d));

	if (!d)
		return -ENOMEM;
	j->damage = d;
	j->damage[j->n_damage++] = (struct journal_range){ .start = start, .end = end };
	return 0;
}

/*
 * Replay every well-formed record. Bytes that do not frame a record are skipped up to the next
 * record that checks out (a resync: the length bounded, the CRC-32C over the payload right, the
 * payload decoding to its last byte), so damage in the middle loses only the records it hits;
 * damaged stretches are noted in j->damage. Bytes after the last good record are a torn tail:
 * @tail_at receives where it starts (the file's length when there is none).
 */
static int replay(struct journal *j, unsigned char **image, size_t *image_len, size_t *tail_at)
{
	struct stat st;
	unsigned char *data = NULL;
	struct last_seen *seen = NULL;
	size_t pos = 0, n, n_seen = 0;
	ssize_t got;
	int r = 0;

	if (fstat(j->fd, &st) < 0)
		return -errno;
	n = (size_t)st.st_size;
	if (n) {
		data = malloc(n);
		if (!data)
			return -ENOMEM;
		for (size_t off = 0; off < n; off += (size_t)got) {
			got = pread(j->fd, data + off, n - off, (off_t)off);
			if (got <= 0) {
				r = got < 0 ? -errno : -EIO;
				goto out;
			}
		}
	}
	while (pos < n) {
		struct jrec rec;
		uint32_t len;

		if (!state_jrec_at(data, n, pos, false, &rec, &len)) {
			size_t next = pos + 1;

			while (next < n && !state_jrec_at(data, n, next, true, &rec, &len))
				next++;
			if (next >= n)
				break;          /* nothing checks out after pos: a torn tail */
			if ((r = add_damage(j, pos, next)) < 0)
				goto out;
			pos = next;
		}
		if (rec.type == JREC_META) {
			if (rec.u.next_id > j->next_id)
				j->next_id = rec.u.next_id;
		} else if (rec.type == JREC_MEMBER) {
			r = apply_member(j, &rec.u.m);
		} else {
			if ((r = apply(j, &rec.u.b)) == 0)
				r = note_seen(&seen, &n_seen, &rec.u.b, pos);
		}
		if (r < 0)
			goto out;
		pos += 8 + len;
	}
	*tail_at = pos;
	/* A live batch whose last record precedes some damage may have had later ones in it. */
	for (size_t i = 0; j->n_damage && i < n_seen; i++) {
		if (seen[i].pos < j->damage[j->n_damage - 1].start) {
			uint64_t *d = realloc(j->doubt, (j->n_doubt + 1) * sizeof(*d));

			if (!d) {
				r = -ENOMEM;
				goto out;
			}
			j->doubt = d;
			j->doubt[j->n_doubt++] = seen[i].id;
		}
	}
	{
		/* Members whose batch never became durable belong to nothing: forget them. */
		size_t k = 0;

		for (size_t m = 0; m < j->n_members; m++)
			if (state_journal_find(j, j->members[m].batch_id))
				j->members[k++] = j->members[m];
		j->n_members = k;
	}
	*image = data;
	*image_len = n;
	data = NULL;
out:
	free(seen);
	free(data);
	return r;
}

/*
 * Keep the damaged journal as <dir>/journal.damaged-<UTC time>[.N], written and fsynced in
 * full before anything rewrites the journal; never overwrites a file.
 */
static int keep_damaged_copy(struct journal *j, const unsigned char *data, size_t n)
{
	char when[32], *path = NULL;
	time_t now = time(NULL);
	struct tm tm;
	int fd = -1, r = 0;

	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
	for (int k = 0; k < 100; k++) {
		free(path);
		if ((k ? asprintf(&path, "%s.damaged-%s.%d", j->path, when, k)
		       : asprintf(&path, "%s.damaged-%s", j->path, when)) < 0) {
			path = NULL;
			r = -ENOMEM;
			goto out;
		}
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = n ? fileio_write_all(fd, data, n) : 0) < 0)
		goto out;
	if (fsync(fd) < 0 || fsync(j->dirfd) < 0) {
		r = -errno;
		goto out;
	}
	j->damaged_copy = path;
	path = NULL;
out:
	if (fd >= 0)
		close(fd);
	if (r < 0 && path)
		(void)unlink(path);
	free(path);
	return r;
}

static const char *state_name(enum batch_state s)
{
	switch (s) {
	case BATCH_OPEN: return "open";
	case BATCH_COMPLETED: return "completed (not yet archived)";
	case BATCH_ARCHIVED: return "archived";
	case BATCH_FAILED: return "failed";
	case BATCH_RELEASED: return "released";
	}
	return "?";
}

/* Say exactly what the damage cost: the byte ranges skipped, the batches whose state may be stale. */
static void report_damage(const struct journal *j, size_t n, size_t tail_at)
{
	char ranges[512];
	size_t len = 0, lost = n - tail_at;

	ranges[0] = '\0';
	for (size_t i = 0; i < j->n_damage; i++) {
		lost += j->damage[i].end - j->damage[i].start;
		if (len < sizeof(ranges) - 64)
			len += (size_t)snprintf(ranges + len, sizeof(ranges) - len, "%s%llu at offset %llu", i ? ", " : "",
						(unsigned long long)(j->damage[i].end - j->damage[i].start),
						(unsigned long long)j->damage[i].start);
		else if (i == j->n_damage - 1)
			len += (size_t)snprintf(ranges + len, sizeof(ranges) - len, ", ...");
	}
	if (tail_at < n)
		snprintf(ranges + len, sizeof(ranges) - len, "; a torn tail of %llu at offset %llu",
			 (unsigned long long)(n - tail_at), (unsigned long long)tail_at);
	log_error("journal %s is damaged in the middle: bytes skipped: %s (%llu of %llu bytes); every record "
		  "after the damage was kept", j->path, ranges, (unsigned long long)lost, (unsigned long long)n);
	for (size_t i = 0; i < j->n_doubt; i++) {
		const struct journal_batch *b = state_journal_find(j, j->doubt[i]);

		if (b)
			log_warning("journal: batch %s of %s (connection %s): its later records may have been in the damaged "
				    "bytes; its last known state is used: %s, %" PRIu32 " request(s) acknowledged, %" PRIu64
				    " records, next line %" PRIu64, b->uuid, b->name, b->connection, state_name(b->state),
				    b->acks, b->records, b->lineno);
	}
	log_warning("journal: a batch all of whose records were in the damaged bytes is unknown: a file of it left "
		    "in .work/ goes back to the spool (named below)");
}

int state_journal_open(struct journal **out, const char *dir, uint64_t *torn_bytes)
{
	struct journal *j = calloc(1, sizeof(*j));
	unsigned char *image = NULL;
	size_t n = 0, tail_at = 0;
	int r;

	if (!j)
		return -ENOMEM;
	j->fd = j->dirfd = -1;
	j->next_id = 1;
	if (asprintf(&j->path, "%s/journal", dir) < 0 || asprintf(&j->tmp_path, "%s/journal.tmp", dir) < 0) {
		j->path = j->tmp_path = NULL;
		r = -ENOMEM;
		goto fail;
	}
	j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	j->fd = open(j->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (j->fd < 0) {
		r = -errno;
		goto fail;
	}
	/* A leftover temporary is a compaction that died before its rename: the journal stands. */
	(void)unlink(j->tmp_path);
	if ((r = replay(j, &image, &n, &tail_at)) < 0)
		goto fail;
	j->size = n;
	if (j->n_damage) {
		/* The damaged file is evidence: copied aside before anything rewrites it, or left alone. */
		report_damage(j, n, tail_at);
		if ((r = keep_damaged_copy(j, image, n)) < 0) {
			log_error("journal %s: cannot keep a copy of the damaged journal beside it: %s; the journal is "
				  "left as it is (appended to, never rewritten) until a copy can be made", j->path,
				  strerror(-r));
			j->keep_as_is = true;
		} else {
			log_error("journal %s: the damaged journal is kept as %s", j->path, j->damaged_copy);
			/* Rewritten now, so the next start neither finds the damage again nor copies it twice. */
			if ((r = state_journal_compact(j, true)) < 0) {
				log_error("journal %s: cannot rewrite the damaged journal: %s (its good records are used as "
					  "read)", j->path, strerror(-r));
				j->keep_as_is = true;
			}
		}
	} else if (tail_at < n) {
		/* A record cut short by a crash or a power cut: normal, its request was never made durable. */
		log_info("journal %s: cut %llu bytes of torn or corrupt tail (a write a crash or power cut left "
			 "unfinished)", j->path, (unsigned long long)(n - tail_at));
		if (ftruncate(j->fd, (off_t)tail_at) < 0 || fdatasync(j->fd) < 0) {
			r = -errno;
			goto fail;
		}
		j->size = tail_at;
	}
	if (torn_bytes)
		*torn_bytes = n - tail_at;
	free(image);
	*out = j;
	return 0;
fail:
	free(image);
	state_journal_free(j);
	return r;
}

int state_journal_open_readonly(struct journal **out, const char *dir)
{
	struct journal *j = calloc(1, sizeof(*j));
	unsigned char *image = NULL;
	size_t n, tail_at;
	int r;

	if (!j)
		return -ENOMEM;
	j->readonly = true;
	j->dirfd = -1;
	j->next_id = 1;
	if (asprintf(&j->path, "%s/journal", dir) < 0) {
		j->path = NULL;
		r = -ENOMEM;
		goto fail;
	}
	j->fd = open(j->path, O_RDONLY | O_CLOEXEC);
	if (j->fd < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = replay(j, &image, &n, &tail_at)) < 0)
		goto fail;
	free(image);
	*out = j;
	return 0;
fail:
	state_journal_free(j);
	return r;
}

void state_journal_free(struct journal *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	free(j->path);
	free(j->tmp_path);
	free(j->live);
	free(j->members);
	free(j->pending);
	free(j->damage);
	free(j->doubt);
	free(j->damaged_copy);
	free(j);
}

size_t state_journal_count(const struct journal *j) { return j->n_live; }
const struct journal_batch *state_journal_at(const struct journal *j, size_t i) { return &j->live[i]; }

const struct journal_batch *state_journal_find(const struct journal *j, uint64_t id)
{
	for (size_t i = 0; i < j->n_live; i++)
		if (j->live[i].id == id)
			return &j->live[i];
	return NULL;
}

uint64_t state_journal_new_id(struct journal *j) { return j->next_id++; }

size_t state_journal_damage(const struct journal *j, const struct journal_range **out)
{
	*out = j->damage;
	return j->n_damage;
}

bool state_journal_in_doubt(const struct journal *j, uint64_t batch_id)
{
	for (size_t i = 0; i < j->n_doubt; i++)
		if (j->doubt[i] == batch_id)
			return true;
	return false;
}
bool state_journal_dirty(const struct journal *j) { return j->pending_len > 0; }

int state_journal_put_member(struct journal *j, const struct journal_member *m)
{
	struct jrec_buf w;
	int r;

	state_jrec_member(&w, m);
	if ((r = queue(j, &w)) < 0)
		return r;
	return apply_member(j, m);
}

size_t state_journal_members(const struct journal *j, uint64_t batch_id, const struct journal_member **out)
{
	size_t first = j->n_members, n = 0;

	for (size_t i = 0; i < j->n_members; i++) {
		if (j->members[i].batch_id != batch_id)
			continue;
		if (first == j->n_members)
			first = i;
		n++;
	}
	*out = n ? &j->members[first] : NULL;
	return n;
}

bool state_journal_file_live(const struct journal *j, uint64_t file_id)
{
	for (size_t i = 0; i < j->n_members; i++)
		if (j->members[i].file_id == file_id)
			return true;
	return false;
}

int state_journal_put(struct journal *j, const struct journal_batch *b)
{
	struct jrec_buf w;
	struct journal_batch copy = *b;
	int r;

	if (!b->n_members)
		return -EINVAL;         /* replay would not take it: every batch has a file */
	copy.updated = (int64_t)time(NULL);
	state_jrec_batch(&w, &copy);
	if ((r = queue(j, &w)) < 0)
		return r;
	return apply(j, &copy);
}

int state_journal_sync(struct journal *j)
{
	int r;

	if (!j->pending_len)
		return 0;
	crashpoint("journal-before-write");
	r = fileio_write_all(j->fd, j->pending, j->pending_len);
	if (r == 0) {
		crashpoint("journal-before-fsync");
		if (fdatasync(j->fd) < 0)
			r = -errno;
	}
	if (r < 0) {
		/* Cut any partial write so the retry appends to a well-formed file (best effort: the
		 * retry's own write fails the same way if this does). */
		if (ftruncate(j->fd, (off_t)j->size) < 0)
			log_debug("journal: cannot cut a partial write: %s", strerror(errno));
		j->sync_error = r;
		return r;
	}
	j->size += j->pending_len;
	j->pending_len = 0;
	j->sync_error = 0;
	crashpoint("journal-after-fsync");
	return 0;
}

bool state_journal_durable(const struct journal *j)
{
	return j->sync_error == 0;
}

int state_journal_compact(struct journal *j, bool force)
{
	struct jrec_buf w;
	char *saved;
	size_t saved_len, saved_cap;
	int fd = -1, r;

	if (j->keep_as_is || (!force && j->size < COMPACT_BYTES))
		return 0;
	if ((r = state_journal_sync(j)) < 0)
		return r;
	/* Build the compacted image in the pending buffer, then swap it out. */
	saved = j->pending;
	saved_len = j->pending_len;
	saved_cap = j->pending_cap;
	j->pending = NULL;
	j->pending_len = j->pending_cap = 0;
	state_jrec_meta(&w, j->next_id);
	r = queue(j, &w);
	/* Members first: a batch's OPEN state always follows its members, as when written live. */
	for (size_t i = 0; r == 0 && i < j->n_members; i++) {
		state_jrec_member(&w, &j->members[i]);
		r = queue(j, &w);
	}
	for (size_t i = 0; r == 0 && i < j->n_live; i++) {
		state_jrec_batch(&w, &j->live[i]);
		r = queue(j, &w);
	}
	if (r < 0)
		goto out;
	/* O_APPEND like the journal it replaces: after a cut-back partial write, appends land at the cut. */
	fd = open(j->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = fileio_write_all(fd, j->pending, j->pending_len)) < 0)
		goto out;
	crashpoint("compact-before-fsync");
	if (fsync(fd) < 0) {
		r = -errno;
		goto out;
	}
	crashpoint("compact-before-rename");
	if (rename(j->tmp_path, j->path) < 0) {
		r = -errno;
		goto out;
	}
	/* Renamed: from now on the new file is the journal, whatever the directory fsync says. */
	close(j->fd);
	j->fd = fd;
	fd = -1;
	j->size = j->pending_len;
	crashpoint("compact-after-rename");
	if (fsync(j->dirfd) < 0)
		r = -errno;
out:
	if (fd >= 0) {
		close(fd);
		(void)unlink(j->tmp_path);
	}
	free(j->pending);
	j->pending = saved;
	j->pending_len = saved_len;
	j->pending_cap = saved_cap;
	return r;
}
