/* cli_check: `dcsyncd check`: read files as the daemon would, through its own reader, validator and cut, and say what would go up. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "record/record_check.h"
#include "record/record_cut.h"
#include "record/record_ndjson.h"
#include "record/record_source.h"
#include "state/state_catalog.h"
#include "state/state_store.h"
#include "util/jsonstr.h"

/* Rejected lines listed per file; the rest are only counted. */
#define CHECK_LIST_MAX 20
/* Field names listed per file, as the daemon's field catalog bounds them. */
#define CHECK_FIELDS_MAX 1000

struct check_reject {
	uint64_t line;
	char *reason;
};

/* What one file would give. Filled by check_file, printed by print_text / print_json. */
struct check_result {
	uint64_t records;               /* valid records the cut would send */
	uint64_t rejected;              /* lines that would go to rejected/ */
	struct check_reject list[CHECK_LIST_MAX];
	size_t n_list;
	char *failed;                   /* the file would go to failed/: why (NULL: it would not) */
	/*
	 * skip_unchanged: what the store (read-only) says would be sent; unknown when this user
	 * cannot read it (an exporter) or there is none to read. Neither is shown without skip_unchanged.
	 */
	bool has_would_send;
	uint64_t would_send;
	const char *unknown_why;        /* skip_unchanged, the store unread: why the count is unknown */
	const char *all_why;            /* skip_unchanged, no store for the destination: why all would be sent */
};

/* skip_unchanged, read-only: an estimate (a key twice in one file counts as the store says each time). */
struct check_store {
	struct store *s;
	const char *all_why;    /* no store of this destination (none yet, another's): everything is sent */
	uint32_t ttl;
	uint64_t now;
};

static int check_decide(void *userdata, const char *rec, size_t len, const char *key, size_t key_len, uint64_t pos)
{
	struct check_store *cs = userdata;
	unsigned char canon[STATE_KEY_MAX];
	size_t cl;

	if (state_key_canon(key, key_len, canon, &cl) < 0)
		return 1;
	return state_store_decide(cs->s, canon, cl, state_key_hash_record(rec, len), cs->ttl, pos, cs->now) == STORE_SKIP ? 0 : 1;
}

static void usage(FILE *f)
{
	fputs("Usage: dcsyncd -c FILE check [--json] [CONNECTION] FILE...\n", f);
}

static int on_reject(void *userdata, uint64_t lineno, const char *reason, const char *data, size_t len)
{
	struct check_result *res = userdata;

	(void)data;
	(void)len;
	res->rejected++;
	if (res->n_list < CHECK_LIST_MAX) {
		char *dup = strdup(reason);

		if (!dup)
			return -ENOMEM;
		res->list[res->n_list].line = lineno;
		res->list[res->n_list++].reason = dup;
	}
	return 0;
}

static void result_clear(struct check_result *res)
{
	for (size_t i = 0; i < res->n_list; i++)
		free(res->list[i].reason);
	free(res->failed);
	memset(res, 0, sizeof(*res));
}

/*
 * Cut @path into the connection's request bodies, as a batch does, and throw them away. 0 with
 * @res filled (res->failed set when the daemon would fail the file), or a negative errno when
 * the file cannot be opened at all (then res->failed says why too).
 */
static int check_file(const struct conn_config *cc, const char *path, struct source **src,
		      struct record_check *v, struct record_body *body, struct catalog *fields,
		      struct check_store *store, struct check_result *res)
{
	const char *base = strrchr(path, '/');
	const struct cut_skip skip = { .decide = check_decide, .userdata = store };
	const struct cut_params params = {
		.batch_uuid = "00000000-0000-0000-0000-000000000000",
		.ttl_seconds = cc->ttl_seconds,
		.max_records = cc->batch_records,
		.max_bytes = cc->batch_bytes,
		.skip = store->s ? &skip : NULL,
	};
	struct source_kind kind;
	struct stat st;
	int fd = -1, r;

