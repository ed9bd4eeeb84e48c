/*
 * test_sched.c - the scheduler through real gRPC: Execute and WaitExecution
 * streams, a fake worker pulling leases with the workers' secret, the AC
 * write on Complete, dedup, lease expiry and re-queue, platform matching,
 * cancellation, and who may take leases.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "google/longrunning/operations.pb-c.h"
#include "reap/v1/worker.pb-c.h"
#include "tests/support/harness.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
#define DESC(name) build__bazel__remote__execution__v2__##name##__descriptor

static th_server_t t;
/* One channel per worker name, each with that worker's own token. */
#define MAX_WCH 8
static struct {
	char name[32];
	rpc_channel_t *ch;
} wchs[MAX_WCH];

static void wch_free_all(void)
{
	for (int i = 0; i < MAX_WCH; i++) {
		rpc_channel_free(wchs[i].ch);
		wchs[i].ch = NULL;
		wchs[i].name[0] = '\0';
	}
}

/* The channel of worker name (a token whose subject is name). */
static rpc_channel_t *wch_for(const char *name)
{
	char target[64], hdr[1024];
	int i;
	for (i = 0; i < MAX_WCH && wchs[i].ch != NULL; i++)
		if (strcmp(wchs[i].name, name) == 0)
			return wchs[i].ch;
	cr_assert_lt(i, MAX_WCH);
	char *tok = th_token(AUTH_ROLE_WORKER, name, NULL, 0, 3600);
	snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	free(tok);
	wchs[i].ch = rpc_channel_new(target, 0);
	cr_assert_eq(rpc_channel_set_header(wchs[i].ch, "authorization", hdr), 0);
	snprintf(wchs[i].name, sizeof(wchs[i].name), "%s", name);
	return wchs[i].ch;
}

static void start_with(int64_t ttl, int attempts)
{
	th_opts_t o = {.scheduler = true, .lease_ttl_ms = ttl, .max_attempts = attempts};
	th_start(&t, &o);
	wch_free_all(); /* a suite .init may have run before this test's own */
}
static void start(void) { start_with(0, 0); }
static void start_short_lease(void) { start_with(300, 2); }
static void stop(void)
{
	wch_free_all();
	th_stop(&t);
}

TestSuite(sched, .init = start, .fini = stop, .timeout = 60);

/* Upload a Command (with an optional platform property) and Action; fills the action digest. */
static void make_action(const char *arg, const char *prop, RE(Digest) *ad, char ahex[65], bool dnc)
{
	RE(Command) cmd = RE_INIT(COMMAND);
	RE(Action) act = RE_INIT(ACTION);
	RE(Platform) plat = RE_INIT(PLATFORM);
	RE(Platform__Property) pp = RE_INIT(PLATFORM__PROPERTY), *ppp = &pp;
	RE(Digest) cd = RE_INIT(DIGEST), rd = RE_INIT(DIGEST);
	char *args[] = {(char *)"/bin/echo", (char *)arg};
	char chex[65], rhex[65];
	uint8_t buf[4096];
	size_t n;

	cmd.n_arguments = 2;
	cmd.arguments = args;
	if (prop != NULL) {
		pp.name = (char *)"OSFamily";
		pp.value = (char *)prop;
		plat.n_properties = 1;
		plat.properties = &ppp;
		act.platform = &plat;
	}
	n = build__bazel__remote__execution__v2__command__pack(&cmd, buf);
	th_digest(buf, n, chex);
	cr_assert_eq(th_batch_put(&t, "", buf, n), 0);
	cd.hash = chex;
	cd.size_bytes = (int64_t)n;
	th_digest("", 0, rhex); /* the empty Directory */
	rd.hash = rhex;
	act.command_digest = &cd;
	act.input_root_digest = &rd;
	act.do_not_cache = dnc;
	n = build__bazel__remote__execution__v2__action__pack(&act, buf);
	th_digest(buf, n, ahex);
	cr_assert_eq(th_batch_put(&t, "", buf, n), 0);
	*ad = (RE(Digest))RE_INIT(DIGEST);
	ad->hash = ahex;
	ad->size_bytes = (int64_t)n;
}

