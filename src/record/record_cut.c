/* cut: cut a file's valid records into request bodies of at most N records and B bytes. */
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
	if (!c->rec_off || !c->rec_len || !c->rec_line || !c->rec_member) {
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

void record_cut_body_truncate(struct record_body *c, size_t len, uint32_t n_records)
{
	c->len = len;
	c->n_records = n_records;
}

int record_cut_fill(struct record_body *c, const struct cut_params *p, struct source *r,
	       struct record_check *v, cut_reject_fn reject, void *userdata)
{
	struct ndjson_line ln;
	char reason[256];
	int rc;

	c->start_offset = c->end_offset = record_source_offset(r);
	c->start_line = c->end_line = record_source_lineno(r);
	c->rejected = 0;
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
		if ((rc = add_record(c, ln.data, ln.len, ln.lineno)) < 0)
			return rc;
		c->end_offset = ln.end_offset;
		c->end_line = ln.lineno + 1;
	}
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
