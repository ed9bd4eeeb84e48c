/*
 * store_batch.c - many whole blobs in one call (BatchUpdateBlobs).
 *
 * cas_store_put costs one RocksDB write per blob (a WAL record, a write
 * group, a memtable insert from the top of each skip list), which made a
 * batch of thousands of small blobs cost ~30 us of CPU per blob. Here every
 * blob is hashed and verified first, outside every lock, exactly as
 * cas_store_put does; the verified ones are sorted by digest key and
 * committed in groups of at most GROUP_MAX: the group takes the stripe
 * locks of its keys in ascending order (the only place that holds more than
 * one stripe; every other holder takes one and never a second, so ascending
 * order cannot deadlock), reads the meta records of all its keys with one
 * MultiGet, and writes one batch with, per blob:
 *  - new: {meta, data, lru, grant}, as commit_inline;
 *  - stored: the touch {lru, meta} when due and the grant when it is not
 *    there with the current hint, as commit_existing (the grant is written
 *    under the lock after the record was read, so it cannot outlive it).
 * Sorted keys also make the memtable inserts cheap: the meta, data and lru
 * memtables insert with a hint (store.c), so each skip list resumes from
 * the previous insert instead of searching from its head.
 *
 * The scratch of a call (and its write batch, which grows to the size of
 * a group's blobs) is kept in a small pool in the store for the next call:
 * a fresh batch regrew by doubling and faulted in new pages every group.
 *
 * Blobs too large to be inline (or empty) take cas_store_put one by one.
 */
#include "cas/store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define GROUP_MAX 512 /* blobs per write batch (and per set of stripe locks held) */
#define BATCH_KEEP ((size_t)4 << 20) /* a write batch that grew past this is not reused */

typedef struct put_ent {
	uint8_t key[REAP_DIGEST_KEY_LEN];
	size_t item; /* index into the caller's items */
} put_ent_t;

/* Scratch of one call, sized for GROUP_MAX entries. */
typedef struct put_work {
	const char *kp[GROUP_MAX];
	size_t kl[GROUP_MAX];
	rocksdb_pinnableslice_t *vals[GROUP_MAX];
	char *errs[GROUP_MAX];
	size_t uniq[GROUP_MAX];    /* index in the group of each distinct key */
	size_t of_ent[GROUP_MAX];  /* distinct key of each entry */
	cas_meta_t meta[GROUP_MAX];
	int8_t state[GROUP_MAX];   /* per distinct key: ST_* */
	size_t vis_of[GROUP_MAX];  /* distinct key -> its slot in the grant MultiGet */
	size_t nv;                 /* grant values held in vals */
	rocksdb_writebatch_t *b;   /* cleared after each group; keeps its capacity */
	size_t b_peak;             /* largest size b reached (its capacity, roughly) */
	uint8_t vkeys[GROUP_MAX * CAS_VIS_KEY_MAX]; /* grant keys of the group */
} put_work_t;

enum { ST_NEW, ST_STORED, ST_ERR };

static int ent_cmp(const void *a, const void *b)
{
	return memcmp(((const put_ent_t *)a)->key, ((const put_ent_t *)b)->key, REAP_DIGEST_KEY_LEN);
}

static void set_rc(cas_put_item_t *it, int rc, const char *msg)
{
	it->rc = rc;
	if (rc != REAP_OK && it->eb != NULL && msg != NULL && it->eb->msg != msg)
		snprintf(it->eb->msg, sizeof(it->eb->msg), "%s", msg);
}

/* Free the pinned values and errors of a MultiGet of n keys; the first error is returned. */
static int mget(cas_store_t *st, int cf, put_work_t *w, size_t n, reap_errbuf_t *eb)
{
	int rc = REAP_OK;

	rocksdb_batched_multi_get_cf(st->db, st->ro, st->cf[cf], n, w->kp, w->kl, w->vals, w->errs,
				     true);
	for (size_t j = 0; j < n; j++) {
		if (w->errs[j] == NULL)
			continue;
		if (rc == REAP_OK)
			rc = cas_st_db_err(eb, cf == CAS_CF_META ? "get meta" : "get grant", w->errs[j]);
		else
			rocksdb_free(w->errs[j]);
	}
	return rc;
}

