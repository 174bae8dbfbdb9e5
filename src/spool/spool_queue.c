/* spool_queue: a connection's waiting files in (mtime, name) order, with a set of the queued names. */
#include "spool/spool_queue.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the set of queued names: a rescan of 10,000 files must not compare each with each ---- */

#define TOMBSTONE ((char *)1)

static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/* The slot holding @name, or the free slot where it would go. */
static size_t names_slot(const struct spool_queue *q, const char *name)
{
	size_t mask = q->names_cap - 1, i = name_hash(name) & mask, free_slot = SIZE_MAX;

	for (;; i = (i + 1) & mask) {
		char *e = q->names[i];

		if (!e)
			return free_slot != SIZE_MAX ? free_slot : i;
		if (e == TOMBSTONE) {
			if (free_slot == SIZE_MAX)
				free_slot = i;
		} else if (!strcmp(e, name)) {
			return i;
		}
	}
}

static int names_grow(struct spool_queue *q)
{
	size_t cap = q->names_cap ? q->names_cap * 2 : 64;
	char **old = q->names;
	size_t old_cap = q->names_cap;

	q->names = calloc(cap, sizeof(*q->names));
	if (!q->names) {
		q->names = old;
		return -ENOMEM;
	}
	q->names_cap = cap;
	q->names_used = 0;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i] && old[i] != TOMBSTONE) {
			q->names[names_slot(q, old[i])] = old[i];
			q->names_used++;
		}
	}
	free(old);
	return 0;
}

static void names_remove(struct spool_queue *q, const char *name)
{
	size_t i;

	if (!q->names_cap)
		return;
	i = names_slot(q, name);
	if (q->names[i] && q->names[i] != TOMBSTONE && !strcmp(q->names[i], name))
		q->names[i] = TOMBSTONE;
}

void spool_queue_clear(struct spool_queue *q)
{
	for (size_t i = q->head; i < q->n; i++)
		free(q->v[i].name);
	q->head = q->n = 0;
	q->sorted = true;
	free(q->names);
	q->names = NULL;
	q->names_cap = q->names_used = 0;
}

void spool_queue_release(struct spool_queue *q)
{
	spool_queue_clear(q);
	free(q->v);
	memset(q, 0, sizeof(*q));
}

bool spool_queue_has(const struct spool_queue *q, const char *name)
{
	size_t i;

	if (!q->names_cap)
		return false;
	i = names_slot(q, name);
	return q->names[i] && q->names[i] != TOMBSTONE;
}

int spool_queue_add_new(struct spool_queue *q, const char *name, int64_t key, uint64_t tag)
{
	int r;

	if (spool_queue_has(q, name))
		return 1;
	if ((r = spool_queue_add(q, name, key)) < 0)
		return r;
	q->v[q->n - 1].tag = tag;
	return 0;
}

int spool_queue_add(struct spool_queue *q, const char *name, int64_t mtime_ns)
{
	size_t slot;

	/* Tombstones count as used: grow (and so clean) before the table gets half full. */
	if ((q->names_used + 1) * 2 > q->names_cap && names_grow(q) < 0)
		return -ENOMEM;
	slot = names_slot(q, name);
	if (q->names[slot] && q->names[slot] != TOMBSTONE) {
		for (size_t i = q->head; i < q->n; i++) {
			if (q->v[i].name == q->names[slot] && q->v[i].mtime_ns != mtime_ns) {
				/* Rewritten in place before we took it: order by its newest mtime. */
				q->v[i].mtime_ns = mtime_ns;
				q->sorted = false;
			}
		}
		return 0;
	}
	if (q->head > 0 && q->head == q->n)
		q->head = q->n = 0;
	if (q->n == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 16;
		struct spool_entry *v = realloc(q->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		q->v = v;
		q->cap = cap;
	}
	q->v[q->n].name = strdup(name);
	if (!q->v[q->n].name)
		return -ENOMEM;
	q->v[q->n].mtime_ns = mtime_ns;
	q->v[q->n].tag = 0;
	if (!q->names[slot])
		q->names_used++;
	q->names[slot] = q->v[q->n].name;
	if (q->n > q->head && q->sorted) {
		const struct spool_entry *p = &q->v[q->n - 1];

		q->sorted = p->mtime_ns < mtime_ns || (p->mtime_ns == mtime_ns && strcmp(p->name, name) < 0);
	}
	q->n++;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;

	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

bool spool_queue_entry_before(const struct spool_entry *a, const struct spool_entry *b)
{
	return entry_cmp(a, b) < 0;
}

const struct spool_entry *spool_queue_peek(struct spool_queue *q)
{
	if (q->head == q->n)
		return NULL;
	if (!q->sorted) {
		qsort(q->v + q->head, q->n - q->head, sizeof(*q->v), entry_cmp);
		q->sorted = true;
	}
	return &q->v[q->head];
}

int spool_queue_pop(struct spool_queue *q, struct spool_entry *entry)
{
	if (!spool_queue_peek(q))
		return 0;
	*entry = q->v[q->head++];
	names_remove(q, entry->name);
	return 1;
}

int64_t spool_queue_oldest(struct spool_queue *q)
{
	const struct spool_entry *e = spool_queue_peek(q);

	return e ? e->mtime_ns : 0;
}

size_t spool_queue_len(const struct spool_queue *q)
{
	return q->n - q->head;
}
