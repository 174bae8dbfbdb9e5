/* decompress: a file read as a byte stream, plain or through zlib (gzip) or libzstd, in bounded memory. */
#include "record/record_decompress.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader: the window a refused frame asks for */
#include <zstd.h>
#include <zstd_errors.h>

#define IN_BLOCK (128 * 1024)
#define SKIP_BLOCK (64 * 1024)
/* 2^23 = 8 MiB: zstd levels 1-19 without --long never ask for more, and it is what the decoder holds
 * per connection; libzstd's own limit (2^27 = 128 MiB) would let one drop decide the daemon's memory. */
#define ZSTD_WINDOW_LOG_MAX 23

struct record_stream {
	int fd;
	enum compression comp;
	unsigned char *in;      /* compressed input */
	size_t in_len, in_pos;
	unsigned char *scratch; /* for skipping */
	bool file_eof;
	uint64_t file_start;    /* plain: the offset opened at */
	uint64_t file_read;     /* bytes read from the file */
	uint64_t out_total;     /* bytes of the stream handed out */
	z_stream z;
	bool z_init;
	ZSTD_DStream *zd;
	bool member_open;       /* a gzip member / zstd frame started and not ended */
	bool any_member;        /* one ended: a file without any is not a compressed file */
	char err[384];
};

const char *record_decompress_name(enum compression comp)
{
	return comp == COMPRESSION_GZIP ? "gzip" : comp == COMPRESSION_ZSTD ? "zstd" : "none";
}

int record_decompress_new(struct record_stream **out)
{
	struct record_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->fd = -1;
	*out = s;
	return 0;
}

void record_decompress_free(struct record_stream *s)
{
	if (!s)
		return;
	if (s->z_init)
		inflateEnd(&s->z);
	ZSTD_freeDStream(s->zd);
	free(s->in);
	free(s->scratch);
	free(s);
}

static void start(struct record_stream *s, int fd, enum compression comp)
{
	s->fd = fd;
	s->comp = comp;
	s->in_len = s->in_pos = 0;
	s->file_eof = false;
	s->file_start = s->file_read = s->out_total = 0;
	s->member_open = s->any_member = false;
	s->err[0] = '\0';
}

int record_decompress_open(struct record_stream *s, int fd, enum compression comp)
{
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	start(s, fd, comp);
	if (comp == COMPRESSION_NONE)
		return 0;
	if (!s->in && !(s->in = malloc(IN_BLOCK)))
		return -ENOMEM;
	if (comp == COMPRESSION_GZIP) {
		/* 15 + 16: a gzip wrapper only (a raw zlib stream named .gz would be a mistake to guess at). */
		if (!s->z_init) {
			memset(&s->z, 0, sizeof(s->z));
			if (inflateInit2(&s->z, 15 + 16) != Z_OK)
				return -ENOMEM;
			s->z_init = true;
		} else if (inflateReset(&s->z) != Z_OK) {
			return -EINVAL;
		}
		return 0;
	}
	if (!s->zd && !(s->zd = ZSTD_createDStream()))
		return -ENOMEM;
	if (ZSTD_isError(ZSTD_initDStream(s->zd)) ||
	    ZSTD_isError(ZSTD_DCtx_setParameter(s->zd, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX)))
		return -ENOMEM;
	return 0;
}

int record_decompress_open_plain_at(struct record_stream *s, int fd, off_t offset)
{
	if (lseek(fd, offset, SEEK_SET) < 0)
		return -errno;
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	start(s, fd, COMPRESSION_NONE);
	s->file_start = s->file_read = s->out_total = (uint64_t)offset;
	return 0;
}

