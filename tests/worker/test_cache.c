/*
 * test_cache.c - the worker's CAS client and file cache against a real reap
 * CAS on loopback: reads by batch and by ByteStream, verification, uploads
 * small and large; cache links, modes, LRU eviction order, reopening,
 * concurrent links of one blob downloading it once, tampered cache files,
 * and the copy fallback across file systems.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/harness.h"
#include "worker/worker.h"
#include "worker/worker_int.h"

static th_server_t t;
static wrk_cas_t *cas;
static char cache_dir[64], work[64];

static void setup(void)
{
	th_start(&t, NULL);
	cas = wrk_cas_new(t.ch, "", cas_service_max_batch(t.cas));
	cr_assert_not_null(cas);
	strcpy(cache_dir, "/tmp/reap-wcache-XXXXXX");
	strcpy(work, "/tmp/reap-wwork-XXXXXX");
	cr_assert_not_null(mkdtemp(cache_dir));
	cr_assert_not_null(mkdtemp(work));
}

static void teardown(void)
{
	char cmd[256];
	wrk_cas_free(cas);
	th_stop(&t);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", cache_dir, work);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(cas_client, .init = setup, .fini = teardown);
TestSuite(cache, .init = setup, .fini = teardown);

static reap_digest_t put_blob(const void *data, size_t len)
{
	reap_digest_t d;
	cr_assert_eq(reap_digest_of(data, len, &d), 0);
	cr_assert_eq(th_batch_put(&t, "", data, len), 0);
	return d;
}

static char *path_in(const char *root, const char *rel)
{
	static char buf[8][512];
	static int i;
	char *p = buf[i++ & 7];
	snprintf(p, 512, "%s/%s", root, rel);
	return p;
}

static struct stat stat_of(const char *path)
{
	struct stat st;
	cr_assert_eq(lstat(path, &st), 0, "lstat %s: %s", path, strerror(errno));
	return st;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* The cache file of (d, exec). */
static char *cache_file(const reap_digest_t *d, bool exec)
{
	static char p[256];
	char hex[65];
	reap_digest_hex(d, hex);
	snprintf(p, sizeof(p), "%s/%.2s/%s-%lld%s", cache_dir, hex, hex, (long long)d->size,
		 exec ? "-x" : "");
	return p;
}

/* ---- CAS client ---- */

Test(cas_client, get_small_and_large)
{
	size_t big = 3 << 20; /* above max_batch (2 MiB): ByteStream */
	uint8_t *data = malloc(big);
	void *got;
	size_t len;
	reap_errbuf_t eb = {{0}};
	th_fill(data, big, 7);
	reap_digest_t small = put_blob(data, 1000);
	reap_digest_t large;
	cr_assert_eq(wrk_cas_put(cas, data, big, &large, &eb), 0, "%s", eb.msg);

	cr_assert_eq(wrk_cas_get(cas, &small, 1 << 20, &got, &len, &eb), 0, "%s", eb.msg);
	cr_assert_eq(len, 1000);
	cr_assert_eq(memcmp(got, data, len), 0);
	free(got);
	cr_assert_eq(wrk_cas_get(cas, &large, 8 << 20, &got, &len, &eb), 0, "%s", eb.msg);
	cr_assert_eq(len, big);
	cr_assert_eq(memcmp(got, data, len), 0);
	free(got);
	cr_assert_eq(wrk_cas_get(cas, &large, 1 << 20, &got, &len, &eb), REAP_E_EXHAUSTED);
	cr_assert_null(got);

	reap_digest_t absent;
	cr_assert_eq(reap_digest_of("absent", 6, &absent), 0);
	cr_assert_eq(wrk_cas_get(cas, &absent, 100, &got, &len, &eb), REAP_E_NOT_FOUND);
	free(data);
}

