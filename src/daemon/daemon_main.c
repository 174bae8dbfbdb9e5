/* main: command line of dcsyncd: run, --once, --check-config, the commands, --version, --help. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "build-config.h"
#include "cli/cli_formula_cmd.h"
#include "cli/cli_status.h"
#include "daemon/daemon.h"
#include "util/log.h"

static void usage(FILE *f)
{
	fputs("Usage: dcsyncd -c FILE [--once]\n"
	      "       dcsyncd -c FILE --check-config\n"
	      "       dcsyncd -c FILE status [--json]\n"
	      "       dcsyncd -c FILE drop CONNECTION FILE... | drop CONNECTION - --name NAME.ndjson\n"
	      "       dcsyncd -c FILE check [--json] [CONNECTION] FILE...\n"
	      "       dcsyncd -c FILE retry CONNECTION FILE... | --all\n"
	      "       dcsyncd -c FILE connection create NAME --primary-key FIELD [--description TEXT] --like CONNECTION\n"
	      "       dcsyncd -c FILE formula CONNECTION FIELD [--key TAG] [--fallback TEXT] [--params P]\n"
	      "       dcsyncd -c FILE formula --check 'DC_...' | --list CONNECTION\n"
	      "       dcsyncd --version | --help\n"
	      "\n"
	      "Uploads NDJSON files dropped into <spool_dir>/<connection>/ to Optimove Opti-X Data Connections.\n"
	      "\n"
	      "  -c, --config FILE   configuration file (see dcsyncd.conf(5))\n"
	      "      --once          process what is in the spool now, wait for every batch, print a summary\n"
	      "                      and exit: 0 all went up, 1 something failed or was rejected, 2 bad usage\n"
	      "      --check-config  validate the configuration (and read the key files) and exit\n"
	      "      --version       print the version\n"
	      "\n"
	      "Commands:\n"
	      "  status              per connection: files queued, the batch in flight, failed files,\n"
	      "                      rejected records, last success and last error (from the journal);\n"
	      "                      --json: one JSON object, field names in dcsyncd(8)\n"
	      "  drop                for exporters: copy files (or standard input) into the connection's\n"
	      "                      spool under a hidden name, fsync, rename into place; prints the name\n"
	      "  check               for exporters: read files as the connection would (no network, no\n"
	      "                      state); records, rejected lines, a failure; exit 1 if any\n"
	      "  retry               put failed files back into the spool, their error.json kept in\n"
	      "                      failed/.retried/ (as root or the daemon's user)\n"
	      "  connection create   create a Data Connection at the API, print its [connection] section\n"
	      "  formula             print the Data Connection formula for a field that was uploaded\n"
	      "                      (--key default [%CUSTOMER_ID%]); --check explains a formula;\n"
	      "                      --list shows the fields uploaded to a connection\n"
	      "  -h, --help          this text\n", f);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "once", no_argument, NULL, 'o' },
		{ "check-config", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_opts opts = { 0 };
	bool check = false;
	int ch;

	/* "+": stop at the command word, whose own options are parsed by the command. */
	while ((ch = getopt_long(argc, argv, "+c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			opts.config_path = optarg;
			break;
		case 'o':
			opts.once = true;
			break;
		case 'k':
			check = true;
			break;
		case 'V':
			printf("dcsyncd %s\n", DCSYNCD_VERSION_STR);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	/* Its base URL and keys may all be given as options. */
	if (optind < argc && !strcmp(argv[optind], "connection"))
		return cli_connection(opts.config_path, argc - optind, argv + optind, stdout);
	if (!opts.config_path) {
		usage(stderr);
		return 2;
	}
	log_open();
	if (optind < argc && (!strcmp(argv[optind], "status") || !strcmp(argv[optind], "formula") ||
			      !strcmp(argv[optind], "drop") || !strcmp(argv[optind], "retry") ||
			      !strcmp(argv[optind], "check"))) {
		const char *cmd = argv[optind];
		bool json = false;
		struct config *cfg;
		char err[1024];
		int r;

		if (!strcmp(cmd, "status")) {
			json = optind + 2 == argc && !strcmp(argv[optind + 1], "--json");
			if (optind + 1 != argc && !json) {
				usage(stderr);
				return 2;
			}
		}
		/* None of these sends a request: the keys stay unread (exporters cannot read them). */
		if (config_load_flags(opts.config_path, CONFIG_LOAD_NO_SECRETS, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
		if (!strcmp(cmd, "status"))
			r = cli_status_print(cfg, json, stdout) < 0 ? 1 : 0;
		else if (!strcmp(cmd, "drop"))
			r = cli_drop(cfg, argc - optind, argv + optind, stdout);
		else if (!strcmp(cmd, "check"))
			r = cli_check(cfg, argc - optind, argv + optind, stdout);
		else if (!strcmp(cmd, "retry"))
			r = cli_retry(cfg, argc - optind, argv + optind, stdout);
		else
			r = cli_formula_cmd(cfg, argc - optind, argv + optind, stdout);
		config_free(cfg);
		return r;
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (check) {
		struct config *cfg;
		char err[1024];

		if (config_load(opts.config_path, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
		printf("%s: OK, %zu connection(s)\n", opts.config_path, cfg->n_conns);
		config_free(cfg);
		return 0;
	}
	opts.progress = opts.once && isatty(STDERR_FILENO);
	return daemon_run(&opts);
}
