/* daemon: the top-level context: config, loop, journal, connections, signals, systemd protocol. */
#include "build-config.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>
#include <ev.h>
#include <systemd/sd-daemon.h>

#include "config/config.h"
#include "connection/connection.h"
#include "daemon/daemon_metrics.h"
#include "spool/spool.h"
#include "state/state_journal.h"
#include "state/state_totals.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/timer.h"
#include "wire/wire_upload.h"

struct daemon {
	struct daemon_opts opts;
	struct ev_loop *loop;
	struct config *cfg;
	struct journal *journal;
	struct totals *totals;
	struct upload *upload;
	struct connection **conns;
	size_t n_conns;
	struct connection **retiring;   /* removed by a reload; freed once their batch is done */
	size_t n_retiring;
	ev_signal sig_term, sig_int, sig_hup;
	ev_timer drain_timer, status_timer, watchdog_timer, prune_timer;
	bool draining;
	bool aborted;           /* a second signal, or the drain timed out */
	bool scanned;
	double started;
	double metrics_written;
	bool metrics_error_logged;
	bool totals_error_logged;
	int exit_status;
};

/* ---- progress and status ---- */

static void totals(const struct daemon *d, struct conn_stats *t, size_t *queued)
{
	memset(t, 0, sizeof(*t));
	*queued = 0;
	for (size_t i = 0; i < d->n_conns; i++) {
		const struct conn_stats *s = connection_stats(d->conns[i]);

		t->files_done += s->files_done;
		t->files_failed += s->files_failed;
		t->files_refused += s->files_refused;
		t->records_sent += s->records_sent;
		t->records_rejected += s->records_rejected;
		t->records_unchanged += s->records_unchanged;
		t->requests += s->requests;
		t->retries += s->retries;
		t->bytes_sent += s->bytes_sent;
		if (s->last_error_time > t->last_error_time) {
			t->last_error_time = s->last_error_time;
			t->last_error_status = s->last_error_status;
		}
		*queued += connection_queued(d->conns[i]);
	}
}

/* One line for STATUS= and the terminal: queue, each batch in flight, rate, last error. */
static void status_line(struct daemon *d, char *buf, size_t len)
{
	struct conn_stats t;
	size_t queued, n;
	double now = ev_now(d->loop), el = now - d->started;

	totals(d, &t, &queued);
	n = (size_t)snprintf(buf, len, "%zu file(s) queued · %" PRIu64 " records sent", queued, t.records_sent);
	for (size_t i = 0; i < d->n_conns && n < len; i++) {
		const struct conn_stats *s = connection_stats(d->conns[i]);

		if (s->file[0])
			n += (size_t)snprintf(buf + n, len - n, " · %s: %s %" PRIu64 "%%", connection_name(d->conns[i]),
					      s->file, s->file_size ? s->file_offset * 100 / s->file_size : 100);
		if (connection_blocked(d->conns[i]) && n < len)
			n += (size_t)snprintf(buf + n, len - n, " · %s: paused (keys refused)", connection_name(d->conns[i]));
		if (connection_rate_waiting(d->conns[i]) && n < len) {
			unsigned used, budget = connection_rate_budget(d->conns[i], &used);

			n += (size_t)snprintf(buf + n, len - n, " · %s: waiting for the rate limit (%u/%u used)",
					      connection_name(d->conns[i]), used, budget);
		}
	}
	if (n < len && el > 0.5)
		n += (size_t)snprintf(buf + n, len - n, " · %.0f records/s", (double)t.records_sent / el);
	if (n < len && t.last_error_time > 0)
		snprintf(buf + n, len - n, " · last error %.0f s ago: %s%ld", now - t.last_error_time,
			 t.last_error_status ? "HTTP " : "network ", t.last_error_status);
}

