/*
 * metrics.h - process-wide metrics with Prometheus text exposition.
 *
 * A registry holds metric families: counters (monotonic uint64), gauges
 * (double; set or add) and histograms (fixed upper bounds, plus sum and
 * count). A family may name up to REAP_METRIC_MAX_LABELS labels; each
 * distinct tuple of label values is a child series, created on first use
 * and kept until the registry is freed, so a child handle may be cached
 * and used without further lookups.
 *
 * Cost: updates are lock-free atomics on the handle. reap_metric_labels()
 * hashes the values and probes a lock-free table; only the first use of a
 * new tuple takes the family mutex. A family holds at most
 * REAP_METRIC_MAX_CHILDREN children; past that, new tuples fold into one
 * child whose every label value is "other", so hostile label values cannot
 * grow memory without bound. Values longer than REAP_METRIC_MAX_VALUE bytes
 * are truncated; bytes that are not valid UTF-8 become '?'.
 *
 * Every function accepts a NULL metric handle and does nothing, so callers
 * need not check what registration returned. reap_metrics() is the set of
 * families reap exposes, registered on first call in the process-wide
 * registry (registry argument NULL everywhere below).
 *
 * Threading: everything is thread-safe. Collectors run at scrape time,
 * serialised with each other and with reap_metrics_remove_collector().
 */
#ifndef REAP_COMMON_METRICS_H
#define REAP_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define REAP_METRIC_MAX_LABELS 4
#define REAP_METRIC_MAX_CHILDREN 1024 /* per family, the "other" child included */
#define REAP_METRIC_MAX_VALUE 128     /* bytes kept of one label value */
#define REAP_METRIC_MAX_BUCKETS 32

/** Where the metrics listener binds when reap_metrics_http_start() gets NULL. */
#define REAP_METRICS_DEFAULT_ADDR "127.0.0.1:9090"

typedef struct reap_metric_registry reap_metric_registry_t;
/** A family (as registered) or one child series of a labeled family. */
typedef struct reap_metric reap_metric_t;

/* ---- registries -------------------------------------------------------- */

/** A new empty registry (tests, or a component with its own endpoint); NULL on ENOMEM. */
reap_metric_registry_t *reap_metric_registry_new(void);
/** Free a registry and every handle from it; NULL is a no-op. Not for the process-wide one. */
void reap_metric_registry_free(reap_metric_registry_t *r);

/**
 * Run the collectors, then render every family in registration order
 * (children in creation order) as Prometheus text format 0.0.4.
 * *out is a NUL-terminated malloc'd string (free() it), *len its length.
 * Returns 0, or REAP_E_NOMEM with *out NULL.
 */
int reap_metric_registry_render(reap_metric_registry_t *r, char **out, size_t *len);

/* ---- registration ------------------------------------------------------ */

/*
 * Register a family in r (NULL: the process-wide registry). name and label
 * names follow the Prometheus rules; help is free text. The label names
 * follow as NULL-terminated varargs (just NULL for none). Registering the
 * same name again with the same type and labels returns the existing
 * family. Returns NULL (and logs a warning) on an invalid or conflicting
 * definition or ENOMEM.
 */
reap_metric_t *reap_metric_counter(reap_metric_registry_t *r, const char *name, const char *help,
				   ...) __attribute__((sentinel));
reap_metric_t *reap_metric_gauge(reap_metric_registry_t *r, const char *name, const char *help,
				 ...) __attribute__((sentinel));
/** A histogram with nbuckets strictly increasing finite upper bounds (+Inf is implicit). */
reap_metric_t *reap_metric_histogram(reap_metric_registry_t *r, const char *name,
				     const char *help, const double *buckets, size_t nbuckets,
				     ...) __attribute__((sentinel));

/* ---- children ---------------------------------------------------------- */

/**
 * The child of labeled family m for these label values: exactly one
 * const char * per label name, in order (a NULL value counts as ""). Hot
 * paths with fixed values may look the child up once and keep it. Returns a handle
 * valid until the registry is freed; never NULL unless m is NULL, not a
 * labeled family, or memory ran out. Updating a labeled family's own handle
 * (instead of a child) does nothing.
 */
reap_metric_t *reap_metric_labels(reap_metric_t *m, ...);
/** The same with the values in an array of the family's label count. */
reap_metric_t *reap_metric_labelsv(reap_metric_t *m, const char *const *values);

/** Set every child's gauge value of family m to zero (for collectors, before setting live ones). */
void reap_metric_zero_children(reap_metric_t *m);

/* ---- updates (lock-free) ----------------------------------------------- */

/** Counter +1. */
void reap_metric_inc(reap_metric_t *m);
/** Counter +n; on a gauge, adds n. */
void reap_metric_add(reap_metric_t *m, uint64_t n);
/** Gauge = v. */
void reap_metric_set(reap_metric_t *m, double v);
/** Gauge = v, for integer quantities (bytes, counts). */
void reap_metric_set_int(reap_metric_t *m, int64_t v);
/** Gauge += delta (may be negative). */
void reap_metric_gauge_add(reap_metric_t *m, double delta);
/** Histogram: record one observation (seconds, bytes, ...). */
void reap_metric_observe(reap_metric_t *m, double v);

