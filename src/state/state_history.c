/* state_history: each connection's run history: one entry per file (or gathered group) that ended, kept in <state_dir>/history/. */
/*
 * Why an append-only file of checked lines and not the totals' atomic replace: an entry is
 * written at each batch's end, and rewriting a thousand entries for each would cost more than
 * the batch of a small file. Appending one line and fdatasyncing it costs one small write; the
 * CRC on each line is what lets a reader trust a line without trusting the file: a write cut
 * short (kill -9 inside write(2), a power cut, a full disk) leaves a line that has no line end
 * or does not check out, and that line alone is left out. The bound is kept by replacing the
 * file atomically with its last entries once it holds twice as many (fileio_replace_at), so a
 * crash during that leaves the old file or the new one.
 */
#include "state/state_history.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "util/crashpoint.h"
#include "util/crc32c.h"
#include "util/fileio.h"
#include "util/jsonstr.h"
#include "util/layout.h"
#include "util/log.h"

/* A line longer than this is not one the daemon wrote (names and reason are bounded far below it). */
#define HISTORY_LINE_MAX (64u * 1024)
/* Ends recorded lately, to record an end replayed after a crash only once: more than a connection has live batches. */
#define HISTORY_RECENT 16

struct recent_end {
	char uuid[37];
	enum history_outcome outcome;
};

struct history {
	char *connection;
	char *dir;                      /* <state_dir>/history */
	char file[NAME_MAX + 1];        /* <connection>.history */
	int dirfd;                      /* -1: not open yet (state_history_put tries again) */
	int fd;                         /* the append fd; -1: not open */
	size_t entries;                 /* complete, checked entries in the file */
	struct recent_end recent[HISTORY_RECENT];
	size_t n_recent;
	bool error_logged;
};

static const char *const outcome_names[] = {
	[HISTORY_ARCHIVED] = "archived",
	[HISTORY_FAILED] = "failed",
	[HISTORY_HANDED_BACK] = "handed back",
};

const char *state_history_outcome_name(enum history_outcome o)
{
	return (unsigned)o < sizeof(outcome_names) / sizeof(outcome_names[0]) ? outcome_names[o] : "unknown";
}

bool state_history_entry_add_name(struct history_entry *e, const char *name)
{
	size_t used = 0, len = strlen(name);

	e->files++;
	/* Only the first names are kept: a later one is not kept even if it is shorter. */
	if (e->names_kept != e->files - 1)
		return false;
	for (uint32_t i = 0; i < e->names_kept; i++)
		used += strlen(e->names + used) + 1;
	if (used + len + 1 > sizeof(e->names))
		return false;
	memcpy(e->names + used, name, len + 1);
	e->names_kept++;
	return true;
}

const char *state_history_entry_name(const struct history_entry *e, uint32_t i)
{
	const char *s = e->names;

	while (i--)
		s += strlen(s) + 1;
	return s;
}

/* ---- an entry as JSON ---- */

static int append_str(char **buf, size_t *len, size_t *cap, const char *key, const char *s)
{
	int r = jsonstr_raw(buf, len, cap, key, strlen(key));

	return r < 0 ? r : jsonstr_append(buf, len, cap, s, strlen(s));
}

