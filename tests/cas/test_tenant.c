/*
 * test_tenant.c - tenant-scoped CAS reads: knowing a digest is not proof
 * of having the data. Two anonymous callers using different instance names
 * play tenants A and B (anonymous identities may use every instance, so no
 * tokens are needed). Each test asserts the exact status B gets for A's
 * blob through every read path (FindMissingBlobs, BatchReadBlobs,
 * ByteStream Read and Write, QueryWriteStatus, GetTree, the ActionCache),
 * that B's own upload of the same bytes makes them readable without a
 * second copy, and that grants follow a shared parent prefix, eviction and
 * a restart. The store-level tests use cas/store.h directly.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cas/store_int.h" /* cas_store_set_clock */
#include "tests/support/harness.h"

#define CAS "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define AC "/build.bazel.remote.execution.v2.ActionCache/"
#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
#define DESC(name) build__bazel__remote__execution__v2__##name##__descriptor

#define A "tenant-a"
#define B "tenant-b"
#define BIG (200 << 10) /* above the harness's 64 KiB inline_max: a file blob */
#define CHUNK (64 << 10)

static th_server_t t;
static void start_default(void) { th_start(&t, NULL); }
static void start_writers(void)
{
	th_opts_t o = {.anon_role = AUTH_ROLE_WRITER};
	th_start(&t, &o);
}
static void stop(void) { th_stop(&t); }

/* ---- helpers ---- */

/* FindMissingBlobs of one digest: the status code; *missing whether it was listed. */
static int find_missing(const char *instance, const void *data, size_t len, bool *missing)
{
	RE(FindMissingBlobsRequest) req = RE_INIT(FIND_MISSING_BLOBS_REQUEST);
	RE(Digest) d = RE_INIT(DIGEST), *dp = &d;
	RE(FindMissingBlobsResponse) *resp = NULL;
	char hex[65];

	th_digest(data, len, hex);
	d.hash = hex;
	d.size_bytes = (int64_t)len;
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

static bool missing_in(const char *instance, const void *data, size_t len)
{
	bool missing = false;
	cr_assert_eq(find_missing(instance, data, len, &missing), 0);
	return missing;
}

/* BatchReadBlobs of one blob: its per-blob code (the call's when the call failed). */
static int batch_read(const char *instance, const void *data, size_t len)
{
	RE(BatchReadBlobsRequest) req = RE_INIT(BATCH_READ_BLOBS_REQUEST);
	RE(Digest) d = RE_INIT(DIGEST), *dp = &d;
	RE(BatchReadBlobsResponse) *resp = NULL;
	char hex[65];

	th_digest(data, len, hex);
	d.hash = hex;
	d.size_bytes = (int64_t)len;
	req.instance_name = (char *)instance;
	req.n_digests = 1;
	req.digests = &dp;
	int code = th_unary(&t, CAS "BatchReadBlobs", &req.base, &DESC(batch_read_blobs_response),
			    (ProtobufCMessage **)&resp, NULL);
	if (code != 0)
		return code;
	cr_assert_eq(resp->n_responses, 1);
	code = resp->responses[0]->status != NULL ? resp->responses[0]->status->code : 0;
	if (code == 0) {
		cr_assert_eq(resp->responses[0]->data.len, len);
		if (len > 0)
			cr_assert_eq(memcmp(resp->responses[0]->data.data, data, len), 0);
	} else {
		cr_assert_eq(resp->responses[0]->data.len, 0, "no bytes with an error");
	}
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return code;
}

/* A read ("blobs/...") or, with upload != 0, an upload ("uploads/{n}/blobs/...") name. */
static void resource(char *out, size_t cap, const char *instance, int upload, const void *data,
		     size_t len)
{
	char hex[65];
	th_digest(data, len, hex);
	if (upload)
		snprintf(out, cap, "%s%suploads/6d1f0c2a-0000-4000-8000-%012d/blobs/%s/%zu", instance,
			 instance[0] ? "/" : "", upload, hex, len);
	else
		snprintf(out, cap, "%s%sblobs/%s/%zu", instance, instance[0] ? "/" : "", hex, len);
}

/* ByteStream Read of a whole blob: the status; on OK the bytes are checked. */
static int bs_read(const char *instance, const void *data, size_t len)
{
	char name[256];
	void *got = NULL;
	size_t n = 0;

	resource(name, sizeof(name), instance, 0, data, len);
	int code = th_bs_read(&t, name, 0, 0, &got, &n);
	if (code == 0) {
		cr_assert_eq(n, len);
		cr_assert_eq(memcmp(got, data, len), 0);
	} else {
		cr_assert_eq(n, 0, "no bytes with an error");
	}
	free(got);
	return code;
}

/*
 * ByteStream Write sending only the first sent bytes of a blob of len,
 * finish_write on the last message; the status and *committed.
 */
static int bs_write(const char *instance, int upload, const void *data, size_t len, size_t sent,
		    long long *committed)
{
	char name[256];
	*committed = -2;
	resource(name, sizeof(name), instance, upload, data, len);
	return th_bs_write(&t, name, data, sent, CHUNK, committed);
}

static int query_write_status(const char *instance, int upload, const void *data, size_t len,
			      bool *complete)
{
	Google__Bytestream__QueryWriteStatusRequest req =
		GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_REQUEST__INIT;
	Google__Bytestream__QueryWriteStatusResponse *resp = NULL;
	char name[256];

	resource(name, sizeof(name), instance, upload, data, len);
	req.resource_name = name;
	int code = th_unary(&t, "/google.bytestream.ByteStream/QueryWriteStatus", &req.base,
			    &google__bytestream__query_write_status_response__descriptor,
			    (ProtobufCMessage **)&resp, NULL);
	if (code == 0) {
		*complete = resp->complete;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	return code;
}

static uint64_t blob_count(void)
{
	cas_store_stats_t s;
	cas_store_stats(t.store, &s);
	return s.blobs;
}

/* ---- FindMissingBlobs, BatchReadBlobs ---- */

TestSuite(tenant, .init = start_default, .fini = stop);

Test(tenant, find_missing_and_batch_read)
{
	char x[1000];
	th_fill(x, sizeof(x), 1);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);

	cr_assert_not(missing_in(A, x, sizeof(x)), "the uploader sees its blob");
	cr_assert(missing_in(B, x, sizeof(x)), "another tenant is told to upload it");
	cr_assert(missing_in("", x, sizeof(x)), "the unnamed instance is a tenant too");
	cr_assert_eq(batch_read(A, x, sizeof(x)), GRPC_STATUS_OK);
	cr_assert_eq(batch_read(B, x, sizeof(x)), GRPC_STATUS_NOT_FOUND);
	cr_assert_not(missing_in(B, "", 0), "the empty blob is visible everywhere");
	cr_assert_eq(batch_read(B, "", 0), GRPC_STATUS_OK);
}

Test(tenant, upload_by_b_makes_it_readable_without_a_copy)
{
	char x[1000];
	th_fill(x, sizeof(x), 2);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);
	uint64_t before = blob_count();
	cr_assert_eq(th_batch_put(&t, B, x, sizeof(x)), 0);
	cr_assert_eq(blob_count(), before, "deduplicated: one copy of the bytes");
	cr_assert_not(missing_in(B, x, sizeof(x)));
	cr_assert_eq(batch_read(B, x, sizeof(x)), GRPC_STATUS_OK);
	cr_assert_eq(bs_read(B, x, sizeof(x)), GRPC_STATUS_OK);
}

