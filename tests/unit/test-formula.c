/* test-formula: building, checking and "did you mean" for Data Connection formulas (TAP output). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_formula.h"

static int n_tests, n_failed;

static void ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", cond ? "" : "not ", ++n_tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond)
		n_failed++;
}

#define UUID "9ce27b8c-8b16-427a-8d00-f40b816bc092"
#define EXAMPLE "DC_" UUID ":[%CUSTOMER_ID%]::product_url:default_url"

/* A refusal: -EINVAL and a message containing @want. */
static void refused(int r, const char *err, const char *want, const char *what)
{
	ok(r == -EINVAL && strstr(err, want), "%s: refused with \"%s\" (got %d: %s)", what, want, r, err);
}

static void test_build_matches_documented_example(void)
{
	char err[256] = "", *s = NULL;
	int r = cli_formula_build(&s, UUID, "[%CUSTOMER_ID%]", "", "product_url", "default_url", err,
			      sizeof(err));

	ok(r == 0 && s && strcmp(s, EXAMPLE) == 0, "build gives the documented example (%s)", s ? s : err);
	free(s);
	s = NULL;
	r = cli_formula_build(&s, "DC_" UUID, "[%CUSTOMER_ID%]", NULL, "product_url", NULL, err, sizeof(err));
	ok(r == 0 && s && strcmp(s, "DC_" UUID ":[%CUSTOMER_ID%]::product_url:") == 0,
	   "build takes a DC_-prefixed UUID and NULL params/fallback (%s)", s ? s : err);
	free(s);
}

static void test_round_trip(void)
{
	char err[256] = "", *s = NULL;
	struct formula f;
	int r;

	r = cli_formula_build(&s, UUID, "[%CUSTOMER_ID_2%]", "filter=active_users&seg=[%SEGMENT%]", "Product URL",
			  "see [%FIRST_NAME%], café", err, sizeof(err));
	ok(r == 0, "build with params, a spaced field and a tag in the fallback (%s)", err);
	r = cli_formula_parse(s, &f, err, sizeof(err));
	ok(r == 0, "parse accepts what build made (%s)", err);
	if (r == 0) {
		ok(strcmp(f.uuid, UUID) == 0, "uuid round-trips without DC_");
		ok(strcmp(f.key, "[%CUSTOMER_ID_2%]") == 0, "key round-trips");
		ok(strcmp(f.params, "filter=active_users&seg=[%SEGMENT%]") == 0, "params round-trip");
		ok(strcmp(f.field, "Product URL") == 0, "field round-trips");
		ok(strcmp(f.fallback, "see [%FIRST_NAME%], café") == 0, "fallback round-trips");
	}
	cli_formula_release(&f);
	cli_formula_release(&f);
	ok(f.key == NULL, "release empties and may be repeated");
	free(s);

	r = cli_formula_parse(EXAMPLE, &f, NULL, 0);
	ok(r == 0 && strcmp(f.params, "") == 0 && strcmp(f.fallback, "default_url") == 0,
	   "parse of the documented example, err NULL");
	cli_formula_release(&f);
}

static void test_build_refusals(void)
{
	char err[256], *s = NULL;
	int r;

#define BUILD(u, k, p, fi, fb) (err[0] = '\0', cli_formula_build(&s, u, k, p, fi, fb, err, sizeof(err)))
	r = BUILD("9ce27b8c-8b16-427a-8d00-f40b816bc09", "[%CUSTOMER_ID%]", "", "f", "");
	refused(r, err, "bad UUID", "short UUID");
	r = BUILD("9ce27b8c_8b16-427a-8d00-f40b816bc092", "[%CUSTOMER_ID%]", "", "f", "");
	refused(r, err, "8-4-4-4-12", "UUID with a wrong separator");
	r = BUILD(UUID, "CUSTOMER_ID", "", "f", "");
	refused(r, err, "is not a personalization tag [%NAME%]", "bare key name");
	r = BUILD(UUID, "[%customer_id%]", "", "f", "");
	refused(r, err, "NAME: A-Z, 0-9, _", "lower-case tag");
	r = BUILD(UUID, "[%%]", "", "f", "");
	refused(r, err, "not a personalization tag", "empty tag");
	r = BUILD(UUID, "[%A\n%]", "", "f", "");
	refused(r, err, "primary key contains a line break", "line break in the key");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "", "");
	refused(r, err, "return field is empty", "empty field");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "a:b", "");
	refused(r, err, "return field \"a:b\" contains ':' at column 2", "colon in the field");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "url", "http://x");
	refused(r, err, "fallback value \"http://x\" contains ':'", "colon in the fallback");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "a=b:c", "url", "");
	refused(r, err, "API parameters \"a=b:c\" contains ':'", "colon in the params");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "url", "two\nlines");
	refused(r, err, "fallback value contains a line break at column 4", "newline in the fallback");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "url\r", "");
	refused(r, err, "return field contains a line break", "carriage return in the field");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "u\trl", "");
	refused(r, err, "control character 0x09 at column 2", "tab in the field");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "[%URL%]", "");
	refused(r, err, "a field name is not a tag", "tag in the field");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "url", "hi [%NAME");
	refused(r, err, "has \"[%\" at column 4 without a closing \"%]\"", "unclosed tag in the fallback");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "", "url", "50%]");
	refused(r, err, "has a stray \"%]\" at column 3", "stray %] in the fallback");
	r = BUILD(UUID, "[%CUSTOMER_ID%]", "x=[%A[%B%]", "url", "");
	refused(r, err, "without a closing", "nested [% in the params");