/** Current value of a counter or gauge (tests, status pages); 0 for others or NULL. */
double reap_metric_value(const reap_metric_t *m);
/** Observation count of a histogram; 0 for others or NULL. */
uint64_t reap_metric_count(const reap_metric_t *m);

/* ---- collectors -------------------------------------------------------- */

/** Called at each scrape to refresh gauges from live state (CAS size, queue depths...). */
typedef void (*reap_metric_collector_fn)(void *ctx);

/**
 * Add fn(ctx) to the collectors of the process-wide registry. Returns 0 or
 * REAP_E_NOMEM. The collector must be removed before ctx goes away. A
 * collector may update and look up metrics but must not add or remove
 * collectors (the scrape holds the collector lock).
 */
int reap_metrics_add_collector(reap_metric_collector_fn fn, void *ctx);
/**
 * Remove the (fn, ctx) pair; when this returns fn is not running and will
 * not run again. Must not be called from inside a collector.
 */
void reap_metrics_remove_collector(reap_metric_collector_fn fn, void *ctx);
/** The same on a given registry (NULL: the process-wide one). */
int reap_metric_registry_add_collector(reap_metric_registry_t *r, reap_metric_collector_fn fn,
				       void *ctx);
void reap_metric_registry_remove_collector(reap_metric_registry_t *r, reap_metric_collector_fn fn,
					   void *ctx);

/* ---- the families reap exposes ----------------------------------------- */

typedef struct reap_metrics {
	reap_metric_t *rpc_requests;       /* counter reap_rpc_requests_total{method,code} */
	reap_metric_t *rpc_duration;       /* histogram reap_rpc_duration_seconds{method} */
	reap_metric_t *rpc_received_bytes; /* counter reap_rpc_received_bytes_total{method} */
	reap_metric_t *rpc_sent_bytes;     /* counter reap_rpc_sent_bytes_total{method} */
	reap_metric_t *cas_bytes;          /* gauge reap_cas_bytes */
	reap_metric_t *cas_blobs;          /* gauge reap_cas_blobs */
	reap_metric_t *cas_evictions;      /* counter reap_cas_evictions_total */
	reap_metric_t *ac_hits;            /* counter reap_ac_hits_total */
	reap_metric_t *ac_misses;          /* counter reap_ac_misses_total */
	reap_metric_t *queue_depth;        /* gauge reap_queue_depth{platform} */
	reap_metric_t *operations;         /* gauge reap_operations{stage} */
	reap_metric_t *workers_connected;  /* gauge reap_workers_connected */
	reap_metric_t *leases_expired;     /* counter reap_leases_expired_total */
	reap_metric_t *leases_requeued;    /* counter reap_leases_requeued_total */
	reap_metric_t *sandbox_limit_hits; /* counter reap_sandbox_limit_hits_total{limit} */
	reap_metric_t *auth_refusals;      /* counter reap_auth_refusals_total{reason} */
} reap_metrics_t;

/**
 * reap's families in the process-wide registry, registered on first call
 * (thread-safe). Never NULL; a member is NULL only if registration ran out
 * of memory, and every update accepts NULL.
 */
const reap_metrics_t *reap_metrics(void);

/** The gRPC code name for a status code ("OK", "NOT_FOUND", ...); "UNKNOWN" when out of range. */
const char *reap_metrics_grpc_code_name(int grpc_code);

/**
 * The rpc layer's per-call observer: counts the call in
 * reap_rpc_requests_total{method,code}, its latency in
 * reap_rpc_duration_seconds{method} and its payload bytes in
 * reap_rpc_{received,sent}_bytes_total{method}. ctx is unused.
 */
void reap_metrics_rpc_observe(void *ctx, const char *method, int grpc_code, double seconds,
			      uint64_t bytes_in, uint64_t bytes_out);

/* ---- HTTP exposition (libmicrohttpd) ----------------------------------- */

typedef struct reap_metrics_http reap_metrics_http_t;

/**
 * Serve the process-wide registry on addr ("127.0.0.1:9090", "[::1]:9090";
 * port 0 picks a free one; NULL means REAP_METRICS_DEFAULT_ADDR), bound to
 * that address only, from an internal thread: GET/HEAD /metrics answers
 * text/plain; version=0.0.4, other paths 404, other methods 405.
 * *port_out (when not NULL) receives the bound port. NULL with eb on failure.
 */
reap_metrics_http_t *reap_metrics_http_start(const char *addr, int *port_out, reap_errbuf_t *eb);
/** The same for a given registry (borrowed; must outlive the listener). */
reap_metrics_http_t *reap_metrics_http_start_registry(reap_metric_registry_t *r, const char *addr,
						      int *port_out, reap_errbuf_t *eb);
/** Stop the listener (waits for its thread) and free it; NULL is a no-op. */
void reap_metrics_http_stop(reap_metrics_http_t *h);

#endif
