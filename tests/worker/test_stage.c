/*
 * test_stage.c - input-root staging against a real reap CAS on loopback:
 * a real tree (nested folders, executable bit, symlinks, empty files, one
 * blob twice sharing the cache inode), hostile trees refused with nothing
 * created, missing blobs listed exactly, and the tamper check.
 */
#include <criterion/criterion.h>
#include <dirent.h>
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

static th_server_t t;
static wrk_cas_t *cas;
static wrk_cache_t *cache;
static char cache_dir[64], work[64];

static void setup(void)
{
	reap_errbuf_t eb = {{0}};
	th_start(&t, NULL);
	cas = wrk_cas_new(t.ch, "", cas_service_max_batch(t.cas));
	cr_assert_not_null(cas);
	strcpy(cache_dir, "/tmp/reap-wcache-XXXXXX");
	strcpy(work, "/tmp/reap-wroot-XXXXXX");
	cr_assert_not_null(mkdtemp(cache_dir));
	cr_assert_not_null(mkdtemp(work));
	cache = wrk_cache_open(cache_dir, 0, &eb);
	cr_assert_not_null(cache, "%s", eb.msg);
}

static void teardown(void)
{
	char cmd[256];
	wrk_cache_close(cache);
	wrk_cas_free(cas);
	th_stop(&t);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", cache_dir, work);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(stage, .init = setup, .fini = teardown);

/* ---- building trees ---- */

static reap_digest_t put_blob(const void *data, size_t len)
{
	reap_digest_t d;
	cr_assert_eq(reap_digest_of(data, len, &d), 0);
	cr_assert_eq(th_batch_put(&t, "", data, len), 0);
	return d;
}

static reap_digest_t str_blob(const char *s)
{
	return put_blob(s, strlen(s));
}

/* A Directory under construction; entries are kept in the order added. */
typedef struct tdir {
	RE(Directory) dir;
	RE(FileNode) fn[16];
	RE(FileNode) *fp[16];
	RE(DirectoryNode) dn[16];
	RE(DirectoryNode) *dp[16];
	RE(SymlinkNode) sn[16];
	RE(SymlinkNode) *sp[16];
	RE(Digest) dg[32];
	char hex[32][65];
	size_t ndg;
} tdir_t;

static void td_init(tdir_t *d)
{
	memset(d, 0, sizeof(*d));
	build__bazel__remote__execution__v2__directory__init(&d->dir);
	d->dir.files = d->fp;
	d->dir.directories = d->dp;
	d->dir.symlinks = d->sp;
}

static RE(Digest) *td_digest(tdir_t *d, const reap_digest_t *x)
{
	RE(Digest) *pd = &d->dg[d->ndg];
	build__bazel__remote__execution__v2__digest__init(pd);
	reap_digest_hex(x, d->hex[d->ndg]);
	pd->hash = d->hex[d->ndg++];
	pd->size_bytes = x->size;
	return pd;
}

static void td_file(tdir_t *d, const char *name, reap_digest_t x, bool exec)
{
	RE(FileNode) *f = &d->fn[d->dir.n_files];
	build__bazel__remote__execution__v2__file_node__init(f);
	f->name = (char *)name;
	f->digest = td_digest(d, &x);
	f->is_executable = exec;
	d->fp[d->dir.n_files++] = f;
}

static void td_dir(tdir_t *d, const char *name, reap_digest_t x)
{
	RE(DirectoryNode) *n = &d->dn[d->dir.n_directories];
	build__bazel__remote__execution__v2__directory_node__init(n);
	n->name = (char *)name;
	n->digest = td_digest(d, &x);
	d->dp[d->dir.n_directories++] = n;
}

static void td_link(tdir_t *d, const char *name, const char *target)
{
	RE(SymlinkNode) *s = &d->sn[d->dir.n_symlinks];
	build__bazel__remote__execution__v2__symlink_node__init(s);
	s->name = (char *)name;
	s->target = (char *)target;
	d->sp[d->dir.n_symlinks++] = s;
}

/* Digest of the packed Directory; uploaded when put. */
/* Pack d; upload it to instance unless that is NULL. */
static reap_digest_t pack_in(const char *instance, tdir_t *d)
{
	size_t len = protobuf_c_message_get_packed_size(&d->dir.base);
	uint8_t *buf = malloc(len + 1);
	reap_digest_t x;
	protobuf_c_message_pack(&d->dir.base, buf);
	cr_assert_eq(reap_digest_of(buf, len, &x), 0);
	if (instance != NULL)
		cr_assert_eq(th_batch_put(&t, instance, buf, len), 0);
	free(buf);
	return x;
}

static reap_digest_t td_pack(tdir_t *d, bool put)
{
	return pack_in(put ? "" : NULL, d);
}

/* ---- checks ---- */

static char *path_in(const char *root, const char *rel)
{
	static char buf[8][512];
	static int i;
	char *p = buf[i++ & 7];
	snprintf(p, 512, "%s/%s", root, rel);
	return p;
}

static void assert_content(const char *path, const char *want)
{
	char buf[256] = {0};
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	cr_assert_eq((size_t)n, strlen(want), "%s: %zd bytes", path, n);
	cr_assert_str_eq(buf, want);
}

static mode_t mode_of(const char *path)
{
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "lstat %s", path);
	return st.st_mode;
}

