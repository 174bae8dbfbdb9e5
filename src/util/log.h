/* log: leveled messages to stderr ("level: message") or to journald with structured fields. */
#pragma once
/*
 * Contract.
 * Owns: the threshold and the choice of stderr or journald: process-wide, set from the loop's
 * thread (start, reload) and never from a worker.
 * Borrows: @ctx and its strings for the call.
 * May call: libc and sd_journal_sendv; no other module, so every module may call it. Control
 * bytes in the message and in ctx->file come out as \xHH: file names come from exporters.
 */

#include <stdarg.h>
#include <stddef.h>

enum log_level {
	LOG_LVL_ERROR,
	LOG_LVL_WARNING,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

/* Structured context attached to a message; any member may be NULL / negative. */
struct log_ctx {
	const char *connection;
	const char *file;
	const char *batch_uuid;
	long http_status;       /* < 0: absent */
	long long records;      /* < 0: absent */
};

#define LOG_CTX_NONE ((struct log_ctx){ .http_status = -1, .records = -1 })

int log_level_parse(const char *s, enum log_level *out);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* Route messages to journald when stderr is the journal stream (JOURNAL_STREAM). */
void log_open(void);
/*
 * @in as it may be shown to an operator or sent to systemd: file names come from exporters, and
 * a control character in one must not reach a terminal, split a log line or add a line to an
 * sd_notify message. Control characters (DEL included) become \xHH. @out holds at least 6 bytes;
 * what does not fit is cut.
 */
void log_defang(char *out, size_t outlen, const char *in);

/* "CONNECTION: message": what a connection (ctx->connection) logs, with its journald fields. */
void log_vconn(enum log_level lvl, const struct log_ctx *ctx, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
void log_msg(enum log_level lvl, const struct log_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_error(...) log_msg(LOG_LVL_ERROR, NULL, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LVL_WARNING, NULL, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, NULL, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, NULL, __VA_ARGS__)