	base = base ? base + 1 : path;
	state_catalog_clear(fields);
	if (record_source_kind_of(base, &kind) < 0) {
		r = -EINVAL;
		res->failed = strdup("the name says no format the daemon reads (.ndjson, .jsonl, .csv, .tsv; .gz, .zst)");
		goto out;
	}
	/* Non-blocking: a FIFO or a device given by name must not hang the export job that checks it. */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		res->failed = strdup(strerror(-r));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		res->failed = strdup(strerror(-r));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		res->failed = strdup("not a regular file: the daemon takes only regular files");
		goto out;
	}
	r = record_source_open(src, fd, base, &cc->csv, 0, 1,
			       &(const struct source_limits){ cc->max_record_bytes, cc->zstd_window_max_mib });
	if (store->s && r >= 0 && (r = state_store_txn_begin(store->s)) < 0)
		store->s = NULL;        /* the count becomes unknown below */
	res->has_would_send = store->s != NULL || store->all_why != NULL;
	res->all_why = store->s ? NULL : store->all_why;
	while (r >= 0) {
		r = record_cut_next(body, &params, *src, v, on_reject, res);
		if (r < 0)
			break;
		res->records += body->n_records + body->unchanged;
		res->would_send += body->n_records;
		if (body->last)
			break;
	}
	if (store->s)
		state_store_txn_abort(store->s);
	if (r == -EBADMSG || (r < 0 && r != -ENOMEM)) {
		const char *why = *src ? record_source_error(*src) : NULL;

		res->failed = strdup(why ? why : strerror(-r));
		r = 0;
	}
out:
	if (fd >= 0)
		close(fd);
	if (r < 0 && !res->failed)
		return r;
	return r == -ENOMEM ? r : 0;
}

static void print_text(FILE *out, const char *path, const struct check_result *res, struct catalog *fields)
{
	fprintf(out, "%s: %llu record(s) would go up", path, (unsigned long long)res->records);
	if (res->rejected)
		fprintf(out, ", %llu line(s) would be rejected", (unsigned long long)res->rejected);
	fputc('\n', out);
	if (res->has_would_send)
		fprintf(out, "  would send %llu of %llu (%s)\n", (unsigned long long)res->would_send,
			(unsigned long long)res->records, res->all_why ? res->all_why : "the others are unchanged");
	else if (res->unknown_why)
		fprintf(out, "  would send: unknown (skip_unchanged: %s)\n", res->unknown_why);
	for (size_t i = 0; i < res->n_list; i++)
		fprintf(out, "  line %llu: %s\n", (unsigned long long)res->list[i].line, res->list[i].reason);
	if (res->rejected > res->n_list)
		fprintf(out, "  ... and %llu more rejected line(s)\n", (unsigned long long)(res->rejected - res->n_list));
	if (res->failed)
		fprintf(out, "  the file would go to failed/: %s\n", res->failed);
	if (state_catalog_count(fields)) {
		fputs("  fields:", out);
		for (size_t i = 0; i < state_catalog_count(fields); i++) {
			const char *name;

			if (state_catalog_get(fields, i, &name, NULL, NULL) == 0) {
				char *q = NULL;
				size_t len = 0, cap = 0;

				/* Field names come from the exporter's data: quoted, control bytes escaped. */
				if (jsonstr_append(&q, &len, &cap, name, strlen(name)) == 0)
					fprintf(out, " %.*s", (int)len, q);
				free(q);
			}
		}
		fputc('\n', out);
	}
}

static int print_json(FILE *out, const char *conn, const char *path, const struct check_result *res,
		      struct catalog *fields)
{
	char *b = NULL;
	size_t len = 0, cap = 0;
	char num[64];
	int r;

#define RAW(s) jsonstr_raw(&b, &len, &cap, (s), strlen(s))
#define STR(s) jsonstr_append(&b, &len, &cap, (s), strlen(s))
	r = RAW("{\"connection\":");
	r = r ? r : STR(conn);
	r = r ? r : RAW(",\"file\":");
	r = r ? r : STR(path);
	snprintf(num, sizeof(num), ",\"records\":%llu,\"rejected\":%llu", (unsigned long long)res->records,
		 (unsigned long long)res->rejected);
	r = r ? r : RAW(num);
	if (res->has_would_send) {
		snprintf(num, sizeof(num), ",\"would_send\":%llu", (unsigned long long)res->would_send);
		r = r ? r : RAW(num);
	} else if (res->unknown_why) {
		r = r ? r : RAW(",\"would_send\":null");
	}
	r = r ? r : RAW(",\"rejected_lines\":[");
	for (size_t i = 0; i < res->n_list; i++) {
		snprintf(num, sizeof(num), "%s{\"line\":%llu,\"reason\":", i ? "," : "", (unsigned long long)res->list[i].line);
		r = r ? r : RAW(num);
		r = r ? r : STR(res->list[i].reason);
		r = r ? r : RAW("}");
	}
	r = r ? r : RAW("],\"failed\":");
	r = r ? r : (res->failed ? STR(res->failed) : RAW("null"));
	r = r ? r : RAW(",\"fields\":[");
	for (size_t i = 0; i < state_catalog_count(fields); i++) {
		const char *name;

		if (state_catalog_get(fields, i, &name, NULL, NULL) == 0) {
			r = r ? r : (i ? RAW(",") : 0);
			r = r ? r : STR(name);
		}
	}
	r = r ? r : RAW("]}\n");
#undef RAW
#undef STR
	if (r == 0)
		fwrite(b, 1, len, out);
	free(b);
	return r;
}

