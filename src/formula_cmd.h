/* formula_cmd: `dcsyncd formula`: build, check and list Data Connection formulas from the field catalog. */
#pragma once

#include <stdio.h>

#include "config.h"

/* argv[0] is "formula". Returns the exit status: 0 ok, 1 refused, 2 usage. */
int formula_cmd(const struct config *cfg, int argc, char **argv, FILE *out);