static rpc_stream_t *execute(RE(Digest) *ad, bool skip_cache)
{
	RE(ExecuteRequest) req = RE_INIT(EXECUTE_REQUEST);
	rpc_stream_t *s = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.Execution/Execute", 20000);
	req.action_digest = ad;
	req.skip_cache_lookup = skip_cache;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	return s;
}

/* Next Operation from the stream; returns its stage (4 = done); NULL-safe resp. */
static int next_op(rpc_stream_t *s, RE(ExecuteResponse) **resp, char *name)
{
	Google__Longrunning__Operation *op = NULL;
	if (rpc_stream_recv(s, &google__longrunning__operation__descriptor, (ProtobufCMessage **)&op) != 1)
		return -1;
	RE(ExecuteOperationMetadata) *meta = build__bazel__remote__execution__v2__execute_operation_metadata__unpack(
		NULL, op->metadata->value.len, op->metadata->value.data);
	int stage = meta->stage;
	if (name != NULL)
		strcpy(name, op->name);
	if (op->done) {
		cr_assert_eq(op->result_case, GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE,
			     "execution errors never use Operation.error");
		if (resp != NULL)
			*resp = build__bazel__remote__execution__v2__execute_response__unpack(
				NULL, op->response->value.len, op->response->value.data);
	}
	protobuf_c_message_free_unpacked(&meta->base, NULL);
	protobuf_c_message_free_unpacked(&op->base, NULL);
	return stage;
}