/* What may be a file to check: it exists, or its name says a format (its error is then the file's). */
static bool names_a_file(const char *arg)
{
	const char *base = strrchr(arg, '/');
	struct source_kind kind;

	return access(arg, F_OK) == 0 || record_source_kind_of(base ? base + 1 : arg, &kind) == 0;
}

int cli_check(const struct config *cfg, int argc, char **argv, FILE *out)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const struct conn_config *cc = NULL;
	struct record_check *v = NULL;
	struct catalog *fields = NULL;
	struct source *src = NULL;
	struct record_body body = { 0 };
	struct check_store store = { 0 };
	const char *unknown_why = NULL;
	bool json = false, body_ok = false;
	int ch, status = 2;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		if (ch != 'j')
			goto usage;
		json = true;
	}
	if (optind < argc && (cc = config_find_conn(cfg, argv[optind])) != NULL) {
		optind++;
	} else if (optind < argc && !names_a_file(argv[optind])) {
		/* Neither a connection nor a file: a mistyped connection, not a file of no format. */
		fprintf(stderr, "dcsyncd check: no connection '%s' in the configuration, and no such file\n", argv[optind]);
		goto usage;
	} else if (cfg->n_conns == 1) {
		cc = &cfg->conns[0];
	}
	if (!cc || optind >= argc) {
		if (!cc && optind < argc)
			fprintf(stderr, "dcsyncd check: name the connection: %zu are configured\n", cfg->n_conns);
		goto usage;
	}
	status = 1;
	if (record_check_new(&v, cc->primary_key, cc->required_fields, cc->n_required_fields) < 0 ||
	    state_catalog_new(&fields, CHECK_FIELDS_MAX) < 0 || record_cut_body_init(&body, cc->batch_records) < 0) {
		fprintf(stderr, "dcsyncd check: %s\n", strerror(ENOMEM));
		goto out;
	}
	body_ok = true;
	record_check_set_max_depth(v, cc->max_depth);
	record_check_set_catalog(v, fields);
	if (cc->skip_unchanged) {
		char dir[4200];
		int sr;

		snprintf(dir, sizeof(dir), "%s/store/%s", cfg->state_dir, cc->name);
		sr = state_store_open(dir, cc->base_url, cc->uuid, STORE_RDONLY, (uint64_t)cc->unchanged_resend_seconds, &store.s);
		/* Never a failure of the check: only the count is unknown. */
		store.all_why = sr == -ENOENT ? "no store yet: everything is sent"
				: sr == -ESTALE ? "the store is for another destination: everything is sent" : NULL;
		unknown_why = store.all_why ? NULL
			      : sr == -EACCES || sr == -EPERM ? "the store is not readable by this user (run it as the daemon's user)"
			      : sr < 0 ? "the store cannot be read" : NULL;
		store.ttl = cc->ttl_seconds <= 0 ? 0 : cc->ttl_seconds > UINT32_MAX ? UINT32_MAX : (uint32_t)cc->ttl_seconds;
		store.now = (uint64_t)time(NULL);
	}
	status = 0;
	for (int i = optind; i < argc; i++) {
		struct check_result res = { 0 };

		res.unknown_why = unknown_why;
		if (check_file(cc, argv[i], &src, v, &body, fields, &store, &res) < 0) {
			fprintf(stderr, "dcsyncd check: %s: %s\n", argv[i], strerror(ENOMEM));
			result_clear(&res);
			status = 1;
			goto out;
		}
		if (res.rejected || res.failed)
			status = 1;
		if (json ? print_json(out, cc->name, argv[i], &res, fields) < 0 : (print_text(out, argv[i], &res, fields), 0))
			status = 1;
		result_clear(&res);
	}
	goto out;
usage:
	usage(stderr);
out:
	if (body_ok)
		record_cut_body_release(&body);
	state_store_close(store.s);
	record_source_free(src);
	state_catalog_free(fields);
	record_check_free(v);
	return status;
}