/* The entry's one JSON form: the file's lines and `history --json` are the same text. */
static int entry_json(const struct history_entry *e, char **buf, size_t *len, size_t *cap)
{
	char nums[512];
	int r;

	if ((r = append_str(buf, len, cap, "{\"connection\":", e->connection)) < 0 ||
	    (r = append_str(buf, len, cap, ",\"outcome\":", state_history_outcome_name(e->outcome))) < 0 ||
	    (r = append_str(buf, len, cap, ",\"reason\":", e->reason)) < 0 ||
	    (r = append_str(buf, len, cap, ",\"batch_uuid\":", e->batch_uuid)) < 0)
		return r;
	if (e->http_status)
		snprintf(nums, sizeof(nums), ",\"http_status\":%ld,\"files\":%" PRIu32 ",\"names\":[", e->http_status,
			 e->files);
	else
		snprintf(nums, sizeof(nums), ",\"http_status\":null,\"files\":%" PRIu32 ",\"names\":[", e->files);
	if ((r = jsonstr_raw(buf, len, cap, nums, strlen(nums))) < 0)
		return r;
	for (uint32_t i = 0; i < e->names_kept; i++)
		if ((r = append_str(buf, len, cap, i ? "," : "", state_history_entry_name(e, i))) < 0)
			return r;
	snprintf(nums, sizeof(nums), "],\"records_sent\":%" PRIu64 ",\"records_unchanged\":%" PRIu64
		 ",\"records_rejected\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"retries\":%" PRIu64 ",\"bytes_read\":%"
		 PRIu64 ",\"started\":%.3f,\"finished\":%.3f}", e->records_sent, e->records_unchanged,
		 e->records_rejected, e->requests, e->retries, e->bytes_read, e->started, e->finished);
	return jsonstr_raw(buf, len, cap, nums, strlen(nums));
}

int state_history_print_json(const struct history_entry *e, FILE *out)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r = entry_json(e, &buf, &len, &cap);

	if (r == 0 && fwrite(buf, 1, len, out) != len)
		r = -EIO;
	free(buf);
	return r;
}

static yajl_val field_of(yajl_val o, const char *key)
{
	const char *path[] = { key, NULL };

	return yajl_tree_get(o, path, yajl_t_any);
}

/*
 * The string @key into @dst; with @cut, one too long is cut at a character's start: bytes
 * that were not UTF-8 come back as \u00XX, two bytes each, so a reason may read back longer.
 */
static bool get_text(yajl_val o, const char *key, char *dst, size_t cap, bool cut)
{
	yajl_val v = field_of(o, key);
	size_t len;

	if (!v || !YAJL_IS_STRING(v))
		return false;
	len = strlen(v->u.string);
	if (len >= cap) {
		if (!cut)
			return false;
		for (len = cap - 1; len && ((unsigned char)v->u.string[len] & 0xc0) == 0x80; len--)
			;
	}
	memcpy(dst, v->u.string, len);
	dst[len] = '\0';
	return true;
}

static bool get_count(yajl_val o, const char *key, uint64_t *out)
{
	yajl_val v = field_of(o, key);

	if (!v || !YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0)
		return false;
	*out = (uint64_t)YAJL_GET_INTEGER(v);
	return true;
}

static bool get_time(yajl_val o, const char *key, double *out)
{
	yajl_val v = field_of(o, key);

	if (!v || !YAJL_IS_NUMBER(v))
		return false;
	*out = YAJL_IS_DOUBLE(v) ? YAJL_GET_DOUBLE(v) : (double)YAJL_GET_INTEGER(v);
	return *out >= 0;
}

