/*
 * exec_service.c - Execution (Execute, WaitExecution) and Operations
 * (GetOperation, CancelOperation) for clients.
 *
 * Execute answers from the ActionCache when it can; otherwise it checks the
 * Action, Command and input root are stored (FAILED_PRECONDITION inside the
 * ExecuteResponse, with a PreconditionFailure naming each missing blob, so
 * Bazel uploads and retries), merges with an identical operation in flight
 * or queues a new one, and streams every stage change. Errors of the
 * execution itself always travel in ExecuteResponse.status, never in
 * Operation.error; only a bad request fails the call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "scheduler/sched_int.h"

#define EXEC_SVC "/build.bazel.remote.execution.v2.Execution/"
#define OPS_SVC "/google.longrunning.Operations/"
#define MAX_ACTION_BYTES ((size_t)1 << 20)
#define MAX_COMMAND_BYTES ((size_t)4 << 20)

typedef struct exec_state {
	sched_waiter_t w;
	int last_sent; /* stage last streamed; 0 = none */
} exec_state_t;

/* ---- Operation messages ---- */

static void fill_common(sched_opmsg_t *m, const char *name, const reap_digest_t *action, int stage)
{
	Google__Longrunning__Operation op = GOOGLE__LONGRUNNING__OPERATION__INIT;
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	RE(ExecuteOperationMetadata) meta = RE_INIT(EXECUTE_OPERATION_METADATA);

	m->op = op;
	m->meta_any = any;
	m->resp_any = any;
	m->meta = meta;
	snprintf(m->name, sizeof(m->name), "%s", name);
	cas_digest_to_pb(action, &m->digest, m->hex);
	m->meta.stage = (RE(ExecutionStage__Value))stage;
	m->meta.action_digest = &m->digest;
	m->op.name = m->name;
	m->op.metadata = &m->meta_any;
	m->meta_any.type_url = (char *)"type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata";
	m->meta_buf = NULL;
}

static int pack_meta(sched_opmsg_t *m)
{
	size_t n = RE_FN(execute_operation_metadata__get_packed_size)(&m->meta);
	if ((m->meta_buf = malloc(n ? n : 1)) == NULL)
		return REAP_E_NOMEM;
	RE_FN(execute_operation_metadata__pack)(&m->meta, m->meta_buf);
	m->meta_any.value.data = m->meta_buf;
	m->meta_any.value.len = n;
	return REAP_OK;
}

static void set_response(sched_opmsg_t *m, const uint8_t *resp, size_t len)
{
	m->op.done = true;
	m->op.result_case = GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE;
	m->op.response = &m->resp_any;
	m->resp_any.type_url = (char *)"type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse";
	m->resp_any.value.data = (uint8_t *)resp;
	m->resp_any.value.len = len;
}

int sched_opmsg_init(sched_opmsg_t *m, const sched_op_t *op)
{
	fill_common(m, op->name, &op->action, (int)op->stage);
	if (op->stage == SCHED_COMPLETED)
		set_response(m, op->response, op->response_len);
	return pack_meta(m);
}

int sched_opmsg_done(sched_opmsg_t *m, const char *name, const reap_digest_t *action,
		     const RE(ExecuteResponse) *resp, uint8_t **resp_buf)
{
	size_t n = RE_FN(execute_response__get_packed_size)(resp);
	fill_common(m, name, action, SCHED_COMPLETED);
	if ((*resp_buf = malloc(n ? n : 1)) == NULL)
		return REAP_E_NOMEM;
	RE_FN(execute_response__pack)(resp, *resp_buf);
	set_response(m, *resp_buf, n);
	return pack_meta(m);
}

void sched_opmsg_destroy(sched_opmsg_t *m)
{
	free(m->meta_buf);
	m->meta_buf = NULL;
}

