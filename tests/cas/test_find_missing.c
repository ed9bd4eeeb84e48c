/*
 * test_find_missing.c - FindMissingBlobs through a real server, with what a
 * client's protobuf library packs and what it never would (raw bytes): many
 * digests answered in order, digests of size 0, the last of repeated
 * fields, unknown fields, and malformed messages and digests, each refused
 * with INVALID_ARGUMENT while the server keeps serving.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/harness.h"

#define FM "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
#define DESC(name) build__bazel__remote__execution__v2__##name##__descriptor
#define EMPTY_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static th_server_t t;

static void start(void) { th_start(&t, NULL); }
static void stop(void) { th_stop(&t); }

TestSuite(find_missing, .init = start, .fini = stop, .timeout = 60);

/* Send bytes as the request; the status code, and the response (caller frees) when OK. */
static int fm_raw(const uint8_t *p, size_t len, RE(FindMissingBlobsResponse) **resp)
{
	rpc_stream_t *s = rpc_stream_open(t.ch, FM, 10000);
	rpc_status_t st = {0};
	*resp = NULL;
	cr_assert_not_null(s);
	cr_assert_eq(rpc_stream_send_raw(s, p, len), 0);
	rpc_stream_close_send(s);
	(void)rpc_stream_recv(s, &DESC(find_missing_blobs_response), (ProtobufCMessage **)resp);
	rpc_stream_finish(s, &st);
	int code = st.code;
	if (code == 0)
		cr_assert_not_null(*resp);
	else
		cr_assert_null(*resp);
	if (code == GRPC_STATUS_INVALID_ARGUMENT)
		cr_log_info("refused: %s", st.msg);
	rpc_status_destroy(&st);
	return code;
}

