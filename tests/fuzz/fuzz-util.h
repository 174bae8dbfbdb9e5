/* fuzz-util: a per-process scratch directory and small file helpers shared by the fuzz targets. */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A target aborts on a broken invariant: libFuzzer reports that as a crash with its input. */
#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                 \
		}                                                                                \
	} while (0)

/*
 * libFuzzer runs one input at a time in one process, so one scratch directory per process is
 * enough; it lives under $TMPDIR (run.sh points that at /dev/shm, where the fsyncs of the journal
 * and the catalog cost nothing) and is removed at exit.
 */
static char fuzz_dir[256];
static const char *const *fuzz_dir_files;

static inline void fuzz_dir_remove(void)
{
	char p[512];

	for (const char *const *f = fuzz_dir_files; f && *f; f++) {
		snprintf(p, sizeof(p), "%s/%s", fuzz_dir, *f);
		(void)unlink(p);
	}
	(void)rmdir(fuzz_dir);
}

/* @files: the names the target may leave in the directory (NULL-terminated), removed at exit. */
static inline const char *fuzz_dir_init(const char *tag, const char *const *files)
{
	const char *base = getenv("TMPDIR");

	if (fuzz_dir[0])
		return fuzz_dir;
	if (!base || !*base)
		base = "/tmp";
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/dcsyncd-fuzz-%s-XXXXXX", base, tag);
	if (!mkdtemp(fuzz_dir)) {
		perror("mkdtemp");
		abort();
	}
	fuzz_dir_files = files;
	atexit(fuzz_dir_remove);
	return fuzz_dir;
}

static inline char *fuzz_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", fuzz_dir, name);
	return buf;
}

static inline void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	const char *p = data;

	CHECK(fd >= 0);
	CHECK(fchmod(fd, mode) == 0);
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0);
		p += n;
		len -= (size_t)n;
	}
	CHECK(close(fd) == 0);
}
