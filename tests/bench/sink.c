/* sink: a fast loopback HTTP/1.1 sink for dcsyncd benchmarks; counts requests and records.
 *
 * Usage: sink [-p PORT] [--port-file FILE] [--quiet]
 *        sink --selftest
 *
 * Listens on 127.0.0.1:PORT (0, the default, picks a free port), prints "port=N" and writes N
 * to FILE. One thread, epoll, keep-alive, requests with Content-Length bodies (chunked bodies
 * are refused with 411). Every POST .../upload_data body is scanned once, as it arrives, by a
 * small state machine that follows JSON strings (with escapes) and brace/bracket depth; it
 * counts the top-level elements of the "data" array and checks the envelope the daemon sends:
 *   {"data":[r1,r2,...],"batch_uuid":"...","batch_completed":true|false[,"ttl_seconds":N]}
 * A well-formed body is answered 200 {"success":true}, any other 400 (and counted as bad).
 * Bodies are never held in memory, so the sink's footprint does not grow with them.
 *
 * GET /stats answers, and SIGTERM/SIGINT print to stdout before exiting, one line:
 *   requests=N records=M completed=K bytes=B bad=X connections=C batches=U open=O cpu_ms=T
 * (requests: upload_data POSTs answered 200; records: data elements in them; completed: those
 * with "batch_completed":true; bytes: their body bytes; batches: distinct batch_uuids; open:
 * batches never completed; cpu_ms: the sink's own CPU time since it started). GET /reset zeroes
 * the counters.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#define HEAD_MAX 16384
#define OUT_MAX 8192
#define RECV_BUF (256 * 1024)
#define MAX_EVENTS 64

/* ---- the body scanner ---- */

enum key_id { KEY_OTHER, KEY_DATA, KEY_UUID, KEY_COMPLETED, KEY_TTL };

struct scan {
	uint64_t elems;         /* top-level elements of the data array */
	uint64_t stack;         /* bit i: level i+1 is an array (levels up to 64 are checked) */
	uint32_t depth;
	bool in_str, esc;
	bool key_capture;       /* the current string is a key of the envelope */
	bool uuid_capture;      /* the current string is the batch_uuid */
	bool d1_expect_key;     /* depth 1: the next string is a key */
	bool d1_expect_value;   /* depth 1: a value starts next */
	bool in_data;           /* inside the data array */
	bool expect_elem;       /* inside the data array: an element may start */
	bool closed;            /* the envelope's '}' was seen */
	bool bad;
	bool seen_data, seen_uuid, seen_completed, completed;
	enum key_id cur_key;
	unsigned char last;     /* the last byte seen */
	uint8_t klen, ulen;
	char key[24];
	char uuid[40];
};

static void scan_init(struct scan *s)
{
	memset(s, 0, sizeof(*s));
}

/* Bytes that end a run of plain string content. */
static bool str_special[256];

static void scan_tables(void)
{
	str_special['"'] = true;
	str_special['\\'] = true;
}

static enum key_id key_of(const struct scan *s)
{
	static const struct { const char *name; enum key_id id; } keys[] = {
		{ "data", KEY_DATA }, { "batch_uuid", KEY_UUID },
		{ "batch_completed", KEY_COMPLETED }, { "ttl_seconds", KEY_TTL },
	};

	if (s->klen >= sizeof(s->key))
		return KEY_OTHER;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strlen(keys[i].name) == s->klen && !memcmp(keys[i].name, s->key, s->klen))
			return keys[i].id;
	return KEY_OTHER;
}

/* A value starts at depth 1 (a value of the envelope): @c is its first byte. */
static void envelope_value(struct scan *s, unsigned char c)
{
	s->d1_expect_value = false;
	switch (s->cur_key) {
	case KEY_DATA:
		if (c != '[' || s->seen_data)
			s->bad = true;
		s->seen_data = true;
		s->in_data = true;
		s->expect_elem = true;
		break;
	case KEY_UUID:
		if (c != '"' || s->seen_uuid)
			s->bad = true;
		s->seen_uuid = true;
		s->uuid_capture = true;
		s->ulen = 0;
		break;
	case KEY_COMPLETED:
		if ((c != 't' && c != 'f') || s->seen_completed)
			s->bad = true;
		s->seen_completed = true;
		s->completed = c == 't';
		break;
	case KEY_TTL:
		if (!(c == '-' || (c >= '0' && c <= '9')))
			s->bad = true;
		break;
	default:
		s->bad = true;  /* a key the daemon does not send */
		break;
	}
}

