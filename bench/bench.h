/*
 * bench.h - reap-bench internals: options, the per-scenario measurement
 * harness, latency statistics, baselines and the spawned server.
 *
 * reap-bench is a load generator for any REAPI v2 server. It speaks only the
 * public protocol (protobuf-c messages over reap's generic blocking gRPC
 * client) and uses reap's digest helpers for SHA-256; nothing here knows how
 * reap stores anything, so the same numbers can be taken against another
 * server for comparison.
 *
 * Threading: every scenario runs its workers as plain pthreads, each with
 * its own channel and its own latency list; the shared state of a run is an
 * atomic work counter and a "stop" flag set by the first failure.
 */
#ifndef REAP_BENCH_BENCH_H
#define REAP_BENCH_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "common/digest.h"
#include "rpc/rpc.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
#define BENCH_CAS_SVC "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define BENCH_AC_SVC "/build.bazel.remote.execution.v2.ActionCache/"
#define BENCH_CAPS_SVC "/build.bazel.remote.execution.v2.Capabilities/"
#define BENCH_BS_SVC "/google.bytestream.ByteStream/"
#define BENCH_EXEC_SVC "/build.bazel.remote.execution.v2.Execution/"

#define BENCH_UNARY_MS 60000   /* deadline of one unary call */
#define BENCH_STREAM_MS 300000 /* deadline of one ByteStream call */
#define BENCH_MAX_HEADERS 8

typedef struct bench_opts {
	const char *target;   /* HOST:PORT */
	const char *instance; /* instance name, "" by default */
	const char *headers[BENCH_MAX_HEADERS]; /* "key=value", sent with every call */
	int n_headers;
	bool quick;
	int time_limit_s; /* the whole run, watchdog-enforced */
	pid_t server_pid; /* 0: not measured */
	const char *spawn; /* path to reapd, or NULL */
	const char *spawn_worker; /* path to reap-worker (with --spawn), or NULL */
	pid_t worker_pid;  /* the spawned worker; 0 when none */
	int worker_slots;  /* its --slots (nproc) */
	bool no_sync;      /* pass --no-sync to the spawned reapd */
	uint64_t seed;     /* content seed; 0 = from the OS */
	/* bytestream-write / bytestream-read */
	size_t bs_size;
	int bs_count;
	int bs_parallel;
	size_t bs_chunk;
	/* find-missing */
	int fm_digests;
	int fm_requests;
	int fm_parallel;
	/* batch-update */
	size_t bu_size;
	int bu_count;
	int bu_parallel;
	size_t bu_max_batch; /* 0: the server's advertised limit */
	/* bytestream-big */
	size_t big_size;    /* the one blob written and read back */
	size_t big_buffers; /* what the RSS target allows on top of 64 MiB */
	/* ac-get */
	int ac_calls;
	int ac_inflight;
	int ac_entries;
	/* execute-noop */
	int ex_count;    /* sequential actions */
	int ex_parallel; /* actions in flight in the parallel phase */
	int ex_pcount;   /* actions in the parallel phase */
	/* baseline */
	double sha_seconds;  /* also the time each null-server baseline runs */
	size_t null_chunk;   /* message size of the null server's stream */
	int bwrap_count;   /* bwrap spawns */
	const char *bwrap; /* bwrap binary (execvp) */
} bench_opts_t;

/* What a scenario's throughput is compared with. */
typedef enum {
	BENCH_BASE_NONE = 0,
	BENCH_BASE_SHA256,      /* single-core SHA-256, MB/s */
	BENCH_BASE_NULL_UNARY,  /* null gRPC server (reap's rpc server), empty unary calls/s */
	BENCH_BASE_NULL_STREAM, /* null gRPC server, server-streamed MB/s */
	BENCH_BASE_BWRAP,       /* serial bwrap spawns of /bin/true, spawns/s */
	BENCH_BASE_DISK,        /* files of bs_size written and fdatasync'd one by one, MB/s */
	BENCH_BASE_COUNT,
} bench_base_t;