static void status_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = w->data;
	char raw[1024], line[1024];

	(void)loop;
	(void)revents;
	/* What `dcsyncd status` reads must not lag while the daemon idles (ARCHIVED, totals). */
	if (state_journal_dirty(d->journal))
		(void)state_journal_sync(d->journal);
	{
		int r = state_totals_flush(d->totals, false);

		if (r < 0 && !d->totals_error_logged)
			log_error("cannot write the totals in %s: %s", d->cfg->state_dir, strerror(-r));
		d->totals_error_logged = r < 0;
	}
	/* 1.9: the timer's own 2 s period jitters; --once ticks every 0.25 s and is throttled here. */
	if (d->cfg->metrics_file && ev_now(d->loop) - d->metrics_written >= 1.9) {
		int r = daemon_metrics_write(d->cfg->metrics_file, d->conns, d->n_conns, state_journal_durable(d->journal), ev_now(d->loop));

		d->metrics_written = ev_now(d->loop);
		if (r < 0 && !d->metrics_error_logged)
			log_error("cannot write metrics_file %s: %s", d->cfg->metrics_file, strerror(-r));
		d->metrics_error_logged = r < 0;
	}
	status_line(d, raw, sizeof(raw));
	/* The line names exporters' files: one newline in a name would be an assignment of its own. */
	log_defang(line, sizeof(line), raw);
	if (d->opts.progress)
		fprintf(stderr, "\r\033[K%s", line);
	else
		sd_notifyf(0, "STATUS=%s", line);
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	/* Sent from the loop itself: a wedged loop stops the pings and systemd restarts us. */
	sd_notify(0, "WATCHDOG=1");
}

/* ---- lifecycle ---- */

/*
 * Before main: from the first instant of dcsyncd's own code a SIGHUP (a reload asked for too
 * early) must not take the default action, exit. The loop's handler replaces this in
 * daemon_run; the commands (status, formula...) never reload and do not mind.
 */
__attribute__((constructor)) static void ignore_early_sighup(void)
{
	signal(SIGHUP, SIG_IGN);
}

static void prune_retiring(struct daemon *d)
{
	size_t k = 0;

	for (size_t i = 0; i < d->n_retiring; i++) {
		if (connection_idle(d->retiring[i])) {
			log_info("%s: removed from the configuration, its batch in flight is done: stopped",
				 connection_name(d->retiring[i]));
			connection_free(d->retiring[i]);
		} else {
			d->retiring[k++] = d->retiring[i];
		}
	}
	d->n_retiring = k;
}

static void prune_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	prune_retiring(w->data);
}

/* --once: nothing left to do (every connection idle, or paused by the server). */
static bool once_done(const struct daemon *d)
{
	for (size_t i = 0; i < d->n_conns; i++)
		if (!connection_blocked(d->conns[i]) && !connection_unusable(d->conns[i]) && !connection_idle(d->conns[i]))
			return false;
	return true;
}

static void maybe_finish(struct daemon *d)
{
	bool all_idle = true, blocked = false;

	if (!d->scanned)
		return;
	for (size_t i = 0; i < d->n_conns; i++) {
		if (connection_blocked(d->conns[i]) || connection_unusable(d->conns[i]))
			blocked = true;
		else if (!connection_idle(d->conns[i]))
			all_idle = false;
	}
	/* A removed connection still sending is waited for as much as any other. */
	for (size_t i = 0; i < d->n_retiring; i++)
		if (!connection_blocked(d->retiring[i]) && !connection_idle(d->retiring[i]))
			all_idle = false;
	if (d->draining ? all_idle : (d->opts.once && all_idle)) {
		if (blocked && d->opts.once)
			d->exit_status = 1;
		ev_break(d->loop, EVBREAK_ALL);
	}
}

static void on_changed(void *userdata)
{
	struct daemon *d = userdata;

	/* Freeing here would free the caller: retiring connections are pruned from the loop. */
	if (d->n_retiring && !ev_is_active(&d->prune_timer))
		ev_timer_start(d->loop, &d->prune_timer);
	maybe_finish(d);
}

static void drain_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = w->data;

	(void)revents;
	log_warning("drain timeout reached: stopping with requests in flight (the journal resumes them)");
	d->aborted = true;
	ev_break(loop, EVBREAK_ALL);
}

