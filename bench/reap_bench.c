/*
 * reap_bench.c - reap-bench: a load generator for any REAPI v2 server.
 *
 *   reap-bench SCENARIO [--target HOST:PORT | --spawn PATH_TO_REAPD] [options]
 *
 * Scenarios: bytestream-big, bytestream-write, bytestream-read, find-missing,
 * batch-update, ac-get, execute-noop, baseline, all. Each prints its
 * throughput, the p50/p99 latency of its unit of work, the client's CPU
 * seconds and, with --server-pid (implied by --spawn), the server's CPU
 * seconds and peak RSS, and how it compares with its baseline or target.
 * `all` measures the baselines first, then runs every scenario (the big
 * stream first, while the server is fresh), then prints a Markdown summary
 * table. See bench/README.md.
 *
 * This file: options, defaults, dispatch and printing.
 */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

typedef void (*scen_fn_t)(bench_ctx_t *c, bench_result_t *r);

static const struct {
	const char *name;
	scen_fn_t fn;
	bench_base_t base, base2; /* measured first when the scenario runs alone */
} scenarios[] = {
	/* first: its RSS target is about a server that has not served anything else */
	{"bytestream-big", bench_bytestream_big, BENCH_BASE_NONE, BENCH_BASE_NONE},
	{"bytestream-write", bench_bytestream_write, BENCH_BASE_SHA256, BENCH_BASE_DISK},
	{"bytestream-read", bench_bytestream_read, BENCH_BASE_NULL_STREAM, BENCH_BASE_NONE},
	{"find-missing", bench_find_missing, BENCH_BASE_NONE, BENCH_BASE_NONE},
	{"batch-update", bench_batch_update, BENCH_BASE_NONE, BENCH_BASE_NONE},
	{"ac-get", bench_ac_get, BENCH_BASE_NULL_UNARY, BENCH_BASE_NONE},
	/* measures bwrap itself, once it knows a worker is there */
	{"execute-noop", bench_execute_noop, BENCH_BASE_NONE, BENCH_BASE_NONE},
};
#define N_SCEN (sizeof(scenarios) / sizeof(scenarios[0]))

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reap-bench SCENARIO [options]\n"
		"scenarios: bytestream-big bytestream-write bytestream-read find-missing\n"
		"           batch-update ac-get execute-noop\n"
		"           baseline all\n"
		"server:\n"
		"  --target HOST:PORT     any REAPI v2 server (plaintext gRPC)\n"
		"  --spawn PATH           start this reapd on 127.0.0.1:0 with a temporary folder\n"
		"  --no-sync              pass --no-sync to the spawned reapd (default: fsync on)\n"
		"  --spawn-worker PATH    with --spawn: also start this reap-worker (slots = nproc)\n"
		"  --server-pid PID       also report the server's CPU seconds and peak RSS\n"
		"  --instance NAME        instance name (default \"\")\n"
		"  --header KEY=VALUE     metadata sent with every call (repeatable, e.g. authorization)\n"
		"run:\n"
		"  --quick                a seconds-long version (smaller counts)\n"
		"  --time-limit SEC       stop everything after SEC (default 1200; quick 180)\n"
		"  --seed N               content seed (default: from the OS)\n"
		"bytestream-write / bytestream-read:\n"
		"  --bs-size SIZE         blob size (default 16MiB)\n"
		"  --bs-count N           blobs (default 32; quick 4)\n"
		"  --bs-parallel K        streams in parallel (default 2)\n"
		"  --bs-chunk SIZE        Write message size (default 1MiB; bytestream-big too)\n"
		"bytestream-big:\n"
		"  --big-size SIZE        the one blob written and read back (default 2GiB; quick 256MiB)\n"
		"  --big-buffers SIZE     RSS target = 64 MiB + SIZE (default 8MiB + 256KiB: reapd's\n"
		"                         --max-message and its ByteStream read chunk)\n"
		"find-missing:\n"
		"  --fm-digests D         digests per request, half present (default 10000)\n"
		"  --fm-requests R        requests (default 200; quick 20)\n"
		"  --fm-parallel P        requests in flight (default 1)\n"
		"batch-update:\n"
		"  --bu-size SIZE         blob size (default 1KiB)\n"
		"  --bu-count N           blobs (default 100000; quick 20000)\n"
		"  --bu-parallel P        batches in flight (default 2)\n"
		"  --bu-max-batch SIZE    batch budget (default: the server's max_batch_total_size_bytes)\n"
		"ac-get:\n"
		"  --ac-calls N           GetActionResult calls (default 50000; quick 5000)\n"
		"  --ac-inflight C        calls in flight (default 64; the null unary baseline too)\n"
		"  --ac-entries E         distinct entries (default 100)\n"
		"execute-noop (needs workers behind the server):\n"
		"  --ex-count N           sequential actions (default 50; quick 10)\n"
		"  --ex-parallel P        actions in flight in the parallel phase (default 2 x nproc)\n"
		"  --ex-pcount N          actions in the parallel phase (default 200; quick 40)\n"
		"baseline (also run by all):\n"
		"  --null-chunk SIZE      null server's stream message size (default 1MiB)\n"
		"  --bwrap PATH           bwrap binary (default bwrap from PATH)\n"
		"  --bwrap-count N        serial bwrap spawns (default 50; quick 20)\n");
}

