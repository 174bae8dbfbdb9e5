/* record_csv_scan: the RFC 4180 tokenizer: cuts a stream's bytes into rows of cells (offsets into its buffer). */
#include "record/record_csv_scan.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record/record_decompress.h"

#define READ_BLOCK (256 * 1024)

int record_csv_scan_init(struct csv_scan *s, size_t max_record_bytes)
{
	*s = (struct csv_scan){ .max_record = max_record_bytes, .cap = max_record_bytes + READ_BLOCK + 1 };
	if (!(s->buf = malloc(s->cap)))
		return -ENOMEM;
	return 0;
}

void record_csv_scan_release(struct csv_scan *s)
{
	free(s->buf);
	free(s->cells);
	s->buf = NULL;
	s->cells = NULL;
}

void record_csv_scan_reset(struct csv_scan *s, struct record_stream *in, char delim)
{
	s->in = in;
	s->delim = delim;
	s->start = s->end = s->pos = 0;
	s->cell_start = s->cell_end = 0;
	s->buf_offset = 0;
	s->eof = false;
	s->width = 0;
	s->after_cr = false;
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
	n = record_decompress_read(s->in, s->buf + s->end, s->cap - s->end);
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

static int begin_row(struct csv_scan *s)
{
	int f;

	if (s->after_cr) {
		/* A stray quote's line ended at a CR, the last byte read then: a LF after it is its own. */
		s->after_cr = false;
		if (s->start == s->end && !s->eof && (f = fill(s)) < 0)
			return f;
		if (s->start < s->end && s->buf[s->start] == '\n')
			s->start++;
	}
	s->st = CSV_FIELD_START;
	s->pos = s->start;
	s->n_cells = 0;
	s->row_nl = 0;
	s->bad = NULL;
	s->skipping = false;
	s->quoted_break = -1;
	s->head_len = 0;
	s->row_offset = s->buf_offset + (off_t)s->start;
	return 0;
}

/* Line breaks in @p: every CR, and every LF but one right after a CR (@cr: the byte before @p was one). */
static uint64_t count_breaks(const char *p, size_t n, bool cr)
{
	const char *e = p + n, *q;
	uint64_t k = 0;

	for (q = p; (q = memchr(q, '\n', (size_t)(e - q))); q++)
		k += !(q == p ? cr : q[-1] == '\r');
	for (q = p; (q = memchr(q, '\r', (size_t)(e - q))); q++)
		k++;
	return k;
}

/* The offset in @p of its first CR or LF (there is one). */
static size_t first_break(const char *p, size_t n)
{
	const char *lf = memchr(p, '\n', n), *cr = memchr(p, '\r', lf ? (size_t)(lf - p) : n);

	return (size_t)((cr ? cr : lf) - p);
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
				s->quoted_cr = false;
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
			uint64_t k = stop > p ? count_breaks(b + p, stop - p, s->quoted_cr) : 0;

			if (k && s->quoted_break < 0) {
				size_t nl = p + first_break(b + p, stop - p);

				if (s->skipping) {
					/* Its opening line is too long already: the row ends with it, as a stray quote's does. */
					if (b[nl] == '\r' && nl + 1 == e && !s->eof) {
						p = nl;
						goto more;
					}
					s->bad = "unterminated quote: the cell runs on past this line (only this line is rejected)";
					s->pos = line_end(b, nl, e);
					return 1;
				}
				s->quoted_break = s->buf_offset + (off_t)nl;
				s->open_quote = s->buf_offset + (off_t)s->cell_start - 1;
			}
			s->row_nl += k;
			if (stop > p)
				s->quoted_cr = b[stop - 1] == '\r';
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
				s->quoted_cr = false;
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

/*
 * A quoted cell ran past a line break and the row it makes is no row, or holds lines that are
 * (rows_inside): the line it opened on is rejected alone (no cells), and the next row starts on the line after it, scanned again. The
 * bytes from the row's start are all still buffered: nothing before start is dropped until the
 * row is too long, and a row past max_record_bytes comes here before that.
 */
static void stray_quote(struct csv_scan *s, const char *why)
{
	size_t nl = (size_t)(s->quoted_break - s->buf_offset);

	s->pos = line_end(s->buf, nl, s->end);
	s->after_cr = s->buf[nl] == '\r' && s->pos == s->end && !s->eof;
	s->n_cells = 0;
	s->row_nl = 0;
	s->bad = why;
}

/*
 * The cells of the line b[p, e) read alone with scan()'s quoting rules, a quote at @plain (an
 * index, or SIZE_MAX) a character; 0 when its quotes do not balance or text follows a closing
 * quote (the line as a row of its own would not be one). The line holds no line break.
 */
static size_t line_cells(const char *b, size_t p, size_t e, char d, size_t plain)
{
	size_t cells = 1;
	const char *q;

	for (;;) {
		if (p < e && b[p] == '"' && p != plain) {
			for (p++;; p += 2) {
				if (!(q = memchr(b + p, '"', e - p)))
					return 0;
				p = (size_t)(q - b);
				if (p + 1 == e || b[p + 1] != '"')
					break;
			}
			if (++p == e)
				return cells;
			if (b[p] != d)
				return 0;
		} else if (!(q = memchr(b + p, d, e - p))) {
			return cells;
		} else {
			p = (size_t)(q - b);
		}
		p++;
		cells++;
	}
}

/*
 * A row of the right width whose quoted cell ran over line breaks: how many of the complete lines
 * between its first line and its last read as a row alone (line_cells(): the header's width,
 * quotes balanced, as `u4,"c, d",3` or `u4,,3`), when they make it likely that a later quote
 * closed a stray one (`u1,"5 inch` ... `u50,12"`), else 0. Blank lines are not asked (the reader
 * skips them). Likely:
 *   - two such lines at least, and three in four of the lines asked: one odd line (a row of
 *     another width, `u4,""c"",3`) does not save the rows around it; a note's or an address's
 *     lines rarely all hold width - 1 delimiters;
 *   - or one (a cell of three lines or more), and the first and last lines read as rows too: the
 *     first with the opening quote a character (`u1,"5 inch,1`), the last with the closing one a
 *     character and the rest of a row after it (`u3,e 12",5`, the closing quote followed by the
 *     delimiter). A real cell's first line holds what comes before it and its own start, its last
 *     its end and what comes after: both a row's width only by chance.
 * A cell of two lines is never doubted (an address: `"12 Main St\nSpringfield, IL"`), nor a cell
 * in the last column on one such line (its closing quote ends the row).
 * Runs only on rows with two line breaks or more inside quotes, once: each line is found a byte
 * at a time (no memchr for LF per line: with CR line ends that would go to the row's end each
 * time), then read by line_cells() within it.
 */
static uint64_t rows_inside(const struct csv_scan *s)
{
	const char *b = s->buf;
	const char d = s->delim;
	size_t nl = (size_t)(s->quoted_break - s->buf_offset), e = s->pos, p, from, q;
	uint64_t rows = 0, lines = 0;

	/* The row's own line break ends its last line. */
	if (e > nl && b[e - 1] == '\n')
		e--;
	if (e > nl && b[e - 1] == '\r')
		e--;
	p = line_end(b, nl, e);
	for (;;) {
		from = p;
		while (p < e && b[p] != '\n' && b[p] != '\r')
			p++;
		if (p == e)
			break;  /* the last line: b[from, e) */
		if (p > from) {
			lines++;
			rows += line_cells(b, from, p, d, SIZE_MAX) == s->width;
		}
		p = line_end(b, p, e);
	}
	if (!rows || rows * 4 < lines * 3)
		return 0;
	if (rows >= 2)
		return rows;
	if (line_cells(b, s->start, nl, d, (size_t)(s->open_quote - s->buf_offset)) != s->width)
		return 0;
	/* The last line starts inside the quotes: its first quote not doubled closes them. */
	for (q = from; q < e; q += 2) {
		const char *c = memchr(b + q, '"', e - q);

		if (!c)
			return 0;
		q = (size_t)(c - b);
		if (q + 1 == e || b[q + 1] != '"')
			break;
	}
	if (q + 1 >= e || b[q + 1] != d || line_cells(b, from, e, d, SIZE_MAX) != s->width)
		return 0;
	return rows;
}

/* Too long to keep: its first bytes for the rejected entry, cut where a UTF-8 character starts. */
static void keep_head(struct csv_scan *s)
{
	size_t n = s->pos - s->start;

	s->head_len = n < sizeof(s->head) ? n : sizeof(s->head);
	if (s->head_len < n)
		while (s->head_len && ((unsigned char)s->buf[s->start + s->head_len] & 0xC0) == 0x80)
			s->head_len--;
	memcpy(s->head, s->buf + s->start, s->head_len);
	s->skipping = true;
}

/* The next row's cells: 1, 0 at the end, negative errno. */
int record_csv_scan_row(struct csv_scan *s)
{
	uint64_t rows;
	int f;

	if ((f = begin_row(s)) < 0)
		return f;
	for (;;) {
		f = scan(s);
		if (f < 0)
			return f;
		if (f == 1) {
			if (s->pos == s->start && s->eof && !s->n_cells)
				return 0;
			/* (The header, of no width yet, is taken whole or refused: the file fails.) */
			if (s->quoted_break >= 0 && s->width && (s->bad || s->n_cells != s->width))
				stray_quote(s, s->st == CSV_QUOTED ? CSV_QUOTE_TO_END : CSV_QUOTE_NOT_A_ROW);
			else if (s->pos - s->start > s->max_record + 2 && s->quoted_break >= 0 && s->width)
				stray_quote(s, CSV_QUOTE_TOO_LONG);
			else if (s->pos - s->start > s->max_record + 2 && !s->skipping)
				keep_head(s);   /* whole in the buffer, yet longer than allowed: as one scanned on */
			else if (s->quoted_break >= 0 && s->width && s->row_nl >= 2 && (rows = rows_inside(s))) {
				snprintf(s->why, sizeof(s->why), CSV_QUOTE_OVER_ROWS, (unsigned long long)rows);
				stray_quote(s, s->why);
			}
			return 1;
		}
		if (!s->skipping && s->pos - s->start > s->max_record) {
			if (s->quoted_break >= 0 && s->width) {
				stray_quote(s, CSV_QUOTE_TOO_LONG);
				return 1;
			}
			/* Too long to keep: scan on without it, then report it. */
			keep_head(s);
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


int record_csv_scan_skip_bom(struct csv_scan *s)
{
	int rc;

	while (s->end < 3 && !s->eof)
		if ((rc = fill(s)) < 0)
			return rc;
	if (s->end >= 3 && !memcmp(s->buf, "\xEF\xBB\xBF", 3))
		s->start = s->pos = 3;
	return 0;
}

int record_csv_scan_seek(struct csv_scan *s, off_t offset)
{
	uint64_t skip;
	int rc;

	/* Drop what is buffered up to @offset, then skip the rest in the stream. */
	s->after_cr = false;
	if (offset <= s->buf_offset + (off_t)s->end) {
		s->start = s->pos = (size_t)(offset - s->buf_offset);
		return 0;
	}
	skip = (uint64_t)(offset - s->buf_offset - (off_t)s->end);
	if ((rc = record_decompress_skip(s->in, skip)) < 0)
		return rc;
	s->buf_offset = offset;
	s->start = s->end = s->pos = 0;
	return 0;
}
