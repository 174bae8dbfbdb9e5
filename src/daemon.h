/* daemon: the top-level context: config, loop, journal, connections, signals, systemd protocol. */
#pragma once

#include <stdbool.h>

struct daemon_opts {
	const char *config_path;
	bool once;
	bool progress;          /* live progress line (stderr is a terminal) */
};

/* Run until stopped (or, with once, until the spool is empty). Returns the process exit status. */
int daemon_run(const struct daemon_opts *opts);
