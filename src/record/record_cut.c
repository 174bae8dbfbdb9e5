/* record_cut: cut a file's valid records into request bodies of at most N records and B bytes. */
#include "record/record_cut.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_HEAD "{\"data\":["
/* ],"batch_uuid":"<36>","batch_completed":false,"ttl_seconds":<20>} */
#define BODY_TAIL_MAX 128

int record_cut_body_init(struct record_body *c, unsigned max_records)
{
	memset(c, 0, sizeof(*c));
	c->rec_off = malloc(max_records * sizeof(*c->rec_off));
	c->rec_len = malloc(max_records * sizeof(*c->rec_len));
	c->rec_line = malloc(max_records * sizeof(*c->rec_line));
	c->rec_member = malloc(max_records * sizeof(*c->rec_member));
	c->rec_key = malloc(max_records * sizeof(*c->rec_key));
	if (!c->rec_off || !c->rec_len || !c->rec_line || !c->rec_member || !c->rec_key) {
		record_cut_body_release(c);
		return -ENOMEM;
	}
	return 0;
}

void record_cut_body_release(struct record_body *c)
{
	free(c->body);
	free(c->rec_off);
	free(c->rec_len);
	free(c->rec_line);
	free(c->rec_member);
	free(c->rec_key);
	memset(c, 0, sizeof(*c));
}

static int reserve(struct record_body *c, size_t need)
{
	size_t cap = c->cap ? c->cap : 64 * 1024;
	char *b;

	if (c->len + need <= c->cap)
		return 0;
	while (cap < c->len + need)
		cap *= 2;
	b = realloc(c->body, cap);
	if (!b)
		return -ENOMEM;
	c->body = b;
	c->cap = cap;
	return 0;
}

static void put(struct record_body *c, const char *s, size_t n)
{
	memcpy(c->body + c->len, s, n);
	c->len += n;
}

static int begin(struct record_body *c)
{
	c->len = 0;
	c->n_records = 0;
	c->rejected = 0;
	c->unchanged = 0;
	c->last = false;
	if (reserve(c, sizeof(BODY_HEAD) + BODY_TAIL_MAX) < 0)
		return -ENOMEM;
	put(c, BODY_HEAD, sizeof(BODY_HEAD) - 1);
	return 0;
}

static int add_record(struct record_body *c, const char *data, size_t len, uint64_t lineno)
{
	if (reserve(c, len + 1 + BODY_TAIL_MAX) < 0)
		return -ENOMEM;
	if (c->n_records)
		put(c, ",", 1);
	c->rec_off[c->n_records] = (uint32_t)c->len;
	c->rec_len[c->n_records] = (uint32_t)len;
	c->rec_line[c->n_records] = lineno;
	c->rec_member[c->n_records] = c->member;
	c->rec_key[c->n_records] = 0;
	c->n_records++;
	put(c, data, len);
	return 0;
}

static void finish(struct record_body *c, const struct cut_params *p)
{
	char tail[BODY_TAIL_MAX];
	int n;

	if (p->ttl_seconds >= 0)
		n = snprintf(tail, sizeof(tail), "],\"batch_uuid\":\"%s\",\"batch_completed\":%s,\"ttl_seconds\":%lld}",
			     p->batch_uuid, c->last ? "true" : "false", p->ttl_seconds);
	else
		n = snprintf(tail, sizeof(tail), "],\"batch_uuid\":\"%s\",\"batch_completed\":%s}",
			     p->batch_uuid, c->last ? "true" : "false");
	put(c, tail, (size_t)n);
}

int record_cut_body_begin(struct record_body *c)
{
	return begin(c);
}

void record_cut_body_finish(struct record_body *c, const struct cut_params *p, bool last)
{
	c->last = last;
	finish(c, p);
}

struct body_mark record_cut_body_mark(const struct record_body *c)
{
	return (struct body_mark){
		.len = c->len, .n_records = c->n_records,
		.start_offset = c->start_offset, .end_offset = c->end_offset, .end_file_offset = c->end_file_offset,
		.start_line = c->start_line, .end_line = c->end_line, .rejected = c->rejected,
	};
}