static void assert_serving(void)
{
	static const uint8_t req[] = {0x12, 0x42, 0x0a, 0x40}; /* Digest {hash: 64 bytes} */
	uint8_t m[128];
	RE(FindMissingBlobsResponse) *resp;
	memcpy(m, req, sizeof(req));
	memcpy(m + sizeof(req), EMPTY_HEX, 64);
	cr_assert_eq(fm_raw(m, sizeof(req) + 64, &resp), 0, "server stopped serving");
	cr_assert_eq(resp->n_missing_blob_digests, 0, "the empty blob always exists");
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

Test(find_missing, many_digests_answered_in_order)
{
	enum { N = 3000, STORED = 40 };
	static char hexes[N][65];
	static RE(Digest) ds[N], *dps[N];
	static char blob[STORED][700];
	RE(FindMissingBlobsRequest) req = RE_INIT(FIND_MISSING_BLOBS_REQUEST);
	RE(FindMissingBlobsResponse) *resp = NULL;
	size_t expect[N], ne = 0;

	for (int i = 0; i < STORED; i++) {
		th_fill(blob[i], 10 + 17 * (size_t)i, (unsigned)i + 100);
		cr_assert_eq(th_batch_put(&t, "", blob[i], 10 + 17 * (size_t)i), 0);
	}
	for (size_t i = 0; i < N; i++) {
		ds[i] = (RE(Digest))RE_INIT(DIGEST);
		dps[i] = &ds[i];
		if (i % 75 < STORED && i % 3 == 0) { /* stored: present */
			size_t b = i % 75, len = 10 + 17 * b;
			th_digest(blob[b], len, hexes[i]);
			ds[i].size_bytes = (int64_t)len;
		} else { /* absent: random hashes, sizes of every varint length, 0 too */
			char junk[16];
			snprintf(junk, sizeof(junk), "absent-%zu", i);
			th_digest(junk, strlen(junk), hexes[i]);
			ds[i].size_bytes = i % 7 == 0 ? 0 : (int64_t)1 << (i % 62);
			expect[ne++] = i;
		}
		ds[i].hash = hexes[i];
	}
	req.blob_digests = dps;
	req.n_blob_digests = N;
	cr_assert_eq(th_unary(&t, FM, &req.base, &DESC(find_missing_blobs_response),
			      (ProtobufCMessage **)&resp, NULL), 0);
	cr_assert_eq(resp->n_missing_blob_digests, ne);
	for (size_t k = 0; k < ne; k++) {
		const RE(Digest) *got = resp->missing_blob_digests[k], *want = &ds[expect[k]];
		cr_assert_str_eq(got->hash, want->hash, "entry %zu", k);
		cr_assert_eq(got->size_bytes, want->size_bytes, "entry %zu", k);
	}
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

Test(find_missing, last_field_wins_and_unknown_fields_skipped)
{
	uint8_t m[1024], dg[256];
	size_t n = 0, nd = 0;
	char absent[65];
	RE(FindMissingBlobsResponse) *resp;

	th_digest("nothing here", 12, absent);
	n += th_put_bytes(m + n, 1, "no/such/instance", 16); /* replaced by the next one */
	n += th_put_bytes(m + n, 1, "", 0);
	m[n++] = 3 << 3 | 0; /* digest_function MD5 ... */
	m[n++] = 2;
	m[n++] = 3 << 3 | 0; /* ... then SHA256: the last wins */
	m[n++] = 1;
	m[n++] = 15 << 3 | 0; /* unknown varint */
	n += th_put_varint(m + n, UINT64_MAX);
	n += th_put_varint(m + n, 16 << 3 | 5); /* unknown fixed32 (a two-byte tag) */
	memset(m + n, 0xff, 4);
	n += 4;
	/* a Digest with a first hash replaced, an unknown fixed64 and two sizes */
	nd += th_put_bytes(dg + nd, 1, EMPTY_HEX, 64);
	nd += th_put_bytes(dg + nd, 1, absent, 64);
	dg[nd++] = 9 << 3 | 1;
	memset(dg + nd, 0, 8);
	nd += 8;
	dg[nd++] = 2 << 3 | 0;
	dg[nd++] = 5;
	dg[nd++] = 2 << 3 | 0;
	dg[nd++] = 12;
	n += th_put_bytes(m + n, 2, dg, nd);
	n += th_put_bytes(m + n, 20, "ignored", 7); /* unknown length-delimited */
	cr_assert_eq(fm_raw(m, n, &resp), 0);
	cr_assert_eq(resp->n_missing_blob_digests, 1);
	cr_assert_str_eq(resp->missing_blob_digests[0]->hash, absent);
	cr_assert_eq(resp->missing_blob_digests[0]->size_bytes, 12);
	protobuf_c_message_free_unpacked(&resp->base, NULL);

	/* an empty request is an empty answer */
	cr_assert_eq(fm_raw(m, 0, &resp), 0);
	cr_assert_eq(resp->n_missing_blob_digests, 0);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
}

Test(find_missing, malformed_requests_refused)
{
	uint8_t dg[128];
	size_t nd = th_put_bytes(dg, 1, EMPTY_HEX, 64);
	struct {
		const char *what;
		uint8_t b[160];
		size_t n;
	} bad[] = {
		{"length past the end", {0x12, 0x05, 0x0a}, 3},
		{"Digest list as a varint", {0x10, 0x01}, 2},
		{"instance name as a varint", {0x08, 0x01}, 2},
		{"digest function as bytes", {0x1a, 0x01, 0x01}, 3},
		{"a group", {0x0b}, 1},
		{"wire type 7", {0x0f}, 1},
		{"an 11-byte varint",
		 {0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 12},
		{"a tag cut short", {0x80}, 1},
		{"hash as a varint inside a Digest", {0x12, 0x02, 0x08, 0x01}, 4},
		{"size as bytes inside a Digest", {0x12, 0x03, 0x12, 0x01, 0x00}, 5},
		{"a Digest field past its Digest", {0x12, 0x02, 0x0a, 0x05, 0x00, 0x00, 0x00}, 7},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		RE(FindMissingBlobsResponse) *resp;
		cr_assert_eq(fm_raw(bad[i].b, bad[i].n, &resp), GRPC_STATUS_INVALID_ARGUMENT, "%s",
			     bad[i].what);
	}

	/* well-formed, but the digests or the instance are not: refused too */
	uint8_t m[512];
	size_t n;
	RE(FindMissingBlobsResponse) *resp;
	uint8_t short_hash[80];
	size_t ns = th_put_bytes(short_hash, 1, EMPTY_HEX, 63);
	n = th_put_bytes(m, 2, short_hash, ns);
	cr_assert_eq(fm_raw(m, n, &resp), GRPC_STATUS_INVALID_ARGUMENT);
	n = th_put_bytes(m, 2, dg, nd); /* the same Digest, whole: fine */
	cr_assert_eq(fm_raw(m, n, &resp), 0);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	uint8_t upper[80];
	size_t nu = th_put_bytes(upper, 1,
				 "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", 64);
	n = th_put_bytes(m, 2, upper, nu);
	cr_assert_eq(fm_raw(m, n, &resp), GRPC_STATUS_INVALID_ARGUMENT);
	uint8_t neg[80];
	size_t nn = th_put_bytes(neg, 1, EMPTY_HEX, 64);
	neg[nn++] = 2 << 3 | 0;
	nn += th_put_varint(neg + nn, (uint64_t)-1);
	n = th_put_bytes(m, 2, neg, nn);
	cr_assert_eq(fm_raw(m, n, &resp), GRPC_STATUS_INVALID_ARGUMENT);
	char longname[300];
	memset(longname, 'a', sizeof(longname));
	n = th_put_bytes(m, 1, longname, sizeof(longname));
	cr_assert_eq(fm_raw(m, n, &resp), GRPC_STATUS_INVALID_ARGUMENT);
	assert_serving();
}
