/* test-catalog: the bounded field catalog: counting, dropping, the cap, and its file (TAP output). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/state_catalog.h"
#include "state/state_catalog_file.h"
#include "tap.h"

static char tmpdir[] = "/tmp/test-catalog.XXXXXX";

static void note(struct catalog *c, const char *key)
{
	state_catalog_note(c, key, strlen(key));
}

static uint64_t records_of(struct catalog *c, const char *name)
{
	const struct catalog_field *f = state_catalog_find(c, name);

	return f ? f->records : 0;
}

static struct catalog *new_catalog(size_t max)
{
	struct catalog *c = NULL;
	int r = state_catalog_new(&c, max);

	if (r < 0) {
		printf("Bail out! state_catalog_new: %s\n", strerror(-r));
		exit(1);
	}
	return c;
}

static void test_key_twice_in_a_record_counts_once(void)
{
	struct catalog *c = new_catalog(1000);
	const struct catalog_field *f;

	note(c, "id");
	note(c, "name");
	note(c, "id");
	state_catalog_commit(c, 100);
	note(c, "id");
	state_catalog_commit(c, 200);
	ok(state_catalog_count(c) == 2, "two names listed");
	ok(records_of(c, "id") == 2, "id: 2 records though noted 3 times");
	ok(records_of(c, "name") == 1, "name: 1 record");
	f = state_catalog_find(c, "name");
	ok(f && f->last_seen == 100 && state_catalog_find(c, "id")->last_seen == 200, "last_seen is the last commit's");
	ok(!state_catalog_find(c, "missing") && !state_catalog_find(c, "i"), "unknown names are not found");
	ok(!state_catalog_truncated(c) && state_catalog_overflow(c) == 0, "not truncated");
	state_catalog_free(c);
}

static void test_drop_forgets_the_record(void)
{
	struct catalog *c = new_catalog(1000);
	const char *name = NULL;
	uint64_t recs = 0;
	int64_t seen = 0;

	note(c, "id");
	state_catalog_commit(c, 1);
	note(c, "id");
	note(c, "typo_field");
	ok(state_catalog_find(c, "typo_field") == NULL, "a name noted but not committed is not listed yet");
	ok(state_catalog_count(c) == 1, "count excludes uncommitted names");
	state_catalog_drop(c);
	ok(records_of(c, "id") == 1, "drop: id not counted for the rejected record");
	ok(state_catalog_find(c, "typo_field") == NULL && state_catalog_count(c) == 1, "drop: a name first seen there is forgotten");
	note(c, "typo_field");
	state_catalog_commit(c, 2);
	ok(records_of(c, "typo_field") == 1 && state_catalog_count(c) == 2, "the forgotten name can come back");
	ok(state_catalog_get(c, 0, &name, &recs, &seen) == 0 && strcmp(name, "id") == 0 && recs == 1 && seen == 1,
	   "state_catalog_get 0 is the first seen");
	ok(state_catalog_get(c, 1, NULL, NULL, NULL) == 0, "state_catalog_get takes NULL out-pointers");
	ok(state_catalog_get(c, 2, &name, &recs, &seen) == -ERANGE, "state_catalog_get past the end: -ERANGE");
	state_catalog_free(c);
}

/* Note one record's keys (NULL-terminated list) and commit it at @now. */
static void record(struct catalog *c, int64_t now, const char *const *keys)
{
	for (; *keys; keys++)
		note(c, *keys);
	state_catalog_commit(c, now);
}

/*
 * Runs of records with the same keys in the same order are tallied, not counted key by key:
 * every way of leaving or cutting such a run must give the counts of the plain definition.
 */
