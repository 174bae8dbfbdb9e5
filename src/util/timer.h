/* timer: arm a one-shot libev timer again, the one way every module does it. */
#pragma once
/* Contract: nothing owned; the loop and the timer are the caller's. Calls libev only. */
#include <ev.h>

/* Stop @t, then start it to fire once in @delay seconds; a negative @delay leaves it stopped. */
static inline void timer_arm(struct ev_loop *loop, ev_timer *t, double delay)
{
	ev_timer_stop(loop, t);
	if (delay < 0)
		return;
	ev_timer_set(t, delay, 0.);
	ev_timer_start(loop, t);
}
