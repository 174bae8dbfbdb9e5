/* record_check: is one record valid JSON, one object, not too deep, with its primary key and required fields? */
#pragma once
/*
 * Contract.
 * Owns: a check's parse state and the arena yajl allocates from.
 * Borrows: @primary_key and @required_fields, kept without copying them (the conn_config they
 * come from must outlive the check), and the catalog set on it until another is set.
 * May call: yajl, catalog (each valid record's field names), libc. No log: the caller says which
 * file and line.
 */

#include <stdbool.h>
#include <stddef.h>

struct record_check;

/* required_fields are tracked in a 64-bit mask: config.c refuses more. */
#define RECORD_MAX_REQUIRED 64
/*
 * Nesting of objects and arrays, the record's own object counting as 1: deeper records are
 * rejected locally (max_depth). 64 is the default limit of .NET's System.Text.Json and of
 * Json.NET: a server built on them refuses deeper documents, and no flat customer record needs
 * more. RECORD_MAX_DEPTH_LIMIT bounds what max_depth may be configured to.
 */
#define RECORD_DEFAULT_MAX_DEPTH 64
#define RECORD_MAX_DEPTH_LIMIT 1000

/* The validator starts with RECORD_DEFAULT_MAX_DEPTH; -E2BIG for more than RECORD_MAX_REQUIRED fields. */
int record_check_new(struct record_check **out, const char *primary_key,
			 char *const *required_fields, size_t n_required);
void record_check_free(struct record_check *v);
struct catalog;
/* Note the top-level field names of every valid record in @catalog (NULL: none). */
void record_check_set_catalog(struct record_check *v, struct catalog *catalog);
/* Records nested deeper than @max_depth (1..RECORD_MAX_DEPTH_LIMIT) are refused. */
void record_check_set_max_depth(struct record_check *v, unsigned max_depth);
/*
 * 0 when @data is one JSON object, nested no deeper than max_depth, carrying the primary key
 * once, as a string or number, and every required field; otherwise -EINVAL with a human-readable reason in @reason.
 */
int record_check_one(struct record_check *v, const char *data, size_t len,
			   char *reason, size_t reason_len);
