/* cli: the operators' commands dcsyncd(8) describes: drop, check, retry, history, forget, connection create (status and formula have headers of their own). */
#pragma once
/*
 * Contract. Each command is its own process, beside a running daemon or not. It owns what it
 * opens (directory fds, a temporary, a read-only store or history), closed before it returns,
 * and borrows @cfg, argv and @out for the call. It reaches the daemon only as an exporter does
 * (renaming a file into a connection's directory, never replacing one: cli_rename_free) or by
 * a request file the daemon takes (forget's); it never writes the journal or .work/ (status
 * reads the journal read-only). May call: config, record (check reads files as the daemon
 * would), state (journal, history, store, totals: read-only, forget's request), spool, layout,
 * jsonstr, wire_upload (connection create); messages go to stderr, not the log.
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
/*
 * `dcsyncd history [CONNECTION] [--json] [--limit N]`: newest first, every configured connection
 * or one. 0 done, 1 a history could not be read (said on stderr), 2 bad usage.
 */
int cli_history(const struct config *cfg, int argc, char **argv, FILE *out);
/* skip_unchanged: leave the connection's store a request to forget everything (state_store.h). */
int cli_forget(const struct config *cfg, int argc, char **argv, FILE *out);
/* @config_path may be NULL: then base URL and key files come from the options. */
int cli_connection(const char *config_path, int argc, char **argv, FILE *out);

/*
 * Rename @from (in @fromfd) to @name in @tofd, never replacing a file: when @name is taken,
 * "stem-2.suffix", "stem-3.suffix"... (the part from the name's first '.' after its first byte
 * is kept, so the suffix the daemon reads stays). The name used goes into @final (NAME_MAX + 1).
 */
int cli_rename_free(int fromfd, const char *from, int tofd, const char *name, char *final);
