/*
 * fuzz-ndjson: the NDJSON reader over a memfd, against a line splitter written for the purpose,
 * and the record validator on every line it returns.
 *
 * Input: three header bytes, then the file.
 *   [0] max_record_bytes - 1 (low 6 bits): small, so over-long lines are common.
 *   [1] bits 0-2: each read() returns at most 2^(n-1) bytes, pages when padded (0: no limit);
 *       bit 3: pad the file past the reader's buffer (see pad below);
 *       bit 4: attach a field catalog to the validator;
 *       bit 5: hand every line back once (unget) and read it again.
 *   [2] where and with what the padding goes, and which line a second reader resumes after.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "record/record_check.h"
#include "record/record_ndjson.h"
#include "state/state_catalog.h"
#include "fuzz-util.h"

/*
 * record_ndjson.c's READ_BLOCK: the reader's buffer holds max_record_bytes + READ_BLOCK + 1 bytes, and a
 * line that fills it without a newline is skipped unread. If record_ndjson.c changes it, change it here:
 * the splitter below then disagrees on lines of about that length and the fuzzer says so.
 */
#define READ_BLOCK (256 * 1024)

static int memfd = -1;
static size_t read_chunk;       /* 0: no limit */

/* Linked with -Wl,--wrap=read: short reads on the memfd, as from a slow disk or a pipe. */
ssize_t __real_read(int fd, void *buf, size_t count);
ssize_t __wrap_read(int fd, void *buf, size_t count);

ssize_t __wrap_read(int fd, void *buf, size_t count)
{
	if (fd == memfd && read_chunk && count > read_chunk)
		count = read_chunk;
	return __real_read(fd, buf, count);
}

