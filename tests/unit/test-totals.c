/* test-totals: the connections' totals file: round trip, cadence of writes, live state, damaged files, carrying over old totals. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "tap.h"
#include "testutil.h"
#include "state/state_totals.h"

static struct conn_totals sample(const char *name, uint64_t n)
{
	struct conn_totals s = { .files_done = n, .files_failed = n + 1, .records_sent = n * 5000,
				 .records_rejected = n + 2, .requests = n + 3, .last_success = 1700000000 + (int64_t)n,
				 .last_error = 1700000001, .last_error_status = 503, .rate_budget = 50, .rate_waiting = 1 };

	snprintf(s.connection, sizeof(s.connection), "%s", name);
	snprintf(s.last_error_text, sizeof(s.last_error_text), "big.ndjson: request 3 failed (HTTP 503): \"busy\"\n\ttry later, café");
	return s;
}

static bool same(const struct conn_totals *a, const struct conn_totals *b)
{
	return a && b && !strcmp(a->connection, b->connection) && a->files_done == b->files_done &&
	       a->files_failed == b->files_failed && a->records_sent == b->records_sent &&
	       a->records_rejected == b->records_rejected && a->requests == b->requests &&
	       a->last_success == b->last_success && a->last_error == b->last_error &&
	       a->last_error_status == b->last_error_status && !strcmp(a->last_error_text, b->last_error_text) &&
	       a->rate_budget == b->rate_budget && a->rate_waiting == b->rate_waiting;
}

static struct totals *open_ok(const char *dir, double interval)
{
	struct totals *t = NULL;
	int r = state_totals_open(&t, dir, interval);

	if (r < 0) {
		diag("state_totals_open(%s): %s", dir, strerror(-r));
		abort();
	}
	return t;
}

/* What `dcsyncd status` would read now: the file's totals of @name (copied), false if none. */
static bool on_disk(const char *dir, const char *name, struct conn_totals *out)
{
	struct totals *ro = NULL;
	const struct conn_totals *s;
	bool found = false;

	if (state_totals_open_readonly(&ro, dir) < 0)
		return false;
	if ((s = state_totals_find(ro, name))) {
		*out = *s;
		found = true;
	}
	state_totals_free(ro);
	return found;
}

static void round_trip(void)
{
	char *dir = tmpdir_new("totals");
	char *path = path_join(dir, "totals");
	struct totals *t = open_ok(dir, 0), *ro = NULL;
	struct conn_totals a = sample("products", 7), b = sample("customers", 0), got;
	struct stat st = { 0 };
	int sr;

	ok(state_totals_find(t, "products") == NULL, "a new state directory has no totals");
	is_int(state_totals_open_readonly(&ro, dir), -ENOENT, "the read-only view says there is no file yet");
	a.records_sent = (uint64_t)INT64_MAX;
	b.last_error_text[0] = '\0';
	b.last_error = b.last_error_status = 0;
	is_int(state_totals_put(t, &a), 0, "put");
	is_int(state_totals_put(t, &b), 0, "put another connection");
	sr = stat(path, &st);
	ok(sr == 0 && (st.st_mode & 0777) == 0640,
	   "the file is written at once (interval 0), mode 0640 like the journal (%o)", (unsigned)(st.st_mode & 0777));
	ok(on_disk(dir, "products", &got) && same(&got, &a),
	   "every field reads back: counts up to 2^63-1, quotes, tab, newline and UTF-8 in the error text");
	ok(on_disk(dir, "customers", &got) && same(&got, &b), "a connection without errors reads back");
	a.files_done++;
	state_totals_put(t, &a);
	state_totals_free(t);
	t = open_ok(dir, 0);
	ok(same(state_totals_find(t, "products"), &a) && same(state_totals_find(t, "customers"), &b),
	   "the daemon's next start finds the last totals put");
	ok(!state_totals_pending(t), "nothing is pending after a start");
	state_totals_free(t);
	free(path);
	tmpdir_remove(dir);
}

/* At most one write per interval: later changes wait for a flush; at stop a forced flush writes them. */
static void writes_are_spaced(void)
{
	char *dir = tmpdir_new("totals");
	struct totals *t = open_ok(dir, 3600);
	struct conn_totals a = sample("products", 1), got;

	is_int(state_totals_put(t, &a), 0, "the first put of a quiet period");
	ok(on_disk(dir, "products", &got) && got.files_done == 1, "is written at once");
	ok(!state_totals_pending(t), "and leaves nothing pending");
	a.files_done = 2;
	is_int(state_totals_put(t, &a), 0, "a put within the interval");
	ok(on_disk(dir, "products", &got) && got.files_done == 1, "is not written yet");
	ok(state_totals_pending(t) && state_totals_find(t, "products")->files_done == 2, "but kept, pending");
	is_int(state_totals_flush(t, false), 0, "a flush within the interval");
	ok(on_disk(dir, "products", &got) && got.files_done == 1, "writes nothing");
	is_int(state_totals_flush(t, true), 0, "a forced flush (at stop)");
	ok(on_disk(dir, "products", &got) && got.files_done == 2 && !state_totals_pending(t), "writes the change");
	state_totals_free(t);
	tmpdir_remove(dir);
}

/* The limiter's state may change with every request: it never causes a write of its own. */
static void live_state_rides_with_the_next_write(void)
{
	char *dir = tmpdir_new("totals");
	struct totals *t = open_ok(dir, 0);
	struct conn_totals a = sample("products", 1), b = sample("customers", 2), got;

	a.rate_waiting = 1;
	state_totals_put_live(t, &a);
	ok(!on_disk(dir, "products", &got) && state_totals_pending(t), "a live change is kept, not written, even with no interval");
	is_int(state_totals_put(t, &b), 0, "an event of another connection");
	ok(on_disk(dir, "products", &got) && same(&got, &a), "writes the live change with it");
	a.rate_waiting = 0;
	state_totals_put_live(t, &a);
	is_int(state_totals_flush(t, false), 0, "the daemon's tick");
	ok(on_disk(dir, "products", &got) && got.rate_waiting == 0 && !state_totals_pending(t), "writes it too");
	state_totals_free(t);
	tmpdir_remove(dir);
}

