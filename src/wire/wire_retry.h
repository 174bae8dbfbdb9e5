/* retry: how long to wait before a request is sent again: pure functions, no state. */
#pragma once
/*
 * Contract. No state, no other module: the caller hands in @rnd (the batch's jitter), so a test
 * can fix it.
 */

/* Full jitter over min(max, initial * 2^attempt); @rnd in [0, 1). */
double wire_retry_backoff(double initial, double max, unsigned attempt, double rnd);
