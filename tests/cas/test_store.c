/*
 * test_store.c - the blob store (cas/store.h): puts, verification, writers,
 * readers, the empty blob, the action cache, reopening and crash recovery.
 * Eviction, last use and concurrency are in test_store_lru.c.
 *
 * Every test gets a fresh data folder under /tmp (removed afterwards) and a
 * small inline_max so the file path is cheap to exercise.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cas/store.h"
#include "common/digest.h"
#include "common/log.h"

#define INLINE_MAX 1024

static char dir[64];
static cas_store_config_t cfg;
static cas_store_t *st;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void reopen(void)
{
	reap_errbuf_t eb = {{0}};

	cas_store_close(st);
	st = cas_store_open(&cfg, &eb);
	cr_assert_not_null(st, "open: %s", eb.msg);
}

static void setup(void)
{
	reap_log_set_level(REAP_LOG_WARN); /* keep the output to what matters */
	strcpy(dir, "/tmp/reap-store-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	cfg = (cas_store_config_t){.path = dir, .inline_max = INLINE_MAX, .touch_interval_s = -1,
				   .no_sync = true};
	st = NULL;
	reopen();
}

static void teardown(void)
{
	cas_store_close(st);
	st = NULL;
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(store, .init = setup, .fini = teardown);

/* A blob of len bytes derived from seed, and its digest. */
static uint8_t *blob(size_t len, unsigned seed, reap_digest_t *d)
{
	uint8_t *p = malloc(len > 0 ? len : 1);

	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 31 + seed * 7919 + (i >> 8)) & 0xff);
	cr_assert_eq(reap_digest_of(p, len, d), REAP_OK);
	return p;
}

static void path_of(const reap_digest_t *d, char *out, size_t n)
{
	char hex[REAP_HASH_HEX_LEN + 1];

	reap_digest_hex(d, hex);
	snprintf(out, n, "%s/cas/%.2s/%s-%lld", dir, hex, hex, (long long)d->size);
}

static int files_counted;
static int count_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (flag == FTW_F)
		files_counted++;
	return 0;
}

/* Regular files under <dir>/<sub>. */
static int count_files(const char *sub)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/%s", dir, sub);
	files_counted = 0;
	cr_assert_eq(nftw(p, count_entry, 16, FTW_PHYS), 0);
	return files_counted;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

static void assert_content(const reap_digest_t *d, const uint8_t *want)
{
	void *data = NULL;
	size_t len = 0;

	cr_assert_eq(cas_store_get(st, d, (size_t)d->size, &data, &len), REAP_OK);
	cr_assert_eq(len, (size_t)d->size);
	cr_assert(len == 0 || memcmp(data, want, len) == 0);
	free(data);
}

static void assert_missing(const reap_digest_t *d)
{
	bool present = true;
	cas_reader_t *r = NULL;

	cr_assert_eq(cas_store_has(st, d), REAP_E_NOT_FOUND);
	cr_assert_eq(cas_store_find(st, d, 1, &present), REAP_OK);
	cr_assert(!present);
	cr_assert_eq(cas_reader_open(st, d, &r), REAP_E_NOT_FOUND);
	cr_assert_null(r);
}

static void assert_stats(uint64_t blobs, uint64_t bytes)
{
	cas_store_stats_t s;

	cas_store_stats(st, &s);
	cr_assert_eq(s.blobs, blobs, "blobs %llu want %llu", (unsigned long long)s.blobs,
		     (unsigned long long)blobs);
	cr_assert_eq(s.bytes, bytes, "bytes %llu want %llu", (unsigned long long)s.bytes,
		     (unsigned long long)bytes);
}

Test(store, put_get_inline)
{
	reap_digest_t d;
	uint8_t *p = blob(100, 1, &d);
	bool present = false;

	cr_assert_eq(cas_store_put(st, NULL, &d, p, 100, NULL), REAP_OK);
	cr_assert_eq(cas_store_has(st, &d), REAP_OK);
	cr_assert_eq(cas_store_find(st, &d, 1, &present), REAP_OK);
	cr_assert(present);
	assert_content(&d, p);
	assert_stats(1, 100);
	cr_assert_eq(count_files("cas"), 0, "inline blobs have no file");
	free(p);
}

