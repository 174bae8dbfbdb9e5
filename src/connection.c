/* connection: one Data Connection's pipeline: spool queue → batch → requests → journal → archive. */
#include "connection.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-id128.h>

#include "batch.h"
#include "catalog.h"
#include "crashpoint.h"
#include "intake.h"
#include "fileio.h"
#include "jsonstr.h"
#include "layout.h"
#include "log.h"
#include "ndjson.h"
#include "retry.h"
#include "source.h"
#include "spool.h"
#include "worker.h"
#include "workfiles.h"

/* Rejected lines a request's range may hold in memory before the range is ended early. */
#define REJECT_BUFFER_MAX (256 * 1024)

enum conn_state {
	CS_IDLE,
	CS_SENDING,             /* a request is in flight */
	CS_RETRY_WAIT,          /* a transient failure; the timer re-sends */
	CS_SYNC_WAIT,           /* the journal could not be made durable; the timer retries */
	CS_AUTH_PAUSED,         /* 401/403: waiting for a reload or the slow timer */
	CS_RATE_WAIT,           /* the API key's request budget is spent: the timer sends */
	CS_SETTLE_WAIT,         /* the file is still being written: the timer looks again */
	CS_RESUME_WAIT,         /* a journaled batch could not be opened for now (EMFILE, EIO...): the timer retries */
};

struct rejbuf {
	char *buf;
	size_t len, cap;
	uint64_t first_line, last_line;  /* of the lines held, for the log */
};

/* Bytes kept of a rejected line that is not text (not valid UTF-8): enough to recognise it. */
#define REJECT_BINARY_KEEP 256

/* Field names kept per connection: a connection with a key per customer must not grow without bound. */
#define CATALOG_FIELDS_MAX 1000
/*
 * Requests held per connection: the one in flight and two cut ahead. Two, not one, so that the
 * worker keeps parsing while an acknowledgement is on its way: with several connections on few
 * cores, each one's parse then fills the time the others wait for the network.
 */
#define PIPELINE 3

/* The catalog is saved at most this often (seconds), and at exit. */
#define CATALOG_SAVE_INTERVAL 5.0

/* Files a multi-file batch may hold: bounds the journal and memory of one batch. */
#define GROUP_FILES_MAX 1000

/* A file of the batch in flight. */
struct member {
	uint64_t fid;                   /* names it in .work/ */
	char name[256];
	struct file_identity ident;
	uint64_t rejected_size;         /* its rejected file's size when the batch opened */
	uint64_t rejected;              /* lines rejected locally */
	struct rejbuf rej;              /* those lines, written once the batch is durable (last member) */
	bool trusted;                   /* nobody had it open when taken (a lease or inotify said so) */
};

struct connection {
	struct conn_env env;
	/*
	 * Owned copies. cfg is what the open batch runs on (destination, cut, validator); a reload
	 * that arrives during a batch waits in next_cfg, with its validator ready, for the batch's end.
	 */
	struct conn_config *cfg;
	struct conn_config *next_cfg;
	struct record_validator *next_validator;
	char *state_dir;
	struct workfiles wf;            /* the files in its custody: .work/, rejected/, failed/, done/ */
	struct intake in;               /* its spool directory: the queue of ready files, the watch */
	struct upload_client *client;
	struct upload_limiter *limiter;
	struct record_validator *validator;
	struct catalog *catalog;        /* top-level field names uploaded, for `dcsyncd formula` */
	/*
	 * Names are noted where records are parsed, in the catalog of the request they go into, and
	 * counted into the connection's when that request is acknowledged: a request cut again after
	 * a restart, or parsed ahead and never sent, counts once or not at all.
	 */
	struct catalog *chunk_fields[PIPELINE];
	struct catalog *member_fields;  /* a small file's, until it is sure to fit the request */
	char *catalog_path;
	double catalog_saved;
	bool catalog_dirty;
	bool catalog_warned;
	enum conn_state state;
	bool draining;
	bool stop_after_ack;            /* SIGTERM: leave the batch after the request in flight */
	unsigned left_open;             /* batches a stop left to the journal, for the next start */
	struct journal_batch *adopted;  /* live batches from the journal, resumed first */
	size_t n_adopted;

	/* the batch in flight */
	bool active;
	struct journal_batch jb;
	struct member *members;         /* one file, or several small ones filling one request */
	size_t n_members, cap_members;
	struct member carry;            /* taken for a batch it did not fit: starts the next one */
	bool have_carry;
	int fd;                         /* the single file a multi-request batch reads on from */
	struct source *reader;          /* the batch's file, read as its name says */
	struct batch_params bp;
	struct chunk chunk[PIPELINE];   /* a ring: the current request, then those cut ahead */
	struct rejbuf rej[PIPELINE];
	int cur;
	unsigned n_ahead;               /* chunks cut ahead of cur: cur+1, cur+2 (mod PIPELINE) */
	/*
	 * Parse-ahead: while request N is on the wire, the worker cuts N+1 and N+2 into the next
	 * chunks. Until its done callback the worker owns the chunk it fills, its rejbuf and field
	 * catalog, the reader and the validator; the loop thread leaves them alone (worker_cancel
	 * to take them back).
	 */
	struct worker *worker;
	int ahead_idx;
	int ahead_error;                /* the parse-ahead failed (negative errno): the file fails there */
	bool worker_warned;
	bool want_next;                 /* step_next_chunk waits for the parse-ahead to finish */
	struct chunk slice;
	uint32_t lo, hi;                /* records [lo, hi) of the current chunk are in the request */
	bool sent_completed;            /* a request with batch_completed:true was acknowledged */
	bool resend_last;               /* completing by sending the last acknowledged record again */
	struct rejbuf last_record;      /* the last acknowledged record's bytes (buf, len only) */
	bool settle_logged;
	bool sending_completed;
	bool batch_answered;            /* some request of this batch got a 2xx (this run) */
	uint32_t split_end[32];         /* ends of the right halves still to send after a split */
	unsigned split_depth;
	uint32_t server_rejected;       /* records of the current chunk refused by the server */
	ev_timer timer;
	ev_timer kick;          /* starts the next file from the loop, not from deep in a callback */
	void (*after_sync)(struct connection *c);
	void (*after_settle)(struct connection *c);  /* looks at the file again (CS_SETTLE_WAIT) */
	unsigned attempt;
	double first_failure;
	bool journal_error_logged;
	uint64_t rng;
	double file_started;
	uint64_t file_requests;
	uint64_t file_rejected_before;
	struct conn_stats stats;
	struct conn_totals persist;  /* totals across restarts, for `dcsyncd status` */
};

static void begin_next(struct connection *c);
static int grow_members(struct connection *c);
static void apply_pending(struct connection *c);
static void release_files(struct connection *c);
static void persist_error(struct connection *c, long status, const char *what);
static void persist_rate(struct connection *c, bool waiting);
static void process_current(struct connection *c);
static void send_range(struct connection *c);
static void durable(struct connection *c, void (*step)(struct connection *c));
static int reader_at(struct connection *c, int fd, const char *name, uint64_t offset, uint64_t lineno);
static const char *read_error(struct connection *c, const char *fallback);

static double rand01(struct connection *c)
{
	/* xorshift64*: jitter needs spread, not secrecy. */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return (double)((c->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static struct log_ctx ctx_of(const struct connection *c, long status)
{
	return (struct log_ctx){
		.connection = c->cfg->name,
		.file = c->active ? c->jb.name : NULL,
		.batch_uuid = c->active ? c->jb.uuid : NULL,
		.http_status = status,
		.records = -1,
	};
}

static void conn_log(const struct connection *c, enum log_level lvl, long status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Every message names the connection first and carries the structured fields for journald. */
static void conn_log(const struct connection *c, enum log_level lvl, long status, const char *fmt, ...)
{
	struct log_ctx ctx = ctx_of(c, status);
	va_list ap;

	va_start(ap, fmt);
	log_vconn(lvl, &ctx, fmt, ap);
	va_end(ap);
}

const char *connection_name(const struct connection *c) { return c->cfg->name; }
const struct conn_stats *connection_stats(const struct connection *c)
{
	struct connection *mc = (struct connection *)c;

	mc->stats.oldest_queued_ns = spool_queue_oldest(&mc->in.queue);
	mc->stats.files_refused = c->in.refused;
	return &c->stats;
}
size_t connection_queued(const struct connection *c)
{
	return intake_pending(&c->in) + c->n_adopted + c->have_carry;
}
bool connection_blocked(const struct connection *c) { return c->state == CS_AUTH_PAUSED; }
bool connection_busy(const struct connection *c) { return c->active || c->state != CS_IDLE || c->left_open; }
bool connection_rate_waiting(const struct connection *c) { return c->state == CS_RATE_WAIT; }

unsigned connection_rate_budget(const struct connection *c, unsigned *used)
{
	*used = upload_limiter_used(c->limiter, ev_now(c->env.loop));
	return upload_limiter_budget(c->limiter);
}

bool connection_idle(const struct connection *c)
{
	if (c->active || c->state != CS_IDLE)
		return false;
	return c->draining || connection_queued(c) == 0;
}

/*
 * The one place the connection starts to wait: the state says for what, the one timer brings
 * it back to timer_cb (a negative @delay: only a reload or a stop does).
 */
static void wait_in(struct connection *c, enum conn_state state, double delay)
{
	static const char *const names[] = { "idle", "sending", "retry wait", "journal wait", "paused",
					     "rate wait", "settle wait", "resume wait" };

	if (c->state != state)
		conn_log(c, LOG_LVL_DEBUG, -1, "%s -> %s%s", names[c->state], names[state], delay < 0 ? "" : " (timer)");
	c->state = state;
	ev_timer_stop(c->env.loop, &c->timer);
	if (delay < 0)
		return;
	ev_timer_set(&c->timer, delay, 0.);
	ev_timer_start(c->env.loop, &c->timer);
}

static void notify_changed(struct connection *c)
{
	if (c->env.changed)
		c->env.changed(c->env.userdata);
}

/* ---- rejected records ---- */

static int rej_format(struct rejbuf *rb, uint64_t lineno, const char *reason, const char *data, size_t len)
{
	char head[64];
	size_t keep = len;
	int r;

	/* A binary line would grow sixfold escaped: keep its start, and say how long it was. */
	if (data && len > REJECT_BINARY_KEEP && !jsonstr_is_text(data, len))
		keep = REJECT_BINARY_KEEP;
	snprintf(head, sizeof(head), "{\"line\":%" PRIu64 ",\"error\":", lineno);
	if ((r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, head, strlen(head))) < 0 ||
	    (r = jsonstr_append(&rb->buf, &rb->len, &rb->cap, reason, strlen(reason))) < 0 ||
	    (r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, ",\"record\":", 10)) < 0)
		return r;
	if (data)
		r = jsonstr_append(&rb->buf, &rb->len, &rb->cap, data, keep);
	else
		r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, "null", 4);
	if (r == 0 && keep < len) {
		snprintf(head, sizeof(head), ",\"truncated\":true,\"bytes\":%zu", len);
		r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, head, strlen(head));
	}
	if (r < 0)
		return r;
	if (!rb->first_line || lineno < rb->first_line)
		rb->first_line = lineno;
	if (lineno > rb->last_line)
		rb->last_line = lineno;
	return jsonstr_raw(&rb->buf, &rb->len, &rb->cap, "}\n", 2);
}

