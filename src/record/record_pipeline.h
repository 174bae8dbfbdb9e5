/* record_pipeline: an open batch's request bodies: the one being sent and the next ones, cut ahead on a worker thread. */
#pragma once
/*
 * While request N is on the wire the worker cuts N+1 and N+2 from the batch's file, so CPU and
 * network overlap. The pipeline owns the ring of bodies, their rejected lines and field
 * catalogs, and the reader of the batch's file. It borrows the validator and the cut params
 * (their batch_uuid) from the batch, until record_pipeline_reset. Until the worker's done callback the
 * worker owns the body it fills, its record_rejects and catalog, the reader and the validator: the loop
 * thread leaves them alone, and record_pipeline_cancel takes them back.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <ev.h>

#include "record/record_cut.h"
#include "record/record_ndjson.h"
#include "record/record_reject.h"
#include "record/record_source.h"
#include "record/record_worker.h"
#include "state/state_catalog.h"
#include "state/state_store.h"
#include "util/rc.h"

/* The one in flight and two cut ahead: with several connections on few cores, each one's cutting fills the time the others wait for the network. */
#define PIPELINE_DEPTH 3

struct pipeline_ops {
	void (*ready)(void *userdata);                  /* record_pipeline_next said PIPELINE_PENDING: try it again */
	void (*cut_failed)(void *userdata, int err);    /* a cut failed (negative errno): say so; the batch fails at the next */
	void (*stepped)(void *userdata, int r);         /* record_pipeline_step said PIPELINE_PENDING: the step's result */
};

/* How the batch's file is read: a connection's keys, handed down at start. */
struct read_opts {
	const struct csv_options *csv;  /* borrowed with the batch */
	struct source_limits limits;
	bool field_catalog;             /* note each body's field names */
};

struct pipeline {
	struct record_body body[PIPELINE_DEPTH];       /* a ring: the current request, then those cut ahead */
	struct record_rejects rej[PIPELINE_DEPTH];              /* each body's rejected lines */
	struct catalog *fields[PIPELINE_DEPTH];         /* each body's field names, counted once it is acknowledged */
	int cur;
	unsigned n_ahead;               /* bodies cut ahead of cur: cur+1, cur+2 (mod PIPELINE_DEPTH) */
	struct source *reader;          /* the batch's file, read as its name says */
	struct cut_params params;
	struct record_check *validator;     /* borrowed */
	struct read_opts read;
	struct worker *worker;
	int ahead_idx;
	int ahead_error;                /* the cut ahead failed (negative errno): no second try from there */
	bool warned;                    /* no thread: said once */
	bool want_next;                 /* record_pipeline_next waits for the cut ahead */
	bool cutting;                   /* from record_pipeline_start to record_pipeline_cancel: worth cutting ahead for */
	struct pipeline_ops ops;
	void *userdata;
	/* skip_unchanged (record_pipeline_skip): the batch's store, used only by the worker's jobs */
	struct store *store;            /* borrowed for the batch; NULL: every record is sent */
	const char *store_dir;          /* for a forget request when the store fails */
	uint64_t decided_at;            /* the batch's fixed decision time (journaled) */
	uint32_t ttl;
	bool store_begun;               /* state_store_batch_begin done for this batch */
	bool store_broken;              /* the store failed in this batch: the rest goes whole, then it is forgotten */
	struct cut_skip skip;
	unsigned char *refused;         /* keys (canonical, each after its length byte pair) the server refused, */
	size_t refused_len, refused_cap;        /* not yet told to the store */
	bool refused_unknown;           /* one of them had no key noted */
	int (*step_fn)(struct pipeline *p);
	bool stepping;
	bool step_queued;               /* the step waits for the cut ahead, which holds the store */
};

enum { PIPELINE_PENDING = 1 };

/* Each body notes at most @fields_max field names. */
int record_pipeline_init(struct pipeline *p, struct ev_loop *loop, size_t fields_max, const struct pipeline_ops *ops,
		  void *userdata);
