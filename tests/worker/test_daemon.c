/*
 * test_daemon.c - the worker daemon against a real in-process reap server
 * (CAS + scheduler): run, outputs, stdout, exit codes, missing inputs,
 * timeout, tampered inputs, cancellation.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "google/longrunning/operations.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "reap/v1/worker.pb-c.h"
#include "tests/support/harness.h"
#include "worker/worker.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
static char *token;

static th_server_t t;
static wrk_daemon_t *d;
static char tmp[64], work[128], cache[128];

static const char *const ro[] = {"/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"};
static const char *const plat[] = {"OSFamily=Linux"};

static void start(void)
{
	th_opts_t o = {.scheduler = true, .lease_ttl_ms = 1500};
	char target[64];
	reap_errbuf_t eb = {{0}};
	th_start(&t, &o);
	free(token);
	token = th_token(AUTH_ROLE_WORKER, "w1", NULL, 0, 3600);
	snprintf(tmp, sizeof(tmp), "/tmp/reap-dtest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(work, sizeof(work), "%s/work", tmp);
	snprintf(cache, sizeof(cache), "%s/cache", tmp);
	snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
	wrk_config_t c = {.scheduler = target, .cas = target, .name = "w1", .token = token,
			  .slots = 2, .work_dir = work, .cache_dir = cache,
			  .cache_bytes = 1 << 30, .default_timeout_ms = 20000,
			  .platform = plat, .n_platform = 1,
			  .sandbox = {.bwrap = "/usr/bin/bwrap", .ro_paths = ro, .n_ro_paths = 5}};
	d = wrk_daemon_start(&c, &eb);
	cr_assert_not_null(d, "%s", eb.msg);
}

static void stop(void)
{
	char cmd[128];
	wrk_daemon_stop(d);
	th_stop(&t);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(daemon, .init = start, .fini = stop, .timeout = 120);

static void put(const void *data, size_t len, RE(Digest) *dg, char hex[65])
{
	th_digest(data, len, hex);
	cr_assert_eq(th_batch_put(&t, "", data, len), 0);
	*dg = (RE(Digest))RE_INIT(DIGEST);
	dg->hash = hex;
	dg->size_bytes = (int64_t)len;
}

typedef struct action {
	RE(Digest) ad, cd, rd, fd;
	char ahex[65], chex[65], rhex[65], fhex[65];
} action_t;

/* A second platform property for the next action made, e.g. a "reap-" sandbox request. */
static const char *extra_prop[2];

/* An action's platform: OSFamily=Linux, and extra_prop (then cleared) when set. */
static RE(Platform) *platform(RE(Platform) *pl, RE(Platform__Property) props[2],
			      RE(Platform__Property) *propp[2])
{
	props[0] = (RE(Platform__Property))RE_INIT(PLATFORM__PROPERTY);
	props[0].name = (char *)"OSFamily";
	props[0].value = (char *)"Linux";
	propp[0] = &props[0];
	pl->n_properties = 1;
	pl->properties = propp;
	if (extra_prop[0] != NULL) { /* sorted after OSFamily */
		props[1] = (RE(Platform__Property))RE_INIT(PLATFORM__PROPERTY);
		props[1].name = (char *)extra_prop[0];
		props[1].value = (char *)extra_prop[1];
		propp[1] = &props[1];
		pl->n_properties = 2;
		extra_prop[0] = NULL;
	}
	return pl;
}

