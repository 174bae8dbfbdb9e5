/* cut: cut a file's valid records into request bodies of at most N records and B bytes. */
#pragma once
/*
 * Contract.
 * Owns: no state of its own, so it runs on the pipeline's worker thread as safely as on the loop.
 * A struct record_body owns its buffers from record_cut_body_init to record_cut_body_release (its holder calls both).
 * Borrows for one call: the body it fills, @p (batch_uuid is copied into the body's text), the
 * source @r (read on from where it stands; a record that does not fit is handed back with
 * record_source_unget), the validator and the reject callback's userdata.
 * May call: source, the record validator (ndjson.h), the reject callback, libc. Never logs, and
 * of a batch knows only its batch_uuid: no HTTP, no journal. Called by pipeline (a file's bodies),
 * batch (a body of several small files) and request (the halves of a refused request).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "record/record_check.h"
#include "record/record_ndjson.h"
#include "record/record_source.h"

/* One request body of a batch: records copied byte for byte between the envelope. */
struct record_body {
	char *body;
	size_t len;
	size_t cap;
	uint32_t n_records;
	uint32_t *rec_off;      /* record i lies at body[rec_off[i]], rec_len[i] bytes */
	uint32_t *rec_len;
	uint64_t *rec_line;
	uint32_t *rec_member;   /* which file of a multi-file batch the record came from */
	uint32_t member;        /* stamped on the records added next */
	off_t start_offset;     /* file range this request covers (incl. rejected lines) */
	off_t end_offset;
	uint64_t start_line;    /* number of the first line of the range */
	uint64_t end_line;      /* number the next range starts with */
	uint64_t rejected;      /* lines of the range rejected locally */
	bool last;              /* batch_completed: true */
};

struct cut_params {
	const char *batch_uuid;
	long long ttl_seconds;  /* < 0: not sent */
	unsigned max_records;
	size_t max_bytes;
};

/*
 * Called for every line rejected locally, in file order (@data is NULL for a line too long
 * to keep). Returns <0 on error, 1 to end the request's range after this line (the caller
 * holds no more rejected lines), 0 to go on.
 */
typedef int (*cut_reject_fn)(void *userdata, uint64_t lineno, const char *reason,
			       const char *data, size_t len);

int record_cut_body_init(struct record_body *c, unsigned max_records);
void record_cut_body_release(struct record_body *c);

/*
 * Fill @c with the next records from @r. Stops before a record that would break either
 * limit, or at end of file (then c->last is set). Deterministic: the same file, offset and
 * params always give the same cut, which is what lets a resumed batch repeat its requests.
 */
int record_cut_next(struct record_body *c, const struct cut_params *p, struct source *r,
	      struct record_check *v, cut_reject_fn reject, void *userdata);

/* The steps record_cut_next is made of, for requests filled from several small files. */
enum {
	CUT_FILL_FULL = 0,    /* a record did not fit: it is handed back to the reader */
	CUT_FILL_EOF = 1,     /* the reader is exhausted */
	CUT_FILL_REJECTS = 2, /* the reject callback asked to stop */
};
int record_cut_body_begin(struct record_body *c);
/* Append records from @r, stamped with c->member. Returns CUT_FILL_* or a negative errno. */
int record_cut_fill(struct record_body *c, const struct cut_params *p, struct source *r,
	       struct record_check *v, cut_reject_fn reject, void *userdata);
/* Take back what was appended since the body had @len bytes and @n_records records. */
void record_cut_body_truncate(struct record_body *c, size_t len, uint32_t n_records);
void record_cut_body_finish(struct record_body *c, const struct cut_params *p, bool last);

/*
 * Build in @dst a request holding records [from, to) of @src, with @last as its
 * batch_completed flag: how a refused request is split in halves.
 */
int record_cut_body_part(struct record_body *dst, const struct record_body *src, const struct cut_params *p,
		uint32_t from, uint32_t to, bool last);
/* Seal @c's body again with @last as its batch_completed flag (a file that grew after its end). */
void record_cut_body_reseal(struct record_body *c, const struct cut_params *p, bool last);
/* Build in @dst a request holding the one record @data, with @last as its batch_completed flag. */
int record_cut_body_single(struct record_body *dst, const struct cut_params *p, const char *data, size_t len, bool last);
