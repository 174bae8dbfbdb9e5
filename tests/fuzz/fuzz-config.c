/*
 * fuzz-config: config_load() of arbitrary text, with key files and a credentials directory to
 * find. Every file the loader opens by a path from the text goes through a wrapper that keeps it
 * inside the scratch directory, so a run reads the same files on every machine and never blocks
 * on a FIFO or a terminal it named.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"
#include "fuzz-util.h"

static const char *const files[] = { "dcsyncd.conf", "api.key", "brand.key", "empty.key", "big.key", NULL };

#define SECRET "sEcReT-from-a-key-file"

/* Linked with -Wl,--wrap=fopen,--wrap=fopen64 (_FILE_OFFSET_BITS=64 renames fopen to fopen64). */
FILE *__real_fopen(const char *path, const char *mode);
FILE *__real_fopen64(const char *path, const char *mode);
FILE *__wrap_fopen(const char *path, const char *mode);
FILE *__wrap_fopen64(const char *path, const char *mode);

/* Set around config_load(): libFuzzer itself opens files too (its crash reports). */
static bool confining;

/* A name without '/' is looked up in the scratch directory; a path must lie inside it. */
static FILE *confined(FILE *(*real)(const char *, const char *), const char *path, const char *mode)
{
	size_t dl = strlen(fuzz_dir);
	char p[PATH_MAX];

	if (!confining)
		return real(path, mode);
	if (!strchr(path, '/')) {
		if (snprintf(p, sizeof(p), "%s/%s", fuzz_dir, path) >= (int)sizeof(p)) {
			errno = ENAMETOOLONG;
			return NULL;
		}
		path = p;
	} else if (strncmp(path, fuzz_dir, dl) || path[dl] != '/' || strstr(path, "/..")) {
		errno = ENOENT;
		return NULL;
	}
	return real(path, mode);
}

FILE *__wrap_fopen(const char *path, const char *mode) { return confined(__real_fopen, path, mode); }
FILE *__wrap_fopen64(const char *path, const char *mode) { return confined(__real_fopen64, path, mode); }

static size_t count_lines(const uint8_t *data, size_t size)
{
	size_t n = 1;

	for (const uint8_t *p = data, *e = data + size; (p = memchr(p, '\n', (size_t)(e - p))); p++)
		n++;
	return n;
}

/*
 * "FILE:LINE: key: reason": LINE within the file (0 only for an empty one), a key (it can only
 * begin with ':' if the text holds one), a reason; and never a key file's content.
 */
static void check_error(const char *path, const char *err, const uint8_t *data, size_t size)
{
	size_t pl = strlen(path);
	const char *p = err + pl + 1;
	char *end;
	unsigned long line;

	CHECK(!strncmp(err, path, pl) && err[pl] == ':');
	CHECK(*p >= '0' && *p <= '9');
	line = strtoul(p, &end, 10);
	CHECK(line <= count_lines(data, size));
	CHECK(line >= 1 || size == 0);
	CHECK(end[0] == ':' && end[1] == ' ');
	CHECK(end[2] != ':' || memchr(data, ':', size));
	/* The key may hold ": " itself (a section name can): only look for a reason after it. */
	p = strstr(end + 2, ": ");
	CHECK(p && p[2]);
	CHECK(!strstr(err, SECRET) || memmem(data, size, SECRET, strlen(SECRET)));
}

static void check_config(const struct config *cfg)
{
	CHECK(cfg->n_conns >= 1);
	CHECK(cfg->spool_dir[0] == '/' && cfg->state_dir[0] == '/');
	for (size_t i = 0; i < cfg->n_conns; i++) {
		const struct conn_config *c = &cfg->conns[i];

		CHECK(config_find_conn(cfg, c->name) == c);
		CHECK(c->uuid && strlen(c->uuid) == 36 && c->primary_key && c->primary_key[0]);
		CHECK(c->api_key && c->api_key[0] && c->brand_key && c->brand_key[0]);
		CHECK(c->base_url && !strncmp(c->base_url, "http", 4));
		CHECK(c->batch_records >= 1 && c->batch_records <= CONFIG_MAX_BATCH_RECORDS);
		CHECK(c->max_record_bytes + 256 <= c->batch_bytes);
		CHECK(c->retry_initial_seconds <= c->retry_max_seconds);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(c->uuid, cfg->conns[j].uuid) != 0);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char big[8192];
	char p[512];

	(void)argc;
	(void)argv;
	fuzz_dir_init("config", files);
	write_file(fuzz_path(p, sizeof(p), "api.key"), SECRET "-api\n", strlen(SECRET) + 5, 0600);
	write_file(fuzz_path(p, sizeof(p), "brand.key"), "  " SECRET "-brand \n", strlen(SECRET) + 10, 0600);
	write_file(fuzz_path(p, sizeof(p), "empty.key"), " \n", 2, 0600);
	memset(big, 'k', sizeof(big));
	write_file(fuzz_path(p, sizeof(p), "big.key"), big, sizeof(big), 0600);
	/* api_key_credential = api.key reads $CREDENTIALS_DIRECTORY/api.key. */
	CHECK(setenv("CREDENTIALS_DIRECTORY", fuzz_dir, 1) == 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *cfg = NULL;
	char path[512], err[1024];
	int r;

	/* Owner-only, like a real one: inline keys are accepted, so the whole loader is reached. */
	write_file(fuzz_path(path, sizeof(path), "dcsyncd.conf"), data, size, 0600);
	memset(err, 0, sizeof(err));
	confining = true;
	r = config_load(path, &cfg, err, sizeof(err));
	confining = false;
	if (r == 0) {
		check_config(cfg);
		config_free(cfg);
	} else {
		CHECK(r == -EINVAL);
		check_error(path, err, data, size);
	}
	return 0;
}
