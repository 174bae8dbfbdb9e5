/* csv: read CSV/TSV with a header (RFC 4180 quoting) row by row, each row made one compact JSON object. */
#include "csv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "decompress.h"

#define READ_BLOCK (256 * 1024)

enum scan_state { FIELD_START, UNQUOTED, QUOTED, QUOTE_SEEN };

struct cell {
	uint32_t off;           /* from the row's first byte */
	uint32_t len;
	bool quoted;
	bool dq;                /* holds doubled quotes to undo */
};

struct col {
	uint32_t key_off;       /* "name": in keys */
	uint32_t key_len;
	enum csv_type type;
};

struct out {
	char *buf;
	size_t len, cap;
};

struct csv_reader {
	struct instream *in;
	char delim;
	const struct csv_options *opt;
	size_t max_record;
	char *buf;
	size_t cap, start, end;
	off_t buf_offset;       /* stream offset of buf[0] */
	bool eof;
	uint64_t next_lineno;
	/* the row being scanned */
	enum scan_state st;
	size_t pos;             /* next byte to scan */
	size_t cell_start, cell_end;
	bool cell_quoted, cell_dq;
	bool skipping;          /* longer than max_record_bytes: scanned on, not kept */
	off_t row_offset;
	uint64_t row_nl;        /* line breaks inside quoted cells */
	const char *bad;
	struct cell *cells;
	size_t n_cells, cap_cells;
	/* the header */
	struct col *cols;
	size_t n_cols;
	char *keys;
	size_t keys_len;
	/* the last row, for unget */
	struct out json;
	struct out tmp;
	struct ndjson_line last;
	bool have_last, replay;
	char reason[256];
	char err[512];
};

static const char *const type_names[] = { "string", "integer", "number", "boolean", "json" };

const char *csv_type_name(enum csv_type t)
{
	return type_names[t];
}

int csv_columns_parse(struct csv_options *o, const char *spec, char *err, size_t errlen)
{
	char *dup = strdup(spec), *save = NULL, *tok;
	int r = 0;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		char *colon = strrchr(tok, ':');
		struct csv_column *grown;
		size_t t;

		if (!colon || colon == tok) {
			snprintf(err, errlen, "'%s': want NAME:TYPE (TYPE one of string, integer, number, boolean, json)", tok);
			r = -EINVAL;
			break;
		}
		*colon = '\0';
		for (t = 0; t < sizeof(type_names) / sizeof(type_names[0]); t++)
			if (!strcmp(colon + 1, type_names[t]))
				break;
		if (t == sizeof(type_names) / sizeof(type_names[0])) {
			snprintf(err, errlen, "%s: unknown type '%s' (want string, integer, number, boolean or json)", tok,
				 colon + 1);
			r = -EINVAL;
			break;
		}
		for (size_t i = 0; i < o->n_columns; i++) {
			if (!strcmp(o->columns[i].name, tok)) {
				snprintf(err, errlen, "column '%s' given twice", tok);
				r = -EINVAL;
				goto out;
			}
		}
		grown = realloc(o->columns, (o->n_columns + 1) * sizeof(*grown));
		if (!grown) {
			r = -ENOMEM;
			break;
		}
		o->columns = grown;
		if (!(o->columns[o->n_columns].name = strdup(tok))) {
			r = -ENOMEM;
			break;
		}
		o->columns[o->n_columns++].type = (enum csv_type)t;
	}
out:
	free(dup);
	return r;
}

void csv_options_release(struct csv_options *o)
{
	for (size_t i = 0; i < o->n_columns; i++)
		free(o->columns[i].name);
	free(o->columns);
	o->columns = NULL;
	o->n_columns = 0;
}

