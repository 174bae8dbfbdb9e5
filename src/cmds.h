/* cmds: the operators' commands dcsyncd(8) describes: drop, retry, connection create. */
#pragma once

#include <stdio.h>

#include "config.h"

/*
 * Each takes its own argv (argv[0] the command word) and returns the exit status: 0 done,
 * 1 refused or failed (said on stderr), 2 bad usage.
 */
int drop_cmd(const struct config *cfg, int argc, char **argv, FILE *out);
int retry_cmd(const struct config *cfg, int argc, char **argv, FILE *out);
/* @config_path may be NULL: then base URL and key files come from the options. */
int connection_cmd(const char *config_path, int argc, char **argv, FILE *out);

/*
 * Rename @from (in @fromfd) to @name in @tofd, never replacing a file: when @name is taken,
 * "stem-2.suffix", "stem-3.suffix"... (the part from the name's first '.' after its first byte
 * is kept, so the suffix the daemon reads stays). The name used goes into @final (NAME_MAX + 1).
 */
int cmd_rename_free(int fromfd, const char *from, int tofd, const char *name, char *final);
