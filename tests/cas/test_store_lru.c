/*
 * test_store_lru.c - the blob store's last use, eviction and concurrency.
 *
 * Time comes from a fake clock (cas_store_set_clock in cas/store_int.h) so
 * the LRU order is exact without sleeping. Each test gets a fresh data
 * folder under /tmp, removed afterwards.
 */
#include <criterion/criterion.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cas/store.h"
#include "cas/store_int.h"
#include "common/digest.h"
#include "common/log.h"

#define INLINE_MAX 1024

static char dir[64];
static cas_store_config_t cfg;
static cas_store_t *st;
static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
	return *(uint64_t *)arg;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void reopen(bool fake)
{
	reap_errbuf_t eb = {{0}};

	cas_store_close(st);
	st = cas_store_open(&cfg, &eb);
	cr_assert_not_null(st, "open: %s", eb.msg);
	if (fake)
		cas_store_set_clock(st, fake_clock, &fake_now);
}

/* Open with a capacity and touch interval; the fake clock starts at 1000. */
static void open_with(uint64_t capacity, int touch_interval_s)
{
	cfg.capacity_bytes = capacity;
	cfg.touch_interval_s = touch_interval_s;
	fake_now = 1000;
	reopen(true);
}

static void setup(void)
{
	reap_log_set_level(REAP_LOG_WARN); /* keep the output to what matters */
	strcpy(dir, "/tmp/reap-store-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	cfg = (cas_store_config_t){.path = dir, .inline_max = INLINE_MAX, .touch_interval_s = -1,
				   .no_sync = true};
	st = NULL;
}

static void teardown(void)
{
	cas_store_close(st);
	st = NULL;
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(lru, .init = setup, .fini = teardown);

static uint8_t *blob(size_t len, unsigned seed, reap_digest_t *d)
{
	uint8_t *p = malloc(len > 0 ? len : 1);

	cr_assert_not_null(p);
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 131 + seed * 7919 + (i >> 7)) & 0xff);
	cr_assert_eq(reap_digest_of(p, len, d), REAP_OK);
	return p;
}

static void put(const reap_digest_t *d, const uint8_t *p)
{
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(cas_store_put(st, NULL, d, p, (size_t)d->size, &eb), REAP_OK, "%s", eb.msg);
}

/* Presence via find (which refreshes the last use of a found blob). */
static bool present(const reap_digest_t *d)
{
	bool found = false;

	cr_assert_eq(cas_store_find(st, d, 1, &found), REAP_OK);
	return found;
}

static int files_counted;
static int count_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (flag == FTW_F)
		files_counted++;
	return 0;
}

static int count_files(const char *sub)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/%s", dir, sub);
	files_counted = 0;
	cr_assert_eq(nftw(p, count_entry, 16, FTW_PHYS), 0);
	return files_counted;
}

static cas_store_stats_t stats(void)
{
	cas_store_stats_t s;

	cas_store_stats(st, &s);
	return s;
}

/* Five blobs at t=1..5 fill the store; reading the oldest saves it; a sixth evicts the next two. */
Test(lru, eviction_follows_last_use)
{
	reap_digest_t d[6];
	uint8_t *p[6];

	open_with(1000, -1);
	for (unsigned i = 0; i < 6; i++)
		p[i] = blob(200, i, &d[i]);
	for (unsigned i = 0; i < 5; i++) {
		fake_now = 1 + i;
		put(&d[i], p[i]);
	}
	cr_assert_eq(stats().bytes, 1000, "at capacity, nothing evicted yet");
	cr_assert_eq(stats().evictions, 0);

	fake_now = 6;
	cr_assert_eq(cas_store_has(st, &d[0]), REAP_OK); /* d0 is now the newest but one */
	fake_now = 7;
	put(&d[5], p[5]); /* 1200 > 1000: evict to <= 950 */

	cr_assert_eq(stats().evictions, 2);
	cr_assert_eq(stats().bytes, 800);
	cr_assert(present(&d[0]), "recently read blob survives");
	cr_assert(!present(&d[1]));
	cr_assert(!present(&d[2]));
	cr_assert(present(&d[3]));
	cr_assert(present(&d[4]));
	cr_assert(present(&d[5]));
	for (unsigned i = 0; i < 6; i++)
		free(p[i]);
}

