/* spool: the spool's primitives: drop names, whether a file is ready, taking it, the connection directory and its subdirectories. */
#pragma once
/*
 * Contract.
 * Owns: nothing past a call.
 * Borrows: directory fds and names for the call; it never closes a fd it was given.
 * May call: fileio, layout, source (which names are drops), libc; no log: errors come back as
 * -errno (spool_take also says why), for the caller to name the file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

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
