/* batch: cut a file's valid records into request bodies of at most N records and B bytes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ndjson.h"
#include "source.h"

/* One request body of a batch: records copied byte for byte between the envelope. */
struct chunk {
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

struct batch_params {
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
typedef int (*batch_reject_fn)(void *userdata, uint64_t lineno, const char *reason,
			       const char *data, size_t len);

int chunk_init(struct chunk *c, unsigned max_records);
void chunk_release(struct chunk *c);

/*
 * Fill @c with the next records from @r. Stops before a record that would break either
 * limit, or at end of file (then c->last is set). Deterministic: the same file, offset and
 * params always give the same cut, which is what lets a resumed batch repeat its requests.
 */
int batch_cut(struct chunk *c, const struct batch_params *p, struct source *r,
	      struct record_validator *v, batch_reject_fn reject, void *userdata);

/* The steps batch_cut is made of, for requests filled from several small files. */
enum {
	BATCH_FILL_FULL = 0,    /* a record did not fit: it is handed back to the reader */
	BATCH_FILL_EOF = 1,     /* the reader is exhausted */
	BATCH_FILL_REJECTS = 2, /* the reject callback asked to stop */
};
int chunk_begin(struct chunk *c);
/* Append records from @r, stamped with c->member. Returns BATCH_FILL_* or a negative errno. */
int batch_fill(struct chunk *c, const struct batch_params *p, struct source *r,
	       struct record_validator *v, batch_reject_fn reject, void *userdata);
/* Take back what was appended since the body had @len bytes and @n_records records. */
void chunk_truncate(struct chunk *c, size_t len, uint32_t n_records);
void chunk_finish(struct chunk *c, const struct batch_params *p, bool last);

/*
 * Build in @dst a request holding records [from, to) of @src, with @last as its
 * batch_completed flag: how a refused request is split in halves.
 */
int chunk_slice(struct chunk *dst, const struct chunk *src, const struct batch_params *p,
		uint32_t from, uint32_t to, bool last);
/* Seal @c's body again with @last as its batch_completed flag (a file that grew after its end). */
void chunk_reseal(struct chunk *c, const struct batch_params *p, bool last);
/* Build in @dst a request holding the one record @data, with @last as its batch_completed flag. */
int chunk_single(struct chunk *dst, const struct batch_params *p, const char *data, size_t len, bool last);