static void scan_feed(struct scan *s, const unsigned char *p, size_t n)
{
	const unsigned char *end = p + n;

	if (!n)
		return;
	s->last = end[-1];
	while (p < end) {
		unsigned char c;

		if (s->in_str) {
			if (!s->key_capture && !s->uuid_capture && !s->esc) {
				while (p < end && !str_special[*p])
					p++;
				if (p == end)
					return;
			}
			c = *p++;
			if (s->esc) {
				s->esc = false;
				if (s->key_capture)
					s->klen = sizeof(s->key);    /* an escaped key is none of ours */
				if (s->uuid_capture)
					s->bad = true;               /* a UUID has no escapes */
			} else if (c == '\\') {
				s->esc = true;
			} else if (c == '"') {
				s->in_str = false;
				if (s->key_capture) {
					s->key_capture = false;
					s->cur_key = key_of(s);
				}
				if (s->uuid_capture) {
					s->uuid_capture = false;
					if (s->ulen == 0 || s->ulen >= sizeof(s->uuid))
						s->bad = true;
					else
						s->uuid[s->ulen] = '\0';
				}
			} else if (s->key_capture && s->klen < sizeof(s->key)) {
				s->key[s->klen++] = (char)c;
			} else if (s->uuid_capture && s->ulen < sizeof(s->uuid)) {
				s->uuid[s->ulen++] = (char)c;
			}
			continue;
		}
		c = *p++;
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (s->closed) {
			s->bad = true;  /* bytes after the envelope */
			return;
		}
		if (s->depth == 0 && c != '{') {
			s->bad = true;
			return;
		}
		if (s->in_data && s->depth == 2 && s->expect_elem && c != ']') {
			s->elems++;
			s->expect_elem = false;
		}
		if (s->depth == 1 && s->d1_expect_value)
			envelope_value(s, c);
		switch (c) {
		case '"':
			s->in_str = true;
			if (s->depth == 1) {
				if (s->d1_expect_key) {
					s->d1_expect_key = false;
					s->key_capture = true;
					s->klen = 0;
				} else if (s->cur_key == KEY_OTHER) {
					s->bad = true;
				}
			}
			break;
		case '{':
		case '[':
			if (s->depth == 1 && c == '{')
				s->bad = true;  /* the envelope holds no objects */
			if (s->depth < 64) {
				if (c == '[')
					s->stack |= 1ull << s->depth;
				else
					s->stack &= ~(1ull << s->depth);
			}
			s->depth++;
			if (s->depth == 1)
				s->d1_expect_key = true;
			break;
		case '}':
		case ']':
			if (s->depth == 0) {
				s->bad = true;
				return;
			}
			s->depth--;
			if (s->depth < 64 && !!(s->stack & (1ull << s->depth)) != (c == ']'))
				s->bad = true;  /* ']' closing an object or '}' an array */
			if (s->depth == 1 && s->in_data) {
				s->in_data = false;
				if (s->expect_elem && s->elems)
					s->bad = true;  /* a trailing comma: [a,] */
			}
			if (s->depth == 0)
				s->closed = true;
			break;
		case ',':
			if (s->depth == 2 && s->in_data) {
				if (s->expect_elem)
					s->bad = true;  /* [,a] or [a,,b] */
				s->expect_elem = true;
			} else if (s->depth == 1) {
				s->d1_expect_key = true;
			}
			break;
		case ':':
			if (s->depth == 1) {
				if (s->key_capture || s->d1_expect_key)
					s->bad = true;
				s->d1_expect_value = true;
			}
			break;
		default:
			break;  /* numbers, literals: only their first byte matters, handled above */
		}
	}
}