void record_cut_body_rollback(struct record_body *c, const struct body_mark *m)
{
	c->len = m->len;
	c->n_records = m->n_records;
	c->start_offset = m->start_offset;
	c->end_offset = m->end_offset;
	c->end_file_offset = m->end_file_offset;
	c->start_line = m->start_line;
	c->end_line = m->end_line;
	c->rejected = m->rejected;
}

/* The record's place in its batch: monotone over the batch's files, the same after a restart. */
static uint64_t record_pos(const struct record_body *c, uint64_t lineno)
{
	return (uint64_t)c->member << 40 | lineno;
}

/* skip_unchanged: 1 to send the valid record @ln, 0 to leave it out; its key span in *@kspan. */
static int keep_record(const struct record_body *c, const struct cut_params *p, struct record_check *v,
		       const struct ndjson_line *ln, uint32_t *kspan)
{
	const char *key;
	size_t klen;

	*kspan = 0;
	if (record_check_key(v, ln->data, ln->len, &key, &klen) < 0)
		return 1;       /* a key we cannot see is never skipped */
	/* Kept also when decided now: a record the server refuses is told to the store by its key. */
	if ((size_t)(key - ln->data) <= 0xffff && klen <= 0xffff && klen)
		*kspan = (uint32_t)(key - ln->data) << 16 | (uint32_t)klen;
	if (!p->skip)
		return 1;
	return p->skip->decide(p->skip->userdata, ln->data, ln->len, key, klen, record_pos(c, ln->lineno)) == 0 ? 0 : 1;
}

/*
 * skip_unchanged, the body full: a record the API holds still belongs to this range, so the
 * next request starts with one to send (and a last request is never one of left-out records
 * only). Validated without the field catalog: a record handed back is validated again.
 * 1: left out here; 0: handed back to the next request.
 */
static int take_unchanged(struct record_body *c, const struct cut_params *p, struct record_check *v,
			  const struct ndjson_line *ln)
{
	struct catalog *cat = record_check_catalog(v);
	char reason[256];
	uint32_t kspan;
	int rc;

	if (ln->too_long || ln->error)
		return 0;
	record_check_set_catalog(v, NULL);
	rc = record_check_one(v, ln->data, ln->len, reason, sizeof(reason));
	record_check_set_catalog(v, cat);
	if (rc < 0 || keep_record(c, p, v, ln, &kspan))
		return 0;
	c->unchanged++;
	c->end_offset = ln->end_offset;
	c->end_line = ln->lineno + 1;
	return 1;
}

int record_cut_fill(struct record_body *c, const struct cut_params *p, struct source *r,
	       struct record_check *v, cut_reject_fn reject, void *userdata)
{
	struct ndjson_line ln;
	char reason[256];
	uint32_t kspan = 0;
	int rc;

	c->start_offset = c->end_offset = record_source_offset(r);
	c->end_file_offset = record_source_file_offset(r);
	c->start_line = c->end_line = record_source_lineno(r);
	c->rejected = 0;
	c->unchanged = 0;
	for (;;) {
		rc = record_source_next(r, &ln);
		if (rc < 0)
			return rc;
		if (rc == 0)
			return CUT_FILL_EOF;
		/*
		 * Decide on room before validating (the byte cap counts the whole body, envelope
		 * included): a line that cannot fit starts the next request whatever it holds, so no
		 * line is validated (or counted in the field catalog) twice.
		 */
		if (c->n_records == p->max_records ||
		    (c->n_records && !ln.too_long && c->len + 1 + ln.len + BODY_TAIL_MAX > p->max_bytes)) {
			if (p->skip && take_unchanged(c, p, v, &ln))
				continue;
			record_source_unget(r);
			return CUT_FILL_FULL;
		}
		if (ln.too_long) {
			snprintf(reason, sizeof(reason), "record longer than max_record_bytes");
			rc = -EINVAL;
		} else if (ln.error) {
			snprintf(reason, sizeof(reason), "%s", ln.error);
			rc = -EINVAL;
		} else {
			rc = record_check_one(v, ln.data, ln.len, reason, sizeof(reason));
		}
		if (rc == -EINVAL) {
			c->rejected++;
			c->end_offset = ln.end_offset;
			c->end_file_offset = record_source_file_offset(r);
			c->end_line = ln.lineno + 1;
			rc = reject ? reject(userdata, ln.lineno, reason, ln.data, ln.len) : 0;
			if (rc < 0)
				return rc;
			if (rc > 0)
				return CUT_FILL_REJECTS;  /* the caller holds no more rejected lines */
			continue;
		}
		if (rc < 0)
			return rc;
		if ((p->skip || p->note_keys) && !keep_record(c, p, v, &ln, &kspan)) {
			c->unchanged++;
		} else {
			if ((rc = add_record(c, ln.data, ln.len, ln.lineno)) < 0)
				return rc;
			c->rec_key[c->n_records - 1] = kspan;
		}
		c->end_offset = ln.end_offset;
		c->end_file_offset = record_source_file_offset(r);
		c->end_line = ln.lineno + 1;
	}
}

