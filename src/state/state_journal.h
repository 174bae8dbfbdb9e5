/* state_journal: durable per-batch state in <state_dir>/journal, replayed at start to resume batches. */
#pragma once
/*
 * Contract.
 * Owns: the journal file's fd and its directory's, the live batches and members replayed or
 * put, the records queued and not yet synced, and what replay found (damage).
 * Pointers it hands out (state_journal_at, state_journal_find, state_journal_members) are its own: valid until the
 * next put, compaction or state_journal_free. state_journal_put* copy what they are given.
 * Borrows: @dir for state_journal_open*.
 * May call: state_jrec (framing and CRC), fileio, crashpoint, log. The daemon owns the one
 * journal; its connections' batches borrow it and write it from the loop's thread only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/state_totals.h"

enum batch_state {
	BATCH_OPEN = 1,         /* file owned (in .work/), requests may be in flight */
	BATCH_COMPLETED = 2,    /* last request acknowledged; file not yet archived/deleted */
	BATCH_ARCHIVED = 3,     /* terminal: file archived or deleted */
	BATCH_FAILED = 4,       /* terminal: file moved to failed/ */
	BATCH_RELEASED = 5,     /* terminal: nothing was acknowledged, file handed back to the spool */
};

struct file_identity {
	uint64_t dev;
	uint64_t ino;
	uint64_t size;
	int64_t mtime_ns;
};

struct journal_batch {
	uint64_t id;
	enum batch_state state;
	char uuid[37];
	char connection[128];
	char name[256];         /* its first file's name as dropped in the spool: what the log calls the batch */
	uint32_t cut_records;   /* cut parameters in force when the batch opened */
	uint64_t cut_bytes;
	uint32_t acks;          /* requests acknowledged */
	uint64_t offset;        /* file offset after the last acknowledged request */
	uint64_t lineno;        /* line number the next request starts with */
	uint64_t records;       /* records acknowledged */
	uint64_t rejected;      /* lines rejected locally up to offset */
	uint64_t rejected_size; /* size of the rejected file at offset: a resume truncates to it */
	int64_t updated;        /* unix seconds */
	uint32_t n_members;     /* its files, at least one: a member record each, put before its OPEN state */
	uint64_t csv_opts;      /* hash of the CSV options it was opened with (record_csv_options_hash): they cut its rows */
	uint64_t decided;       /* skip_unchanged: the batch's decision time (unix s), fixed for its life; 0: sends all */
	uint64_t resend;        /* unchanged_resend_seconds it was opened with: its decisions depend on it */
	int64_t ttl;            /* ttl_seconds it was opened with (< 0: none): its requests and decisions depend on it */
	uint64_t dest;          /* hash of the base_url and uuid it was opened at; 0: not known (a test's journal) */
};

/*
 * One file of a batch: its only one (read on request after request from the last acknowledged
 * offset), or one of several small files filling one request (cut again whole on a resume).
 */
struct journal_member {
	uint64_t batch_id;
	uint64_t file_id;       /* names the file in .work/: <file_id>-<name> */
	uint32_t index;         /* order of the file in the request */
	char name[256];
	struct file_identity ident;
	uint64_t rejected_size; /* size of the file's rejected file when the batch opened */
};

struct journal;

/* A stretch of the journal replay could not read: bytes [start, end). */
struct journal_range {
	uint64_t start;
	uint64_t end;
};

/*
 * Open (creating) <dir>/journal and replay it. A torn tail (the last write cut short) is cut
 * off and logged at info level. Damage in the middle is skipped up to the next record that
 * checks out, and every record after it is kept; it is logged as an error with the bytes
 * lost and the batches whose state may be stale, the damaged file is copied aside as
 * <dir>/journal.damaged-<UTC time> (fsynced, never overwritten) and the journal rewritten.
 * @torn_bytes (may be NULL) receives the length of the torn tail.
 */
int state_journal_open(struct journal **out, const char *dir, uint64_t *torn_bytes);
/* Read-only view for `dcsyncd status`: replays without cutting or writing anything. */
int state_journal_open_readonly(struct journal **out, const char *dir);
void state_journal_free(struct journal *j);

/* Live (open or completed) batches, in id order. */
size_t state_journal_count(const struct journal *j);
const struct journal_batch *state_journal_at(const struct journal *j, size_t i);
const struct journal_batch *state_journal_find(const struct journal *j, uint64_t id);
uint64_t state_journal_new_id(struct journal *j);
/* The stretches replay skipped in the middle of the journal (none for a torn tail only). */
size_t state_journal_damage(const struct journal *j, const struct journal_range **out);
/* Whether later records of live batch @batch_id may have been lost in damage: its state may be stale. */
bool state_journal_in_doubt(const struct journal *j, uint64_t batch_id);

/* Queue a batch's new state (-EINVAL without members); it is durable only after state_journal_sync() returns 0. */
int state_journal_put(struct journal *j, const struct journal_batch *b);
/* Write what is queued and fdatasync it. On failure nothing queued is lost: call again. */
int state_journal_sync(struct journal *j);
bool state_journal_dirty(const struct journal *j);
/* False from a state_journal_sync that failed (write or fsync) until one succeeds: uploads are held. */
bool state_journal_durable(const struct journal *j);
/* Queue a file of a batch (again when it grew); put all members before the batch's OPEN state. */
int state_journal_put_member(struct journal *j, const struct journal_member *m);
/* The members of a live batch in request order; *out stays valid until the next put. */
size_t state_journal_members(const struct journal *j, uint64_t batch_id, const struct journal_member **out);
/* Whether @file_id names a file of a live batch. */
bool state_journal_file_live(const struct journal *j, uint64_t file_id);

/* Rewrite the journal with only live state, when it has grown (or @force). */
int state_journal_compact(struct journal *j, bool force);
