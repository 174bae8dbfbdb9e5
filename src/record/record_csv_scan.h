/* record_csv_scan: the RFC 4180 tokenizer: cuts a stream's bytes into rows of cells (offsets into its buffer). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Owns its buffer (max_record_bytes plus one read block) and the cells of the row last scanned;
 * borrows the record_stream from record_csv_scan_reset() until the next reset. Calls record_stream only: it knows
 * nothing of headers, types or JSON (record_csv.c makes the rows records).
 *
 * The row last scanned lies in buf[start, pos): its cells are offsets from buf + start. It stays
 * there until the caller consumes it by setting start = pos; only then may a later call move it
 * (the buffer slides only bytes before start).
 */

struct record_stream;

/* Why a stray opening quote's line is rejected alone (the bad of that row; see record_csv_scan_row). */
#define CSV_QUOTE_NOT_A_ROW "unterminated quote: the cell runs on past this line, and what follows does not make a " \
	"row of the header's width (only this line is rejected)"
#define CSV_QUOTE_TOO_LONG "unterminated quote: the cell runs on past this line and past max_record_bytes " \
	"(only this line is rejected)"
#define CSV_QUOTE_TO_END "unterminated quote: the cell runs on past this line to the end of the file " \
	"(only this line is rejected)"
/* printf format, the number of lines: a stray quote closed by a later one, its row of the right width. */
#define CSV_QUOTE_OVER_ROWS "unterminated quote: the cell runs on past this line over %llu lines that read as " \
	"rows of their own (only this line is rejected)"

enum csv_scan_state { CSV_FIELD_START, CSV_UNQUOTED, CSV_QUOTED, CSV_QUOTE_SEEN };

struct csv_cell {
	uint32_t off;           /* from the row's first byte */
	uint32_t len;
	bool quoted;
	bool dq;                /* holds doubled quotes to undo */
};

struct csv_scan {
	struct record_stream *in;
	char delim;
	size_t max_record;
	char *buf;
	size_t cap, start, end;
	off_t buf_offset;       /* stream offset of buf[0] */
	bool eof;
	/* the row being scanned */
	enum csv_scan_state st;
	size_t pos;             /* next byte to scan */
	size_t cell_start, cell_end;
	bool cell_quoted, cell_dq;
	bool skipping;          /* longer than max_record_bytes: scanned on, not kept (cells: none) */
	bool after_cr;          /* the last row ended at a CR, the last byte read: skip a LF next */
	bool quoted_cr;         /* the last byte scanned in the quoted cell was a CR (a LF next is not a line) */
	off_t row_offset;       /* stream offset of the row's first byte */
	uint64_t row_nl;        /* line breaks inside quoted cells (LF, CRLF or a CR alone: one each) */
	off_t quoted_break;     /* stream offset of the row's first line break inside quotes; -1: none */
	off_t open_quote;       /* stream offset of the quote that opened the cell holding that break */
	size_t width;           /* cells a row must have (the header's); 0: any (the header itself) */
	/* The start of a row too long to keep (skipping), for the rejected entry: bounded, UTF-8 whole. */
	char head[256];
	size_t head_len;
	const char *bad;        /* why the row is malformed (a static string or why), or NULL */
	char why[160];          /* bad, when it says a number */
	struct csv_cell *cells;
	size_t n_cells, cap_cells;
};

/* 0 or -ENOMEM. */
int record_csv_scan_init(struct csv_scan *s, size_t max_record_bytes);
void record_csv_scan_release(struct csv_scan *s);
/* Scan @in from its start, cells split by @delim. */
void record_csv_scan_reset(struct csv_scan *s, struct record_stream *in, char delim);
/* Before the first row: pass over a UTF-8 byte order mark (as Excel writes one). 0, negative errno. */
int record_csv_scan_skip_bom(struct csv_scan *s);
/* Go on at stream offset @offset (not before the row consumed last): 0, -ENODATA past the end, negative errno. */
int record_csv_scan_seek(struct csv_scan *s, off_t offset);
/*
 * The next row's cells: 1, 0 at the end of the stream, negative errno. A row longer than
 * max_record_bytes comes back with skipping set (its first bytes in head); a malformed one with
 * bad set. The end of the stream ends a row; to look again at a file that grew, clear eof and
 * call again.
 *
 * A stray opening quote must not swallow the rows after it: a quoted cell that runs past a line
 * break and then does not make a row of @width cells, well formed (or runs past max_record_bytes,
 * or to the end of the stream), makes its opening line alone a bad row (no cells), and the scan
 * goes on at the next line. So does one whose row has the right width when the lines it spans
 * read as rows of their own (see rows_inside() in record_csv_scan.c): of the complete lines
 * between its first and its last (blank ones aside), each parsed alone with these quoting rules,
 * three in four at least have @width cells and balanced quotes, and two at least; or one, when
 * the first line (its opening quote a character) and the last (its closing quote a character,
 * the rest of a row after it) read as rows too: a later quote closed it. A legitimate line break
 * inside quotes keeps the row whole.
 */
int record_csv_scan_row(struct csv_scan *s);

/* The row is a blank line (one empty unquoted cell): skipped by readers, counted for numbering. */
static inline bool record_csv_scan_blank(const struct csv_scan *s)
{
	return !s->skipping && s->n_cells == 1 && s->cells[0].len == 0 && !s->cells[0].quoted;
}
