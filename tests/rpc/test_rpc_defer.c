/*
 * test_rpc_defer.c - deferred calls: a handler parks its call without
 * holding a server thread, another thread wakes it, a client that leaves
 * while it is parked still ends it; and rpc_channel_cancel_all ends calls
 * blocked on a channel. A real server on 127.0.0.1 (port 0).
 *
 * Methods:
 *   /reap.test.T/Wait  unary Digest -> Digest; defers, and a thread wakes it
 *                      after size_bytes ms (never when negative)
 *   /reap.test.T/Echo  unary Digest -> Digest, answers at once
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/rpc.h"

typedef Build__Bazel__Remote__Execution__V2__Digest digest_t;
#define DIGEST_INIT BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT
#define DIGEST_DESC (&build__bazel__remote__execution__v2__digest__descriptor)

/* grpc_status_code values, so the test needs no gRPC header. */
enum { ST_OK = 0, ST_CANCELLED = 1, ST_DEADLINE = 4, ST_UNAVAILABLE = 14 };

static atomic_int done_fail;
static rpc_server_t *srv;
static rpc_channel_t *ch;
static int port;

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Poll until *v reaches want or ms pass; returns the last value. */
static int wait_count(atomic_int *v, int want, int ms)
{
	long end = now_ms() + ms;

	while (atomic_load(v) < want && now_ms() < end)
		sleep_ms(5);
	return atomic_load(v);
}

static void on_done_count(rpc_call_t *call, void *state, bool ok)
{
	if (!ok)
		atomic_fetch_add(&done_fail, 1);
}

static void echo_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	rpc_call_finish(call, m, REAP_OK, NULL);
}

/* ---- Wait: defers; a waker thread wakes it after size_bytes ms ---- */

static pthread_mutex_t wait_mu = PTHREAD_MUTEX_INITIALIZER;
static rpc_call_t *waiting; /* the deferred call, under wait_mu */
static atomic_int wakes_seen, wake_cancelled;

static void *waker(void *arg)
{
	sleep_ms((int)(intptr_t)arg);
	pthread_mutex_lock(&wait_mu);
	if (waiting != NULL) {
		rpc_call_wake(waiting);
		rpc_call_wake(waiting); /* a second wake is harmless */
	}
	pthread_mutex_unlock(&wait_mu);
	return NULL;
}

static void wait_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const digest_t *req = (const digest_t *)m;
	pthread_t t;

	pthread_mutex_lock(&wait_mu);
	waiting = call;
	pthread_mutex_unlock(&wait_mu);
	rpc_call_defer(call);
	if (req->size_bytes >= 0 && pthread_create(&t, NULL, waker, (void *)(intptr_t)req->size_bytes) == 0)
		pthread_detach(t);
}

static void wait_wake(rpc_call_t *call, void *state)
{
	digest_t resp = DIGEST_INIT;

	pthread_mutex_lock(&wait_mu);
	waiting = NULL;
	pthread_mutex_unlock(&wait_mu);
	atomic_fetch_add(&wakes_seen, 1);
	if (rpc_call_cancelled(call))
		atomic_fetch_add(&wake_cancelled, 1);
	resp.hash = (char *)"woken";
	resp.size_bytes = 42;
	rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

static const rpc_method_t methods[] = {
	{.path = "/reap.test.T/Wait",
	 .kind = RPC_UNARY,
	 .request = DIGEST_DESC,
	 .on_request = wait_request,
	 .on_wake = wait_wake,
	 .on_done = on_done_count},
	{.path = "/reap.test.T/Echo",
	 .kind = RPC_UNARY,
	 .request = DIGEST_DESC,
	 .on_request = echo_request,
	 .on_done = on_done_count},
};

static void setup(void)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 2};
	reap_errbuf_t eb = {{0}};
	char target[64];

	srv = rpc_server_new(&cfg, &eb);
	cr_assert_not_null(srv, "%s", eb.msg);
	cr_assert_eq(rpc_server_add_methods(srv, methods, sizeof(methods) / sizeof(methods[0])), 0);
	cr_assert_eq(rpc_server_start(srv, &port, &eb), 0, "%s", eb.msg);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	ch = rpc_channel_new(target, 0);
	cr_assert_not_null(ch);
}