Test(cas_client, download_verifies_and_reports_not_found)
{
	char *p = path_in(work, "dl");
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	reap_errbuf_t eb = {{0}};
	reap_digest_t d = put_blob("hello world", 11), absent, lying;
	cr_assert_geq(fd, 0);
	cr_assert_eq(wrk_cas_download(cas, &d, fd, &eb), 0, "%s", eb.msg);
	cr_assert_eq(stat_of(p).st_size, 11);
	cr_assert_eq(reap_digest_of("absent", 6, &absent), 0);
	cr_assert_eq(wrk_cas_download(cas, &absent, fd, &eb), REAP_E_NOT_FOUND, "%s", eb.msg);
	/* right hash, wrong size: the server has no such blob */
	lying = d;
	lying.size = 5;
	cr_assert_neq(wrk_cas_download(cas, &lying, fd, &eb), 0);
	close(fd);
}

Test(cas_client, put_file_small_large_and_find)
{
	size_t big = (5 << 20) + 123;
	uint8_t *data = malloc(big);
	char *p = path_in(work, "up");
	reap_errbuf_t eb = {{0}};
	reap_digest_t d, want;
	bool present[3];
	void *got;
	size_t len;
	th_fill(data, big, 9);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, data, big), (ssize_t)big);
	cr_assert_eq(wrk_cas_put_file(cas, fd, &d, &eb), 0, "%s", eb.msg);
	cr_assert_eq(reap_digest_of(data, big, &want), 0);
	cr_assert(reap_digest_eq(&d, &want));
	cr_assert_eq(wrk_cas_get(cas, &d, big, &got, &len, &eb), 0, "%s", eb.msg);
	cr_assert_eq(memcmp(got, data, big), 0);
	free(got);
	/* again: already present, skipped */
	cr_assert_eq(wrk_cas_put_file(cas, fd, &d, &eb), 0, "%s", eb.msg);
	close(fd);

	reap_digest_t ds[3];
	cr_assert_eq(wrk_cas_put(cas, "small", 5, &ds[0], &eb), 0, "%s", eb.msg);
	ds[1] = d;
	cr_assert_eq(reap_digest_of("nope", 4, &ds[2]), 0);
	cr_assert_eq(wrk_cas_find(cas, ds, 3, present, &eb), 0, "%s", eb.msg);
	cr_assert(present[0]);
	cr_assert(present[1]);
	cr_assert(!present[2]);
	free(data);
}

Test(cas_client, instance_names)
{
	wrk_cas_t *ci = wrk_cas_new(t.ch, "main/sub", cas_service_max_batch(t.cas));
	reap_errbuf_t eb = {{0}};
	size_t big = 3 << 20;
	uint8_t *data = malloc(big);
	reap_digest_t d;
	void *got;
	size_t len;
	th_fill(data, big, 3);
	cr_assert_eq(wrk_cas_put(ci, data, big, &d, &eb), 0, "%s", eb.msg);
	cr_assert_eq(wrk_cas_get(ci, &d, big, &got, &len, &eb), 0, "%s", eb.msg);
	cr_assert_eq(len, big);
	free(got);
	wrk_cas_free(ci);
	free(data);
}

/* ---- cache ---- */

