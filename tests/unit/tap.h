/* tap: a tiny TAP producer for the unit tests: ok/not ok lines, skips, diagnostics, trailing plan. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int tap_count, tap_failures;

static inline void tap_vline(bool pass, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static inline void tap_vline(bool pass, const char *fmt, va_list ap)
{
	printf("%sok %d - ", pass ? "" : "not ", ++tap_count);
	vprintf(fmt, ap);
	printf("\n");
	fflush(stdout);
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
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

/* A check that cannot run here: "ok N # SKIP reason". */
static inline void skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void skip(const char *fmt, ...)
{
	va_list ap;

	printf("ok %d # SKIP ", ++tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
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
