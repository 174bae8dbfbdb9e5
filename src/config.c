/* config: parse and validate dcsyncd.conf (inih) into an immutable struct config. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ini.h>

#include "ndjson.h"

#define DEFAULT_BASE_URL CONFIG_DEFAULT_BASE_URL

/* Which source a secret came from, so two sources for one key can be refused. */
struct secret_src {
	char *value;   /* inline value, file path, or credential name */
	int kind;      /* 0 none, 1 inline, 2 file, 3 credential */
	int line;
	const char *key;
};

struct conn_parse {
	struct secret_src api, brand;
	unsigned seen;  /* bitmask of keys given, to refuse duplicates and find missing ones */
	int seen_line[32];
};

struct parse_state {
	struct config *cfg;
	unsigned flags;            /* CONFIG_LOAD_* */
	struct conn_parse *cp;     /* parallel to cfg->conns */
	int line;                  /* line the reader handed to inih last */
	int section_line;          /* line of the last [section] header */
	struct {
		char name[65];
		int line;
	} headers[CONFIG_MAX_CONNECTIONS]; /* [connection NAME] headers seen: duplicates, sections without keys */
	size_t n_headers;
	int daemon_line;           /* line of the [daemon] header, 0 before it */
	bool have_key;             /* a key was given in this section: an indented line continues it (inih) */
	bool continued;            /* the line inih has is such a continuation */
	FILE *f;
	char *err;
	size_t errlen;
	int failed;
	unsigned daemon_seen;
};

enum {
	K_UUID, K_PRIMARY_KEY, K_BASE_URL, K_TTL, K_BATCH_RECORDS, K_BATCH_BYTES, K_TIMEOUT,
	K_REQUIRED, K_MAX_RECORD, K_RETRY_INIT, K_RETRY_MAX, K_RETRY_ELAPSED, K_CA_FILE,
	K_TLS_OFF, K_RATE, K_CATALOG, K_MAX_DEPTH, K_API, K_API_FILE, K_API_CRED, K_BRAND, K_BRAND_FILE, K_BRAND_CRED,
	K_CSV_COLUMNS, K_CSV_DELIMITER, K_CSV_EMPTY,
	K_PROXY, K_PROXY_CRED,
	K__COUNT
};

static const char *const conn_keys[K__COUNT] = {
	"uuid", "primary_key", "base_url", "ttl_seconds", "batch_records", "batch_bytes",
	"timeout_seconds", "required_fields", "max_record_bytes", "retry_initial_seconds",
	"retry_max_seconds", "retry_max_elapsed_seconds", "ca_file", "tls_verify_insecure_disable",
	"rate_limit", "field_catalog", "max_depth", "api_key", "api_key_file", "api_key_credential", "brand_key",
	"brand_key_file", "brand_key_credential", "csv_columns", "csv_delimiter", "csv_empty",
	"proxy", "proxy_credentials_file",
};

_Static_assert(K__COUNT <= 32, "conn_parse.seen is a 32-bit mask");

static const char *const daemon_keys[] = {
	"spool_dir", "state_dir", "log_level", "after_upload", "metrics_file", "drain_timeout_seconds",
	"settle_seconds",
};

static int fail(struct parse_state *ps, int line, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct parse_state *ps, int line, const char *key, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	if (ps->failed)
		return 0;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	/* An empty section name ([]) still gets a key to point at. */
	snprintf(ps->err, ps->errlen, "%s:%d: %s: %s", ps->cfg->path, line, *key ? key : "[]", reason);
	ps->failed = 1;
	return 0;
}

static int parse_ll(const char *v, long long min, long long max, long long *out)
{
	char *end;
	long long x;

	errno = 0;
	x = strtoll(v, &end, 10);
	if (errno || end == v || *end || x < min || x > max)
		return -EINVAL;
	*out = x;
	return 0;
}

static int parse_double(const char *v, double min, double max, double *out)
{
	char *end;
	double x;

	errno = 0;
	x = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(x) || x < min || x > max)
		return -EINVAL;
	*out = x;
	return 0;
}

static int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "on"))
		*out = true;
	else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "off"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