static ino_t ino_of(const char *path)
{
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "lstat %s", path);
	return st.st_ino;
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;
	cr_assert_not_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Stage root into a fresh folder under work; returns the error, *out filled. */
static int stage_into(const char *name, const reap_digest_t *root, wrk_staged_t *out,
		      reap_errbuf_t *eb)
{
	char *dir = path_in(work, name);
	cr_assert_eq(mkdir(dir, 0755), 0);
	return wrk_stage(cache, cas, root, dir, out, eb);
}

/* ---- a real tree ---- */

/*
 * root/
 *   a.txt  "alpha"      empty  ""         run.sh "#!/bin/sh" (exec)   same1 "alpha"
 *   link -> sub/x
 *   sub/  x "xray"  same2 "alpha"  up -> ../a.txt
 *     deep/  y "xray"
 */
static reap_digest_t real_tree(void)
{
	tdir_t deep, sub, root;
	reap_digest_t empty;
	reap_digest_empty(&empty);

	td_init(&deep);
	td_file(&deep, "y", str_blob("xray"), false);
	reap_digest_t ddeep = td_pack(&deep, true);
	td_init(&sub);
	td_file(&sub, "same2", str_blob("alpha"), false);
	td_file(&sub, "x", str_blob("xray"), false);
	td_dir(&sub, "deep", ddeep);
	td_link(&sub, "up", "../a.txt");
	reap_digest_t dsub = td_pack(&sub, true);
	td_init(&root);
	td_file(&root, "a.txt", str_blob("alpha"), false);
	td_file(&root, "empty", empty, false);
	td_file(&root, "run.sh", str_blob("#!/bin/sh\n"), true);
	td_file(&root, "same1", str_blob("alpha"), false);
	td_dir(&root, "sub", dsub);
	td_link(&root, "link", "sub/x");
	return td_pack(&root, true);
}

