/* upload: HTTP POSTs through one libcurl multi handle driven by the libev loop. */
#include "wire/wire_upload.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>

#include "util/log.h"
#include "util/timer.h"
#include "wire/wire_ratelimit.h"

#define RESPONSE_MAX 4096

struct upload {
	struct ev_loop *loop;
	CURLM *multi;
	ev_timer timer;
	struct ratelimits *ratelimits;     /* held for the connections: they share this object */
};

struct sock_watch {
	ev_io io;
	struct upload *u;
};

struct upload_client {
	struct upload *u;
	CURL *easy;
	struct curl_slist *headers;
	struct curl_slist *pending_headers;     /* configured while a request was in flight */
	char *url, *ca_file, *pending_url, *pending_ca_file;
	char *proxy, *pending_proxy, *proxy_cred, *pending_proxy_cred;
	bool proxy_env, pending_proxy_env;
	long timeout, pending_timeout;
	bool tls_off, pending_tls_off, pending;
	upload_done_fn done;
	void *userdata;
	bool busy;
	char errbuf[CURL_ERROR_SIZE];
	char response[RESPONSE_MAX + 1];
	size_t response_len;
	double retry_after;
};

bool wire_upload_status_transient(long status)
{
	return status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599);
}

static void check_done(struct upload *u)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(u->multi, &left))) {
		struct upload_client *c = NULL;
		struct upload_result res = { .retry_after = -1 };
		double total = 0;
		char *priv = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
		c = (struct upload_client *)priv;
		curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &res.status);
		curl_easy_getinfo(m->easy_handle, CURLINFO_TOTAL_TIME, &total);
		res.curl_code = (int)m->data.result;
		res.elapsed = total;
		if (m->data.result != CURLE_OK) {
			long connect_code = 0;

			res.status = 0;
			res.error = c->errbuf[0] ? c->errbuf : curl_easy_strerror(m->data.result);
			curl_easy_getinfo(m->easy_handle, CURLINFO_HTTP_CONNECTCODE, &connect_code);
			/* tinyproxy answers 401 where RFC 9110 says 407. */
			if (connect_code == 407 || connect_code == 401) {
				snprintf(c->errbuf, sizeof(c->errbuf), "the proxy wants credentials (HTTP %ld): set "
					 "proxy_credentials_file, or fix the one given", connect_code);
				res.error = c->errbuf;
			} else if (connect_code && (connect_code < 200 || connect_code > 299)) {
				snprintf(c->errbuf, sizeof(c->errbuf), "the proxy refused the tunnel to the API (HTTP %ld)",
					 connect_code);
				res.error = c->errbuf;
			}
			switch (m->data.result) {
			case CURLE_PEER_FAILED_VERIFICATION:
			case CURLE_SSL_CONNECT_ERROR:
			case CURLE_SSL_CERTPROBLEM:
			case CURLE_SSL_CACERT_BADFILE:
			case CURLE_SSL_ISSUER_ERROR:
			case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
				res.tls_failure = true;
				break;
			default:
				break;
			}
		} else {
			res.error = "";
		}
		c->response[c->response_len] = '\0';
		res.body = c->response;
		res.retry_after = c->retry_after;
		curl_multi_remove_handle(u->multi, m->easy_handle);
		c->busy = false;
		c->done(c->userdata, &res);
	}
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sock_watch *sw = (struct sock_watch *)w;
	struct upload *u = sw->u;
	int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	(void)loop;
	/* The action may close the socket, and socket_cb then frees sw: use only u afterwards. */
	curl_multi_socket_action(u->multi, w->fd, action, &running);
	check_done(u);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct upload *u = w->data;
	int running;

	(void)loop;
	(void)revents;
	curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(u);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct upload *u = userp;
	struct sock_watch *sw = socketp;

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (sw) {
			ev_io_stop(u->loop, &sw->io);
			free(sw);
			curl_multi_assign(u->multi, s, NULL);
		}
		return 0;
	}
	if (!sw) {
		sw = calloc(1, sizeof(*sw));
		if (!sw)
			return -1;
		sw->u = u;
		curl_multi_assign(u->multi, s, sw);
	} else {
		ev_io_stop(u->loop, &sw->io);
	}
	ev_io_init(&sw->io, io_cb, s, (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0));
	ev_io_start(u->loop, &sw->io);
	return 0;
}

static int timerfunc_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct upload *u = userp;

	(void)multi;
	/* Divide as double: integer division turns 999 ms into 0 s and spins. -1: no timeout. */
	timer_arm(u->loop, &u->timer, timeout_ms >= 0 ? (double)timeout_ms / 1000.0 : -1);
	return 0;
}

