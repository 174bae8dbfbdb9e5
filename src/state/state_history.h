/* state_history: each connection's run history: one entry per file (or gathered group) that ended, kept in <state_dir>/history/. */
#pragma once
/*
 * Contract.
 * Owns: a connection's open history (struct history): the append fd of its file, the count of
 * entries in it and the (batch_uuid, outcome) of the last few, so that an end replayed after a
 * crash is recorded once. state_history_read hands out a malloc'd array the caller frees.
 * Borrows: @state_dir and @connection for state_history_open (copied); entries for the call.
 * May call: fileio, layout, crc32c, jsonstr, log, yajl. The connection
 * owns its history and writes it from the loop's thread; commands read it beside the daemon.
 *
 * The file, <state_dir>/history/<connection>.history, is append-only text: one line per entry,
 * "<CRC-32C of the JSON, 8 hex digits> <JSON object>\n". A line whose CRC does not check out, or
 * that has no line end (a write cut short), is never shown and never hides the lines before it;
 * the daemon cuts such a tail at open. Each entry is fdatasynced after its write: a power cut
 * may lose the entry being written, never one before it. The file is bounded: once it holds
 * twice the connection's history_entries, it is replaced atomically by its last history_entries.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>


enum history_outcome {
	HISTORY_ARCHIVED,       /* completed at the server; archived or deleted */
	HISTORY_FAILED,         /* moved to failed/ */
	HISTORY_HANDED_BACK,    /* nothing acknowledged: back to the spool (refused keys, a journal that lost its files) */
};

/* The names of a batch's files an entry keeps: the first ones, as many as fit. */
#define HISTORY_NAMES_BYTES 4096

struct history_entry {
	char connection[128];
	enum history_outcome outcome;
	long http_status;               /* of a failure; 0: none, or no answer */
	char reason[512];               /* why it failed or was handed back; "" for a plain success */
	char batch_uuid[37];
	uint32_t files;                 /* files the batch held */
	uint32_t names_kept;            /* of them named in names, in batch order */
	char names[HISTORY_NAMES_BYTES];        /* names_kept names, each ending in '\0' */
	uint64_t records_sent;          /* acknowledged by the server */
	uint64_t records_unchanged;     /* left out as unchanged since the last upload (0: not counted) */
	uint64_t records_rejected;      /* locally and by the server */
	uint64_t requests;              /* POSTs of this run, retries included */
	uint64_t retries;
	uint64_t bytes_read;            /* of the file(s) as dropped (compressed bytes of a .gz, .zst) */
	double started;                 /* Unix seconds: when this run took the batch (or resumed it) */
	double finished;
};

/* Add @name to @e's names (counted in files either way): false when it no longer fits. */
bool state_history_entry_add_name(struct history_entry *e, const char *name);
/* The @i-th kept name of @e (i < names_kept). */
const char *state_history_entry_name(const struct history_entry *e, uint32_t i);
const char *state_history_outcome_name(enum history_outcome o);

struct history;

/*
 * Open the history of @connection under @state_dir for appending (the directory and file are
 * made when missing). A torn tail is cut and logged. Errors of the file (permissions, a full or
 * read-only disk) are logged and not fatal: state_history_put tries again. 0 or -ENOMEM.
 */
int state_history_open(struct history **out, const char *state_dir, const char *connection);
void state_history_free(struct history *h);

/*
 * Record @e, keeping at least the last @keep entries (the connection's history_entries). An end
 * already recorded (the same batch_uuid and outcome among the last entries: a replay after a
 * crash) is not recorded again: 1. 0 when written, -errno when not (logged once until it works).
 */
int state_history_put(struct history *h, const struct history_entry *e, unsigned keep);

/*
 * The last @max (0: all) entries of @connection's history under @state_dir, oldest first, into
 * *@out (malloc'd; *@n of them; NULL when none). *@damaged (may be NULL) counts the complete
 * lines skipped because they do not check out. -ENOENT when there is no history yet.
 */
int state_history_read(const char *state_dir, const char *connection, size_t max, struct history_entry **out,
		 size_t *n, size_t *damaged);

/* @e as one line of text (names escaped as the log shows them), without the line end, into @out (@len bytes). */
void state_history_format_text(const struct history_entry *e, char *out, size_t len);
/* @e as one JSON object on @out, without the line end: the fields of dcsyncd(8). */
int state_history_print_json(const struct history_entry *e, FILE *out);

