/* cli_status: the `dcsyncd status` report, read from the journal, the totals and the spool (daemon running or not). */
#include "cli/cli_status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "record/record_source.h"
#include "spool/spool.h"
#include "state/state_history.h"
#include "state/state_journal.h"
#include "state/state_store.h"
#include "state/state_totals.h"
#include "util/jsonstr.h"
#include "util/layout.h"
#include "util/log.h"

struct dir_count {
	size_t files;
	time_t oldest;
	long foreign;           /* >= 0: the directory is this uid's, not the daemon's: not counted */
};

/*
 * Count eligible files in the spool (what 0) or all files but *.error.json in failed/ (1) or
 * rejected/ (2). Exporters can write in the connection directory: nothing is followed (no link,
 * no file opened), and failed/ and rejected/ are looked into only when they are the daemon's
 * user's (@owner), as the daemon makes them. Run as root, status must not read for exporters.
 */
static struct dir_count count_dir(int parentfd, const char *sub, int what, uid_t owner)
{
	struct dir_count dc = { .foreign = -1 };
	struct dirent *de;
	struct stat st;
	DIR *d = NULL;
	int fd;

	fd = parentfd < 0 ? -1 : openat(parentfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0)
		goto out;
	if (what && st.st_uid != owner) {
		dc.foreign = (long)st.st_uid;
		goto out;
	}
	if (!(d = fdopendir(fd)))
		goto out;
	fd = -1;
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (de->d_name[0] == '.')
			continue;
		if (what == 0 && !spool_name_eligible(de->d_name))
			continue;
		if (what == 1 && len > 11 && !strcmp(de->d_name + len - 11, ".error.json"))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		dc.files++;
		if (!dc.oldest || st.st_mtime < dc.oldest)
			dc.oldest = st.st_mtime;
	}
out:
	if (d)
		closedir(d);
	if (fd >= 0)
		close(fd);
	return dc;
}

static void when(char *buf, size_t len, int64_t t, time_t now)
{
	struct tm tm;
	char ts[32];

	if (!t) {
		snprintf(buf, len, "never");
		return;
	}
	gmtime_r(&(time_t){ (time_t)t }, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S UTC", &tm);
	snprintf(buf, len, "%s (%lld s ago)", ts, (long long)(now - t));
}

/* A JSON string of @s on @out: names and texts come from files and servers. */
static void json_str(FILE *out, const char *s)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;

	if (jsonstr_append(&buf, &len, &cap, s, strlen(s)) < 0)
		fputs("null", out);
	else
		fwrite(buf, 1, len, out);
	free(buf);
}

static void json_time(FILE *out, int64_t t)
{
	if (t)
		fprintf(out, "%" PRId64, t);
	else
		fputs("null", out);
}

/* What `status` tells of one configured connection: gathered once, printed as text or JSON. */
struct conn_status {
	const struct conn_config *c;
	const struct conn_totals *st;           /* NULL: none yet; valid while the totals (or journal) are open */
	char dir[4096];                         /* its spool directory */
	char faildir[4200];
	struct dir_count queued, failed, rejected;
	uint64_t rejected_records;
	uint64_t rate_budget;
	bool rate_waiting;
	struct history_entry *last_run;         /* its run history's last entry; NULL: none (or unreadable, said on stderr) */
	bool store_shown;                       /* skip_unchanged, or a store left from when it was on */
	bool store_keys_known;
	struct state_store_stats store;
};