Test(store, put_get_file)
{
	reap_digest_t d;
	uint8_t *p = blob(5000, 2, &d), buf[777];
	char path[256];
	cas_reader_t *r = NULL;
	struct stat sb;
	int64_t off = 0;
	size_t got;

	cr_assert_eq(cas_store_put(st, NULL, &d, p, 5000, NULL), REAP_OK);
	path_of(&d, path, sizeof(path));
	cr_assert_eq(stat(path, &sb), 0, "blob file %s", path);
	cr_assert_eq(sb.st_size, 5000);
	cr_assert_eq(count_files("tmp"), 0);
	assert_content(&d, p);
	assert_stats(1, 5000);

	cr_assert_eq(cas_reader_open(st, &d, &r), REAP_OK);
	cr_assert_eq(cas_reader_size(r), 5000);
	do {
		cr_assert_eq(cas_reader_read(r, off, buf, sizeof(buf), &got), REAP_OK);
		cr_assert(memcmp(buf, p + off, got) == 0);
		off += (int64_t)got;
	} while (got > 0);
	cr_assert_eq(off, 5000);
	cas_reader_free(r);
	free(p);
}

Test(store, put_existing_counts_once)
{
	reap_digest_t a, b;
	uint8_t *pa = blob(10, 3, &a), *pb = blob(3000, 4, &b);

	for (int i = 0; i < 3; i++) {
		cr_assert_eq(cas_store_put(st, NULL, &a, pa, 10, NULL), REAP_OK);
		cr_assert_eq(cas_store_put(st, NULL, &b, pb, 3000, NULL), REAP_OK);
	}
	assert_stats(2, 3010);
	cr_assert_eq(count_files("cas"), 1);
	cr_assert_eq(count_files("tmp"), 0);
	free(pa);
	free(pb);
}

/* Content of the right size but the wrong hash, inline and file-sized. */
Test(store, put_hash_mismatch_refused)
{
	static const size_t sizes[] = {100, 4000};

	for (size_t i = 0; i < 2; i++) {
		reap_digest_t d, other;
		uint8_t *p = blob(sizes[i], 5, &d), *q = blob(sizes[i], 6, &other);
		reap_errbuf_t eb = {{0}};

		cr_assert_eq(cas_store_put(st, NULL, &d, q, sizes[i], &eb), REAP_E_INVALID);
		cr_assert(strstr(eb.msg, "content does not match digest") != NULL, "%s", eb.msg);
		assert_missing(&d);
		assert_missing(&other);
		free(p);
		free(q);
	}
	assert_stats(0, 0);
	cr_assert_eq(count_files("cas"), 0);
	cr_assert_eq(count_files("tmp"), 0);
}

Test(store, put_size_mismatch_refused)
{
	reap_digest_t d;
	uint8_t *p = blob(3000, 7, &d);
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(cas_store_put(st, NULL, &d, p, 2999, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, "size 2999") != NULL, "%s", eb.msg);
	d.size = 50;
	cr_assert_eq(cas_store_put(st, NULL, &d, p, 3000, &eb), REAP_E_INVALID);
	assert_missing(&d);
	d.size = 3000;
	assert_missing(&d);
	assert_stats(0, 0);
	cr_assert_eq(count_files("cas"), 0);
	cr_assert_eq(count_files("tmp"), 0);
	free(p);
}

/* Stream in uneven chunks through both the in-memory and the file path. */
Test(store, writer_roundtrip)
{
	static const size_t sizes[] = {1, 1000, INLINE_MAX, INLINE_MAX + 1, 10000};

	for (size_t i = 0; i < 5; i++) {
		reap_digest_t d;
		uint8_t *p = blob(sizes[i], 8 + (unsigned)i, &d);
		cas_writer_t *w = NULL;
		reap_errbuf_t eb = {{0}};

		cr_assert_eq(cas_writer_new(st, NULL, &d, &w, &eb), REAP_OK, "%s", eb.msg);
		for (size_t off = 0; off < sizes[i];) {
			size_t n = sizes[i] - off < 333 ? sizes[i] - off : 333;
			cr_assert_eq(cas_writer_write(w, p + off, n, &eb), REAP_OK, "%s", eb.msg);
			off += n;
			cr_assert_eq(cas_writer_offset(w), (int64_t)off);
		}
		cr_assert_eq(cas_writer_commit(w, &eb), REAP_OK, "%s", eb.msg);
		cas_writer_free(w);
		assert_content(&d, p);
		free(p);
	}
	assert_stats(5, 1 + 1000 + INLINE_MAX + INLINE_MAX + 1 + 10000);
	cr_assert_eq(count_files("cas"), 2);
	cr_assert_eq(count_files("tmp"), 0);
}