enum {
	OPT_TARGET = 256, OPT_SPAWN, OPT_NOSYNC, OPT_PID, OPT_INSTANCE, OPT_HEADER, OPT_QUICK,
	OPT_LIMIT, OPT_SEED, OPT_BS_SIZE, OPT_BS_COUNT, OPT_BS_PAR, OPT_BS_CHUNK, OPT_FM_D,
	OPT_FM_R, OPT_FM_P, OPT_BU_SIZE, OPT_BU_COUNT, OPT_BU_PAR, OPT_BU_MAX, OPT_AC_CALLS,
	OPT_AC_INFLIGHT, OPT_AC_ENTRIES, OPT_SPAWN_WORKER, OPT_EX_COUNT, OPT_EX_PAR, OPT_EX_PCOUNT,
	OPT_BWRAP, OPT_BWRAP_COUNT, OPT_BIG_SIZE, OPT_BIG_BUFFERS, OPT_NULL_CHUNK,
};

/* Parse options into o (0 = unset, filled by defaults()). 0, or -1 with a message. */
static int parse_opts(int argc, char **argv, bench_opts_t *o)
{
	static const struct option longopts[] = {
		{"target", required_argument, NULL, OPT_TARGET},
		{"spawn", required_argument, NULL, OPT_SPAWN},
		{"no-sync", no_argument, NULL, OPT_NOSYNC},
		{"server-pid", required_argument, NULL, OPT_PID},
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"header", required_argument, NULL, OPT_HEADER},
		{"quick", no_argument, NULL, OPT_QUICK},
		{"time-limit", required_argument, NULL, OPT_LIMIT},
		{"seed", required_argument, NULL, OPT_SEED},
		{"bs-size", required_argument, NULL, OPT_BS_SIZE},
		{"bs-count", required_argument, NULL, OPT_BS_COUNT},
		{"bs-parallel", required_argument, NULL, OPT_BS_PAR},
		{"bs-chunk", required_argument, NULL, OPT_BS_CHUNK},
		{"fm-digests", required_argument, NULL, OPT_FM_D},
		{"fm-requests", required_argument, NULL, OPT_FM_R},
		{"fm-parallel", required_argument, NULL, OPT_FM_P},
		{"bu-size", required_argument, NULL, OPT_BU_SIZE},
		{"bu-count", required_argument, NULL, OPT_BU_COUNT},
		{"bu-parallel", required_argument, NULL, OPT_BU_PAR},
		{"bu-max-batch", required_argument, NULL, OPT_BU_MAX},
		{"ac-calls", required_argument, NULL, OPT_AC_CALLS},
		{"ac-inflight", required_argument, NULL, OPT_AC_INFLIGHT},
		{"ac-entries", required_argument, NULL, OPT_AC_ENTRIES},
		{"spawn-worker", required_argument, NULL, OPT_SPAWN_WORKER},
		{"ex-count", required_argument, NULL, OPT_EX_COUNT},
		{"ex-parallel", required_argument, NULL, OPT_EX_PAR},
		{"ex-pcount", required_argument, NULL, OPT_EX_PCOUNT},
		{"bwrap", required_argument, NULL, OPT_BWRAP},
		{"bwrap-count", required_argument, NULL, OPT_BWRAP_COUNT},
		{"big-size", required_argument, NULL, OPT_BIG_SIZE},
		{"big-buffers", required_argument, NULL, OPT_BIG_BUFFERS},
		{"null-chunk", required_argument, NULL, OPT_NULL_CHUNK},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int opt, pid = 0, bad = 0;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_TARGET: o->target = optarg; break;
		case OPT_SPAWN: o->spawn = optarg; break;
		case OPT_NOSYNC: o->no_sync = true; break;
		case OPT_PID: bad |= bench_parse_int(optarg, &pid); o->server_pid = pid; break;
		case OPT_INSTANCE: o->instance = optarg; break;
		case OPT_HEADER:
			if (o->n_headers == BENCH_MAX_HEADERS || strchr(optarg, '=') == NULL)
				bad = -1;
			else
				o->headers[o->n_headers++] = optarg;
			break;
		case OPT_QUICK: o->quick = true; break;
		case OPT_LIMIT: bad |= bench_parse_int(optarg, &o->time_limit_s); break;
		case OPT_SEED: o->seed = strtoull(optarg, NULL, 0); break;
		case OPT_BS_SIZE: bad |= bench_parse_size(optarg, &o->bs_size); break;
		case OPT_BS_COUNT: bad |= bench_parse_int(optarg, &o->bs_count); break;
		case OPT_BS_PAR: bad |= bench_parse_int(optarg, &o->bs_parallel); break;
		case OPT_BS_CHUNK: bad |= bench_parse_size(optarg, &o->bs_chunk); break;
		case OPT_FM_D: bad |= bench_parse_int(optarg, &o->fm_digests); break;
		case OPT_FM_R: bad |= bench_parse_int(optarg, &o->fm_requests); break;
		case OPT_FM_P: bad |= bench_parse_int(optarg, &o->fm_parallel); break;
		case OPT_BU_SIZE: bad |= bench_parse_size(optarg, &o->bu_size); break;
		case OPT_BU_COUNT: bad |= bench_parse_int(optarg, &o->bu_count); break;
		case OPT_BU_PAR: bad |= bench_parse_int(optarg, &o->bu_parallel); break;
		case OPT_BU_MAX: bad |= bench_parse_size(optarg, &o->bu_max_batch); break;
		case OPT_AC_CALLS: bad |= bench_parse_int(optarg, &o->ac_calls); break;
		case OPT_AC_INFLIGHT: bad |= bench_parse_int(optarg, &o->ac_inflight); break;
		case OPT_AC_ENTRIES: bad |= bench_parse_int(optarg, &o->ac_entries); break;
		case OPT_SPAWN_WORKER: o->spawn_worker = optarg; break;
		case OPT_EX_COUNT: bad |= bench_parse_int(optarg, &o->ex_count); break;
		case OPT_EX_PAR: bad |= bench_parse_int(optarg, &o->ex_parallel); break;
		case OPT_EX_PCOUNT: bad |= bench_parse_int(optarg, &o->ex_pcount); break;
		case OPT_BWRAP: o->bwrap = optarg; break;
		case OPT_BWRAP_COUNT: bad |= bench_parse_int(optarg, &o->bwrap_count); break;
		case OPT_BIG_SIZE: bad |= bench_parse_size(optarg, &o->big_size); break;
		case OPT_BIG_BUFFERS: bad |= bench_parse_size(optarg, &o->big_buffers); break;
		case OPT_NULL_CHUNK: bad |= bench_parse_size(optarg, &o->null_chunk); break;
		case 'h': usage(stdout); exit(0);
		default: return -1;
		}
		if (bad) {
			fprintf(stderr, "reap-bench: bad value for --%s: '%s'\n",
				longopts[opt - OPT_TARGET].name, optarg);
			return -1;
		}
	}
	return 0;
}

