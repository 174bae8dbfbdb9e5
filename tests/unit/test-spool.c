/* test-spool: derived names, what the spool refuses, taking a file, and writing where others can write. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_queue.h"
#include "util/fileio.h"
#include "util/layout.h"
#include "tap.h"
#include "testutil.h"

static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;

		if (!n)
			return false;
		for (int i = 1; i < n; i++)
			if ((p[i] & 0xC0) != 0x80)
				return false;
		p += n;
	}
	return true;
}

static void layout_names(void)
{
	char out[LAYOUT_NAME_MAX + 1], name[LAYOUT_NAME_MAX + 1], again[LAYOUT_NAME_MAX + 1];

	layout_name(out, "12-", "a.ndjson", "");
	is_str(out, "12-a.ndjson", "a short name is kept whole");
	memset(name, 'n', 248);
	strcpy(name + 248, ".ndjson");
	layout_name(out, "18446744073709551615-", name, "");
	ok(strlen(out) == LAYOUT_NAME_MAX, "a 255-byte name with a 21-byte prefix fits in 255 bytes (%zu)", strlen(out));
	ok(!strncmp(out, "18446744073709551615-nnn", 24) && strstr(out, "~") &&
	   !strcmp(out + strlen(out) - 7, ".ndjson"), "prefix, start, a ~ and the suffix are kept");
	layout_name(again, "18446744073709551615-", name, "");
	is_str(again, out, "the same inputs give the same name");
	layout_name(out, "", name, ".rejected.ndjson");
	ok(strlen(out) <= LAYOUT_NAME_MAX && !strcmp(out + strlen(out) - 23, ".ndjson.rejected.ndjson"),
	   "a derived suffix fits too");
	/* 84 three-byte characters then the suffix: a cut must not split one. */
	name[0] = '\0';
	for (int i = 0; i < 82; i++)
		strcat(name, "\xe2\x82\xac");
	strcat(name, ".ndjson");
	layout_name(out, "123456-", name, ".error.json");
	ok(strlen(out) <= LAYOUT_NAME_MAX && utf8_valid(out), "a long UTF-8 name is cut on character boundaries");
}

/* Every place of a connection, spelled once: a change here changes what the daemon, status and the commands read. */
static void layout_paths(void)
{
	static const struct { enum layout_place place; const char *want; } cases[] = {
		{ LAYOUT_SPOOL, "/sp/products" },
		{ LAYOUT_FAILED, "/sp/products/failed" },
		{ LAYOUT_REJECTED, "/sp/products/rejected" },
		{ LAYOUT_DONE_ALL, "/st/done" },
		{ LAYOUT_DONE, "/st/done/products" },
		{ LAYOUT_FIELDS, "/st/fields" },
		{ LAYOUT_CATALOG, "/st/fields/products.catalog" },
	};
	char out[64], tiny[12];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		is_int(layout_path(out, sizeof(out), cases[i].place, "/sp", "/st", "products"), 0, "layout_path %s", cases[i].want);
		is_str(out, cases[i].want, "layout_path place %zu", i);
	}
	is_int(layout_path(tiny, sizeof(tiny), LAYOUT_CATALOG, "/sp", "/st", "products"), -ENAMETOOLONG,
	       "a path longer than the buffer is refused, not cut short silently");
}

static void name_kinds(void)
{
	is_int(spool_name_kind("a.ndjson"), SPOOL_NAME_DROP, "a.ndjson is a drop");
	is_int(spool_name_kind(".a.ndjson"), SPOOL_NAME_TEMPORARY, "a dot-file is a temporary");
	is_int(spool_name_kind("a.ndjson.tmp"), SPOOL_NAME_TEMPORARY, "*.tmp is a temporary");
	is_int(spool_name_kind("rejected"), SPOOL_NAME_OWN, "rejected is dcsyncd's");
	is_int(spool_name_kind("A.NDJSON"), SPOOL_NAME_WRONG_CASE, "A.NDJSON is a drop in the wrong case");
	is_int(spool_name_kind("readme.txt"), SPOOL_NAME_OTHER, "anything else is other");
}