#undef BUILD
	ok(s == NULL, "nothing allocated on refusal");
}

static void test_parse_refusals(void)
{
	char err[256];
	struct formula f;
	int r;

#define PARSE(t) (err[0] = '\0', cli_formula_parse(t, &f, err, sizeof(err)))
	r = PARSE("DC_" UUID ":[%CUSTOMER_ID%]:product_url");
	refused(r, err, "expected 5 segments separated by ':'", "three segments");
	refused(r, err, "found 3", "three segments: count");
	r = PARSE(EXAMPLE ":extra");
	refused(r, err, "found 6", "six segments");
	r = PARSE("");
	refused(r, err, "found 1", "empty text");
	r = PARSE(UUID ":[%CUSTOMER_ID%]::product_url:default_url");
	refused(r, err, "must start with \"DC_\"", "missing DC_ prefix");
	r = PARSE("dc_" UUID ":[%CUSTOMER_ID%]::product_url:default_url");
	refused(r, err, "\"DC_\" (upper case)", "lower-case dc_");
	r = PARSE("DC_9ce27b8c-8b16-427a-8d00-f40b816bc09z:[%CUSTOMER_ID%]::product_url:default_url");
	refused(r, err, "bad UUID \"9ce27b8c-8b16-427a-8d00-f40b816bc09z\"", "UUID with a non-hex digit");
	r = PARSE("DC_" UUID "::::x");
	refused(r, err, "primary key (segment 2) is empty", "empty key");
	r = PARSE("DC_" UUID ":[%CUSTOMER_ID%]:::default_url");
	refused(r, err, "return field (segment 4) is empty", "empty field");
	r = PARSE("DC_" UUID ":[%CUSTOMER_ID::product_url:default_url");
	refused(r, err, "primary key \"[%CUSTOMER_ID\" has \"[%\" at column 41 without a closing \"%]\"",
		"unclosed key tag, column in the formula");
	r = PARSE("DC_" UUID ":CUSTOMER_ID%]::product_url:default_url");
	refused(r, err, "has a stray \"%]\" at column 52", "stray %] in the key");
	r = PARSE("DC_" UUID ":[%CUSTOMER_ID%]::product_url:50%]");
	refused(r, err, "fallback value \"50%]\" has a stray", "stray %] in the fallback");
	r = PARSE("DC_" UUID ":[%CUSTOMER_ID%]::[%URL%]:x");
	refused(r, err, "a field name is not a tag", "tag in the field");
	r = PARSE(EXAMPLE "\n");
	refused(r, err, "formula contains a line break at column 81", "trailing newline");
#undef PARSE
	ok(f.key == NULL, "nothing allocated on refusal");
}

static void test_suggestions(void)
{
	static const char *const known[] = {
		"product_url", "product_name", "price", "name", NULL, "product_id", "image_url",
	};
	const char *out[4];
	size_t n;

	n = cli_formula_suggest("prodcut_url", known, 7, out, 4);
	ok(n >= 1 && strcmp(out[0], "product_url") == 0, "swapped letters: product_url first (%zu)", n);
	n = cli_formula_suggest("PRICE", known, 7, out, 4);
	ok(n == 1 && strcmp(out[0], "price") == 0, "case is ignored: PRICE -> price");
	n = cli_formula_suggest("nmae", known, 7, out, 4);
	ok(n == 1 && strcmp(out[0], "name") == 0, "nmae -> name (a swap costs one)");
	n = cli_formula_suggest("price", known, 7, out, 4);
	ok(n == 0, "an exact name is not suggested");
	n = cli_formula_suggest("zzzzzzzz", known, 7, out, 4);
	ok(n == 0, "nothing close: no suggestion");
	n = cli_formula_suggest("product_xx", known, 7, out, 4);
	ok(n == 2 && strcmp(out[0], "product_id") == 0 && strcmp(out[1], "product_url") == 0,
	   "closest first: product_id (2) before product_url (3); product_name (4) too far (%zu)", n);
	{
		static const char *const colours[] = { "colours", "color", "Colour", "flavour" };

		n = cli_formula_suggest("colour", colours, 4, out, 4);
		ok(n == 3 && strcmp(out[0], "Colour") == 0 && strcmp(out[1], "colours") == 0 &&
		   strcmp(out[2], "color") == 0, "a case-only difference first, ties in known order (%zu)", n);
	}
	n = cli_formula_suggest("product_xx", known, 7, out, 1);
	ok(n == 1 && strcmp(out[0], "product_id") == 0, "max_out 1 keeps the closest");
	n = cli_formula_suggest("url", known, 0, out, 4);
	ok(n == 0, "no known names");
}

int main(void)
{
	test_build_matches_documented_example();
	test_round_trip();
	test_build_refusals();
	test_parse_refusals();
	test_suggestions();
	printf("1..%d\n", n_tests);
	return n_failed ? 1 : 0;
}