#define DEF(field, full_v, quick_v) \
	do { \
		if (o->field == 0) \
			o->field = o->quick ? (quick_v) : (full_v); \
	} while (0)

static void defaults(bench_opts_t *o)
{
	if (o->instance == NULL)
		o->instance = "";
	DEF(time_limit_s, 1200, 180);
	DEF(bs_size, (size_t)16 << 20, (size_t)16 << 20);
	DEF(bs_count, 32, 4);
	DEF(bs_parallel, 2, 2);
	DEF(bs_chunk, (size_t)1 << 20, (size_t)1 << 20);
	DEF(fm_digests, 10000, 10000);
	DEF(fm_requests, 200, 20);
	DEF(fm_parallel, 1, 1);
	DEF(bu_size, 1024, 1024);
	DEF(bu_count, 100000, 20000);
	DEF(bu_parallel, 2, 2);
	DEF(ac_calls, 50000, 5000);
	DEF(ac_inflight, 64, 64);
	DEF(big_size, (size_t)2 << 30, (size_t)256 << 20);
	DEF(big_buffers, (size_t)(8 << 20) + (256 << 10), (size_t)(8 << 20) + (256 << 10));
	DEF(null_chunk, (size_t)1 << 20, (size_t)1 << 20);
	DEF(ac_entries, 100, 100);
	o->worker_slots = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (o->worker_slots < 1)
		o->worker_slots = 1;
	DEF(ex_count, 50, 10);
	DEF(ex_parallel, 2 * o->worker_slots, 2 * o->worker_slots);
	DEF(ex_pcount, 200, 40);
	DEF(bwrap_count, 50, 20);
	if (o->bwrap == NULL)
		o->bwrap = "bwrap";
	o->sha_seconds = o->quick ? 0.5 : 2.0;
}