int csv_reader_new(struct csv_reader **out, size_t max_record_bytes)
{
	struct csv_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->max_record = max_record_bytes;
	r->cap = max_record_bytes + READ_BLOCK + 1;
	if (!(r->buf = malloc(r->cap))) {
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void csv_reader_free(struct csv_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	free(r->cells);
	free(r->cols);
	free(r->keys);
	free(r->json.buf);
	free(r->tmp.buf);
	free(r);
}

const char *csv_reader_error(const struct csv_reader *r)
{
	return r->err[0] ? r->err : NULL;
}

static int out_reserve(struct out *o, size_t n)
{
	size_t cap = o->cap ? o->cap : 4096;
	char *b;

	if (o->len + n <= o->cap)
		return 0;
	while (cap < o->len + n)
		cap *= 2;
	if (!(b = realloc(o->buf, cap)))
		return -ENOMEM;
	o->buf = b;
	o->cap = cap;
	return 0;
}

static int out_put(struct out *o, const char *s, size_t n)
{
	if (out_reserve(o, n) < 0)
		return -ENOMEM;
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	return 0;
}

/* Move what is unconsumed to the front and read more: 0, 1 at the end, negative errno. */
static int fill(struct csv_reader *r)
{
	ssize_t n;

	if (r->start > 0) {
		size_t shift = r->start;

		memmove(r->buf, r->buf + shift, r->end - shift);
		r->buf_offset += (off_t)shift;
		r->end -= shift;
		r->pos -= shift;
		r->cell_start -= shift;
		r->cell_end -= shift;
		r->start = 0;
	}
	n = instream_read(r->in, r->buf + r->end, r->cap - r->end);
	if (n < 0)
		return (int)n;
	if (n == 0) {
		r->eof = true;
		return 1;
	}
	r->end += (size_t)n;
	return 0;
}

static int push_cell(struct csv_reader *r, size_t from, size_t to)
{
	struct cell *c;

	if (r->skipping)
		return 0;
	if (r->n_cells == r->cap_cells) {
		size_t cap = r->cap_cells ? r->cap_cells * 2 : 64;

		if (!(c = realloc(r->cells, cap * sizeof(*c))))
			return -ENOMEM;
		r->cells = c;
		r->cap_cells = cap;
	}
	r->cells[r->n_cells++] = (struct cell){ .off = (uint32_t)(from - r->start), .len = (uint32_t)(to - from),
						.quoted = r->cell_quoted, .dq = r->cell_dq };
	return 0;
}

static void begin_row(struct csv_reader *r)
{
	r->st = FIELD_START;
	r->pos = r->start;
	r->n_cells = 0;
	r->row_nl = 0;
	r->bad = NULL;
	r->skipping = false;
	r->row_offset = r->buf_offset + (off_t)r->start;
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
 * Scan on from r->pos: 1 when the row ended (r->pos just after it), 0 when more bytes are
 * needed, negative errno. RFC 4180: a cell starting with a quote runs to the quote not doubled;
 * a quote inside an unquoted cell is just a character (as most readers take it); text between a
 * closing quote and the delimiter spoils the row.
 */
static int scan(struct csv_reader *r)
{
	const char *b = r->buf;
	const char d = r->delim;
	size_t p = r->pos, e = r->end;

	while (p < e) {
		switch (r->st) {
		case FIELD_START:
			r->cell_dq = false;
			if (b[p] == '"') {
				r->st = QUOTED;
				r->cell_quoted = true;
				r->cell_start = ++p;
				continue;
			}
			r->cell_quoted = false;
			r->cell_start = p;
			r->st = UNQUOTED;
			/* fallthrough */
		case UNQUOTED:
			while (p < e && b[p] != d && b[p] != '\n')
				p++;
			if (p == e)
				goto more;
			if (b[p] == d) {
				if (push_cell(r, r->cell_start, p) < 0)
					return -ENOMEM;
				r->st = FIELD_START;
				p++;
				continue;
			}
			if (push_cell(r, r->cell_start, p > r->cell_start && b[p - 1] == '\r' ? p - 1 : p) < 0)
				return -ENOMEM;
			r->pos = p + 1;
			return 1;
		case QUOTED: {
			const char *q = memchr(b + p, '"', e - p);
			size_t stop = q ? (size_t)(q - b) : e;

			r->row_nl += count_nl(b + p, stop - p);
			p = stop;
			if (!q)
				goto more;
			r->cell_end = p++;
			r->st = QUOTE_SEEN;
			continue;
		}
		case QUOTE_SEEN:
			if (b[p] == '"') {
				r->cell_dq = true;
				r->st = QUOTED;
				p++;
				continue;
			}
			if (b[p] == '\r' && p + 1 == e && !r->eof)
				goto more;
			if (b[p] == d || b[p] == '\n' || (b[p] == '\r' && (p + 1 == e || b[p + 1] == '\n'))) {
				if (push_cell(r, r->cell_start, r->cell_end) < 0)
					return -ENOMEM;
				if (b[p] == d) {
					r->st = FIELD_START;
					p++;
					continue;
				}
				r->pos = p + (b[p] == '\r' ? (p + 1 == e ? 1 : 2) : 1);
				return 1;
			}
			if (!r->bad)
				r->bad = "text after a closing quote (a quote inside a quoted cell must be doubled)";
			/* Read on to the delimiter as an unquoted cell does: the row's end is found as before. */
			r->st = UNQUOTED;
			continue;
		}
	}
more:
	r->pos = p;
	if (!r->eof)
		return 0;
	/* The end of the file ends the row. */
	switch (r->st) {
	case QUOTED:
		r->bad = "unterminated quote: the cell runs to the end of the file";
		r->cell_end = p;
		break;
	case UNQUOTED:
		r->cell_end = p > r->cell_start && r->buf[p - 1] == '\r' ? p - 1 : p;
		break;
	case QUOTE_SEEN:
		break;
	case FIELD_START:
		if (!r->n_cells && p == r->start)
			return 1;       /* nothing after the last line break */
		r->cell_start = r->cell_end = p;
		r->cell_quoted = false;
		break;
	}
	if (push_cell(r, r->cell_start, r->cell_end) < 0)
		return -ENOMEM;
	return 1;
}

/* The next row's cells: 1, 0 at the end, negative errno. */
static int next_row(struct csv_reader *r)
{
	int f;

	begin_row(r);
	for (;;) {
		f = scan(r);
		if (f < 0)
			return f;
		if (f == 1) {
			if (r->pos == r->start && r->eof && !r->n_cells)
				return 0;
			/* Whole in the buffer, yet longer than allowed: the same as one scanned on. */
			if (r->pos - r->start > r->max_record + 2)
				r->skipping = true;
			return 1;
		}
		if (!r->skipping && r->pos - r->start > r->max_record) {
			/* Too long to keep: scan on without it, then report it. */
			r->skipping = true;
		}
		if (r->skipping) {
			/* Nothing scanned so far is kept: only the state of the scan goes on. */
			r->start = r->pos;
			r->cell_start = r->cell_end = r->pos;
		}
		f = fill(r);
		if (f < 0)
			return f;
	}
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			k = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			k = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
			return false;
		i += k + 1;
	}
	return true;
}

/* @s as the inside of a JSON string; -EILSEQ for invalid UTF-8. */
static int put_escaped(struct out *o, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;
	bool high = false;

	if (out_reserve(o, n + 2) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];
		size_t el = 2;

		if (c >= 0x20 && c != '"' && c != '\\') {
			high |= c >= 0x80;
			continue;
		}
		if (out_put(o, s + run, i - run) < 0)
			return -ENOMEM;
		run = i + 1;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			el = 6;
		}
		if (out_put(o, esc, el) < 0)
			return -ENOMEM;
	}
	if (high && !utf8_valid((const unsigned char *)s, n))
		return -EILSEQ;
	return out_put(o, s + run, n - run);
}

