/* spool: find files dropped into <spool_dir>/<connection>/ (scan + inotify) and queue them in order. */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"

/* ---- queue ---- */

/* ---- the set of queued names: a rescan of 10,000 files must not compare each with each ---- */

#define TOMBSTONE ((char *)1)

static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/* The slot holding @name, or the free slot where it would go. */
static size_t names_slot(const struct spool_queue *q, const char *name)
{
	size_t mask = q->names_cap - 1, i = name_hash(name) & mask, free_slot = SIZE_MAX;

	for (;; i = (i + 1) & mask) {
		char *e = q->names[i];

		if (!e)
			return free_slot != SIZE_MAX ? free_slot : i;
		if (e == TOMBSTONE) {
			if (free_slot == SIZE_MAX)
				free_slot = i;
		} else if (!strcmp(e, name)) {
			return i;
		}
	}
}

static int names_grow(struct spool_queue *q)
{
	size_t cap = q->names_cap ? q->names_cap * 2 : 64;
	char **old = q->names;
	size_t old_cap = q->names_cap;

	q->names = calloc(cap, sizeof(*q->names));
	if (!q->names) {
		q->names = old;
		return -ENOMEM;
	}
	q->names_cap = cap;
	q->names_used = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i] && old[i] != TOMBSTONE) {
			q->names[names_slot(q, old[i])] = old[i];
			q->names_used++;
		}
	}
	free(old);
	return 0;
}

static void names_remove(struct spool_queue *q, const char *name)
{
	size_t i;

	if (!q->names_cap)
		return;
	i = names_slot(q, name);
	if (q->names[i] && q->names[i] != TOMBSTONE && !strcmp(q->names[i], name))
		q->names[i] = TOMBSTONE;
}

void spool_queue_clear(struct spool_queue *q)
{
	for (size_t i = q->head; i < q->n; i++)
		free(q->v[i].name);
	q->head = q->n = 0;
	q->sorted = true;
	free(q->names);
	q->names = NULL;
	q->names_cap = q->names_used = 0;
}

void spool_queue_release(struct spool_queue *q)
{
	spool_queue_clear(q);
	free(q->v);
	memset(q, 0, sizeof(*q));
}

int spool_queue_add(struct spool_queue *q, const char *name, int64_t mtime_ns)
{
	size_t slot;

	/* Tombstones count as used: grow (and so clean) before the table gets half full. */
	if ((q->names_used + 1) * 2 > q->names_cap && names_grow(q) < 0)
		return -ENOMEM;
	slot = names_slot(q, name);
	if (q->names[slot] && q->names[slot] != TOMBSTONE) {
		for (size_t i = q->head; i < q->n; i++) {
			if (q->v[i].name == q->names[slot] && q->v[i].mtime_ns != mtime_ns) {
				/* Rewritten in place before we took it: order by its newest mtime. */
				q->v[i].mtime_ns = mtime_ns;
				q->sorted = false;
			}
		}
		return 0;
	}
	if (q->head > 0 && q->head == q->n)
		q->head = q->n = 0;
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 16;
		struct spool_entry *v = realloc(q->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		q->v = v;
		q->cap = cap;
	}
	q->v[q->n].name = strdup(name);
	if (!q->v[q->n].name)
		return -ENOMEM;
	q->v[q->n].mtime_ns = mtime_ns;
	if (!q->names[slot])
		q->names_used++;
	q->names[slot] = q->v[q->n].name;
	if (q->n > q->head && q->sorted) {
		const struct spool_entry *p = &q->v[q->n - 1];

		q->sorted = p->mtime_ns < mtime_ns || (p->mtime_ns == mtime_ns && strcmp(p->name, name) < 0);
	}
	q->n++;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;

	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

int spool_queue_pop(struct spool_queue *q, struct spool_entry *entry)
{
	if (q->head == q->n)
		return 0;
	if (!q->sorted) {
		qsort(q->v + q->head, q->n - q->head, sizeof(*q->v), entry_cmp);
		q->sorted = true;
	}
	*entry = q->v[q->head++];
	names_remove(q, entry->name);
	return 1;
}

int64_t spool_queue_oldest(struct spool_queue *q)
{
	if (q->head == q->n)
		return 0;
	if (!q->sorted) {
		qsort(q->v + q->head, q->n - q->head, sizeof(*q->v), entry_cmp);
		q->sorted = true;
	}
	return q->v[q->head].mtime_ns;
}

size_t spool_queue_len(const struct spool_queue *q)
{
	return q->n - q->head;
}

/* ---- files ---- */

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && !strcmp(s + n - m, suffix);
}

