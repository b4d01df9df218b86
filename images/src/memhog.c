/*
 * memhog - a zeropod test app that holds MEM_MB megabytes of resident, non-zero memory.
 *
 * At start it fills the buffer with pseudo-random words (every page touched) and computes
 * a checksum; GET / recomputes the checksum over the whole buffer and answers
 * "size_mb=N checksum=HEX", so a restore that lost or zeroed memory shows a different sum.
 * GET /ping answers "size_mb=N" without reading the buffer: a request whose working set is
 * small next to what the process holds (what a lazy restore serves first).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "httpd.h"

static uint64_t *words;
static size_t nwords;
static long size_mb;

static uint64_t checksum(void)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < nwords; i++)
		h = (h ^ words[i]) * 0x100000001b3ULL;
	return h;
}

static void fill(void)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	size_t i;

	for (i = 0; i < nwords; i++) {
		/* xorshift64: never yields 0 from a non-zero state */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		words[i] = x;
	}
}

static void handle(const struct httpd_request *req, struct httpd_reply *reply)
{
	if (strcmp(req->path, "/ping") == 0) {
		snprintf(reply->body, sizeof(reply->body), "size_mb=%ld\n", size_mb);
		return;
	}
	if (strcmp(req->path, "/") != 0) {
		reply->status = 404;
		snprintf(reply->body, sizeof(reply->body), "not found\n");
		return;
	}
	snprintf(reply->body, sizeof(reply->body), "size_mb=%ld checksum=%016llx\n", size_mb,
		 (unsigned long long)checksum());
}

int main(void)
{
	const char *env = getenv("MEM_MB");
	char *end;
	size_t bytes;

	size_mb = env && *env ? strtol(env, &end, 10) : 5;
	if ((env && *env && *end) || size_mb < 1 || size_mb > 65536) {
		fprintf(stderr, "memhog: MEM_MB=%s is not a size in MB (1-65536)\n", env);
		return 1;
	}
	bytes = (size_t)size_mb << 20;
	words = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (words == MAP_FAILED) {
		perror("memhog: mmap");
		return 1;
	}
	nwords = bytes / sizeof(*words);
	fill();
	httpd_log("memhog size_mb=%ld checksum=%016llx", size_mb, (unsigned long long)checksum());
	httpd_serve("memhog", handle);
	return 0;
}
