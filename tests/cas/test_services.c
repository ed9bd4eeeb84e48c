/*
 * test_services.c - the cache services through a real gRPC server and
 * client: Capabilities, CAS, ByteStream, ActionCache, and every kind of bad
 * input the issue lists, each with its status, and the server still serving.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "tests/support/harness.h"

#define CAS "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define AC "/build.bazel.remote.execution.v2.ActionCache/"
#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
#define DESC(name) build__bazel__remote__execution__v2__##name##__descriptor

static th_server_t t;

static void start_default(void) { th_start(&t, NULL); }
static void start_writers(void)
{
	th_opts_t o = {.anon_role = AUTH_ROLE_WRITER};
	th_start(&t, &o);
}
static void stop(void) { th_stop(&t); }

static RE(Digest) mkdigest(char hex[65], const void *data, size_t len)
{
	RE(Digest) d = RE_INIT(DIGEST);
	th_digest(data, len, hex);
	d.hash = hex;
	d.size_bytes = (int64_t)len;
	return d;
}

/* FindMissingBlobs of one digest: the status code; *missing says whether it was reported. */
static int find_one(const char *instance, const char *hash, long long size, bool *missing)
{
	RE(FindMissingBlobsRequest) req = RE_INIT(FIND_MISSING_BLOBS_REQUEST);
	RE(Digest) d = RE_INIT(DIGEST), *dp = &d;
	RE(FindMissingBlobsResponse) *resp = NULL;
	d.hash = (char *)hash;
	d.size_bytes = size;
	req.instance_name = (char *)instance;
	req.n_blob_digests = 1;
	req.blob_digests = &dp;
	int code = th_unary(&t, CAS "FindMissingBlobs", &req.base, &DESC(find_missing_blobs_response),
			    (ProtobufCMessage **)&resp, NULL);
	if (code == 0) {
		*missing = resp->n_missing_blob_digests == 1;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	return code;
}

static void assert_serving(void)
{
	bool missing;
	cr_assert_eq(find_one("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0,
			      &missing), 0, "server stopped serving");
	cr_assert_not(missing, "the empty blob always exists");
}

TestSuite(capabilities, .init = start_default, .fini = stop);

static RE(ServerCapabilities) *get_caps(const char *instance, int *code)
{
	RE(GetCapabilitiesRequest) req = RE_INIT(GET_CAPABILITIES_REQUEST);
	RE(ServerCapabilities) *caps = NULL;
	req.instance_name = (char *)instance;
	*code = th_unary(&t, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities", &req.base,
			 &DESC(server_capabilities), (ProtobufCMessage **)&caps, NULL);
	return caps;
}

Test(capabilities, advertises_cache)
{
	int code;
	RE(ServerCapabilities) *caps = get_caps("", &code);
	cr_assert_eq(code, 0);
	RE(CacheCapabilities) *c = caps->cache_capabilities;
	cr_assert_not_null(c);
	cr_assert_eq(c->n_digest_functions, 1);
	cr_assert_eq(c->digest_functions[0], BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256);
	cr_assert_gt(c->max_batch_total_size_bytes, 0);
	cr_assert_lt((size_t)c->max_batch_total_size_bytes, rpc_server_max_recv(t.server));
	cr_assert_not(c->action_cache_update_capabilities->update_enabled,
		      "nobody may write the AC by default");
	cr_assert_eq(caps->low_api_version->major, 2);
	cr_assert_eq(caps->high_api_version->minor, 3);
	cr_assert_eq(c->supported_compressors[0], BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD);
	cr_assert_null(caps->execution_capabilities, "no scheduler here: no execution advertised");
	protobuf_c_message_free_unpacked(&caps->base, NULL);
}

Test(capabilities, bad_instance)
{
	int code;
	cr_assert_null(get_caps("a/blobs/b", &code));
	cr_assert_eq(code, GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_null(get_caps("a//b", &code));
	cr_assert_eq(code, GRPC_STATUS_INVALID_ARGUMENT);
	assert_serving();
}

Test(capabilities, update_enabled_for_writers, .init = start_writers)
{
	int code;
	RE(ServerCapabilities) *caps = get_caps("main", &code);
	cr_assert_eq(code, 0);
	cr_assert(caps->cache_capabilities->action_cache_update_capabilities->update_enabled);
	protobuf_c_message_free_unpacked(&caps->base, NULL);
}

static void start_instances(void)
{
	static const char *const names[] = {"", "main", "team/*"};
	th_opts_t o = {.instances = names, .n_instances = 3};
	th_start(&t, &o);
}

Test(capabilities, unknown_instance, .init = start_instances)
{
	int code;
	RE(ServerCapabilities) *caps = get_caps("team/a/b", &code);
	cr_assert_eq(code, 0);
	protobuf_c_message_free_unpacked(&caps->base, NULL);
	cr_assert_null(get_caps("other", &code));
	cr_assert_eq(code, GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_null(get_caps("teams", &code));
	cr_assert_eq(code, GRPC_STATUS_INVALID_ARGUMENT);
	bool missing;
	cr_assert_eq(find_one("other", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0, &missing),
		     GRPC_STATUS_INVALID_ARGUMENT);
}

TestSuite(cas, .init = start_default, .fini = stop);

Test(cas, find_missing_and_upload)
{
	char buf[1000], hex[65];
	bool missing;
	th_fill(buf, sizeof(buf), 1);
	th_digest(buf, sizeof(buf), hex);
	cr_assert_eq(find_one("", hex, sizeof(buf), &missing), 0);
	cr_assert(missing);
	cr_assert_eq(th_batch_put(&t, "", buf, sizeof(buf)), 0);
	cr_assert_eq(find_one("", hex, sizeof(buf), &missing), 0);
	cr_assert_not(missing);
	/* same hash, other size: a different blob */
	cr_assert_eq(find_one("", hex, sizeof(buf) + 1, &missing), 0);
	cr_assert(missing);
}

Test(cas, malformed_digests)
{
	bool missing;
	const char *bad[] = {
		"abc",
		"E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
		"g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
		"",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(find_one("", bad[i], 1, &missing), GRPC_STATUS_INVALID_ARGUMENT, "%s", bad[i]);
	cr_assert_eq(find_one("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", -1, &missing),
		     GRPC_STATUS_INVALID_ARGUMENT);
	assert_serving();
}

Test(cas, unknown_digest_function)
{
	RE(FindMissingBlobsRequest) req = RE_INIT(FIND_MISSING_BLOBS_REQUEST);
	req.digest_function = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__MD5;
	cr_assert_eq(th_unary(&t, CAS "FindMissingBlobs", &req.base, &DESC(find_missing_blobs_response), NULL, NULL),
		     GRPC_STATUS_INVALID_ARGUMENT);
	assert_serving();
}

Test(cas, batch_update_mismatch_not_stored)
{
	RE(BatchUpdateBlobsRequest) req = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST);
	RE(BatchUpdateBlobsRequest__Request) r[3], *rp[3];
	RE(Digest) d[3];
	RE(BatchUpdateBlobsResponse) *resp = NULL;
	char hex[3][65], a[100], b[100], c[100];
	bool missing;

	th_fill(a, sizeof(a), 2);
	th_fill(b, sizeof(b), 3);
	th_fill(c, sizeof(c), 4);
	d[0] = mkdigest(hex[0], a, sizeof(a));
	d[1] = mkdigest(hex[1], b, sizeof(b));
	d[2] = mkdigest(hex[2], c, sizeof(c));
	d[2].size_bytes = 99; /* size mismatch */
	for (int i = 0; i < 3; i++) {
		RE(BatchUpdateBlobsRequest__Request) init = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST__REQUEST);
		r[i] = init;
		r[i].digest = &d[i];
		rp[i] = &r[i];
	}
	r[0].data.data = (uint8_t *)a, r[0].data.len = sizeof(a);
	r[1].data.data = (uint8_t *)a, r[1].data.len = sizeof(a); /* content of a under b's digest */
	r[2].data.data = (uint8_t *)c, r[2].data.len = sizeof(c);
	req.n_requests = 3;
	req.requests = rp;
	cr_assert_eq(th_unary(&t, CAS "BatchUpdateBlobs", &req.base, &DESC(batch_update_blobs_response),
			      (ProtobufCMessage **)&resp, NULL), 0);
	cr_assert_eq(resp->n_responses, 3);
	cr_assert_eq(resp->responses[0]->status->code, 0);
	cr_assert_eq(resp->responses[1]->status->code, GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_eq(resp->responses[2]->status->code, GRPC_STATUS_INVALID_ARGUMENT);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(find_one("", hex[1], sizeof(b), &missing), 0);
	cr_assert(missing, "a blob whose content did not match must not be visible");
	cr_assert_eq(find_one("", hex[2], 99, &missing), 0);
	cr_assert(missing);
	cr_assert_eq(find_one("", hex[0], sizeof(a), &missing), 0);
	cr_assert_not(missing);
}

Test(cas, batch_over_limit_refused)
{
	size_t lim = cas_service_max_batch(t.cas);
	size_t len = lim + 1;
	uint8_t *buf = malloc(len);
	char hex[65];
	bool missing;
	th_fill(buf, len, 5);
	cr_assert_eq(th_batch_put(&t, "", buf, len), GRPC_STATUS_INVALID_ARGUMENT);
	th_digest(buf, len, hex);
	cr_assert_eq(find_one("", hex, (long long)len, &missing), 0);
	cr_assert(missing);
	free(buf);
	/* reads over the limit too */
	RE(BatchReadBlobsRequest) req = RE_INIT(BATCH_READ_BLOBS_REQUEST);
	RE(Digest) d = RE_INIT(DIGEST), *dp = &d;
	d.hash = hex;
	d.size_bytes = (int64_t)len;
	req.n_digests = 1;
	req.digests = &dp;
	cr_assert_eq(th_unary(&t, CAS "BatchReadBlobs", &req.base, &DESC(batch_read_blobs_response), NULL, NULL),
		     GRPC_STATUS_INVALID_ARGUMENT);
	assert_serving();
}

Test(cas, batch_read)
{
	char a[300], hex[2][65], b[10];
	RE(Digest) d[2], *dp[2] = {&d[0], &d[1]};
	RE(BatchReadBlobsRequest) req = RE_INIT(BATCH_READ_BLOBS_REQUEST);
	RE(BatchReadBlobsResponse) *resp = NULL;
	th_fill(a, sizeof(a), 6);
	th_fill(b, sizeof(b), 7);
	cr_assert_eq(th_batch_put(&t, "", a, sizeof(a)), 0);
	d[0] = mkdigest(hex[0], a, sizeof(a));
	d[1] = mkdigest(hex[1], b, sizeof(b));
	req.n_digests = 2;
	req.digests = dp;
	cr_assert_eq(th_unary(&t, CAS "BatchReadBlobs", &req.base, &DESC(batch_read_blobs_response),
			      (ProtobufCMessage **)&resp, NULL), 0);
	cr_assert_eq(resp->n_responses, 2);
	cr_assert_eq(resp->responses[0]->status->code, 0);
	cr_assert_eq(resp->responses[0]->data.len, sizeof(a));
	cr_assert_eq(memcmp(resp->responses[0]->data.data, a, sizeof(a)), 0);
	cr_assert_eq(resp->responses[1]->status->code, GRPC_STATUS_NOT_FOUND);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

Test(cas, zstd_batch_update)
{
	char a[5000], hex[65];
	uint8_t z[6000];
	bool missing;
	memset(a, 'x', sizeof(a));
	size_t zn = ZSTD_compress(z, sizeof(z), a, sizeof(a), 3);
	RE(BatchUpdateBlobsRequest) req = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST);
	RE(BatchUpdateBlobsRequest__Request) r = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST__REQUEST), *rp = &r;
	RE(Digest) d = mkdigest(hex, a, sizeof(a));
	RE(BatchUpdateBlobsResponse) *resp = NULL;
	r.digest = &d;
	r.data.data = z;
	r.data.len = zn;
	r.compressor = BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD;
	req.n_requests = 1;
	req.requests = &rp;
	cr_assert_eq(th_unary(&t, CAS "BatchUpdateBlobs", &req.base, &DESC(batch_update_blobs_response),
			      (ProtobufCMessage **)&resp, NULL), 0);
	cr_assert_eq(resp->responses[0]->status->code, 0);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(find_one("", hex, sizeof(a), &missing), 0);
	cr_assert_not(missing);
	/* a truncated zstd frame is refused, and nothing is stored */
	memset(a, 'y', sizeof(a));
	zn = ZSTD_compress(z, sizeof(z), a, sizeof(a), 3);
	d = mkdigest(hex, a, sizeof(a));
	r.data.len = zn - 3;
	cr_assert_eq(th_unary(&t, CAS "BatchUpdateBlobs", &req.base, &DESC(batch_update_blobs_response),
			      (ProtobufCMessage **)&resp, NULL), 0);
	cr_assert_eq(resp->responses[0]->status->code, GRPC_STATUS_INVALID_ARGUMENT);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert_eq(find_one("", hex, sizeof(a), &missing), 0);
	cr_assert(missing);
}
