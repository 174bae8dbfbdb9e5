/* decompress: a file read as a byte stream, plain or through zlib (gzip) or libzstd, in bounded memory. */
#pragma once
/*
 * Contract.
 * Owns: its zlib / zstd state and its input and skip buffers, kept from one open to the next.
 * Borrows: the fd, from record_decompress_open* to the next open or record_decompress_free; it moves the fd's
 * offset but never closes it.
 * May call: zlib, libzstd, libc; no other module and no log: a fault is -EBADMSG with
 * record_decompress_error, for the caller to name the file.
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum compression {
	COMPRESSION_NONE,
	COMPRESSION_GZIP,
	COMPRESSION_ZSTD,
};

struct record_stream;

int record_decompress_new(struct record_stream **out);
void record_decompress_free(struct record_stream *s);
/* Read @fd from its start (0) through @comp; the stream's bytes are numbered from 0. */
int record_decompress_open(struct record_stream *s, int fd, enum compression comp);
/* Read @fd as is from file offset @offset: a plain file can be entered anywhere. */
int record_decompress_open_plain_at(struct record_stream *s, int fd, off_t offset);
/*
 * Up to @n bytes of the (decompressed) stream into @buf: the count, 0 at its clean end, or a
 * negative errno: -EBADMSG when the compressed data is corrupt or ends early (then
 * record_decompress_error says where and what the decompressor said), another on a read error.
 * A gzip file may hold several members and a zstd file several frames, as their tools write.
 */
ssize_t record_decompress_read(struct record_stream *s, void *buf, size_t n);
/* After the clean end: look at the file again (it grew), reading on where the stream stood. */
void record_decompress_read_on(struct record_stream *s);
/* Read and drop @n bytes: how a compressed stream is entered in the middle. */
int record_decompress_skip(struct record_stream *s, uint64_t n);
/* Bytes of the file consumed so far (for a plain file: its offset). */
uint64_t record_decompress_file_offset(const struct record_stream *s);
/* Bytes of the stream handed out so far, from 0 (or the plain offset opened at). */
uint64_t record_decompress_offset(const struct record_stream *s);
/* The last -EBADMSG, e.g. "compressed data corrupt at byte 4096 of the file: gzip: invalid block type". */
const char *record_decompress_error(const struct record_stream *s);
const char *record_decompress_name(enum compression comp);