/* JSON's number grammar; @integer: no fraction or exponent. */
static bool is_number(const char *s, size_t n, bool integer)
{
	size_t i = 0;

	if (i < n && s[i] == '-')
		i++;
	if (i == n)
		return false;
	if (s[i] == '0') {
		i++;
	} else if (s[i] >= '1' && s[i] <= '9') {
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
	} else {
		return false;
	}
	if (integer)
		return i == n;
	if (i < n && s[i] == '.') {
		size_t d = ++i;

		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		size_t d;

		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		d = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return false;
	}
	return i == n;
}

/* One JSON value, nothing around it but blanks (a cell must not add fields to the record). */
static bool is_json_value(const char *s, size_t n)
{
	yajl_handle h = yajl_alloc(NULL, NULL, NULL);
	yajl_status st;
	bool ok;

	if (!h)
		return false;
	if (memchr(s, '\0', n) || memchr(s, '\f', n) || memchr(s, '\v', n)) {
		yajl_free(h);
		return false;
	}
	st = yajl_parse(h, (const unsigned char *)s, n);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	ok = st == yajl_status_ok;
	/* yajl says ok to blanks alone */
	if (ok) {
		size_t i = 0;

		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
			i++;
		ok = i < n;
	}
	yajl_free(h);
	return ok;
}

