/* upload: HTTP POSTs through one libcurl multi handle driven by the libev loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <curl/curl.h>
#include <ev.h>

/*
 * Contract.
 * Owns: the multi handle, its socket and timer watchers, each client's easy handle, headers and
 * copies of URL, keys and proxy credentials (wiped when freed), and the rate limiters' set.
 * Borrows: the loop, for as long as the struct upload lives; a request's body from
 * wire_upload_client_send() until done is called or the request is cancelled.
 * May call: libcurl, libev, log. Decides nothing about retries: it reports what happened.
 */

struct upload;          /* the shared multi handle and its watchers */
struct ratelimits;
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

int wire_upload_new(struct upload **out, struct ev_loop *loop);
void wire_upload_free(struct upload *u);

int wire_upload_client_new(struct upload_client **out, struct upload *u, const struct upload_client_opts *o,
		      upload_done_fn done, void *userdata);
void wire_upload_client_free(struct upload_client *c);
/* New URL, keys, TLS or timeout: applied now, or to the next request if one is in flight. */
int wire_upload_client_configure(struct upload_client *c, const struct upload_client_opts *o);
/* Start a POST of @body (kept by the caller until done is called). */
int wire_upload_client_send(struct upload_client *c, const char *body, size_t len);
bool wire_upload_client_busy(const struct upload_client *c);
/* Abandon the request in flight; done is not called. */
void wire_upload_client_cancel(struct upload_client *c);

/*
 * The per-API-key rate limiters (ratelimit.h), owned by @u and freed with it: @u is the one
 * object every connection shares, so connections with the same key find the same limiter.
 */
struct ratelimits *wire_upload_ratelimits(struct upload *u);

/* Longest Retry-After taken, in seconds (about 317 years): bigger numbers mean the same. */
#define UPLOAD_RETRY_AFTER_MAX 1e10
/*
 * A Retry-After value (RFC 9110 10.2.3): delta-seconds (1*DIGIT) or an HTTP-date (IMF-fixdate, or
 * the obsolete rfc850 and asctime forms). Seconds to wait from @now, 0 for a date in the past, at
 * most UPLOAD_RETRY_AFTER_MAX; -1 for anything else (0x10, inf, -5, 1.5, empty...).
 */
double wire_upload_parse_retry_after(const char *v, time_t now);

/*
 * The one place a libcurl handle gets its route, TLS, limits and keys, so that every request
 * dcsyncd makes (uploads and `connection create`) goes out alike: @headers from
 * wire_upload_headers_new() (Content-Type and the keys), kept by the caller while @easy uses them;
 * @o's strings are copied by libcurl (its keys are not read: they are in @headers).
 */
struct curl_slist *wire_upload_headers_new(const char *api_key, const char *brand_key);
int wire_upload_easy_setup(CURL *easy, const char *url, struct curl_slist *headers, const struct upload_client_opts *o);

/* Transient per the contract: no response, 408, 429, 5xx. */
bool wire_upload_status_transient(long status);