/* Every kind of use counts: find, reader_open, get and a put of a stored blob. */
Test(lru, every_use_refreshes)
{
	reap_digest_t d[5];
	uint8_t *p[5];
	cas_reader_t *r = NULL;
	void *data = NULL;
	size_t len = 0;
	bool found;

	open_with(0, -1);
	for (unsigned i = 0; i < 5; i++) {
		p[i] = blob(100, 10 + i, &d[i]);
		fake_now = 10 + i;
		put(&d[i], p[i]);
	}
	fake_now = 20;
	cr_assert_eq(cas_store_find(st, &d[0], 1, &found), REAP_OK);
	fake_now = 21;
	cr_assert_eq(cas_reader_open(st, &d[1], &r), REAP_OK);
	cas_reader_free(r);
	fake_now = 22;
	cr_assert_eq(cas_store_get(st, &d[2], 100, &data, &len), REAP_OK);
	free(data);
	fake_now = 23;
	put(&d[3], p[3]);
	/* d4 (t=14) is now the least recently used, then d0..d3 in order of use. */
	cr_assert_eq(cas_store_evict(st, 400), 1);
	cr_assert(!present(&d[4]));
	for (unsigned i = 0; i < 4; i++) {
		cr_assert_eq(cas_store_evict(st, 300 - 100 * i), 1);
		cr_assert(!present(&d[i]), "d%u evicted in order", i);
	}
	cr_assert_eq(stats().blobs, 0);
	for (unsigned i = 0; i < 5; i++)
		free(p[i]);
}

/* With a 60 s interval, a read 30 s after the last use does not count; one 70 s after does. */
Test(lru, touch_interval_limits_refreshes)
{
	reap_digest_t a, b;
	uint8_t *pa = blob(100, 20, &a), *pb = blob(100, 21, &b);

	open_with(0, 60);
	fake_now = 100;
	put(&a, pa);
	fake_now = 110;
	put(&b, pb);
	fake_now = 130;
	cr_assert_eq(cas_store_has(st, &a), REAP_OK); /* too soon: a keeps t=100 */
	cr_assert_eq(cas_store_evict(st, 100), 1);
	cr_assert_eq(cas_store_has(st, &a), REAP_E_NOT_FOUND);
	cr_assert_eq(cas_store_has(st, &b), REAP_OK);

	fake_now = 200;
	put(&a, pa); /* a at 200, b at 110 */
	fake_now = 300;
	cr_assert_eq(cas_store_has(st, &b), REAP_OK); /* 190 s later: b moves to 300 */
	cr_assert_eq(cas_store_evict(st, 100), 1);
	cr_assert_eq(cas_store_has(st, &a), REAP_E_NOT_FOUND);
	cr_assert_eq(cas_store_has(st, &b), REAP_OK);
	free(pa);
	free(pb);
}

/* The order survives a reopen (it lives in RocksDB, not in memory). */
Test(lru, order_survives_reopen)
{
	reap_digest_t d[3];
	uint8_t *p[3];

	open_with(0, -1);
	for (unsigned i = 0; i < 3; i++) {
		p[i] = blob(2000, 30 + i, &d[i]); /* file blobs */
		fake_now = 50 - i;                /* d2 oldest */
		put(&d[i], p[i]);
	}
	reopen(true);
	cr_assert_eq(stats().blobs, 3);
	cr_assert_eq(cas_store_evict(st, 4000), 1);
	cr_assert(!present(&d[2]));
	cr_assert_eq(count_files("cas"), 2, "an evicted blob's file is removed");
	cr_assert_eq(cas_store_evict(st, 0), 2);
	cr_assert_eq(count_files("cas"), 0);
	cr_assert_eq(stats().evictions, 3);
	for (unsigned i = 0; i < 3; i++)
		free(p[i]);
}

/* Lowering the capacity takes effect when the store opens. */
Test(lru, open_evicts_down_to_capacity)
{
	reap_digest_t d[10];
	uint8_t *p[10];

	open_with(0, -1);
	for (unsigned i = 0; i < 10; i++) {
		p[i] = blob(100, 40 + i, &d[i]);
		fake_now = 100 + i;
		put(&d[i], p[i]);
	}
	cas_store_close(st);
	st = NULL;
	cfg.capacity_bytes = 500;
	reopen(true);
	cr_assert_eq(stats().bytes, 400, "evicted to 95%% of capacity");
	for (unsigned i = 0; i < 10; i++) {
		cr_assert_eq(present(&d[i]), i >= 6, "d%u", i);
		free(p[i]);
	}
}

