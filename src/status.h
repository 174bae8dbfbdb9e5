/* status: the `dcsyncd status` report, read from the journal and the spool (daemon running or not). */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* Print per connection: queued files, the batch in flight, failures, rejects, last outcomes; as text or one JSON object. */
int status_print(const struct config *cfg, bool json, FILE *out);