static void begin_drain(struct daemon *d, const char *why)
{
	if (d->draining) {
		log_warning("%s again: stopping now (the journal resumes what was in flight)", why);
		d->aborted = true;
		ev_break(d->loop, EVBREAK_ALL);
		return;
	}
	log_info("%s: taking no new files, letting requests in flight finish (up to %.0f s)", why,
		 d->cfg->drain_timeout_seconds);
	sd_notify(0, "STOPPING=1");
	d->draining = true;
	timer_arm(d->loop, &d->drain_timer, d->cfg->drain_timeout_seconds);
	for (size_t i = 0; i < d->n_conns; i++)
		connection_drain(d->conns[i], true);
	for (size_t i = 0; i < d->n_retiring; i++)
		connection_drain(d->retiring[i], true);
	maybe_finish(d);
}

static struct conn_env conn_env_of(struct daemon *d, const struct config *cfg);

/*
 * SIGHUP: a bad new file is refused and the old configuration keeps running. Connections
 * that stay get the new keys for their next request; new ones start; removed ones finish
 * the batch in flight and stop.
 */
/* Take the connection called @name out of @v (NULL where it was): the one object for that spool. */
static struct connection *take_named(struct connection **v, size_t n, const char *name)
{
	for (size_t k = 0; k < n; k++) {
		if (v[k] && !strcmp(connection_name(v[k]), name)) {
			struct connection *c = v[k];

			v[k] = NULL;
			return c;
		}
	}
	return NULL;
}

