/* state_totals: each connection's running totals and last outcomes for `dcsyncd status`, kept in <state_dir>/totals. */
#pragma once

/*
 * Contract. A struct totals owns the in-memory totals of every connection it was given and the
 * file <state_dir>/totals (JSON, replaced atomically with fileio_replace_at, mode 0640 like the
 * journal, so that whoever may read the journal may read it). It borrows nothing past a call;
 * it calls fileio, jsonstr, yajl and log, never the journal or a connection. The totals are not
 * recovery state: nothing replayed at start depends on them, so a crash may lose the last
 * seconds of them (see state_totals_put), never the file.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A connection's running totals (since its first upload, across restarts) and last outcomes. */
struct conn_totals {
	char connection[128];
	uint64_t files_done;
	uint64_t files_failed;
	uint64_t records_sent;
	uint64_t records_rejected;
	uint64_t records_unchanged;     /* skip_unchanged: left out, the API holds them (absent in older files: 0) */
	uint64_t requests;
	int64_t last_success;   /* unix seconds of the last completed batch, 0: never */
	uint64_t last_records;  /* records of the last completed batch: acknowledged, or left out as unchanged */
	int64_t last_error;     /* unix seconds, 0: never */
	int64_t last_error_status;
	char last_error_text[256];
	uint64_t rate_budget;   /* the API key's request budget per window now (0: no limit) */
	uint64_t rate_waiting;  /* 1 while a request waits for the client-side rate limit */
};

/*
 * The daemon's cadence: at most one write of the file per second, whatever the rate of
 * requests, batches and errors (a write is two fsyncs: the temporary and the directory); what
 * waits is written by the daemon's 2-s tick, and at stop. A crash loses at most the changes of
 * the last two seconds or so: counters, never what a resume needs.
 */
#define TOTALS_INTERVAL 1.0

struct totals;

/*
 * Open <dir>/totals for the daemon and read it when it is there (none yet: every connection
 * starts from zero). A file that cannot be read as totals is logged with the reason, renamed
 * to totals.damaged (evidence, replaced by a later one) and the totals start from zero: they
 * are counters, never a reason not to upload. Writes are at most one per @interval seconds
 * (TOTALS_INTERVAL; 0: every put writes).
 */
int state_totals_open(struct totals **out, const char *dir, double interval);
/* Read-only view for `dcsyncd status`: -ENOENT when there is no file, -EBADMSG when it is damaged. */
int state_totals_open_readonly(struct totals **out, const char *dir);
void state_totals_free(struct totals *t);

/* The totals of @connection, or NULL; valid until the next put or merge. */
const struct conn_totals *state_totals_find(const struct totals *t, const char *connection);

/*
 * Record @s as its connection's totals after an event (a batch's end, an error). The file is
 * written at once when the last write is @interval old, so that an isolated event is on disk
 * when `status` looks; otherwise the change waits for the next state_totals_flush. 0, or -errno of a
 * failed write (the change is kept and written by the next flush).
 */
int state_totals_put(struct totals *t, const struct conn_totals *s);
/*
 * Record @s after a change of live state that may come with every request (the rate limiter's
 * budget, waiting or not): kept, and written with the next write or flush, never by itself.
 */
void state_totals_put_live(struct totals *t, const struct conn_totals *s);
/* Write what is pending if the last write is @interval old, or now with @force (at stop). */
int state_totals_flush(struct totals *t, bool force);
bool state_totals_pending(const struct totals *t);
/*
 * Take the entries of @v for connections not known yet (totals an older dcsyncd kept in the
 * journal); written by the next flush. The number taken, or -ENOMEM.
 */
int state_totals_merge(struct totals *t, const struct conn_totals *v, size_t n);
