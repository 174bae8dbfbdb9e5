/* state_store: per-connection LMDB of what the API holds per primary key (hash, ttl, acknowledged time). */
/*
 * Rules (each invariant of issue 24 is kept here, in one place):
 *  1. Known per destination: the meta record "dest" holds base_url + '\n' + uuid; opening for
 *     another destination clears main and pending in the same transaction that records it.
 *  2. One key for anything the API might treat as one: keys are state_key_canon's bytes.
 *  3. Decisions are made against main, which changes only in state_store_batch_complete. A key sent in
 *     this batch is in pending with the position of its first sent record; any later record of
 *     it is sent, so the latest record of a batch always reaches the API.
 *  4. pending becomes main only when the batch completed; a batch that did not (state_store_batch_forget,
 *     or a new batch begun over a pending one) deletes its keys from main: their value is unknown.
 *     A record the API refused (state_store_refused) puts its key in "refused": the batch's
 *     completion deletes it from main and pending, so it is never taken for held. Decisions do
 *     not read "refused", so re-deciding after a crash still gives the same answers (5).
 *  5. A decision depends only on main, the position and the batch's fixed `now`, and pending is
 *     committed before its request leaves (the caller's rule), so re-deciding after a crash gives
 *     the same answers. state_store_batch_complete moves pending to main and records the batch_uuid in
 *     one durable transaction: after a crash "done" says whether it happened.
 *  6. With ttl > 0 an unchanged record is sent again once ttl/2 has passed since it was
 *     acknowledged; resend_seconds > 0 does the same without TTL. A clock gone back sends.
 *  7. `dcsyncd forget` leaves the file FORGET_FLAG; state_store_batch_begin clears everything, then
 *     removes it (a crash in between clears twice, which is harmless).
 * Damage: an environment LMDB refuses to open, or one where a read reported corruption (that
 * leaves DAMAGED_FLAG), is renamed aside with a timestamp and a new one starts empty.
 * One environment per connection (not a named DB per connection in one): a connection's store
 * is set aside, forgotten or deleted alone, its map size is its own, and connections' writers
 * never wait for each other's write lock. MDB_NOTLS: the worker's transactions may cross
 * threads. Read-only (dcsyncd check, another user) opens MDB_RDONLY | MDB_NOLOCK and so needs
 * no write access to the lock file; it reads without registering as a reader, so a daemon
 * writing meanwhile may reuse pages under it: its counts are an estimate and any error there
 * means "would be sent".
 */
#include "state/state_store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/crashpoint.h"
#include "util/log.h"

#define FORGET_FLAG STORE_FORGET_FLAG
#define DAMAGED_FLAG "damaged"
#define MAIN_VAL 28     /* hash 16, ttl 4, acknowledged 8 */
#define PEND_VAL 28     /* first position 8, hash 16, ttl 4 */

struct store {
	MDB_env *env;
	MDB_dbi meta, main, pend, refused;
	MDB_txn *txn;           /* the open request-body transaction, or NULL */
	char *dir;
	bool rdonly;
	bool damaged;           /* a read reported corruption: nothing more is trusted */
	uint64_t resend_seconds;
};

struct main_val {
	struct store_hash h;
	uint32_t ttl;
	uint64_t acked;
};

struct pend_val {
	uint64_t first_pos;
	struct store_hash h;
	uint32_t ttl;
};

static int lmdb_errno(int rc)
{
	switch (rc) {
	case MDB_SUCCESS:
		return 0;
	case MDB_NOTFOUND:
		return -ENOENT;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
		return -ENOSPC;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		return -EIO;
	default:
		return rc > 0 ? -rc : -EIO;
	}
}

static void main_pack(unsigned char *b, const struct main_val *v)
{
	memcpy(b, &v->h.lo, 8);
	memcpy(b + 8, &v->h.hi, 8);
	memcpy(b + 16, &v->ttl, 4);
	memcpy(b + 20, &v->acked, 8);
}

static int main_unpack(const MDB_val *d, struct main_val *v)
{
	const unsigned char *b = d->mv_data;

	if (d->mv_size != MAIN_VAL)
		return -EIO;
	memcpy(&v->h.lo, b, 8);
	memcpy(&v->h.hi, b + 8, 8);
	memcpy(&v->ttl, b + 16, 4);
	memcpy(&v->acked, b + 20, 8);
	return 0;
}

