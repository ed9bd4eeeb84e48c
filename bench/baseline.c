/*
 * baseline.c - what this machine can do without the server, measured in the
 * same run, so a scenario's figure can be read as a fraction of it.
 *
 * Single-core SHA-256 (OpenSSL EVP over 1 MiB blocks), the ceiling for
 * anything that must hash every byte it stores (ByteStream Write); the null
 * gRPC server (null_server.c: reap's rpc server with do-nothing handlers),
 * empty unary calls/s (the ceiling of ac-get) and server-streamed MB/s (the
 * ceiling of bytestream-read); and the bwrap spawn of /bin/true (serial
 * posix_spawn and wait, spawns/s and p50), the floor of any sandboxed
 * execution (execute-noop); and the disk: files of the ByteStream blob size
 * written and fdatasync'd one at a time in TMPDIR (where --spawn puts the
 * server's data), the ceiling of a ByteStream Write that is durable before
 * it is acknowledged.
 *
 * bench_compare() turns a scenario's figure and its baseline (or absolute
 * target) into the "vs" text every scenario prints; the targets are issue
 * 7's and live in the scenarios (r->cmp, r->goal).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "bench/bench.h"

extern char **environ;

typedef struct base_def {
	const char *name;
	const char *unit;
	/* value, and a line on how it was measured into detail */
	int (*measure)(bench_ctx_t *c, double *value, char *detail, size_t len);
} base_def_t;

/* SHA-256 of 1 MiB blocks on this thread for about sha_seconds; MB/s (10^6 B). */
static int measure_sha256(bench_ctx_t *c, double *value, char *detail, size_t len)
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
	snprintf(detail, len, "single core, OpenSSL EVP, 1 MiB blocks, 64 MiB per digest, %.1f s",
		 t);
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return rc;
}

/*
 * One bwrap spawn of /bin/true: posix_spawn (vfork and exec, so the cost of
 * copying this process does not count), wait. 0 when it exited 0.
 */
