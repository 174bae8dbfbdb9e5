/* cli_forget: `dcsyncd forget CONNECTION`: the next files of a connection go whole (skip_unchanged). */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "state/state_store.h"

int cli_forget(const struct config *cfg, int argc, char **argv, FILE *out)
{
	const struct conn_config *c;
	char dir[PATH_MAX];
	struct stat st;
	int r;

	if (argc != 2 || argv[1][0] == '-') {
		fputs("Usage: dcsyncd -c FILE forget CONNECTION\n", stderr);
		return 2;
	}
	if (!(c = config_find_conn(cfg, argv[1]))) {
		fprintf(stderr, "forget: no connection '%s' in %s\n", argv[1], cfg->path);
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/store/%s", cfg->state_dir, c->name);
	if (lstat(dir, &st) < 0 && errno == ENOENT) {
		fprintf(out, "%s: no store (nothing was skipped yet): nothing to forget\n", c->name);
		return 0;
	}
	/* A request the daemon carries out itself before its next batch: the store is never opened here. */
	if ((r = state_store_request_forget(dir)) < 0) {
		fprintf(stderr, "forget: %s: %s%s\n", dir, strerror(-r),
			r == -EACCES || r == -EPERM ? " (run it as root or as the daemon's user)" : "");
		return 1;
	}
	fprintf(out, "%s: forgotten from the next batch on: its next files go up whole%s\n", c->name,
		c->skip_unchanged ? "" : " (skip_unchanged is off)");
	return 0;
}