static int finish(rpc_stream_t *s)
{
	rpc_status_t st = {0};
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

static const char *poll_toolchain; /* sent by poll_lease when set */

static Reap__V1__Lease *poll_lease(rpc_channel_t *ch, const char *worker, const char *prop, int wait_ms,
				   int *code)
{
	Reap__V1__PollRequest req = REAP__V1__POLL_REQUEST__INIT;
	RE(Platform) plat = RE_INIT(PLATFORM);
	RE(Platform__Property) pp = RE_INIT(PLATFORM__PROPERTY), *ppp = &pp;
	Reap__V1__PollResponse *resp = NULL;
	rpc_status_t st = {0};
	req.worker_name = (char *)worker;
	req.wait_ms = wait_ms;
	if (poll_toolchain != NULL)
		req.toolchain = (char *)poll_toolchain;
	if (prop != NULL) {
		pp.name = (char *)"OSFamily";
		pp.value = (char *)prop;
		plat.n_properties = 1;
		plat.properties = &ppp;
		req.platform = &plat;
	}
	cr_assert_eq(rpc_unary(ch, "/reap.v1.WorkerQueue/Poll", &req.base, &reap__v1__poll_response__descriptor,
			       (ProtobufCMessage **)&resp, &st, 20000), 0);
	*code = st.code;
	rpc_status_destroy(&st);
	if (resp == NULL)
		return NULL;
	Reap__V1__Lease *l = resp->lease;
	resp->lease = NULL;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return l;
}

/* Complete a lease with exit code and stdout text; returns the status code, *cached set. */
static int complete(const char *lease, const char *worker, int exit_code, const char *out, bool *cached)
{
	Reap__V1__CompleteRequest req = REAP__V1__COMPLETE_REQUEST__INIT;
	RE(ExecuteResponse) er = RE_INIT(EXECUTE_RESPONSE);
	RE(ActionResult) ar = RE_INIT(ACTION_RESULT);
	RE(Digest) od = RE_INIT(DIGEST);
	Reap__V1__CompleteResponse *resp = NULL;
	rpc_status_t st = {0};
	char ohex[65];
	cr_assert_eq(th_batch_put(&t, "", out, strlen(out)), 0);
	th_digest(out, strlen(out), ohex);
	od.hash = ohex;
	od.size_bytes = (int64_t)strlen(out);
	ar.exit_code = exit_code;
	ar.stdout_digest = &od;
	er.result = &ar;
	req.lease_id = (char *)lease;
	req.worker_name = (char *)worker;
	req.response = &er;
	cr_assert_eq(rpc_unary(wch_for(worker), "/reap.v1.WorkerQueue/Complete", &req.base,
			       &reap__v1__complete_response__descriptor, (ProtobufCMessage **)&resp, &st, 10000), 0);
	int code = st.code;
	rpc_status_destroy(&st);
	if (resp != NULL) {
		if (cached != NULL)
			*cached = resp->cached;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	return code;
}

Test(sched, missing_action_is_precondition_failure)
{
	RE(Digest) ad = RE_INIT(DIGEST);
	RE(ExecuteResponse) *resp = NULL;
	ad.hash = (char *)"3333333333333333333333333333333333333333333333333333333333333333";
	ad.size_bytes = 12;
	rpc_stream_t *s = execute(&ad, false);
	cr_assert_eq(next_op(s, &resp, NULL), 4);
	cr_assert_eq(finish(s), 0);
	cr_assert_eq(resp->status->code, GRPC_STATUS_FAILED_PRECONDITION);
	cr_assert_eq(resp->status->n_details, 1);
	Google__Rpc__PreconditionFailure *pf = google__rpc__precondition_failure__unpack(
		NULL, resp->status->details[0]->value.len, resp->status->details[0]->value.data);
	cr_assert_str_eq(pf->violations[0]->type, "MISSING");
	cr_assert_str_eq(pf->violations[0]->subject,
			 "blobs/3333333333333333333333333333333333333333333333333333333333333333/12");
	protobuf_c_message_free_unpacked(&pf->base, NULL);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

Test(sched, run_cache_and_dedup)
{
	RE(Digest) ad;
	char ahex[65], name[64];
	RE(ExecuteResponse) *resp = NULL;
	int code;
	bool cached = false;

	make_action("hello", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, name), 2, "first QUEUED");
	rpc_stream_t *b = execute(&ad, false);
	char name_b[64];
	cr_assert_eq(next_op(b, NULL, name_b), 2);
	cr_assert_str_eq(name, name_b, "identical actions in flight are merged");
	Reap__V1__Lease *l = poll_lease(wch_for("w1"), "w1", NULL, 2000, &code);
	cr_assert_eq(code, 0);
	cr_assert_not_null(l, "the worker gets the queued action");
	cr_assert_str_eq(l->action_digest->hash, ahex);
	cr_assert_not(l->allow_loopback_network, "the default policy allows no networking");
	/* the Action and its Command travel with the lease (the worker checks them) */
	char lhex[65];
	cr_assert_gt(l->action.len, 0);
	th_digest(l->action.data, l->action.len, lhex);
	cr_assert_str_eq(lhex, ahex);
	RE(Action) *la = build__bazel__remote__execution__v2__action__unpack(NULL, l->action.len,
									    l->action.data);
	cr_assert_not_null(la);
	cr_assert_gt(l->command.len, 0);
	th_digest(l->command.data, l->command.len, lhex);
	cr_assert_str_eq(lhex, la->command_digest->hash);
	protobuf_c_message_free_unpacked(&la->base, NULL);
	cr_assert_eq(next_op(a, NULL, NULL), 3, "EXECUTING");
	cr_assert_eq(next_op(b, NULL, NULL), 3);
	/* only one lease for the merged action */
	Reap__V1__Lease *none = poll_lease(wch_for("w2"), "w2", NULL, 200, &code);
	cr_assert_null(none);
	cr_assert_eq(complete(l->lease_id, "w1", 0, "hello\n", &cached), 0);
	cr_assert(cached, "a successful result is written to the AC");
	cr_assert_eq(complete(l->lease_id, "w1", 0, "hello\n", NULL), GRPC_STATUS_NOT_FOUND,
		     "a lease completes once");
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert_eq(resp->result->exit_code, 0);
	cr_assert_not(resp->cached_result);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(next_op(b, &resp, NULL), 4);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(finish(a), 0);
	cr_assert_eq(finish(b), 0);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	/* now it is a cache hit */
	rpc_stream_t *c = execute(&ad, false);
	cr_assert_eq(next_op(c, &resp, NULL), 4);
	cr_assert(resp->cached_result);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(finish(c), 0);
	/* GetOperation on the finished operation */
	Google__Longrunning__GetOperationRequest g = GOOGLE__LONGRUNNING__GET_OPERATION_REQUEST__INIT;
	g.name = name;
	cr_assert_eq(th_unary(&t, "/google.longrunning.Operations/GetOperation", &g.base,
			      &google__longrunning__operation__descriptor, NULL, NULL), 0);
	g.name = (char *)"no-such-op";
	cr_assert_eq(th_unary(&t, "/google.longrunning.Operations/GetOperation", &g.base,
			      &google__longrunning__operation__descriptor, NULL, NULL), GRPC_STATUS_NOT_FOUND);
}

Test(sched, failures_are_returned_not_cached)
{
	RE(Digest) ad;
	char ahex[65];
	RE(ExecuteResponse) *resp = NULL;
	int code;
	bool cached = true;
	make_action("fail", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	Reap__V1__Lease *l = poll_lease(wch_for("w1"), "w1", NULL, 2000, &code);
	cr_assert_not_null(l);
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	cr_assert_eq(complete(l->lease_id, "w1", 1, "boom\n", &cached), 0);
	cr_assert_not(cached);
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert_eq(resp->result->exit_code, 1, "the failed result still reaches the client");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	finish(a);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	RE(ActionResult) *ar = NULL;
	RE(GetActionResultRequest) g = RE_INIT(GET_ACTION_RESULT_REQUEST);
	g.action_digest = &ad;
	cr_assert_eq(th_unary(&t, "/build.bazel.remote.execution.v2.ActionCache/GetActionResult", &g.base,
			      &DESC(action_result), (ProtobufCMessage **)&ar, NULL), GRPC_STATUS_NOT_FOUND);
	/* do_not_cache: even a success is not written */
	make_action("dnc", NULL, &ad, ahex, true);
	a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	l = poll_lease(wch_for("w1"), "w1", NULL, 2000, &code);
	cr_assert_eq(complete(l->lease_id, "w1", 0, "ok\n", &cached), 0);
	cr_assert_not(cached);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	finish(a);
}

Test(sched, only_workers_take_leases)
{
	int code;
	cr_assert_null(poll_lease(t.ch, "sneaky", NULL, 0, &code));
	cr_assert_eq(code, GRPC_STATUS_PERMISSION_DENIED, "anonymous clients cannot take leases");
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
	rpc_channel_t *bad = rpc_channel_new(target, 0);
	rpc_channel_set_header(bad, "authorization", "Bearer 0123456789abcdef0123456789abcdeX");
	cr_assert_null(poll_lease(bad, "sneaky", NULL, 0, &code));
	cr_assert_eq(code, GRPC_STATUS_UNAUTHENTICATED);
	rpc_channel_free(bad);
	/* a lease can only be completed by the worker it was given to */
	RE(Digest) ad;
	char ahex[65];
	make_action("owner", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	Reap__V1__Lease *l = poll_lease(wch_for("w1"), "w1", NULL, 2000, &code);
	cr_assert_not_null(l);
	cr_assert_eq(complete(l->lease_id, "w2", 0, "x\n", NULL), GRPC_STATUS_PERMISSION_DENIED);
	cr_assert_eq(complete("made-up-lease", "w1", 0, "x\n", NULL), GRPC_STATUS_NOT_FOUND);
	cr_assert_eq(complete(l->lease_id, "w1", 0, "x\n", NULL), 0);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	rpc_stream_cancel(a);
}

/* A worker credential is bound to its worker name and its instances. */
Test(sched, worker_credentials_are_bound)
{
	int code;
	cr_assert_null(poll_lease(wch_for("w1"), "w2", NULL, 0, &code));
	cr_assert_eq(code, GRPC_STATUS_PERMISSION_DENIED, "w1's token cannot poll as w2");
	char *tok = th_token(AUTH_ROLE_CLIENT, "w9", NULL, 0, 3600);
	char target[64], hdr[1024];
	snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	free(tok);
	rpc_channel_t *client = rpc_channel_new(target, 0);
	rpc_channel_set_header(client, "authorization", hdr);
	cr_assert_null(poll_lease(client, "w9", NULL, 0, &code));
	cr_assert_eq(code, GRPC_STATUS_PERMISSION_DENIED, "a client token cannot take leases");
	rpc_channel_free(client);

	/* A worker allowed only team-a gets no work of the default instance. */
	const char *const team[] = {"team-a"};
	tok = th_token(AUTH_ROLE_WORKER, "wa", team, 1, 3600);
	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	free(tok);
	rpc_channel_t *wa = rpc_channel_new(target, 0);
	rpc_channel_set_header(wa, "authorization", hdr);
	RE(Digest) ad;
	char ahex[65];
	make_action("scoped", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	cr_assert_null(poll_lease(wa, "wa", NULL, 300, &code), "not its instance");
	cr_assert_eq(code, 0);
	Reap__V1__Lease *l = poll_lease(wch_for("w1"), "w1", NULL, 2000, &code);
	cr_assert_not_null(l, "an all-instances worker takes it");
	/* the team-a worker cannot complete w1's lease */
	Reap__V1__CompleteRequest req = REAP__V1__COMPLETE_REQUEST__INIT;
	rpc_status_t st = {0};
	req.lease_id = l->lease_id;
	req.worker_name = (char *)"wa";
	cr_assert_eq(rpc_unary(wa, "/reap.v1.WorkerQueue/Complete", &req.base,
			       &reap__v1__complete_response__descriptor, NULL, &st, 5000), 0);
	cr_assert_eq(st.code, GRPC_STATUS_PERMISSION_DENIED);
	rpc_status_destroy(&st);
	rpc_channel_free(wa);
	cr_assert_eq(complete(l->lease_id, "w1", 0, "x\n", NULL), 0);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	rpc_stream_cancel(a);
}

/* A client's GetActionResult for ad: the gRPC code. */
static int get_result(RE(Digest) *ad)
{
	RE(GetActionResultRequest) req = RE_INIT(GET_ACTION_RESULT_REQUEST);
	rpc_status_t st = {0};
	req.action_digest = ad;
	th_unary(&t, "/build.bazel.remote.execution.v2.ActionCache/GetActionResult", &req.base,
		 &build__bazel__remote__execution__v2__action_result__descriptor, NULL, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

/* Upgrading a platform's toolchain retires results built with the old one. */
Test(sched, toolchain_upgrade_retires_results)
{
	RE(Digest) ad;
	RE(ExecuteResponse) *resp = NULL;
	char ahex[65];
	int code;
	bool cached = false;

	poll_toolchain = "sha256:old";
	cr_assert_null(poll_lease(wch_for("old"), "old", NULL, 0, &code));
	make_action("tc", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	Reap__V1__Lease *l = poll_lease(wch_for("old"), "old", NULL, 2000, &code);
	cr_assert_not_null(l);
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	cr_assert_eq(complete(l->lease_id, "old", 0, "tc\n", &cached), 0);
	cr_assert(cached);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	cr_assert_eq(next_op(a, NULL, NULL), 4);
	cr_assert_eq(finish(a), 0);
	a = execute(&ad, false);
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert(resp->cached_result, "served while its toolchain is current");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(finish(a), 0);

	usleep(20 * 1000);
	poll_toolchain = "sha256:new"; /* a worker with the upgraded toolchain joins */
	cr_assert_null(poll_lease(wch_for("new"), "new", NULL, 0, &code));
	cr_assert_eq(get_result(&ad), GRPC_STATUS_NOT_FOUND,
		     "GetActionResult does not serve it either");
	a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2, "the old result is not served any more");
	poll_toolchain = "sha256:old";
	cr_assert_null(poll_lease(wch_for("old"), "old", NULL, 300, &code),
		       "a worker with the retired toolchain gets no work");
	poll_toolchain = "sha256:new";
	l = poll_lease(wch_for("new"), "new", NULL, 2000, &code);
	cr_assert_not_null(l);
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	cr_assert_eq(complete(l->lease_id, "new", 0, "tc\n", &cached), 0);
	cr_assert(cached);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	cr_assert_eq(next_op(a, NULL, NULL), 4);
	cr_assert_eq(finish(a), 0);
	a = execute(&ad, false);
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert(resp->cached_result, "the new toolchain's result is served");
	cr_assert_eq(get_result(&ad), 0);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(finish(a), 0);
	poll_toolchain = NULL;
}

Test(sched, platform_matching)
{
	RE(Digest) ad;
	char ahex[65];
	RE(ExecuteResponse) *resp = NULL;
	int code;
	/* a windows worker is live: a linux action can never run */
	cr_assert_null(poll_lease(wch_for("win"), "win", "windows", 0, &code));
	make_action("plat", "linux", &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert_eq(resp->status->code, GRPC_STATUS_FAILED_PRECONDITION);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	finish(a);
	/* once a linux worker is live, it runs there and not on the windows one */
	cr_assert_null(poll_lease(wch_for("lin"), "lin", "linux", 0, &code));
	a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	cr_assert_null(poll_lease(wch_for("win"), "win", "windows", 200, &code));
	Reap__V1__Lease *l = poll_lease(wch_for("lin"), "lin", "linux", 2000, &code);
	cr_assert_not_null(l);
	cr_assert_eq(complete(l->lease_id, "lin", 0, "x\n", NULL), 0);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	finish(a);
}

Test(sched, expired_lease_is_requeued_then_fails, .init = start_short_lease)
{
	RE(Digest) ad;
	char ahex[65];
	RE(ExecuteResponse) *resp = NULL;
	int code;
	make_action("lost", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, NULL), 2);
	Reap__V1__Lease *l1 = poll_lease(wch_for("dies"), "dies", NULL, 2000, &code);
	cr_assert_not_null(l1);
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	/* never renewed: after the TTL it is queued again and a new worker gets it */
	cr_assert_eq(next_op(a, NULL, NULL), 2, "re-queued");
	Reap__V1__Lease *l2 = poll_lease(wch_for("dies-too"), "dies-too", NULL, 2000, &code);
	cr_assert_not_null(l2);
	cr_assert_str_neq(l1->lease_id, l2->lease_id);
	cr_assert_eq(complete(l1->lease_id, "dies", 0, "late\n", NULL), GRPC_STATUS_NOT_FOUND,
		     "an expired lease cannot complete");
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	/* max_attempts = 2: the second loss fails the operation */
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert_eq(resp->status->code, GRPC_STATUS_UNAVAILABLE);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	finish(a);
	protobuf_c_message_free_unpacked(&l1->base, NULL);
	protobuf_c_message_free_unpacked(&l2->base, NULL);
}

Test(sched, renew_keeps_lease_and_cancel_reaches_worker, .init = start_short_lease)
{
	RE(Digest) ad;
	char ahex[65], name[64];
	RE(ExecuteResponse) *resp = NULL;
	int code;
	make_action("long", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, name), 2);
	Reap__V1__Lease *l = poll_lease(wch_for("w"), "w", NULL, 2000, &code);
	cr_assert_not_null(l);
	Reap__V1__RenewRequest rr = REAP__V1__RENEW_REQUEST__INIT;
	rr.lease_id = l->lease_id;
	rr.worker_name = (char *)"w";
	bool cancelled = false;
	for (int i = 0; i < 8; i++) { /* 8 x 100 ms: well past the 300 ms TTL */
		Reap__V1__RenewResponse *r = NULL;
		rpc_status_t st = {0};
		usleep(100 * 1000);
		if (i == 4) {
			Google__Longrunning__CancelOperationRequest c = GOOGLE__LONGRUNNING__CANCEL_OPERATION_REQUEST__INIT;
			c.name = name;
			cr_assert_eq(th_unary(&t, "/google.longrunning.Operations/CancelOperation", &c.base,
					      &google__protobuf__empty__descriptor, NULL, NULL), 0);
		}
		cr_assert_eq(rpc_unary(wch_for("w"), "/reap.v1.WorkerQueue/Renew", &rr.base,
				       &reap__v1__renew_response__descriptor, (ProtobufCMessage **)&r, &st, 5000), 0);
		cr_assert_eq(st.code, 0, "renewed leases stay alive: %s", st.msg);
		cancelled = r->cancelled;
		protobuf_c_message_free_unpacked(&r->base, NULL);
		rpc_status_destroy(&st);
	}
	cr_assert(cancelled, "the worker hears of the cancel");
	cr_assert_eq(next_op(a, NULL, NULL), 3);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	rpc_stream_cancel(a);
	(void)resp;
}

Test(sched, cancel_queued_and_wait_execution)
{
	RE(Digest) ad;
	char ahex[65], name[64];
	RE(ExecuteResponse) *resp = NULL;
	make_action("cancel-me", NULL, &ad, ahex, false);
	rpc_stream_t *a = execute(&ad, false);
	cr_assert_eq(next_op(a, NULL, name), 2);
	/* a second client attaches by name */
	RE(WaitExecutionRequest) w = RE_INIT(WAIT_EXECUTION_REQUEST);
	w.name = name;
	rpc_stream_t *b = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.Execution/WaitExecution", 10000);
	cr_assert_eq(rpc_stream_send(b, &w.base), 0);
	rpc_stream_close_send(b);
	cr_assert_eq(next_op(b, NULL, NULL), 2);
	Google__Longrunning__CancelOperationRequest c = GOOGLE__LONGRUNNING__CANCEL_OPERATION_REQUEST__INIT;
	c.name = name;
	cr_assert_eq(th_unary(&t, "/google.longrunning.Operations/CancelOperation", &c.base,
			      &google__protobuf__empty__descriptor, NULL, NULL), 0);
	cr_assert_eq(next_op(a, &resp, NULL), 4);
	cr_assert_eq(resp->status->code, GRPC_STATUS_CANCELLED);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(next_op(b, &resp, NULL), 4);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(finish(a), 0);
	cr_assert_eq(finish(b), 0);
	w.name = (char *)"unknown";
	b = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.Execution/WaitExecution", 10000);
	cr_assert_eq(rpc_stream_send(b, &w.base), 0);
	rpc_stream_close_send(b);
	cr_assert_eq(finish(b), GRPC_STATUS_NOT_FOUND);
}

Test(sched_unit, platform_satisfies)
{
	RE(Platform) p = RE_INIT(PLATFORM);
	RE(Platform__Property) a = RE_INIT(PLATFORM__PROPERTY), b = RE_INIT(PLATFORM__PROPERTY);
	RE(Platform__Property) *props[2] = {&a, &b};
	const char *offer[] = {"OSFamily=linux", "pool=big", "pool=small"};
	a.name = (char *)"OSFamily";
	a.value = (char *)"linux";
	b.name = (char *)"pool";
	b.value = (char *)"small";
	p.n_properties = 2;
	p.properties = props;
	cr_assert(sched_platform_satisfies(NULL, offer, 3));
	cr_assert(sched_platform_satisfies(&p, offer, 3));
	b.value = (char *)"huge";
	cr_assert_not(sched_platform_satisfies(&p, offer, 3));
	b.name = (char *)"poo";
	b.value = (char *)"l=big";
	cr_assert_not(sched_platform_satisfies(&p, offer, 3), "no prefix confusion");
	b.name = (char *)"reap-limit-memory";
	b.value = (char *)"1GiB";
	cr_assert(sched_platform_satisfies(&p, offer, 3), "sandbox requests are not matched");
	b.name = (char *)"reaper";
	cr_assert_not(sched_platform_satisfies(&p, offer, 3), "only the reap- prefix is skipped");
}

static void *drain_later(void *arg)
{
	usleep(200 * 1000);
	sched_drain(arg);
	return NULL;
}

Test(sched, drain_answers_waiting_polls)
{
	pthread_t th;
	int code;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	cr_assert_eq(pthread_create(&th, NULL, drain_later, t.sched), 0);
	cr_assert_null(poll_lease(wch_for("w"), "w", NULL, 10000, &code));
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(th, NULL);
	cr_assert_eq(code, 0);
	cr_assert_lt(b.tv_sec - a.tv_sec, 5, "the 10 s poll ended at the drain");
	/* later polls are answered at once */
	cr_assert_null(poll_lease(wch_for("w"), "w", NULL, 10000, &code));
}

Test(sched, capabilities_advertise_execution)
{
	RE(GetCapabilitiesRequest) req = RE_INIT(GET_CAPABILITIES_REQUEST);
	RE(ServerCapabilities) *caps = NULL;
	cr_assert_eq(th_unary(&t, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", &req.base,
			      &DESC(server_capabilities), (ProtobufCMessage **)&caps, NULL), 0);
	cr_assert_not_null(caps->execution_capabilities);
	cr_assert(caps->execution_capabilities->exec_enabled);
	cr_assert_eq(caps->execution_capabilities->digest_function,
		     BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256);
	protobuf_c_message_free_unpacked(&caps->base, NULL);
}
