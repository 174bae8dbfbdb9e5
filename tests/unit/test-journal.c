/* test-journal: replay of the last state per batch, terminal states, ids, torn tails, damage in the middle, compaction, members. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state/state_journal.h"
#include "state/state_jrec.h"
#include "util/log.h"
#include "tap.h"
#include "testutil.h"

static struct journal_batch batch(uint64_t id, enum batch_state st, uint64_t offset)
{
	struct journal_batch b = { .id = id, .state = st, .offset = offset, .lineno = offset / 10 + 1 };

	snprintf(b.uuid, sizeof(b.uuid), "00000000-0000-4000-8000-%012llu", (unsigned long long)id);
	snprintf(b.connection, sizeof(b.connection), "conn-%llu", (unsigned long long)(id % 3));
	snprintf(b.name, sizeof(b.name), "export-%llu.ndjson", (unsigned long long)id);
	b.cut_records = 5000;
	b.cut_bytes = 8u << 20;
	b.acks = (uint32_t)(offset / 100);
	b.records = offset / 10;
	b.rejected = id;
	b.rejected_size = 7 * id;
	b.csv_opts = 0x5eed0001u + id;
	b.dest = 0xd0000001u + id;
	b.decided = id % 2 ? 1700000000u + id : 0;
	b.resend = id % 3 ? 86400u * id : 0;
	b.ttl = id % 2 ? -1 : (int64_t)(3600 * id);
	b.n_members = 1;
	return b;
}

/* Every field but `updated` (stamped by state_journal_put). */
static bool same_batch(const struct journal_batch *a, const struct journal_batch *b)
{
	return a && b && a->id == b->id && a->state == b->state && !strcmp(a->uuid, b->uuid) &&
	       !strcmp(a->connection, b->connection) && !strcmp(a->name, b->name) &&
	       a->cut_records == b->cut_records &&
	       a->cut_bytes == b->cut_bytes && a->acks == b->acks && a->offset == b->offset && a->lineno == b->lineno &&
	       a->records == b->records && a->rejected == b->rejected && a->rejected_size == b->rejected_size &&
	       a->n_members == b->n_members && a->csv_opts == b->csv_opts && a->dest == b->dest && a->decided == b->decided &&
	       a->resend == b->resend && a->ttl == b->ttl;
}

static struct journal *open_ok(const char *dir, uint64_t *torn)
{
	struct journal *j = NULL;
	uint64_t t = 0;
	int r = state_journal_open(&j, dir, &t);

	if (r < 0) {
		diag("state_journal_open(%s): %s", dir, strerror(-r));
		abort();
	}
	if (torn)
		*torn = t;
	return j;
}

static void put_sync(struct journal *j, const struct journal_batch *b)
{
	if (state_journal_put(j, b) < 0 || state_journal_sync(j) < 0)
		abort();
}

