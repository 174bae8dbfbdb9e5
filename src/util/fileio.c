/* fileio: writing files safely where others can write too: whole writes, no links followed, atomic replace. */
#include "util/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/layout.h"

int fileio_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;    /* no progress and no error: do not spin */
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int fileio_open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

int fileio_replace_at(int dirfd, const char *name, const void *buf, size_t len, mode_t mode, bool durable)
{
	char tmp[LAYOUT_NAME_MAX + 1];
	int fd = -1, r;

	layout_name(tmp, ".", name, ".tmp");
	for (int attempt = 0;; attempt++) {
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
		if (fd >= 0 || errno != EEXIST || attempt)
			break;
		/* A temporary left by a crash (or planted): ours to remove, never to write through. */
		if (unlinkat(dirfd, tmp, 0) < 0 && errno != ENOENT)
			break;
	}
	if (fd < 0)
		return -errno;
	/* The mode asked for, whatever the umask: some files are private, one (metrics) is for another user. */
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		goto fail;
	}
	if ((r = fileio_write_all(fd, buf, len)) < 0)
		goto fail;
	/* Durable before the rename, or a crash could leave an empty file under the real name. */
	if ((durable && fsync(fd) < 0) || renameat(dirfd, tmp, dirfd, name) < 0) {
		r = -errno;
		goto fail;
	}
	close(fd);
	return durable && fsync(dirfd) < 0 ? -errno : 0;
fail:
	close(fd);
	(void)unlinkat(dirfd, tmp, 0);
	return r;
}

int fileio_replace(const char *path, const void *buf, size_t len, mode_t mode, bool durable)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_MAX];
	int dirfd, r;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if ((size_t)snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path) >= sizeof(dir))
		return -ENAMETOOLONG;
	if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	if ((dirfd = fileio_open_dir(dir)) < 0)
		return dirfd;
	r = fileio_replace_at(dirfd, slash ? slash + 1 : path, buf, len, mode, durable);
	close(dirfd);
	return r;
}

/* @fd is a regular file of ours with one link: safe to write. */
static bool own_file(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && st.st_nlink == 1;
}

static int open_trusted(int dirfd, const char *name, int flags, mode_t mode, bool *replaced)
{
	int fd;

	*replaced = false;
	for (int attempt = 0; attempt < 3; attempt++) {
		/* O_NONBLOCK: a FIFO planted here must not block the daemon in open(). */
		fd = openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
		if (fd >= 0) {
			if (own_file(fd)) {
				(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
				return fd;
			}
			close(fd);
		} else if (errno != ELOOP && errno != ENXIO && errno != EISDIR && errno != EACCES &&
			   errno != EPERM && errno != EWOULDBLOCK) {
			return -errno;
		}
		if (!(flags & O_CREAT))
			return -EPERM;
		/* Not ours to write into: take it out of the way, then create ours exclusively. */
		if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
			return -errno;
		*replaced = true;
		flags |= O_EXCL;
	}
	return -EAGAIN;
}

int fileio_open_append(int dirfd, const char *name, mode_t mode, bool *replaced)
{
	return open_trusted(dirfd, name, O_WRONLY | O_CREAT | O_APPEND, mode, replaced);
}

int fileio_open_own(int dirfd, const char *name, int flags)
{
	bool replaced;

	return open_trusted(dirfd, name, flags & ~O_CREAT, 0, &replaced);
}

static int mkdirs_masked(char *buf, const char *path, size_t n, unsigned mode);

int fileio_mkdirs(const char *path, unsigned mode)
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

int fileio_sync_parent(const char *path)
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

static int copy_at(int in, int todir, const char *tmp)
{
	char buf[65536];
	int out, r = 0;
	ssize_t n;

	out = openat(todir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (out < 0)
		return -errno;
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
	close(out);
	if (r < 0)
		(void)unlinkat(todir, tmp, 0);
	return r;
}

/* Whether @a and @b hold the same bytes: a copy finished before a crash need not be made twice. */
static bool same_content(int fa, int fb)
{
	char ba[65536], bb[65536];
	struct stat sa, sb;
	ssize_t n;

	if (fstat(fa, &sa) < 0 || fstat(fb, &sb) < 0 || sa.st_size != sb.st_size)
		return false;
	while ((n = read(fa, ba, sizeof(ba))) > 0)
		if (read(fb, bb, (size_t)n) != n || memcmp(ba, bb, (size_t)n))
			return false;
	return n == 0;
}

int fileio_move_at(int fromdir, const char *from, int todir, const char *to)
{
	char tmp[LAYOUT_NAME_MAX + 1];
	int in = -1, have = -1, r;

	if (renameat2(fromdir, from, todir, to, RENAME_NOREPLACE) == 0)
		return 0;
	r = -errno;
	if (r == -EINVAL && faccessat(todir, to, F_OK, AT_SYMLINK_NOFOLLOW) != 0) {
		/* The filesystem has no RENAME_NOREPLACE (some overlays): nothing is at @to. */
		if (renameat(fromdir, from, todir, to) == 0)
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
	in = openat(fromdir, from, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (in < 0)
		return -errno;
	have = openat(todir, to, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (have >= 0 && same_content(in, have))
		goto unlink_source;
	if (lseek(in, 0, SEEK_SET) < 0) {
		r = -errno;
		goto out;
	}
	layout_name(tmp, ".", to, ".partial");
	(void)unlinkat(todir, tmp, 0);          /* a copy a crash cut short */
	if ((r = copy_at(in, todir, tmp)) < 0)
		goto out;
	if (renameat2(todir, tmp, todir, to, RENAME_NOREPLACE) < 0) {
		r = -errno;
		(void)unlinkat(todir, tmp, 0);
		goto out;
	}
	if (fsync(todir) < 0) {
		r = -errno;
		goto out;
	}
unlink_source:
	r = unlinkat(fromdir, from, 0) < 0 ? -errno : 0;
out:
	if (have >= 0)
		close(have);
	close(in);
	return r;
}
