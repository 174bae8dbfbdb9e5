/* daemon_metrics: the Prometheus text-format file, replaced atomically. */
#include "daemon/daemon_metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "connection/connection.h"
#include "util/fileio.h"

struct family {
	const char *name, *type, *help;
};

static const struct family families[] = {
	{ "dcsyncd_records_sent_total", "counter", "Records sent, by HTTP status of the request's answer (0: no answer)." },
	{ "dcsyncd_requests_total", "counter", "Requests sent, by HTTP status (0: no answer)." },
	{ "dcsyncd_retries_total", "counter", "Requests retried after a transient failure." },
	{ "dcsyncd_rejected_records_total", "counter", "Records rejected, locally or by the server." },
	{ "dcsyncd_failed_files_total", "counter", "Files moved to failed/." },
	{ "dcsyncd_uploaded_files_total", "counter", "Files whose batch completed." },
	{ "dcsyncd_spool_files", "gauge", "Files waiting in the spool." },
	{ "dcsyncd_oldest_queued_file_age_seconds", "gauge", "Age (by mtime) of the oldest file waiting." },
	{ "dcsyncd_last_success_timestamp_seconds", "gauge", "Unix time of the last acknowledged request." },
	{ "dcsyncd_rate_limit_budget", "gauge", "Requests the API key may send per window now (0: no limit)." },
	{ "dcsyncd_rate_limit_waiting", "gauge", "1 while a request waits for the client-side rate limit." },
	{ "dcsyncd_paused", "gauge", "1 while the API refuses the connection's keys." },
	/* What alerts need (packaging/monitoring/dcsyncd.rules.yml). */
	{ "dcsyncd_files_total", "counter", "Files whose batch ended, by outcome: archived (completed), failed (to failed/), handed_back (to the spool, keys refused)." },
	{ "dcsyncd_last_completed_timestamp_seconds", "gauge", "Unix time the connection's last batch completed (kept across restarts; 0: never)." },
	{ "dcsyncd_last_completed_records", "gauge", "Records of the connection's last completed batch, acknowledged or left out as unchanged (kept across restarts)." },
	{ "dcsyncd_batch_open", "gauge", "1 while a batch is open (sending, retrying, waiting or paused)." },
	{ "dcsyncd_journal_durable", "gauge", "1 while the journal can be made durable; 0 after a write or fsync of it failed (uploads are held)." },
	{ "dcsyncd_records_unchanged_total", "counter", "Records left out by skip_unchanged: the API holds them." },
};

/* Families of the daemon, not of a connection: one sample each. */
#define FAM_JOURNAL_DURABLE 16

static void emit(FILE *f, size_t fam, struct connection *const *conns, size_t n, bool journal_durable, double now)
{
	if (fam == FAM_JOURNAL_DURABLE) {
		fprintf(f, "%s %d\n", families[fam].name, journal_durable);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct conn_stats *s = connection_stats(conns[i]);
		const struct conn_totals *t = connection_totals(conns[i]);
		const char *name = connection_name(conns[i]);
		unsigned used;
		double v;

		switch (fam) {
		case 0:
		case 1:
			for (size_t k = 0; k < sizeof(s->by_status) / sizeof(s->by_status[0]) && s->by_status[k].requests; k++) {
				char st[24] = "other";

				if (s->by_status[k].status != STATUS_OTHER)
					snprintf(st, sizeof(st), "%ld", s->by_status[k].status);
				fprintf(f, "%s{connection=\"%s\",status=\"%s\"} %" PRIu64 "\n", families[fam].name, name,
					st, fam == 0 ? s->by_status[k].records : s->by_status[k].requests);
			}
			break;
		case 12:
			/* Every outcome from the start: an alert's increase() needs the 0 before the first one. */
			fprintf(f, "%s{connection=\"%s\",outcome=\"archived\"} %" PRIu64 "\n%s{connection=\"%s\",outcome="
				"\"failed\"} %" PRIu64 "\n%s{connection=\"%s\",outcome=\"handed_back\"} %" PRIu64 "\n",
				families[fam].name, name, s->files_done, families[fam].name, name, s->files_failed,
				families[fam].name, name, s->files_released);
			break;
		default:
			/* One sample per connection: only the value differs between these families. */
			switch (fam) {
			case 2: v = (double)s->retries; break;
			case 3: v = (double)s->records_rejected; break;
			case 4: v = (double)s->files_failed; break;
			case 5: v = (double)s->files_done; break;
			case 6: v = (double)connection_queued(conns[i]); break;
			/* An mtime ahead of our clock (cp -p off a fast host) has waited no time at all. */
			case 7: v = s->oldest_queued_ns ? now - (double)s->oldest_queued_ns / 1e9 : 0.0; v = v > 0 ? v : 0.0; break;
			/* ev_now is wall-clock based in libev, so it is a usable timestamp. */
			case 8: v = s->last_success; break;
			case 9: v = connection_rate_budget(conns[i], &used); break;
			case 10: v = connection_rate_waiting(conns[i]); break;
			case 11: v = connection_blocked(conns[i]); break;
			case 13: v = (double)t->last_success; break;
			case 14: v = (double)t->last_records; break;
			case 15: v = connection_busy(conns[i]); break;
			case 17: v = (double)s->records_unchanged; break;
			default: v = 0; break;
			}
			fprintf(f, "%s{connection=\"%s\"} %.17g\n", families[fam].name, name, v);
			break;
		}
	}
}

int daemon_metrics_write(const char *path, struct connection *const *conns, size_t n_conns, bool journal_durable, double now)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int r = 0;

	if (!f)
		return -errno;
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[i].name, families[i].help, families[i].name,
			families[i].type);
		emit(f, i, conns, n_conns, journal_durable, now);
	}
	if (fclose(f) != 0)
		r = -ENOMEM;
	/*
	 * The collector reads whole files: the rename makes the new one appear at once. Not made
	 * durable: it is written again every few seconds, and a crash loses nothing of it. The
	 * directory is often the collector's, writable by others: never written through a link.
	 * 0644 whatever the umask: node-exporter reads it as its own user (prometheus), who is not
	 * in the daemon's group; it holds nothing node-exporter does not publish anyway.
	 */
	if (r == 0)
		r = fileio_replace(path, buf, len, 0644, false);
	free(buf);
	return r;
}
