/*
 * test_rpc.c - the rpc module end to end: a real server on 127.0.0.1 (port
 * 0) with test methods built from existing messages, driven by the module's
 * own blocking client.
 *
 * Methods:
 *   /reap.test.T/Echo    unary Digest -> Digest; the hash selects behaviour
 *                        (sleep, echo a header or the peer, error status,
 *                        finish twice, issue nothing, meet another call)
 *   /reap.test.T/Detail  unary, fails with a PreconditionFailure detail
 *   /reap.test.T/Count   server streaming: ReadRequest.read_limit messages
 *                        (-1: until cancelled)
 *   /reap.test.T/Sum     client streaming: sums WriteRequest.data sizes;
 *                        resource_name "reject" ends the call early
 * Deferred calls are in test_rpc_defer.c, servers and clients without this
 * fixture in test_rpc_lifecycle.c.
 * Every on_done is counted (ok / failed) and handler state that holds heap
 * memory is counted live, so tests can check that cancelled calls end.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "rpc/rpc.h"

typedef Build__Bazel__Remote__Execution__V2__Digest digest_t;
#define DIGEST_INIT BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT
#define DIGEST_DESC (&build__bazel__remote__execution__v2__digest__descriptor)

/* grpc_status_code values, so the test needs no gRPC header. */
enum { ST_OK = 0, ST_CANCELLED = 1, ST_INVALID = 3, ST_DEADLINE = 4, ST_NOT_FOUND = 5,
       ST_EXHAUSTED = 8, ST_PRECONDITION = 9, ST_UNIMPLEMENTED = 12, ST_INTERNAL = 13,
       ST_UNAVAILABLE = 14 };

static atomic_int done_ok, done_fail, live_states;
static atomic_int meeting; /* Echo "meet" handlers running */
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
	atomic_fetch_add(ok ? &done_ok : &done_fail, 1);
}

/* ---- Echo ---- */

static void echo_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const digest_t *req = (const digest_t *)m;
	digest_t resp = DIGEST_INIT;
	char buf[256];
	const char *v;
	size_t len;

	resp.size_bytes = req->size_bytes;
	resp.hash = req->hash;
	if (strncmp(req->hash, "sleep:", 6) == 0) {
		sleep_ms(atoi(req->hash + 6));
	} else if (strcmp(req->hash, "hdr") == 0) {
		v = rpc_call_metadata(call, "x-test", &len);
		snprintf(buf, sizeof(buf), "%.*s", v ? (int)len : 4, v ? v : "none");
		resp.hash = buf;
	} else if (strcmp(req->hash, "peer") == 0) {
		snprintf(buf, sizeof(buf), "%s", rpc_call_peer(call));
		resp.hash = buf;
	} else if (strcmp(req->hash, "notfound") == 0) {
		rpc_call_finish(call, &resp.base, REAP_E_NOT_FOUND, "no such thing");
		return;
	} else if (strcmp(req->hash, "nothing") == 0) {
		return;
	} else if (strcmp(req->hash, "twice") == 0) {
		rpc_call_finish(call, &resp.base, REAP_OK, NULL);
		rpc_call_finish(call, NULL, REAP_E_INTERNAL, "second finish");
		return;
	} else if (strcmp(req->hash, "meet") == 0) {
		/* Two of these meet only when the server runs them at once. */
		long end = now_ms() + 3000;

		atomic_fetch_add(&meeting, 1);
		while (atomic_load(&meeting) < 2 && now_ms() < end)
			sleep_ms(1);
		resp.hash = atomic_load(&meeting) >= 2 ? (char *)"met" : (char *)"alone";
	} else if (strcmp(req->hash, "ctx") == 0) {
		resp.hash = rpc_call_ctx(call);
	}
	rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

/* ---- Detail ---- */