/* One entry from its JSON text: -EBADMSG when it is not an entry this version wrote. */
static int entry_parse(const char *json, struct history_entry *e)
{
	yajl_val doc = yajl_tree_parse(json, NULL, 0), v, names;
	char outcome[16];
	uint64_t files = 0, status = 0;
	int r = -EBADMSG;

	memset(e, 0, sizeof(*e));
	if (!doc || !YAJL_IS_OBJECT(doc))
		goto out;
	if (!get_text(doc, "connection", e->connection, sizeof(e->connection), false) ||
	    !get_text(doc, "outcome", outcome, sizeof(outcome), false) ||
	    !get_text(doc, "reason", e->reason, sizeof(e->reason), true) ||
	    !get_text(doc, "batch_uuid", e->batch_uuid, sizeof(e->batch_uuid), false) || !get_count(doc, "files", &files) ||
	    files > UINT32_MAX || !get_count(doc, "records_sent", &e->records_sent) ||
	    !get_count(doc, "records_unchanged", &e->records_unchanged) ||
	    !get_count(doc, "records_rejected", &e->records_rejected) || !get_count(doc, "requests", &e->requests) ||
	    !get_count(doc, "retries", &e->retries) || !get_count(doc, "bytes_read", &e->bytes_read) ||
	    !get_time(doc, "started", &e->started) || !get_time(doc, "finished", &e->finished))
		goto out;
	e->outcome = (enum history_outcome)-1;
	for (size_t i = 0; i < sizeof(outcome_names) / sizeof(outcome_names[0]); i++)
		if (!strcmp(outcome, outcome_names[i]))
			e->outcome = (enum history_outcome)i;
	if ((unsigned)e->outcome >= sizeof(outcome_names) / sizeof(outcome_names[0]))
		goto out;
	v = field_of(doc, "http_status");
	if (!v || !(YAJL_IS_NULL(v) || (get_count(doc, "http_status", &status) && status < 1000)))
		goto out;
	e->http_status = (long)status;
	names = field_of(doc, "names");
	if (!names || !YAJL_IS_ARRAY(names) || YAJL_GET_ARRAY(names)->len > files)
		goto out;
	for (size_t i = 0; i < YAJL_GET_ARRAY(names)->len; i++) {
		v = YAJL_GET_ARRAY(names)->values[i];
		if (!YAJL_IS_STRING(v))
			goto out;
		/* Read back longer than written (bytes that were not UTF-8): the rest are counted, not named. */
		(void)state_history_entry_add_name(e, v->u.string);
	}
	e->files = (uint32_t)files;
	r = 0;
out:
	yajl_tree_free(doc);
	return r;
}

/* ---- lines ---- */

/* "<crc> <json>\n" of @e into *buf (malloc'd). */
static int line_make(const struct history_entry *e, char **buf, size_t *len)
{
	char *json = NULL, head[10];
	size_t jlen = 0, cap = 0;
	int r = jsonstr_raw(&json, &jlen, &cap, "         ", 9);

	if (r == 0)
		r = entry_json(e, &json, &jlen, &cap);
	if (r == 0)
		r = jsonstr_raw(&json, &jlen, &cap, "\n", 1);
	if (r < 0) {
		free(json);
		return r;
	}
	snprintf(head, sizeof(head), "%08" PRIx32 " ", crc32c(0, json + 9, jlen - 10));
	memcpy(json, head, 9);
	*buf = json;
	*len = jlen;
	return 0;
}

/* The JSON of a complete line @line (@len bytes, its '\n' included) when its CRC checks out, else NULL. */
static char *line_check(char *line, size_t len)
{
	char *end;
	unsigned long crc;

	if (len < 11 || line[len - 1] != '\n' || line[8] != ' ')
		return NULL;
	line[len - 1] = '\0';
	errno = 0;
	crc = strtoul(line, &end, 16);
	if (errno || end != line + 8 || crc32c(0, line + 9, len - 10) != crc)
		return NULL;
	return line + 9;
}

/* The last @max (0: all) lines that check out, oldest first, as a ring of malloc'd strings. */
struct lines {
	char **v;
	size_t cap;             /* @max, or grown as needed when 0 */
	size_t n;               /* held (<= cap when bounded) */
	size_t first;           /* index of the oldest held */
	size_t total;           /* lines that checked out */
	size_t damaged;         /* complete lines that did not */
	off_t good_end;         /* just past the last complete line: what is after it is a torn tail */
	bool bounded;
};

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[(l->first + i) % l->cap]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static const char *lines_at(const struct lines *l, size_t i)
{
	return l->v[(l->first + i) % l->cap];
}

static int lines_push(struct lines *l, const char *json)
{
	char *s = strdup(json);

	if (!s)
		return -ENOMEM;
	if (l->bounded && l->n == l->cap) {
		free(l->v[l->first]);
		l->v[l->first] = s;
		l->first = (l->first + 1) % l->cap;
		return 0;
	}
	if (!l->bounded && l->n == l->cap) {
		char **v = reallocarray(l->v, l->cap ? l->cap * 2 : 64, sizeof(*v));

		if (!v) {
			free(s);
			return -ENOMEM;
		}
		l->v = v;
		l->cap = l->cap ? l->cap * 2 : 64;
	}
	l->v[(l->first + l->n++) % l->cap] = s;
	return 0;
}