static void test_runs_of_one_shape_count_like_any_records(void)
{
	static const char *const abc[] = { "a", "b", "c", NULL };
	static const char *const ab[] = { "a", "b", NULL };
	static const char *const abca[] = { "a", "b", "c", "a", NULL };
	static const char *const abd[] = { "a", "b", "d", NULL };
	static const char *const none[] = { NULL };
	struct catalog *c = new_catalog(1000);
	uint64_t recs = 0;
	int64_t seen = 0;

	for (int i = 0; i < 100; i++)
		record(c, 10 + i, abc);
	ok(records_of(c, "a") == 100 && records_of(c, "c") == 100, "100 records of one shape: 100 each");
	ok(state_catalog_get(c, 2, NULL, &recs, &seen) == 0 && recs == 100 && seen == 109,
	   "read in the middle of a run: counts and last_seen current (%llu, %lld)",
	   (unsigned long long)recs, (long long)seen);
	for (int i = 0; i < 5; i++)
		record(c, 200, abc);
	ok(records_of(c, "b") == 105, "the run goes on after a read (105)");
	record(c, 300, ab);             /* a prefix of the shape */
	ok(records_of(c, "a") == 106 && records_of(c, "c") == 105, "a shorter record: a 106, c stays 105");
	ok(state_catalog_find(c, "c")->last_seen == 200 && state_catalog_find(c, "a")->last_seen == 300,
	   "last_seen: c at the run's end (200), a at the short record (300)");
	record(c, 400, abca);           /* the shape, then a repeat */
	ok(records_of(c, "a") == 107 && records_of(c, "c") == 106, "a key repeated after the shape counts once");
	record(c, 500, abd);            /* leaves the shape at its last key */
	ok(records_of(c, "d") == 1 && records_of(c, "c") == 106 && records_of(c, "a") == 108,
	   "a record that leaves the shape at its last key: d 1, c 106, a 108");
	note(c, "a");
	note(c, "b");
	state_catalog_drop(c);                /* a rejected record of the shape */
	ok(records_of(c, "a") == 108, "a dropped record of the shape counts nothing");
	note(c, "a");
	note(c, "b");
	note(c, "d");
	note(c, "new");
	state_catalog_drop(c);
	ok(!state_catalog_find(c, "new") && records_of(c, "d") == 1, "a dropped record off the shape: its new name forgotten");
	record(c, 600, abd);
	record(c, 600, none);
	record(c, 600, none);
	record(c, 700, abd);
	ok(records_of(c, "d") == 3 && records_of(c, "a") == 110, "empty records between runs count for no field");
	state_catalog_free(c);
}

/* Records noted in one catalog per request, counted into the connection's once it is acknowledged. */
static void test_merge_and_clear(void)
{
	static const char *const ab[] = { "a", "b", NULL };
	static const char *const bc[] = { "b", "c", NULL };
	struct catalog *dst = new_catalog(2), *src = new_catalog(1000);
	const char *name = NULL;

	record(dst, 100, ab);
	record(src, 50, ab);
	record(src, 200, bc);
	record(src, 200, bc);
	note(src, "x");
	ok(state_catalog_merge(dst, src) == -EBUSY, "merge refuses a source in the middle of a record");
	state_catalog_drop(src);
	note(dst, "a");
	ok(state_catalog_merge(dst, src) == -EBUSY, "merge refuses a destination in the middle of a record");
	state_catalog_commit(dst, 100);
	ok(state_catalog_merge(dst, src) == 0, "merge");
	ok(records_of(dst, "a") == 3 && records_of(dst, "b") == 4, "counts add up (a 2+1, b 1+3)");
	ok(state_catalog_find(dst, "a")->last_seen == 100 && state_catalog_find(dst, "b")->last_seen == 200,
	   "last_seen keeps the later (a 100 over 50, b 200)");
	ok(!state_catalog_find(dst, "c") && state_catalog_overflow(dst) == 2, "a name beyond the cap counts as overflow (c: 2)");
	ok(records_of(src, "c") == 2, "the source is left as it was");
	state_catalog_clear(src);
	ok(state_catalog_count(src) == 0 && !state_catalog_find(src, "b") && state_catalog_overflow(src) == 0, "clear forgets everything");
	record(src, 300, bc);
	record(src, 300, bc);
	ok(state_catalog_count(src) == 2 && records_of(src, "b") == 2 && state_catalog_get(src, 0, &name, NULL, NULL) == 0 &&
	   !strcmp(name, "b"), "a cleared catalog fills again from scratch (b first, 2 records)");
	state_catalog_free(dst);
	state_catalog_free(src);
}

/* Many names and a drop of hundreds: the table's deletion must keep every chain intact. */
static void test_drop_of_many_new_names_keeps_the_table_whole(void)
{
	struct catalog *c = new_catalog(5000);
	char key[32];
	bool all = true;

	for (int i = 0; i < 1500; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		note(c, key);
		state_catalog_commit(c, i);
	}
	for (int i = 1500; i < 2500; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		note(c, key);
	}
	note(c, "k7");
	state_catalog_drop(c);
	for (int i = 0; i < 2500; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		all &= (state_catalog_find(c, key) != NULL) == (i < 1500);
		all &= i >= 1500 || records_of(c, key) == 1;
	}
	ok(all && state_catalog_count(c) == 1500, "after dropping 1000 new names the 1500 old ones are all found");
	for (int i = 1500; i < 2500; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		note(c, key);
		note(c, key);
	}
	state_catalog_commit(c, 9);
	all = state_catalog_count(c) == 2500;
	for (int i = 0; i < 2500; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		all &= records_of(c, key) == 1;
	}
	ok(all, "the dropped names noted again: 2500 names, one record each");
	state_catalog_free(c);
}

