/* daemon: the top-level context: config, loop, journal, connections, signals, systemd protocol. */
#pragma once
/*
 * Contract.
 * Owns: what lives as long as the process: the loaded struct config (replaced whole by a reload),
 * the loop, the journal, the totals, the upload context, every connection (and those a reload
 * removed, until their batch is done), the signal watchers and the timers of the drain, status
 * line, watchdog and metrics file.
 * Borrows: @opts (copied; its strings are argv's).
 * May call: config, connection, journal, totals, upload, metrics, spool, log; libev, libcurl's
 * global init, sd_notify. The top of the layering: only a connection's changed callback calls
 * back into it.
 */

#include <stdbool.h>

struct daemon_opts {
	const char *config_path;
	bool once;
	bool progress;          /* live progress line (stderr is a terminal) */
};

/* Run until stopped (or, with once, until the spool is empty). Returns the process exit status. */
int daemon_run(const struct daemon_opts *opts);
