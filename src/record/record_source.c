/* source: the records of a drop, whatever its format: NDJSON or CSV/TSV, plain, gzip or zstd. */
#include "record/record_source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct source {
	struct source_kind kind;
	int fd;
	dev_t dev;
	ino_t ino;
	size_t max_record;
	struct record_stream *in;
	struct ndjson_reader *nd;
	struct csv_reader *csv;
	bool at_end;            /* the last next() said end of file */
	char err[512];
};

/* For a caller with no connection (tests): strings only, and a header needs no particular column. */
static const struct csv_options no_csv_options = { .primary_key = "" };

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n > k && !memcmp(s + n - k, suffix, k);
}

int record_source_kind_of(const char *name, struct source_kind *out)
{
	size_t n = strlen(name);
	struct source_kind k = { SOURCE_NDJSON, COMPRESSION_NONE };

	if (ends_with(name, n, ".gz")) {
		k.comp = COMPRESSION_GZIP;
		n -= 3;
	} else if (ends_with(name, n, ".zst")) {
		k.comp = COMPRESSION_ZSTD;
		n -= 4;
	}
	if (ends_with(name, n, ".ndjson") || ends_with(name, n, ".jsonl"))
		k.format = SOURCE_NDJSON;
	else if (ends_with(name, n, ".csv"))
		k.format = SOURCE_CSV;
	else if (ends_with(name, n, ".tsv"))
		k.format = SOURCE_TSV;
	else
		return -EINVAL;
	if (out)
		*out = k;
	return 0;
}

void record_source_free(struct source *s)
{
	if (!s)
		return;
	record_decompress_free(s->in);
	record_ndjson_reader_free(s->nd);
	record_csv_reader_free(s->csv);
	free(s);
}

static int make(struct source **sp, size_t max_record_bytes)
{
	struct source *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->fd = -1;
	s->max_record = max_record_bytes;
	/* The CSV reader's buffer is made with the first CSV file: an NDJSON connection holds one buffer. */
	if ((r = record_decompress_new(&s->in)) < 0 || (r = record_ndjson_reader_new(&s->nd, -1, 0, 1, max_record_bytes)) < 0) {
		record_source_free(s);
		return r;
	}
	*sp = s;
	return 0;
}

static int failed(struct source *s, int r)
{
	const char *why = NULL;

	if (r == -EBADMSG)
		why = s->kind.format == SOURCE_NDJSON ? record_decompress_error(s->in) : record_csv_reader_error(s->csv);
	if (r == -ENODATA) {
		why = "the file is shorter than the journal says it was read";
		r = -EBADMSG;
	}
	if (why && why != s->err)
		snprintf(s->err, sizeof(s->err), "%s", why);
	s->fd = -1;
	return r;
}

/*
 * The same file, read to its end, asked for at that end again (it grew after its batch read it
 * all): read on where the stream stands instead of decompressing it again from the start.
 */
static bool reading_on(const struct source *s, int fd, const struct stat *st, off_t offset, uint64_t lineno)
{
	return s->fd == fd && s->at_end && !s->err[0] && s->dev == st->st_dev && s->ino == st->st_ino &&
	       (s->kind.comp != COMPRESSION_NONE || s->kind.format != SOURCE_NDJSON) &&
	       offset == record_source_offset(s) && lineno == record_source_lineno(s);
}

int record_source_open(struct source **sp, int fd, const char *name, const struct csv_options *csv, off_t offset,
		uint64_t lineno, size_t max_record_bytes)
{
	struct source *s = *sp;
	struct source_kind kind;
	struct stat st;
	char delim;
	int r;

	if (s && s->max_record != max_record_bytes) {
		record_source_free(s);
		*sp = s = NULL;
	}
	if (!s && (r = make(sp, max_record_bytes)) < 0)
		return r;
	s = *sp;
	if (record_source_kind_of(name, &kind) < 0)
		kind = (struct source_kind){ SOURCE_NDJSON, COMPRESSION_NONE };
	if (fstat(fd, &st) < 0)
		return failed(s, -errno);
	if (s->kind.format == kind.format && s->kind.comp == kind.comp && reading_on(s, fd, &st, offset, lineno)) {
		record_decompress_read_on(s->in);
		if (kind.format == SOURCE_NDJSON)
			record_ndjson_reader_reset_stream(s->nd, s->in, offset, lineno);
		else
			record_csv_reader_read_on(s->csv);
		s->at_end = false;
		return 0;
	}
	s->kind = kind;
	s->err[0] = '\0';
	s->at_end = false;
	s->fd = fd;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if (kind.format == SOURCE_NDJSON && kind.comp == COMPRESSION_NONE) {
		/* As it always was: the reader reads the descriptor itself. */
		if ((r = record_ndjson_reader_reset(s->nd, fd, offset, lineno)) < 0)
			return failed(s, r);
		return 0;
	}
	if ((r = record_decompress_open(s->in, fd, kind.comp)) < 0)
		return failed(s, r);
	if (kind.format == SOURCE_NDJSON) {
		if ((r = record_decompress_skip(s->in, (uint64_t)offset)) < 0)
			return failed(s, r);
		record_ndjson_reader_reset_stream(s->nd, s->in, offset, lineno);
		return 0;
	}
	if (!csv)
		csv = &no_csv_options;
	if (!s->csv && (r = record_csv_reader_new(&s->csv, max_record_bytes)) < 0)
		return failed(s, r);
	delim = csv && csv->delimiter ? csv->delimiter : kind.format == SOURCE_TSV ? '\t' : ',';
	if ((r = record_csv_reader_open(s->csv, s->in, delim, csv, offset, lineno)) < 0)
		return failed(s, r);
	return 0;
}

int record_source_next(struct source *s, struct ndjson_line *line)
{
	int r;

	if (s->kind.format == SOURCE_NDJSON)
		r = record_ndjson_reader_next(s->nd, line);
	else
		r = record_csv_reader_next(s->csv, line);
	if (r < 0)
		return failed(s, r);
	s->at_end = r == 0;
	return r;
}

off_t record_source_offset(const struct source *s)
{
	return s->kind.format == SOURCE_NDJSON ? record_ndjson_reader_offset(s->nd) : record_csv_reader_offset(s->csv);
}

uint64_t record_source_lineno(const struct source *s)
{
	return s->kind.format == SOURCE_NDJSON ? record_ndjson_reader_lineno(s->nd) : record_csv_reader_lineno(s->csv);
}

void record_source_unget(struct source *s)
{
	s->at_end = false;
	if (s->kind.format == SOURCE_NDJSON)
		record_ndjson_reader_unget(s->nd);
	else
		record_csv_reader_unget(s->csv);
}

uint64_t record_source_file_offset(const struct source *s)
{
	if (s->kind.comp == COMPRESSION_NONE)
		return (uint64_t)record_source_offset(s);
	return record_decompress_file_offset(s->in);
}

const char *record_source_error(const struct source *s)
{
	return s->err[0] ? s->err : NULL;
}