Test(lru, reader_survives_eviction)
{
	reap_digest_t a, b;
	uint8_t *pa = blob(500, 50, &a), *pb = blob(50000, 51, &b), *buf = malloc(50000);
	cas_reader_t *ra = NULL, *rb = NULL;
	size_t got = 0;

	open_with(0, -1);
	put(&a, pa);
	put(&b, pb);
	cr_assert_eq(cas_reader_open(st, &a, &ra), REAP_OK);
	cr_assert_eq(cas_reader_open(st, &b, &rb), REAP_OK);
	cr_assert_eq(cas_store_evict(st, 0), 2);
	cr_assert(!present(&a));
	cr_assert(!present(&b));
	cr_assert_eq(count_files("cas"), 0);

	cr_assert_eq(cas_reader_read(ra, 0, buf, 50000, &got), REAP_OK);
	cr_assert(got == 500 && memcmp(buf, pa, 500) == 0);
	cr_assert_eq(cas_reader_read(rb, 0, buf, 50000, &got), REAP_OK);
	cr_assert(got == 50000 && memcmp(buf, pb, 50000) == 0);
	cas_reader_free(ra);
	cas_reader_free(rb);
	free(pa);
	free(pb);
	free(buf);
}

Test(lru, capacity_holds_under_many_puts)
{
	open_with(20000, -1);
	for (unsigned i = 0; i < 200; i++) {
		reap_digest_t d;
		uint8_t *p = blob(i % 4 ? 500 : 1500, 1000 + i, &d);
		fake_now = 1000 + i;
		put(&d, p);
		free(p);
		cr_assert_leq(stats().bytes, 20000 + 1500);
	}
	cr_assert_leq(stats().bytes, 20000);
	cr_assert_gt(stats().evictions, 100);
	cr_assert_eq(count_files("tmp"), 0);
}

/* ---- concurrency ---- */

enum { THREADS = 8, ROUNDS = 20 };

struct same_arg {
	reap_digest_t d[3];
	uint8_t *p[3];
	int failures;
};

static void *put_same(void *arg)
{
	struct same_arg *a = arg;

	for (int r = 0; r < ROUNDS; r++) {
		cas_writer_t *w = NULL;
		if (cas_store_put(st, NULL, &a->d[0], a->p[0], (size_t)a->d[0].size, NULL) != REAP_OK ||
		    cas_store_put(st, NULL, &a->d[1], a->p[1], (size_t)a->d[1].size, NULL) != REAP_OK ||
		    cas_writer_new(st, NULL, &a->d[2], &w, NULL) != REAP_OK ||
		    cas_writer_write(w, a->p[2], (size_t)a->d[2].size, NULL) != REAP_OK ||
		    cas_writer_commit(w, NULL) != REAP_OK)
			__atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
		cas_writer_free(w);
	}
	return NULL;
}

Test(lru, concurrent_puts_of_one_digest_count_once)
{
	struct same_arg a = {.failures = 0};
	pthread_t t[THREADS];

	cfg.touch_interval_s = -1;
	reopen(false);
	a.p[0] = blob(300, 60, &a.d[0]);
	a.p[1] = blob(20000, 61, &a.d[1]);
	a.p[2] = blob(30000, 62, &a.d[2]);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, put_same, &a), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(a.failures, 0);
	cr_assert_eq(stats().blobs, 3);
	cr_assert_eq(stats().bytes, 50300);
	cr_assert_eq(count_files("cas"), 2);
	cr_assert_eq(count_files("tmp"), 0);
	reopen(false);
	cr_assert_eq(stats().blobs, 3);
	cr_assert_eq(stats().bytes, 50300);
	for (int i = 0; i < 3; i++)
		free(a.p[i]);
}

struct mix_arg {
	unsigned id;
	int failures;
};

/* Distinct blobs (some shared between threads), reads and finds, over capacity. */
static void *mixed(void *arg)
{
	struct mix_arg *a = arg;
	uint8_t buf[4096];

	for (unsigned r = 0; r < 60; r++) {
		unsigned seed = (a->id * 1000 + r) % 7 == 0 ? r : a->id * 1000 + r;
		size_t len = r % 3 == 0 ? 3000 + r : 200 + r;
		reap_digest_t d;
		uint8_t *p = blob(len, 5000 + seed, &d);
		cas_reader_t *rd = NULL;
		size_t got;
		bool found;

		if (cas_store_put(st, NULL, &d, p, len, NULL) != REAP_OK ||
		    cas_store_find(st, &d, 1, &found) != REAP_OK)
			__atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
		/* It may be evicted already; if the reader opens, it reads the whole blob. */
		if (cas_reader_open(st, &d, &rd) == REAP_OK) {
			if (cas_reader_read(rd, 0, buf, sizeof(buf), &got) != REAP_OK || got != len ||
			    memcmp(buf, p, len) != 0)
				__atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
			cas_reader_free(rd);
		}
		free(p);
	}
	return NULL;
}

