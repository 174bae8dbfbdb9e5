/* catalog: the top-level field names a connection's uploaded records carried, counted in memory, bounded. */
/*
 * state_catalog_note() runs for every top-level key of every record (about ten million calls a second
 * at full speed), so its common case is one FNV-1a hash, one probe of an open-addressing table
 * (linear probing, at most half full) and one compare; no allocation, no per-record clearing.
 * "Noted in the current record" is a per-field mark equal to the record's serial number, so a
 * repeated key is recognised without a set to clear, and commit touches only the noted fields.
 * Names first seen in the current record are the tail of the field array (index ≥ n_committed),
 * which is what lets a drop forget them.
 * Records of one feed nearly always carry the same keys in the same order (the same "shape"),
 * so that case costs one compare per key and nothing per record: a key is first compared with the
 * key at the same position of the last committed record, and while they match nothing is
 * written; a record that ends with exactly that shape only adds one to `run`, the count of
 * records of that shape not yet added to its fields. The first key off the shape makes the
 * record's prefix explicit (marks and noted[]) and takes the hashed path; the run is folded into
 * the fields before any read and before another shape is committed.
 * The module does not log: callers log once, with context. Its text file is catalog_file.c.
 */
#include "state/state_catalog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_EMPTY 0u            /* slots hold field index + 1 */
#define MIN_SLOTS 64u

struct catalog {
	struct catalog_field *fields;
	size_t n_fields;         /* listed, including those first noted in the current record */
	size_t n_committed;      /* fields[0..n_committed) were seen in a committed record */
	size_t cap;              /* capacity of fields and noted alike */
	size_t max_fields;
	uint32_t *slots;
	size_t slot_mask;        /* number of slots - 1, a power of two minus one */
	uint32_t *noted;         /* distinct fields noted in the current record */
	size_t n_noted;
	uint32_t *prev;          /* the last committed record's fields, in order: the expected shape */
	size_t n_prev;
	bool off_shape;          /* the current record left prev's shape: its marks and noted[] are real */
	uint64_t run;            /* committed records of prev's shape not yet counted in the fields */
	int64_t run_now;         /* @now of the last of them */
	uint64_t serial;         /* current record; a field's mark equals it once noted */
	uint64_t overflow;
	uint64_t pending_overflow;
};

/* memcmp() == 0 for the short keys of the fast path, without a call into libc per key. */
static inline bool same_bytes(const char *a, const char *b, size_t n)
{
	uint64_t x, y;

	for (; n >= 8; a += 8, b += 8, n -= 8) {
		memcpy(&x, a, 8);
		memcpy(&y, b, 8);
		if (x != y)
			return false;
	}
	while (n--)
		if (*a++ != *b++)
			return false;
	return true;
}

static uint32_t hash_name(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3u;
	}
	/* Fold so the low bits that index the table depend on every byte. */
	return (uint32_t)(h ^ (h >> 32));
}

/* The slot holding @name, or the empty slot where it would go. */
static size_t probe(const struct catalog *c, const char *name, size_t len, uint32_t h)
{
	for (size_t s = h & c->slot_mask;; s = (s + 1) & c->slot_mask) {
		uint32_t v = c->slots[s];
		const struct catalog_field *f;

		if (v == SLOT_EMPTY)
			return s;
		f = &c->fields[v - 1];
		if (f->hash == h && f->name_len == len && memcmp(f->name, name, len) == 0)
			return s;
	}
}

static int rehash(struct catalog *c, size_t n_slots)
{
	uint32_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	free(c->slots);
	c->slots = slots;
	c->slot_mask = n_slots - 1;
	for (size_t i = 0; i < c->n_fields; i++) {
		size_t s = c->fields[i].hash & c->slot_mask;

		while (slots[s] != SLOT_EMPTY)
			s = (s + 1) & c->slot_mask;
		slots[s] = (uint32_t)(i + 1);
	}
	return 0;
}

