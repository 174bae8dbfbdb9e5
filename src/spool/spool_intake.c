/* spool_intake: a connection's spool directory: what is ready to take, what waits, what is refused, taking a file into .work/. */
#include "spool/spool_intake.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/timer.h"

/* How often a spool directory that cannot be used (or made again) is tried. */
#define DIR_RETRY_SECONDS 5.0
/* A refused or unopened file is tried again after 1 s, doubling up to this. */
#define RETRY_FIRST_SECONDS 1.0
#define RETRY_MAX_SECONDS 300.0
/* The drop command's temporaries: removed when found this old (their writer was killed). */
#define DROP_TMP_PREFIX ".dcsyncd-drop-"
#define DROP_TMP_MAX_AGE_SECONDS 3600

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

/* The waiting queues' clock: our own, not the files' mtimes nor a wall clock that can jump. */
static int64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t after_ns(double seconds)
{
	return mono_ns() + (int64_t)(seconds * 1e9);
}

/*
 * A file counted open is looked at again after this long: the count may be stale (inotify
 * merged a close with another), and a file unchanged all that time is then taken as still.
 * By default 10 x settle_seconds, 1 s to 10 min; open_recheck_seconds sets it.
 */
static double open_recheck_seconds(const struct intake *in)
{
	double s = in->settle_seconds * 10;

	if (in->open_recheck_seconds > 0)
		return in->open_recheck_seconds;
	return s < 1 ? 1 : s > 600 ? 600 : s;
}

int spool_intake_hand_back(struct intake *in, const char *name, int64_t mtime_ns)
{
	return spool_queue_add(&in->queue, name, mtime_ns);
}

void spool_intake_set_open_recheck(struct intake *in, double seconds)
{
	in->open_recheck_seconds = seconds;
}

static double retry_delay(uint64_t tries)
{
	double d = RETRY_FIRST_SECONDS;

	for (uint64_t i = 0; i < tries && d < RETRY_MAX_SECONDS; i++)
		d *= 2;
	return d < RETRY_MAX_SECONDS ? d : RETRY_MAX_SECONDS;
}

static void arm_look(struct intake *in)
{
	struct spool_queue *qs[] = { &in->settling, &in->held, &in->retry, &in->refusals };
	int64_t at = 0;
	double delay;

	for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		int64_t t = spool_queue_oldest(qs[i]);

		if (t && (!at || t < at))
			at = t;
	}
	if (!at) {
		timer_arm(in->loop, &in->look_timer, -1);
		return;
	}
	delay = (double)(at - mono_ns()) / 1e9 + 0.01;
	timer_arm(in->loop, &in->look_timer, delay < 0.01 ? 0.01 : delay);
}

/* @name waits to be ready, last seen with @mtime_ns: newer ready files wait for it. */
static void hold_back(struct intake *in, const char *name, int64_t mtime_ns)
{
	if (spool_queue_add(&in->waiting, name, mtime_ns) < 0)
		in_log(in, LOG_LVL_ERROR, "%s: out of memory: newer files may go up before it", name);
}

/*
 * @name could not be looked at (@mtime_ns: as last seen, INT64_MIN if never), after @tries
 * before: tried again in retry_delay(@tries), newer files waiting for it.
 */
static void retry_later(struct intake *in, const char *name, uint64_t tries, int64_t mtime_ns)
{
	if (spool_queue_add_new(&in->retry, name, after_ns(retry_delay(tries)), tries + 1) == 0)
		arm_look(in);
	hold_back(in, name, mtime_ns);
}

/* @name was refused, after @tries before: looked at again in retry_delay(@tries) or on a chmod/chown. */
static void refused_later(struct intake *in, const char *name, uint64_t tries)
{
	if (spool_queue_add_new(&in->refusals, name, after_ns(retry_delay(tries)), tries + 1) == 0)
		arm_look(in);
}