Test(cache, link_modes_and_sharing)
{
	reap_errbuf_t eb = {{0}};
	wrk_cache_t *c = wrk_cache_open(cache_dir, 0, &eb);
	reap_digest_t d = put_blob("content", 7);
	int64_t ct1, ct2, ct3;
	cr_assert_not_null(c, "%s", eb.msg);

	cr_assert_eq(wrk_cache_link(c, cas, &d, false, path_in(work, "a"), &ct1, &eb), 0, "%s",
		     eb.msg);
	cr_assert_eq(wrk_cache_link(c, cas, &d, false, path_in(work, "b"), &ct2, &eb), 0, "%s",
		     eb.msg);
	cr_assert_eq(wrk_cache_link(c, cas, &d, true, path_in(work, "x"), &ct3, &eb), 0, "%s",
		     eb.msg);
	cr_assert_eq(wrk_cas_downloads(cas), 2); /* plain and executable variants */
	struct stat a = stat_of(path_in(work, "a")), b = stat_of(path_in(work, "b")),
		    x = stat_of(path_in(work, "x"));
	/* the first link shares the cache inode; an inode already staged is copied */
	cr_assert_eq(a.st_ino, stat_of(cache_file(&d, false)).st_ino);
	cr_assert_neq(a.st_ino, b.st_ino, "never one inode in two places at once");
	cr_assert_eq(b.st_mode & 07777, 0444);
	cr_assert_neq(a.st_ino, x.st_ino);
	cr_assert_eq(a.st_mode & 07777, 0444);
	cr_assert_eq(x.st_mode & 07777, 0555);
	cr_assert_eq(x.st_ino, stat_of(cache_file(&d, true)).st_ino);
	cr_assert_eq(ct2, (int64_t)b.st_ctim.tv_sec * 1000000000 + b.st_ctim.tv_nsec);
	cr_assert(wrk_cache_has(c, &d, false));

	/* an action rewriting its staged input cannot reach the other copy */
	cr_assert_eq(chmod(path_in(work, "a"), 0644), 0);
	FILE *f = fopen(path_in(work, "a"), "w");
	cr_assert_not_null(f);
	fputs("EVIL!!!", f);
	fclose(f);
	char got[16] = {0};
	f = fopen(path_in(work, "b"), "r");
	cr_assert_not_null(f);
	cr_assert_eq(fread(got, 1, sizeof(got) - 1, f), 7);
	fclose(f);
	cr_assert_str_eq(got, "content", "the second staging is a private copy");
	cr_assert_eq(unlink(path_in(work, "a")), 0);

	/* an existing path is an error, not overwritten */
	cr_assert_eq(wrk_cache_link(c, cas, &d, false, path_in(work, "b"), &ct1, &eb),
		     REAP_E_EXISTS);

	reap_digest_t absent;
	cr_assert_eq(reap_digest_of("absent", 6, &absent), 0);
	cr_assert_eq(wrk_cache_link(c, cas, &absent, false, path_in(work, "z"), &ct1, &eb),
		     REAP_E_NOT_FOUND);
	cr_assert(!exists(path_in(work, "z")));
	cr_assert(!wrk_cache_has(c, &absent, false));

	reap_digest_t empty;
	reap_digest_empty(&empty);
	cr_assert_eq(wrk_cache_link(c, cas, &empty, true, path_in(work, "e"), &ct1, &eb), 0);
	cr_assert_eq(stat_of(path_in(work, "e")).st_size, 0);
	cr_assert_eq(stat_of(path_in(work, "e")).st_mode & 07777, 0555);
	/* the two variants, the tampered one fetched again, and the absent attempt */
	cr_assert_eq(wrk_cas_downloads(cas), 4);
	wrk_cache_close(c);
}

/* Link to path and remove the link again (so the entry is not in use). */
static void use(wrk_cache_t *c, const reap_digest_t *d)
{
	reap_errbuf_t eb = {{0}};
	int64_t ct;
	char *p = path_in(work, "tmp-link");
	cr_assert_eq(wrk_cache_link(c, cas, d, false, p, &ct, &eb), 0, "%s", eb.msg);
	cr_assert_eq(unlink(p), 0);
}

Test(cache, eviction_order)
{
	reap_errbuf_t eb = {{0}};
	wrk_cache_t *c = wrk_cache_open(cache_dir, 3000, &eb);
	uint8_t buf[1000];
	reap_digest_t d[4];
	cr_assert_not_null(c, "%s", eb.msg);
	for (int i = 0; i < 4; i++) {
		th_fill(buf, sizeof(buf), (unsigned)i + 100);
		d[i] = put_blob(buf, sizeof(buf));
	}
	use(c, &d[0]);
	use(c, &d[1]);
	use(c, &d[2]);
	use(c, &d[0]); /* A is now the most recent; B the least */
	use(c, &d[3]); /* over capacity: B goes */
	cr_assert(wrk_cache_has(c, &d[0], false));
	cr_assert(!wrk_cache_has(c, &d[1], false));
	cr_assert(wrk_cache_has(c, &d[2], false));
	cr_assert(wrk_cache_has(c, &d[3], false));
	cr_assert(!exists(cache_file(&d[1], false)));
	cr_assert(exists(cache_file(&d[2], false)));
	use(c, &d[1]); /* back: C (now the least recent) goes */
	cr_assert(!wrk_cache_has(c, &d[2], false));
	cr_assert(wrk_cache_has(c, &d[0], false));
	cr_assert_eq(wrk_cas_downloads(cas), 5);
	wrk_cache_close(c);
}