/* The cell's text with doubled quotes undone (in tmp when it had any). */
static int cell_text(struct csv_reader *r, const struct cell *c, const char **s, size_t *n)
{
	const char *p = r->buf + r->start + c->off;

	if (!c->dq) {
		*s = p;
		*n = c->len;
		return 0;
	}
	r->tmp.len = 0;
	if (out_reserve(&r->tmp, c->len) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < c->len; i++) {
		r->tmp.buf[r->tmp.len++] = p[i];
		if (p[i] == '"')
			i++;    /* the second of a pair */
	}
	*s = r->tmp.buf;
	*n = r->tmp.len;
	return 0;
}

/* Build the row's JSON object in r->json; -EINVAL with r->reason for a row that cannot be one. */
static int convert(struct csv_reader *r)
{
	struct out *o = &r->json;
	bool first = true;
	int rc;

	o->len = 0;
	if (r->n_cells != r->n_cols) {
		snprintf(r->reason, sizeof(r->reason), "%zu cell(s), the header has %zu", r->n_cells, r->n_cols);
		return -EINVAL;
	}
	if (out_put(o, "{", 1) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < r->n_cols; i++) {
		const struct cell *c = &r->cells[i];
		const struct col *col = &r->cols[i];
		const char *s;
		size_t n;
		bool empty;

		if ((rc = cell_text(r, c, &s, &n)) < 0)
			return rc;
		/* A quoted "" in a string column is an empty string (as PostgreSQL writes it); else csv_empty. */
		empty = n == 0 && !(c->quoted && col->type == CSV_STRING);
		if (empty && r->opt->empty == CSV_EMPTY_OMIT)
			continue;
		if ((!first && out_put(o, ",", 1) < 0) || out_put(o, r->keys + col->key_off, col->key_len) < 0)
			return -ENOMEM;
		first = false;
		if (empty) {
			bool str = r->opt->empty == CSV_EMPTY_STRING && col->type == CSV_STRING;

			if (out_put(o, str ? "\"\"" : "null", str ? 2 : 4) < 0)
				return -ENOMEM;
			continue;
		}
		switch (col->type) {
		case CSV_STRING:
			if (out_put(o, "\"", 1) < 0)
				return -ENOMEM;
			rc = put_escaped(o, s, n);
			if (rc == -EILSEQ) {
				snprintf(r->reason, sizeof(r->reason), "cell %zu (%.*s): invalid UTF-8", i + 1,
					 (int)col->key_len - 3, r->keys + col->key_off + 1);
				return -EINVAL;
			}
			if (rc < 0 || out_put(o, "\"", 1) < 0)
				return -ENOMEM;
			continue;
		case CSV_INTEGER:
		case CSV_NUMBER:
			if (!is_number(s, n, col->type == CSV_INTEGER))
				goto bad_type;
			break;
		case CSV_BOOLEAN:
			if (!((n == 4 && !memcmp(s, "true", 4)) || (n == 5 && !memcmp(s, "false", 5))))
				goto bad_type;
			break;
		case CSV_JSON:
			if (!is_json_value(s, n))
				goto bad_type;
			break;
		}
		if (out_put(o, s, n) < 0)
			return -ENOMEM;
		continue;
bad_type:
		snprintf(r->reason, sizeof(r->reason), "cell %zu (%.*s): '%.*s' is not %s", i + 1,
			 (int)col->key_len - 3, r->keys + col->key_off + 1, n > 40 ? 40 : (int)n, s,
			 col->type == CSV_INTEGER ? "an integer" : col->type == CSV_NUMBER ? "a number" :
			 col->type == CSV_BOOLEAN ? "true or false" : "a JSON value");
		return -EINVAL;
	}
	if (out_put(o, "}", 1) < 0)
		return -ENOMEM;
	if (o->len > r->max_record) {
		snprintf(r->reason, sizeof(r->reason), "record longer than max_record_bytes (%zu bytes as JSON)", o->len);
		return -EINVAL;
	}
	return 0;
}