/*
 * Look at @name: say why it is not ready, and make sure it is looked at again if it waits.
 * @still_state: what was seen of it settle_seconds ago (0: nothing); @tries: how often it was
 * refused or could not be looked at before. The first refusal is a warning, the tries after it
 * are quiet until they reach the slowest pace, which is said once more.
 */
static int inspect(struct intake *in, const char *name, uint64_t still_state, uint64_t tries, struct spool_look *look)
{
	int dfd = spool_work_dir(in->wf), r, opens;
	bool again = tries || spool_queue_has(&in->retry, name) || spool_queue_has(&in->refusals, name);
	enum log_level lvl = !again || retry_delay(tries) == RETRY_MAX_SECONDS ? LOG_LVL_WARNING : LOG_LVL_DEBUG;

	if (dfd < 0) {
		in_log(in, lvl, "%s: cannot open %s: %s; trying again in %g s", name, in->wf->dir, strerror(-dfd),
		       retry_delay(tries));
		retry_later(in, name, tries, INT64_MIN);
		return dfd;
	}
	/* Seen still once already: inotify's count has had its say (it may be stale), stillness decides. */
	opens = still_state || !in->watch ? -1 : spool_watch_open_count(in->watch, name);
	r = spool_inspect(dfd, name, opens, still_state, look);
	if (r < 0) {
		in_log(in, lvl, "%s: cannot look at it: %s; trying again in %g s", name, strerror(-r), retry_delay(tries));
		retry_later(in, name, tries, INT64_MIN);
		return r;
	}
	switch (look->verdict) {
	case SPOOL_WRITING:
		in_log(in, LOG_LVL_DEBUG, "%s: still open: waiting for it to be closed", name);
		if (spool_queue_add_new(&in->held, name, after_ns(open_recheck_seconds(in)), look->state) == 0)
			arm_look(in);
		break;
	case SPOOL_SETTLING:
		in_log(in, LOG_LVL_DEBUG, "%s: nobody can say it is closed: taken once seen unchanged for %g s", name,
		       in->settle_seconds);
		if (spool_queue_add_new(&in->settling, name, after_ns(in->settle_seconds), look->state) == 0)
			arm_look(in);
		hold_back(in, name, look->mtime_ns);
		break;
	case SPOOL_REFUSED:
		if (!again)
			in->refused++;
		in_log(in, lvl, "%s: refused: %s; left where it is, looked at again in %g s", name, look->why,
		       retry_delay(tries));
		refused_later(in, name, tries);
		break;
	case SPOOL_READY:
		if (again)
			in_log(in, LOG_LVL_INFO, "%s: can be taken now (refused or not opened before)", name);
		break;
	default:
		break;
	}
	return 0;
}

static void queue_ready(struct intake *in, const char *name, const struct spool_look *look)
{
	/* Ready by stillness: the take checks it is still what was seen (trusted: the kernel or inotify answers again). */
	int r = spool_queue_add_new(&in->queue, name, look->mtime_ns, look->trusted ? 0 : look->state);

	if (r < 0)
		in_log(in, LOG_LVL_ERROR, "%s: cannot queue it: out of memory", name);
}

/* A temporary of `dcsyncd drop` whose writer is long gone (killed): ours to remove. */
static void remove_stale_temporary(struct intake *in, const char *name)
{
	size_t n = strlen(name), p = strlen(DROP_TMP_PREFIX);
	int dfd = spool_work_dir(in->wf);
	struct stat st;

	if (n <= p + 4 || strncmp(name, DROP_TMP_PREFIX, p) || strcmp(name + n - 4, ".tmp") || dfd < 0 ||
	    fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    time(NULL) - st.st_mtim.tv_sec < DROP_TMP_MAX_AGE_SECONDS)
		return;
	if (unlinkat(dfd, name, 0) == 0)
		in_log(in, LOG_LVL_INFO, "%s: removed: a temporary of dcsyncd drop unchanged for over %d s (its drop was "
		       "killed)", name, DROP_TMP_MAX_AGE_SECONDS);
	else
		in_log(in, LOG_LVL_WARNING, "%s: a stale temporary of dcsyncd drop, cannot remove it: %s", name,
		       strerror(errno));
}

