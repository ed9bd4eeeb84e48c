/*
 * test_cli.c - the server side of `reap status`: the scheduler snapshot
 * (sched_status_snapshot) and reap.v1.Admin/GetStatus, through real gRPC:
 * an action queued by its platform, then leased to a worker, shows up in
 * the queue, the worker's busy slots and the stage counts. The CLI itself
 * is tested end to end by cli_test.sh.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/longrunning/operations.pb-c.h"
#include "reap/v1/admin.pb-c.h"
#include "reap/v1/worker.pb-c.h"
#include "tests/support/harness.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT

static th_server_t t;

static void start(void)
{
	th_opts_t o = {.scheduler = true};
	th_start(&t, &o);
}

static void stop(void)
{
	th_stop(&t);
}

TestSuite(status, .init = start, .fini = stop, .timeout = 60);

/* Upload a Command and an Action asking for OSFamily=prop; fills ad (hash in ahex). */
static void make_action(const char *prop, RE(Digest) *ad, char ahex[65])
{
	RE(Command) cmd = RE_INIT(COMMAND);
	RE(Action) act = RE_INIT(ACTION);
	RE(Platform) plat = RE_INIT(PLATFORM);
	RE(Platform__Property) pp = RE_INIT(PLATFORM__PROPERTY), *ppp = &pp;
	RE(Digest) cd = RE_INIT(DIGEST), rd = RE_INIT(DIGEST);
	char *args[] = {(char *)"/bin/true"};
	char chex[65], rhex[65];
	uint8_t buf[4096];
	size_t n;

	cmd.n_arguments = 1;
	cmd.arguments = args;
	pp.name = (char *)"OSFamily";
	pp.value = (char *)prop;
	plat.n_properties = 1;
	plat.properties = &ppp;
	act.platform = &plat;
	n = build__bazel__remote__execution__v2__command__pack(&cmd, buf);
	th_digest(buf, n, chex);
	cr_assert_eq(th_batch_put(&t, "", buf, n), 0);
	cd.hash = chex;
	cd.size_bytes = (int64_t)n;
	th_digest("", 0, rhex);
	rd.hash = rhex;
	act.command_digest = &cd;
	act.input_root_digest = &rd;
	n = build__bazel__remote__execution__v2__action__pack(&act, buf);
	th_digest(buf, n, ahex);
	cr_assert_eq(th_batch_put(&t, "", buf, n), 0);
	*ad = (RE(Digest))RE_INIT(DIGEST);
	ad->hash = ahex;
	ad->size_bytes = (int64_t)n;
}

/* Start an Execute and wait for its first (QUEUED) Operation. */
static rpc_stream_t *execute_queued(RE(Digest) *ad)
{
	RE(ExecuteRequest) req = RE_INIT(EXECUTE_REQUEST);
	Google__Longrunning__Operation *op = NULL;
	rpc_stream_t *s = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.Execution/Execute",
					  20000);
	req.action_digest = ad;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	cr_assert_eq(rpc_stream_recv(s, &google__longrunning__operation__descriptor,
				     (ProtobufCMessage **)&op), 1);
	cr_assert(!op->done);
	protobuf_c_message_free_unpacked(&op->base, NULL);
	return s;
}

/* Poll as worker name offering OSFamily=prop: the lease (or NULL). */
static Reap__V1__Lease *poll_as(const char *name, const char *prop)
{
	Reap__V1__PollRequest req = REAP__V1__POLL_REQUEST__INIT;
	RE(Platform) plat = RE_INIT(PLATFORM);
	RE(Platform__Property) pp = RE_INIT(PLATFORM__PROPERTY), *ppp = &pp;
	Reap__V1__PollResponse *resp = NULL;
	rpc_status_t st = {0};
	char target[64], hdr[2048];
	char *tok = th_token(AUTH_ROLE_WORKER, name, NULL, 0, 3600);
	rpc_channel_t *ch;

	snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	free(tok);
	ch = rpc_channel_new(target, 0);
	cr_assert_eq(rpc_channel_set_header(ch, "authorization", hdr), 0);
	pp.name = (char *)"OSFamily";
	pp.value = (char *)prop;
	plat.n_properties = 1;
	plat.properties = &ppp;
	req.platform = &plat;
	req.worker_name = (char *)name;
	req.wait_ms = 2000;
	cr_assert_eq(rpc_unary(ch, "/reap.v1.WorkerQueue/Poll", &req.base,
			       &reap__v1__poll_response__descriptor, (ProtobufCMessage **)&resp, &st,
			       20000), 0);
	cr_assert_eq(st.code, GRPC_STATUS_OK, "Poll: %s", st.msg);
	rpc_status_destroy(&st);
	rpc_channel_free(ch);
	Reap__V1__Lease *l = resp->lease;
	resp->lease = NULL;
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return l;
}

