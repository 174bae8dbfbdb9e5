/*
 * fuzz-csv: the CSV/TSV reader over a memfd: rows and rejections in file order, offsets inside
 * the file, line numbers rising, every record a JSON object and every rejection with its text.
 *
 * Input: two header bytes, then the file.
 *   [0] bit 0: tab-separated (else comma); bits 1-2: csv_empty (left out, null, "").
 *   [1] max_record_bytes - 16: small, so rows too long to keep (and stray quotes that run past
 *       the bound) are common.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <yajl/yajl_tree.h>

#include "record/record_csv.h"
#include "record/record_decompress.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A record the reader made must be one JSON object: what the API is sent. */
static void check_object(const char *rec, size_t len)
{
	char *copy = malloc(len + 1);
	yajl_val v;

	CHECK(copy);
	memcpy(copy, rec, len);
	copy[len] = '\0';
	v = yajl_tree_parse(copy, NULL, 0);
	CHECK(v && YAJL_IS_OBJECT(v));
	yajl_tree_free(v);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct csv_options o = { .primary_key = "" };
	struct record_stream *st = NULL;
	struct csv_reader *r = NULL;
	struct ndjson_line ln;
	uint64_t lineno = 0;
	off_t last = 0;
	char delim;
	int fd;

	if (size < 2)
		return 0;
	delim = data[0] & 1 ? '\t' : ',';
	o.empty = (enum csv_empty)((data[0] >> 1 & 3) % 3);
	CHECK(record_csv_reader_new(&r, 16 + (size_t)data[1]) == 0);
	data += 2;
	size -= 2;
	CHECK((fd = memfd_create("fuzz-csv", MFD_CLOEXEC)) >= 0);
	CHECK(write(fd, data, size) == (ssize_t)size && lseek(fd, 0, SEEK_SET) == 0);
	CHECK(record_decompress_new(&st) == 0 && record_decompress_open(st, fd, COMPRESSION_NONE) == 0);
	/* A header that cannot be one fails the file: nothing to check after it. */
	if (record_csv_reader_open(r, st, delim, &o, 0, 1) == 0) {
		while (record_csv_reader_next(r, &ln) == 1) {
			CHECK(ln.start_offset >= last && ln.end_offset > ln.start_offset && ln.end_offset <= (off_t)size);
			CHECK(ln.lineno > lineno);
			if (ln.error)
				CHECK(ln.data || !ln.len);      /* a rejection keeps its text (or a bounded head) */
			else if (!ln.too_long)
				check_object(ln.data, ln.len);
			last = ln.end_offset;
			lineno = ln.lineno;
		}
	}
	record_csv_reader_free(r);
	record_decompress_free(st);
	close(fd);
	return 0;
}
