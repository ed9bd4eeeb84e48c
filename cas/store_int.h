/*
 * store_int.h - private layout of the blob store (cas/store.h), shared by
 * store.c (open, close, recovery, action cache), store_blob.c (puts,
 * writers, readers) and store_lru.c (last use, eviction), and by the tests.
 * Nothing outside cas/store*.c and tests/cas/ includes it.
 *
 * Record formats (all integers big-endian, so keys sort as numbers):
 *   meta  digest key (40 B)               -> u8 kind, u64 size, u64 last_use
 *   data  digest key                      -> blob bytes (kind inline only)
 *   lru   u64 last_use, digest key (48 B) -> empty
 *   ac    u8 len, instance, digest key    -> serialized ActionResult
 *   vis   digest key, scope (instance)    -> u64 last_use hint: scope may read the blob
 * last_use is in wall-clock seconds since the epoch. A vis key's scope is
 * the rest of the key after the fixed 40-byte digest key (no length byte),
 * so all grants of one blob share that prefix and sort together. Its value
 * is a last_use the blob had (never newer than meta's), so a lookup whose
 * hint says no refresh is due need not read meta at all.
 */
#ifndef REAP_CAS_STORE_INT_H
#define REAP_CAS_STORE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rocksdb/c.h>

#include "cas/store.h"

#define CAS_STRIPES 256 /* one mutex per first hash byte */
#define CAS_META_LEN 17
#define CAS_LRU_KEY_LEN (8 + REAP_DIGEST_KEY_LEN)
#define CAS_INSTANCE_MAX 255
#define CAS_AC_KEY_MAX (1 + CAS_INSTANCE_MAX + REAP_DIGEST_KEY_LEN)
#define CAS_VIS_KEY_MAX (REAP_DIGEST_KEY_LEN + CAS_INSTANCE_MAX)
#define CAS_DEFAULT_INLINE_MAX ((size_t)1 << 20)
#define CAS_DEFAULT_TOUCH_S 60
#define CAS_WORK_POOL 4 /* idle cas_store_put_many scratch kept for reuse */

enum { CAS_KIND_INLINE = 0, CAS_KIND_FILE = 1 };

/* Column families, in the order they are opened. */
enum { CAS_CF_DEFAULT, CAS_CF_META, CAS_CF_DATA, CAS_CF_LRU, CAS_CF_AC, CAS_CF_VIS, CAS_CF_COUNT };

typedef struct cas_meta {
	uint8_t kind;      /* CAS_KIND_* */
	uint64_t size;
	uint64_t last_use; /* seconds; equals the time in the blob's lru key */
} cas_meta_t;

/** Clock returning wall-clock seconds; replaceable by tests. */
typedef uint64_t (*cas_clock_fn)(void *arg);

struct cas_store {
	char *path;
	uint64_t capacity;      /* 0 = unlimited */
	size_t inline_max;
	int64_t touch_interval; /* seconds; -1 = every access that changes the second */
	bool no_sync;

	rocksdb_t *db;
	rocksdb_column_family_handle_t *cf[CAS_CF_COUNT];
	rocksdb_readoptions_t *ro;
	rocksdb_readoptions_t *ro_scan; /* scans: do not fill the block cache */
	rocksdb_writeoptions_t *wo;

	pthread_mutex_t stripe[CAS_STRIPES]; /* check-then-write of one digest's records */
	int n_mutexes;                       /* initialized so far (stripes, then evict_mu) */
	pthread_mutex_t evict_mu;            /* one eviction pass at a time */
	uint64_t evict_hint;                 /* under evict_mu: last_use where the last pass stopped */

	_Atomic uint64_t bytes;
	_Atomic uint64_t blobs;
	_Atomic uint64_t evictions;
	_Atomic uint64_t ac_written;

	/* store_batch.c: idle scratch (and write batches) of cas_store_put_many */
	_Atomic(void *) work_pool[CAS_WORK_POOL];

	cas_clock_fn clock; /* NULL = CLOCK_REALTIME */
	void *clock_arg;
};

/* --- store.c: helpers shared by the store files --- */

/** Log a RocksDB error, record it in eb, free err; returns REAP_E_IO. */
int cas_st_db_err(reap_errbuf_t *eb, const char *what, char *err);

/** Now, in seconds, from the store's clock. */
uint64_t cas_st_now(const cas_store_t *st);

