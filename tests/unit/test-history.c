/* test-history: the run history file: round trip, the bound, torn and damaged lines, an end recorded once, names that do not fit, the text line. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/state_history.h"
#include "util/log.h"
#include "tap.h"
#include "testutil.h"

static struct history_entry sample(unsigned i, enum history_outcome o)
{
	struct history_entry e = { .outcome = o, .records_sent = 5000 + i, .records_rejected = i, .requests = 2 + i,
				   .retries = i % 3, .bytes_read = 1000000 + i, .started = 1764800000.125 + i,
				   .finished = 1764800001.5 + i };

	snprintf(e.connection, sizeof(e.connection), "products");
	snprintf(e.batch_uuid, sizeof(e.batch_uuid), "00000000-0000-4000-8000-%012u", i);
	if (o != HISTORY_ARCHIVED) {
		e.http_status = 404;
		snprintf(e.reason, sizeof(e.reason), "request 1 failed: \"not found\"\n\tcafé");
	}
	{
		char name[64];

		snprintf(name, sizeof(name), "daily-%u.ndjson", i);
		state_history_entry_add_name(&e, name);
	}
	return e;
}

static bool same(const struct history_entry *a, const struct history_entry *b)
{
	return !strcmp(a->connection, b->connection) && a->outcome == b->outcome && a->http_status == b->http_status &&
	       !strcmp(a->reason, b->reason) && !strcmp(a->batch_uuid, b->batch_uuid) && a->files == b->files &&
	       a->names_kept == b->names_kept && !memcmp(a->names, b->names, sizeof(a->names)) &&
	       a->records_sent == b->records_sent && a->records_unchanged == b->records_unchanged &&
	       a->records_rejected == b->records_rejected && a->requests == b->requests && a->retries == b->retries &&
	       a->bytes_read == b->bytes_read && a->started == b->started && a->finished == b->finished;
}

static char *path_of(const char *dir)
{
	char *p;

	if (asprintf(&p, "%s/history/products.history", dir) < 0)
		abort();
	return p;
}

static off_t size_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static size_t lines_in(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;
	int ch;

	while (f && (ch = fgetc(f)) != EOF)
		n += ch == '\n';
	if (f)
		fclose(f);
	return n;
}

static void round_trip(void)
{
	char *dir = tmpdir_new("history");
	struct history *h = NULL;
	struct history_entry in[3] = { sample(0, HISTORY_ARCHIVED), sample(1, HISTORY_FAILED),
				       sample(2, HISTORY_HANDED_BACK) }, *out = NULL;
	size_t n = 0, damaged = 9;

	is_int(state_history_read(dir, "products", 0, &out, &n, NULL), -ENOENT, "no history yet: -ENOENT");
	is_int(state_history_open(&h, dir, "products"), 0, "open");
	for (int i = 0; i < 3; i++)
		is_int(state_history_put(h, &in[i], 1000), 0, "put entry %d", i);
	is_int(state_history_read(dir, "products", 0, &out, &n, &damaged), 0, "read");
	ok(n == 3 && damaged == 0, "three entries, none damaged (%zu, %zu)", n, damaged);
	for (size_t i = 0; i < n && i < 3; i++)
		ok(same(&out[i], &in[i]), "entry %zu reads back as written, oldest first", i);
	free(out);
	is_int(state_history_read(dir, "products", 1, &out, &n, NULL), 0, "read the last one");
	ok(n == 1 && same(&out[0], &in[2]), "max 1: the newest");
	free(out);
	state_history_free(h);
	tmpdir_remove(dir);
}

/* Put entries @from..@to-1 keeping @keep; the most lines the file held after a put. */
static size_t put_many(struct history *h, const char *path, unsigned from, unsigned to, unsigned keep)
{
	size_t most = 0;

	for (unsigned i = from; i < to; i++) {
		struct history_entry e = sample(i, HISTORY_ARCHIVED);

		(void)state_history_put(h, &e, keep);
		most = lines_in(path) > most ? lines_in(path) : most;
	}
	return most;
}

