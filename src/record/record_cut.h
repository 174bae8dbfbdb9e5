/* record_cut: cut a file's valid records into request bodies of at most N records and B bytes. */
#pragma once
/*
 * Contract.
 * Owns: no state of its own, so it runs on the pipeline's worker thread as safely as on the loop.
 * A struct record_body owns its buffers from record_cut_body_init to record_cut_body_release (its holder calls both).
 * Borrows for one call: the body it fills, @p (batch_uuid is copied into the body's text), the
 * source @r (read on from where it stands; a record that does not fit is handed back with
 * record_source_unget), the validator and the reject callback's userdata.
 * May call: source, the record check (record_check.h), the reject callback, libc. Never logs, and
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
#include "util/rc.h"

/* The API takes at most this many records in one request. */
#define RECORD_MAX_PER_REQUEST 5000

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
	uint64_t end_file_offset;       /* bytes of the file itself read to reach end_offset: for a compressed
					 * file what the decompressor consumed, never past the file's size */
	uint64_t start_line;    /* number of the first line of the range */
	uint64_t end_line;      /* number the next range starts with */
	uint64_t rejected;      /* lines of the range rejected locally */
	uint64_t unchanged;     /* records of the range left out: the API holds them (skip_unchanged) */
	uint32_t *rec_key;      /* skip_unchanged: record i's primary key is at body[rec_off[i] + (rec_key[i] >> 16)], */
				/* (rec_key[i] & 0xffff) bytes; 0: not noted (or past 64 KiB into the record) */
	bool last;              /* batch_completed: true */
};

/*
 * skip_unchanged: @decide says whether a valid record goes up (1) or the API holds it already
 * (0); @key is its primary key's JSON text, @pos its place in the batch (member << 40 | line).
 * A negative errno sends it. It runs where the cut runs: the pipeline gives it only to cuts on
 * its worker; a cut without it notes the keys for record_cut_decide.
 */
struct cut_skip {
	int (*decide)(void *userdata, const char *rec, size_t len, const char *key, size_t key_len, uint64_t pos);
	void *userdata;
};

struct cut_params {
	const char *batch_uuid;
	long long ttl_seconds;  /* < 0: not sent */
	unsigned max_records;
	size_t max_bytes;
	const struct cut_skip *skip;    /* NULL: every valid record is sent */
	bool note_keys;                 /* keep each record's key span (rec_key) for a later record_cut_decide */
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
/* Where a body stands: what record_cut_body_rollback takes it back to. */
struct body_mark {
	size_t len;
	uint32_t n_records;
	off_t start_offset, end_offset;
	uint64_t end_file_offset;
	uint64_t start_line, end_line;
	uint64_t rejected;
};

struct body_mark record_cut_body_mark(const struct record_body *c);
/* Take back everything appended since @m was taken (a file that does not fit the request). */
void record_cut_body_rollback(struct record_body *c, const struct body_mark *m);
void record_cut_body_finish(struct record_body *c, const struct cut_params *p, bool last);

/*
 * Build in @dst a request holding records [from, to) of @src, with @last as its
 * batch_completed flag: how a refused request is split in halves.
 */
int record_cut_body_part(struct record_body *dst, const struct record_body *src, const struct cut_params *p,
		uint32_t from, uint32_t to, bool last);
/*
 * skip_unchanged for a body cut with note_keys: decide each record in order (p->skip) and leave
 * out those the API holds, counting them in c->unchanged; the body is sealed again.
 */
int record_cut_decide(struct record_body *c, const struct cut_params *p);
/* Seal @c's body again with @last as its batch_completed flag (a file that grew after its end). */
void record_cut_body_reseal(struct record_body *c, const struct cut_params *p, bool last);
/* Build in @dst a request holding the one record @data, with @last as its batch_completed flag. */
int record_cut_body_single(struct record_body *dst, const struct cut_params *p, const char *data, size_t len, bool last);
