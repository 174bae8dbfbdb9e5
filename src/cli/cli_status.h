/* status: the `dcsyncd status` report, read from the journal and the spool (daemon running or not). */
#pragma once
/*
 * Contract.
 * Owns: the journal and totals it opens read-only, for the call.
 * Borrows: @cfg and @out for the call.
 * May call: journal and totals (read-only), spool (which names are drops), layout, jsonstr,
 * libc. It writes nothing, so it runs beside a running daemon; what it cannot read goes to stderr.
 */

#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"

/* Print per connection: queued files, the batch in flight, failures, rejects, last outcomes; as text or one JSON object. */
int cli_status_print(const struct config *cfg, bool json, FILE *out);
