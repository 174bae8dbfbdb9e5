/* spool: find files dropped into <spool_dir>/<connection>/ (scan + inotify) and queue them in order. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>

struct spool_entry {
	char *name;
	int64_t mtime_ns;
};

/* A connection's queued files, handed out in (mtime, name) order. */
struct spool_queue {
	struct spool_entry *v;
	size_t head, n, cap;
	bool sorted;
	char **names;           /* open-addressing set of the queued names (pointers into v) */
	size_t names_cap, names_used;
};

void spool_queue_release(struct spool_queue *q);
/* Add @name unless already queued. */
int spool_queue_add(struct spool_queue *q, const char *name, int64_t mtime_ns);
/* Take the oldest entry; the caller frees entry->name. 0 when empty. */
int spool_queue_pop(struct spool_queue *q, struct spool_entry *entry);
size_t spool_queue_len(const struct spool_queue *q);
/* mtime of the oldest queued file, 0 when empty. */
int64_t spool_queue_oldest(struct spool_queue *q);
void spool_queue_clear(struct spool_queue *q);

/* True for names exporters drop: *.ndjson or *.jsonl, not dot-files. */
bool spool_name_eligible(const char *name);

/*
 * Stat <dir>/<name> and decide whether it is ready: a regular file no process holds open
 * for writing. 1 ready (mtime in @mtime_ns), 0 not (yet), negative errno.
 */
int spool_file_ready(int dirfd, const char *name, int64_t *mtime_ns);

/* Queue every ready eligible file of @dir. */
int spool_scan(const char *dir, struct spool_queue *q);

/* Rename, falling back to copy + fsync + unlink across filesystems; never replaces @to. */
int spool_move(const char *from, const char *to);
/* mkdir -p with @mode. */
int spool_mkdirs(const char *path, unsigned mode);
/* fsync the directory holding @path. */
int spool_sync_parent(const char *path);

/* inotify on each connection directory; @on_file is called for each ready file that appears. */
struct spool_watch;
typedef void (*spool_file_fn)(void *userdata, size_t conn_index, const char *name, int64_t mtime_ns);
typedef void (*spool_rescan_fn)(void *userdata);

int spool_watch_new(struct spool_watch **out, struct ev_loop *loop, spool_file_fn on_file,
		    spool_rescan_fn on_overflow, void *userdata);
void spool_watch_free(struct spool_watch *w);
int spool_watch_add(struct spool_watch *w, const char *dir, size_t conn_index);