/* hash "big": 200 violations, too large for the trailer. */
static void detail_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
	Google__Rpc__PreconditionFailure__Violation v = GOOGLE__RPC__PRECONDITION_FAILURE__VIOLATION__INIT;
	Google__Rpc__PreconditionFailure__Violation *vs[200];
	bool big = strcmp(((const digest_t *)m)->hash, "big") == 0;

	v.type = (char *)"MISSING";
	v.subject = (char *)(big ? "blobs/0123456789012345678901234567890123456789012345678901234567890123/3"
				 : "blobs/abc/3");
	for (int i = 0; i < 200; i++)
		vs[i] = &v;
	pf.n_violations = big ? 200 : 1;
	pf.violations = vs;
	rpc_call_finish_detail(call, REAP_E_PRECONDITION, "missing blobs", &pf.base);
}

/* ---- Count (server streaming) ---- */

typedef struct {
	int64_t limit; /* -1: forever */
	int64_t sent;
} count_state_t;

static void count_next(rpc_call_t *call, count_state_t *st)
{
	static uint8_t data[64];
	Google__Bytestream__ReadResponse r = GOOGLE__BYTESTREAM__READ_RESPONSE__INIT;

	if (st->limit >= 0 && st->sent >= st->limit) {
		rpc_call_finish(call, NULL, REAP_OK, NULL);
		return;
	}
	r.data.data = data;
	r.data.len = sizeof(data);
	rpc_call_send(call, &r.base);
}

static void count_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	count_state_t *st = state;

	st->limit = ((const Google__Bytestream__ReadRequest *)m)->read_limit;
	count_next(call, st);
}

static void count_sent(rpc_call_t *call, void *state)
{
	count_state_t *st = state;

	st->sent++;
	count_next(call, st);
}

/* ---- Sum (client streaming) ---- */

typedef struct {
	int64_t sum;
	char *owned; /* heap memory only on_done releases */
} sum_state_t;

static void sum_message(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Google__Bytestream__WriteRequest *req = (const Google__Bytestream__WriteRequest *)m;
	sum_state_t *st = state;

	if (st->owned == NULL) {
		st->owned = strdup(req->resource_name);
		atomic_fetch_add(&live_states, 1);
	}
	if (strcmp(req->resource_name, "reject") == 0) {
		rpc_call_finish(call, NULL, REAP_E_INVALID, "rejected");
		return;
	}
	st->sum += (int64_t)req->data.len;
	rpc_call_recv(call);
}

static void sum_half_close(rpc_call_t *call, void *state)
{
	sum_state_t *st = state;
	Google__Bytestream__WriteResponse r = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;

	r.committed_size = st->sum;
	rpc_call_finish(call, &r.base, REAP_OK, NULL);
}

static void sum_done(rpc_call_t *call, void *state, bool ok)
{
	sum_state_t *st = state;

	if (st->owned != NULL) {
		free(st->owned);
		atomic_fetch_sub(&live_states, 1);
	}
	on_done_count(call, state, ok);
}

static const rpc_method_t methods[] = {
	{.path = "/reap.test.T/Echo",
	 .kind = RPC_UNARY,
	 .request = DIGEST_DESC,
	 .ctx = (void *)"the-ctx",
	 .on_request = echo_request,
	 .on_done = on_done_count},
	{.path = "/reap.test.T/Detail",
	 .kind = RPC_UNARY,
	 .request = DIGEST_DESC,
	 .on_request = detail_request,
	 .on_done = on_done_count},
	{.path = "/reap.test.T/Count",
	 .kind = RPC_SERVER_STREAMING,
	 .request = &google__bytestream__read_request__descriptor,
	 .state_size = sizeof(count_state_t),
	 .on_request = count_request,
	 .on_sent = count_sent,
	 .on_done = on_done_count},
	{.path = "/reap.test.T/Sum",
	 .kind = RPC_CLIENT_STREAMING,
	 .request = &google__bytestream__write_request__descriptor,
	 .state_size = sizeof(sum_state_t),
	 .on_message = sum_message,
	 .on_half_close = sum_half_close,
	 .on_done = sum_done},
};

