/* test-workfiles: custody of a connection's files in real directories: moves out of .work/, reopening a journaled file, rejected/ and error.json never through a link. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/spool.h"
#include "util/fileio.h"
#include "util/layout.h"
#include "tap.h"
#include "testutil.h"
#include "spool/spool_work.h"

struct t {
	char *dir, *spool, *state, *conn, *work;
	struct workfiles wf;
};

static void setup(struct t *t)
{
	memset(t, 0, sizeof(*t));
	t->dir = tmpdir_new("workfiles");
	t->spool = path_join(t->dir, "spool");
	t->state = path_join(t->dir, "state");
	t->conn = path_join(t->spool, "shop");
	t->work = path_join(t->conn, ".work");
	if (mkdir(t->state, 0755) < 0 || fileio_mkdirs(t->conn, 0770) < 0 ||
	    spool_work_init(&t->wf, t->spool, t->state, "shop") < 0)
		abort();
}

static void teardown(struct t *t)
{
	spool_work_release(&t->wf);
	free(t->work);
	free(t->conn);
	free(t->state);
	free(t->spool);
	tmpdir_remove(t->dir);
}

/* <dir>/<name> holding @text; its identity in @id (if not NULL). */
static void put(const char *dir, const char *name, const char *text, struct file_identity *id)
{
	char *p = path_join(dir, name);
	struct stat st;

	write_file(p, text, strlen(text), 0640);
	if (id) {
		if (stat(p, &st) < 0)
			abort();
		spool_work_identity(&st, id);
	}
	free(p);
}

static char *slurp(const char *dir, const char *name)
{
	char *p = path_join(dir, name), *s;
	size_t len;

	s = read_whole(p, &len);
	free(p);
	return s;
}

static void names(void)
{
	char out[LAYOUT_NAME_MAX + 1], name[300];

	spool_work_work_name(42, "f.ndjson", out);
	is_str(out, "42-f.ndjson", "a file in .work/ is <id>-<name>");
	spool_work_rejected_name("f.ndjson", out);
	is_str(out, "f.ndjson.rejected.ndjson", "its rejected lines go to <name>.rejected.ndjson");
	memset(name, 'a', 250);
	snprintf(name + 250, sizeof(name) - 250, ".ndjson");
	spool_work_work_name(18446744073709551615u, name, out);
	ok(strlen(out) <= LAYOUT_NAME_MAX && !strncmp(out, "18446744073709551615-", 21),
	   "a 257-byte name with the largest id still makes a legal name (%zu bytes) with its id first", strlen(out));
}

static void moves_out_of_work(void)
{
	struct t t;
	char dst[LAYOUT_NAME_MAX + 1], *s;
	bool fixed;
	int ffd;

	setup(&t);
	is_int(spool_work_work(&t.wf, &fixed) >= 0, 1, "spool_work_work makes .work/");
	put(t.work, "5-f.ndjson", "{\"id\":5}\n", NULL);
	put(t.work, "6-f.ndjson", "{\"id\":6}\n", NULL);
	ffd = spool_work_subdir(&t.wf, "failed", true, &fixed);
	ok(ffd >= 0 && !fixed, "failed/ made, nothing to put right");
	is_int(spool_work_move(&t.wf, 5, "f.ndjson", ffd, dst), 0, "spool_work_move");
	is_str(dst, "f.ndjson", "it arrives under its own name");
	is_int(spool_work_move(&t.wf, 6, "f.ndjson", ffd, dst), 0, "a second file of that name");
	is_str(dst, "6-f.ndjson", "the name is taken: it keeps its id (and its .ndjson suffix)");
	{
		char *failed = path_join(t.conn, "failed");

		s = slurp(failed, "f.ndjson");
		ok(s && !strcmp(s, "{\"id\":5}\n"), "failed/f.ndjson is file 5");
		free(s);
		s = slurp(failed, "6-f.ndjson");
		ok(s && !strcmp(s, "{\"id\":6}\n"), "failed/6-f.ndjson is file 6");
		free(s);
		free(failed);
	}
	is_int(spool_work_move(&t.wf, 7, "f.ndjson", ffd, dst), -ENOENT, "a file not in .work/: -ENOENT");
	close(ffd);
	teardown(&t);
}

