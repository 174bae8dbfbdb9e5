/* batch_priv: the steps of a batch its five files share; nothing else includes it. */
/*
 * The files are layered, each calling only those below it: batch_resume (a restart) → batch
 * (start and send) → batch_store (skip_unchanged's store) → batch_end (waits and ends) →
 * batch_files (custody of the files, the log).
 * A lower file goes on with a higher one's step only through the function it is handed
 * (batch_durable, batch_check_whole, batch_wait_settle), never by name.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch/batch.h"
#include "util/log.h"

void batch_log(const struct batch *b, enum log_level lvl, long status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Make the journal durable, then take @step; until it can be, hold everything and try again. */
void batch_durable(struct batch *b, void (*step)(struct batch *b));
/* The batch is over here: its fd, pipeline, request and waits; the journal says where it stands. */
void batch_end_here(struct batch *b);
/* Ended for good (archived or failed): compact the journal, tell the connection to go on. */
void batch_ended(struct batch *b);
/* The batch is durable: its first request (multi-file: its only one) goes out. */
void batch_opened(struct batch *b);
/* COMPLETED is durable: archive (or delete) its files. */
void batch_archive(struct batch *b);
/*
 * The batch ends here as @o (@status, @why: of a failure or a hand-back; may be 0, NULL): its one
 * run history entry goes up through ops.finished. Before batch_end_here, which forgets its files.
 */
void batch_record_end(struct batch *b, enum history_outcome o, long status, const char *why);
/* COMPLETED is durable: what the batch sent becomes known to the store (skip_unchanged), then batch_archive. */
void batch_completed(struct batch *b);
/* skip_unchanged: the store of the batch's destination, opened (or NULL: everything is sent). */
struct store *batch_store(struct batch *b);
/*
 * skip_unchanged is off: a store kept from when it was on no longer knows what this connection
 * sends, so it is marked to be forgotten before it is trusted again.
 */
void batch_store_unused(struct batch *b);
/* The decision time of a new batch: fixed in its OPEN record, so a resume decides the same. */
uint64_t batch_decision_time(void);
/* The cut params, pipeline and request of the batch in b->jb, and its line of `status`. */
void batch_set_params(struct batch *b);
int batch_grow_members(struct batch *b);
/* Queue member @i's journal record (again when its file grew): durable with the batch's next state. */
int batch_journal_member(struct batch *b, size_t i);
/* A file of the batch is no longer what was read (size, mtime, inode). */
bool batch_changed(struct batch *b, const struct member *m);
/* After a restart the last acknowledged record is not in memory: find it before the resume point. */
int batch_find_last_record(struct batch *b);
/* Open a file of a journaled batch: -ENOENT gone, -ESTALE changed, other errors may pass; @why says which. */
int batch_reopen_member(struct batch *b, struct member *m, char *why, size_t whylen);
/* The one place the batch's phase and wait change: logged, and the one timer armed for a wait (@delay >= 0). */
void batch_enter(struct batch *b, enum batch_phase phase, enum batch_wait wait, double delay);
/* What the batch runs on to its end: the connection changes none of it before then. */
void batch_use(struct batch *b, const struct conn_config *cfg, struct record_check *v,
	       struct upload_client *client, struct ratelimit *limiter);
/* FNV-1a of base_url and uuid, never 0: what the journal keeps of where a batch was opened. */
uint64_t batch_destination(const struct conn_config *cfg);

/* SIGTERM while nothing is in flight and the batch would wait: it ends here, left to the journal. */
bool batch_stopping_here(struct batch *b, const char *what);
/* The file is still being written: look again (@again) in @delay seconds. */
void batch_wait_settle(struct batch *b, double delay, void (*again)(struct batch *b));
/* CLOCK_MONOTONIC in ns: how long a file was seen still, never judged by its mtime. */
int64_t batch_mono_ns(void);
/* Take @name from the spool into .work/ as member @m and open it: the fd, or a negative errno. */
int batch_take_file(struct batch *b, const struct spool_entry *e, struct member *m);

/*
 * Before a batch is completed: is the file all there, all read, and done being written?
 * An enum request_whole: REQUEST_GREW: it grew and is read on; REQUEST_WAIT: @again is called
 * when it is time to look again; REQUEST_FAILED: the batch failed here. @unsent: nothing of the
 * current body has gone up, so a body that ended mid-line may be cut again (it may then hold
 * records it did not: the caller sends it).
 */
int batch_check_whole(struct batch *b, void (*again)(struct batch *b), bool unsent);

/* The connection's directories, made private again (and said so) when an exporter changed them. */
int batch_subdir(struct batch *b, const char *sub, bool create);
int batch_workdir(struct batch *b);
int batch_done_dir(struct batch *b);
/* Rejected lines: logged once per range, appended to rejected/<name>.rejected.ndjson once durable. */
void batch_rejects_log(struct batch *b, const char *name, uint64_t n, const struct record_rejects *rb);
int batch_rejects_flush(struct batch *b, struct member *m, struct record_rejects *rb);
/* failed/<name>.error.json beside a failed file: written atomically, never through a link; logged if it cannot be. */
int batch_error_json(struct batch *b, int failedfd, const char *name, const char *failed_name, long status,
		     const char *why, const char *response);
/* The batch's timer and jitter, at batch_init. */
void batch_wait_init(struct batch *b);
