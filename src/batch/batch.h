/* batch: one Opti-X batch: its files taken from the spool, opened durably, sent request by request, completed, archived or failed. */
#pragma once
/*
 * A connection has one struct batch, reused batch after batch. Between batch_start (or
 * batch_resume) and its end the batch owns its files in .work/, its journal record, its
 * pipeline of request bodies and its request on the wire, and runs on the configuration,
 * validator, upload client and limiter it was started with (borrowed: the connection changes
 * them only between batches). For the life of the struct it borrows the connection's
 * batch_env. It reports upward through batch_ops and never starts the next batch itself.
 *
 * Ordering (see state_journal.c): a file is renamed into .work/ before the batch naming it is
 * journaled; each acknowledgement is durable before the next request; COMPLETED is durable
 * before any file is archived or deleted.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <ev.h>

#include "config/config.h"
#include "record/record_check.h"
#include "record/record_ndjson.h"
#include "record/record_pipeline.h"
#include "record/record_reject.h"
#include "spool/spool_intake.h"
#include "spool/spool_work.h"
#include "state/state_history.h"
#include "state/state_journal.h"
#include "util/log.h"
#include "wire/wire_ratelimit.h"
#include "wire/wire_request.h"
#include "wire/wire_upload.h"

struct conn_stats;

/* A file of the batch. */
struct member {
	uint64_t fid;                   /* names it in .work/ */
	char name[256];
	struct file_identity ident;
	uint64_t rejected_size;         /* its rejected file's size when the batch opened */
	uint64_t rejected_lines;        /* entries of its rejected file when it had rejected_counted_size bytes */
	uint64_t rejected_counted_size; /* 0 and 0 for a file taken anew (true of a file of 0 bytes): counted again */
	uint64_t rejected;              /* lines rejected locally */
	struct record_rejects rej;              /* those lines, written once the batch is durable (last member) */
	bool trusted;                   /* nobody had it open when taken (a lease or inotify said so) */
	int64_t changed_ns;             /* when last seen to change (CLOCK_MONOTONIC): stillness counts from it */
};

/* How a batch ended, for batch_ops.ended. */
enum batch_end {
	BATCH_END_NEXT,         /* archived, deleted or failed for good: go on with the next */
	BATCH_END_STOPPED,      /* SIGTERM: left open in the journal for the next start */
	BATCH_END_HELD,         /* its files went back to the spool, or it waits in the journal: nothing to start now */
};

struct batch_ops {
	void (*ended)(void *userdata, enum batch_end how);
	/* The batch ended (archived, failed for good, handed back), once per end: count it, record @e. */
	void (*finished)(void *userdata, const struct history_entry *e);
	void (*fields)(void *userdata, struct catalog *acked);  /* names of records the server acknowledged */
};

/* What the connection lends its batch for the life of the struct. */
struct batch_env {
	const char *name;               /* the connection's */
	struct ev_loop *loop;
	struct journal *journal;
	struct workfiles *wf;
	struct intake *in;              /* where files are taken from and handed back to */
	struct conn_stats *stats;
	const char *state_dir;          /* for the log */
	double settle_seconds;
	enum after_upload after_upload; /* set again by a reload */
	/* Handed to the request: 401/403 (see batch_release_files, batch_fail), retries, rate waits. */
	struct request_report report;
};

/* Where a batch stands; set only through batch_enter, which logs each change. */
enum batch_phase {
	BATCH_IDLE,             /* no batch: the struct waits for batch_start or batch_resume */
	BATCH_OPENING,          /* its files taken (or found again) and its journal record being made durable */
	BATCH_SENDING,          /* request after request */
	BATCH_ARCHIVING,        /* completed: its files archived or deleted */
	BATCH_FAILING,          /* failed for good: its files moved to failed/ */
};

/* What an open batch waits for, beside its request (whose waits are its own). */
enum batch_wait {
	BW_NONE,
	BW_SYNC,                /* the journal could not be made durable: the timer tries again */
	BW_SETTLE,              /* the file is still being written: the timer looks again */
};

