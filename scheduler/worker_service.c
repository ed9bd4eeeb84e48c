/*
 * worker_service.c - reap.v1.WorkerQueue: Poll (long-poll for a lease),
 * Renew and Complete, for worker identities only.
 *
 * A lease names one operation; only the worker it was given to may renew or
 * complete it, and only once: Complete clears it. The reported result is
 * written to the ActionCache here when it is a success the action allows
 * to be cached (exit code 0, status OK, not do_not_cache), after checking
 * every blob it references is stored. Failed or uncacheable results still
 * reach every waiter of the operation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/metrics.h"
#include "scheduler/sched_int.h"

#define SVC "/reap.v1.WorkerQueue/"
#define MAX_PROPERTIES 64

typedef struct poll_state {
	sched_poller_t p;
} poll_state_t;

/*
 * A worker call is admitted only for a worker identity, and only under its
 * own name: a token or certificate is bound to the worker name it was
 * issued for, so a stolen worker credential cannot register, renew or
 * complete as another worker. Fills id (may be NULL).
 */
static int admit_worker(sched_t *s, rpc_call_t *call, const char *worker, auth_identity_t *id,
			reap_errbuf_t *eb)
{
	auth_identity_t local;
	int err;
	if (id == NULL)
		id = &local;
	/* Which instances it may take work from is checked per operation. */
	err = cas_identify(s->cas, call, id, eb);
	if (err == REAP_OK && id->role != AUTH_ROLE_WORKER && id->role != AUTH_ROLE_ADMIN)
		err = reap_errf(eb, REAP_E_PERM, "%s (%s) is not a worker", id->subject,
				auth_role_name(id->role));
	if (err == REAP_OK && (worker[0] == '\0' || strlen(worker) >= 128))
		err = reap_errf(eb, REAP_E_INVALID, "worker_name must be 1 to 127 bytes");
	if (err == REAP_OK && strcmp(worker, id->subject) != 0)
		err = reap_errf(eb, REAP_E_PERM,
				"this credential belongs to worker '%s', not '%s'", id->subject,
				worker);
	if (err == REAP_E_PERM)
		auth_audit(s->cas->auth, &(auth_audit_event_t){
						 .id = id, .peer = rpc_call_peer(call),
						 .instance = "", .rpc = rpc_call_method(call),
						 .outcome = "refused", .detail = reap_errmsg(eb, err)});
	return err;
}

/* Answer a poll with its lease (or none). Holds mu. */
static void poll_reply(rpc_call_t *call, sched_t *s, poll_state_t *st)
{
	Reap__V1__PollResponse resp = REAP__V1__POLL_RESPONSE__INIT;
	Reap__V1__Lease lease = REAP__V1__LEASE__INIT;
	RE(Digest) d;
	char hex[65];
	sched_op_t *op = sched_find_lease(s, st->p.lease_id);

	if (op != NULL) {
		lease.lease_id = op->lease_id;
		lease.operation_name = op->name;
		lease.instance_name = op->instance;
		cas_digest_to_pb(&op->action, &d, hex);
		lease.action_digest = &d;
		lease.lease_ttl_ms = s->cfg.lease_ttl_ms;
		lease.allow_loopback_network = auth_loopback_network(s->cas->auth, op->instance);
		/* read from this instance's CAS at Execute; the worker checks the digests */
		lease.action.data = op->action_blob;
		lease.action.len = op->action_blob != NULL ? op->action_len : 0;
		lease.command.data = op->command_blob;
		lease.command.len = op->command_blob != NULL ? op->command_len : 0;
		resp.lease = &lease;
		st->p.delivered = true;
	}
	rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

static void poll_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Reap__V1__PollRequest *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	poll_state_t *st = state;
	reap_errbuf_t eb = {{0}};
	size_t n = req->platform != NULL ? req->platform->n_properties : 0;
	int err;

	st->p.call = call;
	err = admit_worker(s, call, req->worker_name, &st->p.id, &eb);
	if (err == REAP_OK && n > MAX_PROPERTIES)
		err = reap_errf(&eb, REAP_E_INVALID, "more than %d platform properties",
				MAX_PROPERTIES);
	if (err == REAP_OK && (st->p.offer = calloc(n + 1, sizeof(char *))) == NULL)
		err = REAP_E_NOMEM;
	for (size_t i = 0; err == REAP_OK && i < n; i++) {
		const RE(Platform__Property) *p = req->platform->properties[i];
		size_t len = strlen(p->name) + strlen(p->value) + 2;
		if ((st->p.offer[i] = malloc(len)) == NULL) {
			err = REAP_E_NOMEM;
			break;
		}
		snprintf(st->p.offer[i], len, "%s=%s", p->name, p->value);
		st->p.n_offer = i + 1;
	}
	if (err != REAP_OK) {
		rpc_call_finish(call, NULL, err, reap_errmsg(&eb, err));
		return;
	}
	if (err == REAP_OK && strlen(req->toolchain) >= sizeof(st->p.toolchain))
		err = reap_errf(&eb, REAP_E_INVALID, "toolchain must be under %zu bytes",
				sizeof(st->p.toolchain));
	if (err == REAP_OK &&
	    (st->p.offer_key = sched_offer_key(st->p.offer, st->p.n_offer)) == NULL)
		err = REAP_E_NOMEM;
	if (err != REAP_OK) {
		rpc_call_finish(call, NULL, err, reap_errmsg(&eb, err));
		return;
	}
	snprintf(st->p.toolchain, sizeof(st->p.toolchain), "%s", req->toolchain);
	snprintf(st->p.worker, sizeof(st->p.worker), "%s", req->worker_name);
	int64_t wait = req->wait_ms < 0 ? 0 : req->wait_ms;
	if (wait > s->cfg.max_poll_ms)
		wait = s->cfg.max_poll_ms;
	pthread_mutex_lock(&s->mu);
	st->p.deadline_ms = sched_now_ms() + wait;
	sched_worker_seen(s, st->p.worker, st->p.offer, st->p.n_offer, st->p.offer_key,
			  st->p.toolchain);
	sched_poller_link(s, &st->p);
	sched_dispatch(s);
	if (st->p.lease_id[0] != '\0' || wait == 0 || s->draining) {
		sched_poller_unlink(s, &st->p);
		poll_reply(call, s, st);
	} else {
		rpc_call_defer(call);
	}
	pthread_mutex_unlock(&s->mu);
}

