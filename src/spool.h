/* spool: the spool's primitives: drop names, whether a file is ready, taking it, the (mtime, name) queue. */
#pragma once
/*
 * Contract.
 * Owns: a struct spool_queue owns copies of the names queued (spool_queue_release frees them);
 * a popped entry's name passes to the caller. Nothing else holds state.
 * Borrows: directory fds and names for the call; it never closes a fd it was given.
 * May call: fileio, layout, source (which names are drops), libc; no log: errors come back as
 * -errno (spool_take also says why), for the caller to name the file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct spool_entry {
	char *name;
	int64_t mtime_ns;       /* the order key: an mtime, or (intake's waiting queues) when to look again */
	uint64_t tag;           /* the owner's: what was seen of the file, or how often it was tried */
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
/* Add @name unless already queued (then its key moves to @mtime_ns). */
int spool_queue_add(struct spool_queue *q, const char *name, int64_t mtime_ns);
/* Add @name with @tag; 1 without a change when it is queued already. */
int spool_queue_add_new(struct spool_queue *q, const char *name, int64_t key, uint64_t tag);
bool spool_queue_has(const struct spool_queue *q, const char *name);
/* Take the oldest entry; the caller frees entry->name. 0 when empty. */
int spool_queue_pop(struct spool_queue *q, struct spool_entry *entry);
size_t spool_queue_len(const struct spool_queue *q);
/* mtime of the oldest queued file, 0 when empty. */
int64_t spool_queue_oldest(struct spool_queue *q);
void spool_queue_clear(struct spool_queue *q);

/* True for names exporters drop: *.ndjson, *.jsonl, *.csv, *.tsv (maybe .gz/.zst), not dot-files. */
bool spool_name_eligible(const char *name);
/* Every suffix spool_name_eligible takes, ", "-separated, for messages (cut to fit n, 128 is enough). */
void spool_suffixes(char *buf, size_t n);

/* What a name in a connection's directory is to dcsyncd. */
enum spool_name_kind {
	SPOOL_NAME_DROP,        /* taken when ready */
	SPOOL_NAME_TEMPORARY,   /* the drop protocol's .name / *.tmp / *.part: left alone, silently */
	SPOOL_NAME_OWN,         /* rejected/, failed/ */
	SPOOL_NAME_WRONG_CASE,  /* *.NDJSON and the like: ignored, with a word */
	SPOOL_NAME_OTHER,       /* ignored, with a word */
};
enum spool_name_kind spool_name_kind(const char *name);

enum spool_verdict {
	SPOOL_READY,            /* take it */
	SPOOL_WRITING,          /* a process holds it open: its IN_CLOSE_* brings it back */
	SPOOL_SETTLING,         /* nobody can say it is closed: ready once seen unchanged (look again after settle_seconds) */
	SPOOL_REFUSED,          /* not a regular file, or unreadable: never opened, never taken */
	SPOOL_GONE,
};

struct spool_look {
	enum spool_verdict verdict;
	int64_t mtime_ns;
	uint64_t state;         /* what was seen (device, inode, size, mtime, ctime) hashed: 0 for no regular file */
	const char *why;        /* SPOOL_REFUSED: what it is (static text) */
	bool trusted;           /* the kernel or inotify said nobody has it open (not a guess from its age) */
};

/*
 * Decide whether @name in @dirfd is ready to take, without following a link or blocking:
 * a regular file that no process holds open for writing (a read lease says so) or, where the
 * kernel will not say (another user's file without CAP_LEASE), one inotify saw every open and
 * close of (@opens == 0; @opens > 0: open somewhere) or, when that is not known (@opens < 0),
 * one whose state is still @still_state, the state the caller saw settle_seconds ago by its own
 * clock (0: not seen yet: SETTLING). Its mtime is never compared with the clock (a copy keeps a
 * future one). 0 with @look filled, or a negative errno.
 */
int spool_inspect(int dirfd, const char *name, int opens, uint64_t still_state, struct spool_look *look);

/* 1: no process holds @fd's file open for writing, 0: one does, negative errno: cannot tell. */
int spool_lease_probe(int fd);

/*
 * Take @name out of @srcdir into @dstdir as @dstname: open it first (a regular file, no link,
 * no blocking open), rename it without replacing anything, then check that what was renamed is
 * what was opened. Returns the read-only fd and fills @st; -EINVAL with @why (static text) for
 * something that is not a regular file, or another negative errno.
 */
int spool_take(int srcdir, const char *name, int dstdir, const char *dstname, struct stat *st, const char **why);

/* Call @fn for every entry of @dir (start-up, inotify overflow). */
typedef void (*spool_name_fn)(void *userdata, const char *name);
int spool_scan(const char *dir, spool_name_fn fn, void *userdata);

/*
 * Move @from (in @fromdir) to @to (in @todir), falling back to copy + fsync + unlink across
 * filesystems; never replaces @to, never follows a link.
 */
int spool_move_at(int fromdir, const char *from, int todir, const char *to);
/* mkdir -p with @mode. */
int spool_mkdirs(const char *path, unsigned mode);
/*
 * Open (made with @mode if missing) the directory @name in @parent for *at() calls, never
 * through a link: a link or file planted at @name is removed; a directory of another user's
 * (an exporter's, in a connection directory) is set aside as .<name>.not-dcsyncd-<uid> and
 * ours made in its place (*@foreign: that uid, else -1; -EPERM if it cannot be); group/other
 * write bits beyond @mode are dropped from a directory of ours. *@fixed says something was
 * changed. fd or -errno.
 */
int spool_subdir(int parent, const char *name, unsigned mode, bool *fixed, long *foreign);
/*
 * Make (mode 1770: exporters may drop, and remove only their own files) or check a connection
 * directory: -EPERM with *@owner when another user owns it (it is not used: its files could be
 * renamed or replaced under the daemon); the sticky bit put back on one of ours that lacks it.
 */
int spool_conn_dir(const char *path, long *owner);
/* fsync the directory holding @path. */
int spool_sync_parent(const char *path);