void cas_st_put_be64(uint8_t *p, uint64_t v);
uint64_t cas_st_get_be64(const uint8_t *p);

void cas_st_meta_encode(const cas_meta_t *m, uint8_t out[CAS_META_LEN]);

/** Decode a meta value; false when it is malformed. */
bool cas_st_meta_decode(const char *v, size_t len, cas_meta_t *m);

void cas_st_lru_key(uint64_t last_use, const uint8_t key[REAP_DIGEST_KEY_LEN],
		    uint8_t out[CAS_LRU_KEY_LEN]);

/**
 * Read the meta record of key: 0, REAP_E_NOT_FOUND, or REAP_E_IO (also for a
 * malformed record, which is logged).
 */
int cas_st_meta_get(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m,
		    reap_errbuf_t *eb);

/** "<path>/cas/<2 hex>/<64 hex>-<size>" into out. */
void cas_st_blob_path(const cas_store_t *st, const reap_digest_t *d, char out[PATH_MAX]);

/** The stripe mutex guarding records of digest key. */
static inline pthread_mutex_t *cas_st_stripe(cas_store_t *st, const uint8_t *key)
{
	return &st->stripe[key[0]];
}

/* --- store_lru.c: last use and eviction --- */

/** Whether a blob last used at last_use is due a refresh at now. */
bool cas_st_touch_due(const cas_store_t *st, uint64_t last_use, uint64_t now);

/**
 * Caller holds the stripe lock and m is the record read under it: when the
 * last use is due for a refresh, move the lru entry and rewrite meta in one
 * batch (m updated). 0 or REAP_E_IO.
 */
int cas_st_touch_locked(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m);

/**
 * m was read without the lock: if a refresh is due, take the stripe lock,
 * re-read and touch. A failed refresh is logged, not returned (the blob is
 * still there). Returns 0, or REAP_E_NOT_FOUND when the blob went away.
 */
int cas_st_touch(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m);

/** cas_st_meta_get then cas_st_touch: presence with last-use refresh. */
int cas_st_lookup(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m);

/**
 * Evict least recently used blobs until bytes <= target. With wait false,
 * returns 0 at once when another thread is evicting. Count or error.
 */
int64_t cas_st_evict(cas_store_t *st, uint64_t target, bool wait);

/** After a write: evict down to 95% of capacity when over it (never waits). */
void cas_st_maybe_evict(cas_store_t *st);

/* --- store_vis.c: read grants (tenant-scoped visibility) --- */

/**
 * The vis key of (blob key, scope) into out; its length, or 0 when scope is
 * longer than CAS_INSTANCE_MAX.
 */
size_t cas_st_vis_key(const uint8_t key[REAP_DIGEST_KEY_LEN], const char *scope,
		      uint8_t out[CAS_VIS_KEY_MAX]);

/**
 * Caller holds the stripe lock and m is the blob's meta record read under
 * it: write the grant of scope (hint m->last_use) unless it is already
 * there with that hint. 0 or REAP_E_IO/REAP_E_INVALID.
 */
int cas_st_grant_locked(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN],
			const cas_meta_t *m, const char *scope, reap_errbuf_t *eb);

/** Encode a grant value (the last_use hint). */
void cas_st_vis_value(uint64_t last_use, uint8_t out[8]);

/**
 * Take the stripe lock and, if the blob is stored, touch it and grant scope.
 * 0, REAP_E_NOT_FOUND (not stored: no grant), or an error.
 */
int cas_st_grant(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], const char *scope,
		 reap_errbuf_t *eb);

/**
 * Caller holds the stripe lock: queue the deletion of every grant of the
 * blob into b (the batch that deletes its meta record). 0 or REAP_E_IO.
 */
int cas_st_vis_drop(cas_store_t *st, rocksdb_writebatch_t *b,
		    const uint8_t key[REAP_DIGEST_KEY_LEN]);

/** Recovery: delete grants whose blob has no meta record. */
int cas_st_vis_recover(cas_store_t *st, reap_errbuf_t *eb);

/* --- store_batch.c --- */

/** Free the idle scratch of cas_store_put_many (on close). */
void cas_st_batch_cleanup(cas_store_t *st);

/* --- test hooks --- */

/** Replace the clock (NULL restores the real one). Call before other threads use st. */
void cas_store_set_clock(cas_store_t *st, cas_clock_fn fn, void *arg);

#endif
