/* spool_intake: a connection's spool directory: what is ready to take, what waits, what is refused, taking a file into .work/. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <ev.h>

#include "spool/spool.h"
#include "spool/spool_queue.h"
#include "spool/spool_watch.h"
#include "spool/spool_work.h"

/*
 * Owns the queue of ready files, the files that wait (to be seen still, closed, or readable),
 * the inotify watch on the directory, their timers and a copy of the connection's name for the
 * log. Borrows the connection's workfiles (its directory descriptors) for its whole life.
 * @ready is called from the loop when files were queued by an event, a rescan or a timer
 * (start work then, not from inside it). Every file that waits is looked at again by a timer:
 * none waits on an event alone.
 */
struct intake {
	struct ev_loop *loop;
	struct workfiles *wf;
	char *name;
	double settle_seconds;
	double open_recheck_seconds;    /* a file counted open this long is looked at again (spool_intake_init) */
	struct spool_queue queue;       /* ready, handed out in (mtime, name) order; tag: the state seen still, or 0 */
	/* The waiting queues are keyed by when to look again (CLOCK_MONOTONIC ns). */
	struct spool_queue settling;    /* nobody can say it is closed: tag, the state seen */
	struct spool_queue held;        /* counted open: tag, the state seen; a count can be stale */
	struct spool_queue retry;       /* could not be looked at or moved (EMFILE, EIO): tag, the tries */
	struct spool_queue refusals;    /* refused (unreadable, not a regular file): the exporter's to fix; tag, the tries */
	/*
	 * Every file of settling and retry by its last seen mtime (INT64_MIN where none was seen):
	 * a ready file goes only when no older one waits to be seen still or looked at again, so
	 * older data never goes up after newer. Entries that left those queues are dropped when met
	 * (spool_intake_next). Held files hold nothing back (their writer is not done: they count
	 * by the mtime they have once closed); nor do refusals (they wait for the exporter).
	 */
	struct spool_queue waiting;
	struct watch *watch;            /* NULL while the directory cannot be used (dir_timer retries) */
	ev_timer look_timer;            /* the first of the waiting queues' times */
	ev_timer dir_timer;             /* the directory cannot be used, or was removed and cannot be made again */
	bool dir_error_logged;
	uint64_t refused;               /* names refused (not regular files, unreadable), each counted once */
	void (*ready)(void *userdata);
	void *userdata;
};

int spool_intake_init(struct intake *in, struct ev_loop *loop, struct workfiles *wf, const char *name,
		double settle_seconds, void (*ready)(void *userdata), void *userdata);
void spool_intake_release(struct intake *in);
/*
 * A file counted open is looked at again after @seconds (> 0), not 10 x settle_seconds: an
 * exporter that keeps a file open in place and idle for longer must not have it taken.
 */
void spool_intake_set_open_recheck(struct intake *in, double seconds);
/* Queue every ready file of the directory (start-up, after a reload). */
int spool_intake_scan(struct intake *in);
/*
 * Pop the oldest ready file into @e (the caller frees e->name): 1, or 0 when none is ready or
 * an older file still waits to be ready (it comes first: @ready is called once it is).
 */
int spool_intake_next(struct intake *in, struct spool_entry *e);
/* A file handed out goes back to the ready queue (its batch did not take it, or gave it back). */
int spool_intake_hand_back(struct intake *in, const char *name, int64_t mtime_ns);
/* Whether spool_intake_next would hand out a file now. */
bool spool_intake_has_next(struct intake *in);
/* Files queued or waiting to be still (not those waiting to be closed or readable). */
size_t spool_intake_pending(const struct intake *in);
/* Whether the directory is set up and watched (false: it cannot be used yet, retried alone). */
bool spool_intake_usable(const struct intake *in);
/*
 * Take @e (popped from the queue) into .work/ as @work_name and open it: it is looked at
 * again (a writer may have opened it since it was queued). The read-only fd with its stat in
 * @st and in @trusted whether someone said nobody writes it; -EAGAIN not ready (it comes back
 * when it is), -EINVAL refused, another negative errno (refused and failed names are tried
 * again later). Says in the log why not.
 */
int spool_intake_take(struct intake *in, const struct spool_entry *e, const char *work_name, struct stat *st, bool *trusted);