static void poll_wake(rpc_call_t *call, void *state)
{
	sched_t *s = rpc_call_ctx(call);
	poll_state_t *st = state;

	pthread_mutex_lock(&s->mu);
	if (st->p.lease_id[0] != '\0' && rpc_call_cancelled(call)) {
		sched_op_t *op = sched_find_lease(s, st->p.lease_id);
		if (op != NULL)
			sched_op_requeue(s, op, "the worker left before taking its lease");
		st->p.lease_id[0] = '\0';
	}
	if (st->p.lease_id[0] != '\0' || rpc_call_cancelled(call) || s->draining ||
	    sched_now_ms() >= st->p.deadline_ms) {
		sched_poller_unlink(s, &st->p);
		poll_reply(call, s, st);
	} else {
		rpc_call_defer(call); /* woken early: keep waiting */
	}
	pthread_mutex_unlock(&s->mu);
}

static void poll_done(rpc_call_t *call, void *state, bool ok)
{
	sched_t *s = rpc_call_ctx(call);
	poll_state_t *st = state;

	pthread_mutex_lock(&s->mu);
	sched_poller_unlink(s, &st->p);
	if (!ok && st->p.delivered) {
		/* The lease may never have reached the worker: run it elsewhere now. */
		sched_op_t *op = sched_find_lease(s, st->p.lease_id);
		if (op != NULL)
			sched_op_requeue(s, op, "the lease could not be delivered");
	}
	pthread_mutex_unlock(&s->mu);
	for (size_t i = 0; i < st->p.n_offer; i++)
		free(st->p.offer[i]);
	free(st->p.offer);
	free(st->p.offer_key);
}

