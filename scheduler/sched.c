/*
 * sched.c - scheduler state: operations, the priority queue, dispatch to
 * waiting workers, leases and their expiry, and the timer thread.
 *
 * All state is guarded by one mutex. Waiting calls (Execute streams, worker
 * long-polls) are deferred rpc calls linked into this state; a change wakes
 * them with rpc_call_wake under the mutex, and each call's handler unlinks
 * itself under the mutex before it finishes, so no wake reaches a freed
 * call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "common/log.h"
#include "common/metrics.h"
#include "scheduler/sched_int.h"

int64_t sched_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sched_uuid(char out[SCHED_NAME_LEN])
{
	uuid_t u;
	uuid_generate_random(u);
	uuid_unparse_lower(u, out);
}

bool sched_platform_satisfies(const RE(Platform) *asked, const char *const *offer, size_t n_offer)
{
	if (asked == NULL)
		return true;
	for (size_t i = 0; i < asked->n_properties; i++) {
		const RE(Platform__Property) *p = asked->properties[i];
		size_t nl = strlen(p->name);
		bool found = false;
		/* reap-* properties are requests to the sandbox (narrower limits,
		 * loopback networking), which every worker understands. */
		if (strncmp(p->name, SCHED_SANDBOX_PREFIX, strlen(SCHED_SANDBOX_PREFIX)) == 0)
			continue;
		for (size_t j = 0; j < n_offer && !found; j++)
			found = strncmp(offer[j], p->name, nl) == 0 && offer[j][nl] == '=' &&
				strcmp(offer[j] + nl + 1, p->value) == 0;
		if (!found)
			return false;
	}
	return true;
}

sched_op_t *sched_find_op(sched_t *s, const char *name)
{
	for (sched_op_t *op = s->ops; op != NULL; op = op->all_next)
		if (strcmp(op->name, name) == 0)
			return op;
	return NULL;
}

sched_op_t *sched_find_inflight(sched_t *s, const char *instance, const reap_digest_t *action)
{
	for (sched_op_t *op = s->ops; op != NULL; op = op->all_next)
		if (op->stage != SCHED_COMPLETED && reap_digest_eq(&op->action, action) &&
		    strcmp(op->instance, instance) == 0)
			return op;
	return NULL;
}

sched_op_t *sched_find_lease(sched_t *s, const char *lease_id)
{
	if (lease_id[0] == '\0')
		return NULL;
	for (sched_op_t *op = s->ops; op != NULL; op = op->all_next)
		if (op->stage == SCHED_EXECUTING && strcmp(op->lease_id, lease_id) == 0)
			return op;
	return NULL;
}

static void queue_insert(sched_t *s, sched_op_t *op)
{
	sched_op_t **pp = &s->queue;
	while (*pp != NULL && ((*pp)->priority < op->priority ||
			       ((*pp)->priority == op->priority && (*pp)->seq < op->seq)))
		pp = &(*pp)->q_next;
	op->q_next = *pp;
	*pp = op;
}

static void queue_remove(sched_t *s, sched_op_t *op)
{
	for (sched_op_t **pp = &s->queue; *pp != NULL; pp = &(*pp)->q_next) {
		if (*pp == op) {
			*pp = op->q_next;
			op->q_next = NULL;
			return;
		}
	}
}

static void op_drop_blobs(sched_op_t *op)
{
	free(op->action_blob);
	free(op->command_blob);
	op->action_blob = op->command_blob = NULL;
	op->action_len = op->command_len = 0;
}

sched_op_t *sched_op_create(sched_t *s, const char *instance, const reap_digest_t *action,
			    RE(Platform) *platform, int32_t priority, bool do_not_cache,
			    uint8_t *action_blob, size_t action_len, uint8_t *command_blob,
			    size_t command_len)
{
	sched_op_t *op = calloc(1, sizeof(*op));
	if (op == NULL || (op->instance = strdup(instance)) == NULL) {
		free(op);
		free(action_blob);
		free(command_blob);
		if (platform != NULL)
			RE_FN(platform__free_unpacked)(platform, NULL);
		return NULL;
	}
	sched_uuid(op->name);
	op->action = *action;
	op->platform = platform;
	op->priority = priority;
	op->do_not_cache = do_not_cache;
	op->action_blob = action_blob;
	op->action_len = action_len;
	op->command_blob = command_blob;
	op->command_len = command_len;
	if (action_blob == NULL || command_blob == NULL ||
	    action_len > SCHED_INLINE_MAX || command_len > SCHED_INLINE_MAX - action_len)
		op_drop_blobs(op); /* the worker fetches them */
	op->seq = s->next_seq++;
	op->stage = SCHED_QUEUED;
	op->all_next = s->ops;
	s->ops = op;
	queue_insert(s, op);
	sched_dispatch(s);
	return op;
}

