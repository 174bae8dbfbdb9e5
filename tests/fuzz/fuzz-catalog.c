/* fuzz-catalog: state_catalog_file_load() of arbitrary bytes, then a save/load round trip of what it kept. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "state/state_catalog.h"
#include "state/state_catalog_file.h"
#include "fuzz-util.h"

static const char *const files[] = { "catalog", "saved", "saved.tmp", NULL };

struct snap_field {
	char name[CATALOG_NAME_MAX + 1];
	size_t name_len;
	uint64_t records;
	int64_t last_seen;
};

struct snap {
	size_t n;
	uint64_t overflow;
	bool truncated;
	struct snap_field f[64];
};

/* Catalogs here hold at most 64 names (see max_fields below), so a snapshot is a fixed array. */
static void snapshot(struct catalog *c, struct snap *s)
{
	s->n = state_catalog_count(c);
	s->overflow = state_catalog_overflow(c);
	s->truncated = state_catalog_truncated(c);
	CHECK(s->n <= 64);
	for (size_t i = 0; i < s->n; i++) {
		const char *name;
		const struct catalog_field *f;

		CHECK(state_catalog_get(c, i, &name, &s->f[i].records, &s->f[i].last_seen) == 0);
		/* name_len is only in the struct: find gives it for names without a NUL inside. */
		f = state_catalog_find(c, name);
		s->f[i].name_len = f && f->name == name ? f->name_len : strlen(name);
		CHECK(s->f[i].name_len <= CATALOG_NAME_MAX);
		memcpy(s->f[i].name, name, s->f[i].name_len);
	}
	CHECK(state_catalog_get(c, s->n, NULL, NULL, NULL) == -ERANGE);
}

static bool same(const struct snap *a, const struct snap *b)
{
	if (a->n != b->n || a->overflow != b->overflow)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->f[i].records != b->f[i].records || a->f[i].last_seen != b->f[i].last_seen ||
		    a->f[i].name_len != b->f[i].name_len || memcmp(a->f[i].name, b->f[i].name, a->f[i].name_len))
			return false;
	return true;
}

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t n = 1;

	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

/* Load into @c (which may hold names already); check what a failed load must leave unchanged. */
static void load_and_round_trip(struct catalog *c, size_t max_fields, const char *in, size_t lines)
{
	static struct snap before, loaded, again;
	struct catalog *d;
	char saved[512];
	size_t bad = 0;
	int r;

	snapshot(c, &before);
	r = state_catalog_file_load(c, in, &bad);
	if (r < 0) {
		CHECK(r == -EBADMSG);
		CHECK(bad >= 1 && bad <= lines);
		snapshot(c, &loaded);
		CHECK(same(&before, &loaded));
		return;
	}
	snapshot(c, &loaded);
	CHECK(loaded.n <= max_fields);
	/* What was loaded saves and loads back the same into an empty catalog of the same size. */
	CHECK(state_catalog_file_save(c, fuzz_path(saved, sizeof(saved), "saved")) == 0);
	CHECK(state_catalog_new(&d, max_fields) == 0);
	CHECK(state_catalog_file_load(d, saved, &bad) == 0);
	snapshot(d, &again);
	CHECK(same(&loaded, &again));
	/* Merging it into an empty catalog is the same as loading it. */
	state_catalog_clear(d);
	CHECK(state_catalog_merge(d, c) == 0);
	snapshot(d, &again);
	CHECK(same(&loaded, &again));
	state_catalog_free(d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dir_init("catalog", files);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const pre[] = { "id", "email", "a\tb" };
	struct catalog *small, *big;
	char in[512];
	size_t lines = count_lines(data, size);

	write_file(fuzz_path(in, sizeof(in), "catalog"), data, size, 0600);

	/* Small: names beyond the fourth overflow; it holds names already, as a daemon's would. */
	CHECK(state_catalog_new(&small, 4) == 0);
	for (size_t i = 0; i < 3; i++)
		state_catalog_note(small, pre[i], strlen(pre[i]));
	state_catalog_commit(small, 1700000000);
	load_and_round_trip(small, 4, in, lines);
	state_catalog_free(small);

	CHECK(state_catalog_new(&big, 64) == 0);
	load_and_round_trip(big, 64, in, lines);
	state_catalog_free(big);
	return 0;
}
