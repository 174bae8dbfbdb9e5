/* state_key: what the store compares, the canonical form of a primary key and a record's hash. */
#pragma once
/* Contract. Pure functions: they own nothing, borrow their arguments for the call. May call: libxxhash, libc. */

#include <stddef.h>
#include <stdint.h>

/* The longest canonical key: longer primary keys are never skipped (state_store_decide says SEND). */
#define STATE_KEY_MAX 480

struct store_hash {
	uint64_t lo, hi;
};

/*
 * The canonical bytes of a primary key given as its JSON text (a string with quotes and
 * escapes, or a number): a string whose content is a JSON number and that number in any
 * spelling (1, 1.0, 1e0, 10e-1, "1") are one key; other strings are their unescaped bytes.
 * Writes at most STATE_KEY_MAX bytes to @out and sets *@out_len. -EINVAL: not a string or
 * number; -E2BIG: longer than STATE_KEY_MAX.
 */
int state_key_canon(const char *json_value, size_t len, unsigned char *out, size_t *out_len);

/* The hash of a record exactly as sent (XXH3 128-bit). */
struct store_hash state_key_hash_record(const void *rec, size_t len);
