/* config: dcsyncd.conf (inih) into an immutable struct config; the key table is in config_keys.c. */
#pragma once
/*
 * Contract.
 * Owns: every string and array of a struct config, freed by config_free; a struct conn_config
 * from config_conn_dup is its holder's, freed by config_conn_free. A loaded config never changes:
 * a reload loads another, and connections keep their own copies, so the old one is freed at once.
 * Borrows: nothing past config_load.
 * May call: inih, csv (the column spec), ndjson's limits, log's level names, libc (the key
 * files). Does not log: a refusal is "FILE:LINE: key: reason" in @err, for the caller to say.
 */

#include <stdbool.h>
#include <stddef.h>

#include "record/record_csv.h"
#include "record/record_cut.h"
#include "util/log.h"

#define CONFIG_DEFAULT_BASE_URL "https://api.opti-x.optimove.net/api/data-connections/v1"
/*
 * Each connection has a worker thread, an inotify watch, a read buffer of max_record_bytes and
 * PIPELINE_DEPTH request bodies of up to batch_bytes: a bound keeps one daemon's memory and
 * threads in sight.
 */
#define CONFIG_MAX_CONNECTIONS 64
/* Spool and state paths: files under them carry a connection and a file name within PATH_MAX. */
#define CONFIG_MAX_DIR_PATH 1024

/* Where requests go: straight to base_url, through the environment's https_proxy, or a given proxy. */
enum conn_proxy {
	CONN_PROXY_NONE,        /* the default: https_proxy / no_proxy in the environment are ignored */
	CONN_PROXY_ENV,         /* proxy = env: libcurl's https_proxy, all_proxy, no_proxy */
	CONN_PROXY_URL,         /* proxy = http://host:port */
};

enum after_upload {
	AFTER_UPLOAD_ARCHIVE,
	AFTER_UPLOAD_DELETE,
};

struct conn_config {
	char *name;             /* spool sub-directory */
	char *uuid;
	char *primary_key;
	char *base_url;
	char *api_key;          /* loaded value, never logged */
	char *brand_key;
	long long ttl_seconds;  /* < 0: no expiry */
	unsigned batch_records;
	size_t batch_bytes;
	long timeout_seconds;
	char **required_fields;
	size_t n_required_fields;
	size_t max_record_bytes;
	size_t rejected_max_bytes;        /* what one file may write to rejected/; past it, counted only */
	uint64_t rejected_max_lines;      /* the same in entries */
	unsigned zstd_window_max_mib;     /* the largest zstd window a drop may ask for (a power of two) */
	unsigned max_depth;               /* records nested deeper are rejected locally */
	double retry_initial_seconds;
	double retry_max_seconds;
	double retry_max_elapsed_seconds; /* 0: retry forever */
	char *ca_file;
	bool tls_verify_disabled;
	unsigned rate_limit_requests;     /* 0: no client-side limit */
	double rate_limit_window_seconds;
	bool field_catalog;               /* note the uploaded field names for `dcsyncd formula` */
	unsigned history_entries;         /* run history entries kept (`dcsyncd history`) */
	bool skip_unchanged;              /* send only records the API is not known to hold (state_store.h) */
	long long unchanged_resend_seconds; /* an unchanged record is sent again this long after its ack; 0: never */
	struct csv_options csv;           /* csv_columns, csv_delimiter, csv_empty (csv.primary_key: primary_key) */
	enum conn_proxy proxy_mode;
	char *proxy;                      /* CONN_PROXY_URL: the proxy's URL (no credentials in it) */
	char *proxy_credentials_file;     /* NULL: the proxy needs none */
	char *proxy_credentials;          /* USER:PASSWORD loaded from it, never logged */
	char *api_key_source;             /* "api_key_file = PATH" or "api_key_credential = NAME"; NULL inline */
	char *brand_key_source;
	int line;               /* line of the section header, for messages */
};

struct config {
	char *path;
	char *spool_dir;
	char *state_dir;
	enum log_level log_level;
	enum after_upload after_upload;
	char *metrics_file;     /* NULL: none */
	double drain_timeout_seconds;
	double settle_seconds;  /* a file found in place, with no one to say it is closed, is taken once still this long */
	double open_recheck_seconds;    /* a file counted open is looked at again after this long; 0: 10 x settle_seconds */
	struct conn_config *conns;
	size_t n_conns;
};

/*
 * Load and validate @path. On failure returns a negative errno and writes
 * "FILE:LINE: key: reason" into @err.
 */
int config_load(const char *path, struct config **out, char *err, size_t errlen);

/*
 * config_load without reading any secret (key files, credentials, proxy credentials; inline keys
 * are dropped) nor ca_file: for commands run by exporters, to whom the keys are unreadable.
 * api_key, brand_key and proxy_credentials stay NULL.
 */
#define CONFIG_LOAD_NO_SECRETS 1u
int config_load_flags(const char *path, unsigned flags, struct config **out, char *err, size_t errlen);
void config_free(struct config *cfg);
/*
 * A connection's own copy of its section, independent of the struct config it came from (a
 * reload frees that one while the connection's open batch still runs on the old values).
 */
int config_conn_dup(const struct conn_config *src, struct conn_config **out);
void config_conn_free(struct conn_config *c);
const struct conn_config *config_find_conn(const struct config *cfg, const char *name);
/*
 * One key from a file, as api_key_file is read: blanks around it dropped; -ENODATA when empty,
 * -EILSEQ when a control character is left inside, -EFBIG over 4095 bytes, else -errno.
 */
int config_read_secret(const char *path, char **out);