Test(store, writer_hash_mismatch_refused)
{
	static const size_t sizes[] = {500, 6000};

	for (size_t i = 0; i < 2; i++) {
		reap_digest_t d, other;
		uint8_t *p = blob(sizes[i], 20, &d), *q = blob(sizes[i], 21, &other);
		cas_writer_t *w = NULL;
		reap_errbuf_t eb = {{0}};

		cr_assert_eq(cas_writer_new(st, NULL, &d, &w, &eb), REAP_OK);
		cr_assert_eq(cas_writer_write(w, q, sizes[i], &eb), REAP_OK);
		cr_assert_eq(cas_writer_commit(w, &eb), REAP_E_INVALID);
		cr_assert(strstr(eb.msg, "content does not match digest") != NULL, "%s", eb.msg);
		cr_assert_eq(count_files("tmp"), 0, "a refused commit removes its temporary");
		cas_writer_free(w);
		assert_missing(&d);
		free(p);
		free(q);
	}
	assert_stats(0, 0);
	cr_assert_eq(count_files("cas"), 0);
}

Test(store, writer_short_refused)
{
	reap_digest_t d;
	uint8_t *p = blob(4000, 22, &d);
	cas_writer_t *w = NULL;
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(cas_writer_new(st, NULL, &d, &w, &eb), REAP_OK);
	cr_assert_eq(cas_writer_write(w, p, 3999, &eb), REAP_OK);
	cr_assert_eq(cas_writer_commit(w, &eb), REAP_E_INVALID);
	cr_assert(strstr(eb.msg, "size 3999") != NULL, "%s", eb.msg);
	cr_assert_eq(cas_writer_commit(w, &eb), REAP_E_PRECONDITION, "commit only once");
	cr_assert_eq(cas_writer_write(w, p, 1, &eb), REAP_E_PRECONDITION);
	cas_writer_free(w);
	assert_missing(&d);
	cr_assert_eq(count_files("cas"), 0);
	cr_assert_eq(count_files("tmp"), 0);
	free(p);
}

Test(store, writer_overshoot_refused)
{
	static const size_t sizes[] = {100, 2000};

	for (size_t i = 0; i < 2; i++) {
		size_t n = sizes[i];
		reap_digest_t d;
		uint8_t *p = blob(n + 1, 23, &d);
		cas_writer_t *w = NULL;
		reap_errbuf_t eb = {{0}};

		cr_assert_eq(reap_digest_of(p, n, &d), REAP_OK);
		cr_assert_eq(cas_writer_new(st, NULL, &d, &w, &eb), REAP_OK);
		cr_assert_eq(cas_writer_write(w, p, n + 1, &eb), REAP_E_INVALID);
		cr_assert(strstr(eb.msg, "past the digest size") != NULL, "%s", eb.msg);
		cr_assert_eq(cas_writer_offset(w), 0);
		cr_assert_eq(cas_writer_write(w, p, n, &eb), REAP_OK);
		cr_assert_eq(cas_writer_write(w, p + n, 1, &eb), REAP_E_INVALID);
		cr_assert_eq(cas_writer_offset(w), (int64_t)n);
		/* The refused writes left the accepted bytes intact. */
		cr_assert_eq(cas_writer_commit(w, &eb), REAP_OK, "%s", eb.msg);
		cas_writer_free(w);
		assert_content(&d, p);
		free(p);
	}
}

