/* request: one POST of an open batch on the wire: its records, 413/422 bisection, retries and rate waits. */
#pragma once
/*
 * A request carries the records [lo, hi) of the batch's current request body. It owns its
 * state, its timer (retry and rate waits), the part of a body it sends after a split, and the
 * last acknowledged record. It borrows, for the batch's life (wire_request_bind to wire_request_reset):
 * the body (wire_request_begin to ops.done), the upload client and limiter, the connection's
 * configuration and counters. It reports upward by callback and never ends the batch itself.
 */
#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "config/config.h"
#include "record/record_cut.h"
#include "record/record_reject.h"
#include "util/log.h"
#include "wire/wire_ratelimit.h"
#include "wire/wire_upload.h"

struct conn_stats;

enum request_state {
	REQ_IDLE,
	REQ_SENDING,            /* a POST is in flight */
	REQ_RETRY_WAIT,         /* a transient failure: the timer sends again */
	REQ_RATE_WAIT,          /* the API key's request budget is spent: the timer sends */
};

/* What wire_request_send asks of the batch before it sends the request that completes it. */
enum { REQUEST_WHOLE = 0, REQUEST_GREW = 1, REQUEST_NOT_NOW = 2 };

struct request_ops {
	/*
	 * The next request completes the batch: is the file whole, read to its end, done being
	 * written? REQUEST_WHOLE: send it. REQUEST_GREW: send it, not completing (there is more to
	 * read): the callee has sealed the body again with batch_completed:false (record_pipeline_read_on
	 * does). REQUEST_NOT_NOW: the batch waits or failed; it calls wire_request_send again if it waits.
	 */
	int (*may_complete)(void *userdata);
	void (*done)(void *userdata);           /* every record of the body is acknowledged or refused */
	/* The server refused the one record @data of file @member, line @line: keep it. <0: cannot. */
	int (*refused)(void *userdata, uint32_t member, uint64_t line, const char *reason, const char *data, size_t len);
	void (*failed)(void *userdata, long status, const char *why, const char *response);
	void (*auth_refused)(void *userdata, long status);      /* 401/403: the request waits for wire_request_send */
	bool (*stopping)(void *userdata, const char *what);     /* SIGTERM: the batch ended here instead of waiting */
	void (*error)(void *userdata, long status, const char *what);   /* a failure worth a retry, for `status` */
	void (*rate)(void *userdata, bool waiting);     /* the limiter's state, for `status` */
};

struct request {
	enum request_state state;
	ev_timer timer;
	double wait;                    /* seconds the timer was armed for by the last wait (< 0: none) */
	struct ev_loop *loop;
	struct request_ops ops;
	void *userdata;
	/* borrowed for the batch's life */
	const struct conn_config *cfg;
	struct upload_client *client;
	struct ratelimit *limiter;
	struct conn_stats *stats;
	struct log_ctx ctx;
	struct cut_params params;
	/* the body being sent */
	struct record_body *body;
	uint32_t seq;                   /* its number in the batch, from 1, for the log */
	uint32_t lo, hi;                /* records [lo, hi) of the body are in the request */
	uint32_t split_end[32];         /* ends of the right halves still to send after a split */
	unsigned split_depth;
	uint32_t server_rejected;       /* records of the body refused by the server */
	struct record_body part;       /* what is sent when it is not the whole body */
	bool completes;                 /* the request in flight has batch_completed:true */
	bool completed;                 /* a request with batch_completed:true was acknowledged */
	bool resend_last;               /* completing by sending the last acknowledged record again */
	struct record_rejects last_record;      /* the last acknowledged record's bytes (buf, len only) */
	/* the batch */
	bool answered;                  /* some request of this batch got a 2xx (this run) */
	uint64_t sent;                  /* requests sent */
	unsigned attempt;
	double first_failure;
	uint64_t rng;
};

int wire_request_init(struct request *q, struct ev_loop *loop, const struct request_ops *ops, void *userdata);
void wire_request_release(struct request *q);
/* A batch starts: send with these (borrowed until wire_request_reset); @ctx names it in the log. */
void wire_request_bind(struct request *q, const struct conn_config *cfg, struct upload_client *client,
		  struct ratelimit *limiter, struct conn_stats *stats, const struct log_ctx *ctx,
		  const struct cut_params *params);
/* The batch ended: nothing waits, nothing is remembered of it. */
void wire_request_reset(struct request *q);

/* Send the records of @body (borrowed until ops.done), the @seq-th request of the batch. */
void wire_request_begin(struct request *q, struct record_body *body, uint32_t seq);
/* Send, or send again, what the request holds now. */
void wire_request_send(struct request *q);
/* Complete the batch by sending the last acknowledged record again (every later one was refused). */
int wire_request_resend_last(struct request *q);
/* The answer to the POST in flight (an upload_done_fn). */
void wire_request_on_response(void *request, const struct upload_result *res);

static inline bool request_waiting(const struct request *q)
{
	return q->state == REQ_RETRY_WAIT || q->state == REQ_RATE_WAIT;
}