static int bwrap_once(const char *bwrap, char *err, size_t errlen)
{
	const char *argv[] = {bwrap, "--unshare-all", "--die-with-parent", "--new-session",
			      "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
			      "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
			      "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--",
			      "/bin/true", NULL};
	posix_spawn_file_actions_t fa;
	int status = 0, rc;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, bwrap, &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		snprintf(err, errlen, "%s: %s", bwrap, strerror(rc));
		return -1;
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

int bench_bwrap_once(const bench_ctx_t *c, char *err, size_t errlen)
{
	return bwrap_once(c->o.bwrap, err, errlen);
}

/* bwrap_count serial spawns (after 3 untimed warm-ups); spawns/s, p50/p99 kept in c->base. */
static int measure_bwrap(bench_ctx_t *c, double *value, char *detail, size_t len)
{
	bench_lat_t lat = {0};
	char err[256];
	double t0, t;

	for (int i = 0; i < 3; i++)
		if (bwrap_once(c->o.bwrap, err, sizeof(err)) != 0) {
			snprintf(detail, len, "%s", err);
			return -1;
		}
	t0 = bench_now();
	for (int i = 0; i < c->o.bwrap_count; i++) {
		double s = bench_now();
		if (bwrap_once(c->o.bwrap, err, sizeof(err)) != 0) {
			snprintf(detail, len, "%s", err);
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
	snprintf(detail, len, "p50 %.2f ms  p99 %.2f ms  (%d serial posix_spawn/wait of bwrap "
		 "--unshare-all ... /bin/true)", c->base.bwrap_p50_ms, c->base.bwrap_p99_ms,
		 c->o.bwrap_count);
	return 0;
}

/*
 * Files of bs_size bytes, written in bs_chunk blocks, fdatasync'd, closed
 * and removed, one after the other for about sha_seconds (after one
 * untimed); MB/s. What the disk allows a server that makes each blob
 * durable before it answers.
 */
static int measure_disk(bench_ctx_t *c, double *value, char *detail, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	size_t chunk = c->o.bs_chunk > 0 ? c->o.bs_chunk : 1u << 20;
	uint8_t *buf = malloc(chunk);
	char dir[PATH_MAX], path[PATH_MAX + 16];
	uint64_t rng = 7, bytes = 0;
	double t0 = 0, t = 0;
	int rc = -1, files = 0;

	snprintf(dir, sizeof(dir), "%s/reap-bench-disk-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (buf == NULL || mkdtemp(dir) == NULL) {
		snprintf(detail, len, "cannot create %s: %s", dir, strerror(errno));
		free(buf);
		return -1;
	}
	bench_rng_fill(&rng, buf, chunk);
	snprintf(path, sizeof(path), "%s/f", dir);
	for (int i = -1; i < 0 || t < c->o.sha_seconds; i++) {
		if (i == 0)
			t0 = bench_now();
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			goto fail;
		for (size_t off = 0; off < c->o.bs_size;) {
			size_t n = c->o.bs_size - off < chunk ? c->o.bs_size - off : chunk;
			ssize_t w = write(fd, buf, n);
			if (w <= 0) {
				close(fd);
				goto fail;
			}
			off += (size_t)w;
		}
		if (fdatasync(fd) != 0) {
			close(fd);
			goto fail;
		}
		close(fd);
		unlink(path);
		if (i >= 0) {
			bytes += c->o.bs_size;
			files++;
			t = bench_now() - t0;
		}
	}
	*value = (double)bytes / t / 1e6;
	snprintf(detail, len, "%d files x %.1f MiB, each written and fdatasync'd, in %s, %.1f s",
		 files, (double)c->o.bs_size / (1 << 20), tmp && *tmp ? tmp : "/tmp", t);
	rc = 0;
	goto out;
fail:
	snprintf(detail, len, "%s: %s", path, strerror(errno));
out:
	unlink(path);
	rmdir(dir);
	free(buf);
	return rc;
}

static int measure_null_unary(bench_ctx_t *c, double *value, char *detail, size_t len)
{
	return bench_null_unary(c, value, detail, len);
}

static int measure_null_stream(bench_ctx_t *c, double *value, char *detail, size_t len)
{
	return bench_null_stream(c, value, detail, len);
}

static const base_def_t defs[BENCH_BASE_COUNT] = {
	[BENCH_BASE_NONE] = {"none", "", NULL},
	[BENCH_BASE_SHA256] = {"sha256", "MB/s", measure_sha256},
	[BENCH_BASE_NULL_UNARY] = {"null-grpc-unary", "calls/s", measure_null_unary},
	[BENCH_BASE_NULL_STREAM] = {"null-grpc-stream", "MB/s", measure_null_stream},
	[BENCH_BASE_BWRAP] = {"bwrap", "spawns/s", measure_bwrap},
	[BENCH_BASE_DISK] = {"disk-fsync", "MB/s", measure_disk},
};

const char *bench_base_name(bench_base_t b)
{
	return b < BENCH_BASE_COUNT ? defs[b].name : "?";
}

const char *bench_base_unit(bench_base_t b)
{
	return b < BENCH_BASE_COUNT ? defs[b].unit : "";
}

int bench_baseline_one(bench_ctx_t *c, bench_base_t b)
{
	char *detail = c->base.detail[b];
	double v = 0;

	if (b <= BENCH_BASE_NONE || b >= BENCH_BASE_COUNT)
		return -1;
	fflush(stdout);
	if (defs[b].measure(c, &v, detail, sizeof(c->base.detail[b])) != 0) {
		printf("   %-18s FAILED: %s\n", defs[b].name, detail);
		fflush(stdout);
		return -1;
	}
	c->base.value[b] = v;
	printf("   %-18s %10.1f %-9s %s\n", defs[b].name, v, defs[b].unit, detail);
	fflush(stdout);
	return 0;
}

int bench_baseline(bench_ctx_t *c)
{
	int rc = 0;

	printf("== baseline (this machine, this run)\n");
	for (int b = BENCH_BASE_NONE + 1; b < BENCH_BASE_COUNT; b++)
		if (bench_baseline_one(c, (bench_base_t)b) != 0)
			rc = -1;
	return rc;
}

int bench_baseline_bwrap(bench_ctx_t *c)
{
	return bench_baseline_one(c, BENCH_BASE_BWRAP);
}

void bench_compare(const bench_ctx_t *c, bench_result_t *r)
{
	bool ok = r->ran && !r->failed && !r->skipped;
	double base = r->base < BENCH_BASE_COUNT ? c->base.value[r->base] : 0;
	const char *name = bench_base_name(r->base);

	r->cmp_ok = false;
	r->vs[0] = '\0';
	switch (r->cmp) {
	case BENCH_CMP_NONE:
		return;
	case BENCH_CMP_RATIO:
		if (!ok || base <= 0) {
			snprintf(r->vs, sizeof(r->vs), "n/a (%s)", !ok ? "no result" : "baseline not measured");
			return;
		}
		r->ratio = (r->base == BENCH_BASE_SHA256 || r->base == BENCH_BASE_NULL_STREAM
				    ? r->mbps
				    : r->rate) / base;
		r->cmp_ok = true;
		snprintf(r->vs, sizeof(r->vs), "%.3f x %s (target >= %.2f: %s)", r->ratio, name,
			 r->goal, r->ratio >= r->goal ? "met" : "NOT met");
		return;
	case BENCH_CMP_ABS:
		if (!ok) {
			snprintf(r->vs, sizeof(r->vs), "n/a (no result)");
			return;
		}
		r->ratio = r->rate / r->goal;
		r->cmp_ok = true;
		snprintf(r->vs, sizeof(r->vs), "%.3f x target %.0f %s (%s)", r->ratio, r->goal,
			 r->rate_unit, r->ratio >= 1 ? "met" : "NOT met");
		return;
	case BENCH_CMP_P50_OVER:
		if (!ok || c->base.value[BENCH_BASE_BWRAP] <= 0) {
			snprintf(r->vs, sizeof(r->vs), "n/a (%s)", !ok ? "no result" : "bwrap not measured");
			return;
		}
	{
		/*
		 * The lower (stricter) of the floor and the separate baseline: a
		 * server that starts sandboxes ahead of their actions (reap does)
		 * builds its next one while the floor is spawned, which slows the
		 * floor, not the action.
		 */
		double sep = c->base.bwrap_p50_ms;
		bool use_floor = r->floor_ms > 0 && r->floor_ms < sep;
		const char *which = use_floor ? " (interleaved floor)"
				    : r->floor_ms > 0 ? " (baseline, below the floor)" : "";
		r->ratio = r->p50_ms - (use_floor ? r->floor_ms : sep);
		r->cmp_ok = true;
		snprintf(r->vs, sizeof(r->vs), "p50 = bwrap p50%s %+.2f ms (target <= +%.0f ms: %s)",
			 which, r->ratio, r->goal, r->ratio <= r->goal ? "met" : "NOT met");
		return;
	}
	case BENCH_CMP_RSS:
		if (!ok || r->rss_mib < 0) {
			snprintf(r->vs, sizeof(r->vs), "peak RSS n/a (%s; target %.1f MiB)",
				 !ok ? "no result" : "external server", r->goal);
			return;
		}
		r->ratio = r->rss_mib;
		r->cmp_ok = true;
		snprintf(r->vs, sizeof(r->vs), "peak RSS %.1f MiB (target <= %.1f MiB: %s)",
			 r->ratio, r->goal, r->ratio <= r->goal ? "met" : "NOT met");
		return;
	default:
		return;
	}
}
