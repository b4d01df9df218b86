/*
 * warmup - a zeropod test app that needs about two seconds to build its in-memory state.
 *
 * At start it builds a 32 MB table by hashing, pass after pass, until WARMUP_MS (env, default
 * 2000) milliseconds of work are done, then serves. GET / answers "passes=N digest=HEX" from
 * that table without recomputing it: the cost of a cold start, the benefit of a restore.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httpd.h"

#define TABLE_WORDS ((32u << 20) / sizeof(uint64_t))

static uint64_t *table;
static unsigned long passes;
static uint64_t digest;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void build(long budget_ms)
{
	double start = now_ms();
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	size_t i;

	do {
		for (i = 0; i < TABLE_WORDS; i++) {
			x = (x ^ table[i] ^ i) * 0x100000001b3ULL;
			table[i] = x ? x : 1;
		}
		passes++;
	} while (now_ms() - start < budget_ms);
	digest = x;
}

static void handle(const struct httpd_request *req, struct httpd_reply *reply)
{
	if (strcmp(req->path, "/") != 0) {
		reply->status = 404;
		snprintf(reply->body, sizeof(reply->body), "not found\n");
		return;
	}
	snprintf(reply->body, sizeof(reply->body), "passes=%lu digest=%016llx\n", passes,
		 (unsigned long long)digest);
}

int main(void)
{
	const char *env = getenv("WARMUP_MS");
	long budget = env && *env ? strtol(env, NULL, 10) : 2000;

	table = calloc(TABLE_WORDS, sizeof(*table));
	if (!table) {
		perror("warmup: calloc");
		return 1;
	}
	build(budget);
	httpd_log("warmup passes=%lu digest=%016llx", passes, (unsigned long long)digest);
	httpd_serve("warmup", handle);
	return 0;
}
