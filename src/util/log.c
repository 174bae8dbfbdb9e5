/* log: leveled messages to stderr ("level: message") or to journald with structured fields. */
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

/* The logger is process-wide by nature (like stderr itself): level and sink are set once at start. */
static enum log_level log_threshold = LOG_LVL_INFO;
static int log_to_journal;

static const char *const level_names[] = { "error", "warning", "info", "debug" };
static const int level_prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

int log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_set_level(enum log_level lvl) { log_threshold = lvl; }
enum log_level log_get_level(void) { return log_threshold; }

void log_open(void)
{
	/* JOURNAL_STREAM is "dev:ino" of the stream systemd connected stderr to. */
	const char *js = getenv("JOURNAL_STREAM");
	struct stat st;
	unsigned long long dev, ino;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return;
	log_to_journal = (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static void log_journal(enum log_level lvl, const struct log_ctx *c, const char *msg)
{
	char fields[8][4200];
	struct iovec iov[8];
	int n = 0;

	snprintf(fields[n++], sizeof(fields[0]), "MESSAGE=%s", msg);
	snprintf(fields[n++], sizeof(fields[0]), "PRIORITY=%d", level_prio[lvl]);
	if (c && c->connection)
		snprintf(fields[n++], sizeof(fields[0]), "CONNECTION=%s", c->connection);
	if (c && c->file)
		snprintf(fields[n++], sizeof(fields[0]), "FILE=%s", c->file);
	if (c && c->batch_uuid)
		snprintf(fields[n++], sizeof(fields[0]), "BATCH_UUID=%s", c->batch_uuid);
	if (c && c->http_status >= 0)
		snprintf(fields[n++], sizeof(fields[0]), "HTTP_STATUS=%ld", c->http_status);
	if (c && c->records >= 0)
		snprintf(fields[n++], sizeof(fields[0]), "RECORDS=%lld", c->records);
	if (c && c->unchanged)
		snprintf(fields[n++], sizeof(fields[0]), "RECORDS_UNCHANGED=%llu", c->unchanged);
	for (int i = 0; i < n; i++)
		iov[i] = (struct iovec){ .iov_base = fields[i], .iov_len = strlen(fields[i]) };
	sd_journal_sendv(iov, n);
}

void log_defang(char *out, size_t outlen, const char *in)
{
	size_t o = 0;

	for (; *in && o + 7 < outlen; in++) {
		unsigned char ch = (unsigned char)*in;

		if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
		} else if (ch == 0xc2 && (unsigned char)in[1] >= 0x80 && (unsigned char)in[1] <= 0x9f) {
			/* U+0080..U+009F, the C1 controls (CSI is U+009B): a terminal obeys them too. */
			o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", (unsigned char)in[1]);
			in++;
		} else {
			out[o++] = (char)ch;
		}
	}
	out[o] = '\0';
}

void log_msg(enum log_level lvl, const struct log_ctx *ctx, const char *fmt, ...)
{
	char raw[2048], buf[2048 * 2];
	struct log_ctx safe;
	char file[1100];
	va_list ap;

	if (lvl > log_threshold)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	log_defang(buf, sizeof(buf), raw);
	if (ctx && ctx->file) {
		safe = *ctx;
		log_defang(file, sizeof(file), ctx->file);
		safe.file = file;
		ctx = &safe;
	}
	if (log_to_journal) {
		log_journal(lvl, ctx, buf);
		return;
	}
	fprintf(stderr, "%s: %s\n", level_names[lvl], buf);
}

void log_vconn(enum log_level lvl, const struct log_ctx *ctx, const char *fmt, va_list ap)
{
	char msg[1536];

	if (lvl > log_threshold)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_msg(lvl, ctx, "%s: %s", ctx->connection, msg);
}