void record_pipeline_release(struct pipeline *p);
/* A batch starts: cut with @params and @read (copied) and @v (borrowed until record_pipeline_reset, as is @read->csv). */
void record_pipeline_start(struct pipeline *p, const struct cut_params *params, struct record_check *v,
		    const struct read_opts *read);
/*
 * skip_unchanged for the batch just started (@s NULL: off): the worker decides each record
 * against @s at @decided_at; cuts on the loop only note keys (record_cut_decide later, on the worker).
 */
void record_pipeline_skip(struct pipeline *p, struct store *s, const char *dir, uint64_t decided_at);
/*
 * Run one store step of the batch on the worker: deciding body 0 (cut on the loop with keys
 * noted), or the batch's end in the store (completed, or forgotten). PIPELINE_PENDING: the
 * result comes through ops.stepped; otherwise it ran here (no thread) and this is its result.
 */
int record_pipeline_step(struct pipeline *p, int (*fn)(struct pipeline *p));
int record_pipeline_decide_first(struct pipeline *p);
int record_pipeline_store_completed(struct pipeline *p);
/*
 * The server refused a record of the current body whose key is @key (NULL: not noted); on the
 * loop. Kept until record_pipeline_store_refused tells the store, a step the batch runs before
 * the body's acknowledgement is journaled (a refused key must never complete as held, also
 * after a crash). 0, or -ENOMEM (then the store is not trusted for this batch).
 */
int record_pipeline_refused(struct pipeline *p, const char *key, size_t key_len);
/* Whether refused keys wait for record_pipeline_store_refused. */
bool record_pipeline_refusals(const struct pipeline *p);
int record_pipeline_store_refused(struct pipeline *p);
/* The batch ended or fails: no more cutting, the bodies ahead are dropped. */
void record_pipeline_reset(struct pipeline *p);
/* Stop cutting ahead now (the batch's files leave, or it fails). */
void record_pipeline_cancel(struct pipeline *p);
/* Wait for a cut ahead to finish (before the validator it borrows is freed). */
void record_pipeline_wait(struct pipeline *p);

/* Point the reader at @fd, read as @name says (NDJSON, CSV, TSV; compressed or not). */
int record_pipeline_read_at(struct pipeline *p, int fd, const char *name, uint64_t offset, uint64_t lineno);
/* What to say of a file that could not be read: the reader's reason (a CSV header, compressed data) if it has one. */
const char *record_pipeline_read_error(const struct pipeline *p, const char *fallback);
/* The batch's file grew after the current body, its last, was cut: it is not the last, read on from its end. */
int record_pipeline_read_on(struct pipeline *p, int fd, const char *name);
/*
 * Cut the current body again from its start, @fd having grown past a line the body ended on
 * unterminated (a writer paused mid-line): CUT_FILL_EOF (the body is the last again) or
 * CUT_FILL_FULL / CUT_FILL_REJECTS (it is not), or -errno. Its rejected lines are cut anew too.
 */
int record_pipeline_recut_current(struct pipeline *p, int fd, const char *name);
/* Names of the records about to be cut go into @fields, emptied first (when the connection keeps a catalog). */
void record_pipeline_note_fields(struct pipeline *p, struct catalog *fields);

/* Cut body @idx now, on this thread (the first request of a batch, or a resume). */
int record_pipeline_cut(struct pipeline *p, int idx);
/* Cut the next bodies on the worker, up to PIPELINE_DEPTH-1 ahead. <0 once: no thread (then they are cut when due). */
int record_pipeline_ahead(struct pipeline *p);
/*
 * Make the next body current: one cut ahead, or wait for the one being cut (PIPELINE_PENDING,
 * then ops.ready), or cut it now. A negative errno: it could not be cut.
 */
int record_pipeline_next(struct pipeline *p);

static inline struct record_body *record_pipeline_current(struct pipeline *p) { return &p->body[p->cur]; }