bool spool_name_eligible(const char *name)
{
	return name[0] != '.' && (has_suffix(name, ".ndjson") || has_suffix(name, ".jsonl"));
}

int spool_file_ready(int dirfd, const char *name, int64_t *mtime_ns)
{
	struct stat st;
	int fd, r = 1;

	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return errno == ENOENT || errno == ELOOP ? 0 : -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = 0;
		goto out;
	}
	/*
	 * A read lease is granted only while no process has the file open for writing: the
	 * kernel's own answer to "is the exporter done?". Without CAP_LEASE on another user's
	 * file the lease is refused with EACCES; the drop protocol (rename) covers that case.
	 */
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0) {
		if (errno == EAGAIN || errno == EBUSY)
			r = 0;
	} else {
		(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	}
	*mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
out:
	close(fd);
	return r;
}

int spool_scan(const char *dir, struct spool_queue *q)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int r = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		int64_t mtime;
		int ready;

		if (!spool_name_eligible(de->d_name))
			continue;
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		ready = spool_file_ready(dirfd(d), de->d_name, &mtime);
		if (ready < 0) {
			log_warning("%s/%s: cannot inspect: %s", dir, de->d_name, strerror(-ready));
			continue;
		}
		if (ready == 0) {
			log_debug("%s/%s: still open for writing, waiting for it to be closed", dir, de->d_name);
			continue;
		}
		if ((r = spool_queue_add(q, de->d_name, mtime)) < 0)
			break;
	}
	closedir(d);
	return r;
}

static int mkdirs_masked(char *buf, const char *path, size_t n, unsigned mode);

int spool_mkdirs(const char *path, unsigned mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	mode_t old;
	int r = 0;

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	/*
	 * The service's UMask (0027) would strip the group write bit exporters need; the setgid
	 * bit is inherited from the spool root (RestrictSUIDSGID forbids setting it here).
	 */
	old = umask(0007);
	r = mkdirs_masked(buf, path, n, mode);
	umask(old);
	return r;
}

static int mkdirs_masked(char *buf, const char *path, size_t n, unsigned mode)
{
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int spool_sync_parent(const char *path)
{
	char buf[PATH_MAX];
	char *slash;
	int fd, r = 0;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	slash = strrchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	fd = open(buf[0] ? buf : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

static int copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in, out = -1, r = 0;
	struct stat st;
	ssize_t n;

	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	if (fstat(in, &st) < 0) {
		r = -errno;
		goto out;
	}
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 0777);
	if (out < 0) {
		r = -errno;
		goto out;
	}
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if ((r = fileio_write_all(out, buf, (size_t)n)) < 0)
			goto out;
	}
	if (fsync(out) < 0)
		r = -errno;
out:
	if (out >= 0)
		close(out);
	if (r < 0 && out >= 0)
		(void)unlink(to);
	close(in);
	return r;
}

/* Whether @a and @b hold the same bytes: a copy finished before a crash need not be made twice. */
static bool same_content(const char *a, const char *b)
{
	char ba[65536], bb[65536];
	struct stat sa, sb;
	int fa = -1, fb = -1;
	bool same = false;
	ssize_t n;

	if (stat(a, &sa) < 0 || stat(b, &sb) < 0 || sa.st_size != sb.st_size)
		return false;
	fa = open(a, O_RDONLY | O_CLOEXEC);
	fb = open(b, O_RDONLY | O_CLOEXEC);
	if (fa < 0 || fb < 0)
		goto out;
	while ((n = read(fa, ba, sizeof(ba))) > 0)
		if (read(fb, bb, (size_t)n) != n || memcmp(ba, bb, (size_t)n))
			goto out;
	same = n == 0;
out:
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return same;
}

