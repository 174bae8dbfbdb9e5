/* cli_retry: `dcsyncd retry`: put failed files back into the spool, their error kept aside. */
#include "cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/layout.h"
#include "util/log.h"

#define ERROR_SUFFIX ".error.json"
#define RETRIED_DIR ".retried"

static void usage(FILE *f)
{
	fputs("Usage: dcsyncd -c FILE retry CONNECTION FILE...   (names as in <spool>/<connection>/failed/)\n"
	      "       dcsyncd -c FILE retry CONNECTION --all\n", f);
}

static bool is_error_json(const char *name)
{
	size_t n = strlen(name), s = strlen(ERROR_SUFFIX);

	return n > s && !strcmp(name + n - s, ERROR_SUFFIX);
}

struct retry_dirs {
	const char *conn;
	char dir[PATH_MAX];
	int dirfd, failedfd, retriedfd;
	char stamp[32];         /* UTC time of this run, the prefix of the errors kept aside */
};

/*
 * Move failed/<name>.error.json to failed/.retried/<time>-<name>.error.json first: if the file
 * fails again the daemon writes a new one beside it, which must not replace the old reason.
 * @aside gets the name used, "" when there was no error file.
 */
static int keep_error(struct retry_dirs *d, const char *name, char *aside)
{
	char err[LAYOUT_NAME_MAX + 1], prefix[48];
	int r = -EEXIST;

	aside[0] = '\0';
	layout_name(err, "", name, ERROR_SUFFIX);
	for (unsigned n = 1; r == -EEXIST && n < 1000; n++) {
		if (n == 1)
			snprintf(prefix, sizeof(prefix), "%s-", d->stamp);
		else
			snprintf(prefix, sizeof(prefix), "%s-%u-", d->stamp, n);
		layout_name(aside, prefix, err, "");
		r = renameat2(d->failedfd, err, d->retriedfd, aside, RENAME_NOREPLACE) < 0 ? -errno : 0;
	}
	if (r == -ENOENT)
		aside[0] = '\0';
	return r == -ENOENT ? 0 : r;
}

static int retry_one(struct retry_dirs *d, const char *raw_name, FILE *out)
{
	char aside[LAYOUT_NAME_MAX + 1], final[NAME_MAX + 1];
	/* What is printed: exporters' names, escaped as the log shows them. */
	char name[(NAME_MAX + 1) * 4], shown_final[(NAME_MAX + 1) * 4], shown_aside[(LAYOUT_NAME_MAX + 1) * 4];
	struct stat st;
	int r;

	log_defang(name, sizeof(name), raw_name);

	if (!*raw_name || strchr(raw_name, '/') || raw_name[0] == '.' || is_error_json(raw_name)) {
		fprintf(stderr, "%s: not a failed file's name (give the names in %s/failed/)\n", name, d->dir);
		return -EINVAL;
	}
	if (fstatat(d->failedfd, raw_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "%s: no such file in %s/failed/\n", name, d->dir);
		return -ENOENT;
	}
	if ((r = keep_error(d, raw_name, aside)) < 0) {
		fprintf(stderr, "%s: cannot keep its error aside in %s/failed/" RETRIED_DIR "/: %s; left in failed/\n",
			name, d->dir, strerror(-r));
		return r;
	}
	if ((r = cli_rename_free(d->failedfd, raw_name, d->dirfd, raw_name, final)) < 0) {
		fprintf(stderr, "%s: cannot move it back into %s/: %s; left in failed/\n", name, d->dir, strerror(-r));
		if (aside[0]) {
			char err[LAYOUT_NAME_MAX + 1];

			layout_name(err, "", raw_name, ERROR_SUFFIX);
			(void)renameat2(d->retriedfd, aside, d->failedfd, err, RENAME_NOREPLACE);
		}
		return r;
	}
	log_defang(shown_final, sizeof(shown_final), final);
	log_defang(shown_aside, sizeof(shown_aside), aside);
	fprintf(out, "%s: failed/%s -> %s", d->conn, name, shown_final);
	if (aside[0])
		fprintf(out, " (its error kept as failed/" RETRIED_DIR "/%s)\n", shown_aside);
	else
		fputs(" (it had no error.json)\n", out);
	return 0;
}

/*
 * failed/.retried belongs to whoever owns failed/ (the daemon's user), whoever made it: one made
 * by root's retry would refuse every later retry as dcsync. Root gives it back; anyone else is
 * refused (EPERM) when it is not failed/'s owner's.
 */