static void offer_again(struct intake *in, const char *name, uint64_t still_state, uint64_t tries)
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
	if (inspect(in, name, still_state, tries, &look) == 0 && look.verdict == SPOOL_READY)
		queue_ready(in, name, &look);
}

static void offer(struct intake *in, const char *name)
{
	offer_again(in, name, 0, 0);
}

static void scan_cb(void *userdata, const char *name)
{
	if (spool_name_kind(name) == SPOOL_NAME_TEMPORARY)
		remove_stale_temporary(userdata, name);
	else
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

/* A refused file's mode or owner changed (chmod g+r): look at it now, not at its next try. */
static void attrib_cb(void *userdata, const char *name)
{
	struct intake *in = userdata;

	struct spool_queue *q = spool_queue_has(&in->refusals, name) ? &in->refusals :
				spool_queue_has(&in->retry, name) ? &in->retry : NULL;

	if (!q)
		return;
	/* Its key moves to now: the timer takes it, with its tries. */
	(void)spool_queue_add(q, name, mono_ns());
	arm_look(in);
}

/* A file counted open for open_recheck_seconds: still open, or a stale count? */
static void recheck_held(struct intake *in, const struct spool_entry *e)
{
	int dfd = spool_work_dir(in->wf);
	struct spool_look look;

	/* The count is not asked: a lease answers where the kernel gives one, else stillness. */
	if (dfd < 0 || spool_inspect(dfd, e->name, -1, e->tag, &look) < 0) {
		offer(in, e->name);
		return;
	}
	switch (look.verdict) {
	case SPOOL_READY:
		in_log(in, LOG_LVL_INFO, "%s: counted open for %g s but unchanged all that time and nobody says it is open: "
		       "taken (the count was stale)", e->name, open_recheck_seconds(in));
		queue_ready(in, e->name, &look);
		break;
	case SPOOL_WRITING:
	case SPOOL_SETTLING:
		/* Open by the kernel's word, or changed since: someone writes it. Looked at again later. */
		if (spool_queue_add_new(&in->held, e->name, after_ns(open_recheck_seconds(in)), look.state) == 0)
			in_log(in, LOG_LVL_DEBUG, "%s: still open and %s: looked at again in %g s", e->name,
			       look.verdict == SPOOL_WRITING ? "written" : "changing", open_recheck_seconds(in));
		break;
	default:
		offer(in, e->name);
		break;
	}
}

static void look_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct intake *in = w->data;
	int64_t now = mono_ns(), at;
	struct spool_entry e;

	(void)loop;
	(void)revents;
	/* Each queue holds a name once: one popped is added again (by the look) only if it still waits. */
	while ((at = spool_queue_oldest(&in->settling)) && at <= now && spool_queue_pop(&in->settling, &e)) {
		offer_again(in, e.name, e.tag, 0);
		free(e.name);
	}
	while ((at = spool_queue_oldest(&in->held)) && at <= now && spool_queue_pop(&in->held, &e)) {
		recheck_held(in, &e);
		free(e.name);
	}
	while ((at = spool_queue_oldest(&in->retry)) && at <= now && spool_queue_pop(&in->retry, &e)) {
		offer_again(in, e.name, 0, e.tag);
		free(e.name);
	}
	while ((at = spool_queue_oldest(&in->refusals)) && at <= now && spool_queue_pop(&in->refusals, &e)) {
		offer_again(in, e.name, 0, e.tag);
		free(e.name);
	}
	arm_look(in);
	if (spool_queue_len(&in->queue))
		in->ready(in->userdata);
}

