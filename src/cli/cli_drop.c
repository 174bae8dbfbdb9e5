/* cli_drop: `dcsyncd drop`: put a file into a connection's spool the way the drop protocol wants. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spool/spool.h"
#include "util/layout.h"

/*
 * The one piece of global state: a signal handler can only reach a static. A signal while the
 * data comes in ends the copy (read returns EINTR: no SA_RESTART) and the temporary is removed.
 */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void usage(FILE *f)
{
	fputs("Usage: dcsyncd -c FILE drop CONNECTION FILE...\n"
	      "       dcsyncd -c FILE drop CONNECTION - --name NAME.ndjson   (standard input)\n", f);
}

int cli_rename_free(int fromfd, const char *from, int tofd, const char *name, char *final)
{
	const char *dot = strchr(name + 1, '.');
	size_t stem = dot ? (size_t)(dot - name) : strlen(name);

	snprintf(final, NAME_MAX + 1, "%s", name);
	for (unsigned n = 2;; n++) {
		if (renameat2(fromfd, from, tofd, final, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EEXIST || n > 1000)
			return -errno;
		if (snprintf(final, NAME_MAX + 1, "%.*s-%u%s", (int)stem, name, n, name + stem) > NAME_MAX)
			return -ENAMETOOLONG;
	}
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR && !interrupted)
			continue;
		if (n < 0)
			return interrupted ? -EINTR : -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int copy_fd(int in, int out, uint64_t *bytes)
{
	char buf[65536];

	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		int r;

		if (interrupted)
			return -EINTR;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		if ((r = write_all(out, buf, (size_t)n)) < 0)
			return r;
		*bytes += (uint64_t)n;
	}
}

/*
 * Create the hidden temporary under a name nobody can guess or hold already: a pid alone is
 * reused (containers), and a killed drop's temporary stays until the daemon removes it. The
 * daemon knows this form (.dcsyncd-drop-*.tmp) and removes one left for an hour.
 */
static int create_temporary(int dirfd, char *tmp, size_t len)
{
	for (int attempt = 0; attempt < 8; attempt++) {
		uint64_t rnd;
		int fd;

		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
			struct timespec t;

			/* No entropy yet (early boot): O_EXCL still keeps two drops apart. */
			clock_gettime(CLOCK_REALTIME, &t);
			rnd = (uint64_t)t.tv_nsec * 6364136223846793005ull + (uint64_t)t.tv_sec + (unsigned)attempt;
		}
		snprintf(tmp, len, ".dcsyncd-drop-%ld-%016llx.tmp", (long)getpid(), (unsigned long long)rnd);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
		if (fd >= 0 || errno != EEXIST)
			return fd < 0 ? -errno : fd;
	}
	return -EEXIST;
}

/*
 * Copy @in into a hidden temporary of @dirfd (which the daemon ignores), readable by the
 * directory's group, made durable, then renamed into place under @name or a free variant of it.
 */