int wire_upload_new(struct upload **out, struct ev_loop *loop)
{
	struct upload *u = calloc(1, sizeof(*u));

	if (!u)
		return -ENOMEM;
	u->loop = loop;
	u->multi = curl_multi_init();
	if (!u->multi || wire_ratelimits_new(&u->ratelimits) < 0) {
		if (u->multi)
			curl_multi_cleanup(u->multi);
		free(u);
		return -ENOMEM;
	}
	ev_timer_init(&u->timer, timer_cb, 0., 0.);
	u->timer.data = u;
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timerfunc_cb);
	curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
	*out = u;
	return 0;
}

void wire_upload_free(struct upload *u)
{
	if (!u)
		return;
	wire_ratelimits_free(u->ratelimits);
	/* Cleanup calls socket_cb with CURL_POLL_REMOVE: the loop must still exist. */
	curl_multi_cleanup(u->multi);
	ev_timer_stop(u->loop, &u->timer);
	free(u);
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct upload_client *c = userdata;
	size_t n = size * nmemb, room = RESPONSE_MAX - c->response_len;

	memcpy(c->response + c->response_len, ptr, n < room ? n : room);
	c->response_len += n < room ? n : room;
	return n;
}

/* Whether @s starts with one of @n names of @len bytes each (case-sensitive, as RFC 9110 says). */
static size_t match_name(const char *s, const char *names, size_t n, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (!strncmp(s, names + i * len, len))
			return len;
	return 0;
}

/*
 * Does @v have the shape of one of the three HTTP-date forms? "w" a day name, "W" a long day
 * name, "m" a month, "9" a digit, "_" a digit or a space, anything else itself. curl_getdate()
 * takes far more (relative words, other orders, bare numbers): only these three are HTTP-dates.
 */
static bool date_shaped(const char *v, const char *pattern)
{
	static const char days[] = "MonTueWedThuFriSatSun";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	static const char *const long_days[] = { "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
						 "Saturday", "Sunday" };

	for (const char *p = pattern; *p; p++) {
		size_t n = 0;

		switch (*p) {
		case 'w':
			n = match_name(v, days, 7, 3);
			break;
		case 'm':
			n = match_name(v, months, 12, 3);
			break;
		case 'W':
			for (size_t i = 0; i < 7 && !n; i++)
				if (!strncmp(v, long_days[i], strlen(long_days[i])))
					n = strlen(long_days[i]);
			break;
		case '9':
			n = *v >= '0' && *v <= '9';
			break;
		case '_':
			n = (*v >= '0' && *v <= '9') || *v == ' ';
			break;
		default:
			n = *v == *p;
		}
		if (!n)
			return false;
		v += n;
	}
	return !*v;
}