static void start_server(size_t max_recv, size_t max_send)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0",
				   .threads = 2,
				   .max_recv_bytes = max_recv,
				   .max_send_bytes = max_send};
	reap_errbuf_t eb = {{0}};
	char target[64];

	srv = rpc_server_new(&cfg, &eb);
	cr_assert_not_null(srv, "%s", eb.msg);
	cr_assert_eq(rpc_server_add_methods(srv, methods, sizeof(methods) / sizeof(methods[0])), 0);
	cr_assert_eq(rpc_server_start(srv, &port, &eb), 0, "%s", eb.msg);
	cr_assert_gt(port, 0);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	ch = rpc_channel_new(target, 0);
	cr_assert_not_null(ch);
}

static void setup(void)
{
	start_server(0, 0);
}

static void teardown(void)
{
	rpc_channel_free(ch);
	rpc_server_free(srv);
	ch = NULL;
	srv = NULL;
}

TestSuite(rpc, .init = setup, .fini = teardown, .timeout = 60);

/*
 * Unary Echo with hash h: the status code (-1 when the client API itself
 * misbehaved), the response hash or status message into out. Helpers do not
 * assert: they also run on client threads.
 */
static int echo(const char *h, char *out, size_t outlen, int timeout_ms)
{
	digest_t req = DIGEST_INIT;
	ProtobufCMessage *resp = NULL;
	rpc_status_t st;
	int code;

	req.hash = (char *)h;
	req.size_bytes = 42;
	if (rpc_unary(ch, "/reap.test.T/Echo", &req.base, DIGEST_DESC, &resp, &st, timeout_ms) != 0)
		return -1;
	code = st.code;
	if (code == ST_OK) {
		if (resp == NULL || ((digest_t *)resp)->size_bytes != 42)
			code = -1;
		else if (out != NULL)
			snprintf(out, outlen, "%s", ((digest_t *)resp)->hash);
	} else if (resp != NULL) {
		code = -1;
	} else if (out != NULL) {
		snprintf(out, outlen, "%s", st.msg);
	}
	if (resp != NULL)
		protobuf_c_message_free_unpacked(resp, NULL);
	rpc_status_destroy(&st);
	return code;
}

Test(rpc, status_mapping)
{
	int errs[] = {REAP_OK, REAP_E_INVALID, REAP_E_NOT_FOUND, REAP_E_EXISTS, REAP_E_PERM,
		      REAP_E_EXHAUSTED, REAP_E_INTERNAL, REAP_E_PRECONDITION, REAP_E_RANGE,
		      REAP_E_ABORTED, REAP_E_UNAVAILABLE, REAP_E_CANCELLED, REAP_E_UNIMPLEMENTED,
		      REAP_E_DATA_LOSS, REAP_E_DEADLINE, REAP_E_UNAUTHENTICATED};

	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
		cr_assert_eq(rpc_err_from_code(rpc_code_from_err(errs[i])), errs[i], "err %d", errs[i]);
	cr_assert_eq(rpc_code_from_err(REAP_E_INVALID), ST_INVALID);
	cr_assert_eq(rpc_code_from_err(REAP_E_PRECONDITION), ST_PRECONDITION);
	cr_assert_eq(rpc_code_from_err(REAP_E_NOMEM), ST_EXHAUSTED);
	cr_assert_eq(rpc_code_from_err(REAP_E_IO), ST_INTERNAL);
	cr_assert_eq(rpc_code_from_err(REAP_E_EXISTS), 6);
	cr_assert_eq(rpc_code_from_err(-999), 2); /* UNKNOWN */
	cr_assert_eq(rpc_err_from_code(2), REAP_E_INTERNAL);
	cr_assert_eq(rpc_err_from_code(77), REAP_E_INTERNAL);
}