static void gather_conn(const struct config *cfg, const struct conn_config *c, const struct journal *j,
			const struct totals *t, uid_t owner, struct conn_status *cs)
{
	int dirfd;

	cs->c = c;
	cs->st = t ? state_totals_find(t, c->name) : NULL;   /* none before the daemon first wrote them */
	(void)layout_path(cs->dir, sizeof(cs->dir), LAYOUT_SPOOL, cfg->spool_dir, cfg->state_dir, c->name);
	(void)layout_path(cs->faildir, sizeof(cs->faildir), LAYOUT_FAILED, cfg->spool_dir, cfg->state_dir, c->name);
	dirfd = open(cs->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	cs->queued = count_dir(dirfd, ".", 0, owner);
	cs->failed = count_dir(dirfd, "failed", 1, owner);
	cs->rejected = count_dir(dirfd, "rejected", 2, owner);
	if (dirfd >= 0)
		close(dirfd);
	/* The daemon's count, never the files': an exporter's link there must tell status nothing. */
	cs->rejected_records = cs->st ? cs->st->records_rejected : 0;
	cs->rate_budget = cs->st && cs->st->rate_budget ? cs->st->rate_budget : c->rate_limit_requests;
	cs->rate_waiting = cs->st && cs->st->rate_waiting;
	{
		size_t n = 0;
		int r = state_history_read(cfg->state_dir, c->name, 1, &cs->last_run, &n, NULL);

		if (r < 0 && r != -ENOENT)
			fprintf(stderr, "%s: cannot read its run history in %s/history: %s\n", c->name, cfg->state_dir,
				strerror(-r));
		char sdir[4200];

		snprintf(sdir, sizeof(sdir), "%s/store/%s", cfg->state_dir, c->name);
		state_store_peek(sdir, c->base_url, c->uuid, &cs->store, &cs->store_keys_known);
		cs->store_shown = c->skip_unchanged || cs->store.bytes;
	}
}

/* The journal's next batch from *k on that belongs to @conn (configured: true) or to no
 * configured connection (false); NULL after the last. */
static const struct journal_batch *next_batch(const struct config *cfg, struct journal *j, const char *conn,
					      size_t *k)
{
	while (j && *k < state_journal_count(j)) {
		const struct journal_batch *b = state_journal_at(j, (*k)++);

		if (conn ? !strcmp(b->connection, conn) : !config_find_conn(cfg, b->connection))
			return b;
	}
	return NULL;
}

/* A batch's bytes (its files' sizes) and how far they were read: several small files are read whole. */
static void batch_extent(const struct journal *j, const struct journal_batch *b, uint64_t *read, uint64_t *size)
{
	const struct journal_member *m;
	size_t n = state_journal_members(j, b->id, &m);

	*size = 0;
	for (size_t i = 0; i < n; i++)
		*size += m[i].ident.size;
	*read = n > 1 ? *size : b->offset;
}

/*
 * `dcsyncd status --json`: the same facts as the text, one object; the field names are stable
 * (documented in dcsyncd(8)); times are Unix seconds, null for never.
 */
static void json_conn(const struct conn_status *cs, const struct config *cfg, struct journal *j, time_t now,
		      bool first_conn, FILE *out)
{
	const struct conn_config *c = cs->c;
	const struct conn_totals *st = cs->st;
	const struct journal_batch *b;
	size_t k = 0;
	bool first = true;

	fputs(first_conn ? "{\"name\":" : ",{\"name\":", out);
	json_str(out, c->name);
	fputs(",\"uuid\":", out);
	json_str(out, c->uuid);
	fputs(",\"spool\":", out);
	json_str(out, cs->dir);
	fprintf(out, ",\"queued_files\":%zu,\"oldest_queued_seconds\":", cs->queued.files);
	if (cs->queued.files)
		fprintf(out, "%lld", (long long)(now - cs->queued.oldest));
	else
		fputs("null", out);
	fputs(",\"in_flight\":[", out);
	while ((b = next_batch(cfg, j, c->name, &k))) {
		uint64_t read, size;

		batch_extent(j, b, &read, &size);
		fputs(first ? "{\"file\":" : ",{\"file\":", out);
		first = false;
		json_str(out, b->name);
		fputs(",\"batch_uuid\":", out);
		json_str(out, b->uuid);
		fprintf(out, ",\"state\":\"%s\",\"requests_acknowledged\":%" PRIu32 ",\"records\":%" PRIu64
			",\"bytes_read\":%" PRIu64 ",\"bytes\":%" PRIu64 "}",
			b->state == BATCH_OPEN ? "open" : "completed", b->acks, b->records, read, size);
	}
	fprintf(out, "],\"failed_files\":%zu,\"rejected_records\":%" PRIu64 ",\"rejected_files\":%zu",
		cs->failed.files, cs->rejected_records, cs->rejected.files);
	fputs(",\"last_success\":", out);
	json_time(out, st ? st->last_success : 0);
	fputs(",\"last_error\":", out);
	if (st && st->last_error) {
		fprintf(out, "{\"time\":%" PRId64 ",\"http_status\":", st->last_error);
		if (st->last_error_status)
			fprintf(out, "%" PRId64, st->last_error_status);
		else
			fputs("null", out);
		fputs(",\"text\":", out);
		json_str(out, st->last_error_text);
		fputc('}', out);
	} else {
		fputs("null", out);
	}
	fputs(",\"rate_limit\":", out);
	if (c->rate_limit_requests)
		fprintf(out, "{\"requests\":%u,\"window_seconds\":%g,\"budget\":%" PRIu64 ",\"waiting\":%s}",
			c->rate_limit_requests, c->rate_limit_window_seconds, cs->rate_budget,
			cs->rate_waiting ? "true" : "false");
	else
		fputs("null", out);
	fputs(",\"store\":", out);
	if (cs->store_shown) {
		fprintf(out, "{\"bytes\":%" PRIu64 ",\"keys\":", cs->store.bytes);
		if (cs->store_keys_known)
			fprintf(out, "%" PRIu64 "}", cs->store.keys);
		else
			fputs("null}", out);
	} else {
		fputs("null", out);
	}
	fputs(",\"totals\":", out);
	if (st)
		fprintf(out, "{\"files_uploaded\":%" PRIu64 ",\"files_failed\":%" PRIu64 ",\"records_sent\":%" PRIu64
			",\"records_rejected\":%" PRIu64 ",\"records_unchanged\":%" PRIu64 ",\"requests\":%" PRIu64 "}",
			st->files_done, st->files_failed, st->records_sent, st->records_rejected, st->records_unchanged,
			st->requests);
	else
		fputs("null", out);
	fputs(",\"last_run\":", out);
	if (cs->last_run)
		(void)state_history_print_json(cs->last_run, out);
	else
		fputs("null", out);
	fputc('}', out);
}

/* A directory of the connection's that is not the daemon's: who owns it, and that it was not looked into. */
static void foreign_line(long uid, const char *dir, const char *sub, FILE *out)
{
	if (uid >= 0)
		fprintf(out, "  warning:      %s/%s/ is owned by uid %ld, not by the daemon's user: not looked into\n",
			dir, sub, uid);
}

static void text_conn(const struct conn_status *cs, const struct config *cfg, struct journal *j, time_t now,
		      FILE *out)
{
	const struct conn_config *c = cs->c;
	const struct conn_totals *st = cs->st;
	const struct journal_batch *b;
	size_t k = 0;
	char buf[128], shown[sizeof(b->name) * 4 + 8];

	fprintf(out, "%s (%s)\n", c->name, c->uuid);
	if (cs->queued.files)
		fprintf(out, "  queued:       %zu file(s), oldest %lld s old\n", cs->queued.files,
			(long long)(now - cs->queued.oldest));
	else
		fprintf(out, "  queued:       none\n");
	/* Names and error texts carry exporters' file names: escaped, as the log shows them. */
	while ((b = next_batch(cfg, j, c->name, &k))) {
		struct source_kind kind = { 0 };
		uint64_t read, size;

		batch_extent(j, b, &read, &size);
		log_defang(shown, sizeof(shown), b->name);
		/* A compressed file's offset counts decompressed bytes: no share of the file's size. */
		if (record_source_kind_of(b->name, &kind) == 0 && kind.comp != COMPRESSION_NONE)
			snprintf(buf, sizeof(buf), "%" PRIu64 " bytes read (decompressed) of %" PRIu64 " compressed",
				 read, size);
		else
			snprintf(buf, sizeof(buf), "%" PRIu64 "%% of %" PRIu64 " bytes", size ? read * 100 / size : 100, size);
		fprintf(out, "  in flight:    %s, batch %s, %s: %" PRIu32 " request(s) acknowledged, %" PRIu64
			" records, %s\n", shown, b->uuid, b->state == BATCH_OPEN ? "open" : "completed, archiving",
			b->acks, b->records, buf);
	}
	fprintf(out, "  failed:       %zu file(s)%s%s\n", cs->failed.files, cs->failed.files ? " in " : "",
		cs->failed.files ? cs->faildir : "");
	foreign_line(cs->failed.foreign, cs->dir, "failed", out);
	fprintf(out, "  rejected:     %" PRIu64 " record(s) in %zu file(s)\n", cs->rejected_records, cs->rejected.files);
	foreign_line(cs->rejected.foreign, cs->dir, "rejected", out);
	when(buf, sizeof(buf), st ? st->last_success : 0, now);
	fprintf(out, "  last success: %s\n", buf);
	when(buf, sizeof(buf), st ? st->last_error : 0, now);
	if (st && st->last_error) {
		log_defang(shown, sizeof(shown), st->last_error_text);
		fprintf(out, "  last error:   %s: %s%s%" PRId64 ", %s\n", buf, st->last_error_status ? "HTTP " : "",
			st->last_error_status ? "" : "no answer", st->last_error_status, shown);
	} else {
		fprintf(out, "  last error:   none\n");
	}
	if (c->rate_limit_requests)
		fprintf(out, "  rate limit:   %u requests / %g s per API key; budget now %" PRIu64 "%s\n",
			c->rate_limit_requests, c->rate_limit_window_seconds, cs->rate_budget,
			cs->rate_waiting ? ", a request is waiting for a slot" : ", no request waiting");
	else
		fprintf(out, "  rate limit:   off\n");
	if (st) {
		char unchanged[48] = "";

		/* Only where skip_unchanged is or was in use: the line stays as it was elsewhere. */
		if (st->records_unchanged || cs->store_shown)
			snprintf(unchanged, sizeof(unchanged), "%" PRIu64 " unchanged (not sent), ", st->records_unchanged);
		fprintf(out, "  totals:       %" PRIu64 " file(s) uploaded, %" PRIu64 " failed, %" PRIu64
			" records sent, %" PRIu64 " rejected, %s%" PRIu64 " requests\n", st->files_done, st->files_failed,
			st->records_sent, st->records_rejected, unchanged, st->requests);
	}
	if (cs->store_shown && cs->store_keys_known)
		fprintf(out, "  unchanged:    skipped by a store of %" PRIu64 " key(s), %" PRIu64 " bytes on disk\n",
			cs->store.keys, cs->store.bytes);
	else if (cs->store_shown)
		fprintf(out, "  unchanged:    skipped by a store of %" PRIu64 " bytes on disk (its keys: not readable here)\n",
			cs->store.bytes);
	if (cs->last_run) {
		char line[16384];

		state_history_format_text(cs->last_run, line, sizeof(line));
		fprintf(out, "  last run:     %s\n", line);
	}
}

int cli_status_print(const struct config *cfg, bool json, FILE *out)
{
	struct journal *j = NULL;
	struct totals *t = NULL;
	time_t now = time(NULL);
	const struct journal_batch *b;
	struct stat sd;
	size_t k = 0;
	int r = state_journal_open_readonly(&j, cfg->state_dir);

	if (r < 0 && r != -ENOENT) {
		fprintf(stderr, "cannot read the journal in %s: %s\n", cfg->state_dir, strerror(-r));
		return r;
	}
	/* None yet, or damaged (said on stderr, and set aside by the daemon's next start): no totals. */
	r = state_totals_open_readonly(&t, cfg->state_dir);
	if (r < 0 && r != -ENOENT && r != -EBADMSG) {
		fprintf(stderr, "cannot read the totals in %s: %s\n", cfg->state_dir, strerror(-r));
		state_journal_free(j);
		return r;
	}
	if (json) {
		fprintf(out, "{\"format\":1,\"time\":%lld,\"config\":", (long long)now);
		json_str(out, cfg->path);
		fputs(",\"state_dir\":", out);
		json_str(out, cfg->state_dir);
		fprintf(out, ",\"journal\":%s,\"connections\":[", j ? "true" : "false");
	} else if (!j) {
		fprintf(out, "no journal in %s yet: dcsyncd has not run with this state_dir\n", cfg->state_dir);
	}
	/* The daemon's user: the owner of its state directory (as it is made, and as the unit runs). */
	if (stat(cfg->state_dir, &sd) < 0)
		sd.st_uid = geteuid();
	for (size_t i = 0; i < cfg->n_conns; i++) {
		struct conn_status cs;

		gather_conn(cfg, &cfg->conns[i], j, t, sd.st_uid, &cs);
		if (json)
			json_conn(&cs, cfg, j, now, i == 0, out);
		else
			text_conn(&cs, cfg, j, now, out);
		free(cs.last_run);
	}
	if (json)
		fputs("],\"unconfigured\":[", out);
	/* Batches the journal keeps for a connection no longer in the configuration. */
	for (bool first = true; (b = next_batch(cfg, j, NULL, &k)); first = false) {
		if (!json) {
			fprintf(out, "%s (no longer configured): batch %s of %s kept with its file\n", b->connection,
				b->uuid, b->name);
			continue;
		}
		fputs(first ? "{\"connection\":" : ",{\"connection\":", out);
		json_str(out, b->connection);
		fputs(",\"batch_uuid\":", out);
		json_str(out, b->uuid);
		fputs(",\"file\":", out);
		json_str(out, b->name);
		fputc('}', out);
	}
	r = 0;
	if (json) {
		fputs("]}\n", out);
		r = ferror(out) ? -EIO : 0;
	}
	state_journal_free(j);
	state_totals_free(t);
	return r;
}
