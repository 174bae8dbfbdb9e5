/* wire_request: one POST of an open batch on the wire: its records, 413/422 bisection, retries and rate waits. */
#include "wire/wire_request.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <systemd/sd-id128.h>

#include "state/state_counters.h"
#include "util/crashpoint.h"
#include "util/jsonstr.h"
#include "util/timer.h"
#include "wire/wire_retry.h"

static void req_log(const struct request *q, enum log_level lvl, long status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void req_log(const struct request *q, enum log_level lvl, long status, const char *fmt, ...)
{
	struct log_ctx ctx = q->ctx;
	va_list ap;

	ctx.http_status = status;
	va_start(ap, fmt);
	log_vconn(lvl, &ctx, fmt, ap);
	va_end(ap);
}

static double rand01(struct request *q)
{
	/* xorshift64*: jitter needs spread, not secrecy. */
	q->rng ^= q->rng >> 12;
	q->rng ^= q->rng << 25;
	q->rng ^= q->rng >> 27;
	return (double)((q->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* The one place the request's state changes: logged, and the one timer armed for a wait (@delay >= 0). */
static void enter(struct request *q, enum request_state state, double delay)
{
	static const char *const names[] = { "idle", "sending", "retry wait", "rate wait" };

	assert(state == REQ_IDLE || q->body);
	if (q->state != state)
		req_log(q, LOG_LVL_DEBUG, -1, "request %s -> %s", names[q->state], names[state]);
	q->state = state;
	q->wait = delay;
	timer_arm(q->loop, &q->timer, delay);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	wire_request_send(w->data);
}

int wire_request_init(struct request *q, struct ev_loop *loop, const struct request_ops *ops, void *userdata,
		      const struct request_report *report)
{
	sd_id128_t seed;

	memset(q, 0, sizeof(*q));
	q->loop = loop;
	q->ops = *ops;
	q->userdata = userdata;
	q->report = *report;
	q->ctx = LOG_CTX_NONE;
	ev_timer_init(&q->timer, timer_cb, 0., 0.);
	q->timer.data = q;
	if (sd_id128_randomize(&seed) < 0)
		seed.qwords[0] = (uint64_t)time(NULL);
	q->rng = seed.qwords[0] | 1;
	return record_cut_body_init(&q->part, RECORD_MAX_PER_REQUEST);
}

void wire_request_release(struct request *q)
{
	if (q->loop)
		ev_timer_stop(q->loop, &q->timer);
	record_cut_body_release(&q->part);
	free(q->last_record.buf);
	q->last_record = (struct record_rejects){ 0 };
}

void wire_request_bind(struct request *q, const struct retry_policy *retry, struct upload_client *client,
		  struct ratelimit *limiter, struct conn_stats *stats, const struct log_ctx *ctx,
		  const struct cut_params *params)
{
	q->retry = *retry;
	q->client = client;
	q->limiter = limiter;
	q->stats = stats;
	q->ctx = *ctx;
	q->params = *params;
	q->sent = 0;
}

void wire_request_reset(struct request *q)
{
	enter(q, REQ_IDLE, -1);
	q->body = NULL;
	q->answered = false;
	q->resend_last = false;
	q->last_record.len = 0;
	q->attempt = 0;
}

void wire_request_begin(struct request *q, struct record_body *body, uint32_t seq)
{
	q->body = body;
	q->seq = seq;
	q->server_rejected = 0;
	q->split_depth = 0;
	q->completed = false;
	q->completes = false;
	q->resend_last = false;
	q->lo = 0;
	q->hi = body->n_records;
}

void wire_request_send(struct request *q)
{
	const struct record_body *b = q->body;
	const char *data;
	size_t len;
	bool completes = q->resend_last || (b->last && q->hi == b->n_records);
	double wait;

	/* From a wait, or again after a pause: idle until it is sent, whatever happens on the way. */
	enter(q, REQ_IDLE, -1);
	if (completes && !q->resend_last) {
		switch (q->ops.may_complete(q->userdata)) {
		case REQUEST_WAIT:
		case REQUEST_FAILED:
			return;
		case REQUEST_GREW:
			completes = false;
			break;
		default:
			break;
		}
	}
	/* Only now: REQUEST_GREW resealed the body (its length, maybe its buffer). */
	data = b->body;
	len = b->len;
	if (q->resend_last) {
		data = q->part.body;
		len = q->part.len;
	} else if (q->lo != 0 || q->hi != b->n_records) {
		if (record_cut_body_part(&q->part, b, &q->params, q->lo, q->hi, completes) < 0) {
			q->ops.failed(q->userdata, 0, "out of memory", NULL);
			return;
		}
		data = q->part.body;
		len = q->part.len;
	}
	q->completes = completes;
	wait = wire_ratelimit_take(q->limiter, ev_now(q->loop));
	q->report.rate(q->report.userdata, wait > 0);
	if (wait > 0) {
		if (q->ops.stopping(q->userdata, "waiting for the rate limit"))
			return;
		/* Wait for a slot rather than be refused with 429. */
		q->stats->rate_waits++;
		enter(q, REQ_RATE_WAIT, wait);
		return;
	}
	if (wire_upload_client_send(q->client, data, len) < 0) {
		q->ops.failed(q->userdata, 0, "cannot start the request", NULL);
		return;
	}
	enter(q, REQ_SENDING, -1);
	q->stats->requests++;
	q->stats->bytes_sent += len;
	q->sent++;
	req_log(q, LOG_LVL_DEBUG, -1, "%s: request %" PRIu32 ": records %" PRIu32 "..%" PRIu32 " of lines %" PRIu64
		"..%" PRIu64 ", %zu bytes%s", q->ctx.file, q->seq, q->lo, q->hi, b->start_line, b->end_line - 1, len,
		q->resend_last ? ", the last acknowledged record again, completes the batch"
		: completes ? ", completes the batch" : "");
}

int wire_request_resend_last(struct request *q)
{
	int r;

	if (!q->last_record.len)
		return -ENOENT;
	if ((r = record_cut_body_single(&q->part, &q->params, q->last_record.buf, q->last_record.len, true)) < 0)
		return r;
	q->resend_last = true;
	q->lo = q->hi = q->body->n_records;
	wire_request_send(q);
	return 0;
}

static void retry_later(struct request *q, const struct upload_result *res)
{
	double now = ev_now(q->loop), delay;
	char what[300];

	if (res->status)
		snprintf(what, sizeof(what), "HTTP %ld", res->status);
	else
		snprintf(what, sizeof(what), "%s%s", res->tls_failure ? "TLS certificate problem: " : "", res->error);
	if (q->attempt == 0)
		q->first_failure = now;
	delay = wire_retry_backoff(q->retry.initial_seconds, q->retry.max_seconds, q->attempt, rand01(q));
	if (res->retry_after >= 0 && res->retry_after > delay)
		delay = res->retry_after;
	/* Retry-After is the server's wish; retry_max_seconds is the operator's bound on any wait. */
	if (delay > q->retry.max_seconds)
		delay = q->retry.max_seconds;
	if (q->ops.stopping(q->userdata, what))
		return;
	q->attempt++;
	q->stats->retries++;
	q->report.error(q->report.userdata, res->status, what);
	if (q->retry.max_elapsed_seconds > 0) {
		/*
		 * Only time spent retrying counts: give up once it is over the limit, and never skip a
		 * try because the next wait would cross it (the last try is made at the limit).
		 */
		double left = q->first_failure + q->retry.max_elapsed_seconds - now;

		if (left <= 0) {
			char why[400];

			snprintf(why, sizeof(why), "gave up after %.0f s of retries (retry_max_elapsed_seconds): %s",
				 now - q->first_failure, what);
			q->ops.failed(q->userdata, res->status, why, res->body);
			return;
		}
		if (delay > left)
			delay = left;
	}
	req_log(q, q->attempt > 3 ? LOG_LVL_WARNING : LOG_LVL_INFO, res->status,
		"%s: request %" PRIu32 " failed (%s), retry %u in %.2f s", q->ctx.file, q->seq, what, q->attempt, delay);
	enter(q, REQ_RETRY_WAIT, delay);
}

/* Records [lo, hi) are done: send the next pending right half, or the rest, or the body is done. */
static void next_range(struct request *q)
{
	const struct record_body *b = q->body;

	q->lo = q->hi;
	q->hi = q->split_depth ? q->split_end[--q->split_depth] : b->n_records;
	if (q->lo >= b->n_records)
		q->ops.done(q->userdata);
	else
		wire_request_send(q);
}

/* 413 and 422: halve the request; a single record the server refuses is rejected with its answer. */
static void split_or_reject(struct request *q, const struct upload_result *res)
{
	const struct record_body *b = q->body;
	char reason[600];
	uint32_t ks;

	if (q->hi - q->lo > 1) {
		req_log(q, LOG_LVL_INFO, res->status, "%s: HTTP %ld for %" PRIu32 " records: splitting the request",
			q->ctx.file, res->status, q->hi - q->lo);
		/* Bisect: the right half waits on a stack, so a refused record costs O(log n) requests. */
		/* Halving a range of at most 5000 records nests at most 13 deep: 32 slots cannot run out. */
		assert(q->split_depth < sizeof(q->split_end) / sizeof(q->split_end[0]));
		q->split_end[q->split_depth++] = q->hi;
		q->hi = q->lo + (q->hi - q->lo) / 2;
		wire_request_send(q);
		return;
	}
	if (q->hi == q->lo) {
		/* The request completing the batch with the last acknowledged record was refused. */
		q->ops.failed(q->userdata, res->status, "the server refused the request that completes the batch", res->body);
		return;
	}
	snprintf(reason, sizeof(reason), "HTTP %ld: %s", res->status, res->body && *res->body ? res->body : "refused by the server");
	ks = b->rec_key[q->lo];
	if (q->ops.refused(q->userdata, b->rec_member[q->lo], b->rec_line[q->lo], reason, b->body + b->rec_off[q->lo],
			   b->rec_len[q->lo], ks ? b->body + b->rec_off[q->lo] + (ks >> 16) : NULL, ks & 0xffff) < 0) {
		q->ops.failed(q->userdata, 0, "cannot write rejected records", NULL);
		return;
	}
	q->server_rejected++;
	q->stats->records_rejected++;
	next_range(q);
}

void wire_request_count_status(struct conn_stats *stats, long status, uint64_t records)
{
	size_t n = sizeof(stats->by_status) / sizeof(stats->by_status[0]), i;

	/*
	 * A handful of distinct statuses in practice. Past 15 the last slot counts them all as
	 * STATUS_OTHER: a slot relabelled with its count kept would make one status's counter jump
	 * and another's vanish.
	 */
	for (i = 0; i < n - 1; i++)
		if (stats->by_status[i].status == status || stats->by_status[i].requests == 0)
			break;
	stats->by_status[i].status = i == n - 1 ? STATUS_OTHER : status;
	stats->by_status[i].requests++;
	stats->by_status[i].records += records;
}

void wire_request_on_response(void *request, const struct upload_result *res)
{
	struct request *q = request;
	const struct record_body *b = q->body;

	crashpoint("after-response");
	enter(q, REQ_IDLE, -1);
	wire_request_count_status(q->stats, res->status, q->hi - q->lo);
	if (res->status >= 200 && res->status <= 299) {
		if (q->hi > q->lo && !q->resend_last) {
			/* Kept to complete the batch with, should every later record be refused. */
			q->last_record.len = 0;
			(void)jsonstr_raw(&q->last_record.buf, &q->last_record.len, &q->last_record.cap,
					  b->body + b->rec_off[q->hi - 1], b->rec_len[q->hi - 1]);
		}
		q->answered = true;
		wire_ratelimit_success(q->limiter, ev_now(q->loop));
		q->attempt = 0;
		q->stats->last_success = ev_now(q->loop);
		q->stats->records_sent += q->hi - q->lo;
		if (q->completes)
			q->completed = true;
		next_range(q);
		return;
	}
	if (res->status == 401 || res->status == 403) {
		q->report.auth_refused(q->report.userdata, res->status);
		return;
	}
	if (res->status == 413 || res->status == 422) {
		q->report.error(q->report.userdata, res->status, NULL);
		split_or_reject(q, res);
		return;
	}
	if (wire_upload_status_transient(res->status)) {
		if (res->status == 429)
			wire_ratelimit_penalize(q->limiter, ev_now(q->loop));
		retry_later(q, res);
		return;
	}
	{
		char why[64];

		snprintf(why, sizeof(why), "the server answered HTTP %ld", res->status);
		q->ops.failed(q->userdata, res->status, why, res->body);
	}
}
