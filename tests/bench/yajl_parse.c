/* yajl_parse: the "bare parse" baseline for dcsyncd benchmarks.
 *
 * Usage: yajl_parse FILE
 *
 * Reads an NDJSON file in 256 KiB blocks, as the daemon does, and parses every non-blank line
 * with yajl with no callbacks, one yajl handle per line (yajl_alloc, yajl_parse,
 * yajl_complete_parse, yajl_free), as the daemon does. Prints one line:
 *   lines=N errors=E bytes=B user=U sys=S cpu=U+S wall=W
 * (CPU seconds from getrusage, wall seconds from CLOCK_MONOTONIC). That is the least CPU any
 * validating reader built on yajl can spend on the file; the daemon's CPU is compared with it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <yajl/yajl_parse.h>

#define READ_BLOCK (256 * 1024)
#define MAX_LINE (1024 * 1024)

static uint64_t lines, errors;

static void parse_line(const char *p, size_t n)
{
	yajl_handle h;
	yajl_status s;

	while (n && (*p == ' ' || *p == '\t' || *p == '\r'))
		p++, n--;
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r'))
		n--;
	if (!n)
		return;
	lines++;
	h = yajl_alloc(NULL, NULL, NULL);
	if (!h) {
		errors++;
		return;
	}
	s = yajl_parse(h, (const unsigned char *)p, n);
	if (s == yajl_status_ok)
		s = yajl_complete_parse(h);
	if (s != yajl_status_ok)
		errors++;
	yajl_free(h);
}

static double seconds(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	size_t cap = MAX_LINE + READ_BLOCK, start = 0, end = 0;
	uint64_t bytes = 0;
	struct timespec t0, t1;
	struct rusage ru;
	char *buf;
	int fd;

	if (argc != 2) {
		fputs("Usage: yajl_parse FILE\n", stderr);
		return 2;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "yajl_parse: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	buf = malloc(cap);
	if (!buf)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		ssize_t n;
		char *nl;

		if (start > 0) {
			memmove(buf, buf + start, end - start);
			end -= start;
			start = 0;
		}
		if (cap - end < READ_BLOCK) {
			/* A line longer than MAX_LINE: the daemon rejects it unparsed; so do we. */
			errors++;
			end = 0;
		}
		n = read(fd, buf + end, READ_BLOCK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "yajl_parse: read: %s\n", strerror(errno));
			return 1;
		}
		if (n == 0)
			break;
		bytes += (uint64_t)n;
		end += (size_t)n;
		while ((nl = memchr(buf + start, '\n', end - start))) {
			parse_line(buf + start, (size_t)(nl - (buf + start)));
			start = (size_t)(nl - buf) + 1;
		}
	}
	if (end > start)
		parse_line(buf + start, end - start);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &ru);
	printf("lines=%" PRIu64 " errors=%" PRIu64 " bytes=%" PRIu64 " user=%.3f sys=%.3f cpu=%.3f wall=%.3f\n", lines,
	       errors, bytes, seconds(ru.ru_utime), seconds(ru.ru_stime), seconds(ru.ru_utime) + seconds(ru.ru_stime),
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	free(buf);
	close(fd);
	return errors ? 1 : 0;
}