static void bound_is_kept(void)
{
	char *dir = tmpdir_new("history"), *path = path_of(dir);
	struct history *h = NULL;
	struct history_entry *out = NULL, e;
	size_t n = 0, most = 0;

	is_int(state_history_open(&h, dir, "products"), 0, "open");
	most = put_many(h, path, 0, 23, 5);
	ok(most < 10, "the file never holds twice the bound (at most %zu lines)", most);
	is_int(state_history_read(dir, "products", 5, &out, &n, NULL), 0, "read");
	e = sample(18, HISTORY_ARCHIVED);
	ok(n == 5 && same(&out[0], &e), "the last 5 are kept, oldest first");
	free(out);
	state_history_free(h);
	/* Opened again, it goes on counting what the file holds: still bounded. */
	is_int(state_history_open(&h, dir, "products"), 0, "open again");
	{
		size_t again = put_many(h, path, 23, 30, 5);

		most = again > most ? again : most;
	}
	ok(most < 10, "still bounded after a reopen (at most %zu lines)", most);
	state_history_free(h);
	free(path);
	tmpdir_remove(dir);
}

static void torn_and_damaged_lines(void)
{
	char *dir = tmpdir_new("history"), *path = path_of(dir);
	struct history *h = NULL;
	struct history_entry *out = NULL, e;
	size_t n = 0, damaged = 0;
	off_t two, three;

	is_int(state_history_open(&h, dir, "products"), 0, "open");
	for (unsigned i = 0; i < 2; i++) {
		e = sample(i, HISTORY_ARCHIVED);
		(void)state_history_put(h, &e, 1000);
	}
	two = size_of(path);
	e = sample(2, HISTORY_ARCHIVED);
	(void)state_history_put(h, &e, 1000);
	three = size_of(path);
	state_history_free(h);
	/* Every cut inside the last line: it is never read, the two before always are. */
	for (off_t cut = two + 1; cut < three; cut++) {
		if (truncate(path, cut) < 0)
			abort();
		if (state_history_read(dir, "products", 0, &out, &n, &damaged) < 0 || n != 2 || damaged) {
			ok(false, "cut at %lld of %lld: %zu entries, %zu damaged", (long long)cut, (long long)three, n, damaged);
			free(out);
			break;
		}
		free(out);
	}
	ok(true, "a line cut anywhere is left out, the lines before it read");
	/* The daemon cuts the torn tail before appending: the next entry is whole. */
	is_int(state_history_open(&h, dir, "products"), 0, "open over a torn tail");
	ok(size_of(path) == two, "the torn tail is cut at open");
	e = sample(3, HISTORY_ARCHIVED);
	is_int(state_history_put(h, &e, 1000), 0, "put after the cut");
	state_history_free(h);
	is_int(state_history_read(dir, "products", 0, &out, &n, &damaged), 0, "read");
	ok(n == 3 && same(&out[2], &e) && damaged == 0, "the new entry follows the two before");
	free(out);
	/* A byte changed in the middle line: that one alone is left out, and counted. */
	{
		int fd = open(path, O_RDWR);
		char c;

		if (fd < 0 || pread(fd, &c, 1, two - 20) != 1)
			abort();
		c ^= 1;
		if (pwrite(fd, &c, 1, two - 20) != 1)
			abort();
		close(fd);
	}
	is_int(state_history_read(dir, "products", 0, &out, &n, &damaged), 0, "read with a damaged line");
	ok(n == 2 && damaged == 1, "the damaged line is left out, the others read (%zu, %zu)", n, damaged);
	free(out);
	free(path);
	tmpdir_remove(dir);
}

static void an_end_is_recorded_once(void)
{
	char *dir = tmpdir_new("history");
	struct history *h = NULL;
	struct history_entry e = sample(7, HISTORY_ARCHIVED), f = sample(7, HISTORY_HANDED_BACK), *out = NULL;
	size_t n = 0;

	is_int(state_history_open(&h, dir, "products"), 0, "open");
	is_int(state_history_put(h, &e, 1000), 0, "put");
	state_history_free(h);
	is_int(state_history_open(&h, dir, "products"), 0, "open after a restart");
	is_int(state_history_put(h, &e, 1000), 1, "the same end again (a replay): 1, not written");
	is_int(state_history_put(h, &f, 1000), 0, "another outcome of the same batch is written");
	state_history_free(h);
	is_int(state_history_read(dir, "products", 0, &out, &n, NULL), 0, "read");
	ok(n == 2, "two entries (%zu)", n);
	free(out);
	tmpdir_remove(dir);
}