int spool_intake_scan(struct intake *in)
{
	int r;

	if (!in->watch)
		return 0;       /* the directory cannot be used yet: dir_timer scans it once it can */
	if ((r = spool_scan(in->wf->dir, scan_cb, in)) < 0)
		in_log(in, LOG_LVL_ERROR, "cannot scan %s: %s", in->wf->dir, strerror(-r));
	return r;
}

static void rescan_cb(void *userdata)
{
	struct intake *in = userdata;

	spool_intake_scan(in);
	in->ready(in->userdata);
}

static void gone_cb(void *userdata);
static const struct watch_ops watch_ops = { event_cb, rescan_cb, gone_cb, attrib_cb };

/*
 * Make the directory and watch it. At start-up, and after it was removed: a directory that
 * cannot be used (its permissions, a full or read-only filesystem) waits and is tried again,
 * alone; the other connections go on.
 */
static int set_up_dir(struct intake *in, long *owner)
{
	int r;

	if ((r = spool_conn_dir(in->wf->dir, owner)) < 0)
		return r;
	if (in->watch)
		return spool_watch_rewatch(in->watch);
	return spool_watch_new(&in->watch, in->loop, in->wf->dir, &watch_ops, in);
}

/* Make and watch the directory; one that cannot be used is said once and tried again on a timer. */
static int try_dir(struct intake *in)
{
	bool started = in->watch != NULL;
	long owner = -1;
	int r;

	if ((r = set_up_dir(in, &owner)) >= 0 || r == -ENOMEM)
		return r;
	if (!in->dir_error_logged && owner >= 0)
		in_log(in, LOG_LVL_ERROR, "%s is owned by uid %ld, not by dcsyncd's user: not used (files in it "
		       "could be renamed or replaced under the daemon); give it to the daemon's user or remove it; "
		       "trying every %g s; the other connections go on", in->wf->dir, owner, DIR_RETRY_SECONDS);
	else if (!in->dir_error_logged)
		in_log(in, LOG_LVL_ERROR, "%s %s (%s): trying every %g s; the other connections go on", in->wf->dir,
		       started ? "was removed and cannot be made again" : "cannot be used", strerror(-r),
		       DIR_RETRY_SECONDS);
	in->dir_error_logged = true;
	timer_arm(in->loop, &in->dir_timer, DIR_RETRY_SECONDS);
	return r;
}

/* The directory was removed or moved away, or could not be used yet: make it, watch it, look in it. */
static void gone_cb(void *userdata)
{
	struct intake *in = userdata;
	bool started = in->watch != NULL;

	spool_work_forget(in->wf);
	if (try_dir(in) < 0)
		return;
	if (started)
		in_log(in, LOG_LVL_WARNING, "%s was removed or moved away: made again and watched", in->wf->dir);
	else if (in->dir_error_logged)
		in_log(in, LOG_LVL_INFO, "%s can be used now: watching it", in->wf->dir);
	in->dir_error_logged = false;
	rescan_cb(in);
}

static void dir_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	gone_cb(w->data);
}

int spool_intake_init(struct intake *in, struct ev_loop *loop, struct workfiles *wf, const char *name,
		double settle_seconds, void (*ready)(void *userdata), void *userdata)
{
	int r;

	memset(in, 0, sizeof(*in));
	if (!(in->name = strdup(name)))
		return -ENOMEM;
	in->loop = loop;
	in->wf = wf;
	in->settle_seconds = settle_seconds;
	in->queue.sorted = in->settling.sorted = in->held.sorted = in->retry.sorted = true;
	in->refusals.sorted = in->waiting.sorted = true;
	in->ready = ready;
	in->userdata = userdata;
	ev_timer_init(&in->look_timer, look_cb, 0., 0.);
	in->look_timer.data = in;
	ev_timer_init(&in->dir_timer, dir_timer_cb, 0., 0.);
	in->dir_timer.data = in;
	/* Watched before the first scan, so a file dropped in between is not missed (the queue dedupes). */
	if ((r = try_dir(in)) == -ENOMEM)
		return r;
	return 0;
}