Test(store, writer_free_uncommitted_leaves_nothing)
{
	reap_digest_t d, e;
	uint8_t *p = blob(8000, 24, &d), *q = blob(300, 25, &e);
	cas_writer_t *w = NULL, *v = NULL;

	cr_assert_eq(cas_writer_new(st, NULL, &d, &w, NULL), REAP_OK);
	cr_assert_eq(cas_writer_write(w, p, 4000, NULL), REAP_OK);
	cr_assert_eq(count_files("tmp"), 1);
	cr_assert_eq(cas_writer_new(st, NULL, &e, &v, NULL), REAP_OK);
	cr_assert_eq(cas_writer_write(v, q, 300, NULL), REAP_OK);
	cas_writer_free(w);
	cas_writer_free(v);
	cas_writer_free(NULL);
	cr_assert_eq(count_files("tmp"), 0);
	cr_assert_eq(count_files("cas"), 0);
	assert_missing(&d);
	assert_missing(&e);
	free(p);
	free(q);
}

Test(store, empty_blob)
{
	reap_digest_t d;
	cas_writer_t *w = NULL;
	cas_reader_t *r = NULL;
	bool present = false;
	void *data = NULL;
	size_t len = 7, got = 7;
	uint8_t buf[4];

	reap_digest_empty(&d);
	cr_assert_eq(cas_store_has(st, &d), REAP_OK);
	cr_assert_eq(cas_store_find(st, &d, 1, &present), REAP_OK);
	cr_assert(present);
	cr_assert_eq(cas_store_put(st, NULL, &d, "", 0, NULL), REAP_OK);
	cr_assert_eq(cas_writer_new(st, NULL, &d, &w, NULL), REAP_OK);
	cr_assert_eq(cas_writer_commit(w, NULL), REAP_OK);
	cas_writer_free(w);
	assert_stats(0, 0);

	cr_assert_eq(cas_reader_open(st, &d, &r), REAP_OK);
	cr_assert_eq(cas_reader_size(r), 0);
	cr_assert_eq(cas_reader_read(r, 0, buf, sizeof(buf), &got), REAP_OK);
	cr_assert_eq(got, 0);
	cr_assert_eq(cas_reader_read(r, 1, buf, sizeof(buf), &got), REAP_E_RANGE);
	cas_reader_free(r);

	cr_assert_eq(cas_store_get(st, &d, 0, &data, &len), REAP_OK);
	cr_assert_eq(len, 0);
	free(data);
	cr_assert_eq(cas_store_evict(st, 0), 0);
	cr_assert_eq(cas_store_has(st, &d), REAP_OK);

	/* The empty hash with a non-zero size is an ordinary, absent blob. */
	d.size = 1;
	assert_missing(&d);
}

Test(store, reader_offsets)
{
	static const size_t sizes[] = {200, 3000};

	for (size_t i = 0; i < 2; i++) {
		int64_t n = (int64_t)sizes[i];
		reap_digest_t d;
		uint8_t *p = blob(sizes[i], 30, &d), buf[64];
		cas_reader_t *r = NULL;
		size_t got = 99;

		cr_assert_eq(cas_store_put(st, NULL, &d, p, sizes[i], NULL), REAP_OK);
		cr_assert_eq(cas_reader_open(st, &d, &r), REAP_OK);
		cr_assert_eq(cas_reader_read(r, -1, buf, sizeof(buf), &got), REAP_E_RANGE);
		cr_assert_eq(got, 0);
		cr_assert_eq(cas_reader_read(r, n + 1, buf, sizeof(buf), &got), REAP_E_RANGE);
		cr_assert_eq(cas_reader_read(r, n, buf, sizeof(buf), &got), REAP_OK);
		cr_assert_eq(got, 0, "exactly at the end reads nothing");
		cr_assert_eq(cas_reader_read(r, n - 10, buf, sizeof(buf), &got), REAP_OK);
		cr_assert_eq(got, 10);
		cr_assert(memcmp(buf, p + n - 10, 10) == 0);
		cr_assert_eq(cas_reader_read(r, 17, buf, sizeof(buf), &got), REAP_OK);
		cr_assert_eq(got, sizeof(buf));
		cr_assert(memcmp(buf, p + 17, sizeof(buf)) == 0);
		cr_assert_eq(cas_reader_read(r, 5, buf, 0, &got), REAP_OK);
		cr_assert_eq(got, 0);
		cas_reader_free(r);
		free(p);
	}
}

