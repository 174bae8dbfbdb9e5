/* wire_request: one POST of an open batch on the wire: its records, 413/422 bisection, retries and rate waits. */
#pragma once
/*
 * A request carries the records [lo, hi) of the batch's current request body. It owns its
 * state, its timer (retry and rate waits), the part of a body it sends after a split, and the
 * last acknowledged record. It borrows, for the batch's life (wire_request_bind to wire_request_reset):
 * the body (wire_request_begin to ops.done), the upload client and limiter, the connection's
 * counters; its retry policy is copied. It reports upward by callback and never ends the batch itself.
 */
#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "record/record_cut.h"
#include "record/record_reject.h"
#include "util/log.h"
#include "util/rc.h"
#include "wire/wire_ratelimit.h"
#include "wire/wire_retry.h"
#include "wire/wire_upload.h"

struct conn_stats;

enum request_state {
	REQ_IDLE,
	REQ_SENDING,            /* a POST is in flight */
	REQ_RETRY_WAIT,         /* a transient failure: the timer sends again */
	REQ_RATE_WAIT,          /* the API key's request budget is spent: the timer sends */
};

/* Is the batch's file whole? What wire_request_send asks before it sends the request that completes it. */
enum request_whole {
	REQUEST_WHOLE = 0,      /* all there, all read, done being written: complete the batch */
	REQUEST_GREW = 1,       /* it grew: send this request not completing, the rest is read on */
	REQUEST_WAIT = 2,       /* still being written: the batch calls wire_request_send again */
	REQUEST_FAILED = 3,     /* the batch failed here */
};

struct request_ops {
	/*
	 * The next request completes the batch: is the file whole, read to its end, done being
	 * written? REQUEST_WHOLE: send it. REQUEST_GREW: send it, not completing (there is more to
	 * read): the callee has sealed the body again with batch_completed:false (record_pipeline_read_on
	 * does). REQUEST_WAIT, REQUEST_FAILED: nothing is sent now.
	 */
	int (*may_complete)(void *userdata);
	void (*done)(void *userdata);           /* every record of the body is acknowledged or refused */
	/*
	 * The server refused the one record @data of file @member, line @line: keep it. @key is its
	 * primary key's JSON text inside @data (NULL: not noted, see record_body.rec_key). <0: cannot.
	 */
	int (*refused)(void *userdata, uint32_t member, uint64_t line, const char *reason, const char *data, size_t len,
		       const char *key, size_t key_len);
	void (*failed)(void *userdata, long status, const char *why, const char *response);
	bool (*stopping)(void *userdata, const char *what);     /* SIGTERM: the batch ended here instead of waiting */
};

/*
 * What the request reports straight to the connection (the batch has nothing to add): handed
 * down once, at init, so each event travels one way and is counted in one place.
 */
struct request_report {
	void (*auth_refused)(void *userdata, long status);      /* 401/403: the request waits for wire_request_send */
	/* An answer worth noting for `status`: a failure worth a retry (@what says it), or NULL for a 413/422 split. */
	void (*error)(void *userdata, long status, const char *what);
	void (*rate)(void *userdata, bool waiting);     /* the limiter's state, for `status` */
	void *userdata;
};

struct request {
	enum request_state state;
	ev_timer timer;
	double wait;                    /* seconds the timer was armed for by the last wait (< 0: none) */
	struct ev_loop *loop;
	struct request_ops ops;
	void *userdata;
	struct request_report report;
	struct retry_policy retry;      /* the batch's, copied at bind */
	/* borrowed for the batch's life */
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

int wire_request_init(struct request *q, struct ev_loop *loop, const struct request_ops *ops, void *userdata,
		      const struct request_report *report);
void wire_request_release(struct request *q);
/* A batch starts: send with these (@retry, @ctx and @params copied, the rest borrowed until wire_request_reset); @ctx names it in the log. */
void wire_request_bind(struct request *q, const struct retry_policy *retry, struct upload_client *client,
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

static inline bool wire_request_waiting(const struct request *q)
{
	return q->state == REQ_RETRY_WAIT || q->state == REQ_RATE_WAIT;
}
/* Count an answer of @status to a request of @records records in @stats->by_status. */
void wire_request_count_status(struct conn_stats *stats, long status, uint64_t records);