Test(rpc, unary_echo)
{
	char out[256];

	cr_assert_eq(echo("abc", out, sizeof(out), 5000), ST_OK);
	cr_assert_str_eq(out, "abc");
	cr_assert_eq(echo("", out, sizeof(out), 0), ST_OK); /* empty message, no deadline */
	cr_assert_str_eq(out, "");
	cr_assert_eq(echo("ctx", out, sizeof(out), 5000), ST_OK);
	cr_assert_str_eq(out, "the-ctx");
	cr_assert_eq(echo("peer", out, sizeof(out), 5000), ST_OK);
	cr_assert(strncmp(out, "ipv4:127.0.0.1:", 15) == 0, "peer %s", out);
	cr_assert_eq(echo("hdr", out, sizeof(out), 5000), ST_OK);
	cr_assert_str_eq(out, "none");
	cr_assert_eq(rpc_channel_set_header(ch, "x-test", "v1"), 0);
	cr_assert_eq(echo("hdr", out, sizeof(out), 5000), ST_OK);
	cr_assert_str_eq(out, "v1");
	cr_assert_eq(rpc_channel_set_header(ch, "x-test", "v2"), 0); /* replaces */
	cr_assert_eq(echo("hdr", out, sizeof(out), 5000), ST_OK);
	cr_assert_str_eq(out, "v2");
	cr_assert_eq(rpc_channel_set_header(ch, "Bad Key", "v"), REAP_E_INVALID);
	cr_assert_eq(rpc_channel_set_header(ch, "x-ok", "bad\nvalue"), REAP_E_INVALID);
	cr_assert_eq(wait_count(&done_ok, 7, 2000), 7);
	cr_assert_eq(atomic_load(&done_fail), 0);
}

/*
 * Requests large enough to arrive in many slices are decoded in the server
 * thread's arena (flattened, then unpacked); sizes go up and down so the
 * arena grows, is reused and takes extra chunks. Every echo must be the
 * exact request.
 */
Test(rpc, large_requests)
{
	static const size_t sizes[] = {300 << 10, 10, 3 << 20, 64 << 10, (5 << 20) + 7, 1 << 20, 0};

	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t n = sizes[k];
		char *h = malloc(n + 1);
		digest_t req = DIGEST_INIT;
		ProtobufCMessage *resp = NULL;
		rpc_status_t st;

		cr_assert_not_null(h);
		for (size_t i = 0; i < n; i++)
			h[i] = (char)('a' + (i * 7 + k) % 26);
		h[n] = '\0';
		req.hash = h;
		req.size_bytes = 42;
		cr_assert_eq(rpc_unary(ch, "/reap.test.T/Echo", &req.base, DIGEST_DESC, &resp, &st,
				       10000),
			     0);
		cr_assert_eq(st.code, ST_OK, "size %zu: %s", n, st.msg);
		cr_assert_not_null(resp);
		cr_assert_eq(((digest_t *)resp)->size_bytes, 42);
		cr_assert_eq(strlen(((digest_t *)resp)->hash), n, "size %zu", n);
		cr_assert(memcmp(((digest_t *)resp)->hash, h, n) == 0, "size %zu", n);
		protobuf_c_message_free_unpacked(resp, NULL);
		rpc_status_destroy(&st);
		free(h);
	}
}

Test(rpc, error_status)
{
	char out[256];

	cr_assert_eq(echo("notfound", out, sizeof(out), 5000), ST_NOT_FOUND);
	cr_assert_str_eq(out, "no such thing");
	cr_assert_eq(rpc_err_from_code(ST_NOT_FOUND), REAP_E_NOT_FOUND);
	/* A handler's own error status is still a completed call. */
	cr_assert_eq(wait_count(&done_ok, 1, 2000), 1);
}