Test(tenant, wrong_content_grants_nothing)
{
	char x[1000], y[1000];
	th_fill(x, sizeof(x), 3);
	th_fill(y, sizeof(y), 4);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);

	/* B claims x's digest with other bytes: refused, and x stays invisible to B */
	RE(BatchUpdateBlobsRequest) req = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST);
	RE(BatchUpdateBlobsRequest__Request) r = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST__REQUEST), *rp = &r;
	RE(BatchUpdateBlobsResponse) *resp = NULL;
	RE(Digest) d = RE_INIT(DIGEST);
	char hex[65];
	th_digest(x, sizeof(x), hex);
	d.hash = hex;
	d.size_bytes = sizeof(x);
	r.digest = &d;
	r.data.data = (uint8_t *)y;
	r.data.len = sizeof(y);
	req.instance_name = (char *)B;
	req.n_requests = 1;
	req.requests = &rp;
	cr_assert_eq(th_unary(&t, CAS "BatchUpdateBlobs", &req.base, &DESC(batch_update_blobs_response),
			      (ProtobufCMessage **)&resp, NULL), 0);
	cr_assert_eq(resp->responses[0]->status->code, GRPC_STATUS_INVALID_ARGUMENT);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	cr_assert(missing_in(B, x, sizeof(x)));
	cr_assert_eq(batch_read(B, x, sizeof(x)), GRPC_STATUS_NOT_FOUND);
}

/* ---- ByteStream ---- */

