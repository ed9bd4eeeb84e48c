/*
 * test_ac.c - ActionCache and GetTree through real gRPC: the write guard,
 * the completeness check, inlining, per-instance entries, validation, and
 * GetTree paging and malformed directories.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/harness.h"

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

static const char action_hex[] = "1111111111111111111111111111111111111111111111111111111111111111";

static int update(const char *instance, RE(ActionResult) *ar, rpc_status_t *st)
{
	RE(UpdateActionResultRequest) req = RE_INIT(UPDATE_ACTION_RESULT_REQUEST);
	RE(Digest) ad = RE_INIT(DIGEST);
	ad.hash = (char *)action_hex;
	ad.size_bytes = 42;
	req.instance_name = (char *)instance;
	req.action_digest = &ad;
	req.action_result = ar;
	return th_unary(&t, AC "UpdateActionResult", &req.base, &DESC(action_result), NULL, st);
}

static int get(const char *instance, bool inline_stdout, RE(ActionResult) **out)
{
	RE(GetActionResultRequest) req = RE_INIT(GET_ACTION_RESULT_REQUEST);
	RE(Digest) ad = RE_INIT(DIGEST);
	ad.hash = (char *)action_hex;
	ad.size_bytes = 42;
	req.instance_name = (char *)instance;
	req.action_digest = &ad;
	req.inline_stdout = inline_stdout;
	return th_unary(&t, AC "GetActionResult", &req.base, &DESC(action_result), (ProtobufCMessage **)out,
			NULL);
}

/* An ActionResult with one output file and stdout, both given blobs. */
typedef struct result_fixture {
	RE(ActionResult) ar;
	RE(OutputFile) of, *ofp;
	RE(Digest) fd, sd;
	char fhex[65], shex[65];
	char file[2000], out[100];
} result_fixture_t;

static void fixture(result_fixture_t *f, unsigned seed)
{
	RE(ActionResult) ar = RE_INIT(ACTION_RESULT);
	RE(OutputFile) of = RE_INIT(OUTPUT_FILE);
	RE(Digest) d = RE_INIT(DIGEST);
	th_fill(f->file, sizeof(f->file), seed);
	snprintf(f->out, sizeof(f->out), "hello from action %u\n", seed);
	f->ar = ar;
	f->of = of;
	f->fd = d;
	f->sd = d;
	th_digest(f->file, sizeof(f->file), f->fhex);
	th_digest(f->out, strlen(f->out), f->shex);
	f->fd.hash = f->fhex;
	f->fd.size_bytes = sizeof(f->file);
	f->sd.hash = f->shex;
	f->sd.size_bytes = (int64_t)strlen(f->out);
	f->of.path = (char *)"out/a.o";
	f->of.digest = &f->fd;
	f->ofp = &f->of;
	f->ar.n_output_files = 1;
	f->ar.output_files = &f->ofp;
	f->ar.stdout_digest = &f->sd;
	f->ar.exit_code = 0;
}

static void upload_fixture(result_fixture_t *f)
{
	cr_assert_eq(th_batch_put(&t, "", f->file, sizeof(f->file)), 0);
	cr_assert_eq(th_batch_put(&t, "", f->out, strlen(f->out)), 0);
}

TestSuite(ac, .init = start_writers, .fini = stop);

Test(ac, clients_cannot_write_by_default, .init = start_default)
{
	result_fixture_t f;
	fixture(&f, 1);
	upload_fixture(&f);
	cr_assert_eq(update("", &f.ar, NULL), GRPC_STATUS_PERMISSION_DENIED);
	RE(ActionResult) *got = NULL;
	cr_assert_eq(get("", false, &got), GRPC_STATUS_NOT_FOUND);
}