Test(store, get_limits)
{
	reap_digest_t d, missing;
	uint8_t *p = blob(2000, 31, &d), *q = blob(10, 32, &missing);
	void *data = (void *)1;
	size_t len = 1;

	cr_assert_eq(cas_store_put(st, NULL, &d, p, 2000, NULL), REAP_OK);
	cr_assert_eq(cas_store_get(st, &d, 1999, &data, &len), REAP_E_EXHAUSTED);
	cr_assert_null(data);
	cr_assert_eq(cas_store_get(st, &missing, 100, &data, &len), REAP_E_NOT_FOUND);
	cr_assert_null(data);
	assert_content(&d, p);
	free(p);
	free(q);
}

/* 300 digests, every third stored: crosses the MultiGet chunking. */
Test(store, find_many)
{
	enum { N = 300 };
	reap_digest_t ds[N];
	bool present[N];

	for (unsigned i = 0; i < N; i++) {
		size_t len = i % 2 ? 50 + i : 1500 + i;
		uint8_t *p = blob(len, 100 + i, &ds[i]);
		if (i % 3 == 0)
			cr_assert_eq(cas_store_put(st, NULL, &ds[i], p, len, NULL), REAP_OK);
		free(p);
	}
	reap_digest_empty(&ds[N - 1]);
	memset(present, 0, sizeof(present));
	cr_assert_eq(cas_store_find(st, ds, N, present), REAP_OK);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(present[i], i % 3 == 0 || i == N - 1, "digest %u", i);
	cr_assert_eq(cas_store_find(st, ds, 0, present), REAP_OK);
}

/*
 * Visibility over several MultiGet chunks, from SST files (after a reopen),
 * with two scopes where one is a prefix of the other: every grant key must
 * be looked up in the order the column family sorts them (store_vis.c sorts
 * the keys itself), or present blobs would read as missing.
 */
Test(store, visible_many_keys_two_scopes)
{
	enum { N = 700 };
	const char *both[] = {"t1", "t"}, *short_only[] = {"t"};
	reap_digest_t *ds = calloc(N, sizeof(*ds));
	bool *present = calloc(N, sizeof(*present));
	cr_assert(ds != NULL && present != NULL);
	for (unsigned i = 0; i < N; i++) {
		uint8_t *p = blob(1 + i % 300, 9000 + i, &ds[i]);
		if (i % 3 != 2)
			cr_assert_eq(cas_store_put(st, i % 3 == 0 ? "t" : "t1", &ds[i], p,
						   (size_t)ds[i].size, NULL),
				     REAP_OK);
		free(p);
	}
	reopen();
	cr_assert_eq(cas_store_visible(st, both, 2, ds, N, present), REAP_OK);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(present[i], i % 3 != 2, "digest %u in t1 or t", i);
	cr_assert_eq(cas_store_visible(st, short_only, 1, ds, N, present), REAP_OK);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(present[i], i % 3 == 0, "digest %u in t", i);
	free(present);
	free(ds);
}

/*
 * A client may name digests that all share a first byte (they need not be
 * stored): visibility stays exact, and the lookup's sort of such a chunk
 * takes the n log n path (store_vis.c), not an insertion sort.
 */
Test(store, visible_digests_sharing_a_first_byte)
{
	enum { N = 600 };
	const char *scopes[] = {"t1"};
	reap_digest_t *ds = calloc(N, sizeof(*ds));
	bool *present = calloc(N, sizeof(*present));
	cr_assert(ds != NULL && present != NULL);
	for (unsigned i = 0; i < N; i++) {
		if (i % 4 == 0) {
			uint8_t *p = blob(1 + i, 7000 + i, &ds[i]);
			cr_assert_eq(cas_store_put(st, "t1", &ds[i], p, (size_t)ds[i].size, NULL),
				     REAP_OK);
			free(p);
			continue;
		}
		char hex[REAP_HASH_HEX_LEN + 1];
		reap_errbuf_t eb = {{0}};
		snprintf(hex, sizeof(hex), "ab%062x", i * 2654435761u);
		cr_assert_eq(reap_digest_parse(hex, strlen(hex), 100 + i, &ds[i], &eb), REAP_OK,
			     "%s", eb.msg);
	}
	reopen();
	cr_assert_eq(cas_store_visible(st, scopes, 1, ds, N, present), REAP_OK);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(present[i], i % 4 == 0, "digest %u", i);
	free(present);
	free(ds);
}

/*
 * cas_store_put_many: 1200 items (more than one commit group), inline and
 * file-sized, with duplicates, a hash mismatch, a size mismatch, the empty
 * blob and blobs already stored; every result as cas_store_put would give.
 */
