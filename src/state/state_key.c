/* state_key: what the store compares, the canonical form of a primary key and a record's hash. */
/*
 * Rule 2 of the store (state_store.c): anything the API might treat as one key is one key. A
 * number in any spelling and a string holding a number become one form ('n' + digits +
 * exponent; past 15 significant digits, the double it reads as), other strings 's' + their unescaped bytes, ASCII case folded and outer blanks
 * trimmed. Merging costs at most a resend; splitting could skip a needed record.
 */
#include "state/state_key.h"
#include "util/jsonstr.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static bool is_blank(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/*
 * A number in a lenient spelling (sign, leading zeros, "5.", ".5", exponent) as 'n' + ['-'] +
 * significant digits + ['e' exponent], exactly; *@n_digits: how many significant digits.
 * -EINVAL when @p is not a number.
 */
static int canon_exact(const unsigned char *p, size_t n, unsigned char *out, size_t *out_len, size_t *n_digits)
{
	unsigned char digits[STATE_KEY_MAX];
	size_t i = 0, nd = 0, o = 0;
	long long exp = 0, e = 0;
	bool neg = false, any = false, eneg = false;
	int w;

	if (i < n && (p[i] == '-' || p[i] == '+'))
		neg = p[i++] == '-';
	for (; i < n && is_digit(p[i]); i++) {
		any = true;
		if (nd || p[i] != '0') {
			if (nd == sizeof digits)
				return -E2BIG;
			digits[nd++] = p[i];
		}
	}
	if (i < n && p[i] == '.')
		for (i++; i < n && is_digit(p[i]); i++) {
			any = true;
			exp--;
			if (nd || p[i] != '0') {
				if (nd == sizeof digits)
					return -E2BIG;
				digits[nd++] = p[i];
			}
		}
	if (!any)
		return -EINVAL;
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '-' || p[i] == '+'))
			eneg = p[i++] == '-';
		if (i == n || !is_digit(p[i]))
			return -EINVAL;
		for (; i < n && is_digit(p[i]); i++) {
			if (e > 1000000000)
				return -E2BIG;
			e = e * 10 + (p[i] - '0');
		}
		exp += eneg ? -e : e;
	}
	if (i != n)
		return -EINVAL;
	while (nd && digits[nd - 1] == '0') {
		nd--;
		exp++;
	}
	*n_digits = nd;
	out[o++] = 'n';
	if (nd == 0) {
		out[o++] = '0';     /* 0, -0, 0.0e5: one zero */
		*out_len = o;
		return 0;
	}
	if (neg)
		out[o++] = '-';
	if (o + nd + 24 > STATE_KEY_MAX)
		return -E2BIG;
	memcpy(out + o, digits, nd);
	o += nd;
	if (exp) {
		w = snprintf((char *)out + o, 24, "e%lld", exp);
		o += (size_t)w;
	}
	*out_len = o;
	return 0;
}

/*
 * A number as canon_exact has it, unless it has more significant digits than a double keeps
 * (15): an API that reads numbers as doubles takes 9007199254740993 for 9007199254740992, so
 * such a number is the double it reads as — in its shortest form of at most 15 digits where one
 * gives that double (the exact form of that number), else its 17 digits. Merging costs a resend.
 */
static int canon_number(const unsigned char *p, size_t n, unsigned char *out, size_t *out_len)
{
	char text[STATE_KEY_MAX + 1], t[40];
	size_t nd;
	double d;
	int r;

	if ((r = canon_exact(p, n, out, out_len, &nd)) < 0 || nd <= 15 || n > STATE_KEY_MAX)
		return r;
	memcpy(text, p, n);
	text[n] = '\0';
	d = strtod(text, NULL);
	if (!isfinite(d) || d == 0)
		return 0;       /* beyond a double's range: no API reads it as one, the exact form stands */
	snprintf(t, sizeof(t), "%.15g", d);
	if (strtod(t, NULL) != d)
		snprintf(t, sizeof(t), "%.17g", d);
	return canon_exact((const unsigned char *)t, strlen(t), out, out_len, &nd);
}