static bool uuid_valid(const char *s)
{
	static const int dash[] = { 8, 13, 18, 23 };

	if (strlen(s) != 36)
		return false;
	for (int i = 0, d = 0; i < 36; i++) {
		if (d < 4 && i == dash[d]) {
			if (s[i] != '-')
				return false;
			d++;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

static bool name_valid(const char *s)
{
	if (!*s || *s == '.' || strlen(s) > 64)   /* ps->headers[].name holds 64 */
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

/*
 * dcsyncd appends "/connections/UUID/upload_data" to base_url: a query or fragment would end up
 * in the middle of the URL, and libcurl would send a space or control character as it stands.
 */
static const char *url_problem(const char *v)
{
	const char *host;

	if (!strncmp(v, "https://", 8))
		host = v + 8;
	else if (!strncmp(v, "http://", 7))
		host = v + 7;
	else
		return "must start with https:// (or http://)";
	for (const char *p = v; *p; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch == ' ')
			return "has a space (percent-encode it as %20)";
		if (ch < 0x20 || ch == 0x7f)
			return "has a control character";
		if (ch >= 0x80)
			return "has a non-ASCII byte (percent-encode it)";
		if (ch == '?')
			return "has a query ('?'): the API path is appended to base_url, so give only scheme, host and path";
		if (ch == '#')
			return "has a fragment ('#'): give only scheme, host and path";
	}
	if (!*host || *host == '/' || *host == ':')
		return "has no host";
	return NULL;
}

/* A key goes into an HTTP header: a line break there would start another header. */
static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* "50/10s", "50/10" or "off". */
static int parse_rate(const char *v, unsigned *n, double *window)
{
	long long req;
	char *slash, buf[64];
	size_t len;

	if (!strcmp(v, "off")) {
		*n = 0;
		*window = 0;
		return 0;
	}
	if (strlen(v) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, v);
	slash = strchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash++ = '\0';
	len = strlen(slash);
	if (len && slash[len - 1] == 's')
		slash[len - 1] = '\0';
	if (parse_ll(buf, 1, 100000, &req) < 0 || parse_double(slash, 0.001, 86400, window) < 0)
		return -EINVAL;
	*n = (unsigned)req;
	return 0;
}

/* Append the names of a comma- or blank-separated list to *out (of *n). */
static int split_fields(const char *v, char ***out, size_t *n)
{
	char *dup = strdup(v), *save = NULL, *tok;
	char **arr = *out;
	size_t cnt = *n, had = *n;

	if (!dup)
		return -ENOMEM;
	for (tok = strtok_r(dup, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		char **grown = realloc(arr, (cnt + 1) * sizeof(*arr));
		if (!grown)
			goto oom;
		arr = grown;
		if (!(arr[cnt] = strdup(tok)))
			goto oom;
		cnt++;
	}
	free(dup);
	*out = arr;
	*n = cnt;
	return 0;
oom:
	while (cnt > had)
		free(arr[--cnt]);
	*out = arr;
	*n = had;
	free(dup);
	return -ENOMEM;
}

/* required_fields, on one line or continued on indented lines. */
static int append_fields(struct parse_state *ps, struct conn_config *c, const char *name, const char *value)
{
	if (split_fields(value, &c->required_fields, &c->n_required_fields) < 0)
		return -1;
	if (c->n_required_fields > RECORD_MAX_REQUIRED)
		return fail(ps, ps->line, name, "%zu fields: at most %d", c->n_required_fields, RECORD_MAX_REQUIRED);
	return 1;
}

/* csv_columns, on one line or continued on indented lines. */
static int append_columns(struct parse_state *ps, struct conn_config *c, const char *name, const char *value)
{
	char why[256];
	int r = csv_columns_parse(&c->csv, value, why, sizeof(why));

	if (r == -EINVAL)
		return fail(ps, ps->line, name, "%s", why);
	return r < 0 ? -1 : 1;
}

static int set_str(char **dst, const char *v)
{
	char *d = strdup(v);

	if (!d)
		return -ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
}

static int handle_daemon(struct parse_state *ps, const char *name, const char *value)
{
	struct config *cfg = ps->cfg;
	size_t i;

	for (i = 0; i < sizeof(daemon_keys) / sizeof(daemon_keys[0]); i++)
		if (!strcmp(name, daemon_keys[i]))
			break;
	if (i == sizeof(daemon_keys) / sizeof(daemon_keys[0]))
		return fail(ps, ps->line, name, "unknown key in [daemon]");
	if (ps->daemon_seen & (1u << i))
		return fail(ps, ps->line, name, "given twice");
	ps->daemon_seen |= 1u << i;

	if (!strcmp(name, "spool_dir") || !strcmp(name, "state_dir")) {
		if (value[0] != '/')
			return fail(ps, ps->line, name, "must be an absolute path");
		if (strlen(value) > CONFIG_MAX_DIR_PATH)
			return fail(ps, ps->line, name, "longer than %d bytes", CONFIG_MAX_DIR_PATH);
		return set_str(name[1] == 'p' ? &cfg->spool_dir : &cfg->state_dir, value) < 0 ? -1 : 1;
	}
	if (!strcmp(name, "log_level")) {
		if (log_level_parse(value, &cfg->log_level) < 0)
			return fail(ps, ps->line, name, "must be one of error, warning, info, debug");
		return 1;
	}
	if (!strcmp(name, "after_upload")) {
		if (!strcmp(value, "archive"))
			cfg->after_upload = AFTER_UPLOAD_ARCHIVE;
		else if (!strcmp(value, "delete"))
			cfg->after_upload = AFTER_UPLOAD_DELETE;
		else
			return fail(ps, ps->line, name, "must be archive or delete");
		return 1;
	}
	if (!strcmp(name, "metrics_file")) {
		if (!*value)
			return 1;
		if (value[0] != '/')
			return fail(ps, ps->line, name, "must be an absolute path");
		if (strlen(value) > CONFIG_MAX_DIR_PATH)
			return fail(ps, ps->line, name, "longer than %d bytes", CONFIG_MAX_DIR_PATH);
		return set_str(&cfg->metrics_file, value) < 0 ? -1 : 1;
	}
	if (!strcmp(name, "settle_seconds")) {
		if (parse_double(value, 0, 3600, &cfg->settle_seconds) < 0)
			return fail(ps, ps->line, name, "must be a number of seconds between 0 and 3600");
		return 1;
	}
	if (parse_double(value, 0, 3600, &cfg->drain_timeout_seconds) < 0)
		return fail(ps, ps->line, name, "must be a number of seconds between 0 and 3600");
	return 1;
}

static int set_secret(struct parse_state *ps, struct secret_src *s, int kind, const char *key,
		      const char *value)
{
	if (s->kind)
		return fail(ps, ps->line, key, "two sources for one key (%s was given on line %d)",
			    s->key, s->line);
	if (!*value)
		return fail(ps, ps->line, key, "empty value");
	if (has_control(value))
		return fail(ps, ps->line, key, "%s holds a control character",
			    kind == 1 ? "the key" : kind == 2 ? "the path" : "the credential name");
	s->kind = kind;
	s->line = ps->line;
	/* @key is a name from the static key table: inih's line buffer is gone by the time of errors. */
	s->key = key;
	s->value = strdup(value);
	return s->value ? 1 : -1;
}

/* "" or "none", "env", or http(s)://host:port with no credentials in it (a URL may reach a log). */
static int set_proxy(struct parse_state *ps, struct conn_config *c, const char *name, const char *value)
{
	const char *why, *host;

	if (!*value || !strcmp(value, "none")) {
		c->proxy_mode = CONN_PROXY_NONE;
		return 1;
	}
	if (!strcmp(value, "env")) {
		c->proxy_mode = CONN_PROXY_ENV;
		return 1;
	}
	why = url_problem(value);
	if (why)
		return fail(ps, ps->line, name, "%s (want none, env or http://HOST:PORT)", why);
	host = strstr(value, "://") + 3;
	if (memchr(host, '@', strcspn(host, "/")))
		return fail(ps, ps->line, name, "holds credentials ('@'): put USER:PASSWORD in proxy_credentials_file");
	c->proxy_mode = CONN_PROXY_URL;
	return set_str(&c->proxy, value) < 0 ? -1 : 1;
}

static int handle_conn(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp,
		       const char *name, const char *value)
{
	struct stat st;
	long long ll;
	int k;

	for (k = 0; k < K__COUNT; k++)
		if (!strcmp(name, conn_keys[k]))
			break;
	if (k == K__COUNT)
		return fail(ps, ps->line, name, "unknown key in [connection %s]", c->name);
	if (ps->continued) {
		/* An indented line after a key: inih hands it over as more of that key's value. */
		if (k != K_REQUIRED && k != K_CSV_COLUMNS)
			return fail(ps, ps->line, name, "an indented line continues the value of the key above, and only "
				    "lists (required_fields, csv_columns) continue: unindent '%s'", value);
		if (strchr(value, '='))
			return fail(ps, ps->line, name, "a continuation line holds '=' (an indented key? remove the indentation)");
		if (k == K_CSV_COLUMNS)
			return append_columns(ps, c, name, value);
		return append_fields(ps, c, name, value);
	}
	if (cp->seen & (1u << k))
		return fail(ps, ps->line, name, "given twice (first on line %d)", cp->seen_line[k]);
	cp->seen |= 1u << k;
	cp->seen_line[k] = ps->line;

	switch (k) {
	case K_UUID:
		if (!uuid_valid(value))
			return fail(ps, ps->line, name, "not a UUID (want 8-4-4-4-12 hex digits): '%s'", value);
		return set_str(&c->uuid, value) < 0 ? -1 : 1;
	case K_PRIMARY_KEY:
		if (!*value)
			return fail(ps, ps->line, name, "empty value");
		return set_str(&c->primary_key, value) < 0 ? -1 : 1;
	case K_BASE_URL: {
		const char *why = url_problem(value);

		if (why)
			return fail(ps, ps->line, name, "%s", why);
		return set_str(&c->base_url, value) < 0 ? -1 : 1;
	}
	case K_TTL:
		if (!*value) {
			c->ttl_seconds = -1;
			return 1;
		}
		if (parse_ll(value, 1, 100LL * 365 * 86400, &ll) < 0)
			return fail(ps, ps->line, name, "must be empty (no expiry) or a positive number of seconds");
		c->ttl_seconds = ll;
		return 1;
	case K_BATCH_RECORDS:
		if (parse_ll(value, 1, CONFIG_MAX_BATCH_RECORDS, &ll) < 0)
			return fail(ps, ps->line, name, "must be between 1 and %d", CONFIG_MAX_BATCH_RECORDS);
		c->batch_records = (unsigned)ll;
		return 1;
	case K_BATCH_BYTES:
		if (parse_ll(value, 1024, 1LL << 30, &ll) < 0)
			return fail(ps, ps->line, name, "must be between 1024 and 1073741824");
		c->batch_bytes = (size_t)ll;
		return 1;
	case K_TIMEOUT:
		if (parse_ll(value, 1, 3600, &ll) < 0)
			return fail(ps, ps->line, name, "must be between 1 and 3600 seconds");
		c->timeout_seconds = (long)ll;
		return 1;
	case K_REQUIRED:
		return append_fields(ps, c, name, value);
	case K_CSV_COLUMNS:
		return append_columns(ps, c, name, value);
	case K_CSV_DELIMITER:
		/* inih takes " ;" for the start of a comment: csv_delimiter = ; arrives empty. */
		if (!*value)
			return fail(ps, ps->line, name, "empty (leave the key out for ',' in .csv and tab in .tsv; "
				    "';' starts a comment here: write semicolon)");
		if (!strcmp(value, "tab") || !strcmp(value, "\\t")) {
			c->csv.delimiter = '\t';
			return 1;
		}
		if (!strcmp(value, "semicolon")) {
			c->csv.delimiter = ';';
			return 1;
		}
		if (strlen(value) != 1 || !isprint((unsigned char)value[0]) || value[0] == '"' || value[0] == ' ')
			return fail(ps, ps->line, name, "must be one printable character other than '\"' and ' ', or tab "
				    "(empty: ',' for .csv, tab for .tsv)");
		c->csv.delimiter = value[0];
		return 1;
	case K_CSV_EMPTY:
		if (!strcmp(value, "omit"))
			c->csv.empty = CSV_EMPTY_OMIT;
		else if (!strcmp(value, "null"))
			c->csv.empty = CSV_EMPTY_NULL;
		else if (!strcmp(value, "string"))
			c->csv.empty = CSV_EMPTY_STRING;
		else
			return fail(ps, ps->line, name, "must be omit, null or string");
		return 1;
	case K_MAX_RECORD:
		if (parse_ll(value, 16, 1LL << 30, &ll) < 0)
			return fail(ps, ps->line, name, "must be between 16 and 1073741824");
		c->max_record_bytes = (size_t)ll;
		return 1;
	case K_RETRY_INIT:
		if (parse_double(value, 0.001, 3600, &c->retry_initial_seconds) < 0)
			return fail(ps, ps->line, name, "must be between 0.001 and 3600 seconds");
		return 1;
	case K_RETRY_MAX:
		if (parse_double(value, 0.001, 86400, &c->retry_max_seconds) < 0)
			return fail(ps, ps->line, name, "must be between 0.001 and 86400 seconds");
		return 1;
	case K_RETRY_ELAPSED:
		if (!*value) {
			c->retry_max_elapsed_seconds = 0;
			return 1;
		}
		if (parse_double(value, 1, 365 * 86400.0, &c->retry_max_elapsed_seconds) < 0)
			return fail(ps, ps->line, name, "must be empty (forever) or a number of seconds >= 1");
		return 1;
	case K_MAX_DEPTH:
		if (parse_ll(value, 1, RECORD_MAX_DEPTH_LIMIT, &ll) < 0)
			return fail(ps, ps->line, name, "must be between 1 and %d", RECORD_MAX_DEPTH_LIMIT);
		c->max_depth = (unsigned)ll;
		return 1;
	case K_CA_FILE:
		if (value[0] != '/')
			return fail(ps, ps->line, name, "must be an absolute path");
		if (ps->flags & CONFIG_LOAD_NO_SECRETS)
			return set_str(&c->ca_file, value) < 0 ? -1 : 1;
		/* Else every request would fail as a TLS problem and be retried forever. */
		if (access(value, R_OK) < 0)
			return fail(ps, ps->line, name, "cannot read %s: %s", value, strerror(errno));
		if (stat(value, &st) == 0 && !S_ISREG(st.st_mode))
			return fail(ps, ps->line, name, "%s is not a file (a PEM bundle of CA certificates)", value);
		return set_str(&c->ca_file, value) < 0 ? -1 : 1;
	case K_TLS_OFF:
		if (parse_bool(value, &c->tls_verify_disabled) < 0)
			return fail(ps, ps->line, name, "must be yes or no");
		return 1;
	case K_RATE:
		if (parse_rate(value, &c->rate_limit_requests, &c->rate_limit_window_seconds) < 0)
			return fail(ps, ps->line, name, "must be REQUESTS/SECONDSs (e.g. 50/10s) or off");
		return 1;
	case K_CATALOG:
		if (parse_bool(value, &c->field_catalog) < 0)
			return fail(ps, ps->line, name, "must be yes or no");
		return 1;
	case K_API:
		return set_secret(ps, &cp->api, 1, conn_keys[K_API], value);
	case K_API_FILE:
		return set_secret(ps, &cp->api, 2, conn_keys[K_API_FILE], value);
	case K_API_CRED:
		return set_secret(ps, &cp->api, 3, conn_keys[K_API_CRED], value);
	case K_BRAND:
		return set_secret(ps, &cp->brand, 1, conn_keys[K_BRAND], value);
	case K_BRAND_FILE:
		return set_secret(ps, &cp->brand, 2, conn_keys[K_BRAND_FILE], value);
	case K_BRAND_CRED:
		return set_secret(ps, &cp->brand, 3, conn_keys[K_BRAND_CRED], value);
	case K_PROXY:
		return set_proxy(ps, c, name, value);
	default:
		if (value[0] != '/')
			return fail(ps, ps->line, name, "must be an absolute path (a file holding USER:PASSWORD)");
		return set_str(&c->proxy_credentials_file, value) < 0 ? -1 : 1;
	}
}

static void conn_defaults(struct conn_config *c)
{
	c->ttl_seconds = -1;
	c->batch_records = CONFIG_MAX_BATCH_RECORDS;
	c->batch_bytes = 8u << 20;
	c->timeout_seconds = 60;
	c->max_record_bytes = 1u << 20;
	c->max_depth = RECORD_DEFAULT_MAX_DEPTH;
	c->retry_initial_seconds = 1;
	c->retry_max_seconds = 300;
	c->rate_limit_requests = 50;
	c->rate_limit_window_seconds = 10;
	c->field_catalog = true;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *ps = user;
	struct config *cfg = ps->cfg;
	int r;

	if (ps->failed)
		return 0;
	/* inih hands these over with an empty name or section: say which line, not line 0. */
	if (!*name)
		return fail(ps, ps->line, "-", "no key before '='");
	if (!*section)
		return fail(ps, ps->line, name, "outside any section (put it under [daemon] or [connection NAME])");
	if (!strcmp(section, "daemon")) {
		if (ps->continued)
			return fail(ps, ps->line, name, "an indented line continues the value of the key above, and only "
				    "lists (required_fields, csv_columns) continue: unindent '%s'", value);
		r = handle_daemon(ps, name, value);
		return r < 0 ? (fail(ps, ps->line, name, "out of memory"), 0) : r;
	}
	if (!strncmp(section, "connection ", 11)) {
		const char *cname = section + 11;
		size_t i;

		for (i = 0; i < cfg->n_conns; i++)
			if (!strcmp(cfg->conns[i].name, cname))
				break;
		if (i == cfg->n_conns) {
			struct conn_config *nc = realloc(cfg->conns, (i + 1) * sizeof(*nc));
			struct conn_parse *np;

			if (!nc)
				return fail(ps, ps->line, name, "out of memory");
			cfg->conns = nc;
			np = realloc(ps->cp, (i + 1) * sizeof(*np));
			if (!np)
				return fail(ps, ps->line, name, "out of memory");
			ps->cp = np;
			memset(&nc[i], 0, sizeof(nc[i]));
			memset(&np[i], 0, sizeof(np[i]));
			conn_defaults(&nc[i]);
			cfg->n_conns++;
			nc[i].line = ps->section_line;
			if (!(nc[i].name = strdup(cname)))
				return fail(ps, ps->line, name, "out of memory");
			if (!name_valid(cname))
				return fail(ps, ps->section_line, section,
					    "connection name must be letters, digits, '_', '-', '.' and not start with '.'");
		}
		r = handle_conn(ps, &cfg->conns[i], &ps->cp[i], name, value);
		return r < 0 ? (fail(ps, ps->line, name, "out of memory"), 0) : r;
	}
	return fail(ps, ps->section_line, section, "unknown section [%s] (want [daemon] or [connection NAME])", section);
}

/*
 * inih is built without INI_HANDLER_LINENO on Debian: count lines in the reader instead. It also
 * reads at most INI_MAX_LINE bytes a call, so a longer line is refused here at its own number
 * rather than misread as two; and it never reports a section without keys, so headers of
 * [connection NAME] are noted here and checked at the end.
 */
/* After a full buffer: true when the line ended exactly there (its newline is consumed). */
static bool at_line_end(FILE *f)
{
	int ch = getc(f);

	if (ch == '\n' || ch == EOF)
		return true;
	ungetc(ch, f);
	return false;
}

/*
 * A section header, seen before inih sees it: inih merges two sections of one name and never
 * reports a section without keys, so [daemon] and [connection NAME] headers are checked here.
 */
static void note_section(struct parse_state *ps, const char *p)
{
	const char *end = strchr(p, ']');
	char section[INI_MAX_LINE + 1];
	const char *name;
	size_t n;

	ps->section_line = ps->line;
	if (!end)
		return;   /* inih calls it a syntax error */
	n = (size_t)(end - p - 1);
	memcpy(section, p + 1, n);
	section[n] = '\0';
	if (!strcmp(section, "daemon")) {
		if (ps->daemon_line)
			fail(ps, ps->line, section, "section given twice (first on line %d)", ps->daemon_line);
		ps->daemon_line = ps->line;
		return;
	}
	if (strncmp(section, "connection ", 11)) {
		fail(ps, ps->line, section, "unknown section [%s] (want [daemon] or [connection NAME])", section);
		return;
	}
	name = section + 11;
	if (!name_valid(name)) {
		fail(ps, ps->line, section,
		     "connection name must be 1 to 64 letters, digits, '_', '-', '.' and not start with '.'");
		return;
	}
	for (size_t i = 0; i < ps->n_headers; i++) {
		if (!strcmp(ps->headers[i].name, name)) {
			fail(ps, ps->line, section, "section given twice (first on line %d): one section per connection",
			     ps->headers[i].line);
			return;
		}
	}
	if (ps->n_headers == sizeof(ps->headers) / sizeof(ps->headers[0])) {
		fail(ps, ps->line, section, "more than %d connections in one daemon", CONFIG_MAX_CONNECTIONS);
		return;
	}
	memcpy(ps->headers[ps->n_headers].name, name, strlen(name) + 1);   /* name_valid: <= 64 */
	ps->headers[ps->n_headers++].line = ps->line;
}

static char *reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	char *r = fgets(str, num, ps->f);
	const char *p;
	size_t len;

	if (!r || ps->failed)
		return NULL;
	ps->line++;
	len = strlen(r);
	/* fgets stops only at a newline, at EOF or with a full buffer: anything shorter held a NUL,
	 * and the rest of that line would be taken for the next one. */
	if (!feof(ps->f) && (!len || (r[len - 1] != '\n' && len < (size_t)num - 1))) {
		fail(ps, ps->line, "-", "NUL byte in line");
		return NULL;
	}
	if (len && r[len - 1] != '\n' && !feof(ps->f) && !at_line_end(ps->f)) {
		fail(ps, ps->line, "-", "line longer than %d bytes (put long keys in api_key_file / brand_key_file; "
		     "a list such as required_fields goes on over indented lines)", num - 1);
		return NULL;
	}
	/* Blanks as inih skips them (isspace: a CR or form feed too), or a header is missed. */
	for (p = r; isspace((unsigned char)*p); p++)
		;
	/* inih's multi-line values: an indented line after a key is more of its value. */
	if (*p && *p != ';' && *p != '#') {
		ps->continued = p > r && ps->have_key;
		ps->have_key = *p != '[' || ps->continued;
	}
	if (*p == '[') {
		note_section(ps, p);
		if (ps->failed)
			return NULL;
	}
	return r;
}

/*
 * Read a secret from a file (or credential), dropping surrounding blanks and line ends.
 * -ENODATA when nothing is left, -EILSEQ when a control character (a CR or LF inside the key,
 * say) remains: it would go into the HTTP header as is.
 */
static int read_secret(const char *path, char **out)
{
	char buf[4096], *start;
	FILE *f = fopen(path, "re");
	size_t n;
	int r = 0;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	if (ferror(f))
		r = -EIO;
	else if (!feof(f))
		r = -EFBIG;
	fclose(f);
	if (r < 0)
		goto out;
	buf[n] = '\0';
	while (n && isspace((unsigned char)buf[n - 1]))
		buf[--n] = '\0';
	start = buf;
	while (isspace((unsigned char)*start))
		start++;
	if (!*start)
		r = -ENODATA;
	else if (has_control(start))
		r = -EILSEQ;
	else if (!(*out = strdup(start)))
		r = -ENOMEM;
out:
	explicit_bzero(buf, sizeof(buf));
	return r;
}

int config_read_secret(const char *path, char **out)
{
	return read_secret(path, out);
}

static int resolve_secret(struct parse_state *ps, struct conn_config *c, struct secret_src *s,
			  const char *what, char **out, char **source, const struct secret_src **inline_secret)
{
	char path[4096];
	const char *credir;
	int r;

	if (!s->kind)
		return fail(ps, c->line, what, "missing in [connection %s] (give %s, %s_file or %s_credential)",
			    c->name, what, what, what);
	if (s->kind == 1) {
		if (!*inline_secret)
			*inline_secret = s;
		*out = s->value;
		s->value = NULL;
		return 1;
	}
	/* For `dcsyncd connection create --like`: where this key comes from, never the key. */
	if (asprintf(source, "%s = %s", s->key, s->value) < 0) {
		*source = NULL;
		return fail(ps, s->line, s->key, "out of memory");
	}
	if (s->kind == 3) {
		credir = getenv("CREDENTIALS_DIRECTORY");
		if (!credir)
			return fail(ps, s->line, s->key, "no $CREDENTIALS_DIRECTORY (set LoadCredential= in the unit)");
		if (strchr(s->value, '/'))
			return fail(ps, s->line, s->key, "a credential name has no '/'");
		snprintf(path, sizeof(path), "%s/%s", credir, s->value);
	} else {
		snprintf(path, sizeof(path), "%s", s->value);
	}
	r = read_secret(path, out);
	if (r == -ENODATA)
		return fail(ps, s->line, s->key, "%s is empty", path);
	if (r == -EILSEQ)
		return fail(ps, s->line, s->key,
			    "%s holds a line break or another control character inside the key (one key on one line)",
			    path);
	if (r == -EFBIG)
		return fail(ps, s->line, s->key, "%s is larger than 4095 bytes: not a key", path);
	if (r < 0)
		return fail(ps, s->line, s->key, "cannot read %s: %s", path, strerror(-r));
	return 1;
}

/* USER:PASSWORD for the proxy (Basic or whatever it offers), kept like a key: never logged. */
static void read_proxy_credentials(struct parse_state *ps, struct conn_config *c, int line)
{
	const char *key = "proxy_credentials_file", *path = c->proxy_credentials_file;
	int r = read_secret(path, &c->proxy_credentials);

	if (r == -ENODATA)
		fail(ps, line, key, "%s is empty", path);
	else if (r == -EILSEQ)
		fail(ps, line, key, "%s holds a line break or another control character (USER:PASSWORD on one line)", path);
	else if (r == -EFBIG)
		fail(ps, line, key, "%s is larger than 4095 bytes", path);
	else if (r < 0)
		fail(ps, line, key, "cannot read %s: %s", path, strerror(-r));
	else if (!strchr(c->proxy_credentials, ':'))
		fail(ps, line, key, "%s holds no ':' (want USER:PASSWORD on one line)", path);
}

static void finish_conn(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp,
			const struct secret_src **inline_secret)
{
	if (!c->uuid) {
		fail(ps, c->line, "uuid", "missing in [connection %s]", c->name);
		return;
	}
	c->csv.primary_key = c->primary_key;
	if (!c->primary_key) {
		fail(ps, c->line, "primary_key", "missing in [connection %s]", c->name);
		return;
	}
	if (!c->base_url && set_str(&c->base_url, DEFAULT_BASE_URL) < 0) {
		fail(ps, c->line, "base_url", "out of memory");
		return;
	}
	if (c->retry_initial_seconds > c->retry_max_seconds) {
		fail(ps, cp->seen_line[K_RETRY_INIT] ? cp->seen_line[K_RETRY_INIT] : c->line,
		     "retry_initial_seconds", "larger than retry_max_seconds");
		return;
	}
	if (c->max_record_bytes + 256 > c->batch_bytes) {
		fail(ps, cp->seen_line[K_MAX_RECORD] ? cp->seen_line[K_MAX_RECORD] : c->line,
		     "max_record_bytes", "must leave room in batch_bytes (%zu) for one record and the envelope",
		     c->batch_bytes);
		return;
	}
	if (c->proxy_credentials_file && c->proxy_mode == CONN_PROXY_NONE) {
		fail(ps, cp->seen_line[K_PROXY_CRED], "proxy_credentials_file", "given without a proxy (set proxy)");
		return;
	}
	if (ps->flags & CONFIG_LOAD_NO_SECRETS) {
		/* Check that a source is given, read none of them: the caller may not, and need not. */
		struct secret_src none = { 0 };
		const struct secret_src *unused = NULL;

		if (!cp->api.kind)
			resolve_secret(ps, c, &none, "api_key", &c->api_key, &c->api_key_source, &unused);
		else if (!cp->brand.kind)
			resolve_secret(ps, c, &none, "brand_key", &c->brand_key, &c->brand_key_source, &unused);
		return;
	}
	if (resolve_secret(ps, c, &cp->api, "api_key", &c->api_key, &c->api_key_source, inline_secret) <= 0)
		return;
	if (resolve_secret(ps, c, &cp->brand, "brand_key", &c->brand_key, &c->brand_key_source, inline_secret) <= 0)
		return;
	if (c->proxy_credentials_file)
		read_proxy_credentials(ps, c, cp->seen_line[K_PROXY_CRED]);
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
	return config_load_flags(path, 0, out, err, errlen);
}

int config_load_flags(const char *path, unsigned flags, struct config **out, char *err, size_t errlen)
{
	struct parse_state ps = { .err = err, .errlen = errlen, .flags = flags };
	struct config *cfg = calloc(1, sizeof(*cfg));
	const struct secret_src *inline_secret = NULL;
	struct stat st;
	int r = 0, ir;

	if (!cfg)
		return -ENOMEM;
	ps.cfg = cfg;
	cfg->log_level = LOG_LVL_INFO;
	cfg->after_upload = AFTER_UPLOAD_ARCHIVE;
	cfg->drain_timeout_seconds = 60;
	cfg->settle_seconds = 5;
	if (!(cfg->path = strdup(path))) {
		r = -ENOMEM;
		goto out;
	}
	ps.f = fopen(path, "re");
	if (!ps.f) {
		r = -errno;
		snprintf(err, errlen, "%s:0: -: cannot open: %s", path, strerror(-r));
		goto out;
	}
	ir = ini_parse_stream(reader, &ps, handler, &ps);
	if (ir > 0 && !ps.failed)
		fail(&ps, ir, "-", "syntax error (want key = value or [section])");
	if (fstat(fileno(ps.f), &st) < 0)
		st.st_mode = 0600;
	fclose(ps.f);
	if (!ps.failed && (!cfg->spool_dir && set_str(&cfg->spool_dir, "/var/spool/dcsyncd") < 0))
		fail(&ps, 0, "spool_dir", "out of memory");
	if (!ps.failed && (!cfg->state_dir && set_str(&cfg->state_dir, "/var/lib/dcsyncd") < 0))
		fail(&ps, 0, "state_dir", "out of memory");
	for (size_t h = 0; h < ps.n_headers && !ps.failed; h++)
		if (!config_find_conn(cfg, ps.headers[h].name))
			fail(&ps, ps.headers[h].line, "uuid", "missing in [connection %s] (the section has no keys)",
			     ps.headers[h].name);
	if (!ps.failed && cfg->n_conns == 0)
		fail(&ps, ps.line, "connection", "no [connection NAME] section: nothing to upload");
	for (size_t i = 0; i < cfg->n_conns && !ps.failed; i++) {
		finish_conn(&ps, &cfg->conns[i], &ps.cp[i], &inline_secret);
		for (size_t j = 0; j < i && !ps.failed; j++)
			if (!strcmp(cfg->conns[i].uuid, cfg->conns[j].uuid))
				fail(&ps, ps.cp[i].seen_line[K_UUID], "uuid",
				     "already used by [connection %s]: one spool directory per Data Connection keeps order",
				     cfg->conns[j].name);
	}
	if (!ps.failed && inline_secret && (st.st_mode & 077))
		fail(&ps, inline_secret->line, inline_secret->key,
		     "a key written inline needs a file readable by its owner only (chmod 600, or use %s_file)",
		     inline_secret->key);
	if (ps.failed)
		r = -EINVAL;
out:
	for (size_t i = 0; ps.cp && i < cfg->n_conns; i++) {
		free(ps.cp[i].api.value);
		free(ps.cp[i].brand.value);
	}
	free(ps.cp);
	if (r < 0) {
		config_free(cfg);
		return r;
	}
	*out = cfg;
	return 0;
}

static void conn_config_release(struct conn_config *c)
{
	free(c->name);
	free(c->uuid);
	free(c->primary_key);
	free(c->base_url);
	if (c->api_key)
		explicit_bzero(c->api_key, strlen(c->api_key));
	if (c->brand_key)
		explicit_bzero(c->brand_key, strlen(c->brand_key));
	free(c->api_key);
	free(c->brand_key);
	if (c->proxy_credentials)
		explicit_bzero(c->proxy_credentials, strlen(c->proxy_credentials));
	free(c->proxy_credentials);
	free(c->proxy_credentials_file);
	free(c->proxy);
	free(c->api_key_source);
	free(c->brand_key_source);
	for (size_t j = 0; c->required_fields && j < c->n_required_fields; j++)
		free(c->required_fields[j]);
	free(c->required_fields);
	csv_options_release(&c->csv);
	free(c->ca_file);
}

void config_conn_free(struct conn_config *c)
{
	if (!c)
		return;
	conn_config_release(c);
	free(c);
}

static int dup_str(char **dst, const char *src)
{
	*dst = NULL;
	return src && !(*dst = strdup(src)) ? -ENOMEM : 0;
}

int config_conn_dup(const struct conn_config *src, struct conn_config **out)
{
	struct conn_config *c = malloc(sizeof(*c));
	int r = -ENOMEM;

	if (!c)
		return -ENOMEM;
	*c = *src;
	/* Every pointer is the copy's own from here on: a failure frees only what was copied. */
	c->name = c->uuid = c->primary_key = c->base_url = c->api_key = c->brand_key = c->ca_file = NULL;
	c->proxy = c->proxy_credentials_file = c->proxy_credentials = c->api_key_source = c->brand_key_source = NULL;
	c->required_fields = NULL;
	c->csv.columns = NULL;
	c->csv.n_columns = 0;
	if (dup_str(&c->name, src->name) < 0 || dup_str(&c->uuid, src->uuid) < 0 ||
	    dup_str(&c->primary_key, src->primary_key) < 0 || dup_str(&c->base_url, src->base_url) < 0 ||
	    dup_str(&c->api_key, src->api_key) < 0 || dup_str(&c->brand_key, src->brand_key) < 0 ||
	    dup_str(&c->ca_file, src->ca_file) < 0 || dup_str(&c->proxy, src->proxy) < 0 ||
	    dup_str(&c->proxy_credentials_file, src->proxy_credentials_file) < 0 ||
	    dup_str(&c->proxy_credentials, src->proxy_credentials) < 0 ||
	    dup_str(&c->api_key_source, src->api_key_source) < 0 ||
	    dup_str(&c->brand_key_source, src->brand_key_source) < 0)
		goto fail;
	if (src->n_required_fields) {
		c->required_fields = calloc(src->n_required_fields, sizeof(*c->required_fields));
		if (!c->required_fields)
			goto fail;
		for (size_t i = 0; i < src->n_required_fields; i++)
			if (dup_str(&c->required_fields[i], src->required_fields[i]) < 0)
				goto fail;
	}
	if (src->csv.n_columns) {
		c->csv.columns = calloc(src->csv.n_columns, sizeof(*c->csv.columns));
		if (!c->csv.columns)
			goto fail;
		for (size_t i = 0; i < src->csv.n_columns; i++, c->csv.n_columns++) {
			c->csv.columns[i].type = src->csv.columns[i].type;
			if (dup_str(&c->csv.columns[i].name, src->csv.columns[i].name) < 0)
				goto fail;
		}
	}
	c->csv.primary_key = c->primary_key;
	*out = c;
	return 0;
fail:
	config_conn_free(c);
	return r;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_conns; i++)
		conn_config_release(&cfg->conns[i]);
	free(cfg->conns);
	free(cfg->path);
	free(cfg->spool_dir);
	free(cfg->state_dir);
	free(cfg->metrics_file);
	free(cfg);
}

const struct conn_config *config_find_conn(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_conns; i++)
		if (!strcmp(cfg->conns[i].name, name))
			return &cfg->conns[i];
	return NULL;
}
