/* wire_retry: how long to wait before a request is sent again: pure functions, no state. */
#pragma once
/*
 * Contract. No state, no other module: the caller hands in @rnd (the batch's jitter), so a test
 * can fix it.
 */

/* How a request is retried: a connection's retry_* keys, handed down at bind. */
struct retry_policy {
	double initial_seconds;
	double max_seconds;
	double max_elapsed_seconds;     /* 0: retry forever */
};

/* Full jitter over min(max, initial * 2^attempt); @rnd in [0, 1). */
double wire_retry_backoff(double initial, double max, unsigned attempt, double rnd);
