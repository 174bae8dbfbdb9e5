/* spool_queue: a connection's waiting files in (mtime, name) order, with a set of the queued names. */
#pragma once
/*
 * Contract.
 * Owns: a struct spool_queue owns copies of the names queued (spool_queue_release frees them);
 * a popped entry's name passes to the caller.
 * Borrows: names for the call. May call: libc only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool_entry {
	char *name;
	int64_t mtime_ns;       /* the order key: an mtime, or (intake's waiting queues) when to look again */
	uint64_t tag;           /* the owner's: what was seen of the file, or how often it was tried */
};

/* A connection's queued files, handed out in (mtime, name) order. */
struct spool_queue {
	struct spool_entry *v;
	size_t head, n, cap;
	bool sorted;
	char **names;           /* open-addressing set of the queued names (pointers into v) */
	size_t names_cap, names_used;
};

void spool_queue_release(struct spool_queue *q);
/* Add @name unless already queued (then its key moves to @mtime_ns). */
int spool_queue_add(struct spool_queue *q, const char *name, int64_t mtime_ns);
/* Add @name with @tag; 1 without a change when it is queued already. */
int spool_queue_add_new(struct spool_queue *q, const char *name, int64_t key, uint64_t tag);
bool spool_queue_has(const struct spool_queue *q, const char *name);
/* The oldest entry, left queued (valid until the queue changes); NULL when empty. */
const struct spool_entry *spool_queue_peek(struct spool_queue *q);
/* Whether @a goes before @b in (mtime, name) order. */
bool spool_queue_entry_before(const struct spool_entry *a, const struct spool_entry *b);
/* Take the oldest entry; the caller frees entry->name. 0 when empty. */
int spool_queue_pop(struct spool_queue *q, struct spool_entry *entry);
size_t spool_queue_len(const struct spool_queue *q);
/* mtime of the oldest queued file, 0 when empty. */
int64_t spool_queue_oldest(struct spool_queue *q);
void spool_queue_clear(struct spool_queue *q);