/* GetStatus over gRPC; NULL (test skipped) when the method is not registered. */
static Reap__V1__GetStatusResponse *get_status(void)
{
	Reap__V1__GetStatusRequest req = REAP__V1__GET_STATUS_REQUEST__INIT;
	Reap__V1__GetStatusResponse *resp = NULL;
	rpc_status_t st = {0};
	int code = th_unary(&t, "/reap.v1.Admin/GetStatus", &req.base,
			    &reap__v1__get_status_response__descriptor, (ProtobufCMessage **)&resp,
			    &st);
	rpc_status_destroy(&st);
	if (code == GRPC_STATUS_UNIMPLEMENTED)
		cr_skip_test("reap.v1.Admin/GetStatus is not registered "
			     "(wire sched_status_add_methods into sched_new)");
	cr_assert_eq(code, GRPC_STATUS_OK);
	return resp;
}

Test(status, empty_scheduler)
{
	sched_status_t st;
	cr_assert_eq(sched_status_snapshot(t.sched, &st), 0);
	cr_assert_eq(st.queued + st.executing + st.completed, 0);
	cr_assert_eq(st.n_queues, 0);
	cr_assert_eq(st.n_workers, 0);
	sched_status_destroy(&st);
	sched_status_destroy(NULL);
}

Test(status, queued_then_leased)
{
	RE(Digest) ad;
	char ahex[65];
	sched_status_t st;

	make_action("Linux", &ad, ahex);
	rpc_stream_t *s = execute_queued(&ad);
	cr_assert_eq(sched_status_snapshot(t.sched, &st), 0);
	cr_assert_eq(st.queued, 1);
	cr_assert_eq(st.executing, 0);
	cr_assert_eq(st.n_queues, 1);
	cr_assert_eq(st.queues[0].queued, 1);
	cr_assert_eq(st.queues[0].n_platform, 1);
	cr_assert_str_eq(st.queues[0].platform[0], "OSFamily=Linux");
	sched_status_destroy(&st);

	Reap__V1__Lease *l = poll_as("wk1", "Linux");
	cr_assert_not_null(l, "the worker got no lease");
	cr_assert_eq(sched_status_snapshot(t.sched, &st), 0);
	cr_assert_eq(st.queued, 0);
	cr_assert_eq(st.executing, 1);
	cr_assert_eq(st.n_queues, 0);
	cr_assert_eq(st.n_workers, 1);
	cr_assert_str_eq(st.workers[0].name, "wk1");
	cr_assert_eq(st.workers[0].slots_busy, 1);
	cr_assert_eq(st.workers[0].slots_idle, 0);
	cr_assert_eq(st.workers[0].n_platform, 1);
	cr_assert_str_eq(st.workers[0].platform[0], "OSFamily=Linux");
	cr_assert_geq(st.workers[0].last_seen_ms_ago, 0);
	sched_status_destroy(&st);

	Reap__V1__GetStatusResponse *r = get_status();
	cr_assert_eq(r->operations_executing, 1);
	cr_assert_eq(r->n_workers, 1);
	cr_assert_str_eq(r->workers[0]->name, "wk1");
	cr_assert_eq(r->workers[0]->slots_busy, 1);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	protobuf_c_message_free_unpacked(&l->base, NULL);
	rpc_stream_cancel(s);
}

static void start_closed(void)
{
	th_opts_t o = {.scheduler = true, .no_anonymous = true};
	th_start(&t, &o);
}

Test(status_closed, get_status_needs_a_credential, .init = start_closed, .fini = stop,
     .timeout = 60)
{
	Reap__V1__GetStatusRequest req = REAP__V1__GET_STATUS_REQUEST__INIT;
	rpc_status_t st = {0};

	int code = th_unary(&t, "/reap.v1.Admin/GetStatus", &req.base,
			    &reap__v1__get_status_response__descriptor, NULL, &st);
	rpc_status_destroy(&st);
	if (code == GRPC_STATUS_UNIMPLEMENTED)
		cr_skip_test("reap.v1.Admin/GetStatus is not registered");
	cr_assert_eq(code, GRPC_STATUS_UNAUTHENTICATED);
}
