/*
 * status_service.c - a read-only snapshot of the scheduler (queue depth per
 * platform, workers with their idle and busy slots, operations by stage)
 * and reap.v1.Admin/GetStatus, which serves it to `reap status`.
 *
 * The snapshot copies everything it reports in one pass under the
 * scheduler mutex, so the picture is consistent and the lock is held only
 * for a walk of the in-memory lists; encoding and sending happen after it
 * is released. It holds counts, platform properties and worker names only:
 * no instance names, no action digests, so any caller allowed to execute
 * on the instance "" may see it.
 */
#include <stdlib.h>
#include <string.h>

#include "reap/v1/admin.pb-c.h"
#include "scheduler/sched_int.h"

#define ADMIN_SVC "/reap.v1.Admin/"

/* ---- the snapshot ---- */

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* The properties a platform asks for, as "name=value" strings (heap). */
static int platform_strv(const RE(Platform) *p, char ***out, size_t *n)
{
	size_t k = p != NULL ? p->n_properties : 0;

	*out = NULL;
	*n = 0;
	if (k == 0)
		return REAP_OK;
	if ((*out = calloc(k, sizeof(**out))) == NULL)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < k; i++) {
		const RE(Platform__Property) *pp = p->properties[i];
		size_t nl = strlen(pp->name), vl = strlen(pp->value);
		char *s = malloc(nl + vl + 2);
		if (s == NULL)
			return REAP_E_NOMEM; /* *n so far is freed by the caller */
		memcpy(s, pp->name, nl);
		s[nl] = '=';
		memcpy(s + nl + 1, pp->value, vl + 1);
		(*out)[(*n)++] = s;
	}
	return REAP_OK;
}

/* Split an offer key ("a=1\nb=2", already sorted) into strings (heap). */
static int offer_strv(const char *key, char ***out, size_t *n)
{
	size_t k = 1;

	*out = NULL;
	*n = 0;
	if (key == NULL || key[0] == '\0')
		return REAP_OK;
	for (const char *p = key; *p != '\0'; p++)
		k += *p == '\n';
	if ((*out = calloc(k, sizeof(**out))) == NULL)
		return REAP_E_NOMEM;
	for (const char *p = key;;) {
		size_t len = strcspn(p, "\n");
		if (((*out)[*n] = strndup(p, len)) == NULL)
			return REAP_E_NOMEM;
		(*n)++;
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
	return REAP_OK;
}

/* Whether queue q holds exactly the properties of p (same order). */
static bool queue_matches(const sched_status_queue_t *q, const RE(Platform) *p)
{
	size_t k = p != NULL ? p->n_properties : 0;
	if (q->n_platform != k)
		return false;
	for (size_t i = 0; i < k; i++) {
		const char *s = q->platform[i];
		size_t nl = strlen(p->properties[i]->name);
		if (strncmp(s, p->properties[i]->name, nl) != 0 || s[nl] != '=' ||
		    strcmp(s + nl + 1, p->properties[i]->value) != 0)
			return false;
	}
	return true;
}

/* Count op into the queue of its platform, adding one. Holds mu. */
static int count_queued(sched_status_t *st, const sched_op_t *op, size_t *cap)
{
	sched_status_queue_t *q;
	for (size_t i = 0; i < st->n_queues; i++) {
		if (queue_matches(&st->queues[i], op->platform)) {
			st->queues[i].queued++;
			return REAP_OK;
		}
	}
	if (st->n_queues == *cap) {
		size_t ncap = *cap ? *cap * 2 : 8;
		sched_status_queue_t *nq = realloc(st->queues, ncap * sizeof(*nq));
		if (nq == NULL)
			return REAP_E_NOMEM;
		st->queues = nq;
		*cap = ncap;
	}
	q = &st->queues[st->n_queues++];
	memset(q, 0, sizeof(*q));
	q->queued = 1;
	return platform_strv(op->platform, &q->platform, &q->n_platform);
}

static int snapshot_locked(sched_t *s, sched_status_t *st)
{
	size_t qcap = 0, nw = 0;
	int64_t now = sched_now_ms();
	int err;

	for (const sched_op_t *op = s->ops; op != NULL; op = op->all_next) {
		if (op->stage == SCHED_QUEUED)
			st->queued++;
		else if (op->stage == SCHED_EXECUTING)
			st->executing++;
		else
			st->completed++;
	}
	for (const sched_op_t *op = s->queue; op != NULL; op = op->q_next)
		if ((err = count_queued(st, op, &qcap)) != REAP_OK)
			return err;
	for (const sched_worker_t *w = s->workers; w != NULL; w = w->next)
		nw++;
	if (nw > 0 && (st->workers = calloc(nw, sizeof(*st->workers))) == NULL)
		return REAP_E_NOMEM;
	for (const sched_worker_t *w = s->workers; w != NULL; w = w->next) {
		sched_status_worker_t *o = &st->workers[st->n_workers++];
		memcpy(o->name, w->name, sizeof(o->name));
		memcpy(o->toolchain, w->toolchain, sizeof(o->toolchain));
		o->last_seen_ms_ago = now - w->seen_ms;
		for (const sched_poller_t *p = s->pollers; p != NULL; p = p->next)
			o->slots_idle += strcmp(p->worker, w->name) == 0 && p->lease_id[0] == '\0';
		for (const sched_op_t *op = s->ops; op != NULL; op = op->all_next)
			o->slots_busy += op->stage == SCHED_EXECUTING && strcmp(op->worker, w->name) == 0;
		if ((err = offer_strv(w->offer_key, &o->platform, &o->n_platform)) != REAP_OK)
			return err;
	}
	return REAP_OK;
}

int sched_status_snapshot(sched_t *s, sched_status_t *out)
{
	int err;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->mu);
	err = snapshot_locked(s, out);
	pthread_mutex_unlock(&s->mu);
	return err;
}

