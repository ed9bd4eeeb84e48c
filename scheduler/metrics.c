/*
 * metrics.c - the scheduler's and the store's live state as Prometheus
 * gauges, set by a collector at scrape time: queue depth per platform,
 * operations by stage, workers connected, and the CAS size, blob count and
 * evictions. Counters that change on events (leases expired and
 * re-queued, sandbox limit hits) are incremented where they happen.
 */
#include <stdio.h>
#include <string.h>

#include "common/metrics.h"
#include "scheduler/sched_int.h"

static void collect(void *ctx)
{
	sched_t *s = ctx;
	const reap_metrics_t *m = reap_metrics();
	cas_store_stats_t st;
	int64_t stages[5] = {0}, workers = 0;

	cas_store_stats(s->store, &st);
	reap_metric_set_int(m->cas_bytes, (int64_t)st.bytes);
	reap_metric_set_int(m->cas_blobs, (int64_t)st.blobs);
	/* evictions is a counter: raise it to the store's running total */
	uint64_t seen = reap_metric_count(m->cas_evictions);
	if (st.evictions > seen)
		reap_metric_add(m->cas_evictions, st.evictions - seen);

	reap_metric_zero_children(m->queue_depth);
	pthread_mutex_lock(&s->mu);
	for (sched_op_t *op = s->ops; op != NULL; op = op->all_next)
		if (op->stage >= SCHED_QUEUED && op->stage <= SCHED_COMPLETED)
			stages[op->stage]++;
	for (sched_op_t *op = s->queue; op != NULL; op = op->q_next) {
		char key[256] = "";
		const RE(Platform) *p = op->platform;
		for (size_t i = 0; p != NULL && i < p->n_properties; i++) {
			size_t used = strlen(key);
			snprintf(key + used, sizeof(key) - used, "%s%s=%s", i ? "," : "",
				 p->properties[i]->name, p->properties[i]->value);
		}
		reap_metric_gauge_add(reap_metric_labels(m->queue_depth, key), 1);
	}
	for (sched_worker_t *w = s->workers; w != NULL; w = w->next)
		workers++;
	pthread_mutex_unlock(&s->mu);
	reap_metric_set_int(reap_metric_labels(m->operations, "queued"), stages[SCHED_QUEUED]);
	reap_metric_set_int(reap_metric_labels(m->operations, "executing"), stages[SCHED_EXECUTING]);
	reap_metric_set_int(reap_metric_labels(m->operations, "completed"), stages[SCHED_COMPLETED]);
	reap_metric_set_int(m->workers_connected, workers);
}

void sched_metrics_attach(sched_t *s)
{
	reap_metrics_add_collector(collect, s);
}

void sched_metrics_detach(sched_t *s)
{
	reap_metrics_remove_collector(collect, s);
}