static int give_to_owner(int failedfd, int fd)
{
	struct stat want, st;

	if (fstat(failedfd, &want) < 0 || fstat(fd, &st) < 0)
		return -1;
	if (st.st_uid == want.st_uid && st.st_gid == want.st_gid)
		return 0;
	if (fchown(fd, want.st_uid, want.st_gid) == 0)
		return 0;
	errno = EPERM;
	return -1;
}

static int open_dirs(struct retry_dirs *d, const struct config *cfg, const char *conn)
{
	const char *what = d->dir;
	time_t now = time(NULL);
	struct tm tm;

	d->conn = conn;
	d->dirfd = d->failedfd = d->retriedfd = -1;
	gmtime_r(&now, &tm);
	strftime(d->stamp, sizeof(d->stamp), "%Y%m%dT%H%M%SZ", &tm);
	(void)layout_path(d->dir, sizeof(d->dir), LAYOUT_SPOOL, cfg->spool_dir, cfg->state_dir, conn);
	d->dirfd = open(d->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d->dirfd >= 0) {
		what = "failed/";
		d->failedfd = openat(d->dirfd, "failed", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (d->failedfd >= 0) {
		what = "failed/" RETRIED_DIR "/";
		if (mkdirat(d->failedfd, RETRIED_DIR, 0750) < 0 && errno != EEXIST)
			goto fail;
		d->retriedfd = openat(d->failedfd, RETRIED_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (d->retriedfd >= 0 && give_to_owner(d->failedfd, d->retriedfd) < 0)
			goto fail;
	}
	if (d->retriedfd >= 0 && faccessat(d->failedfd, ".", W_OK, AT_EACCESS) == 0)
		return 0;
fail:
	if (errno == ENOENT && !strcmp(what, "failed/"))
		fprintf(stderr, "%s: no failed/ directory in %s: nothing has failed\n", conn, d->dir);
	else
		fprintf(stderr, "%s: cannot use %s%s%s: %s%s\n", conn, what == d->dir ? "" : d->dir,
			what == d->dir ? "" : "/", what, strerror(errno ? errno : EACCES),
			errno == EACCES || errno == EPERM ? " (run retry as root or as the daemon's user, dcsync)" : "");
	return -1;
}

static void close_dirs(struct retry_dirs *d)
{
	for (int *fd = &d->dirfd; fd <= &d->retriedfd; fd++)
		if (*fd >= 0) {
			(void)fsync(*fd);
			close(*fd);
		}
}

int cli_retry(const struct config *cfg, int argc, char **argv, FILE *out)
{
	static const struct option longopts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 },
	};
	struct retry_dirs d;
	bool all = false;
	size_t moved = 0;
	int ch, status = 0;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (ch != 'a') {
			usage(stderr);
			return 2;
		}
		all = true;
	}
	if (argc - optind < 1 || (all ? argc - optind != 1 : argc - optind < 2)) {
		usage(stderr);
		return 2;
	}
	if (!config_find_conn(cfg, argv[optind])) {
		fprintf(stderr, "no connection '%s' in %s\n", argv[optind], cfg->path);
		return 1;
	}
	errno = 0;
	if (open_dirs(&d, cfg, argv[optind]) < 0) {
		close_dirs(&d);
		return 1;
	}
	if (all) {
		int fd = dup(d.failedfd);
		DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
		struct dirent *de;

		if (!dir) {
			fprintf(stderr, "%s: cannot list %s/failed/: %s\n", d.conn, d.dir, strerror(errno));
			if (fd >= 0)
				close(fd);
			close_dirs(&d);
			return 1;
		}
		while ((de = readdir(dir))) {
			struct stat st;

			if (de->d_name[0] == '.' || is_error_json(de->d_name))
				continue;
			if (fstatat(d.failedfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
				continue;
			if (retry_one(&d, de->d_name, out) < 0)
				status = 1;
			else
				moved++;
		}
		closedir(dir);
		if (!moved && !status)
			fprintf(out, "%s: nothing in %s/failed/\n", d.conn, d.dir);
	} else {
		for (int i = optind + 1; i < argc; i++)
			if (retry_one(&d, argv[i], out) < 0)
				status = 1;
	}
	close_dirs(&d);
	return status;
}