static void replay_keeps_last_state_per_batch(void)
{
	char *dir = tmpdir_new("journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b1 = batch(state_journal_new_id(j), BATCH_OPEN, 0), b2, b3;
	uint64_t torn = 99;

	b2 = batch(state_journal_new_id(j), BATCH_OPEN, 0);
	b3 = batch(state_journal_new_id(j), BATCH_OPEN, 0);
	put_sync(j, &b1);
	put_sync(j, &b2);
	put_sync(j, &b3);
	b1 = batch(b1.id, BATCH_OPEN, 500);
	put_sync(j, &b1);
	b1 = batch(b1.id, BATCH_COMPLETED, 900);
	b2 = batch(b2.id, BATCH_OPEN, 300);
	state_journal_put(j, &b1);
	state_journal_put(j, &b2);
	ok(state_journal_dirty(j), "puts are pending until synced");
	state_journal_sync(j);
	ok(!state_journal_dirty(j), "nothing pending after sync");
	b3 = batch(b3.id, BATCH_ARCHIVED, 1000);
	put_sync(j, &b3);
	state_journal_free(j);

	j = open_ok(dir, &torn);
	is_int(torn, 0, "clean journal: nothing torn");
	is_int(state_journal_count(j), 2, "two live batches after replay (the archived one is gone)");
	ok(state_journal_count(j) == 2 && same_batch(state_journal_at(j, 0), &b1) && same_batch(state_journal_at(j, 1), &b2),
	   "replay gives each batch's last state, in id order");
	ok(state_journal_at(j, 0)->updated > 0, "updated is stamped");
	ok(state_journal_find(j, b3.id) == NULL, "state_journal_find: archived batch not found");
	ok(same_batch(state_journal_find(j, b2.id), &b2), "state_journal_find: live batch found");
	is_int(state_journal_new_id(j), b3.id + 1, "next id follows the highest id seen");
	state_journal_free(j);
	tmpdir_remove(dir);
}

static void terminal_states_are_not_live(void)
{
	static const enum batch_state terminal[] = { BATCH_ARCHIVED, BATCH_FAILED, BATCH_RELEASED };
	char *dir = tmpdir_new("journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b;

	for (uint64_t id = 1; id <= 3; id++) {
		b = batch(id, BATCH_OPEN, 0);
		put_sync(j, &b);
		b = batch(id, terminal[id - 1], 10);
		put_sync(j, &b);
	}
	is_int(state_journal_count(j), 0, "ARCHIVED, FAILED, RELEASED: not live once put");
	state_journal_free(j);
	j = open_ok(dir, NULL);
	is_int(state_journal_count(j), 0, "ARCHIVED, FAILED, RELEASED: not live after replay");
	is_int(state_journal_new_id(j), 4, "ids of terminal batches still count for the next id");
	state_journal_free(j);
	tmpdir_remove(dir);
}

static void ids_keep_growing_after_compaction(void)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b;
	uint64_t last = 0;

	for (int i = 0; i < 5; i++) {
		b = batch(last = state_journal_new_id(j), BATCH_OPEN, 0);
		put_sync(j, &b);
		b.state = BATCH_ARCHIVED;
		put_sync(j, &b);
	}
	is_int(state_journal_compact(j, true), 0, "forced compaction with every batch archived");
	state_journal_free(j);
	j = open_ok(dir, NULL);
	is_int(state_journal_count(j), 0, "nothing live after compaction and replay");
	is_int(state_journal_new_id(j), last + 1, "next id is still past every id ever used (%llu)",
	       (unsigned long long)last + 1);
	b = batch(last + 1, BATCH_OPEN, 0);
	put_sync(j, &b);
	is_int(state_journal_compact(j, true), 0, "compacting again");
	state_journal_free(j);
	j = open_ok(dir, NULL);
	is_int(state_journal_new_id(j), last + 2, "and again after a second compaction");
	state_journal_free(j);
	free(path);
	tmpdir_remove(dir);
}

static void compaction_keeps_live_batches_and_shrinks(void)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch live[3], b;
	off_t before, after;
	size_t k = 0;

	for (uint64_t id = 1; id <= 30; id++) {
		for (uint64_t off = 0; off <= 400; off += 100) {
			b = batch(id, BATCH_OPEN, off);
			put_sync(j, &b);
		}
		if (id % 10 == 0) {
			live[k++] = b;  /* batches 10, 20 and 30 stay open */
		} else {
			b.state = id % 2 ? BATCH_FAILED : BATCH_ARCHIVED;
			put_sync(j, &b);
		}
	}
	before = file_size(path);
	is_int(state_journal_compact(j, false), 0, "unforced compaction of a small journal: nothing to do");
	is_int(file_size(path), before, "unforced compaction left the file as it was");
	is_int(state_journal_compact(j, true), 0, "forced compaction");
	after = file_size(path);
	ok(after > 0 && after < before / 10, "the file shrank (%lld -> %lld bytes)", (long long)before,
	   (long long)after);
	/* The compacted journal is appended to as before. */
	live[0] = batch(live[0].id, BATCH_COMPLETED, 999);
	put_sync(j, &live[0]);
	ok(file_size(path) > after, "records are appended to the compacted file");
	state_journal_free(j);
	ok(access(path, F_OK) == 0 && file_size(path) > 0, "journal still in place");
	{
		char *tmp = path_join(dir, "journal.tmp");

		ok(access(tmp, F_OK) < 0, "no temporary left behind");
		free(tmp);
	}
	j = open_ok(dir, NULL);
	ok(state_journal_count(j) == 3 && same_batch(state_journal_at(j, 0), &live[0]) && same_batch(state_journal_at(j, 1), &live[1]) &&
		   same_batch(state_journal_at(j, 2), &live[2]),
	   "only the live batches remain, with their last state");
	is_int(state_journal_new_id(j), 31, "next id preserved");
	state_journal_free(j);
	free(path);
	tmpdir_remove(dir);
}

