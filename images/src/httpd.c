/*
 * httpd.c - a tiny poll()-based HTTP/1.1 server shared by the zeropod test images.
 *
 * One thread, one poll() loop over the listening socket and up to MAX_CONNS connections.
 * A connection that sends nothing for IDLE_MS is closed, so a slow or silent client never
 * blocks the others. Requests are answered in order; several requests may share one
 * connection when the client asks for keep-alive ("Connection: keep-alive"), otherwise the
 * answer says "Connection: close" and the connection is closed after it.
 * Every request is logged on stdout ("served N from PEER") unless ACCESS_LOG=off.
 */
#define _GNU_SOURCE
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BACKLOG 4096
#define REQ_MAX 8192
#define IDLE_MS 10000
#define SEND_TIMEOUT_S 5

struct conn {
	int fd;
	size_t len;
	long long last_ms;
	unsigned port;
	char peer[INET6_ADDRSTRLEN];
	char buf[REQ_MAX + 1];
};

static struct conn *conns[MAX_CONNS];
static int nconns;
static unsigned long long served;
static int access_log = 1; /* ACCESS_LOG: "on" (default) or "off" */

void httpd_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sockaddr_text(const struct sockaddr_storage *ss, char *out, size_t len,
			  unsigned *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, out, len);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, out, len);
		*port = ntohs(s4->sin_port);
	}
}

static int open_listener(const char *name)
{
	const char *addr = getenv("LISTEN");
	const char *port_s = getenv("PORT");
	struct sockaddr_storage ss = { 0 };
	socklen_t sslen;
	char *end;
	long port;
	int fd, one = 1, zero = 0;
	unsigned bound_port;
	char text[INET6_ADDRSTRLEN];

	if (!addr || !*addr)
		addr = "::";
	if (!port_s || !*port_s)
		port_s = "8080";
	port = strtol(port_s, &end, 10);
	if (*end || port < 0 || port > 65535) {
		fprintf(stderr, "%s: PORT=%s is not a port number (0-65535)\n", name, port_s);
		exit(1);
	}
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((unsigned short)port);
		if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1) {
			fprintf(stderr, "%s: LISTEN=%s is not an IP address\n", name, addr);
			exit(1);
		}
		sslen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((unsigned short)port);
		if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1) {
			fprintf(stderr, "%s: LISTEN=%s is not an IP address\n", name, addr);
			exit(1);
		}
		sslen = sizeof(*s4);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("SO_REUSEADDR");
	/* "::" means both families; other IPv6 addresses are unaffected by the option. */
	if (ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
		die("IPV6_V6ONLY");
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0)
		die("bind");
	if (listen(fd, BACKLOG) < 0)
		die("listen");
	sslen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0)
		die("getsockname");
	sockaddr_text(&ss, text, sizeof(text), &bound_port);
	httpd_log("%s listening on [%s]:%u", name, text, bound_port);
	return fd;
}

static void close_conn(int i)
{
	close(conns[i]->fd);
	free(conns[i]);
	conns[i] = conns[--nconns];
}

static void accept_all(int lfd)
{
	struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };

	while (nconns < MAX_CONNS) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		struct conn *c;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sslen, SOCK_CLOEXEC);

		if (fd < 0)
			return; /* EAGAIN, or a connection that went away before accept */
		c = malloc(sizeof(*c));
		if (!c) {
			close(fd);
			return;
		}
		/* Replies are small: a blocking send with a timeout never stalls the loop long. */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		c->fd = fd;
		c->len = 0;
		c->last_ms = now_ms();
		sockaddr_text(&ss, c->peer, sizeof(c->peer), &c->port);
		conns[nconns++] = c;
	}
}

/* Finds header NAME in the header block HDRS; copies its value (trimmed) into OUT. */
static int header_value(const char *hdrs, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name);
	const char *line = hdrs;

	while (line && *line) {
		const char *eol = strstr(line, "\r\n");
		size_t llen = eol ? (size_t)(eol - line) : strlen(line);

		if (llen > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
			const char *v = line + nlen + 1;
			size_t vlen = llen - nlen - 1;

			while (vlen && (*v == ' ' || *v == '\t')) {
				v++;
				vlen--;
			}
			while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			if (vlen >= outlen)
				vlen = outlen - 1;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return 1;
		}
		line = eol ? eol + 2 : NULL;
	}
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Copies the URL-decoded value of KEY from QUERY into OUT; returns 0 when KEY is absent. */
static int query_param(const char *query, const char *key, char *out, size_t outlen)
{
	size_t klen = strlen(key);
	const char *p = query;

	while (p && *p) {
		if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t n = 0;

			for (p += klen + 1; *p && *p != '&' && n + 1 < outlen; p++) {
				if (*p == '+') {
					out[n++] = ' ';
				} else if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
					out[n++] = (char)(hexval(p[1]) * 16 + hexval(p[2]));
					p += 2;
				} else {
					out[n++] = *p;
				}
			}
			out[n] = '\0';
			return 1;
		}
		p = strchr(p, '&');
		if (p)
			p++;
	}
	return 0;
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	default: return "Error";
	}
}

