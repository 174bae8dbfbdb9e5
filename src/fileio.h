/* fileio: the write loop every module that writes files needs, in one place. */
#pragma once

#include <stddef.h>

/* Write all @len bytes of @buf to @fd, resuming after short writes and EINTR. 0 or -errno. */
int fileio_write_all(int fd, const void *buf, size_t len);