Test(tenant, bytestream_read_and_query)
{
	static char y[BIG];
	long long committed;
	bool complete = false;
	th_fill(y, sizeof(y), 5);
	cr_assert_eq(bs_write(A, 1, y, sizeof(y), sizeof(y), &committed), 0);
	cr_assert_eq(committed, (long long)sizeof(y));

	cr_assert_not(missing_in(A, y, sizeof(y)));
	cr_assert(missing_in(B, y, sizeof(y)));
	cr_assert_eq(bs_read(A, y, sizeof(y)), GRPC_STATUS_OK);
	cr_assert_eq(bs_read(B, y, sizeof(y)), GRPC_STATUS_NOT_FOUND);
	cr_assert_eq(batch_read(B, y, sizeof(y)), GRPC_STATUS_NOT_FOUND);
	cr_assert_eq(query_write_status(A, 2, y, sizeof(y), &complete), 0);
	cr_assert(complete);
	cr_assert_eq(query_write_status(B, 2, y, sizeof(y), &complete), GRPC_STATUS_NOT_FOUND,
		     "QueryWriteStatus does not reveal another tenant's blob");
}

Test(tenant, bytestream_write_needs_all_bytes_from_b)
{
	static char y[BIG];
	long long committed;
	th_fill(y, sizeof(y), 6);
	cr_assert_eq(bs_write(A, 1, y, sizeof(y), sizeof(y), &committed), 0);
	uint64_t before = blob_count();

	/* A already has it: the first chunk alone gets the spec's early return */
	cr_assert_eq(bs_write(A, 2, y, sizeof(y), CHUNK, &committed), GRPC_STATUS_OK);
	cr_assert_eq(committed, (long long)sizeof(y));

	/* B does not: the first chunk plus finish_write is a short, wrong upload */
	cr_assert_eq(bs_write(B, 3, y, sizeof(y), CHUNK, &committed), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert(missing_in(B, y, sizeof(y)));
	cr_assert_eq(bs_read(B, y, sizeof(y)), GRPC_STATUS_NOT_FOUND);

	/* all of the bytes: accepted, readable, still one copy */
	cr_assert_eq(bs_write(B, 4, y, sizeof(y), sizeof(y), &committed), GRPC_STATUS_OK);
	cr_assert_eq(committed, (long long)sizeof(y));
	cr_assert_not(missing_in(B, y, sizeof(y)));
	cr_assert_eq(bs_read(B, y, sizeof(y)), GRPC_STATUS_OK);
	cr_assert_eq(blob_count(), before, "deduplicated: one copy of the bytes");
}

Test(tenant, bytestream_write_inline_blob)
{
	char x[3000];
	long long committed;
	th_fill(x, sizeof(x), 7);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);
	cr_assert_eq(bs_write(B, 1, x, sizeof(x), 1000, &committed), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert(missing_in(B, x, sizeof(x)));
	cr_assert_eq(bs_write(B, 2, x, sizeof(x), sizeof(x), &committed), GRPC_STATUS_OK);
	cr_assert_not(missing_in(B, x, sizeof(x)));
}

/* ---- GetTree ---- */

static void pack_dir(RE(Directory) *d, uint8_t **buf, size_t *len, char hex[65])
{
	*len = build__bazel__remote__execution__v2__directory__get_packed_size(d);
	*buf = malloc(*len + 1);
	build__bazel__remote__execution__v2__directory__pack(d, *buf);
	th_digest(*buf, *len, hex);
}

static int get_tree(const char *instance, const char *hex, int64_t size, size_t *ndirs)
{
	RE(GetTreeRequest) req = RE_INIT(GET_TREE_REQUEST);
	RE(Digest) root = RE_INIT(DIGEST);
	rpc_stream_t *s = rpc_stream_open(t.ch, CAS "GetTree", 10000);
	rpc_status_t st = {0};
	RE(GetTreeResponse) *r = NULL;

	cr_assert_not_null(s);
	root.hash = (char *)hex;
	root.size_bytes = size;
	req.instance_name = (char *)instance;
	req.root_digest = &root;
	*ndirs = 0;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	while (rpc_stream_recv(s, &DESC(get_tree_response), (ProtobufCMessage **)&r) == 1) {
		*ndirs += r->n_directories;
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

Test(tenant, get_tree)
{
	RE(Directory) leaf = RE_INIT(DIRECTORY), root = RE_INIT(DIRECTORY);
	RE(FileNode) f = RE_INIT(FILE_NODE), *fp = &f;
	RE(DirectoryNode) dn = RE_INIT(DIRECTORY_NODE), *dnp = &dn;
	RE(Digest) fd = RE_INIT(DIGEST), ld = RE_INIT(DIGEST);
	char fhex[65], lhex[65], rhex[65];
	uint8_t *lbuf, *rbuf;
	size_t llen, rlen, n;

	f.name = (char *)"a.txt";
	th_digest("", 0, fhex);
	fd.hash = fhex;
	f.digest = &fd;
	leaf.n_files = 1;
	leaf.files = &fp;
	pack_dir(&leaf, &lbuf, &llen, lhex);
	ld.hash = lhex;
	ld.size_bytes = (int64_t)llen;
	dn.name = (char *)"sub";
	dn.digest = &ld;
	root.n_directories = 1;
	root.directories = &dnp;
	pack_dir(&root, &rbuf, &rlen, rhex);

	cr_assert_eq(th_batch_put(&t, A, lbuf, llen), 0);
	cr_assert_eq(th_batch_put(&t, A, rbuf, rlen), 0);
	cr_assert_eq(get_tree(A, rhex, (int64_t)rlen, &n), GRPC_STATUS_OK);
	cr_assert_eq(n, 2);
	cr_assert_eq(get_tree(B, rhex, (int64_t)rlen, &n), GRPC_STATUS_NOT_FOUND,
		     "another tenant cannot walk the tree by its root digest");
	cr_assert_eq(n, 0);

	/* B holds the root only: A's subtree is omitted, as a missing one is */
	cr_assert_eq(th_batch_put(&t, B, rbuf, rlen), 0);
	cr_assert_eq(get_tree(B, rhex, (int64_t)rlen, &n), GRPC_STATUS_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(th_batch_put(&t, B, lbuf, llen), 0);
	cr_assert_eq(get_tree(B, rhex, (int64_t)rlen, &n), GRPC_STATUS_OK);
	cr_assert_eq(n, 2);
	free(lbuf);
	free(rbuf);
}

/* ---- shared parent prefixes ---- */

static void start_shared(void)
{
	static const unsigned perms[AUTH_ROLE_COUNT] = {
		[AUTH_ROLE_CLIENT] = AUTH_CAS_READ | AUTH_CAS_WRITE | AUTH_AC_READ | AUTH_EXECUTE,
		[AUTH_ROLE_WRITER] = AUTH_CAS_READ | AUTH_CAS_WRITE | AUTH_AC_READ | AUTH_AC_WRITE,
	};
	static auth_rule_t rules[2];
	static auth_config_t cfg = {.anonymous = AUTH_ANON_LOOPBACK, .rules = rules, .n_rules = 2};
	th_opts_t o = {.auth = &cfg};

	rules[0] = (auth_rule_t){.prefix = ""};
	rules[1] = (auth_rule_t){.prefix = "team", .shared = true};
	memcpy(rules[0].perms, perms, sizeof(perms));
	memcpy(rules[1].perms, perms, sizeof(perms));
	th_start(&t, &o);
}

Test(tenant, shared_parent_is_visible_to_children_only, .init = start_shared)
{
	static char p[BIG];
	char c[500];
	long long committed;
	th_fill(p, sizeof(p), 8);
	th_fill(c, sizeof(c), 9);
	cr_assert_eq(bs_write("team", 1, p, sizeof(p), sizeof(p), &committed), 0);
	cr_assert_eq(th_batch_put(&t, "team/a", c, sizeof(c)), 0);

	/* the parent's blob, in a child */
	cr_assert_not(missing_in("team/a", p, sizeof(p)));
	cr_assert_not(missing_in("team/b/deeper", p, sizeof(p)));
	cr_assert_eq(bs_read("team/a", p, sizeof(p)), GRPC_STATUS_OK);
	cr_assert_eq(batch_read("team/b", p, sizeof(p)), GRPC_STATUS_OK);
	cr_assert_eq(bs_write("team/a", 2, p, sizeof(p), CHUNK, &committed), GRPC_STATUS_OK,
		     "early return: the child can already read it");
	cr_assert_eq(committed, (long long)sizeof(p));
	/* ... but not outside the prefix, nor in a look-alike name */
	cr_assert(missing_in("other", p, sizeof(p)));
	cr_assert(missing_in("teamster", p, sizeof(p)));
	cr_assert_eq(bs_read("teamster", p, sizeof(p)), GRPC_STATUS_NOT_FOUND);

	/* a child's blob is not the parent's, nor a sibling's */
	cr_assert_not(missing_in("team/a", c, sizeof(c)));
	cr_assert(missing_in("team", c, sizeof(c)));
	cr_assert(missing_in("team/b", c, sizeof(c)));
	cr_assert_eq(batch_read("team", c, sizeof(c)), GRPC_STATUS_NOT_FOUND);
	cr_assert_eq(batch_read("team/b", c, sizeof(c)), GRPC_STATUS_NOT_FOUND);
}

Test(tenant, unshared_parent_is_not_visible)
{
	char p[500];
	th_fill(p, sizeof(p), 10);
	cr_assert_eq(th_batch_put(&t, "team", p, sizeof(p)), 0);
	cr_assert(missing_in("team/a", p, sizeof(p)), "the default policy shares nothing");
}

/* ---- ActionCache ---- */

static const char action_hex[] = "2222222222222222222222222222222222222222222222222222222222222222";

static int ac_update(const char *instance, RE(ActionResult) *ar, rpc_status_t *st)
{
	RE(UpdateActionResultRequest) req = RE_INIT(UPDATE_ACTION_RESULT_REQUEST);
	RE(Digest) ad = RE_INIT(DIGEST);
	ad.hash = (char *)action_hex;
	ad.size_bytes = 7;
	req.instance_name = (char *)instance;
	req.action_digest = &ad;
	req.action_result = ar;
	return th_unary(&t, AC "UpdateActionResult", &req.base, &DESC(action_result), NULL, st);
}

static int ac_get(const char *instance)
{
	RE(GetActionResultRequest) req = RE_INIT(GET_ACTION_RESULT_REQUEST);
	RE(Digest) ad = RE_INIT(DIGEST);
	ad.hash = (char *)action_hex;
	ad.size_bytes = 7;
	req.instance_name = (char *)instance;
	req.action_digest = &ad;
	return th_unary(&t, AC "GetActionResult", &req.base, &DESC(action_result), NULL, NULL);
}

/* An ActionResult with one output file of content x (hex is its digest). */
typedef struct one_output {
	RE(ActionResult) ar;
	RE(OutputFile) of, *ofp;
	RE(Digest) d;
	char hex[65];
} one_output_t;

static void one_output(one_output_t *o, const void *x, size_t len)
{
	RE(ActionResult) ar = RE_INIT(ACTION_RESULT);
	RE(OutputFile) of = RE_INIT(OUTPUT_FILE);
	RE(Digest) d = RE_INIT(DIGEST);
	o->ar = ar;
	o->of = of;
	o->d = d;
	th_digest(x, len, o->hex);
	o->d.hash = o->hex;
	o->d.size_bytes = (int64_t)len;
	o->of.path = (char *)"out/x";
	o->of.digest = &o->d;
	o->ofp = &o->of;
	o->ar.n_output_files = 1;
	o->ar.output_files = &o->ofp;
}

Test(tenant, ac_write_needs_visible_blobs, .init = start_writers)
{
	char x[1000], want[128];
	rpc_status_t st = {0};
	one_output_t o;
	th_fill(x, sizeof(x), 11);
	one_output(&o, x, sizeof(x));
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);

	cr_assert_eq(ac_update(B, &o.ar, &st), GRPC_STATUS_FAILED_PRECONDITION,
		     "B cannot name A's blob by digest");
	cr_assert_not_null(st.details);
	Google__Rpc__Status *s = google__rpc__status__unpack(NULL, st.details_len, st.details);
	cr_assert_not_null(s);
	cr_assert_eq(s->n_details, 1);
	Google__Rpc__PreconditionFailure *pf = google__rpc__precondition_failure__unpack(
		NULL, s->details[0]->value.len, s->details[0]->value.data);
	cr_assert_not_null(pf);
	cr_assert_eq(pf->n_violations, 1);
	snprintf(want, sizeof(want), "blobs/%s/%zu", o.hex, sizeof(x));
	cr_assert_str_eq(pf->violations[0]->type, "MISSING");
	cr_assert_str_eq(pf->violations[0]->subject, want);
	google__rpc__precondition_failure__free_unpacked(pf, NULL);
	google__rpc__status__free_unpacked(s, NULL);
	rpc_status_destroy(&st);
	cr_assert_eq(ac_get(B), GRPC_STATUS_NOT_FOUND);

	cr_assert_eq(ac_update(A, &o.ar, NULL), GRPC_STATUS_OK);
	cr_assert_eq(ac_get(A), GRPC_STATUS_OK);
	cr_assert_eq(th_batch_put(&t, B, x, sizeof(x)), 0);
	cr_assert_eq(ac_update(B, &o.ar, NULL), GRPC_STATUS_OK, "after B uploaded it");
	cr_assert_eq(ac_get(B), GRPC_STATUS_OK);
}

Test(tenant, ac_read_needs_visible_blobs, .init = start_writers)
{
	char x[1000];
	one_output_t o;
	th_fill(x, sizeof(x), 12);
	one_output(&o, x, sizeof(x));
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);

	/* an entry in B naming A's blob, as if written before the check existed */
	size_t len = build__bazel__remote__execution__v2__action_result__get_packed_size(&o.ar);
	uint8_t *buf = malloc(len + 1);
	reap_digest_t ad;
	build__bazel__remote__execution__v2__action_result__pack(&o.ar, buf);
	cr_assert_eq(reap_digest_parse(action_hex, 64, 7, &ad, NULL), 0);
	cr_assert_eq(cas_ac_put(t.store, B, &ad, buf, len, NULL), 0);
	cr_assert_eq(cas_ac_put(t.store, A, &ad, buf, len, NULL), 0);
	free(buf);

	cr_assert_eq(ac_get(A), GRPC_STATUS_OK);
	cr_assert_eq(ac_get(B), GRPC_STATUS_NOT_FOUND, "B cannot see the output: a miss");
	RE(ActionResult) *ar = NULL;
	cr_assert_eq(cas_ac_lookup(t.cas, B, &ad, &ar, NULL), REAP_E_NOT_FOUND,
		     "the scheduler's lookup is scoped too");
	cr_assert_eq(th_batch_put(&t, B, x, sizeof(x)), 0);
	cr_assert_eq(ac_get(B), GRPC_STATUS_OK);
	cr_assert_eq(cas_ac_lookup(t.cas, B, &ad, &ar, NULL), REAP_OK);
	build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
}

Test(tenant, ac_write_grants_inline_stdout, .init = start_writers)
{
	RE(ActionResult) ar = RE_INIT(ACTION_RESULT);
	const char *out = "printed by the action\n";
	ar.stdout_raw.data = (uint8_t *)out;
	ar.stdout_raw.len = strlen(out);
	cr_assert_eq(ac_update(A, &ar, NULL), GRPC_STATUS_OK);
	cr_assert_eq(ac_get(A), GRPC_STATUS_OK);
	cr_assert_not(missing_in(A, out, strlen(out)), "spilled stdout is A's");
	cr_assert(missing_in(B, out, strlen(out)));
}

/* ---- the scheduler's check ---- */

Test(tenant, cas_visible_for_the_scheduler)
{
	char x[100], y[100];
	reap_digest_t ds[3];
	bool present[3];
	th_fill(x, sizeof(x), 13);
	th_fill(y, sizeof(y), 14);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);
	cr_assert_eq(th_batch_put(&t, B, y, sizeof(y)), 0);
	cr_assert_eq(reap_digest_of(x, sizeof(x), &ds[0]), 0);
	cr_assert_eq(reap_digest_of(y, sizeof(y), &ds[1]), 0);
	cr_assert_eq(reap_digest_of("", 0, &ds[2]), 0);
	cr_assert_eq(cas_visible(t.cas, B, ds, 3, present, NULL), 0);
	cr_assert_not(present[0]);
	cr_assert(present[1]);
	cr_assert(present[2]);
	cr_assert_eq(cas_visible(t.cas, A, ds, 3, present, NULL), 0);
	cr_assert(present[0]);
	cr_assert_not(present[1]);
}

/* ---- eviction and restart ---- */

Test(tenant, eviction_removes_grants)
{
	static char y[BIG];
	char x[1000];
	long long committed;
	th_fill(x, sizeof(x), 15);
	th_fill(y, sizeof(y), 16);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);
	cr_assert_eq(th_batch_put(&t, B, x, sizeof(x)), 0);
	cr_assert_eq(bs_write(A, 1, y, sizeof(y), sizeof(y), &committed), 0);
	cr_assert_eq(bs_write(B, 2, y, sizeof(y), sizeof(y), &committed), 0);
	cr_assert_not(missing_in(B, x, sizeof(x)));
	cr_assert_not(missing_in(B, y, sizeof(y)));

	cr_assert_eq(cas_store_evict(t.store, 0), 2);
	cr_assert(missing_in(A, x, sizeof(x)));
	cr_assert(missing_in(B, y, sizeof(y)));

	/* A alone uploads them again: B's old grants did not survive */
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);
	cr_assert_eq(bs_write(A, 3, y, sizeof(y), sizeof(y), &committed), 0);
	cr_assert_not(missing_in(A, x, sizeof(x)));
	cr_assert_not(missing_in(A, y, sizeof(y)));
	cr_assert(missing_in(B, x, sizeof(x)));
	cr_assert(missing_in(B, y, sizeof(y)));
	cr_assert_eq(batch_read(B, x, sizeof(x)), GRPC_STATUS_NOT_FOUND);
	cr_assert_eq(bs_read(B, y, sizeof(y)), GRPC_STATUS_NOT_FOUND);
}

