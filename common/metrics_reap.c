/*
 * metrics_reap.c - the metric families reap itself exposes (RPCs, CAS,
 * ActionCache, queue, workers, leases, sandbox limits, auth refusals), the
 * gRPC code names used as label values, and the adapter the rpc server's
 * call observer feeds. The registry mechanics live in metrics.c.
 */
#include "common/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

/* ---- reap's own families ------------------------------------------------ */

static reap_metrics_t well_known;
static pthread_once_t well_known_once = PTHREAD_ONCE_INIT;

/* Latency buckets from sub-millisecond cache reads to long Execute streams. */
static const double rpc_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
				     0.25,   0.5,   1,      2.5,   5,    10,    30,   60, 300};

static void well_known_init(void)
{
	reap_metrics_t *w = &well_known;
	w->rpc_requests = reap_metric_counter(NULL, "reap_rpc_requests_total",
					      "RPCs finished, by full method name and gRPC status code.",
					      "method", "code", NULL);
	w->rpc_duration = reap_metric_histogram(
		NULL, "reap_rpc_duration_seconds", "RPC latency from arrival to final status.",
		rpc_buckets, sizeof(rpc_buckets) / sizeof(rpc_buckets[0]), "method", NULL);
	w->rpc_received_bytes = reap_metric_counter(NULL, "reap_rpc_received_bytes_total",
						    "Request message bytes received.", "method", NULL);
	w->rpc_sent_bytes = reap_metric_counter(NULL, "reap_rpc_sent_bytes_total",
						"Response message bytes sent.", "method", NULL);
	w->cas_bytes = reap_metric_gauge(NULL, "reap_cas_bytes", "Bytes of blobs stored in the CAS.",
					 NULL);
	w->cas_blobs = reap_metric_gauge(NULL, "reap_cas_blobs", "Blobs stored in the CAS.", NULL);
	w->cas_evictions = reap_metric_counter(NULL, "reap_cas_evictions_total",
					       "Blobs evicted from the CAS to stay under its size limit.",
					       NULL);
	w->ac_hits = reap_metric_counter(NULL, "reap_ac_hits_total",
					 "ActionCache lookups that returned a complete result.", NULL);
	w->ac_misses = reap_metric_counter(NULL, "reap_ac_misses_total",
					   "ActionCache lookups that found no usable result.", NULL);
	w->queue_depth = reap_metric_gauge(NULL, "reap_queue_depth",
					   "Actions queued and not yet leased, by platform.", "platform",
					   NULL);
	w->operations = reap_metric_gauge(NULL, "reap_operations",
					  "Operations known to the scheduler, by execution stage.",
					  "stage", NULL);
	w->workers_connected = reap_metric_gauge(NULL, "reap_workers_connected",
						 "Workers currently polling or holding a lease.", NULL);
	w->leases_expired = reap_metric_counter(NULL, "reap_leases_expired_total",
						"Leases whose worker stopped renewing them.", NULL);
	w->leases_requeued = reap_metric_counter(NULL, "reap_leases_requeued_total",
						 "Actions put back on the queue after a lost lease.",
						 NULL);
	w->sandbox_limit_hits = reap_metric_counter(
		NULL, "reap_sandbox_limit_hits_total",
		"Actions stopped by a sandbox limit, by limit (cpu, memory, disk, pids, wall).",
		"limit", NULL);
	w->auth_refusals = reap_metric_counter(NULL, "reap_auth_refusals_total",
					       "Requests refused by authentication or policy, by reason.",
					       "reason", NULL);
}

const reap_metrics_t *reap_metrics(void)
{
	pthread_once(&well_known_once, well_known_init);
	return &well_known;
}

const char *reap_metrics_grpc_code_name(int grpc_code)
{
	static const char *const names[] = {
		"OK",		     "CANCELLED",	   "UNKNOWN",	     "INVALID_ARGUMENT",
		"DEADLINE_EXCEEDED", "NOT_FOUND",	   "ALREADY_EXISTS", "PERMISSION_DENIED",
		"RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",	     "OUT_OF_RANGE",
		"UNIMPLEMENTED",     "INTERNAL",	   "UNAVAILABLE",    "DATA_LOSS",
		"UNAUTHENTICATED",
	};
	if (grpc_code < 0 || (size_t)grpc_code >= sizeof(names) / sizeof(names[0]))
		return "UNKNOWN";
	return names[grpc_code];
}

void reap_metrics_rpc_observe(void *ctx, const char *method, int grpc_code, double seconds,
			      uint64_t bytes_in, uint64_t bytes_out)
{
	const reap_metrics_t *w = reap_metrics();
	if (method == NULL)
		method = "";
	reap_metric_inc(reap_metric_labels(w->rpc_requests, method,
					   reap_metrics_grpc_code_name(grpc_code)));
	reap_metric_observe(reap_metric_labels(w->rpc_duration, method), seconds);
	reap_metric_add(reap_metric_labels(w->rpc_received_bytes, method), bytes_in);
	reap_metric_add(reap_metric_labels(w->rpc_sent_bytes, method), bytes_out);
}