Test(ac, missing_blobs_precondition)
{
	result_fixture_t f;
	rpc_status_t st = {0};
	fixture(&f, 2);
	cr_assert_eq(update("", &f.ar, &st), GRPC_STATUS_FAILED_PRECONDITION);
	cr_assert_not_null(st.details, "a PreconditionFailure detail is attached");
	Google__Rpc__Status *s = google__rpc__status__unpack(NULL, st.details_len, st.details);
	cr_assert_not_null(s);
	cr_assert_eq(s->n_details, 1);
	cr_assert_str_eq(s->details[0]->type_url, "type.googleapis.com/google.rpc.PreconditionFailure");
	Google__Rpc__PreconditionFailure *pf = google__rpc__precondition_failure__unpack(
		NULL, s->details[0]->value.len, s->details[0]->value.data);
	cr_assert_not_null(pf);
	cr_assert_eq(pf->n_violations, 2);
	char want[100];
	snprintf(want, sizeof(want), "blobs/%s/%zu", f.fhex, sizeof(f.file));
	cr_assert_str_eq(pf->violations[0]->type, "MISSING");
	cr_assert_str_eq(pf->violations[0]->subject, want);
	google__rpc__precondition_failure__free_unpacked(pf, NULL);
	google__rpc__status__free_unpacked(s, NULL);
	rpc_status_destroy(&st);
}

Test(ac, write_read_inline_and_instances)
{
	result_fixture_t f, g;
	RE(ActionResult) *got = NULL;
	fixture(&f, 3);
	fixture(&g, 4);
	upload_fixture(&f);
	/* g's blobs are read in "other": uploaded there (tenant-scoped reads) */
	cr_assert_eq(th_batch_put(&t, "other", g.file, sizeof(g.file)), 0);
	cr_assert_eq(th_batch_put(&t, "other", g.out, strlen(g.out)), 0);
	g.ar.exit_code = 0;
	cr_assert_eq(update("", &f.ar, NULL), 0);
	cr_assert_eq(update("other", &g.ar, NULL), 0);
	cr_assert_eq(get("", true, &got), 0);
	cr_assert_eq(got->n_output_files, 1);
	cr_assert_str_eq(got->output_files[0]->digest->hash, f.fhex);
	cr_assert_eq(got->stdout_raw.len, strlen(f.out), "stdout inlined on request");
	cr_assert_eq(memcmp(got->stdout_raw.data, f.out, got->stdout_raw.len), 0);
	protobuf_c_message_free_unpacked(&got->base, NULL);
	cr_assert_eq(get("other", false, &got), 0);
	cr_assert_str_eq(got->output_files[0]->digest->hash, g.fhex, "entries are per instance");
	cr_assert_eq(got->stdout_raw.len, 0);
	protobuf_c_message_free_unpacked(&got->base, NULL);
	cr_assert_eq(get("third", false, &got), GRPC_STATUS_NOT_FOUND);
}

Test(ac, completeness_after_eviction)
{
	result_fixture_t f;
	RE(ActionResult) *got = NULL;
	fixture(&f, 5);
	upload_fixture(&f);
	cr_assert_eq(update("", &f.ar, NULL), 0);
	cr_assert_eq(get("", false, &got), 0);
	protobuf_c_message_free_unpacked(&got->base, NULL);
	cr_assert_geq(cas_store_evict(t.store, 0), 2);
	cr_assert_eq(get("", false, &got), GRPC_STATUS_NOT_FOUND,
		     "an entry whose blobs are gone is not served");
	/* re-uploading the blobs makes it whole again */
	upload_fixture(&f);
	cr_assert_eq(get("", false, &got), 0);
	protobuf_c_message_free_unpacked(&got->base, NULL);
}

Test(ac, raw_stdout_moves_to_cas)
{
	RE(ActionResult) ar = RE_INIT(ACTION_RESULT), *got = NULL;
	ar.stdout_raw.data = (uint8_t *)"inline out";
	ar.stdout_raw.len = 10;
	cr_assert_eq(update("", &ar, NULL), 0);
	cr_assert_eq(get("", true, &got), 0);
	cr_assert_not_null(got->stdout_digest);
	cr_assert_eq(got->stdout_digest->size_bytes, 10);
	cr_assert_eq(got->stdout_raw.len, 10);
	protobuf_c_message_free_unpacked(&got->base, NULL);
}

