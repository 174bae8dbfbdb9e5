/* layout: where dcsyncd keeps things: the paths of a connection's directories, and names derived from a dropped file's (<= NAME_MAX). */
#pragma once
/*
 * Contract. No state: owns nothing, touches no file, writes only into the caller's buffer.
 * May call: libc only. Every module that names a place under spool_dir or state_dir asks here,
 * so each is spelled once.
 */

#include <stddef.h>

#define LAYOUT_NAME_MAX 255

/*
 * Write @prefix @name @suffix into @out (LAYOUT_NAME_MAX + 1 bytes). When that is longer than
 * a file name may be, the middle of @name gives way to "~", keeping its start and its last 40
 * bytes (its .ndjson / .csv.gz suffix), cut on UTF-8 boundaries: every legal dropped name has a
 * place in .work/, done/, failed/ and rejected/. The same inputs always give the same name.
 */
void layout_name(char *out, const char *prefix, const char *name, const char *suffix);

/* A connection's places; the one place their paths are spelled. */
enum layout_place {
	LAYOUT_SPOOL,           /* <spool_dir>/<conn>: where its files are dropped */
	LAYOUT_FAILED,          /* <spool_dir>/<conn>/failed */
	LAYOUT_REJECTED,        /* <spool_dir>/<conn>/rejected */
	LAYOUT_DONE_ALL,        /* <state_dir>/done: above every connection's done/ */
	LAYOUT_DONE,            /* <state_dir>/done/<conn> */
	LAYOUT_FIELDS,          /* <state_dir>/fields: above every connection's field catalog */
	LAYOUT_CATALOG,         /* <state_dir>/fields/<conn>.catalog */
};

/* Write the path of @place into @out (@n bytes). 0, or -ENAMETOOLONG (then @out holds a prefix of it). */
int layout_path(char *out, size_t n, enum layout_place place, const char *spool_dir, const char *state_dir,
		const char *conn);