void sched_status_destroy(sched_status_t *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->n_queues; i++)
		strv_free(st->queues[i].platform, st->queues[i].n_platform);
	for (size_t i = 0; i < st->n_workers; i++)
		strv_free(st->workers[i].platform, st->workers[i].n_platform);
	free(st->queues);
	free(st->workers);
	memset(st, 0, sizeof(*st));
}

/* ---- reap.v1.Admin/GetStatus ---- */

static void status_request(rpc_call_t *call, void *state, const ProtobufCMessage *req)
{
	sched_t *s = rpc_call_ctx(call);
	Reap__V1__GetStatusResponse resp = REAP__V1__GET_STATUS_RESPONSE__INIT;
	Reap__V1__QueueStatus *qs = NULL, **qp = NULL;
	Reap__V1__WorkerStatus *ws = NULL, **wp = NULL;
	sched_status_t st = {0};
	reap_errbuf_t eb = {{0}};
	int err;

	err = cas_admit(s->cas, call, "", 0, 0, AUTH_EXECUTE, NULL, &eb);
	if (err != REAP_OK) {
		rpc_call_finish(call, NULL, err, reap_errmsg(&eb, err));
		return;
	}
	if ((err = sched_status_snapshot(s, &st)) != REAP_OK)
		goto out;
	qs = calloc(st.n_queues + 1, sizeof(*qs));
	qp = calloc(st.n_queues + 1, sizeof(*qp));
	ws = calloc(st.n_workers + 1, sizeof(*ws));
	wp = calloc(st.n_workers + 1, sizeof(*wp));
	if (qs == NULL || qp == NULL || ws == NULL || wp == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < st.n_queues; i++) {
		reap__v1__queue_status__init(&qs[i]);
		qs[i].platform = st.queues[i].platform;
		qs[i].n_platform = st.queues[i].n_platform;
		qs[i].queued = st.queues[i].queued;
		qp[i] = &qs[i];
	}
	for (size_t i = 0; i < st.n_workers; i++) {
		reap__v1__worker_status__init(&ws[i]);
		ws[i].name = st.workers[i].name;
		ws[i].platform = st.workers[i].platform;
		ws[i].n_platform = st.workers[i].n_platform;
		ws[i].slots_idle = st.workers[i].slots_idle;
		ws[i].slots_busy = st.workers[i].slots_busy;
		ws[i].last_seen_ms_ago = st.workers[i].last_seen_ms_ago;
		ws[i].toolchain = st.workers[i].toolchain;
		wp[i] = &ws[i];
	}
	resp.queues = qp;
	resp.n_queues = st.n_queues;
	resp.workers = wp;
	resp.n_workers = st.n_workers;
	resp.operations_queued = st.queued;
	resp.operations_executing = st.executing;
	resp.operations_completed = st.completed;
out:
	rpc_call_finish(call, err == REAP_OK ? &resp.base : NULL, err, NULL);
	free(qs);
	free(qp);
	free(ws);
	free(wp);
	sched_status_destroy(&st);
}

void sched_status_add_methods(sched_t *s)
{
	const rpc_method_t m = {
		.path = ADMIN_SVC "GetStatus",
		.kind = RPC_UNARY,
		.request = &reap__v1__get_status_request__descriptor,
		.on_request = status_request,
	};
	sched_add_method(s, &m);
}
