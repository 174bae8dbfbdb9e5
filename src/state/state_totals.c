/* state_totals: each connection's running totals and last outcomes for `dcsyncd status`, kept in <state_dir>/totals. */
/*
 * Why a file of its own: the journal holds what recovery needs and is fdatasynced before each
 * request leaves; counters written there rode on that path and grew every compaction. Here they
 * are a small JSON document, one line per connection, replaced whole with fileio_replace_at
 * (temporary, fsync, rename, directory fsync): a crash leaves the old file or the new one,
 * never a torn one. The cadence is one write per TOTALS_INTERVAL at most (see state_totals.h); a crash
 * or kill -9 loses the changes of the last interval, which `status` then shows a little low.
 */
#include "state/state_totals.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "util/fileio.h"
#include "util/jsonstr.h"
#include "util/log.h"

#define TOTALS_FILE "totals"
#define TOTALS_DAMAGED "totals.damaged"
#define TOTALS_FORMAT 1
/* Thousands of connections fit in far less: a larger file is not ours. */
#define TOTALS_MAX_BYTES (4u << 20)

struct totals {
	int dirfd;              /* <state_dir>, for the atomic replace; -1 read-only */
	char *dir;
	struct conn_totals *v;
	size_t n;
	double interval;
	double last_write;      /* CLOCK_MONOTONIC seconds of the last write tried, -INFINITY: none */
	bool dirty;
};

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the file ---- */

/* The integer member @key of @o (absent: 0); false when present but not a non-negative integer. */
static bool get_uint(yajl_val o, const char *key, uint64_t *out)
{
	const char *path[] = { key, NULL };
	yajl_val v = yajl_tree_get(o, path, yajl_t_any);

	*out = 0;
	if (!v)
		return true;
	if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0)
		return false;
	*out = (uint64_t)YAJL_GET_INTEGER(v);
	return true;
}

static bool get_str(yajl_val o, const char *key, char *dst, size_t cap, bool required)
{
	const char *path[] = { key, NULL };
	yajl_val v = yajl_tree_get(o, path, yajl_t_any);
	const char *s = v && YAJL_IS_STRING(v) ? v->u.string : NULL;

	dst[0] = '\0';
	if (!v)
		return !required;
	if (!s || (required && !s[0]) || strlen(s) >= cap)
		return false;
	snprintf(dst, cap, "%s", s);
	return true;
}

/* One connection's object; @why (64 bytes) names the field at fault. */
static int parse_entry(yajl_val o, struct conn_totals *e, char *why)
{
	static const char *const keys[] = { "files_uploaded", "files_failed", "records_sent", "records_rejected",
					     "requests", "last_success", "last_error", "last_error_status",
					     "rate_budget", "rate_waiting", "last_records" };
	uint64_t v[sizeof(keys) / sizeof(keys[0])];

	memset(e, 0, sizeof(*e));
	if (!YAJL_IS_OBJECT(o)) {
		snprintf(why, 64, "not an object");
		return -EBADMSG;
	}
	if (!get_str(o, "name", e->connection, sizeof(e->connection), true)) {
		snprintf(why, 64, "name: not a connection's name");
		return -EBADMSG;
	}
	if (!get_str(o, "last_error_text", e->last_error_text, sizeof(e->last_error_text), false)) {
		snprintf(why, 64, "last_error_text: not a string of at most 255 bytes");
		return -EBADMSG;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!get_uint(o, keys[i], &v[i])) {
			snprintf(why, 64, "%s: not a count", keys[i]);
			return -EBADMSG;
		}
	}
	e->files_done = v[0];
	e->files_failed = v[1];
	e->records_sent = v[2];
	e->records_rejected = v[3];
	e->requests = v[4];
	e->last_success = (int64_t)v[5];
	e->last_error = (int64_t)v[6];
	e->last_error_status = (int64_t)v[7];
	e->rate_budget = v[8];
	e->rate_waiting = v[9];
	if (!get_uint(o, "records_unchanged", &e->records_unchanged))
		e->records_unchanged = 0;
	e->last_records = v[10];
	return 0;
}

