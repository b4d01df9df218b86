/*
 * httpd.h - a tiny poll()-based HTTP/1.1 server shared by the zeropod test images.
 *
 * The server owns the listening socket, the connections and the routes every test image
 * has (/peer, /exit, /log); the image supplies a handler for everything else. One request
 * counter counts every request this process has answered, the current one included.
 */
#ifndef ZEROPOD_TEST_HTTPD_H
#define ZEROPOD_TEST_HTTPD_H

#include <stddef.h>

/* What the application handler answers: status code and a NUL-terminated body. */
struct httpd_reply {
	int status;
	char body[512];
};

/* A request as the application handler sees it. */
struct httpd_request {
	const char *path;   /* path without the query string, e.g. "/" */
	const char *query;  /* query string without '?', "" when absent */
	unsigned long long seq; /* this request's number: 1 for the first request served */
	const char *peer;   /* the client's address as accepted, e.g. "::ffff:10.0.0.1" */
};

/* Handles a request that none of the common routes took; fills reply. */
typedef void (*httpd_handler)(const struct httpd_request *req, struct httpd_reply *reply);

/*
 * Serves forever on PORT (env, default 8080) and LISTEN (env, default "::" dual stack).
 * Never returns: exits 0 on SIGTERM/SIGINT, exits with N after answering /exit?code=N,
 * exits 1 with a message on stderr when the socket cannot be set up or ACCESS_LOG is neither
 * "on" (default: a line per request on stdout) nor "off".
 */
void httpd_serve(const char *name, httpd_handler handler);

/* Logs one line on stdout and flushes it. */
void httpd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