Test(ac, invalid_requests)
{
	RE(UpdateActionResultRequest) req = RE_INIT(UPDATE_ACTION_RESULT_REQUEST);
	RE(Digest) ad = RE_INIT(DIGEST);
	cr_assert_eq(th_unary(&t, AC "UpdateActionResult", &req.base, &DESC(action_result), NULL, NULL),
		     GRPC_STATUS_INVALID_ARGUMENT, "no action digest");
	ad.hash = (char *)action_hex;
	ad.size_bytes = 1;
	req.action_digest = &ad;
	cr_assert_eq(th_unary(&t, AC "UpdateActionResult", &req.base, &DESC(action_result), NULL, NULL),
		     GRPC_STATUS_INVALID_ARGUMENT, "no action result");
	result_fixture_t f;
	fixture(&f, 6);
	upload_fixture(&f);
	f.fd.hash = (char *)"xyz";
	cr_assert_eq(update("", &f.ar, NULL), GRPC_STATUS_INVALID_ARGUMENT, "bad output digest");
	RE(ActionResult) *got = NULL;
	cr_assert_eq(get("blobs", false, &got), GRPC_STATUS_INVALID_ARGUMENT, "reserved instance");
}

/* ---- GetTree ---- */

static void put_dir(RE(Directory) *d, char hex[65], int64_t *size)
{
	size_t len = build__bazel__remote__execution__v2__directory__get_packed_size(d);
	uint8_t *buf = malloc(len + 1);
	build__bazel__remote__execution__v2__directory__pack(d, buf);
	th_digest(buf, len, hex);
	*size = (int64_t)len;
	cr_assert_eq(th_batch_put(&t, "", buf, len), 0);
	free(buf);
}

