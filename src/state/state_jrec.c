/* state_jrec: the journal's on-disk records: framing, encoding and checked decoding; no I/O. */
#include "state/state_jrec.h"

#include <errno.h>
#include <string.h>

#include "util/crc32c.h"

struct rbuf {
	const unsigned char *b;
	size_t n, pos;
	bool bad;
};

static void w_u64(struct jrec_buf *w, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		w->b[w->n++] = (unsigned char)(v >> (8 * i));
}

static void w_str(struct jrec_buf *w, const char *s)
{
	size_t n = strlen(s);

	w_u64(w, n);
	memcpy(w->b + w->n, s, n);
	w->n += n;
}

static uint64_t r_u64(struct rbuf *r)
{
	uint64_t v = 0;

	if (r->pos + 8 > r->n) {
		r->bad = true;
		return 0;
	}
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)r->b[r->pos++] << (8 * i);
	return v;
}

static void r_str(struct rbuf *r, char *dst, size_t cap)
{
	uint64_t n = r_u64(r);

	if (r->bad || n >= cap || r->pos + n > r->n) {
		r->bad = true;
		dst[0] = '\0';
		return;
	}
	memcpy(dst, r->b + r->pos, n);
	dst[n] = '\0';
	r->pos += n;
}

/* A file's identity: device, inode, size, mtime (ns). */
static void w_ident(struct jrec_buf *w, const struct file_identity *id)
{
	w_u64(w, id->dev);
	w_u64(w, id->ino);
	w_u64(w, id->size);
	w_u64(w, (uint64_t)id->mtime_ns);
}

static void r_ident(struct rbuf *r, struct file_identity *id)
{
	id->dev = r_u64(r);
	id->ino = r_u64(r);
	id->size = r_u64(r);
	id->mtime_ns = (int64_t)r_u64(r);
}

void state_jrec_batch(struct jrec_buf *w, const struct journal_batch *b)
{
	w->n = 0;
	w->b[w->n++] = JREC_BATCH;
	w_u64(w, b->id);
	w_u64(w, (uint64_t)b->state);
	w_str(w, b->uuid);
	w_str(w, b->connection);
	w_str(w, b->name);
	w_u64(w, b->cut_records);
	w_u64(w, b->cut_bytes);
	w_u64(w, b->acks);
	w_u64(w, b->offset);
	w_u64(w, b->lineno);
	w_u64(w, b->records);
	w_u64(w, b->rejected);
	w_u64(w, b->rejected_size);
	w_u64(w, (uint64_t)b->updated);
	w_u64(w, b->n_members);
	w_u64(w, b->csv_opts);
	w_u64(w, b->decided);
	w_u64(w, b->resend);
	w_u64(w, (uint64_t)b->ttl);
	w_u64(w, b->dest);      /* last: tests/test_crash.py's without_destinations zeroes it there */
}

void state_jrec_member(struct jrec_buf *w, const struct journal_member *m)
{
	w->n = 0;
	w->b[w->n++] = JREC_MEMBER;
	w_u64(w, m->batch_id);
	w_u64(w, m->file_id);
	w_u64(w, m->index);
	w_str(w, m->name);
	w_ident(w, &m->ident);
	w_u64(w, m->rejected_size);
}

static int decode_member(struct rbuf *r, struct journal_member *m)
{
	memset(m, 0, sizeof(*m));
	m->batch_id = r_u64(r);
	m->file_id = r_u64(r);
	m->index = (uint32_t)r_u64(r);
	r_str(r, m->name, sizeof(m->name));
	r_ident(r, &m->ident);
	m->rejected_size = r_u64(r);
	return r->bad || m->file_id > JREC_ID_MAX ? -EINVAL : 0;
}

static int decode_batch(struct rbuf *r, struct journal_batch *b)
{
	memset(b, 0, sizeof(*b));
	b->id = r_u64(r);
	b->state = (enum batch_state)r_u64(r);
	r_str(r, b->uuid, sizeof(b->uuid));
	r_str(r, b->connection, sizeof(b->connection));
	r_str(r, b->name, sizeof(b->name));
	b->cut_records = (uint32_t)r_u64(r);
	b->cut_bytes = r_u64(r);
	b->acks = (uint32_t)r_u64(r);
	b->offset = r_u64(r);
	b->lineno = r_u64(r);
	b->records = r_u64(r);
	b->rejected = r_u64(r);
	b->rejected_size = r_u64(r);
	b->updated = (int64_t)r_u64(r);
	b->n_members = (uint32_t)r_u64(r);
	b->csv_opts = r_u64(r);
	b->decided = r_u64(r);
	b->resend = r_u64(r);
	b->ttl = (int64_t)r_u64(r);
	b->dest = r_u64(r);
	if (r->bad || b->id > JREC_ID_MAX || b->state < BATCH_OPEN || b->state > BATCH_RELEASED || !b->n_members)
		return -EINVAL;
	return 0;
}

void state_jrec_meta(struct jrec_buf *w, uint64_t next_id)
{
	w->n = 0;
	w->b[w->n++] = JREC_META;
	w_u64(w, next_id);
}

void state_jrec_frame(unsigned char hdr[8], const struct jrec_buf *w)
{
	uint32_t len = (uint32_t)w->n, crc = crc32c(0, w->b, w->n);

	for (int i = 0; i < 4; i++) {
		hdr[i] = (unsigned char)(len >> (8 * i));
		hdr[4 + i] = (unsigned char)(crc >> (8 * i));
	}
}

bool state_jrec_at(const unsigned char *data, size_t n, size_t pos, bool exact, struct jrec *rec, uint32_t *len_out)
{
	uint32_t len = 0, crc = 0;
	struct rbuf rb;
	int r;

	if (pos + 8 > n)
		return false;
	for (unsigned i = 0; i < 4; i++) {
		len |= (uint32_t)data[pos + i] << (8 * i);
		crc |= (uint32_t)data[pos + 4 + i] << (8 * i);
	}
	if (len < JREC_MIN || len > JREC_MAX || len > n - pos - 8 || crc32c(0, data + pos + 8, len) != crc)
		return false;
	rb = (struct rbuf){ .b = data + pos + 9, .n = len - 1 };
	rec->type = data[pos + 8];
	switch (rec->type) {
	case JREC_META:
		rec->u.next_id = r_u64(&rb);
		r = rb.bad || rec->u.next_id > JREC_ID_MAX + 1 ? -EINVAL : 0;
		break;
	case JREC_MEMBER:
		r = decode_member(&rb, &rec->u.m);
		break;
	case JREC_BATCH:
		r = decode_batch(&rb, &rec->u.b);
		break;
	default:
		return false;
	}
	if (r < 0 || (exact && rb.pos != rb.n))
		return false;
	*len_out = len;
	return true;
}
