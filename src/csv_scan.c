/* csv_scan: the RFC 4180 tokenizer: cuts a stream's bytes into rows of cells (offsets into its buffer). */
#include "csv_scan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "decompress.h"

#define READ_BLOCK (256 * 1024)

int csv_scan_init(struct csv_scan *s, size_t max_record_bytes)
{
	*s = (struct csv_scan){ .max_record = max_record_bytes, .cap = max_record_bytes + READ_BLOCK + 1 };
	if (!(s->buf = malloc(s->cap)))
		return -ENOMEM;
	return 0;
}

void csv_scan_release(struct csv_scan *s)
{
	free(s->buf);
	free(s->cells);
	s->buf = NULL;
	s->cells = NULL;
}

void csv_scan_reset(struct csv_scan *s, struct instream *in, char delim)
{
	s->in = in;
	s->delim = delim;
	s->start = s->end = s->pos = 0;
	s->cell_start = s->cell_end = 0;
	s->buf_offset = 0;
	s->eof = false;
}

/* Move what is unconsumed to the front and read more: 0, 1 at the end, negative errno. */
static int fill(struct csv_scan *s)
{
	ssize_t n;

	if (s->start > 0) {
		size_t shift = s->start;

		memmove(s->buf, s->buf + shift, s->end - shift);
		s->buf_offset += (off_t)shift;
		s->end -= shift;
		s->pos -= shift;
		s->cell_start -= shift;
		s->cell_end -= shift;
		s->start = 0;
	}
	n = instream_read(s->in, s->buf + s->end, s->cap - s->end);
	if (n < 0)
		return (int)n;
	if (n == 0) {
		s->eof = true;
		return 1;
	}
	s->end += (size_t)n;
	return 0;
}

static int push_cell(struct csv_scan *s, size_t from, size_t to)
{
	struct csv_cell *c;

	if (s->skipping)
		return 0;
	if (s->n_cells == s->cap_cells) {
		size_t cap = s->cap_cells ? s->cap_cells * 2 : 64;

		if (!(c = realloc(s->cells, cap * sizeof(*c))))
			return -ENOMEM;
		s->cells = c;
		s->cap_cells = cap;
	}
	s->cells[s->n_cells++] = (struct csv_cell){ .off = (uint32_t)(from - s->start), .len = (uint32_t)(to - from),
						.quoted = s->cell_quoted, .dq = s->cell_dq };
	return 0;
}

static void begin_row(struct csv_scan *s)
{
	s->st = CSV_FIELD_START;
	s->pos = s->start;
	s->n_cells = 0;
	s->row_nl = 0;
	s->bad = NULL;
	s->skipping = false;
	s->row_offset = s->buf_offset + (off_t)s->start;
}

static uint64_t count_nl(const char *p, size_t n)
{
	uint64_t k = 0;
	const char *e = p + n;

	while ((p = memchr(p, '\n', (size_t)(e - p)))) {
		k++;
		p++;
	}
	return k;
}

/*
 * Past the line break at @p: LF, CRLF, or a CR alone (classic Mac line ends, Excel's "CSV
 * (Macintosh)"), so that such a file is rows, not one header swallowing it all.
 */
static size_t line_end(const char *b, size_t p, size_t e)
{
	return b[p] == '\r' && p + 1 < e && b[p + 1] == '\n' ? p + 2 : p + 1;
}

/*
 * Scan on from s->pos: 1 when the row ended (s->pos just after it), 0 when more bytes are
 * needed, negative errno. RFC 4180: a cell starting with a quote runs to the quote not doubled;
 * a quote inside an unquoted cell is just a character (as most readers take it); text between a
 * closing quote and the delimiter spoils the row.
 */