/* The whole body was fed: is it the envelope the daemon sends? */
static bool scan_ok(const struct scan *s)
{
	return !s->bad && s->closed && !s->in_str && s->last == '}' && s->seen_data && s->seen_uuid &&
	       s->seen_completed;
}

/* ---- the server ---- */

struct stats {
	uint64_t requests, records, completed, bytes, bad, connections, batches, batches_completed;
};

static struct stats st;

/* ---- batches seen: an open-addressing set of batch_uuids ---- */

struct batch {
	char uuid[40];          /* "" = free slot */
	bool completed;
};

static struct batch *batches;
static size_t batches_cap;      /* a power of two */

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;    /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static struct batch *batch_slot(struct batch *v, size_t cap, const char *uuid)
{
	size_t i = (size_t)hash_str(uuid) & (cap - 1);

	while (v[i].uuid[0] && strcmp(v[i].uuid, uuid))
		i = (i + 1) & (cap - 1);
	return &v[i];
}

/* The entry of @uuid, added if new; NULL when out of memory. */
static struct batch *batch_get(const char *uuid)
{
	struct batch *b;

	if ((st.batches + 1) * 2 > batches_cap) {
		size_t cap = batches_cap ? batches_cap * 2 : 1024;
		struct batch *v = calloc(cap, sizeof(*v));

		if (!v)
			return NULL;
		for (size_t i = 0; i < batches_cap; i++)
			if (batches[i].uuid[0])
				*batch_slot(v, cap, batches[i].uuid) = batches[i];
		free(batches);
		batches = v;
		batches_cap = cap;
	}
	b = batch_slot(batches, batches_cap, uuid);
	if (!b->uuid[0]) {
		snprintf(b->uuid, sizeof(b->uuid), "%s", uuid);
		st.batches++;
	}
	return b;
}

static void stats_reset(void)
{
	memset(&st, 0, sizeof(st));
	if (batches)
		memset(batches, 0, batches_cap * sizeof(*batches));
}

enum phase { READ_HEAD, READ_BODY };

struct conn {
	int fd;
	enum phase phase;
	bool is_upload;         /* POST .../upload_data */
	bool close_after;
	uint64_t body_left, body_len;
	struct scan scan;
	size_t hlen;
	size_t olen, ooff;
	char head[HEAD_MAX];
	char out[OUT_MAX];
};

static bool quiet;

static int stats_line(char *buf, size_t len)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return snprintf(buf, len, "requests=%" PRIu64 " records=%" PRIu64 " completed=%" PRIu64 " bytes=%" PRIu64
			" bad=%" PRIu64 " connections=%" PRIu64 " batches=%" PRIu64 " open=%" PRIu64 " cpu_ms=%ld\n",
			st.requests, st.records, st.completed, st.bytes, st.bad, st.connections, st.batches,
			st.batches - st.batches_completed,
			(long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
				(long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000);
}

static void conn_close(int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
}

/* Queue a response; 0 ok, -1 the output buffer is full (the connection is dropped). */
static int respond(struct conn *c, int status, const char *reason, const char *ctype, const char *body)
{
	size_t blen = strlen(body);
	int n = snprintf(c->out + c->olen, OUT_MAX - c->olen,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n%s", status, reason, ctype,
			 blen, c->close_after ? "Connection: close\r\n" : "", body);

	if (n < 0 || (size_t)n >= OUT_MAX - c->olen)
		return -1;
	c->olen += (size_t)n;
	return 0;
}

/* Send what is queued. 0 all sent, 1 some left (EPOLLOUT wanted), -1 error. */
static int flush_out(struct conn *c)
{
	while (c->ooff < c->olen) {
		ssize_t w = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (w < 0)
			return -1;
		c->ooff += (size_t)w;
	}
	c->olen = c->ooff = 0;
	return 0;
}

static int finish_body(struct conn *c)
{
	struct batch *b;

	if (!c->is_upload)
		return respond(c, 404, "Not Found", "application/json", "{\"error\":\"not found\"}");
	if (!scan_ok(&c->scan)) {
		st.bad++;
		if (!quiet)
			fprintf(stderr, "sink: malformed request body (%" PRIu64 " bytes)\n", c->body_len);
		return respond(c, 400, "Bad Request", "application/json", "{\"error\":\"malformed body\"}");
	}
	b = batch_get(c->scan.uuid);
	if (!b)
		return -1;
	st.requests++;
	st.records += c->scan.elems;
	st.bytes += c->body_len;
	if (c->scan.completed) {
		st.completed++;
		if (!b->completed)
			st.batches_completed++;
		b->completed = true;
	}
	return respond(c, 200, "OK", "application/json", "{\"success\":true}");
}

static bool header_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len > n && line[n] == ':' && !strncasecmp(line, name, n);
}