Test(rpc, error_detail)
{
	digest_t req = DIGEST_INIT;
	ProtobufCMessage *resp = NULL;
	rpc_status_t st;
	Google__Rpc__Status *s;
	Google__Rpc__PreconditionFailure *pf;

	cr_assert_eq(rpc_unary(ch, "/reap.test.T/Detail", &req.base, DIGEST_DESC, &resp, &st, 5000), 0);
	cr_assert_eq(st.code, ST_PRECONDITION);
	cr_assert_str_eq(st.msg, "missing blobs");
	cr_assert_null(resp);
	cr_assert_not_null(st.details);
	s = google__rpc__status__unpack(NULL, st.details_len, st.details);
	cr_assert_not_null(s);
	cr_assert_eq(s->code, ST_PRECONDITION);
	cr_assert_str_eq(s->message, "missing blobs");
	cr_assert_eq(s->n_details, 1);
	cr_assert_str_eq(s->details[0]->type_url,
			 "type.googleapis.com/google.rpc.PreconditionFailure");
	pf = google__rpc__precondition_failure__unpack(NULL, s->details[0]->value.len,
						       s->details[0]->value.data);
	cr_assert_not_null(pf);
	cr_assert_eq(pf->n_violations, 1);
	cr_assert_str_eq(pf->violations[0]->type, "MISSING");
	cr_assert_str_eq(pf->violations[0]->subject, "blobs/abc/3");
	google__rpc__precondition_failure__free_unpacked(pf, NULL);
	google__rpc__status__free_unpacked(s, NULL);
	rpc_status_destroy(&st);
	cr_assert_null(st.details);

	/* Too big for a trailer: code and message only. */
	req.hash = (char *)"big";
	cr_assert_eq(rpc_unary(ch, "/reap.test.T/Detail", &req.base, DIGEST_DESC, NULL, &st, 5000), 0);
	cr_assert_eq(st.code, ST_PRECONDITION);
	cr_assert_str_eq(st.msg, "missing blobs");
	cr_assert_null(st.details);
	rpc_status_destroy(&st);
	/* resp may be NULL: the response is discarded. */
	cr_assert_eq(rpc_unary(ch, "/reap.test.T/Echo", &req.base, DIGEST_DESC, NULL, &st, 5000), 0);
	cr_assert_eq(st.code, ST_OK);
	rpc_status_destroy(&st);
	cr_assert_eq(wait_count(&done_ok, 3, 2000), 3);
}

Test(rpc, handler_contract)
{
	char out[256];

	/* No operation issued: INTERNAL, and the call still ends. */
	cr_assert_eq(echo("nothing", out, sizeof(out), 5000), ST_INTERNAL);
	cr_assert_eq(wait_count(&done_fail, 1, 2000), 1);
	/* Two finishes: the first wins, the second is logged and ignored. */
	cr_assert_eq(echo("twice", out, sizeof(out), 5000), ST_OK);
	cr_assert_str_eq(out, "twice");
	cr_assert_eq(wait_count(&done_ok, 1, 2000), 1);
	cr_assert_eq(echo("still-serving", out, sizeof(out), 5000), ST_OK);
}

Test(rpc, unknown_method)
{
	digest_t req = DIGEST_INIT;
	ProtobufCMessage *resp = NULL;
	rpc_status_t st;
	char out[64];

	cr_assert_eq(rpc_unary(ch, "/reap.test.T/Nope", &req.base, DIGEST_DESC, &resp, &st, 5000), 0);
	cr_assert_eq(st.code, ST_UNIMPLEMENTED);
	rpc_status_destroy(&st);
	cr_assert_eq(rpc_unary(ch, "no-slash", &req.base, DIGEST_DESC, &resp, &st, 5000),
		     REAP_E_INVALID);
	cr_assert_eq(echo("x", out, sizeof(out), 5000), ST_OK);
}

Test(rpc, malformed_request)
{
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
	rpc_stream_t *s;
	rpc_status_t st;
	char out[64];

	for (int i = 0; i < 3; i++) {
		s = rpc_stream_open(ch, "/reap.test.T/Echo", 5000);
		cr_assert_not_null(s);
		cr_assert_eq(rpc_stream_send_raw(s, junk, sizeof(junk)), 0);
		cr_assert_eq(rpc_stream_close_send(s), 0);
		cr_assert_eq(rpc_stream_finish(s, &st), 0);
		cr_assert_eq(st.code, ST_INVALID);
		cr_assert_str_eq(st.msg, "malformed request message");
		rpc_status_destroy(&st);
	}
	/* A client stream with bad bytes mid-way. */
	s = rpc_stream_open(ch, "/reap.test.T/Sum", 5000);
	cr_assert_not_null(s);
	cr_assert_eq(rpc_stream_send_raw(s, junk, sizeof(junk)), 0);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_eq(st.code, ST_INVALID);
	rpc_status_destroy(&st);
	/* No request message at all on a unary method. */
	s = rpc_stream_open(ch, "/reap.test.T/Echo", 5000);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_eq(st.code, ST_INVALID);
	rpc_status_destroy(&st);

	cr_assert_eq(echo("fine", out, sizeof(out), 5000), ST_OK);
	cr_assert_eq(wait_count(&done_fail, 5, 2000), 5);
}