static int scan(struct csv_scan *s)
{
	const char *b = s->buf;
	const char d = s->delim;
	size_t p = s->pos, e = s->end;

	while (p < e) {
		switch (s->st) {
		case CSV_FIELD_START:
			s->cell_dq = false;
			if (b[p] == '"') {
				s->st = CSV_QUOTED;
				s->cell_quoted = true;
				s->cell_start = ++p;
				continue;
			}
			s->cell_quoted = false;
			s->cell_start = p;
			s->st = CSV_UNQUOTED;
			/* fallthrough */
		case CSV_UNQUOTED:
			while (p < e && b[p] != d && b[p] != '\n' && b[p] != '\r')
				p++;
			/* A CR at the end of what is buffered may be the first half of a CRLF. */
			if (p == e || (b[p] == '\r' && p + 1 == e && !s->eof))
				goto more;
			if (b[p] == d) {
				if (push_cell(s, s->cell_start, p) < 0)
					return -ENOMEM;
				s->st = CSV_FIELD_START;
				p++;
				continue;
			}
			if (push_cell(s, s->cell_start, p) < 0)
				return -ENOMEM;
			s->pos = line_end(b, p, e);
			return 1;
		case CSV_QUOTED: {
			const char *q = memchr(b + p, '"', e - p);
			size_t stop = q ? (size_t)(q - b) : e;

			s->row_nl += count_nl(b + p, stop - p);
			p = stop;
			if (!q)
				goto more;
			s->cell_end = p++;
			s->st = CSV_QUOTE_SEEN;
			continue;
		}
		case CSV_QUOTE_SEEN:
			if (b[p] == '"') {
				s->cell_dq = true;
				s->st = CSV_QUOTED;
				p++;
				continue;
			}
			if (b[p] == '\r' && p + 1 == e && !s->eof)
				goto more;
			if (b[p] == d || b[p] == '\n' || b[p] == '\r') {
				if (push_cell(s, s->cell_start, s->cell_end) < 0)
					return -ENOMEM;
				if (b[p] == d) {
					s->st = CSV_FIELD_START;
					p++;
					continue;
				}
				s->pos = line_end(b, p, e);
				return 1;
			}
			if (!s->bad)
				s->bad = "text after a closing quote (a quote inside a quoted cell must be doubled)";
			/* Read on to the delimiter as an unquoted cell does: the row's end is found as before. */
			s->st = CSV_UNQUOTED;
			continue;
		}
	}
more:
	s->pos = p;
	if (!s->eof)
		return 0;
	/* The end of the file ends the row. */
	switch (s->st) {
	case CSV_QUOTED:
		s->bad = "unterminated quote: the cell runs to the end of the file";
		s->cell_end = p;
		break;
	case CSV_UNQUOTED:
		s->cell_end = p;
		break;
	case CSV_QUOTE_SEEN:
		break;
	case CSV_FIELD_START:
		if (!s->n_cells && p == s->start)
			return 1;       /* nothing after the last line break */
		s->cell_start = s->cell_end = p;
		s->cell_quoted = false;
		break;
	}
	if (push_cell(s, s->cell_start, s->cell_end) < 0)
		return -ENOMEM;
	return 1;
}

/* The next row's cells: 1, 0 at the end, negative errno. */
int csv_scan_row(struct csv_scan *s)
{
	int f;

	begin_row(s);
	for (;;) {
		f = scan(s);
		if (f < 0)
			return f;
		if (f == 1) {
			if (s->pos == s->start && s->eof && !s->n_cells)
				return 0;
			/* Whole in the buffer, yet longer than allowed: the same as one scanned on. */
			if (s->pos - s->start > s->max_record + 2)
				s->skipping = true;
			return 1;
		}
		if (!s->skipping && s->pos - s->start > s->max_record) {
			/* Too long to keep: scan on without it, then report it. */
			s->skipping = true;
		}
		if (s->skipping) {
			/* Nothing scanned so far is kept: only the state of the scan goes on. */
			s->start = s->pos;
			s->cell_start = s->cell_end = s->pos;
		}
		f = fill(s);
		if (f < 0)
			return f;
	}
}


int csv_scan_skip_bom(struct csv_scan *s)
{
	int rc;

	while (s->end < 3 && !s->eof)
		if ((rc = fill(s)) < 0)
			return rc;
	if (s->end >= 3 && !memcmp(s->buf, "\xEF\xBB\xBF", 3))
		s->start = s->pos = 3;
	return 0;
}

int csv_scan_seek(struct csv_scan *s, off_t offset)
{
	uint64_t skip;
	int rc;

	/* Drop what is buffered up to @offset, then skip the rest in the stream. */
	if (offset <= s->buf_offset + (off_t)s->end) {
		s->start = s->pos = (size_t)(offset - s->buf_offset);
		return 0;
	}
	skip = (uint64_t)(offset - s->buf_offset - (off_t)s->end);
	if ((rc = instream_skip(s->in, skip)) < 0)
		return rc;
	s->buf_offset = offset;
	s->start = s->end = s->pos = 0;
	return 0;
}
