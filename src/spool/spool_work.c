/* workfiles: custody of a connection's files in .work/, rejected/, failed/ and done/; never through a link, logs nothing. */
#include "spool/spool_work.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool/spool.h"
#include "util/fileio.h"

static int path_dup(char **out, enum layout_place place, const char *spool_dir, const char *state_dir,
		    const char *conn)
{
	char path[PATH_MAX];
	int r = layout_path(path, sizeof(path), place, spool_dir, state_dir, conn);

	if (r < 0)
		return r;
	return (*out = strdup(path)) ? 0 : -ENOMEM;
}

int spool_work_init(struct workfiles *w, const char *spool_dir, const char *state_dir, const char *conn)
{
	int r;

	memset(w, 0, sizeof(*w));
	w->dirfd = w->workfd = -1;
	w->foreign = -1;
	if ((r = path_dup(&w->dir, LAYOUT_SPOOL, spool_dir, state_dir, conn)) < 0 ||
	    (r = path_dup(&w->done_parent, LAYOUT_DONE_ALL, spool_dir, state_dir, conn)) < 0 ||
	    (r = path_dup(&w->done_dir, LAYOUT_DONE, spool_dir, state_dir, conn)) < 0) {
		spool_work_release(w);
		return r;
	}
	w->name = w->done_dir + strlen(w->done_parent) + 1;
	return 0;
}