static void release(put_work_t *w, size_t n)
{
	for (size_t j = 0; j < n; j++)
		if (w->vals[j] != NULL)
			rocksdb_pinnableslice_destroy(w->vals[j]);
}

/* Lock (or unlock) the distinct stripes of sorted entries, ascending. */
static void stripes(cas_store_t *st, const put_ent_t *e, size_t n, bool lock)
{
	for (size_t j = 0; j < n; j++) {
		if (j > 0 && e[j].key[0] == e[j - 1].key[0])
			continue;
		if (lock)
			pthread_mutex_lock(cas_st_stripe(st, e[j].key));
		else
			pthread_mutex_unlock(cas_st_stripe(st, e[j].key));
	}
}

/* Queue the touch of a stored blob (m updated) when it is due. */
static void batch_touch(cas_store_t *st, rocksdb_writebatch_t *b, const uint8_t *key,
			cas_meta_t *m, uint64_t now)
{
	uint8_t old_lru[CAS_LRU_KEY_LEN], new_lru[CAS_LRU_KEY_LEN], val[CAS_META_LEN];

	if (!cas_st_touch_due(st, m->last_use, now))
		return;
	cas_st_lru_key(m->last_use, key, old_lru);
	m->last_use = now;
	cas_st_lru_key(now, key, new_lru);
	cas_st_meta_encode(m, val);
	rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_LRU], (const char *)old_lru, sizeof(old_lru));
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_LRU], (const char *)new_lru, sizeof(new_lru), "",
				  0);
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_META], (const char *)key, REAP_DIGEST_KEY_LEN,
				  (const char *)val, sizeof(val));
}

static void batch_new(cas_store_t *st, rocksdb_writebatch_t *b, const uint8_t *key,
		      const cas_meta_t *m, const void *data)
{
	uint8_t lkey[CAS_LRU_KEY_LEN], val[CAS_META_LEN];

	cas_st_meta_encode(m, val);
	cas_st_lru_key(m->last_use, key, lkey);
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_META], (const char *)key, REAP_DIGEST_KEY_LEN,
				  (const char *)val, sizeof(val));
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_DATA], (const char *)key, REAP_DIGEST_KEY_LEN,
				  data, (size_t)m->size);
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_LRU], (const char *)lkey, sizeof(lkey), "", 0);
}

/*
 * Read the records of the group's distinct keys (caller holds their
 * stripes) into w->meta/w->state, then the grants of the stored ones.
 * Returns 0 or the error of a failed read (for the whole group).
 */
static int read_group(cas_store_t *st, const char *scope, size_t slen, put_work_t *w,
		      const put_ent_t *e, size_t nu, reap_errbuf_t *eb)
{
	size_t nv = 0;
	int rc;

	w->nv = 0;
	for (size_t u = 0; u < nu; u++) {
		w->kp[u] = (const char *)e[w->uniq[u]].key;
		w->kl[u] = REAP_DIGEST_KEY_LEN;
	}
	rc = mget(st, CAS_CF_META, w, nu, eb);
	for (size_t u = 0; u < nu; u++) {
		size_t len = 0;
		const char *v;

		w->state[u] = ST_NEW;
		if (w->vals[u] == NULL)
			continue;
		v = rocksdb_pinnableslice_value(w->vals[u], &len);
		w->state[u] = ST_STORED;
		if (!cas_st_meta_decode(v, len, &w->meta[u])) {
			REAP_ERROR("cas store corrupt meta record", "len=%zu", len);
			w->state[u] = ST_ERR;
		}
	}
	release(w, nu);
	if (rc != REAP_OK || scope == NULL)
		return rc;

	/* The grants of the stored blobs: only a missing or stale one is written. */
	for (size_t u = 0; u < nu; u++) {
		uint8_t *vk = w->vkeys + nv * (REAP_DIGEST_KEY_LEN + slen);

		if (w->state[u] != ST_STORED)
			continue;
		memcpy(vk, e[w->uniq[u]].key, REAP_DIGEST_KEY_LEN);
		memcpy(vk + REAP_DIGEST_KEY_LEN, scope, slen);
		w->kp[nv] = (const char *)vk;
		w->kl[nv] = REAP_DIGEST_KEY_LEN + slen;
		w->vis_of[u] = nv++;
	}
	w->nv = nv; /* the caller releases them */
	return nv > 0 ? mget(st, CAS_CF_VIS, w, nv, eb) : REAP_OK;
}

