/* config: load dcsyncd.conf into an immutable struct config: whole-file checks, secrets, copy, free. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_parse.h"

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
	else if (config_has_control(start))
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
		return config_fail(ps, c->line, what, "missing in [connection %s] (give %s, %s_file or %s_credential)",
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
		return config_fail(ps, s->line, s->key, "out of memory");
	}
	if (s->kind == 3) {
		credir = getenv("CREDENTIALS_DIRECTORY");
		if (!credir)
			return config_fail(ps, s->line, s->key, "no $CREDENTIALS_DIRECTORY (set LoadCredential= in the unit)");
		if (strchr(s->value, '/'))
			return config_fail(ps, s->line, s->key, "a credential name has no '/'");
		snprintf(path, sizeof(path), "%s/%s", credir, s->value);
	} else {
		snprintf(path, sizeof(path), "%s", s->value);
	}
	r = read_secret(path, out);
	if (r == -ENODATA)
		return config_fail(ps, s->line, s->key, "%s is empty", path);
	if (r == -EILSEQ)
		return config_fail(ps, s->line, s->key,
				   "%s holds a line break or another control character inside the key (one key on one line)",
				   path);
	if (r == -EFBIG)
		return config_fail(ps, s->line, s->key, "%s is larger than 4095 bytes: not a key", path);
	if (r < 0)
		return config_fail(ps, s->line, s->key, "cannot read %s: %s", path, strerror(-r));
	return 1;
}

/* USER:PASSWORD for the proxy (Basic or whatever it offers), kept like a key: never logged. */
static void read_proxy_credentials(struct parse_state *ps, struct conn_config *c, int line)
{
	const char *key = "proxy_credentials_file", *path = c->proxy_credentials_file;
	int r = read_secret(path, &c->proxy_credentials);

	if (r == -ENODATA)
		config_fail(ps, line, key, "%s is empty", path);
	else if (r == -EILSEQ)
		config_fail(ps, line, key, "%s holds a line break or another control character (USER:PASSWORD on one line)",
			    path);
	else if (r == -EFBIG)
		config_fail(ps, line, key, "%s is larger than 4095 bytes", path);
	else if (r < 0)
		config_fail(ps, line, key, "cannot read %s: %s", path, strerror(-r));
	else if (!strchr(c->proxy_credentials, ':'))
		config_fail(ps, line, key, "%s holds no ':' (want USER:PASSWORD on one line)", path);
}

/* What one key cannot tell alone: the keys a connection must have, one key against another, the secrets. */
static void finish_conn(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp,
			const struct secret_src **inline_secret)
{
	int retry_line = config_conn_key_line(cp, "retry_initial_seconds");
	int record_line = config_conn_key_line(cp, "max_record_bytes");
	int proxy_cred_line = config_conn_key_line(cp, "proxy_credentials_file");

	c->csv.primary_key = c->primary_key;
	if (!config_conn_check_required(ps, c, cp))
		return;
	if (c->retry_initial_seconds > c->retry_max_seconds) {
		config_fail(ps, retry_line ? retry_line : c->line, "retry_initial_seconds",
			    "larger than retry_max_seconds");
		return;
	}
	if (c->max_record_bytes + 256 > c->batch_bytes) {
		config_fail(ps, record_line ? record_line : c->line, "max_record_bytes",
			    "must leave room in batch_bytes (%zu) for one record and the envelope", c->batch_bytes);
		return;
	}
	if (c->proxy_credentials_file && c->proxy_mode == CONN_PROXY_NONE) {
		config_fail(ps, proxy_cred_line, "proxy_credentials_file", "given without a proxy (set proxy)");
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
		read_proxy_credentials(ps, c, proxy_cred_line);
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
	int r = 0;

	if (!cfg)
		return -ENOMEM;
	ps.cfg = cfg;
	if (!(cfg->path = strdup(path)) || config_daemon_defaults(&ps) < 0) {
		r = -ENOMEM;
		goto out;
	}
	ps.f = fopen(path, "re");
	if (!ps.f) {
		r = -errno;
		snprintf(err, errlen, "%s:0: -: cannot open: %s", path, strerror(-r));
		goto out;
	}
	config_ini_parse(&ps);
	if (fstat(fileno(ps.f), &st) < 0)
		st.st_mode = 0600;
	fclose(ps.f);
	for (size_t h = 0; h < ps.n_headers && !ps.failed; h++)
		if (!config_find_conn(cfg, ps.headers[h].name))
			config_fail(&ps, ps.headers[h].line, "uuid",
				    "missing in [connection %s] (the section has no keys)", ps.headers[h].name);
	if (!ps.failed && cfg->n_conns == 0)
		config_fail(&ps, ps.line, "connection", "no [connection NAME] section: nothing to upload");
	for (size_t i = 0; i < cfg->n_conns && !ps.failed; i++) {
		finish_conn(&ps, &cfg->conns[i], &ps.cp[i], &inline_secret);
		for (size_t j = 0; j < i && !ps.failed; j++)
			if (!strcmp(cfg->conns[i].uuid, cfg->conns[j].uuid))
				config_fail(&ps, config_conn_key_line(&ps.cp[i], "uuid"), "uuid", "already used by "
					    "[connection %s]: one spool directory per Data Connection keeps order",
					    cfg->conns[j].name);
	}
	if (!ps.failed && inline_secret && (st.st_mode & 077))
		config_fail(&ps, inline_secret->line, inline_secret->key,
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
	record_csv_options_release(&c->csv);
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