Test(lru, concurrent_mixed_load_keeps_counters_exact)
{
	struct mix_arg a[THREADS];
	pthread_t t[THREADS];
	cas_store_stats_t s1, s2;

	cfg.capacity_bytes = 60000;
	cfg.touch_interval_s = -1;
	reopen(false);
	for (unsigned i = 0; i < THREADS; i++) {
		a[i] = (struct mix_arg){.id = i + 1};
		cr_assert_eq(pthread_create(&t[i], NULL, mixed, &a[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(a[i].failures, 0, "thread %d", i);
	cr_assert_eq(count_files("tmp"), 0);
	cas_store_stats(st, &s1);
	cr_assert_gt(s1.evictions, 0);
	/* The running counters must equal what a fresh scan of meta finds. */
	reopen(false);
	cas_store_stats(st, &s2);
	cr_assert_eq(s2.blobs, s1.blobs);
	cr_assert_eq(s2.bytes, s1.bytes);
	cr_assert_eq(cas_store_evict(st, 0), (int64_t)s1.blobs);
	cr_assert_eq(count_files("cas"), 0);
}

/*
 * Batch puts (several stripes held at once) from every thread, overlapping
 * between threads, beside single puts, grants, visibility lookups and
 * eviction: no deadlock, every result OK, counters exact, grants gone with
 * their blobs.
 */
static void *batches(void *arg)
{
	enum { B = 300 };
	struct mix_arg *a = arg;
	cas_put_item_t items[B];
	uint8_t *ps[B];
	const char *scope = a->id % 2 ? "odd" : "even";
	bool vis[B];
	reap_digest_t ds[B];

	for (unsigned r = 0; r < 8; r++) {
		for (unsigned i = 0; i < B; i++) {
			unsigned seed = i % 2 ? 90000 + r * B + i : a->id * 100000 + r * B + i;
			ps[i] = blob(i % 50 == 0 ? 1500 + i : 20 + i % 300, seed, &ds[i]);
			items[i] = (cas_put_item_t){.d = ds[i], .data = ps[i], .len = (size_t)ds[i].size};
		}
		if (cas_store_put_many(st, scope, items, B) != REAP_OK)
			__atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
		for (unsigned i = 0; i < B; i++)
			if (items[i].rc != REAP_OK)
				__atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
		if (cas_store_put(st, scope, &ds[r], ps[r], (size_t)ds[r].size, NULL) != REAP_OK ||
		    cas_store_visible(st, &scope, 1, ds, B, vis) != REAP_OK)
			__atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
		for (unsigned i = 0; i < B; i++)
			free(ps[i]);
	}
	return NULL;
}

Test(lru, concurrent_batch_puts_keep_counters_exact)
{
	struct mix_arg a[THREADS];
	pthread_t t[THREADS];
	cas_store_stats_t s1, s2;
	const char *scopes[] = {"odd"};
	reap_digest_t d;
	bool vis = true;
	uint8_t *p;

	cfg.capacity_bytes = 200000;
	cfg.touch_interval_s = -1;
	reopen(false);
	for (unsigned i = 0; i < THREADS; i++) {
		a[i] = (struct mix_arg){.id = i + 1};
		cr_assert_eq(pthread_create(&t[i], NULL, batches, &a[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(a[i].failures, 0, "thread %d", i);
	cr_assert_eq(count_files("tmp"), 0);
	cas_store_stats(st, &s1);
	cr_assert_gt(s1.evictions, 0);
	reopen(false);
	cas_store_stats(st, &s2);
	cr_assert_eq(s2.blobs, s1.blobs);
	cr_assert_eq(s2.bytes, s1.bytes);
	cr_assert_eq(cas_store_evict(st, 0), (int64_t)s1.blobs);
	cr_assert_eq(count_files("cas"), 0);
	/* an evicted blob's grant went with it: stored again by nobody, it is invisible */
	p = blob(21, 90000 + 1, &d);
	cr_assert_eq(cas_store_put(st, NULL, &d, p, 21, NULL), REAP_OK);
	cr_assert_eq(cas_store_visible(st, scopes, 1, &d, 1, &vis), REAP_OK);
	cr_assert(!vis);
	free(p);
}
