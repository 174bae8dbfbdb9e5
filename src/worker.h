/* worker: one background thread that runs one job at a time and reports back on the event loop. */
#pragma once

#include <stdbool.h>
#include <ev.h>

/*
 * Why a thread: parsing a request's records is the daemon's only CPU-heavy step. A connection
 * hands the next request's parse to its worker while the loop sends the current one, so parsing
 * overlaps the network and several connections parse on several cores. The job must touch only
 * what the submitter leaves alone until its done callback has run (or worker_cancel returned).
 * The thread starts at the first submit: a connection that never needs it costs nothing.
 */
struct worker;

typedef int (*worker_job_fn)(void *arg);
/* Runs on the loop's thread with the job's return value. */
typedef void (*worker_done_fn)(void *userdata, int result);

int worker_new(struct worker **out, struct ev_loop *loop, worker_done_fn done, void *userdata);
/* Cancels the job (waiting for it if it runs) and ends the thread. */
void worker_free(struct worker *w);

/* Run @job(@arg) on the thread. -EBUSY while a job's done callback is still due. */
int worker_submit(struct worker *w, worker_job_fn job, void *arg);
/* A job was submitted and its done callback has not run yet. */
bool worker_busy(const struct worker *w);
/* Block until the job, if any, has finished; its done callback still comes from the loop. NULL: no-op. */
void worker_wait(struct worker *w);
/* Block until the job, if any, has finished and forget it: its done callback never runs. NULL: no-op. */
void worker_cancel(struct worker *w);
