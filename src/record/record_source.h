/* source: the records of a drop, whatever its format: NDJSON or CSV/TSV, plain, gzip or zstd. */
#pragma once
/*
 * Contract.
 * Owns: its decompressing stream and its NDJSON and CSV readers (the CSV one made with the first
 * CSV file) with their buffers, kept from one file to the next until record_source_free.
 * Borrows: the fd and @csv from record_source_open to the next record_source_open or record_source_free (the fd is
 * never closed here); a line's data until the next record_source_next.
 * May call: decompress, ndjson's reader, csv; no log: a fault is -EBADMSG with record_source_error.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "record/record_csv.h"
#include "record/record_decompress.h"
#include "record/record_ndjson.h"

enum source_format {
	SOURCE_NDJSON,
	SOURCE_CSV,
	SOURCE_TSV,
};

struct source_kind {
	enum source_format format;
	enum compression comp;
};

/* What a drop's name says it is: 0, or -EINVAL for a name that is no drop (lower case only). */
int record_source_kind_of(const char *name, struct source_kind *out);

struct source;

/*
 * Point *@sp (made when NULL, or made anew for another @max_record_bytes) at @fd, read as its
 * @name says, at @offset with line @lineno. Offsets are those of the file's decompressed bytes:
 * a compressed file is entered in the middle by decompressing it from its start again; a CSV
 * file's header is read again first. -EBADMSG with record_source_error when the file cannot be read as
 * its name says (a header without the primary key, corrupt compressed data...).
 */
int record_source_open(struct source **sp, int fd, const char *name, const struct csv_options *csv, off_t offset,
		uint64_t lineno, size_t max_record_bytes);
void record_source_free(struct source *s);
/* As record_ndjson_reader_next; a CSV row that cannot be a record comes with line->error set. */
int record_source_next(struct source *s, struct ndjson_line *line);
off_t record_source_offset(const struct source *s);
uint64_t record_source_lineno(const struct source *s);
void record_source_unget(struct source *s);
/* Bytes of the file itself read to reach record_source_offset (the same but for a compressed file). */
uint64_t record_source_file_offset(const struct source *s);
/* Why the last call returned -EBADMSG, or NULL. */
const char *record_source_error(const struct source *s);