static void reload(struct daemon *d)
{
	struct connection **nconns, **retiring;
	struct config *ncfg;
	struct conn_env env;
	char err[1024];
	size_t n = 0, n_retiring = 0;
	int r;

	sd_notify(0, "RELOADING=1");
	r = config_load(d->opts.config_path, &ncfg, err, sizeof(err));
	if (r < 0) {
		log_error("reload refused, the running configuration stays: %s", err);
		goto out;
	}
	if (strcmp(ncfg->spool_dir, d->cfg->spool_dir) || strcmp(ncfg->state_dir, d->cfg->state_dir)) {
		log_error("reload refused, the running configuration stays: %s: spool_dir and state_dir "
			  "change only with a restart", ncfg->path);
		config_free(ncfg);
		goto out;
	}
	nconns = calloc(ncfg->n_conns, sizeof(*nconns));
	retiring = calloc(d->n_retiring + d->n_conns + 1, sizeof(*retiring));
	if (!nconns || !retiring) {
		log_error("reload refused: out of memory");
		free(nconns);
		free(retiring);
		config_free(ncfg);
		goto out;
	}
	env = conn_env_of(d, ncfg);
	for (size_t i = 0; i < ncfg->n_conns; i++) {
		const char *name = ncfg->conns[i].name;
		struct connection *c = take_named(d->conns, d->n_conns, name);

		if (!c && (c = take_named(d->retiring, d->n_retiring, name))) {
			/* Removed by an earlier reload and still finishing: the same object takes up again. */
			log_info("%s: back in the configuration: taking files again", name);
			connection_revive(c);
		}
		if (c && (r = connection_reconfigure(c, &ncfg->conns[i], ncfg->after_upload)) < 0) {
			log_error("%s: cannot apply the new configuration (%s): keeping the old one", name, strerror(-r));
		} else if (!c) {
			if ((r = connection_new(&c, &env, &ncfg->conns[i])) < 0) {
				log_error("%s: cannot set up: %s", name, strerror(-r));
				continue;
			}
			log_info("%s: new connection", name);
		}
		nconns[n++] = c;
	}
	for (size_t k = 0; k < d->n_retiring; k++)
		if (d->retiring[k])
			retiring[n_retiring++] = d->retiring[k];
	for (size_t k = 0; k < d->n_conns; k++) {
		if (!d->conns[k])
			continue;
		log_info("%s: removed from the configuration: finishing its batch in flight, then stopping "
			 "(its files stay in the spool and the journal)", connection_name(d->conns[k]));
		retiring[n_retiring++] = d->conns[k];
	}
	free(d->conns);
	d->conns = nconns;
	d->n_conns = n;
	free(d->retiring);
	d->retiring = retiring;
	d->n_retiring = n_retiring;
	/* Drained only now: draining calls back into the daemon, which must see the new lists. */
	for (size_t k = 0; k < d->n_retiring; k++)
		connection_drain(d->retiring[k], false);
	/* Every connection holds its own copy of its section: the old configuration can go. */
	config_free(d->cfg);
	d->cfg = ncfg;
	log_set_level(ncfg->log_level);
	for (size_t i = 0; i < d->n_conns; i++) {
		connection_scan(d->conns[i]);
		connection_kick(d->conns[i]);
	}
	log_info("configuration reloaded: %zu connection(s)", d->n_conns);
	prune_retiring(d);
out:
	sd_notify(0, "READY=1");
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	(void)loop;
	(void)revents;
	if (w->signum == SIGHUP) {
		if (!d->draining)
			reload(d);
		return;
	}
	begin_drain(d, w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static struct conn_env conn_env_of(struct daemon *d, const struct config *cfg)
{
	return (struct conn_env){
		.loop = d->loop,
		.journal = d->journal,
		.totals = d->totals,
		.upload = d->upload,
		.spool_dir = cfg->spool_dir,
		.state_dir = cfg->state_dir,
		.after_upload = cfg->after_upload,
		.settle_seconds = cfg->settle_seconds,
		.open_recheck_seconds = cfg->open_recheck_seconds,
		.once = d->opts.once,
		.changed = on_changed,
		.userdata = d,
	};
}

static int setup_connections(struct daemon *d)
{
	struct conn_env env = conn_env_of(d, d->cfg);
	int r;

	d->conns = calloc(d->cfg->n_conns, sizeof(*d->conns));
	if (!d->conns)
		return -ENOMEM;
	for (size_t i = 0; i < d->cfg->n_conns; i++) {
		if ((r = connection_new(&d->conns[i], &env, &d->cfg->conns[i])) < 0) {
			log_error("%s: cannot set up: %s", d->cfg->conns[i].name, strerror(-r));
			return r;
		}
		d->n_conns++;
		if (d->cfg->conns[i].tls_verify_disabled)
			log_warning("%s: TLS certificate verification is DISABLED (tls_verify_insecure_disable): "
				    "anyone on the path can read the keys and the data", d->cfg->conns[i].name);
		if (!strncmp(d->cfg->conns[i].base_url, "http://", 7) &&
		    strncmp(d->cfg->conns[i].base_url, "http://127.0.0.1", 16) &&
		    strncmp(d->cfg->conns[i].base_url, "http://localhost", 16))
			log_warning("%s: base_url is plain http: keys and data travel unencrypted", d->cfg->conns[i].name);
	}
	/* Replay: every live batch goes back to its connection and runs before new files. */
	for (size_t i = 0; i < state_journal_count(d->journal); i++) {
		const struct journal_batch *b = state_journal_at(d->journal, i);
		bool found = false;

		for (size_t k = 0; k < d->n_conns; k++) {
			if (!strcmp(connection_name(d->conns[k]), b->connection)) {
				if ((r = connection_adopt(d->conns[k], b)) < 0)
					return r;
				found = true;
			}
		}
		if (!found)
			log_warning("journal: batch %s of %s for connection '%s', which is no longer configured: "
				    "kept with its file until the connection returns", b->uuid, b->name, b->connection);
	}
	for (size_t i = 0; i < d->n_conns; i++) {
		connection_release_orphans(d->conns[i]);
		if ((r = connection_scan(d->conns[i])) < 0)
			return r;
	}
	return 0;
}

/* Batches open (in flight, retrying, paused), removed connections' included. */
static size_t in_flight(const struct daemon *d)
{
	size_t n = 0;

	for (size_t i = 0; i < d->n_conns; i++)
		n += connection_busy(d->conns[i]);
	for (size_t i = 0; i < d->n_retiring; i++)
		n += connection_busy(d->retiring[i]) || connection_queued(d->retiring[i]);
	return n;
}

static bool all_done(const struct daemon *d)
{
	return in_flight(d) == 0;
}

static void print_summary(struct daemon *d)
{
	double el = ev_now(d->loop) - d->started;

	if (d->opts.progress)
		fprintf(stderr, "\r\033[K");
	for (size_t i = 0; i < d->n_conns; i++) {
		const struct conn_stats *s = connection_stats(d->conns[i]);

		char unchanged[48] = "";

		if (s->records_unchanged)
			snprintf(unchanged, sizeof(unchanged), ", %" PRIu64 " unchanged", s->records_unchanged);
		printf("%s: %" PRIu64 " file(s) done, %" PRIu64 " failed, %" PRIu64 " records sent, %" PRIu64
		       " rejected, %" PRIu64 " requests, %" PRIu64 " retries%s%s\n", connection_name(d->conns[i]),
		       s->files_done, s->files_failed, s->records_sent, s->records_rejected, s->requests, s->retries,
		       unchanged, connection_blocked(d->conns[i]) ? ", PAUSED: the API refused the keys"
		       : connection_unusable(d->conns[i]) ? ", WAITING: its directory cannot be used" : "");
	}
	{
		struct conn_stats t;
		size_t queued;

		totals(d, &t, &queued);
		printf("total: %" PRIu64 " records in %.2f s (%.0f records/s), %" PRIu64 " file(s) failed, %" PRIu64
		       " records rejected\n", t.records_sent, el, el > 0 ? (double)t.records_sent / el : 0.0, t.files_failed,
		       t.records_rejected);
		if (d->opts.once && (t.files_failed || t.records_rejected || t.files_refused))
			d->exit_status = 1;
		if (d->opts.once && (queued || !all_done(d))) {
			/* Stopped early (SIGTERM) or paused: the caller must not take "nothing left" for granted. */
			printf("not finished: %zu file(s) still queued or in a batch; the next run resumes them\n", queued +
			       in_flight(d));
			d->exit_status = 1;
		}
	}
	fflush(stdout);
}

int daemon_run(const struct daemon_opts *opts)
{
	struct daemon d = { .opts = *opts };
	char err[1024];
	uint64_t usec = 0;
	int r;

	sigset_t stop_signals, old_mask;

	/*
	 * Signals are handled from the first instant: held back until the loop's handlers are in,
	 * then handled from the loop once start-up is done (a SIGHUP during the replay is a reload
	 * after it, not the default action's exit).
	 */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGHUP);
	sigprocmask(SIG_BLOCK, &stop_signals, &old_mask);
	/* What dcsyncd creates (error.json, metrics, archives copied across filesystems) is not world-readable. */
	umask(umask(0) | 027);
	d.loop = ev_default_loop(EVFLAG_AUTO);
	if (!d.loop) {
		fprintf(stderr, "cannot set up the event loop\n");
		return 1;
	}
	ev_signal_init(&d.sig_term, signal_cb, SIGTERM);
	ev_signal_init(&d.sig_int, signal_cb, SIGINT);
	ev_signal_init(&d.sig_hup, signal_cb, SIGHUP);
	d.sig_term.data = d.sig_int.data = d.sig_hup.data = &d;
	ev_signal_start(d.loop, &d.sig_term);
	ev_signal_start(d.loop, &d.sig_int);
	ev_signal_start(d.loop, &d.sig_hup);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	r = config_load(opts->config_path, &d.cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "%s\n", err);
		d.exit_status = 2;
		goto out;
	}
	log_set_level(d.cfg->log_level);
	if ((r = fileio_mkdirs(d.cfg->state_dir, 0750)) < 0 || (r = fileio_mkdirs(d.cfg->spool_dir, 01770)) < 0) {
		log_error("cannot create the state or spool directory: %s", strerror(-r));
		d.exit_status = 1;
		goto out;
	}
	if ((r = state_journal_open(&d.journal, d.cfg->state_dir, NULL)) < 0) {
		log_error("cannot open the journal in %s: %s", d.cfg->state_dir, strerror(-r));
		d.exit_status = 1;
		goto out;
	}
	if ((r = state_totals_open(&d.totals, d.cfg->state_dir, TOTALS_INTERVAL)) < 0) {
		log_error("cannot open the totals in %s: %s", d.cfg->state_dir, strerror(-r));
		d.exit_status = 1;
		goto out;
	}
	if ((r = state_journal_compact(d.journal, true)) < 0)
		log_warning("journal compaction failed: %s (continuing with the journal as it is)", strerror(-r));
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("curl_global_init failed");
		d.exit_status = 1;
		goto out;
	}
	d.started = ev_now(d.loop);
	if ((r = wire_upload_new(&d.upload, d.loop)) < 0) {
		log_error("cannot set up the event loop: %s", strerror(-r));
		d.exit_status = 1;
		goto out;
	}
	if ((r = setup_connections(&d)) < 0) {
		d.exit_status = 1;
		goto out;
	}
	ev_timer_init(&d.prune_timer, prune_cb, 0., 0.);
	d.prune_timer.data = &d;
	ev_timer_init(&d.drain_timer, drain_timer_cb, 0., 0.);
	d.drain_timer.data = &d;
	ev_timer_init(&d.status_timer, status_cb, 0.25, opts->progress ? 0.25 : 2.0);
	d.status_timer.data = &d;
	ev_timer_start(d.loop, &d.status_timer);
	if (sd_watchdog_enabled(0, &usec) > 0) {
		ev_timer_init(&d.watchdog_timer, watchdog_cb, 0., (double)usec / 2e6);
		d.watchdog_timer.data = &d;
		ev_timer_start(d.loop, &d.watchdog_timer);
	}
	d.scanned = true;
	log_info("dcsyncd %s: %zu connection(s), spool %s%s", DCSYNCD_VERSION_STR, d.n_conns, d.cfg->spool_dir,
		 opts->once ? ", --once" : "");
	sd_notify(0, "READY=1\nSTATUS=started");
	for (size_t i = 0; i < d.n_conns; i++)
		connection_kick(d.conns[i]);
	/* ev_run() forgets a break requested before it starts: an idle --once must not enter it. */
	maybe_finish(&d);
	if (!(d.opts.once && once_done(&d)))
		ev_run(d.loop, 0);
	if (opts->once || d.draining)
		print_summary(&d);
	/* The last word for the collector: what was done up to the exit, not two seconds before. */
	if (d.cfg->metrics_file && (r = daemon_metrics_write(d.cfg->metrics_file, d.conns, d.n_conns, state_journal_durable(d.journal), ev_now(d.loop))) < 0)
		log_error("cannot write metrics_file %s: %s", d.cfg->metrics_file, strerror(-r));