static void reopens_a_journaled_file_only_as_it_was(void)
{
	struct t t;
	struct file_identity id;
	bool grew = true, fixed;
	int fd;
	char *p;

	setup(&t);
	if (spool_work_work(&t.wf, &fixed) < 0)
		abort();
	put(t.work, "1-f.ndjson", "{\"id\":1}\n", &id);
	p = path_join(t.work, "1-f.ndjson");
	fd = spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew);
	ok(fd >= 0 && !grew, "the same file: opened, not grown");
	if (fd >= 0)
		close(fd);
	ok(!spool_work_changed(&t.wf, 1, "f.ndjson", &id), "spool_work_changed: no");

	{
		int a = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);

		if (a < 0 || write(a, "{\"id\":2}\n", 9) != 9)
			abort();
		close(a);
	}
	fd = spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew);
	ok(fd >= 0 && grew, "grown by an append: opened, grown");
	if (fd >= 0)
		close(fd);
	ok(spool_work_changed(&t.wf, 1, "f.ndjson", &id), "spool_work_changed: yes");

	if (truncate(p, 5) < 0)
		abort();
	is_int(spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew), -ESTALE, "shorter than it was: -ESTALE");

	/* Another file of the same size: another inode (a rewrite by rename). */
	put(t.work, "1-f.ndjson", "{\"id\":1}\n", &id);
	{
		char *tmp = path_join(t.work, "tmp");

		put(t.work, "tmp", "{\"id\":9}\n", NULL);
		if (rename(tmp, p) < 0)
			abort();
		free(tmp);
	}
	is_int(spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew), -ESTALE, "replaced by another file of its size: -ESTALE");

	/* The same inode and size, written again: only its mtime tells. */
	put(t.work, "1-f.ndjson", "{\"id\":1}\n", &id);
	{
		struct timespec ts[2] = { { 1000000000, 0 }, { 1000000000, 0 } };

		if (utimensat(AT_FDCWD, p, ts, 0) < 0)
			abort();
	}
	is_int(spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew), -ESTALE, "same inode and size, another mtime: -ESTALE");

	if (unlink(p) < 0 || symlink("/etc/hostname", p) < 0)
		abort();
	is_int(spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew), -ESTALE, "a link in its place is never followed: -ESTALE");
	if (unlink(p) < 0)
		abort();
	is_int(spool_work_reopen(&t.wf, 1, "f.ndjson", &id, &grew), -ENOENT, "gone: -ENOENT");
	ok(!spool_work_changed(&t.wf, 1, "f.ndjson", &id), "spool_work_changed of a file not there: no");
	free(p);
	teardown(&t);
}

static void holds_a_file_by_name_or_id(void)
{
	struct t t;
	struct file_identity id, other;
	int dfd;

	setup(&t);
	put(t.conn, "f.ndjson", "{\"id\":1}\n", &id);
	dfd = spool_work_dir(&t.wf);
	ok(dfd >= 0 && spool_work_holds(dfd, 3, "f.ndjson", &id, false), "holds <name> as the file was");
	put(t.conn, "g.ndjson", "{\"id\":2}\n", &other);
	ok(!spool_work_holds(dfd, 3, "g.ndjson", &id, false), "another file is not it");
	{
		char *a = path_join(t.conn, "f.ndjson"), *b = path_join(t.conn, "3-f.ndjson");

		if (rename(a, b) < 0)
			abort();
		ok(spool_work_holds(dfd, 3, "f.ndjson", &id, false), "holds <id>-<name> as the file was");
		ok(!spool_work_holds(dfd, 4, "f.ndjson", &id, false), "not under another id");
		free(a);
		free(b);
	}
	id.mtime_ns++;
	ok(!spool_work_holds(dfd, 3, "f.ndjson", &id, false), "not when its identity differs");
	ok(!spool_work_holds(-1, 3, "f.ndjson", &id, true), "no directory holds nothing");
	teardown(&t);
}

