/* intake: a connection's spool directory: what is ready to take, what waits, what is refused, taking a file into .work/. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <ev.h>

#include "spool.h"
#include "watch.h"
#include "workfiles.h"

/*
 * Owns the queue of ready files, the files written in place that wait to be still, the inotify
 * watch on the directory, their timers and a copy of the connection's name for the log.
 * Borrows the connection's workfiles (its directory descriptors) for its whole life. @ready is called from the loop
 * when files were queued by an event or a rescan (start work then, not from inside it).
 */
struct intake {
	struct ev_loop *loop;
	struct workfiles *wf;
	char *name;
	double settle_seconds;
	struct spool_queue queue;       /* ready, handed out in (mtime, name) order */
	struct spool_queue settling;    /* written in place, keyed by when to look again */
	struct watch *watch;
	ev_timer settle_timer;
	ev_timer dir_timer;             /* the directory was removed and could not be made again */
	bool dir_error_logged;
	uint64_t refused;               /* names refused (not regular files, unreadable) */
	void (*ready)(void *userdata);
	void *userdata;
};

int intake_init(struct intake *in, struct ev_loop *loop, struct workfiles *wf, const char *name,
		double settle_seconds, void (*ready)(void *userdata), void *userdata);
void intake_release(struct intake *in);
/* Queue every ready file of the directory (start-up, after a reload). */
int intake_scan(struct intake *in);
/* Files queued or waiting to be still. */
size_t intake_pending(const struct intake *in);
/*
 * Take @name (popped from the queue) into .work/ as @work_name and open it: it is looked at
 * again (a writer may have opened it since it was queued). The read-only fd with its stat in
 * @st and in @trusted whether someone said nobody writes it; -EAGAIN not ready (it comes back
 * when it is), -EINVAL refused, another negative errno. Says in the log why not.
 */
int intake_take(struct intake *in, const char *name, const char *work_name, struct stat *st, bool *trusted);
