/* intake: a connection's spool directory: what is ready to take, what waits, what is refused, taking a file into .work/. */
#include "intake.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "timer.h"

/* How often a removed spool directory that cannot be made again is tried. */
#define DIR_RETRY_SECONDS 5.0

static void in_log(const struct intake *in, enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* As the connection logs: its name first, and in journald's CONNECTION= field. */
static void in_log(const struct intake *in, enum log_level lvl, const char *fmt, ...)
{
	struct log_ctx ctx = { .connection = in->name, .http_status = -1, .records = -1 };
	va_list ap;

	va_start(ap, fmt);
	log_vconn(lvl, &ctx, fmt, ap);
	va_end(ap);
}

static int64_t realtime_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void arm_settle(struct intake *in)
{
	int64_t at = spool_queue_oldest(&in->settling);
	double delay;

	if (!at) {
		timer_arm(in->loop, &in->settle_timer, -1);
		return;
	}
	delay = (double)(at - realtime_ns()) / 1e9 + 0.01;
	timer_arm(in->loop, &in->settle_timer, delay < 0.01 ? 0.01 : delay);
}

/* Look at @name: say why it is not ready, and when to look again if it is settling. */
static int inspect(struct intake *in, const char *name, struct spool_look *look)
{
	int dfd = workfiles_dir(in->wf), r;

	if (dfd < 0)
		return dfd;
	r = spool_inspect(dfd, name, in->watch ? watch_open_count(in->watch, name) : -1, in->settle_seconds, look);
	if (r < 0) {
		in_log(in, LOG_LVL_WARNING, "%s: cannot look at it: %s", name, strerror(-r));
		return r;
	}
	switch (look->verdict) {
	case SPOOL_WRITING:
		in_log(in, LOG_LVL_DEBUG, "%s: still open: waiting for it to be closed", name);
		break;
	case SPOOL_SETTLING:
		in_log(in, LOG_LVL_DEBUG, "%s: changed %.1f s ago: taken once still for %g s", name,
		       in->settle_seconds - look->settle_left, in->settle_seconds);
		if (spool_queue_add(&in->settling, name, realtime_ns() + (int64_t)(look->settle_left * 1e9)) == 0)
			arm_settle(in);
		break;
	case SPOOL_REFUSED:
		in->refused++;
		in_log(in, LOG_LVL_WARNING, "%s: refused: %s; left where it is", name, look->why);
		break;
	default:
		break;
	}
	return 0;
}

static void offer(struct intake *in, const char *name)
{
	struct spool_look look;

	switch (spool_name_kind(name)) {
	case SPOOL_NAME_DROP:
		break;
	case SPOOL_NAME_WRONG_CASE:
		in_log(in, LOG_LVL_WARNING, "%s: ignored: only names ending in .ndjson, .jsonl, .csv or .tsv (each maybe "
		       "followed by .gz or .zst; lower case) are taken; rename it", name);
		return;
	case SPOOL_NAME_OTHER:
		in_log(in, LOG_LVL_INFO, "%s: ignored: not a file dcsyncd takes (*.ndjson, *.jsonl, *.csv, *.tsv, maybe "
		       ".gz or .zst)", name);
		return;
	default:
		return;
	}
	if (inspect(in, name, &look) == 0 && look.verdict == SPOOL_READY &&
	    spool_queue_add(&in->queue, name, look.mtime_ns) < 0)
		in_log(in, LOG_LVL_ERROR, "%s: cannot queue it: out of memory", name);
}

static void scan_cb(void *userdata, const char *name)
{
	offer(userdata, name);
}

/* A name written or renamed into the directory: look at it; the owner starts work from the loop. */
static void event_cb(void *userdata, const char *name)
{
	struct intake *in = userdata;

	offer(in, name);
	if (spool_queue_len(&in->queue))
		in->ready(in->userdata);
}

static void settle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct intake *in = w->data;
	int64_t now = realtime_ns(), at;
	struct spool_entry e;

	(void)loop;
	(void)revents;
	while ((at = spool_queue_oldest(&in->settling)) && at <= now && spool_queue_pop(&in->settling, &e)) {
		offer(in, e.name);
		free(e.name);
	}
	arm_settle(in);
	if (spool_queue_len(&in->queue))
		in->ready(in->userdata);
}

int intake_scan(struct intake *in)
{
	int r = spool_scan(in->wf->dir, scan_cb, in);

	if (r < 0)
		in_log(in, LOG_LVL_ERROR, "cannot scan %s: %s", in->wf->dir, strerror(-r));
	return r;
}