/* Parse the document @text into @t's entries; @why (200 bytes) says what is wrong. */
static int parse(struct totals *t, const char *text, char *why)
{
	const char *fmt_path[] = { "format", NULL }, *conns_path[] = { "connections", NULL };
	char err[128] = "";
	yajl_val doc = yajl_tree_parse(text, err, sizeof(err)), fmt, conns;
	int r = 0;

	if (!doc) {
		/* yajl's message spans lines; the first says what. */
		err[strcspn(err, "\n")] = '\0';
		snprintf(why, 200, "not JSON: %s", err);
		return -EBADMSG;
	}
	fmt = yajl_tree_get(doc, fmt_path, yajl_t_any);
	conns = yajl_tree_get(doc, conns_path, yajl_t_array);
	if (!YAJL_IS_OBJECT(doc) || !fmt || !YAJL_IS_INTEGER(fmt) || YAJL_GET_INTEGER(fmt) != TOTALS_FORMAT || !conns) {
		snprintf(why, 200, "not dcsyncd's totals (format %d with a list of connections)", TOTALS_FORMAT);
		r = -EBADMSG;
		goto out;
	}
	t->v = calloc(YAJL_GET_ARRAY(conns)->len ? YAJL_GET_ARRAY(conns)->len : 1, sizeof(*t->v));
	if (!t->v) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < YAJL_GET_ARRAY(conns)->len; i++) {
		char what[64];

		if ((r = parse_entry(YAJL_GET_ARRAY(conns)->values[i], &t->v[t->n], what)) < 0) {
			snprintf(why, 200, "connection %zu: %s", i + 1, what);
			goto out;
		}
		if (state_totals_find(t, t->v[t->n].connection)) {
			snprintf(why, 200, "connection %zu: %s: named twice", i + 1, t->v[t->n].connection);
			r = -EBADMSG;
			goto out;
		}
		t->n++;
	}
out:
	if (r < 0) {
		free(t->v);
		t->v = NULL;
		t->n = 0;
	}
	yajl_tree_free(doc);
	return r;
}

/* Read and parse <dir>/totals (@dirfd, or by path when -1). -ENOENT: none; -EBADMSG: *@why says why. */
static int load(struct totals *t, char *why)
{
	char *text = NULL, *path = NULL;
	struct stat st;
	int fd, r = 0;

	if (t->dirfd >= 0) {
		fd = openat(t->dirfd, TOTALS_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	} else {
		if (asprintf(&path, "%s/%s", t->dir, TOTALS_FILE) < 0)
			return -ENOMEM;
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		free(path);
	}
	if (fd < 0) {
		if (errno == ELOOP) {
			snprintf(why, 200, "a symbolic link");
			return -EBADMSG;
		}
		return -errno;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > TOTALS_MAX_BYTES) {
		snprintf(why, 200, S_ISREG(st.st_mode) ? "larger than %u bytes" : "not a regular file", TOTALS_MAX_BYTES);
		r = -EBADMSG;
		goto out;
	}
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t got = 0; got < (size_t)st.st_size;) {
		ssize_t k = pread(fd, text + got, (size_t)st.st_size - got, (off_t)got);

		if (k <= 0) {
			r = k < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)k;
	}
	text[st.st_size] = '\0';
	r = parse(t, text, why);
out:
	free(text);
	close(fd);
	return r;
}

static int append_entry(char **buf, size_t *len, size_t *cap, const struct conn_totals *e, bool first)
{
	char nums[512];
	int r;

	if ((r = jsonstr_raw(buf, len, cap, first ? "\n{\"name\":" : ",\n{\"name\":", first ? 9 : 10)) < 0 ||
	    (r = jsonstr_append(buf, len, cap, e->connection, strlen(e->connection))) < 0)
		return r;
	snprintf(nums, sizeof(nums), ",\"files_uploaded\":%" PRIu64 ",\"files_failed\":%" PRIu64 ",\"records_sent\":%"
		 PRIu64 ",\"records_rejected\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"last_success\":%" PRId64
		 ",\"last_error\":%" PRId64 ",\"last_error_status\":%" PRId64 ",\"rate_budget\":%" PRIu64
		 ",\"rate_waiting\":%" PRIu64 ",\"records_unchanged\":%" PRIu64 ",\"last_records\":%" PRIu64 ",\"last_error_text\":",
		 e->files_done, e->files_failed, e->records_sent, e->records_rejected, e->requests, e->last_success,
		 e->last_error, e->last_error_status, e->rate_budget, e->rate_waiting, e->records_unchanged, e->last_records);
	if ((r = jsonstr_raw(buf, len, cap, nums, strlen(nums))) < 0 ||
	    (r = jsonstr_append(buf, len, cap, e->last_error_text, strlen(e->last_error_text))) < 0)
		return r;
	return jsonstr_raw(buf, len, cap, "}", 1);
}

