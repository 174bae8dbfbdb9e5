/* cli_history: `dcsyncd history [CONNECTION] [--json] [--limit N]`: the run history, newest first. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_history.h"


static void cmd_usage(FILE *f)
{
	fputs("usage: dcsyncd -c FILE history [CONNECTION] [--json] [--limit N]\n", f);
}

/* Newest first; of two that finished in the same millisecond, the one read first (recorded later). */
static int by_finished_desc(const void *pa, const void *pb)
{
	const struct history_entry *a = *(const struct history_entry *const *)pa;
	const struct history_entry *b = *(const struct history_entry *const *)pb;

	if (a->finished != b->finished)
		return a->finished < b->finished ? 1 : -1;
	return a < b ? -1 : a > b;
}

int cli_history(const struct config *cfg, int argc, char **argv, FILE *out)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "limit", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	struct history_entry *all = NULL, **order = NULL;
	size_t n_all = 0, limit = 0;
	const char *only = NULL;
	bool json = false;
	char *end;
	int ch, status = 0;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			json = true;
			break;
		case 'l':
			errno = 0;
			limit = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || limit == 0) {
				fprintf(stderr, "--limit: %s: not a number of entries (1 or more)\n", optarg);
				return 2;
			}
			break;
		default:
			cmd_usage(stderr);
			return 2;
		}
	}
	if (argc - optind > 1) {
		cmd_usage(stderr);
		return 2;
	}
	if (argc - optind == 1) {
		only = argv[optind];
		if (!config_find_conn(cfg, only)) {
			fprintf(stderr, "no connection '%s' in %s\n", only, cfg->path);
			return 1;
		}
	}
	for (size_t i = 0; i < cfg->n_conns; i++) {
		const struct conn_config *c = &cfg->conns[i];
		struct history_entry *v, *grown;
		size_t n, damaged = 0, want = limit && limit < c->history_entries ? limit : c->history_entries;
		int r;

		if (only && strcmp(c->name, only))
			continue;
		r = state_history_read(cfg->state_dir, c->name, want, &v, &n, &damaged);
		if (r == -ENOENT)
			continue;
		if (r < 0) {
			fprintf(stderr, "%s: cannot read its run history in %s/history: %s\n", c->name, cfg->state_dir,
				strerror(-r));
			status = 1;
			continue;
		}
		if (damaged)
			fprintf(stderr, "%s: %zu entr%s of the run history do%s not check out: left out\n", c->name, damaged,
				damaged == 1 ? "y" : "ies", damaged == 1 ? "es" : "");
		if (n && !(grown = reallocarray(all, n_all + n, sizeof(*all)))) {
			free(v);
			fprintf(stderr, "out of memory\n");
			status = 1;
			break;
		}
		if (n) {
			all = grown;
			/* Oldest first as read: reversed, so that the stable order of equal times is newest first. */
			for (size_t k = 0; k < n; k++)
				all[n_all + k] = v[n - 1 - k];
			n_all += n;
		}
		free(v);
	}
	if (n_all && !(order = calloc(n_all, sizeof(*order)))) {
		fprintf(stderr, "out of memory\n");
		status = 1;
		n_all = 0;
	}
	for (size_t i = 0; i < n_all; i++)
		order[i] = &all[i];
	if (n_all > 1)
		qsort(order, n_all, sizeof(*order), by_finished_desc);
	if (limit && n_all > limit)
		n_all = limit;
	for (size_t i = 0; i < n_all; i++) {
		if (json) {
			(void)state_history_print_json(order[i], out);
		} else {
			char line[16384];

			state_history_format_text(order[i], line, sizeof(line));
			fputs(line, out);
		}
		fputc('\n', out);
	}
	free(order);
	if (!n_all && !json && status == 0)
		fprintf(stderr, "no run history yet%s%s\n", only ? " for " : "", only ? only : "");
	free(all);
	if (fflush(out) != 0 || ferror(out))
		status = 1;
	return status;
}
