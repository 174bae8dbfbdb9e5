/* ndjson: read a file line by line in fixed-size blocks, each line one record for the record check. */
#pragma once
/*
 * Contract.
 * Owns: a reader's one buffer (max_record_bytes plus a block), kept across resets.
 * Borrows: a reader's fd or record_stream until the next reset or free (never closed here); a line's
 * data until the next call.
 * May call: decompress (the stream), libc.
 * No log: the caller says which file and line.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct ndjson_reader;

struct ndjson_line {
	const char *data;       /* trimmed of surrounding blanks and CR; valid until the next call */
	size_t len;
	uint64_t lineno;        /* 1-based */
	off_t start_offset;     /* file offset of the line's first byte */
	off_t end_offset;       /* file offset just after the line's newline */
	bool too_long;          /* longer than max_record_bytes: data is NULL, the line was skipped */
	const char *error;      /* not a record (a CSV row that cannot be one): why; data holds its text */
};

/*
 * Read @fd from @offset (@fd -1: none yet, for a reader reset before use), numbering lines from @first_lineno. Memory is bounded by
 * @max_record_bytes plus one read block, whatever the file's size.
 */
int record_ndjson_reader_new(struct ndjson_reader **out, int fd, off_t offset, uint64_t first_lineno,
		      size_t max_record_bytes);
void record_ndjson_reader_free(struct ndjson_reader *r);
/* Point the reader at another file, keeping its buffer (small files in a row cost no allocation). */
int record_ndjson_reader_reset(struct ndjson_reader *r, int fd, off_t offset, uint64_t first_lineno);
struct record_stream;
/*
 * Read from @in instead of a file descriptor (decompressed data): @in's next byte is at
 * stream offset @offset. A read error of the stream is returned by record_ndjson_reader_next.
 */
void record_ndjson_reader_reset_stream(struct ndjson_reader *r, struct record_stream *in, off_t offset, uint64_t first_lineno);
/* 1: a non-blank line in @line; 0: end of file; negative errno on a read error. */
int record_ndjson_reader_next(struct ndjson_reader *r, struct ndjson_line *line);
/* Offset and number of the line the next call will return. */
off_t record_ndjson_reader_offset(const struct ndjson_reader *r);
uint64_t record_ndjson_reader_lineno(const struct ndjson_reader *r);
/* Hand the last line back: the next call returns it again. */
void record_ndjson_reader_unget(struct ndjson_reader *r);
