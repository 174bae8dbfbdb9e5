/* watch: inotify on one connection directory, telling names that arrive and counting each name's opens. */
#include "spool/spool_watch.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "util/log.h"

/* Names counted at most: past it every count is forgotten (unknown: stillness decides), not grown. */
#define WATCH_NAMES_MAX 65536

/* FNV-1a, as the spool queue's set of names hashes. */
static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/*
 * Who has a file open, counted from inotify's own events: IN_OPEN adds one, IN_CLOSE_* takes
 * one away. Exact for a file that appeared (IN_CREATE, IN_MOVED_TO) while we watched; a file
 * that was there before, or whose events were lost to an overflow, is not in the map: unknown.
 */
struct opens_ent {
	char *name;
	int opens;
};

struct watch {
	struct ev_loop *loop;
	ev_io io;
	int fd, wd;
	int parent_wd;          /* the spool root: its IN_DELETE of dir comes even while dir is held open */
	char *dir;
	const char *base;       /* dir's last component, in dir */
	struct watch_ops ops;
	void *userdata;
	struct opens_ent *map;
	size_t map_cap, map_used;
	uint32_t moved_cookie;  /* the last IN_MOVED_FROM, to carry its count to the IN_MOVED_TO */
	int moved_opens;
	char **later;           /* names read while counting opens, told to the owner from the loop: 'n' or 'a' (IN_ATTRIB), then the name */
	size_t n_later;
	bool gone_later, overflow_later;
};

static size_t map_slot(const struct watch *w, const char *name)
{
	size_t mask = w->map_cap - 1, i = name_hash(name) & mask;

	while (w->map[i].name && strcmp(w->map[i].name, name))
		i = (i + 1) & mask;
	return i;
}

static struct opens_ent *map_find(struct watch *w, const char *name)
{
	size_t i;

	if (!w->map_cap)
		return NULL;
	i = map_slot(w, name);
	return w->map[i].name ? &w->map[i] : NULL;
}

static void map_clear(struct watch *w)
{
	for (size_t i = 0; i < w->map_cap; i++)
		free(w->map[i].name);
	free(w->map);
	w->map = NULL;
	w->map_cap = w->map_used = 0;
}

static int map_set(struct watch *w, const char *name, int opens)
{
	struct opens_ent *e = map_find(w, name);

	if (e) {
		e->opens = opens;
		return 0;
	}
	if (w->map_used >= WATCH_NAMES_MAX)
		map_clear(w);
	if ((w->map_used + 1) * 2 > w->map_cap) {
		struct opens_ent *old = w->map;
		size_t old_cap = w->map_cap, cap = old_cap ? old_cap * 2 : 64;

		w->map = calloc(cap, sizeof(*w->map));
		if (!w->map) {
			w->map = old;
			return -ENOMEM;
		}
		w->map_cap = cap;
		for (size_t i = 0; i < old_cap; i++)
			if (old[i].name)
				w->map[map_slot(w, old[i].name)] = old[i];
		free(old);
	}
	e = &w->map[map_slot(w, name)];
	if (!(e->name = strdup(name)))
		return -ENOMEM;
	e->opens = opens;
	w->map_used++;
	return 0;
}

static void map_remove(struct watch *w, const char *name)
{
	size_t mask = w->map_cap - 1, i, j;
	struct opens_ent *e = map_find(w, name);

	if (!e)
		return;
	free(e->name);
	e->name = NULL;
	w->map_used--;
	/* Linear probing: pull the entries after the hole back so every lookup still finds them. */
	for (i = (size_t)(e - w->map), j = (i + 1) & mask; w->map[j].name; j = (j + 1) & mask) {
		size_t home = name_hash(w->map[j].name) & mask;

		if (((j - home) & mask) >= ((j - i) & mask)) {
			w->map[i] = w->map[j];
			w->map[j].name = NULL;
			i = j;
		}
	}
}

static void note_event(struct watch *w, const struct inotify_event *ev)
{
	struct opens_ent *e = map_find(w, ev->name);

	if (ev->mask & IN_CREATE) {
		(void)map_set(w, ev->name, 0);
	} else if (ev->mask & IN_OPEN) {
		if (e)
			e->opens++;
	} else if (ev->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)) {
		if (e && e->opens > 0)
			e->opens--;
		else if (!e && (ev->mask & IN_CLOSE_WRITE))
			(void)map_set(w, ev->name, 0);  /* found open at start, now closed by its writer */
	} else if (ev->mask & IN_MOVED_FROM) {
		w->moved_cookie = ev->cookie;
		w->moved_opens = e ? e->opens : 0;
		map_remove(w, ev->name);
	} else if (ev->mask & IN_MOVED_TO) {
		(void)map_set(w, ev->name, ev->cookie && ev->cookie == w->moved_cookie ? w->moved_opens : 0);
	} else if (ev->mask & IN_DELETE) {
		map_remove(w, ev->name);
	}
}

/*
 * Read every pending event and apply each to the counts in the order inotify gave them; the
 * names to look at wait in w->later. Nothing is told to the owner from here: telling it (which
 * may count opens, which reads on) while events read before were not applied yet would apply a
 * close before its open, and a count stuck at 1 would hold a file "open" forever.
 */