/* The 1-minute load average, or "?". */
static const char *loadavg(char *buf, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");
	snprintf(buf, len, "?");
	if (f != NULL) {
		if (fgets(buf, (int)len, f) != NULL)
			buf[strcspn(buf, " ")] = '\0';
		fclose(f);
	}
	return buf;
}

static void print_machine(void)
{
	char line[256], model[200] = "?", date[64];
	time_t now = time(NULL);
	FILE *f = fopen("/proc/cpuinfo", "r");

	if (f != NULL) {
		while (fgets(line, sizeof(line), f) != NULL) {
			char *colon = strchr(line, ':');
			if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
				snprintf(model, sizeof(model), "%s", colon + 2);
				model[strcspn(model, "\n")] = '\0';
				break;
			}
		}
		fclose(f);
	}
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %Z", localtime(&now));
	printf("reap-bench %s: %ld cpus, %s, load average %s\n", date,
	       sysconf(_SC_NPROCESSORS_ONLN), model, loadavg(line, sizeof(line)));
}

void bench_print_result(const bench_result_t *r)
{
	if (r->skipped) {
		printf("   skipped: %s\n", r->note);
		return;
	}
	if (!r->ran) {
		printf("   FAILED: %s\n", r->note);
		return;
	}
	if (r->rate_text[0] != '\0')
		printf("   throughput     %s", r->rate_text);
	else
		printf("   throughput     %12.1f %s", r->rate, r->rate_unit);
	if (r->mbps > 0 && strcmp(r->rate_unit, "MB/s") != 0)
		printf("  (%.1f MB/s of payload)", r->mbps);
	printf("\n");
	if (r->vs[0] != '\0')
		printf("   vs target      %s\n", r->vs);
	if (r->lat_unit != NULL)
		printf("   latency/%-6s p50 %.2f ms  p99 %.2f ms\n", r->lat_unit, r->p50_ms,
		       r->p99_ms);
	printf("   wall %.2f s  client cpu %.2f s", r->wall_s, r->client_cpu_s);
	if (r->server_cpu_s >= 0)
		printf("  server cpu %.2f s", r->server_cpu_s);
	if (r->server_hwm_mib >= 0)
		printf("  server peak rss %.1f MiB", r->server_hwm_mib);
	if (r->server_cpu_s >= 0)
		printf("\n   other processes cpu %.2f s  steal %.2f s%s\n", r->other_cpu_s, r->steal_s,
		       r->other_cpu_s > 0.05 && r->other_cpu_s > 0.1 * r->wall_s
			       ? "  (machine not quiet: figures are noisy)"
			       : "");
	else
		printf("\n   rest of the machine (server included) cpu %.2f s  steal %.2f s\n",
		       r->other_cpu_s, r->steal_s);
	fputs(r->extra, stdout);
	if (r->failed)
		printf("   FAILED: %s\n", r->note);
	else if (r->note[0] != '\0')
		printf("   note: %s\n", r->note);
}