double wire_upload_parse_retry_after(const char *v, time_t now)
{
	char buf[64];
	size_t len;
	double secs = 0;
	time_t when;

	/* OWS around the field value, and the header line's CRLF. */
	v += strspn(v, " \t");
	len = strlen(v);
	while (len && (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\r' || v[len - 1] == '\n'))
		len--;
	if (!len || len >= sizeof(buf))
		return -1;
	memcpy(buf, v, len);
	buf[len] = '\0';
	if (strspn(buf, "0123456789") == len) {
		/* delta-seconds: any number of digits; beyond ~317 years it makes no difference. */
		for (const char *p = buf; *p && secs < UPLOAD_RETRY_AFTER_MAX; p++)
			secs = secs * 10 + (*p - '0');
		return secs < UPLOAD_RETRY_AFTER_MAX ? secs : UPLOAD_RETRY_AFTER_MAX;
	}
	/* IMF-fixdate, then the obsolete rfc850 and asctime forms recipients must still accept. */
	if (!date_shaped(buf, "w, 99 m 9999 99:99:99 GMT") && !date_shaped(buf, "W, 99-m-99 99:99:99 GMT") &&
	    !date_shaped(buf, "w m _9 99:99:99 9999"))
		return -1;
	when = curl_getdate(buf, NULL);
	if (when == -1)
		return -1;
	secs = difftime(when, now);
	if (secs < 0)
		return 0;
	return secs < UPLOAD_RETRY_AFTER_MAX ? secs : UPLOAD_RETRY_AFTER_MAX;
}

/* For the debug log: the server's text, printable ASCII only and short. */
static void printable(char *dst, size_t cap, const char *src, size_t len)
{
	size_t i;

	for (i = 0; i < len && i + 1 < cap; i++)
		dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
	dst[i] = '\0';
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct upload_client *c = userdata;
	size_t n = size * nitems;
	char line[256];

	if (n >= 12 && !strncasecmp(buf, "retry-after:", 12)) {
		size_t vlen = n - 12 < sizeof(line) ? n - 12 : sizeof(line) - 1;

		memcpy(line, buf + 12, vlen);
		line[vlen] = '\0';
		c->retry_after = vlen == n - 12 ? wire_upload_parse_retry_after(line, time(NULL)) : -1;
		if (c->retry_after < 0) {
			size_t skip = strspn(line, " \t");
			char shown[80];

			while (vlen > skip && (line[vlen - 1] == '\r' || line[vlen - 1] == '\n'))
				vlen--;
			printable(shown, sizeof(shown), line + skip, vlen - skip);
			log_debug("ignoring Retry-After '%s' (want delta-seconds or an HTTP-date): normal back-off", shown);
		}
	}
	return n;
}

struct curl_slist *wire_upload_headers_new(const char *api_key, const char *brand_key)
{
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json"), *n;
	char *line = NULL;
	const char *names[2] = { "x-api-key", "x-brand-key" }, *values[2] = { api_key, brand_key };

	for (int i = 0; h && i < 2; i++) {
		if (asprintf(&line, "%s: %s", names[i], values[i]) < 0) {
			curl_slist_free_all(h);
			return NULL;
		}
		n = curl_slist_append(h, line);
		explicit_bzero(line, strlen(line));
		free(line);
		if (!n) {
			curl_slist_free_all(h);
			return NULL;
		}
		h = n;
	}
	/* No "Expect: 100-continue" round trip before each body. */
	n = h ? curl_slist_append(h, "Expect:") : NULL;
	if (!n)
		curl_slist_free_all(h);
	return n;
}

static void free_secret(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* Proxy or not, never the environment unless asked: a daemon's route is its configuration's. */
static int apply_proxy(CURL *easy, const struct upload_client_opts *o)
{
	bool env = o->proxy && !strcmp(o->proxy, "env");
	const char *colon = o->proxy_credentials ? strchr(o->proxy_credentials, ':') : NULL;
	char *user = NULL;

	if (env)
		curl_easy_setopt(easy, CURLOPT_PROXY, NULL);        /* libcurl reads *_proxy, no_proxy */
	else
		curl_easy_setopt(easy, CURLOPT_PROXY, o->proxy ? o->proxy : "");
	if (o->proxy && !env)
		curl_easy_setopt(easy, CURLOPT_NOPROXY, "");         /* the environment's no_proxy too */
	else
		curl_easy_setopt(easy, CURLOPT_NOPROXY, NULL);
	/* Always a tunnel, even to an http:// base_url: the proxy relays bytes, never reads the keys. */
	curl_easy_setopt(easy, CURLOPT_HTTPPROXYTUNNEL, o->proxy ? 1L : 0L);
	curl_easy_setopt(easy, CURLOPT_PROXY_CAINFO, o->ca_file);
	curl_easy_setopt(easy, CURLOPT_PROXY_SSL_VERIFYPEER, o->tls_verify_disabled ? 0L : 1L);
	curl_easy_setopt(easy, CURLOPT_PROXY_SSL_VERIFYHOST, o->tls_verify_disabled ? 0L : 2L);
	if (colon) {
		/* Split at the first ':' only: a password may hold more (libcurl copies both strings). */
		if (!(user = strndup(o->proxy_credentials, (size_t)(colon - o->proxy_credentials))))
			return -ENOMEM;
		curl_easy_setopt(easy, CURLOPT_PROXYUSERNAME, user);
		curl_easy_setopt(easy, CURLOPT_PROXYPASSWORD, colon + 1);
		curl_easy_setopt(easy, CURLOPT_PROXYAUTH, (long)CURLAUTH_ANY);
		free_secret(user);
	} else {
		curl_easy_setopt(easy, CURLOPT_PROXYUSERNAME, NULL);
		curl_easy_setopt(easy, CURLOPT_PROXYPASSWORD, NULL);
	}
	return 0;
}

int wire_upload_easy_setup(CURL *easy, const char *url, struct curl_slist *headers, const struct upload_client_opts *o)
{
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Keys go only into these headers; CURLOPT_VERBOSE stays off so they never reach a log. */
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT, o->timeout_seconds);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, o->timeout_seconds < 30 ? o->timeout_seconds : 30L);
	/* A stalled transfer (under 1 byte/s for the timeout) is a failure even before the deadline. */
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, o->timeout_seconds);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, o->tls_verify_disabled ? 0L : 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, o->tls_verify_disabled ? 0L : 2L);
	curl_easy_setopt(easy, CURLOPT_CAINFO, o->ca_file);
	return apply_proxy(easy, o);
}

