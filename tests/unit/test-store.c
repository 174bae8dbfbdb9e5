/* test-store: the skip_unchanged store's invariants: keys, batches, crashes, TTL, forget, damage. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_store.h"
#include "tap.h"
#include "testutil.h"

#define URL "https://api.example"
#define UUID "0f6c1c4e-0000-4000-8000-000000000001"

struct key {
	unsigned char b[STATE_KEY_MAX];
	size_t n;
};

static struct key canon(const char *json)
{
	struct key k = { .n = 0 };

	if (state_key_canon(json, strlen(json), k.b, &k.n) < 0)
		k.n = 0;
	return k;
}

static bool same_key(const char *a, const char *b)
{
	struct key x = canon(a), y = canon(b);

	return x.n && x.n == y.n && memcmp(x.b, y.b, x.n) == 0;
}

static struct store_hash h(const char *rec)
{
	return state_key_hash_record(rec, strlen(rec));
}

/* Decide one record in its own transaction. */
static int decide(struct store *s, const char *key, const char *rec, uint32_t ttl, uint64_t pos, uint64_t now)
{
	struct key k = canon(key);
	int rc;

	if (state_store_txn_begin(s) < 0)
		return -1;
	rc = state_store_decide(s, k.b, k.n, h(rec), ttl, pos, now);
	if (state_store_txn_commit(s) < 0)
		return -1;
	return rc;
}

/* One whole batch that sends @rec for @key, completed at @ack. */
static int batch_one(struct store *s, const char *uuid, const char *key, const char *rec, uint32_t ttl,
                     uint64_t now, uint64_t ack)
{
	int rc = state_store_batch_begin(s, uuid);

	if (rc == 0)
		rc = decide(s, key, rec, ttl, 0, now);
	if (rc >= 0 && state_store_batch_complete(s, uuid, ack) < 0)
		rc = -1;
	return rc;
}

static struct store *open_rw(const char *dir, const char *uuid, uint64_t resend)
{
	struct store *s = NULL;

	if (state_store_open(dir, URL, uuid, STORE_RW, resend, &s) < 0)
		return NULL;
	return s;
}

static void test_keys(void)
{
	struct key k;

	ok(same_key("\"1\"", "1"), "the string \"1\" and the number 1 are one key");
	ok(same_key("1", "1.0") && same_key("1", "1e0") && same_key("1", "10e-1") && same_key("1", "\"1.00\""),
	   "1, 1.0, 1e0, 10e-1 and \"1.00\" are one key");
	ok(same_key("0", "-0") && same_key("0", "0.0e7"), "zero in any spelling is one key");
	ok(same_key("\"A\\u0042c\"", "\"abc\"") && same_key("\" abc \"", "\"abc\""),
	   "escapes, ASCII case and outer blanks do not split a key");
	ok(same_key("\"\\u00e9\"", "\"\xc3\xa9\""), "an escaped and a literal non-ASCII letter are one key");
	ok(!same_key("\"a\"", "\"b\"") && !same_key("1", "2") && !same_key("1", "-1") && !same_key("\"1a\"", "1"),
	   "different keys stay different");
	ok(!same_key("12", "1.2") && !same_key("100", "1"), "the place of the digits matters");
	ok(same_key("9007199254740993", "9007199254740992") && same_key("\"9007199254740993\"", "9.007199254740992e15"),
	   "integers past 2^53 that read as one double are one key (an API of doubles merges them)");
	ok(same_key("0.1", "0.10000000000000001") && same_key("1e14", "100000000000000.001"),
	   "a number of more than 15 digits is the shortest number of its double");
	ok(!same_key("123456789012345", "123456789012346") && !same_key("9007199254740992", "9007199254740994"),
	   "numbers a double tells apart stay apart");
	ok(!same_key("1234567890123456e400", "1234567890123457e400") && same_key("1234567890123456e400", "12345678901234560e399"),
	   "a number past a double's range keeps its exact form");
	ok(state_key_canon("true", 4, k.b, &k.n) == -EINVAL && state_key_canon("\"a", 2, k.b, &k.n) == -EINVAL,
	   "a key that is neither string nor number is refused");
}