static void inspect_refuses(void)
{
	char *dir = tmpdir_new("inspect"), *f = path_join(dir, "f.ndjson"), *l = path_join(dir, "l.ndjson"),
	     *p = path_join(dir, "p.ndjson"), *d = path_join(dir, "d.ndjson");
	struct spool_look look;
	int dfd;

	write_file(f, "{\"id\":1}\n", 9, 0640);
	(void)symlink(f, l);
	(void)mkfifo(p, 0640);
	(void)mkdir(d, 0750);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	is_int(spool_inspect(dfd, "l.ndjson", 0, 0, &look), 0, "inspect a link");
	ok(look.verdict == SPOOL_REFUSED && strstr(look.why, "symbolic link"), "a link is refused (%s)", look.why);
	is_int(spool_inspect(dfd, "p.ndjson", 0, 0, &look), 0, "inspect a FIFO without blocking");
	ok(look.verdict == SPOOL_REFUSED && strstr(look.why, "FIFO"), "a FIFO is refused (%s)", look.why);
	spool_inspect(dfd, "d.ndjson", 0, 0, &look);
	ok(look.verdict == SPOOL_REFUSED && strstr(look.why, "directory"), "a directory is refused");
	spool_inspect(dfd, "gone.ndjson", 0, 0, &look);
	is_int(look.verdict, SPOOL_GONE, "a missing name is gone");
	/* Without a lease (another user's file) and unknown to inotify: its age decides. */
	if (geteuid() == 0) {
		spool_inspect(dfd, "f.ndjson", -1, 3600, &look);
		is_int(look.verdict, SPOOL_READY, "as its owner the lease answers: nobody writes it");
	} else {
		skip("the lease check needs the file's owner");
	}
	close(dfd);
	tmpdir_remove(dir);
	free(f);
	free(l);
	free(p);
	free(d);
}

static void take(void)
{
	char *dir = tmpdir_new("take"), *work = path_join(dir, ".work"), *f = path_join(dir, "f.ndjson"),
	     *l = path_join(dir, "l.ndjson");
	const char *why = NULL;
	struct stat st;
	int dfd, wfd, fd;

	(void)mkdir(work, 0750);
	write_file(f, "{\"id\":1}\n", 9, 0640);
	(void)symlink(f, l);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	wfd = open(work, O_RDONLY | O_DIRECTORY);
	fd = spool_take(dfd, "f.ndjson", wfd, "1-f.ndjson", &st, &why);
	ok(fd >= 0 && S_ISREG(st.st_mode) && st.st_size == 9, "a regular file is taken, opened");
	ok(faccessat(wfd, "1-f.ndjson", F_OK, 0) == 0 && faccessat(dfd, "f.ndjson", F_OK, 0) < 0,
	   "and renamed into .work/");
	if (fd >= 0)
		close(fd);
	is_int(spool_take(dfd, "l.ndjson", wfd, "2-l.ndjson", &st, &why), -EINVAL, "a link is not taken");
	ok(why && faccessat(dfd, "l.ndjson", F_OK, AT_SYMLINK_NOFOLLOW) == 0, "and left where it is (%s)", why);
	write_file(f, "x\n", 2, 0640);
	is_int(spool_take(dfd, "f.ndjson", wfd, "1-f.ndjson", &st, &why), -EEXIST,
	       "taking never replaces what is in .work/");
	close(dfd);
	close(wfd);
	tmpdir_remove(dir);
	free(work);
	free(f);
	free(l);
}

static void writes_never_follow_links(void)
{
	char *dir = tmpdir_new("fileio"), *victim = path_join(dir, "victim"), *link = path_join(dir, "x.error.json"),
	     *rlink = path_join(dir, "x.rejected.ndjson"), *data;
	bool replaced = false;
	size_t len;
	int dfd, fd;

	write_file(victim, "precious\n", 9, 0640);
	(void)symlink(victim, link);
	(void)symlink(victim, rlink);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	is_int(fileio_replace_at(dfd, "x.error.json", "{}\n", 3, 0640, true), 0, "replace over a planted link");
	data = read_whole(victim, &len);
	ok(data && !strcmp(data, "precious\n"), "the link's target is untouched");
	free(data);
	data = read_whole(link, &len);
	ok(data && !strcmp(data, "{}\n") && !faccessat(dfd, "x.error.json", F_OK, AT_SYMLINK_NOFOLLOW), "the new file is in place");
	free(data);
	fd = fileio_open_append(dfd, "x.rejected.ndjson", 0640, &replaced);
	ok(fd >= 0 && replaced, "append: a planted link is removed, a file of ours made instead");
	if (fd >= 0) {
		(void)!write(fd, "line\n", 5);
		close(fd);
	}
	data = read_whole(victim, &len);
	ok(data && !strcmp(data, "precious\n"), "nothing written through it");
	free(data);
	fd = fileio_open_append(dfd, "x.rejected.ndjson", 0640, &replaced);
	ok(fd >= 0 && !replaced, "a file of ours is appended to");
	if (fd >= 0)
		close(fd);
	is_int(fileio_open_dir(link), -ENOTDIR, "open_dir refuses a link to a file");
	close(dfd);
	tmpdir_remove(dir);
	free(victim);
	free(link);
	free(rlink);
}