static void op_free(sched_op_t *op)
{
	op_drop_blobs(op);
	if (op->platform != NULL)
		RE_FN(platform__free_unpacked)(op->platform, NULL);
	free(op->response);
	free(op->instance);
	free(op->offer_key);
	free(op);
}

void sched_waiter_link(sched_op_t *op, sched_waiter_t *w)
{
	w->op = op;
	w->prev = NULL;
	w->next = op->waiters;
	if (op->waiters != NULL)
		op->waiters->prev = w;
	op->waiters = w;
	w->linked = true;
}

void sched_waiter_unlink(sched_waiter_t *w)
{
	if (!w->linked)
		return;
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		w->op->waiters = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	w->linked = false;
	w->next = w->prev = NULL;
}

void sched_poller_link(sched_t *s, sched_poller_t *p)
{
	/* FIFO: the longest-waiting worker gets work first */
	sched_poller_t **pp = &s->pollers, *prev = NULL;
	while (*pp != NULL) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	p->prev = prev;
	p->next = NULL;
	*pp = p;
	p->linked = true;
}

void sched_poller_unlink(sched_t *s, sched_poller_t *p)
{
	if (!p->linked)
		return;
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		s->pollers = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	p->linked = false;
	p->next = p->prev = NULL;
}

void sched_op_notify(sched_t *s, sched_op_t *op)
{
	(void)s;
	for (sched_waiter_t *w = op->waiters; w != NULL; w = w->next)
		rpc_call_wake(w->call);
}

void sched_op_lease(sched_t *s, sched_op_t *op, const sched_poller_t *p)
{
	queue_remove(s, op);
	op->stage = SCHED_EXECUTING;
	op->attempts++;
	sched_uuid(op->lease_id);
	snprintf(op->worker, sizeof(op->worker), "%s", p->worker);
	snprintf(op->toolchain, sizeof(op->toolchain), "%s", p->toolchain);
	free(op->offer_key);
	op->offer_key = p->offer_key != NULL ? strdup(p->offer_key) : NULL;
	op->lease_deadline_ms = sched_now_ms() + s->cfg.lease_ttl_ms;
	REAP_INFO("lease", "operation=%s worker=\"%s\" attempt=%d", op->name, op->worker,
		  op->attempts);
	sched_op_notify(s, op);
}

void sched_dispatch(sched_t *s)
{
	for (sched_poller_t *p = s->pollers, *next; p != NULL; p = next) {
		next = p->next;
		/* A worker whose toolchain is no longer its platform's current one idles. */
		if (s->queue != NULL && !sched_toolchain_ok(s, p->offer_key, p->toolchain))
			continue;
		for (sched_op_t *op = s->queue; op != NULL; op = op->q_next) {
			if (!sched_platform_satisfies(op->platform, (const char *const *)p->offer,
						      p->n_offer) ||
			    auth_check(s->cas->auth, &p->id, op->instance, AUTH_WORK, NULL) != REAP_OK)
				continue;
			sched_op_lease(s, op, p);
			snprintf(p->lease_id, sizeof(p->lease_id), "%s", op->lease_id);
			sched_poller_unlink(s, p);
			rpc_call_wake(p->call);
			break;
		}
		if (s->queue == NULL)
			break;
	}
}

static int pack_response(const RE(ExecuteResponse) *resp, uint8_t **buf, size_t *len)
{
	*len = RE_FN(execute_response__get_packed_size)(resp);
	*buf = malloc(*len ? *len : 1);
	if (*buf == NULL)
		return REAP_E_NOMEM;
	RE_FN(execute_response__pack)(resp, *buf);
	return REAP_OK;
}

void sched_op_complete(sched_t *s, sched_op_t *op, const RE(ExecuteResponse) *resp)
{
	if (op->stage == SCHED_COMPLETED)
		return;
	if (op->stage == SCHED_QUEUED)
		queue_remove(s, op);
	if (pack_response(resp, &op->response, &op->response_len) != REAP_OK)
		op->response_len = 0; /* waiters then report INTERNAL */
	op->stage = SCHED_COMPLETED;
	op->lease_id[0] = '\0';
	op->done_at_ms = sched_now_ms();
	op_drop_blobs(op); /* no lease will need them again */
	sched_op_notify(s, op);
}