/* Count stream of n messages: how many arrived, -1 on any failure. */
static int count_stream(int64_t n)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	ProtobufCMessage *m;
	rpc_stream_t *s;
	rpc_status_t st;
	int got = 0, r, bad = 0;

	req.read_limit = n;
	s = rpc_stream_open(ch, "/reap.test.T/Count", 10000);
	if (s == NULL)
		return -1;
	bad |= rpc_stream_send(s, &req.base) != 0;
	bad |= rpc_stream_close_send(s) != 0;
	while ((r = rpc_stream_recv(s, &google__bytestream__read_response__descriptor, &m)) == 1) {
		bad |= ((Google__Bytestream__ReadResponse *)m)->data.len != 64;
		protobuf_c_message_free_unpacked(m, NULL);
		got++;
	}
	bad |= r != 0;
	bad |= rpc_stream_finish(s, &st) != 0;
	bad |= st.code != ST_OK;
	rpc_status_destroy(&st);
	return bad ? -1 : got;
}

Test(rpc, server_streaming)
{
	cr_assert_eq(count_stream(100), 100);
	cr_assert_eq(count_stream(0), 0);
	cr_assert_eq(count_stream(1), 1);
	cr_assert_eq(wait_count(&done_ok, 3, 2000), 3);
}

/* Sum stream of n messages of each bytes: committed_size (-1 if none), *code the status (-1: API failure). */
static int64_t sum_stream(const char *name, int n, size_t each, int *code)
{
	Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	rpc_stream_t *s;
	rpc_status_t st;
	uint8_t *buf = calloc(1, each + 1);
	int64_t committed = -1;
	int bad = 0;

	*code = -1;
	req.resource_name = (char *)name;
	req.data.data = buf;
	req.data.len = each;
	s = rpc_stream_open(ch, "/reap.test.T/Sum", 10000);
	if (s == NULL || buf == NULL) {
		free(buf);
		return -1;
	}
	for (int i = 0; i < n; i++)
		bad |= rpc_stream_send(s, &req.base) != 0;
	bad |= rpc_stream_close_send(s) != 0;
	if (rpc_stream_recv(s, &google__bytestream__write_response__descriptor, &m) == 1) {
		committed = ((Google__Bytestream__WriteResponse *)m)->committed_size;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	bad |= rpc_stream_finish(s, &st) != 0;
	*code = bad ? -1 : st.code;
	rpc_status_destroy(&st);
	free(buf);
	return committed;
}

Test(rpc, client_streaming)
{
	int code;

	cr_assert_eq(sum_stream("a", 50, 1000, &code), 50000);
	cr_assert_eq(code, ST_OK);
	cr_assert_eq(sum_stream("b", 1, 0, &code), 0);
	cr_assert_eq(code, ST_OK);
	/* Half-close with no message at all. */
	cr_assert_eq(sum_stream("c", 0, 0, &code), 0);
	cr_assert_eq(code, ST_OK);
	cr_assert_eq(wait_count(&done_ok, 3, 2000), 3);
	cr_assert_eq(wait_count(&live_states, 0, 2000), 0);
}

Test(rpc, early_return)
{
	Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	static uint8_t buf[1024];
	rpc_stream_t *s;
	rpc_status_t st;
	int err = 0, i;

	req.resource_name = (char *)"reject";
	req.data.data = buf;
	req.data.len = sizeof(buf);
	s = rpc_stream_open(ch, "/reap.test.T/Sum", 10000);
	cr_assert_not_null(s);
	for (i = 0; i < 5000 && err == 0; i++) {
		err = rpc_stream_send(s, &req.base);
		if (err == 0)
			sleep_ms(1);
	}
	cr_assert_eq(err, REAP_E_UNAVAILABLE, "sends: %d err %d", i, err);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_eq(st.code, ST_INVALID);
	cr_assert_str_eq(st.msg, "rejected");
	rpc_status_destroy(&st);
	cr_assert_eq(wait_count(&done_ok, 1, 2000), 1);
	cr_assert_eq(wait_count(&live_states, 0, 2000), 0);
}

Test(rpc, deadline)
{
	char out[64];
	long t0 = now_ms();

	cr_assert_eq(echo("sleep:600", out, sizeof(out), 100), ST_DEADLINE);
	cr_assert_lt(now_ms() - t0, 500);
	/* The handler finishes after the deadline: that call failed. */
	cr_assert_eq(wait_count(&done_fail, 1, 3000), 1);
	cr_assert_eq(echo("after", out, sizeof(out), 5000), ST_OK);
}

Test(rpc, cancel_server_stream)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	ProtobufCMessage *m;
	rpc_stream_t *s;

	req.read_limit = -1;
	s = rpc_stream_open(ch, "/reap.test.T/Count", 0);
	cr_assert_not_null(s);
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(rpc_stream_recv(s, &google__bytestream__read_response__descriptor, &m), 1);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	rpc_stream_cancel(s);
	cr_assert_eq(wait_count(&done_fail, 1, 5000), 1);
	cr_assert_eq(atomic_load(&done_ok), 0);
}