Test(cache, staged_files_are_not_evicted)
{
	reap_errbuf_t eb = {{0}};
	wrk_cache_t *c = wrk_cache_open(cache_dir, 1500, &eb);
	uint8_t buf[1000];
	reap_digest_t a, b;
	int64_t ct;
	cr_assert_not_null(c, "%s", eb.msg);
	th_fill(buf, sizeof(buf), 1);
	a = put_blob(buf, sizeof(buf));
	th_fill(buf, sizeof(buf), 2);
	b = put_blob(buf, sizeof(buf));
	cr_assert_eq(wrk_cache_link(c, cas, &a, false, path_in(work, "a"), &ct, &eb), 0);
	cr_assert_eq(wrk_cache_link(c, cas, &b, false, path_in(work, "b"), &ct, &eb), 0);
	/* a is the least recent but still linked in an exec root: kept */
	cr_assert(wrk_cache_has(c, &a, false));
	cr_assert_eq(unlink(path_in(work, "a")), 0);
	use(c, &b); /* the check after every link may now drop it, and does */
	cr_assert(!wrk_cache_has(c, &a, false));
	cr_assert(wrk_cache_has(c, &b, false));
	wrk_cache_close(c);
}

Test(cache, reopen_rebuilds_index)
{
	reap_errbuf_t eb = {{0}};
	wrk_cache_t *c = wrk_cache_open(cache_dir, 0, &eb);
	reap_digest_t d = put_blob("kept across runs", 16), e = put_blob("executable", 10);
	cr_assert_not_null(c, "%s", eb.msg);
	use(c, &d);
	int64_t ct;
	cr_assert_eq(wrk_cache_link(c, cas, &e, true, path_in(work, "e"), &ct, &eb), 0);
	wrk_cache_close(c);

	/* leftovers of a crash and junk */
	char *junk[] = {path_in(cache_dir, "tmp/dl-123456"), path_in(cache_dir, "ab/garbage"),
			path_in(cache_dir, "ab/0000000000000000000000000000000000000000000000000000000000000000-3")};
	mkdir(path_in(cache_dir, "ab"), 0700);
	for (int i = 0; i < 3; i++) {
		int fd = open(junk[i], O_WRONLY | O_CREAT, 0444);
		cr_assert_geq(fd, 0, "%s", junk[i]);
		close(fd);
	}
	c = wrk_cache_open(cache_dir, 0, &eb);
	cr_assert_not_null(c, "%s", eb.msg);
	for (int i = 0; i < 3; i++)
		cr_assert(!exists(junk[i]), "%s survived", junk[i]);
	cr_assert(wrk_cache_has(c, &d, false));
	cr_assert(wrk_cache_has(c, &e, true));
	cr_assert(!wrk_cache_has(c, &e, false));
	uint64_t before = wrk_cas_downloads(cas);
	use(c, &d); /* verified by content, not downloaded */
	cr_assert_eq(wrk_cas_downloads(cas), before);
	wrk_cache_close(c);
}

Test(cache, tampered_cache_file_refetched)
{
	reap_errbuf_t eb = {{0}};
	wrk_cache_t *c = wrk_cache_open(cache_dir, 0, &eb);
	reap_digest_t d = put_blob("trustworthy", 11);
	int64_t ct;
	char buf[32] = {0};
	cr_assert_not_null(c, "%s", eb.msg);
	use(c, &d);
	cr_assert_eq(wrk_cas_downloads(cas), 1);

	/* a benign ctime change (another link made and removed): kept, no download */
	cr_assert_eq(link(cache_file(&d, false), path_in(work, "extra")), 0);
	cr_assert_eq(unlink(path_in(work, "extra")), 0);
	use(c, &d);
	cr_assert_eq(wrk_cas_downloads(cas), 1);

	/* rewritten in place, same size, mode restored: caught by the content check */
	char *cf = cache_file(&d, false);
	cr_assert_eq(chmod(cf, 0644), 0);
	int fd = open(cf, O_WRONLY);
	cr_assert_eq(write(fd, "TRUSTWORTHY", 11), 11);
	close(fd);
	cr_assert_eq(chmod(cf, 0444), 0);
	cr_assert_eq(wrk_cache_link(c, cas, &d, false, path_in(work, "f"), &ct, &eb), 0, "%s",
		     eb.msg);
	cr_assert_eq(wrk_cas_downloads(cas), 2);
	fd = open(path_in(work, "f"), O_RDONLY);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 11);
	close(fd);
	cr_assert_str_eq(buf, "trustworthy");

	/* removed behind our back: downloaded again */
	cr_assert_eq(unlink(cache_file(&d, false)), 0);
	use(c, &d);
	cr_assert_eq(wrk_cas_downloads(cas), 3);

	/* forget drops the file */
	wrk_cache_forget(c, &d, false);
	cr_assert(!wrk_cache_has(c, &d, false));
	cr_assert(!exists(cache_file(&d, false)));
	wrk_cache_close(c);
}