/*
 * Cut the file at every byte inside the last record: the earlier records must replay exactly, the
 * torn bytes be reported and cut off, and the journal be usable.
 */
static void torn_tail_is_cut_at_every_offset(void)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b[4];
	char *image;
	size_t full = 0, good;
	unsigned bad_replay = 0, bad_torn = 0, bad_size = 0, bad_append = 0;

	for (int i = 0; i < 3; i++) {
		b[i] = batch((uint64_t)i + 1, BATCH_OPEN, (uint64_t)i * 10);
		put_sync(j, &b[i]);
	}
	good = (size_t)file_size(path);
	b[3] = batch(2, BATCH_COMPLETED, 4242);  /* the last record updates batch 2 */
	put_sync(j, &b[3]);
	state_journal_free(j);
	image = read_whole(path, &full);
	ok(image && full > good + 8, "journal of 4 records, last one %zu bytes", full - good);

	for (size_t cut = good + 1; cut < full; cut++) {
		uint64_t torn = 0;
		struct journal_batch again;

		write_file(path, image, cut, 0640);
		j = open_ok(dir, &torn);
		if (!(state_journal_count(j) == 3 && same_batch(state_journal_at(j, 0), &b[0]) && same_batch(state_journal_at(j, 1), &b[1]) &&
		      same_batch(state_journal_at(j, 2), &b[2])))
			bad_replay++;
		if (torn != cut - good)
			bad_torn++;
		if (file_size(path) != (off_t)good)
			bad_size++;
		/* Appending after the cut and reopening finds the new record. */
		again = batch(3, BATCH_COMPLETED, 77);
		put_sync(j, &again);
		state_journal_free(j);
		j = open_ok(dir, &torn);
		if (torn || !same_batch(state_journal_find(j, 3), &again) || !same_batch(state_journal_find(j, 2), &b[1]))
			bad_append++;
		state_journal_free(j);
	}
	is_int(bad_replay, 0, "cut at each of %zu offsets in the last record: the 3 earlier records replay exactly",
	       full - good - 1);
	is_int(bad_torn, 0, "the torn bytes are reported exactly");
	is_int(bad_size, 0, "the file is cut back to the last good record");
	is_int(bad_append, 0, "a record appended after the cut replays");

	/* A flipped byte in the last record's payload: its CRC no longer matches. */
	{
		uint64_t torn = 0;

		image[full - 5] ^= 0x40;
		write_file(path, image, full, 0640);
		j = open_ok(dir, &torn);
		is_int(torn, full - good, "bad CRC: the whole last record is cut");
		ok(same_batch(state_journal_find(j, 2), &b[1]), "bad CRC: batch 2 keeps its previous state");
		is_int(file_size(path), good, "bad CRC: file cut back");
		state_journal_free(j);
	}
	/* A flipped byte in the first record: only that record is lost, the three after it replay. */
	{
		uint64_t torn = 0;
		const struct journal_range *dmg;
		size_t first_len = good / 3;    /* the three OPEN records are the same length */

		image[full - 5] ^= 0x40;
		image[12] ^= 0x01;
		write_file(path, image, full, 0640);
		j = open_ok(dir, &torn);
		ok(torn == 0 && state_journal_count(j) == 2 && same_batch(state_journal_find(j, 2), &b[3]) &&
			   same_batch(state_journal_find(j, 3), &b[2]),
		   "corrupt first record: the records after it replay (batch 1 lost, 2 and 3 in their last state)");
		ok(state_journal_damage(j, &dmg) == 1 && dmg[0].start == 0 && dmg[0].end == first_len,
		   "corrupt first record: the damage is its %zu bytes", first_len);
		state_journal_free(j);
	}
	free(image);
	free(path);
	tmpdir_remove(dir);
}

