/* worker: one background thread that runs one job at a time and reports back on the event loop. */
#pragma once

#include <stdbool.h>
#include <ev.h>

/*
 * Why a thread: cutting records into request bodies (parsing and validating each one) is the
 * daemon's only CPU-heavy step. A batch's pipeline hands the cut of the next bodies to its worker
 * while the loop sends the current request, so cutting overlaps the network and several
 * connections cut on several cores. The job must touch only what the submitter leaves alone until
 * its done callback has run (or record_worker_cancel returned).
 * The thread starts at the first submit: a connection that never needs it costs nothing.
 *
 * Contract.
 * Owns: its thread, the mutex and condition it shares with it, and the async watcher that wakes
 * the loop. The job's @arg stays the submitter's: the worker only runs the job on its thread,
 * with every signal blocked.
 * Borrows: the loop and @userdata for its life.
 * May call: pthreads, ev_async_send (from the thread), the job and the done callback; no other
 * module. Its one user is pipeline.
 */
struct worker;

typedef int (*worker_job_fn)(void *arg);
/* Runs on the loop's thread with the job's return value. */
typedef void (*worker_done_fn)(void *userdata, int result);

int record_worker_new(struct worker **out, struct ev_loop *loop, worker_done_fn done, void *userdata);
/* Cancels the job (waiting for it if it runs) and ends the thread. */
void record_worker_free(struct worker *w);

/* Run @job(@arg) on the thread. -EBUSY while a job's done callback is still due. */
int record_worker_submit(struct worker *w, worker_job_fn job, void *arg);
/* A job was submitted and its done callback has not run yet. */
bool record_worker_busy(const struct worker *w);
/* Block until the job, if any, has finished; its done callback still comes from the loop. NULL: no-op. */
void record_worker_wait(struct worker *w);
/* Block until the job, if any, has finished and forget it: its done callback never runs. NULL: no-op. */
void record_worker_cancel(struct worker *w);
