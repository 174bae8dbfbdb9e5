/* ndjson: read a file line by line in fixed-size blocks, each line one record for the record check. */
#include "record/record_ndjson.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "record/record_decompress.h"

#define READ_BLOCK (256 * 1024)

struct ndjson_reader {
	int fd;
	struct record_stream *in;    /* read from this when set, not from fd */
	char *buf;
	size_t cap;
	size_t start;           /* first unconsumed byte */
	size_t end;             /* end of valid data */
	off_t buf_offset;       /* file offset of buf[0] */
	uint64_t next_lineno;
	size_t max_record;
	bool eof;
	bool at_file_start;     /* offset 0: a UTF-8 byte order mark there is skipped */
	bool have_last;         /* the last line may be handed back */
	bool replay;            /* the next call returns the last line again */
	struct ndjson_line last;
};

int record_ndjson_reader_new(struct ndjson_reader **out, int fd, off_t offset, uint64_t first_lineno,
		      size_t max_record_bytes)
{
	struct ndjson_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->cap = max_record_bytes + READ_BLOCK + 1;
	r->buf = malloc(r->cap);
	if (!r->buf) {
		free(r);
		return -ENOMEM;
	}
	if (fd >= 0 && lseek(fd, offset, SEEK_SET) < 0) {
		int e = -errno;

		free(r->buf);
		free(r);
		return e;
	}
	if (fd >= 0)
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	r->fd = fd;
	r->buf_offset = offset;
	r->next_lineno = first_lineno;
	r->max_record = max_record_bytes;
	r->at_file_start = offset == 0;
	*out = r;
	return 0;
}

void record_ndjson_reader_reset_stream(struct ndjson_reader *r, struct record_stream *in, off_t offset, uint64_t first_lineno)
{
	r->fd = -1;
	r->in = in;
	r->start = r->end = 0;
	r->buf_offset = offset;
	r->next_lineno = first_lineno;
	r->eof = false;
	r->at_file_start = offset == 0;
	r->have_last = false;
	r->replay = false;
}

int record_ndjson_reader_reset(struct ndjson_reader *r, int fd, off_t offset, uint64_t first_lineno)
{
	if (lseek(fd, offset, SEEK_SET) < 0)
		return -errno;
	record_ndjson_reader_reset_stream(r, NULL, offset, first_lineno);
	r->fd = fd;
	return 0;
}

void record_ndjson_reader_free(struct ndjson_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	free(r);
}

/* Move unconsumed bytes to the front and read more. 0 ok, 1 eof (nothing added), <0 error. */
static int fill(struct ndjson_reader *r)
{
	ssize_t n;

	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->buf_offset += (off_t)r->start;
		r->end -= r->start;
		r->start = 0;
	}
	if (r->in) {
		n = record_decompress_read(r->in, r->buf + r->end, r->cap - r->end);
		if (n < 0)
			return (int)n;
	} else {
		do {
			n = read(r->fd, r->buf + r->end, r->cap - r->end);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;
	}
	if (n == 0) {
		r->eof = true;
		return 1;
	}
	r->end += (size_t)n;
	return 0;
}

static bool is_blank(char c)
{
	/* JSON's own whitespace and the CR of CRLF; form feed and vertical tab are not JSON. */
	return c == ' ' || c == '\t' || c == '\r';
}

/* Skip the rest of an over-long line without keeping it in memory. */
static int skip_line(struct ndjson_reader *r)
{
	for (;;) {
		char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		int f;

		if (nl) {
			r->start = (size_t)(nl - r->buf) + 1;
			return 0;
		}
		r->start = r->end;
		f = fill(r);
		if (f != 0)
			return f < 0 ? f : 0;
	}
}

/*
 * Editors on Windows write a UTF-8 byte order mark first; JSON (RFC 8259) lets a parser ignore
 * it, and it would otherwise make line 1 a reject. Only at the very start of a file: anywhere
 * else it is part of a line.
 */
static int skip_bom(struct ndjson_reader *r)
{
	while (r->end - r->start < 3 && !r->eof) {
		int f = fill(r);

		if (f < 0)
			return f;
	}
	if (r->end - r->start >= 3 && !memcmp(r->buf + r->start, "\xEF\xBB\xBF", 3))
		r->start += 3;
	r->at_file_start = false;
	return 0;
}

int record_ndjson_reader_next(struct ndjson_reader *r, struct ndjson_line *line)
{
	size_t scan;
	int f;

	if (r->replay) {
		/* Nothing touched the buffer since the line was returned: it is still valid. */
		r->replay = false;
		r->have_last = true;
		*line = r->last;
		return 1;
	}
	if (r->at_file_start && (f = skip_bom(r)) < 0)
		return f;
	scan = r->start;
	for (;;) {
		char *nl = memchr(r->buf + scan, '\n', r->end - scan);
		size_t ls = r->start, le;
		off_t line_off = r->buf_offset + (off_t)r->start;
		uint64_t no;

		if (!nl && !r->eof && r->end - r->start <= r->max_record + READ_BLOCK) {
			/* Read on before judging: blanks and a CR around the record do not count. */
			size_t seen = r->end - r->start;

			if (r->start > 0 || r->end < r->cap) {
				f = fill(r);
				if (f < 0)
					return f;
				scan = r->start + seen;
				continue;
			}
		}
		if (!nl && !r->eof && r->end - r->start > r->max_record) {
			/* Longer than allowed: report it and drop the rest of it unread. */
			no = r->next_lineno++;
			f = skip_line(r);
			if (f < 0)
				return f;
			*line = (struct ndjson_line){ .lineno = no, .too_long = true, .start_offset = line_off,
						      .end_offset = r->buf_offset + (off_t)r->start };
			r->have_last = false;
			return 1;
		}
		if (!nl && r->start == r->end)
			return 0;
		le = nl ? (size_t)(nl - r->buf) : r->end;
		r->start = nl ? le + 1 : r->end;
		scan = r->start;
		no = r->next_lineno++;
		while (ls < le && is_blank(r->buf[ls]))
			ls++;
		while (le > ls && is_blank(r->buf[le - 1]))
			le--;
		if (le == ls)
			continue;   /* blank lines are fine and count for numbering only */
		*line = (struct ndjson_line){
			.data = r->buf + ls,
			.len = le - ls,
			.lineno = no,
			.start_offset = line_off,
			.end_offset = r->buf_offset + (off_t)r->start,
		};
		if (line->len > r->max_record) {
			line->data = NULL;
			line->len = 0;
			line->too_long = true;
		}
		r->last = *line;
		r->have_last = !line->too_long;
		return 1;
	}
}

off_t record_ndjson_reader_offset(const struct ndjson_reader *r)
{
	return r->replay ? r->last.start_offset : r->buf_offset + (off_t)r->start;
}

uint64_t record_ndjson_reader_lineno(const struct ndjson_reader *r)
{
	return r->replay ? r->last.lineno : r->next_lineno;
}

void record_ndjson_reader_unget(struct ndjson_reader *r)
{
	if (!r->have_last)
		return;
	r->replay = true;
	r->have_last = false;
}
