/* cli_formula_cmd: `dcsyncd formula`: build, check and list Data Connection formulas from the field catalog. */
#pragma once
/*
 * Contract.
 * Owns: the field catalog it loads for the command, freed before it returns.
 * Borrows: @cfg, argv and @out for the call.
 * May call: state_catalog, state_catalog_file (load only), cli_formula, layout, libc. It writes nothing, so it
 * runs beside a running daemon, seeing the catalog as last saved; refusals go to stderr, not log.
 */

#include <stdio.h>

#include "config/config.h"

/* argv[0] is "formula". Returns the exit status: 0 ok, 1 refused, 2 usage. */
int cli_formula_cmd(const struct config *cfg, int argc, char **argv, FILE *out);