static void print_summary(const bench_ctx_t *c, const bench_result_t *rs, size_t n)
{
	printf("\n| scenario | config | throughput | p50 | p99 | client CPU s | server CPU s "
	       "| server VmHWM | other procs CPU s | vs baseline / target |\n"
	       "|---|---|---|---|---|---|---|---|---|---|\n");
	for (int b = BENCH_BASE_NONE + 1; b < BENCH_BASE_COUNT; b++) {
		if (c->base.value[b] <= 0)
			continue;
		printf("| baseline %s | %s | %.1f %s |", bench_base_name((bench_base_t)b),
		       c->base.detail[b], c->base.value[b], bench_base_unit((bench_base_t)b));
		if (b == BENCH_BASE_BWRAP)
			printf(" %.2f ms | %.2f ms |", c->base.bwrap_p50_ms, c->base.bwrap_p99_ms);
		else
			printf(" | |");
		printf(" | | | | 1 |\n");
	}
	for (size_t i = 0; i < n; i++) {
		const bench_result_t *r = &rs[i];
		char srv[32] = "-", hwm[32] = "-", p50[32] = "", p99[32] = "";
		if (r->skipped || !r->ran) {
			printf("| %s | %s | %s: %s | | | | | | | %s |\n", r->name, r->config,
			       r->skipped ? "skipped" : "FAILED", r->note, r->vs);
			continue;
		}
		if (r->server_cpu_s >= 0)
			snprintf(srv, sizeof(srv), "%.2f", r->server_cpu_s);
		if (r->server_hwm_mib >= 0)
			snprintf(hwm, sizeof(hwm), "%.0f MiB", r->server_hwm_mib);
		if (r->lat_unit != NULL) {
			snprintf(p50, sizeof(p50), "%.2f ms", r->p50_ms);
			snprintf(p99, sizeof(p99), "%.2f ms", r->p99_ms);
		}
		printf("| %s%s | %s | ", r->name, r->failed ? " (FAILED)" : "", r->config);
		if (r->rate_text[0] != '\0')
			printf("%s", r->rate_text);
		else
			printf("%.1f %s", r->rate, r->rate_unit);
		if (r->mbps > 0 && strcmp(r->rate_unit, "MB/s") != 0)
			printf(" (%.1f MB/s)", r->mbps);
		printf(" | %s | %s | %.2f | %s | %s | %.2f | %s |\n", p50, p99, r->client_cpu_s, srv,
		       hwm, r->other_cpu_s, r->vs[0] ? r->vs : "-");
	}
}