/* The hint held by grant slot j of the last grant MultiGet; 0 when absent or malformed. */
static uint64_t grant_hint(const put_work_t *w, size_t j, bool *exists)
{
	size_t len = 0;
	const char *v;

	*exists = w->vals[j] != NULL;
	if (!*exists)
		return 0;
	v = rocksdb_pinnableslice_value(w->vals[j], &len);
	return len == 8 ? cas_st_get_be64((const uint8_t *)v) : 0;
}

static void work_free(put_work_t *w)
{
	if (w == NULL)
		return;
	if (w->b != NULL)
		rocksdb_writebatch_destroy(w->b);
	free(w);
}

/*
 * Scratch for one call: an idle one from the store's pool, or a new one.
 * Reusing it keeps its write batch's buffer, which otherwise regrows (and
 * faults in fresh pages) for every group. NULL when out of memory.
 */
static put_work_t *work_get(cas_store_t *st)
{
	put_work_t *w;

	for (size_t i = 0; i < CAS_WORK_POOL; i++) {
		w = atomic_exchange(&st->work_pool[i], NULL);
		if (w != NULL)
			return w;
	}
	w = malloc(sizeof(*w));
	if (w == NULL)
		return NULL;
	w->b_peak = 0;
	w->b = rocksdb_writebatch_create();
	if (w->b == NULL) {
		free(w);
		return NULL;
	}
	return w;
}

/* Give w back to the pool (or free it when the pool is full or its batch grew large). */
static void work_put(cas_store_t *st, put_work_t *w)
{
	if (w == NULL)
		return;
	if (w->b_peak <= BATCH_KEEP) {
		for (size_t i = 0; i < CAS_WORK_POOL; i++) {
			void *expect = NULL;
			if (atomic_compare_exchange_strong(&st->work_pool[i], &expect, (void *)w))
				return;
		}
	}
	work_free(w);
}

/*
 * Commit sorted, verified entries e[0..n) (inline-sized, duplicates
 * adjacent) in one batch under their stripe locks; sets each item's rc.
 * Returns how many blobs were new.
 */
static size_t commit_group(cas_store_t *st, const char *scope, size_t slen, put_work_t *w,
			   cas_put_item_t *items, const put_ent_t *e, size_t n)
{
	rocksdb_writebatch_t *b = w->b;
	reap_errbuf_t geb = {{0}};
	uint64_t now, bytes = 0, added = 0;
	size_t nu = 0, size = 0;
	char *err = NULL;
	int rc;

	for (size_t j = 0; j < n; j++) {
		if (j == 0 || memcmp(e[j].key, e[j - 1].key, REAP_DIGEST_KEY_LEN) != 0)
			w->uniq[nu++] = j;
		w->of_ent[j] = nu - 1;
	}
	stripes(st, e, n, true);
	now = cas_st_now(st);
	rc = read_group(st, scope, slen, w, e, nu, &geb);
	if (rc != REAP_OK)
		goto out;
	for (size_t u = 0; u < nu; u++) {
		const put_ent_t *pe = &e[w->uniq[u]];
		uint8_t vkey[CAS_VIS_KEY_MAX], val[8];
		cas_meta_t *m = &w->meta[u];
		bool exists = false;

		if (w->state[u] == ST_ERR)
			continue;
		if (w->state[u] == ST_NEW) {
			*m = (cas_meta_t){.kind = CAS_KIND_INLINE, .size = (uint64_t)items[pe->item].len,
					  .last_use = now};
			batch_new(st, b, pe->key, m, items[pe->item].data);
			bytes += m->size;
			added++;
		} else {
			batch_touch(st, b, pe->key, m, now);
			if (scope != NULL &&
			    grant_hint(w, w->vis_of[u], &exists) == m->last_use && exists)
				continue;
		}
		if (scope == NULL)
			continue;
		memcpy(vkey, pe->key, REAP_DIGEST_KEY_LEN);
		memcpy(vkey + REAP_DIGEST_KEY_LEN, scope, slen);
		cas_st_vis_value(m->last_use, val);
		rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_VIS], (const char *)vkey,
					  REAP_DIGEST_KEY_LEN + slen, (const char *)val, sizeof(val));
	}
	rocksdb_write(st->db, st->wo, b, &err);
	if (err != NULL) {
		rc = cas_st_db_err(&geb, "put blobs", err);
		added = 0;
	} else if (added > 0) {
		atomic_fetch_add(&st->bytes, bytes);
		atomic_fetch_add(&st->blobs, added);
	}
