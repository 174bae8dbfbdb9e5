/* test-ratelimit: the per-API-key limiter's arithmetic: window, margin, 429 cut, growth, sharing by key. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "wire/wire_ratelimit.h"
#include "tap.h"

/* The window the limiter keeps sends in: the configured one plus 2% plus 50 ms. */
#define MARGINED(w) ((w) * 1.02 + 0.05)

static bool near(double got, double want, const char *what)
{
	return ok(fabs(got - want) < 1e-9, "%s: %.6f s", what, want) || (diag("  got %.9f", got), false);
}

/* Sends @n requests at @now, each let through; returns how many were. */
static unsigned send_n(struct ratelimit *l, unsigned n, double now)
{
	unsigned sent = 0;

	for (unsigned i = 0; i < n; i++)
		sent += wire_ratelimit_take(l, now) == 0;
	return sent;
}

static void window(struct ratelimits *s)
{
	struct ratelimit *l = wire_ratelimit_get(s, "key-window", 10, 1);

	is_int(send_n(l, 10, 1000), 10, "10 requests per 1 s: the first 10 leave at once");
	near(wire_ratelimit_take(l, 1000), MARGINED(1.0), "the 11th waits for the oldest to leave the window and margin");
	near(wire_ratelimit_take(l, 1000.5), MARGINED(1.0) - 0.5, "half a second later it waits that much less");
	near(wire_ratelimit_take(l, 1000 + MARGINED(1.0) - 0.0005), 0.001, "a wait under 1 ms is rounded up to 1 ms");
	is_int(wire_ratelimit_used(l, 1000.99), 10, "all 10 count as used within the window");
	is_int(wire_ratelimit_used(l, 1001.0), 0, "used counts the window itself, without the margin");
	is_int(wire_ratelimit_take(l, 1000 + MARGINED(1.0)) == 0, 1, "at the end of the margin a slot frees");
	is_int(wire_ratelimit_budget(l), 10, "no 429: the budget stays the configured 10");

	l = wire_ratelimit_get(s, "key-spread", 3, 10);
	(void)wire_ratelimit_take(l, 2000);
	(void)wire_ratelimit_take(l, 2004);
	(void)wire_ratelimit_take(l, 2008);
	near(wire_ratelimit_take(l, 2009), 2000 + MARGINED(10.0) - 2009, "a full window waits for its oldest send");
	is_int(wire_ratelimit_take(l, 2000 + MARGINED(10.0)) == 0, 1, "which then leaves, and one more may go");
	near(wire_ratelimit_take(l, 2000 + MARGINED(10.0)), 2004 + MARGINED(10.0) - (2000 + MARGINED(10.0)),
	     "the next waits for the send at 2004");
}

