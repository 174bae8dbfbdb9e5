/* ndjson: read a file line by line in fixed-size blocks and validate each line as one record. */
#pragma once
/*
 * Contract.
 * Owns: a reader's one buffer (max_record_bytes plus a block), kept across resets; a validator's
 * parse state and the arena yajl allocates from.
 * Borrows: a reader's fd or instream until the next reset or free (never closed here); a line's
 * data until the next call. A validator keeps @primary_key and @required_fields without copying
 * them, so the conn_config they come from must outlive it, and the catalog set on it until
 * another is set.
 * May call: yajl, decompress (the stream), catalog (each valid record's field names), libc.
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
int ndjson_reader_new(struct ndjson_reader **out, int fd, off_t offset, uint64_t first_lineno,
		      size_t max_record_bytes);
void ndjson_reader_free(struct ndjson_reader *r);
/* Point the reader at another file, keeping its buffer (small files in a row cost no allocation). */
int ndjson_reader_reset(struct ndjson_reader *r, int fd, off_t offset, uint64_t first_lineno);
struct instream;
/*
 * Read from @in instead of a file descriptor (decompressed data): @in's next byte is at
 * stream offset @offset. A read error of the stream is returned by ndjson_reader_next.
 */
void ndjson_reader_reset_stream(struct ndjson_reader *r, struct instream *in, off_t offset, uint64_t first_lineno);
/* 1: a non-blank line in @line; 0: end of file; negative errno on a read error. */
int ndjson_reader_next(struct ndjson_reader *r, struct ndjson_line *line);
/* Offset and number of the line the next call will return. */
off_t ndjson_reader_offset(const struct ndjson_reader *r);
uint64_t ndjson_reader_lineno(const struct ndjson_reader *r);
/* Hand the last line back: the next call returns it again. */
void ndjson_reader_unget(struct ndjson_reader *r);

struct record_validator;

/* required_fields are tracked in a 64-bit mask: config.c refuses more. */
#define RECORD_MAX_REQUIRED 64
/*
 * Nesting of objects and arrays, the record's own object counting as 1: deeper records are
 * rejected locally (max_depth). 64 is the default limit of .NET's System.Text.Json and of
 * Json.NET: a server built on them refuses deeper documents, and no flat customer record needs
 * more. RECORD_MAX_DEPTH_LIMIT bounds what max_depth may be configured to.
 */
#define RECORD_DEFAULT_MAX_DEPTH 64
#define RECORD_MAX_DEPTH_LIMIT 1000

/* The validator starts with RECORD_DEFAULT_MAX_DEPTH; -E2BIG for more than RECORD_MAX_REQUIRED fields. */
int record_validator_new(struct record_validator **out, const char *primary_key,
			 char *const *required_fields, size_t n_required);
void record_validator_free(struct record_validator *v);
struct catalog;
/* Note the top-level field names of every valid record in @catalog (NULL: none). */
void record_validator_set_catalog(struct record_validator *v, struct catalog *catalog);
/* The catalog set on @v (NULL: none). */
struct catalog *record_validator_catalog(const struct record_validator *v);
/*
 * After record_validator_check passed @data: the primary key's value as its JSON text (a string
 * with its quotes, or a number) in *@key, *@key_len. -EINVAL if it cannot be found.
 */
int record_validator_key(const struct record_validator *v, const char *data, size_t len, const char **key,
			 size_t *key_len);
/* Records nested deeper than @max_depth (1..RECORD_MAX_DEPTH_LIMIT) are refused. */
void record_validator_set_max_depth(struct record_validator *v, unsigned max_depth);
/*
 * 0 when @data is one JSON object, nested no deeper than max_depth, carrying the primary key
 * once, as a string or number, and every required field; otherwise -EINVAL with a human-readable reason in @reason.
 */
int record_validator_check(struct record_validator *v, const char *data, size_t len,
			   char *reason, size_t reason_len);
