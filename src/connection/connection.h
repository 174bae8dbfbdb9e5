/* connection: one Data Connection: its spool and queue of files, the batches it runs one at a time, reloads, pauses and stops. */
#pragma once
/*
 * Contract.
 * Owns: its configuration (a copy, and a reload's copy waiting for the batch's end), its
 * validators, its one struct batch, its intake (queue and watch), its workfiles, its upload
 * client, its field catalog, its counters and timers; spool_dir and state_dir are copied.
 * Borrows, for its whole life: env's loop, journal (handed on to the batch), totals and upload
 * context, which are the daemon's; the API key's limiter from upload's set (shared by the
 * connections of one key).
 * May call: batch, through its functions only (one at a time: the next starts when batch_ops
 * says the last ended; never the batch's pipeline or request), spool_intake, spool_work,
 * spool_queue, spool, state_catalog, state_catalog_file, state_totals, wire_ratelimit,
 * wire_upload, config, record_check, layout, log. Upward only through env->changed.
 */

#include <stdbool.h>
#include <stdint.h>
#include <ev.h>

#include "config/config.h"
#include "state/state_counters.h"
#include "state/state_journal.h"
#include "state/state_totals.h"
#include "wire/wire_upload.h"

struct connection;

/* What a connection needs from the daemon around it. */
struct conn_env {
	struct ev_loop *loop;
	struct journal *journal;
	struct totals *totals;          /* the connections' totals for `dcsyncd status` (the daemon's) */
	struct upload *upload;
	const char *spool_dir;          /* copied by connection_new */
	const char *state_dir;
	enum after_upload after_upload;
	double settle_seconds;          /* a file found in place is taken once still this long */
	double open_recheck_seconds;    /* a file counted open is looked at again after this long; 0: the default */
	bool once;
	void (*changed)(void *userdata);   /* a file finished or the connection stopped or paused */
	void *userdata;
};

/* The connection keeps its own copy of @cfg: the caller may free it at once. */
int connection_new(struct connection **out, const struct conn_env *env, const struct conn_config *cfg);
void connection_free(struct connection *c);
const char *connection_name(const struct connection *c);

/*
 * The connection watches its spool directory itself (inotify) from connection_new on, and
 * makes it again if it is removed. Queue every ready file in it (start-up, after a reload).
 */
int connection_scan(struct connection *c);
/* Take over a live batch from the journal: it runs before any queued file. */
int connection_adopt(struct connection *c, const struct journal_batch *b);
/* Move files left in .work/ without a live journal entry back to the spool. */
int connection_release_orphans(struct connection *c);
/* Start work if there is some and nothing is in flight. */
void connection_kick(struct connection *c);
/*
 * A reloaded configuration for the same connection (copied; the caller may free @cfg at once).
 * All or nothing: on error nothing changed. Between batches it applies at once. During a
 * batch, the batch keeps its identity (destination, cut, validator) to its end and the new
 * configuration applies to the next batch; keys for the same destination apply at once. A
 * connection paused by 401/403 tries again at once.
 */
int connection_reconfigure(struct connection *c, const struct conn_config *cfg, enum after_upload after);
/* A connection removed by a reload (draining) comes back in the next: it takes files again. */
void connection_revive(struct connection *c);
/*
 * Take no new file. With @stop_after_ack (SIGTERM) the batch in flight stops once its request
 * in flight is answered and recorded; the next start resumes it from the journal. Without it
 * (a connection removed by a reload) the batch in flight runs to its end.
 */
void connection_drain(struct connection *c, bool stop_after_ack);

bool connection_idle(const struct connection *c);     /* nothing queued, nothing in flight */
bool connection_blocked(const struct connection *c);  /* paused by the server (401/403) */
/* Its spool directory cannot be used yet (permissions, a read-only filesystem): retried alone. */
bool connection_unusable(const struct connection *c);
bool connection_busy(const struct connection *c);     /* a batch is open (in flight, waiting, paused) */
size_t connection_queued(const struct connection *c);
bool connection_rate_waiting(const struct connection *c);  /* a request waits for its API key's budget */
/* The API key's current request budget per window (0: unlimited) and how much of it is used. */
unsigned connection_rate_budget(const struct connection *c, unsigned *used);
/* The counters, the queue's figures brought up to date first (so not const). */
const struct conn_stats *connection_stats(struct connection *c);
/* Its totals across restarts (the last completed batch's time and records among them). */
const struct conn_totals *connection_totals(const struct connection *c);