/* ---- the queue and the scan (from the old test-misc) ---- */

static void pops_in_order(const char *what, struct spool_queue *q, const char *const *want, size_t n)
{
	struct spool_entry e;
	char got[256] = "", exp[256] = "";
	while (spool_queue_pop(q, &e) == 1) {
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s ", e.name);
		free(e.name);
	}
	for (size_t i = 0; i < n; i++)
		snprintf(exp + strlen(exp), sizeof(exp) - strlen(exp), "%s ", want[i]);
	is_str(got, exp, "%s", what);
}

static void spool_queue_order(void)
{
	struct spool_queue q = { 0 };
	struct spool_entry e;
	static const char *const order1[] = { "a", "b", "d", "c" };
	static const char *const order2[] = { "c", "a", "b", "d" };

	spool_queue_add(&q, "c", 300);
	spool_queue_add(&q, "b", 100);
	spool_queue_add(&q, "a", 100);
	spool_queue_add(&q, "d", 200);
	spool_queue_add(&q, "b", 100);
	is_int(spool_queue_len(&q), 4, "a name queued twice is queued once");
	is_int(spool_queue_oldest(&q), 100, "oldest mtime");
	pops_in_order("popped by (mtime, name): a b d c", &q, order1, 4);
	ok(spool_queue_pop(&q, &e) == 0 && spool_queue_len(&q) == 0 && spool_queue_oldest(&q) == 0,
	   "empty queue: pop gives 0, oldest 0");

	spool_queue_add(&q, "c", 300);
	spool_queue_add(&q, "b", 100);
	spool_queue_add(&q, "a", 100);
	spool_queue_add(&q, "d", 200);
	spool_queue_add(&q, "c", 50);   /* rewritten in place: ordered by its newest mtime */
	is_int(spool_queue_len(&q), 4, "a re-added name with a new mtime is still queued once");
	pops_in_order("re-added name takes its new mtime's place: c a b d", &q, order2, 4);

	/* Interleaved adds and pops. */
	spool_queue_add(&q, "m", 500);
	spool_queue_add(&q, "n", 600);
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "m"), "interleaved: m first");
	free(e.name);
	spool_queue_add(&q, "z", 550);
	spool_queue_add(&q, "y", 550);
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "y"), "interleaved: then y (550, before z by name)");
	free(e.name);
	spool_queue_add(&q, "m", 500);  /* taken already: a new drop under the same name queues again */
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "m"), "a name popped earlier can be queued again");
	free(e.name);
	pops_in_order("the rest: z n", &q, (const char *const[]){ "z", "n" }, 2);

	for (int i = 0; i < 100; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%03d", 99 - i);
		spool_queue_add(&q, name, 1000);
	}
	{
		bool sorted = true;
		char prev[16] = "";

		for (int i = 0; i < 100; i++) {
			if (spool_queue_pop(&q, &e) != 1 || strcmp(prev, e.name) >= 0)
				sorted = false;
			if (e.name)
				snprintf(prev, sizeof(prev), "%s", e.name);
			free(e.name);
			e.name = NULL;
		}
		ok(sorted, "100 files with one mtime come out by name");
	}
	spool_queue_add(&q, "left", 1);
	spool_queue_add(&q, "over", 2);
	spool_queue_clear(&q);
	is_int(spool_queue_len(&q), 0, "clear empties the queue");
	spool_queue_add(&q, "left", 1);
	spool_queue_release(&q);
}