/* Read @fd from its start into @l, keeping the last @max lines that check out (0: all). */
static int lines_read(int fd, size_t max, struct lines *l)
{
	FILE *f = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	off_t at = 0;
	int dfd = dup(fd), r = 0;

	memset(l, 0, sizeof(*l));
	if (max) {
		l->bounded = true;
		l->cap = max;
		if (!(l->v = calloc(max, sizeof(*l->v))))
			r = -ENOMEM;
	}
	if (r == 0 && (dfd < 0 || !(f = fdopen(dfd, "r"))))
		r = -errno;
	if (f)
		dfd = -1;
	while (r == 0 && (len = getline(&line, &cap, f)) > 0) {
		char *json;

		at += len;
		if (line[len - 1] != '\n')
			break;  /* a write cut short, or one under way: never read, never counted */
		l->good_end = at;
		if ((size_t)len > HISTORY_LINE_MAX || !(json = line_check(line, (size_t)len))) {
			l->damaged++;
			continue;
		}
		l->total++;
		r = lines_push(l, json);
	}
	if (r == 0 && f && ferror(f))
		r = -EIO;
	free(line);
	if (f)
		fclose(f);
	if (dfd >= 0)
		close(dfd);
	if (r < 0)
		lines_free(l);
	return r;
}

/* ---- the daemon's side ---- */