/* Finish the call with an operation that is already done (not in the table). */
static void finish_done(rpc_call_t *call, const reap_digest_t *action,
			const RE(ExecuteResponse) *resp)
{
	sched_opmsg_t m;
	uint8_t *buf = NULL;
	char name[SCHED_NAME_LEN];
	sched_uuid(name);
	if (sched_opmsg_done(&m, name, action, resp, &buf) == REAP_OK)
		rpc_call_finish(call, &m.op.base, REAP_OK, NULL);
	else
		rpc_call_finish(call, NULL, REAP_E_NOMEM, NULL);
	sched_opmsg_destroy(&m);
	free(buf);
}

/* Finish with a done operation whose ExecuteResponse carries only a status. */
static void finish_status(rpc_call_t *call, const reap_digest_t *action, int err,
			  const char *msg, const reap_digest_t *missing, size_t n_missing)
{
	RE(ExecuteResponse) resp = RE_INIT(EXECUTE_RESPONSE);
	Google__Rpc__Status st;
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, *anyp = &any;
	Google__Rpc__PreconditionFailure *pf = NULL;
	uint8_t *pfbuf = NULL;

	cas_status_set(&st, err, msg);
	if (n_missing > 0 && (pf = cas_precondition_new(missing, n_missing)) != NULL) {
		size_t n = google__rpc__precondition_failure__get_packed_size(pf);
		if ((pfbuf = malloc(n ? n : 1)) != NULL) {
			google__rpc__precondition_failure__pack(pf, pfbuf);
			any.type_url = (char *)"type.googleapis.com/google.rpc.PreconditionFailure";
			any.value.data = pfbuf;
			any.value.len = n;
			st.n_details = 1;
			st.details = &anyp;
		}
	}
	resp.status = &st;
	resp.message = (char *)msg;
	finish_done(call, action, &resp);
	free(pfbuf);
	cas_precondition_free(pf);
}

/* Send the operation's state, finish when it is done, or wait for a change. Holds mu. */
static void exec_step(rpc_call_t *call, exec_state_t *st)
{
	sched_op_t *op = st->w.op;
	sched_opmsg_t m;

	if (rpc_call_cancelled(call)) {
		sched_waiter_unlink(&st->w);
		rpc_call_finish(call, NULL, REAP_E_CANCELLED, "the client went away");
		return;
	}
	if (op->stage == SCHED_COMPLETED) {
		sched_waiter_unlink(&st->w);
		if (op->response_len == 0 && op->response == NULL) {
			rpc_call_finish(call, NULL, REAP_E_INTERNAL, "the operation lost its result");
			return;
		}
	} else if ((int)op->stage == st->last_sent) {
		rpc_call_defer(call);
		return;
	}
	if (sched_opmsg_init(&m, op) != REAP_OK) {
		sched_waiter_unlink(&st->w);
		rpc_call_finish(call, NULL, REAP_E_NOMEM, NULL);
	} else if (op->stage == SCHED_COMPLETED) {
		rpc_call_finish(call, &m.op.base, REAP_OK, NULL);
	} else {
		st->last_sent = (int)op->stage;
		rpc_call_send(call, &m.op.base);
	}
	sched_opmsg_destroy(&m);
}

static void exec_resume(rpc_call_t *call, void *state)
{
	sched_t *s = rpc_call_ctx(call);
	pthread_mutex_lock(&s->mu);
	exec_step(call, state);
	pthread_mutex_unlock(&s->mu);
}

static void exec_done(rpc_call_t *call, void *state, bool ok)
{
	exec_state_t *st = state;
	sched_t *s = rpc_call_ctx(call);
	pthread_mutex_lock(&s->mu);
	sched_waiter_unlink(&st->w); /* normally already unlinked */
	pthread_mutex_unlock(&s->mu);
}

/*
 * Load and decode a blob the execution needs; missing → *is_missing. Its
 * bytes go to *raw (caller frees) when they fit in SCHED_INLINE_MAX, for the
 * lease; else *raw is NULL.
 */
