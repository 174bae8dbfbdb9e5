/* wire_ratelimit: the client-side rate limit, one adaptive sliding window per API key. */
#include "wire/wire_ratelimit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct ratelimit {
	struct ratelimit *next;
	char *key;              /* the API key it limits: compared, never logged */
	unsigned requests;      /* configured budget per window */
	unsigned budget;        /* current budget: shrinks on 429, grows back a window after */
	double changed;         /* when the budget last changed (0: never) */
	double cut;             /* when a 429 last cut it (0: never) */
	double window;
	double *sent;           /* ring of send times, capacity requests */
	unsigned head, n;
};

struct ratelimits {
	struct ratelimit *head;
};

int wire_ratelimits_new(struct ratelimits **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void wire_ratelimits_free(struct ratelimits *s)
{
	if (!s)
		return;
	while (s->head) {
		struct ratelimit *l = s->head;

		s->head = l->next;
		explicit_bzero(l->key, strlen(l->key));
		free(l->key);
		free(l->sent);
		free(l);
	}
	free(s);
}

/*
 * The server counts arrivals, we count departures: a margin (2% of the window plus 50 ms) keeps
 * network and scheduling jitter from turning a request sent just in time into a 429.
 */
#define LIMITER_WINDOW(l) ((l)->window * 1.02 + 0.05)

static void limiter_expire(struct ratelimit *l, double now)
{
	while (l->n && l->sent[l->head] <= now - LIMITER_WINDOW(l)) {
		l->head = (l->head + 1) % l->requests;
		l->n--;
	}
}

struct ratelimit *wire_ratelimit_get(struct ratelimits *s, const char *api_key, unsigned requests, double window)
{
	struct ratelimit *l;

	for (l = s->head; l; l = l->next)
		if (!strcmp(l->key, api_key))
			break;
	if (l && (l->requests != requests || l->window != window)) {
		/* A reload changed the limit: start the window afresh with the new size. */
		double *sent = requests ? calloc(requests, sizeof(*sent)) : NULL;

		if (requests && !sent)
			return l;
		free(l->sent);
		l->sent = sent;
		l->requests = l->budget = requests;
		l->window = window;
		l->head = l->n = 0;
		l->changed = l->cut = 0;
	}
	if (l)
		return l;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->key = strdup(api_key);
	l->sent = requests ? calloc(requests, sizeof(*l->sent)) : NULL;
	if (!l->key || (requests && !l->sent)) {
		free(l->key);
		free(l->sent);
		free(l);
		return NULL;
	}
	l->requests = l->budget = requests;
	l->window = window;
	l->next = s->head;
	s->head = l;
	return l;
}

double wire_ratelimit_take(struct ratelimit *l, double now)
{
	if (!l || !l->requests)
		return 0;
	limiter_expire(l, now);
	if (l->n >= l->budget) {
		/* The slot frees when the (n - budget + 1)-th oldest send leaves the window. */
		unsigned idx = (l->head + (l->n - l->budget)) % l->requests;
		double wait = l->sent[idx] + LIMITER_WINDOW(l) - now;

		return wait > 0.001 ? wait : 0.001;
	}
	l->sent[(l->head + l->n) % l->requests] = now;
	l->n++;
	return 0;
}

/*
 * Other hosts may share the key: the server's window is full of their requests too, and this host
 * cannot see them. Like TCP's congestion window: a 429 cuts the budget to 0.7 x what this host
 * sent in the window (not x the budget: it may have sent far less; never below a tenth of the
 * configured requests), so the sends already in the
 * window hold the next ones back until enough of them age out; the 429s of that same window come
 * from requests sent before the cut and cut nothing more. A whole window without a 429 adds a
 * tenth of the configured budget. Hosts that meet 429s shrink, the others grow into the room:
 * together they stay near the key's ceiling with a 429 or two per window at most.
 */
#define LIMITER_DECREASE 0.7
#define LIMITER_INCREASE(l) ((l)->requests / 10 ? (l)->requests / 10 : 1)

void wire_ratelimit_penalize(struct ratelimit *l, double now)
{
	unsigned used, budget;

	if (!l || !l->requests)
		return;
	if (l->cut > 0 && now - l->cut < l->window)
		return;
	used = wire_ratelimit_used(l, now);
	budget = (unsigned)(used * LIMITER_DECREASE);
	/* Not below a step: a lone 429 after a quiet spell must not hold a host to 1 a window. */
	if (budget < LIMITER_INCREASE(l))
		budget = LIMITER_INCREASE(l);
	if (budget > l->budget)
		budget = l->budget;
	l->budget = budget ? budget : 1;
	l->cut = l->changed = now;
}

void wire_ratelimit_success(struct ratelimit *l, double now)
{
	if (!l || !l->requests || l->budget >= l->requests)
		return;
	if (now - l->changed < l->window)
		return;
	l->budget = l->budget + LIMITER_INCREASE(l) < l->requests ? l->budget + LIMITER_INCREASE(l) : l->requests;
	l->changed = now;
}

unsigned wire_ratelimit_budget(const struct ratelimit *l)
{
	return l ? l->budget : 0;
}

unsigned wire_ratelimit_used(const struct ratelimit *l, double now)
{
	unsigned used = 0;

	if (!l || !l->requests)
		return 0;
	for (unsigned i = 0; i < l->n; i++)
		used += l->sent[(l->head + i) % l->requests] > now - l->window;
	return used;
}