/* How many journal.damaged-* files @dir holds; the newest name in *name (malloc'd) if asked. */
static int damaged_copies(const char *dir, char **name)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		abort();
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "journal.damaged-", 16)) {
			n++;
			if (name) {
				free(*name);
				*name = path_join(dir, de->d_name);
			}
		}
	closedir(d);
	return n;
}

/* One record of the damage test's journal: where it is and what it said. */
struct rec_model {
	size_t off, len;
	struct journal_batch b;
};

/*
 * A journal of many records (batches opened, acknowledged, completed, archived or failed, some
 * left open), damaged by 4 flipped bytes at 10%, 50% and 90% of its length, one at a time and all three together. Replay must lose exactly the records
 * the flips hit: every other record is applied (live batches in their last surviving state,
 * the skipped stretches are reported exactly, the batches whose
 * later records were hit are in doubt, the damaged file is copied aside once and the journal
 * rewritten so that the next start finds nothing wrong.
 */
static void damage_in_the_middle_loses_only_what_it_hits(void)
{
	static const int where[][3] = { { 10, -1, -1 }, { 50, -1, -1 }, { 90, -1, -1 }, { 10, 50, 90 } };
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct rec_model *recs = calloc(1000, sizeof(*recs));
	size_t n_recs = 0, full;
	char *image;

	if (!recs)
		abort();
	for (uint64_t id = 1; id <= 60; id++) {
		int acks = (int)(id % 4) + 1;
		struct rec_model *r;

		for (int a = 0; a <= acks + 2; a++) {
			struct journal_batch b = batch(id, a <= acks ? BATCH_OPEN : a == acks + 1 ? BATCH_COMPLETED :
						       id % 7 == 0 ? BATCH_FAILED : BATCH_ARCHIVED, (uint64_t)a * 100);

			if (id % 5 == 0 && a > acks)
				break;          /* every fifth batch stays open */
			if (id % 11 == 0 && a > acks + 1)
				break;          /* and some stay completed */
			r = &recs[n_recs++];
			r->off = (size_t)file_size(path);
			r->b = b;
			put_sync(j, &b);
			r->len = (size_t)file_size(path) - r->off;
		}

	}
	state_journal_free(j);
	image = read_whole(path, &full);
	ok(image && n_recs > 250, "a journal of %zu records, %zu bytes", n_recs, full);

	for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++) {
		char *damaged = malloc(full), *copy = NULL, *copy_data = NULL;
		bool hit[1000] = { false };
		struct journal_range want[3];
		size_t n_want = 0, copy_len = 0, bad_live = 0, bad_doubt = 0, live = 0;
		const struct journal_range *dmg;
		uint64_t torn = 0;
		char label[32];

		snprintf(label, sizeof(label), where[w][1] < 0 ? "flip at %d%%" : "flips at %d%%, %d%%, %d%%",
			 where[w][0], where[w][1], where[w][2]);
		memcpy(damaged, image, full);
		for (int k = 0; k < 3 && where[w][k] >= 0; k++) {
			size_t at = full * (size_t)where[w][k] / 100;

			for (size_t i = at; i < at + 4; i++) {
				damaged[i] ^= 0x5a;
				for (size_t r = 0; r < n_recs; r++)
					if (i >= recs[r].off && i < recs[r].off + recs[r].len)
						hit[r] = true;
			}
		}
		/* The stretches replay must report: each run of hit records. */
		for (size_t r = 0; r < n_recs; r++)
			if (hit[r] && (r == 0 || !hit[r - 1]))
				want[n_want++] = (struct journal_range){ .start = recs[r].off };
			else if (!hit[r] && r > 0 && hit[r - 1])
				want[n_want - 1].end = recs[r].off;
		write_file(path, damaged, full, 0640);
		j = open_ok(dir, &torn);

		/*
		 * The model: each batch's last surviving record. Which batch a damaged record was of
		 * cannot be known, so a live batch is in doubt when any damage follows its last record.
		 */
		for (uint64_t id = 1; id <= 60; id++) {
			const struct rec_model *last = NULL;
			bool doubt = false;

			for (size_t r = 0; r < n_recs; r++)
				if (recs[r].b.id == id && !hit[r])
					last = &recs[r];
			for (size_t r = 0; last && r < n_recs; r++)
				doubt |= hit[r] && recs[r].off > last->off;
			if (last && (last->b.state == BATCH_OPEN || last->b.state == BATCH_COMPLETED)) {
				live++;
				if (!same_batch(state_journal_find(j, id), &last->b))
					bad_live++;
				if (state_journal_in_doubt(j, id) != doubt)
					bad_doubt++;
			} else if (state_journal_find(j, id)) {
				bad_live++;
			}
		}
		is_int(torn, 0, "%s: no torn tail", label);
		is_int(bad_live, 0, "%s: %zu live batches, each in its last surviving state", label, state_journal_count(j));
		is_int(state_journal_count(j), live, "%s: no other batch is live", label);
		is_int(bad_doubt, 0, "%s: exactly the live batches whose later records were hit are in doubt", label);

		{
			bool same = state_journal_damage(j, &dmg) == n_want;

			for (size_t i = 0; same && i < n_want; i++)
				same = dmg[i].start == want[i].start && dmg[i].end == want[i].end;
			ok(same, "%s: the %zu stretch(es) skipped are exactly the records hit (first at %llu..%llu)", label,
			   n_want, (unsigned long long)want[0].start, (unsigned long long)want[0].end);
		}
		state_journal_free(j);
		ok(damaged_copies(dir, &copy) == 1 && (copy_data = read_whole(copy, &copy_len)) != NULL &&
			   copy_len == full && !memcmp(copy_data, damaged, full),
		   "%s: the damaged journal is copied aside byte for byte (%s)", label, copy ? strrchr(copy, '/') + 1 : "none");
		free(copy_data);
		ok(file_size(path) < (off_t)full / 4, "%s: the journal is rewritten with the live state only", label);
		j = open_ok(dir, &torn);
		ok(state_journal_damage(j, &dmg) == 0 && state_journal_count(j) == live && damaged_copies(dir, NULL) == 1,
		   "%s: the next start finds nothing damaged and makes no second copy", label);
		state_journal_free(j);
		if (copy)
			unlink(copy);
		free(copy);
		free(damaged);
	}
	free(image);
	free(recs);
	free(path);
	tmpdir_remove(dir);
}

