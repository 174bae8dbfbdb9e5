/* test-upload: Retry-After is delta-seconds or an HTTP-date (RFC 9110), and nothing else. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wire/wire_upload.h"
#include "tap.h"

/* RFC 9110's example date, Sun, 06 Nov 1994 08:49:37 GMT. */
#define EXAMPLE_DATE ((time_t)784111777)

static void accepted(const char *v, time_t now, double want)
{
	double got = wire_upload_parse_retry_after(v, now);

	ok(got == want, "Retry-After '%s': %.0f s", v, want) || (diag("  got %g", got), 0);
}

static void ignored(const char *v)
{
	double got = wire_upload_parse_retry_after(v, time(NULL));

	ok(got == -1, "Retry-After '%s': ignored", v) || (diag("  got %g", got), 0);
}

int main(void)
{
	static const char *const not_retry_after[] = {
		"", "  ", "0x10", "inf", "Infinity", "nan", "1e400", "1e3", "-5", "+5", "1.5", "12 s", "1 2", "٣",
		"tomorrow", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT",
		"sun, 06 nov 1994 08:49:37 GMT", "06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994", "Sunday, 06-Nov-1994 08:49:37 GMT",
		"Sun Nov 6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 GMT trailing", "Sun, 06 Foo 1994 08:49:37 GMT",
	};
	double far;

	/* delta-seconds */
	accepted("0", 0, 0);
	accepted("120", 0, 120);
	accepted(" 120 \r\n", 0, 120);
	accepted("\t7\t", 0, 7);
	accepted("100000", 0, 100000);
	accepted("000042", 0, 42);
	accepted("9999999999", 0, 9999999999.0);
	accepted("123456789012345678901234567890123456789", 0, UPLOAD_RETRY_AFTER_MAX);

	/* the three HTTP-date forms, 100 s ahead of now; in the past: 0 */
	accepted("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE_DATE - 100, 100);
	accepted("Sunday, 06-Nov-94 08:49:37 GMT", EXAMPLE_DATE - 100, 100);
	accepted("Sun Nov  6 08:49:37 1994", EXAMPLE_DATE - 100, 100);
	accepted(" Sun, 06 Nov 1994 08:49:37 GMT\r\n", EXAMPLE_DATE - 100, 100);
	accepted("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE_DATE + 3600, 0);
	accepted("Sun Nov  6 08:49:37 1994", EXAMPLE_DATE + 1, 0);
	far = wire_upload_parse_retry_after("Thu, 01 Jan 2099 00:00:00 GMT", time(NULL));
	ok(far > 2e9 && far <= UPLOAD_RETRY_AFTER_MAX, "a date in 2099: far ahead, finite (%.0f s)", far);

	/* anything else: -1, for the normal back-off */
	for (size_t i = 0; i < sizeof(not_retry_after) / sizeof(not_retry_after[0]); i++)
		ignored(not_retry_after[i]);
	{
		char longv[300];

		memset(longv, '9', sizeof(longv) - 1);
		longv[sizeof(longv) - 1] = '\0';
		ok(wire_upload_parse_retry_after(longv, 0) == -1 || wire_upload_parse_retry_after(longv, 0) == UPLOAD_RETRY_AFTER_MAX,
		   "a 299-digit value: ignored or capped, never overflowing");
	}
	return done_testing();
}
