/* cli_formula_cmd: `dcsyncd formula`: build, check and list Data Connection formulas from the field catalog. */
#include "cli/cli_formula_cmd.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/cli_formula.h"
#include "state/state_catalog.h"
#include "state/state_catalog_file.h"
#include "util/layout.h"

#define DEFAULT_KEY "[%CUSTOMER_ID%]"

static void usage(FILE *f)
{
	fputs("Usage: dcsyncd -c FILE formula CONNECTION FIELD [--key TAG] [--fallback TEXT] [--params P]\n"
	      "       dcsyncd -c FILE formula --check 'DC_…'\n"
	      "       dcsyncd -c FILE formula --list CONNECTION\n", f);
}

static int load_catalog(const struct config *cfg, const struct conn_config *cc, struct catalog **out)
{
	char path[4096];
	size_t bad = 0;
	int r;

	if ((r = state_catalog_new(out, 100000)) < 0)
		return r;
	(void)layout_path(path, sizeof(path), LAYOUT_CATALOG, cfg->spool_dir, cfg->state_dir, cc->name);
	r = state_catalog_file_load(*out, path, &bad);
	if (r == -EBADMSG)
		fprintf(stderr, "%s:%zu: the field catalog is damaged\n", path, bad);
	else if (r < 0 && r != -ENOENT)
		fprintf(stderr, "%s: %s\n", path, strerror(-r));
	return r == -ENOENT ? 0 : r;
}

static const struct conn_config *find_by_uuid(const struct config *cfg, const char *uuid)
{
	for (size_t i = 0; i < cfg->n_conns; i++)
		if (!strcasecmp(cfg->conns[i].uuid, uuid))
			return &cfg->conns[i];
	return NULL;
}

/* "field 'nmae' was never uploaded to products; closest: name, email" */
static void refuse_unknown_field(const struct conn_config *cc, struct catalog *cat, const char *field)
{
	size_t n = state_catalog_count(cat), k;
	const char **known = calloc(n ? n : 1, sizeof(*known));
	const char *close[5];

	fprintf(stderr, "field '%s' was never uploaded to connection %s", field, cc->name);
	if (!known) {
		fputc('\n', stderr);
		return;
	}
	for (size_t i = 0; i < n; i++)
		state_catalog_get(cat, i, &known[i], NULL, NULL);
	k = cli_formula_suggest(field, known, n, close, 5);
	if (k) {
		fputs("; closest known field(s):", stderr);
		for (size_t i = 0; i < k; i++)
			fprintf(stderr, "%s %s", i ? "," : "", close[i]);
	} else if (!n) {
		fputs(" (no field uploaded yet: the catalog fills as files go up)", stderr);
	}
	fputc('\n', stderr);
	free(known);
}

static int cmd_list(const struct config *cfg, const char *conn, FILE *out)
{
	const struct conn_config *cc = config_find_conn(cfg, conn);
	struct catalog *cat = NULL;
	int r;

	if (!cc) {
		fprintf(stderr, "no connection '%s' in %s\n", conn, cfg->path);
		return 1;
	}
	if ((r = load_catalog(cfg, cc, &cat)) < 0) {
		state_catalog_free(cat);
		return 1;
	}
	fprintf(out, "%-32s %12s  %s\n", "FIELD", "RECORDS", "LAST SEEN");
	for (size_t i = 0; i < state_catalog_count(cat); i++) {
		const char *name;
		uint64_t records;
		int64_t last;
		char when[32] = "-";
		struct tm tm;

		state_catalog_get(cat, i, &name, &records, &last);
		if (last && gmtime_r(&(time_t){ (time_t)last }, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
		fprintf(out, "%-32s %12" PRIu64 "  %s\n", name, records, when);
	}
	if (state_catalog_truncated(cat))
		fprintf(out, "(the catalog is full: %" PRIu64 " occurrences of further field names were only counted)\n",
			state_catalog_overflow(cat));
	if (!state_catalog_count(cat))
		fprintf(out, "(no field uploaded yet to %s)\n", cc->name);
	state_catalog_free(cat);
	return 0;
}

static int cmd_check(const struct config *cfg, const char *text, FILE *out)
{
	const struct conn_config *cc;
	struct catalog *cat = NULL;
	struct formula f = { 0 };
	char err[512];
	int status = 0;

	if (cli_formula_parse(text, &f, err, sizeof(err)) < 0) {
		fprintf(stderr, "not a valid formula: %s\n", err);
		return 1;
	}
	cc = find_by_uuid(cfg, f.uuid);
	if (cc)
		fprintf(out, "uuid:         %s  (connection %s)\n", f.uuid, cc->name);
	else
		fprintf(out, "uuid:         %s  (no configured connection)\n", f.uuid);
	fprintf(out, "primary key:  %s\n", f.key);
	fprintf(out, "parameters:   %s\n", f.params[0] ? f.params : "(none: upload connection)");
	fprintf(out, "return field: %s\n", f.field);
	fprintf(out, "fallback:     %s\n", f.fallback[0] ? f.fallback : "(empty)");
	if (!cc) {
		fprintf(stderr, "the UUID %s is not the uuid of any connection in %s\n", f.uuid, cfg->path);
		status = 1;
	} else if (load_catalog(cfg, cc, &cat) < 0) {
		status = 1;
	} else if (!state_catalog_find(cat, f.field)) {
		refuse_unknown_field(cc, cat, f.field);
		status = 1;
	}
	if (!status)
		fputs("OK\n", out);
	state_catalog_free(cat);
	cli_formula_release(&f);
	return status;
}

int cli_formula_cmd(const struct config *cfg, int argc, char **argv, FILE *out)
{
	static const struct option longopts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "fallback", required_argument, NULL, 'f' },
		{ "params", required_argument, NULL, 'p' },
		{ "check", required_argument, NULL, 'C' },
		{ "list", required_argument, NULL, 'L' },
		{ NULL, 0, NULL, 0 },
	};
	const char *key = DEFAULT_KEY, *fallback = "", *params = "", *check = NULL, *list = NULL;
	const struct conn_config *cc;
	struct catalog *cat = NULL;
	char err[512], *formula = NULL;
	int ch, status = 1;

	/* 0, not 1: glibc re-reads the optstring (the main parse stopped at the command word). */
	optind = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'k': key = optarg; break;
		case 'f': fallback = optarg; break;
		case 'p': params = optarg; break;
		case 'C': check = optarg; break;
		case 'L': list = optarg; break;
		default: usage(stderr); return 2;
		}
	}
	if (check)
		return optind == argc ? cmd_check(cfg, check, out) : (usage(stderr), 2);
	if (list)
		return optind == argc ? cmd_list(cfg, list, out) : (usage(stderr), 2);
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}
	cc = config_find_conn(cfg, argv[optind]);
	if (!cc) {
		fprintf(stderr, "no connection '%s' in %s\n", argv[optind], cfg->path);
		return 1;
	}
	if (load_catalog(cfg, cc, &cat) < 0)
		goto out;
	if (!state_catalog_find(cat, argv[optind + 1])) {
		refuse_unknown_field(cc, cat, argv[optind + 1]);
		goto out;
	}
	if (cli_formula_build(&formula, cc->uuid, key, params, argv[optind + 1], fallback, err, sizeof(err)) < 0) {
		fprintf(stderr, "cannot build the formula: %s\n", err);
		goto out;
	}
	fprintf(out, "%s\n", formula);
	status = 0;
out:
	free(formula);
	state_catalog_free(cat);
	return status;
}