/* An action running sh -c script with in.txt = input (uploaded unless skip_input). */
static void make(action_t *a, const char *script, const char *input, bool skip_input,
		 int timeout_s, const char *out_path)
{
	RE(Command) cmd = RE_INIT(COMMAND);
	RE(Command__EnvironmentVariable) ev = RE_INIT(COMMAND__ENVIRONMENT_VARIABLE), *evp = &ev;
	RE(Action) act = RE_INIT(ACTION);
	RE(Directory) dir = RE_INIT(DIRECTORY);
	RE(FileNode) fn = RE_INIT(FILE_NODE), *fnp = &fn;
	RE(Platform) pl = RE_INIT(PLATFORM);
	RE(Platform__Property) props[2], *propp[2];
	Google__Protobuf__Duration to = GOOGLE__PROTOBUF__DURATION__INIT;
	char *args[] = {(char *)"sh", (char *)"-c", (char *)script};
	char *outs[] = {(char *)out_path};
	static uint8_t buf[65536];
	size_t n;

	ev.name = (char *)"PATH";
	ev.value = (char *)"/usr/bin:/bin";
	cmd.n_arguments = 3;
	cmd.arguments = args;
	cmd.n_environment_variables = 1;
	cmd.environment_variables = &evp;
	if (out_path != NULL) {
		cmd.n_output_paths = 1;
		cmd.output_paths = outs;
	}
	n = build__bazel__remote__execution__v2__command__pack(&cmd, buf);
	put(buf, n, &a->cd, a->chex);
	th_digest(input, strlen(input), a->fhex);
	if (!skip_input)
		cr_assert_eq(th_batch_put(&t, "", input, strlen(input)), 0);
	a->fd = (RE(Digest))RE_INIT(DIGEST);
	a->fd.hash = a->fhex;
	a->fd.size_bytes = (int64_t)strlen(input);
	fn.name = (char *)"in.txt";
	fn.digest = &a->fd;
	dir.n_files = 1;
	dir.files = &fnp;
	n = build__bazel__remote__execution__v2__directory__pack(&dir, buf);
	put(buf, n, &a->rd, a->rhex);
	act.command_digest = &a->cd;
	act.input_root_digest = &a->rd;
	to.seconds = timeout_s;
	if (timeout_s > 0)
		act.timeout = &to;
	act.platform = platform(&pl, props, propp);
	n = build__bazel__remote__execution__v2__action__pack(&act, buf);
	put(buf, n, &a->ad, a->ahex);
}

static rpc_stream_t *execute_start(action_t *a)
{
	RE(ExecuteRequest) req = RE_INIT(EXECUTE_REQUEST);
	rpc_stream_t *s = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.Execution/Execute",
					  60000);
	req.action_digest = &a->ad;
	req.skip_cache_lookup = true;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	return s;
}

