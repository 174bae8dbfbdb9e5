/* formula: build and check Data Connection formulas, DC_{UUID}:{key}:{params}:{field}:{fallback}. */
/*
 * The formula is split on ':' with no quoting, so any ':' or line break inside a segment shifts
 * the segments and the lookup silently shows the fallback. Tag brackets matter too: the key is a
 * personalization tag [%NAME%] substituted before the lookup, and an unpaired "[%" or "%]" makes
 * the substitution swallow or leave text. Both checks are therefore shared by build and parse.
 * Messages quote at most QUOTE_MAX bytes of user text, and only after control characters are
 * refused, so they are safe to print.
 */
#include "cli/cli_formula.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PREFIX "DC_"
#define PREFIX_LEN 3
#define UUID_LEN 36
#define N_SEGMENTS 5
#define QUOTE_MAX 64
#define SUGGEST_MAX_LEN 255
#define SUGGEST_MAX_OUT 16

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int quote_len(size_t n)
{
	return (int)(n < QUOTE_MAX ? n : QUOTE_MAX);
}

static bool is_hex(char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static bool uuid_ok(const char *s, size_t n)
{
	if (n != UUID_LEN)
		return false;
	for (size_t i = 0; i < n; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : !is_hex(s[i]))
			return false;
	}
	return true;
}

/* A control character (a line break included) anywhere; @base turns offsets into columns. */
static int check_controls(const char *what, const char *s, size_t n, size_t base, char *err,
			  size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '\n' || ch == '\r') {
			seterr(err, errlen, "%s contains a line break at column %zu", what, base + i + 1);
			return -EINVAL;
		}
		if (ch < 0x20 || ch == 0x7f) {
			seterr(err, errlen, "%s contains control character 0x%02x at column %zu", what, ch,
			       base + i + 1);
			return -EINVAL;
		}
	}
	return 0;
}

/* Every "[%" closed by a "%]" before the next "[%"; with !@tags_allowed, no bracket at all. */
static int check_tags(const char *what, const char *s, size_t n, size_t base, bool tags_allowed,
		      char *err, size_t errlen)
{
	size_t open = 0;
	bool inside = false;

	for (size_t i = 0; i + 1 < n; i++) {
		bool opens = s[i] == '[' && s[i + 1] == '%', closes = s[i] == '%' && s[i + 1] == ']';

		if ((opens || closes) && !tags_allowed) {
			seterr(err, errlen, "%s \"%.*s\" contains \"%s\" at column %zu: a field name is not a tag",
			       what, quote_len(n), s, opens ? "[%" : "%]", base + i + 1);
			return -EINVAL;
		}
		if (opens) {
			if (inside)
				break;
			inside = true;
			open = i++;
		} else if (closes) {
			if (!inside) {
				seterr(err, errlen, "%s \"%.*s\" has a stray \"%%]\" at column %zu", what,
				       quote_len(n), s, base + i + 1);
				return -EINVAL;
			}
			inside = false;
			i++;
		}
	}
	if (inside) {
		seterr(err, errlen, "%s \"%.*s\" has \"[%%\" at column %zu without a closing \"%%]\"", what,
		       quote_len(n), s, base + open + 1);
		return -EINVAL;
	}
	return 0;
}

static int check_text(const char *what, const char *s, bool tags_allowed, char *err, size_t errlen)
{
	size_t n = strlen(s);
	const char *colon = memchr(s, ':', n);
	int r;

	if ((r = check_controls(what, s, n, 0, err, errlen)) < 0)
		return r;
	if (colon) {
		seterr(err, errlen, "%s \"%.*s\" contains ':' at column %zu, which separates the segments",
		       what, quote_len(n), s, (size_t)(colon - s) + 1);
		return -EINVAL;
	}
	return check_tags(what, s, n, 0, tags_allowed, err, errlen);
}

