/* test-retry: the back-off's bounds. */
#include <math.h>
#include <stddef.h>

#include "wire/wire_retry.h"
#include "tap.h"

static void backoff_bounds(void)
{
	static const double rnds[] = { 0, 1e-9, 0.25, 0.5, 0.999999 };
	unsigned bad = 0, not_monotone = 0;

	for (size_t k = 0; k < sizeof(rnds) / sizeof(rnds[0]); k++) {
		double prev = 0;

		for (unsigned n = 0; n < 80; n++) {
			double cap = fmin(300, 0.5 * pow(2, n)), d = wire_retry_backoff(0.5, 300, n, rnds[k]);

			if (!(d >= 0 && d <= cap && fabs(d - rnds[k] * cap) <= 1e-9 * cap))
				bad++;
			if (d < prev)
				not_monotone++;
			prev = d;
		}
	}
	is_int(bad, 0, "backoff = rnd * min(max, initial * 2^n), so 0 <= d <= min(max, initial * 2^n), n = 0..79");
	is_int(not_monotone, 0, "for a given rnd the delay never shrinks as attempts grow");
	ok(wire_retry_backoff(1, 300, 0, 0.999) < 1 && wire_retry_backoff(1, 300, 3, 0.999) > 7.9,
	   "attempt 0 stays under initial; attempt 3 reaches ~8x initial");
	is_int(wire_retry_backoff(2, 60, 7, 0) * 1000, 0, "rnd 0 gives no delay");
	ok(wire_retry_backoff(2, 60, 1000, 0.999999) <= 60 && wire_retry_backoff(2, 60, 1000, 0.999999) > 59.9,
	   "attempt 1000: capped at max, finite");
	ok(wire_retry_backoff(2, 60, 4294967295u, 0.5) == 30, "attempt UINT_MAX: max * rnd");
}


int main(void)
{
	backoff_bounds();
	return done_testing();
}
