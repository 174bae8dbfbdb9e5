/* test-config: config_load accepts good files with the right values and refuses bad ones as "FILE:LINE: key: reason". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/config_parse.h"
#include "record/record_check.h"
#include "tap.h"
#include "testutil.h"

#define UUID1 "9ce27b8c-8b16-427a-8d00-f40b816bc092"
#define UUID2 "0b6f2f3e-1d2c-4a4a-8b8b-123456789abc"
#define DAEMON "[daemon]\nspool_dir = /srv/spool\nstate_dir = /srv/state\n"   /* lines 1-3 */
/* A complete connection: header, uuid, primary_key, api_key, brand_key (5 lines). */
#define CONN(name, uuid) "[connection " name "]\nuuid = " uuid "\nprimary_key = customer_id\napi_key = k\nbrand_key = b\n"

/* 65 characters: one more than a connection name may have. */
#define NAME65 "a123456789b123456789c123456789d123456789e123456789f123456789g1234"

static char *dir;

/* Write @text to a fresh config file with @mode and load it. */
static int load(const char *text, mode_t mode, struct config **cfg, char *err, size_t errlen, char **path)
{
	static int seq;
	char name[32];

	snprintf(name, sizeof(name), "c%d.conf", ++seq);
	*path = path_join(dir, name);
	write_file(*path, text, strlen(text), mode);
	*cfg = NULL;
	err[0] = '\0';
	return config_load(*path, cfg, err, errlen);
}

/* Load @text expecting success; NULL (and a failed check) otherwise. */
static struct config *load_ok(const char *what, const char *text, mode_t mode)
{
	struct config *cfg;
	char err[1024], *path;
	int r = load(text, mode, &cfg, err, sizeof(err), &path);

	if (!ok(r == 0 && cfg, "%s: loads", what))
		diag("  config_load: %d: %s", r, err);
	free(path);
	return r == 0 ? cfg : NULL;
}

/* Load @text expecting -EINVAL and exactly "PATH:LINE: KEY: " followed by text containing @reason. */
static void load_refused(const char *what, const char *text, mode_t mode, int line, const char *key,
			 const char *reason)
{
	struct config *cfg;
	char err[1024], want[512], *path;
	int r = load(text, mode, &cfg, err, sizeof(err), &path);

	snprintf(want, sizeof(want), "%s:%d: %s: ", path, line, key);
	if (!ok(r == -EINVAL && !cfg && !strncmp(err, want, strlen(want)) && strstr(err + strlen(want), reason),
		"%s: refused as '%s:%d: %s: ...%s...'", what, "FILE", line, key, reason))
		diag("  got %d: '%s'", r, err);
	if (r == 0)
		config_free(cfg);
	free(path);
}

struct refusal {
	const char *what;
	const char *text;
	int line;
	const char *key;
	const char *reason;
};