Test(store, put_many)
{
	enum { N = 1200 };
	cas_put_item_t *items = calloc(N, sizeof(*items));
	reap_errbuf_t *ebs = calloc(N, sizeof(*ebs));
	uint8_t **ps = calloc(N, sizeof(*ps));
	const char *scopes[] = {"t1"};
	bool *present = calloc(N, sizeof(*present));
	reap_digest_t *ds = calloc(N, sizeof(*ds));
	cr_assert(items != NULL && ebs != NULL && ps != NULL && present != NULL && ds != NULL);
	for (unsigned i = 0; i < N; i++) {
		size_t len = i % 97 == 0 ? 2000 + i : 1 + i % 700; /* some go to files */
		unsigned seed = i % 10 == 9 ? 5000 + i - 1 : 5000 + i; /* every 10th repeats the last */

		ps[i] = blob(i % 10 == 9 ? items[i - 1].len : len, seed, &ds[i]);
		items[i] = (cas_put_item_t){.d = ds[i], .data = ps[i], .len = (size_t)ds[i].size,
					    .eb = &ebs[i], .rc = 12345};
	}
	/* already stored (with another scope's grant): only touched and granted */
	cr_assert_eq(cas_store_put(st, "t2", &ds[3], ps[3], items[3].len, NULL), REAP_OK);
	/* wrong hash, then wrong length: refused, nothing stored */
	items[5].data = ps[6];
	items[7].len--;
	reap_digest_empty(&items[11].d);
	items[11].len = 0;
	reap_digest_empty(&ds[11]);

	cr_assert_eq(cas_store_put_many(st, "t1", items, N), REAP_OK);
	for (unsigned i = 0; i < N; i++) {
		bool bad = i == 5 || i == 7;
		cr_assert_eq(items[i].rc, bad ? REAP_E_INVALID : REAP_OK, "item %u: %d %s", i,
			     items[i].rc, ebs[i].msg);
		if (bad)
			cr_assert(strstr(ebs[i].msg, "does not match digest") != NULL, "%s", ebs[i].msg);
	}
	cr_assert_eq(cas_store_visible(st, scopes, 1, ds, N, present), REAP_OK);
	for (unsigned i = 0; i < N; i++) {
		cr_assert_eq(present[i], i != 5 && i != 7, "digest %u", i);
		if (i != 5 && i != 7)
			assert_content(&ds[i], ps[i]);
	}
	cr_assert_eq(cas_store_has(st, &ds[5]), REAP_E_NOT_FOUND);
	cr_assert_eq(cas_store_has(st, &ds[7]), REAP_E_NOT_FOUND);
	/* the empty blob is never stored; blob 3 was counted by its first put */
	{
		cas_store_stats_t sst;
		cas_store_stats(st, &sst);
		uint64_t want_bytes = 0, want_blobs = 0;
		for (unsigned i = 0; i < N; i++) {
			if (i % 10 == 9 || i == 5 || i == 7 || i == 11)
				continue;
			want_blobs++;
			want_bytes += (uint64_t)ds[i].size;
		}
		cr_assert_eq(sst.blobs, want_blobs, "blobs %llu want %llu",
			     (unsigned long long)sst.blobs, (unsigned long long)want_blobs);
		cr_assert_eq(sst.bytes, want_bytes);
	}

	/* again: everything is stored, nothing is counted twice, the grants stay */
	for (unsigned i = 0; i < N; i++)
		items[i].rc = 12345;
	cr_assert_eq(cas_store_put_many(st, "t1", items, N), REAP_OK);
	reopen();
	cr_assert_eq(cas_store_visible(st, scopes, 1, ds, N, present), REAP_OK);
	for (unsigned i = 0; i < N; i++)
		cr_assert_eq(present[i], i != 5 && i != 7, "digest %u after reopen", i);

	/* a scope that is too long fails every item */
	{
		char longscope[300];
		memset(longscope, 'x', sizeof(longscope) - 1);
		longscope[sizeof(longscope) - 1] = '\0';
		cr_assert_eq(cas_store_put_many(st, longscope, items, 2), REAP_E_INVALID);
		cr_assert_eq(items[0].rc, REAP_E_INVALID);
		cr_assert_eq(items[1].rc, REAP_E_INVALID);
	}
	cr_assert_eq(cas_store_put_many(st, NULL, items, 0), REAP_OK);
	for (unsigned i = 0; i < N; i++)
		free(ps[i]);
	free(ps);
	free(ds);
	free(present);
	free(ebs);
	free(items);
}

