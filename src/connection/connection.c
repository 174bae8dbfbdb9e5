/* connection: one Data Connection: its spool and queue of files, the batches it runs one at a time, reloads, pauses and stops. */
#include "connection/connection.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch/batch.h"
#include "record/record_check.h"
#include "spool/spool.h"
#include "spool/spool_intake.h"
#include "spool/spool_queue.h"
#include "spool/spool_work.h"
#include "state/state_catalog.h"
#include "state/state_catalog_file.h"
#include "state/state_history.h"
#include "util/fileio.h"
#include "util/layout.h"
#include "util/log.h"
#include "util/timer.h"
#include "wire/wire_ratelimit.h"

enum conn_state {
	CS_IDLE,                /* running batches, or nothing to do */
	CS_AUTH_PAUSED,         /* 401/403: waiting for a reload or the slow timer */
	CS_RESUME_WAIT,         /* a journaled batch could not be opened for now (EMFILE, EIO...): the timer retries */
};

/* Field names kept per connection: a connection with a key per customer must not grow without bound. */
#define CATALOG_FIELDS_MAX 1000

/* The catalog is saved at most this often (seconds), and at exit. */
#define CATALOG_SAVE_INTERVAL 5.0

struct connection {
	struct conn_env env;
	char *name;
	/*
	 * Owned copies. cfg is what the open batch runs on (destination, cut, validator); a reload
	 * that arrives during a batch waits in next_cfg, with its validator ready, for the batch's end.
	 */
	struct conn_config *cfg;
	struct conn_config *next_cfg;
	struct record_check *next_validator;
	char *state_dir;
	struct workfiles wf;            /* the files in its custody: .work/, rejected/, failed/, done/ */
	struct intake in;               /* its spool directory: the queue of ready files, the watch */
	struct upload_client *client;
	struct ratelimit *limiter;
	struct record_check *validator;
	struct batch batch;             /* the batch in flight, if batch_active() */
	/*
	 * Top-level field names uploaded, for `dcsyncd formula`: noted where records are cut, counted
	 * here when their request is acknowledged, so a request cut again after a restart, or cut
	 * ahead and never sent, counts once or not at all.
	 */
	struct catalog *catalog;
	char *catalog_path;
	double catalog_saved;
	bool catalog_dirty;
	bool catalog_warned;
	enum conn_state state;
	bool draining;
	bool orphans_released;          /* .work/ looked through for files never journaled (needs the directory) */
	unsigned left_open;             /* batches a stop left to the journal, for the next start */
	struct journal_batch *adopted;  /* live batches from the journal, resumed first */
	size_t n_adopted;
	ev_timer timer;
	ev_timer kick;                  /* starts the next batch from the loop, not from deep in a callback */
	struct conn_stats stats;
	struct conn_totals persist;     /* totals across restarts, for `dcsyncd status` */
	struct history *history;        /* its run history, for `dcsyncd history` and `status` */
};

static void begin_next(struct connection *c);
static void apply_pending(struct connection *c);