static const struct refusal refusals[] = {
	{ "unknown key in a connection", DAEMON CONN("shop", UUID1) "colour = blue\n",
	  9, "colour", "unknown key in [connection shop]" },
	{ "unknown key in [daemon]", "[daemon]\nspool_dir = /srv/spool\nspool = /x\n" CONN("shop", UUID1),
	  3, "spool", "unknown key in [daemon]" },
	{ "bad UUID", DAEMON "[connection shop]\nuuid = 9ce27b8c-8b16-427a-8d00-f40b816bc09\n",
	  5, "uuid", "not a UUID" },
	{ "UUID with a non-hex digit", DAEMON "[connection shop]\nuuid = 9ce27b8c-8b16-427a-8d00-f40b816bc09g\n",
	  5, "uuid", "not a UUID" },
	{ "batch_records 0", DAEMON CONN("shop", UUID1) "batch_records = 0\n",
	  9, "batch_records", "must be between 1 and 5000" },
	{ "batch_records 5001", DAEMON CONN("shop", UUID1) "batch_records = 5001\n",
	  9, "batch_records", "must be between 1 and 5000" },
	{ "missing uuid (line of the section header)",
	  DAEMON "\n[connection shop]\nprimary_key = id\napi_key = k\nbrand_key = b\n", 5, "uuid", "missing in [connection shop]" },
	{ "missing primary_key (line of the section header)",
	  DAEMON "[connection shop]\nuuid = " UUID1 "\napi_key = k\nbrand_key = b\n", 4, "primary_key", "missing in [connection shop]" },
	{ "missing api_key (line of the section header)",
	  DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\nbrand_key = b\n", 4, "api_key", "missing in [connection shop]" },
	{ "missing brand_key (line of the section header)",
	  DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\napi_key = k\n", 4, "brand_key", "missing in [connection shop]" },
	{ "api_key and api_key_file: two sources for one key",
	  DAEMON CONN("shop", UUID1) "api_key_file = /etc/key\n", 9, "api_key_file",
	  "two sources for one key (api_key was given on line 7)" },
	{ "api_key_file then api_key: the first source is named",
	  DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\napi_key_file = /etc/key\napi_key = k\n",
	  8, "api_key", "two sources for one key (api_key_file was given on line 7)" },
	{ "a connection key given twice", DAEMON CONN("shop", UUID1) "primary_key = other\n",
	  9, "primary_key", "given twice (first on line 6)" },
	{ "a daemon key given twice", "[daemon]\nstate_dir = /a\nstate_dir = /b\n" CONN("shop", UUID1),
	  3, "state_dir", "given twice" },
	{ "ttl_seconds 0", DAEMON CONN("shop", UUID1) "ttl_seconds = 0\n", 9, "ttl_seconds", "positive number" },
	{ "ttl_seconds not a number", DAEMON CONN("shop", UUID1) "ttl_seconds = 1h\n", 9, "ttl_seconds",
	  "positive number" },
	{ "field_catalog not a boolean", DAEMON CONN("shop", UUID1) "field_catalog = sometimes\n", 9,
	  "field_catalog", "must be yes or no" },
	{ "rate_limit without a window", DAEMON CONN("shop", UUID1) "rate_limit = 50\n", 9, "rate_limit",
	  "REQUESTS/SECONDS" },
	{ "the same uuid in two connections", DAEMON CONN("a", UUID1) CONN("b", UUID1),
	  10, "uuid", "already used by [connection a]" },
	{ "after_upload neither archive nor delete", "[daemon]\nafter_upload = keep\n" CONN("shop", UUID1),
	  2, "after_upload", "must be archive or delete" },
	{ "bad log_level", "[daemon]\nlog_level = verbose\n" CONN("shop", UUID1),
	  2, "log_level", "must be one of error, warning, info, debug" },
	{ "relative spool_dir", "[daemon]\nspool_dir = spool\n" CONN("shop", UUID1),
	  2, "spool_dir", "absolute path" },
	{ "a line that is neither key = value nor [section]", DAEMON "this is not ini\n" CONN("shop", UUID1),
	  4, "-", "syntax error" },
	{ "no connection at all", DAEMON, 3, "connection", "nothing to upload" },
	{ "inline key in a file group/others can read (line of the key)", DAEMON CONN("shop", UUID1),
	  7, "api_key", "chmod 600" },
	{ "base_url with a query", DAEMON CONN("shop", UUID1) "base_url = https://api.example.com/v1?x=1\n",
	  9, "base_url", "has a query ('?')" },
	{ "base_url with a fragment", DAEMON CONN("shop", UUID1) "base_url = https://api.example.com/v1#top\n",
	  9, "base_url", "has a fragment ('#')" },
	{ "base_url with a space", DAEMON CONN("shop", UUID1) "base_url = https://api.example.com/data connections\n",
	  9, "base_url", "has a space" },
	{ "base_url with a control character", DAEMON CONN("shop", UUID1) "base_url = https://api.example.com/\x01v1\n",
	  9, "base_url", "control character" },
	{ "base_url with a non-ASCII byte", DAEMON CONN("shop", UUID1) "base_url = https://api.example.com/d\xc3\xa9j\xc3\xa0\n",
	  9, "base_url", "non-ASCII" },
	{ "base_url without a host", DAEMON CONN("shop", UUID1) "base_url = https:///v1\n", 9, "base_url", "no host" },
	{ "base_url of another scheme", DAEMON CONN("shop", UUID1) "base_url = ftp://api.example.com\n",
	  9, "base_url", "must start with https://" },
	{ "ca_file that does not exist", DAEMON CONN("shop", UUID1) "ca_file = /nonexistent/ca.pem\n",
	  9, "ca_file", "cannot read /nonexistent/ca.pem: No such file or directory" },
	{ "ca_file that is a directory", DAEMON CONN("shop", UUID1) "ca_file = /\n", 9, "ca_file", "/ is not a file" },
	{ "two sections of one connection", DAEMON CONN("shop", UUID1) CONN("shop", UUID2),
	  9, "connection shop", "section given twice (first on line 4)" },
	{ "a second, empty section of one connection", DAEMON CONN("shop", UUID1) "[connection shop]\n",
	  9, "connection shop", "section given twice (first on line 4)" },
	{ "two [daemon] sections", DAEMON CONN("shop", UUID1) "[daemon]\nlog_level = debug\n",
	  9, "daemon", "section given twice (first on line 1)" },
	{ "an unknown section without keys", DAEMON "[extra]\n" CONN("shop", UUID1),
	  4, "extra", "unknown section [extra]" },
	{ "an empty section whose connection name is too long",
	  DAEMON "[connection " NAME65 "]\n" CONN("shop", UUID1), 4, "connection " NAME65, "1 to 64 letters" },
	{ "max_depth 0", DAEMON CONN("shop", UUID1) "max_depth = 0\n", 9, "max_depth", "must be between 1 and 1000" },
	{ "max_depth 1001", DAEMON CONN("shop", UUID1) "max_depth = 1001\n", 9, "max_depth", "must be between 1 and 1000" },
	{ "max_depth not a number", DAEMON CONN("shop", UUID1) "max_depth = deep\n", 9, "max_depth",
	  "must be between 1 and 1000" },
	{ "zstd_window_max_mib not a power of two", DAEMON CONN("shop", UUID1) "zstd_window_max_mib = 12\n", 9,
	  "zstd_window_max_mib", "must be a power of two from 1 to 2048" },
	{ "zstd_window_max_mib past zstd's 2 GiB", DAEMON CONN("shop", UUID1) "zstd_window_max_mib = 4096\n", 9,
	  "zstd_window_max_mib", "must be a power of two from 1 to 2048" },
	{ "rejected_max_lines 0", DAEMON CONN("shop", UUID1) "rejected_max_lines = 0\n", 9, "rejected_max_lines",
	  "must be between 1 and" },
	{ "inline api_key with a control character", DAEMON "[connection shop]\nuuid = " UUID1
	  "\nprimary_key = id\napi_key = k\x01y\nbrand_key = b\n", 7, "api_key", "control character" },
	{ "inline brand_key with a tab inside", DAEMON "[connection shop]\nuuid = " UUID1
	  "\nprimary_key = id\napi_key = k\nbrand_key = b\tc\n", 8, "brand_key", "control character" },
};

/* Section-level mistakes: the line must be the section header's; the key is not checked. */
static void refused_at_section(const char *what, const char *text, int line, const char *reason)
{
	struct config *cfg;
	char err[1024], want[512], *path;
	int r = load(text, 0600, &cfg, err, sizeof(err), &path);

	snprintf(want, sizeof(want), "%s:%d: ", path, line);
	if (!ok(r == -EINVAL && !strncmp(err, want, strlen(want)) && strstr(err, reason),
		"%s: refused at the header's line %d (...%s...)", what, line, reason))
		diag("  got %d: '%s'", r, err);
	if (r == 0)
		config_free(cfg);
	free(path);
}

static void bad_sections_are_refused_at_their_header(void)
{
	refused_at_section("unknown section", DAEMON "[conection shop]\nuuid = " UUID1 "\n", 4,
			   "unknown section [conection shop]");
	refused_at_section("connection name with a space", DAEMON "[connection my shop]\nuuid = " UUID1 "\n", 4,
			   "connection name must be");
	refused_at_section("connection name starting with a dot", DAEMON "[connection .hidden]\nuuid = " UUID1 "\n",
			   4, "connection name must be");
	refused_at_section("an empty connection section is not silently dropped",
			   DAEMON "[connection empty]\n\n" CONN("shop", UUID1), 4, "missing in [connection empty]");
}

static void defaults_and_values_are_loaded(void)
{
	struct config *cfg = load_ok("minimal file", DAEMON CONN("shop", UUID1), 0600);
	const struct conn_config *c;

	if (!cfg)
		return;
	c = config_find_conn(cfg, "shop");
	ok(cfg->n_conns == 1 && c, "one connection named shop");
	if (!c) {
		config_free(cfg);
		return;
	}
	is_str(cfg->spool_dir, "/srv/spool", "spool_dir");
	is_str(cfg->state_dir, "/srv/state", "state_dir");
	is_int(cfg->after_upload, AFTER_UPLOAD_ARCHIVE, "after_upload defaults to archive");
	is_str(c->uuid, UUID1, "uuid");
	is_str(c->primary_key, "customer_id", "primary_key");
	is_str(c->api_key, "k", "inline api_key");
	is_str(c->brand_key, "b", "inline brand_key");
	is_int(c->ttl_seconds, -1, "ttl_seconds defaults to no expiry (-1)");
	is_int(c->batch_records, 5000, "batch_records defaults to 5000");
	is_int(c->line, 4, "connection remembers its header line");
	ok(config_find_conn(cfg, "other") == NULL, "config_find_conn: unknown name gives NULL");
	config_free(cfg);
}

static void values_are_parsed(void)
{
	struct config *cfg = load_ok("file with every kind of value",
				     "[daemon]\nafter_upload = delete\nlog_level = debug\n"
				     "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\napi_key = k\nbrand_key = b\n"
				     "ttl_seconds = 3600\nbatch_records = 5000\nrate_limit = 50/10s\n"
				     "required_fields = name, email\n"
				     "[connection crm]\nuuid = " UUID2 "\nprimary_key = id\napi_key = k\nbrand_key = b\n"
				     "ttl_seconds =\nbatch_records = 1\nrate_limit = off\nfield_catalog = no\n", 0600);
	const struct conn_config *s, *c;

	if (!cfg)
		return;
	s = config_find_conn(cfg, "shop");
	c = config_find_conn(cfg, "crm");
	if (!ok(cfg->n_conns == 2 && s && c, "two connections")) {
		config_free(cfg);
		return;
	}
	is_int(cfg->after_upload, AFTER_UPLOAD_DELETE, "after_upload = delete");
	is_int(cfg->log_level, LOG_LVL_DEBUG, "log_level = debug");
	is_int(s->ttl_seconds, 3600, "ttl_seconds = 3600");
	is_int(c->ttl_seconds, -1, "empty ttl_seconds means no expiry (-1)");
	is_int(s->batch_records, 5000, "batch_records = 5000 accepted");
	is_int(c->batch_records, 1, "batch_records = 1 accepted");
	is_int(s->rate_limit_requests, 50, "rate_limit 50/10s: 50 requests");
	ok(s->rate_limit_window_seconds == 10.0, "rate_limit 50/10s: 10 s window");
	is_int(c->rate_limit_requests, 0, "rate_limit off: no limit");
	ok(s->field_catalog, "field_catalog on by default");
	ok(!c->field_catalog, "field_catalog = no");
	if (is_int(s->n_required_fields, 2, "required_fields 'name, email': two fields")) {
		is_str(s->required_fields[0], "name", "first required field");
		is_str(s->required_fields[1], "email", "second required field");
	}
	is_int(c->n_required_fields, 0, "no required_fields by default");
	config_free(cfg);
}

static void secrets_come_from_files_and_credentials(void)
{
	char *keyfile = path_join(dir, "api.key"), *brandfile = path_join(dir, "brand.key");
	char *credir = tmpdir_new("cred"), *cred = path_join(credir, "optix-key"), *text, reason[512];
	struct config *cfg;
	const struct conn_config *c;

	write_file(keyfile, "s3cret-from-file\n", strlen("s3cret-from-file\n"), 0600);
	write_file(brandfile, "  brand-from-file \n\n", strlen("  brand-from-file \n\n"), 0600);
	write_file(cred, "s3cret-cred\n", strlen("s3cret-cred\n"), 0400);

	/* Lines: 4 header, 5 uuid, 6 primary_key, 7 api_key source, 8 brand_key_file. */
#define SECRET_CONF(api_line) DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\n" api_line \
	"\nbrand_key_file = %s\n"
	if (asprintf(&text, SECRET_CONF("api_key_file = %s"), keyfile, brandfile) < 0)
		abort();
	/* No inline key: the config itself may be world-readable. */
	cfg = load_ok("api_key_file in a 0644 config", text, 0644);
	c = cfg ? config_find_conn(cfg, "shop") : NULL;
	if (c) {
		is_str(c->api_key, "s3cret-from-file", "api_key_file: read, trailing newline stripped");
		is_str(c->brand_key, "brand-from-file", "brand_key_file: surrounding blanks and newlines stripped");
	}
	config_free(cfg);
	free(text);

	if (asprintf(&text, SECRET_CONF("api_key_file = %s/absent"), dir, brandfile) < 0)
		abort();
	snprintf(reason, sizeof(reason), "cannot read %s/absent: No such file or directory", dir);
	load_refused("missing api_key_file", text, 0600, 7, "api_key_file", reason);
	free(text);

	if (asprintf(&text, SECRET_CONF("api_key_credential = optix-key"), brandfile) < 0)
		abort();
	setenv("CREDENTIALS_DIRECTORY", credir, 1);
	cfg = load_ok("api_key_credential with $CREDENTIALS_DIRECTORY", text, 0644);
	c = cfg ? config_find_conn(cfg, "shop") : NULL;
	if (c)
		is_str(c->api_key, "s3cret-cred", "api_key_credential: read from $CREDENTIALS_DIRECTORY/optix-key");
	config_free(cfg);
	unsetenv("CREDENTIALS_DIRECTORY");
	load_refused("api_key_credential without $CREDENTIALS_DIRECTORY", text, 0644, 7, "api_key_credential",
		     "no $CREDENTIALS_DIRECTORY");
	free(text);
#undef SECRET_CONF

	free(cred);
	tmpdir_remove(credir);
	free(keyfile);
	free(brandfile);
}

/* Limits: what --check-config accepts, the code after it can hold; one more is refused. */
static void limits_are_those_of_the_code(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	struct config *cfg;

	/* 64 connections load, a 65th is refused at its header (line 4 + 64 * 5). */
	f = open_memstream(&text, &len);
	fputs(DAEMON, f);
	for (int i = 0; i < CONFIG_MAX_CONNECTIONS; i++)
		fprintf(f, "[connection c%d]\nuuid = 9ce27b8c-8b16-427a-8d00-%012d\nprimary_key = id\napi_key = k\n"
			"brand_key = b\n", i, i);
	fclose(f);
	cfg = load_ok("64 connections", text, 0600);
	ok(cfg && cfg->n_conns == 64, "64 connections loaded");
	config_free(cfg);
	free(text);
	f = open_memstream(&text, &len);
	fputs(DAEMON, f);
	for (int i = 0; i <= CONFIG_MAX_CONNECTIONS; i++)
		fprintf(f, "[connection c%d]\nuuid = 9ce27b8c-8b16-427a-8d00-%012d\nprimary_key = id\napi_key = k\n"
			"brand_key = b\n", i, i);
	fclose(f);
	load_refused("a 65th connection", text, 0600, 4 + 64 * 5, "connection c64", "more than 64 connections");
	free(text);
	text = NULL;

	/* required_fields: the validator tracks 64. Short names, to stay within inih's 200-byte line. */
	for (int n = 64; n <= 65; n++) {
		static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
		char fields[256], *p = fields;

		for (int i = 0; i < n; i++) {
			if (i < 62)
				p += sprintf(p, "%s%c", i ? "," : "", chars[i]);
			else
				p += sprintf(p, ",z%d", i);
		}
		if (asprintf(&text, DAEMON CONN("shop", UUID1) "required_fields = %s\n", fields) < 0)
			abort();
		if (n == 64) {
			cfg = load_ok("64 required_fields", text, 0600);
			ok(cfg && cfg->conns[0].n_required_fields == 64, "64 required_fields loaded");
			config_free(cfg);
		} else {
			load_refused("65 required_fields", text, 0600, 9, "required_fields", "65 fields: at most 64");
		}
		free(text);
	}
}

/* A key file: its text goes into an HTTP header, so only a single line of key is taken. */
static void key_files_are_checked(void)
{
	static const struct {
		const char *what, *content, *reason;
	} bad[] = {
		{ "an empty key file", "", "is empty" },
		{ "a key file of blank lines", "\n \r\n", "is empty" },
		{ "a key file with CR/LF inside the key", "s3cret\r\nX-Injected: 1\n", "holds a line break" },
		{ "a key file with LF inside the key", "s3cret\nsecond-line\n", "holds a line break" },
		{ "a key file with an escape character", "s3c\x1bret\n", "control character" },
	};
	char *keyfile = path_join(dir, "bad.key"), *text;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config *cfg;
		char err[1024], want[128], *path;
		int r;

		write_file(keyfile, bad[i].content, strlen(bad[i].content), 0600);
		if (asprintf(&text, DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\napi_key_file = %s\n"
			     "brand_key = b\n", keyfile) < 0)
			abort();
		snprintf(want, sizeof(want), "%s", bad[i].reason);
		load_refused(bad[i].what, text, 0600, 7, "api_key_file", want);
		/* and the message never shows the key */
		r = load(text, 0600, &cfg, err, sizeof(err), &path);
		ok(r == -EINVAL && !strstr(err, "s3c") && !strstr(err, "Injected"), "%s: the key is not in the message",
		   bad[i].what);
		free(path);
		free(text);
	}
	free(keyfile);
}

static void max_depth_is_loaded(void)
{
	struct config *cfg = load_ok("max_depth = 10", DAEMON CONN("a", UUID1) "max_depth = 10\n" CONN("b", UUID2), 0600);

	if (!cfg)
		return;
	is_int(config_find_conn(cfg, "a")->max_depth, 10, "max_depth = 10");
	is_int(config_find_conn(cfg, "b")->max_depth, 64, "max_depth defaults to 64");
	config_free(cfg);
}

static void inline_key_needs_a_private_file(void)
{
	config_free(load_ok("inline api_key in a 0600 file", DAEMON CONN("shop", UUID1), 0600));
	/* refused in 0644: see the refusals table */
	load_refused("inline api_key in a 0640 file", DAEMON CONN("shop", UUID1), 0640, 7, "api_key",
		     "chmod 600");
}

/* Long lines: a value is read whole, or refused at its own line; later line numbers never shift. */
static void long_lines_keep_line_numbers(void)
{
	char key[400], *text;
	struct config *cfg;
	char err[1024], want[512], *path;
	int r;

	/* Line 8 is "api_key = " + 189 characters: 199 bytes before its newline. */
	memset(key, 'K', 189);
	key[189] = '\0';
	if (asprintf(&text, DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\nbrand_key = b\napi_key = %s\n"
		     "colour = blue\n", key) < 0)
		abort();
	load_refused("after a 199-byte line, line numbers do not shift", text, 0600, 9, "colour", "unknown key");
	free(text);

	/* A 310-byte api_key line. */
	memset(key, 'K', 300);
	key[300] = '\0';
	if (asprintf(&text, DAEMON "[connection shop]\nuuid = " UUID1 "\nprimary_key = id\nbrand_key = b\napi_key = %s\n",
		     key) < 0)
		abort();
	r = load(text, 0600, &cfg, err, sizeof(err), &path);
	snprintf(want, sizeof(want), "%s:8: ", path);
	if (!ok((r == 0 && cfg && strlen(cfg->conns[0].api_key) == 300) ||
			(r == -EINVAL && !strncmp(err, want, strlen(want)) && strstr(err, "long")),
		"a 310-byte line: the 300-byte key is read whole, or refused as too long at line 8"))
		diag("  got %d: '%s' (key of %zu bytes)", r, r ? err : "", r ? 0 : strlen(cfg->conns[0].api_key));
	config_free(cfg);
	free(path);
	free(text);
}

/* Every default of the key table, as dcsyncd.conf(5) gives it: a wrong row's default fails here. */
static void every_default_is_the_documented_one(void)
{
	struct config *cfg = load_ok("only the required keys", CONN("shop", UUID1), 0600);
	const struct conn_config *c;

	if (!cfg)
		return;
	c = &cfg->conns[0];
	is_str(cfg->spool_dir, "/var/spool/dcsyncd", "default spool_dir");
	is_str(cfg->state_dir, "/var/lib/dcsyncd", "default state_dir");
	is_int(cfg->log_level, LOG_LVL_INFO, "default log_level info");
	is_int(cfg->after_upload, AFTER_UPLOAD_ARCHIVE, "default after_upload archive");
	ok(cfg->metrics_file == NULL, "no metrics_file by default");
	ok(cfg->drain_timeout_seconds == 60, "default drain_timeout_seconds 60");
	ok(cfg->settle_seconds == 5, "default settle_seconds 5");
	ok(cfg->open_recheck_seconds == 0, "default open_recheck_seconds 0 (10 x settle_seconds)");
	is_str(c->base_url, CONFIG_DEFAULT_BASE_URL, "default base_url");
	is_int(c->ttl_seconds, -1, "default ttl_seconds: no expiry");
	is_int(c->batch_records, RECORD_MAX_PER_REQUEST, "default batch_records");
	is_int(c->batch_bytes, 8 << 20, "default batch_bytes 8 MiB");
	is_int(c->timeout_seconds, 60, "default timeout_seconds 60");
	is_int(c->max_record_bytes, 1 << 20, "default max_record_bytes 1 MiB");
	is_int(c->max_depth, RECORD_DEFAULT_MAX_DEPTH, "default max_depth");
	ok(c->rejected_max_bytes == 64 << 20 && c->rejected_max_lines == 100000, "default rejected/ caps: 64 MiB, 100000 lines");
	is_int(c->zstd_window_max_mib, 8, "default zstd_window_max_mib 8");
	ok(c->retry_initial_seconds == 1 && c->retry_max_seconds == 300 && c->retry_max_elapsed_seconds == 0,
	   "default retry: 1 s, at most 300 s, forever");
	ok(c->rate_limit_requests == 50 && c->rate_limit_window_seconds == 10, "default rate_limit 50/10s");
	ok(c->field_catalog && !c->tls_verify_disabled, "default field_catalog yes, TLS verified");
	ok(c->proxy_mode == CONN_PROXY_NONE && !c->proxy && !c->proxy_credentials_file, "no proxy by default");
	ok(c->csv.empty == CSV_EMPTY_OMIT && c->csv.delimiter == 0 && c->csv.n_columns == 0, "default csv options");
	ok(!c->ca_file && c->n_required_fields == 0, "no ca_file, no required_fields by default");
	config_free(cfg);
}

/* One key of @section's table set to @value, as at line 7 of t.conf: 1 taken, 0 refused (reason in @err). */
static int set_one(int section, const struct key *k, const char *value, double *got, char *err, size_t errlen)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	struct conn_config *c = calloc(1, sizeof(*c));
	struct conn_parse cp = { 0 };
	struct parse_state ps = { .cfg = cfg, .err = err, .errlen = errlen, .line = 7 };
	void *base = section ? (void *)c : (void *)cfg;
	char *field;
	int r;

	if (!cfg || !c || !(cfg->path = strdup("t.conf")) || !(c->name = strdup("shop")))
		abort();
	err[0] = '\0';
	r = section ? config_conn_defaults(&ps, c, &cp) : config_daemon_defaults(&ps);
	if (r == 0)
		r = section ? config_set_conn_key(&ps, c, &cp, k->name, value) : config_set_daemon_key(&ps, k->name, value);
	field = (char *)base + k->off;
	if (k->kind == KEY_NUMBER)
		*got = *(double *)(void *)field;
	else if (k->int_type == INT_T_UINT)
		*got = *(unsigned *)(void *)field;
	else if (k->int_type == INT_T_INT)
		*got = *(int *)(void *)field;
	else if (k->int_type == INT_T_LONG)
		*got = (double)*(long *)(void *)field;
	else if (k->int_type == INT_T_ULONG)
		*got = (double)*(unsigned long *)(void *)field;
	else if (k->int_type == INT_T_LLONG)
		*got = (double)*(long long *)(void *)field;
	free(cp.api.value);
	free(cp.brand.value);
	config_conn_free(c);
	config_free(cfg);
	return r;
}