static void failed_write_stays_pending(void)
{
	char *dir = tmpdir_new("totals");
	char *sub = path_join(dir, "state");
	struct totals *t;
	struct conn_totals a = sample("products", 1);

	if (mkdir(sub, 0750) < 0)
		abort();
	t = open_ok(sub, 0);
	/* The directory goes away under the open store: every write fails, whoever runs the test. */
	if (rmdir(sub) < 0)
		abort();
	ok(state_totals_put(t, &a) < 0, "a put whose write fails says so");
	ok(state_totals_pending(t) && same(state_totals_find(t, "products"), &a), "and keeps the change pending");
	ok(state_totals_flush(t, true) < 0 && state_totals_pending(t), "a flush that fails keeps it too");
	state_totals_free(t);
	free(sub);
	tmpdir_remove(dir);
}

/* Send stderr to @path until capture_end: what the daemon and `status` say about a bad file. */
static int capture_begin(const char *path)
{
	int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	fflush(stderr);
	if (saved < 0 || fd < 0 || dup2(fd, 2) < 0)
		abort();
	close(fd);
	return saved;
}

static void capture_end(int saved)
{
	fflush(stderr);
	if (dup2(saved, 2) < 0)
		abort();
	close(saved);
}

struct bad_case {
	const char *what, *text, *reason;
};

/* A file that is not totals is set aside as totals.damaged and the totals start from zero. */
static void damaged_file_is_kept_aside(void)
{
	static const struct bad_case cases[] = {
		{ "half a document", "{\"format\":1,\"connections\":[{\"name\":\"products\",\"files_up", "not JSON" },
		{ "another format", "{\"format\":2,\"connections\":[]}", "format" },
		{ "a negative count", "{\"format\":1,\"connections\":[{\"name\":\"p\",\"records_sent\":-1}]}", "records_sent" },
		{ "a count as text", "{\"format\":1,\"connections\":[{\"name\":\"p\",\"requests\":\"3\"}]}", "requests" },
		{ "no name", "{\"format\":1,\"connections\":[{\"files_uploaded\":3}]}", "name" },
		{ "a name twice", "{\"format\":1,\"connections\":[{\"name\":\"p\"},{\"name\":\"p\"}]}", "named twice" },
		{ "binary", "\x01\x02\xff", "not JSON" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *dir = tmpdir_new("totals");
		char *path = path_join(dir, "totals"), *aside = path_join(dir, "totals.damaged"), *kept, *said;
		char *log = path_join(dir, "stderr");
		struct totals *t, *ro = NULL;
		struct conn_totals a = sample("p", 4), got;
		size_t len = 0;
		int saved;

		write_file(path, cases[i].text, strlen(cases[i].text), 0640);
		saved = capture_begin(log);
		is_int(state_totals_open_readonly(&ro, dir), -EBADMSG, "%s: the read-only view refuses it", cases[i].what);
		t = open_ok(dir, 0);
		capture_end(saved);
		said = read_whole(log, &len);
		ok(said && strstr(said, path) && strstr(said, cases[i].reason) && strstr(said, aside),
		   "%s: both say which file and why (%s); the daemon says where it is kept", cases[i].what, cases[i].reason);
		if (said && (!strstr(said, path) || !strstr(said, cases[i].reason)))
			diag("said: %s", said);
		free(said);
		free(log);
		kept = read_whole(aside, &len);
		ok(kept && len == strlen(cases[i].text) && !memcmp(kept, cases[i].text, len) && file_size(path) < 0,
		   "%s: the daemon keeps it as totals.damaged, byte for byte", cases[i].what);
		ok(state_totals_find(t, "p") == NULL, "%s: and starts from zero", cases[i].what);
		state_totals_put(t, &a);
		ok(on_disk(dir, "p", &got) && same(&got, &a), "%s: the next write makes a good file", cases[i].what);
		free(kept);
		state_totals_free(t);
		free(path);
		free(aside);
		tmpdir_remove(dir);
	}
}

/* Old totals (from an older journal) fill in only connections the file does not know. */
static void merge_takes_only_unknown_connections(void)
{
	char *dir = tmpdir_new("totals");
	struct totals *t = open_ok(dir, 3600);
	struct conn_totals now = sample("products", 9), old[3] = { sample("products", 1), sample("customers", 2),
								 sample("orders", 3) }, got;

	state_totals_put(t, &now);
	is_int(state_totals_merge(t, old, 3), 2, "two of three old entries are taken");
	ok(same(state_totals_find(t, "products"), &now), "a connection the file knows keeps its totals");
	ok(same(state_totals_find(t, "customers"), &old[1]) && same(state_totals_find(t, "orders"), &old[2]),
	   "the others take the old totals");
	ok(state_totals_pending(t) && !on_disk(dir, "orders", &got), "they are pending, not written yet");
	is_int(state_totals_flush(t, true), 0, "flush");
	ok(on_disk(dir, "orders", &got) && same(&got, &old[2]), "then on disk");
	is_int(state_totals_merge(t, old, 3), 0, "merging again takes nothing");
	state_totals_free(t);
	tmpdir_remove(dir);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	round_trip();
	writes_are_spaced();
	live_state_rides_with_the_next_write();
	failed_write_stays_pending();
	damaged_file_is_kept_aside();
	merge_takes_only_unknown_connections();
	return done_testing();
}
