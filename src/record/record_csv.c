/* record_csv: CSV/TSV rows (cut by csv_scan) made compact JSON objects named by the header and typed by csv_columns. */
#include "record/record_csv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "record/record_csv_scan.h"
#include "record/record_decompress.h"

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
	struct csv_scan s;      /* the rows' cells */
	const struct csv_options *opt;
	uint64_t next_lineno;
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

const char *record_csv_type_name(enum csv_type t)
{
	return type_names[t];
}

int record_csv_columns_parse(struct csv_options *o, const char *spec, char *err, size_t errlen)
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

void record_csv_options_release(struct csv_options *o)
{
	for (size_t i = 0; i < o->n_columns; i++)
		free(o->columns[i].name);
	free(o->columns);
	o->columns = NULL;
	o->n_columns = 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211ull;
	return h;
}

uint64_t record_csv_options_hash(const struct csv_options *o)
{
	uint64_t h = 1469598103934665603ull;
	unsigned char v[2] = { (unsigned char)o->delimiter, (unsigned char)o->empty };

	for (size_t i = 0; i < o->n_columns; i++) {
		unsigned char t = (unsigned char)o->columns[i].type;

		/* The name's NUL ends it: "ab:x" and "a:x b:y" hash apart. */
		h = fnv(h, o->columns[i].name, strlen(o->columns[i].name) + 1);
		h = fnv(h, &t, 1);
	}
	return fnv(h, v, sizeof(v)) | 1;
}

int record_csv_reader_new(struct csv_reader **out, size_t max_record_bytes)
{
	struct csv_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	if (record_csv_scan_init(&r->s, max_record_bytes) < 0) {
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void record_csv_reader_free(struct csv_reader *r)
{
	if (!r)
		return;
	record_csv_scan_release(&r->s);
	free(r->cols);
	free(r->keys);
	free(r->json.buf);
	free(r->tmp.buf);
	free(r);
}

const char *record_csv_reader_error(const struct csv_reader *r)
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
static int cell_text(struct csv_reader *r, const struct csv_cell *c, const char **s, size_t *n)
{
	const char *p = r->s.buf + r->s.start + c->off;

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
	if (r->s.n_cells != r->n_cols) {
		snprintf(r->reason, sizeof(r->reason), "%zu cell(s), the header has %zu", r->s.n_cells, r->n_cols);
		return -EINVAL;
	}
	if (out_put(o, "{", 1) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < r->n_cols; i++) {
		const struct csv_cell *c = &r->s.cells[i];
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
	if (o->len > r->s.max_record) {
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
		rc = record_csv_scan_row(&r->s);
		if (rc <= 0)
			return rc;      /* an empty file: no rows either */
		r->next_lineno += 1 + r->s.row_nl;
		if (!record_csv_scan_blank(&r->s))
			break;
		r->s.start = r->s.pos;      /* blank lines before the header */
	}
	if (r->s.skipping)
		return header_fail(r, "header: line 1 is longer than max_record_bytes");
	if (r->s.bad)
		return header_fail(r, "header: %s", r->s.bad);
	free(r->cols);
	if (!(r->cols = calloc(r->s.n_cells, sizeof(*r->cols))))
		return -ENOMEM;
	for (size_t i = 0; i < r->s.n_cells; i++) {
		struct col *c = &r->cols[i];
		const char *s;
		size_t n, name_len;

		if ((rc = cell_text(r, &r->s.cells[i], &s, &n)) < 0)
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
		r->s.start = r->s.pos;
	else
		r->n_cols = 0;
	r->s.width = r->n_cols;
	return rc;
}

int record_csv_reader_open(struct csv_reader *r, struct record_stream *in, char delim, const struct csv_options *o,
		    off_t offset, uint64_t lineno)
{
	int rc;

	record_csv_scan_reset(&r->s, in, delim);
	r->opt = o;
	r->next_lineno = 1;
	r->have_last = r->replay = false;
	r->err[0] = '\0';
	r->n_cols = 0;
	if ((rc = record_csv_scan_skip_bom(&r->s)) < 0)
		goto fail;
	if ((rc = read_header(r)) < 0)
		goto fail;
	if (offset > 0) {
		off_t here = r->s.buf_offset + (off_t)r->s.start;

		if (offset < here) {
			snprintf(r->err, sizeof(r->err), "resume offset %lld lies inside the header (%lld bytes)",
				 (long long)offset, (long long)here);
			return -EBADMSG;
		}
		if ((rc = record_csv_scan_seek(&r->s, offset)) < 0)
			goto fail;
		r->next_lineno = lineno;
	}
	return 0;
fail:
	if (rc == -EBADMSG && !r->err[0] && record_decompress_error(in))
		snprintf(r->err, sizeof(r->err), "%s", record_decompress_error(in));
	if (rc == -ENODATA)
		snprintf(r->err, sizeof(r->err), "the file is shorter than the resume offset %lld", (long long)offset);
	return rc == -ENODATA ? -EBADMSG : rc;
}

int record_csv_reader_next(struct csv_reader *r, struct ndjson_line *line)
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

		rc = record_csv_scan_row(&r->s);
		if (rc < 0) {
			if (rc == -EBADMSG && record_decompress_error(r->s.in))
				snprintf(r->err, sizeof(r->err), "%s", record_decompress_error(r->s.in));
			return rc;
		}
		if (rc == 0)
			return 0;
		r->next_lineno += 1 + r->s.row_nl;
		if (record_csv_scan_blank(&r->s) && !r->s.bad) {
			r->s.start = r->s.pos;
			continue;       /* blank lines count for numbering only */
		}
		*line = (struct ndjson_line){ .lineno = no, .start_offset = r->s.row_offset,
					      .end_offset = r->s.buf_offset + (off_t)r->s.pos };
		if (r->s.skipping) {
			/* Its text, bounded: the first bytes, and how long it was. */
			snprintf(r->reason, sizeof(r->reason), "%s%srow longer than max_record_bytes (%lld bytes; the first %zu kept)",
				 r->s.bad ? r->s.bad : "", r->s.bad ? "; " : "",
				 (long long)(line->end_offset - line->start_offset), r->s.head_len);
			line->error = r->reason;
			line->data = r->s.head;
			line->len = r->s.head_len;
		} else if (r->s.bad) {
			line->error = r->s.bad;
		} else if ((rc = convert(r)) == -EINVAL) {
			line->error = r->reason;
		} else if (rc < 0) {
			return rc;
		}
		if (!r->s.skipping && line->error) {
			/* The row as written, without its line break. */
			size_t n = r->s.pos - r->s.start;

			while (n && (r->s.buf[r->s.start + n - 1] == '\n' || r->s.buf[r->s.start + n - 1] == '\r'))
				n--;
			line->data = r->s.buf + r->s.start;
			line->len = n;
		} else if (!line->error && !line->too_long) {
			line->data = r->json.buf;
			line->len = r->json.len;
		}
		/* The row's bytes stay in the buffer until the next call: fill moves only before start. */
		r->s.start = r->s.pos;
		r->last = *line;
		r->have_last = true;
		return 1;
	}
}

void record_csv_reader_read_on(struct csv_reader *r)
{
	r->s.eof = false;
}

off_t record_csv_reader_offset(const struct csv_reader *r)
{
	return r->replay ? r->last.start_offset : r->s.buf_offset + (off_t)r->s.start;
}

uint64_t record_csv_reader_lineno(const struct csv_reader *r)
{
	return r->replay ? r->last.lineno : r->next_lineno;
}

void record_csv_reader_unget(struct csv_reader *r)
{
	if (!r->have_last)
		return;
	r->replay = true;
	r->have_last = false;
}
