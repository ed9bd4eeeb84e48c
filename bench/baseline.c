/*
 * baseline.c - what this machine can do without the server, measured in the
 * same run, so a scenario's figure can be read as a fraction of it.
 *
 * Today: single-core SHA-256 (OpenSSL EVP over 1 MiB blocks), the ceiling
 * for anything that must hash every byte it stores (ByteStream Write,
 * BatchUpdateBlobs), and the bwrap spawn of /bin/true (serial fork/exec
 * and wait, spawns/s and p50), the floor of any sandboxed execution
 * (execute-noop). The null-gRPC-server baselines (unary calls/s and streamed
 * MB/s over loopback with no work behind them) are a later issue: they have
 * their slots in bench_base_t and in the table below; adding one means
 * writing its measure function and pointing the scenarios that should use it
 * at it (reap_bench.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "bench/bench.h"

typedef struct base_def {
	const char *name;
	const char *unit;
	int (*measure)(const bench_ctx_t *c, double *value); /* NULL: not implemented yet */
} base_def_t;

/* SHA-256 of 1 MiB blocks on this thread for about sha_seconds; MB/s (10^6 B). */
static int measure_sha256(const bench_ctx_t *c, double *value)
{
	const size_t block = 1u << 20;
	uint8_t *buf = malloc(block);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	uint64_t rng = 42, bytes = 0;
	double t0, t;
	int rc = -1;

	if (buf == NULL || ctx == NULL)
		goto out;
	bench_rng_fill(&rng, buf, block);
	/* warm-up (page faults, CPU frequency) */
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	for (int i = 0; i < 16; i++)
		EVP_DigestUpdate(ctx, buf, block);
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	t0 = bench_now();
	do {
		/* one digest per 64 MiB, like a large blob */
		EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
		for (int i = 0; i < 64; i++)
			EVP_DigestUpdate(ctx, buf, block);
		EVP_DigestFinal_ex(ctx, md, &mdlen);
		bytes += 64ull * block;
		t = bench_now() - t0;
	} while (t < c->o.sha_seconds);
	*value = (double)bytes / t / 1e6;
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return rc;
}

/* One bwrap spawn of /bin/true: fork, exec, wait. 0 when it exited 0. */
static int bwrap_once(const char *bwrap, char *err, size_t errlen)
{
	const char *argv[] = {bwrap, "--unshare-all", "--die-with-parent", "--new-session",
			      "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
			      "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
			      "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--",
			      "/bin/true", NULL};
	int status = 0;
	pid_t pid = fork();

	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
		}
		execvp(bwrap, (char *const *)argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(err, errlen, "%s ... /bin/true: status 0x%x%s", bwrap, status,
			 WIFEXITED(status) && WEXITSTATUS(status) == 127 ? " (not found?)" : "");
		return -1;
	}
	return 0;
}

/* bwrap_count serial spawns (after 3 untimed warm-ups); spawns/s, p50/p99 kept in c->base. */
static int measure_bwrap(const bench_ctx_t *cc, double *value)
{
	bench_ctx_t *c = (bench_ctx_t *)cc; /* the percentiles go next to the value */
	bench_lat_t lat = {0};
	char err[256];
	double t0, t;

	for (int i = 0; i < 3; i++)
		if (bwrap_once(c->o.bwrap, err, sizeof(err)) != 0) {
			printf("   bwrap: %s\n", err);
			return -1;
		}
	t0 = bench_now();
	for (int i = 0; i < c->o.bwrap_count; i++) {
		double s = bench_now();
		if (bwrap_once(c->o.bwrap, err, sizeof(err)) != 0) {
			printf("   bwrap: %s\n", err);
			bench_lat_destroy(&lat);
			return -1;
		}
		bench_lat_add(&lat, (bench_now() - s) * 1e3);
	}
	t = bench_now() - t0;
	*value = (double)c->o.bwrap_count / t;
	c->base.bwrap_p50_ms = bench_lat_pct(&lat, 50);
	c->base.bwrap_p99_ms = bench_lat_pct(&lat, 99);
	bench_lat_destroy(&lat);
	return 0;
}

static const base_def_t defs[BENCH_BASE_COUNT] = {
	[BENCH_BASE_NONE] = {"none", "", NULL},
	[BENCH_BASE_SHA256] = {"sha256", "MB/s", measure_sha256},
	[BENCH_BASE_NULL_UNARY] = {"null-grpc-unary", "calls/s", NULL},
	[BENCH_BASE_NULL_STREAM] = {"null-grpc-stream", "MB/s", NULL},
	[BENCH_BASE_BWRAP] = {"bwrap", "spawns/s", measure_bwrap},
};

const char *bench_base_name(bench_base_t b)
{
	return b < BENCH_BASE_COUNT ? defs[b].name : "?";
}

bool bench_base_implemented(bench_base_t b)
{
	return b > BENCH_BASE_NONE && b < BENCH_BASE_COUNT && defs[b].measure != NULL;
}

const char *bench_base_unit(bench_base_t b)
{
	return b < BENCH_BASE_COUNT ? defs[b].unit : "";
}

int bench_baseline(bench_ctx_t *c)
{
	int rc = 0;

	printf("== baseline (this machine, this run)\n");
	for (int b = BENCH_BASE_NONE + 1; b < BENCH_BASE_COUNT; b++) {
		double v = 0;
		if (defs[b].measure == NULL) {
			printf("   %-18s not implemented yet (later issue)\n", defs[b].name);
			continue;
		}
		if (defs[b].measure(c, &v) != 0) {
			printf("   %-18s FAILED\n", defs[b].name);
			rc = -1;
			continue;
		}
		c->base.value[b] = v;
		printf("   %-18s %10.1f %s", defs[b].name, v, defs[b].unit);
		if (b == BENCH_BASE_SHA256)
			printf("  (single core, EVP, 1 MiB blocks)");
		if (b == BENCH_BASE_BWRAP)
			printf("  p50 %.2f ms  p99 %.2f ms  (%d serial fork/exec/wait of bwrap "
			       "--unshare-all ... /bin/true)", c->base.bwrap_p50_ms,
			       c->base.bwrap_p99_ms, c->o.bwrap_count);
		printf("\n");
	}
	fflush(stdout);
	return rc;
}

int bench_baseline_bwrap(bench_ctx_t *c)
{
	double v = 0;

	if (measure_bwrap(c, &v) != 0) {
		printf("   %-18s FAILED\n", "bwrap");
		return -1;
	}
	c->base.value[BENCH_BASE_BWRAP] = v;
	printf("   %-18s %10.1f spawns/s  p50 %.2f ms  p99 %.2f ms  (%d serial spawns, this run)\n",
	       "bwrap", v, c->base.bwrap_p50_ms, c->base.bwrap_p99_ms, c->o.bwrap_count);
	fflush(stdout);
	return 0;
}

void bench_apply_ratio(const bench_ctx_t *c, bench_result_t *r)
{
	double base = r->base < BENCH_BASE_COUNT ? c->base.value[r->base] : 0;
	double mine = r->base == BENCH_BASE_SHA256 || r->base == BENCH_BASE_NULL_STREAM ? r->mbps
											: r->rate;

	r->ratio = (base > 0 && r->ran && !r->failed && !r->skipped) ? mine / base : -1;
}