Test(rpc, cancel_client_stream)
{
	Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	char out[64];
	rpc_stream_t *s;

	req.resource_name = (char *)"x";
	s = rpc_stream_open(ch, "/reap.test.T/Sum", 0);
	cr_assert_not_null(s);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	cr_assert_eq(wait_count(&live_states, 1, 2000), 1);
	rpc_stream_cancel(s);
	cr_assert_eq(wait_count(&done_fail, 1, 5000), 1);
	cr_assert_eq(atomic_load(&live_states), 0);
	cr_assert_eq(echo("ok", out, sizeof(out), 5000), ST_OK);
}

/* ---- message limits ---- */

Test(rpc_limits, message_limits)
{
	char big[4096], mid[1500], out[64];

	start_server(2048, 1024);
	cr_assert_eq(rpc_server_max_recv(srv), 2048);
	cr_assert_eq(rpc_server_max_send(srv), 1024);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memset(mid, 'b', sizeof(mid) - 1);
	mid[sizeof(mid) - 1] = '\0';
	/* Over the receive limit: gRPC refuses it before the handler. */
	cr_assert_eq(echo(big, out, sizeof(out), 5000), ST_EXHAUSTED);
	/* Accepted, but the echo is over the send limit. */
	cr_assert_eq(echo(mid, out, sizeof(out), 5000), ST_EXHAUSTED);
	cr_assert_str_eq(out, "response message too large");
	cr_assert_eq(wait_count(&done_fail, 1, 2000), 1);
	cr_assert_eq(echo("small", out, sizeof(out), 5000), ST_OK);
	teardown();
}

/* ---- many clients ---- */

static atomic_int thread_failures;

static void *client_thread(void *arg)
{
	long end = now_ms() + 2000;
	int *calls = arg, code;
	char out[64];

	while (now_ms() < end) {
		if (echo("load", out, sizeof(out), 10000) != ST_OK || strcmp(out, "load") != 0)
			atomic_fetch_add(&thread_failures, 1);
		if (sum_stream("load", 5, 100, &code) != 500 || code != ST_OK)
			atomic_fetch_add(&thread_failures, 1);
		if (count_stream(10) != 10)
			atomic_fetch_add(&thread_failures, 1);
		*calls += 3;
	}
	return NULL;
}

Test(rpc, concurrent_clients)
{
	enum { N = 8 };
	pthread_t th[N];
	int calls[N] = {0}, total = 0;

	for (int i = 0; i < N; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, client_thread, &calls[i]), 0);
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		total += calls[i];
	}
	cr_assert_eq(atomic_load(&thread_failures), 0);
	cr_assert_gt(total, 3 * N);
	cr_assert_eq(wait_count(&done_ok, total, 5000), total);
	cr_assert_eq(atomic_load(&done_fail), 0);
	cr_assert_eq(atomic_load(&live_states), 0);
}

