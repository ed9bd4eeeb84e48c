/*
 * test_outputs.c - output collection against a real reap CAS on loopback:
 * files and their executable bit, a nested directory as a Tree (downloaded
 * back and checked), symlinks recorded and never followed (also as a parent
 * component pointing out of the root), refused paths, omitted outputs, the
 * legacy fields' kind rules, and a file larger than max_batch (ByteStream).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/harness.h"
#include "worker/worker.h"
#include "worker/worker_int.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT

#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* the legacy Command fields */

static th_server_t t;
static wrk_cas_t *cas;
static char root[64];

static void setup(void)
{
	th_start(&t, NULL);
	cas = wrk_cas_new(t.ch, "", cas_service_max_batch(t.cas));
	cr_assert_not_null(cas);
	strcpy(root, "/tmp/reap-wout-XXXXXX");
	cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
	char cmd[128];
	wrk_cas_free(cas);
	th_stop(&t);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(outputs, .init = setup, .fini = teardown);

/* ---- helpers ---- */

static char *at(const char *rel)
{
	static char buf[8][512];
	static int i;
	char *p = buf[i++ & 7];
	snprintf(p, 512, "%s/%s", root, rel);
	return p;
}

static void mkdirs(const char *rel)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", at(rel));
	cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *rel, const void *data, size_t len, mode_t mode)
{
	int fd = open(at(rel), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0, "%s: %s", rel, strerror(errno));
	cr_assert_eq(write(fd, data, len), (ssize_t)len);
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

static void write_str(const char *rel, const char *s, mode_t mode)
{
	write_file(rel, s, strlen(s), mode);
}

static reap_digest_t digest_of(const void *data, size_t len)
{
	reap_digest_t d;
	cr_assert_eq(reap_digest_of(data, len, &d), 0);
	return d;
}

static reap_digest_t pb(const RE(Digest) *p)
{
	reap_digest_t d;
	cr_assert_eq(wrk_digest_from_pb(p, &d, NULL), 0);
	return d;
}

static bool in_cas(const reap_digest_t *d)
{
	bool present = false;
	cr_assert_eq(wrk_cas_find(cas, d, 1, &present, NULL), 0);
	return present;
}

/* Collect with output_paths (or the legacy lists when files/dirs are given). */
static int collect(const char *wd, const char **paths, size_t n, const char **files, size_t nf,
		   const char **dirs, size_t nd, RE(ActionResult) *ar, reap_errbuf_t *eb)
{
	RE(Command) cmd = RE_INIT(COMMAND);
	RE(ActionResult) init = RE_INIT(ACTION_RESULT);
	*ar = init;
	cmd.working_directory = (char *)wd;
	cmd.output_paths = (char **)paths;
	cmd.n_output_paths = n;
	cmd.output_files = (char **)files;
	cmd.n_output_files = nf;
	cmd.output_directories = (char **)dirs;
	cmd.n_output_directories = nd;
	return wrk_collect_outputs(cas, root, &cmd, ar, eb);
}

/* ---- files ---- */

Test(outputs, files_and_executable_bit)
{
	const char *paths[] = {"out/a.txt", "out/tool", "out//./a.txt"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	mkdirs("w/out");
	write_str("w/out/a.txt", "alpha", 0644);
	write_str("w/out/tool", "#!/bin/sh\n", 0744);
	cr_assert_eq(collect("w", paths, 3, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 3);
	cr_assert_eq(ar.n_output_directories, 0);
	cr_assert_eq(ar.n_output_symlinks, 0);
	cr_assert_str_eq(ar.output_files[0]->path, "out/a.txt");
	cr_assert_str_eq(ar.output_files[2]->path, "out//./a.txt"); /* as given */
	cr_assert(!ar.output_files[0]->is_executable);
	cr_assert(ar.output_files[1]->is_executable);
	reap_digest_t a = digest_of("alpha", 5), tool = digest_of("#!/bin/sh\n", 10);
	reap_digest_t g0 = pb(ar.output_files[0]->digest), g1 = pb(ar.output_files[1]->digest);
	cr_assert(reap_digest_eq(&g0, &a));
	cr_assert(reap_digest_eq(&g1, &tool));
	cr_assert(in_cas(&a));
	cr_assert(in_cas(&tool));

	/* the loop's stdout/stderr digests are freed by the same call (ASan checks) */
	reap_digest_t so = digest_of("out", 3);
	ar.stdout_digest = wrk_digest_pb_new(&so);
	ar.stderr_digest = wrk_digest_pb_new(&so);
	wrk_result_free_outputs(&ar);
	cr_assert_null(ar.output_files);
	cr_assert_eq(ar.n_output_files, 0);
	cr_assert_null(ar.stdout_digest);
	wrk_result_free_outputs(&ar); /* twice is harmless */
}

Test(outputs, empty_file_and_missing_outputs_omitted)
{
	const char *paths[] = {"nope", "gone/deeper/file", "empty"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	write_str("empty", "", 0644);
	cr_assert_eq(collect("", paths, 3, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 1);
	cr_assert_str_eq(ar.output_files[0]->path, "empty");
	reap_digest_t d = pb(ar.output_files[0]->digest);
	cr_assert(reap_digest_is_empty(&d));
	wrk_result_free_outputs(&ar);

	/* a working directory that does not exist: everything is absent */
	cr_assert_eq(collect("no/such/wd", paths, 3, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files + ar.n_output_directories + ar.n_output_symlinks, 0);
	wrk_result_free_outputs(&ar);
}

Test(outputs, large_file_via_bytestream)
{
	size_t big = (5 << 20) + 17; /* max_batch is 2 MiB here */
	uint8_t *data = malloc(big);
	const char *paths[] = {"big.bin"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	void *got;
	size_t len;
	cr_assert_gt(big, wrk_cas_max_batch(cas));
	th_fill(data, big, 5);
	write_file("big.bin", data, big, 0644);
	cr_assert_eq(collect("", paths, 1, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 1);
	reap_digest_t d = pb(ar.output_files[0]->digest), want = digest_of(data, big);
	cr_assert(reap_digest_eq(&d, &want));
	cr_assert_eq(wrk_cas_get(cas, &d, big, &got, &len, &eb), 0, "%s", eb.msg);
	cr_assert_eq(len, big);
	cr_assert_eq(memcmp(got, data, big), 0);
	free(got);
	free(data);
	wrk_result_free_outputs(&ar);
}

/* ---- directories ---- */

static RE(Directory) *find_child(RE(Tree) *tree, const reap_digest_t *d)
{
	for (size_t i = 0; i < tree->n_children; i++) {
		size_t len = protobuf_c_message_get_packed_size(&tree->children[i]->base);
		uint8_t *buf = malloc(len + 1);
		reap_digest_t x;
		protobuf_c_message_pack(&tree->children[i]->base, buf);
		x = digest_of(buf, len);
		free(buf);
		if (reap_digest_eq(&x, d))
			return tree->children[i];
	}
	return NULL;
}

Test(outputs, directory_tree_round_trip)
{
	const char *paths[] = {"d"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	void *data;
	size_t len;
	/*
	 * d/  z.txt "zed"  a.sh "run" (exec)  ln -> z.txt
	 *   s1/ f "same"      s2/ f "same"   (identical: one child)
	 *   other/ deep/ g "gee"
	 *   empty/
	 */
	mkdirs("d/s1");
	mkdirs("d/s2");
	mkdirs("d/other/deep");
	mkdirs("d/empty");
	write_str("d/z.txt", "zed", 0644);
	write_str("d/a.sh", "run", 0755);
	write_str("d/s1/f", "same", 0644);
	write_str("d/s2/f", "same", 0644);
	write_str("d/other/deep/g", "gee", 0600);
	cr_assert_eq(symlink("z.txt", at("d/ln")), 0);
	cr_assert_eq(collect("", paths, 1, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_directories, 1);
	cr_assert_eq(ar.n_output_files, 0);
	RE(OutputDirectory) *od = ar.output_directories[0];
	cr_assert_str_eq(od->path, "d");
	reap_digest_t td = pb(od->tree_digest), rd = pb(od->root_directory_digest);
	cr_assert_eq(wrk_cas_get(cas, &td, 1 << 20, &data, &len, &eb), 0, "%s", eb.msg);
	RE(Tree) *tree = build__bazel__remote__execution__v2__tree__unpack(NULL, len, data);
	free(data);
	cr_assert_not_null(tree);

	/* the root: sorted lists, digests of the right content and children */
	RE(Directory) *r = tree->root;
	cr_assert_eq(r->n_files, 2);
	cr_assert_str_eq(r->files[0]->name, "a.sh");
	cr_assert(r->files[0]->is_executable);
	cr_assert_str_eq(r->files[1]->name, "z.txt");
	cr_assert(!r->files[1]->is_executable);
	reap_digest_t fz = pb(r->files[1]->digest), wz = digest_of("zed", 3);
	cr_assert(reap_digest_eq(&fz, &wz));
	cr_assert(in_cas(&fz));
	cr_assert_eq(r->n_symlinks, 1);
	cr_assert_str_eq(r->symlinks[0]->name, "ln");
	cr_assert_str_eq(r->symlinks[0]->target, "z.txt");
	cr_assert_eq(r->n_directories, 4);
	cr_assert_str_eq(r->directories[0]->name, "empty");
	cr_assert_str_eq(r->directories[1]->name, "other");
	cr_assert_str_eq(r->directories[2]->name, "s1");
	cr_assert_str_eq(r->directories[3]->name, "s2");
	reap_digest_t ds1 = pb(r->directories[2]->digest), ds2 = pb(r->directories[3]->digest);
	cr_assert(reap_digest_eq(&ds1, &ds2));
	/* children: empty, other, other/deep, s1 (= s2): four distinct */
	cr_assert_eq(tree->n_children, 4);
	for (size_t i = 0; i < r->n_directories; i++) {
		reap_digest_t cd = pb(r->directories[i]->digest);
		cr_assert_not_null(find_child(tree, &cd), "child %s", r->directories[i]->name);
		cr_assert(in_cas(&cd), "Directory blob of %s uploaded", r->directories[i]->name);
	}
	reap_digest_t dother = pb(r->directories[1]->digest);
	RE(Directory) *other = find_child(tree, &dother);
	cr_assert_eq(other->n_directories, 1);
	reap_digest_t ddeep = pb(other->directories[0]->digest);
	RE(Directory) *deep = find_child(tree, &ddeep);
	cr_assert_not_null(deep);
	cr_assert_str_eq(deep->files[0]->name, "g");

	/* root_directory_digest is the root message's, and it is in the CAS */
	size_t rl = protobuf_c_message_get_packed_size(&r->base);
	uint8_t *rb = malloc(rl + 1);
	protobuf_c_message_pack(&r->base, rb);
	reap_digest_t rwant = digest_of(rb, rl);
	free(rb);
	cr_assert(reap_digest_eq(&rd, &rwant));
	cr_assert(in_cas(&rd));
	/* the Tree re-encodes to the same bytes (canonical) */
	size_t tl = protobuf_c_message_get_packed_size(&tree->base);
	uint8_t *tb = malloc(tl + 1);
	protobuf_c_message_pack(&tree->base, tb);
	reap_digest_t tagain = digest_of(tb, tl);
	free(tb);
	cr_assert(reap_digest_eq(&tagain, &td));
	protobuf_c_message_free_unpacked(&tree->base, NULL);
	wrk_result_free_outputs(&ar);
}

Test(outputs, working_directory_itself)
{
	const char *paths[] = {""};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	mkdirs("wd");
	write_str("wd/f", "f", 0644);
	cr_assert_eq(collect("wd", paths, 1, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_directories, 1);
	cr_assert_str_eq(ar.output_directories[0]->path, "");
	wrk_result_free_outputs(&ar);
}

/* ---- symlinks ---- */

Test(outputs, symlink_recorded_not_followed)
{
	const char *paths[] = {"ln", "dirln", "dangling"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	mkdirs("sub");
	write_str("a.txt", "alpha", 0644);
	cr_assert_eq(symlink("a.txt", at("ln")), 0);
	cr_assert_eq(symlink("sub", at("dirln")), 0);
	cr_assert_eq(symlink("nowhere/../..", at("dangling")), 0);
	cr_assert_eq(collect("", paths, 3, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 0);
	cr_assert_eq(ar.n_output_directories, 0);
	cr_assert_eq(ar.n_output_symlinks, 3);
	cr_assert_str_eq(ar.output_symlinks[0]->path, "ln");
	cr_assert_str_eq(ar.output_symlinks[0]->target, "a.txt");
	cr_assert_str_eq(ar.output_symlinks[1]->target, "sub");
	cr_assert_str_eq(ar.output_symlinks[2]->target, "nowhere/../..");
	wrk_result_free_outputs(&ar);

	/* legacy lists: a symlink is reported as a symlink whatever list named it */
	const char *files[] = {"ln"}, *dirs[] = {"dirln"};
	cr_assert_eq(collect("", NULL, 0, files, 1, dirs, 1, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_symlinks, 2);
	wrk_result_free_outputs(&ar);
}

Test(outputs, absolute_symlink_refused)
{
	const char *paths[] = {"abs"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	cr_assert_eq(symlink("/etc/passwd", at("abs")), 0);
	cr_assert_eq(collect("", paths, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_PRECONDITION);
	cr_assert_eq(ar.n_output_symlinks, 0);
	cr_assert_null(ar.output_symlinks);

	/* inside an output directory too */
	const char *dpaths[] = {"d"};
	mkdirs("d");
	cr_assert_eq(symlink("/etc", at("d/etc")), 0);
	cr_assert_eq(collect("", dpaths, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_PRECONDITION);
	cr_assert_eq(ar.n_output_directories, 0);
}

Test(outputs, symlinked_parent_not_followed)
{
	const char *paths[] = {"out/passwd", "wd2/x"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	void *pw = NULL;
	size_t pwlen = 0;
	FILE *f = fopen("/etc/passwd", "rb");
	cr_assert_not_null(f);
	pw = malloc(1 << 20);
	pwlen = fread(pw, 1, 1 << 20, f);
	fclose(f);
	reap_digest_t pwd = digest_of(pw, pwlen);
	free(pw);

	cr_assert_eq(symlink("/etc", at("out")), 0);
	mkdirs("real");
	write_str("real/x", "inside, but behind a symlink", 0644);
	cr_assert_eq(symlink("real", at("wd2")), 0);
	cr_assert_eq(collect("", paths, 2, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files + ar.n_output_directories + ar.n_output_symlinks, 0);
	cr_assert(!in_cas(&pwd), "/etc/passwd was uploaded");
	wrk_result_free_outputs(&ar);

	/* a working directory that is a symlink out of the root: nothing collected */
	const char *p2[] = {"passwd"};
	cr_assert_eq(collect("out", p2, 1, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 0);
	cr_assert(!in_cas(&pwd));
	wrk_result_free_outputs(&ar);

	/* a relative symlink inside an output directory is recorded, not walked */
	const char *dp[] = {"d"};
	mkdirs("d");
	cr_assert_eq(symlink("../../../../../etc", at("d/up")), 0);
	cr_assert_eq(collect("", dp, 1, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_directories, 1);
	cr_assert(!in_cas(&pwd));
	wrk_result_free_outputs(&ar);
}

/* ---- refused paths and legacy kinds ---- */

Test(outputs, escaping_paths_refused)
{
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	const char *abs[] = {"/etc/passwd"}, *dots[] = {"a/../../b"}, *dots2[] = {".."}, *ok[] = {"x"};
	write_str("x", "x", 0644);
	cr_assert_eq(collect("", abs, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(collect("", dots, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(collect("", dots2, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(collect("", NULL, 0, abs, 1, NULL, 0, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(collect("", NULL, 0, NULL, 0, dots, 1, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(collect("..", ok, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(collect("/tmp", ok, 1, NULL, 0, NULL, 0, &ar, &eb), REAP_E_INVALID);
	/* a bad path anywhere fails the whole collection, leaving nothing behind */
	const char *mixed[] = {"x", "../y"};
	cr_assert_eq(collect("", mixed, 2, NULL, 0, NULL, 0, &ar, &eb), REAP_E_INVALID);
	cr_assert_eq(ar.n_output_files, 0);
	cr_assert_null(ar.output_files);
}

Test(outputs, legacy_kinds)
{
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	const char *file_is_dir[] = {"d"}, *dir_is_file[] = {"f"}, *files[] = {"f"}, *dirs[] = {"d"};
	mkdirs("d");
	write_str("d/in", "in", 0644);
	write_str("f", "f", 0644);
	cr_assert_eq(collect("", NULL, 0, file_is_dir, 1, NULL, 0, &ar, &eb), REAP_E_PRECONDITION);
	cr_assert_eq(collect("", NULL, 0, NULL, 0, dir_is_file, 1, &ar, &eb), REAP_E_PRECONDITION);
	cr_assert_eq(collect("", NULL, 0, files, 1, dirs, 1, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 1);
	cr_assert_eq(ar.n_output_directories, 1);
	wrk_result_free_outputs(&ar);
	/* output_paths wins over the legacy lists when both are set */
	const char *paths[] = {"f"};
	cr_assert_eq(collect("", paths, 1, NULL, 0, dir_is_file, 1, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_files, 1);
	wrk_result_free_outputs(&ar);
}

Test(outputs, many_small_files_batched)
{
	const char *paths[] = {"many"};
	RE(ActionResult) ar;
	reap_errbuf_t eb = {{0}};
	mkdirs("many");
	for (int i = 0; i < 300; i++) {
		char rel[64], body[64];
		snprintf(rel, sizeof(rel), "many/f%03d", i);
		snprintf(body, sizeof(body), "body %d", i);
		write_str(rel, body, 0644);
	}
	cr_assert_eq(collect("", paths, 1, NULL, 0, NULL, 0, &ar, &eb), 0, "%s", eb.msg);
	cr_assert_eq(ar.n_output_directories, 1);
	reap_digest_t b = digest_of("body 299", 8);
	cr_assert(in_cas(&b));
	wrk_result_free_outputs(&ar);
}