static void print_limit(char *buf, size_t len, const struct key *k, double v)
{
	if (k->kind == KEY_INT)
		snprintf(buf, len, "%lld", (long long)v);
	else
		snprintf(buf, len, "%.17g", v);
}

/*
 * Every number key of the table takes its two limits (stored as given) and refuses one step
 * beyond each at parse time, with its row's reason, or "must be between MIN and MAX" naming
 * exactly the limits checked.
 */
static void every_limit_of_the_table_is_checked_as_read(void)
{
	for (int section = 0; section < 2; section++) {
		size_t n;
		const struct key *keys = config_keys(section, &n);

		for (size_t i = 0; i < n; i++) {
			const struct key *k = &keys[i];
			double at[2] = { k->min, k->max }, beyond[2], got = 0;
			char err[1024], want[512], value[64];

			size_t first = 0;

			while (strcmp(keys[first].name, k->name))
				first++;
			ok(first == i, "%s: one row", k->name);
			if (k->kind == KEY_INT || k->kind == KEY_CHOICE)
				ok(k->int_type != INT_T_NONE, "%s: its field is an integer", k->name);
			if (k->kind != KEY_INT && k->kind != KEY_NUMBER)
				continue;
			beyond[0] = k->min > 0 && k->min < 1 ? k->min / 2 : k->min - 1;
			beyond[1] = k->max + 1;
			if (k->why && strstr(k->why, "between")) {
				/* a reason of its own that names the range names the one checked */
				snprintf(want, sizeof(want), "between %g and %g", k->min, k->max);
				ok(strstr(k->why, want) != NULL, "%s: its reason names its limits (%s)", k->name, want);
			}
			if (k->why)
				snprintf(want, sizeof(want), "t.conf:7: %s: %s", k->name, k->why);
			else if (k->kind == KEY_INT)
				snprintf(want, sizeof(want), "t.conf:7: %s: must be between %lld and %lld%s", k->name,
					 (long long)k->min, (long long)k->max, k->unit ? k->unit : "");
			else
				snprintf(want, sizeof(want), "t.conf:7: %s: must be between %g and %g%s", k->name,
					 k->min, k->max, k->unit ? k->unit : "");
			for (int m = 0; m < 2; m++) {
				print_limit(value, sizeof(value), k, at[m]);
				if (!ok(set_one(section, k, value, &got, err, sizeof(err)) == 1 && got == at[m],
					"%s = %s (its %s) taken", k->name, value, m ? "maximum" : "minimum"))
					diag("  got %.17g, '%s'", got, err);
				print_limit(value, sizeof(value), k, beyond[m]);
				if (!ok(set_one(section, k, value, &got, err, sizeof(err)) == 0 && !strcmp(err, want),
					"%s = %s refused as '%s'", k->name, value, want))
					diag("  got '%s'", err);
			}
		}
	}
}

int main(void)
{
	dir = tmpdir_new("config");
	unsetenv("CREDENTIALS_DIRECTORY");
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		const struct refusal *t = &refusals[i];
		/* the entry about the mode is written world-readable, every other one private */
		mode_t mode = strstr(t->reason, "chmod 600") ? 0644 : 0600;

		load_refused(t->what, t->text, mode, t->line, t->key, t->reason);
	}
	bad_sections_are_refused_at_their_header();
	defaults_and_values_are_loaded();
	values_are_parsed();
	secrets_come_from_files_and_credentials();
	inline_key_needs_a_private_file();
	limits_are_those_of_the_code();
	key_files_are_checked();
	max_depth_is_loaded();
	long_lines_keep_line_numbers();
	every_default_is_the_documented_one();
	every_limit_of_the_table_is_checked_as_read();
	tmpdir_remove(dir);
	return done_testing();
}