/* Room for one more field: arrays and a table kept at most half full. */
static int reserve(struct catalog *c)
{
	if (c->n_fields == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct catalog_field *f;
		uint32_t *n;

		if (cap > c->max_fields)
			cap = c->max_fields;
		f = realloc(c->fields, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		c->fields = f;
		/* noted never outgrows fields, so growing both here means noting never allocates. */
		n = realloc(c->noted, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		c->noted = n;
		n = realloc(c->prev, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		c->prev = n;
		c->cap = cap;
	}
	if ((c->n_fields + 1) * 2 > c->slot_mask + 1)
		return rehash(c, (c->slot_mask + 1) * 2);
	return 0;
}

/* Append a field; NULL when it does not fit (full, too long, out of memory). */
static struct catalog_field *insert(struct catalog *c, const char *name, size_t len, uint32_t h)
{
	struct catalog_field *f;
	char *copy;
	size_t s;

	if (c->n_fields >= c->max_fields || len > CATALOG_NAME_MAX || reserve(c) < 0)
		return NULL;
	copy = malloc(len + 1);
	if (!copy)
		return NULL;
	memcpy(copy, name, len);
	copy[len] = '\0';
	s = probe(c, name, len, h);
	c->slots[s] = (uint32_t)(c->n_fields + 1);
	f = &c->fields[c->n_fields++];
	*f = (struct catalog_field){ .name = copy, .name_len = len, .hash = h };
	return f;
}

/* Backward-shift deletion: linear probing stays correct without tombstones. */
static void remove_slot(struct catalog *c, size_t i)
{
	size_t j = i;

	for (;;) {
		size_t home;

		c->slots[i] = SLOT_EMPTY;
		for (;;) {
			j = (j + 1) & c->slot_mask;
			if (c->slots[j] == SLOT_EMPTY)
				return;
			home = c->fields[c->slots[j] - 1].hash & c->slot_mask;
			/* Stay if home lies cyclically in (i, j]: the hole does not break its chain. */
			if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
				continue;
			break;
		}
		c->slots[i] = c->slots[j];
		i = j;
	}
}

int state_catalog_new(struct catalog **out, size_t max_fields)
{
	struct catalog *c;

	/* Indices are stored as uint32_t + 1; the table doubles up to 2 × max_fields slots. */
	if (max_fields == 0 || max_fields >= (1u << 31))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->max_fields = max_fields;
	c->serial = 1;
	c->slots = calloc(MIN_SLOTS, sizeof(*c->slots));
	if (!c->slots) {
		free(c);
		return -ENOMEM;
	}
	c->slot_mask = MIN_SLOTS - 1;
	*out = c;
	return 0;
}

void state_catalog_free(struct catalog *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_fields; i++)
		free(c->fields[i].name);
	free(c->fields);
	free(c->noted);
	free(c->prev);
	free(c->slots);
	free(c);
}

/* Count the run of prev-shaped records into their fields. */
static void fold_run(struct catalog *c)
{
	if (!c->run)
		return;
	for (size_t i = 0; i < c->n_prev; i++) {
		struct catalog_field *f = &c->fields[c->prev[i]];

		f->records += c->run;
		f->last_seen = c->run_now;
	}
	c->run = 0;
}

/* The current record's keys so far are prev's first n_noted: write them down as noted. */
static void leave_shape(struct catalog *c)
{
	for (size_t i = 0; i < c->n_noted; i++) {
		c->noted[i] = c->prev[i];
		c->fields[c->prev[i]].mark = c->serial;
	}
	c->off_shape = true;
}

void state_catalog_note(struct catalog *c, const char *key, size_t len)
{
	struct catalog_field *f;
	uint32_t h, v;

	if (!c->off_shape) {
		if (c->n_noted < c->n_prev) {
			f = &c->fields[c->prev[c->n_noted]];
			if (f->name_len == len && same_bytes(f->name, key, len)) {
				c->n_noted++;
				return;
			}
		}
		leave_shape(c);
	}
	h = hash_name(key, len);
	v = c->slots[probe(c, key, len, h)];
	if (v != SLOT_EMPTY) {
		f = &c->fields[v - 1];
		if (f->mark == c->serial)
			return;
	} else {
		f = insert(c, key, len, h);
		if (!f) {
			/* Not remembered, so a repeat within the record counts again: rare and harmless. */
			c->pending_overflow++;
			return;
		}
	}
	f->mark = c->serial;
	c->noted[c->n_noted++] = (uint32_t)(f - c->fields);
}

void state_catalog_commit(struct catalog *c, int64_t now)
{
	uint32_t *swap;

	if (!c->off_shape && c->n_noted == c->n_prev) {
		c->run++;
		c->run_now = now;
		c->n_noted = 0;
		c->serial++;
		return;
	}
	fold_run(c);
	if (!c->off_shape)
		leave_shape(c);         /* a prefix of prev's shape */
	for (size_t i = 0; i < c->n_noted; i++) {
		struct catalog_field *f = &c->fields[c->noted[i]];

		f->records++;
		f->last_seen = now;
	}
	swap = c->prev;
	c->prev = c->noted;
	c->noted = swap;
	c->n_prev = c->n_noted;
	c->n_noted = 0;
	c->off_shape = false;
	c->n_committed = c->n_fields;
	c->overflow += c->pending_overflow;
	c->pending_overflow = 0;
	c->serial++;
}

void state_catalog_drop(struct catalog *c)
{
	while (c->n_fields > c->n_committed) {
		struct catalog_field *f = &c->fields[c->n_fields - 1];
		size_t s = f->hash & c->slot_mask;

		while (c->slots[s] != c->n_fields)
			s = (s + 1) & c->slot_mask;
		remove_slot(c, s);
		free(f->name);
		c->n_fields--;
	}
	c->n_noted = 0;
	c->off_shape = false;
	c->pending_overflow = 0;
	c->serial++;
}

bool state_catalog_busy(const struct catalog *c)
{
	return c->n_noted || c->pending_overflow;
}

bool state_catalog_truncated(const struct catalog *c)
{
	return c->overflow > 0;
}

uint64_t state_catalog_overflow(const struct catalog *c)
{
	return c->overflow;
}

size_t state_catalog_count(const struct catalog *c)
{
	return c->n_committed;
}

const struct catalog_field *state_catalog_field_at(struct catalog *c, size_t i)
{
	if (i >= c->n_committed)
		return NULL;
	fold_run(c);
	return &c->fields[i];
}

int state_catalog_get(struct catalog *c, size_t i, const char **name, uint64_t *records,
		int64_t *last_seen)
{
	const struct catalog_field *f = state_catalog_field_at(c, i);

	if (!f)
		return -ERANGE;
	if (name)
		*name = f->name;
	if (records)
		*records = f->records;
	if (last_seen)
		*last_seen = f->last_seen;
	return 0;
}

const struct catalog_field *state_catalog_find(struct catalog *c, const char *name)
{
	size_t len = strlen(name);
	uint32_t v = c->slots[probe(c, name, len, hash_name(name, len))];

	/* A name noted only in the uncommitted record is not listed yet. */
	if (v == SLOT_EMPTY || v > c->n_committed)
		return NULL;
	fold_run(c);
	return &c->fields[v - 1];
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void add_field(struct catalog *c, const char *name, size_t len, uint64_t records, int64_t last_seen)
{
	uint32_t h, v;
	struct catalog_field *f;

	h = hash_name(name, len);
	v = c->slots[probe(c, name, len, h)];
	if (v == SLOT_EMPTY) {
		f = insert(c, name, len, h);
		if (!f) {
			c->overflow = add_sat(c->overflow, records);
			return;
		}
		f->last_seen = last_seen;
		c->n_committed = c->n_fields;
	} else {
		f = &c->fields[v - 1];
	}
	f->records = add_sat(f->records, records);
	if (last_seen > f->last_seen)
		f->last_seen = last_seen;
}

int state_catalog_add(struct catalog *c, const char *name, size_t len, uint64_t records, int64_t last_seen)
{
	if (state_catalog_busy(c))
		return -EBUSY;
	fold_run(c);
	add_field(c, name, len, records, last_seen);
	return 0;
}

int state_catalog_add_overflow(struct catalog *c, uint64_t n)
{
	if (state_catalog_busy(c))
		return -EBUSY;
	c->overflow = add_sat(c->overflow, n);
	return 0;
}

int state_catalog_merge(struct catalog *dst, struct catalog *src)
{
	if (state_catalog_busy(dst) || state_catalog_busy(src))
		return -EBUSY;
	fold_run(dst);
	fold_run(src);
	dst->overflow = add_sat(dst->overflow, src->overflow);
	for (size_t i = 0; i < src->n_committed; i++) {
		const struct catalog_field *f = &src->fields[i];

		add_field(dst, f->name, f->name_len, f->records, f->last_seen);
	}
	return 0;
}

void state_catalog_clear(struct catalog *c)
{
	for (size_t i = 0; i < c->n_fields; i++)
		free(c->fields[i].name);
	memset(c->slots, 0, (c->slot_mask + 1) * sizeof(*c->slots));
	c->n_fields = c->n_committed = c->n_noted = c->n_prev = 0;
	c->off_shape = false;
	c->run = 0;
	c->overflow = c->pending_overflow = 0;
	c->serial++;
}