/* Read the stream to the end; the final ExecuteResponse (caller frees); *name the op. */
static RE(ExecuteResponse) *execute_wait(rpc_stream_t *s, char *name)
{
	RE(ExecuteResponse) *resp = NULL;
	Google__Longrunning__Operation *op = NULL;
	rpc_status_t st = {0};
	while (rpc_stream_recv(s, &google__longrunning__operation__descriptor,
			       (ProtobufCMessage **)&op) == 1) {
		if (name != NULL)
			strcpy(name, op->name);
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

static RE(ExecuteResponse) *execute(action_t *a)
{
	return execute_wait(execute_start(a), NULL);
}

static void expect_blob(const RE(Digest) *dg, const char *content)
{
	char hex[65];
	cr_assert_not_null(dg);
	th_digest(content, strlen(content), hex);
	cr_assert_str_eq(dg->hash, hex, "blob is not \"%s\"", content);
	cr_assert_eq(dg->size_bytes, (int64_t)strlen(content));
}

static int code_of(const RE(ExecuteResponse) *r)
{
	return r->status != NULL ? r->status->code : 0;
}

Test(daemon, runs_and_collects)
{
	action_t a;
	make(&a, "mkdir -p out && tr a-z A-Z < in.txt > out/res.txt; echo to-stdout; echo to-stderr >&2",
	     "hello\n", false, 10, "out/res.txt");
	RE(ExecuteResponse) *r = execute(&a);
	cr_assert_eq(code_of(r), 0, "%s", r->status ? r->status->message : "");
	cr_assert_not_null(r->result);
	cr_assert_eq(r->result->exit_code, 0);
	expect_blob(r->result->stdout_digest, "to-stdout\n");
	expect_blob(r->result->stderr_digest, "to-stderr\n");
	cr_assert_eq(r->result->n_output_files, 1);
	cr_assert_str_eq(r->result->output_files[0]->path, "out/res.txt");
	expect_blob(r->result->output_files[0]->digest, "HELLO\n");
	cr_assert_not_null(r->result->execution_metadata);
	cr_assert_str_eq(r->result->execution_metadata->worker, "w1");
	cr_assert_not_null(r->result->execution_metadata->execution_start_timestamp);
	cr_assert_not_null(r->result->execution_metadata->worker_completed_timestamp);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(daemon, output_parent_created_and_exit_code)
{
	action_t a;
	/* no mkdir: the worker creates deep/er/ before the run */
	make(&a, "cp in.txt deep/er/copy.txt; exit 3", "x\n", false, 10, "deep/er/copy.txt");
	RE(ExecuteResponse) *r = execute(&a);
	cr_assert_eq(code_of(r), 0);
	cr_assert_eq(r->result->exit_code, 3);
	cr_assert_eq(r->result->n_output_files, 1);
	cr_assert_null(r->result->stdout_digest);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* An empty input root (no GetTree) and a Command too large to travel with the lease. */
Test(daemon, empty_root_and_large_command)
{
	RE(Command) cmd = RE_INIT(COMMAND);
	RE(Command__EnvironmentVariable) ev[2], *evp[2] = {&ev[0], &ev[1]};
	RE(Action) act = RE_INIT(ACTION);
	RE(Platform) pl = RE_INIT(PLATFORM);
	RE(Platform__Property) props[2], *propp[2];
	char *args[] = {(char *)"sh", (char *)"-c", (char *)"echo ${#BIG}"};
	static char big[40001];
	static uint8_t buf[65536];
	action_t a;
	size_t n;

	memset(big, 'x', sizeof(big) - 1);
	for (int i = 0; i < 2; i++)
		ev[i] = (RE(Command__EnvironmentVariable))RE_INIT(COMMAND__ENVIRONMENT_VARIABLE);
	ev[0].name = (char *)"BIG";
	ev[0].value = big;
	ev[1].name = (char *)"PATH";
	ev[1].value = (char *)"/usr/bin:/bin";
	cmd.n_arguments = 3;
	cmd.arguments = args;
	cmd.n_environment_variables = 2;
	cmd.environment_variables = evp;
	n = build__bazel__remote__execution__v2__command__pack(&cmd, buf);
	cr_assert_gt(n, 32768, "larger than what the scheduler sends with a lease");
	put(buf, n, &a.cd, a.chex);
	th_digest("", 0, a.rhex); /* the empty Directory: the empty blob, always there */
	a.rd = (RE(Digest))RE_INIT(DIGEST);
	a.rd.hash = a.rhex;
	act.command_digest = &a.cd;
	act.input_root_digest = &a.rd;
	act.platform = platform(&pl, props, propp);
	n = build__bazel__remote__execution__v2__action__pack(&act, buf);
	put(buf, n, &a.ad, a.ahex);
	RE(ExecuteResponse) *r = execute(&a);
	cr_assert_eq(code_of(r), 0, "%s", r->status ? r->status->message : "");
	cr_assert_eq(r->result->exit_code, 0);
	expect_blob(r->result->stdout_digest, "40000\n");
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(daemon, missing_input_is_precondition_failure)
{
	action_t a;
	make(&a, "cat in.txt", "never uploaded\n", true, 10, NULL);
	RE(ExecuteResponse) *r = execute(&a);
	cr_assert_eq(code_of(r), 9 /* FAILED_PRECONDITION */, "%d %s", code_of(r),
		     r->status ? r->status->message : "");
	cr_assert_eq(r->status->n_details, 1);
	cr_assert_str_eq(r->status->details[0]->type_url,
			 "type.googleapis.com/google.rpc.PreconditionFailure");
	Google__Rpc__PreconditionFailure *pf = google__rpc__precondition_failure__unpack(
		NULL, r->status->details[0]->value.len, r->status->details[0]->value.data);
	cr_assert_not_null(pf);
	cr_assert_eq(pf->n_violations, 1);
	cr_assert_str_eq(pf->violations[0]->type, "MISSING");
	char subject[128];
	snprintf(subject, sizeof(subject), "blobs/%s/%lld", a.fhex, (long long)a.fd.size_bytes);
	cr_assert_str_eq(pf->violations[0]->subject, subject);
	protobuf_c_message_free_unpacked(&pf->base, NULL);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(daemon, timeout_is_deadline_exceeded_with_result)
{
	action_t a;
	make(&a, "echo started; sleep 100", "t\n", false, 1, NULL);
	RE(ExecuteResponse) *r = execute(&a);
	cr_assert_eq(code_of(r), 4 /* DEADLINE_EXCEEDED */, "%d", code_of(r));
	cr_assert_not_null(r->result);
	expect_blob(r->result->stdout_digest, "started\n");
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(daemon, tampered_input_is_not_ok)
{
	action_t a;
	make(&a, "chmod u+w in.txt && echo evil >> in.txt; echo done", "pristine\n", false, 10, NULL);
	RE(ExecuteResponse) *r = execute(&a);
	if (geteuid() == 0) {
		/* A root worker runs actions as an unprivileged uid that does not
		 * own the staged inputs: the tampering itself must fail. */
		cr_assert_eq(code_of(r), 0, "%d", code_of(r));
		expect_blob(r->result->stdout_digest, "done\n");
	} else {
		/* A non-root worker's action owns its inputs: the change is caught. */
		cr_assert_eq(code_of(r), 13 /* INTERNAL */, "%d", code_of(r));
		cr_assert_str_eq(r->message, "action modified its input files; result not cached");
		cr_assert_not_null(r->result);
		expect_blob(r->result->stdout_digest, "done\n");
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	/* the cache dropped the tampered file: the same input runs clean again */
	make(&a, "cat in.txt", "pristine\n", false, 10, NULL);
	r = execute(&a);
	cr_assert_eq(code_of(r), 0);
	expect_blob(r->result->stdout_digest, "pristine\n");
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(daemon, cancel_reaches_the_action)
{
	action_t a;
	char name[256] = "";
	make(&a, "sleep 100", "c\n", false, 60, NULL);
	rpc_stream_t *s = execute_start(&a);
	Google__Longrunning__Operation *op = NULL;
	cr_assert_eq(rpc_stream_recv(s, &google__longrunning__operation__descriptor,
				     (ProtobufCMessage **)&op), 1);
	strcpy(name, op->name);
	protobuf_c_message_free_unpacked(&op->base, NULL);
	sleep(2); /* let the worker start it */
	Google__Longrunning__CancelOperationRequest creq =
		GOOGLE__LONGRUNNING__CANCEL_OPERATION_REQUEST__INIT;
	creq.name = name;
	rpc_status_t st = {0};
	cr_assert_eq(th_unary(&t, "/google.longrunning.Operations/CancelOperation", &creq.base,
			      &google__protobuf__empty__descriptor, NULL, &st), 0, "%s", st.msg);
	rpc_status_destroy(&st);
	RE(ExecuteResponse) *r = execute_wait(s, NULL);
	cr_assert_eq(code_of(r), 1 /* CANCELLED */, "%d %s", code_of(r),
		     r->status ? r->status->message : "");
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(daemon, parallel_slots)
{
	action_t a, b;
	make(&a, "sleep 1; echo a", "pa\n", false, 10, NULL);
	make(&b, "sleep 1; echo b", "pb\n", false, 10, NULL);
	rpc_stream_t *sa = execute_start(&a), *sb = execute_start(&b);
	RE(ExecuteResponse) *ra = execute_wait(sa, NULL), *rb = execute_wait(sb, NULL);
	expect_blob(ra->result->stdout_digest, "a\n");
	expect_blob(rb->result->stdout_digest, "b\n");
	protobuf_c_message_free_unpacked(&ra->base, NULL);
	protobuf_c_message_free_unpacked(&rb->base, NULL);
	/*
	 * exec roots are gone: what is left is the idle slots' sandboxes started
	 * ahead of their next action, whose exec roots are still empty
	 */
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s | grep -v '^lease-\\.next-')\"", work);
	cr_assert_eq(system(cmd), 0, "work dir not empty");
	snprintf(cmd, sizeof(cmd),
		 "test -z \"$(find %s/lease-.next-*/root -mindepth 1 2>/dev/null)\"", work);
	cr_assert_eq(system(cmd), 0, "a waiting sandbox's exec root is not empty");
}

/*
 * An idle slot keeps a sandbox started ahead with the worker's own
 * settings; an action that narrows them must not run in it. The process
 * limit shows which sandbox ran the command: none set (this process's own
 * limit, inherited) or the action's reap-limit-pids (plus bwrap's slack).
 */
Test(daemon, narrowed_sandbox_is_not_the_one_started_ahead)
{
	const char *script = "grep 'Max processes' /proc/self/limits | tr -s ' ' | cut -d' ' -f3";
	char own[64], mine[128];
	FILE *f = popen(script, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(own, sizeof(own), f));
	pclose(f);
	action_t a, b;
	make(&a, script, "x\n", false, 10, NULL);
	extra_prop[0] = "reap-limit-pids";
	extra_prop[1] = "50";
	make(&b, script, "y\n", false, 10, NULL);
	snprintf(mine, sizeof(mine), "%s", geteuid() == 0 ? "58\n" : own); /* 50 + 8 as root */
	for (int i = 0; i < 2; i++) { /* the second time both slots have one waiting */
		RE(ExecuteResponse) *ra = execute(&a), *rb = execute(&b);
		cr_assert_eq(code_of(ra), 0, "%s", ra->status ? ra->status->message : "");
		cr_assert_eq(code_of(rb), 0, "%s", rb->status ? rb->status->message : "");
		expect_blob(ra->result->stdout_digest, own);
		cr_assert_not_null(rb->result->stdout_digest);
		if (geteuid() == 0)
			expect_blob(rb->result->stdout_digest, mine);
		char hex[65];
		th_digest(own, strlen(own), hex);
		cr_assert_str_neq(rb->result->stdout_digest->hash, hex,
				  "the narrowed action ran without its process limit");
		protobuf_c_message_free_unpacked(&ra->base, NULL);
		protobuf_c_message_free_unpacked(&rb->base, NULL);
	}
}
