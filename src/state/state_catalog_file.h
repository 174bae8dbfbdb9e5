/* state_catalog_file: a field catalog's text file: saved whole by atomic replace, loaded all or nothing. */
#pragma once

#include <stddef.h>

#include "state/state_catalog.h"

/*
 * Contract.
 * Owns: nothing past a call: the file's bytes are read or built in a buffer freed before return.
 * Borrows: the catalog and @path for the call.
 * May call: catalog's public functions (count, field_at, overflow, add, add_overflow, busy),
 * fileio, libc. Does not log: callers log once, with the file's name and line.
 */

/*
 * Text file, one line each, fields tab-separated:
 *     # dcsyncd field catalog 1
 *     overflow	<count>
 *     field	<records>	<last_seen>	<name>
 * In the name, '\\' '\t' '\n' '\r' are escaped as \\ \t \n \r and other control bytes as \xHH;
 * other bytes (UTF-8) are written as they are.
 * state_catalog_file_save() writes <path>.tmp, fsyncs it, renames it over <path> and fsyncs the directory,
 * so a crash leaves the old file or the new one. -EBUSY while a record is noted but not committed.
 */
int state_catalog_file_save(struct catalog *c, const char *path);
/*
 * Merge @path into @c: records add up, last_seen keeps the later, names that do not fit count as
 * overflow. -ENOENT when the file is absent (a new connection: fine). -EBADMSG when a line is
 * malformed, and then @c is unchanged; @bad_line (may be NULL) receives its number.
 * -EBUSY while a record is noted but not committed.
 */
int state_catalog_file_load(struct catalog *c, const char *path, size_t *bad_line);