int record_cut_decide(struct record_body *c, const struct cut_params *p)
{
	size_t len = sizeof(BODY_HEAD) - 1;
	uint32_t n = 0;

	for (uint32_t i = 0; i < c->n_records; i++) {
		const char *rec = c->body + c->rec_off[i];
		uint32_t ks = c->rec_key[i], off = c->rec_off[i], rl = c->rec_len[i];
		int keep = !ks || p->skip->decide(p->skip->userdata, rec, rl, rec + (ks >> 16), ks & 0xffff,
						  (uint64_t)c->rec_member[i] << 40 | c->rec_line[i]) != 0;

		if (!keep) {
			c->unchanged++;
			continue;
		}
		/* Moved down in place: what is kept never lies after what is read next. */
		if (n)
			c->body[len++] = ',';
		memmove(c->body + len, c->body + off, rl);
		c->rec_off[n] = (uint32_t)len;
		c->rec_len[n] = rl;
		c->rec_line[n] = c->rec_line[i];
		c->rec_member[n] = c->rec_member[i];
		c->rec_key[n] = ks;
		len += rl;
		n++;
	}
	c->n_records = n;
	c->len = len;
	finish(c, p);
	return 0;
}

int record_cut_next(struct record_body *c, const struct cut_params *p, struct source *r,
	      struct record_check *v, cut_reject_fn reject, void *userdata)
{
	int rc;

	if ((rc = begin(c)) < 0)
		return rc;
	c->member = 0;
	rc = record_cut_fill(c, p, r, v, reject, userdata);
	if (rc < 0)
		return rc;
	record_cut_body_finish(c, p, rc == CUT_FILL_EOF);
	return 0;
}

int record_cut_body_part(struct record_body *dst, const struct record_body *src, const struct cut_params *p,
		uint32_t from, uint32_t to, bool last)
{
	int rc;

	if ((rc = begin(dst)) < 0)
		return rc;
	for (uint32_t i = from; i < to; i++) {
		dst->member = src->rec_member[i];
		if ((rc = add_record(dst, src->body + src->rec_off[i], src->rec_len[i], src->rec_line[i])) < 0)
			return rc;
	}
	dst->start_offset = src->start_offset;
	dst->end_offset = src->end_offset;
	dst->start_line = src->start_line;
	dst->end_line = src->end_line;
	dst->last = last;
	finish(dst, p);
	return 0;
}

void record_cut_body_reseal(struct record_body *c, const struct cut_params *p, bool last)
{
	uint32_t n = c->n_records;

	c->len = n ? c->rec_off[n - 1] + c->rec_len[n - 1] : sizeof(BODY_HEAD) - 1;
	c->last = last;
	finish(c, p);
}

int record_cut_body_single(struct record_body *dst, const struct cut_params *p, const char *data, size_t len, bool last)
{
	int rc;

	if ((rc = begin(dst)) < 0 || (rc = add_record(dst, data, len, 0)) < 0)
		return rc;
	dst->last = last;
	finish(dst, p);
	return 0;
}
