/* record_check: is one record valid JSON, one object, not too deep, with its primary key and required fields? */
#include "record/record_check.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_parse.h>

#include "state/state_catalog.h"

/*
 * yajl's allocations for one record come from a bump arena reset per record: a handle per line
 * (there is no reset) would otherwise cost a handful of malloc/free pairs per record.
 */
#define ARENA_SIZE (16 * 1024)

struct arena {
	size_t used;
	_Alignas(max_align_t) unsigned char mem[ARENA_SIZE];
};

struct record_check {
	yajl_callbacks cb;
	yajl_alloc_funcs afs;
	struct arena arena;
	const char *pk;
	size_t pk_len;
	char *const *required;
	size_t n_required;
	struct catalog *catalog;
	int max_depth;
	/* per-record state */
	int depth;
	int top_values;
	bool pk_next;           /* the value about to come is the primary key's */
	int required_next;      /* index of the required field whose value comes, or -1 */
	unsigned pk_seen;
	uint64_t required_seen;
	char *reason;
	size_t reason_len;
	yajl_handle h;
	size_t object_end;      /* offset just after the top-level object's '}' */
};

static int v_refuse(struct record_check *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int v_refuse(struct record_check *v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(v->reason, v->reason_len, fmt, ap);
	va_end(ap);
	return 0;
}

/* Every value funnels through here: tracks the top level and the primary key's type. */
static int v_value(struct record_check *v, const char *type, bool pk_ok)
{
	if (v->depth == 0) {
		v->top_values++;
		return v_refuse(v, "not a JSON object (a %s)", type);
	}
	if (v->depth == 1 && v->pk_next) {
		v->pk_next = false;
		if (!pk_ok)
			return v_refuse(v, "primary key '%s' is not a string or number", v->pk);
	}
	return 1;
}

/*
 * No string or number callbacks: yajl then neither decodes escapes nor converts numbers it only
 * has to validate (the hot path). A primary key whose value triggers none of the callbacks
 * below was a string or a number; a record that triggers none at all was a bare scalar.
 */
static int v_null(void *ctx) { return v_value(ctx, "null", false); }
static int v_bool(void *ctx, int b) { (void)b; return v_value(ctx, "boolean", false); }

/* Refused here, as it opens: yajl itself would follow any depth, and so would the request. */
static int v_too_deep(struct record_check *v)
{
	snprintf(v->reason, v->reason_len, "nested deeper than max_depth (%d levels of objects and arrays)",
		 v->max_depth);
	return 0;
}

static int v_start_map(void *ctx)
{
	struct record_check *v = ctx;

	if (v->depth == 0) {
		if (v->top_values++)
			return v_refuse(v, "%s", "more than one JSON value on the line");
	} else if (!v_value(v, "object", false)) {
		return 0;
	}
	if (v->depth >= v->max_depth)
		return v_too_deep(v);
	v->depth++;
	return 1;
}

static int v_end_map(void *ctx)
{
	struct record_check *v = ctx;

	if (v->depth == 1) {
		v->pk_next = false;     /* the primary key's value was a string or number */
		v->object_end = yajl_get_bytes_consumed(v->h);
	}
	v->depth--;
	return 1;
}

static int v_start_array(void *ctx)
{
	struct record_check *v = ctx;

	if (!v_value(v, "array", false))
		return 0;
	if (v->depth >= v->max_depth)
		return v_too_deep(v);
	v->depth++;
	return 1;
}

static int v_end_array(void *ctx)
{
	struct record_check *v = ctx;

	v->depth--;
	return 1;
}

static int v_map_key(void *ctx, const unsigned char *key, size_t len)
{
	struct record_check *v = ctx;

	if (v->depth != 1)
		return 1;
	v->pk_next = false;             /* the previous value, if the key's, was a string or number */
	if (v->catalog)
		state_catalog_note(v->catalog, (const char *)key, len);
	if (len == v->pk_len && !memcmp(key, v->pk, len)) {
		if (v->pk_seen++)
			return v_refuse(v, "primary key '%s' appears twice", v->pk);
		v->pk_next = true;
	}
	for (size_t i = 0; i < v->n_required; i++)
		if (strlen(v->required[i]) == len && !memcmp(key, v->required[i], len))
			v->required_seen |= 1ull << i;
	return 1;
}

/* Each block carries its size in front, for realloc. */
static void *arena_malloc(void *ctx, size_t sz)
{
	struct arena *a = ctx;
	size_t need = (sizeof(max_align_t) + sz + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	unsigned char *p;

	if (need > ARENA_SIZE - a->used) {
		p = malloc(sizeof(max_align_t) + sz);
		if (!p)
			return NULL;
	} else {
		p = a->mem + a->used;
		a->used += need;
	}
	memcpy(p, &sz, sizeof(sz));
	return p + sizeof(max_align_t);
}

static bool in_arena(const struct arena *a, const void *p)
{
	return (const unsigned char *)p >= a->mem && (const unsigned char *)p < a->mem + ARENA_SIZE;
}

static void arena_free(void *ctx, void *ptr)
{
	if (ptr && !in_arena(ctx, ptr))
		free((unsigned char *)ptr - sizeof(max_align_t));
}

static void *arena_realloc(void *ctx, void *ptr, size_t sz)
{
	size_t old;
	void *n;

	if (!ptr)
		return arena_malloc(ctx, sz);
	memcpy(&old, (unsigned char *)ptr - sizeof(max_align_t), sizeof(old));
	n = arena_malloc(ctx, sz);
	if (!n)
		return NULL;
	memcpy(n, ptr, old < sz ? old : sz);
	arena_free(ctx, ptr);
	return n;
}

int record_check_new(struct record_check **out, const char *primary_key,
			 char *const *required_fields, size_t n_required)
{
	struct record_check *v;

	if (n_required > RECORD_MAX_REQUIRED)
		return -E2BIG;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->cb = (yajl_callbacks){
		.yajl_null = v_null,
		.yajl_boolean = v_bool,
		.yajl_start_map = v_start_map,
		.yajl_map_key = v_map_key,
		.yajl_end_map = v_end_map,
		.yajl_start_array = v_start_array,
		.yajl_end_array = v_end_array,
	};
	v->afs = (yajl_alloc_funcs){ .malloc = arena_malloc, .realloc = arena_realloc, .free = arena_free,
				     .ctx = &v->arena };
	v->pk = primary_key;
	v->pk_len = strlen(primary_key);
	v->required = required_fields;
	v->n_required = n_required;
	v->max_depth = RECORD_DEFAULT_MAX_DEPTH;
	*out = v;
	return 0;
}

void record_check_free(struct record_check *v)
{
	free(v);
}

void record_check_set_catalog(struct record_check *v, struct catalog *catalog)
{
	v->catalog = catalog;
}

void record_check_set_max_depth(struct record_check *v, unsigned max_depth)
{
	v->max_depth = max_depth < 1 ? 1 : max_depth > RECORD_MAX_DEPTH_LIMIT ? RECORD_MAX_DEPTH_LIMIT : (int)max_depth;
}

int record_check_one(struct record_check *v, const char *data, size_t len,
			   char *reason, size_t reason_len)
{
	yajl_handle h;
	yajl_status st;
	int r = 0;

	v->depth = 0;
	v->top_values = 0;
	v->pk_next = false;
	v->pk_seen = 0;
	v->required_seen = 0;
	v->reason = reason;
	v->reason_len = reason_len;
	reason[0] = '\0';

	if (memchr(data, '\0', len)) {
		snprintf(reason, reason_len, "NUL byte in line");
		return -EINVAL;
	}
	/* yajl takes these for blanks; JSON does not (and inside strings yajl refuses them anyway). */
	if (memchr(data, '\f', len) || memchr(data, '\v', len)) {
		snprintf(reason, reason_len, "invalid JSON: form feed or vertical tab outside a string");
		return -EINVAL;
	}
	/* yajl has no reset: one handle per record keeps a bad line from affecting the next. */
	v->arena.used = 0;
	h = yajl_alloc(&v->cb, &v->afs, v);
	if (!h)
		return -ENOMEM;
	v->h = h;
	v->object_end = 0;
	st = yajl_parse(h, (const unsigned char *)data, len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	if (st != yajl_status_ok) {
		if (st == yajl_status_error && !reason[0]) {
			unsigned char *e = yajl_get_error(h, 0, (const unsigned char *)data, len);
			char *nl;

			snprintf(reason, reason_len, "invalid JSON: %s", e ? (char *)e : "parse error");
			if ((nl = strchr(reason, '\n')))
				*nl = '\0';
			yajl_free_error(h, e);
		}
		r = -EINVAL;
		goto out;
	}
	if (!v->top_values) {
		snprintf(reason, reason_len, "not a JSON object (a string or number)");
		r = -EINVAL;
		goto out;
	}
	/*
	 * yajl takes an unterminated string after the value for a token still to come and says
	 * nothing: `{"id":1}"x` would pass, and be sent, and spoil the whole request.
	 */
	for (size_t i = v->object_end; i < len; i++) {
		if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r' && data[i] != '\n') {
			snprintf(reason, reason_len, "invalid JSON: trailing garbage after the object");
			r = -EINVAL;
			goto out;
		}
	}
	if (!v->pk_seen) {
		snprintf(reason, reason_len, "primary key '%s' missing", v->pk);
		r = -EINVAL;
		goto out;
	}
	for (size_t i = 0; i < v->n_required; i++) {
		if (!(v->required_seen & (1ull << i))) {
			snprintf(reason, reason_len, "required field '%s' missing", v->required[i]);
			r = -EINVAL;
			goto out;
		}
	}
out:
	yajl_free(h);
	if (v->catalog) {
		if (r == 0)
			state_catalog_commit(v->catalog, (int64_t)time(NULL));
		else
			state_catalog_drop(v->catalog);
	}
	return r;
}