/* The file's checked lines (the append fd cannot read): opened again, never through a link. */
static int read_own(const struct history *h, size_t max, struct lines *l)
{
	int fd = openat(h->dirfd, h->file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = lines_read(fd, max, l);
	close(fd);
	return r;
}

static void note_recent(struct history *h, const struct history_entry *e)
{
	struct recent_end *slot;

	if (h->n_recent == HISTORY_RECENT)
		memmove(h->recent, h->recent + 1, --h->n_recent * sizeof(*h->recent));
	slot = &h->recent[h->n_recent++];
	memcpy(slot->uuid, e->batch_uuid, sizeof(slot->uuid));
	slot->outcome = e->outcome;
}

static bool recorded(const struct history *h, const struct history_entry *e)
{
	for (size_t i = 0; i < h->n_recent; i++)
		if (h->recent[i].outcome == e->outcome && !strcmp(h->recent[i].uuid, e->batch_uuid))
			return true;
	return false;
}

static int fail_logged(struct history *h, int r, const char *what)
{
	if (!h->error_logged)
		log_warning("%s: cannot %s the run history %s/%s: %s (tried again at the next file's end)",
			    h->connection, what, h->dir, h->file, strerror(-r));
	h->error_logged = true;
	return r;
}

/* Open the directory and the file, read what it holds (count, last ends) and cut a torn tail. */
static int load(struct history *h)
{
	struct lines l;
	struct stat st;
	bool replaced = false;
	int r;

	if (h->fd >= 0)
		return 0;
	if (h->dirfd < 0) {
		if (mkdir(h->dir, 0750) < 0 && errno != EEXIST)
			return -errno;
		if ((h->dirfd = fileio_open_dir(h->dir)) < 0)
			return h->dirfd;
	}
	if ((h->fd = fileio_open_append(h->dirfd, h->file, 0640, &replaced)) < 0)
		return h->fd;
	if (replaced)
		log_warning("%s: %s/%s was not a file of the daemon's own: removed, the run history starts again",
			    h->connection, h->dir, h->file);
	if ((r = read_own(h, HISTORY_RECENT, &l)) < 0 || fstat(h->fd, &st) < 0) {
		r = r < 0 ? r : -errno;
		goto fail;
	}
	h->entries = l.total;
	h->n_recent = 0;
	for (size_t i = 0; i < l.n; i++) {
		struct history_entry e;

		if (entry_parse(lines_at(&l, i), &e) == 0)
			note_recent(h, &e);
	}
	if (st.st_size > l.good_end) {
		/* Appending after a torn line would glue the next entry to it: cut it, as the journal does. */
		log_info("%s: the run history %s/%s ends in an entry cut short (%lld bytes): cut off", h->connection,
			 h->dir, h->file, (long long)(st.st_size - l.good_end));
		if (ftruncate(h->fd, l.good_end) < 0) {
			r = -errno;
			lines_free(&l);
			goto fail;
		}
	}
	if (l.damaged)
		log_warning("%s: the run history %s/%s holds %zu entr%s that do%s not check out: left out", h->connection,
			    h->dir, h->file, l.damaged, l.damaged == 1 ? "y" : "ies", l.damaged == 1 ? "es" : "");
	lines_free(&l);
	return 0;
fail:
	close(h->fd);
	h->fd = -1;
	return r;
}

int state_history_open(struct history **out, const char *state_dir, const char *connection)
{
	struct history *h = calloc(1, sizeof(*h));
	char dir[PATH_MAX], path[PATH_MAX];
	int r;

	if (!h)
		return -ENOMEM;
	h->dirfd = h->fd = -1;
	if ((r = layout_path(dir, sizeof(dir), LAYOUT_HISTORY_ALL, NULL, state_dir, NULL)) < 0 ||
	    (r = layout_path(path, sizeof(path), LAYOUT_HISTORY, NULL, state_dir, connection)) < 0 ||
	    strlen(path) - strlen(dir) - 1 > NAME_MAX) {
		state_history_free(h);
		return r < 0 ? r : -ENAMETOOLONG;
	}
	snprintf(h->file, sizeof(h->file), "%s", path + strlen(dir) + 1);
	if (!(h->dir = strdup(dir)) || !(h->connection = strdup(connection))) {
		state_history_free(h);
		return -ENOMEM;
	}
	if ((r = load(h)) < 0)
		(void)fail_logged(h, r, "open");
	*out = h;
	return 0;
}

void state_history_free(struct history *h)
{
	if (!h)
		return;
	if (h->fd >= 0)
		close(h->fd);
	if (h->dirfd >= 0)
		close(h->dirfd);
	free(h->dir);
	free(h->connection);
	free(h);
}

/* The file holds twice @keep entries: replace it, atomically, by its last @keep. */
static int compact(struct history *h, unsigned keep)
{
	struct lines l;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r = read_own(h, keep, &l), fd;
	bool replaced;

	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		const char *json = lines_at(&l, i);
		char head[10];

		snprintf(head, sizeof(head), "%08" PRIx32 " ", crc32c(0, json, strlen(json)));
		if ((r = jsonstr_raw(&buf, &len, &cap, head, 9)) == 0 && (r = jsonstr_raw(&buf, &len, &cap, json, strlen(json))) == 0)
			r = jsonstr_raw(&buf, &len, &cap, "\n", 1);
	}
	if (r == 0 && (r = fileio_replace_at(h->dirfd, h->file, buf, len, 0640, true)) == 0) {
		/* The old fd appends to the file the rename just unlinked. */
		if ((fd = fileio_open_append(h->dirfd, h->file, 0640, &replaced)) < 0) {
			r = fd;
		} else {
			close(h->fd);
			h->fd = fd;
			h->entries = l.n;
		}
	}
	free(buf);
	lines_free(&l);
	return r;
}

