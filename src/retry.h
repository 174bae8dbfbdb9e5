/* retry: how long to wait before a request is sent again: pure functions, no state. */
#pragma once

/* Full jitter over min(max, initial * 2^attempt); @rnd in [0, 1). */
double retry_backoff(double initial, double max, unsigned attempt, double rnd);