void sched_op_fail(sched_t *s, sched_op_t *op, int err, const char *msg)
{
	RE(ExecuteResponse) resp = RE_INIT(EXECUTE_RESPONSE);
	Google__Rpc__Status st;
	cas_status_set(&st, err, msg);
	resp.status = &st;
	resp.message = (char *)msg;
	REAP_INFO("operation failed", "operation=%s err=\"%s\"", op->name, msg);
	sched_op_complete(s, op, &resp);
}

void sched_op_requeue(sched_t *s, sched_op_t *op, const char *why)
{
	char msg[256];
	if (op->stage != SCHED_EXECUTING)
		return;
	op->lease_id[0] = '\0';
	if (op->cancel_requested) {
		sched_op_fail(s, op, REAP_E_CANCELLED, "the operation was cancelled");
		return;
	}
	if (op->attempts >= s->cfg.max_attempts) {
		snprintf(msg, sizeof(msg), "gave up after %d attempts; last: %s", op->attempts, why);
		sched_op_fail(s, op, REAP_E_UNAVAILABLE, msg);
		return;
	}
	REAP_WARN("requeue", "operation=%s worker=\"%s\" why=\"%s\"", op->name, op->worker, why);
	reap_metric_inc(reap_metrics()->leases_requeued);
	op->stage = SCHED_QUEUED;
	queue_insert(s, op);
	sched_op_notify(s, op);
	sched_dispatch(s);
}

static void free_offer(char **offer, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(offer[i]);
	free(offer);
}

void sched_worker_seen(sched_t *s, const char *name, char **offer, size_t n_offer,
		       const char *offer_key, const char *toolchain)
{
	sched_worker_t *w;
	for (w = s->workers; w != NULL; w = w->next)
		if (strcmp(w->name, name) == 0)
			break;
	if (w == NULL) {
		if ((w = calloc(1, sizeof(*w))) == NULL)
			return;
		snprintf(w->name, sizeof(w->name), "%s", name);
		w->next = s->workers;
		s->workers = w;
		REAP_INFO("worker joined", "worker=\"%s\" properties=%zu", w->name, n_offer);
	}
	char **copy = calloc(n_offer + 1, sizeof(*copy));
	if (copy == NULL)
		return;
	for (size_t i = 0; i < n_offer; i++)
		if ((copy[i] = strdup(offer[i])) == NULL) {
			free_offer(copy, i);
			return;
		}
	free_offer(w->offer, w->n_offer);
	w->offer = copy;
	w->n_offer = n_offer;
	w->seen_ms = sched_now_ms();
	if (offer_key != NULL && (w->offer_key == NULL || strcmp(w->offer_key, offer_key) != 0)) {
		char *k = strdup(offer_key);
		if (k != NULL) {
			free(w->offer_key);
			w->offer_key = k;
		}
	}
	if (w->toolchain_since_ms == 0 || strcmp(w->toolchain, toolchain) != 0) {
		if (w->toolchain_since_ms != 0)
			REAP_INFO("worker toolchain changed", "worker=\"%s\" toolchain=%s", w->name,
				  toolchain);
		snprintf(w->toolchain, sizeof(w->toolchain), "%s", toolchain);
		/* Introduced when its first live peer showed it: a restarting worker
		 * with an older toolchain does not become the newest one. */
		w->toolchain_since_ms = w->seen_ms;
		for (sched_worker_t *o = s->workers; o != NULL; o = o->next)
			if (o != w && o->offer_key != NULL && w->offer_key != NULL &&
			    strcmp(o->offer_key, w->offer_key) == 0 &&
			    strcmp(o->toolchain, w->toolchain) == 0 &&
			    o->toolchain_since_ms < w->toolchain_since_ms)
				w->toolchain_since_ms = o->toolchain_since_ms;
	}
}

void sched_feasible(sched_t *s, const RE(Platform) *platform, bool *any_worker, bool *able)
{
	*any_worker = false;
	*able = false;
	for (sched_worker_t *w = s->workers; w != NULL && !*able; w = w->next) {
		*any_worker = true;
		*able = sched_platform_satisfies(platform, (const char *const *)w->offer, w->n_offer);
	}
}