static bool tag_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 5 || s[0] != '[' || s[1] != '%' || s[n - 2] != '%' || s[n - 1] != ']')
		return false;
	for (size_t i = 2; i < n - 2; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

int cli_formula_build(char **out, const char *uuid, const char *key_tag, const char *params,
		  const char *field, const char *fallback, char *err, size_t errlen)
{
	char *s;
	int r;

	if (!params)
		params = "";
	if (!fallback)
		fallback = "";
	if (strncmp(uuid, PREFIX, PREFIX_LEN) == 0)
		uuid += PREFIX_LEN;
	if (!uuid_ok(uuid, strlen(uuid))) {
		if ((r = check_controls("UUID", uuid, strlen(uuid), 0, err, errlen)) < 0)
			return r;
		seterr(err, errlen, "bad UUID \"%.*s\": expected 8-4-4-4-12 hexadecimal digits",
		       quote_len(strlen(uuid)), uuid);
		return -EINVAL;
	}
	if (!tag_ok(key_tag)) {
		/* Check controls first so the quote below is printable. */
		if ((r = check_text("primary key", key_tag, true, err, errlen)) < 0)
			return r;
		seterr(err, errlen, "primary key \"%.*s\" is not a personalization tag [%%NAME%%] "
		       "(NAME: A-Z, 0-9, _)", quote_len(strlen(key_tag)), key_tag);
		return -EINVAL;
	}
	if (!*field) {
		seterr(err, errlen, "return field is empty");
		return -EINVAL;
	}
	if ((r = check_text("API parameters", params, true, err, errlen)) < 0 ||
	    (r = check_text("return field", field, false, err, errlen)) < 0 ||
	    (r = check_text("fallback value", fallback, true, err, errlen)) < 0)
		return r;
	/* *out is untouched on failure: asprintf leaves its target undefined. */
	if (asprintf(&s, PREFIX "%s:%s:%s:%s:%s", uuid, key_tag, params, field, fallback) < 0)
		return -ENOMEM;
	*out = s;
	return 0;
}

int cli_formula_parse(const char *text, struct formula *f, char *err, size_t errlen)
{
	static const char *const names[N_SEGMENTS] = {
		"UUID", "primary key", "API parameters", "return field", "fallback value",
	};
	const char *seg[N_SEGMENTS];
	size_t len[N_SEGMENTS], n_seg = 1, n = strlen(text);
	int r;

	memset(f, 0, sizeof(*f));
	if ((r = check_controls("formula", text, n, 0, err, errlen)) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		n_seg += text[i] == ':';
	if (n_seg != N_SEGMENTS) {
		seterr(err, errlen, "expected %d segments separated by ':' "
		       "(DC_UUID:key:API parameters:return field:fallback), found %zu", N_SEGMENTS, n_seg);
		return -EINVAL;
	}
	seg[0] = text;
	for (size_t i = 0; i < N_SEGMENTS; i++) {
		const char *colon = strchr(seg[i], ':');

		len[i] = colon ? (size_t)(colon - seg[i]) : strlen(seg[i]);
		if (i + 1 < N_SEGMENTS)
			seg[i + 1] = colon + 1;
	}
	if (len[0] < PREFIX_LEN || strncmp(seg[0], PREFIX, PREFIX_LEN) != 0) {
		bool lower = len[0] >= PREFIX_LEN && strncasecmp(seg[0], PREFIX, PREFIX_LEN) == 0;

		seterr(err, errlen, "segment 1 \"%.*s\" must start with \"" PREFIX "\"%s",
		       quote_len(len[0]), seg[0], lower ? " (upper case)" : "");
		return -EINVAL;
	}
	if (!uuid_ok(seg[0] + PREFIX_LEN, len[0] - PREFIX_LEN)) {
		seterr(err, errlen, "bad UUID \"%.*s\": expected 8-4-4-4-12 hexadecimal digits after \""
		       PREFIX "\"", quote_len(len[0] - PREFIX_LEN), seg[0] + PREFIX_LEN);
		return -EINVAL;
	}
	for (size_t i = 1; i < N_SEGMENTS; i++) {
		/* key and field must name something; params and fallback may be empty. */
		if (!len[i] && (i == 1 || i == 3)) {
			seterr(err, errlen, "%s (segment %zu) is empty", names[i], i + 1);
			return -EINVAL;
		}
		if ((r = check_tags(names[i], seg[i], len[i], (size_t)(seg[i] - text), i != 3, err,
				    errlen)) < 0)
			return r;
	}
	memcpy(f->uuid, seg[0] + PREFIX_LEN, UUID_LEN);
	f->uuid[UUID_LEN] = '\0';
	f->key = strndup(seg[1], len[1]);
	f->params = strndup(seg[2], len[2]);
	f->field = strndup(seg[3], len[3]);
	f->fallback = strndup(seg[4], len[4]);
	if (!f->key || !f->params || !f->field || !f->fallback) {
		cli_formula_release(f);
		return -ENOMEM;
	}
	return 0;
}

void cli_formula_release(struct formula *f)
{
	free(f->key);
	free(f->params);
	free(f->field);
	free(f->fallback);
	memset(f, 0, sizeof(*f));
}

static unsigned char fold(char ch)
{
	return (unsigned char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
}

static size_t min3(size_t a, size_t b, size_t c)
{
	size_t m = a < b ? a : b;

	return m < c ? m : c;
}

/*
 * Optimal-string-alignment distance: Levenshtein plus a swap of two neighbours costing one,
 * the commonest typo ("nmae"), which plain Levenshtein counts as two. Three rolling rows.
 */
static size_t distance(const char *a, size_t na, const char *b, size_t nb)
{
	size_t rows[3][SUGGEST_MAX_LEN + 1];
	size_t *pp = rows[0], *p = rows[1], *cur = rows[2];

	for (size_t j = 0; j <= nb; j++)
		p[j] = j;
	for (size_t i = 1; i <= na; i++) {
		size_t *t;

		cur[0] = i;
		for (size_t j = 1; j <= nb; j++) {
			size_t cost = fold(a[i - 1]) != fold(b[j - 1]);

			cur[j] = min3(p[j] + 1, cur[j - 1] + 1, p[j - 1] + cost);
			if (i > 1 && j > 1 && fold(a[i - 1]) == fold(b[j - 2]) &&
			    fold(a[i - 2]) == fold(b[j - 1]) && pp[j - 2] + 1 < cur[j])
				cur[j] = pp[j - 2] + 1;
		}
		t = pp;
		pp = p;
		p = cur;
		cur = t;
	}
	return p[nb];
}

size_t cli_formula_suggest(const char *field, const char *const *known, size_t n_known,
		       const char **out, size_t max_out)
{
	size_t nf = strlen(field), limit = nf / 3 ? nf / 3 : 1, n_out = 0;
	size_t dist[SUGGEST_MAX_OUT];

	if (max_out > SUGGEST_MAX_OUT)
		max_out = SUGGEST_MAX_OUT;
	if (nf > SUGGEST_MAX_LEN || !max_out)
		return 0;
	for (size_t k = 0; k < n_known; k++) {
		size_t nk, d, at;

		if (!known[k])
			continue;
		nk = strlen(known[k]);
		if (nk > SUGGEST_MAX_LEN || (nk > nf ? nk - nf : nf - nk) > limit || strcmp(known[k], field) == 0)
			continue;
		d = distance(field, nf, known[k], nk);
		if (d > limit)
			continue;
		/* Insert after equals so ties keep @known order; drop the farthest when full. */
		for (at = n_out; at > 0 && dist[at - 1] > d; at--)
			;
		if (at == max_out)
			continue;
		if (n_out < max_out)
			n_out++;
		memmove(&dist[at + 1], &dist[at], (n_out - 1 - at) * sizeof(*dist));
		memmove(&out[at + 1], &out[at], (n_out - 1 - at) * sizeof(*out));
		dist[at] = d;
		out[at] = known[k];
	}
	return n_out;
}
