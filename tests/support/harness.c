/* harness.c - a real server on loopback over a temporary store, for tests. */
#include "tests/support/harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/digest.h"

const auth_key_t *th_key(void)
{
	static const auth_key_t key = {.secret = "reap test key: never use it elsewhere",
				       .len = 32, .signing = true};
	return &key;
}

char *th_token(auth_role_t role, const char *subject, const char *const *instances,
	       size_t n_instances, int64_t ttl_s)
{
	reap_errbuf_t eb = {{0}};
	auth_claims_t c = {.role = role};
	char *tok = NULL;

	snprintf(c.subject, sizeof(c.subject), "%s", subject);
	c.issued_at = (int64_t)time(NULL);
	c.expires = c.issued_at + ttl_s;
	if (instances == NULL) {
		c.n_instances = 1;
	} else {
		cr_assert_leq(n_instances, AUTH_MAX_PREFIXES);
		c.n_instances = n_instances;
		for (size_t i = 0; i < n_instances; i++)
			snprintf(c.instances[i], sizeof(c.instances[i]), "%s", instances[i]);
	}
	cr_assert_eq(auth_token_issue(th_key(), &c, &tok, &eb), 0, "token: %s", eb.msg);
	return tok;
}

static void start_server(th_server_t *t)
{
	reap_errbuf_t eb = {{0}};
	const th_opts_t *o = &t->opts;
	auth_config_t acfg = {.anonymous = o->no_anonymous ? AUTH_ANON_NONE : AUTH_ANON_LOOPBACK,
			      .anonymous_role = o->anon_role};
	cas_store_config_t scfg = {.path = t->dir, .capacity_bytes = o->capacity,
				   .inline_max = o->inline_max ? o->inline_max : 64 << 10,
				   .no_sync = true};
	rpc_server_config_t rcfg = {.listen = "127.0.0.1:0", .threads = 2,
				    .max_recv_bytes = o->max_msg ? o->max_msg : 4 << 20,
				    .max_send_bytes = o->max_msg ? o->max_msg : 4 << 20};
	char target[64];

	t->store = cas_store_open(&scfg, &eb);
	cr_assert_not_null(t->store, "store: %s", eb.msg);
	if (o->auth != NULL)
		acfg = *o->auth;
	acfg.keys = th_key();
	acfg.n_keys = 1;
	t->policy = auth_policy_new(&acfg, &eb);
	cr_assert_not_null(t->policy, "policy: %s", eb.msg);
	if (o->instances != NULL) {
		t->instances = reap_instances_new((const char **)o->instances, o->n_instances, &eb);
		cr_assert_not_null(t->instances, "instances: %s", eb.msg);
	}
	t->server = rpc_server_new(&rcfg, &eb);
	cr_assert_not_null(t->server, "server: %s", eb.msg);
	cas_service_config_t ccfg = {.instances = t->instances,
				     .max_recv_bytes = rpc_server_max_recv(t->server),
				     .max_send_bytes = rpc_server_max_send(t->server),
				     .read_chunk_bytes = 64 << 10,
				     .execution = o->scheduler};
	t->cas = cas_service_new(t->store, t->policy, &ccfg);
	size_t n;
	const rpc_method_t *ms = cas_service_methods(t->cas, &n);
	cr_assert_eq(rpc_server_add_methods(t->server, ms, n), 0);
	if (o->scheduler) {
		sched_config_t sc = {.lease_ttl_ms = o->lease_ttl_ms, .max_attempts = o->max_attempts};
		t->sched = sched_new(t->cas, &sc, &eb);
		cr_assert_not_null(t->sched, "scheduler: %s", eb.msg);
		ms = sched_methods(t->sched, &n);
		cr_assert_eq(rpc_server_add_methods(t->server, ms, n), 0);
	}
	cr_assert_eq(rpc_server_start(t->server, &t->port, &eb), 0, "start: %s", eb.msg);
	snprintf(target, sizeof(target), "127.0.0.1:%d", t->port);
	t->ch = rpc_channel_new(target, 0);
	cr_assert_not_null(t->ch);
}

static void stop_server(th_server_t *t)
{
	rpc_channel_free(t->ch);
	rpc_server_shutdown(t->server, 2000);
	rpc_server_free(t->server);
	sched_free(t->sched);
	t->sched = NULL;
	cas_service_free(t->cas);
	cas_store_close(t->store);
	auth_policy_free(t->policy);
	reap_instances_free(t->instances);
	t->ch = NULL;
	t->server = NULL;
	t->cas = NULL;
	t->store = NULL;
	t->policy = NULL;
	t->instances = NULL;
}

void th_start(th_server_t *t, const th_opts_t *opts)
{
	/* criterion runs a suite's .init and then a test's own: the last one wins */
	if (t->server != NULL)
		th_stop(t);
	memset(t, 0, sizeof(*t));
	if (opts != NULL)
		t->opts = *opts;
	strcpy(t->dir, "/tmp/reap-test-XXXXXX");
	cr_assert_not_null(mkdtemp(t->dir));
	start_server(t);
}