/* Index of the scenario called name, or N_SCEN. */
static size_t find_scen(const char *name)
{
	size_t i = 0;
	while (i < N_SCEN && strcmp(scenarios[i].name, name) != 0)
		i++;
	return i;
}

static int run_one(bench_ctx_t *c, scen_fn_t fn, bench_result_t *r)
{
	fn(c, r);
	bench_compare(c, r);
	printf("== %s  %s\n", r->name, r->config);
	bench_print_result(r);
	fflush(stdout);
	return r->failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	bench_ctx_t c = {0};
	bench_result_t rs[N_SCEN];
	const char *scen;
	size_t n_run = 0;
	int rc = 0;

	memset(rs, 0, sizeof(rs));
	/*
	 * Keep the load generator cheap: with glibc's dynamic thresholds every
	 * 1 MiB gRPC receive buffer comes from memory that was just handed back
	 * (madvise DONTNEED) and is faulted in again page by page, which made
	 * the client, not the server, the limit of bytestream-read.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 512 << 20);
	if (parse_opts(argc, argv, &c.o) != 0 || optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	scen = argv[optind];
	if (strcmp(scen, "all") != 0 && strcmp(scen, "baseline") != 0 && find_scen(scen) == N_SCEN) {
		fprintf(stderr, "reap-bench: unknown scenario '%s'\n", scen);
		usage(stderr);
		return 2;
	}
	defaults(&c.o);
	if (c.o.target == NULL && c.o.spawn == NULL && strcmp(scen, "baseline") != 0) {
		fprintf(stderr, "reap-bench: give --target HOST:PORT or --spawn PATH_TO_REAPD\n");
		return 2;
	}
	if (c.o.spawn_worker != NULL && c.o.spawn == NULL) {
		fprintf(stderr, "reap-bench: --spawn-worker needs --spawn\n");
		return 2;
	}
	if (c.o.no_sync && c.o.spawn == NULL)
		fprintf(stderr, "reap-bench: --no-sync only applies with --spawn; ignored\n");
	c.rng_state = c.o.seed ? c.o.seed : bench_os_seed();
	if (bench_watchdog_start(c.o.time_limit_s) != 0) {
		fprintf(stderr, "reap-bench: cannot start the watchdog\n");
		return 1;
	}
	print_machine();
	if (strcmp(scen, "baseline") == 0 || strcmp(scen, "all") == 0) {
		if (bench_baseline(&c) != 0)
			rc = 1;
		if (strcmp(scen, "baseline") == 0)
			return rc;
	} else if (scenarios[find_scen(scen)].base != BENCH_BASE_NONE) {
		/* alone: its own baseline, before the server runs */
		printf("== baseline for %s (this machine, this run)\n", scen);
		bench_baseline_one(&c, scenarios[find_scen(scen)].base);
		if (scenarios[find_scen(scen)].base2 != BENCH_BASE_NONE)
			bench_baseline_one(&c, scenarios[find_scen(scen)].base2);
	}
	if (c.o.spawn != NULL && bench_server_spawn(&c, c.o.spawn) != 0)
		return 1;
	if (c.o.spawn_worker != NULL &&
	    (strcmp(scen, "all") == 0 || strcmp(scen, "execute-noop") == 0) &&
	    bench_worker_spawn(&c, c.o.spawn_worker) != 0) {
		bench_server_stop();
		return 1;
	}
	{
		char err[256];
		if (bench_capabilities(&c, err, sizeof(err)) != 0)
			fprintf(stderr, "reap-bench: %s\n", err);
	}
	if (strcmp(scen, "all") == 0) {
		for (size_t i = 0; i < N_SCEN; i++)
			rc |= run_one(&c, scenarios[i].fn, &rs[n_run++]);
		print_summary(&c, rs, n_run);
	} else {
		rc = run_one(&c, scenarios[find_scen(scen)].fn, &rs[n_run++]);
	}
	rpc_channel_free(c.keep);
	bench_server_stop();
	bench_blobs_free(&c);
	return rc;
}