struct batch {
	struct batch_env env;
	struct batch_ops ops;
	void *userdata;
	enum batch_phase phase;
	bool stop_after_ack;            /* SIGTERM: leave the batch after the request in flight */
	enum batch_wait wait;
	struct journal_batch jb;
	/* borrowed from the connection from the start of a batch to its end */
	const struct conn_config *cfg;
	struct record_check *validator;
	struct upload_client *client;
	struct ratelimit *limiter;
	struct member *members;         /* one file, or several small ones filling one request */
	size_t n_members, cap_members;
	struct member carry;            /* taken for a batch it did not fit: starts the next one */
	bool have_carry;
	int fd;                         /* the single file a multi-request batch reads on from */
	struct pipeline pl;             /* its request bodies: the current one and those cut ahead */
	struct request req;             /* its request on the wire */
	struct catalog *member_fields;  /* a small file's names, until it is sure to fit the request */
	ev_timer timer;
	void (*after_sync)(struct batch *b);
	void (*after_settle)(struct batch *b);
	unsigned sync_attempt;
	bool journal_error_logged;
	bool settle_logged;
	double started;
	uint64_t retries_before;        /* the connection's retries when the batch started, for its history */
	uint64_t rng;
	/* skip_unchanged: the connection's store, open across batches, for the destination store_dest */
	struct store *store;
	char *store_dir;                /* <state_dir>/store/<connection> */
	uint64_t store_dest;
	uint64_t unchanged;             /* records of this batch the API holds (left out) */
	bool decided_first;             /* body 0, cut on the loop, was decided on the worker */
	void (*after_step)(struct batch *b, int r);
};

/* @fields_max: field names a request notes. */
int batch_init(struct batch *b, const struct batch_env *env, size_t fields_max, const struct batch_ops *ops,
	       void *userdata);
void batch_release(struct batch *b);

/*
 * Start a batch with the carried-over file or the oldest ready one, and the small files after
 * it that fit its first request. 0: it runs, or it ended here (a file that cannot be read, cut
 * or journaled fails it, said by batch_fail); -ENOENT: nothing ready to take; another -errno:
 * nothing was taken. The rest goes on from the loop.
 */
int batch_start(struct batch *b, const struct conn_config *cfg, struct record_check *v,
		struct upload_client *client, struct ratelimit *limiter);
/*
 * Go on with a batch of the journal. -EAGAIN: its files cannot be opened for now (EMFILE,
 * EACCES, EIO): it ended here (BATCH_END_HELD) and can be resumed again later. Otherwise it runs or ended.
 */
int batch_resume(struct batch *b, const struct journal_batch *jb, const struct conn_config *cfg,
		 struct record_check *v, struct upload_client *client, struct ratelimit *limiter);

/* At start, before any batch: files in .work/ that no live batch of the journal names go back to the spool. */
int batch_release_orphans(struct batch *b);
/* Fail the batch's files for good (moved to failed/ with error.json); ends through ops.ended once durable. */
void batch_fail(struct batch *b, long status, const char *why, const char *response);
/*
 * Nothing was acknowledged (401/403, a journal that lost the batch's records): the files go back
 * to the spool untouched; ends at once (BATCH_END_HELD). @status and @why are the history's.
 */
void batch_release_files(struct batch *b, long status, const char *why);
/* The file taken for the next batch goes back to the spool. */
void batch_release_carry(struct batch *b);
/* After a pause: send the request that was refused again. */
void batch_send_again(struct batch *b);
/* Nothing in flight, the batch waits (retry, rate, settle): SIGTERM leaves it to the journal now. */
bool batch_stoppable(const struct batch *b);
/* SIGTERM while the batch waits: leave it to the journal now (ops.ended: BATCH_END_STOPPED). */
void batch_stop(struct batch *b);
/* What is logged of the connection names it, and the file and batch while one is open. */
struct log_ctx batch_log_ctx(const struct batch *b, long status);
/* Nothing of the batch was acknowledged, in this run or before it. */
bool batch_untouched(const struct batch *b);

/* What the connection may ask of its batch and tell it; it reads and writes no field itself. */
bool batch_active(const struct batch *b);
/* A file was taken for the next batch. */
bool batch_has_carry(const struct batch *b);
/* The request waits for the client-side rate limit. */
bool batch_rate_waiting(const struct batch *b);
/* The open batch's file name and batch_uuid ("" when none is open). */
const char *batch_open_name(const struct batch *b);
const char *batch_open_uuid(const struct batch *b);
/* A reload: what is done with the files of this batch and the next once they went up. */
void batch_set_after_upload(struct batch *b, enum after_upload after);
/* SIGTERM: leave the batch after the request in flight (or not, once the signal is withdrawn). */
void batch_set_stop_after_ack(struct batch *b, bool stop);
/* Wait until no cut ahead runs: before the validator the batch borrows is freed. */
void batch_wait_cut(struct batch *b);
/* The answer to the batch's POST in flight (an upload_done_fn; @batch is the struct batch). */
void batch_on_response(void *batch, const struct upload_result *res);
