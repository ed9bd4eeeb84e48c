/*
 * store_lru.c - last use and eviction.
 *
 * Every blob has one lru entry keyed (last_use, digest key), so iterating
 * the lru column family from its start visits blobs least recently used
 * first. A blob's meta record carries the same last_use; both change in one
 * write batch under the blob's stripe lock ("touch"), at most once per
 * touch_interval so hot reads do not each become a write.
 *
 * Eviction walks the lru index under evict_mu (one pass at a time). An
 * entry whose meta record is gone or names another last_use is stale (the
 * iterator's snapshot is older than a concurrent touch or eviction) and is
 * only deleted. Otherwise meta, data, lru and the blob's read grants go in
 * one batch under the stripe lock, then the blob's file is unlinked while
 * the lock is still held, so a concurrent put of the same digest cannot
 * have its fresh file removed. Open readers keep their copy or file descriptor.
 *
 * Deleted lru keys are tombstones at the head of the index until compaction
 * drops them; evict_hint (the last_use where the previous pass stopped)
 * lets the next pass seek past them. New entries carry "now", so they sort
 * after the hint unless the clock stepped back, which the second pass from
 * the very start covers.
 */
#include "cas/store_int.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

bool cas_st_touch_due(const cas_store_t *st, uint64_t last_use, uint64_t now)
{
	if (now == last_use)
		return false; /* the entry would not move */
	if (st->touch_interval < 0)
		return true;
	return now > last_use && now - last_use >= (uint64_t)st->touch_interval;
}

int cas_st_touch_locked(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m)
{
	uint64_t now = cas_st_now(st);
	uint8_t old_lru[CAS_LRU_KEY_LEN], new_lru[CAS_LRU_KEY_LEN], val[CAS_META_LEN];
	rocksdb_writebatch_t *b;
	cas_meta_t nm = *m;
	char *err = NULL;

	if (!cas_st_touch_due(st, m->last_use, now))
		return REAP_OK;
	nm.last_use = now;
	cas_st_lru_key(m->last_use, key, old_lru);
	cas_st_lru_key(now, key, new_lru);
	cas_st_meta_encode(&nm, val);
	b = rocksdb_writebatch_create();
	rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_LRU], (const char *)old_lru, sizeof(old_lru));
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_LRU], (const char *)new_lru, sizeof(new_lru), "",
				  0);
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_META], (const char *)key, REAP_DIGEST_KEY_LEN,
				  (const char *)val, sizeof(val));
	rocksdb_write(st->db, st->wo, b, &err);
	rocksdb_writebatch_destroy(b);
	if (err != NULL)
		return cas_st_db_err(NULL, "touch", err);
	*m = nm;
	return REAP_OK;
}

int cas_st_touch(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m)
{
	pthread_mutex_t *mu = cas_st_stripe(st, key);
	int rc;

	if (!cas_st_touch_due(st, m->last_use, cas_st_now(st)))
		return REAP_OK;
	pthread_mutex_lock(mu);
	rc = cas_st_meta_get(st, key, m, NULL);
	if (rc == REAP_OK)
		(void)cas_st_touch_locked(st, key, m); /* logged; the blob is still there */
	pthread_mutex_unlock(mu);
	return rc == REAP_E_NOT_FOUND ? rc : REAP_OK;
}

int cas_st_lookup(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m)
{
	int rc = cas_st_meta_get(st, key, m, NULL);

	return rc == REAP_OK ? cas_st_touch(st, key, m) : rc;
}

/*
 * Evict the blob of one lru entry if the entry is current. Returns 1 when a
 * blob went, 0 for a stale entry, or a negative error.
 */
