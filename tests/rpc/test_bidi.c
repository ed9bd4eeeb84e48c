/*
 * test_bidi.c - bidirectional streaming calls and the call observer, on a
 * real server driven by the module's blocking client.
 *
 * /reap.test.B/Echo (bidi, Digest -> Digest): each request {hash, n} is
 * answered with n messages {hash, 0..n-1}; the half-close with one last
 * {"end", count of requests} carried by rpc_call_finish. Hash "fail" ends
 * the call with INVALID_ARGUMENT, "badrecv" makes on_half_close read again
 * (a programmer error: INTERNAL). Every on_done and every observed call is
 * recorded.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/rpc.h"

typedef Build__Bazel__Remote__Execution__V2__Digest digest_t;
#define DIGEST_INIT BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT
#define DIGEST_DESC (&build__bazel__remote__execution__v2__digest__descriptor)
#define ECHO "/reap.test.B/Echo"

enum { ST_OK = 0, ST_CANCELLED = 1, ST_INVALID = 3, ST_DEADLINE = 4, ST_UNIMPLEMENTED = 12,
       ST_INTERNAL = 13 };

static atomic_int done_ok, done_fail;
static rpc_server_t *srv;
static rpc_channel_t *ch;

/* ---- observer ---- */

typedef struct {
	char method[128];
	int code;
	double seconds;
	uint64_t in, out;
} seen_t;

static pthread_mutex_t obs_mu = PTHREAD_MUTEX_INITIALIZER;
static seen_t seen[64];
static int nseen;

static void observe(void *ctx, const char *method, int code, double seconds, uint64_t in,
		    uint64_t out)
{
	cr_assert_eq(ctx, (void *)&seen);
	pthread_mutex_lock(&obs_mu);
	if (nseen < 64) {
		snprintf(seen[nseen].method, sizeof(seen[nseen].method), "%s", method);
		seen[nseen].code = code;
		seen[nseen].seconds = seconds;
		seen[nseen].in = in;
		seen[nseen].out = out;
	}
	nseen++;
	pthread_mutex_unlock(&obs_mu);
}

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

/* Wait until n calls were observed; a copy of the last one into *last. */
static int wait_seen(int n, seen_t *last)
{
	long end = now_ms() + 5000;
	int got;

	for (;;) {
		pthread_mutex_lock(&obs_mu);
		got = nseen;
		if (got >= n && last != NULL && got > 0)
			*last = seen[(got - 1) % 64];
		pthread_mutex_unlock(&obs_mu);
		if (got >= n || now_ms() > end)
			return got;
		sleep_ms(5);
	}
}

static int wait_count(atomic_int *v, int want)
{
	long end = now_ms() + 5000;

	while (atomic_load(v) < want && now_ms() < end)
		sleep_ms(5);
	return atomic_load(v);
}

/* ---- the Echo handler ---- */

typedef struct {
	char hash[64];
	int64_t n, sent;
	int64_t requests;
	bool badrecv;
} echo_state_t;

static void echo_next(rpc_call_t *call, echo_state_t *st)
{
	digest_t d = DIGEST_INIT;

	if (st->sent >= st->n) {
		rpc_call_recv(call);
		return;
	}
	d.hash = st->hash;
	d.size_bytes = st->sent;
	rpc_call_send(call, &d.base);
}

static void echo_message(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const digest_t *req = (const digest_t *)m;
	echo_state_t *st = state;

	st->requests++;
	if (strcmp(req->hash, "fail") == 0) {
		rpc_call_finish(call, NULL, REAP_E_INVALID, "asked to fail");
		return;
	}
	if (strcmp(req->hash, "badrecv") == 0)
		st->badrecv = true;
	snprintf(st->hash, sizeof(st->hash), "%s", req->hash);
	st->n = req->size_bytes;
	st->sent = 0;
	echo_next(call, st);
}

static void echo_sent(rpc_call_t *call, void *state)
{
	echo_state_t *st = state;

	st->sent++;
	echo_next(call, st);
}

static void echo_half_close(rpc_call_t *call, void *state)
{
	echo_state_t *st = state;
	digest_t d = DIGEST_INIT;

	if (st->badrecv) {
		rpc_call_recv(call);
		return;
	}
	d.hash = (char *)"end";
	d.size_bytes = st->requests;
	rpc_call_finish(call, &d.base, REAP_OK, NULL);
}

static void echo_done(rpc_call_t *call, void *state, bool ok)
{
	atomic_fetch_add(ok ? &done_ok : &done_fail, 1);
}