static int drop_one(int dirfd, const char *dir, int in, const char *src, const char *name, FILE *out)
{
	char tmp[64], final[NAME_MAX + 1];
	struct stat dst;
	uint64_t bytes = 0;
	int fd, r;

	fd = create_temporary(dirfd, tmp, sizeof(tmp));
	if (fd < 0) {
		r = fd;
		fprintf(stderr, "%s: cannot create a file in %s: %s%s\n", src, dir, strerror(-r),
			r == -EACCES ? " (is this user in the daemon's group, dcsync?)" : "");
		return r;
	}
	/* 0640 whatever the umask, and the spool's group (the daemon's) even without its setgid bit. */
	if (fchmod(fd, 0640) < 0 || fstat(dirfd, &dst) < 0 || fchown(fd, (uid_t)-1, dst.st_gid) < 0) {
		r = -errno;
		fprintf(stderr, "%s: cannot give %s/%s to the daemon's group: %s\n", src, dir, tmp, strerror(-r));
		goto fail;
	}
	if ((r = copy_fd(in, fd, &bytes)) < 0) {
		fprintf(stderr, "%s: %s: nothing dropped\n", src,
			r == -EINTR ? "interrupted" : strerror(-r));
		goto fail;
	}
	if (!bytes) {
		r = -ENODATA;
		fprintf(stderr, "%s: empty: nothing dropped\n", src);
		goto fail;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		fprintf(stderr, "%s: cannot write %s/%s to the disk: %s: nothing dropped\n", src, dir, tmp, strerror(-r));
		goto fail;
	}
	close(fd);
	fd = -1;
	if ((r = cli_rename_free(dirfd, tmp, dirfd, name, final)) < 0) {
		fprintf(stderr, "%s: cannot rename it into place as %s/%s: %s: nothing dropped\n", src, dir, name,
			strerror(-r));
		goto fail;
	}
	if (fsync(dirfd) < 0) {
		/* In place, but a power cut may undo the rename: the exporter must not count on it. */
		r = -errno;
		fprintf(stderr, "%s: renamed into place as %s/%s, but the directory cannot be written to the disk: %s; "
			"drop it again to be sure\n", src, dir, final, strerror(-r));
		goto fail;
	}
	fprintf(out, "%s/%s\n", dir, final);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	(void)unlinkat(dirfd, tmp, 0);
	return r;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

static bool name_ok(const char *name, const char *what)
{
	if (!*name || strchr(name, '/') || strlen(name) > NAME_MAX) {
		fprintf(stderr, "%s: not a file name\n", what);
		return false;
	}
	if (!spool_name_eligible(name)) {
		char suffixes[256];

		spool_suffixes(suffixes, sizeof(suffixes));
		fprintf(stderr, "%s: the daemon takes only names ending in one of %s (lower case), not "
			"starting with '.'%s\n", name, suffixes, !strcmp(what, "-") ? "" : " (give another with --name)");
		return false;
	}
	return true;
}

int cli_drop(const struct config *cfg, int argc, char **argv, FILE *out)
{
	static const struct option longopts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	const struct conn_config *cc;
	const char *name = NULL;
	struct sigaction sa = { .sa_handler = on_signal };
	char dir[PATH_MAX];
	int ch, dirfd, status = 0;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch != 'n') {
			usage(stderr);
			return 2;
		}
		name = optarg;
	}
	if (argc - optind < 2 || (name && argc - optind != 2)) {
		usage(stderr);
		return 2;
	}
	cc = config_find_conn(cfg, argv[optind]);
	if (!cc) {
		fprintf(stderr, "no connection '%s' in %s (connections:", argv[optind], cfg->path);
		for (size_t i = 0; i < cfg->n_conns; i++)
			fprintf(stderr, " %s", cfg->conns[i].name);
		fputs(")\n", stderr);
		return 1;
	}
	for (int i = optind + 1; i < argc; i++) {
		if (!strcmp(argv[i], "-") && !name) {
			fputs("-: standard input needs --name NAME.ndjson\n", stderr);
			return 2;
		}
		if (!name_ok(name ? name : base_name(argv[i]), name ? name : argv[i]))
			return 1;
	}
	(void)layout_path(dir, sizeof(dir), LAYOUT_SPOOL, cfg->spool_dir, cfg->state_dir, cc->name);
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0) {
		fprintf(stderr, "cannot open %s: %s%s\n", dir, strerror(errno),
			errno == ENOENT ? " (dcsyncd makes it when it starts with this connection)" :
			errno == EACCES ? " (is this user in the daemon's group, dcsync?)" : "");
		return 1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	for (int i = optind + 1; i < argc && !interrupted; i++) {
		bool in_stdin = !strcmp(argv[i], "-");
		int in = in_stdin ? STDIN_FILENO : open(argv[i], O_RDONLY | O_CLOEXEC);

		if (in < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			status = 1;
			continue;
		}
		if (drop_one(dirfd, dir, in, in_stdin ? "standard input" : argv[i], name ? name : base_name(argv[i]),
			     out) < 0)
			status = 1;
		if (!in_stdin)
			close(in);
	}
	close(dirfd);
	return interrupted ? 1 : status;
}
