/*
 * baseline.c - what this machine can do without the server, measured in the
 * same run, so a scenario's figure can be read as a fraction of it.
 *
 * Today: single-core SHA-256 (OpenSSL EVP over 1 MiB blocks), the ceiling
 * for anything that must hash every byte it stores (ByteStream Write,
 * BatchUpdateBlobs). The null-gRPC-server baselines (unary calls/s and
 * streamed MB/s over loopback with no work behind them) and the bwrap spawn
 * baseline are a later issue: they have their slots in bench_base_t and in
 * the table below; adding one means writing its measure function and
 * pointing the scenarios that should use it at it (reap_bench.c).
 */
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

static const base_def_t defs[BENCH_BASE_COUNT] = {
	[BENCH_BASE_NONE] = {"none", "", NULL},
	[BENCH_BASE_SHA256] = {"sha256", "MB/s", measure_sha256},
	[BENCH_BASE_NULL_UNARY] = {"null-grpc-unary", "calls/s", NULL},
	[BENCH_BASE_NULL_STREAM] = {"null-grpc-stream", "MB/s", NULL},
	[BENCH_BASE_BWRAP] = {"bwrap", "spawns/s", NULL},
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
		printf("   %-18s %10.1f %s%s\n", defs[b].name, v, defs[b].unit,
		       b == BENCH_BASE_SHA256 ? "  (single core, EVP, 1 MiB blocks)" : "");
	}
	fflush(stdout);
	return rc;
}

void bench_apply_ratio(const bench_ctx_t *c, bench_result_t *r)
{
	double base = r->base < BENCH_BASE_COUNT ? c->base.value[r->base] : 0;
	double mine = r->base == BENCH_BASE_SHA256 || r->base == BENCH_BASE_NULL_STREAM ? r->mbps
											: r->rate;

	r->ratio = (base > 0 && r->ran && !r->failed && !r->skipped) ? mine / base : -1;
}
