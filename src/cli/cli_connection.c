/* cli_connection: `dcsyncd connection create`: make a Data Connection at the API, print its section. */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <yajl/yajl_tree.h>

#include "util/jsonstr.h"
#include "wire/wire_upload.h"

#define RESPONSE_MAX 4096

struct answer {
	char buf[RESPONSE_MAX + 1];
	size_t len;
};

/* What the request needs: from a section (--like) or from the options. */
struct target {
	const char *base_url;
	const char *api_key, *brand_key;
	const char *api_source, *brand_source;   /* lines for the printed section */
	const char *ca_file;
	bool tls_off;
	const char *proxy;                       /* NULL, "env" or a URL, as upload_client_opts */
	const char *proxy_credentials;
	const char *proxy_credentials_file;
	long timeout;
};

static void usage(FILE *f)
{
	fputs("Usage: dcsyncd -c FILE connection create NAME --primary-key FIELD [--description TEXT] --like CONNECTION\n"
	      "       dcsyncd [-c FILE] connection create NAME --primary-key FIELD [--description TEXT]\n"
	      "               [--base-url URL] --api-key-file FILE --brand-key-file FILE\n", f);
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct answer *a = userdata;
	size_t n = size * nmemb, room = RESPONSE_MAX - a->len;

	memcpy(a->buf + a->len, ptr, n < room ? n : room);
	a->len += n < room ? n : room;
	return n;
}

static bool section_name_ok(const char *s)
{
	if (!*s || *s == '.' || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

static bool uuid_shaped(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++)
		if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static int body_of(char **body, const char *name, const char *pk, const char *description)
{
	size_t len = 0, cap = 0;
	int r;

	*body = NULL;
	if ((r = jsonstr_raw(body, &len, &cap, "{\"name\":", 8)) < 0 ||
	    (r = jsonstr_append(body, &len, &cap, name, strlen(name))) < 0 ||
	    (r = jsonstr_raw(body, &len, &cap, ",\"primary_key\":", 15)) < 0 ||
	    (r = jsonstr_append(body, &len, &cap, pk, strlen(pk))) < 0)
		return r;
	if (description && ((r = jsonstr_raw(body, &len, &cap, ",\"description\":", 15)) < 0 ||
			    (r = jsonstr_append(body, &len, &cap, description, strlen(description))) < 0))
		return r;
	return jsonstr_raw(body, &len, &cap, "}", 2);   /* with its NUL */
}

/* The server's text for a message: printable ASCII, short. */
static void printable(char *dst, size_t cap, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < cap; i++)
		dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
	dst[i] = '\0';
}

/* POST {base_url}/connections; the new uuid into @uuid (37 bytes). */
static int create(const struct target *t, const char *body, char *uuid)
{
	CURL *easy = curl_easy_init();
	struct curl_slist *h = NULL;
	struct answer a = { .len = 0 };
	char *url = NULL, err[CURL_ERROR_SIZE] = "", shown[301];
	const struct upload_client_opts o = { .timeout_seconds = t->timeout, .ca_file = t->ca_file,
					      .tls_verify_disabled = t->tls_off, .proxy = t->proxy,
					      .proxy_credentials = t->proxy_credentials };
	yajl_val doc = NULL, v;
	const char *path[] = { "data_connection_uuid", NULL }, *got;
	long status = 0;
	int r = -EIO;

	if (!easy || asprintf(&url, "%s/connections", t->base_url) < 0)
		goto out;
	h = wire_upload_headers_new(t->api_key, t->brand_key);
	if (!h)
		goto out;
	if (wire_upload_easy_setup(easy, url, h, &o) < 0)
		goto out;
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, err);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &a);
	if (curl_easy_perform(easy) != CURLE_OK) {
		fprintf(stderr, "cannot reach %s: %s\n", url, err);
		goto out;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	a.buf[a.len] = '\0';
	printable(shown, sizeof(shown), a.buf);
	if (status == 401 || status == 403) {
		fprintf(stderr, "the API refused the keys (HTTP %ld): %s\n", status, shown);
		goto out;
	}
	if (status < 200 || status > 299) {
		fprintf(stderr, "%s answered HTTP %ld: %s\n", url, status, shown);
		goto out;
	}
	doc = yajl_tree_parse(a.buf, NULL, 0);
	v = doc ? yajl_tree_get(doc, path, yajl_t_string) : NULL;
	got = v ? YAJL_GET_STRING(v) : NULL;
	if (!got || !uuid_shaped(got)) {
		fprintf(stderr, "%s answered HTTP %ld without a data_connection_uuid: %s\n", url, status, shown);
		goto out;
	}
	memcpy(uuid, got, 37);
	r = 0;
out:
	yajl_tree_free(doc);
	curl_slist_free_all(h);
	if (easy)
		curl_easy_cleanup(easy);
	free(url);
	return r;
}