static void pend_pack(unsigned char *b, const struct pend_val *v)
{
	memcpy(b, &v->first_pos, 8);
	memcpy(b + 8, &v->h.lo, 8);
	memcpy(b + 16, &v->h.hi, 8);
	memcpy(b + 24, &v->ttl, 4);
}

static int pend_unpack(const MDB_val *d, struct pend_val *v)
{
	const unsigned char *b = d->mv_data;

	if (d->mv_size != PEND_VAL)
		return -EIO;
	memcpy(&v->first_pos, b, 8);
	memcpy(&v->h.lo, b + 8, 8);
	memcpy(&v->h.hi, b + 16, 8);
	memcpy(&v->ttl, b + 24, 4);
	return 0;
}

/* A read that found corruption: leave the mark so the next open sets the store aside. */
static int note_damage(struct store *s, int err)
{
	char *path = NULL;
	int fd;

	if (err != -EIO || s->damaged)
		return err;
	s->damaged = true;
	log_error("store %s: damaged, not trusted any more; everything is sent", s->dir);
	if (!s->rdonly && asprintf(&path, "%s/%s", s->dir, DAMAGED_FLAG) >= 0) {
		fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
		if (fd >= 0)
			close(fd);
	}
	free(path);
	return err;
}

static int meta_get(MDB_txn *t, MDB_dbi dbi, const char *name, MDB_val *out)
{
	MDB_val k = { strlen(name), (void *)name };

	return lmdb_errno(mdb_get(t, dbi, &k, out));
}

static int meta_put(MDB_txn *t, MDB_dbi dbi, const char *name, const void *v, size_t n)
{
	MDB_val k = { strlen(name), (void *)name };
	MDB_val d = { n, (void *)v };

	return lmdb_errno(mdb_put(t, dbi, &k, &d, 0));
}

static int meta_del(MDB_txn *t, MDB_dbi dbi, const char *name)
{
	MDB_val k = { strlen(name), (void *)name };
	int rc = lmdb_errno(mdb_del(t, dbi, &k, NULL));

	return rc == -ENOENT ? 0 : rc;
}

static bool meta_equals(MDB_txn *t, MDB_dbi dbi, const char *name, const char *want)
{
	MDB_val d;

	return meta_get(t, dbi, name, &d) == 0 && d.mv_size == strlen(want) &&
	       memcmp(d.mv_data, want, d.mv_size) == 0;
}

static int env_open(struct store *s, const char *dest)
{
	size_t map = sizeof(size_t) >= 8 ? (size_t)1 << 34 : (size_t)1 << 30;  /* 16 GiB: ~200M keys; address space only */
	unsigned int dbflags = s->rdonly ? 0 : MDB_CREATE;
	MDB_txn *t = NULL;
	int rc;

	rc = lmdb_errno(mdb_env_create(&s->env));
	if (rc < 0)
		goto out;
	rc = lmdb_errno(mdb_env_set_maxdbs(s->env, 4));
	if (rc == 0)
		rc = lmdb_errno(mdb_env_set_mapsize(s->env, map));
	if (rc == 0)
		rc = lmdb_errno(mdb_env_open(s->env, s->dir,
		                             MDB_NOTLS | (s->rdonly ? MDB_RDONLY | MDB_NOLOCK : 0u), 0640));
	if (rc == 0)
		rc = lmdb_errno(mdb_txn_begin(s->env, NULL, s->rdonly ? MDB_RDONLY : 0, &t));
	if (rc == 0)
		rc = lmdb_errno(mdb_dbi_open(t, "meta", dbflags, &s->meta));
	if (rc == 0)
		rc = lmdb_errno(mdb_dbi_open(t, "main", dbflags, &s->main));
	if (rc == 0)
		rc = lmdb_errno(mdb_dbi_open(t, "pending", dbflags, &s->pend));
	/* Only a batch's completion reads it; read-only use (check) never does, nor needs a store made before it. */
	if (rc == 0 && !s->rdonly)
		rc = lmdb_errno(mdb_dbi_open(t, "refused", dbflags, &s->refused));
	if (rc < 0)
		goto out;
	if (!meta_equals(t, s->meta, "dest", dest)) {
		if (s->rdonly) {
			rc = -ESTALE;
			goto out;
		}
		/* Another destination (or a new store): nothing known holds for this one. */
		rc = lmdb_errno(mdb_drop(t, s->main, 0));
		if (rc == 0)
			rc = lmdb_errno(mdb_drop(t, s->pend, 0));
		if (rc == 0)
			rc = lmdb_errno(mdb_drop(t, s->refused, 0));
		if (rc == 0)
			rc = meta_del(t, s->meta, "done");
		if (rc == 0)
			rc = meta_del(t, s->meta, "open");
		if (rc == 0)
			rc = meta_put(t, s->meta, "dest", dest, strlen(dest));
		if (rc < 0)
			goto out;
	}
	rc = lmdb_errno(mdb_txn_commit(t));
	t = NULL;
out:
	if (t)
		mdb_txn_abort(t);
	if (rc < 0 && s->env) {
		mdb_env_close(s->env);
		s->env = NULL;
	}
	return rc;
}

