/* state_counters: what a connection counts as it runs, for the status line, the metrics file and `dcsyncd status`. */
#pragma once
/*
 * The connection owns its struct conn_stats; its batch and request borrow it to count what
 * they do, on the loop's thread only; the daemon's status line and metrics read it through
 * connection_stats. Nothing here survives a restart: that is <state_dir>/totals (state_totals.h).
 */
#include <stdint.h>

/* by_status's last slot, once 15 distinct statuses came: every further one, never relabelled. */
#define STATUS_OTHER (-1L)

struct conn_stats {
	uint64_t files_done;
	uint64_t files_failed;
	uint64_t files_refused;         /* not regular files under a drop's name, or unreadable */
	uint64_t files_released;        /* handed back to the spool untouched (keys refused) */
	uint64_t records_sent;
	uint64_t records_rejected;
	uint64_t records_unchanged;     /* left out by skip_unchanged: the API holds them */
	uint64_t requests;
	uint64_t retries;
	uint64_t bytes_sent;
	uint64_t rate_waits;            /* requests that waited for the client-side rate limit */
	struct {
		long status;            /* HTTP status, 0: no response, STATUS_OTHER: the last slot's overflow */
		uint64_t requests;
		uint64_t records;
	} by_status[16];
	int64_t oldest_queued_ns;       /* mtime of the oldest queued file, 0: none */
	double last_success;            /* ev_now of the last 2xx, 0 if none */
	double last_error_time;
	long last_error_status;
	/* the batch in flight */
	char file[256];
	uint64_t file_records;          /* acknowledged so far */
	uint64_t file_size;
	uint64_t file_offset;
};