static void *load_msg(sched_t *s, const reap_digest_t *d, size_t max,
		      const ProtobufCMessageDescriptor *desc, bool *is_missing, uint8_t **raw,
		      size_t *raw_len)
{
	void *data = NULL;
	size_t len = 0;
	ProtobufCMessage *msg = NULL;
	int err = cas_store_get(s->store, d, max, &data, &len);
	*is_missing = err == REAP_E_NOT_FOUND;
	*raw = NULL;
	*raw_len = 0;
	if (err == REAP_OK)
		msg = protobuf_c_message_unpack(desc, NULL, len, data);
	if (msg != NULL && len > 0 && len <= SCHED_INLINE_MAX) {
		*raw = data;
		*raw_len = len;
		data = NULL;
	}
	free(data);
	return msg;
}

/* A deep copy of the platform the action asks for (Action's, else Command's). */
static RE(Platform) *copy_platform(const RE(Action) *a, const RE(Command) *c)
{
	/* Command.platform is deprecated but it is where Bazel before 5 puts it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	const RE(Platform) *p = a->platform != NULL && a->platform->n_properties > 0 ? a->platform
										    : c->platform;
#pragma GCC diagnostic pop
	if (p == NULL || p->n_properties == 0)
		return NULL;
	size_t n = RE_FN(platform__get_packed_size)(p);
	uint8_t *buf = malloc(n ? n : 1);
	RE(Platform) *copy = NULL;
	if (buf != NULL) {
		RE_FN(platform__pack)(p, buf);
		copy = RE_FN(platform__unpack)(NULL, n, buf);
	}
	free(buf);
	return copy;
}

/* Every execution request that was admitted goes to the audit log. */
static void audit_execute(sched_t *s, const auth_identity_t *id, const char *instance,
			  const reap_digest_t *ad, const char *outcome)
{
	char action[REAP_HASH_HEX_LEN + 24];
	reap_digest_hex(ad, action);
	snprintf(action + REAP_HASH_HEX_LEN, sizeof(action) - REAP_HASH_HEX_LEN, "/%lld",
		 (long long)ad->size);
	auth_audit(s->cas->auth, &(auth_audit_event_t){.id = id, .instance = instance,
						       .rpc = "Execution/Execute",
						       .action = action, .outcome = outcome});
}

static void execute(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(ExecuteRequest) *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	exec_state_t *st = state;
	reap_errbuf_t eb = {{0}};
	RE(ActionResult) *ar = NULL;
	RE(Action) *action = NULL;
	RE(Command) *cmd = NULL;
	RE(Platform) *platform = NULL;
	reap_digest_t ad, cd, rd;
	uint8_t *action_raw = NULL, *cmd_raw = NULL;
	size_t action_len = 0, cmd_len = 0;
	auth_identity_t id;
	bool missing, any, able;
	int err;

	st->w.call = call;
	err = cas_admit(s->cas, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_EXECUTE, &id, &eb);
	if (err == REAP_OK)
		err = cas_digest_from_pb(req->action_digest, &ad, &eb);
	if (err != REAP_OK) {
		rpc_call_finish(call, NULL, err, reap_errmsg(&eb, err));
		return;
	}
	/* cas_ac_lookup also applies sched_result_current (retired toolchains). */
	if (!req->skip_cache_lookup &&
	    cas_ac_lookup(s->cas, req->instance_name, &ad, &ar, NULL) == REAP_OK) {
		RE(ExecuteResponse) resp = RE_INIT(EXECUTE_RESPONSE);
		Google__Rpc__Status ok;
		cas_status_set(&ok, REAP_OK, NULL);
		resp.result = ar;
		resp.cached_result = true;
		resp.status = &ok;
		audit_execute(s, &id, req->instance_name, &ad, "cached");
		finish_done(call, &ad, &resp);
		RE_FN(action_result__free_unpacked)(ar, NULL);
		return;
	}
	/* Inputs count only if this instance may read them (tenant-scoped CAS). */
	bool vis[2] = {false, false};
	if (cas_visible(s->cas, req->instance_name, &ad, 1, vis, &eb) != REAP_OK) {
		rpc_call_finish(call, NULL, REAP_E_IO, reap_errmsg(&eb, REAP_E_IO));
		return;
	}
	action = vis[0] ? load_msg(s, &ad, MAX_ACTION_BYTES, &RE_FN(action__descriptor), &missing,
				   &action_raw, &action_len)
			: NULL;
	if (!vis[0])
		missing = true;
	if (action == NULL) {
		finish_status(call, &ad, missing ? REAP_E_PRECONDITION : REAP_E_INVALID,
			      missing ? "the Action is not in the CAS" : "the Action blob is not an Action",
			      &ad, missing ? 1 : 0);
		return;
	}
	if (cas_digest_from_pb(action->command_digest, &cd, &eb) != REAP_OK ||
	    cas_digest_from_pb(action->input_root_digest, &rd, &eb) != REAP_OK) {
		finish_status(call, &ad, REAP_E_INVALID, eb.msg, NULL, 0);
		goto out;
	}
	reap_digest_t inputs[2] = {cd, rd};
	if (cas_visible(s->cas, req->instance_name, inputs, 2, vis, &eb) != REAP_OK) {
		finish_status(call, &ad, REAP_E_IO, eb.msg, NULL, 0);
		goto out;
	}
	cmd = vis[0] ? load_msg(s, &cd, MAX_COMMAND_BYTES, &RE_FN(command__descriptor), &missing,
				&cmd_raw, &cmd_len)
		     : NULL;
	if (!vis[0])
		missing = true;
	bool root_missing = !vis[1];
	if (cmd == NULL || root_missing) {
		reap_digest_t miss[2];
		size_t n = 0;
		if (cmd == NULL && missing)
			miss[n++] = cd;
		if (root_missing)
			miss[n++] = rd;
		if (n > 0)
			finish_status(call, &ad, REAP_E_PRECONDITION,
				      "inputs of the action are not in the CAS", miss, n);
		else
			finish_status(call, &ad, REAP_E_INVALID, "the Command blob is not a Command",
				      NULL, 0);
		goto out;
	}
	if (cmd->n_arguments == 0) {
		finish_status(call, &ad, REAP_E_INVALID, "the Command has no arguments", NULL, 0);
		goto out;
	}
	platform = copy_platform(action, cmd);
	pthread_mutex_lock(&s->mu);
	sched_feasible(s, platform, &any, &able);
	if (any && !able) {
		pthread_mutex_unlock(&s->mu);
		finish_status(call, &ad, REAP_E_PRECONDITION,
			      "no worker offers the platform properties this action asks for",
			      NULL, 0);
		goto out;
	}
	sched_op_t *op = sched_find_inflight(s, req->instance_name, &ad);
	audit_execute(s, &id, req->instance_name, &ad, op != NULL ? "merged" : "queued");
	if (op == NULL) {
		op = sched_op_create(s, req->instance_name, &ad, platform,
				     req->execution_policy ? req->execution_policy->priority : 0,
				     action->do_not_cache, action_raw, action_len, cmd_raw, cmd_len);
		platform = NULL;
		action_raw = cmd_raw = NULL;
		if (op != NULL) {
			char hex[REAP_HASH_HEX_LEN + 1];
			reap_digest_hex(&ad, hex);
			REAP_INFO("queued", "operation=%s instance=\"%s\" action=%s/%lld", op->name,
				  op->instance, hex, (long long)ad.size);
		}
	}
	if (op == NULL) {
		pthread_mutex_unlock(&s->mu);
		rpc_call_finish(call, NULL, REAP_E_NOMEM, NULL);
		goto out;
	}
	sched_waiter_link(op, &st->w);
	exec_step(call, st);
	pthread_mutex_unlock(&s->mu);
out:
	free(action_raw);
	free(cmd_raw);
	if (platform != NULL)
		RE_FN(platform__free_unpacked)(platform, NULL);
	if (cmd != NULL)
		RE_FN(command__free_unpacked)(cmd, NULL);
	RE_FN(action__free_unpacked)(action, NULL);
}

/*
 * Find a named operation and admit the caller for its instance. Returns
 * with mu held and *op set, or with mu released and the call finished.
 */
static sched_op_t *find_admitted(rpc_call_t *call, sched_t *s, const char *name)
{
	reap_errbuf_t eb = {{0}};
	char instance[REAP_INSTANCE_MAX + 1];
	sched_op_t *op;
	int err;

	pthread_mutex_lock(&s->mu);
	op = sched_find_op(s, name);
	if (op != NULL)
		snprintf(instance, sizeof(instance), "%s", op->instance);
	pthread_mutex_unlock(&s->mu);
	if (op == NULL) {
		rpc_call_finish(call, NULL, REAP_E_NOT_FOUND, "no such operation");
		return NULL;
	}
	err = cas_admit(s->cas, call, instance, strlen(instance), 0, AUTH_EXECUTE, NULL, &eb);
	if (err != REAP_OK) {
		rpc_call_finish(call, NULL, err, reap_errmsg(&eb, err));
		return NULL;
	}
	pthread_mutex_lock(&s->mu);
	if ((op = sched_find_op(s, name)) == NULL) {
		pthread_mutex_unlock(&s->mu);
		rpc_call_finish(call, NULL, REAP_E_NOT_FOUND, "no such operation");
	}
	return op;
}

static void wait_execution(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(WaitExecutionRequest) *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	exec_state_t *st = state;
	sched_op_t *op;

	st->w.call = call;
	if ((op = find_admitted(call, s, req->name)) == NULL)
		return;
	sched_waiter_link(op, &st->w);
	exec_step(call, st);
	pthread_mutex_unlock(&s->mu);
}

static void get_operation(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Google__Longrunning__GetOperationRequest *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	sched_opmsg_t msg;
	sched_op_t *op;

	if ((op = find_admitted(call, s, req->name)) == NULL)
		return;
	if (sched_opmsg_init(&msg, op) == REAP_OK)
		rpc_call_finish(call, &msg.op.base, REAP_OK, NULL);
	else
		rpc_call_finish(call, NULL, REAP_E_NOMEM, NULL);
	sched_opmsg_destroy(&msg);
	pthread_mutex_unlock(&s->mu);
}

static void cancel_operation(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Google__Longrunning__CancelOperationRequest *req = (const void *)m;
	sched_t *s = rpc_call_ctx(call);
	Google__Protobuf__Empty empty = GOOGLE__PROTOBUF__EMPTY__INIT;
	sched_op_t *op;

	if ((op = find_admitted(call, s, req->name)) == NULL)
		return;
	if (op->stage == SCHED_QUEUED)
		sched_op_fail(s, op, REAP_E_CANCELLED, "the operation was cancelled");
	else if (op->stage == SCHED_EXECUTING)
		op->cancel_requested = true; /* the worker hears it on its next renew */
	REAP_INFO("cancel", "operation=%s", op->name);
	pthread_mutex_unlock(&s->mu);
	rpc_call_finish(call, &empty.base, REAP_OK, NULL);
}

void sched_exec_methods(sched_t *s)
{
	const rpc_method_t ms[] = {
		{.path = EXEC_SVC "Execute", .kind = RPC_SERVER_STREAMING,
		 .request = &build__bazel__remote__execution__v2__execute_request__descriptor,
		 .state_size = sizeof(exec_state_t), .on_request = execute,
		 .on_sent = exec_resume, .on_wake = exec_resume, .on_done = exec_done},
		{.path = EXEC_SVC "WaitExecution", .kind = RPC_SERVER_STREAMING,
		 .request = &build__bazel__remote__execution__v2__wait_execution_request__descriptor,
		 .state_size = sizeof(exec_state_t), .on_request = wait_execution,
		 .on_sent = exec_resume, .on_wake = exec_resume, .on_done = exec_done},
		{.path = OPS_SVC "GetOperation", .kind = RPC_UNARY,
		 .request = &google__longrunning__get_operation_request__descriptor,
		 .on_request = get_operation},
		{.path = OPS_SVC "CancelOperation", .kind = RPC_UNARY,
		 .request = &google__longrunning__cancel_operation_request__descriptor,
		 .on_request = cancel_operation},
	};
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		sched_add_method(s, &ms[i]);
}