static int evict_entry(cas_store_t *st, const uint8_t lkey[CAS_LRU_KEY_LEN])
{
	const uint8_t *key = lkey + 8;
	pthread_mutex_t *mu = cas_st_stripe(st, key);
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	char path[PATH_MAX];
	reap_digest_t d;
	cas_meta_t m;
	char *err = NULL;
	int rc;

	pthread_mutex_lock(mu);
	rc = cas_st_meta_get(st, key, &m, NULL);
	if (rc != REAP_OK && rc != REAP_E_NOT_FOUND)
		goto out;
	rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_LRU], (const char *)lkey, CAS_LRU_KEY_LEN);
	if (rc == REAP_E_NOT_FOUND || m.last_use != cas_st_get_be64(lkey)) {
		rocksdb_write(st->db, st->wo, b, &err); /* stale: drop the entry only */
		rc = err != NULL ? cas_st_db_err(NULL, "evict stale lru entry", err) : 0;
		goto out;
	}
	rc = cas_st_vis_drop(st, b, key); /* its grants go with it, in the same batch */
	if (rc != REAP_OK)
		goto out;
	rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_META], (const char *)key, REAP_DIGEST_KEY_LEN);
	if (m.kind == CAS_KIND_INLINE)
		rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_DATA], (const char *)key,
					     REAP_DIGEST_KEY_LEN);
	rocksdb_write(st->db, st->wo, b, &err);
	if (err != NULL) {
		rc = cas_st_db_err(NULL, "evict", err);
		goto out;
	}
	reap_digest_from_key(key, &d);
	if (m.kind == CAS_KIND_FILE) {
		cas_st_blob_path(st, &d, path);
		if (unlink(path) != 0 && errno != ENOENT)
			REAP_WARN("cas store cannot remove evicted file", "path=\"%s\" err=\"%s\"", path,
				  strerror(errno));
	}
	atomic_fetch_sub(&st->bytes, m.size);
	atomic_fetch_sub(&st->blobs, 1);
	atomic_fetch_add(&st->evictions, 1);
	if (reap_log_enabled(REAP_LOG_DEBUG)) {
		char hex[REAP_HASH_HEX_LEN + 1];
		reap_digest_hex(&d, hex);
		REAP_DEBUG("cas store evicted", "digest=%s/%llu last_use=%llu", hex,
			   (unsigned long long)m.size, (unsigned long long)m.last_use);
	}
	rc = 1;
out:
	pthread_mutex_unlock(mu);
	rocksdb_writebatch_destroy(b);
	return rc;
}

/* One walk of the lru index from last_use `from`; adds evictions to *n. */
static int evict_pass(cas_store_t *st, uint64_t from, uint64_t target, int64_t *n)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro_scan, st->cf[CAS_CF_LRU]);
	uint8_t seek[8], lkey[CAS_LRU_KEY_LEN];
	char *err = NULL;
	int rc = REAP_OK;

	cas_st_put_be64(seek, from);
	rocksdb_iter_seek(it, (const char *)seek, sizeof(seek));
	for (; rocksdb_iter_valid(it) && atomic_load(&st->bytes) > target; rocksdb_iter_next(it)) {
		size_t klen = 0;
		const char *k = rocksdb_iter_key(it, &klen);

		if (klen != CAS_LRU_KEY_LEN) {
			REAP_WARN("cas store dropping malformed lru key", "len=%zu", klen);
			rocksdb_delete_cf(st->db, st->wo, st->cf[CAS_CF_LRU], k, klen, &err);
			if (err != NULL) {
				rc = cas_st_db_err(NULL, "delete lru key", err);
				break;
			}
			continue;
		}
		memcpy(lkey, k, sizeof(lkey));
		rc = evict_entry(st, lkey);
		if (rc < 0)
			break;
		*n += rc;
		rc = REAP_OK;
		st->evict_hint = cas_st_get_be64(lkey);
	}
	if (rc == REAP_OK) {
		rocksdb_iter_get_error(it, &err);
		if (err != NULL)
			rc = cas_st_db_err(NULL, "lru scan", err);
	}
	rocksdb_iter_destroy(it);
	return rc;
}

int64_t cas_st_evict(cas_store_t *st, uint64_t target, bool wait)
{
	int64_t n = 0;
	int rc = REAP_OK;

	if (wait)
		pthread_mutex_lock(&st->evict_mu);
	else if (pthread_mutex_trylock(&st->evict_mu) != 0)
		return 0;
	if (atomic_load(&st->bytes) > target)
		rc = evict_pass(st, st->evict_hint, target, &n);
	if (rc == REAP_OK && atomic_load(&st->bytes) > target && st->evict_hint != 0) {
		st->evict_hint = 0;
		rc = evict_pass(st, 0, target, &n);
	}
	pthread_mutex_unlock(&st->evict_mu);
	if (n > 0)
		REAP_INFO("cas store eviction", "evicted=%lld bytes=%llu target=%llu", (long long)n,
			  (unsigned long long)atomic_load(&st->bytes), (unsigned long long)target);
	return rc < 0 ? rc : n;
}

void cas_st_maybe_evict(cas_store_t *st)
{
	if (st->capacity == 0 || atomic_load(&st->bytes) <= st->capacity)
		return;
	(void)cas_st_evict(st, st->capacity - st->capacity / 20, false);
}

int64_t cas_store_evict(cas_store_t *st, uint64_t target)
{
	return cas_st_evict(st, target, true);
}