static void test_batches(const char *base)
{
	char *dir = NULL;
	struct store *s;
	struct state_store_stats st;

	if (asprintf(&dir, "%s/batches", base) < 0)
		abort();
	s = open_rw(dir, UUID, 0);
	ok(s != NULL, "a new store opens");
	if (!s)
		goto out;
	ok(batch_one(s, "b1", "1", "{\"id\":1,\"v\":1}", 0, 100, 100) == STORE_SEND,
	   "an unknown key is sent");
	ok(state_store_batch_begin(s, "b2") == 0 && decide(s, "\"1\"", "{\"id\":1,\"v\":1}", 0, 0, 200) == STORE_SKIP,
	   "the same record under the same key (spelt differently) is skipped once its batch completed");
	ok(decide(s, "1", "{\"id\":1,\"v\":2}", 0, 1, 200) == STORE_SEND, "a changed record is sent");
	ok(decide(s, "1", "{\"id\":1,\"v\":1}", 0, 2, 200) == STORE_SEND,
	   "flip-back: a later record of a key changed in this batch is sent although it equals the stored one");
	ok(decide(s, "2", "{\"id\":2}", 0, 3, 200) == STORE_SEND && state_store_batch_forget(s) == 0,
	   "an incomplete batch is forgotten");
	ok(state_store_batch_begin(s, "b3") == 0 && decide(s, "1", "{\"id\":1,\"v\":1}", 0, 0, 300) == STORE_SEND,
	   "a key a forgotten batch sent is sent again, even unchanged");
	ok(state_store_batch_complete(s, "b3", 300) == 0 && state_store_batch_complete(s, "b3", 301) == STORE_ALREADY &&
	   state_store_batch_committed(s, "b3"), "completing twice is harmless and the commit is recorded");
	ok(state_store_stats(s, &st) == 0 && st.keys == 1 && st.pending == 0 && st.bytes > 0,
	   "stats count the keys known and the bytes on disk");
	state_store_close(s);

	/* A crash in the middle of a batch: close without completing, reopen, re-decide. */
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	state_store_batch_begin(s, "b4");
	int first[4] = {
		decide(s, "1", "{\"id\":1,\"v\":1}", 0, 10, 400),   /* unchanged: skip */
		decide(s, "3", "{\"id\":3}", 0, 11, 400),            /* new: send */
		decide(s, "1", "{\"id\":1,\"v\":9}", 0, 12, 400),   /* changed: send */
		decide(s, "1", "{\"id\":1,\"v\":1}", 0, 13, 400),   /* flip-back: send */
	};
	state_store_close(s);
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	ok(state_store_batch_begin(s, "b4") == 0, "the open batch is resumed after a restart");
	int again[4] = {
		decide(s, "1", "{\"id\":1,\"v\":1}", 0, 10, 400),
		decide(s, "3", "{\"id\":3}", 0, 11, 400),
		decide(s, "1", "{\"id\":1,\"v\":9}", 0, 12, 400),
		decide(s, "1", "{\"id\":1,\"v\":1}", 0, 13, 400),
	};
	ok(memcmp(first, again, sizeof first) == 0 && first[0] == STORE_SKIP && first[1] == STORE_SEND &&
	   first[2] == STORE_SEND && first[3] == STORE_SEND,
	   "re-deciding a batch's positions after a crash gives the same answers");
	ok(state_store_batch_complete(s, "b4", 400) == 0 && state_store_batch_complete(s, "b4", 400) == STORE_ALREADY,
	   "a resumed batch completes once");
	state_store_close(s);

	/* A batch begun over one that neither completed nor was forgotten forgets it. */
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	state_store_batch_begin(s, "b5");
	decide(s, "1", "{\"id\":1,\"v\":5}", 0, 0, 500);
	ok(state_store_batch_begin(s, "b6") == 0 && decide(s, "1", "{\"id\":1,\"v\":1}", 0, 0, 500) == STORE_SEND,
	   "a new batch over an unfinished one forgets what that one sent");
	state_store_batch_forget(s);
	state_store_close(s);

	/* Another destination: nothing known holds. */
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	batch_one(s, "b7", "3", "{\"id\":3}", 0, 600, 600);
	state_store_close(s);
	s = open_rw(dir, "another-uuid", 0);
	ok(s && state_store_batch_begin(s, "b8") == 0 && decide(s, "3", "{\"id\":3}", 0, 0, 600) == STORE_SEND,
	   "opening for another destination clears what was known");
	state_store_close(s);
out:
	free(dir);
}

