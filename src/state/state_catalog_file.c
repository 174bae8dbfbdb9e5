/* state_catalog_file: a field catalog's text file: saved whole by atomic replace, loaded all or nothing. */
#include "state/state_catalog_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/state_catalog.h"
#include "util/fileio.h"
#include "util/jsonstr.h"

#define FILE_HEADER "# dcsyncd field catalog 1\n"

struct sbuf {
	char *b;
	size_t n, cap;
	bool oom;
};

static void put(struct sbuf *s, const char *p, size_t n)
{
	if (s->oom)
		return;
	if (s->n + n > s->cap) {
		size_t cap = s->cap ? s->cap : 4096;
		char *b;

		while (cap < s->n + n)
			cap *= 2;
		b = realloc(s->b, cap);
		if (!b) {
			s->oom = true;
			return;
		}
		s->b = b;
		s->cap = cap;
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void put_str(struct sbuf *s, const char *p)
{
	put(s, p, strlen(p));
}

static void put_escaped(struct sbuf *s, const char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		char e[4] = { '\\', 0, 0, 0 };

		switch (ch) {
		case '\\': e[1] = '\\'; put(s, e, 2); break;
		case '\t': e[1] = 't'; put(s, e, 2); break;
		case '\n': e[1] = 'n'; put(s, e, 2); break;
		case '\r': e[1] = 'r'; put(s, e, 2); break;
		default:
			if (ch < 0x20 || ch == 0x7f) {
				e[1] = 'x';
				e[2] = hex[ch >> 4];
				e[3] = hex[ch & 15];
				put(s, e, 4);
			} else {
				put(s, &p[i], 1);
			}
		}
	}
}

int state_catalog_file_save(struct catalog *c, const char *path)
{
	struct sbuf s = { 0 };
	char num[64];
	int r;

	if (state_catalog_busy(c))
		return -EBUSY;
	put_str(&s, FILE_HEADER);
	snprintf(num, sizeof(num), "overflow\t%" PRIu64 "\n", state_catalog_overflow(c));
	put_str(&s, num);
	for (size_t i = 0; i < state_catalog_count(c); i++) {
		const struct catalog_field *f = state_catalog_field_at(c, i);

		snprintf(num, sizeof(num), "field\t%" PRIu64 "\t%" PRId64 "\t", f->records, f->last_seen);
		put_str(&s, num);
		put_escaped(&s, f->name, f->name_len);
		put(&s, "\n", 1);
	}
	r = s.oom ? -ENOMEM : fileio_replace(path, s.b, s.n, 0640, true);
	free(s.b);
	return r;
}

struct entry {
	bool is_field;
	uint64_t records;        /* the overflow count for an overflow line */
	int64_t last_seen;
	char *name;              /* decoded in place in the file buffer */
	size_t name_len;
};

static int read_file(const char *path, char **out, size_t *len)
{
	struct stat st;
	char *b = NULL;
	size_t n = 0, cap;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	cap = st.st_size > 0 ? (size_t)st.st_size : 4096;
	for (;;) {
		ssize_t got;

		/* Full buffer: the file grew since fstat (or is exactly that long: read to EOF). */
		if (!b || n == cap) {
			size_t ncap = b ? cap * 2 : cap;
			char *nb = realloc(b, ncap);

			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			b = nb;
			cap = ncap;
		}
		got = read(fd, b + n, cap - n);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	*out = b;
	*len = n;
	b = NULL;
	r = 0;
out:
	free(b);
	close(fd);
	return r;
}

/* Digits only: strtoull would take a sign, leading blanks, and wrap "-1" to a huge count. */
static int parse_u64(const char *p, const char *end, uint64_t *v)
{
	uint64_t x = 0;

	if (p == end)
		return -EBADMSG;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9' || x > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -EBADMSG;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	*v = x;
	return 0;
}

static int parse_i64(const char *p, const char *end, int64_t *v)
{
	bool neg = p < end && *p == '-';
	uint64_t x;

	if (parse_u64(p + neg, end, &x) < 0 || x > (uint64_t)INT64_MAX + neg)
		return -EBADMSG;
	*v = neg ? (x == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)x) : (int64_t)x;
	return 0;
}

/* Undo put_escaped() in place; the result is never longer than the input. */
static int unescape(char *p, char *end, size_t *len)
{
	char *start = p, *w = p;

	while (p < end) {
		if (*p != '\\') {
			*w++ = *p++;
			continue;
		}
		if (++p == end)
			return -EBADMSG;
		switch (*p) {
		case '\\': *w++ = '\\'; p++; break;
		case 't': *w++ = '\t'; p++; break;
		case 'n': *w++ = '\n'; p++; break;
		case 'r': *w++ = '\r'; p++; break;
		case 'x': {
			int hi = end - p > 2 ? jsonstr_hexval((unsigned char)p[1]) : -1, lo = hi >= 0 ? jsonstr_hexval((unsigned char)p[2]) : -1;

			if (lo < 0)
				return -EBADMSG;
			*w++ = (char)(hi << 4 | lo);
			p += 3;
			break;
		}
		default:
			return -EBADMSG;
		}
	}
	*len = (size_t)(w - start);
	return 0;
}

static char *next_tab(char *p, char *end)
{
	char *t = memchr(p, '\t', (size_t)(end - p));

	return t ? t : end;
}

static int parse_line(char *p, char *end, struct entry *e)
{
	char *t = next_tab(p, end), *t2, *t3;

	*e = (struct entry){ 0 };
	if ((size_t)(t - p) == 8 && memcmp(p, "overflow", 8) == 0)
		return t == end ? -EBADMSG : parse_u64(t + 1, end, &e->records);
	if ((size_t)(t - p) != 5 || memcmp(p, "field", 5) != 0 || t == end)
		return -EBADMSG;
	t2 = next_tab(t + 1, end);
	if (t2 == end)
		return -EBADMSG;
	t3 = next_tab(t2 + 1, end);
	if (t3 == end)
		return -EBADMSG;
	if (parse_u64(t + 1, t2, &e->records) < 0 || parse_i64(t2 + 1, t3, &e->last_seen) < 0)
		return -EBADMSG;
	e->is_field = true;
	e->name = t3 + 1;
	return unescape(e->name, end, &e->name_len);
}

int state_catalog_file_load(struct catalog *c, const char *path, size_t *bad_line)
{
	struct entry *entries = NULL;
	size_t len = 0, n_lines = 0, n = 0, lineno = 0;
	char *buf = NULL, *p, *end;
	int r;

	if (state_catalog_busy(c))
		return -EBUSY;
	if ((r = read_file(path, &buf, &len)) < 0)
		return r;
	end = buf + len;
	for (p = buf; p < end; p++)
		n_lines += *p == '\n';
	entries = calloc(n_lines + 1, sizeof(*entries));
	if (!entries) {
		r = -ENOMEM;
		goto out;
	}
	/* Parse every line before merging any, so a damaged file changes nothing. */
	for (p = buf; p < end;) {
		char *eol = memchr(p, '\n', (size_t)(end - p));

		if (!eol)
			eol = end;
		lineno++;
		if (p < eol && *p != '#') {
			if (parse_line(p, eol, &entries[n]) < 0) {
				if (bad_line)
					*bad_line = lineno;
				r = -EBADMSG;
				goto out;
			}
			n++;
		}
		p = eol + 1;
	}
	/* Not busy (checked above), so no add fails. */
	for (size_t i = 0; i < n; i++)
		if (entries[i].is_field)
			(void)state_catalog_add(c, entries[i].name, entries[i].name_len, entries[i].records,
					  entries[i].last_seen);
		else
			(void)state_catalog_add_overflow(c, entries[i].records);
	r = 0;
out:
	free(entries);
	free(buf);
	return r;
}
