/* reject: lines refused locally or by the server, held as the JSON lines of a rejected file until their batch is durable. */
#pragma once
/*
 * Contract. A struct record_rejects is its holder's (a body's in the pipeline, a file's in the batch, the
 * request's last acknowledged record): buf grows with realloc and the holder frees it. No other state. May call: jsonstr, libc. Never
 * logs or writes a file: the batch appends the lines to rejected/ once its journal is durable.
 */

#include <stddef.h>
#include <stdint.h>

/* One line per rejected record: {"line":N,"error":"...","record":"..."}. The owner frees buf. */
struct record_rejects {
	char *buf;
	size_t len, cap;
	uint64_t first_line, last_line;  /* of the lines held, for the log */
};

/* Rejected lines a request's range may hold in memory before the range is ended early. */
#define REJECT_BUFFER_MAX (256 * 1024)

/* Add line @lineno, refused for @reason (@data NULL: a line too long to keep). 0 or -ENOMEM. */
int record_reject_add(struct record_rejects *rb, uint64_t lineno, const char *reason, const char *data, size_t len);
/* A cut_reject_fn over a struct record_rejects: asks the cut to end its range once REJECT_BUFFER_MAX is held. */
int record_reject_on_reject(void *record_rejects, uint64_t lineno, const char *reason, const char *data, size_t len);
/* Forget the lines held; the buffer is kept for the next ones. */
void record_reject_reset(struct record_rejects *rb);
