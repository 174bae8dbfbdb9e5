/* csv: read CSV/TSV with a header (RFC 4180 quoting) row by row, each row made one compact JSON object. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "record/record_ndjson.h"

struct record_stream;

enum csv_type {
	CSV_STRING,
	CSV_INTEGER,
	CSV_NUMBER,
	CSV_BOOLEAN,
	CSV_JSON,
};

/* What an empty cell becomes: the field left out, null, or "" (csv_empty). */
enum csv_empty {
	CSV_EMPTY_OMIT,
	CSV_EMPTY_NULL,
	CSV_EMPTY_STRING,
};

struct csv_column {
	char *name;
	enum csv_type type;
};

struct csv_options {
	struct csv_column *columns;     /* csv_columns: the type of named columns; others are strings */
	size_t n_columns;
	char delimiter;                 /* 0: ',' for .csv, tab for .tsv */
	enum csv_empty empty;
	const char *primary_key;        /* the header must name it */
};

/*
 * Parse "id:integer, score:number, tags:json" (commas or blanks between items) and append to
 * @o's columns. 0, or -EINVAL with a reason in @err (-ENOMEM).
 */
int record_csv_columns_parse(struct csv_options *o, const char *spec, char *err, size_t errlen);
void record_csv_options_release(struct csv_options *o);
/*
 * FNV-1a of what makes a CSV row a record (csv_columns in order, csv_delimiter, csv_empty), never
 * 0: the journal keeps it, so that a batch is never finished with rows cut by other options.
 */
uint64_t record_csv_options_hash(const struct csv_options *o);
const char *record_csv_type_name(enum csv_type t);

/*
 * A csv_reader owns its csv_scan (the buffer and the row's cells), the header's column names
 * (escaped, as JSON keys) and the JSON of the row last read; a line it returns points into those
 * and holds until the next record_csv_reader_next/open/free. It borrows the record_stream and the options
 * from record_csv_reader_open until the next open or free. It calls csv_scan (cutting rows into
 * cells), record_stream (errors) and yajl (checking json cells); it logs nothing.
 */
struct csv_reader;

int record_csv_reader_new(struct csv_reader **out, size_t max_record_bytes);
void record_csv_reader_free(struct csv_reader *r);
/*
 * Read @in (at its start) as CSV split by @delim: the header first, then position the reader at
 * stream offset @offset with line number @lineno (offset 0: the first row after the header).
 * -EBADMSG with a reason in record_csv_reader_error when the header is unusable (or the stream is).
 */
int record_csv_reader_open(struct csv_reader *r, struct record_stream *in, char delim, const struct csv_options *o,
		    off_t offset, uint64_t lineno);
/*
 * 1: a row in @line: its JSON object in data/len, or, for a row that cannot be one, the reason
 * in error and the row's text in data/len (its first bytes when longer than max_record_bytes;
 * the opening line alone of a stray quote, csv_scan.h); 0: end of
 * the file; negative errno on a read or decompression error. Blank lines are skipped.
 */
int record_csv_reader_next(struct csv_reader *r, struct ndjson_line *line);
/* After the end of the file: look again (it grew), reading on where the reader stood. */
void record_csv_reader_read_on(struct csv_reader *r);
off_t record_csv_reader_offset(const struct csv_reader *r);
uint64_t record_csv_reader_lineno(const struct csv_reader *r);
void record_csv_reader_unget(struct csv_reader *r);
const char *record_csv_reader_error(const struct csv_reader *r);
