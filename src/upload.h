/* upload: HTTP POSTs through one libcurl multi handle driven by the libev loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
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
	/*
	 * Proxy: NULL goes direct, whatever the environment says; "env" takes libcurl's https_proxy,
	 * all_proxy and no_proxy; else the proxy's URL (environment ignored). Through a proxy every
	 * request goes by CONNECT, so the proxy sees only the host and port.
	 */
	const char *proxy;
	const char *proxy_credentials;  /* USER:PASSWORD or NULL; never logged */
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

/*
 * Client-side rate limit, one per API key (connections sharing a key share it): a sliding
 * window of @requests per @window seconds. @requests 0: unlimited.
 */
struct upload_limiter;
struct upload_limiter *upload_limiter_get(struct upload *u, const char *api_key, unsigned requests, double window);
/* 0 when a request may leave now (it is counted), else the seconds to wait for a slot. */
double upload_limiter_take(struct upload_limiter *l, double now);
/*
 * The budget adapts (AIMD), so that hosts sharing a key without talking to each other share its
 * server-side budget: a 429 cuts it to 0.7 x the sends of the current window (once per window,
 * not below a tenth of the configured requests),
 * a window without 429 raises it by a tenth of the configured requests, up to them.
 */
void upload_limiter_penalize(struct upload_limiter *l);
void upload_limiter_success(struct upload_limiter *l);
unsigned upload_limiter_budget(const struct upload_limiter *l);
unsigned upload_limiter_used(const struct upload_limiter *l, double now);

/* Longest Retry-After taken, in seconds (about 317 years): bigger numbers mean the same. */
#define UPLOAD_RETRY_AFTER_MAX 1e10
/*
 * A Retry-After value (RFC 9110 10.2.3): delta-seconds (1*DIGIT) or an HTTP-date (IMF-fixdate, or
 * the obsolete rfc850 and asctime forms). Seconds to wait from @now, 0 for a date in the past, at
 * most UPLOAD_RETRY_AFTER_MAX; -1 for anything else (0x10, inf, -5, 1.5, empty...).
 */
double upload_parse_retry_after(const char *v, time_t now);

/* Transient per the contract: no response, 408, 429, 5xx. */
bool upload_status_transient(long status);