static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen)
{
	const char *v = line + strlen(name) + 1, *e = line + len;

	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*vlen = (size_t)(e - v);
	return v;
}

/* A full header block is in c->head[0..hlen) (ending "\r\n\r\n"). 0 ok, -1 drop the connection. */
static int parse_head(struct conn *c)
{
	char *p = c->head, *end = c->head + c->hlen, *eol, *sp1, *sp2;
	bool have_len = false, chunked = false, http10 = false, ka = false, is_get;
	uint64_t len = 0;

	eol = memchr(p, '\r', (size_t)(end - p));
	if (!eol)
		return -1;
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2)
		return -1;
	http10 = (size_t)(eol - sp2 - 1) == 8 && !memcmp(sp2 + 1, "HTTP/1.0", 8);
	is_get = sp1 - p == 3 && !memcmp(p, "GET", 3);
	{
		size_t plen = (size_t)(sp2 - sp1 - 1);
		const char *path = sp1 + 1;
		static const char suffix[] = "/upload_data";

		c->is_upload = sp1 - p == 4 && !memcmp(p, "POST", 4) && plen >= sizeof(suffix) - 1 &&
			       !memcmp(path + plen - (sizeof(suffix) - 1), suffix, sizeof(suffix) - 1);
		c->close_after = false;
		for (p = eol + 2; p < end; p = eol + 2) {
			size_t ll, vl;
			const char *v;

			eol = memchr(p, '\r', (size_t)(end - p));
			if (!eol || eol == p)
				break;
			ll = (size_t)(eol - p);
			if (header_is(p, ll, "Content-Length")) {
				char *e;

				v = header_value(p, ll, "Content-Length", &vl);
				errno = 0;
				len = strtoull(v, &e, 10);
				if (errno || e != v + vl || !vl)
					return -1;
				have_len = true;
			} else if (header_is(p, ll, "Transfer-Encoding")) {
				v = header_value(p, ll, "Transfer-Encoding", &vl);
				chunked = !(vl == 8 && !strncasecmp(v, "identity", 8));
			} else if (header_is(p, ll, "Connection")) {
				v = header_value(p, ll, "Connection", &vl);
				if (vl == 5 && !strncasecmp(v, "close", 5))
					c->close_after = true;
				if (vl == 10 && !strncasecmp(v, "keep-alive", 10))
					ka = true;
			} else if (header_is(p, ll, "Expect")) {
				v = header_value(p, ll, "Expect", &vl);
				if (vl == 12 && !strncasecmp(v, "100-continue", 12) && c->olen + 25 < OUT_MAX) {
					memcpy(c->out + c->olen, "HTTP/1.1 100 Continue\r\n\r\n", 25);
					c->olen += 25;
				}
			}
		}
		if (http10 && !ka)
			c->close_after = true;
		if (chunked) {
			c->close_after = true;
			respond(c, 411, "Length Required", "application/json", "{\"error\":\"send Content-Length\"}");
			return 1;
		}
		if (is_get && !strncmp(path, "/stats", plen) && plen == 6) {
			char line[256];

			stats_line(line, sizeof(line));
			respond(c, 200, "OK", "text/plain", line);
			return 1;
		}
		if (is_get && !strncmp(path, "/reset", plen) && plen == 6) {
			stats_reset();
			respond(c, 200, "OK", "text/plain", "reset\n");
			return 1;
		}
	}
	c->body_len = c->body_left = have_len ? len : 0;
	scan_init(&c->scan);
	return 0;
}

