/* tap: a tiny TAP producer for the unit tests: ok/not ok lines, skips, diagnostics, trailing plan. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int tap_count, tap_failures;

/*
 * Print @fmt on the current line with control characters escaped (\n, \r, \t, \xHH): a
 * description that holds a raw newline would start a line TAP cannot read.
 */
static inline void tap_vprint(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static inline void tap_vprint(const char *fmt, va_list ap)
{
	char buf[4096];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	for (const unsigned char *p = (const unsigned char *)buf; *p; p++)
		if (*p == '\n')
			fputs("\\n", stdout);
		else if (*p == '\r')
			fputs("\\r", stdout);
		else if (*p == '\t')
			fputs("\\t", stdout);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\x%02x", *p);
		else
			putchar(*p);
	putchar('\n');
	fflush(stdout);
}

static inline void tap_vline(bool pass, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static inline void tap_vline(bool pass, const char *fmt, va_list ap)
{
	printf("%sok %d - ", pass ? "" : "not ", ++tap_count);
	tap_vprint(fmt, ap);
}

/* One check: "ok N - description" or "not ok N - description". Returns @pass. */
static inline bool ok(bool pass, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool ok(bool pass, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vline(pass, fmt, ap);
	va_end(ap);
	if (!pass)
		tap_failures++;
	return pass;
}

/* A diagnostic line ("# ..."), ignored by TAP consumers but shown in logs. */
static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	tap_vprint(fmt, ap);
	va_end(ap);
}

/* A check that cannot run here: "ok N # SKIP reason". */
static inline void skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void skip(const char *fmt, ...)
{
	va_list ap;

	printf("ok %d # SKIP ", ++tap_count);
	va_start(ap, fmt);
	tap_vprint(fmt, ap);
	va_end(ap);
}

/* Integer equality, with got/want shown on failure. */
#define is_int(got, want, ...) tap_is_int((long long)(got), (long long)(want), __VA_ARGS__)
static inline bool tap_is_int(long long got, long long want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline bool tap_is_int(long long got, long long want, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vline(got == want, fmt, ap);
	va_end(ap);
	if (got == want)
		return true;
	diag("  got:  %lld", got);
	diag("  want: %lld", want);
	tap_failures++;
	return false;
}

/* String equality (NULL equals only NULL), with got/want shown on failure. */
static inline bool is_str(const char *got, const char *want, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline bool is_str(const char *got, const char *want, const char *fmt, ...)
{
	bool pass = (!got && !want) || (got && want && !strcmp(got, want));
	va_list ap;

	va_start(ap, fmt);
	tap_vline(pass, fmt, ap);
	va_end(ap);
	if (pass)
		return true;
	diag("  got:  %s", got ? got : "(null)");
	diag("  want: %s", want ? want : "(null)");
	tap_failures++;
	return false;
}

/* Print the plan and give the process's exit status: non-zero when any check failed. */
static inline int done_testing(void)
{
	printf("1..%d\n", tap_count);
	if (tap_failures)
		diag("%d of %d checks failed", tap_failures, tap_count);
	return tap_failures ? 1 : 0;
}