static int set_aside(const char *dir)
{
	char stamp[32], *aside = NULL;
	time_t now = time(NULL);
	struct tm tm;
	int rc = 0;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
	if (asprintf(&aside, "%s.damaged-%s", dir, stamp) < 0)
		return -ENOMEM;
	if (rename(dir, aside) < 0)
		rc = -errno;
	if (rc == 0)
		log_warning("store %s: damaged or unreadable, set aside as %s; starting empty (everything is sent)",
		            dir, aside);
	else
		log_error("store %s: damaged and cannot be set aside: %s", dir, strerror(-rc));
	free(aside);
	return rc;
}

int state_store_open(const char *dir, const char *base_url, const char *uuid, enum store_mode mode,
               uint64_t resend_seconds, struct store **out)
{
	struct store *s = calloc(1, sizeof *s);
	char *dest = NULL, *flag = NULL;
	int rc;

	*out = NULL;
	if (!s || !(s->dir = strdup(dir)) || asprintf(&dest, "%s\n%s", base_url, uuid) < 0 ||
	    asprintf(&flag, "%s/%s", dir, DAMAGED_FLAG) < 0) {
		dest = NULL;
		rc = -ENOMEM;
		goto out;
	}
	s->rdonly = mode == STORE_RDONLY;
	s->resend_seconds = resend_seconds;
	if (s->rdonly) {
		rc = access(flag, F_OK) == 0 ? -EIO : env_open(s, dest);
		goto out;
	}
	if (access(flag, F_OK) == 0) {
		rc = set_aside(dir);
		if (rc < 0)
			goto out;
	}
	if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
		rc = -errno;
		goto out;
	}
	rc = env_open(s, dest);
	if (rc == -EIO) {  /* what LMDB calls invalid or corrupt; not a lack of resources */
		rc = set_aside(dir);
		if (rc == 0 && mkdir(dir, 0750) < 0)
			rc = -errno;
		if (rc == 0)
			rc = env_open(s, dest);
	}
out:
	free(dest);
	free(flag);
	if (rc < 0)
		state_store_close(s);
	else
		*out = s;
	return rc;
}

void state_store_close(struct store *s)
{
	if (!s)
		return;
	if (s->txn)
		mdb_txn_abort(s->txn);
	if (s->env)
		mdb_env_close(s->env);
	free(s->dir);
	free(s);
}

/* Every key of table @dbi is unknown at the API: delete it from main, empty @dbi. */
static int forget_keys_of(struct store *s, MDB_txn *t, MDB_dbi dbi)
{
	MDB_cursor *c = NULL;
	MDB_val k, d;
	int rc, mrc;

	rc = lmdb_errno(mdb_cursor_open(t, dbi, &c));
	if (rc < 0)
		return rc;
	for (mrc = mdb_cursor_get(c, &k, &d, MDB_FIRST); mrc == 0; mrc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
		rc = lmdb_errno(mdb_del(t, s->main, &k, NULL));
		if (rc < 0 && rc != -ENOENT)
			break;
		rc = 0;
	}
	if (rc == 0 && mrc != MDB_NOTFOUND)
		rc = lmdb_errno(mrc);
	mdb_cursor_close(c);
	if (rc == 0)
		rc = lmdb_errno(mdb_drop(t, dbi, 0));
	return rc;
}

/* Everything pending (and refused) is unknown at the API: delete it from main, empty both. */
static int forget_pending(struct store *s, MDB_txn *t)
{
	int rc = forget_keys_of(s, t, s->pend);

	if (rc == 0)
		rc = forget_keys_of(s, t, s->refused);
	if (rc == 0)
		rc = meta_del(t, s->meta, "open");
	return rc;
}

