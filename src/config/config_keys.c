/* config_keys: the table of configuration keys, and the parsing and checking of each value as it is read. */
#include "config/config_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "record/record_check.h"
#include "record/record_csv.h"
#include "record/record_decompress.h"

int config_fail(struct parse_state *ps, int line, const char *key, const char *fmt, ...)
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

#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * Conversions of the configuration's limits and defaults: every value is parsed and checked here
 * against its key's row, at its line, so no code after config_load has a limit to discover.
 */

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

static void store_int(void *field, enum int_type t, long long v)
{
	switch (t) {
	case INT_T_NONE:
		break;
	case INT_T_INT:
		*(int *)field = (int)v;
		break;
	case INT_T_UINT:
		*(unsigned *)field = (unsigned)v;
		break;
	case INT_T_LONG:
		*(long *)field = (long)v;
		break;
	case INT_T_ULONG:
		*(unsigned long *)field = (unsigned long)v;
		break;
	case INT_T_LLONG:
		*(long long *)field = v;
		break;
	}
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

bool config_has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

int config_set_str(char **dst, const char *v)
{
	char *d = strdup(v);

	if (!d)
		return -ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
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

/* The custom setters: each refuses with config_fail at ps->line, or returns 1 (-ENOMEM). */

static int set_uuid(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;

	if (!uuid_valid(value))
		return config_fail(ps, ps->line, k->name, "not a UUID (want 8-4-4-4-12 hex digits): '%s'", value);
	return config_set_str(&c->uuid, value) < 0 ? -ENOMEM : 1;
}

static int set_base_url(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;
	const char *why = url_problem(value);

	if (why)
		return config_fail(ps, ps->line, k->name, "%s", why);
	return config_set_str(&c->base_url, value) < 0 ? -ENOMEM : 1;
}

/* required_fields, on one line or continued on indented lines. */
static int append_fields(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;

	if (split_fields(value, &c->required_fields, &c->n_required_fields) < 0)
		return -ENOMEM;
	/* The validator tracks this many: more would load here and fail at start or on reload. */
	if (c->n_required_fields > RECORD_MAX_REQUIRED)
		return config_fail(ps, ps->line, k->name, "%zu fields: at most %d", c->n_required_fields,
				   RECORD_MAX_REQUIRED);
	return 1;
}

/* csv_columns, on one line or continued on indented lines. */
static int append_columns(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;
	char why[256];
	int r = record_csv_columns_parse(&c->csv, value, why, sizeof(why));

	if (r == -EINVAL)
		return config_fail(ps, ps->line, k->name, "%s", why);
	return r < 0 ? r : 1;
}

static int set_delimiter(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;

	/* inih takes " ;" for the start of a comment: csv_delimiter = ; arrives empty. */
	if (!*value)
		return config_fail(ps, ps->line, k->name, "empty (leave the key out for ',' in .csv and tab in .tsv; "
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
		return config_fail(ps, ps->line, k->name, "must be one printable character other than '\"' and ' ', "
				   "or tab (empty: ',' for .csv, tab for .tsv)");
	c->csv.delimiter = value[0];
	return 1;
}

static int set_ca_file(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;
	struct stat st;

	if (value[0] != '/')
		return config_fail(ps, ps->line, k->name, "must be an absolute path");
	/* Else every request would fail as a TLS problem and be retried forever. */
	if (!(ps->flags & CONFIG_LOAD_NO_SECRETS)) {
		if (access(value, R_OK) < 0)
			return config_fail(ps, ps->line, k->name, "cannot read %s: %s", value, strerror(errno));
		if (stat(value, &st) == 0 && !S_ISREG(st.st_mode))
			return config_fail(ps, ps->line, k->name, "%s is not a file (a PEM bundle of CA certificates)",
					   value);
	}
	return config_set_str(&c->ca_file, value) < 0 ? -ENOMEM : 1;
}

static int set_rate(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;

	if (parse_rate(value, &c->rate_limit_requests, &c->rate_limit_window_seconds) < 0)
		return config_fail(ps, ps->line, k->name, "must be REQUESTS/SECONDSs (e.g. 50/10s) or off");
	return 1;
}

/* "" or "none", "env", or http(s)://host:port with no credentials in it (a URL may reach a log). */
static int set_proxy(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;
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
		return config_fail(ps, ps->line, k->name, "%s (want none, env or http://HOST:PORT)", why);
	host = strstr(value, "://") + 3;
	if (memchr(host, '@', strcspn(host, "/")))
		return config_fail(ps, ps->line, k->name,
				   "holds credentials ('@'): put USER:PASSWORD in proxy_credentials_file");
	c->proxy_mode = CONN_PROXY_URL;
	return config_set_str(&c->proxy, value) < 0 ? -ENOMEM : 1;
}

/* A power of two: zstd's windows are, and the bound is given to it as a logarithm. */
static int set_zstd_window(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct conn_config *c = section;
	long long mib;

	if (parse_ll(value, 1, DECOMPRESS_ZSTD_WINDOW_MIB_MAX, &mib) < 0 || (mib & (mib - 1)))
		return config_fail(ps, ps->line, k->name, "must be a power of two from 1 to %d (MiB; zstd --long=N asks "
				   "for 2^(N-20))", DECOMPRESS_ZSTD_WINDOW_MIB_MAX);
	c->zstd_window_max_mib = (unsigned)mib;
	return 1;
}

static int set_log_level(struct parse_state *ps, const struct key *k, void *section, const char *value)
{
	struct config *cfg = section;

	if (log_level_parse(value, &cfg->log_level) < 0)
		return config_fail(ps, ps->line, k->name, "must be one of error, warning, info, debug");
	return 1;
}

static const struct key_choice after_upload_choices[] = {
	{ "archive", AFTER_UPLOAD_ARCHIVE }, { "delete", AFTER_UPLOAD_DELETE }, { NULL, 0 },
};

static const struct key_choice csv_empty_choices[] = {
	{ "omit", CSV_EMPTY_OMIT }, { "null", CSV_EMPTY_NULL }, { "string", CSV_EMPTY_STRING }, { NULL, 0 },
};

/* The type of an integer field, for store_int (size_t is one of unsigned and unsigned long). */
#define INT_TYPE(x) _Generic((x), int: INT_T_INT, unsigned: INT_T_UINT, long: INT_T_LONG, \
			     unsigned long: INT_T_ULONG, long long: INT_T_LLONG, \
			     default: INT_T_NONE)
#define FIELD(s, f) .off = offsetof(struct s, f), .int_type = INT_TYPE(((struct s *)0)->f)
#define D(f) FIELD(config, f)
#define C(f) FIELD(conn_config, f)
#define SECRET(which, src) .kind = KEY_SECRET, .off = offsetof(struct conn_parse, which), .source = src

static const struct key daemon_keys[] = {
	{ "spool_dir", KEY_PATH, D(spool_dir), .max = CONFIG_MAX_DIR_PATH, .why = "must be an absolute path",
	  .def = "/var/spool/dcsyncd" },
	{ "state_dir", KEY_PATH, D(state_dir), .max = CONFIG_MAX_DIR_PATH, .why = "must be an absolute path",
	  .def = "/var/lib/dcsyncd" },
	{ "log_level", KEY_CUSTOM, .set = set_log_level, .def = "info" },
	{ "after_upload", KEY_CHOICE, D(after_upload), .choices = after_upload_choices,
	  .why = "must be archive or delete", .def = "archive" },
	{ "metrics_file", KEY_PATH, KEY_EMPTY_NONE, D(metrics_file), .max = CONFIG_MAX_DIR_PATH,
	  .why = "must be an absolute path" },
	{ "drain_timeout_seconds", KEY_NUMBER, D(drain_timeout_seconds), .min = 0, .max = 3600,
	  .why = "must be a number of seconds between 0 and 3600", .def = "60" },
	{ "settle_seconds", KEY_NUMBER, D(settle_seconds), .min = 0, .max = 3600,
	  .why = "must be a number of seconds between 0 and 3600", .def = "5" },
	{ "open_recheck_seconds", KEY_NUMBER, D(open_recheck_seconds), .min = 0, .max = 604800,
	  .why = "must be a number of seconds between 0 and 604800 (0: 10 x settle_seconds)", .def = "0" },
};

static const struct key conn_keys[] = {
	{ "uuid", KEY_CUSTOM, KEY_REQUIRED, .set = set_uuid },
	{ "primary_key", KEY_TEXT, KEY_REQUIRED, C(primary_key) },
	{ "base_url", KEY_CUSTOM, .set = set_base_url, .def = CONFIG_DEFAULT_BASE_URL },
	{ "ttl_seconds", KEY_INT, KEY_EMPTY_NONE, C(ttl_seconds), .min = 1, .max = 100LL * 365 * 86400, .none = -1,
	  .why = "must be empty (no expiry) or a positive number of seconds", .def = "" },
	{ "batch_records", KEY_INT, C(batch_records), .min = 1, .max = RECORD_MAX_PER_REQUEST,
	  .def = STR(RECORD_MAX_PER_REQUEST) },
	{ "batch_bytes", KEY_INT, C(batch_bytes), .min = 1024, .max = 1 << 30, .def = "8388608" },
	{ "timeout_seconds", KEY_INT, C(timeout_seconds), .min = 1, .max = 3600, .unit = " seconds", .def = "60" },
	{ "required_fields", KEY_CUSTOM, KEY_LIST, .set = append_fields },
	{ "max_record_bytes", KEY_INT, C(max_record_bytes), .min = 16, .max = 1 << 30, .def = "1048576" },
	{ "rejected_max_bytes", KEY_INT, C(rejected_max_bytes), .min = 4096, .max = 1LL << 40, .def = "67108864" },
	{ "rejected_max_lines", KEY_INT, C(rejected_max_lines), .min = 1, .max = 1LL << 40, .def = "100000" },
	{ "zstd_window_max_mib", KEY_CUSTOM, .set = set_zstd_window, .def = STR(DECOMPRESS_ZSTD_WINDOW_MIB) },
	{ "retry_initial_seconds", KEY_NUMBER, C(retry_initial_seconds), .min = 0.001, .max = 3600,
	  .unit = " seconds", .def = "1" },
	{ "retry_max_seconds", KEY_NUMBER, C(retry_max_seconds), .min = 0.001, .max = 86400, .unit = " seconds",
	  .def = "300" },
	{ "retry_max_elapsed_seconds", KEY_NUMBER, KEY_EMPTY_NONE, C(retry_max_elapsed_seconds), .min = 1,
	  .max = 365 * 86400.0, .none = 0, .why = "must be empty (forever) or a number of seconds >= 1", .def = "" },
	{ "ca_file", KEY_CUSTOM, .set = set_ca_file },
	{ "tls_verify_insecure_disable", KEY_BOOL, C(tls_verify_disabled), .def = "no" },
	{ "rate_limit", KEY_CUSTOM, .set = set_rate, .def = "50/10s" },
	{ "field_catalog", KEY_BOOL, C(field_catalog), .def = "yes" },
	{ "history_entries", KEY_INT, C(history_entries), .min = 1, .max = 10000, .def = "1000" },
	{ "skip_unchanged", KEY_BOOL, C(skip_unchanged), .def = "no" },
	{ "unchanged_resend_seconds", KEY_INT, KEY_EMPTY_NONE, C(unchanged_resend_seconds), .min = 1,
	  .max = 100LL * 365 * 86400, .none = 0, .why = "must be empty (never) or a positive number of seconds", .def = "" },
	{ "max_depth", KEY_INT, C(max_depth), .min = 1, .max = RECORD_MAX_DEPTH_LIMIT,
	  .def = STR(RECORD_DEFAULT_MAX_DEPTH) },
	{ "api_key", SECRET(api, 1) },
	{ "api_key_file", SECRET(api, 2) },
	{ "api_key_credential", SECRET(api, 3) },
	{ "brand_key", SECRET(brand, 1) },
	{ "brand_key_file", SECRET(brand, 2) },
	{ "brand_key_credential", SECRET(brand, 3) },
	{ "csv_columns", KEY_CUSTOM, KEY_LIST, .set = append_columns },
	{ "csv_delimiter", KEY_CUSTOM, .set = set_delimiter },
	{ "csv_empty", KEY_CHOICE, C(csv.empty), .choices = csv_empty_choices, .why = "must be omit, null or string",
	  .def = "omit" },
	{ "proxy", KEY_CUSTOM, .set = set_proxy, .def = "none" },
	{ "proxy_credentials_file", KEY_PATH, C(proxy_credentials_file),
	  .why = "must be an absolute path (a file holding USER:PASSWORD)" },
};

#define N_DAEMON_KEYS (sizeof(daemon_keys) / sizeof(daemon_keys[0]))
#define N_CONN_KEYS (sizeof(conn_keys) / sizeof(conn_keys[0]))

_Static_assert(N_CONN_KEYS <= 64, "conn_parse.seen is a 64-bit mask");
_Static_assert(N_DAEMON_KEYS <= 32, "parse_state.daemon_seen is a 32-bit mask");

const struct key *config_keys(int section, size_t *n)
{
	*n = section ? N_CONN_KEYS : N_DAEMON_KEYS;
	return section ? conn_keys : daemon_keys;
}

static int set_secret(struct parse_state *ps, const struct key *k, struct secret_src *s, const char *value)
{
	if (s->kind)
		return config_fail(ps, ps->line, k->name, "two sources for one key (%s was given on line %d)",
				   s->key, s->line);
	if (!*value)
		return config_fail(ps, ps->line, k->name, "empty value");
	if (config_has_control(value))
		return config_fail(ps, ps->line, k->name, "%s holds a control character",
				   k->source == 1 ? "the key" : k->source == 2 ? "the path" : "the credential name");
	s->kind = k->source;
	s->line = ps->line;
	/* The table's name: inih's line buffer is gone by the time of errors. */
	s->key = k->name;
	s->value = strdup(value);
	return s->value ? 1 : -ENOMEM;
}

/* Parse @value as @k says into @section (struct config or struct conn_config): 1, 0 refused, -ENOMEM. */
static int set_value(struct parse_state *ps, const struct key *k, void *section, struct conn_parse *cp,
		     const char *value)
{
	char *field = (char *)section + k->off;
	long long ll;

	if ((k->flags & KEY_EMPTY_NONE) && !*value) {
		if (k->kind == KEY_PATH) {
			free(*(char **)field);
			*(char **)field = NULL;
		} else if (k->kind == KEY_INT) {
			store_int(field, k->int_type, (long long)k->none);
		} else {
			*(double *)field = k->none;
		}
		return 1;
	}
	switch (k->kind) {
	case KEY_INT:
		if (parse_ll(value, (long long)k->min, (long long)k->max, &ll) < 0) {
			if (k->why)
				return config_fail(ps, ps->line, k->name, "%s", k->why);
			return config_fail(ps, ps->line, k->name, "must be between %lld and %lld%s", (long long)k->min,
					   (long long)k->max, k->unit ? k->unit : "");
		}
		store_int(field, k->int_type, ll);
		return 1;
	case KEY_NUMBER:
		if (parse_double(value, k->min, k->max, (double *)field) < 0) {
			if (k->why)
				return config_fail(ps, ps->line, k->name, "%s", k->why);
			return config_fail(ps, ps->line, k->name, "must be between %g and %g%s", k->min, k->max,
					   k->unit ? k->unit : "");
		}
		return 1;
	case KEY_BOOL:
		if (parse_bool(value, (bool *)field) < 0)
			return config_fail(ps, ps->line, k->name, "must be yes or no");
		return 1;
	case KEY_CHOICE:
		for (const struct key_choice *ch = k->choices; ch->text; ch++) {
			if (!strcmp(value, ch->text)) {
				store_int(field, k->int_type, ch->value);
				return 1;
			}
		}
		return config_fail(ps, ps->line, k->name, "%s", k->why);
	case KEY_TEXT:
		if (!*value)
			return config_fail(ps, ps->line, k->name, "empty value");
		return config_set_str((char **)field, value) < 0 ? -ENOMEM : 1;
	case KEY_PATH:
		if (value[0] != '/')
			return config_fail(ps, ps->line, k->name, "%s", k->why);
		if (k->max > 0 && (double)strlen(value) > k->max)
			return config_fail(ps, ps->line, k->name, "longer than %.0f bytes", k->max);
		return config_set_str((char **)field, value) < 0 ? -ENOMEM : 1;
	case KEY_SECRET:
		return set_secret(ps, k, (struct secret_src *)(void *)((char *)cp + k->off), value);
	case KEY_CUSTOM:
		return k->set(ps, k, section, value);
	}
	return config_fail(ps, ps->line, k->name, "unknown kind of key");
}

static int find_key(const struct key *keys, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(name, keys[i].name))
			return (int)i;
	return -1;
}

static int continuation_refused(struct parse_state *ps, const char *name, const char *value)
{
	return config_fail(ps, ps->line, name, "an indented line continues the value of the key above, and only "
			   "lists (required_fields, csv_columns) continue: unindent '%s'", value);
}

int config_set_daemon_key(struct parse_state *ps, const char *name, const char *value)
{
	int i;

	if (ps->continued)
		return continuation_refused(ps, name, value);
	i = find_key(daemon_keys, N_DAEMON_KEYS, name);
	if (i < 0)
		return config_fail(ps, ps->line, name, "unknown key in [daemon]");
	if (ps->daemon_seen & (1u << i))
		return config_fail(ps, ps->line, name, "given twice");
	ps->daemon_seen |= 1u << i;
	return set_value(ps, &daemon_keys[i], ps->cfg, NULL, value);
}

int config_set_conn_key(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp,
			const char *name, const char *value)
{
	int i = find_key(conn_keys, N_CONN_KEYS, name);

	if (i < 0)
		return config_fail(ps, ps->line, name, "unknown key in [connection %s]", c->name);
	if (ps->continued) {
		/* An indented line after a key: inih hands it over as more of that key's value. */
		if (!(conn_keys[i].flags & KEY_LIST))
			return continuation_refused(ps, name, value);
		if (strchr(value, '='))
			return config_fail(ps, ps->line, name,
					   "a continuation line holds '=' (an indented key? remove the indentation)");
		return set_value(ps, &conn_keys[i], c, cp, value);
	}
	if (cp->seen & (UINT64_C(1) << i))
		return config_fail(ps, ps->line, name, "given twice (first on line %d)", cp->seen_line[i]);
	cp->seen |= UINT64_C(1) << i;
	cp->seen_line[i] = ps->line;
	return set_value(ps, &conn_keys[i], c, cp, value);
}

/* Defaults go through the same parsing as the file's values: the table's text is what an operator would write. */
static int set_defaults(struct parse_state *ps, const struct key *keys, size_t n, void *section,
			struct conn_parse *cp)
{
	for (size_t i = 0; i < n; i++) {
		int r = keys[i].def ? set_value(ps, &keys[i], section, cp, keys[i].def) : 1;

		if (r <= 0)
			return r < 0 ? r : -EINVAL;
	}
	return 0;
}

int config_daemon_defaults(struct parse_state *ps)
{
	return set_defaults(ps, daemon_keys, N_DAEMON_KEYS, ps->cfg, NULL);
}

int config_conn_defaults(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp)
{
	return set_defaults(ps, conn_keys, N_CONN_KEYS, c, cp);
}

int config_conn_check_required(struct parse_state *ps, const struct conn_config *c, const struct conn_parse *cp)
{
	for (size_t i = 0; i < N_CONN_KEYS; i++)
		if ((conn_keys[i].flags & KEY_REQUIRED) && !(cp->seen & (UINT64_C(1) << i)))
			return config_fail(ps, c->line, conn_keys[i].name, "missing in [connection %s]", c->name);
	return 1;
}

int config_conn_key_line(const struct conn_parse *cp, const char *name)
{
	int i = find_key(conn_keys, N_CONN_KEYS, name);

	return i >= 0 ? cp->seen_line[i] : 0;
}