struct ref_line {
	size_t data, len;       /* trimmed, in the file */
	uint64_t lineno;
	size_t start, end;
	bool too_long;
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* What the reader must return: its contract in record_ndjson.h, in the simplest terms. */
static size_t split(const char *d, size_t n, size_t max_record, struct ref_line *out)
{
	size_t cap = max_record + READ_BLOCK + 1, k = 0;
	uint64_t lineno = 1;
	/* A UTF-8 byte order mark at offset 0 is not part of line 1. */
	size_t first = n >= 3 && !memcmp(d, "\xEF\xBB\xBF", 3) ? 3 : 0;

	for (size_t pos = first; pos < n; lineno++) {
		const char *nl = memchr(d + pos, '\n', n - pos);
		size_t raw_end = nl ? (size_t)(nl - d) : n, next = nl ? raw_end + 1 : n;
		size_t ls = pos, le = raw_end;

		if (raw_end - pos >= cap) {
			out[k++] = (struct ref_line){ .lineno = lineno, .start = pos, .end = next, .too_long = true };
			pos = next;
			continue;
		}
		while (ls < le && is_blank(d[ls]))
			ls++;
		while (le > ls && is_blank(d[le - 1]))
			le--;
		if (le > ls)
			out[k++] = (struct ref_line){ .data = ls, .len = le - ls, .lineno = lineno, .start = pos,
						      .end = next, .too_long = le - ls > max_record };
		pos = next;
	}
	return k;
}

static void check_line(const char *file, const struct ndjson_line *got, const struct ref_line *want)
{
	CHECK(got->lineno == want->lineno);
	CHECK(got->start_offset == (off_t)want->start);
	CHECK(got->end_offset == (off_t)want->end);
	CHECK(got->too_long == want->too_long);
	if (want->too_long) {
		CHECK(!got->data && !got->len);
		return;
	}
	CHECK(got->len == want->len && !memcmp(got->data, file + want->data, want->len));
}

static void validate(struct record_check *v, const struct ndjson_line *l)
{
	char reason[256];
	int r;

	memset(reason, 'x', sizeof(reason));
	r = record_check_one(v, l->data, l->len, reason, sizeof(reason));
	CHECK(memchr(reason, '\0', sizeof(reason)));
	if (r == 0) {
		CHECK(reason[0] == '\0');
		/* A record is one object: the reader trimmed the blanks around it. */
		CHECK(l->data[0] == '{' && l->data[l->len - 1] == '}');
	} else {
		CHECK(r == -EINVAL && reason[0]);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz-ndjson", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *const required[] = { "a", "b" };
	static const char fillers[] = { 'x', ' ', '\r', '\t' };
	size_t max_record, n_file, n_ref = 1, i, resume;
	struct ndjson_reader *r = NULL;
	struct record_check *v = NULL;
	struct catalog *cat = NULL;
	struct ref_line *ref;
	struct ndjson_line line;
	uint8_t flags, where;
	char *file;
	int got;

	if (size < 3)
		return 0;
	max_record = (size_t)(data[0] & 63) + 1;
	flags = data[1];
	where = data[2];
	data += 3;
	size -= 3;
	/* Short reads through a padded file: in pages, or 256 KiB cost as many system calls. */
	read_chunk = flags & 7 ? (size_t)1 << ((flags & 7) - 1) : 0;
	if (flags & 8)
		read_chunk *= 4096;

	/*
	 * Padding: a run of one filler byte, as long as the reader's buffer give or take a few,
	 * spliced in at a point the input picks: lines that fill the buffer exactly or just
	 * overflow it are where the reader changes method.
	 */
	n_file = size;
	if (flags & 8)
		n_file += max_record + READ_BLOCK + 1 + (where & 7) - 4;
	file = malloc(n_file ? n_file : 1);
	CHECK(file);
	if (flags & 8) {
		size_t at = size ? (size_t)(where >> 3) * size / 32 : 0, pad = n_file - size;

		memcpy(file, data, at);
		memset(file + at, fillers[(where >> 3) & 3], pad);
		memcpy(file + at + pad, data + at, size - at);
	} else if (size) {
		memcpy(file, data, size);
	}
	/* memchr, not a loop: the fuzzer's comparison hooks would make 256 KiB of padding slow. */
	for (const char *p = file, *e = file + n_file; (p = memchr(p, '\n', (size_t)(e - p))); p++)
		n_ref++;
	ref = malloc(n_ref * sizeof(*ref));
	CHECK(ref);
	n_ref = split(file, n_file, max_record, ref);

	CHECK(ftruncate(memfd, 0) == 0);
	CHECK(pwrite(memfd, file, n_file, 0) == (ssize_t)n_file);
	CHECK(record_ndjson_reader_new(&r, memfd, 0, 1, max_record) == 0);
	CHECK(record_check_new(&v, "id", required, 2) == 0);
	if (flags & 16) {
		CHECK(state_catalog_new(&cat, 8) == 0);
		record_check_set_catalog(v, cat);
	}
	for (i = 0; (got = record_ndjson_reader_next(r, &line)) == 1; i++) {
		CHECK(i < n_ref);
		check_line(file, &line, &ref[i]);
		if ((flags & 32) && !line.too_long) {
			record_ndjson_reader_unget(r);
			CHECK(record_ndjson_reader_offset(r) == line.start_offset);
			CHECK(record_ndjson_reader_lineno(r) == line.lineno);
			CHECK(record_ndjson_reader_next(r, &line) == 1);
			check_line(file, &line, &ref[i]);
		}
		CHECK(record_ndjson_reader_offset(r) == (off_t)ref[i].end);
		CHECK(record_ndjson_reader_lineno(r) == ref[i].lineno + 1);
		if (!line.too_long)
			validate(v, &line);
	}
	CHECK(got == 0 && i == n_ref);
	CHECK(record_ndjson_reader_next(r, &line) == 0);

	/* Resuming after a line, as a restart does from the journal, returns the rest the same. */
	if (n_ref) {
		resume = where % n_ref;
		CHECK(record_ndjson_reader_reset(r, memfd, (off_t)ref[resume].end, ref[resume].lineno + 1) == 0);
		for (i = resume + 1; (got = record_ndjson_reader_next(r, &line)) == 1; i++) {
			CHECK(i < n_ref);
			check_line(file, &line, &ref[i]);
		}
		CHECK(got == 0 && i == n_ref);
	}
	if (cat) {
		CHECK(state_catalog_count(cat) <= 8);
		state_catalog_free(cat);
	}
	record_check_free(v);
	record_ndjson_reader_free(r);
	free(ref);
	free(file);
	return 0;
}