/* A torn tail is normal after a power cut: cut, and no copy aside. */
static void torn_tail_makes_no_copy(void)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b = batch(1, BATCH_OPEN, 10), c = batch(1, BATCH_OPEN, 20);
	const struct journal_range *dmg;
	uint64_t torn = 0;
	off_t good;

	put_sync(j, &b);
	good = file_size(path);
	put_sync(j, &c);
	state_journal_free(j);
	if (truncate(path, good + 20) < 0)
		abort();
	j = open_ok(dir, &torn);
	ok(torn == 20 && state_journal_damage(j, &dmg) == 0 && same_batch(state_journal_find(j, 1), &b) && file_size(path) == good,
	   "torn tail: 20 bytes cut, no damage reported, the earlier state stands");
	is_int(damaged_copies(dir, NULL), 0, "torn tail: no copy aside");
	state_journal_free(j);
	free(path);
	tmpdir_remove(dir);
}

/* A batch record naming no file, framed right, is not a record: replay cuts it as a torn tail. */
static void no_member_record_does_not_check_out(const struct journal_batch *b)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	unsigned char img[8 + JREC_MAX];
	struct jrec_buf w;
	struct journal *j;
	uint64_t torn = 0;

	state_jrec_batch(&w, b);
	state_jrec_frame(img, &w);
	memcpy(img + 8, w.b, w.n);
	write_file(path, (const char *)img, 8 + w.n, 0640);
	j = open_ok(dir, &torn);
	ok(torn == 8 + w.n && state_journal_count(j) == 0, "a batch record without a member does not check out");
	state_journal_free(j);
	free(path);
	tmpdir_remove(dir);
}

