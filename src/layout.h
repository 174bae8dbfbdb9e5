/* layout: the names dcsyncd derives from a dropped file's name, each a legal name (<= NAME_MAX). */
#pragma once

#include <stddef.h>

#define LAYOUT_NAME_MAX 255

/*
 * Write @prefix @name @suffix into @out (LAYOUT_NAME_MAX + 1 bytes). When that is longer than
 * a file name may be, the middle of @name gives way to "~", keeping its start and its last 40
 * bytes (its .ndjson / .csv.gz suffix), cut on UTF-8 boundaries: every legal dropped name has a
 * place in .work/, done/, failed/ and rejected/. The same inputs always give the same name.
 */
void layout_name(char *out, const char *prefix, const char *name, const char *suffix);