typedef struct bench_baselines {
	double value[BENCH_BASE_COUNT]; /* 0 = not measured */
	double bwrap_p50_ms, bwrap_p99_ms; /* with value[BENCH_BASE_BWRAP] */
	char detail[BENCH_BASE_COUNT][200]; /* how each was measured, for the summary */
} bench_baselines_t;

/* How a scenario's figure is judged against issue 7's targets. */
typedef enum {
	BENCH_CMP_NONE = 0,
	BENCH_CMP_RATIO,    /* figure / baseline r->base (mbps for MB/s baselines); >= goal */
	BENCH_CMP_ABS,      /* rate against the absolute goal in rate_unit; >= goal */
	BENCH_CMP_P50_OVER, /* p50 minus the bwrap baseline's p50, ms; <= goal */
	BENCH_CMP_RSS,      /* the server's peak RSS in r->rss_mib, MiB; <= goal */
} bench_cmp_t;

/* The outcome of one scenario, printed as it finishes and in the summary. */
typedef struct bench_result {
	const char *name;
	char config[160];      /* "16 x 16 MiB, 2 streams" */
	bool ran;
	bool skipped;
	bool failed;
	char note[256];        /* skip reason or first error */
	double rate;           /* throughput in rate_unit */
	const char *rate_unit; /* "MB/s", "digests/s", ... */
	double mbps;           /* payload MB/s where that is meaningful, else 0 */
	const char *lat_unit;  /* "blob", "request", "batch", "call" */
	double p50_ms, p99_ms;
	double wall_s;
	double client_cpu_s;
	double server_cpu_s;   /* < 0: unknown */
	double server_hwm_mib; /* < 0: unknown */
	double other_cpu_s;    /* CPU the rest of the machine used meanwhile (noise) */
	double steal_s;        /* CPU time the hypervisor took away meanwhile */
	char rate_text[96];    /* printed instead of "rate rate_unit" when set */
	bench_base_t base;
	bench_cmp_t cmp;
	double goal;           /* the target, in the unit cmp says */
	double rss_mib;        /* BENCH_CMP_RSS: the peak; < 0 unknown */
	double floor_ms;       /* BENCH_CMP_P50_OVER: bwrap p50 measured interleaved with the
				  scenario (> 0), compared instead of the separate baseline's */
	double ratio;          /* the compared value (ratio, ms or MiB); valid when cmp_ok */
	bool cmp_ok;           /* ratio was computed (else the comparison is n/a) */
	char vs[160];          /* "0.176 x sha256 (target >= 0.70: NOT met)", by bench_compare */
	char extra[2048];      /* further lines printed after the standard ones */
} bench_result_t;

/* A blob generated for the ByteStream scenarios, kept for the read-back. */
typedef struct bench_blob {
	uint8_t *data;
	reap_digest_t d;
	char hex[REAP_HASH_HEX_LEN + 1];
} bench_blob_t;

typedef struct bench_ctx {
	bench_opts_t o;
	bench_baselines_t base;
	bool caps_done;
	int64_t max_batch;      /* advertised max_batch_total_size_bytes (0 = none) */
	bool ac_update_enabled; /* as advertised */
	bench_blob_t *blobs;    /* written by bytestream-write, read by bytestream-read */
	int n_blobs;
	bool blobs_written;
	uint64_t rng_state;     /* main-thread generator; workers derive their own */
	/* The channel of GetCapabilities, kept for the whole run: gRPC shares one
	 * connection between channels to the same target, and this one keeps it
	 * open, so each scenario's channels reuse a connection whose flow-control
	 * window has grown instead of starting a new one cold. */
	rpc_channel_t *keep;
} bench_ctx_t;

/* ---- util.c ---- */

/** splitmix64: fast, good enough for test content. */
uint64_t bench_rng_next(uint64_t *s);
void bench_rng_fill(uint64_t *s, void *buf, size_t len);
/** A seed from the OS random source (so runs against a long-lived server differ). */
uint64_t bench_os_seed(void);

