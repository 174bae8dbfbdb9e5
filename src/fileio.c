/* fileio: the write loop every module that writes files needs, in one place. */
#include "fileio.h"

#include <errno.h>
#include <unistd.h>

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