Test(tenant, restart_keeps_grants)
{
	static char y[BIG];
	char x[1000];
	long long committed;
	th_fill(x, sizeof(x), 17);
	th_fill(y, sizeof(y), 18);
	cr_assert_eq(th_batch_put(&t, A, x, sizeof(x)), 0);
	cr_assert_eq(bs_write(A, 1, y, sizeof(y), sizeof(y), &committed), 0);
	cr_assert_eq(th_batch_put(&t, B, x, sizeof(x)), 0);

	th_restart(&t);
	cr_assert_not(missing_in(A, x, sizeof(x)));
	cr_assert_not(missing_in(A, y, sizeof(y)));
	cr_assert_not(missing_in(B, x, sizeof(x)));
	cr_assert(missing_in(B, y, sizeof(y)));
	cr_assert_eq(bs_read(A, y, sizeof(y)), GRPC_STATUS_OK);
	cr_assert_eq(bs_read(B, y, sizeof(y)), GRPC_STATUS_NOT_FOUND);
}

/* ---- the store's grant records, directly ---- */

typedef struct store_dir {
	char path[64];
	cas_store_t *st;
} store_dir_t;

static void store_open(store_dir_t *s, bool fresh)
{
	reap_errbuf_t eb = {{0}};
	cas_store_config_t cfg = {.path = s->path, .inline_max = 1024, .no_sync = true};
	if (fresh) {
		strcpy(s->path, "/tmp/reap-tenant-XXXXXX");
		cr_assert_not_null(mkdtemp(s->path));
	}
	s->st = cas_store_open(&cfg, &eb);
	cr_assert_not_null(s->st, "%s", eb.msg);
}