static void *meet_thread(void *arg)
{
	char *out = arg;

	if (echo("meet", out, 64, 10000) != ST_OK)
		snprintf(out, 64, "failed");
	return NULL;
}

/*
 * Two calls on one connection run at once: gRPC binds a connection's calls
 * to the first completion queue with a request outstanding, and with a
 * queue per thread, a call that came while another call's handler ran
 * waited for that handler to return (both answered "alone").
 */
Test(rpc, one_connection_calls_run_in_parallel)
{
	pthread_t th[2];
	char out[2][64] = {{0}};

	/* The second call goes out once the first one's handler runs. */
	cr_assert_eq(pthread_create(&th[0], NULL, meet_thread, out[0]), 0);
	cr_assert_eq(wait_count(&meeting, 1, 5000), 1);
	cr_assert_eq(pthread_create(&th[1], NULL, meet_thread, out[1]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	cr_assert_str_eq(out[0], "met");
	cr_assert_str_eq(out[1], "met");
	cr_assert_eq(wait_count(&done_ok, 2, 2000), 2);
}

/* ---- shutdown ---- */

typedef struct {
	int grace_ms;
	long took_ms;
} shutdown_arg_t;

static void *shutdown_thread(void *p)
{
	shutdown_arg_t *a = p;
	long t0 = now_ms();

	rpc_server_shutdown(srv, a->grace_ms);
	a->took_ms = now_ms() - t0;
	return NULL;
}

Test(rpc, shutdown_graceful)
{
	Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	ProtobufCMessage *m = NULL;
	shutdown_arg_t arg = {.grace_ms = 10000};
	static uint8_t buf[100];
	pthread_t th;
	rpc_stream_t *s;
	rpc_status_t st;
	char out[64];

	req.resource_name = (char *)"inflight";
	req.data.data = buf;
	req.data.len = sizeof(buf);
	s = rpc_stream_open(ch, "/reap.test.T/Sum", 10000);
	cr_assert_not_null(s);
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	cr_assert_eq(wait_count(&live_states, 1, 2000), 1);

	cr_assert_eq(pthread_create(&th, NULL, shutdown_thread, &arg), 0);
	sleep_ms(200);
	/* New calls are refused while the old one carries on. */
	cr_assert_neq(echo("late", out, sizeof(out), 2000), ST_OK);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	cr_assert_eq(rpc_stream_close_send(s), 0);
	cr_assert_eq(rpc_stream_recv(s, &google__bytestream__write_response__descriptor, &m), 1);
	cr_assert_eq(((Google__Bytestream__WriteResponse *)m)->committed_size, 500);
	protobuf_c_message_free_unpacked(m, NULL);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_eq(st.code, ST_OK);
	rpc_status_destroy(&st);

	pthread_join(th, NULL);
	cr_assert_lt(arg.took_ms, 5000, "shutdown took %ld ms", arg.took_ms);
	cr_assert_eq(atomic_load(&done_ok), 1);
	cr_assert_eq(atomic_load(&live_states), 0);
	rpc_server_shutdown(srv, 0); /* idempotent */
}

Test(rpc, shutdown_cancels_endless_stream)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	ProtobufCMessage *m;
	rpc_stream_t *s;
	rpc_status_t st;
	long t0;
	int r;

	req.read_limit = -1;
	s = rpc_stream_open(ch, "/reap.test.T/Count", 0);
	cr_assert_not_null(s);
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	cr_assert_eq(rpc_stream_recv(s, &google__bytestream__read_response__descriptor, &m), 1);
	protobuf_c_message_free_unpacked(m, NULL);

	t0 = now_ms();
	rpc_server_shutdown(srv, 300);
	cr_assert_geq(now_ms() - t0, 250);
	cr_assert_lt(now_ms() - t0, 5000);
	cr_assert_eq(atomic_load(&done_fail), 1);

	while ((r = rpc_stream_recv(s, &google__bytestream__read_response__descriptor, &m)) == 1)
		protobuf_c_message_free_unpacked(m, NULL);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_neq(st.code, ST_OK);
	rpc_status_destroy(&st);
}