Test(store, ac_per_instance)
{
	reap_digest_t action, other;
	uint8_t *p = blob(64, 40, &action), *q = blob(64, 41, &other);
	char long_name[300];
	void *data = NULL;
	size_t len = 0;
	cas_store_stats_t s;

	cr_assert_eq(cas_ac_put(st, "team/a", &action, "one", 3, NULL), REAP_OK);
	cr_assert_eq(cas_ac_put(st, "team/b", &action, "two!", 4, NULL), REAP_OK);
	cr_assert_eq(cas_ac_put(st, "", &action, "three", 5, NULL), REAP_OK);

	cr_assert_eq(cas_ac_get(st, "team/a", &action, &data, &len), REAP_OK);
	cr_assert(len == 3 && memcmp(data, "one", 3) == 0);
	free(data);
	cr_assert_eq(cas_ac_get(st, "team/b", &action, &data, &len), REAP_OK);
	cr_assert(len == 4 && memcmp(data, "two!", 4) == 0);
	free(data);
	cr_assert_eq(cas_ac_get(st, NULL, &action, &data, &len), REAP_OK);
	cr_assert(len == 5 && memcmp(data, "three", 5) == 0);
	free(data);
	cr_assert_eq(cas_ac_get(st, "team/c", &action, &data, &len), REAP_E_NOT_FOUND);
	cr_assert_eq(cas_ac_get(st, "team/a", &other, &data, &len), REAP_E_NOT_FOUND);
	cr_assert_null(data);
	/* "team/a" + action must not collide with a longer name sharing its prefix. */
	cr_assert_eq(cas_ac_get(st, "team/ab", &action, &data, &len), REAP_E_NOT_FOUND);

	cr_assert_eq(cas_ac_put(st, "team/a", &action, "uno", 3, NULL), REAP_OK);
	cr_assert_eq(cas_ac_get(st, "team/a", &action, &data, &len), REAP_OK);
	cr_assert(len == 3 && memcmp(data, "uno", 3) == 0);
	free(data);
	cr_assert_eq(cas_ac_put(st, "team/a", &other, "", 0, NULL), REAP_OK);
	cr_assert_eq(cas_ac_get(st, "team/a", &other, &data, &len), REAP_OK);
	cr_assert_eq(len, 0);
	free(data);

	memset(long_name, 'x', 256);
	long_name[256] = '\0';
	cr_assert_eq(cas_ac_put(st, long_name, &action, "x", 1, NULL), REAP_E_INVALID);
	long_name[255] = '\0';
	cr_assert_eq(cas_ac_put(st, long_name, &action, "x", 1, NULL), REAP_OK);

	cas_store_stats(st, &s);
	cr_assert_eq(s.ac_entries_written, 6);
	assert_stats(0, 0);
	free(p);
	free(q);
}

Test(store, reopen_keeps_everything)
{
	enum { N = 30 };
	reap_digest_t ds[N], action;
	uint8_t *ps[N];
	cas_store_stats_t before, after;
	void *data = NULL;
	size_t len = 0;

	for (unsigned i = 0; i < N; i++) {
		size_t n = i % 5 == 0 ? 2000 + i : 10 + i;
		ps[i] = blob(n, 200 + i, &ds[i]);
		cr_assert_eq(cas_store_put(st, NULL, &ds[i], ps[i], n, NULL), REAP_OK);
	}
	free(blob(1, 1, &action));
	cr_assert_eq(cas_ac_put(st, "i", &action, "result", 6, NULL), REAP_OK);
	cas_store_stats(st, &before);

	reopen();
	cas_store_stats(st, &after);
	cr_assert_eq(after.blobs, before.blobs);
	cr_assert_eq(after.bytes, before.bytes);
	cr_assert_eq(after.blobs, N);
	for (unsigned i = 0; i < N; i++) {
		assert_content(&ds[i], ps[i]);
		free(ps[i]);
	}
	cr_assert_eq(cas_ac_get(st, "i", &action, &data, &len), REAP_OK);
	cr_assert(len == 6 && memcmp(data, "result", 6) == 0);
	free(data);
	cr_assert_eq(count_files("cas"), N / 5);
}