static void penalize(struct ratelimits *s)
{
	struct ratelimit *l = wire_ratelimit_get(s, "key-429", 100, 10);

	unsigned sent = 0;

	for (unsigned i = 0; i < 50; i++)
		sent += wire_ratelimit_take(l, 1000 + i * 0.1) == 0;
	is_int(sent, 50, "50 of 100 sent, one every 0.1 s from 1000 s");
	wire_ratelimit_penalize(l, 1005);
	is_int(wire_ratelimit_budget(l), 35, "a 429 cuts the budget to 0.7 x the 50 sent in the window, not x 100");
	wire_ratelimit_penalize(l, 1009);
	is_int(wire_ratelimit_budget(l), 35, "another 429 within the same window cuts nothing more");
	ok(wire_ratelimit_take(l, 1009) > 0, "50 sends in the window hold the next back under a budget of 35");
	near(wire_ratelimit_take(l, 1009), 1001.5 + MARGINED(10.0) - 1009,
	     "until the 16th oldest (50 - 35 + 1, sent at 1001.5 s) leaves the window");
	wire_ratelimit_success(l, 1014.5);
	is_int(wire_ratelimit_budget(l), 35, "a success less than a window after the cut adds nothing");
	wire_ratelimit_success(l, 1015);
	is_int(wire_ratelimit_budget(l), 45, "a window after the cut, a success adds a tenth of the configured 100");
	wire_ratelimit_success(l, 1019);
	is_int(wire_ratelimit_budget(l), 45, "and not again within the next window");
	for (double t = 1021; t < 1100; t += 10)
		wire_ratelimit_success(l, t);
	is_int(wire_ratelimit_budget(l), 100, "successes a window apart grow it back to the configured 100, no further");

	is_int(send_n(l, 4, 2000), 4, "4 sent after a quiet spell");
	wire_ratelimit_penalize(l, 2001);
	is_int(wire_ratelimit_budget(l), 10, "a lone 429 cuts to no less than a tenth of the configured (not 0.7 x 4 = 2)");
	is_int(send_n(l, 60, 2012), 10, "a window later the budget of 10 lets 10 of 60 through");
	wire_ratelimit_penalize(l, 2013);
	is_int(wire_ratelimit_budget(l), 10, "a window later another 429 cuts again: 0.7 x 10 sent is 7, floored to a tenth of 100, 10");

	l = wire_ratelimit_get(s, "key-small", 5, 1);
	is_int(send_n(l, 5, 3000), 5, "5 of 5 sent");
	wire_ratelimit_penalize(l, 3000.5);
	is_int(wire_ratelimit_budget(l), 3, "5 requests a window: 0.7 x 5 is 3 (rounded down)");
	wire_ratelimit_success(l, 3001.5);
	is_int(wire_ratelimit_budget(l), 4, "under 10 requests the step is 1");
	wire_ratelimit_penalize(l, 3100);
	is_int(wire_ratelimit_budget(l), 1, "nothing sent in the window: the budget falls to one step, 1, never 0");
	is_int(wire_ratelimit_take(l, 3100) == 0, 1, "and one request may still leave");
}

static void sharing(struct ratelimits *s)
{
	struct ratelimit *a = wire_ratelimit_get(s, "key-shared", 10, 1), *b = wire_ratelimit_get(s, "key-shared", 10, 1);
	struct ratelimit *other = wire_ratelimit_get(s, "key-other", 10, 1), *c;

	ok(a && a == b, "connections with the same key get the same limiter");
	ok(other && other != a, "another key gets its own");
	is_int(send_n(a, 10, 1000), 10, "10 sent through one connection");
	ok(wire_ratelimit_take(b, 1000) > 0, "fill the window of the other connection with that key");
	is_int(send_n(other, 1, 1000), 1, "but not of another key");
	wire_ratelimit_penalize(a, 1000.5);
	c = wire_ratelimit_get(s, "key-shared", 20, 1);
	ok(c == a, "a reload that changes the size keeps the limiter");
	is_int(wire_ratelimit_budget(c), 20, "with the new size as its budget, the cut forgotten");
	is_int(wire_ratelimit_used(c, 1000.5), 0, "and its window empty");
	is_int(send_n(c, 20, 1000.6), 20, "20 sent under the new size");
	wire_ratelimit_penalize(c, 1000.7);
	is_int(wire_ratelimit_budget(c), 14, "a 429 right after the reload cuts (0.7 x 20): the old cut's window is gone too");
	c = wire_ratelimit_get(s, "key-unlimited", 0, 1);
	is_int(send_n(c, 1000, 1000), 1000, "0 requests: unlimited");
	wire_ratelimit_penalize(c, 1000);
	is_int(wire_ratelimit_budget(c), 0, "and a 429 sets no budget");
	is_int(wire_ratelimit_take(NULL, 1000) == 0, 1, "no limiter: no wait");
	is_int(wire_ratelimit_budget(NULL), 0, "no limiter: budget 0");
}

int main(void)
{
	struct ratelimits *s = NULL;

	if (!ok(wire_ratelimits_new(&s) == 0, "a set of limiters"))
		return done_testing();
	window(s);
	penalize(s);
	sharing(s);
	wire_ratelimits_free(s);
	return done_testing();
}