static void test_cap_counts_overflow_and_truncates(void)
{
	struct catalog *c = new_catalog(3);
	char longname[CATALOG_NAME_MAX + 2];

	note(c, "a");
	note(c, "b");
	note(c, "c");
	note(c, "d");
	ok(!state_catalog_truncated(c), "overflow is pending until the commit");
	state_catalog_commit(c, 1);
	ok(state_catalog_count(c) == 3 && !state_catalog_find(c, "d"), "only max_fields names listed");
	ok(state_catalog_truncated(c) && state_catalog_overflow(c) == 1, "the fourth name counts as overflow, truncated");
	note(c, "e");
	state_catalog_drop(c);
	ok(state_catalog_overflow(c) == 1, "overflow of a dropped record is not counted");
	note(c, "a");
	note(c, "d");
	note(c, "f");
	state_catalog_commit(c, 2);
	ok(state_catalog_overflow(c) == 3 && records_of(c, "a") == 2, "known names still counted when full");
	state_catalog_free(c);

	c = new_catalog(10);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	note(c, longname);
	state_catalog_note(c, longname, CATALOG_NAME_MAX);
	state_catalog_commit(c, 1);
	ok(state_catalog_count(c) == 1 && state_catalog_overflow(c) == 1, "a name over CATALOG_NAME_MAX is overflow, one at the limit is listed");
	state_catalog_free(c);

	ok(state_catalog_new(&c, 0) == -EINVAL, "max_fields 0 refused");
}

/* Names that the text format must escape; one has a NUL inside, as JSON allows. */
static const char *const odd_names[] = {
	"with space", "tab\there", "quote\"'s", "non-ASCII é 日本語", "new\nline", "back\\slash",
	"cr\rhere", "ctl\x01\x1f\x7f", "\\x41", "", " leading and trailing ", "#not a comment",
	"field\t1\t2\tx", "overflow",
};
static const char nul_name[] = { 'a', '\0', 'b' };

static void fill_odd(struct catalog *c, int64_t now)
{
	for (size_t i = 0; i < sizeof(odd_names) / sizeof(*odd_names); i++)
		note(c, odd_names[i]);
	state_catalog_note(c, nul_name, sizeof(nul_name));
	state_catalog_commit(c, now);
}

