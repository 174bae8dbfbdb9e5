/* upload: HTTP POSTs through one libcurl multi handle driven by the libev loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <ev.h>

struct upload;          /* the shared multi handle and its watchers */
struct upload_client;   /* one connection's easy handle: one request at a time, kept alive */

struct upload_result {
	long status;            /* HTTP status; 0 when no response arrived */
	int curl_code;          /* CURLE_* */
	bool tls_failure;       /* certificate or handshake problem */
	const char *error;      /* what went wrong below HTTP, or "" */
	const char *body;       /* response body, truncated, NUL-terminated */
	double retry_after;     /* seconds asked for by Retry-After, < 0 when absent */
	double elapsed;         /* seconds */
};

struct upload_client_opts {
	const char *url;
	const char *api_key;
	const char *brand_key;
	long timeout_seconds;
	const char *ca_file;    /* NULL: system store */
	bool tls_verify_disabled;
};

typedef void (*upload_done_fn)(void *userdata, const struct upload_result *res);

int upload_new(struct upload **out, struct ev_loop *loop);
void upload_free(struct upload *u);

int upload_client_new(struct upload_client **out, struct upload *u, const struct upload_client_opts *o,
		      upload_done_fn done, void *userdata);
void upload_client_free(struct upload_client *c);
/* New URL, keys, TLS or timeout: applied now, or to the next request if one is in flight. */
int upload_client_configure(struct upload_client *c, const struct upload_client_opts *o);
/* Start a POST of @body (kept by the caller until done is called). */
int upload_client_send(struct upload_client *c, const char *body, size_t len);
bool upload_client_busy(const struct upload_client *c);
/* Abandon the request in flight; done is not called. */
void upload_client_cancel(struct upload_client *c);

/* Transient per the contract: no response, 408, 429, 5xx. */
bool upload_status_transient(long status);
