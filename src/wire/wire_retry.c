/* retry: how long to wait before a request is sent again: pure functions, no state. */
#include "wire/wire_retry.h"

#include <math.h>

double wire_retry_backoff(double initial, double max, unsigned attempt, double rnd)
{
	/* 2^60 times any sane initial delay is beyond any max: no overflow to inf past it. */
	double cap = initial * ldexp(1.0, (int)(attempt > 60 ? 60 : attempt));

	if (cap > max)
		cap = max;
	return rnd * cap;
}
