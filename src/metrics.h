/* metrics: the Prometheus text-format file, replaced atomically. */
#pragma once

#include <stddef.h>

struct connection;

/* Write @path (via a temporary and rename) with the counters of @conns. */
int metrics_write(const char *path, struct connection *const *conns, size_t n_conns, double now);