/* The op holding lease_id for worker, with mu held; NULL (mu released) with *err set. */
static sched_op_t *find_held(sched_t *s, const char *lease_id, const char *worker, int *err,
			     reap_errbuf_t *eb)
{
	pthread_mutex_lock(&s->mu);
	sched_op_t *op = sched_find_lease(s, lease_id);
	if (op == NULL)
		*err = reap_errf(eb, REAP_E_NOT_FOUND, "the lease expired or never existed");
	else if (strcmp(op->worker, worker) != 0)
		*err = reap_errf(eb, REAP_E_PERM, "the lease belongs to another worker");
	else
		return op;
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void renew(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Reap__V1__RenewRequest *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	Reap__V1__RenewResponse resp = REAP__V1__RENEW_RESPONSE__INIT;
	reap_errbuf_t eb = {{0}};
	sched_op_t *op;
	int err = admit_worker(s, call, req->worker_name, NULL, &eb);

	if (err == REAP_OK && (op = find_held(s, req->lease_id, req->worker_name, &err, &eb)) != NULL) {
		op->lease_deadline_ms = sched_now_ms() + s->cfg.lease_ttl_ms;
		resp.cancelled = op->cancel_requested;
		pthread_mutex_unlock(&s->mu);
	}
	rpc_call_finish(call, &resp.base, err, reap_errmsg(&eb, err));
}

static void complete(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Reap__V1__CompleteRequest *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	Reap__V1__CompleteResponse resp = REAP__V1__COMPLETE_RESPONSE__INIT;
	RE(ExecuteResponse) *er = req->response;
	reap_errbuf_t eb = {{0}};
	char instance[REAP_INSTANCE_MAX + 1], name[SCHED_NAME_LEN];
	char toolchain[REAP_INSTANCE_MAX + 8], *offer_key;
	reap_digest_t ad;
	auth_identity_t id;
	const char *outcome = "not cacheable";
	char action[REAP_HASH_HEX_LEN + 24];
	sched_op_t *op;
	int err = admit_worker(s, call, req->worker_name, &id, &eb);

	if (err != REAP_OK || (op = find_held(s, req->lease_id, req->worker_name, &err, &eb)) == NULL) {
		rpc_call_finish(call, NULL, err, reap_errmsg(&eb, err));
		return;
	}
	/* Once per lease: nobody can complete or renew it again. */
	op->lease_id[0] = '\0';
	op->lease_deadline_ms = INT64_MAX;
	snprintf(instance, sizeof(instance), "%s", op->instance);
	snprintf(name, sizeof(name), "%s", op->name);
	snprintf(toolchain, sizeof(toolchain), "%s", op->toolchain);
	offer_key = op->offer_key; /* the op keeps it until freed; take it */
	op->offer_key = NULL;
	ad = op->action;
	/* do_not_cache comes from the Action as Execute read it from the CAS:
	 * the worker's word is not taken for it */
	bool cacheable = !op->do_not_cache;
	pthread_mutex_unlock(&s->mu);

	bool ok_status = er != NULL && (er->status == NULL || er->status->code == 0);
	if (er != NULL && er->status != NULL && er->status->code == 8 /* RESOURCE_EXHAUSTED */)
		reap_metric_inc(reap_metric_labels(reap_metrics()->sandbox_limit_hits, "resource"));
	else if (er != NULL && er->status != NULL && er->status->code == 4 /* DEADLINE */)
		reap_metric_inc(reap_metric_labels(reap_metrics()->sandbox_limit_hits, "timeout"));
	if (ok_status && er->result != NULL && er->result->exit_code == 0 && cacheable) {
		reap_digest_t *missing = NULL;
		size_t n_missing = 0;
		reap_errbuf_t web = {{0}};
		int werr = sched_stamp_write(s, instance, &ad, er->result, toolchain, offer_key,
					     &missing, &n_missing, &web);
		resp.cached = werr == REAP_OK;
		outcome = werr == REAP_OK ? "ac written" : "ac write refused";
		if (werr != REAP_OK)
			REAP_WARN("result not cached", "operation=%s err=\"%s\"", name,
				  reap_errmsg(&web, werr));
		free(missing);
	}
	free(offer_key);
	reap_digest_hex(&ad, action);
	snprintf(action + REAP_HASH_HEX_LEN, sizeof(action) - REAP_HASH_HEX_LEN, "/%lld",
		 (long long)ad.size);
	auth_audit(s->cas->auth, &(auth_audit_event_t){.id = &id, .instance = instance,
						       .rpc = "WorkerQueue/Complete",
						       .action = action, .outcome = outcome});
	pthread_mutex_lock(&s->mu);
	if (er != NULL) {
		er->cached_result = false;
		sched_op_complete(s, op, er);
	} else {
		sched_op_fail(s, op, REAP_E_INTERNAL, "the worker reported no response");
	}
	REAP_INFO("completed", "operation=%s worker=\"%s\" cached=%d", name, req->worker_name,
		  (int)resp.cached);
	pthread_mutex_unlock(&s->mu);
	rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

void sched_worker_methods(sched_t *s)
{
	const rpc_method_t ms[] = {
		{.path = SVC "Poll", .kind = RPC_UNARY,
		 .request = &reap__v1__poll_request__descriptor,
		 .state_size = sizeof(poll_state_t), .on_request = poll_request,
		 .on_wake = poll_wake, .on_done = poll_done},
		{.path = SVC "Renew", .kind = RPC_UNARY,
		 .request = &reap__v1__renew_request__descriptor, .on_request = renew},
		{.path = SVC "Complete", .kind = RPC_UNARY,
		 .request = &reap__v1__complete_request__descriptor, .on_request = complete},
	};
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		sched_add_method(s, &ms[i]);
}