static void members_replay(void)
{
	char *dir = tmpdir_new("journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_member m[2] = {
		{ .batch_id = 5, .file_id = 6, .index = 0, .name = "a.ndjson",
		  .ident = { .dev = 2049, .ino = 1006, .size = 1u << 20, .mtime_ns = 1700000000123456789 } },
		{ .batch_id = 5, .file_id = 7, .index = 1, .name = "b.ndjson" },
	};
	struct journal_batch b = batch(5, BATCH_OPEN, 0);
	const struct journal_member *got;

	b.n_members = 2;
	state_journal_put_member(j, &m[0]);
	state_journal_put_member(j, &m[1]);
	put_sync(j, &b);
	state_journal_free(j);
	j = open_ok(dir, NULL);
	ok(state_journal_members(j, 5, &got) == 2 && got[0].file_id == 6 && got[1].file_id == 7 &&
		   !strcmp(got[1].name, "b.ndjson"),
	   "members of a live batch replay in order");
	ok(!memcmp(&got[0].ident, &m[0].ident, sizeof(m[0].ident)) && got[0].batch_id == 5 && got[1].index == 1,
	   "a member's identity replays");
	ok(state_journal_file_live(j, 7) && !state_journal_file_live(j, 99) && !state_journal_file_live(j, 5),
	   "state_journal_file_live knows member files (a batch's id names no file)");
	is_int(state_journal_new_id(j), 8, "member file ids count for the next id");
	m[0].ident.size += 100;
	state_journal_put_member(j, &m[0]);
	put_sync(j, &b);
	state_journal_free(j);
	j = open_ok(dir, NULL);
	ok(state_journal_members(j, 5, &got) == 2 && got[0].ident.size == m[0].ident.size,
	   "a member put again (its file grew) replaces its earlier record");
	b.state = BATCH_ARCHIVED;
	put_sync(j, &b);
	ok(state_journal_members(j, 5, &got) == 0 && !state_journal_file_live(j, 7), "members go with their batch");
	b = batch(9, BATCH_OPEN, 0);
	b.n_members = 0;
	is_int(state_journal_put(j, &b), -EINVAL, "a batch without a member is refused");
	ok(!state_journal_find(j, 9), "... and not kept");
	state_journal_free(j);
	tmpdir_remove(dir);
	no_member_record_does_not_check_out(&b);
}

static void leftover_temporary_is_ignored(void)
{
	char *dir = tmpdir_new("journal");
	char *tmp = path_join(dir, "journal.tmp");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b = batch(4, BATCH_OPEN, 40);

	put_sync(j, &b);
	state_journal_free(j);
	write_file(tmp, "half a compaction", 17, 0640);
	j = open_ok(dir, NULL);
	ok(state_journal_count(j) == 1 && same_batch(state_journal_at(j, 0), &b), "leftover journal.tmp: the journal's state stands");
	ok(access(tmp, F_OK) < 0, "leftover journal.tmp is removed");
	state_journal_free(j);
	free(tmp);
	tmpdir_remove(dir);
}

