/* fileio: writing files safely where others can write too: whole writes, no links followed, atomic replace. */
#pragma once
/*
 * Contract. No state: it owns nothing past a call but the fd it returns (the caller closes it)
 * and borrows its arguments for the call. May call: layout (the temporary's name), libc. Does not
 * log: it returns -errno and the caller names the file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Write all @len bytes of @buf to @fd, resuming after short writes and EINTR. 0 or -errno. */
int fileio_write_all(int fd, const void *buf, size_t len);

/* Open the directory @path for *at() calls, refusing a symbolic link at its last component. */
int fileio_open_dir(const char *path);

/*
 * Replace @name in @dirfd with @len bytes of @buf, atomically: a temporary created exclusively
 * beside it (never through a link), renamed over @name (a link planted at @name is replaced,
 * not followed), with exactly @mode whatever the umask. With @durable the temporary is fsynced
 * before the rename and the directory after it: a crash leaves the old file or the new one,
 * never an empty one. 0 or -errno.
 */
int fileio_replace_at(int dirfd, const char *name, const void *buf, size_t len, mode_t mode, bool durable);
/* fileio_replace_at for a path: its directory opened without following a link at its end. */
int fileio_replace(const char *path, const void *buf, size_t len, mode_t mode, bool durable);

/*
 * Open @name in @dirfd for appending (created with @mode). Only a regular file of this user
 * with a single link is appended to: anything else found there (a link planted by someone who
 * can write in the directory, a FIFO, another user's file) is removed first and *@replaced set,
 * so the caller can say so. The fd, or -errno.
 */
int fileio_open_append(int dirfd, const char *name, mode_t mode, bool *replaced);

/* Open @name in @dirfd read-write for truncation, on the same terms as fileio_open_append. */
int fileio_open_own(int dirfd, const char *name, int flags);

/*
 * Move @from (in @fromdir) to @to (in @todir), falling back to copy + fsync + unlink across
 * filesystems; never replaces @to, never follows a link.
 */
int fileio_move_at(int fromdir, const char *from, int todir, const char *to);
/* mkdir -p with @mode. */
int fileio_mkdirs(const char *path, unsigned mode);
/* fsync the directory holding @path. */
int fileio_sync_parent(const char *path);