static void spool_names(void)
{
	static const struct {
		const char *name;
		bool eligible;
	} cases[] = {
		{ "orders.ndjson", true },   { "orders.jsonl", true },       { "2024-01-01.part-3.ndjson", true },
		{ ".orders.ndjson", false }, { ".hidden.jsonl", false },     { "orders.ndjson.tmp", false },
		{ "orders.tmp", false },     { "orders.json", false },       { "orders.csv", true },
		{ ".ndjson", false },        { "ndjson", false },            { "orders.ndjson~", false },
		{ "orders.jsonl.part", false },
		/* the formats of issue 15: the name says the format, compression last */
		{ "orders.tsv", true },      { "orders.csv.gz", true },      { "feed.ndjson.zst", true },
		{ "feed.jsonl.gz", true },   { "orders.tsv.zst", true },     { "orders.gz", false },
		{ "orders.csv.gz.tmp", false }, { ".orders.csv.gz", false }, { "orders.gz.csv", true },
		{ "orders.csv.bz2", false }, { "orders.zst", false },        { "orders.CSV", false },
		{ "orders.csv.GZ", false },  { ".csv", false },              { "csv.gz", false },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(spool_name_eligible(cases[i].name) == cases[i].eligible, "spool_name_eligible(\"%s\") is %s",
		   cases[i].name, cases[i].eligible ? "true" : "false");
	ok(spool_name_kind("orders.CSV.gz") == SPOOL_NAME_WRONG_CASE, "orders.CSV.gz: a name in the wrong case");
	ok(spool_name_kind("orders.tsv.ZST") == SPOOL_NAME_WRONG_CASE, "orders.tsv.ZST: a name in the wrong case");
	ok(spool_name_kind("orders.csv.bz2") == SPOOL_NAME_OTHER, "orders.csv.bz2: another name");
}

/* What the connection does with each scanned name: queue it when it is a drop and ready. */
static int scan_dir = -1;

static void scan_ready(void *userdata, const char *name)
{
	struct spool_look look;

	/* As root (the owner) the lease answers; unprivileged, the settle time of 0 lets old files in. */
	if (spool_name_kind(name) == SPOOL_NAME_DROP && spool_inspect(scan_dir, name, -1, 0, &look) == 0 &&
	    look.verdict == SPOOL_READY)
		(void)spool_queue_add(userdata, name, look.mtime_ns);
}

static void spool_files(void)
{
	char *dir = tmpdir_new("spool");
	char *a = path_join(dir, "a.ndjson"), *b = path_join(dir, "b.ndjson"), *c = path_join(dir, "c.jsonl"),
	     *open_w = path_join(dir, "writing.ndjson"), *skip = path_join(dir, ".x.ndjson"), *moved;
	struct timespec older[2] = { { 1700000000, 5 }, { 1700000000, 5 } };
	struct timespec newer[2] = { { 1700000100, 0 }, { 1700000100, 0 } };
	struct spool_queue q = { 0 };
	struct spool_entry e;
	char *data = NULL;
	size_t len;
	int wfd;

	write_file(a, "{\"id\":1}\n", 9, 0640);
	write_file(b, "{\"id\":2}\n", 9, 0640);
	write_file(c, "{\"id\":3}\n", 9, 0640);
	write_file(skip, "x\n", 2, 0640);
	utimensat(AT_FDCWD, b, older, 0);   /* b oldest, then a and c by name (same mtime) */
	utimensat(AT_FDCWD, a, newer, 0);
	utimensat(AT_FDCWD, c, newer, 0);
	wfd = open(open_w, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
	scan_dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	is_int(spool_scan(dir, scan_ready, &q), 0, "spool_scan");
	close(scan_dir);
	is_int(spool_queue_len(&q), 3, "scan queues the 3 eligible closed files (not a dot-file, not one open for writing)");
	ok(spool_queue_pop(&q, &e) == 1 && !strcmp(e.name, "b.ndjson") && e.mtime_ns == 1700000000000000005,
	   "oldest first, with its mtime in ns");
	free(e.name);
	pops_in_order("then a.ndjson and c.jsonl (same mtime) by name", &q,
		      (const char *const[]){ "a.ndjson", "c.jsonl" }, 2);
	spool_queue_release(&q);
	close(wfd);

	moved = path_join(dir, "moved.ndjson");
	is_int(fileio_move_at(AT_FDCWD, a, AT_FDCWD, moved), 0, "fileio_move_at renames");
	ok(access(a, F_OK) < 0 && (data = read_whole(moved, &len)) && len == 9 && !memcmp(data, "{\"id\":1}\n", 9),
	   "the file is at its new name with its content");
	free(data);
	data = NULL;
	is_int(fileio_move_at(AT_FDCWD, b, AT_FDCWD, moved), -EEXIST, "fileio_move_at never replaces an existing file");
	ok((data = read_whole(moved, &len)) && !memcmp(data, "{\"id\":1}", 8) && access(b, F_OK) == 0,
	   "both files untouched after the refusal");
	free(data);
	free(a);
	free(b);
	free(c);
	free(open_w);
	free(skip);
	free(moved);
	tmpdir_remove(dir);
}

int main(void)
{
	spool_queue_order();
	spool_names();
	spool_files();
	layout_names();
	layout_paths();
	name_kinds();
	inspect_refuses();
	take();
	writes_never_follow_links();
	return done_testing();
}
