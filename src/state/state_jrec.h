/* state_jrec: the journal's on-disk records: framing, encoding and checked decoding; no I/O. */
#pragma once

/*
 * Contract. Pure functions over caller-owned buffers (nothing kept between calls); used by
 * state_journal.c only, and by the tests that write journals by hand. A record is
 * [u32 length][u32 CRC-32C of payload][payload], little-endian; the payload's first byte is
 * its type.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/state_journal.h"
#include "state/state_totals.h"

/* A batch's state (its files are its member records, 'F'). */
#define JREC_BATCH 'S'
#define JREC_META 'M'
#define JREC_MEMBER 'F'
#define JREC_MAX 4096
#define JREC_MIN 9              /* a type byte and one u64: the smallest record (META) */
/* Far beyond any real journal: a larger id is corrupt, and would let next_id++ wrap to live ids. */
#define JREC_ID_MAX (UINT64_MAX / 2)

/* One record's payload, type byte first. */
struct jrec_buf {
	unsigned char b[JREC_MAX];
	size_t n;
};

void state_jrec_meta(struct jrec_buf *w, uint64_t next_id);
void state_jrec_batch(struct jrec_buf *w, const struct journal_batch *b);
void state_jrec_member(struct jrec_buf *w, const struct journal_member *m);
/* The 8-byte header that goes before @w's payload. */
void state_jrec_frame(unsigned char hdr[8], const struct jrec_buf *w);

/* A decoded record, checked but not yet applied. */
struct jrec {
	unsigned char type;
	union {
		uint64_t next_id;
		struct journal_member m;
		struct journal_batch b;
	} u;
};

/*
 * Whether a well-formed record starts at @pos of @data (@n bytes): its length within bounds and
 * inside the data, its CRC-32C right, a known type whose fields decode. @exact also wants the
 * fields to fill the payload to its last byte: what a resync point must do, so that bytes inside
 * a damaged record (which may hold a file name or an error text) are not taken for a record.
 * On success *@rec holds it and *@len_out its payload's length.
 */
bool state_jrec_at(const unsigned char *data, size_t n, size_t pos, bool exact, struct jrec *rec, uint32_t *len_out);
