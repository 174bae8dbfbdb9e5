/*
 * fuzz-journal: replay of arbitrary bytes as a journal, then compaction and a put on the result.
 * Input: one flags byte, then the file. Flag 1 rewrites the CRC of every well-framed record before
 * the replay, or the fuzzer would hardly ever get a mutated record past its checksum.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "state/state_journal.h"
#include "util/crc32c.h"
#include "util/log.h"
#include "fuzz-util.h"

static const char *const files[] = { "journal", "journal.tmp", NULL };

/* Every field but `updated` (state_journal_put stamps it); strings as C strings, as the journal keeps them. */
static bool same_batch(const struct journal_batch *a, const struct journal_batch *b)
{
	return a->id == b->id && a->state == b->state && !strcmp(a->uuid, b->uuid) &&
	       !strcmp(a->connection, b->connection) && !strcmp(a->name, b->name) &&
	       a->cut_records == b->cut_records &&
	       a->cut_bytes == b->cut_bytes && a->acks == b->acks && a->offset == b->offset &&
	       a->lineno == b->lineno && a->records == b->records && a->rejected == b->rejected &&
	       a->rejected_size == b->rejected_size && a->n_members == b->n_members && a->csv_opts == b->csv_opts &&
	       a->decided == b->decided && a->resend == b->resend && a->ttl == b->ttl && a->dest == b->dest;
}

static bool same_member(const struct journal_member *a, const struct journal_member *b)
{
	return a->batch_id == b->batch_id && a->file_id == b->file_id && a->index == b->index &&
	       !strcmp(a->name, b->name) && !memcmp(&a->ident, &b->ident, sizeof(a->ident)) &&
	       a->rejected_size == b->rejected_size;
}

/*
 * What a replay yields, through the public interface only: live batches in order and their
 * members, the same whether or not @b was compacted since.
 */
static void check_same_state(const struct journal *a, const struct journal *b, bool compacted)
{
	(void)compacted;
	CHECK(state_journal_count(a) == state_journal_count(b));
	for (size_t i = 0; i < state_journal_count(a); i++) {
		const struct journal_batch *x = state_journal_at(a, i), *y = state_journal_at(b, i);
		const struct journal_member *mx, *my;
		size_t n = state_journal_members(a, x->id, &mx);

		CHECK(x->state == BATCH_OPEN || x->state == BATCH_COMPLETED);
		CHECK(same_batch(x, y));
		CHECK(state_journal_find(b, x->id) == y);
		CHECK(state_journal_members(b, y->id, &my) == n);
		for (size_t k = 0; k < n; k++) {
			CHECK(same_member(&mx[k], &my[k]));
			CHECK(state_journal_file_live(a, mx[k].file_id) && state_journal_file_live(b, mx[k].file_id));
		}
	}
}

/* Frames as in state_jrec.c: [u32 length][u32 CRC-32C of payload][payload], little-endian. */
static void fix_crcs(uint8_t *b, size_t n)
{
	for (size_t pos = 0; pos + 8 <= n;) {
		uint32_t len = 0, crc;

		for (unsigned i = 0; i < 4; i++)
			len |= (uint32_t)b[pos + i] << (8 * i);
		if (len == 0 || len > n - pos - 8)
			break;
		crc = crc32c(0, b + pos + 8, len);
		for (unsigned i = 0; i < 4; i++)
			b[pos + 4 + i] = (uint8_t)(crc >> (8 * i));
		pos += 8 + (size_t)len;
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dir_init("journal", files);
	/* A torn tail is the common case here: its warning would only slow the fuzzer down. */
	log_set_level(LOG_LVL_ERROR);
	return 0;
}

/* The copies of damaged journals kept aside (journal.damaged-*): one per damaged input, not kept. */
static void remove_damaged_copies(void)
{
	DIR *d = opendir(fuzz_dir);
	struct dirent *de;

	CHECK(d);
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "journal.damaged-", 16))
			CHECK(unlinkat(dirfd(d), de->d_name, 0) == 0);
	closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct journal *ro, *j, *c;
	struct journal_batch last;
	uint64_t torn = 0, torn_again = 1, id_ro, id_j, id_c;
	char path[512];
	struct stat st;
	uint8_t *file;
	bool rewritten;

	if (size < 1)
		return 0;
	file = malloc(size - 1 ? size - 1 : 1);
	CHECK(file);
	memcpy(file, data + 1, size - 1);
	if (data[0] & 1)
		fix_crcs(file, size - 1);
	size--;
	write_file(fuzz_path(path, sizeof(path), "journal"), file, size, 0640);
	free(file);

	/* `dcsyncd status` reads it as it is; the daemon cuts the damaged tail and sees the same. */
	CHECK(state_journal_open_readonly(&ro, fuzz_dir) == 0);
	CHECK(state_journal_open(&j, fuzz_dir, &torn) == 0);
	CHECK(torn <= size);
	/* Damage in the middle is copied aside and the journal rewritten; a torn tail is only cut. */
	{
		const struct journal_range *dr;

		rewritten = state_journal_damage(j, &dr) != 0;
		if (!rewritten)
			CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == size - torn);
	}
	remove_damaged_copies();
	check_same_state(ro, j, false);
	id_ro = state_journal_new_id(ro);
	id_j = state_journal_new_id(j);
	CHECK(id_ro == id_j);
	state_journal_free(ro);
	/* state_jrec.c takes ids above 2^63 for corruption: no daemon gets there, so stop short of it. */
	if (id_j > UINT64_MAX / 2 - 16) {
		state_journal_free(j);
		return 0;
	}

	/* A replay of the cut (or rewritten) file is clean and the same. */
	CHECK(state_journal_open(&c, fuzz_dir, &torn_again) == 0);
	CHECK(torn_again == 0);
	check_same_state(j, c, rewritten);
	state_journal_free(c);

	/* Compaction keeps exactly the live state (ids, batches, their members). */
	CHECK(state_journal_compact(j, true) == 0);
	CHECK(state_journal_open(&c, fuzz_dir, &torn_again) == 0);
	CHECK(torn_again == 0);
	check_same_state(j, c, true);
	id_c = state_journal_new_id(c);
	CHECK(id_c == id_j + 1);
	state_journal_free(c);

	/* And the compacted journal takes new records: end the last live batch, or open one. */
	if (state_journal_count(j)) {
		last = *state_journal_at(j, state_journal_count(j) - 1);
		last.state = BATCH_ARCHIVED;
	} else {
		struct journal_member m = { .file_id = state_journal_new_id(j), .name = "x.ndjson" };

		last = (struct journal_batch){ .id = state_journal_new_id(j), .state = BATCH_OPEN, .n_members = 1 };
		strcpy(last.uuid, "00000000-0000-4000-8000-000000000001");
		strcpy(last.connection, "fuzz");
		strcpy(last.name, "x.ndjson");
		m.batch_id = last.id;
		CHECK(state_journal_put_member(j, &m) == 0);
	}
	CHECK(state_journal_put(j, &last) == 0);
	CHECK(state_journal_sync(j) == 0);
	CHECK(state_journal_open(&c, fuzz_dir, &torn_again) == 0);
	CHECK(torn_again == 0);
	check_same_state(j, c, true);
	CHECK(!state_journal_find(c, last.id) == (last.state == BATCH_ARCHIVED));
	state_journal_free(c);
	state_journal_free(j);
	return 0;
}