int state_history_put(struct history *h, const struct history_entry *e, unsigned keep)
{
	char *line = NULL;
	size_t len;
	struct stat st;
	int r;

	if (recorded(h, e))
		return 1;
	if ((r = load(h)) < 0)
		return fail_logged(h, r, "open");
	if ((r = line_make(e, &line, &len)) < 0)
		return fail_logged(h, r, "write");
	if (fstat(h->fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if ((r = fileio_write_all(h->fd, line, len)) < 0) {
		/* A part written would glue the next entry to it: take it back. */
		if (ftruncate(h->fd, st.st_size) < 0)
			log_warning("%s: cannot take back a run history entry cut short in %s/%s: %s", h->connection,
				    h->dir, h->file, strerror(errno));
		goto out;
	}
	/* The record of the run, not the journal: one small sync, so a power cut loses this entry at most. */
	if (fdatasync(h->fd) < 0) {
		r = -errno;
		goto out;
	}
	note_recent(h, e);
	h->entries++;
	crashpoint("after-history");
	if (keep && h->entries >= 2 * (size_t)keep && (r = compact(h, keep)) < 0) {
		(void)fail_logged(h, r, "shorten");
		r = 0;  /* the entry is written; the next end shortens it */
	}
out:
	free(line);
	if (r < 0)
		return fail_logged(h, r, "write");
	if (h->error_logged)
		log_info("%s: the run history %s/%s is written again", h->connection, h->dir, h->file);
	h->error_logged = false;
	return 0;
}

/* ---- reading ---- */

int state_history_read(const char *state_dir, const char *connection, size_t max, struct history_entry **out,
		 size_t *n, size_t *damaged)
{
	char path[PATH_MAX];
	struct history_entry *v = NULL;
	struct lines l = { 0 };
	size_t bad = 0;
	int fd, r;

	*out = NULL;
	*n = 0;
	if ((r = layout_path(path, sizeof(path), LAYOUT_HISTORY, NULL, state_dir, connection)) < 0)
		return r;
	/* Never through a link: the directory is the daemon's, but a reader may be root. */
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0)
		return -errno;
	r = lines_read(fd, max, &l);
	close(fd);
	if (r < 0)
		return r;
	bad = l.damaged;
	if (l.n && !(v = calloc(l.n, sizeof(*v)))) {
		lines_free(&l);
		return -ENOMEM;
	}
	for (size_t i = 0; i < l.n; i++) {
		if (entry_parse(lines_at(&l, i), &v[*n]) == 0)
			(*n)++;
		else
			bad++;
	}
	lines_free(&l);
	if (!*n) {
		free(v);
		v = NULL;
	}
	*out = v;
	if (damaged)
		*damaged = bad;
	return 0;
}

static void add(char *out, size_t len, size_t *at, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void add(char *out, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*at >= len)
		return;
	va_start(ap, fmt);
	k = vsnprintf(out + *at, len - *at, fmt, ap);
	va_end(ap);
	*at = k < 0 ? len : *at + (size_t)k;
}

static void utc(char *buf, size_t len, double t)
{
	struct tm tm;

	gmtime_r(&(time_t){ (time_t)t }, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

void state_history_format_text(const struct history_entry *e, char *out, size_t len)
{
	/* Exporters name the files: escaped as the log and `status` show them. */
	char shown[sizeof(e->reason) * 4 + 8], when[40];
	size_t at = 0;

	utc(when, sizeof(when), e->finished);
	log_defang(shown, sizeof(shown), e->connection);
	add(out, len, &at, "%s %s %s ", when, shown, state_history_outcome_name(e->outcome));
	if (e->files != 1)
		add(out, len, &at, "%" PRIu32 " files (", e->files);
	for (uint32_t i = 0; i < e->names_kept; i++) {
		log_defang(shown, sizeof(shown), state_history_entry_name(e, i));
		add(out, len, &at, "%s%s", i ? ", " : "", shown);
	}
	if (e->files > e->names_kept)
		add(out, len, &at, "%s%" PRIu32 " more", e->names_kept ? ", " : "", e->files - e->names_kept);
	if (e->files != 1)
		add(out, len, &at, ")");
	add(out, len, &at, ": %" PRIu64 " sent, %" PRIu64 " unchanged, %" PRIu64 " rejected; %" PRIu64 " request%s, %"
	    PRIu64 " retr%s; %" PRIu64 " bytes read; %.2f s; batch %s", e->records_sent, e->records_unchanged,
	    e->records_rejected, e->requests, e->requests == 1 ? "" : "s", e->retries, e->retries == 1 ? "y" : "ies",
	    e->bytes_read, e->finished > e->started ? e->finished - e->started : 0.0, e->batch_uuid);
	if (e->http_status)
		add(out, len, &at, "; HTTP %ld", e->http_status);
	if (e->reason[0]) {
		log_defang(shown, sizeof(shown), e->reason);
		add(out, len, &at, "; %s", shown);
	}
}