static int write_file(struct totals *t)
{
	char *buf = NULL, head[64];
	size_t len = 0, cap = 0;
	int r;

	t->last_write = mono_now();
	snprintf(head, sizeof(head), "{\"format\":%d,\"connections\":[", TOTALS_FORMAT);
	r = jsonstr_raw(&buf, &len, &cap, head, strlen(head));
	for (size_t i = 0; r == 0 && i < t->n; i++)
		r = append_entry(&buf, &len, &cap, &t->v[i], i == 0);
	if (r == 0)
		r = jsonstr_raw(&buf, &len, &cap, "\n]}\n", 4);
	/* 0640 like the journal: `dcsyncd status` reads both with the same rights. */
	if (r == 0 && (r = fileio_replace_at(t->dirfd, TOTALS_FILE, buf, len, 0640, true)) == 0)
		t->dirty = false;
	free(buf);
	return r;
}

/* ---- the store ---- */

static int totals_new(struct totals **out, const char *dir, double interval)
{
	struct totals *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->dirfd = -1;
	t->interval = interval;
	t->last_write = -INFINITY;
	t->dir = strdup(dir);
	if (!t->dir) {
		free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

int state_totals_open(struct totals **out, const char *dir, double interval)
{
	struct totals *t = NULL;
	char why[200] = "";
	int r;

	if ((r = totals_new(&t, dir, interval)) < 0)
		return r;
	if ((t->dirfd = fileio_open_dir(dir)) < 0) {
		r = t->dirfd;
		goto fail;
	}
	r = load(t, why);
	if (r == -EBADMSG) {
		/* Counters are no reason to stop uploading: say so, keep the evidence, count afresh. */
		if (renameat(t->dirfd, TOTALS_FILE, t->dirfd, TOTALS_DAMAGED) < 0 || fsync(t->dirfd) < 0)
			log_error("totals %s/%s cannot be read (%s) nor kept aside (%s): the totals of `dcsyncd status` "
				  "start again from zero", dir, TOTALS_FILE, why, strerror(errno));
		else
			log_error("totals %s/%s cannot be read (%s): kept as %s/%s; the totals of `dcsyncd status` "
				  "start again from zero", dir, TOTALS_FILE, why, dir, TOTALS_DAMAGED);
		r = 0;
	} else if (r == -ENOENT) {
		r = 0;
	}
	if (r < 0)
		goto fail;
	*out = t;
	return 0;
fail:
	state_totals_free(t);
	return r;
}

int state_totals_open_readonly(struct totals **out, const char *dir)
{
	struct totals *t = NULL;
	char why[200] = "";
	int r;

	if ((r = totals_new(&t, dir, INFINITY)) < 0)
		return r;
	if ((r = load(t, why)) < 0) {
		if (r == -EBADMSG)
			fprintf(stderr, "%s/%s: cannot be read (%s): totals left out\n", dir, TOTALS_FILE, why);
		state_totals_free(t);
		return r;
	}
	*out = t;
	return 0;
}

void state_totals_free(struct totals *t)
{
	if (!t)
		return;
	if (t->dirfd >= 0)
		close(t->dirfd);
	free(t->dir);
	free(t->v);
	free(t);
}

static size_t index_of(const struct totals *t, const char *connection)
{
	size_t i;

	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].connection, connection))
			break;
	return i;
}

const struct conn_totals *state_totals_find(const struct totals *t, const char *connection)
{
	size_t i = index_of(t, connection);

	return i < t->n ? &t->v[i] : NULL;
}

static int add(struct totals *t, const struct conn_totals *s)
{
	struct conn_totals *n = realloc(t->v, (t->n + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	t->v = n;
	t->v[t->n++] = *s;
	t->dirty = true;
	return 0;
}

/* Keep @s as its connection's totals, to be written. */
static int keep(struct totals *t, const struct conn_totals *s)
{
	size_t i = index_of(t, s->connection);

	if (i == t->n)
		return add(t, s);
	t->v[i] = *s;
	t->dirty = true;
	return 0;
}

int state_totals_put(struct totals *t, const struct conn_totals *s)
{
	int r = keep(t, s);

	return r < 0 ? r : state_totals_flush(t, false);
}

void state_totals_put_live(struct totals *t, const struct conn_totals *s)
{
	/* Out of memory: the next put of this connection carries the same state. */
	(void)keep(t, s);
}

int state_totals_flush(struct totals *t, bool force)
{
	if (!t->dirty || t->dirfd < 0)
		return 0;
	if (!force && mono_now() - t->last_write < t->interval)
		return 0;
	return write_file(t);
}

bool state_totals_pending(const struct totals *t) { return t->dirty; }

int state_totals_merge(struct totals *t, const struct conn_totals *v, size_t n)
{
	int taken = 0, r;

	for (size_t i = 0; i < n; i++) {
		if (state_totals_find(t, v[i].connection))
			continue;
		if ((r = add(t, &v[i])) < 0)
			return r;
		taken++;
	}
	return taken;
}