int spool_move(const char *from, const char *to)
{
	int r;

	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	r = -errno;
	if (r == -EINVAL && access(to, F_OK) != 0) {
		/* The filesystem has no RENAME_NOREPLACE (some overlays): nothing is at @to. */
		if (rename(from, to) == 0)
			return 0;
		r = -errno;
	}
	if (r != -EXDEV)
		return r;
	/*
	 * Across filesystems: copy to a hidden temporary beside @to, fsync, then link it into place
	 * without replacing anything, so a crash leaves no partial file under the real name. A redo
	 * after a crash between the copy and the unlink finds the same bytes at @to.
	 */
	if (same_content(from, to))
		return unlink(from) < 0 ? -errno : 0;
	{
		char tmp[PATH_MAX];
		const char *slash = strrchr(to, '/');
		int n = slash ? snprintf(tmp, sizeof(tmp), "%.*s/.%s.partial", (int)(slash - to), to, slash + 1)
			      : snprintf(tmp, sizeof(tmp), ".%s.partial", to);

		if (n < 0 || (size_t)n >= sizeof(tmp))
			return -ENAMETOOLONG;
		if ((r = copy_file(from, tmp)) < 0)
			return r;
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, to, RENAME_NOREPLACE) < 0) {
			r = -errno;
			(void)unlink(tmp);
			return r;
		}
	}
	if ((r = spool_sync_parent(to)) < 0)
		return r;
	return unlink(from) < 0 ? -errno : 0;
}

/* ---- inotify ---- */

struct watch_dir {
	int wd;
	size_t conn_index;
	char *dir;
};

struct spool_watch {
	struct ev_loop *loop;
	ev_io io;
	int fd;
	struct watch_dir *dirs;
	size_t n_dirs;
	spool_file_fn on_file;
	spool_rescan_fn on_overflow;
	void *userdata;
};

static void watch_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct spool_watch *w = io->data;
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool overflow = false;
	ssize_t n;

	(void)loop;
	(void)revents;
	while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				overflow = true;
				continue;
			}
			if (!ev->len || !spool_name_eligible(ev->name))
				continue;
			for (size_t i = 0; i < w->n_dirs; i++) {
				int dfd, ready;
				int64_t mtime;

				if (w->dirs[i].wd != ev->wd)
					continue;
				dfd = open(w->dirs[i].dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				if (dfd < 0)
					break;
				ready = spool_file_ready(dfd, ev->name, &mtime);
				close(dfd);
				if (ready > 0)
					w->on_file(w->userdata, w->dirs[i].conn_index, ev->name, mtime);
				break;
			}
		}
	}
	if (n < 0 && errno != EAGAIN && errno != EINTR)
		log_error("inotify read: %s", strerror(errno));
	if (overflow) {
		log_warning("inotify queue overflowed: rescanning the spool");
		w->on_overflow(w->userdata);
	}
}

int spool_watch_new(struct spool_watch **out, struct ev_loop *loop, spool_file_fn on_file,
		    spool_rescan_fn on_overflow, void *userdata)
{
	struct spool_watch *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		int r = -errno;

		free(w);
		return r;
	}
	w->loop = loop;
	w->on_file = on_file;
	w->on_overflow = on_overflow;
	w->userdata = userdata;
	ev_io_init(&w->io, watch_cb, w->fd, EV_READ);
	w->io.data = w;
	ev_io_start(loop, &w->io);
	*out = w;
	return 0;
}

void spool_watch_free(struct spool_watch *w)
{
	if (!w)
		return;
	ev_io_stop(w->loop, &w->io);
	close(w->fd);
	for (size_t i = 0; i < w->n_dirs; i++)
		free(w->dirs[i].dir);
	free(w->dirs);
	free(w);
}

int spool_watch_add(struct spool_watch *w, const char *dir, size_t conn_index)
{
	struct watch_dir *d;
	int wd = inotify_add_watch(w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR);

	if (wd < 0)
		return -errno;
	d = realloc(w->dirs, (w->n_dirs + 1) * sizeof(*d));
	if (!d)
		return -ENOMEM;
	w->dirs = d;
	d[w->n_dirs] = (struct watch_dir){ .wd = wd, .conn_index = conn_index, .dir = strdup(dir) };
	if (!d[w->n_dirs].dir)
		return -ENOMEM;
	w->n_dirs++;
	return 0;
}
