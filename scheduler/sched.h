/*
 * sched.h - the scheduler: Execution and Operations for clients, and the
 * WorkerQueue workers pull leases from.
 *
 * Execute looks the action up in the ActionCache first (unless
 * skip_cache_lookup), checks that the Action, Command and input root are
 * stored, and queues an operation by priority. Identical actions (same
 * instance, same action digest) in flight are merged: every waiter of the
 * operation gets the one result. Waiting streams hold no thread: each
 * stage change wakes every waiter, which sends the new state.
 *
 * Workers long-poll with their platform; an operation goes only to a worker
 * whose platform offers every property the action asks for. A lease that is
 * not renewed in time is re-queued, up to max_attempts, then the operation
 * fails UNAVAILABLE. The result a worker reports through its lease is
 * written to the ActionCache here (successful, cacheable results only) —
 * never through the client-facing UpdateActionResult.
 *
 * Threading: one mutex guards all scheduler state; a timer thread expires
 * leases, long-polls and finished operations.
 */
#ifndef REAP_SCHEDULER_SCHED_H
#define REAP_SCHEDULER_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "cas/cas.h"
#include "common/err.h"
#include "rpc/rpc.h"

typedef struct sched sched_t;

typedef struct sched_config {
	int64_t lease_ttl_ms;       /* a lease not renewed for this long expires; 0 = 30 s */
	int max_attempts;           /* leases per operation before it fails; 0 = 3 */
	int64_t keep_done_ms;       /* finished operations stay visible this long; 0 = 10 min */
	int64_t worker_gone_ms;     /* a worker silent this long no longer counts; 0 = 60 s */
	int64_t max_poll_ms;        /* longest long-poll; 0 = 30 s */
} sched_config_t;

/** New scheduler over the cache services (borrowed). Starts its timer thread. */
sched_t *sched_new(cas_service_t *cas, const sched_config_t *cfg, reap_errbuf_t *eb);

/**
 * Before the rpc server shuts down: answer every waiting worker poll now
 * (with no lease) and every later one at once, so shutdown need not wait
 * for long-polls to time out.
 */
void sched_drain(sched_t *s);

/** Export queue depths, operations, workers and CAS size as metrics (a scrape-time collector). */
void sched_metrics_attach(sched_t *s);
/** Remove the collector; call before sched_free. */
void sched_metrics_detach(sched_t *s);

/** Stop the timer thread and free. Call after the rpc server has shut down. NULL is a no-op. */
void sched_free(sched_t *s);

/** The rpc methods: Execution, Operations and reap.v1.WorkerQueue (owned by s). */
const rpc_method_t *sched_methods(sched_t *s, size_t *n);

/* ---- platform matching (exposed for tests) ---- */

/** Properties with this prefix are sandbox requests, not matched against offers. */
#define SCHED_SANDBOX_PREFIX "reap-"

/**
 * True when the offered properties (n_offer "name=value" strings) satisfy
 * every property asked for (a Platform message; NULL asks nothing), except
 * SCHED_SANDBOX_PREFIX ones, which every worker's sandbox handles itself.
 */
bool sched_platform_satisfies(const Build__Bazel__Remote__Execution__V2__Platform *asked,
			      const char *const *offer, size_t n_offer);

/* ---- status snapshot and reap.v1.Admin/GetStatus (status_service.c) ---- */

/** Queued operations asking for one platform. */
typedef struct sched_status_queue {
	char **platform; /* "name=value" as the actions ask, in their order */
	size_t n_platform;
	int64_t queued;
} sched_status_queue_t;

/** A worker seen polling within worker_gone_ms. */
typedef struct sched_status_worker {
	char name[128];
	char **platform; /* "name=value" offered, sorted */
	size_t n_platform;
	int slots_idle;  /* its polls waiting for work now */
	int slots_busy;  /* operations leased to it */
	int64_t last_seen_ms_ago;
	char toolchain[REAP_INSTANCE_MAX + 8];
} sched_status_worker_t;

/** A consistent picture of the scheduler (read-only counts, no tenant data). */
typedef struct sched_status {
	int64_t queued, executing, completed; /* operations by stage */
	sched_status_queue_t *queues;         /* one per distinct platform asked for */
	size_t n_queues;
	sched_status_worker_t *workers;
	size_t n_workers;
} sched_status_t;

/**
 * Fill out (caller-owned; release with sched_status_destroy, also after a
 * failure) from one pass under the scheduler mutex. 0 or REAP_E_NOMEM.
 */
int sched_status_snapshot(sched_t *s, sched_status_t *out);

/** Free what a snapshot holds (not st itself). */
void sched_status_destroy(sched_status_t *st);

/**
 * Add reap.v1.Admin/GetStatus to the table sched_methods() returns. Call
 * once, before sched_methods() and rpc_server_start. The call is allowed
 * to callers with AUTH_EXECUTE on the instance "".
 */
void sched_status_add_methods(sched_t *s);

#endif
