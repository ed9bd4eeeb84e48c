/* test_health.c - grpc.health.v1.Health: Check and Watch through real gRPC. */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

static rpc_server_t *srv;
static rpc_health_t *health;
static rpc_channel_t *ch;

static void setup(void)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 2};
	reap_errbuf_t eb = {{0}};
	char target[64];
	size_t n;
	int port;
	health = rpc_health_new();
	srv = rpc_server_new(&cfg, &eb);
	const rpc_method_t *ms = rpc_health_methods(health, &n);
	cr_assert_eq(rpc_server_add_methods(srv, ms, n), 0);
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

TestSuite(health, .init = setup, .fini = teardown, .timeout = 30);

static int check(const char *service, int *status)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp = NULL;
	rpc_status_t st = {0};
	req.service = (char *)service;
	cr_assert_eq(rpc_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
			       &grpc__health__v1__health_check_response__descriptor,
			       (ProtobufCMessage **)&resp, &st, 5000), 0);
	int code = st.code;
	if (resp != NULL) {
		*status = resp->status;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	rpc_status_destroy(&st);
	return code;
}

Test(health, check)
{
	int status = 0;
	cr_assert_eq(check("", &status), GRPC_STATUS_NOT_FOUND, "unknown until set");
	rpc_health_set(health, "", true);
	rpc_health_set(health, "x.Svc", false);
	cr_assert_eq(check("", &status), 0);
	cr_assert_eq(status, SERVING);
	cr_assert_eq(check("x.Svc", &status), 0);
	cr_assert_eq(status, NOT_SERVING);
	cr_assert_eq(check("y.Other", &status), GRPC_STATUS_NOT_FOUND);
}

static int next_status(rpc_stream_t *s)
{
	Grpc__Health__V1__HealthCheckResponse *r = NULL;
	if (rpc_stream_recv(s, &grpc__health__v1__health_check_response__descriptor,
			    (ProtobufCMessage **)&r) != 1)
		return -1;
	int st = r->status;
	protobuf_c_message_free_unpacked(&r->base, NULL);
	return st;
}

Test(health, watch_sees_changes)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)"";
	rpc_health_set(health, "", true);
	rpc_stream_t *s = rpc_stream_open(ch, "/grpc.health.v1.Health/Watch", 10000);
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	cr_assert_eq(next_status(s), SERVING);
	usleep(100 * 1000);
	rpc_health_set_all(health, false);
	cr_assert_eq(next_status(s), NOT_SERVING);
	rpc_health_set(health, "", true);
	cr_assert_eq(next_status(s), SERVING);
	rpc_stream_cancel(s);
	/* an unknown service is reported as such, and watched until it appears */
	req.service = (char *)"later.Svc";
	s = rpc_stream_open(ch, "/grpc.health.v1.Health/Watch", 10000);
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	cr_assert_eq(next_status(s), UNKNOWN);
	rpc_health_set(health, "later.Svc", true);
	cr_assert_eq(next_status(s), SERVING);
	rpc_stream_cancel(s);
}