static int on_reject(void *userdata, uint64_t lineno, const char *reason, const char *data, size_t len)
{
	struct rejbuf *rb = userdata;
	int r = rej_format(rb, lineno, reason, data, len);

	if (r < 0)
		return r;
	return rb->len >= REJECT_BUFFER_MAX ? 1 : 0;
}

/* The workfiles put a directory right (a link, or writable by exporters): say so. */
static int said_fixed(struct connection *c, int fd, bool fixed, const char *what)
{
	if (fixed)
		conn_log(c, LOG_LVL_WARNING, -1, "%s was not as dcsyncd makes it (a link, or writable by others): made a "
			 "private directory again (mode 0750)", what);
	return fd;
}

static int conn_subdir(struct connection *c, const char *sub, bool create)
{
	char what[PATH_MAX];
	bool fixed;
	int fd = workfiles_subdir(&c->wf, sub, create, &fixed);

	snprintf(what, sizeof(what), "%s/%s", c->wf.dir, sub);
	return said_fixed(c, fd, fixed, what);
}

static int conn_workfd(struct connection *c)
{
	char what[PATH_MAX];
	bool fixed;
	int fd = workfiles_work(&c->wf, &fixed);

	snprintf(what, sizeof(what), "%s/.work", c->wf.dir);
	return said_fixed(c, fd, fixed, what);
}

static int open_done_dir(struct connection *c)
{
	bool fixed;
	int fd = workfiles_done(&c->wf, &fixed);

	return said_fixed(c, fd, fixed, c->wf.done_dir);
}

/* Append a buffer of rejected lines to <name>.rejected.ndjson, once the batch holding them is durable. */
static int rej_flush(struct connection *c, const char *name, struct rejbuf *rb)
{
	char rn[LAYOUT_NAME_MAX + 1], what[PATH_MAX];
	bool fixed, replaced;
	int r;

	if (!rb->len)
		return 0;
	r = workfiles_rejected_append(&c->wf, name, rb->buf, rb->len, &fixed, &replaced);
	snprintf(what, sizeof(what), "%s/rejected", c->wf.dir);
	(void)said_fixed(c, 0, fixed, what);
	workfiles_rejected_name(name, rn);
	if (replaced)
		conn_log(c, LOG_LVL_WARNING, -1, "%s/rejected/%s was not a file dcsyncd made (a link or another user's "
			 "file): removed, never written through", c->wf.dir, rn);
	if (r < 0)
		conn_log(c, LOG_LVL_ERROR, -1, "%s: cannot write rejected records to %s/rejected/: %s", name, c->wf.dir,
			 strerror(-r));
	rb->len = 0;
	rb->first_line = rb->last_line = 0;
	return r;
}

static void log_rejects(struct connection *c, const char *name, uint64_t n, const struct rejbuf *rb)
{
	char rn[LAYOUT_NAME_MAX + 1];

	/* One line per rejected record at warning level would drown a log on a bad export. */
	if (!n)
		return;
	workfiles_rejected_name(name, rn);
	if (rb->first_line)
		conn_log(c, LOG_LVL_WARNING, -1, "%s: %" PRIu64 " line(s) rejected between lines %" PRIu64 " and %" PRIu64
			 ", see %s/rejected/%s", name, n, rb->first_line, rb->last_line, c->wf.dir, rn);
	else
		conn_log(c, LOG_LVL_WARNING, -1, "%s: %" PRIu64 " line(s) rejected, see %s/rejected/%s", name, n, c->wf.dir, rn);
}

/* ---- batch lifecycle ---- */

static bool same_destination(const struct conn_config *a, const struct conn_config *b)
{
	return !strcmp(a->base_url, b->base_url) && !strcmp(a->uuid, b->uuid);
}

