/* jsonstr: append text as a JSON string literal, escaping what JSON and terminals need. */
#include "util/jsonstr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jsonstr_raw(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap : 256;
		char *b;

		while (c < *len + n + 1)
			c *= 2;
		b = realloc(*buf, c);
		if (!b)
			return -ENOMEM;
		*buf = b;
		*cap = c;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

/* Length of the valid UTF-8 sequence at @p (at most @n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	size_t need;
	unsigned cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		need = 2, cp = p[0] & 0x1F;
	else if (p[0] >= 0xE0 && p[0] <= 0xEF)
		need = 3, cp = p[0] & 0x0F;
	else if (p[0] >= 0xF0 && p[0] <= 0xF4)
		need = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((need == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (need == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
		return 0;
	return need;
}

int jsonstr_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0;
	char esc[8];
	int r;

	if ((r = jsonstr_raw(buf, len, cap, "\"", 1)) < 0)
		return r;
	while (i < n) {
		size_t l = utf8_len(p + i, n - i);
		const char *e = NULL;

		if (l == 1 && p[i] >= 0x20 && p[i] != '"' && p[i] != '\\' && p[i] != 0x7F) {
			run++;
			i++;
			continue;
		}
		if (l > 1) {
			run += l;
			i += l;
			continue;
		}
		if ((r = jsonstr_raw(buf, len, cap, s + i - run, run)) < 0)
			return r;
		run = 0;
		if (p[i] == '"')
			e = "\\\"";
		else if (p[i] == '\\')
			e = "\\\\";
		else if (p[i] == '\n')
			e = "\\n";
		else if (p[i] == '\t')
			e = "\\t";
		else if (p[i] == '\r')
			e = "\\r";
		if (!e) {
			snprintf(esc, sizeof(esc), "\\u%04x", p[i]);
			e = esc;
		}
		if ((r = jsonstr_raw(buf, len, cap, e, strlen(e))) < 0)
			return r;
		i++;
	}
	if ((r = jsonstr_raw(buf, len, cap, s + i - run, run)) < 0)
		return r;
	return jsonstr_raw(buf, len, cap, "\"", 1);
}

bool jsonstr_is_text(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		size_t l = utf8_len(p + i, n - i);

		if (!l || (l == 1 && p[i] < 0x20 && p[i] != '\t'))
			return false;
		i += l;
	}
	return true;
}

int jsonstr_hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