static int hex4(const unsigned char *p, size_t n, size_t i, unsigned *cp)
{
	unsigned v = 0;

	if (i + 4 > n)
		return -EINVAL;
	for (size_t k = i; k < i + 4; k++) {
		int h = jsonstr_hexval(p[k]);

		if (h < 0)
			return -EINVAL;
		v = v << 4 | (unsigned)h;
	}
	*cp = v;
	return 0;
}

/* Unescape a JSON string body (between the quotes) into @out; ASCII letters folded to lower. */
static int unescape(const unsigned char *p, size_t n, unsigned char *out, size_t cap, size_t *out_len)
{
	size_t i = 0, o = 0;
	unsigned cp, lo;

	while (i < n) {
		unsigned char c = p[i++];

		if (c != '\\') {
			cp = c;
		} else {
			if (i == n)
				return -EINVAL;
			c = p[i++];
			switch (c) {
			case '"': case '\\': case '/': cp = c; break;
			case 'b': cp = '\b'; break;
			case 'f': cp = '\f'; break;
			case 'n': cp = '\n'; break;
			case 'r': cp = '\r'; break;
			case 't': cp = '\t'; break;
			case 'u':
				if (hex4(p, n, i, &cp) < 0)
					return -EINVAL;
				i += 4;
				if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < n && p[i] == '\\' && p[i + 1] == 'u' &&
				    hex4(p, n, i + 2, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					i += 6;
				}
				break;
			default:
				return -EINVAL;
			}
			if (cp >= 0x80) {
				/* Encode as UTF-8 so "\u00e9" and "é" are one key. */
				unsigned char u[4];
				size_t m;

				if (cp < 0x800) {
					u[0] = (unsigned char)(0xC0 | cp >> 6);
					u[1] = (unsigned char)(0x80 | (cp & 0x3F));
					m = 2;
				} else if (cp < 0x10000) {
					u[0] = (unsigned char)(0xE0 | cp >> 12);
					u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
					u[2] = (unsigned char)(0x80 | (cp & 0x3F));
					m = 3;
				} else {
					u[0] = (unsigned char)(0xF0 | cp >> 18);
					u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
					u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
					u[3] = (unsigned char)(0x80 | (cp & 0x3F));
					m = 4;
				}
				if (o + m > cap)
					return -E2BIG;
				memcpy(out + o, u, m);
				o += m;
				continue;
			}
		}
		if (o == cap)
			return -E2BIG;
		out[o++] = (unsigned char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
	}
	*out_len = o;
	return 0;
}

int state_key_canon(const char *json_value, size_t len, unsigned char *out, size_t *out_len)
{
	const unsigned char *p = (const unsigned char *)json_value;
	unsigned char body[STATE_KEY_MAX];
	size_t n = len, b, start = 0;
	int rc;

	while (n && is_blank(p[n - 1]))
		n--;
	while (n && is_blank(*p)) {
		p++;
		n--;
	}
	if (n == 0)
		return -EINVAL;
	if (*p != '"')
		return canon_number(p, n, out, out_len);
	if (n < 2 || p[n - 1] != '"')
		return -EINVAL;
	rc = unescape(p + 1, n - 2, body, sizeof body, &b);
	if (rc < 0)
		return rc;
	/* The API may trim the key or read it as a number: so do we. */
	while (b > start && is_blank(body[b - 1]))
		b--;
	while (start < b && is_blank(body[start]))
		start++;
	if (canon_number(body + start, b - start, out, out_len) == 0)
		return 0;
	if (b - start + 1 > STATE_KEY_MAX)
		return -E2BIG;
	out[0] = 's';
	memcpy(out + 1, body + start, b - start);
	*out_len = b - start + 1;
	return 0;
}

struct store_hash state_key_hash_record(const void *rec, size_t len)
{
	XXH128_hash_t h = XXH3_128bits(rec, len);

	return (struct store_hash){ .lo = h.low64, .hi = h.high64 };
}