/* What a batch keeps in the journal of where it was opened: FNV-1a of base_url and uuid, never 0. */
static uint64_t destination_of(const struct conn_config *cfg)
{
	uint64_t h = 1469598103934665603ull;

	for (const char *s = cfg->base_url; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (const char *s = cfg->uuid; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h | 1;
}

static void format_uuid(char out[37])
{
	sd_id128_t id;

	if (sd_id128_randomize(&id) < 0)
		memset(&id, 0, sizeof(id));
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 id.bytes[0], id.bytes[1], id.bytes[2], id.bytes[3], id.bytes[4], id.bytes[5],
		 id.bytes[6], id.bytes[7], id.bytes[8], id.bytes[9], id.bytes[10], id.bytes[11],
		 id.bytes[12], id.bytes[13], id.bytes[14], id.bytes[15]);
}

static void rej_reset(struct rejbuf *rb)
{
	rb->len = 0;
	rb->first_line = rb->last_line = 0;
}

static void end_batch(struct connection *c)
{
	/* A parse-ahead of this batch is of no use any more, and it reads the fd closed below. */
	worker_cancel(c->worker);
	c->want_next = false;
	c->ahead_error = 0;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	for (int i = 0; i < PIPELINE; i++)
		rej_reset(&c->rej[i]);
	for (size_t i = 0; i < c->n_members; i++)
		rej_reset(&c->members[i].rej);
	c->n_members = 0;
	c->batch_answered = false;
	c->resend_last = false;
	c->last_record.len = 0;
	c->settle_logged = false;
	c->n_ahead = 0;
	c->active = false;
	c->state = CS_IDLE;
	c->attempt = 0;
	c->stats.file[0] = '\0';
	apply_pending(c);
}

/* failed/<name>.error.json beside the failed file: written atomically, never through a link. */
static int write_error_json(struct connection *c, int failedfd, const char *name, const char *failed_name,
			    long status, const char *why, const char *response)
{
	char *buf = NULL, head[1024], when[32];
	size_t len = 0, cap = 0;
	time_t now = time(NULL);
	struct tm tm;
	int r;

	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(head, sizeof(head), "{\"connection\":\"%s\",\"batch_uuid\":\"%s\",\"status\":%ld,"
		 "\"request\":%" PRIu32 ",\"records_sent\":%" PRIu64 ",\"time\":\"%s\",\"file\":",
		 c->cfg->name, c->jb.uuid, status, c->jb.acks + 1, c->jb.records, when);
	if ((r = jsonstr_raw(&buf, &len, &cap, head, strlen(head))) < 0 ||
	    (r = jsonstr_append(&buf, &len, &cap, name, strlen(name))) < 0 ||
	    (r = jsonstr_raw(&buf, &len, &cap, ",\"error\":", 9)) < 0 ||
	    (r = jsonstr_append(&buf, &len, &cap, why, strlen(why))) < 0 ||
	    (r = jsonstr_raw(&buf, &len, &cap, ",\"response\":", 12)) < 0 ||
	    (r = jsonstr_append(&buf, &len, &cap, response ? response : "", response ? strlen(response) : 0)) < 0 ||
	    (r = jsonstr_raw(&buf, &len, &cap, "}\n", 2)) < 0)
		goto out;
	r = workfiles_error_json(failedfd, failed_name, buf, len);
out:
	if (r < 0)
		conn_log(c, LOG_LVL_ERROR, status, "%s: cannot write %s/failed/%s.error.json: %s", name, c->wf.dir,
			 failed_name, strerror(-r));
	free(buf);
	return r;
}

static void next_soon(struct connection *c)
{
	ev_timer_stop(c->env.loop, &c->kick);
	ev_timer_set(&c->kick, 0., 0.);
	ev_timer_start(c->env.loop, &c->kick);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	begin_next(w->data);
}

static void save_catalog(struct connection *c, bool force)
{
	char dir[PATH_MAX];
	int r;

	if (!c->catalog_dirty || (!force && ev_now(c->env.loop) - c->catalog_saved < CATALOG_SAVE_INTERVAL))
		return;
	snprintf(dir, sizeof(dir), "%s/fields", c->state_dir);
	if ((r = spool_mkdirs(dir, 0750)) < 0 || (r = catalog_save(c->catalog, c->catalog_path)) < 0)
		conn_log(c, LOG_LVL_WARNING, -1, "cannot save the field catalog %s: %s", c->catalog_path, strerror(-r));
	c->catalog_saved = ev_now(c->env.loop);
	c->catalog_dirty = false;
	if (catalog_truncated(c->catalog) && !c->catalog_warned) {
		conn_log(c, LOG_LVL_WARNING, -1, "the field catalog holds its maximum of %d names; %" PRIu64
			 " occurrences of further names are only counted", CATALOG_FIELDS_MAX, catalog_overflow(c->catalog));
		c->catalog_warned = true;
	}
}

static void step_batch_ended(struct connection *c)
{
	int r;

	end_batch(c);
	/* Between batches is a quiet moment to keep the journal small over months of running. */
	if ((r = journal_compact(c->env.journal, false)) < 0)
		conn_log(c, LOG_LVL_WARNING, -1, "journal compaction failed: %s (retried after the next batch)", strerror(-r));
	notify_changed(c);
	next_soon(c);
}

/* The batch's files fail for good: failed/<name> beside <name>.error.json; the batch stays open at the server. */
static void fail_file(struct connection *c, long status, const char *why, const char *response)
{
	char dst[LAYOUT_NAME_MAX + 1];
	size_t moved = 0;
	int ffd, r;

	/* No more parsing for this batch, even while the journal holds up its end. */
	worker_cancel(c->worker);
	c->want_next = false;
	ffd = conn_subdir(c, "failed", true);
	for (size_t i = 0; i < c->n_members; i++) {
		r = ffd < 0 ? ffd : workfiles_move(&c->wf, c->members[i].fid, c->members[i].name, ffd, dst);
		if (r < 0 && r != -ENOENT)
			conn_log(c, LOG_LVL_ERROR, status, "%s: cannot move it to %s/failed/: %s", c->members[i].name,
				 c->wf.dir, strerror(-r));
		moved += r == 0;
		/* The error is written even for a file gone from .work/: the reason must be somewhere. */
		if (ffd >= 0)
			(void)write_error_json(c, ffd, c->members[i].name, r == 0 ? dst : c->members[i].name, status,
					       why, response);
	}
	workfiles_sync(&c->wf, ffd);
	if (ffd >= 0)
		close(ffd);
	/* Never claim a move that did not happen: a file already gone from .work/ is not in failed/. */
	if (moved)
		conn_log(c, LOG_LVL_ERROR, status, "%s: failed for good: %s; moved to %s/failed/", c->jb.name, why, c->wf.dir);
	else
		conn_log(c, LOG_LVL_ERROR, status, "%s: failed for good: %s; nothing was moved to %s/failed/ (no file of "
			 "it is left in .work/)", c->jb.name, why, c->wf.dir);
	c->stats.files_failed += c->n_members;
	c->stats.last_error_time = ev_now(c->env.loop);
	c->stats.last_error_status = status;
	c->persist.files_failed += c->n_members;
	c->persist.requests += c->file_requests;
	c->persist.records_sent += c->jb.records;
	c->persist.records_rejected += c->jb.rejected;
	persist_error(c, status, why);
	c->jb.state = BATCH_FAILED;
	if (journal_put(c->env.journal, &c->jb) < 0) {
		step_batch_ended(c);
		return;
	}
	durable(c, step_batch_ended);
}

/* 401/403 before anything was acknowledged: hand the files back to the spool, untouched. */
static void release_files(struct connection *c)
{
	char dst[LAYOUT_NAME_MAX + 1];
	int dfd = workfiles_dir(&c->wf);

	worker_cancel(c->worker);       /* the files leave: nothing more to parse of them */
	c->want_next = false;

	for (size_t i = 0; i < c->n_members; i++) {
		struct member *m = &c->members[i];
		int r = dfd < 0 ? dfd : workfiles_move(&c->wf, m->fid, m->name, dfd, dst);

		/* Its rejected lines are written again when it goes up: take back this attempt's. */
		(void)workfiles_rejected_truncate(&c->wf, m->name, m->rejected_size);
		if (r == 0)
			(void)spool_queue_add(&c->in.queue, dst, m->ident.mtime_ns);
		else if (r != -ENOENT)
			conn_log(c, LOG_LVL_ERROR, -1, "%s: cannot move it back to %s: %s", m->name, c->wf.dir, strerror(-r));
	}
	workfiles_sync(&c->wf, dfd);
	c->jb.state = BATCH_RELEASED;
	if (journal_put(c->env.journal, &c->jb) == 0)
		(void)journal_sync(c->env.journal);
	end_batch(c);
}

/* A file that changed after its batch was completed: what was read went up, the rest did not. */
static bool changed_since(struct connection *c, const struct member *m)
{
	return workfiles_changed(&c->wf, m->fid, m->name, &m->ident);
}

static void step_archive(struct connection *c)
{
	char dst[LAYOUT_NAME_MAX + 1];
	double took = ev_now(c->env.loop) - c->file_started;
	bool ok = true, del = c->env.after_upload == AFTER_UPLOAD_DELETE;
	int dfd = -1, r;

	crashpoint("before-archive");
	if (!del && (r = dfd = open_done_dir(c)) < 0)
		conn_log(c, LOG_LVL_ERROR, -1, "cannot open %s: %s", c->wf.done_dir, strerror(-r));
	for (size_t i = 0; i < c->n_members; i++) {
		const struct member *m = &c->members[i];

		if (changed_since(c, m)) {
			int ffd = conn_subdir(c, "failed", true);
			char why[512];

			snprintf(why, sizeof(why), "the file changed after its batch was completed (it was %" PRIu64
				 " bytes then): what was written after that was not sent; move it back into the spool "
				 "to send it whole", m->ident.size);
			conn_log(c, LOG_LVL_ERROR, -1, "%s: %s; moved to %s/failed/", m->name, why, c->wf.dir);
			r = ffd < 0 ? ffd : workfiles_move(&c->wf, m->fid, m->name, ffd, dst);
			if (r == 0)
				(void)write_error_json(c, ffd, m->name, dst, 0, why, NULL);
			if (ffd >= 0)
				close(ffd);
			c->stats.files_failed++;
			continue;
		}
		if (del) {
			workfiles_work_name(m->fid, m->name, dst);
			r = c->wf.workfd < 0 ? -EBADF : unlinkat(c->wf.workfd, dst, 0) < 0 ? -errno : 0;
		} else {
			r = dfd < 0 ? dfd : workfiles_move(&c->wf, m->fid, m->name, dfd, dst);
		}
		if (r < 0 && r != -ENOENT) {
			/* Complete at the server; the file stays in .work/ and the next start retries the move. */
			conn_log(c, LOG_LVL_ERROR, -1, "%s: uploaded, but cannot %s it: %s", m->name,
				 del ? "delete" : "archive", strerror(-r));
			ok = false;
		}
	}
	workfiles_sync(&c->wf, dfd);
	if (dfd >= 0)
		close(dfd);
	if (ok) {
		c->jb.state = BATCH_ARCHIVED;
		/* Made durable with the next sync: replay of COMPLETED redoes an idempotent move. */
		(void)journal_put(c->env.journal, &c->jb);
	}
	crashpoint("after-archive");
	{
		struct log_ctx ctx = ctx_of(c, -1);

		ctx.records = (long long)c->jb.records;
		if (c->n_members > 1)
			log_msg(LOG_LVL_INFO, &ctx, "%s: %zu files (%s ... %s) in one batch: %" PRIu64 " records sent, %"
				PRIu64 " rejected, %" PRIu64 " requests, %.2f s", c->cfg->name, c->n_members,
				c->members[0].name, c->members[c->n_members - 1].name, c->jb.records, c->jb.rejected,
				c->file_requests, took);
		else
			log_msg(LOG_LVL_INFO, &ctx, "%s: %s: %" PRIu64 " records sent, %" PRIu64 " rejected, %" PRIu64
				" requests, %.2f s", c->cfg->name, c->jb.name, c->jb.records, c->jb.rejected,
				c->file_requests, took);
	}
	c->stats.files_done += c->n_members;
	c->persist.files_done += c->n_members;
	c->persist.records_sent += c->jb.records;
	c->persist.records_rejected += c->jb.rejected;
	c->persist.requests += c->file_requests;
	c->persist.last_success = (int64_t)time(NULL);
	(void)totals_put(c->env.totals, &c->persist);
	save_catalog(c, false);
	step_batch_ended(c);
}

/* Make the chunk that was just cut current: its rejected lines go to disk now. */
static int make_current(struct connection *c, int idx)
{
	const struct chunk *ch = &c->chunk[idx];

	c->cur = idx;
	log_rejects(c, c->jb.name, ch->rejected, &c->rej[idx]);
	c->stats.records_rejected += ch->rejected;
	return rej_flush(c, c->jb.name, &c->rej[idx]);
}

/* Note the names of the records about to be parsed in @fields, emptied first. */
static void note_fields_in(struct connection *c, struct catalog *fields)
{
	catalog_clear(fields);
	record_validator_set_catalog(c->validator, c->cfg->field_catalog ? fields : NULL);
}


static int cut(struct connection *c, int idx)
{
	int r;

	note_fields_in(c, c->chunk_fields[idx]);
	r = batch_cut(&c->chunk[idx], &c->bp, c->reader, c->validator, on_reject, &c->rej[idx]);

	if (r < 0)
		conn_log(c, LOG_LVL_ERROR, -1, "%s: read failed at offset %" PRIu64 ": %s", c->jb.name,
			 (uint64_t)source_offset(c->reader), read_error(c, strerror(-r)));
	return r;
}

/* On the worker thread: touches only what the worker owns (see struct connection). */
static int ahead_job(void *arg)
{
	struct connection *c = arg;
	int i = c->ahead_idx;

	return batch_cut(&c->chunk[i], &c->bp, c->reader, c->validator, on_reject, &c->rej[i]);
}

/* Parse the next requests while the server works on this one: CPU and network overlap. */
static void ahead_start(struct connection *c)
{
	int r;

	/* Only an open batch is worth parsing for: not one failing or being handed back. */
	if (!c->active || c->jb.state != BATCH_OPEN || c->ahead_error || worker_busy(c->worker) ||
	    c->n_ahead == PIPELINE - 1 ||
	    c->chunk[((unsigned)c->cur + c->n_ahead) % PIPELINE].last)
		return;
	c->ahead_idx = (c->cur + 1 + (int)c->n_ahead) % PIPELINE;
	note_fields_in(c, c->chunk_fields[c->ahead_idx]);
	r = worker_submit(c->worker, ahead_job, c);
	if (r < 0 && !c->worker_warned) {
		/* Without a thread the next request is simply cut on the loop when it is due. */
		conn_log(c, LOG_LVL_WARNING, -1, "cannot start a parse thread (%s): parsing on the main loop",
			 strerror(-r));
		c->worker_warned = true;
	}
}

static void take_next_chunk(struct connection *c);

static void ahead_done(void *userdata, int r)
{
	struct connection *c = userdata;

	if (r < 0) {
		conn_log(c, LOG_LVL_ERROR, -1, "%s: read failed at offset %" PRIu64 ": %s", c->jb.name,
			 (uint64_t)source_offset(c->reader), read_error(c, strerror(-r)));
		c->ahead_error = r;
	} else {
		c->n_ahead++;
	}
	if (c->want_next) {
		c->want_next = false;
		take_next_chunk(c);
	}
	ahead_start(c);
}

static void step_next_chunk(struct connection *c)
{
	crashpoint("after-ack");
	if (c->stop_after_ack) {
		/* Stopping: the acknowledgement is durable, the next start resumes right here. */
		conn_log(c, LOG_LVL_INFO, -1, "%s: stopping after request %" PRIu32 " of batch %s; it resumes at the next start",
			 c->jb.name, c->jb.acks, c->jb.uuid);
		c->left_open++;
		end_batch(c);
		notify_changed(c);
		return;
	}
	take_next_chunk(c);
}

/* Make the next request current: cut ahead already, being cut (then wait for it), or cut now. */
static void take_next_chunk(struct connection *c)
{
	int next = (c->cur + 1) % PIPELINE;

	if (c->n_ahead) {
		c->n_ahead--;
	} else if (worker_busy(c->worker)) {
		c->want_next = true;    /* ahead_done comes back to take_next_chunk */
		return;
	} else if (c->ahead_error || cut(c, next) < 0) {
		/* A failed parse-ahead left the reader somewhere in the range: no second try from there. */
		fail_file(c, 0, read_error(c, "cannot read the file"), NULL);
		return;
	}
	if (make_current(c, next) < 0) {
		/* Rejected records could not be written: keep them safe by not moving on. */
		fail_file(c, 0, "cannot write rejected records", NULL);
		return;
	}
	process_current(c);
}

/* ---- is the file whole? ---- */

enum { WHOLE_YES, WHOLE_WAIT, WHOLE_GREW, WHOLE_FAILED };

static int64_t mtime_of(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* SIGTERM: nothing is in flight and the batch would wait: leave it to the journal and the next start. */
static bool stopping_here(struct connection *c, const char *what)
{
	if (!c->stop_after_ack)
		return false;
	conn_log(c, LOG_LVL_INFO, -1, "%s: stopping (%s) at request %" PRIu32 " of batch %s; it resumes at the next start",
		 c->jb.name, what, c->jb.acks + 1, c->jb.uuid);
	c->left_open += c->active;
	end_batch(c);
	notify_changed(c);
	return true;
}

static void wait_settle(struct connection *c, double delay, void (*again)(struct connection *c))
{
	if (stopping_here(c, "the file is still being written"))
		return;
	c->after_settle = again;
	wait_in(c, CS_SETTLE_WAIT, delay < 0.05 ? 0.05 : delay);
}

/* The file grew after its end was read: the current request is not the last, read on from its end. */
static int read_on(struct connection *c)
{
	struct chunk *ch = &c->chunk[c->cur];

	chunk_reseal(ch, &c->bp, false);
	c->stats.file_size = c->jb.ident.size;
	return reader_at(c, c->fd, c->jb.name, (uint64_t)source_offset(c->reader), source_lineno(c->reader));
}

/*
 * Before a batch is completed: is the file all there, all read, and done being written? A file
 * written in place may have been taken while its writer paused: it is completed only once
 * nobody has it open (a lease says so, or inotify did when it was taken and nobody can open it
 * in .work/) or it has been still for settle_seconds; never with less than it holds. A file
 * that grew is read on in the same batch. @again is called when it is time to look again.
 */
static int check_whole(struct connection *c, void (*again)(struct connection *c))
{
	struct timespec now;
	struct stat st;
	char why[512];
	uint64_t read;
	double age;
	int lease;

	if (c->jb.n_members || c->fd < 0) {
		/* Small files read whole into one request: each must still be what was read. */
		for (size_t i = 0; i < c->n_members; i++) {
			if (changed_since(c, &c->members[i])) {
				snprintf(why, sizeof(why), "%s changed after it was read (still being written in place?): "
					 "its batch is not completed", c->members[i].name);
				fail_file(c, 0, why, NULL);
				return WHOLE_FAILED;
			}
		}
		return WHOLE_YES;
	}
	if (fstat(c->fd, &st) < 0) {
		snprintf(why, sizeof(why), "cannot look at the file: %s", strerror(errno));
		fail_file(c, 0, why, NULL);
		return WHOLE_FAILED;
	}
	if (st.st_nlink == 0) {
		fail_file(c, 0, "the file was deleted from .work/ while its batch was open: the batch is not completed "
			  "(the records sent so far stay in an open batch at the server)", NULL);
		return WHOLE_FAILED;
	}
	/* The reader is at the end of what it read (blank lines after the last record included), in the file's bytes. */
	read = source_file_offset(c->reader);
	if ((uint64_t)st.st_size < read || (uint64_t)st.st_size < c->jb.ident.size ||
	    ((uint64_t)st.st_size == c->jb.ident.size && mtime_of(&st) != c->jb.ident.mtime_ns)) {
		snprintf(why, sizeof(why), "the file was truncated or rewritten while its batch was open (%lld bytes now, "
			 "%" PRIu64 " read): the batch is not completed with partial data", (long long)st.st_size, read);
		fail_file(c, 0, why, NULL);
		return WHOLE_FAILED;
	}
	if ((uint64_t)st.st_size > read) {
		conn_log(c, LOG_LVL_INFO, -1, "%s: grew to %lld bytes after %" PRIu64 " were read: reading on in the same batch",
			 c->jb.name, (long long)st.st_size, read);
		workfiles_identity(&st, &c->jb.ident);
		c->members[0].ident = c->jb.ident;
		c->members[0].trusted = false;  /* someone writes it: from now on only stillness tells */
		if (read_on(c) < 0) {
			fail_file(c, 0, read_error(c, "cannot read the file"), NULL);
			return WHOLE_FAILED;
		}
		return WHOLE_GREW;
	}
	lease = spool_lease_probe(c->fd);
	clock_gettime(CLOCK_REALTIME, &now);
	age = (double)((int64_t)now.tv_sec * 1000000000 + now.tv_nsec - mtime_of(&st)) / 1e9;
	if (lease == 0 || (lease < 0 && !c->members[0].trusted && age < c->env.settle_seconds)) {
		if (!c->settle_logged)
			conn_log(c, LOG_LVL_INFO, -1, "%s: %s: its batch is completed once it has been still for %g s",
				 c->jb.name, lease == 0 ? "still open for writing" : "changed moments ago",
				 c->env.settle_seconds);
		c->settle_logged = true;
		wait_settle(c, lease == 0 ? 1.0 : c->env.settle_seconds - age, again);
		return WHOLE_WAIT;
	}
	return WHOLE_YES;
}


/* After a restart the last acknowledged record is not in memory: find it before the resume point. */
static int find_last_record(struct connection *c)
{
	struct source *r = NULL;
	struct ndjson_line ln;
	char reason[256];
	int rc;

	if (c->fd < 0)
		return -ENOENT;
	if ((rc = source_open(&r, c->fd, c->jb.name, &c->cfg->csv, 0, 1, c->cfg->max_record_bytes)) < 0) {
		source_free(r);
		return rc;
	}
	record_validator_set_catalog(c->validator, NULL);
	c->last_record.len = 0;
	while ((rc = source_next(r, &ln)) == 1 && (uint64_t)ln.end_offset <= c->jb.offset) {
		if (!ln.too_long && !ln.error && record_validator_check(c->validator, ln.data, ln.len, reason, sizeof(reason)) == 0) {
			c->last_record.len = 0;
			if ((rc = jsonstr_raw(&c->last_record.buf, &c->last_record.len, &c->last_record.cap, ln.data,
					      ln.len)) < 0)
				break;
		}
	}
	source_free(r);
	if (rc < 0)
		return rc;
	return c->last_record.len ? 0 : -ENOENT;
}

/* The current chunk is done at the server: record it, then go on or complete the batch. */
static void chunk_done(struct connection *c)
{
	struct chunk *ch = &c->chunk[c->cur];

	if (ch->last && !c->sent_completed) {
		switch (check_whole(c, chunk_done)) {
		case WHOLE_FAILED:
		case WHOLE_WAIT:
			return;
		case WHOLE_GREW:
			break;
		default:
			if (c->jb.records + ch->n_records - c->server_rejected == 0)
				break;  /* nothing of the batch is at the server: nothing to complete */
			/*
			 * The last request's records were all refused: complete the batch by sending the last
			 * acknowledged record again (it replaces itself), never with an empty "data".
			 */
			if (!c->last_record.len && find_last_record(c) < 0) {
				fail_file(c, 0, "cannot find an acknowledged record to complete the batch with", NULL);
				return;
			}
			if (chunk_single(&c->slice, &c->bp, c->last_record.buf, c->last_record.len, true) < 0) {
				fail_file(c, 0, "out of memory", NULL);
				return;
			}
			c->resend_last = true;
			c->lo = c->hi = ch->n_records;
			send_range(c);
			return;
		}
	}
	c->jb.acks++;
	if (catalog_count(c->chunk_fields[c->cur]) || catalog_overflow(c->chunk_fields[c->cur])) {
		(void)catalog_merge(c->catalog, c->chunk_fields[c->cur]);
		catalog_clear(c->chunk_fields[c->cur]);
		c->catalog_dirty = true;
		save_catalog(c, false);
	}
	c->jb.offset = (uint64_t)ch->end_offset;
	c->jb.lineno = ch->end_line;
	c->jb.records += ch->n_records - c->server_rejected;
	c->jb.rejected += ch->rejected + c->server_rejected;
	if (!c->jb.n_members)
		c->jb.rejected_size = workfiles_rejected_size(&c->wf, c->jb.name);
	c->stats.file_records = c->jb.records;
	c->stats.file_offset = c->jb.offset;
	if (ch->last) {
		c->jb.state = BATCH_COMPLETED;
		if (journal_put(c->env.journal, &c->jb) < 0) {
			fail_file(c, 0, "out of memory", NULL);
			return;
		}
		durable(c, step_archive);
		return;
	}
	if (journal_put(c->env.journal, &c->jb) < 0) {
		fail_file(c, 0, "out of memory", NULL);
		return;
	}
	durable(c, step_next_chunk);
}

static void process_current(struct connection *c)
{
	struct chunk *ch = &c->chunk[c->cur];

	c->server_rejected = 0;
	c->split_depth = 0;
	c->sent_completed = false;
	c->sending_completed = false;
	c->resend_last = false;
	c->lo = 0;
	c->hi = ch->n_records;
	if (ch->n_records == 0) {
		/* Nothing valid in this range: a file with no valid record sends nothing at all. */
		chunk_done(c);
		return;
	}
	send_range(c);
}

static void send_range(struct connection *c)
{
	struct chunk *ch = &c->chunk[c->cur];
	const char *body = ch->body;
	size_t len = ch->len;
	bool completes = c->resend_last || (ch->last && c->hi == ch->n_records);
	double wait;
	int r;

	if (completes && !c->resend_last) {
		switch (check_whole(c, send_range)) {
		case WHOLE_FAILED:
		case WHOLE_WAIT:
			return;
		case WHOLE_GREW:
			completes = false;
			break;
		default:
			break;
		}
	}
	if (c->resend_last) {
		body = c->slice.body;
		len = c->slice.len;
	} else if (c->lo != 0 || c->hi != ch->n_records) {
		if ((r = chunk_slice(&c->slice, ch, &c->bp, c->lo, c->hi, completes)) < 0) {
			fail_file(c, 0, "out of memory", NULL);
			return;
		}
		body = c->slice.body;
		len = c->slice.len;
	}
	c->sending_completed = completes;
	wait = upload_limiter_take(c->limiter, ev_now(c->env.loop));
	persist_rate(c, wait > 0);
	if (wait > 0) {
		if (stopping_here(c, "waiting for the rate limit"))
			return;
		/* Wait for a slot rather than be refused with 429. */
		c->stats.rate_waits++;
		wait_in(c, CS_RATE_WAIT, wait);
		return;
	}
	r = upload_client_send(c->client, body, len);
	if (r < 0) {
		fail_file(c, 0, "cannot start the request", NULL);
		return;
	}
	c->state = CS_SENDING;
	c->stats.requests++;
	c->stats.bytes_sent += len;
	c->file_requests++;
	conn_log(c, LOG_LVL_DEBUG, -1, "%s: request %" PRIu32 ": records %" PRIu32 "..%" PRIu32 " of lines %" PRIu64
	     "..%" PRIu64 ", %zu bytes%s", c->jb.name, c->jb.acks + 1, c->lo, c->hi, ch->start_line,
	     ch->end_line - 1, len, c->resend_last ? ", the last acknowledged record again, completes the batch"
	     : completes ? ", completes the batch" : "");
	ahead_start(c);
}

/* The limiter's state for `dcsyncd status`, recorded when it changes (synced by the daemon's tick). */
static void persist_rate(struct connection *c, bool waiting)
{
	uint64_t budget = upload_limiter_budget(c->limiter);

	if (c->persist.rate_budget == budget && c->persist.rate_waiting == waiting)
		return;
	c->persist.rate_budget = budget;
	c->persist.rate_waiting = waiting;
	totals_put_live(c->env.totals, &c->persist);
}

/* ---- journal durability ---- */

static void durable(struct connection *c, void (*step)(struct connection *c))
{
	int r = journal_sync(c->env.journal);
	double delay;

	if (r == 0) {
		if (c->journal_error_logged)
			conn_log(c, LOG_LVL_INFO, -1, "journal is writable again: resuming uploads");
		c->journal_error_logged = false;
		c->state = CS_IDLE;
		step(c);
		return;
	}
	if (!c->journal_error_logged)
		conn_log(c, LOG_LVL_ERROR, -1, "cannot make the journal durable in %s: %s; holding uploads until it can be written",
		     c->state_dir, strerror(-r));
	c->journal_error_logged = true;
	c->after_sync = step;
	delay = retry_backoff(0.5, 30, c->attempt++, 0.5 + rand01(c) / 2);
	wait_in(c, CS_SYNC_WAIT, delay);
}

/* ---- responses ---- */

/* Record the last error for `status`; made durable now if the journal can be written at all. */
static void persist_error(struct connection *c, long status, const char *what)
{
	char text[sizeof(c->jb.name) + 512];

	c->persist.last_error = (int64_t)time(NULL);
	c->persist.last_error_status = status;
	/* Truncation is fine: the log has the whole message. */
	snprintf(text, sizeof(text), "%s%s%s", c->active ? c->jb.name : "", c->active ? ": " : "", what);
	snprintf(c->persist.last_error_text, sizeof(c->persist.last_error_text), "%.*s",
		 (int)sizeof(c->persist.last_error_text) - 1, text);
	(void)totals_put(c->env.totals, &c->persist);
}


/* The file taken for the next batch goes back to the spool: never journaled, nothing of it sent. */
static void release_carry(struct connection *c)
{
	char dst[LAYOUT_NAME_MAX + 1];
	int dfd = workfiles_dir(&c->wf), r;

	if (!c->have_carry)
		return;
	c->have_carry = false;
	r = dfd < 0 ? dfd : workfiles_move(&c->wf, c->carry.fid, c->carry.name, dfd, dst);
	if (r == 0)
		(void)spool_queue_add(&c->in.queue, dst, c->carry.ident.mtime_ns);
	else if (r != -ENOENT)
		conn_log(c, LOG_LVL_ERROR, -1, "%s: cannot move it back to %s: %s (the next start does)", c->carry.name,
			 c->wf.dir, strerror(-r));
}

static void auth_pause(struct connection *c, long status)
{
	c->stats.last_error_time = ev_now(c->env.loop);
	c->stats.last_error_status = status;
	if (c->active && c->next_cfg && !same_destination(c->cfg, c->next_cfg)) {
		/* The batch can only finish where it started, and those keys are refused there. */
		char why[512];

		snprintf(why, sizeof(why), "the API refused the keys (HTTP %ld) at the batch's destination (%s, connection "
			 "%s), and a reload moved [connection %s] elsewhere: the batch cannot finish where it started",
			 status, c->cfg->base_url, c->cfg->uuid, c->cfg->name);
		fail_file(c, status, why, NULL);
		return;
	}
	conn_log(c, LOG_LVL_ERROR, status,
	     "the API refused the keys (HTTP %ld): fix api_key and brand_key of [connection %s], then reload "
	     "(systemctl reload dcsyncd); files stay in %s", status, c->cfg->name, c->wf.dir);
	persist_error(c, status, "the API refused the keys");
	release_carry(c);
	if (c->active && c->jb.acks == 0 && c->jb.records == 0 && !c->batch_answered)
		release_files(c);
	/* --once does not wait for keys that may never be fixed. */
	wait_in(c, CS_AUTH_PAUSED, c->env.once ? -1 : c->cfg->retry_max_seconds);
	notify_changed(c);
}

static void retry_later(struct connection *c, const struct upload_result *res)
{
	double now = ev_now(c->env.loop), delay;
	char what[300];

	if (res->status)
		snprintf(what, sizeof(what), "HTTP %ld", res->status);
	else
		snprintf(what, sizeof(what), "%s%s", res->tls_failure ? "TLS certificate problem: " : "", res->error);
	if (c->attempt == 0)
		c->first_failure = now;
	delay = retry_backoff(c->cfg->retry_initial_seconds, c->cfg->retry_max_seconds, c->attempt, rand01(c));
	if (res->retry_after >= 0 && res->retry_after > delay)
		delay = res->retry_after;
	/* Retry-After is the server's wish; retry_max_seconds is the operator's bound on any wait. */
	if (delay > c->cfg->retry_max_seconds)
		delay = c->cfg->retry_max_seconds;
	if (stopping_here(c, what))
		return;
	c->attempt++;
	c->stats.retries++;
	c->stats.last_error_time = now;
	c->stats.last_error_status = res->status;
	persist_error(c, res->status, what);
	if (c->cfg->retry_max_elapsed_seconds > 0) {
		/*
		 * Only time spent retrying counts: give up once it is over the limit, and never skip a
		 * try because the next wait would cross it (the last try is made at the limit).
		 */
		double left = c->first_failure + c->cfg->retry_max_elapsed_seconds - now;

		if (left <= 0) {
			char why[400];

			snprintf(why, sizeof(why), "gave up after %.0f s of retries (retry_max_elapsed_seconds): %s",
				 now - c->first_failure, what);
			fail_file(c, res->status, why, res->body);
			return;
		}
		if (delay > left)
			delay = left;
	}
	conn_log(c, c->attempt > 3 ? LOG_LVL_WARNING : LOG_LVL_INFO, res->status,
	     "%s: request %" PRIu32 " failed (%s), retry %u in %.2f s", c->jb.name, c->jb.acks + 1, what,
	     c->attempt, delay);
	wait_in(c, CS_RETRY_WAIT, delay);
}

/* Records [lo, hi) are done: send the next pending right half, or the rest, or finish the chunk. */
static void next_range(struct connection *c)
{
	struct chunk *ch = &c->chunk[c->cur];

	c->lo = c->hi;
	c->hi = c->split_depth ? c->split_end[--c->split_depth] : ch->n_records;
	if (c->lo >= ch->n_records)
		chunk_done(c);
	else
		send_range(c);
}

/* 413 and 422: halve the request; a single record the server refuses is rejected with its answer. */
static void split_or_reject(struct connection *c, const struct upload_result *res)
{
	struct chunk *ch = &c->chunk[c->cur];
	char reason[600];
	struct rejbuf rb = { 0 };

	if (c->hi - c->lo > 1) {
		conn_log(c, LOG_LVL_INFO, res->status, "%s: HTTP %ld for %" PRIu32 " records: splitting the request",
		     c->jb.name, res->status, c->hi - c->lo);
		/* Bisect: the right half waits on a stack, so a refused record costs O(log n) requests. */
		/* Halving a range of at most 5000 records nests at most 13 deep: 32 slots cannot run out. */
		assert(c->split_depth < sizeof(c->split_end) / sizeof(c->split_end[0]));
		c->split_end[c->split_depth++] = c->hi;
		c->hi = c->lo + (c->hi - c->lo) / 2;
		send_range(c);
		return;
	}
	if (c->hi == c->lo) {
		/* The empty completing request itself was refused. */
		fail_file(c, res->status, "the server refused the request that completes the batch", res->body);
		return;
	}
	snprintf(reason, sizeof(reason), "HTTP %ld: %s", res->status, res->body && *res->body ? res->body : "refused by the server");
	conn_log(c, LOG_LVL_WARNING, res->status, "%s: line %" PRIu64 " refused by the server: %s",
		 c->members[ch->rec_member[c->lo]].name, ch->rec_line[c->lo], reason);
	if (rej_format(&rb, ch->rec_line[c->lo], reason, ch->body + ch->rec_off[c->lo], ch->rec_len[c->lo]) < 0 ||
	    rej_flush(c, c->members[ch->rec_member[c->lo]].name, &rb) < 0) {
		free(rb.buf);
		fail_file(c, 0, "cannot write rejected records", NULL);
		return;
	}
	free(rb.buf);
	c->server_rejected++;
	c->stats.records_rejected++;
	next_range(c);
}

static void on_response(void *userdata, const struct upload_result *res)
{
	struct connection *c = userdata;

	crashpoint("after-response");
	c->state = CS_IDLE;
	for (size_t i = 0; i < sizeof(c->stats.by_status) / sizeof(c->stats.by_status[0]); i++) {
		/* A handful of distinct statuses in practice; the last slot takes any overflow. */
		if (c->stats.by_status[i].status == res->status || c->stats.by_status[i].requests == 0 ||
		    i == sizeof(c->stats.by_status) / sizeof(c->stats.by_status[0]) - 1) {
			c->stats.by_status[i].status = res->status;
			c->stats.by_status[i].requests++;
			c->stats.by_status[i].records += c->hi - c->lo;
			break;
		}
	}
	if (res->status >= 200 && res->status <= 299) {
		const struct chunk *ch = &c->chunk[c->cur];

		if (c->hi > c->lo && !c->resend_last) {
			/* Kept to complete the batch with, should every later record be refused. */
			c->last_record.len = 0;
			(void)jsonstr_raw(&c->last_record.buf, &c->last_record.len, &c->last_record.cap,
					  ch->body + ch->rec_off[c->hi - 1], ch->rec_len[c->hi - 1]);
		}
		c->batch_answered = true;
		upload_limiter_success(c->limiter);
		c->attempt = 0;
		c->stats.last_success = ev_now(c->env.loop);
		c->stats.records_sent += c->hi - c->lo;
		if (c->sending_completed)
			c->sent_completed = true;
		next_range(c);
		return;
	}
	if (res->status == 401 || res->status == 403) {
		auth_pause(c, res->status);
		return;
	}
	if (res->status == 413 || res->status == 422) {
		c->stats.last_error_time = ev_now(c->env.loop);
		c->stats.last_error_status = res->status;
		split_or_reject(c, res);
		return;
	}
	if (upload_status_transient(res->status)) {
		if (res->status == 429)
			upload_limiter_penalize(c->limiter);
		retry_later(c, res);
		return;
	}
	{
		char why[64];

		snprintf(why, sizeof(why), "the server answered HTTP %ld", res->status);
		fail_file(c, res->status, why, res->body);
	}
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct connection *c = w->data;

	(void)loop;
	(void)revents;
	switch (c->state) {
	case CS_SYNC_WAIT:
		durable(c, c->after_sync);
		break;
	case CS_RETRY_WAIT:
	case CS_RATE_WAIT:
		send_range(c);
		break;
	case CS_SETTLE_WAIT:
		c->state = CS_IDLE;
		c->after_settle(c);
		break;
	case CS_RESUME_WAIT:
		c->state = CS_IDLE;
		begin_next(c);
		break;
	case CS_AUTH_PAUSED:
		conn_log(c, LOG_LVL_INFO, -1, "trying the keys again");
		c->state = CS_IDLE;
		if (c->active)
			send_range(c);
		else
			begin_next(c);
		break;
	default:
		break;
	}
}

/* ---- starting and resuming batches ---- */

static void set_params(struct connection *c)
{
	c->bp = (struct batch_params){
		.batch_uuid = c->jb.uuid,
		.ttl_seconds = c->cfg->ttl_seconds,
		.max_records = c->jb.cut_records,
		.max_bytes = c->jb.cut_bytes,
	};
	c->file_started = ev_now(c->env.loop);
	c->file_requests = 0;
	c->n_ahead = 0;
	c->ahead_error = 0;
	if (c->n_members > 1)
		snprintf(c->stats.file, sizeof(c->stats.file), "%zu files", c->n_members);
	else
		snprintf(c->stats.file, sizeof(c->stats.file), "%s", c->jb.name);
	c->stats.file_size = c->jb.ident.size;
	c->stats.file_offset = c->jb.offset;
	c->stats.file_records = c->jb.records;
}

/* Point the reader at @fd, read as @name says (NDJSON, CSV, TSV; compressed or not); one buffer serves every file. */
static int reader_at(struct connection *c, int fd, const char *name, uint64_t offset, uint64_t lineno)
{
	return source_open(&c->reader, fd, name, &c->cfg->csv, (off_t)offset, lineno, c->cfg->max_record_bytes);
}

/* What to say of a file that could not be read: the source's reason (a CSV header, compressed data) if it has one. */
static const char *read_error(struct connection *c, const char *fallback)
{
	const char *why = c->reader ? source_error(c->reader) : NULL;

	return why ? why : fallback;
}

static int grow_members(struct connection *c)
{
	struct member *m;

	if (c->n_members < c->cap_members)
		return 0;
	m = reallocarray(c->members, c->cap_members ? c->cap_members * 2 : 8, sizeof(*m));
	if (!m)
		return -ENOMEM;
	memset(m + c->cap_members, 0, (c->cap_members ? c->cap_members : 8) * sizeof(*m));
	c->members = m;
	c->cap_members = c->cap_members ? c->cap_members * 2 : 8;
	return 0;
}

/* Take a file out of the exporters' way into .work/ and open it. Returns the fd or a negative errno. */
static int take_file(struct connection *c, const char *name, struct member *m)
{
	char wn[LAYOUT_NAME_MAX + 1];
	struct stat st;
	int fd;

	{
		struct rejbuf keep = m->rej;

		memset(m, 0, sizeof(*m));
		m->rej = keep;
	}
	snprintf(m->name, sizeof(m->name), "%s", name);
	m->fid = journal_new_id(c->env.journal);
	workfiles_work_name(m->fid, m->name, wn);
	if ((fd = intake_take(&c->in, name, wn, &st, &m->trusted)) < 0)
		return fd;
	crashpoint("after-rename");
	workfiles_identity(&st, &m->ident);
	return fd;
}

/* Open a file of a journaled batch and check it is still the file the batch opened with. */
/*
 * Open a file of a journaled batch and check it is still the file the batch opened with (or
 * that file grown: what was appended is read on). A negative errno: -ENOENT gone, -ESTALE
 * changed, anything else (EMFILE, EACCES, EIO) may pass.
 */
static int reopen_member(struct connection *c, struct member *m, char *why, size_t whylen)
{
	bool grew = false;
	int fd = workfiles_reopen(&c->wf, m->fid, m->name, &m->ident, &grew);

	if (fd == -ESTALE)
		snprintf(why, whylen, "%s: the file changed since its batch opened (device, inode, size or mtime differ)",
			 m->name);
	else if (fd == -ENOENT)
		snprintf(why, whylen, "%s: the file of an open batch is gone from %s/.work/", m->name, c->wf.dir);
	else if (fd < 0)
		snprintf(why, whylen, "%s: cannot open the file of an open batch in %s/.work/: %s", m->name, c->wf.dir,
			 strerror(-fd));
	/* Unchanged since it was taken ready: still nobody's to write. Grown: someone writes it. */
	m->trusted = !grew;
	return fd;
}

/*
 * Small files queued together fill one request: append whole files after the first while
 * they fit. The first that does not fit is rolled back and kept (taken, not journaled) to
 * start the next batch; a large file therefore always gets a batch of its own.
 */
static void gather_small_files(struct connection *c)
{
	struct chunk *ch = &c->chunk[0];
	struct spool_entry e;

	while (c->n_members < GROUP_FILES_MAX && !c->have_carry && spool_queue_pop(&c->in.queue, &e)) {
		/* What the request holds before this file: restored if the file does not fit. */
		const struct chunk before = *ch;
		struct member *m;
		int fd, r;

		if (grow_members(c) < 0) {
			(void)spool_queue_add(&c->in.queue, e.name, e.mtime_ns);
			free(e.name);
			break;
		}
		m = &c->members[c->n_members];
		fd = take_file(c, e.name, m);
		free(e.name);
		if (fd < 0)
			continue;
		ch->member = (uint32_t)c->n_members;
		note_fields_in(c, c->member_fields);     /* its names count only if it stays in this request */
		r = reader_at(c, fd, m->name, 0, 1);
		if (r == 0)
			r = batch_fill(ch, &c->bp, c->reader, c->validator, on_reject, &m->rej);
		close(fd);
		m->rejected = ch->rejected;
		if (r == BATCH_FILL_EOF) {
			(void)catalog_merge(c->chunk_fields[0], c->member_fields);
			c->n_members++;
			continue;
		}
		chunk_truncate(ch, before.len, before.n_records);
		ch->start_offset = before.start_offset;
		ch->end_offset = before.end_offset;
		ch->start_line = before.start_line;
		ch->end_line = before.end_line;
		ch->rejected = before.rejected;
		rej_reset(&m->rej);
		m->rejected = 0;
		c->carry = *m;
		c->carry.rej = (struct rejbuf){ 0 };
		c->have_carry = true;
	}
}

static void step_opened(struct connection *c)
{
	crashpoint("after-open");
	if (c->n_members > 1) {
		c->cur = 0;
		c->chunk[0].rejected = 0;
		for (size_t i = 0; i < c->n_members; i++) {
			struct member *m = &c->members[i];

			c->chunk[0].rejected += m->rejected;
			log_rejects(c, m->name, m->rejected, &m->rej);
			c->stats.records_rejected += m->rejected;
			if (rej_flush(c, m->name, &m->rej) < 0) {
				fail_file(c, 0, "cannot write rejected records", NULL);
				return;
			}
		}
	} else if (make_current(c, 0) < 0) {
		fail_file(c, 0, "cannot write rejected records", NULL);
		return;
	}
	process_current(c);
}

/* Start the next batch: the carried-over file or the oldest queued one, plus small files after it. */
static int start_batch(struct connection *c)
{
	struct chunk *ch = &c->chunk[0];
	char why[PATH_MAX + 128];
	struct member *first;
	int fd, r;

	if ((r = grow_members(c)) < 0)
		return r;
	first = &c->members[0];
	if (c->have_carry) {
		struct rejbuf keep = first->rej;

		*first = c->carry;
		first->rej = keep;
		c->have_carry = false;
		fd = reopen_member(c, first, why, sizeof(why));
		if (fd < 0) {
			conn_log(c, LOG_LVL_ERROR, -1, "%s", why);
			return fd;
		}
	} else {
		struct spool_entry e;

		do {
			if (!spool_queue_pop(&c->in.queue, &e))
				return -ENOENT;
			fd = take_file(c, e.name, first);
			free(e.name);
		} while (fd < 0);
	}
	memset(&c->jb, 0, sizeof(c->jb));
	c->jb.state = BATCH_OPEN;
	snprintf(c->jb.connection, sizeof(c->jb.connection), "%s", c->cfg->name);
	snprintf(c->jb.name, sizeof(c->jb.name), "%s", first->name);
	format_uuid(c->jb.uuid);
	c->jb.cut_records = c->cfg->batch_records;
	c->jb.dest = destination_of(c->cfg);
	c->jb.cut_bytes = c->cfg->batch_bytes;
	c->jb.lineno = 1;
	c->n_members = 1;
	c->active = true;
	c->fd = fd;
	set_params(c);
	if ((r = chunk_begin(ch)) < 0 || (r = reader_at(c, fd, first->name, 0, 1)) < 0)
		goto fail;
	ch->member = 0;
	first->rej.len = 0;
	note_fields_in(c, c->chunk_fields[0]);
	r = batch_fill(ch, &c->bp, c->reader, c->validator, on_reject, &first->rej);
	if (r < 0)
		goto fail;
	first->rejected = ch->rejected;
	if (r == BATCH_FILL_EOF) {
		off_t end = source_offset(c->reader);
		uint64_t lineno = source_lineno(c->reader);

		gather_small_files(c);
		first = &c->members[0];         /* gathering may have moved the array */
		/* A file that did not fit was read with the same reader: point it back at the end of this one. */
		if (c->n_members == 1 && (r = reader_at(c, c->fd, first->name, (uint64_t)end, lineno)) < 0)
			goto fail;
		r = BATCH_FILL_EOF;
	}
	if (c->n_members == 1) {
		struct rejbuf t = c->rej[0];

		/* One file: the batch id names it in .work/, and later requests read on from c->fd. */
		c->rej[0] = c->members[0].rej;
		c->members[0].rej = t;
		c->jb.id = c->members[0].fid;
		c->jb.ident = c->members[0].ident;
		c->jb.rejected_size = c->members[0].rejected_size = workfiles_rejected_size(&c->wf, c->jb.name);
		chunk_finish(ch, &c->bp, r == BATCH_FILL_EOF);
	} else {
		close(c->fd);
		c->fd = -1;
		c->jb.id = journal_new_id(c->env.journal);
		c->jb.n_members = (uint32_t)c->n_members;
		for (size_t i = 0; i < c->n_members; i++) {
			struct journal_member jm = {
				.batch_id = c->jb.id,
				.file_id = c->members[i].fid,
				.index = (uint32_t)i,
				.ident = c->members[i].ident,
				.rejected_size = workfiles_rejected_size(&c->wf, c->members[i].name),
			};

			c->members[i].rejected_size = jm.rejected_size;
			snprintf(jm.name, sizeof(jm.name), "%s", c->members[i].name);
			if ((r = journal_put_member(c->env.journal, &jm)) < 0)
				goto fail;
		}
		chunk_finish(ch, &c->bp, true);
	}
	set_params(c);
	/* The renames into .work/ must be durable before the batch that names them. */
	(void)fsync(c->wf.workfd);
	if ((r = journal_put(c->env.journal, &c->jb)) < 0)
		goto fail;
	conn_log(c, LOG_LVL_DEBUG, -1, "%s: batch %s opened (%zu file(s), %" PRIu32 " records in the first request)",
		 c->jb.name, c->jb.uuid, c->n_members, ch->n_records);
	durable(c, step_opened);
	return 0;
fail:
	conn_log(c, LOG_LVL_ERROR, -1, "%s: cannot start the batch: %s", first->name, strerror(-r));
	fail_file(c, 0, read_error(c, "cannot read the file"), NULL);
	return 0;
}

/* Where a file of a journaled batch is now, when it is no longer in .work/. */
enum whereabouts { IN_WORK, IN_DONE, IN_FAILED, IN_SPOOL, GONE };

static enum whereabouts member_whereabouts(struct connection *c, const struct member *m, bool doubt)
{
	char wn[LAYOUT_NAME_MAX + 1];
	enum whereabouts w = GONE;
	int wfd = conn_workfd(c), dfd, ffd;
	struct stat st;

	workfiles_work_name(m->fid, m->name, wn);
	if (wfd >= 0 && fstatat(wfd, wn, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return IN_WORK;
	dfd = c->env.after_upload == AFTER_UPLOAD_ARCHIVE ? fileio_open_dir(c->wf.done_dir) : -1;
	ffd = conn_subdir(c, "failed", false);
	if (workfiles_holds(dfd, m->fid, m->name, &m->ident, doubt))
		w = IN_DONE;
	else if (workfiles_holds(ffd, m->fid, m->name, &m->ident, false))
		w = IN_FAILED;
	else if (workfiles_holds(workfiles_dir(&c->wf), m->fid, m->name, &m->ident, false))
		w = IN_SPOOL;
	if (dfd >= 0)
		close(dfd);
	if (ffd >= 0)
		close(ffd);
	return w;
}

/*
 * A live batch of the journal whose files left .work/ ended before the restart, its last
 * records lost with damage to the journal (journal_in_doubt), or it was archived (the file in
 * done/ as it was): never resume it, never call it failed. A file in done/ (or, with
 * after_upload = delete, gone) means the batch was completed: the rest of its files are
 * archived now. Otherwise, say where the files are. Returns whether the batch was ended here.
 */
static bool ended_before_restart(struct connection *c)
{
	bool doubt = journal_in_doubt(c->env.journal, c->jb.id), del = c->env.after_upload == AFTER_UPLOAD_DELETE;
	size_t count[GONE + 1] = { 0 };
	char where[1024], dst[LAYOUT_NAME_MAX + 1];
	size_t len = 0;

	for (size_t i = 0; i < c->n_members; i++) {
		enum whereabouts w = member_whereabouts(c, &c->members[i], doubt);
		static const char *const what[] = { "still in .work/", "in done/", "in failed/", "back in the spool",
						    "gone" };

		count[w]++;
		if (len < sizeof(where) - 1)
			len += (size_t)snprintf(where + len, sizeof(where) - len, "%s%s %s", i ? ", " : "",
						c->members[i].name, what[w]);
	}
	if (count[IN_DONE] || (doubt && del && count[GONE] && !count[IN_FAILED] && !count[IN_SPOOL])) {
		/* COMPLETED is durable before any file is archived or deleted: the server has it all. */
		int dfd = -1;

		if (!del)
			dfd = open_done_dir(c);
		for (size_t i = 0; i < c->n_members; i++) {
			int r;

			if (member_whereabouts(c, &c->members[i], doubt) != IN_WORK)
				continue;
			if (del) {
				workfiles_work_name(c->members[i].fid, c->members[i].name, dst);
				r = unlinkat(c->wf.workfd, dst, 0) < 0 ? -errno : 0;
			} else {
				r = dfd < 0 ? dfd : workfiles_move(&c->wf, c->members[i].fid, c->members[i].name, dfd, dst);
			}
			if (r < 0 && r != -ENOENT)
				conn_log(c, LOG_LVL_ERROR, -1, "%s: uploaded, but cannot %s it: %s", c->members[i].name,
					 del ? "delete" : "archive", strerror(-r));
		}
		if (count[IN_WORK])
			workfiles_sync(&c->wf, dfd);
		if (dfd >= 0)
			close(dfd);
		conn_log(c, LOG_LVL_INFO, -1, "%s: batch %s was completed before the restart (%s; the journal's records "
			 "of its end were lost): nothing to resume", c->jb.name, c->jb.uuid, where);
		c->jb.state = BATCH_ARCHIVED;
	} else if (doubt && !count[IN_WORK]) {
		conn_log(c, LOG_LVL_WARNING, -1, "%s: batch %s ended before the restart, how the journal cannot tell (its "
			 "last records were in the damaged bytes): %s; nothing to resume", c->jb.name, c->jb.uuid, where);
		c->jb.state = count[IN_FAILED] ? BATCH_FAILED : count[IN_SPOOL] ? BATCH_RELEASED : BATCH_ARCHIVED;
	} else {
		return false;
	}
	if (journal_put(c->env.journal, &c->jb) < 0)
		step_batch_ended(c);
	else
		durable(c, step_batch_ended);
	return true;
}

/*
 * A file of a journaled batch cannot be opened: gone or changed fails the batch for good; any
 * other error (EMFILE, EACCES, EIO) may pass, so the batch waits and is tried again.
 */
static void resume_failed(struct connection *c, const struct journal_batch *b, int r, const char *why)
{
	struct journal_batch *n;

	if (r == -ENOENT || r == -ESTALE) {
		fail_file(c, 0, why, NULL);
		return;
	}
	conn_log(c, LOG_LVL_ERROR, -1, "%s; trying again in %g s", why, c->cfg->retry_max_seconds);
	end_batch(c);
	n = realloc(c->adopted, (c->n_adopted + 1) * sizeof(*n));
	if (!n) {
		fail_file(c, 0, why, NULL);
		return;
	}
	c->adopted = n;
	memmove(c->adopted + 1, c->adopted, c->n_adopted++ * sizeof(*n));
	c->adopted[0] = *b;
	wait_in(c, CS_RESUME_WAIT, c->cfg->retry_max_seconds);
}

static void resume_batch(struct connection *c, const struct journal_batch *b)
{
	const struct journal_member *jm;
	const struct journal_range *dmg;
	char why[PATH_MAX + 128];
	size_t n = journal_members(c->env.journal, b->id, &jm);
	int fd, r = 0;

	c->jb = *b;
	c->active = true;
	c->n_members = 0;
	/* Rebuild the batch's files: its members, or the one file the batch id names. */
	for (size_t i = 0; i < (b->n_members ? n : 1); i++) {
		struct member *m;

		if (grow_members(c) < 0) {
			r = -ENOMEM;
			break;
		}
		m = &c->members[c->n_members++];
		m->rej.len = 0;
		m->rejected = 0;
		if (b->n_members) {
			m->fid = jm[i].file_id;
			m->ident = jm[i].ident;
			m->rejected_size = jm[i].rejected_size;
			snprintf(m->name, sizeof(m->name), "%s", jm[i].name);
		} else {
			m->fid = b->id;
			m->ident = b->ident;
			m->rejected_size = b->rejected_size;
			snprintf(m->name, sizeof(m->name), "%s", b->name);
		}
	}
	if (r == 0 && b->n_members && n != b->n_members)
		r = -EBADMSG;
	set_params(c);
	if (r == -EBADMSG && journal_damage(c->env.journal, &dmg)) {
		/* Its other files, unnamed now, went back to the spool at start: these follow them. */
		conn_log(c, LOG_LVL_WARNING, -1, "%s: batch %s: the journal lost the records of %zu of its %" PRIu32 " files "
			 "(damaged bytes): its files go back to the spool and up again in a new batch", b->name, b->uuid,
			 (size_t)b->n_members - n, b->n_members);
		release_files(c);
		return;
	}
	if (r == 0 && b->state == BATCH_OPEN && ended_before_restart(c))
		return;
	if (r == 0 && b->state == BATCH_OPEN && b->dest && b->dest != destination_of(c->cfg)) {
		/* Its requests went to one place; the rest must not go to another under its batch_uuid. */
		fail_file(c, 0, "the batch was opened at another destination (base_url or uuid of the connection "
			  "changed while dcsyncd was stopped): it cannot be finished there, and is not sent elsewhere", NULL);
		return;
	}
	if (r < 0) {
		fail_file(c, 0, "the journal does not list every file of this batch", NULL);
		return;
	}
	if (b->state == BATCH_COMPLETED) {
		conn_log(c, LOG_LVL_INFO, -1, "%s: batch %s was completed before the restart: finishing its %s", b->name,
			 b->uuid, c->env.after_upload == AFTER_UPLOAD_DELETE ? "delete" : "archive");
		step_archive(c);
		return;
	}
	conn_log(c, LOG_LVL_INFO, -1, "%s: resuming batch %s (%zu file(s)) at request %" PRIu32 ", line %" PRIu64
		 " (%" PRIu64 " records already acknowledged)", b->name, b->uuid, c->n_members, b->acks + 1,
		 b->lineno, b->records);
	if (!b->n_members) {
		fd = reopen_member(c, &c->members[0], why, sizeof(why));
		if (fd < 0) {
			resume_failed(c, b, fd, why);
			return;
		}
		c->fd = fd;
		if (workfiles_rejected_truncate(&c->wf, b->name, b->rejected_size) < 0 || reader_at(c, fd, b->name, b->offset, b->lineno) < 0 ||
		    cut(c, 0) < 0) {
			fail_file(c, 0, read_error(c, "cannot read the file or its rejected file"), NULL);
			return;
		}
		step_opened(c);
		return;
	}
	/* A multi-file batch is one request: cut it again, the same files in the same order. */
	if (chunk_begin(&c->chunk[0]) < 0) {
		fail_file(c, 0, "out of memory", NULL);
		return;
	}
	note_fields_in(c, c->chunk_fields[0]);
	for (size_t i = 0; i < c->n_members; i++) {
		struct member *m = &c->members[i];

		fd = reopen_member(c, m, why, sizeof(why));
		if (fd < 0) {
			resume_failed(c, b, fd, why);
			return;
		}
		c->chunk[0].member = (uint32_t)i;
		r = workfiles_rejected_truncate(&c->wf, m->name, m->rejected_size);
		if (r == 0)
			r = reader_at(c, fd, m->name, 0, 1);
		if (r == 0)
			r = batch_fill(&c->chunk[0], &c->bp, c->reader, c->validator, on_reject, &m->rej);
		close(fd);
		m->rejected = c->chunk[0].rejected;
		if (r != BATCH_FILL_EOF) {
			fail_file(c, 0, read_error(c, "cannot cut the batch's request again from its files"), NULL);
			return;
		}
	}
	chunk_finish(&c->chunk[0], &c->bp, true);
	step_opened(c);
}

static void begin_next(struct connection *c)
{
	while (!c->active && c->state == CS_IDLE && !c->draining) {
		if (c->n_adopted) {
			struct journal_batch b = c->adopted[0];

			memmove(c->adopted, c->adopted + 1, --c->n_adopted * sizeof(*c->adopted));
			resume_batch(c, &b);
			continue;
		}
		if (!c->have_carry && spool_queue_len(&c->in.queue) == 0)
			break;
		if (start_batch(c) < 0 && !c->active)
			continue;
	}
	if (connection_idle(c))
		notify_changed(c);
}

void connection_kick(struct connection *c)
{
	begin_next(c);
}

static void client_opts(const struct conn_config *cfg, char *url, struct upload_client_opts *uo)
{
	*uo = (struct upload_client_opts){
		.url = url,
		.api_key = cfg->api_key,
		.brand_key = cfg->brand_key,
		.timeout_seconds = cfg->timeout_seconds,
		.ca_file = cfg->ca_file,
		.tls_verify_disabled = cfg->tls_verify_disabled,
		.proxy = cfg->proxy_mode == CONN_PROXY_ENV ? "env" : cfg->proxy_mode == CONN_PROXY_URL ? cfg->proxy : NULL,
		.proxy_credentials = cfg->proxy_credentials,
	};
}

static int configure_client(struct connection *c, const struct conn_config *cfg)
{
	struct upload_client_opts uo;
	char *url;
	int r;

	if (asprintf(&url, "%s/connections/%s/upload_data", cfg->base_url, cfg->uuid) < 0)
		return -ENOMEM;
	client_opts(cfg, url, &uo);
	r = upload_client_configure(c->client, &uo);
	free(url);
	return r;
}

/* Make @cfg, with its ready validator @v, the connection's own: only between batches. Takes both. */
static int apply_config(struct connection *c, struct conn_config *cfg, struct record_validator *v)
{
	struct upload_limiter *l;
	int r;

	if ((r = configure_client(c, cfg)) < 0)
		return r;
	l = upload_limiter_get(c->env.upload, cfg->api_key, cfg->rate_limit_requests, cfg->rate_limit_window_seconds);
	if (l)
		c->limiter = l;
	/* The parse-ahead uses the old validator, which points into the old configuration. */
	worker_wait(c->worker);
	record_validator_free(c->validator);
	c->validator = v;               /* each cut points it at the catalog to note names in */
	config_conn_free(c->cfg);
	c->cfg = cfg;
	return 0;
}

static void drop_pending(struct connection *c)
{
	config_conn_free(c->next_cfg);
	record_validator_free(c->next_validator);
	c->next_cfg = NULL;
	c->next_validator = NULL;
}

/* A batch ended: a reload that waited for it applies now. */
static void apply_pending(struct connection *c)
{
	int r;

	if (!c->next_cfg || c->active)
		return;
	if ((r = apply_config(c, c->next_cfg, c->next_validator)) < 0) {
		conn_log(c, LOG_LVL_ERROR, -1, "cannot apply the reloaded configuration: %s (tried again after the next "
			 "batch)", strerror(-r));
		return;
	}
	c->next_cfg = NULL;
	c->next_validator = NULL;
	conn_log(c, LOG_LVL_INFO, -1, "the reloaded configuration applies from the next batch on");
}

int connection_reconfigure(struct connection *c, const struct conn_config *src, enum after_upload after)
{
	struct conn_config *cfg = NULL;
	struct record_validator *v = NULL;
	int r;

	/* Everything that can fail happens before anything changes: a refused reload changes nothing. */
	if ((r = config_conn_dup(src, &cfg)) < 0 ||
	    (r = record_validator_new(&v, cfg->primary_key, cfg->required_fields, cfg->n_required_fields)) < 0)
		goto fail;
	record_validator_set_max_depth(v, cfg->max_depth);
	if (!c->active) {
		if ((r = apply_config(c, cfg, v)) < 0)
			goto fail;
		drop_pending(c);
	} else {
		/*
		 * A batch's identity is fixed for its life: it finishes at its destination with its cut
		 * and validator, and the rest waits for its end. Keys fixed for the same destination
		 * reach it at once (that is how a 401 is cured).
		 */
		if (same_destination(c->cfg, cfg) && (r = configure_client(c, cfg)) < 0)
			goto fail;
		if (!same_destination(c->cfg, cfg))
			conn_log(c, LOG_LVL_INFO, -1, "%s: batch %s finishes at %s (connection %s) before the reloaded "
				 "destination applies", c->jb.name, c->jb.uuid, c->cfg->base_url, c->cfg->uuid);
		drop_pending(c);
		c->next_cfg = cfg;
		c->next_validator = v;
	}
	c->env.after_upload = after;
	if (c->state == CS_AUTH_PAUSED) {
		conn_log(c, LOG_LVL_INFO, -1, "configuration reloaded: trying the keys again");
		wait_in(c, CS_AUTH_PAUSED, 0.);
	}
	return 0;
fail:
	record_validator_free(v);
	config_conn_free(cfg);
	return r;
}

void connection_drain(struct connection *c, bool stop_after_ack)
{
	c->draining = true;
	c->stop_after_ack = stop_after_ack;
	/*
	 * Removed by a reload: the open batch goes on to its end (paused, it stays paused, and a
	 * reload that adds the connection back cures it). Stopping: what waits ends here.
	 */
	if (stop_after_ack && (c->state == CS_AUTH_PAUSED || c->state == CS_RETRY_WAIT || c->state == CS_RATE_WAIT ||
			       c->state == CS_SETTLE_WAIT || c->state == CS_RESUME_WAIT)) {
		/* Nothing is in flight: the journal holds the batch, the restart resumes it. */
		ev_timer_stop(c->env.loop, &c->timer);
		c->left_open += c->active;
		end_batch(c);
	}
	notify_changed(c);
}

void connection_revive(struct connection *c)
{
	c->draining = false;
	c->stop_after_ack = false;
	next_soon(c);
}

int connection_scan(struct connection *c)
{
	return intake_scan(&c->in);
}

/* The intake queued files: start work from the loop, not from inside its callback. */
static void intake_ready(void *userdata)
{
	struct connection *c = userdata;

	if (!c->active && c->state == CS_IDLE)
		next_soon(c);
}

int connection_adopt(struct connection *c, const struct journal_batch *b)
{
	struct journal_batch *n = realloc(c->adopted, (c->n_adopted + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	c->adopted = n;
	c->adopted[c->n_adopted++] = *b;
	return 0;
}

int connection_release_orphans(struct connection *c)
{
	int wfd = conn_workfd(c), dfd = workfiles_dir(&c->wf), fd;
	const struct journal_range *dmg;
	bool damaged = journal_damage(c->env.journal, &dmg) > 0;
	struct dirent *de;
	DIR *d;

	if (wfd < 0 || dfd < 0)
		return wfd < 0 ? wfd : dfd;
	if ((fd = dup(wfd)) < 0)
		return -errno;
	if (!(d = fdopendir(fd))) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		char *dash, *end, dst[LAYOUT_NAME_MAX + 1];
		uint64_t id;
		int r;

		if (de->d_name[0] == '.')
			continue;
		id = strtoull(de->d_name, &end, 10);
		dash = end;
		if (dash == de->d_name || *dash != '-')
			continue;
		if (journal_file_live(c->env.journal, id))
			continue;
		/* Renamed but never journaled: nothing of it was sent. Hand it back in its place. */
		snprintf(dst, sizeof(dst), "%s", dash + 1);
		r = spool_move_at(wfd, de->d_name, dfd, dst);
		if (r == -EEXIST) {
			snprintf(dst, sizeof(dst), "%s", de->d_name);
			r = spool_move_at(wfd, de->d_name, dfd, dst);
		}
		if (r < 0)
			conn_log(c, LOG_LVL_ERROR, -1, "%s: in .work/ before a restart: cannot put it back: %s",
				 dash + 1, strerror(-r));
		else if (damaged)
			conn_log(c, LOG_LVL_WARNING, -1, "%s: in %s/.work/, but no record of the damaged journal names it: back "
				 "in the spool as %s, to go up in a new batch (if a request of it left before, its batch "
				 "stays open at the server: its batch_uuid was in the damaged bytes)", dash + 1, c->wf.dir, dst);
		else
			conn_log(c, LOG_LVL_INFO, -1, "%s: taken before a restart but never sent: back in the spool as %s",
				 dash + 1, dst);
	}
	closedir(d);
	return 0;
}

/* ---- construction ---- */

int connection_new(struct connection **out, const struct conn_env *env, const struct conn_config *src)
{
	struct connection *c = calloc(1, sizeof(*c));
	const struct conn_config *cfg;
	struct upload_client_opts uo;
	char *url = NULL;
	sd_id128_t seed;
	int r = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->env = *env;
	c->fd = -1;
	if ((r = config_conn_dup(src, &c->cfg)) < 0) {
		free(c);
		return r;
	}
	cfg = c->cfg;
	c->wf.dirfd = c->wf.workfd = -1;
	/* Own copies: a reload frees the configuration the environment's strings came from. */
	c->env.spool_dir = c->env.state_dir = NULL;
	if (!(c->state_dir = strdup(env->state_dir)) ||
	    (r = workfiles_init(&c->wf, env->spool_dir, env->state_dir, cfg->name)) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < PIPELINE; i++)
		if (chunk_init(&c->chunk[i], CONFIG_MAX_BATCH_RECORDS) < 0)
			goto fail;
	if (chunk_init(&c->slice, CONFIG_MAX_BATCH_RECORDS) < 0)
		goto fail;
	if ((r = record_validator_new(&c->validator, cfg->primary_key, cfg->required_fields, cfg->n_required_fields)) < 0)
		goto fail;
	record_validator_set_max_depth(c->validator, cfg->max_depth);
	if ((r = catalog_new(&c->catalog, CATALOG_FIELDS_MAX)) < 0)
		goto fail;
	if (asprintf(&c->catalog_path, "%s/fields/%s.catalog", env->state_dir, cfg->name) < 0) {
		c->catalog_path = NULL;
		r = -ENOMEM;
		goto fail;
	}
	{
		size_t bad = 0;
		int lr = catalog_load(c->catalog, c->catalog_path, &bad);

		if (lr < 0 && lr != -ENOENT)
			log_warning("%s: field catalog %s unreadable (line %zu: %s): starting a new one", cfg->name,
				    c->catalog_path, bad, strerror(-lr));
	}
	for (int i = 0; i < PIPELINE; i++)
		if ((r = catalog_new(&c->chunk_fields[i], CATALOG_FIELDS_MAX)) < 0)
			goto fail;
	if ((r = catalog_new(&c->member_fields, CATALOG_FIELDS_MAX)) < 0)
		goto fail;
	if (asprintf(&url, "%s/connections/%s/upload_data", cfg->base_url, cfg->uuid) < 0) {
		url = NULL;
		r = -ENOMEM;
		goto fail;
	}
	client_opts(cfg, url, &uo);
	if ((r = upload_client_new(&c->client, env->upload, &uo, on_response, c)) < 0)
		goto fail;
	c->limiter = upload_limiter_get(env->upload, cfg->api_key, cfg->rate_limit_requests,
					cfg->rate_limit_window_seconds);
	if (!c->limiter) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = spool_mkdirs(c->wf.dir, 0770)) < 0) {
		log_error("%s: cannot create %s: %s", cfg->name, c->wf.dir, strerror(-r));
		goto fail;
	}
	if ((r = intake_init(&c->in, env->loop, &c->wf, cfg->name, env->settle_seconds, intake_ready, c)) < 0) {
		log_error("%s: cannot watch %s: %s", cfg->name, c->wf.dir, strerror(-r));
		goto fail;
	}
	if ((r = worker_new(&c->worker, env->loop, ahead_done, c)) < 0)
		goto fail;
	ev_timer_init(&c->timer, timer_cb, 0., 0.);
	c->timer.data = c;
	ev_timer_init(&c->kick, kick_cb, 0., 0.);
	c->kick.data = c;
	if (sd_id128_randomize(&seed) < 0)
		seed.qwords[0] = (uint64_t)time(NULL);
	c->rng = seed.qwords[0] | 1;
	{
		const struct conn_totals *js = totals_find(env->totals, cfg->name);

		if (js)
			c->persist = *js;
		snprintf(c->persist.connection, sizeof(c->persist.connection), "%s", cfg->name);
	}
	free(url);
	*out = c;
	return 0;
fail:
	free(url);
	connection_free(c);
	return r;
}

void connection_free(struct connection *c)
{
	if (!c)
		return;
	drop_pending(c);
	if (c->env.loop) {
		ev_timer_stop(c->env.loop, &c->timer);
		ev_timer_stop(c->env.loop, &c->kick);
	}
	intake_release(&c->in);
	if (c->active)
		end_batch(c);
	if (c->catalog && c->env.loop)
		save_catalog(c, true);
	worker_free(c->worker);
	catalog_free(c->catalog);
	for (int i = 0; i < PIPELINE; i++)
		catalog_free(c->chunk_fields[i]);
	catalog_free(c->member_fields);
	free(c->catalog_path);
	upload_client_free(c->client);
	record_validator_free(c->validator);
	for (int i = 0; i < PIPELINE; i++) {
		chunk_release(&c->chunk[i]);
		free(c->rej[i].buf);
	}
	chunk_release(&c->slice);
	for (size_t i = 0; i < c->cap_members; i++)
		free(c->members[i].rej.buf);
	free(c->members);
	source_free(c->reader);
	free(c->adopted);
	free(c->state_dir);
	free(c->last_record.buf);
	config_conn_free(c->cfg);
	workfiles_release(&c->wf);
	free(c);
}