static int get_tree(const char *hex, int64_t size, int page_size, const char *token, size_t *ndirs,
		    char *next, size_t next_cap)
{
	RE(GetTreeRequest) req = RE_INIT(GET_TREE_REQUEST);
	RE(Digest) root = RE_INIT(DIGEST);
	rpc_stream_t *s = rpc_stream_open(t.ch, "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree", 10000);
	rpc_status_t st = {0};
	RE(GetTreeResponse) *r = NULL;
	root.hash = (char *)hex;
	root.size_bytes = size;
	req.root_digest = &root;
	req.page_size = page_size;
	req.page_token = (char *)token;
	*ndirs = 0;
	if (next)
		next[0] = '\0';
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	rpc_stream_close_send(s);
	while (rpc_stream_recv(s, &DESC(get_tree_response), (ProtobufCMessage **)&r) == 1) {
		*ndirs += r->n_directories;
		if (next && r->next_page_token[0])
			snprintf(next, next_cap, "%s", r->next_page_token);
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

Test(ac, get_tree_paging)
{
	/* leaf <- mid (x2 names, same digest) <- root: 3 distinct directories */
	RE(Directory) leaf = RE_INIT(DIRECTORY), mid = RE_INIT(DIRECTORY), root = RE_INIT(DIRECTORY);
	RE(FileNode) fn = RE_INIT(FILE_NODE), *fnp = &fn;
	RE(DirectoryNode) m1 = RE_INIT(DIRECTORY_NODE), m2 = RE_INIT(DIRECTORY_NODE), l1 = RE_INIT(DIRECTORY_NODE);
	RE(DirectoryNode) *rootkids[2] = {&m1, &m2}, *midkids[1] = {&l1};
	RE(Digest) fd = RE_INIT(DIGEST), ld = RE_INIT(DIGEST), md = RE_INIT(DIGEST);
	char fhex[65], lhex[65], mhex[65], rhex[65], next[64];
	int64_t ls, ms, rs;
	size_t n;

	fd.hash = (char *)"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	(void)fhex;
	fn.name = (char *)"empty.txt";
	fn.digest = &fd;
	leaf.n_files = 1;
	leaf.files = &fnp;
	put_dir(&leaf, lhex, &ls);
	ld.hash = lhex;
	ld.size_bytes = ls;
	l1.name = (char *)"leaf";
	l1.digest = &ld;
	mid.n_directories = 1;
	mid.directories = midkids;
	put_dir(&mid, mhex, &ms);
	md.hash = mhex;
	md.size_bytes = ms;
	m1.name = (char *)"a";
	m1.digest = &md;
	m2.name = (char *)"b";
	m2.digest = &md;
	root.n_directories = 2;
	root.directories = rootkids;
	put_dir(&root, rhex, &rs);

	cr_assert_eq(get_tree(rhex, rs, 0, "", &n, next, sizeof(next)), 0);
	cr_assert_eq(n, 3, "each distinct directory once");
	cr_assert_str_eq(next, "");
	size_t total = 0;
	char token[64] = "";
	for (int page = 0; page < 5; page++) {
		cr_assert_eq(get_tree(rhex, rs, 1, token, &n, next, sizeof(next)), 0);
		total += n;
		cr_assert_leq(n, 1);
		if (next[0] == '\0')
			break;
		snprintf(token, sizeof(token), "%s", next);
	}
	cr_assert_eq(total, 3, "pages cover the tree exactly");
	cr_assert_eq(get_tree(rhex, rs, 0, "bogus", &n, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_eq(get_tree(rhex, rs, -1, "", &n, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_eq(get_tree("0000000000000000000000000000000000000000000000000000000000000000", 10, 0, "", &n,
			      NULL, 0), GRPC_STATUS_NOT_FOUND);
	/* a missing subtree is omitted */
	m1.digest = &fd; /* points at the empty blob, which is not a stored Directory...*/
	RE(Digest) gone = RE_INIT(DIGEST);
	gone.hash = (char *)"2222222222222222222222222222222222222222222222222222222222222222";
	gone.size_bytes = 5;
	m1.digest = &gone;
	put_dir(&root, rhex, &rs);
	cr_assert_eq(get_tree(rhex, rs, 0, "", &n, NULL, 0), 0);
	cr_assert_eq(n, 3, "root, mid, leaf; the missing one omitted");
}

Test(ac, get_tree_malformed_directories)
{
	RE(Directory) dir = RE_INIT(DIRECTORY);
	RE(FileNode) a = RE_INIT(FILE_NODE), b = RE_INIT(FILE_NODE), *files[2] = {&a, &b};
	RE(Digest) fd = RE_INIT(DIGEST);
	char hex[65];
	int64_t size;
	size_t n;
	fd.hash = (char *)"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	a.digest = &fd;
	b.digest = &fd;
	dir.n_files = 2;
	dir.files = files;
	a.name = (char *)"z";
	b.name = (char *)"a"; /* unsorted */
	put_dir(&dir, hex, &size);
	cr_assert_eq(get_tree(hex, size, 0, "", &n, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
	a.name = (char *)"same";
	b.name = (char *)"same"; /* duplicate */
	put_dir(&dir, hex, &size);
	cr_assert_eq(get_tree(hex, size, 0, "", &n, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
	a.name = (char *)"../up";
	b.name = (char *)"x";
	put_dir(&dir, hex, &size);
	cr_assert_eq(get_tree(hex, size, 0, "", &n, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
	/* not a Directory at all */
	char junk[] = "\xff\xff\xff\xff not protobuf";
	th_digest(junk, sizeof(junk), hex);
	cr_assert_eq(th_batch_put(&t, "", junk, sizeof(junk)), 0);
	cr_assert_eq(get_tree(hex, sizeof(junk), 0, "", &n, NULL, 0), GRPC_STATUS_INVALID_ARGUMENT);
}
