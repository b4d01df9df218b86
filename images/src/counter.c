/*
 * counter - the zeropod test app whose whole state is one number in memory.
 *
 * GET / answers "count=N" where N is the number of requests this process has served, this
 * one included (1 first). After a checkpoint and restore the count must go on without a gap
 * or a repeat; a restart would begin at 1 again.
 */
#include <stdio.h>
#include <string.h>

#include "httpd.h"

static void handle(const struct httpd_request *req, struct httpd_reply *reply)
{
	if (strcmp(req->path, "/") != 0) {
		reply->status = 404;
		snprintf(reply->body, sizeof(reply->body), "not found\n");
		return;
	}
	snprintf(reply->body, sizeof(reply->body), "count=%llu\n", req->seq);
}

int main(void)
{
	httpd_serve("counter", handle);
	return 0;
}
