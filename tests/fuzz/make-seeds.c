/*
 * make-seeds: write the journal and catalog seeds of tests/fuzz/corpus with the daemon's own code,
 * so the seeds are real files. Usage: make-seeds CORPUS_DIR (the seeds are committed; rerun it
 * when a format changes).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state/state_catalog.h"
#include "state/state_catalog_file.h"
#include "state/state_journal.h"
#include "state/state_jrec.h"
#include "util/log.h"

static void die(const char *what, int r)
{
	fprintf(stderr, "make-seeds: %s: %s\n", what, strerror(-r));
	exit(1);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = malloc(1 << 20);

	if (!f || !b)
		die(path, -errno);
	*len = fread(b, 1, 1 << 20, f);
	fclose(f);
	return b;
}

/* A journal seed is one flags byte (1: fix CRCs after mutation, see fuzz-journal.c), then the file. */
static void copy_journal(const char *dir, const char *out_dir, const char *name)
{
	char in[512], out[512];
	size_t len;
	char *b;
	FILE *f;

	snprintf(in, sizeof(in), "%s/journal", dir);
	b = slurp(in, &len);
	for (int flag = 0; flag < 2; flag++) {
		snprintf(out, sizeof(out), "%s/journal/%s%s", out_dir, name, flag ? "" : "-nofix");
		if (!(f = fopen(out, "wb")))
			die(out, -errno);
		fputc(flag, f);
		fwrite(b, 1, len, f);
		fclose(f);
	}
	free(b);
}

/* A batch of @members files (each a member record, put before the batch), its first file's name its own. */
static struct journal_batch batch(struct journal *j, enum batch_state st, const char *conn, uint32_t members)
{
	struct journal_batch b = { .id = state_journal_new_id(j), .state = st, .cut_records = 5000,
				   .cut_bytes = 8u << 20, .n_members = members };

	snprintf(b.uuid, sizeof(b.uuid), "7c9e6679-7425-40de-944b-e07fc1f9%04llx", (unsigned long long)b.id);
	snprintf(b.connection, sizeof(b.connection), "%s", conn);
	for (uint32_t i = 0; i < members; i++) {
		struct journal_member m = { .batch_id = b.id, .file_id = state_journal_new_id(j), .index = i,
					    .rejected_size = 17 * i };

		m.ident = (struct file_identity){ .dev = 2049, .ino = 4000 + m.file_id, .size = 123456,
						  .mtime_ns = 1700000000123456789 };
		snprintf(m.name, sizeof(m.name), "export-%llu.ndjson", (unsigned long long)m.file_id);
		if (!i)
			snprintf(b.name, sizeof(b.name), "%s", m.name);
		state_journal_put_member(j, &m);
	}
	return b;
}

static void journals(const char *tmp, const char *out_dir)
{
	struct journal *j;
	struct journal_batch b1, b2, b3;
	int r;

	if ((r = state_journal_open(&j, tmp, NULL)) < 0)
		die("state_journal_open", r);
	/* A single-file batch acknowledged twice, then completed and archived. */
	b1 = batch(j, BATCH_OPEN, "products", 1);
	state_journal_put(j, &b1);
	state_journal_sync(j);
	b1.acks = 1, b1.offset = 40960, b1.lineno = 5001, b1.records = 4998, b1.rejected = 2;
	state_journal_put(j, &b1);
	state_journal_sync(j);
	/* A multi-file batch: members first, then its OPEN state. */
	b2 = batch(j, BATCH_OPEN, "customers", 2);
	state_journal_put(j, &b2);
	if ((r = state_journal_sync(j)) < 0)
		die("state_journal_sync", r);
	copy_journal(tmp, out_dir, "live");
	b1.state = BATCH_COMPLETED;
	state_journal_put(j, &b1);
	b1.state = BATCH_ARCHIVED;
	state_journal_put(j, &b1);
	b3 = batch(j, BATCH_FAILED, "products", 1);
	state_journal_put(j, &b3);
	b2.state = BATCH_RELEASED;
	state_journal_put(j, &b2);
	state_journal_sync(j);
	copy_journal(tmp, out_dir, "ended");
	if ((r = state_journal_compact(j, true)) < 0)
		die("state_journal_compact", r);
	b3 = batch(j, BATCH_OPEN, "products", 1);
	b3.decided = 1700000000;
	b3.resend = 86400;
	b3.ttl = 3600;
	state_journal_put(j, &b3);
	state_journal_sync(j);
	copy_journal(tmp, out_dir, "compacted");
	state_journal_free(j);
}

static void catalogs(const char *out_dir)
{
	static const char *const names[] = { "id", "email", "first name", "tab\there", "nl\nand\\", "\x01\x7f", "ünïcode" };
	struct catalog *c;
	char path[512];
	int r;

	if ((r = state_catalog_new(&c, 5)) < 0)
		die("state_catalog_new", r);
	for (int rec = 0; rec < 3; rec++) {
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			state_catalog_note(c, names[i], strlen(names[i]));
		state_catalog_note(c, "nul\0inside", 10);
		state_catalog_commit(c, 1700000000 + rec);
	}
	snprintf(path, sizeof(path), "%s/catalog/saved", out_dir);
	if ((r = state_catalog_file_save(c, path)) < 0)
		die("state_catalog_file_save", r);
	state_catalog_free(c);
}

int main(int argc, char **argv)
{
	char tmp[] = "/tmp/make-seeds-XXXXXX", p[600];

	if (argc != 2) {
		fprintf(stderr, "usage: make-seeds CORPUS_DIR\n");
		return 2;
	}
	if (!mkdtemp(tmp))
		die("mkdtemp", -errno);
	log_set_level(LOG_LVL_ERROR);
	journals(tmp, argv[1]);
	catalogs(argv[1]);
	snprintf(p, sizeof(p), "%s/journal", tmp);
	unlink(p);
	rmdir(tmp);
	return 0;
}