void th_restart(th_server_t *t)
{
	stop_server(t);
	start_server(t);
}

void th_stop(th_server_t *t)
{
	char cmd[128];
	stop_server(t);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	cr_assert_eq(system(cmd), 0);
}

void th_fill(void *buf, size_t len, unsigned seed)
{
	uint64_t x = 0x9e3779b97f4a7c15ull ^ seed;
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
}

char *th_read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	if (f != NULL) {
		n = fread(buf, 1, cap - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

size_t th_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

size_t th_put_bytes(uint8_t *p, uint32_t field, const void *data, size_t len)
{
	size_t n = th_put_varint(p, (uint64_t)field << 3 | 2);
	n += th_put_varint(p + n, len);
	memcpy(p + n, data, len);
	return n + len;
}

void th_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fputs(text, f) >= 0 && fclose(f) == 0, true, "%s", path);
}

void th_digest(const void *data, size_t len, char hex[65])
{
	reap_digest_t d;
	cr_assert_eq(reap_digest_of(data, len, &d), 0);
	reap_digest_hex(&d, hex);
}

int th_unary(th_server_t *t, const char *method, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, rpc_status_t *st)
{
	rpc_status_t local = {0};
	ProtobufCMessage *r = NULL;
	rpc_status_t *s = st != NULL ? st : &local;
	cr_assert_eq(rpc_unary(t->ch, method, req, desc, &r, s, 10000), 0);
	if (resp != NULL)
		*resp = r;
	else if (r != NULL)
		protobuf_c_message_free_unpacked(r, NULL);
	int code = s->code;
	if (st == NULL)
		rpc_status_destroy(&local);
	return code;
}

int th_batch_put(th_server_t *t, const char *instance, const void *data, size_t len)
{
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__INIT;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request r =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_REQUEST__REQUEST__INIT;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *rp = &r;
	Build__Bazel__Remote__Execution__V2__Digest d = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *resp = NULL;
	char hex[65];

	th_digest(data, len, hex);
	d.hash = hex;
	d.size_bytes = (int64_t)len;
	r.digest = &d;
	r.data.data = (uint8_t *)data;
	r.data.len = len;
	req.instance_name = (char *)instance;
	req.n_requests = 1;
	req.requests = &rp;
	int code = th_unary(t, "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
			    &req.base, &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
			    (ProtobufCMessage **)&resp, NULL);
	if (code == 0) {
		cr_assert_eq(resp->n_responses, 1);
		code = resp->responses[0]->status ? resp->responses[0]->status->code : 0;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	return code;
}

int th_bs_write(th_server_t *t, const char *resource, const void *data, size_t len,
		size_t chunk, long long *committed)
{
	rpc_stream_t *s = rpc_stream_open(t->ch, "/google.bytestream.ByteStream/Write", 20000);
	rpc_status_t st = {0};
	size_t off = 0;
	cr_assert_not_null(s);
	do {
		Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
		size_t n = len - off < chunk ? len - off : chunk;
		w.resource_name = (char *)(off == 0 ? resource : "");
		w.write_offset = (int64_t)off;
		w.data.data = (uint8_t *)data + off;
		w.data.len = n;
		w.finish_write = off + n == len;
		if (rpc_stream_send(s, &w.base) != 0)
			break; /* the server ended the call early */
		off += n;
	} while (off < len);
	rpc_stream_close_send(s);
	Google__Bytestream__WriteResponse *wr = NULL;
	if (rpc_stream_recv(s, &google__bytestream__write_response__descriptor,
			    (ProtobufCMessage **)&wr) == 1) {
		if (committed != NULL)
			*committed = wr->committed_size;
		protobuf_c_message_free_unpacked(&wr->base, NULL);
	}
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

int th_bs_read(th_server_t *t, const char *resource, long long offset, long long limit,
	       void **out, size_t *len)
{
	Google__Bytestream__ReadRequest r = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	rpc_stream_t *s = rpc_stream_open(t->ch, "/google.bytestream.ByteStream/Read", 20000);
	rpc_status_t st = {0};
	Google__Bytestream__ReadResponse *m = NULL;
	uint8_t *buf = NULL;
	size_t n = 0;

	cr_assert_not_null(s);
	r.resource_name = (char *)resource;
	r.read_offset = offset;
	r.read_limit = limit;
	cr_assert_eq(rpc_stream_send(s, &r.base), 0);
	rpc_stream_close_send(s);
	while (rpc_stream_recv(s, &google__bytestream__read_response__descriptor,
			       (ProtobufCMessage **)&m) == 1) {
		buf = realloc(buf, n + m->data.len + 1);
		memcpy(buf + n, m->data.data, m->data.len);
		n += m->data.len;
		protobuf_c_message_free_unpacked(&m->base, NULL);
	}
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	if (out != NULL)
		*out = buf;
	else
		free(buf);
	if (len != NULL)
		*len = n;
	return code;
}