out:
	if (d.journal && (r = state_journal_sync(d.journal)) < 0)
		log_error("journal: final sync failed: %s (the next start replays what is durable)", strerror(-r));
	for (size_t i = 0; i < d.n_conns; i++)
		connection_free(d.conns[i]);
	free(d.conns);
	for (size_t i = 0; i < d.n_retiring; i++)
		connection_free(d.retiring[i]);
	free(d.retiring);
	if (d.totals && (r = state_totals_flush(d.totals, true)) < 0)
		log_error("cannot write the totals in %s: %s", d.cfg->state_dir, strerror(-r));
	state_totals_free(d.totals);
	wire_upload_free(d.upload);
	if (d.loop) {
		ev_timer_stop(d.loop, &d.status_timer);
		ev_timer_stop(d.loop, &d.watchdog_timer);
		ev_timer_stop(d.loop, &d.drain_timer);
		ev_timer_stop(d.loop, &d.prune_timer);
		ev_signal_stop(d.loop, &d.sig_term);
		ev_signal_stop(d.loop, &d.sig_int);
		ev_signal_stop(d.loop, &d.sig_hup);
		ev_loop_destroy(d.loop);
		curl_global_cleanup();
	}
	state_journal_free(d.journal);
	config_free(d.cfg);
	return d.exit_status;
}
