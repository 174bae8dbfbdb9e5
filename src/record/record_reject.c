/* reject: lines refused locally or by the server, held as the JSON lines of a rejected file until their batch is durable. */
#include "record/record_reject.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/jsonstr.h"

/* Bytes kept of a rejected line that is not plain text (see plain_text): enough to recognise it. */
#define REJECT_BINARY_KEEP 256

/* Text a person reads: valid UTF-8 without control characters (tab aside); the others escape sixfold. */
static bool plain_text(const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)data[i];

		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return false;
	}
	return jsonstr_is_text(data, len);
}

int record_reject_add(struct record_rejects *rb, uint64_t lineno, const char *reason, const char *data, size_t len)
{
	char head[64];
	size_t keep = len;
	int r;

	/* A binary line (control characters, DEL included) would grow sixfold escaped: keep its start,
	 * and say how long it was. */
	if (data && len > REJECT_BINARY_KEEP && !plain_text(data, len))
		keep = REJECT_BINARY_KEEP;
	snprintf(head, sizeof(head), "{\"line\":%" PRIu64 ",\"error\":", lineno);
	if ((r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, head, strlen(head))) < 0 ||
	    (r = jsonstr_append(&rb->buf, &rb->len, &rb->cap, reason, strlen(reason))) < 0 ||
	    (r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, ",\"record\":", 10)) < 0)
		return r;
	if (data)
		r = jsonstr_append(&rb->buf, &rb->len, &rb->cap, data, keep);
	else
		r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, "null", 4);
	if (r == 0 && keep < len) {
		snprintf(head, sizeof(head), ",\"truncated\":true,\"bytes\":%zu", len);
		r = jsonstr_raw(&rb->buf, &rb->len, &rb->cap, head, strlen(head));
	}
	if (r < 0)
		return r;
	if (!rb->first_line || lineno < rb->first_line)
		rb->first_line = lineno;
	if (lineno > rb->last_line)
		rb->last_line = lineno;
	return jsonstr_raw(&rb->buf, &rb->len, &rb->cap, "}\n", 2);
}

int record_reject_on_reject(void *record_rejects, uint64_t lineno, const char *reason, const char *data, size_t len)
{
	struct record_rejects *rb = record_rejects;
	int r = record_reject_add(rb, lineno, reason, data, len);

	if (r < 0)
		return r;
	return rb->len >= REJECT_BUFFER_MAX ? 1 : 0;
}

void record_reject_reset(struct record_rejects *rb)
{
	rb->len = 0;
	rb->first_line = rb->last_line = 0;
}