/* Tell the store that the API refused the record of @key, in a transaction of its own. */
static int refused(struct store *s, const char *key)
{
	struct key k = canon(key);
	int rc;

	if (state_store_txn_begin(s) < 0)
		return -1;
	rc = state_store_refused(s, k.b, k.n);
	if (state_store_txn_commit(s) < 0)
		return -1;
	return rc;
}

static void test_refused(const char *base)
{
	char *dir = NULL;
	struct store *s;
	struct state_store_stats st;

	if (asprintf(&dir, "%s/refused", base) < 0)
		abort();
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	batch_one(s, "r1", "1", "{\"id\":1,\"v\":1}", 0, 100, 100);
	batch_one(s, "r2", "2", "{\"id\":2,\"v\":1}", 0, 100, 100);
	state_store_batch_begin(s, "r3");
	decide(s, "1", "{\"id\":1,\"v\":2}", 0, 0, 200);
	decide(s, "2", "{\"id\":2,\"v\":2}", 0, 1, 200);
	ok(refused(s, "1") == 0, "a refused key is noted");
	state_store_close(s);

	/* A crash after the refusal: decisions are the same, the refusal is kept. */
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	ok(state_store_batch_begin(s, "r3") == 0 && decide(s, "1", "{\"id\":1,\"v\":2}", 0, 0, 200) == STORE_SEND &&
	   decide(s, "1", "{\"id\":1,\"v\":1}", 0, 2, 200) == STORE_SEND,
	   "a refusal changes no decision of the open batch");
	ok(state_store_batch_complete(s, "r3", 200) == 0, "the batch completes");
	ok(state_store_batch_begin(s, "r4") == 0 && decide(s, "1", "{\"id\":1,\"v\":2}", 0, 0, 300) == STORE_SEND &&
	   decide(s, "1", "{\"id\":1,\"v\":1}", 0, 1, 300) == STORE_SEND,
	   "a refused key is known neither as refused nor as what the API held before");
	ok(decide(s, "2", "{\"id\":2,\"v\":2}", 0, 2, 300) == STORE_SKIP, "the batch's other keys are known");
	ok(refused(s, "2") == 0 && state_store_batch_begin(s, "r5") == 0 &&
	   decide(s, "2", "{\"id\":2,\"v\":2}", 0, 0, 400) == STORE_SEND,
	   "a batch that does not complete forgets its refused keys too, as unknown");
	ok(state_store_batch_complete(s, "r5", 400) == 0 && state_store_stats(s, &st) == 0 && st.keys == 1 &&
	   st.pending == 0, "no refusal of an earlier batch is applied to a later one");
	state_store_close(s);
out:
	free(dir);
}

static void test_time(const char *base)
{
	char *dir = NULL;
	struct store *s;

	if (asprintf(&dir, "%s/time", base) < 0)
		abort();
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	batch_one(s, "t1", "1", "r", 100, 1000, 1000);
	ok(state_store_batch_begin(s, "t2") == 0 && decide(s, "1", "r", 100, 0, 1049) == STORE_SKIP,
	   "with a TTL an unchanged record is skipped before half of it has passed");
	ok(decide(s, "1", "r", 100, 1, 1049 + 1) == STORE_SEND, "and sent once half its TTL has passed");
	state_store_batch_forget(s);
	batch_one(s, "t3", "2", "r", 0, 1000, 1000);
	ok(state_store_batch_begin(s, "t4") == 0 && decide(s, "2", "r", 50, 0, 1001) == STORE_SEND,
	   "a different ttl_seconds is a change");
	ok(decide(s, "2", "r", 0, 1, 999) == STORE_SEND, "a clock gone back sends");
	ok(decide(s, "2", "r", 0, 2, 1000000) == STORE_SEND, "a later record of a key sent in this batch is sent");
	state_store_batch_forget(s);
	state_store_close(s);

	s = open_rw(dir, UUID, 3600);
	if (!s)
		goto out;
	batch_one(s, "t5", "9", "r", 0, 1000, 1000);
	ok(state_store_batch_begin(s, "t6") == 0 && decide(s, "9", "r", 0, 0, 4599) == STORE_SKIP &&
	   decide(s, "8", "x", 0, 1, 4600) == STORE_SEND && decide(s, "9", "r", 0, 2, 4600) == STORE_SEND,
	   "resend_seconds sends an unchanged record acknowledged that long ago");
	state_store_batch_forget(s);
	state_store_close(s);
out:
	free(dir);
}