static void names_that_do_not_fit_are_counted(void)
{
	char *dir = tmpdir_new("history");
	struct history *h = NULL;
	struct history_entry e = sample(1, HISTORY_ARCHIVED), *out = NULL;
	char name[256], line[16384];
	size_t n = 0;

	memset(name, 'x', 250);
	snprintf(name + 250, 6, ".json");
	for (int i = 1; i < 1000; i++)
		state_history_entry_add_name(&e, name);
	ok(e.files == 1000 && e.names_kept > 1 && e.names_kept < 1000, "1000 files, %u names kept", e.names_kept);
	is_int(state_history_open(&h, dir, "products"), 0, "open");
	is_int(state_history_put(h, &e, 1000), 0, "put");
	state_history_free(h);
	is_int(state_history_read(dir, "products", 0, &out, &n, NULL), 0, "read");
	ok(n == 1 && same(&out[0], &e), "the entry reads back with its count and kept names");
	state_history_format_text(&out[0], line, sizeof(line));
	ok(strstr(line, " archived 1000 files (daily-1.ndjson, xxx") && strstr(line, " more): 5001 sent,"),
	   "the text names the first and counts the rest: %.120s", line);
	free(out);
	tmpdir_remove(dir);
}

/* Bytes that are not UTF-8 are kept as \u00XX and read back as two bytes each: the entry still reads. */
static void names_not_utf8_read_back(void)
{
	char *dir = tmpdir_new("history");
	struct history *h = NULL;
	struct history_entry e = sample(1, HISTORY_FAILED), *out = NULL;
	char name[256];
	size_t n = 0, damaged = 0;

	memset(name, 0xff, 250);
	snprintf(name + 250, 6, ".json");
	while (state_history_entry_add_name(&e, name))
		;
	memset(e.reason, 0xfe, sizeof(e.reason) - 1);
	e.reason[sizeof(e.reason) - 1] = '\0';
	is_int(state_history_open(&h, dir, "products"), 0, "open");
	is_int(state_history_put(h, &e, 1000), 0, "put");
	state_history_free(h);
	is_int(state_history_read(dir, "products", 0, &out, &n, &damaged), 0, "read");
	ok(n == 1 && damaged == 0 && out[0].files == e.files && out[0].names_kept >= 1 && out[0].names_kept < e.names_kept &&
	   strlen(out[0].reason) == sizeof(e.reason) - 2, "the entry reads back, fewer names kept, the reason cut (%zu, %zu)",
	   n, damaged);
	free(out);
	tmpdir_remove(dir);
}

static void text_escapes_names_and_reason(void)
{
	struct history_entry e = sample(3, HISTORY_FAILED);
	char line[16384];

	e.files = 0;
	e.names_kept = 0;
	state_history_entry_add_name(&e, "a\x1b[31m\nb.ndjson");
	state_history_format_text(&e, line, sizeof(line));
	ok(!strchr(line, '\x1b') && !strchr(line, '\n') && strstr(line, "a\\x1b[31m\\x0ab.ndjson: "),
	   "control characters of a name are escaped: %s", line);
	ok(strstr(line, "; HTTP 404; request 1 failed: \"not found\"\\x0a\\x09café") != NULL, "and of the reason");
	ok(!strncmp(line, "2025-12-03 22:13:24 UTC products failed ", 40), "the finished time in UTC first");
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);
	round_trip();
	bound_is_kept();
	torn_and_damaged_lines();
	an_end_is_recorded_once();
	names_that_do_not_fit_are_counted();
	names_not_utf8_read_back();
	text_escapes_names_and_reason();
	return done_testing();
}