static void rejected_lines_are_appended_cut_back_and_never_written_through_a_link(void)
{
	struct t t;
	bool fixed, replaced;
	char *rej, *target, *s;

	setup(&t);
	is_int(spool_work_rejected_size(&t.wf, "f.ndjson"), 0, "no rejected file: size 0");
	is_int(spool_work_rejected_append(&t.wf, "f.ndjson", "line 1\n", 7, &fixed, &replaced), 0, "append");
	ok(!fixed && !replaced, "nothing put right or replaced");
	is_int(spool_work_rejected_append(&t.wf, "f.ndjson", "line 2\n", 7, &fixed, &replaced), 0, "append again");
	is_int(spool_work_rejected_size(&t.wf, "f.ndjson"), 14, "both lines: 14 bytes");
	is_int(spool_work_rejected_truncate(&t.wf, "f.ndjson", 20), 0, "truncate to more than it holds");
	is_int(spool_work_rejected_size(&t.wf, "f.ndjson"), 14, "changes nothing");
	is_int(spool_work_rejected_truncate(&t.wf, "f.ndjson", 7), 0, "truncate to 7");
	rej = path_join(t.conn, "rejected");
	s = slurp(rej, "f.ndjson.rejected.ndjson");
	ok(s && !strcmp(s, "line 1\n"), "what was written after byte 7 is gone, the rest kept");
	free(s);

	/* Someone put a link where the rejected file of g.ndjson goes. */
	target = path_join(t.dir, "target");
	write_file(target, "precious\n", 9, 0644);
	{
		char *link = path_join(rej, "g.ndjson.rejected.ndjson");

		if (symlink(target, link) < 0)
			abort();
		is_int(spool_work_rejected_size(&t.wf, "g.ndjson"), 0, "a link counts as no rejected file");
		is_int(spool_work_rejected_append(&t.wf, "g.ndjson", "bad\n", 4, &fixed, &replaced), 0, "append");
		ok(replaced, "the link was removed first (replaced)");
		s = slurp(rej, "g.ndjson.rejected.ndjson");
		ok(s && !strcmp(s, "bad\n"), "the rejected file is a file of its own");
		free(s);
		s = read_whole(target, &(size_t){ 0 });
		ok(s && !strcmp(s, "precious\n"), "the link's target is untouched");
		free(s);
		free(link);
	}
	free(target);
	free(rej);
	teardown(&t);
}

static void error_json_is_replaced_whole_and_never_through_a_link(void)
{
	struct t t;
	bool fixed;
	char *failed, *target, *link, *s;
	int ffd;

	setup(&t);
	ffd = spool_work_subdir(&t.wf, "failed", true, &fixed);
	failed = path_join(t.conn, "failed");
	is_int(spool_work_error_json(ffd, "f.ndjson", "{\"a\":1}\n", 8), 0, "write failed/f.ndjson.error.json");
	is_int(spool_work_error_json(ffd, "f.ndjson", "{\"b\":2}\n", 8), 0, "write it again");
	s = slurp(failed, "f.ndjson.error.json");
	ok(s && !strcmp(s, "{\"b\":2}\n"), "it holds the second whole, nothing of the first");
	free(s);
	target = path_join(t.dir, "target");
	write_file(target, "precious\n", 9, 0644);
	link = path_join(failed, "g.ndjson.error.json");
	if (symlink(target, link) < 0)
		abort();
	is_int(spool_work_error_json(ffd, "g.ndjson", "{\"c\":3}\n", 8), 0, "write where a link stands");
	s = read_whole(target, &(size_t){ 0 });
	ok(s && !strcmp(s, "precious\n"), "the link's target is untouched");
	free(s);
	s = slurp(failed, "g.ndjson.error.json");
	ok(s && !strcmp(s, "{\"c\":3}\n"), "the error.json is a file of its own");
	free(s);
	close(ffd);
	free(link);
	free(target);
	free(failed);
	teardown(&t);
}

static void done_is_made_under_the_state_directory(void)
{
	struct t t;
	struct stat st;
	bool fixed;
	int fd;
	char *done;

	setup(&t);
	fd = spool_work_done(&t.wf, &fixed);
	done = path_join(t.state, "done/shop");
	ok(fd >= 0 && stat(done, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750,
	   "spool_work_done makes <state_dir>/done/shop, mode 0750");
	is_str(t.wf.done_dir, done, "done_dir names it");
	if (fd >= 0)
		close(fd);
	free(done);
	teardown(&t);
}

int main(void)
{
	names();
	moves_out_of_work();
	reopens_a_journaled_file_only_as_it_was();
	holds_a_file_by_name_or_id();
	rejected_lines_are_appended_cut_back_and_never_written_through_a_link();
	error_json_is_replaced_whole_and_never_through_a_link();
	done_is_made_under_the_state_directory();
	return done_testing();
}