/* A read-only view replays a torn journal without touching it. */
static void readonly_view_does_not_cut(void)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch b = batch(1, BATCH_OPEN, 10);
	off_t size;

	put_sync(j, &b);
	state_journal_free(j);
	{
		/* a record header announcing 80 bytes, followed by 3 */
		int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);

		if (fd < 0 || write(fd, "\x50\0\0\0\0\0\0\0abc", 11) != 11)
			abort();
		close(fd);
	}
	size = file_size(path);
	ok(state_journal_open_readonly(&j, dir) == 0 && state_journal_count(j) == 1 && same_batch(state_journal_at(j, 0), &b),
	   "read-only view replays up to the torn tail");
	state_journal_free(j);
	is_int(file_size(path), size, "read-only view leaves the torn tail in place");
	free(path);
	tmpdir_remove(dir);
}

/*
 * state_journal_sync: "On failure nothing queued is lost: call again." A write that stops part-way
 * (here at RLIMIT_FSIZE) is cut back; the retry must land right after the last good record,
 * also once compaction has swapped the file.
 */
static void failed_sync_is_retried_cleanly(bool compacted)
{
	char *dir = tmpdir_new("journal");
	char *path = path_join(dir, "journal");
	struct journal *j = open_ok(dir, NULL);
	struct journal_batch a = batch(1, BATCH_OPEN, 0), b = batch(2, BATCH_OPEN, 20);
	struct rlimit old, lim;
	uint64_t torn = 0;
	off_t good;
	int r;

	put_sync(j, &a);
	if (compacted && state_journal_compact(j, true) < 0)
		abort();
	good = file_size(path);
	getrlimit(RLIMIT_FSIZE, &old);
	lim = (struct rlimit){ .rlim_cur = (rlim_t)good + 10, .rlim_max = old.rlim_max };
	state_journal_put(j, &b);
	setrlimit(RLIMIT_FSIZE, &lim);
	r = state_journal_sync(j);
	setrlimit(RLIMIT_FSIZE, &old);
	ok(r < 0 && state_journal_dirty(j), "%s: a sync cut short by the file size limit fails and keeps the record queued",
	   compacted ? "after compaction" : "before compaction");
	is_int(file_size(path), good, "%s: the partial write is cut back", compacted ? "after compaction" : "before compaction");
	is_int(state_journal_sync(j), 0, "%s: the retry succeeds", compacted ? "after compaction" : "before compaction");
	state_journal_free(j);
	j = open_ok(dir, &torn);
	ok(torn == 0 && state_journal_count(j) == 2 && same_batch(state_journal_find(j, 2), &b),
	   "%s: the retried record replays (torn %llu bytes, %zu live)", compacted ? "after compaction" : "before compaction",
	   (unsigned long long)torn, state_journal_count(j));
	state_journal_free(j);
	free(path);
	tmpdir_remove(dir);
}

int main(void)
{
	log_set_level(LOG_LVL_ERROR);  /* each torn tail is also logged as a warning */
	replay_keeps_last_state_per_batch();
	terminal_states_are_not_live();
	ids_keep_growing_after_compaction();
	compaction_keeps_live_batches_and_shrinks();
	torn_tail_is_cut_at_every_offset();
	damage_in_the_middle_loses_only_what_it_hits();
	torn_tail_makes_no_copy();
	members_replay();
	leftover_temporary_is_ignored();
	readonly_view_does_not_cut();
	signal(SIGXFSZ, SIG_IGN);  /* writes past RLIMIT_FSIZE fail with EFBIG instead */
	failed_sync_is_retried_cleanly(false);
	failed_sync_is_retried_cleanly(true);
	return done_testing();
}