typedef struct racer {
	wrk_cache_t *c;
	const reap_digest_t *d;
	char path[256];
	int err;
} racer_t;

static void *race(void *arg)
{
	racer_t *r = arg;
	int64_t ct;
	r->err = wrk_cache_link(r->c, cas, r->d, false, r->path, &ct, NULL);
	return NULL;
}

Test(cache, concurrent_links_download_once)
{
	reap_errbuf_t eb = {{0}};
	wrk_cache_t *c = wrk_cache_open(cache_dir, 0, &eb);
	size_t big = 6 << 20; /* long enough to download that the others queue up */
	uint8_t *data = malloc(big);
	reap_digest_t d, absent;
	racer_t r[4];
	pthread_t th[4];
	cr_assert_not_null(c, "%s", eb.msg);
	th_fill(data, big, 42);
	cr_assert_eq(wrk_cas_put(cas, data, big, &d, &eb), 0, "%s", eb.msg);
	for (int i = 0; i < 4; i++) {
		r[i] = (racer_t){.c = c, .d = &d};
		snprintf(r[i].path, sizeof(r[i].path), "%s/r%d", work, i);
		cr_assert_eq(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	int shared = 0;
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(r[i].err, 0, "thread %d: %d", i, r[i].err);
		shared += stat_of(r[i].path).st_ino == stat_of(cache_file(&d, false)).st_ino;
	}
	cr_assert_eq(shared, 1, "exactly one of them holds the cache inode, the others copies");
	cr_assert_eq(wrk_cas_downloads(cas), 1);

	/* a failing download: every waiter gets the error, and nothing is left behind */
	cr_assert_eq(reap_digest_of("never uploaded", 14, &absent), 0);
	for (int i = 0; i < 4; i++) {
		r[i] = (racer_t){.c = c, .d = &absent};
		snprintf(r[i].path, sizeof(r[i].path), "%s/n%d", work, i);
		cr_assert_eq(pthread_create(&th[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(r[i].err, REAP_E_NOT_FOUND, "thread %d: %d", i, r[i].err);
	cr_assert(!wrk_cache_has(c, &absent, false));
	wrk_cache_close(c);
	free(data);
}

Test(cache, copy_across_file_systems)
{
	struct stat a, b;
	char dir[] = "/dev/shm/reap-wcopy-XXXXXX";
	reap_errbuf_t eb = {{0}};
	if (stat("/dev/shm", &a) != 0 || stat(cache_dir, &b) != 0 || a.st_dev == b.st_dev)
		cr_skip_test("no second file system to copy across");
	cr_assert_not_null(mkdtemp(dir));
	wrk_cache_t *c = wrk_cache_open(cache_dir, 0, &eb);
	reap_digest_t d = put_blob("copied", 6);
	int64_t ct;
	char p[128], buf[16] = {0};
	snprintf(p, sizeof(p), "%s/f", dir);
	cr_assert_eq(wrk_cache_link(c, cas, &d, true, p, &ct, &eb), 0, "%s", eb.msg);
	struct stat st = stat_of(p);
	cr_assert_eq(st.st_mode & 07777, 0555);
	cr_assert_neq(st.st_ino, stat_of(cache_file(&d, true)).st_ino);
	cr_assert_eq(ct, (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec);
	int fd = open(p, O_RDONLY);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 6);
	close(fd);
	cr_assert_str_eq(buf, "copied");
	wrk_cache_close(c);
	unlink(p);
	rmdir(dir);
}