static void test_forget(const char *base)
{
	char *dir = NULL;
	struct store *s;

	if (asprintf(&dir, "%s/forget", base) < 0)
		abort();
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	batch_one(s, "f1", "1", "r", 0, 10, 10);
	batch_one(s, "f2", "2", "r", 0, 10, 10);
	ok(state_store_forget_all(s) == 0 && state_store_batch_begin(s, "f3") == 0 && decide(s, "1", "r", 0, 0, 20) == STORE_SEND,
	   "forget_all forgets every key");
	state_store_batch_forget(s);
	batch_one(s, "f4", "1", "r", 0, 30, 30);
	ok(state_store_request_forget(dir) == 0, "a forget can be requested from another process while the store is open");
	ok(state_store_txn_begin(s) == 0 && state_store_decide(s, canon("1").b, canon("1").n, h("r"), 0, 0, 40) == STORE_SKIP,
	   "the request takes no effect inside the running batch");
	state_store_txn_commit(s);
	ok(state_store_batch_begin(s, "f5") == 0 && decide(s, "1", "r", 0, 0, 40) == STORE_SEND,
	   "the request takes effect before the next batch opens");
	state_store_batch_complete(s, "f5", 40);
	ok(state_store_batch_begin(s, "f6") == 0 && decide(s, "1", "r", 0, 0, 50) == STORE_SKIP,
	   "and only once");
	state_store_batch_forget(s);
	state_store_close(s);
out:
	free(dir);
}

static void test_damage(const char *base)
{
	char *dir = NULL, *data = NULL;
	struct store *s, *ro = NULL;
	unsigned char junk[8192];
	FILE *f;

	if (asprintf(&dir, "%s/damage", base) < 0 || asprintf(&data, "%s/data.mdb", dir) < 0)
		abort();
	s = open_rw(dir, UUID, 0);
	if (!s)
		goto out;
	batch_one(s, "d1", "1", "r", 0, 10, 10);
	state_store_close(s);
	ok(state_store_open(dir, URL, UUID, STORE_RDONLY, 0, &ro) == 0 && state_store_txn_begin(ro) == 0 &&
	   state_store_decide(ro, canon("1").b, canon("1").n, h("r"), 0, 0, 20) == STORE_SKIP,
	   "a read-only open sees what is known");
	if (ro)
		state_store_txn_abort(ro);
	state_store_close(ro);
	ro = NULL;
	ok(state_store_open(dir, URL, "other", STORE_RDONLY, 0, &ro) == -ESTALE,
	   "a read-only open for another destination says so and clears nothing");
	memset(junk, 0x5a, sizeof junk);
	f = fopen(data, "r+");
	if (f) {
		fwrite(junk, 1, sizeof junk, f);   /* both meta pages */
		fclose(f);
	}
	s = open_rw(dir, UUID, 0);
	ok(s != NULL, "a store with a damaged data file opens, as a new one");
	ok(s && state_store_batch_begin(s, "d2") == 0 && decide(s, "1", "r", 0, 0, 20) == STORE_SEND,
	   "and nothing from the damaged store is trusted");
	state_store_close(s);
	int aside = 0;
	char *parent = strdup(dir);
	char *slash = strrchr(parent, '/');
	*slash = 0;
	DIR *d = opendir(parent);
	for (struct dirent *e; d && (e = readdir(d));)
		aside += strncmp(e->d_name, "damage.damaged-", 15) == 0;
	if (d)
		closedir(d);
	free(parent);
	ok(aside == 1, "the damaged store is set aside under a timestamped name");
out:
	free(dir);
	free(data);
}

int main(void)
{
	char *base = tmpdir_new("store");

	test_keys();
	test_batches(base);
	test_refused(base);
	test_time(base);
	test_forget(base);
	test_damage(base);
	tmpdir_remove(base);
	return done_testing();
}