/** Monotonic seconds. */
double bench_now(void);

/** Parse "16MiB", "1k", "4096" (binary suffixes K/M/G with or without "iB"). 0 or -1. */
int bench_parse_size(const char *s, size_t *out);
/** Parse a positive int; 0 or -1. */
int bench_parse_int(const char *s, int *out);

/** "16.0 MiB" style formatting into buf. */
const char *bench_fmt_bytes(double bytes, char *buf, size_t len);

/** A growable list of latencies (milliseconds), one per worker. */
typedef struct bench_lat {
	double *v;
	size_t n, cap;
} bench_lat_t;

void bench_lat_add(bench_lat_t *l, double ms);
/** Append src's values to dst (src is left as it is). 0 or -1 (no memory). */
int bench_lat_merge(bench_lat_t *dst, const bench_lat_t *src);
/** Nearest-rank percentile (p in 0..100) of the values; sorts them. 0 when empty. */
double bench_lat_pct(bench_lat_t *l, double p);
void bench_lat_destroy(bench_lat_t *l);

/** Client and server resource snapshot taken at the start of a scenario. */
typedef struct bench_meter {
	double t0;
	double cpu0;        /* this process, user+sys */
	double srv_cpu0;    /* server, user+sys; < 0 unknown */
	double busy0;       /* whole machine, busy CPU seconds (/proc/stat) */
	double steal0;
	pid_t srv;
} bench_meter_t;

void bench_meter_start(bench_meter_t *m, pid_t server_pid);
/** Fill r's wall_s, client_cpu_s, server_cpu_s, server_hwm_mib, other_cpu_s and steal_s. */
void bench_meter_stop(const bench_meter_t *m, bench_result_t *r);

/** Server CPU seconds from /proc/PID/stat (utime+stime); < 0 when unreadable. */
double bench_proc_cpu(pid_t pid);
/** VmHWM of PID in MiB from /proc/PID/status; < 0 when unreadable. */
double bench_proc_hwm_mib(pid_t pid);
/** One "Key:  N kB" field of /proc/PID/status in MiB ("VmRSS", "RssAnon"); < 0 when unreadable. */
double bench_proc_status_mib(pid_t pid, const char *key);
/** Reset PID's VmHWM to its current RSS (/proc/PID/clear_refs "5"); 0 or -1. */
int bench_proc_reset_hwm(pid_t pid);

/** A new channel to the target with the configured headers; NULL on failure. */
rpc_channel_t *bench_channel(const bench_ctx_t *c);

/**
 * Shared state of one scenario's workers: the next unit of work and the
 * first failure (which stops everyone).
 */
typedef struct bench_run {
	atomic_long next;
	atomic_bool stop;
	atomic_long errors;
	pthread_mutex_t mu; /* guards first_error */
	char first_error[256];
} bench_run_t;