static void teardown(void)
{
	rpc_channel_free(ch);
	rpc_server_free(srv);
}

TestSuite(rpc, .init = setup, .fini = teardown, .timeout = 60);

/* Unary Echo: the status code. */
static int echo(const char *h, char *out, size_t outlen, int timeout_ms)
{
	digest_t req = DIGEST_INIT;
	rpc_status_t st;
	int code;

	req.hash = (char *)h;
	req.size_bytes = 42;
	if (rpc_unary(ch, "/reap.test.T/Echo", &req.base, DIGEST_DESC, NULL, &st, timeout_ms) != 0)
		return -1;
	code = st.code;
	if (out != NULL)
		snprintf(out, outlen, "%s", st.msg);
	rpc_status_destroy(&st);
	return code;
}

Test(rpc, defer_and_wake)
{
	digest_t req = DIGEST_INIT;
	ProtobufCMessage *resp = NULL;
	rpc_status_t st;
	long t0 = now_ms();

	atomic_store(&wakes_seen, 0);
	req.hash = (char *)"w";
	req.size_bytes = 150; /* woken after 150 ms by another thread */
	cr_assert_eq(rpc_unary(ch, "/reap.test.T/Wait", &req.base, DIGEST_DESC, &resp, &st, 5000), 0);
	cr_assert_eq(st.code, ST_OK, "%s", st.msg);
	cr_assert_str_eq(((digest_t *)resp)->hash, "woken");
	cr_assert_geq(now_ms() - t0, 140);
	cr_assert_eq(atomic_load(&wakes_seen), 1, "two wakes give one on_wake");
	protobuf_c_message_free_unpacked(resp, NULL);
	rpc_status_destroy(&st);
	/* the server thread was free meanwhile: other calls went through */
	cr_assert_eq(echo("x", NULL, 0, 2000), ST_OK);
}

Test(rpc, deferred_call_sees_cancel)
{
	digest_t req = DIGEST_INIT;
	rpc_status_t st;
	int before = atomic_load(&done_fail);

	atomic_store(&wakes_seen, 0);
	atomic_store(&wake_cancelled, 0);
	req.hash = (char *)"w";
	req.size_bytes = -1; /* nobody wakes it: only the deadline ends it */
	cr_assert_eq(rpc_unary(ch, "/reap.test.T/Wait", &req.base, DIGEST_DESC, NULL, &st, 200), 0);
	cr_assert_eq(st.code, ST_DEADLINE);
	rpc_status_destroy(&st);
	cr_assert_eq(wait_count(&wakes_seen, 1, 3000), 1, "on_wake ran when the client left");
	cr_assert_eq(atomic_load(&wake_cancelled), 1);
	cr_assert_geq(wait_count(&done_fail, before + 1, 3000), before + 1);
}


static void *cancel_later(void *arg)
{
	sleep_ms(200);
	rpc_channel_cancel_all(arg);
	return NULL;
}

Test(rpc, channel_cancel_all_ends_blocked_calls)
{
	digest_t req = DIGEST_INIT;
	rpc_status_t st;
	pthread_t th;
	long t0 = now_ms();
	char target[64];
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	rpc_channel_t *c2 = rpc_channel_new(target, 0);

	req.hash = (char *)"w";
	req.size_bytes = -1; /* nobody wakes it */
	cr_assert_eq(pthread_create(&th, NULL, cancel_later, c2), 0);
	rpc_unary(c2, "/reap.test.T/Wait", &req.base, DIGEST_DESC, NULL, &st, 10000);
	pthread_join(th, NULL);
	cr_assert_eq(st.code, ST_CANCELLED);
	cr_assert_lt(now_ms() - t0, 5000, "ended by the cancel, not the deadline");
	rpc_status_destroy(&st);
	cr_assert_neq(rpc_unary(c2, "/reap.test.T/Echo", &req.base, DIGEST_DESC, NULL, &st, 1000), 0,
		      "no new calls after cancel_all");
	cr_assert_eq(st.code, ST_CANCELLED);
	rpc_status_destroy(&st);
	rpc_channel_free(c2);
	/* other channels are untouched */
	cr_assert_eq(echo("x", NULL, 0, 2000), ST_OK);
}