static int forget_everything(struct store *s, MDB_txn *t)
{
	int rc = lmdb_errno(mdb_drop(t, s->main, 0));

	if (rc == 0)
		rc = lmdb_errno(mdb_drop(t, s->pend, 0));
	if (rc == 0)
		rc = lmdb_errno(mdb_drop(t, s->refused, 0));
	if (rc == 0)
		rc = meta_del(t, s->meta, "open");
	if (rc == 0)
		rc = meta_del(t, s->meta, "done");
	return rc;
}

/* Run @fn in one durable write transaction. */
static int in_txn(struct store *s, int (*fn)(struct store *, MDB_txn *, const void *), const void *arg)
{
	MDB_txn *t = NULL;
	int rc;

	if (s->rdonly || s->txn)
		return -EINVAL;
	if (s->damaged)
		return -EIO;
	rc = lmdb_errno(mdb_txn_begin(s->env, NULL, 0, &t));
	if (rc == 0)
		rc = fn(s, t, arg);
	if (rc >= 0) {
		int crc = lmdb_errno(mdb_txn_commit(t));

		rc = crc < 0 ? crc : rc;
	} else {
		mdb_txn_abort(t);
	}
	return note_damage(s, rc);
}

static int do_begin(struct store *s, MDB_txn *t, const void *arg)
{
	const char *uuid = arg;
	MDB_val d;
	int rc = 0;

	if (meta_get(t, s->meta, "open", &d) == 0 && !meta_equals(t, s->meta, "open", uuid))
		rc = forget_pending(s, t);      /* an earlier batch neither completed nor forgot */
	if (rc == 0)
		rc = meta_put(t, s->meta, "open", uuid, strlen(uuid));
	return rc;
}

static int do_forget_all(struct store *s, MDB_txn *t, const void *arg)
{
	(void)arg;
	return forget_everything(s, t);
}

/* Whether meta @name holds @batch_uuid, in a read transaction of its own. */
static bool meta_is(struct store *s, const char *name, const char *batch_uuid)
{
	MDB_txn *t = NULL;
	bool yes = false;

	if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t) == 0) {
		yes = meta_equals(t, s->meta, name, batch_uuid);
		mdb_txn_abort(t);
	}
	return yes;
}

int state_store_batch_begin(struct store *s, const char *batch_uuid)
{
	char *flag = NULL;
	int rc = 0;

	if (asprintf(&flag, "%s/%s", s->dir, FORGET_FLAG) < 0)
		return -ENOMEM;
	if (!meta_is(s, "open", batch_uuid) && access(flag, F_OK) == 0) {
		/* Cleared durably before the request is removed: a crash between clears twice. */
		rc = in_txn(s, do_forget_all, NULL);
		crashpoint("store-forgotten");
		if (rc == 0 && unlink(flag) < 0 && errno != ENOENT)
			rc = -errno;
		if (rc == 0)
			log_info("store %s: forgotten on request; the next files go whole", s->dir);
	}
	free(flag);
	return rc < 0 ? rc : in_txn(s, do_begin, batch_uuid);
}

int state_store_txn_begin(struct store *s)
{
	if (s->txn)
		return -EINVAL;
	if (s->damaged)
		return -EIO;
	return lmdb_errno(mdb_txn_begin(s->env, NULL, s->rdonly ? MDB_RDONLY : 0, &s->txn));
}

int state_store_txn_commit(struct store *s)
{
	int rc;

	if (!s->txn)
		return -EINVAL;
	rc = lmdb_errno(mdb_txn_commit(s->txn));
	s->txn = NULL;
	return note_damage(s, rc);
}

void state_store_txn_abort(struct store *s)
{
	if (s->txn)
		mdb_txn_abort(s->txn);
	s->txn = NULL;
}

static bool main_says_send(const struct store *s, const MDB_val *found, struct store_hash h,
                           uint32_t ttl, uint64_t now, int *err)
{
	struct main_val v;

	*err = 0;
	if (!found)
		return true;
	if (main_unpack(found, &v) < 0) {
		*err = -EIO;
		return true;
	}
	if (v.h.lo != h.lo || v.h.hi != h.hi || v.ttl != ttl || now < v.acked)
		return true;
	if (ttl > 0 && now - v.acked >= ttl / 2)
		return true;
	return s->resend_seconds > 0 && now - v.acked >= s->resend_seconds;
}