static void store_remove(store_dir_t *s)
{
	char cmd[128];
	cas_store_close(s->st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->path);
	cr_assert_eq(system(cmd), 0);
}

Test(tenant_store, scopes_batches_and_explicit_grants)
{
	enum { N = 700 }; /* more than one internal chunk */
	static char blobs[N][40];
	static reap_digest_t ds[N + 1];
	static bool present[N + 1];
	const char *ab[] = {"a", "b"}, *b_only[] = {"b"}, *c_only[] = {"c"};
	store_dir_t s;

	store_open(&s, true);
	for (int i = 0; i < N; i++) {
		snprintf(blobs[i], sizeof(blobs[i]), "blob number %d", i);
		cr_assert_eq(reap_digest_of(blobs[i], strlen(blobs[i]), &ds[i]), 0);
		/* even ones in "a", multiples of three in "b", the rest stored with no grant */
		const char *scope = i % 2 == 0 ? "a" : i % 3 == 0 ? "b" : NULL;
		cr_assert_eq(cas_store_put(s.st, scope, &ds[i], blobs[i], strlen(blobs[i]), NULL), 0);
	}
	cr_assert_eq(reap_digest_of("", 0, &ds[N]), 0);

	cr_assert_eq(cas_store_visible(s.st, ab, 2, ds, N + 1, present), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(present[i], i % 2 == 0 || i % 3 == 0, "blob %d", i);
	cr_assert(present[N], "the empty blob");
	cr_assert_eq(cas_store_visible(s.st, b_only, 1, ds, N, present), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(present[i], i % 2 != 0 && i % 3 == 0, "blob %d", i);
	cr_assert_eq(cas_store_visible(s.st, NULL, 0, ds, N + 1, present), 0);
	cr_assert_not(present[0]);
	cr_assert(present[N]);

	/* an explicit grant covers stored blobs only */
	reap_digest_t absent;
	cr_assert_eq(reap_digest_of("never stored", 12, &absent), 0);
	cr_assert_eq(cas_store_grant(s.st, "c", ds, 3, NULL), 0);
	cr_assert_eq(cas_store_grant(s.st, "c", &absent, 1, NULL), 0);
	cr_assert_eq(cas_store_visible(s.st, c_only, 1, ds, 4, present), 0);
	cr_assert(present[0] && present[1] && present[2]);
	cr_assert_not(present[3]);
	cr_assert_eq(cas_store_visible(s.st, c_only, 1, &absent, 1, present), 0);
	cr_assert_not(present[0]);
	cr_assert_eq(cas_store_put(s.st, NULL, &absent, "never stored", 12, NULL), 0);
	cr_assert_eq(cas_store_visible(s.st, c_only, 1, &absent, 1, present), 0);
	cr_assert_not(present[0], "a grant of a blob not stored was not kept");

	/* bad scopes */
	char long_scope[300];
	const char *ls[] = {long_scope};
	memset(long_scope, 'x', sizeof(long_scope) - 1);
	long_scope[sizeof(long_scope) - 1] = '\0';
	cr_assert_eq(cas_store_visible(s.st, ls, 1, ds, 1, present), REAP_E_INVALID);
	cr_assert_eq(cas_store_put(s.st, long_scope, &ds[0], blobs[0], strlen(blobs[0]), NULL),
		     REAP_E_INVALID);
	store_remove(&s);
}

Test(tenant_store, recovery_drops_grants_of_lost_blobs)
{
	char big[5000], path[PATH_MAX], hex[65];
	const char *a[] = {"a"};
	reap_digest_t d;
	cas_writer_t *w = NULL;
	bool present;
	store_dir_t s;

	th_fill(big, sizeof(big), 19);
	cr_assert_eq(reap_digest_of(big, sizeof(big), &d), 0);
	store_open(&s, true);
	cr_assert_eq(cas_writer_new(s.st, "a", &d, &w, NULL), 0);
	cr_assert_eq(cas_writer_write(w, big, sizeof(big), NULL), 0);
	cr_assert_eq(cas_writer_commit(w, NULL), 0);
	cas_writer_free(w);
	cr_assert_eq(cas_store_visible(s.st, a, 1, &d, 1, &present), 0);
	cr_assert(present);
	cas_store_close(s.st);

	/* the blob's file is lost while the server is down */
	reap_digest_hex(&d, hex);
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s-%zu", s.path, hex, hex, sizeof(big));
	cr_assert_eq(unlink(path), 0, "%s", path);
	store_open(&s, false);
	cr_assert_eq(cas_store_visible(s.st, a, 1, &d, 1, &present), 0);
	cr_assert_not(present);
	/* stored again for nobody: a's old grant must not have survived */
	cr_assert_eq(cas_store_put(s.st, NULL, &d, big, sizeof(big), NULL), 0);
	cr_assert_eq(cas_store_visible(s.st, a, 1, &d, 1, &present), 0);
	cr_assert_not(present);
	store_remove(&s);
}

static uint64_t fake_now;
static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return fake_now;
}

Test(tenant_store, visible_lookups_refresh_last_use)
{
	char a[2000], b[2000];
	const char *s_a[] = {"a"}, *s_b[] = {"b"};
	reap_digest_t da, db;
	bool present;
	store_dir_t s;

	th_fill(a, sizeof(a), 20);
	th_fill(b, sizeof(b), 21);
	cr_assert_eq(reap_digest_of(a, sizeof(a), &da), 0);
	cr_assert_eq(reap_digest_of(b, sizeof(b), &db), 0);
	store_open(&s, true);
	cas_store_set_clock(s.st, fake_clock, NULL);
	fake_now = 1000;
	cr_assert_eq(cas_store_put(s.st, "a", &da, a, sizeof(a), NULL), 0);
	cr_assert_eq(cas_store_put(s.st, "a", &db, b, sizeof(b), NULL), 0);

	/* a is looked up later: b becomes the least recently used */
	fake_now = 1100;
	cr_assert_eq(cas_store_visible(s.st, s_a, 1, &da, 1, &present), 0);
	cr_assert(present);
	/* no refresh due now: the grant's hint answers without meta */
	cr_assert_eq(cas_store_visible(s.st, s_a, 1, &da, 1, &present), 0);
	cr_assert(present);
	/* b's hint goes stale through an unscoped use; the lookup still sees it */
	fake_now = 1200;
	cr_assert_eq(cas_store_find(s.st, &db, 1, &present), 0);
	cr_assert_eq(cas_store_visible(s.st, s_a, 1, &db, 1, &present), 0);
	cr_assert(present);
	cr_assert_eq(cas_store_visible(s.st, s_b, 1, &db, 1, &present), 0);
	cr_assert_not(present, "a lookup by another scope does not touch or grant");

	/* now a (touched at 1100) is older than b (1200) */
	cr_assert_eq(cas_store_evict(s.st, sizeof(b)), 1);
	cr_assert_eq(cas_store_visible(s.st, s_a, 1, &da, 1, &present), 0);
	cr_assert_not(present);
	cr_assert_eq(cas_store_visible(s.st, s_a, 1, &db, 1, &present), 0);
	cr_assert(present);

	/* evicted and stored again by b: a's grant is gone for good */
	fake_now = 1300;
	cr_assert_eq(cas_store_put(s.st, "b", &da, a, sizeof(a), NULL), 0);
	fake_now = 1400;
	cr_assert_eq(cas_store_visible(s.st, s_a, 1, &da, 1, &present), 0);
	cr_assert_not(present);
	cr_assert_eq(cas_store_visible(s.st, s_b, 1, &da, 1, &present), 0);
	cr_assert(present);
	store_remove(&s);
}