static int send_reply(struct conn *c, const struct httpd_reply *r, int keep)
{
	char out[1024];
	size_t blen = strlen(r->body);
	int n = snprintf(out, sizeof(out),
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
			 "Connection: %s\r\n\r\n%s",
			 r->status, reason(r->status), blen, keep ? "keep-alive" : "close", r->body);
	size_t off = 0;

	if (n < 0 || (size_t)n >= sizeof(out))
		return -1;
	while (off < (size_t)n) {
		ssize_t w = send(c->fd, out + off, (size_t)n - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return 0;
}

/*
 * Answers every complete request in c's buffer. Returns 1 to keep the connection, 0 to close.
 */
static int serve_buffered(struct conn *c, httpd_handler handler)
{
	for (;;) {
		char *end = strstr(c->buf, "\r\n\r\n");
		char method[16], target[2048], version[16], value[64], msg[1024];
		struct httpd_reply reply = { .status = 200 };
		struct httpd_request req;
		size_t hlen, clen = 0, total;
		int keep = 0, exit_code = -1;
		char *q, *hdrs;

		if (!end)
			return c->len < REQ_MAX; /* wait for more, unless the header cannot fit */
		hlen = (size_t)(end - c->buf) + 4;
		*end = '\0';
		hdrs = strstr(c->buf, "\r\n");
		hdrs = hdrs ? hdrs + 2 : end;
		if (header_value(hdrs, "Content-Length", value, sizeof(value)))
			clen = strtoul(value, NULL, 10);
		if (header_value(hdrs, "Connection", value, sizeof(value)))
			keep = strcasestr(value, "keep-alive") != NULL;
		total = hlen + clen;
		if (total > REQ_MAX) {
			reply.status = 413;
			snprintf(reply.body, sizeof(reply.body), "request too large\n");
			send_reply(c, &reply, 0);
			return 0;
		}
		if (c->len < total) {
			*end = '\r'; /* restore the terminator and wait for the body */
			return 1;
		}
		req.seq = ++served;
		req.peer = c->peer;
		if (sscanf(c->buf, "%15s %2047s %15s", method, target, version) != 3 ||
		    strncmp(version, "HTTP/1.", 7) != 0) {
			reply.status = 400;
			snprintf(reply.body, sizeof(reply.body), "bad request\n");
			keep = 0;
			req.path = "";
			req.query = "";
		} else {
			q = strchr(target, '?');
			if (q)
				*q++ = '\0';
			req.path = target;
			req.query = q ? q : "";
			if (strcmp(method, "GET") != 0) {
				reply.status = 405;
				snprintf(reply.body, sizeof(reply.body), "only GET\n");
			} else if (strcmp(req.path, "/peer") == 0) {
				snprintf(reply.body, sizeof(reply.body), "peer=%s port=%u\n", c->peer,
					 c->port);
			} else if (strcmp(req.path, "/exit") == 0) {
				exit_code = 0;
				if (query_param(req.query, "code", value, sizeof(value)))
					exit_code = atoi(value) & 255;
				snprintf(reply.body, sizeof(reply.body), "exiting code=%d\n",
					 exit_code);
				keep = 0;
			} else if (strcmp(req.path, "/log") == 0) {
				if (!query_param(req.query, "msg", msg, sizeof(msg)))
					msg[0] = '\0';
				httpd_log("%s", msg);
				snprintf(reply.body, sizeof(reply.body), "logged\n");
			} else {
				handler(&req, &reply);
			}
		}
		if (access_log)
			httpd_log("served %llu from %s", req.seq, c->peer);
		if (send_reply(c, &reply, keep) < 0)
			return 0;
		if (exit_code >= 0) {
			close(c->fd);
			exit(exit_code);
		}
		if (!keep)
			return 0;
		memmove(c->buf, c->buf + total, c->len - total);
		c->len -= total;
		c->buf[c->len] = '\0';
	}
}

/* Reads what is available on connection i; returns 0 when it must be closed. */
static int read_conn(struct conn *c, httpd_handler handler)
{
	ssize_t n = recv(c->fd, c->buf + c->len, REQ_MAX - c->len, 0);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 1;
	if (n <= 0)
		return 0; /* EOF or reset: nothing to answer */
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	c->last_ms = now_ms();
	return serve_buffered(c, handler);
}

void httpd_serve(const char *name, httpd_handler handler)
{
	static struct pollfd pfds[MAX_CONNS + 1];
	struct sigaction sa = { .sa_handler = on_term };
	int lfd, i;

	const char *access_log_s = getenv("ACCESS_LOG");

	if (access_log_s && *access_log_s && strcmp(access_log_s, "on") != 0) {
		if (strcmp(access_log_s, "off") != 0) {
			fprintf(stderr, "%s: ACCESS_LOG=%s: expected on or off\n", name, access_log_s);
			exit(1);
		}
		access_log = 0;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	lfd = open_listener(name);
	for (;;) {
		long long now;
		int n = nconns;

		for (i = 0; i < n; i++) {
			pfds[i].fd = conns[i]->fd;
			pfds[i].events = POLLIN;
			pfds[i].revents = 0;
		}
		/* At MAX_CONNS the listener waits in the kernel's backlog until a slot frees. */
		pfds[n].fd = nconns < MAX_CONNS ? lfd : -1;
		pfds[n].events = POLLIN;
		pfds[n].revents = 0;
		if (poll(pfds, (nfds_t)n + 1, 1000) < 0 && errno != EINTR)
			die("poll");
		/* Walk backwards: close_conn moves the last connection into the freed slot. */
		for (i = n - 1; i >= 0; i--) {
			if (pfds[i].revents && !read_conn(conns[i], handler))
				close_conn(i);
		}
		now = now_ms();
		for (i = nconns - 1; i >= 0; i--) {
			if (now - conns[i]->last_ms > IDLE_MS)
				close_conn(i);
		}
		if (pfds[n].revents)
			accept_all(lfd);
	}
}