int state_store_decide(struct store *s, const unsigned char *key, size_t key_len,
                 struct store_hash rec_hash, uint32_t ttl_seconds, uint64_t pos, uint64_t now)
{
	MDB_val k = { key_len, (void *)key }, d, md;
	unsigned char buf[PEND_VAL];
	struct pend_val pv = { .first_pos = pos, .h = rec_hash, .ttl = ttl_seconds };
	struct pend_val old;
	bool send;
	int rc, err;

	if (!s->txn)
		return -EINVAL;
	if (s->damaged)
		return -EIO;
	if (key_len == 0 || key_len > STATE_KEY_MAX)
		return STORE_SEND;      /* never stored, so never skipped */
	rc = lmdb_errno(mdb_get(s->txn, s->pend, &k, &d));
	if (rc == 0) {
		if (pend_unpack(&d, &old) < 0)
			return note_damage(s, -EIO);
		if (old.first_pos <= pos) {
			/* Sent earlier in this batch (or this is that first record, re-decided). */
			pv.first_pos = old.first_pos;
			send = true;
			goto record;
		}
	} else if (rc != -ENOENT) {
		return note_damage(s, rc);
	}
	rc = lmdb_errno(mdb_get(s->txn, s->main, &k, &md));
	if (rc < 0 && rc != -ENOENT)
		return note_damage(s, rc);
	send = main_says_send(s, rc == 0 ? &md : NULL, rec_hash, ttl_seconds, now, &err);
	if (err < 0)
		return note_damage(s, err);
	if (!send)
		return STORE_SKIP;
record:
	if (s->rdonly)
		return STORE_SEND;
	pend_pack(buf, &pv);
	d = (MDB_val){ sizeof buf, buf };
	rc = lmdb_errno(mdb_put(s->txn, s->pend, &k, &d, 0));
	return rc < 0 ? note_damage(s, rc) : STORE_SEND;
}

int state_store_refused(struct store *s, const unsigned char *key, size_t key_len)
{
	MDB_val k = { key_len, (void *)key }, d = { 0, NULL };

	if (!s->txn || s->rdonly)
		return -EINVAL;
	if (s->damaged)
		return -EIO;
	if (key_len == 0 || key_len > STATE_KEY_MAX)
		return 0;       /* never stored, so never known */
	return note_damage(s, lmdb_errno(mdb_put(s->txn, s->refused, &k, &d, 0)));
}

struct complete_arg {
	const char *uuid;
	uint64_t ack_time;
};

/* Pending entries moved to main per transaction: each dirties up to a page of main, and a write
 * transaction's dirty pages are anonymous memory (2048 keys: at most 8 MiB, whatever the store's size). */
#define COMPLETE_CHUNK 2048
#define MORE 1

/* A refused key: neither what main held of it nor what pending holds is what the API has. */
static int forget_refused(struct store *s, MDB_txn *t, MDB_val *k, MDB_val *d, const struct complete_arg *a)
{
	int rc = lmdb_errno(mdb_del(t, s->main, k, NULL));

	(void)d;
	(void)a;
	if (rc == 0 || rc == -ENOENT)
		rc = lmdb_errno(mdb_del(t, s->pend, k, NULL));
	return rc == -ENOENT ? 0 : rc;
}

/* A pending key of the completed batch: what the API holds now. */
static int pending_to_main(struct store *s, MDB_txn *t, MDB_val *k, MDB_val *d, const struct complete_arg *a)
{
	unsigned char buf[MAIN_VAL];
	struct pend_val pv;
	struct main_val mv;
	MDB_val nd;
	int rc = pend_unpack(d, &pv);

	if (rc < 0)
		return rc;
	mv = (struct main_val){ .h = pv.h, .ttl = pv.ttl, .acked = a->ack_time };
	main_pack(buf, &mv);
	nd = (MDB_val){ sizeof buf, buf };
	return lmdb_errno(mdb_put(t, s->main, k, &nd, 0));
}

/*
 * Take the entries of @dbi off its front, @each on each before it is deleted, while *@moved
 * is below COMPLETE_CHUNK: 0 once @dbi is empty, MORE when the chunk is full, or -errno.
 */