/* Consume received bytes. 0 ok, -1 drop the connection. */
static int consume(struct conn *c, const char *buf, size_t n)
{
	while (n) {
		if (c->phase == READ_HEAD) {
			size_t from = c->hlen > 3 ? c->hlen - 3 : 0, take = n, used;
			char *eoh;
			int r;

			if (take > HEAD_MAX - c->hlen)
				take = HEAD_MAX - c->hlen;
			memcpy(c->head + c->hlen, buf, take);
			c->hlen += take;
			eoh = memmem(c->head + from, c->hlen - from, "\r\n\r\n", 4);
			if (!eoh) {
				if (c->hlen == HEAD_MAX)
					return -1;
				buf += take;
				n -= take;
				continue;
			}
			used = (size_t)(eoh + 4 - c->head) - (c->hlen - take);
			c->hlen = (size_t)(eoh + 4 - c->head);
			buf += used;
			n -= used;
			r = parse_head(c);
			c->hlen = 0;
			if (r < 0)
				return -1;
			if (r > 0)
				continue;       /* answered from the head alone */
			c->phase = READ_BODY;
		}
		if (c->phase == READ_BODY) {
			size_t take = n < c->body_left ? n : (size_t)c->body_left;

			if (c->is_upload)
				scan_feed(&c->scan, (const unsigned char *)buf, take);
			buf += take;
			n -= take;
			c->body_left -= take;
			if (c->body_left)
				continue;
			if (finish_body(c) < 0)
				return -1;
			c->phase = READ_HEAD;
		}
	}
	return 0;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void accept_all(int ep, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct epoll_event ev = { .events = EPOLLIN };
		struct conn *c;

		if (fd < 0)
			return;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		st.connections++;
	}
}

/* Readable or writable: 0 keep, -1 close. */
static int serve(int ep, struct conn *c, uint32_t events, char *buf)
{
	struct epoll_event ev = { .data.ptr = c };
	int f;

	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		for (;;) {
			ssize_t n = recv(c->fd, buf, RECV_BUF, 0);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			if (n <= 0)
				return -1;
			if (consume(c, buf, (size_t)n) < 0)
				return -1;
			if (c->close_after && c->phase == READ_HEAD)
				break;
			if ((size_t)n < RECV_BUF)
				break;  /* level-triggered: the rest, if any, comes with the next wait */
		}
	}
	f = flush_out(c);
	if (f < 0)
		return -1;
	if (f == 0 && c->close_after && c->phase == READ_HEAD)
		return -1;
	ev.events = EPOLLIN | (f > 0 ? EPOLLOUT : 0);
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	return 0;
}