static void rescan_cb(void *userdata)
{
	struct intake *in = userdata;

	intake_scan(in);
	in->ready(in->userdata);
}

/* The directory was removed or moved away: make it again, watch it, look in it. */
static void gone_cb(void *userdata)
{
	struct intake *in = userdata;
	int r;

	workfiles_forget(in->wf);
	if ((r = spool_mkdirs(in->wf->dir, 0770)) < 0 || (r = watch_rewatch(in->watch)) < 0) {
		if (!in->dir_error_logged)
			in_log(in, LOG_LVL_ERROR, "%s was removed and cannot be made again (%s): trying every %g s",
			       in->wf->dir, strerror(-r), DIR_RETRY_SECONDS);
		in->dir_error_logged = true;
		timer_arm(in->loop, &in->dir_timer, DIR_RETRY_SECONDS);
		return;
	}
	in_log(in, LOG_LVL_WARNING, "%s was removed or moved away: made again and watched", in->wf->dir);
	in->dir_error_logged = false;
	rescan_cb(in);
}

static void dir_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	gone_cb(w->data);
}

int intake_init(struct intake *in, struct ev_loop *loop, struct workfiles *wf, const char *name,
		double settle_seconds, void (*ready)(void *userdata), void *userdata)
{
	static const struct watch_ops ops = { event_cb, rescan_cb, gone_cb };

	memset(in, 0, sizeof(*in));
	if (!(in->name = strdup(name)))
		return -ENOMEM;
	in->loop = loop;
	in->wf = wf;
	in->settle_seconds = settle_seconds;
	in->queue.sorted = in->settling.sorted = true;
	in->ready = ready;
	in->userdata = userdata;
	ev_timer_init(&in->settle_timer, settle_cb, 0., 0.);
	in->settle_timer.data = in;
	ev_timer_init(&in->dir_timer, dir_timer_cb, 0., 0.);
	in->dir_timer.data = in;
	/* Watched before the first scan, so a file dropped in between is not missed (the queue dedupes). */
	return watch_new(&in->watch, loop, wf->dir, &ops, in);
}

void intake_release(struct intake *in)
{
	if (in->loop) {
		ev_timer_stop(in->loop, &in->settle_timer);
		ev_timer_stop(in->loop, &in->dir_timer);
	}
	watch_free(in->watch);
	in->watch = NULL;
	spool_queue_release(&in->queue);
	spool_queue_release(&in->settling);
	free(in->name);
	in->name = NULL;
}

size_t intake_pending(const struct intake *in)
{
	return spool_queue_len(&in->queue) + spool_queue_len(&in->settling);
}

int intake_take(struct intake *in, const char *name, const char *work_name, struct stat *st, bool *trusted)
{
	struct spool_look look;
	const char *why;
	bool fixed;
	int dfd, wfd, fd;

	if ((dfd = workfiles_dir(in->wf)) < 0 || (wfd = workfiles_work(in->wf, &fixed)) < 0) {
		fd = dfd < 0 ? dfd : wfd;
		in_log(in, LOG_LVL_ERROR, "cannot open %s/.work/: %s", in->wf->dir, strerror(-fd));
		return fd;
	}
	/* Ready when queued; a writer may have opened it since. */
	if ((fd = inspect(in, name, &look)) < 0)
		return fd;
	if (look.verdict != SPOOL_READY)
		return -EAGAIN;
	/* A new drop under the same name now waits its turn in the spool, it cannot change this batch. */
	fd = spool_take(dfd, name, wfd, work_name, st, &why);
	if (fd == -ENOENT && faccessat(dfd, ".work", F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		/* Someone removed .work/ while we ran: make it again. */
		in_log(in, LOG_LVL_WARNING, "%s/.work/ was removed: making it again", in->wf->dir);
		close(in->wf->workfd);
		in->wf->workfd = -1;
		if ((wfd = workfiles_work(in->wf, &fixed)) >= 0)
			fd = spool_take(dfd, name, wfd, work_name, st, &why);
	}
	if (fd == -EINVAL && why) {
		in->refused++;
		in_log(in, LOG_LVL_WARNING, "%s: refused: %s; left where it is", name, why);
	} else if (fd < 0 && fd != -ENOENT) {
		in_log(in, LOG_LVL_ERROR, "%s: cannot move into %s/.work/: %s", name, in->wf->dir, strerror(-fd));
	}
	if (fd >= 0)
		*trusted = look.trusted;
	return fd;
}