static void collect(struct watch *w)
{
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool gone = false;
	ssize_t n;

	while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			char **v;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				w->overflow_later = true;
				map_clear(w);   /* every count is a guess now */
				continue;
			}
			if (ev->wd == w->parent_wd && ev->wd >= 0) {
				/* The directory itself removed or moved away (its own events wait while it is held open). */
				if ((ev->mask & (IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT)) ||
				    (ev->len && !strcmp(ev->name, w->base) && (ev->mask & (IN_DELETE | IN_MOVED_FROM))))
					gone = true;
				continue;
			}
			if (ev->wd != w->wd || w->wd < 0)
				continue;
			if (ev->mask & (IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT)) {
				gone = true;
				continue;
			}
			if (!ev->len)
				continue;
			note_event(w, ev);
			if (!(ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB)))
				continue;
			v = realloc(w->later, (w->n_later + 1) * sizeof(*v));
			if (v && (v[w->n_later] = malloc(strlen(ev->name) + 2))) {
				v[w->n_later][0] = ev->mask & IN_ATTRIB ? 'a' : 'n';
				strcpy(v[w->n_later] + 1, ev->name);
				w->later = v;
				w->n_later++;
			} else {
				if (v)
					w->later = v;
				w->overflow_later = true;       /* out of memory: a rescan finds it */
			}
		}
	}
	if (n < 0 && errno != EAGAIN && errno != EINTR)
		log_error("%s: inotify read: %s", w->dir, strerror(errno));
	if (gone) {
		/* Both watches go; spool_watch_rewatch sets them again once the directory is back. */
		if (w->wd >= 0)
			(void)inotify_rm_watch(w->fd, w->wd);
		if (w->parent_wd >= 0)
			(void)inotify_rm_watch(w->fd, w->parent_wd);
		w->wd = w->parent_wd = -1;
		w->gone_later = true;
		map_clear(w);
	}
}

/* Tell the owner the names collected, then an overflow or the directory gone. */
static void deliver_later(struct watch *w)
{
	bool gone = w->gone_later, overflow = w->overflow_later;
	char **v = w->later;
	size_t n = w->n_later;

	/* Looking at a name counts opens again, which may collect more names: a fresh list for them. */
	w->later = NULL;
	w->n_later = 0;
	w->gone_later = w->overflow_later = false;
	for (size_t i = 0; i < n; i++) {
		if (v[i][0] == 'n')
			w->ops.on_name(w->userdata, v[i] + 1);
		else if (w->ops.on_attrib)
			w->ops.on_attrib(w->userdata, v[i] + 1);
		free(v[i]);
	}
	free(v);
	if (overflow) {
		log_warning("%s: inotify queue overflowed: rescanning", w->dir);
		w->ops.on_overflow(w->userdata);
	}
	if (gone)
		w->ops.on_gone(w->userdata);
}

static void watch_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	(void)loop;
	(void)revents;
	collect(io->data);
	deliver_later(io->data);
}

int spool_watch_open_count(struct watch *w, const char *name)
{
	struct opens_ent *e;

	/* Events not yet read may say a writer opened it a moment ago: read them first, in order. */
	collect(w);
	/* Called from inside the owner: what it must hear is told from the loop, soon. */
	if (w->n_later || w->overflow_later || w->gone_later)
		ev_feed_event(w->loop, &w->io, EV_CUSTOM);
	e = map_find(w, name);
	return e ? e->opens : -1;
}

int spool_watch_rewatch(struct watch *w)
{
	char parent[PATH_MAX];
	int wd, pwd;

	snprintf(parent, sizeof(parent), "%.*s", (int)(w->base - w->dir > 1 ? w->base - w->dir - 1 : 1), w->dir);
	pwd = inotify_add_watch(w->fd, parent, IN_DELETE | IN_MOVED_FROM | IN_MOVE_SELF | IN_DELETE_SELF | IN_ONLYDIR);
	if (pwd < 0)
		return -errno;
	/* IN_DONT_FOLLOW: a connection directory swapped for a link is not watched through it. */
	wd = inotify_add_watch(w->fd, w->dir, IN_CREATE | IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE |
			       IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF |
			       IN_ONLYDIR | IN_DONT_FOLLOW);
	if (wd < 0) {
		int r = -errno;

		(void)inotify_rm_watch(w->fd, pwd);
		return r;
	}
	w->wd = wd;
	w->parent_wd = pwd;
	return 0;
}

int spool_watch_new(struct watch **out, struct ev_loop *loop, const char *dir,
	      const struct watch_ops *ops, void *userdata)
{
	struct watch *w = calloc(1, sizeof(*w));
	int r = -ENOMEM;

	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->wd = w->parent_wd = -1;
	if (!(w->dir = strdup(dir)))
		goto fail;
	w->base = strrchr(w->dir, '/') ? strrchr(w->dir, '/') + 1 : w->dir;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = spool_watch_rewatch(w)) < 0)
		goto fail;
	w->loop = loop;
	w->ops = *ops;
	w->userdata = userdata;
	ev_io_init(&w->io, watch_cb, w->fd, EV_READ);
	w->io.data = w;
	ev_io_start(loop, &w->io);
	*out = w;
	return 0;
fail:
	if (w->fd >= 0)
		close(w->fd);
	free(w->dir);
	free(w);
	return r;
}

void spool_watch_free(struct watch *w)
{
	if (!w)
		return;
	ev_io_stop(w->loop, &w->io);
	ev_clear_pending(w->loop, &w->io);
	close(w->fd);
	map_clear(w);
	for (size_t i = 0; i < w->n_later; i++)
		free(w->later[i]);
	free(w->later);
	free(w->dir);
	free(w);
}
