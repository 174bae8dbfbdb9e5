/* cututil: cut a whole test file into request bodies, for the unit tests of cut and request. */
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "record/record_cut.h"
#include "record/record_ndjson.h"
#include "record/record_source.h"

/*
 * Cut all of @path (NDJSON, primary key "id", lines up to @max_record bytes) with @p into at
 * most @max bodies, each record_cut_body_init'ed here; returns how many. Aborts on any error: a test's
 * setup that fails is no result.
 */
static inline size_t cut_file_into(const char *path, const struct cut_params *p, size_t max_record,
				   struct record_body *out, size_t max, cut_reject_fn reject, void *userdata)
{
	struct record_check *v;
	struct source *r = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;

	if (fd < 0 || record_source_open(&r, fd, "t.ndjson", NULL, 0, 1, max_record) < 0 ||
	    record_check_new(&v, "id", NULL, 0) < 0)
		abort();
	while (n < max) {
		if (record_cut_body_init(&out[n], p->max_records) < 0 || record_cut_next(&out[n], p, r, v, reject, userdata) < 0)
			abort();
		if (out[n++].last)
			break;
	}
	record_check_free(v);
	record_source_free(r);
	close(fd);
	return n;
}