static int drain(struct store *s, MDB_txn *t, MDB_dbi dbi, unsigned *moved, const struct complete_arg *a,
		 int (*each)(struct store *s, MDB_txn *t, MDB_val *k, MDB_val *d, const struct complete_arg *a))
{
	MDB_cursor *c;
	MDB_val k, d;
	int rc, mrc;

	if ((rc = lmdb_errno(mdb_cursor_open(t, dbi, &c))) < 0)
		return rc;
	for (mrc = mdb_cursor_get(c, &k, &d, MDB_FIRST); mrc == 0 && *moved < COMPLETE_CHUNK;
	     mrc = mdb_cursor_get(c, &k, &d, MDB_FIRST)) {
		if ((rc = each(s, t, &k, &d, a)) < 0 || (rc = lmdb_errno(mdb_cursor_del(c, 0))) < 0)
			break;
		(*moved)++;
	}
	if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
		rc = lmdb_errno(mrc);
	mdb_cursor_close(c);
	return rc < 0 ? rc : mrc == 0 ? MORE : 0;
}

/*
 * Move up to COMPLETE_CHUNK entries (MORE: some are left): refused keys out of main and
 * pending first, so that what pending holds of them never reaches main, then pending into
 * main; the last transaction also records the batch as done. A crash between them leaves the
 * rest as it was and "open": completing again moves the rest; a next batch instead forgets them.
 */
static int do_complete(struct store *s, MDB_txn *t, const void *arg)
{
	const struct complete_arg *a = arg;
	unsigned moved = 0;
	int rc;

	if (meta_equals(t, s->meta, "done", a->uuid))
		return STORE_ALREADY;
	if (!meta_equals(t, s->meta, "open", a->uuid))
		return -ESTALE;
	if ((rc = drain(s, t, s->refused, &moved, a, forget_refused)) != 0 ||
	    (rc = drain(s, t, s->pend, &moved, a, pending_to_main)) != 0)
		return rc;
	if ((rc = meta_del(t, s->meta, "open")) == 0)
		rc = meta_put(t, s->meta, "done", a->uuid, strlen(a->uuid));
	return rc;
}

int state_store_batch_complete(struct store *s, const char *batch_uuid, uint64_t ack_time)
{
	struct complete_arg a = { batch_uuid, ack_time };
	int rc;

	while ((rc = in_txn(s, do_complete, &a)) == MORE)
		crashpoint("store-complete-chunk");     /* a chunk committed, the rest pending */
	return rc;
}

bool state_store_batch_committed(struct store *s, const char *batch_uuid)
{
	return meta_is(s, "done", batch_uuid);
}

static int do_forget(struct store *s, MDB_txn *t, const void *arg)
{
	(void)arg;
	return forget_pending(s, t);
}

int state_store_batch_forget(struct store *s)
{
	return in_txn(s, do_forget, NULL);
}

int state_store_forget_all(struct store *s)
{
	return in_txn(s, do_forget_all, NULL);
}

int state_store_request_forget(const char *dir)
{
	char *flag = NULL;
	int fd, rc = 0;

	if (asprintf(&flag, "%s/%s", dir, FORGET_FLAG) < 0)
		return -ENOMEM;
	fd = open(flag, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		rc = -errno;
	else if (fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(flag);
	return rc;
}

void state_store_peek(const char *dir, const char *base_url, const char *uuid, struct state_store_stats *out, bool *keys_known)
{
	struct store *s = NULL;
	struct stat st;
	char *path = NULL;

	memset(out, 0, sizeof *out);
	*keys_known = false;
	if (asprintf(&path, "%s/data.mdb", dir) >= 0 && lstat(path, &st) == 0 && S_ISREG(st.st_mode))
		out->bytes = (uint64_t)st.st_blocks * 512u;
	free(path);
	if (!out->bytes || state_store_open(dir, base_url, uuid, STORE_RDONLY, 0, &s) < 0)
		return;
	*keys_known = state_store_stats(s, out) == 0;
	state_store_close(s);
}

int state_store_stats(struct store *s, struct state_store_stats *out)
{
	MDB_txn *t = NULL;
	MDB_stat ms;
	struct stat st;
	char *path = NULL;
	int rc;

	memset(out, 0, sizeof *out);
	rc = lmdb_errno(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t));
	if (rc == 0)
		rc = lmdb_errno(mdb_stat(t, s->main, &ms));
	if (rc == 0) {
		out->keys = ms.ms_entries;
		rc = lmdb_errno(mdb_stat(t, s->pend, &ms));
		out->pending = ms.ms_entries;
	}
	if (t)
		mdb_txn_abort(t);
	if (rc == 0 && asprintf(&path, "%s/data.mdb", s->dir) < 0)
		rc = -ENOMEM;
	if (rc == 0 && stat(path, &st) == 0)
		out->bytes = (uint64_t)st.st_blocks * 512u;
	free(path);
	return note_damage(s, rc);
}