static int run(int port, const char *port_file)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	socklen_t sl = sizeof(sa);
	struct epoll_event ev, events[MAX_EVENTS];
	int lfd, ep, sfd, one = 1;
	sigset_t mask;
	char *buf, line[256];
	bool stop = false;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sfd < 0 || lfd < 0) {
		perror("sink: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 128) < 0 || set_nonblock(lfd) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("sink: bind/listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	buf = malloc(RECV_BUF);
	if (ep < 0 || !buf) {
		perror("sink: epoll");
		return 1;
	}
	ev = (struct epoll_event){ .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.ptr = &sfd };
	epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
	if (port_file) {
		/* Written whole under a temporary name, then renamed: a reader never sees half a number. */
		char tmp[4096];
		FILE *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		f = fopen(tmp, "w");
		if (!f || fprintf(f, "%d\n", ntohs(sa.sin_port)) < 0 || fclose(f) != 0 || rename(tmp, port_file) < 0) {
			perror("sink: port file");
			return 1;
		}
	}
	printf("port=%d\n", ntohs(sa.sin_port));
	fflush(stdout);
	while (!stop) {
		int n = epoll_wait(ep, events, MAX_EVENTS, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("sink: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (events[i].data.ptr == NULL) {
				accept_all(ep, lfd);
			} else if (events[i].data.ptr == &sfd) {
				struct signalfd_siginfo si;

				while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
					stop = true;
			} else if (serve(ep, events[i].data.ptr, events[i].events, buf) < 0) {
				conn_close(ep, events[i].data.ptr);
			}
		}
	}
	stats_line(line, sizeof(line));
	fputs(line, stdout);
	fflush(stdout);
	free(buf);
	free(batches);
	close(ep);
	close(lfd);
	close(sfd);
	return 0;
}

/* ---- self-test of the scanner ---- */

struct case_ {
	const char *body;
	bool ok;
	uint64_t elems;
	bool completed;
};

static int selftest(void)
{
	static const struct case_ cases[] = {
		{ "{\"data\":[],\"batch_uuid\":\"u\",\"batch_completed\":true}", true, 0, true },
		{ "{\"data\":[{\"id\":1}],\"batch_uuid\":\"u\",\"batch_completed\":false}", true, 1, false },
		{ "{\"data\":[{\"id\":1,\"a\":[1,{\"b\":\"]}[,\"}]},{\"id\":\"x\\\"},{\"},{}],"
		  "\"batch_uuid\":\"u\",\"batch_completed\":true,\"ttl_seconds\":3600}", true, 3, true },
		{ "{\"data\":[1,\"two\",[3],{\"4\":4},null],\"batch_uuid\":\"u\",\"batch_completed\":false}",
		  true, 5, false },
		{ "{\"data\":[{\"s\":\"\\\\\"},{\"t\":\"\\\\\\\"\"}],\"batch_uuid\":\"u\",\"batch_completed\":true}",
		  true, 2, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"u\",\"batch_completed\":true}\n", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"u\",\"batch_completed\":true", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"u\"}", false, 1, false },
		{ "{\"data\":[{},],\"batch_uuid\":\"u\",\"batch_completed\":true}", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"u\",\"batch_completed\":true}}", false, 1, true },
		{ "{\"data\":[{]],\"batch_uuid\":\"u\",\"batch_completed\":true}", false, 1, true },
		{ "{\"data\":[{\"a\":\"unterminated}],\"batch_uuid\":\"u\",\"batch_completed\":true}", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"u\",\"batch_completed\":true,\"extra\":1}", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"\",\"batch_completed\":true}", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":\"u\\n\",\"batch_completed\":true}", false, 1, true },
		{ "{\"data\":[{}],\"batch_uuid\":1,\"batch_completed\":true}", false, 1, true },
		{ "{\"data\":[{}],\"batch_completed\":true,\"batch_uuid\":\"u\"}", true, 1, true },
		{ " {\"data\" : [ {\"x\":[]} , 2 ] , \"batch_uuid\" : \"u\" , \"batch_completed\" : false }", true, 2, false },
	};
	int failed = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* Fed whole, then byte by byte: the result may not depend on how the body arrives. */
		for (int split = 0; split < 2; split++) {
			const char *b = cases[i].body;
			size_t len = strlen(b);
			struct scan s;
			bool ok;

			scan_init(&s);
			if (split)
				for (size_t k = 0; k < len; k++)
					scan_feed(&s, (const unsigned char *)b + k, 1);
			else
				scan_feed(&s, (const unsigned char *)b, len);
			ok = scan_ok(&s);
			if (ok != cases[i].ok ||
			    (ok && (s.elems != cases[i].elems || s.completed != cases[i].completed || strcmp(s.uuid, "u")))) {
				printf("FAIL case %zu (%s): ok=%d elems=%" PRIu64 " completed=%d: %s\n", i,
				       split ? "bytewise" : "whole", ok, s.elems, s.completed, b);
				failed++;
			}
		}
	}
	printf("%d passed, %d failed\n", (int)(2 * sizeof(cases) / sizeof(cases[0])) - failed, failed);
	return failed ? 1 : 0;
}

static void usage(FILE *f)
{
	fputs("Usage: sink [-p PORT] [--port-file FILE] [--quiet]\n"
	      "       sink --selftest\n", f);
}

int main(int argc, char **argv)
{
	const char *port_file = NULL;
	int port = 0;

	scan_tables();
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--selftest")) {
			return selftest();
		} else if (!strcmp(argv[i], "--quiet")) {
			quiet = true;
		} else if ((!strcmp(argv[i], "-p") || !strcmp(argv[i], "--port")) && i + 1 < argc) {
			port = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--port-file") && i + 1 < argc) {
			port_file = argv[++i];
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	return run(port, port_file);
}