static int header_fail(struct csv_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int header_fail(struct csv_reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static int read_header(struct csv_reader *r)
{
	struct out keys = { 0 };
	int rc;

	r->n_cols = 0;
	for (;;) {
		rc = next_row(r);
		if (rc <= 0)
			return rc;      /* an empty file: no rows either */
		r->next_lineno += 1 + r->row_nl;
		if (!(r->n_cells == 1 && r->cells[0].len == 0 && !r->cells[0].quoted && !r->skipping))
			break;
		r->start = r->pos;      /* blank lines before the header */
	}
	if (r->skipping)
		return header_fail(r, "header: line 1 is longer than max_record_bytes");
	if (r->bad)
		return header_fail(r, "header: %s", r->bad);
	free(r->cols);
	if (!(r->cols = calloc(r->n_cells, sizeof(*r->cols))))
		return -ENOMEM;
	for (size_t i = 0; i < r->n_cells; i++) {
		struct col *c = &r->cols[i];
		const char *s;
		size_t n, name_len;

		if ((rc = cell_text(r, &r->cells[i], &s, &n)) < 0)
			goto out;
		if (!n) {
			char no[32];

			snprintf(no, sizeof(no), "%zu", i + 1);
			rc = header_fail(r, "header: column %s has an empty name", no);
			goto out;
		}
		c->key_off = (uint32_t)keys.len;
		if ((rc = out_put(&keys, "\"", 1)) < 0)
			goto out;
		if ((rc = put_escaped(&keys, s, n)) == -EILSEQ) {
			rc = header_fail(r, "header: column name is not valid UTF-8");
			goto out;
		}
		if (rc < 0)
			goto out;
		name_len = keys.len - c->key_off - 1;
		/* Compare escaped forms: the same name escapes the same way. */
		for (size_t j = 0; j < i; j++) {
			if (r->cols[j].key_len - 3 == name_len &&
			    !memcmp(keys.buf + r->cols[j].key_off + 1, keys.buf + c->key_off + 1, name_len)) {
				rc = header_fail(r, "header: column '%.*s' appears twice", (int)name_len, keys.buf + c->key_off + 1);
				goto out;
			}
		}
		c->type = CSV_STRING;
		for (size_t k = 0; k < r->opt->n_columns; k++)
			if (strlen(r->opt->columns[k].name) == n && !memcmp(r->opt->columns[k].name, s, n))
				c->type = r->opt->columns[k].type;
		if ((rc = out_put(&keys, "\":", 2)) < 0)
			goto out;
		c->key_len = (uint32_t)(keys.len - c->key_off);
		r->n_cols++;
	}
	rc = r->opt->primary_key[0] ? -EBADMSG : 0;   /* none given (a test): no column is required */
	for (size_t i = 0; i < r->n_cols; i++) {
		const struct col *c = &r->cols[i];

		if (c->key_len - 3 == strlen(r->opt->primary_key) &&
		    !memcmp(keys.buf + c->key_off + 1, r->opt->primary_key, c->key_len - 3))
			rc = 0;
	}
	if (rc < 0)
		header_fail(r, "header: no column '%s' (the connection's primary_key)", r->opt->primary_key);
out:
	if (rc == -EILSEQ)
		rc = -EBADMSG;
	free(r->keys);
	r->keys = keys.buf;
	r->keys_len = keys.len;
	if (rc == 0)
		r->start = r->pos;
	else
		r->n_cols = 0;
	return rc;
}

int csv_reader_open(struct csv_reader *r, struct instream *in, char delim, const struct csv_options *o,
		    off_t offset, uint64_t lineno)
{
	int rc;

	r->in = in;
	r->delim = delim;
	r->opt = o;
	r->start = r->end = r->pos = 0;
	r->cell_start = r->cell_end = 0;
	r->buf_offset = 0;
	r->eof = false;
	r->next_lineno = 1;
	r->have_last = r->replay = false;
	r->err[0] = '\0';
	r->n_cols = 0;
	/* A byte order mark, as Excel writes one: not part of the first column's name. */
	while (r->end < 3 && !r->eof)
		if ((rc = fill(r)) < 0)
			goto fail;
	if (r->end >= 3 && !memcmp(r->buf, "\xEF\xBB\xBF", 3))
		r->start = r->pos = 3;
	if ((rc = read_header(r)) < 0)
		goto fail;
	if (offset > 0) {
		off_t here = r->buf_offset + (off_t)r->start;

		if (offset < here) {
			snprintf(r->err, sizeof(r->err), "resume offset %lld lies inside the header (%lld bytes)",
				 (long long)offset, (long long)here);
			return -EBADMSG;
		}
		/* Drop what is buffered up to @offset, then skip the rest in the stream. */
		if (offset <= r->buf_offset + (off_t)r->end) {
			r->start = r->pos = (size_t)(offset - r->buf_offset);
		} else {
			uint64_t skip = (uint64_t)(offset - r->buf_offset - (off_t)r->end);

			if ((rc = instream_skip(in, skip)) < 0)
				goto fail;
			r->buf_offset = offset;
			r->start = r->end = r->pos = 0;
		}
		r->next_lineno = lineno;
	}
	return 0;
fail:
	if (rc == -EBADMSG && !r->err[0] && instream_error(in))
		snprintf(r->err, sizeof(r->err), "%s", instream_error(in));
	if (rc == -ENODATA)
		snprintf(r->err, sizeof(r->err), "the file is shorter than the resume offset %lld", (long long)offset);
	return rc == -ENODATA ? -EBADMSG : rc;
}

int csv_reader_next(struct csv_reader *r, struct ndjson_line *line)
{
	int rc;

	if (r->replay) {
		r->replay = false;
		r->have_last = true;
		*line = r->last;
		return 1;
	}
	r->have_last = false;
	if (!r->n_cols) {
		/* No header (an empty file) or a header refused: nothing to read. */
		if (r->err[0])
			return -EBADMSG;
		return 0;
	}
	for (;;) {
		uint64_t no = r->next_lineno;

		rc = next_row(r);
		if (rc < 0) {
			if (rc == -EBADMSG && instream_error(r->in))
				snprintf(r->err, sizeof(r->err), "%s", instream_error(r->in));
			return rc;
		}
		if (rc == 0)
			return 0;
		r->next_lineno += 1 + r->row_nl;
		if (!r->skipping && r->n_cells == 1 && r->cells[0].len == 0 && !r->cells[0].quoted && !r->bad) {
			r->start = r->pos;
			continue;       /* blank lines count for numbering only */
		}
		*line = (struct ndjson_line){ .lineno = no, .start_offset = r->row_offset,
					      .end_offset = r->buf_offset + (off_t)r->pos };
		if (r->skipping) {
			line->too_long = !r->bad;
			line->error = r->bad;
		} else if (r->bad) {
			line->error = r->bad;
		} else if ((rc = convert(r)) == -EINVAL) {
			line->error = r->reason;
		} else if (rc < 0) {
			return rc;
		}
		if (!r->skipping && line->error) {
			/* The row as written, without its line break. */
			size_t n = r->pos - r->start;

			while (n && (r->buf[r->start + n - 1] == '\n' || r->buf[r->start + n - 1] == '\r'))
				n--;
			line->data = r->buf + r->start;
			line->len = n;
		} else if (!line->error && !line->too_long) {
			line->data = r->json.buf;
			line->len = r->json.len;
		}
		/* The row's bytes stay in the buffer until the next call: fill moves only before start. */
		r->start = r->pos;
		r->last = *line;
		r->have_last = true;
		return 1;
	}
}

void csv_reader_read_on(struct csv_reader *r)
{
	r->eof = false;
}

off_t csv_reader_offset(const struct csv_reader *r)
{
	return r->replay ? r->last.start_offset : r->buf_offset + (off_t)r->start;
}

uint64_t csv_reader_lineno(const struct csv_reader *r)
{
	return r->replay ? r->last.lineno : r->next_lineno;
}

void csv_reader_unget(struct csv_reader *r)
{
	if (!r->have_last)
		return;
	r->replay = true;
	r->have_last = false;
}