/* One tick of the timer: leases, long-polls, old operations, silent workers. */
static void tick(sched_t *s)
{
	int64_t now = sched_now_ms();

	for (sched_op_t *op = s->ops; op != NULL; op = op->all_next)
		if (op->stage == SCHED_EXECUTING && op->lease_deadline_ms < now) {
			reap_metric_inc(reap_metrics()->leases_expired);
			sched_op_requeue(s, op, "the lease expired (worker lost)");
		}
	for (sched_poller_t *p = s->pollers; p != NULL; p = p->next)
		if (p->deadline_ms <= now)
			rpc_call_wake(p->call);
	for (sched_op_t **pp = &s->ops; *pp != NULL;) {
		sched_op_t *op = *pp;
		if (op->stage == SCHED_COMPLETED && op->waiters == NULL &&
		    now - op->done_at_ms > s->cfg.keep_done_ms) {
			*pp = op->all_next;
			op_free(op);
		} else {
			pp = &op->all_next;
		}
	}
	for (sched_worker_t **pp = &s->workers; *pp != NULL;) {
		sched_worker_t *w = *pp;
		if (now - w->seen_ms > s->cfg.worker_gone_ms) {
			REAP_INFO("worker gone", "worker=\"%s\"", w->name);
			*pp = w->next;
			free_offer(w->offer, w->n_offer);
			free(w->offer_key);
			free(w);
		} else {
			pp = &w->next;
		}
	}
	/* Queued work no live worker can ever run fails instead of waiting forever. */
	for (sched_op_t *op = s->queue, *next; op != NULL; op = next) {
		bool any, able;
		next = op->q_next;
		sched_feasible(s, op->platform, &any, &able);
		if (any && !able)
			sched_op_fail(s, op, REAP_E_PRECONDITION,
				      "no worker offers the platform properties this action asks for");
	}
}

static void *timer_main(void *arg)
{
	sched_t *s = arg;
	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
		if (!s->stopping)
			tick(s);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

void sched_add_method(sched_t *s, const rpc_method_t *m)
{
	if (s->n_methods < sizeof(s->methods) / sizeof(s->methods[0])) {
		s->methods[s->n_methods] = *m;
		s->methods[s->n_methods].ctx = s;
		s->n_methods++;
	}
}

sched_t *sched_new(cas_service_t *cas, const sched_config_t *cfg, reap_errbuf_t *eb)
{
	sched_t *s = calloc(1, sizeof(*s));
	if (s == NULL) {
		reap_errf(eb, REAP_E_NOMEM, "out of memory");
		return NULL;
	}
	s->cas = cas;
	s->store = cas_service_store(cas);
	if (cfg != NULL)
		s->cfg = *cfg;
	if (s->cfg.lease_ttl_ms <= 0)
		s->cfg.lease_ttl_ms = 30000;
	if (s->cfg.max_attempts <= 0)
		s->cfg.max_attempts = 3;
	if (s->cfg.keep_done_ms <= 0)
		s->cfg.keep_done_ms = 10 * 60 * 1000;
	if (s->cfg.worker_gone_ms <= 0)
		s->cfg.worker_gone_ms = 60000;
	if (s->cfg.max_poll_ms <= 0)
		s->cfg.max_poll_ms = 30000;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	sched_exec_methods(s);
	sched_worker_methods(s);
	sched_status_add_methods(s);
	if (pthread_create(&s->timer, NULL, timer_main, s) != 0) {
		reap_errf(eb, REAP_E_INTERNAL, "cannot start the scheduler timer");
		pthread_cond_destroy(&s->cv);
		pthread_mutex_destroy(&s->mu);
		free(s);
		return NULL;
	}
	/* Every ActionCache read, clients' GetActionResult too, retires results
	 * built by a toolchain that is no longer its platform's current one. */
	cas_set_result_check(s->cas, sched_result_current, s);
	return s;
}

void sched_drain(sched_t *s)
{
	pthread_mutex_lock(&s->mu);
	s->draining = true;
	for (sched_poller_t *p = s->pollers; p != NULL; p = p->next)
		rpc_call_wake(p->call);
	pthread_mutex_unlock(&s->mu);
}

void sched_free(sched_t *s)
{
	if (s == NULL)
		return;
	cas_set_result_check(s->cas, NULL, NULL);
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->timer, NULL);
	while (s->ops != NULL) {
		sched_op_t *op = s->ops;
		s->ops = op->all_next;
		op_free(op);
	}
	while (s->workers != NULL) {
		sched_worker_t *w = s->workers;
		s->workers = w->next;
		free_offer(w->offer, w->n_offer);
		free(w->offer_key);
		free(w);
	}
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

const rpc_method_t *sched_methods(sched_t *s, size_t *n)
{
	*n = s->n_methods;
	return s->methods;
}