void spool_intake_release(struct intake *in)
{
	if (in->loop) {
		ev_timer_stop(in->loop, &in->look_timer);
		ev_timer_stop(in->loop, &in->dir_timer);
	}
	spool_watch_free(in->watch);
	in->watch = NULL;
	spool_queue_release(&in->queue);
	spool_queue_release(&in->settling);
	spool_queue_release(&in->held);
	spool_queue_release(&in->retry);
	spool_queue_release(&in->refusals);
	spool_queue_release(&in->waiting);
	free(in->name);
	in->name = NULL;
}

/* The oldest file still waiting to be ready; entries of files that stopped waiting are dropped here. */
static const struct spool_entry *oldest_waiting(struct intake *in)
{
	const struct spool_entry *w;
	struct spool_entry gone;

	while ((w = spool_queue_peek(&in->waiting))) {
		/* Ready meanwhile (inotify saw it closed): queued by its mtime now, it holds nothing back. */
		if (!spool_queue_has(&in->queue, w->name) &&
		    (spool_queue_has(&in->settling, w->name) || spool_queue_has(&in->retry, w->name)))
			return w;
		(void)spool_queue_pop(&in->waiting, &gone);
		free(gone.name);
	}
	return NULL;
}

bool spool_intake_has_next(struct intake *in)
{
	const struct spool_entry *h = spool_queue_peek(&in->queue), *w;

	if (!h)
		return false;
	if (!(w = oldest_waiting(in)) || spool_queue_entry_before(h, w))
		return true;
	in_log(in, LOG_LVL_DEBUG, "%s waits for %s, older and not ready yet: it goes up first", h->name, w->name);
	return false;
}

int spool_intake_next(struct intake *in, struct spool_entry *e)
{
	return spool_intake_has_next(in) ? spool_queue_pop(&in->queue, e) : 0;
}

size_t spool_intake_pending(const struct intake *in)
{
	return spool_queue_len(&in->queue) + spool_queue_len(&in->settling);
}

bool spool_intake_usable(const struct intake *in)
{
	return in->watch != NULL;
}

int spool_intake_take(struct intake *in, const struct spool_entry *e, const char *work_name, struct stat *st, bool *trusted)
{
	const char *name = e->name, *why;
	struct spool_look look;
	bool fixed;
	int dfd, wfd, fd;

	if ((dfd = spool_work_dir(in->wf)) < 0 || (wfd = spool_work_work(in->wf, &fixed)) < 0) {
		fd = dfd < 0 ? dfd : wfd;
		in_log(in, LOG_LVL_ERROR, "cannot open %s/.work/: %s", in->wf->dir, strerror(-fd));
		retry_later(in, name, 0, e->mtime_ns);
		return fd;
	}
	/* Ready when queued; a writer may have opened it since (one seen still must be as it was seen). */
	if ((fd = inspect(in, name, e->tag, 0, &look)) < 0)
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
		if ((wfd = spool_work_work(in->wf, &fixed)) >= 0)
			fd = spool_take(dfd, name, wfd, work_name, st, &why);
	}
	if (fd == -EINVAL && why) {
		in->refused++;
		in_log(in, LOG_LVL_WARNING, "%s: refused: %s; left where it is, looked at again in %g s", name, why,
		       retry_delay(0));
		refused_later(in, name, 0);
	} else if (fd < 0 && fd != -ENOENT) {
		in_log(in, LOG_LVL_ERROR, "%s: cannot move into %s/.work/: %s; trying again in %g s", name, in->wf->dir,
		       strerror(-fd), retry_delay(0));
	}
	/* Not a name that went away: it stays in the spool and is tried again, never forgotten. */
	if (fd < 0 && fd != -ENOENT && !(fd == -EINVAL && why))
		retry_later(in, name, 0, e->mtime_ns);
	if (fd >= 0)
		*trusted = look.trusted;
	return fd;
}
