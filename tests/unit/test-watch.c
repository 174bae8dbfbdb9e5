/* test-watch: inotify events applied in the order they happened, even when the owner counts opens while names are told. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <ev.h>

#include "tap.h"
#include "testutil.h"
#include "spool/spool_watch.h"

struct t {
	struct ev_loop *loop;
	struct watch *w;
	char *dir;
	int fd_b;               /* B held open by the test, closed from inside on_name(A) */
	int told_a, told_b, overflows, gone;
	int count_a_inside;     /* spool_watch_open_count(A) as seen from inside on_name(A) */
};

static void on_name(void *userdata, const char *name)
{
	struct t *t = userdata;

	if (!strcmp(name, "A")) {
		t->told_a++;
		/* The owner looks at A: meanwhile B's reader closes it, and the owner counts A's opens. */
		if (t->fd_b >= 0) {
			close(t->fd_b);
			t->fd_b = -1;
		}
		t->count_a_inside = spool_watch_open_count(t->w, "A");
	} else if (!strcmp(name, "B")) {
		t->told_b++;
	}
}

static void on_overflow(void *userdata)
{
	((struct t *)userdata)->overflows++;
}

static void on_gone(void *userdata)
{
	((struct t *)userdata)->gone++;
}

static void put(const char *dir, const char *name)
{
	char *tmp, *final;
	int fd;

	if (asprintf(&tmp, "%s/.%s.tmp", dir, name) < 0 || asprintf(&final, "%s/%s", dir, name) < 0)
		abort();
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0 || write(fd, "{\"id\":1}\n", 9) != 9 || close(fd) < 0 || rename(tmp, final) < 0)
		abort();
	free(tmp);
	free(final);
}

/* Run the loop until nothing more is pending (bounded: a hang fails, it does not wait). */
static void settle(struct t *t)
{
	for (int i = 0; i < 100; i++)
		ev_run(t->loop, EVRUN_NOWAIT);
}

/*
 * A close read while the owner is told a name must not be applied before the open that came
 * earlier in the same read: the count would stay at 1 and the file would wait "open" forever.
 */
static void a_close_is_never_applied_before_its_open(void)
{
	static const struct watch_ops ops = { on_name, on_overflow, on_gone, NULL };
	struct t t = { .loop = ev_loop_new(EVFLAG_AUTO), .dir = tmpdir_new("watch"), .fd_b = -1, .count_a_inside = -2 };
	char *b_path = path_join(t.dir, "B");

	ok(spool_watch_new(&t.w, t.loop, t.dir, &ops, &t) == 0, "a watch on %s", t.dir);
	put(t.dir, "B");
	settle(&t);
	is_int(t.told_b, 1, "B renamed in is told once");
	is_int(spool_watch_open_count(t.w, "B"), 0, "B: nobody has it open");

	/* Queued together, before the loop reads any: A renamed in, then B opened by a reader. */
	put(t.dir, "A");
	t.fd_b = open(b_path, O_RDONLY | O_CLOEXEC);
	ok(t.fd_b >= 0, "a reader opens B");
	settle(&t);
	is_int(t.told_a, 1, "A renamed in is told once");
	is_int(t.count_a_inside, 0, "A's opens, counted while it is told: 0");
	ok(t.fd_b < 0, "B's reader closed it while A was told");
	is_int(spool_watch_open_count(t.w, "B"), 0, "B: its open and close applied in order, nobody has it open");
	is_int(t.overflows + t.gone, 0, "no overflow, the directory stays");

	spool_watch_free(t.w);
	ev_loop_destroy(t.loop);
	free(b_path);
	tmpdir_remove(t.dir);
}

int main(void)
{
	a_close_is_never_applied_before_its_open();
	return done_testing();
}