out:
	release(w, w->nv);
	stripes(st, e, n, false);
	(void)rocksdb_writebatch_data(b, &size);
	if (size > w->b_peak)
		w->b_peak = size;
	rocksdb_writebatch_clear(b);
	for (size_t j = 0; j < n; j++) {
		int r = rc != REAP_OK			      ? rc
			: w->state[w->of_ent[j]] == ST_ERR ? REAP_E_IO
							  : REAP_OK;
		set_rc(&items[e[j].item], r,
		       rc != REAP_OK ? geb.msg : r != REAP_OK ? "corrupt meta record" : NULL);
	}
	return (size_t)added;
}

int cas_store_put_many(cas_store_t *st, const char *scope, cas_put_item_t *items, size_t n)
{
	put_work_t *w = NULL;
	put_ent_t *ents = NULL;
	size_t ne = 0, slen = scope != NULL ? strlen(scope) : 0, added = 0;

	if (slen > CAS_INSTANCE_MAX) {
		for (size_t i = 0; i < n; i++)
			items[i].rc = reap_errf(items[i].eb, REAP_E_INVALID,
						"scope is longer than %d bytes", CAS_INSTANCE_MAX);
		return REAP_E_INVALID;
	}
	w = work_get(st);
	ents = malloc((n > 0 ? n : 1) * sizeof(*ents));
	if (w == NULL || ents == NULL)
		goto nomem;

	/* Verify everything first, outside every lock; others go one by one. */
	for (size_t i = 0; i < n; i++) {
		cas_put_item_t *it = &items[i];
		reap_digest_t got;

		if (it->len == 0 || it->len > st->inline_max) {
			it->rc = cas_store_put(st, scope, &it->d, it->data, it->len, it->eb);
			continue;
		}
		if (reap_digest_of(it->data, it->len, &got) != REAP_OK) {
			it->rc = reap_errf(it->eb, REAP_E_NOMEM, "out of memory hashing the blob");
			continue;
		}
		if (!reap_digest_eq(&it->d, &got)) {
			char hex[REAP_HASH_HEX_LEN + 1];
			reap_digest_hex(&got, hex);
			it->rc = reap_errf(it->eb, REAP_E_INVALID,
					   "content does not match digest (got hash %s size %lld)", hex,
					   (long long)got.size);
			continue;
		}
		reap_digest_key(&it->d, ents[ne].key);
		ents[ne++].item = i;
	}
	qsort(ents, ne, sizeof(*ents), ent_cmp);
	for (size_t j = 0; j < ne; j += GROUP_MAX)
		added += commit_group(st, scope, slen, w, items, ents + j,
				      ne - j < GROUP_MAX ? ne - j : GROUP_MAX);
	work_put(st, w);
	free(ents);
	if (added > 0)
		cas_st_maybe_evict(st);
	return REAP_OK;

nomem:
	work_put(st, w);
	free(ents);
	for (size_t i = 0; i < n; i++)
		items[i].rc = reap_errf(items[i].eb, REAP_E_NOMEM, "out of memory");
	return REAP_E_NOMEM;
}

void cas_st_batch_cleanup(cas_store_t *st)
{
	for (size_t i = 0; i < CAS_WORK_POOL; i++)
		work_free(atomic_exchange(&st->work_pool[i], NULL));
}
