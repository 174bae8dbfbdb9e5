/* spool: the spool's primitives: drop names, whether a file is ready, taking it, the connection directory and its subdirectories. */
#include "spool/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record/record_source.h"
#include "util/fileio.h"
#include "util/layout.h"

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && !strcmp(s + n - m, suffix);
}

static bool has_suffix_nocase(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && !strcasecmp(s + n - m, suffix);
}

bool spool_name_eligible(const char *name)
{
	/* The name says the format: record_source_kind_of reads it the same way. */
	return name[0] != '.' && record_source_kind_of(name, NULL) == 0;
}

/* The suffixes a drop may have (record_source_kind_of reads the same ones): one table for matching and messages. */
static const char *const formats[] = { ".ndjson", ".jsonl", ".csv", ".tsv" };
static const char *const comps[] = { "", ".gz", ".zst" };
#define N_FORMATS (sizeof(formats) / sizeof(formats[0]))
#define N_COMPS (sizeof(comps) / sizeof(comps[0]))

void spool_suffixes(char *buf, size_t n)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t f = 0; f < N_FORMATS; f++)
		for (size_t k = 0; k < N_COMPS; k++) {
			int w = snprintf(buf + len, n - len, "%s%s%s", len ? ", " : "", formats[f], comps[k]);

			if (w < 0 || (size_t)w >= n - len)
				return;
			len += (size_t)w;
		}
}

/* Any case: *.NDJSON, *.Csv.GZ and the like are named in the log, not taken. */
static bool drop_name_nocase(const char *name)
{
	char suffix[16];

	for (size_t f = 0; f < N_FORMATS; f++) {
		for (size_t k = 0; k < N_COMPS; k++) {
			snprintf(suffix, sizeof(suffix), "%s%s", formats[f], comps[k]);
			if (has_suffix_nocase(name, suffix))
				return true;
		}
	}
	return false;
}

enum spool_name_kind spool_name_kind(const char *name)
{
	if (spool_name_eligible(name))
		return SPOOL_NAME_DROP;
	/* The drop protocol's temporaries: written under these names, then renamed into place. */
	if (name[0] == '.' || has_suffix(name, ".tmp") || has_suffix(name, ".part"))
		return SPOOL_NAME_TEMPORARY;
	if (!strcmp(name, "rejected") || !strcmp(name, "failed"))
		return SPOOL_NAME_OWN;
	if (drop_name_nocase(name))
		return SPOOL_NAME_WRONG_CASE;
	return SPOOL_NAME_OTHER;
}

/* ---- files ---- */

static const char *kind_of(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFLNK: return "a symbolic link (never followed)";
	case S_IFDIR: return "a directory";
	case S_IFIFO: return "a FIFO";
	case S_IFSOCK: return "a socket";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	default: return "not a regular file";
	}
}

static int64_t ns_of(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

int spool_lease_probe(int fd)
{
	/*
	 * A read lease is granted only while no process has the file open for writing: the
	 * kernel's own answer to "is the exporter done?". It is granted only to the file's owner
	 * or with CAP_LEASE, so for a daemon running as its own user it is usually unavailable.
	 */
	if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0) {
		(void)fcntl(fd, F_SETLEASE, F_UNLCK);
		return 1;
	}
	if (errno == EAGAIN || errno == EBUSY)
		return 0;
	return -errno;
}

/* What a look at a file saw: any change of it (written, replaced, touched) changes this. */
static uint64_t state_of(const struct stat *st)
{
	const int64_t v[] = { (int64_t)st->st_dev, (int64_t)st->st_ino, (int64_t)st->st_size, ns_of(&st->st_mtim),
			      ns_of(&st->st_ctim) };
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		for (int b = 0; b < 64; b += 8)
			h = (h ^ (((uint64_t)v[i] >> b) & 0xff)) * 1099511628211ull;
	return h ? h : 1;
}

int spool_inspect(int dirfd, const char *name, int opens, uint64_t still_state, struct spool_look *look)
{
	struct stat lst, st;
	int fd, lease;

	memset(look, 0, sizeof(*look));
	if (fstatat(dirfd, name, &lst, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			return -errno;
		look->verdict = SPOOL_GONE;
		return 0;
	}
	if (!S_ISREG(lst.st_mode)) {
		/* Never opened: a FIFO would block, a device could act, a link leads anywhere. */
		look->verdict = SPOOL_REFUSED;
		look->why = kind_of(lst.st_mode);
		return 0;
	}
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		look->verdict = errno == ENOENT ? SPOOL_GONE : SPOOL_REFUSED;
		look->why = errno == EACCES ? "not readable by dcsyncd (give its group read access)"
					    : "replaced by something that is not a regular file";
		return errno == ENOENT || errno == EACCES || errno == ELOOP || errno == ENXIO ? 0 : -errno;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_ino != lst.st_ino || st.st_dev != lst.st_dev) {
		close(fd);
		look->verdict = SPOOL_WRITING;  /* replaced while we looked: the next event decides */
		return 0;
	}
	look->mtime_ns = ns_of(&st.st_mtim);
	look->state = state_of(&st);
	lease = spool_lease_probe(fd);
	close(fd);
	if (lease < 0)
		lease = opens < 0 ? -1 : opens == 0;
	if (lease >= 0) {
		look->verdict = lease ? SPOOL_READY : SPOOL_WRITING;
		look->trusted = lease;
		return 0;
	}
	/*
	 * Nobody can tell us: a file found in place must have been seen still for settle_seconds.
	 * Seen by the caller's clock, not judged by its mtime: tar, rsync and cp -p keep the mtime
	 * of the host that wrote it, which may be ahead of ours by a day.
	 */
	look->verdict = still_state && still_state == look->state ? SPOOL_READY : SPOOL_SETTLING;
	return 0;
}

