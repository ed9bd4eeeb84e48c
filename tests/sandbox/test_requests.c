/*
 * test_requests.c - an action's sandbox requests through the whole path:
 * a real in-process reap server (CAS + scheduler) and a worker daemon. The
 * "reap-" platform properties reach the worker (the scheduler does not
 * match them), a bad one fails the action with INVALID_ARGUMENT, loopback
 * networking on an instance whose policy does not allow it is
 * FAILED_PRECONDITION, and a narrowed limit is enforced (RESOURCE_EXHAUSTED).
 * The rules themselves are unit-tested in tests/worker/test_sandbox.c.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "google/longrunning/operations.pb-c.h"
#include "tests/support/harness.h"
#include "worker/worker.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT

static th_server_t t;
static wrk_daemon_t *d;
static char *token;
static char tmp[64], work[128], cache[128];

static const char *const ro[] = {"/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"};
static const char *const plat[] = {"OSFamily=Linux"};

static void start(void)
{
	th_opts_t o = {.scheduler = true, .lease_ttl_ms = 1500};
	char target[64];
	reap_errbuf_t eb = {{0}};
	th_start(&t, &o);
	token = th_token(AUTH_ROLE_WORKER, "w1", NULL, 0, 3600);
	snprintf(tmp, sizeof(tmp), "/tmp/reap-rqtest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(work, sizeof(work), "%s/work", tmp);
	snprintf(cache, sizeof(cache), "%s/cache", tmp);
	snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
	wrk_config_t c = {.scheduler = target, .cas = target, .name = "w1", .token = token,
			  .slots = 1, .work_dir = work, .cache_dir = cache,
			  .cache_bytes = 1 << 30, .default_timeout_ms = 20000,
			  .platform = plat, .n_platform = 1,
			  .sandbox = {.bwrap = "/usr/bin/bwrap", .ro_paths = ro, .n_ro_paths = 5,
				      .limits = {.output_bytes = 1 << 20}}};
	d = wrk_daemon_start(&c, &eb);
	cr_assert_not_null(d, "%s", eb.msg);
}

static void stop(void)
{
	char cmd[128];
	wrk_daemon_stop(d);
	th_stop(&t);
	free(token);
	token = NULL;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(requests, .init = start, .fini = stop, .timeout = 120);

static void put(const void *data, size_t len, RE(Digest) *dg, char hex[65])
{
	th_digest(data, len, hex);
	cr_assert_eq(th_batch_put(&t, "", data, len), 0);
	*dg = (RE(Digest))RE_INIT(DIGEST);
	dg->hash = hex;
	dg->size_bytes = (int64_t)len;
}

/* Execute sh -c script with OSFamily=Linux plus the "name=value" props; the final response. */
static RE(ExecuteResponse) *execute(const char *script, const char *const *props)
{
	RE(Command) cmd = RE_INIT(COMMAND);
	RE(Command__EnvironmentVariable) ev = RE_INIT(COMMAND__ENVIRONMENT_VARIABLE), *evp = &ev;
	RE(Action) act = RE_INIT(ACTION);
	RE(Directory) dir = RE_INIT(DIRECTORY);
	RE(Platform) pl = RE_INIT(PLATFORM);
	RE(Platform__Property) pp[8], *ppp[8];
	RE(Digest) cd, rd, ad;
	char chex[65], rhex[65], ahex[65], names[8][64];
	char *args[] = {(char *)"sh", (char *)"-c", (char *)script};
	static uint8_t buf[65536];
	size_t n;

	ev.name = (char *)"PATH";
	ev.value = (char *)"/usr/bin:/bin";
	cmd.n_arguments = 3;
	cmd.arguments = args;
	cmd.n_environment_variables = 1;
	cmd.environment_variables = &evp;
	n = build__bazel__remote__execution__v2__command__pack(&cmd, buf);
	put(buf, n, &cd, chex);
	n = build__bazel__remote__execution__v2__directory__pack(&dir, buf);
	put(buf, n, &rd, rhex);
	pp[0] = (RE(Platform__Property))RE_INIT(PLATFORM__PROPERTY);
	pp[0].name = (char *)"OSFamily";
	pp[0].value = (char *)"Linux";
	ppp[0] = &pp[0];
	pl.n_properties = 1;
	for (size_t i = 0; props[i] != NULL && i < 7; i++) { /* sorted by name, as REAPI asks */
		RE(Platform__Property) *p = &pp[pl.n_properties];
		*p = (RE(Platform__Property))RE_INIT(PLATFORM__PROPERTY);
		snprintf(names[i], sizeof(names[i]), "%s", props[i]);
		char *eq = strchr(names[i], '=');
		*eq = '\0';
		p->name = names[i];
		p->value = eq + 1;
		ppp[pl.n_properties++] = p;
	}
	pl.properties = ppp;
	act.command_digest = &cd;
	act.input_root_digest = &rd;
	act.platform = &pl;
	n = build__bazel__remote__execution__v2__action__pack(&act, buf);
	put(buf, n, &ad, ahex);

	RE(ExecuteRequest) req = RE_INIT(EXECUTE_REQUEST);
	rpc_stream_t *s = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.Execution/Execute",
					  60000);
	req.action_digest = &ad;
	req.skip_cache_lookup = true;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	RE(ExecuteResponse) *resp = NULL;
	Google__Longrunning__Operation *op = NULL;
	rpc_status_t st = {0};
	while (rpc_stream_recv(s, &google__longrunning__operation__descriptor,
			       (ProtobufCMessage **)&op) == 1) {
		if (op->done && op->response != NULL)
			resp = build__bazel__remote__execution__v2__execute_response__unpack(
				NULL, op->response->value.len, op->response->value.data);
		protobuf_c_message_free_unpacked(&op->base, NULL);
	}
	rpc_stream_finish(s, &st);
	cr_assert_eq(st.code, 0, "Execute: %s", st.msg);
	rpc_status_destroy(&st);
	cr_assert_not_null(resp);
	return resp;
}