static ssize_t read_fd(int fd, void *buf, size_t n)
{
	ssize_t r;

	do {
		r = read(fd, buf, n);
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

static int fill(struct record_stream *s)
{
	ssize_t r = read_fd(s->fd, s->in, IN_BLOCK);

	if (r < 0)
		return (int)r;
	s->in_pos = 0;
	s->in_len = (size_t)r;
	s->file_read += (uint64_t)r;
	s->file_eof = r == 0;
	return 0;
}

uint64_t record_decompress_file_offset(const struct record_stream *s)
{
	return s->file_read - (s->in_len - s->in_pos);
}

uint64_t record_decompress_offset(const struct record_stream *s)
{
	return s->out_total;
}

const char *record_decompress_error(const struct record_stream *s)
{
	return s->err[0] ? s->err : NULL;
}

static ssize_t fault(struct record_stream *s, bool early, const char *msg)
{
	if (early)
		snprintf(s->err, sizeof(s->err), "the %s data ends early at byte %" PRIu64 " of the file (truncated; %"
			 PRIu64 " bytes decompressed): %s", record_decompress_name(s->comp), record_decompress_file_offset(s),
			 s->out_total, msg);
	else
		snprintf(s->err, sizeof(s->err), "the %s data is corrupt at byte %" PRIu64 " of the file (%" PRIu64
			 " bytes decompressed): %s", record_decompress_name(s->comp), record_decompress_file_offset(s), s->out_total, msg);
	return -EBADMSG;
}

/* A frame refused for its window: say what it needs (the header is at from, when it was in this block). */
static ssize_t window_fault(struct record_stream *s, const unsigned char *from, size_t len)
{
	ZSTD_frameHeader h;
	unsigned long long mib = 0;

	if (ZSTD_getFrameHeader(&h, from, len) == 0)
		mib = (h.windowSize + (1ULL << 20) - 1) >> 20;
	if (mib)
		snprintf(s->err, sizeof(s->err), "the zstd frame at byte %" PRIu64 " of the file needs a window of %llu "
			 "MiB, more than the %u MiB dcsyncd allows (compress without --long, or with --long=%u or less)",
			 record_decompress_file_offset(s), mib, 1U << (ZSTD_WINDOW_LOG_MAX - 20), ZSTD_WINDOW_LOG_MAX);
	else
		snprintf(s->err, sizeof(s->err), "a zstd frame in the file needs a window of more than the %u MiB "
			 "dcsyncd allows (compress without --long, or with --long=%u or less)",
			 1U << (ZSTD_WINDOW_LOG_MAX - 20), ZSTD_WINDOW_LOG_MAX);
	return -EBADMSG;
}

/* One step of the decompressor: bytes produced (maybe 0), or -EBADMSG. */
static ssize_t step(struct record_stream *s, void *buf, size_t n)
{
	size_t produced;

	if (s->comp == COMPRESSION_GZIP) {
		int ret;

		if (!s->member_open && s->any_member && inflateReset(&s->z) != Z_OK)
			return fault(s, false, "cannot reset the decompressor");
		s->member_open = true;
		s->z.next_in = s->in + s->in_pos;
		s->z.avail_in = (uInt)(s->in_len - s->in_pos);
		s->z.next_out = buf;
		s->z.avail_out = (uInt)(n > UINT32_MAX ? UINT32_MAX : n);
		ret = inflate(&s->z, Z_NO_FLUSH);
		produced = (n > UINT32_MAX ? UINT32_MAX : n) - s->z.avail_out;
		s->in_pos = s->in_len - s->z.avail_in;
		if (ret == Z_STREAM_END) {
			s->member_open = false;
			s->any_member = true;
		} else if (ret != Z_OK && ret != Z_BUF_ERROR) {
			s->out_total += produced;       /* decompressed, though not handed out */
			return fault(s, false, s->z.msg ? s->z.msg : zError(ret));
		}
	} else {
		ZSTD_inBuffer in = { s->in + s->in_pos, s->in_len - s->in_pos, 0 };
		ZSTD_outBuffer out = { buf, n, 0 };
		size_t ret = ZSTD_decompressStream(s->zd, &out, &in);

		size_t from = s->in_pos;

		s->in_pos += in.pos;
		produced = out.pos;
		if (ZSTD_isError(ret) && ZSTD_getErrorCode(ret) == ZSTD_error_frameParameter_windowTooLarge)
			return window_fault(s, s->in + from, s->in_len - from);
		if (ZSTD_isError(ret))
			return fault(s, false, ZSTD_getErrorName(ret));
		s->member_open = ret != 0;
		s->any_member |= ret == 0;
	}
	return (ssize_t)produced;
}

ssize_t record_decompress_read(struct record_stream *s, void *buf, size_t n)
{
	ssize_t r;

	if (s->err[0])
		return -EBADMSG;
	if (!n)
		return 0;
	if (s->comp == COMPRESSION_NONE) {
		r = read_fd(s->fd, buf, n);
		if (r > 0) {
			s->file_read += (uint64_t)r;
			s->out_total += (uint64_t)r;
		}
		return r;
	}
	for (;;) {
		bool had_input;

		if (s->in_pos == s->in_len && !s->file_eof && (r = fill(s)) < 0)
			return r;
		had_input = s->in_pos < s->in_len;
		if (!had_input && s->file_eof && !s->member_open) {
			if (!s->any_member)
				return fault(s, true, "no compressed data in the file");
			return 0;
		}
		/* An ended member followed by the end of the file: nothing to start. */
		r = step(s, buf, n);
		if (r < 0)
			return r;
		if (r > 0) {
			s->out_total += (uint64_t)r;
			return r;
		}
		if (!had_input && s->file_eof && s->member_open)
			return fault(s, true, "the file ends inside the compressed stream");
	}
}

void record_decompress_read_on(struct record_stream *s)
{
	s->file_eof = false;
}

int record_decompress_skip(struct record_stream *s, uint64_t n)
{
	if (s->comp == COMPRESSION_NONE) {
		if (lseek(s->fd, (off_t)(s->out_total + n), SEEK_SET) < 0)
			return -errno;
		s->out_total += n;
		s->file_read += n;
		return 0;
	}
	if (!s->scratch && !(s->scratch = malloc(SKIP_BLOCK)))
		return -ENOMEM;
	while (n) {
		ssize_t r = record_decompress_read(s, s->scratch, n < SKIP_BLOCK ? (size_t)n : SKIP_BLOCK);

		if (r < 0)
			return (int)r;
		if (r == 0)
			return -ENODATA;    /* shorter than the journal says: not the file it was */
		n -= (uint64_t)r;
	}
	return 0;
}