/* A crash between rename and the record's batch, and junk in tmp/. */
Test(store, recovery_removes_orphans)
{
	reap_digest_t kept, orphan;
	uint8_t *p = blob(3000, 50, &kept), *q = blob(3000, 51, &orphan);
	char path[256], hex[REAP_HASH_HEX_LEN + 1];

	cr_assert_eq(cas_store_put(st, NULL, &kept, p, 3000, NULL), REAP_OK);
	cas_store_close(st);
	st = NULL;

	path_of(&orphan, path, sizeof(path));
	*strrchr(path, '/') = '\0';
	mkdir(path, 0700);
	path_of(&orphan, path, sizeof(path));
	write_file(path, "orphan: the record was never written");
	reap_digest_hex(&kept, hex);
	snprintf(path, sizeof(path), "%s/cas/%.2s/not-a-blob", dir, hex);
	write_file(path, "junk");
	snprintf(path, sizeof(path), "%s/cas/%.2s/%s-03000", dir, hex, hex);
	write_file(path, "non-canonical name of a stored blob");
	snprintf(path, sizeof(path), "%s/tmp/blob-abc123", dir);
	write_file(path, "half a blob");
	snprintf(path, sizeof(path), "%s/tmp/other", dir);
	write_file(path, "x");
	cr_assert_eq(count_files("cas"), 4);
	cr_assert_eq(count_files("tmp"), 2);

	reopen();
	cr_assert_eq(count_files("cas"), 1);
	cr_assert_eq(count_files("tmp"), 0);
	assert_content(&kept, p);
	assert_missing(&orphan);
	assert_stats(1, 3000);
	free(p);
	free(q);
}

Test(store, recovery_drops_records_of_missing_files)
{
	reap_digest_t gone, bad, kept, small;
	uint8_t *a = blob(3000, 60, &gone), *b = blob(4000, 61, &kept), *c = blob(20, 62, &small);
	uint8_t *e = blob(5000, 63, &bad);
	char path[256];

	cr_assert_eq(cas_store_put(st, NULL, &gone, a, 3000, NULL), REAP_OK);
	cr_assert_eq(cas_store_put(st, NULL, &kept, b, 4000, NULL), REAP_OK);
	cr_assert_eq(cas_store_put(st, NULL, &small, c, 20, NULL), REAP_OK);
	cr_assert_eq(cas_store_put(st, NULL, &bad, e, 5000, NULL), REAP_OK);
	cas_store_close(st);
	st = NULL;
	path_of(&gone, path, sizeof(path));
	cr_assert_eq(unlink(path), 0);
	path_of(&bad, path, sizeof(path));
	cr_assert_eq(truncate(path, 100), 0);

	reopen();
	assert_missing(&gone);
	assert_missing(&bad);
	assert_content(&kept, b);
	assert_content(&small, c);
	assert_stats(2, 4020);
	cr_assert_eq(count_files("cas"), 1, "the truncated file is removed too");
	/* Their lru entries went with them: evicting everything counts only the two left. */
	cr_assert_eq(cas_store_evict(st, 0), 2);
	assert_stats(0, 0);
	free(a);
	free(b);
	free(c);
	free(e);
}

Test(store, open_refuses_a_file_as_folder)
{
	char path[128];
	cas_store_config_t c = cfg;
	reap_errbuf_t eb = {{0}};

	snprintf(path, sizeof(path), "%s/plain", dir);
	write_file(path, "x");
	c.path = path;
	cr_assert_null(cas_store_open(&c, &eb));
	cr_assert(strstr(eb.msg, "not a directory") != NULL, "%s", eb.msg);
	c.path = "";
	cr_assert_null(cas_store_open(&c, &eb));
	cas_store_close(NULL);

	/* Missing parents are created. */
	snprintf(path, sizeof(path), "%s/a/b/store", dir);
	c.path = path;
	cas_store_t *s2 = cas_store_open(&c, &eb);
	cr_assert_not_null(s2, "%s", eb.msg);
	cas_store_close(s2);
}