static const rpc_method_t methods[] = {
	{.path = ECHO,
	 .kind = RPC_BIDI_STREAMING,
	 .request = DIGEST_DESC,
	 .state_size = sizeof(echo_state_t),
	 .on_message = echo_message,
	 .on_sent = echo_sent,
	 .on_half_close = echo_half_close,
	 .on_done = echo_done},
};

static void setup(void)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 2};
	reap_errbuf_t eb = {{0}};
	char target[64];
	int port;

	atomic_store(&done_ok, 0);
	atomic_store(&done_fail, 0);
	nseen = 0;
	srv = rpc_server_new(&cfg, &eb);
	cr_assert_not_null(srv, "%s", eb.msg);
	cr_assert_eq(rpc_server_add_methods(srv, methods, 1), 0);
	rpc_server_set_observer(srv, observe, &seen);
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

TestSuite(bidi, .init = setup, .fini = teardown, .timeout = 60);

static void send_req(rpc_stream_t *s, const char *hash, int64_t n)
{
	digest_t d = DIGEST_INIT;

	d.hash = (char *)hash;
	d.size_bytes = n;
	cr_assert_eq(rpc_stream_send(s, &d.base), 0, "send %s", hash);
}

/* Receive one Digest and check it. */
static void expect(rpc_stream_t *s, const char *hash, int64_t size)
{
	ProtobufCMessage *m = NULL;
	digest_t *d;

	cr_assert_eq(rpc_stream_recv(s, DIGEST_DESC, &m), 1, "expected %s/%lld", hash,
		     (long long)size);
	d = (digest_t *)m;
	cr_assert_str_eq(d->hash, hash);
	cr_assert_eq(d->size_bytes, size, "%s: %lld != %lld", hash, (long long)d->size_bytes,
		     (long long)size);
	protobuf_c_message_free_unpacked(m, NULL);
}

static void expect_end(rpc_stream_t *s)
{
	ProtobufCMessage *m = NULL;

	cr_assert_eq(rpc_stream_recv(s, DIGEST_DESC, &m), 0);
	cr_assert_null(m);
}

static int finish(rpc_stream_t *s)
{
	rpc_status_t st;
	int code;

	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	code = st.code;
	rpc_status_destroy(&st);
	return code;
}

Test(bidi, echo_several_then_half_close)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 10000);
	char h[16];
	seen_t last;

	cr_assert_not_null(s);
	for (int i = 0; i < 5; i++) {
		snprintf(h, sizeof(h), "m%d", i);
		send_req(s, h, i % 3); /* 0, 1 or 2 replies */
		for (int j = 0; j < i % 3; j++)
			expect(s, h, j);
	}
	cr_assert_eq(rpc_stream_close_send(s), 0);
	expect(s, "end", 5);
	expect_end(s);
	cr_assert_eq(finish(s), ST_OK);
	cr_assert_eq(wait_count(&done_ok, 1), 1);
	cr_assert_eq(atomic_load(&done_fail), 0);

	cr_assert_eq(wait_seen(1, &last), 1);
	cr_assert_str_eq(last.method, ECHO);
	cr_assert_eq(last.code, ST_OK);
	cr_assert_geq(last.seconds, 0.0);
	cr_assert_lt(last.seconds, 10.0);
	/* requests: 5 digests of "mI" (2 bytes) with sizes 0..2: 4 bytes each
	 * but size 0 is not encoded: 2 x 4 + 3 x 6 */
	cr_assert_eq(last.in, 2 * 4 + 3 * 6, "in=%llu", (unsigned long long)last.in);
	/* replies: m1/0 (4), m2/0 (4) m2/1 (6), m4/0 (4), end/5 (7) */
	cr_assert_eq(last.out, 4 + 4 + 6 + 4 + 7, "out=%llu", (unsigned long long)last.out);
}

Test(bidi, half_close_without_messages)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 10000);

	cr_assert_eq(rpc_stream_close_send(s), 0);
	expect(s, "end", 0);
	expect_end(s);
	cr_assert_eq(finish(s), ST_OK);
	cr_assert_eq(wait_count(&done_ok, 1), 1);
}

/* The client writes everything before reading: the server reads one request
 * at a time, and flow control carries the rest. */
Test(bidi, pipelined)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 20000);
	char h[16];

	for (int i = 0; i < 200; i++) {
		snprintf(h, sizeof(h), "p%d", i);
		send_req(s, h, 1);
	}
	cr_assert_eq(rpc_stream_close_send(s), 0);
	for (int i = 0; i < 200; i++) {
		snprintf(h, sizeof(h), "p%d", i);
		expect(s, h, 0);
	}
	expect(s, "end", 200);
	cr_assert_eq(finish(s), ST_OK);
}

