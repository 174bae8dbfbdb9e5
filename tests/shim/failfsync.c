/* failfsync: an LD_PRELOAD shim for tests: fsync of a directory whose path ends in $DCSYNCD_FAIL_FSYNC_DIR fails with EIO. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int fsync(int fd);

int fsync(int fd)
{
	const char *want = getenv("DCSYNCD_FAIL_FSYNC_DIR");
	char link[64], path[4096];
	struct stat st;
	ssize_t n;

	if (want && *want && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, path, sizeof(path) - 1);
		if (n > 0) {
			size_t len = strlen(want);

			path[n] = '\0';
			if ((size_t)n >= len && !strcmp(path + n - len, want)) {
				errno = EIO;
				return -1;
			}
		}
	}
	return (int)syscall(SYS_fsync, fd);
}