static int apply_pending(struct upload_client *c)
{
	struct upload_client_opts o;

	if (!c->pending)
		return 0;
	curl_slist_free_all(c->headers);
	free(c->url);
	free(c->ca_file);
	free(c->proxy);
	free_secret(c->proxy_cred);
	c->headers = c->pending_headers;
	c->url = c->pending_url;
	c->ca_file = c->pending_ca_file;
	c->timeout = c->pending_timeout;
	c->tls_off = c->pending_tls_off;
	c->proxy = c->pending_proxy;
	c->proxy_cred = c->pending_proxy_cred;
	c->proxy_env = c->pending_proxy_env;
	c->pending_headers = NULL;
	c->pending_url = c->pending_ca_file = NULL;
	c->pending_proxy = c->pending_proxy_cred = NULL;
	c->pending = false;
	o = (struct upload_client_opts){ .url = c->url, .timeout_seconds = c->timeout, .ca_file = c->ca_file,
					 .tls_verify_disabled = c->tls_off,
					 .proxy = c->proxy_env ? "env" : c->proxy, .proxy_credentials = c->proxy_cred };
	return wire_upload_easy_setup(c->easy, c->url, c->headers, &o);
}

int wire_upload_client_configure(struct upload_client *c, const struct upload_client_opts *o)
{
	struct curl_slist *h = wire_upload_headers_new(o->api_key, o->brand_key);
	char *url = strdup(o->url), *ca = o->ca_file ? strdup(o->ca_file) : NULL;
	bool env = o->proxy && !strcmp(o->proxy, "env");
	char *proxy = o->proxy && !env ? strdup(o->proxy) : NULL;
	char *cred = o->proxy_credentials ? strdup(o->proxy_credentials) : NULL;

	if (!h || !url || (o->ca_file && !ca) || (o->proxy && !env && !proxy) || (o->proxy_credentials && !cred)) {
		curl_slist_free_all(h);
		free(url);
		free(ca);
		free(proxy);
		free_secret(cred);
		return -ENOMEM;
	}
	curl_slist_free_all(c->pending_headers);
	free(c->pending_url);
	free(c->pending_ca_file);
	free(c->pending_proxy);
	free_secret(c->pending_proxy_cred);
	c->pending_headers = h;
	c->pending_url = url;
	c->pending_ca_file = ca;
	c->pending_proxy = proxy;
	c->pending_proxy_cred = cred;
	c->pending_proxy_env = env;
	c->pending_timeout = o->timeout_seconds;
	c->pending_tls_off = o->tls_verify_disabled;
	c->pending = true;
	/* The request in flight still uses the old headers: swap only between requests. */
	return c->busy ? 0 : apply_pending(c);
}

int wire_upload_client_new(struct upload_client **out, struct upload *u, const struct upload_client_opts *o,
		      upload_done_fn done, void *userdata)
{
	struct upload_client *c = calloc(1, sizeof(*c));
	int r = -ENOMEM;

	if (!c)
		return -ENOMEM;
	c->u = u;
	c->done = done;
	c->userdata = userdata;
	c->easy = curl_easy_init();
	if (!c->easy)
		goto fail;
	curl_easy_setopt(c->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(c->easy, CURLOPT_PRIVATE, (char *)c);
	curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, c->errbuf);
	curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c->easy, CURLOPT_HEADERDATA, c);
	if ((r = wire_upload_client_configure(c, o)) < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	wire_upload_client_free(c);
	return r;
}

void wire_upload_client_free(struct upload_client *c)
{
	if (!c)
		return;
	wire_upload_client_cancel(c);
	if (c->easy)
		curl_easy_cleanup(c->easy);
	curl_slist_free_all(c->headers);
	curl_slist_free_all(c->pending_headers);
	free(c->url);
	free(c->ca_file);
	free(c->pending_url);
	free(c->pending_ca_file);
	free(c->proxy);
	free(c->pending_proxy);
	free_secret(c->proxy_cred);
	free_secret(c->pending_proxy_cred);
	free(c);
}

int wire_upload_client_send(struct upload_client *c, const char *body, size_t len)
{
	CURLMcode mc;
	int r;

	if (c->busy)
		return -EBUSY;
	if ((r = apply_pending(c)) < 0)
		return r;
	c->errbuf[0] = '\0';
	c->response_len = 0;
	c->retry_after = -1;
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	mc = curl_multi_add_handle(c->u->multi, c->easy);
	if (mc != CURLM_OK) {
		log_error("curl_multi_add_handle: %s", curl_multi_strerror(mc));
		return -EIO;
	}
	c->busy = true;
	return 0;
}

bool wire_upload_client_busy(const struct upload_client *c)
{
	return c->busy;
}

void wire_upload_client_cancel(struct upload_client *c)
{
	if (!c->busy)
		return;
	curl_multi_remove_handle(c->u->multi, c->easy);
	c->busy = false;
}

struct ratelimits *wire_upload_ratelimits(struct upload *u)
{
	return u->ratelimits;
}
