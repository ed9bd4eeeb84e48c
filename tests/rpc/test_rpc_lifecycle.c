/*
 * test_rpc_lifecycle.c - servers and clients without a running fixture:
 * new and free without start, bad configurations, ports that cannot be
 * bound, and a client whose server is not there.
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

static void echo_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	rpc_call_finish(call, m, REAP_OK, NULL);
}

static const rpc_method_t methods[] = {
	{.path = "/reap.test.T/Echo", .kind = RPC_UNARY, .request = DIGEST_DESC,
	 .on_request = echo_request},
	{.path = "/reap.test.T/Other", .kind = RPC_UNARY, .request = DIGEST_DESC,
	 .on_request = echo_request},
};

Test(rpc_lifecycle, new_free_without_start)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 0};
	reap_errbuf_t eb = {{0}};
	rpc_server_t *s = rpc_server_new(&cfg, &eb);

	cr_assert_not_null(s);
	cr_assert_eq(rpc_server_add_methods(s, methods, 2), 0);
	cr_assert_eq(rpc_server_add_methods(s, methods, 1), REAP_E_EXISTS);
	cr_assert_eq(rpc_server_max_recv(s), 8u << 20);
	rpc_server_shutdown(s, 0);
	rpc_server_free(s);
	rpc_server_free(NULL);
}

Test(rpc_lifecycle, bad_config)
{
	rpc_server_config_t cfg = {.listen = NULL};
	rpc_method_t bad = {.path = "/x.Y/Z", .kind = RPC_SERVER_STREAMING, .request = DIGEST_DESC,
			    .on_request = echo_request}; /* no on_sent */
	reap_errbuf_t eb = {{0}};
	rpc_server_t *s;

	cr_assert_null(rpc_server_new(&cfg, &eb));
	cr_assert_neq(eb.msg[0], '\0');
	cfg.listen = "127.0.0.1:0";
	cfg.threads = -1;
	cr_assert_null(rpc_server_new(&cfg, NULL));
	cfg.threads = 1;
	s = rpc_server_new(&cfg, NULL);
	cr_assert_eq(rpc_server_add_methods(s, &bad, 1), REAP_E_INVALID);
	rpc_server_free(s);
}

Test(rpc_lifecycle, bind_failures)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 1};
	reap_errbuf_t eb = {{0}};
	rpc_server_t *a, *b;
	char addr[64];
	int p;

	a = rpc_server_new(&cfg, NULL);
	cr_assert_eq(rpc_server_start(a, &p, NULL), 0);
	cr_assert_eq(rpc_server_start(a, NULL, NULL), REAP_E_PRECONDITION);
	/* The port is taken: no SO_REUSEPORT sharing. */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", p);
	cfg.listen = addr;
	b = rpc_server_new(&cfg, NULL);
	cr_assert_eq(rpc_server_start(b, NULL, &eb), REAP_E_IO);
	cr_assert_neq(eb.msg[0], '\0');
	rpc_server_free(b);
	cfg.listen = "not an address:xyz";
	b = rpc_server_new(&cfg, NULL);
	cr_assert_eq(rpc_server_start(b, NULL, NULL), REAP_E_IO);
	rpc_server_free(b);
	rpc_server_free(a);
}

Test(rpc_client, unreachable_server)
{
	digest_t req = DIGEST_INIT;
	ProtobufCMessage *resp = NULL;
	rpc_channel_t *c = rpc_channel_new("127.0.0.1:1", 0);
	rpc_stream_t *s;
	rpc_status_t st;

	cr_assert_eq(rpc_unary(c, "/reap.test.T/Echo", &req.base, DIGEST_DESC, &resp, &st, 2000), 0);
	cr_assert_eq(st.code, ST_UNAVAILABLE);
	rpc_status_destroy(&st);
	s = rpc_stream_open(c, "/reap.test.T/Sum", 2000);
	cr_assert_not_null(s);
	rpc_stream_send(s, &req.base);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_eq(st.code, ST_UNAVAILABLE);
	rpc_status_destroy(&st);
	rpc_channel_free(c);
	rpc_channel_free(NULL);
}