static int read_key(const char *path, const char *what, char **out)
{
	int r = config_read_secret(path, out);

	if (r < 0)
		fprintf(stderr, "%s %s: %s\n", what, path,
			r == -ENODATA ? "is empty" : r == -EILSEQ ? "holds a control character inside the key" :
			r == -EFBIG ? "is larger than 4095 bytes: not a key" : strerror(-r));
	return r;
}

int cli_connection(const char *config_path, int argc, char **argv, FILE *out)
{
	static const struct option longopts[] = {
		{ "primary-key", required_argument, NULL, 'p' },
		{ "description", required_argument, NULL, 'd' },
		{ "like", required_argument, NULL, 'l' },
		{ "base-url", required_argument, NULL, 'b' },
		{ "api-key-file", required_argument, NULL, 'a' },
		{ "brand-key-file", required_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pk = NULL, *description = NULL, *like = NULL, *base_url = NULL, *api_file = NULL,
		   *brand_file = NULL, *name;
	struct target t = { .timeout = 60 };
	struct config *cfg = NULL;
	char *api = NULL, *brand = NULL, *api_src = NULL, *brand_src = NULL, *body = NULL, uuid[37], err[1024];
	int ch, status = 1;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p': pk = optarg; break;
		case 'd': description = optarg; break;
		case 'l': like = optarg; break;
		case 'b': base_url = optarg; break;
		case 'a': api_file = optarg; break;
		case 'B': brand_file = optarg; break;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 2 || strcmp(argv[optind], "create") || !pk || !*pk ||
	    (like && (base_url || api_file || brand_file)) || (!like && (!api_file || !brand_file)) ||
	    (like && !config_path)) {
		usage(stderr);
		return 2;
	}
	name = argv[optind + 1];
	if (!section_name_ok(name)) {
		fprintf(stderr, "%s: a connection name is 1 to 64 letters, digits, '_', '-', '.', not starting with '.' "
			"(it names the spool directory)\n", name);
		return 2;
	}
	/* --like reads that section's keys, as the daemon does; else the file only names the sections. */
	if (config_path && config_load_flags(config_path, like ? 0 : CONFIG_LOAD_NO_SECRETS, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (cfg && config_find_conn(cfg, name)) {
		fprintf(stderr, "%s already has a [connection %s]\n", cfg->path, name);
		goto out;
	}
	if (like) {
		const struct conn_config *cc = config_find_conn(cfg, like);

		if (!cc) {
			fprintf(stderr, "no connection '%s' in %s to take the base URL and keys from\n", like, cfg->path);
			goto out;
		}
		t = (struct target){ .base_url = cc->base_url, .api_key = cc->api_key, .brand_key = cc->brand_key,
				     .api_source = cc->api_key_source, .brand_source = cc->brand_key_source,
				     .ca_file = cc->ca_file, .tls_off = cc->tls_verify_disabled,
				     .proxy = cc->proxy_mode == CONN_PROXY_ENV ? "env" : cc->proxy,
				     .proxy_credentials = cc->proxy_credentials,
				     .proxy_credentials_file = cc->proxy_credentials_file, .timeout = cc->timeout_seconds };
	} else {
		if (read_key(api_file, "--api-key-file", &api) < 0 || read_key(brand_file, "--brand-key-file", &brand) < 0)
			goto out;
		if (asprintf(&api_src, "api_key_file = %s", api_file) < 0 ||
		    asprintf(&brand_src, "brand_key_file = %s", brand_file) < 0)
			goto out;
		t.base_url = base_url ? base_url : CONFIG_DEFAULT_BASE_URL;
		t.api_key = api;
		t.brand_key = brand;
		t.api_source = api_src;
		t.brand_source = brand_src;
	}
	if (body_of(&body, name, pk, description) < 0 || create(&t, body, uuid) < 0)
		goto out;
	fprintf(out, "# Data Connection '%s' created at %s\n[connection %s]\nuuid = %s\nprimary_key = %s\n", name,
		t.base_url, name, uuid, pk);
	if (strcmp(t.base_url, CONFIG_DEFAULT_BASE_URL))
		fprintf(out, "base_url = %s\n", t.base_url);
	fprintf(out, "%s\n", t.api_source ? t.api_source : "# api_key: written inline in the section it came from; "
		"give api_key_file here");
	fprintf(out, "%s\n", t.brand_source ? t.brand_source : "# brand_key: written inline in the section it came "
		"from; give brand_key_file here");
	if (t.ca_file)
		fprintf(out, "ca_file = %s\n", t.ca_file);
	if (t.proxy)
		fprintf(out, "proxy = %s\n", t.proxy);
	if (t.proxy_credentials_file)
		fprintf(out, "proxy_credentials_file = %s\n", t.proxy_credentials_file);
	status = 0;
out:
	if (api)
		explicit_bzero(api, strlen(api));
	if (brand)
		explicit_bzero(brand, strlen(brand));
	free(api);
	free(brand);
	free(api_src);
	free(brand_src);
	free(body);
	config_free(cfg);
	return status;
}