static int code_of(const RE(ExecuteResponse) *r)
{
	return r->status != NULL ? r->status->code : 0;
}

static const char *msg_of(const RE(ExecuteResponse) *r)
{
	return r->status != NULL && r->status->message != NULL ? r->status->message : "";
}

Test(requests, bad_limit_is_invalid_argument)
{
	const char *props[] = {"reap-limit-memory=lots", NULL};
	RE(ExecuteResponse) *r = execute("echo ran", props);
	cr_assert_eq(code_of(r), 3 /* INVALID_ARGUMENT */, "%d %s", code_of(r), msg_of(r));
	cr_assert_neq(strstr(msg_of(r), "reap-limit-memory=\"lots\""), NULL, "%s", msg_of(r));
	cr_assert_null(r->result);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(requests, loopback_without_policy_is_failed_precondition)
{
	const char *props[] = {"reap-network=loopback", NULL};
	RE(ExecuteResponse) *r = execute("echo ran", props);
	cr_assert_eq(code_of(r), 9 /* FAILED_PRECONDITION */, "%d %s", code_of(r), msg_of(r));
	cr_assert_neq(strstr(msg_of(r), "does not allow loopback networking"), NULL, "%s",
		      msg_of(r));
	cr_assert_null(r->result);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(requests, narrowed_limit_is_enforced_and_the_worker_carries_on)
{
	const char *props[] = {"reap-limit-output=4KiB", NULL}, *none[] = {NULL};
	RE(ExecuteResponse) *r = execute("yes", props);
	cr_assert_eq(code_of(r), 8 /* RESOURCE_EXHAUSTED */, "%d %s", code_of(r), msg_of(r));
	cr_assert_neq(strstr(msg_of(r), "output limit: stdout exceeded 4096 bytes"), NULL, "%s",
		      msg_of(r));
	cr_assert_not_null(r->result);
	cr_assert_leq(r->result->stdout_digest->size_bytes, 4096);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	/* a request wider than the worker's 1 MiB is not granted: the same cap as no request */
	const char *wide[] = {"reap-limit-output=1G", NULL};
	r = execute("head -c 2000000 /dev/zero", wide);
	cr_assert_eq(code_of(r), 8 /* RESOURCE_EXHAUSTED */, "%d %s", code_of(r), msg_of(r));
	cr_assert_neq(strstr(msg_of(r), "exceeded 1 MiB"), NULL, "%s", msg_of(r));
	protobuf_c_message_free_unpacked(&r->base, NULL);
	r = execute("echo fine", none);
	cr_assert_eq(code_of(r), 0, "%d %s", code_of(r), msg_of(r));
	protobuf_c_message_free_unpacked(&r->base, NULL);
}