Test(bidi, cancel_mid_stream)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 10000);
	seen_t last;

	send_req(s, "a", 2);
	expect(s, "a", 0);
	expect(s, "a", 1);
	/* the server now waits for the next request */
	rpc_stream_cancel(s);
	cr_assert_eq(wait_count(&done_fail, 1), 1);
	cr_assert_eq(atomic_load(&done_ok), 0);
	cr_assert_eq(wait_seen(1, &last), 1);
	cr_assert_eq(last.code, ST_CANCELLED);
	cr_assert_eq(last.in, 5);
	cr_assert_eq(last.out, 3 + 5);
}

Test(bidi, cancel_while_server_sends)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 10000);

	/* far more replies than flow control lets through unread */
	send_req(s, "flood", 1000000);
	expect(s, "flood", 0);
	rpc_stream_cancel(s);
	cr_assert_eq(wait_count(&done_fail, 1), 1);
	cr_assert_eq(atomic_load(&done_ok), 0);
}

Test(bidi, error_status_mid_stream)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 10000);
	seen_t last;

	send_req(s, "x", 1);
	expect(s, "x", 0);
	send_req(s, "fail", 0);
	expect_end(s);
	cr_assert_eq(finish(s), ST_INVALID);
	cr_assert_eq(wait_count(&done_ok, 1), 1, "the handler's own error status is ok");
	cr_assert_eq(wait_seen(1, &last), 1);
	cr_assert_eq(last.code, ST_INVALID);
}

Test(bidi, recv_after_half_close_is_internal)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 10000);

	send_req(s, "badrecv", 0);
	cr_assert_eq(rpc_stream_close_send(s), 0);
	expect_end(s);
	cr_assert_eq(finish(s), ST_INTERNAL);
	cr_assert_eq(wait_count(&done_fail, 1), 1);
}

Test(bidi, deadline_is_observed)
{
	rpc_stream_t *s = rpc_stream_open(ch, ECHO, 300);
	seen_t last;

	sleep_ms(600);
	rpc_stream_cancel(s);
	cr_assert_eq(wait_seen(1, &last), 1);
	cr_assert_eq(last.code, ST_DEADLINE, "code %d", last.code);
	/* timed from acceptance, which a fresh connection may delay */
	cr_assert(last.seconds > 0.0 && last.seconds < 5.0, "seconds %f", last.seconds);
	cr_assert_eq(wait_count(&done_fail, 1), 1);
}

Test(bidi, unknown_method_is_observed_without_its_name)
{
	rpc_stream_t *s = rpc_stream_open(ch, "/reap.test.B/Nope", 5000);
	seen_t last;

	cr_assert_eq(finish(s), ST_UNIMPLEMENTED);
	cr_assert_eq(wait_seen(1, &last), 1);
	cr_assert_str_eq(last.method, "(unknown)");
	cr_assert_eq(last.code, ST_UNIMPLEMENTED);
}

Test(bidi, many_concurrent_streams)
{
	rpc_stream_t *s[20];
	char h[16];

	for (int i = 0; i < 20; i++) {
		s[i] = rpc_stream_open(ch, ECHO, 10000);
		cr_assert_not_null(s[i]);
	}
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 20; i++) {
			snprintf(h, sizeof(h), "s%d", i);
			send_req(s[i], h, 1);
			expect(s[i], h, 0);
		}
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(rpc_stream_close_send(s[i]), 0);
		expect(s[i], "end", 3);
		cr_assert_eq(finish(s[i]), ST_OK);
	}
	cr_assert_eq(wait_count(&done_ok, 20), 20);
	cr_assert_eq(wait_seen(20, NULL), 20);
}

/* ---- without the fixture ---- */

static void nop_msg(rpc_call_t *call, void *state, const ProtobufCMessage *m) {}
static void nop(rpc_call_t *call, void *state) {}

Test(bidi_register, needs_its_handlers)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 1};
	reap_errbuf_t eb = {{0}};
	rpc_server_t *s = rpc_server_new(&cfg, &eb);
	rpc_method_t m = {.path = "/x.Y/Z", .kind = RPC_BIDI_STREAMING, .request = DIGEST_DESC,
			  .on_message = nop_msg, .on_half_close = nop};

	cr_assert_eq(rpc_server_add_methods(s, &m, 1), REAP_E_INVALID, "on_sent missing");
	m.on_sent = nop;
	cr_assert_eq(rpc_server_add_methods(s, &m, 1), 0);
	rpc_server_free(s);
}
