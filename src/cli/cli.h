/* cmds: the operators' commands dcsyncd(8) describes: drop, retry, connection create. */
#pragma once
/*
 * Contract. Each command is its own process, beside a running daemon or not. It owns what it
 * opens (directory fds, a temporary), closed before it returns, and borrows @cfg, argv and @out
 * for the call. It reaches the daemon only as an exporter does, by renaming a file into a
 * connection's directory, never replacing one (cli_rename_free): it never touches the journal or
 * .work/. May call: config, layout, spool, jsonstr, libcurl (connection create); messages go to
 * stderr, not the log.
 */

#include <stdio.h>

#include "config/config.h"

/*
 * Each takes its own argv (argv[0] the command word) and returns the exit status: 0 done,
 * 1 refused or failed (said on stderr), 2 bad usage.
 */
int cli_drop(const struct config *cfg, int argc, char **argv, FILE *out);
/* Exit 1 also when a file would have lines rejected or go to failed/: it reads, never sends. */
int cli_check(const struct config *cfg, int argc, char **argv, FILE *out);
int cli_retry(const struct config *cfg, int argc, char **argv, FILE *out);
/* @config_path may be NULL: then base URL and key files come from the options. */
int cli_connection(const char *config_path, int argc, char **argv, FILE *out);

/*
 * Rename @from (in @fromfd) to @name in @tofd, never replacing a file: when @name is taken,
 * "stem-2.suffix", "stem-3.suffix"... (the part from the name's first '.' after its first byte
 * is kept, so the suffix the daemon reads stays). The name used goes into @final (NAME_MAX + 1).
 */
int cli_rename_free(int fromfd, const char *from, int tofd, const char *name, char *final);
