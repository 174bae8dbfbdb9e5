/* ratelimit: the client-side rate limit, one adaptive sliding window per API key. */
#pragma once

/*
 * Contract.
 * Owns: every limiter (struct ratelimit) of a set, its copy of the API key (wiped when freed) and
 * its ring of send times. A limiter lives as long as its set: a connection borrows the one
 * wire_ratelimit_get() returns until the set is freed (connections sharing a key share it).
 * Borrows: nothing; the caller hands in the time (the loop's clock, seconds) on every call.
 * May call: libc only. No I/O, no logging, no clock of its own, so the arithmetic is testable.
 */

struct ratelimit;       /* the limiter of one API key */
struct ratelimits;      /* the limiters of every API key in use */

int wire_ratelimits_new(struct ratelimits **out);
/* Frees every limiter of @s: borrowed pointers from wire_ratelimit_get() die with it. */
void wire_ratelimits_free(struct ratelimits *s);

/*
 * The limiter of @api_key (compared, never logged): a sliding window of @requests per @window
 * seconds; @requests 0: unlimited. A limiter that exists with another size starts afresh with
 * the new one (a reload changed it); should that allocation fail it keeps the old size. NULL when
 * out of memory.
 */
struct ratelimit *wire_ratelimit_get(struct ratelimits *s, const char *api_key, unsigned requests, double window);
/* 0 when a request may leave @now (it is counted), else the seconds to wait for a slot. */
double wire_ratelimit_take(struct ratelimit *l, double now);
/*
 * The budget adapts (AIMD), so that hosts sharing a key without talking to each other share its
 * server-side budget: a 429 cuts it to 0.7 x the sends of the current window (once per window,
 * not below a tenth of the configured requests),
 * a window without 429 raises it by a tenth of the configured requests, up to them.
 */
void wire_ratelimit_penalize(struct ratelimit *l, double now);
void wire_ratelimit_success(struct ratelimit *l, double now);
/* The current budget per window; 0 for NULL. */
unsigned wire_ratelimit_budget(const struct ratelimit *l);
/* The sends within the last window before @now. */
unsigned wire_ratelimit_used(const struct ratelimit *l, double now);