void spool_work_forget(struct workfiles *w)
{
	if (w->workfd >= 0)
		close(w->workfd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	w->workfd = w->dirfd = -1;
}

void spool_work_release(struct workfiles *w)
{
	spool_work_forget(w);
	free(w->dir);
	free(w->done_parent);
	free(w->done_dir);
	memset(w, 0, sizeof(*w));
	w->dirfd = w->workfd = -1;
	w->foreign = -1;
}

int spool_work_dir(struct workfiles *w)
{
	if (w->dirfd < 0)
		w->dirfd = fileio_open_dir(w->dir);
	return w->dirfd;
}

int spool_work_subdir(struct workfiles *w, const char *sub, bool create, bool *fixed)
{
	int dfd = spool_work_dir(w), fd;

	*fixed = false;
	if (dfd < 0)
		return dfd;
	if (!create) {
		fd = openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return fd < 0 ? -errno : fd;
	}
	return spool_subdir(dfd, sub, 0750, fixed, &w->foreign);
}

int spool_work_work(struct workfiles *w, bool *fixed)
{
	int fd;

	*fixed = false;
	if (w->workfd >= 0)
		return w->workfd;
	if ((fd = spool_work_subdir(w, ".work", true, fixed)) < 0)
		return fd;
	return w->workfd = fd;
}

int spool_work_done(struct workfiles *w, bool *fixed)
{
	int pfd, fd;

	*fixed = false;
	if ((fd = fileio_mkdirs(w->done_parent, 0750)) < 0)
		return fd;
	if ((pfd = fileio_open_dir(w->done_parent)) < 0)
		return pfd;
	fd = spool_subdir(pfd, w->name, 0750, fixed, &w->foreign);
	close(pfd);
	return fd;
}

void spool_work_work_name(uint64_t fid, const char *name, char *out)
{
	char prefix[32];

	snprintf(prefix, sizeof(prefix), "%" PRIu64 "-", fid);
	layout_name(out, prefix, name, "");
}

void spool_work_rejected_name(const char *name, char *out)
{
	layout_name(out, "", name, ".rejected.ndjson");
}

void spool_work_identity(const struct stat *st, struct file_identity *id)
{
	id->dev = (uint64_t)st->st_dev;
	id->ino = (uint64_t)st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int spool_work_move(struct workfiles *w, uint64_t fid, const char *name, int dstfd, char *dst)
{
	char src[LAYOUT_NAME_MAX + 1];
	bool fixed;
	int wfd = spool_work_work(w, &fixed), r;

	if (wfd < 0)
		return wfd;
	spool_work_work_name(fid, name, src);
	layout_name(dst, "", name, "");
	r = fileio_move_at(wfd, src, dstfd, dst);
	if (r == -EEXIST) {
		/* A prefix keeps the .ndjson suffix: a file handed back to the spool stays eligible. */
		snprintf(dst, LAYOUT_NAME_MAX + 1, "%s", src);
		r = fileio_move_at(wfd, src, dstfd, dst);
	}
	return r;
}

int spool_work_sync(struct workfiles *w, int dstfd)
{
	int r = 0;

	if (dstfd >= 0 && fsync(dstfd) < 0)
		r = -errno;
	if (w->workfd >= 0 && fsync(w->workfd) < 0 && !r)
		r = -errno;
	return r;
}

bool spool_work_changed(struct workfiles *w, uint64_t fid, const char *name, const struct file_identity *id)
{
	char wn[LAYOUT_NAME_MAX + 1];
	struct file_identity now;
	struct stat st;
	bool fixed;
	int wfd = spool_work_work(w, &fixed);

	spool_work_work_name(fid, name, wn);
	if (wfd < 0 || fstatat(wfd, wn, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	spool_work_identity(&st, &now);
	return now.size != id->size || now.mtime_ns != id->mtime_ns;
}

int spool_work_reopen(struct workfiles *w, uint64_t fid, const char *name, const struct file_identity *id, bool *grew)
{
	char wn[LAYOUT_NAME_MAX + 1];
	struct file_identity now;
	struct stat st;
	bool fixed;
	int wfd = spool_work_work(w, &fixed), fd, r;

	if (wfd < 0)
		return wfd;
	spool_work_work_name(fid, name, wn);
	fd = openat(wfd, wn, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -ESTALE : -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	spool_work_identity(&st, &now);
	/* Never guess: resuming a changed file could send records the first requests did not. */
	if (!S_ISREG(st.st_mode) || now.dev != id->dev || now.ino != id->ino || now.size < id->size ||
	    (now.size == id->size && now.mtime_ns != id->mtime_ns)) {
		r = -ESTALE;
		goto fail;
	}
	*grew = now.size != id->size;
	return fd;
fail:
	close(fd);
	return r;
}

bool spool_work_holds(int dirfd, uint64_t fid, const char *name, const struct file_identity *id, bool copied_ok)
{
	char n[LAYOUT_NAME_MAX + 1];
	struct file_identity now;
	struct stat st;

	if (dirfd < 0)
		return false;
	for (int k = 0; k < 2; k++) {
		if (k == 0)
			layout_name(n, "", name, "");
		else
			spool_work_work_name(fid, name, n);
		if (fstatat(dirfd, n, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		spool_work_identity(&st, &now);
		/* A rename keeps the identity; a copy to another filesystem keeps only the size. */
		if (!memcmp(&now, id, sizeof(now)) || (copied_ok && now.dev != id->dev && now.size == id->size))
			return true;
	}
	return false;
}

uint64_t spool_work_rejected_size(struct workfiles *w, const char *name)
{
	char rn[LAYOUT_NAME_MAX + 1];
	struct stat st;
	uint64_t size = 0;
	bool fixed;
	int dfd = spool_work_subdir(w, "rejected", false, &fixed);

	if (dfd < 0)
		return 0;
	spool_work_rejected_name(name, rn);
	if (fstatat(dfd, rn, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
		size = (uint64_t)st.st_size;
	close(dfd);
	return size;
}

int spool_work_rejected_truncate(struct workfiles *w, const char *name, uint64_t size)
{
	char rn[LAYOUT_NAME_MAX + 1];
	bool fixed;
	int dfd, fd, r = 0;

	if (spool_work_rejected_size(w, name) <= size)
		return 0;
	if ((dfd = spool_work_subdir(w, "rejected", false, &fixed)) < 0)
		return dfd;
	spool_work_rejected_name(name, rn);
	fd = fileio_open_own(dfd, rn, O_WRONLY);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		r = fd < 0 ? fd : -errno;
	if (fd >= 0)
		close(fd);
	close(dfd);
	return r;
}

int spool_work_rejected_append(struct workfiles *w, const char *name, const void *buf, size_t len, bool *fixed,
			      bool *replaced)
{
	char rn[LAYOUT_NAME_MAX + 1];
	int dfd, fd, r;

	*replaced = false;
	if ((dfd = spool_work_subdir(w, "rejected", true, fixed)) < 0)
		return dfd;
	spool_work_rejected_name(name, rn);
	fd = fileio_open_append(dfd, rn, 0640, replaced);
	r = fd < 0 ? fd : fileio_write_all(fd, buf, len);
	if (fd >= 0)
		close(fd);
	close(dfd);
	return r;
}

int spool_work_error_json(int failedfd, const char *failed_name, const void *buf, size_t len)
{
	char path[LAYOUT_NAME_MAX + 1];

	layout_name(path, "", failed_name, ".error.json");
	return fileio_replace_at(failedfd, path, buf, len, 0640, true);
}
