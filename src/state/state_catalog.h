/* state_catalog: the top-level field names a connection's uploaded records carried, counted in memory, bounded. */
#pragma once

/*
 * Contract.
 * Owns: the listed fields (names copied), their hash table, the current record's notes.
 * Borrows: a key passed to state_catalog_note() or state_catalog_add() only for the call; state_catalog_merge()'s
 * @src for the call.
 * May call: libc only. No I/O, no logging: state_catalog_file.h reads and writes its text file.
 * Not thread-safe: one thread at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longer names are not listed (they count as overflow): no real field name is this long. */
#define CATALOG_NAME_MAX 1024

struct catalog_field {
	char *name;             /* NUL-terminated; JSON allows a NUL inside a key, so see name_len */
	size_t name_len;
	uint64_t records;       /* committed records that carried the name */
	int64_t last_seen;      /* @now of the last such commit (unix seconds), 0 if never */
	/* private */
	uint32_t hash;
	uint64_t mark;
};

struct catalog;

/*
 * At most @max_fields names are listed (1 ≤ max_fields < 2^31); a name met once the catalog is
 * full is not remembered, only counted in state_catalog_overflow(), so a connection that uses one key
 * per customer costs a bounded amount of memory.
 */
int state_catalog_new(struct catalog **out, size_t max_fields);
void state_catalog_free(struct catalog *c);

/*
 * Per record: note each top-level key (bytes, not NUL-terminated), then commit once the record
 * is accepted, or drop it when it is rejected. A key noted twice in one record counts once.
 * state_catalog_note() allocates only for a name never seen before; if that allocation fails the name
 * is counted as overflow, because a field catalog is worth less than the upload it describes.
 * A name first seen in a dropped record is forgotten again.
 */
void state_catalog_note(struct catalog *c, const char *key, size_t len);
void state_catalog_commit(struct catalog *c, int64_t now);
void state_catalog_drop(struct catalog *c);

/* Some names are missing: the catalog was full, a name was too long or memory ran out. */
bool state_catalog_truncated(const struct catalog *c);
/* Key occurrences in committed records whose name is not listed (counted each time). */
uint64_t state_catalog_overflow(const struct catalog *c);

/*
 * Listed fields, in first-seen order. Pointers into the catalog stay valid until the next
 * state_catalog_note(), state_catalog_drop(), state_catalog_add() or state_catalog_merge() (so state_catalog_file_load()); a
 * catalog_field's counts are current as returned (field_at, get and find first count in the
 * records that are only tallied as a run).
 */
size_t state_catalog_count(const struct catalog *c);
/* Any out-pointer may be NULL. -ERANGE when @i ≥ state_catalog_count(). */
int state_catalog_get(struct catalog *c, size_t i, const char **name, uint64_t *records,
		int64_t *last_seen);
/* The @i-th listed field, name_len included; NULL when @i ≥ state_catalog_count(). */
const struct catalog_field *state_catalog_field_at(struct catalog *c, size_t i);
/* A listed name; NULL when absent. A name with a NUL inside is reachable only by state_catalog_get(). */
const struct catalog_field *state_catalog_find(struct catalog *c, const char *name);

/*
 * Add @src's counts to @dst as state_catalog_file_load() adds a file's: records add up, last_seen keeps the
 * later, names that do not fit count as overflow. -EBUSY while either has a record noted but not
 * committed. What lets records be noted where they are cut and counted once uploaded.
 */
int state_catalog_merge(struct catalog *dst, struct catalog *src);
/*
 * Add one name's counts (@len bytes, not NUL-terminated), or an overflow count, as state_catalog_merge()
 * adds a catalog's: what state_catalog_file_load() adds each line of a file with. -EBUSY while a record is
 * noted but not committed.
 */
int state_catalog_add(struct catalog *c, const char *name, size_t len, uint64_t records, int64_t last_seen);
int state_catalog_add_overflow(struct catalog *c, uint64_t n);
/* A record is noted but not committed or dropped: merge, add, save and load refuse (-EBUSY). */
bool state_catalog_busy(const struct catalog *c);
/* Forget every name and count, keeping the memory: the catalog is as new. */
void state_catalog_clear(struct catalog *c);
