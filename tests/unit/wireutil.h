/* wireutil: what a request body sent on a recorded wire held, for the unit tests that replace wire_upload_client_send. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

/* One body as the server would read it: its envelope and the ids of its records. */
struct sent {
	size_t len;
	unsigned n;             /* records in "data" */
	long first, last;       /* their ids */
	bool contiguous;        /* ids first..last, each once, in order */
	bool completed;         /* batch_completed:true */
	bool envelope_ok;       /* parses, with "data", "batch_uuid" and "batch_completed" */
	char uuid[40];          /* its batch_uuid */
};

static inline void parse_sent(struct sent *s, const char *body, size_t len)
{
	static const char *data_path[] = { "data", NULL }, *uuid_path[] = { "batch_uuid", NULL },
			  *done_path[] = { "batch_completed", NULL }, *id_path[] = { "id", NULL };
	char *z = malloc(len + 1), err[256];
	yajl_val v, data, uuid, done;

	if (!z)
		abort();
	memcpy(z, body, len);
	z[len] = '\0';
	v = yajl_tree_parse(z, err, sizeof(err));
	free(z);
	*s = (struct sent){ .len = len, .first = -1, .last = -1, .contiguous = true };
	data = yajl_tree_get(v, data_path, yajl_t_array);
	uuid = yajl_tree_get(v, uuid_path, yajl_t_string);
	done = yajl_tree_get(v, done_path, yajl_t_any);
	s->envelope_ok = data && uuid && done && uuid->u.string;
	if (s->envelope_ok)
		snprintf(s->uuid, sizeof(s->uuid), "%s", uuid->u.string);
	s->completed = done && YAJL_IS_TRUE(done);
	for (size_t i = 0; data && i < YAJL_GET_ARRAY(data)->len; i++) {
		yajl_val id = yajl_tree_get(YAJL_GET_ARRAY(data)->values[i], id_path, yajl_t_number);
		long x = id ? (long)YAJL_GET_INTEGER(id) : -1;

		if (s->n == 0)
			s->first = x;
		else if (x != s->last + 1)
			s->contiguous = false;
		s->last = x;
		s->n++;
	}
	yajl_tree_free(v);
}