void bench_run_init(bench_run_t *run);
void bench_run_destroy(bench_run_t *run);
/** Record a failure (the first message is kept) and stop the run. */
void bench_run_fail(bench_run_t *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Run fn(arg + i*stride) on n threads and join them. 0, or -1 if a thread could not start. */
int bench_threads(int n, void *(*fn)(void *), void *args, size_t stride);

/** Copy a status into a short text: "CODE: message". */
const char *bench_status_text(const rpc_status_t *st, char *buf, size_t len);

/** Build a random (never-uploaded) digest of the given size with its hex. */
void bench_random_digest(uint64_t *rng, int64_t size, reap_digest_t *d, char hex[REAP_HASH_HEX_LEN + 1]);

/* ---- baseline.c ---- */

/** Name and unit of a baseline ("sha256", "MB/s"). */
const char *bench_base_name(bench_base_t b);
const char *bench_base_unit(bench_base_t b);

/**
 * Measure every baseline (SHA-256, the null gRPC server's unary and stream
 * rates, bwrap) into c->base, printing each. 0, or -1 if one failed (the
 * others are still measured).
 */
int bench_baseline(bench_ctx_t *c);

/** Measure one baseline into c->base (bwrap: with its p50/p99) and print it; 0 or -1. */
int bench_baseline_one(bench_ctx_t *c, bench_base_t b);

/** Measure the bwrap baseline into c->base (value, p50, p99) and print it; 0 or -1. */
int bench_baseline_bwrap(bench_ctx_t *c);

/** One spawn of the bwrap baseline's command (c->o.bwrap ... /bin/true); 0 or -1 with err. */
int bench_bwrap_once(const bench_ctx_t *c, char *err, size_t errlen);

/** Fill r->ratio, cmp_ok and vs from r's figure, r->cmp/goal and c->base. */
void bench_compare(const bench_ctx_t *c, bench_result_t *r);

/* ---- null_server.c ---- */

/**
 * The null gRPC server baselines: reap's rpc server with do-nothing
 * handlers in this process, driven like ac-get (ac_inflight empty unary
 * calls in flight; calls/s) and like bytestream-read (bs_parallel streams of
 * bs_size bytes in null_chunk messages, every byte compared; MB/s), each for
 * sha_seconds. detail gets how it was measured. 0, or -1 with detail set.
 */
int bench_null_unary(const bench_ctx_t *c, double *calls_per_s, char *detail, size_t len);
int bench_null_stream(const bench_ctx_t *c, double *mbps, char *detail, size_t len);

/* ---- server.c ---- */

/**
 * Start reapd (path) on 127.0.0.1:0 with a fresh temporary data folder;
 * wait (bounded) for its readiness line. Sets c->o.target and server_pid.
 */
int bench_server_spawn(bench_ctx_t *c, const char *path);
/**
 * Start reap-worker (path) against the spawned reapd with --slots
 * c->o.worker_slots, the token from reapd's data folder and work/cache
 * folders inside it; wait (bounded) for "reap-worker ready". Sets
 * c->o.worker_pid. bench_server_stop() stops it first.
 */
int bench_worker_spawn(bench_ctx_t *c, const char *path);
/** SIGTERM the spawned worker (if any) and the spawned server, wait (bounded, then SIGKILL), remove its folder. Idempotent. */
void bench_server_stop(void);

/**
 * Block SIGINT/SIGTERM in every thread and start the watchdog thread: on a
 * signal or when time_limit_s passes it stops the spawned server, removes
 * its folder and exits. Call before anything starts a thread.
 */
int bench_watchdog_start(int time_limit_s);

/* ---- scenarios (scen_*.c) ---- */

/** GetCapabilities once per run: max batch size and AC update capability. */
int bench_capabilities(bench_ctx_t *c, char *err, size_t errlen);

void bench_bytestream_write(bench_ctx_t *c, bench_result_t *r);
void bench_bytestream_read(bench_ctx_t *c, bench_result_t *r);
void bench_find_missing(bench_ctx_t *c, bench_result_t *r);
void bench_batch_update(bench_ctx_t *c, bench_result_t *r);
void bench_ac_get(bench_ctx_t *c, bench_result_t *r);
void bench_execute_noop(bench_ctx_t *c, bench_result_t *r);
void bench_bytestream_big(bench_ctx_t *c, bench_result_t *r);
void bench_blobs_free(bench_ctx_t *c);

/**
 * Upload small blobs (data[i], lens[i], digests ds[i]) with as many
 * BatchUpdateBlobs calls as the batch limit needs; every per-blob status
 * must be OK. Used as setup by find-missing. 0, or -1 with err set.
 */
int bench_upload_small(bench_ctx_t *c, rpc_channel_t *ch, uint8_t *const *data,
		       const size_t *lens, const reap_digest_t *ds, size_t n, char *err,
		       size_t errlen);

/** Bytes a batch may carry, with per-blob framing counted (see README). */
size_t bench_batch_budget(const bench_ctx_t *c);
#define BENCH_BATCH_BLOB_OVERHEAD 100 /* digest + framing of one blob in a batch */

/** Print a finished scenario's lines. */
void bench_print_result(const bench_result_t *r);

#endif
