/* fileio: writing files safely where others can write too: whole writes, no links followed, atomic replace. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout.h"

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
