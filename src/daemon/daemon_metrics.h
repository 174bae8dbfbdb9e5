/* daemon_metrics: the Prometheus text-format file, replaced atomically. */
#pragma once
/*
 * Contract.
 * Owns: the text it builds, for the call.
 * Borrows: @conns for the call.
 * May call: the connection's read-only accessors (connection_stats, _totals, _queued, _rate_budget...),
 * fileio_replace. Does not log: the daemon, its only caller, says once that the file cannot be
 * written.
 */

#include <stdbool.h>
#include <stddef.h>

struct connection;

/*
 * Write @path (via a temporary and rename, mode 0644 whatever the umask) with the counters of
 * @conns and whether the daemon's journal can be made durable now (@journal_durable).
 */
int daemon_metrics_write(const char *path, struct connection *const *conns, size_t n_conns, bool journal_durable, double now);
