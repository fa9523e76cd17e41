/*
 * The transport floor of vfio-user: request/reply round trips over a UNIX stream
 * socket pair between two processes, in C, with the message sizes pyvfio's client and
 * server exchange (bench/vfio_user.py passes them). Nothing is parsed: the child reads
 * exactly REQ bytes and answers RESP bytes, the parent writes REQ and reads RESP.
 *
 * usage: uds_pingpong REQ RESP BUDGET_MS
 * prints one JSON object: ns per round trip (best and median of 5 batches), timed the
 * way bench/primitives.py times (batch calibrated to a fifth of the budget).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5

static int exact_read(int fd, char *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static int exact_write(int fd, const char *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t req_size, resp_size;
static char *req, *resp;

static void round_trips(int fd, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		if (exact_write(fd, req, req_size) || exact_read(fd, resp, resp_size)) {
			perror("uds_pingpong: peer");
			exit(1);
		}
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s REQ RESP BUDGET_MS\n", argv[0]);
		return 2;
	}
	req_size = strtoul(argv[1], NULL, 0);
	resp_size = strtoul(argv[2], NULL, 0);
	uint64_t budget = strtoull(argv[3], NULL, 0) * 1000000ull;
	req = calloc(1, req_size ? req_size : 1);
	resp = calloc(1, resp_size ? resp_size : 1);
	int sv[2];
	if (!req || !resp || socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
		perror("uds_pingpong: setup");
		return 1;
	}
	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	if (child == 0) { /* the "server": read a request, answer it */
		close(sv[0]);
		for (;;) {
			if (exact_read(sv[1], req, req_size) || exact_write(sv[1], resp, resp_size))
				_exit(0);
		}
	}
	close(sv[1]);
	round_trips(sv[0], 100); /* warm up */
	uint64_t n = 1, took;
	for (;;) {
		uint64_t t0 = now_ns();
		round_trips(sv[0], n);
		took = now_ns() - t0;
		if (took >= budget / 50 || n >= (1ull << 30))
			break;
		n *= 2;
	}
	n = n * (budget / ROUNDS) / (took ? took : 1);
	if (n < 1)
		n = 1;
	double per[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		uint64_t t0 = now_ns();
		round_trips(sv[0], n);
		per[r] = (double)(now_ns() - t0) / (double)n;
	}
	qsort(per, ROUNDS, sizeof(per[0]), cmp_double);
	close(sv[0]);
	waitpid(child, NULL, 0);
	printf("{\"ns_per_op\": %.1f, \"best_ns_per_op\": %.1f, \"iterations\": %llu, "
	       "\"rounds\": %d, \"batch\": %llu}\n",
	       per[ROUNDS / 2], per[0], (unsigned long long)(n * ROUNDS), ROUNDS,
	       (unsigned long long)n);
	return 0;
}
