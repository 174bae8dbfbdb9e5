/* state_store: what the API holds per primary key (LMDB), so skip_unchanged sends only changed records. */
#pragma once
/*
 * Contract. A struct store owns one LMDB environment in the directory the caller names (the
 * daemon uses <state_dir>/store/<connection>) and nothing else; it keeps no global state. It is
 * used from one thread at a time (the connection's worker); the environment is opened with
 * MDB_NOTLS so that thread may change between calls. It borrows every argument for the call.
 * May call: liblmdb, state_key, log, libc.
 *
 * The calls a batch makes (record_pipeline.c, on the connection's worker), in order:
 *   state_store_open (once per connection) -> state_store_batch_begin -> for every request body:
 *   { state_store_txn_begin, state_store_decide per record, state_store_txn_commit BEFORE the request leaves }
 *   -> records the API refused: { state_store_txn_begin, state_store_refused per record, state_store_txn_commit
 *   BEFORE the request's acknowledgement is journaled }
 *   -> COMPLETED: state_store_batch_complete | failed: state_store_batch_forget.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/state_key.h"

struct store;

/* Outcomes (positive, documented). */
#define STORE_SEND 1
#define STORE_SKIP 2
#define STORE_ALREADY 3  /* state_store_batch_complete: that batch's commit had happened already */

/* What `dcsyncd forget` leaves in the store's directory (state_store_request_forget). */
#define STORE_FORGET_FLAG "forget-requested"

struct state_store_stats {
	uint64_t keys;          /* keys the API is known to hold */
	uint64_t pending;       /* keys sent by the open batch */
	uint64_t bytes;         /* of the data file on disk (allocated blocks) */
};

enum store_mode {
	STORE_RW,       /* the daemon: creates, repairs (sets a damaged store aside) */
	STORE_RDONLY,   /* dcsyncd check as another user: never writes, not even the lock file */
};

/*
 * Open (creating when STORE_RW) the store in @dir for destination @base_url + @uuid. A store
 * recorded for another destination is cleared (invariant 1). STORE_RW: a damaged or unreadable
 * store is renamed to <dir>.damaged-<UTC time> with a log line and a new, empty one is used.
 * @resend_seconds: > 0 resends an unchanged record acknowledged that long ago (0: off).
 * STORE_RDONLY: -ENOENT when there is none, -ESTALE when it is for another destination.
 */
int state_store_open(const char *dir, const char *base_url, const char *uuid, enum store_mode mode,
               uint64_t resend_seconds, struct store **out);
void state_store_close(struct store *s);

/*
 * Open a batch (after a restart: re-open the same one; the pending table survives). Applies a
 * `dcsyncd forget` requested since the last batch first, unless this re-opens the open batch
 * (its decisions must not change across a restart: the forget waits for the next). 0, or
 * negative errno.
 */
int state_store_batch_begin(struct store *s, const char *batch_uuid);

/* One write transaction per request body; commit it before that request is sent. */
int state_store_txn_begin(struct store *s);
int state_store_txn_commit(struct store *s);
void state_store_txn_abort(struct store *s);

/*
 * Decide one record (inside state_store_txn_begin .. commit): STORE_SEND or STORE_SKIP, or negative
 * errno (send it: skipping nothing is always safe). @pos is the record's monotone ordinal in
 * the batch; @now the batch's fixed decision time, so a resumed batch decides identically.
 */
int state_store_decide(struct store *s, const unsigned char *key, size_t key_len,
                 struct store_hash rec_hash, uint32_t ttl_seconds, uint64_t pos, uint64_t now);

/*
 * The API refused a record of the open batch whose key is @key (inside state_store_txn_begin .. commit):
 * when the batch completes the key is forgotten, not taken for held, whatever else the batch sent
 * for it. Decisions are not changed by it. 0, or negative errno.
 */
int state_store_refused(struct store *s, const unsigned char *key, size_t key_len);

/*
 * The batch was acknowledged as completed at @ack_time: in one durable transaction what it
 * sent becomes known and @batch_uuid is recorded. 0; STORE_ALREADY when that already happened
 * (calling it again after a crash is harmless); negative errno.
 */
int state_store_batch_complete(struct store *s, const char *batch_uuid, uint64_t ack_time);
/* True when @batch_uuid is the last batch whose commit happened (for a restarted daemon). */
bool state_store_batch_committed(struct store *s, const char *batch_uuid);

/* The batch did not complete: every key it sent is forgotten (invariant 4). */
int state_store_batch_forget(struct store *s);

/* Forget everything now (the owner's thread). */
int state_store_forget_all(struct store *s);
/*
 * `dcsyncd forget`, from another process while the daemon runs: leaves a request in @dir that
 * the next state_store_batch_begin carries out. Never opens the environment.
 */
int state_store_request_forget(const char *dir);

int state_store_stats(struct store *s, struct state_store_stats *out);
/*
 * For `dcsyncd status`, another process: the size on disk of the store in @dir (0 when there is
 * none) and, when it can be read (STORE_RDONLY), its keys; *@keys_known false when not.
 */
void state_store_peek(const char *dir, const char *base_url, const char *uuid, struct state_store_stats *out, bool *keys_known);