static void conn_log(const struct connection *c, enum log_level lvl, long status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Every message names the connection first and carries the structured fields for journald. */
static void conn_log(const struct connection *c, enum log_level lvl, long status, const char *fmt, ...)
{
	struct log_ctx ctx = batch_log_ctx(&c->batch, status);
	va_list ap;

	va_start(ap, fmt);
	log_vconn(lvl, &ctx, fmt, ap);
	va_end(ap);
}

const char *connection_name(const struct connection *c) { return c->name; }
const struct conn_stats *connection_stats(struct connection *c)
{
	c->stats.oldest_queued_ns = spool_queue_oldest(&c->in.queue);
	c->stats.files_refused = c->in.refused;
	return &c->stats;
}
const struct conn_totals *connection_totals(const struct connection *c) { return &c->persist; }
size_t connection_queued(const struct connection *c)
{
	return spool_intake_pending(&c->in) + c->n_adopted + batch_has_carry(&c->batch);
}
bool connection_blocked(const struct connection *c) { return c->state == CS_AUTH_PAUSED; }
bool connection_unusable(const struct connection *c) { return !spool_intake_usable(&c->in); }
bool connection_busy(const struct connection *c) { return batch_active(&c->batch) || c->state != CS_IDLE || c->left_open; }
bool connection_rate_waiting(const struct connection *c) { return batch_rate_waiting(&c->batch); }

unsigned connection_rate_budget(const struct connection *c, unsigned *used)
{
	*used = wire_ratelimit_used(c->limiter, ev_now(c->env.loop));
	return wire_ratelimit_budget(c->limiter);
}

bool connection_idle(const struct connection *c)
{
	if (batch_active(&c->batch) || c->state != CS_IDLE)
		return false;
	return c->draining || connection_queued(c) == 0;
}

/*
 * The one place the connection starts to wait: the state says for what, the one timer brings
 * it back to timer_cb (a negative @delay: only a reload or a stop does).
 */
static void wait_in(struct connection *c, enum conn_state state, double delay)
{
	static const char *const names[] = { "idle", "paused", "resume wait" };

	/* A journaled batch waits to be resumed only while no batch runs. */
	assert(state != CS_RESUME_WAIT || !batch_active(&c->batch));
	if (c->state != state)
		conn_log(c, LOG_LVL_DEBUG, -1, "%s -> %s%s", names[c->state], names[state], delay < 0 ? "" : " (timer)");
	c->state = state;
	timer_arm(c->env.loop, &c->timer, delay);
}

static void notify_changed(struct connection *c)
{
	if (c->env.changed)
		c->env.changed(c->env.userdata);
}

static bool same_destination(const struct conn_config *a, const struct conn_config *b)
{
	return !strcmp(a->base_url, b->base_url) && !strcmp(a->uuid, b->uuid);
}

static void next_soon(struct connection *c)
{
	timer_arm(c->env.loop, &c->kick, 0.);
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
	(void)layout_path(dir, sizeof(dir), LAYOUT_FIELDS, NULL, c->state_dir, NULL);
	if ((r = fileio_mkdirs(dir, 0750)) < 0 || (r = state_catalog_file_save(c->catalog, c->catalog_path)) < 0)
		/* Not conn_log: the last save comes after batch_release, whose context names nothing. */
		log_warning("%s: cannot save the field catalog %s: %s", c->name, c->catalog_path, strerror(-r));
	c->catalog_saved = ev_now(c->env.loop);
	c->catalog_dirty = false;
	if (state_catalog_truncated(c->catalog) && !c->catalog_warned) {
		conn_log(c, LOG_LVL_WARNING, -1, "the field catalog holds its maximum of %d names; %" PRIu64
			 " occurrences of further names are only counted", CATALOG_FIELDS_MAX, state_catalog_overflow(c->catalog));
		c->catalog_warned = true;
	}
}

/* The limiter's state for `dcsyncd status`, recorded when it changes (synced by the daemon's tick). */
static void persist_rate(void *userdata, bool waiting)
{
	struct connection *c = userdata;
	uint64_t budget = wire_ratelimit_budget(c->limiter);

	if (c->persist.rate_budget == budget && c->persist.rate_waiting == waiting)
		return;
	c->persist.rate_budget = budget;
	c->persist.rate_waiting = waiting;
	state_totals_put_live(c->env.totals, &c->persist);
}

/* Record the last error for `status`; made durable now if the journal can be written at all. */
static void persist_error(struct connection *c, long status, const char *what)
{
	char text[LAYOUT_NAME_MAX + 512];

	c->persist.last_error = (int64_t)time(NULL);
	c->persist.last_error_status = status;
	/* Truncation is fine: the log has the whole message. */
	snprintf(text, sizeof(text), "%s%s%s", batch_open_name(&c->batch), batch_active(&c->batch) ? ": " : "", what);
	snprintf(c->persist.last_error_text, sizeof(c->persist.last_error_text), "%.*s",
		 (int)sizeof(c->persist.last_error_text) - 1, text);
	(void)state_totals_put(c->env.totals, &c->persist);
}


/* The one place an error is noted: for the status line and metrics, and (with @what) for `status`. */
static void note_error(void *userdata, long status, const char *what)
{
	struct connection *c = userdata;

	c->stats.last_error_time = ev_now(c->env.loop);
	c->stats.last_error_status = status;
	if (what)
		persist_error(c, status, what);
}

static void auth_pause(void *userdata, long status)
{
	struct connection *c = userdata;

	if (batch_active(&c->batch) && c->next_cfg && !same_destination(c->cfg, c->next_cfg)) {
		/* The batch can only finish where it started, and those keys are refused there. */
		char why[512];

		snprintf(why, sizeof(why), "the API refused the keys (HTTP %ld) at the batch's destination (%s, connection "
			 "%s), and a reload moved [connection %s] elsewhere: the batch cannot finish where it started",
			 status, c->cfg->base_url, c->cfg->uuid, c->cfg->name);
		batch_fail(&c->batch, status, why, NULL);
		return;
	}
	conn_log(c, LOG_LVL_ERROR, status,
	     "the API refused the keys (HTTP %ld): fix api_key and brand_key of [connection %s], then reload "
	     "(systemctl reload dcsyncd); files stay in %s", status, c->cfg->name, c->wf.dir);
	note_error(c, status, "the API refused the keys");
	batch_release_carry(&c->batch);
	if (batch_untouched(&c->batch))
		batch_release_files(&c->batch, status, "the API refused the keys: handed back to the spool");
	/* --once does not wait for keys that may never be fixed. */
	wait_in(c, CS_AUTH_PAUSED, c->env.once ? -1 : c->cfg->retry_max_seconds);
	notify_changed(c);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct connection *c = w->data;

	(void)loop;
	(void)revents;
	switch (c->state) {
	case CS_RESUME_WAIT:
		wait_in(c, CS_IDLE, -1);
		begin_next(c);
		break;
	case CS_AUTH_PAUSED:
		conn_log(c, LOG_LVL_INFO, -1, "trying the keys again");
		wait_in(c, CS_IDLE, -1);
		if (batch_active(&c->batch))
			batch_send_again(&c->batch);
		else
			begin_next(c);
		break;
	default:
		break;
	}
}

static void begin_next(struct connection *c)
{
	/* Its directory cannot be used yet: its journaled batches and files wait for it. */
	if (!spool_intake_usable(&c->in))
		return;
	while (!batch_active(&c->batch) && c->state == CS_IDLE && !c->draining) {
		if (c->n_adopted) {
			struct journal_batch b = c->adopted[0];

			memmove(c->adopted, c->adopted + 1, --c->n_adopted * sizeof(*c->adopted));
			if (batch_resume(&c->batch, &b, c->cfg, c->validator, c->client, c->limiter) == -EAGAIN) {
				/* Its place is still allocated: back to the front of the queue, tried again later. */
				memmove(c->adopted + 1, c->adopted, c->n_adopted++ * sizeof(*c->adopted));
				c->adopted[0] = b;
				wait_in(c, CS_RESUME_WAIT, c->cfg->retry_max_seconds);
			}
			continue;
		}
		if (!batch_has_carry(&c->batch) && !spool_intake_has_next(&c->in))
			break;
		if (batch_start(&c->batch, c->cfg, c->validator, c->client, c->limiter) < 0 && !batch_active(&c->batch))
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
	r = wire_upload_client_configure(c->client, &uo);
	free(url);
	return r;
}

/* Make @cfg, with its ready validator @v, the connection's own: only between batches. Takes both. */
static int apply_config(struct connection *c, struct conn_config *cfg, struct record_check *v)
{
	struct ratelimit *l;
	int r;

	if ((r = configure_client(c, cfg)) < 0)
		return r;
	l = wire_ratelimit_get(wire_upload_ratelimits(c->env.upload), cfg->api_key, cfg->rate_limit_requests, cfg->rate_limit_window_seconds);
	if (l)
		c->limiter = l;
	/* A cut ahead uses the old validator, which points into the old configuration. */
	batch_wait_cut(&c->batch);
	record_check_free(c->validator);
	c->validator = v;               /* each cut points it at the catalog to note names in */
	config_conn_free(c->cfg);
	c->cfg = cfg;
	return 0;
}

static void drop_pending(struct connection *c)
{
	config_conn_free(c->next_cfg);
	record_check_free(c->next_validator);
	c->next_cfg = NULL;
	c->next_validator = NULL;
}

/* A batch ended: a reload that waited for it applies now. */
static void apply_pending(struct connection *c)
{
	int r;

	if (!c->next_cfg || batch_active(&c->batch))
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
	struct record_check *v = NULL;
	int r;

	/* Everything that can fail happens before anything changes: a refused reload changes nothing. */
	if ((r = config_conn_dup(src, &cfg)) < 0 ||
	    (r = record_check_new(&v, cfg->primary_key, cfg->required_fields, cfg->n_required_fields)) < 0)
		goto fail;
	record_check_set_max_depth(v, cfg->max_depth);
	if (!batch_active(&c->batch)) {
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
				 "destination applies", batch_open_name(&c->batch), batch_open_uuid(&c->batch), c->cfg->base_url, c->cfg->uuid);
		drop_pending(c);
		c->next_cfg = cfg;
		c->next_validator = v;
	}
	c->env.after_upload = after;
	batch_set_after_upload(&c->batch, after);
	if (c->state == CS_AUTH_PAUSED) {
		conn_log(c, LOG_LVL_INFO, -1, "configuration reloaded: trying the keys again");
		wait_in(c, CS_AUTH_PAUSED, 0.);
	}
	return 0;
fail:
	record_check_free(v);
	config_conn_free(cfg);
	return r;
}

void connection_drain(struct connection *c, bool stop_after_ack)
{
	c->draining = true;
	batch_set_stop_after_ack(&c->batch, stop_after_ack);
	/*
	 * Removed by a reload: the open batch goes on to its end (paused, it stays paused, and a
	 * reload that adds the connection back cures it). Stopping: what waits ends here.
	 */
	if (stop_after_ack && (c->state != CS_IDLE || batch_stoppable(&c->batch))) {
		/* Nothing is in flight: the journal holds the batch, the restart resumes it. */
		wait_in(c, CS_IDLE, -1);
		batch_stop(&c->batch);
	}
	notify_changed(c);
}

void connection_revive(struct connection *c)
{
	c->draining = false;
	batch_set_stop_after_ack(&c->batch, false);
	next_soon(c);
}

int connection_scan(struct connection *c)
{
	return spool_intake_scan(&c->in);
}

/* The intake queued files: start work from the loop, not from inside its callback. */
static void intake_ready(void *userdata)
{
	struct connection *c = userdata;

	if (!c->orphans_released)
		(void)connection_release_orphans(c);    /* the directory was not usable at start-up */
	if (!batch_active(&c->batch) && c->state == CS_IDLE)
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

/* ---- what the batch reports ---- */

static void on_batch_ended(void *userdata, enum batch_end how)
{
	struct connection *c = userdata;

	apply_pending(c);
	if (how == BATCH_END_STOPPED)
		c->left_open++;
	if (how != BATCH_END_HELD)
		notify_changed(c);
	if (how == BATCH_END_NEXT)
		next_soon(c);
}

static void on_batch_finished(void *userdata, const struct history_entry *e)
{
	struct connection *c = userdata;

	/* A record, not recovery state: a write that fails is logged by the history and retried at the next end. */
	(void)state_history_put(c->history, e, c->cfg->history_entries);
	/* Handed back, nothing of it counts: it goes up again, whole, in another batch. */
	if (e->outcome == HISTORY_HANDED_BACK)
		return;
	c->persist.records_sent += e->records_sent;
	c->persist.records_rejected += e->records_rejected;
	c->persist.records_unchanged += e->records_unchanged;
	c->persist.requests += e->requests;
	if (e->outcome == HISTORY_FAILED) {
		c->persist.files_failed += e->files;
		note_error(c, e->http_status, e->reason);
		return;
	}
	c->persist.files_done += e->files;
	c->persist.last_success = (int64_t)time(NULL);
	/* The file's records the API now holds, sent or unchanged: what a dump far smaller than usual is told by. */
	c->persist.last_records = e->records_sent + e->records_unchanged;
	(void)state_totals_put(c->env.totals, &c->persist);
	save_catalog(c, false);
}

static void on_batch_fields(void *userdata, struct catalog *acked)
{
	struct connection *c = userdata;

	(void)state_catalog_merge(c->catalog, acked);
	c->catalog_dirty = true;
	save_catalog(c, false);
}


static const struct batch_ops batch_ops = {
	.ended = on_batch_ended,
	.finished = on_batch_finished,
	.fields = on_batch_fields,
};

int connection_release_orphans(struct connection *c)
{
	if (!spool_intake_usable(&c->in))
		return 0;       /* once it is: intake_ready */
	c->orphans_released = true;
	return batch_release_orphans(&c->batch);
}

/* ---- construction ---- */

int connection_new(struct connection **out, const struct conn_env *env, const struct conn_config *src)
{
	struct connection *c = calloc(1, sizeof(*c));
	const struct conn_config *cfg;
	struct upload_client_opts uo;
	char *url = NULL;
	int r = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->env = *env;
	if ((r = config_conn_dup(src, &c->cfg)) < 0) {
		free(c);
		return r;
	}
	cfg = c->cfg;
	c->wf.dirfd = c->wf.workfd = -1;
	/* Own copies: a reload frees the configuration the environment's strings came from. */
	c->env.spool_dir = c->env.state_dir = NULL;
	if (!(c->state_dir = strdup(env->state_dir)) || !(c->name = strdup(cfg->name)) ||
	    (r = spool_work_init(&c->wf, env->spool_dir, env->state_dir, cfg->name)) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	if ((r = record_check_new(&c->validator, cfg->primary_key, cfg->required_fields, cfg->n_required_fields)) < 0)
		goto fail;
	record_check_set_max_depth(c->validator, cfg->max_depth);
	if ((r = state_catalog_new(&c->catalog, CATALOG_FIELDS_MAX)) < 0)
		goto fail;
	{
		char path[PATH_MAX];

		if ((r = layout_path(path, sizeof(path), LAYOUT_CATALOG, env->spool_dir, env->state_dir, cfg->name)) < 0)
			goto fail;
		if (!(c->catalog_path = strdup(path))) {
			r = -ENOMEM;
			goto fail;
		}
	}
	{
		size_t bad = 0;
		int lr = state_catalog_file_load(c->catalog, c->catalog_path, &bad);

		if (lr < 0 && lr != -ENOENT)
			log_warning("%s: field catalog %s unreadable (line %zu: %s): starting a new one", cfg->name,
				    c->catalog_path, bad, strerror(-lr));
	}
	if (asprintf(&url, "%s/connections/%s/upload_data", cfg->base_url, cfg->uuid) < 0) {
		url = NULL;
		r = -ENOMEM;
		goto fail;
	}
	client_opts(cfg, url, &uo);
	if ((r = wire_upload_client_new(&c->client, env->upload, &uo, batch_on_response, &c->batch)) < 0)
		goto fail;
	c->limiter = wire_ratelimit_get(wire_upload_ratelimits(env->upload), cfg->api_key, cfg->rate_limit_requests,
					cfg->rate_limit_window_seconds);
	if (!c->limiter) {
		r = -ENOMEM;
		goto fail;
	}
	/* A directory that cannot be used yet is not an error here: the intake waits for it, alone. */
	if ((r = spool_intake_init(&c->in, env->loop, &c->wf, cfg->name, env->settle_seconds, intake_ready, c)) < 0) {
		log_error("%s: cannot watch %s: %s", cfg->name, c->wf.dir, strerror(-r));
		goto fail;
	}
	if (env->open_recheck_seconds > 0)
		spool_intake_set_open_recheck(&c->in, env->open_recheck_seconds);
	{
		const struct batch_env be = {
			.name = c->name,
			.loop = env->loop,
			.journal = env->journal,
			.wf = &c->wf,
			.in = &c->in,
			.stats = &c->stats,
			.state_dir = c->state_dir,
			.settle_seconds = env->settle_seconds,
			.after_upload = env->after_upload,
			.report = { .auth_refused = auth_pause, .error = note_error, .rate = persist_rate, .userdata = c },
		};

		if ((r = batch_init(&c->batch, &be, CATALOG_FIELDS_MAX, &batch_ops, c)) < 0)
			goto fail;
	}
	if ((r = state_history_open(&c->history, env->state_dir, cfg->name)) < 0)
		goto fail;
	ev_timer_init(&c->timer, timer_cb, 0., 0.);
	c->timer.data = c;
	ev_timer_init(&c->kick, kick_cb, 0., 0.);
	c->kick.data = c;
	{
		const struct conn_totals *js = state_totals_find(env->totals, cfg->name);

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
	/* The batch first: a cut ahead reads through the intake's and workfiles' fds. */
	batch_release(&c->batch);
	spool_intake_release(&c->in);
	if (c->catalog && c->env.loop)
		save_catalog(c, true);
	state_catalog_free(c->catalog);
	free(c->catalog_path);
	state_history_free(c->history);
	wire_upload_client_free(c->client);
	record_check_free(c->validator);
	free(c->adopted);
	free(c->state_dir);
	free(c->name);
	config_conn_free(c->cfg);
	spool_work_release(&c->wf);
	free(c);
}