static void test_save_load_round_trip(void)
{
	struct catalog *c = new_catalog(100), *d = new_catalog(100);
	char path[64], tmp[80];
	size_t n_odd = sizeof(odd_names) / sizeof(*odd_names), bad = 0;
	bool all = true;
	struct stat st;
	int r;

	snprintf(path, sizeof(path), "%s/catalog", tmpdir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fill_odd(c, 1700000000);
	note(c, "with space");
	state_catalog_commit(c, -5);
	note(c, "over");
	ok(state_catalog_file_save(c, path) == -EBUSY, "save refused while a record is noted");
	state_catalog_drop(c);
	r = state_catalog_file_save(c, path);
	ok(r == 0, "save (%s)", strerror(-r));
	ok(stat(tmp, &st) < 0 && errno == ENOENT, "no temporary file left behind");
	r = state_catalog_file_load(d, path, &bad);
	ok(r == 0, "load (%s, line %zu)", strerror(-r), bad);
	ok(state_catalog_count(d) == n_odd + 1, "every name came back (%zu of %zu)", state_catalog_count(d), n_odd + 1);
	for (size_t i = 0; i < n_odd; i++) {
		const struct catalog_field *f = state_catalog_find(d, odd_names[i]);
		bool same = f && f->name_len == strlen(odd_names[i]) &&
			    f->records == (i == 0 ? 2u : 1u) && f->last_seen == (i == 0 ? -5 : 1700000000);

		if (!same)
			printf("# mismatch for name %zu\n", i);
		all &= same;
	}
	ok(all, "each escaped name, its records and last_seen survive");
	state_catalog_free(d);
	state_catalog_free(c);
}

static void test_name_with_nul_survives(void)
{
	struct catalog *c = new_catalog(10), *d = new_catalog(10);
	char path[64];
	const char *name = NULL;
	uint64_t recs = 0;
	int r;

	snprintf(path, sizeof(path), "%s/nul", tmpdir);
	state_catalog_note(c, nul_name, sizeof(nul_name));
	state_catalog_commit(c, 7);
	r = state_catalog_file_save(c, path);
	if (r == 0)
		r = state_catalog_file_load(d, path, NULL);
	ok(r == 0 && state_catalog_count(d) == 1, "a name with a NUL inside saves and loads");
	state_catalog_get(d, 0, &name, &recs, NULL);
	ok(name && memcmp(name, nul_name, sizeof(nul_name)) == 0 && recs == 1, "its bytes are intact");
	ok(state_catalog_find(d, "a") == NULL, "it is not found by the prefix before the NUL");
	state_catalog_free(d);
	state_catalog_free(c);
}

static void test_load_merges(void)
{
	struct catalog *c = new_catalog(100), *d = new_catalog(100), *small = new_catalog(2);
	char path[64];

	snprintf(path, sizeof(path), "%s/merge", tmpdir);
	note(c, "id");
	note(c, "price");
	note(c, "url");
	note(c, "extra1");
	state_catalog_commit(c, 50);
	note(c, "id");
	state_catalog_commit(c, 60);
	ok(state_catalog_file_save(c, path) == 0, "save");
	note(d, "id");
	state_catalog_commit(d, 100);
	ok(state_catalog_file_load(d, path, NULL) == 0 && state_catalog_file_load(d, path, NULL) == 0, "load twice");
	ok(records_of(d, "id") == 5 && records_of(d, "price") == 2, "records add up");
	ok(state_catalog_find(d, "id")->last_seen == 100 && state_catalog_find(d, "price")->last_seen == 50,
	   "last_seen keeps the later");
	ok(state_catalog_file_load(small, path, NULL) == 0 && state_catalog_count(small) == 2 && state_catalog_overflow(small) == 2,
	   "names past the cap on load count as overflow (their records)");
	ok(state_catalog_file_save(small, path) == 0, "save the truncated catalog");
	state_catalog_free(small);
	small = new_catalog(2);
	ok(state_catalog_file_load(small, path, NULL) == 0 && state_catalog_overflow(small) == 2 && state_catalog_truncated(small),
	   "overflow is saved and loaded");
	state_catalog_free(small);
	state_catalog_free(d);
	state_catalog_free(c);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		printf("Bail out! %s: %s\n", path, strerror(errno));
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void test_load_refusals(void)
{
	static const char *const bad[] = {
		"field\t1\t2\tok\nfield\t1\tx\tbad-time\n",
		"field\t1\t2\tok\nfield\t-1\t2\tneg\n",
		"field\t1\t2\tok\nfield\t18446744073709551616\t2\ttoo-big\n",
		"field\t1\t2\tok\nfield\t1\t2\n",
		"field\t1\t2\tok\nfield\t1\t2\tbad\\q\n",
		"field\t1\t2\tok\nfield\t1\t2\tbad\\x4\n",
		"field\t1\t2\tok\nfield\t1\t2\tend\\\n",
		"field\t1\t2\tok\nrecord\t1\n",
		"field\t1\t2\tok\noverflow\t\n",
	};
	struct catalog *c = new_catalog(10);
	char path[64];
	size_t line;
	bool all = true;

	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	ok(state_catalog_file_load(c, path, NULL) == -ENOENT, "a missing file: -ENOENT");
	snprintf(path, sizeof(path), "%s/bad", tmpdir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		int r;

		write_file(path, bad[i]);
		line = 0;
		r = state_catalog_file_load(c, path, &line);
		if (r != -EBADMSG || line != 2) {
			printf("# case %zu: %d line %zu\n", i, r, line);
			all = false;
		}
	}
	ok(all, "malformed lines: -EBADMSG with the line number");
	ok(state_catalog_count(c) == 0 && state_catalog_overflow(c) == 0, "a refused file changes nothing");
	write_file(path, "# comment\n\nfield\t3\t-9223372036854775808\tx\noverflow\t4");
	ok(state_catalog_file_load(c, path, NULL) == 0 && records_of(c, "x") == 3 &&
	   state_catalog_find(c, "x")->last_seen == INT64_MIN && state_catalog_overflow(c) == 4,
	   "comments, blank lines, INT64_MIN and a last line without newline are read");
	note(c, "y");
	ok(state_catalog_file_load(c, path, NULL) == -EBUSY, "load refused while a record is noted");
	state_catalog_drop(c);
	state_catalog_free(c);
}

static void test_save_to_missing_dir_fails_cleanly(void)
{
	struct catalog *c = new_catalog(10);
	char path[96];

	snprintf(path, sizeof(path), "%s/no/such/dir/catalog", tmpdir);
	ok(state_catalog_file_save(c, path) == -ENOENT, "save into a missing directory: -ENOENT");
	state_catalog_free(c);
}

static void cleanup(void)
{
	static const char *const files[] = { "catalog", "nul", "merge", "bad", "missing" };
	char path[96];

	for (size_t i = 0; i < sizeof(files) / sizeof(*files); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
		(void)unlink(path);
	}
	(void)rmdir(tmpdir);
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		return 1;
	}
	test_key_twice_in_a_record_counts_once();
	test_drop_forgets_the_record();
	test_drop_of_many_new_names_keeps_the_table_whole();
	test_runs_of_one_shape_count_like_any_records();
	test_merge_and_clear();
	test_cap_counts_overflow_and_truncates();
	test_save_load_round_trip();
	test_name_with_nul_survives();
	test_load_merges();
	test_load_refusals();
	test_save_to_missing_dir_fails_cleanly();
	cleanup();
	return done_testing();
}
