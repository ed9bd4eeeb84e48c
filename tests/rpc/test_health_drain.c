/*
 * test_health_drain.c - health through a server's life: NOT_SERVING while it
 * starts, SERVING when ready, NOT_SERVING once it drains, for each service
 * name and for "" (the server as a whole), seen by Check and pushed to
 * Watch streams, which then end so they do not hold up the shutdown.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SVC "reap.test.Svc"

static rpc_server_t *srv;
static rpc_health_t *health;
static rpc_channel_t *ch;

static void stub(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	rpc_call_finish(call, NULL, REAP_OK, NULL);
}

static const rpc_method_t stub_method = {
	.path = "/" SVC "/Do", .kind = RPC_UNARY,
	.request = &grpc__health__v1__health_check_request__descriptor, .on_request = stub};

static void setup(void)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 2};
	reap_errbuf_t eb = {{0}};
	const rpc_method_t *ms;
	char target[64];
	size_t n;
	int port;

	health = rpc_health_new();
	srv = rpc_server_new(&cfg, &eb);
	ms = rpc_health_methods(health, &n);
	cr_assert_eq(rpc_server_add_methods(srv, ms, n), 0);
	cr_assert_eq(rpc_server_add_methods(srv, &stub_method, 1), 0);
	rpc_health_set_server(health, srv, false); /* starting */
	cr_assert_eq(rpc_server_start(srv, &port, &eb), 0);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	ch = rpc_channel_new(target, 0);
}

static void teardown(void)
{
	rpc_channel_free(ch);
	rpc_server_free(srv);
	rpc_health_free(health);
}

TestSuite(health_drain, .init = setup, .fini = teardown, .timeout = 30);

/* Check: the status, or -(gRPC code) when the call failed. */
static int check(const char *service)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	rpc_status_t st = {0};
	int out;

	req.service = (char *)service;
	cr_assert_eq(rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
			       &grpc__health__v1__health_check_response__descriptor,
			       (ProtobufCMessage **)&resp, &st, 5000), 0);
	out = st.code == 0 ? (int)resp->status : -st.code;
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	return out;
}

static rpc_stream_t *watch(const char *service)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	rpc_stream_t *s = rpc_stream_open(ch, "/grpc.health.v1.Health/Watch", 10000);

	req.service = (char *)service;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	return s;
}

/* Next streamed status; 0 at the end of the stream. */
static int next_status(rpc_stream_t *s)
{
	Grpc__Health__V1__HealthCheckResponse *r = NULL;
	int rc = rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor,
				 (ProtobufCMessage **)&r);
	int st;

	if (rc != 1)
		return rc;
	st = r->status;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return st;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

Test(health_drain, start_serve_drain)
{
	rpc_stream_t *w_all, *w_svc;
	rpc_status_t st;
	long t0;

	/* starting: every registered service and "" are known, not serving */
	cr_assert_eq(check(""), NOT_SERVING);
	cr_assert_eq(check(SVC), NOT_SERVING);
	cr_assert_eq(check("grpc.health.v1.Health"), NOT_SERVING);
	cr_assert_eq(check("other.Svc"), -5, "unregistered names stay unknown");
	w_all = watch("");
	w_svc = watch(SVC);
	cr_assert_eq(next_status(w_all), NOT_SERVING);
	cr_assert_eq(next_status(w_svc), NOT_SERVING);

	/* ready */
	rpc_health_set_server(health, srv, true);
	cr_assert_eq(next_status(w_all), SERVING);
	cr_assert_eq(next_status(w_svc), SERVING);
	cr_assert_eq(check(""), SERVING);
	cr_assert_eq(check(SVC), SERVING);

	/* drain: pushed to the watchers, whose streams then end with OK */
	rpc_health_shutdown(health);
	cr_assert_eq(next_status(w_all), NOT_SERVING);
	cr_assert_eq(next_status(w_svc), NOT_SERVING);
	cr_assert_eq(next_status(w_all), 0);
	cr_assert_eq(next_status(w_svc), 0);
	cr_assert_eq(rpc_stream_finish(w_all, &st), 0);
	cr_assert_eq(st.code, 0);
	rpc_status_destroy(&st);
	cr_assert_eq(rpc_stream_finish(w_svc, &st), 0);
	cr_assert_eq(st.code, 0);
	rpc_status_destroy(&st);
	cr_assert_eq(check(""), NOT_SERVING);
	cr_assert_eq(check(SVC), NOT_SERVING);
	cr_assert_eq(check("other.Svc"), NOT_SERVING, "a draining server serves nothing");

	/* draining is for good */
	rpc_health_set(health, "", true);
	rpc_health_set_all(health, true);
	rpc_health_set_server(health, srv, true);
	cr_assert_eq(check(""), NOT_SERVING);
	cr_assert_eq(check(SVC), NOT_SERVING);

	/* a watcher that arrives during the drain is told and let go too */
	w_all = watch("");
	cr_assert_eq(next_status(w_all), NOT_SERVING);
	cr_assert_eq(next_status(w_all), 0);
	rpc_stream_cancel(w_all);

	t0 = now_ms();
	rpc_server_shutdown(srv, 10000);
	cr_assert_lt(now_ms() - t0, 3000, "nothing held the graceful shutdown");
}

/* Watchers the client never reads still end: the shutdown does not wait out its grace. */
Test(health_drain, unread_watchers_do_not_hold_shutdown)
{
	rpc_stream_t *w[4];
	long t0;

	rpc_health_set_server(health, srv, true);
	for (int i = 0; i < 4; i++) {
		w[i] = watch(i % 2 ? SVC : "");
		cr_assert_eq(next_status(w[i]), SERVING);
	}
	rpc_health_shutdown(health);
	t0 = now_ms();
	rpc_server_shutdown(srv, 10000);
	cr_assert_lt(now_ms() - t0, 3000, "nothing held the graceful shutdown");
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(next_status(w[i]), NOT_SERVING);
		rpc_stream_cancel(w[i]);
	}
}