Test(stage, real_tree)
{
	reap_digest_t root = real_tree();
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	char r[256], tgt[64] = {0};
	snprintf(r, sizeof(r), "%s/r", work);

	cr_assert_eq(stage_into("r", &root, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(s.n, 7);
	cr_assert_eq(s.n_missing, 0);
	assert_content(path_in(r, "a.txt"), "alpha");
	assert_content(path_in(r, "empty"), "");
	assert_content(path_in(r, "run.sh"), "#!/bin/sh\n");
	assert_content(path_in(r, "same1"), "alpha");
	assert_content(path_in(r, "sub/x"), "xray");
	assert_content(path_in(r, "sub/same2"), "alpha");
	assert_content(path_in(r, "sub/deep/y"), "xray");
	assert_content(path_in(r, "link"), "xray");     /* through the symlink */
	assert_content(path_in(r, "sub/up"), "alpha");
	cr_assert_eq(mode_of(path_in(r, "a.txt")) & 07777, 0444);
	cr_assert_eq(mode_of(path_in(r, "run.sh")) & 07777, 0555);
	cr_assert_eq(mode_of(path_in(r, "empty")) & 07777, 0444);
	cr_assert(S_ISDIR(mode_of(path_in(r, "sub/deep"))));
	cr_assert(S_ISLNK(mode_of(path_in(r, "link"))));
	cr_assert_eq(readlink(path_in(r, "sub/up"), tgt, sizeof(tgt) - 1), 8);
	cr_assert_str_eq(tgt, "../a.txt");
	/* one blob three times: one download, and no inode staged twice */
	cr_assert_neq(ino_of(path_in(r, "a.txt")), ino_of(path_in(r, "same1")));
	cr_assert_neq(ino_of(path_in(r, "same1")), ino_of(path_in(r, "sub/same2")));
	cr_assert_neq(ino_of(path_in(r, "sub/x")), ino_of(path_in(r, "sub/deep/y")));
	cr_assert_neq(ino_of(path_in(r, "a.txt")), ino_of(path_in(r, "sub/x")));
	/* alpha, xray, script: three downloads, nothing for the empty blob */
	cr_assert_eq(wrk_cas_downloads(cas), 3);
	for (size_t i = 0; i < s.n; i++)
		cr_assert_eq(s.files[i].path[0], '/');
	cr_assert(wrk_staged_intact(cache, &s));
	wrk_staged_destroy(&s);

	/* the exec root removed (ctime of the shared inodes moves) and staged again: no download */
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r);
	cr_assert_eq(system(cmd), 0);
	cr_assert_eq(stage_into("r2", &root, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(wrk_cas_downloads(cas), 3);
	cr_assert(wrk_staged_intact(cache, &s));
	wrk_staged_destroy(&s);
}

Test(stage, empty_root)
{
	tdir_t root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	td_init(&root);
	reap_digest_t d = td_pack(&root, false); /* the empty blob: always present */
	cr_assert(reap_digest_is_empty(&d));
	cr_assert_eq(stage_into("r", &d, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(s.n, 0);
	cr_assert_eq(count_entries(path_in(work, "r")), 0);
	wrk_staged_destroy(&s);
}

/* ---- hostile trees ---- */

static void assert_refused(const reap_digest_t *root, const char *why)
{
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	static int k;
	char name[16];
	snprintf(name, sizeof(name), "h%d", k++);
	int err = stage_into(name, root, &s, &eb);
	cr_assert_eq(err, REAP_E_INVALID, "%s: got %d (%s)", why, err, eb.msg);
	cr_assert_eq(count_entries(path_in(work, name)), 0, "%s: something was created", why);
	wrk_staged_destroy(&s);
}

static reap_digest_t one_file(const char *name)
{
	tdir_t d;
	td_init(&d);
	td_file(&d, name, str_blob("x"), false);
	return td_pack(&d, true);
}

static reap_digest_t one_link(const char *name, const char *target)
{
	tdir_t d;
	td_init(&d);
	td_link(&d, name, target);
	return td_pack(&d, true);
}

Test(stage, hostile_names)
{
	reap_digest_t d;
	d = one_file("..");
	assert_refused(&d, "..");
	d = one_file(".");
	assert_refused(&d, ".");
	d = one_file("");
	assert_refused(&d, "empty name");
	d = one_file("/abs");
	assert_refused(&d, "/abs");
	d = one_file("a/b");
	assert_refused(&d, "a/b");
	d = one_link("a/b", "x");
	assert_refused(&d, "symlink a/b");

	tdir_t sub, root;
	td_init(&sub);
	td_init(&root);
	td_dir(&root, "a/b", td_pack(&sub, true));
	d = td_pack(&root, true);
	assert_refused(&d, "directory a/b");
}

Test(stage, hostile_order)
{
	tdir_t root, sub;
	reap_digest_t d;

	td_init(&root);
	td_file(&root, "b", str_blob("1"), false);
	td_file(&root, "a", str_blob("2"), false);
	d = td_pack(&root, true);
	assert_refused(&d, "unsorted");

	td_init(&root);
	td_file(&root, "a", str_blob("1"), false);
	td_file(&root, "a", str_blob("2"), false);
	d = td_pack(&root, true);
	assert_refused(&d, "duplicate file");

	td_init(&sub);
	reap_digest_t ds = td_pack(&sub, true);
	td_init(&root);
	td_file(&root, "x", str_blob("1"), false);
	td_dir(&root, "x", ds);
	d = td_pack(&root, true);
	assert_refused(&d, "file and directory named alike");

	td_init(&root);
	td_dir(&root, "x", ds);
	td_link(&root, "x", "y");
	d = td_pack(&root, true);
	assert_refused(&d, "directory and symlink named alike");
}

Test(stage, hostile_symlinks)
{
	reap_digest_t d;
	d = one_link("pw", "../../etc/passwd");
	assert_refused(&d, "../../etc/passwd");
	d = one_link("pw", "..");
	assert_refused(&d, "..");
	d = one_link("pw", "a/../../b");
	assert_refused(&d, "a/../../b");
	d = one_link("sh", "/etc/shadow");
	assert_refused(&d, "/etc/shadow");
	d = one_link("e", "");
	assert_refused(&d, "empty target");

	/* one level down, one ".." is fine but two are not */
	tdir_t sub, root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	td_init(&sub);
	td_link(&sub, "ok", "../sub/./ok2");
	reap_digest_t ds = td_pack(&sub, true);
	td_init(&root);
	td_dir(&root, "sub", ds);
	d = td_pack(&root, true);
	cr_assert_eq(stage_into("fine", &d, &s, &eb), 0, "%s", eb.msg);
	wrk_staged_destroy(&s);

	td_init(&sub);
	td_link(&sub, "pw", "../../etc/passwd");
	ds = td_pack(&sub, true);
	td_init(&root);
	td_file(&root, "a", str_blob("fine"), false);
	td_dir(&root, "sub", ds);
	d = td_pack(&root, true);
	assert_refused(&d, "escape from a subfolder (nothing created at the root either)");
}

/* A name with an embedded NUL cannot be represented: the encoding check refuses it. */
Test(stage, hostile_nul_in_name)
{
	reap_digest_t fx = str_blob("x");
	char hex[65];
	uint8_t buf[256];
	size_t n = 0;
	reap_digest_hex(&fx, hex);
	/* Directory{files: FileNode{name: "a\0b", digest: {hash, 1}}} by hand */
	uint8_t digest[80];
	size_t dn = 0;
	digest[dn++] = 0x0a;
	digest[dn++] = 64;
	memcpy(digest + dn, hex, 64);
	dn += 64;
	digest[dn++] = 0x10;
	digest[dn++] = 1;
	uint8_t node[120];
	size_t nn = 0;
	node[nn++] = 0x0a;
	node[nn++] = 3;
	memcpy(node + nn, "a\0b", 3);
	nn += 3;
	node[nn++] = 0x12;
	node[nn++] = (uint8_t)dn;
	memcpy(node + nn, digest, dn);
	nn += dn;
	buf[n++] = 0x0a;
	buf[n++] = (uint8_t)nn;
	memcpy(buf + n, node, nn);
	n += nn;
	reap_digest_t d = put_blob(buf, n);
	assert_refused(&d, "NUL in a name");
}

Test(stage, hostile_deep_or_large_directory)
{
	/* a Directory blob that is not a Directory at all */
	reap_digest_t d = put_blob("\xff\xff\xff", 3);
	assert_refused(&d, "garbage");
}

/* ---- missing blobs ---- */

static int missing_has(const wrk_staged_t *s, const reap_digest_t *d)
{
	char want[WRK_BLOB_NAME_LEN];
	wrk_blob_name(d, want);
	for (size_t i = 0; i < s->n_missing; i++)
		if (strcmp(s->missing[i], want) == 0)
			return 1;
	return 0;
}

Test(stage, missing_root)
{
	tdir_t root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	td_init(&root);
	td_file(&root, "a", str_blob("present"), false);
	reap_digest_t d = td_pack(&root, false); /* never uploaded */
	cr_assert_eq(stage_into("r", &d, &s, &eb), REAP_E_PRECONDITION, "%s", eb.msg);
	cr_assert_eq(s.n_missing, 1);
	cr_assert(missing_has(&s, &d));
	cr_assert_eq(count_entries(path_in(work, "r")), 0);
	wrk_staged_destroy(&s);
}

Test(stage, missing_subtree_and_files)
{
	tdir_t gone, sub, root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	reap_digest_t nofile, nofile2;
	cr_assert_eq(reap_digest_of("not uploaded", 12, &nofile), 0);
	cr_assert_eq(reap_digest_of("not uploaded either", 19, &nofile2), 0);

	td_init(&gone);
	td_file(&gone, "inside", nofile2, false); /* unseen: its folder is missing */
	reap_digest_t dgone = td_pack(&gone, false);
	td_init(&sub);
	td_file(&sub, "f", nofile, true);
	td_file(&sub, "g", str_blob("here"), false);
	reap_digest_t dsub = td_pack(&sub, true);
	td_init(&root);
	td_file(&root, "a", nofile, false); /* the same missing blob twice: listed once */
	td_dir(&root, "gone", dgone);
	td_dir(&root, "sub", dsub);
	reap_digest_t d = td_pack(&root, true);

	cr_assert_eq(stage_into("r", &d, &s, &eb), REAP_E_PRECONDITION, "%s", eb.msg);
	cr_assert_eq(s.n_missing, 2, "%zu missing", s.n_missing);
	cr_assert(missing_has(&s, &dgone));
	cr_assert(missing_has(&s, &nofile));
	cr_assert_eq(count_entries(path_in(work, "r")), 0);
	wrk_staged_destroy(&s);
}

/* ---- tenants ---- */

/*
 * A file in the worker's cache because one tenant's action used it is not
 * proof that another tenant has it: staging for the second one asks its
 * instance, gets "missing", and links nothing.
 */
Test(stage, cached_file_of_another_tenant_is_missing)
{
	const char secret[] = "tenant a's secret";
	tdir_t ra, rb;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	reap_digest_t f;
	cr_assert_eq(reap_digest_of(secret, strlen(secret), &f), 0);
	cr_assert_eq(th_batch_put(&t, "team/a", secret, strlen(secret)), 0);
	wrk_cas_t *cas_a = wrk_cas_new(t.ch, "team/a", cas_service_max_batch(t.cas));
	wrk_cas_t *cas_b = wrk_cas_new(t.ch, "team/b", cas_service_max_batch(t.cas));
	cr_assert(cas_a != NULL && cas_b != NULL);

	td_init(&ra);
	td_file(&ra, "in", f, false);
	reap_digest_t da = pack_in("team/a", &ra);
	cr_assert_eq(mkdir(path_in(work, "a"), 0755), 0);
	cr_assert_eq(wrk_stage(cache, cas_a, &da, path_in(work, "a"), &s, &eb), 0, "%s", eb.msg);
	cr_assert(wrk_cache_has(cache, &f, false));
	wrk_staged_destroy(&s);

	/* tenant b names the digest in a tree of its own */
	td_init(&rb);
	td_file(&rb, "stolen", f, false);
	reap_digest_t db = pack_in("team/b", &rb);
	cr_assert_eq(mkdir(path_in(work, "b"), 0755), 0);
	cr_assert_eq(wrk_stage(cache, cas_b, &db, path_in(work, "b"), &s, &eb),
		     REAP_E_PRECONDITION, "%s", eb.msg);
	cr_assert_eq(s.n_missing, 1);
	cr_assert(missing_has(&s, &f));
	cr_assert_eq(count_entries(path_in(work, "b")), 0);
	wrk_staged_destroy(&s);

	/* once b uploads it (proving it has the bytes), the cached copy serves it */
	cr_assert_eq(th_batch_put(&t, "team/b", secret, strlen(secret)), 0);
	size_t before = wrk_cas_downloads(cas_b);
	cr_assert_eq(mkdir(path_in(work, "b2"), 0755), 0);
	cr_assert_eq(wrk_stage(cache, cas_b, &db, path_in(work, "b2"), &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(wrk_cas_downloads(cas_b), before);
	assert_content(path_in(work, "b2/stolen"), secret);
	wrk_staged_destroy(&s);
	wrk_cas_free(cas_a);
	wrk_cas_free(cas_b);
}

/* ---- tampering ---- */

Test(stage, tamper_detected_and_cache_refetched)
{
	tdir_t root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	reap_digest_t blob = str_blob("original");
	td_init(&root);
	td_file(&root, "in", blob, false);
	td_file(&root, "other", str_blob("untouched"), false);
	reap_digest_t d = td_pack(&root, true);

	cr_assert_eq(stage_into("r", &d, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(wrk_cas_downloads(cas), 2);
	cr_assert(wrk_staged_intact(cache, &s));

	/* the action: chmod +w and rewrite its (shared) input */
	char *in = path_in(work, "r/in");
	cr_assert_eq(chmod(in, 0644), 0);
	int fd = open(in, O_WRONLY | O_TRUNC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "poisoned", 8), 8);
	close(fd);
	cr_assert(!wrk_staged_intact(cache, &s));
	cr_assert(!wrk_cache_has(cache, &blob, false));
	wrk_staged_destroy(&s);

	/* next time: downloaded again, the right content, read-only again */
	cr_assert_eq(stage_into("r2", &d, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(wrk_cas_downloads(cas), 3);
	assert_content(path_in(work, "r2/in"), "original");
	assert_content(path_in(work, "r2/other"), "untouched");
	cr_assert_eq(mode_of(path_in(work, "r2/in")) & 07777, 0444);
	cr_assert(wrk_staged_intact(cache, &s));
	wrk_staged_destroy(&s);
}

Test(stage, removed_input_is_tampering)
{
	tdir_t root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	td_init(&root);
	td_file(&root, "in", str_blob("data"), false);
	reap_digest_t d = td_pack(&root, true);
	cr_assert_eq(stage_into("r", &d, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(unlink(path_in(work, "r/in")), 0);
	cr_assert(!wrk_staged_intact(cache, &s));
	wrk_staged_destroy(&s);
}

/* Many files: the linking threads, and a blob shared by all of them. */
Test(stage, many_files)
{
	tdir_t sub[4], root;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	static const char *names[16] = {"f00", "f01", "f02", "f03", "f04", "f05", "f06", "f07",
					"f08", "f09", "f10", "f11", "f12", "f13", "f14", "f15"};
	reap_digest_t shared = str_blob("shared");
	td_init(&root);
	for (int k = 0; k < 4; k++) {
		td_init(&sub[k]);
		for (int i = 0; i < 16; i++) {
			char body[32];
			snprintf(body, sizeof(body), "file %d %d", k, i);
			td_file(&sub[k], names[i], i % 4 == 0 ? shared : str_blob(body), i % 3 == 0);
		}
		td_dir(&root, names[k], td_pack(&sub[k], true));
	}
	reap_digest_t d = td_pack(&root, true);
	cr_assert_eq(stage_into("r", &d, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(s.n, 64);
	assert_content(path_in(work, "r/f02/f05"), "file 2 5");
	assert_content(path_in(work, "r/f03/f04"), "shared");
	cr_assert(wrk_staged_intact(cache, &s));
	wrk_staged_destroy(&s);
}

/* More directories than one GetTree page (10000) holds: the page token is followed. */
Test(stage, tree_over_one_page)
{
	enum { N = 10050 };
	static RE(DirectoryNode) dn[N];
	static RE(DirectoryNode) *dp[N];
	static RE(Digest) dg[N];
	static char names[N][8], hex[N][65];
	static wrk_blob_t blobs[N];
	RE(Directory) root = RE_INIT(DIRECTORY);
	reap_digest_t empty;
	wrk_staged_t s;
	reap_errbuf_t eb = {{0}};
	tdir_t leaf;

	reap_digest_empty(&empty);
	for (int i = 0; i < N; i++) {
		/* each child distinct: one empty file named after it */
		snprintf(names[i], sizeof(names[i]), "d%05d", i);
		td_init(&leaf);
		td_file(&leaf, names[i], empty, false);
		size_t len = protobuf_c_message_get_packed_size(&leaf.dir.base);
		uint8_t *buf = malloc(len);
		protobuf_c_message_pack(&leaf.dir.base, buf);
		blobs[i] = (wrk_blob_t){.data = buf, .len = len};
		cr_assert_eq(reap_digest_of(buf, len, &blobs[i].digest), 0);
		build__bazel__remote__execution__v2__digest__init(&dg[i]);
		reap_digest_hex(&blobs[i].digest, hex[i]);
		dg[i].hash = hex[i];
		dg[i].size_bytes = blobs[i].digest.size;
		build__bazel__remote__execution__v2__directory_node__init(&dn[i]);
		dn[i].name = names[i];
		dn[i].digest = &dg[i];
		dp[i] = &dn[i];
	}
	cr_assert_eq(wrk_cas_put_many(cas, blobs, N, &eb), 0, "%s", eb.msg);
	for (int i = 0; i < N; i++)
		free((void *)blobs[i].data);
	root.n_directories = N;
	root.directories = dp;
	size_t len = protobuf_c_message_get_packed_size(&root.base);
	uint8_t *buf = malloc(len);
	protobuf_c_message_pack(&root.base, buf);
	reap_digest_t d;
	cr_assert_eq(wrk_cas_put(cas, buf, len, &d, &eb), 0, "%s", eb.msg);
	free(buf);

	cr_assert_eq(stage_into("r", &d, &s, &eb), 0, "%s", eb.msg);
	cr_assert_eq(s.n, N);
	cr_assert_eq(count_entries(path_in(work, "r")), N);
	assert_content(path_in(work, "r/d10049/d10049"), "");
	wrk_staged_destroy(&s);
}