int spool_take(int srcdir, const char *name, int dstdir, const char *dstname, struct stat *st, const char **why)
{
	struct stat moved;
	int fd, r;

	*why = NULL;
	fd = openat(srcdir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		if (r == -ELOOP || r == -ENXIO) {
			*why = "replaced by something that is not a regular file";
			r = -EINVAL;
		}
		return r;
	}
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		*why = kind_of(st->st_mode);
		r = -EINVAL;
		goto fail;
	}
	if (renameat2(srcdir, name, dstdir, dstname, RENAME_NOREPLACE) < 0) {
		r = -errno;
		if (r != -EINVAL || fstatat(dstdir, dstname, &moved, AT_SYMLINK_NOFOLLOW) == 0)
			goto fail;
		/* A filesystem without RENAME_NOREPLACE (some overlays), and nothing at @dstname. */
		if (renameat(srcdir, name, dstdir, dstname) < 0) {
			r = -errno;
			goto fail;
		}
	}
	/* What was renamed must be what was opened: the name could have been swapped in between. */
	if (fstatat(dstdir, dstname, &moved, AT_SYMLINK_NOFOLLOW) < 0 || moved.st_ino != st->st_ino ||
	    moved.st_dev != st->st_dev) {
		(void)renameat2(dstdir, dstname, srcdir, name, RENAME_NOREPLACE);
		*why = "replaced while it was being taken";
		r = -EINVAL;
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

int spool_scan(const char *dir, spool_name_fn fn, void *userdata)
{
	struct dirent *de;
	DIR *d;
	int fd = fileio_open_dir(dir);

	if (fd < 0)
		return fd;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			fn(userdata, de->d_name);
	closedir(d);
	return 0;
}

int spool_subdir(int parent, const char *name, unsigned mode, bool *fixed, long *foreign)
{
	char aside[LAYOUT_NAME_MAX + 1], prefix[32];
	struct stat st;
	int fd, r;

	*fixed = false;
	*foreign = -1;
	for (int attempt = 0;; attempt++) {
		if (mkdirat(parent, name, mode) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && fstat(fd, &st) == 0 && st.st_uid != geteuid() && !attempt) {
			/* Its owner could link, rename or read what dcsyncd writes there: not ours to use. */
			*foreign = (long)st.st_uid;
			close(fd);
			snprintf(prefix, sizeof(prefix), ".not-dcsyncd-%ld-", *foreign);
			layout_name(aside, prefix, name, "");
			if (renameat2(parent, name, parent, aside, RENAME_NOREPLACE) < 0)
				return -EPERM;
			*fixed = true;
			continue;
		}
		if (fd >= 0 && st.st_uid != geteuid()) {
			close(fd);
			return -EPERM;
		}
		if (fd >= 0)
			break;
		r = -errno;
		if ((r != -ELOOP && r != -ENOTDIR) || attempt)
			return r;
		/* Something else holds the name (a link planted by an exporter): ours to remove. */
		if (unlinkat(parent, name, 0) < 0)
			return -errno;
		*fixed = true;
	}
	/* A directory dcsyncd writes into is not writable by exporters (made so by older versions). */
	if ((st.st_mode & 0022 & ~mode)) {
		if (fchmod(fd, (st.st_mode & 07777) & ~(0022 & ~mode)) == 0)
			*fixed = true;
	}
	return fd;
}

int spool_conn_dir(const char *path, long *owner)
{
	struct stat st;
	int fd, r = 0;

	*owner = -1;
	if ((r = fileio_mkdirs(path, 01770)) < 0)
		return r;
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
	} else if (st.st_uid != geteuid()) {
		*owner = (long)st.st_uid;
		r = -EPERM;
	} else if (!(st.st_mode & S_ISVTX) && fchmod(fd, (st.st_mode & 07777) | S_ISVTX) < 0) {
		r = -errno;
	}
	close(fd);
	return r;
}
