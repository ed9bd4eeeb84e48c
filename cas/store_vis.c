/*
 * store_vis.c - read grants: which scopes (instance names) may read a blob.
 *
 * Knowing a digest is not proof of holding the bytes, so a blob is readable
 * in a scope only after that scope uploaded it (see cas/store.h). A grant is
 * one key in the vis column family: the blob's 40-byte digest key followed
 * by the scope's bytes. All grants of a blob therefore share its digest key
 * as a prefix. The value is a hint: a last_use the blob had when the grant
 * was written or last refreshed, never newer than the one in meta.
 *
 * A grant never exists without its blob, across crashes too:
 *  - a new blob's grant goes in the batch that writes its meta record;
 *  - a grant for a blob already stored is a put made under the blob's
 *    stripe lock after reading its record (RocksDB applies writes in WAL
 *    order, so a crash can lose the grant but never keep it without the
 *    record);
 *  - eviction walks the blob's prefix and deletes every grant in the batch
 *    that deletes its record, under the same lock;
 *  - recovery deletes grants whose record is gone (e.g. a file record
 *    dropped because its file was missing).
 *
 * Lookups are one MultiGet of every (digest, scope) grant key. A granted
 * blob whose hint says no last-use refresh is due is visible without
 * reading meta, so the common FindMissingBlobs costs what it did before
 * grants existed. Otherwise (at most once per touch interval per blob and
 * scope) the slow path takes the stripe lock, reads meta, touches the blob
 * and rewrites the hint, but only while the grant still exists: a grant is
 * never re-created for a blob evicted and uploaded again by someone else.
 * A reader with no grant costs one bloom-filtered miss per scope.
 */
#include "cas/store_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define VIS_CHUNK 256      /* digests per pair of MultiGets */
#define RECOVER_BATCH 1024 /* grants deleted per write batch during recovery */

void cas_st_vis_value(uint64_t last_use, uint8_t out[8])
{
	cas_st_put_be64(out, last_use);
}

/* The hint in a grant value; 0 (always due) when malformed. */
static uint64_t hint_of(const char *v, size_t len)
{
	return len == 8 ? cas_st_get_be64((const uint8_t *)v) : 0;
}

size_t cas_st_vis_key(const uint8_t key[REAP_DIGEST_KEY_LEN], const char *scope,
		      uint8_t out[CAS_VIS_KEY_MAX])
{
	size_t n = strlen(scope);

	if (n > CAS_INSTANCE_MAX)
		return 0;
	memcpy(out, key, REAP_DIGEST_KEY_LEN);
	memcpy(out + REAP_DIGEST_KEY_LEN, scope, n);
	return REAP_DIGEST_KEY_LEN + n;
}

/*
 * Caller holds the stripe lock and m is current: write grant vkey with hint
 * m->last_use unless it holds that already; with only_existing, write only
 * over a grant that exists.
 */
static int put_grant_locked(cas_store_t *st, const uint8_t *vkey, size_t vlen,
			    const cas_meta_t *m, bool only_existing, reap_errbuf_t *eb)
{
	rocksdb_pinnableslice_t *v;
	uint8_t val[8];
	const char *p;
	char *err = NULL;
	size_t len = 0;
	bool same = false;

	/* Re-uploads by the same scope are common: only a change is a write. */
	v = rocksdb_get_pinned_cf(st->db, st->ro, st->cf[CAS_CF_VIS], (const char *)vkey, vlen,
				  &err);
	if (err != NULL)
		return cas_st_db_err(eb, "get grant", err);
	if (v == NULL && only_existing)
		return REAP_OK;
	if (v != NULL) {
		p = rocksdb_pinnableslice_value(v, &len);
		same = hint_of(p, len) == m->last_use;
		rocksdb_pinnableslice_destroy(v);
	}
	if (same)
		return REAP_OK;
	cas_st_vis_value(m->last_use, val);
	rocksdb_put_cf(st->db, st->wo, st->cf[CAS_CF_VIS], (const char *)vkey, vlen,
		       (const char *)val, sizeof(val), &err);
	if (err != NULL)
		return cas_st_db_err(eb, "put grant", err);
	return REAP_OK;
}

int cas_st_grant_locked(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN],
			const cas_meta_t *m, const char *scope, reap_errbuf_t *eb)
{
	uint8_t vkey[CAS_VIS_KEY_MAX];
	size_t vlen = cas_st_vis_key(key, scope, vkey);

	if (vlen == 0)
		return reap_errf(eb, REAP_E_INVALID, "scope is longer than %d bytes",
				 CAS_INSTANCE_MAX);
	return put_grant_locked(st, vkey, vlen, m, false, eb);
}

int cas_st_grant(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], const char *scope,
		 reap_errbuf_t *eb)
{
	pthread_mutex_t *mu = cas_st_stripe(st, key);
	cas_meta_t m;
	int rc;

	pthread_mutex_lock(mu);
	rc = cas_st_meta_get(st, key, &m, eb);
	if (rc == REAP_OK) {
		(void)cas_st_touch_locked(st, key, &m); /* an upload is a use */
		rc = cas_st_grant_locked(st, key, &m, scope, eb);
	}
	pthread_mutex_unlock(mu);
	return rc;
}

int cas_st_vis_drop(cas_store_t *st, rocksdb_writebatch_t *b,
		    const uint8_t key[REAP_DIGEST_KEY_LEN])
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it;
	uint8_t upper[REAP_DIGEST_KEY_LEN];
	bool bounded = false;
	char *err = NULL;

	/*
	 * The bound (the prefix plus one) keeps the walk from wading through
	 * the tombstones of blobs evicted just after this one.
	 */
	memcpy(upper, key, sizeof(upper));
	for (int i = REAP_DIGEST_KEY_LEN - 1; i >= 0 && !bounded; i--)
		bounded = ++upper[i] != 0;
	rocksdb_readoptions_set_fill_cache(ro, 0);
	if (bounded)
		rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)upper, sizeof(upper));
	it = rocksdb_create_iterator_cf(st->db, ro, st->cf[CAS_CF_VIS]);
	for (rocksdb_iter_seek(it, (const char *)key, REAP_DIGEST_KEY_LEN); rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t klen = 0;
		const char *k = rocksdb_iter_key(it, &klen);

		if (klen < REAP_DIGEST_KEY_LEN || memcmp(k, key, REAP_DIGEST_KEY_LEN) != 0)
			break;
		rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_VIS], k, klen);
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return err != NULL ? cas_st_db_err(NULL, "scan grants", err) : REAP_OK;
}

int cas_st_vis_recover(cas_store_t *st, reap_errbuf_t *eb)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro_scan, st->cf[CAS_CF_VIS]);
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	uint8_t last[REAP_DIGEST_KEY_LEN];
	bool have_last = false, last_stored = false;
	uint64_t dropped = 0;
	char *err = NULL;
	int rc = REAP_OK;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen = 0;
		const char *k = rocksdb_iter_key(it, &klen);

		if (klen >= REAP_DIGEST_KEY_LEN &&
		    (!have_last || memcmp(k, last, REAP_DIGEST_KEY_LEN) != 0)) {
			cas_meta_t m;
			memcpy(last, k, REAP_DIGEST_KEY_LEN);
			have_last = true;
			rc = cas_st_meta_get(st, last, &m, eb);
			if (rc != REAP_OK && rc != REAP_E_NOT_FOUND)
				goto out;
			last_stored = rc == REAP_OK;
			rc = REAP_OK;
		}
		if (klen >= REAP_DIGEST_KEY_LEN && last_stored)
			continue;
		rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_VIS], k, klen);
		dropped++;
		if (rocksdb_writebatch_count(b) >= RECOVER_BATCH) {
			rocksdb_write(st->db, st->wo, b, &err);
			if (err != NULL)
				goto out;
			rocksdb_writebatch_clear(b);
		}
	}
	rocksdb_iter_get_error(it, &err);
	if (err == NULL)
		rocksdb_write(st->db, st->wo, b, &err);
out:
	if (err != NULL)
		rc = cas_st_db_err(eb, "recovery scan of grants", err);
	rocksdb_writebatch_destroy(b);
	rocksdb_iter_destroy(it);
	if (dropped > 0)
		REAP_WARN("cas store dropped grants of missing blobs", "count=%llu",
			  (unsigned long long)dropped);
	return rc;
}

int cas_store_grant(cas_store_t *st, const char *scope, const reap_digest_t *ds, size_t n,
		    reap_errbuf_t *eb)
{
	uint8_t key[REAP_DIGEST_KEY_LEN];

	if (strlen(scope) > CAS_INSTANCE_MAX)
		return reap_errf(eb, REAP_E_INVALID, "scope is longer than %d bytes",
				 CAS_INSTANCE_MAX);
	for (size_t i = 0; i < n; i++) {
		int rc;
		if (reap_digest_is_empty(&ds[i]) || ds[i].size < 0)
			continue;
		reap_digest_key(&ds[i], key);
		rc = cas_st_grant(st, key, scope, eb);
		if (rc != REAP_OK && rc != REAP_E_NOT_FOUND)
			return rc;
	}
	return REAP_OK;
}

/* ---- batched visibility ---- */

/* Scratch space of one cas_store_visible call, sized for VIS_CHUNK digests. */
typedef struct vis_work {
	const char *const *scopes;
	size_t slen[CAS_STORE_SCOPES_MAX];
	size_t ns;
	uint8_t (*dkeys)[REAP_DIGEST_KEY_LEN]; /* [VIS_CHUNK] digest keys */
	size_t *didx;                         /* [VIS_CHUNK] their index in the chunk */
	uint8_t *keys;                        /* grant keys, back to back */
	const char **kp;                      /* [VIS_CHUNK * ns] */
	size_t *kl;
	rocksdb_pinnableslice_t **vals;
	char **errs;
	size_t *ord;                          /* [VIS_CHUNK * ns] key indexes, sorted */
	const char **skp;                     /* kp, kl and vals in that order */
	size_t *skl;
	rocksdb_pinnableslice_t **svals;
} vis_work_t;

/* Bytewise order, the column family's: a shorter key first when it is a prefix. */
static bool key_less(const vis_work_t *w, size_t a, size_t b)
{
	size_t la = w->kl[a], lb = w->kl[b];
	int c = memcmp(w->kp[a], w->kp[b], la < lb ? la : lb);

	return c < 0 || (c == 0 && la < lb);
}

/* qsort_r's comparison of two key indexes of w (ctx). */
static int key_cmp(const void *a, const void *b, void *ctx)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return key_less(ctx, x, y) ? -1 : key_less(ctx, y, x) ? 1 : 0;
}

/*
 * w->ord = the indexes of the n keys in bytewise order. Handed unsorted keys,
 * MultiGet sorts them itself through the comparator, which was 19 % of
 * reapd's CPU in find-missing (10,000 digests a request). Every key starts
 * with a SHA-256, so a counting sort on the first byte leaves about one key
 * per bucket, which an insertion sort finishes. A client may name digests
 * that share a first byte on purpose, so a bucket of more than a few keys
 * gets qsort_r instead: never worse than n log n.
 */
static void sort_keys(vis_work_t *w, size_t n)
{
	size_t start[257] = {0}, at[256];

	for (size_t i = 0; i < n; i++)
		start[(uint8_t)w->kp[i][0] + 1]++;
	for (int b = 0; b < 256; b++)
		start[b + 1] += start[b];
	memcpy(at, start, sizeof(at));
	for (size_t i = 0; i < n; i++)
		w->ord[at[(uint8_t)w->kp[i][0]]++] = i;
	for (int b = 0; b < 256; b++) {
		size_t lo = start[b], hi = start[b + 1];

		if (hi - lo > 8) {
			qsort_r(w->ord + lo, hi - lo, sizeof(*w->ord), key_cmp, w);
			continue;
		}
		for (size_t i = lo + 1; i < hi; i++) {
			size_t k = w->ord[i], j = i;

			for (; j > lo && key_less(w, k, w->ord[j - 1]); j--)
				w->ord[j] = w->ord[j - 1];
			w->ord[j] = k;
		}
	}
}

/*
 * MultiGet n grant keys, in sorted order; an error is logged and returned,
 * every value is kept in w->vals (in the keys' own order).
 */
static int multi_get(cas_store_t *st, vis_work_t *w, size_t n)
{
	int rc = REAP_OK;

	sort_keys(w, n);
	for (size_t i = 0; i < n; i++) {
		w->skp[i] = w->kp[w->ord[i]];
		w->skl[i] = w->kl[w->ord[i]];
	}
	rocksdb_batched_multi_get_cf(st->db, st->ro, st->cf[CAS_CF_VIS], n, w->skp, w->skl,
				     w->svals, w->errs, true);
	for (size_t i = 0; i < n; i++)
		w->vals[w->ord[i]] = w->svals[i];
	for (size_t j = 0; j < n; j++) {
		if (w->errs[j] == NULL)
			continue;
		if (rc == REAP_OK)
			rc = cas_st_db_err(NULL, "find grants", w->errs[j]);
		else
			rocksdb_free(w->errs[j]);
	}
	return rc;
}

/*
 * The slow path of a granted blob whose hint is due: under the stripe lock,
 * is it still stored? Then touch it and refresh the hint of grant vkey (if
 * that grant still exists). 0 (visible), REAP_E_NOT_FOUND or REAP_E_IO.
 */
static int refresh(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], const char *vkey,
		   size_t vlen)
{
	pthread_mutex_t *mu = cas_st_stripe(st, key);
	cas_meta_t m;
	int rc;

	pthread_mutex_lock(mu);
	rc = cas_st_meta_get(st, key, &m, NULL);
	if (rc == REAP_OK) {
		/* failures are logged; the blob is there either way */
		(void)cas_st_touch_locked(st, key, &m);
		(void)put_grant_locked(st, (const uint8_t *)vkey, vlen, &m, true, NULL);
	}
	pthread_mutex_unlock(mu);
	return rc;
}

static int visible_chunk(cas_store_t *st, vis_work_t *w, const reap_digest_t *ds, size_t n,
			 bool *present)
{
	uint8_t *p = w->keys;
	uint64_t now = cas_st_now(st);
	size_t nd = 0, nk = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		present[i] = reap_digest_is_empty(&ds[i]);
		if (present[i] || ds[i].size < 0)
			continue;
		reap_digest_key(&ds[i], w->dkeys[nd]);
		w->didx[nd++] = i;
		for (size_t s = 0; s < w->ns; s++) {
			memcpy(p, w->dkeys[nd - 1], REAP_DIGEST_KEY_LEN);
			memcpy(p + REAP_DIGEST_KEY_LEN, w->scopes[s], w->slen[s]);
			w->kp[nk] = (const char *)p;
			w->kl[nk] = REAP_DIGEST_KEY_LEN + w->slen[s];
			p += w->kl[nk++];
		}
	}
	if (nd == 0)
		return REAP_OK;

	/* Digest j is granted when any of its ns keys exists; the newest hint decides. */
	rc = multi_get(st, w, nk);
	for (size_t j = 0; j < nd; j++) {
		size_t best = SIZE_MAX;
		uint64_t hint = 0;

		for (size_t k = j * w->ns; k < (j + 1) * w->ns; k++) {
			size_t len = 0;
			const char *v;
			uint64_t h;

			if (w->vals[k] == NULL)
				continue;
			v = rocksdb_pinnableslice_value(w->vals[k], &len);
			h = hint_of(v, len);
			if (best == SIZE_MAX || h > hint) {
				best = k;
				hint = h;
			}
			rocksdb_pinnableslice_destroy(w->vals[k]);
		}
		if (best == SIZE_MAX)
			continue;
		if (!cas_st_touch_due(st, hint, now)) {
			present[w->didx[j]] = true;
			continue;
		}
		if (rc == REAP_OK) {
			int r = refresh(st, w->dkeys[j], w->kp[best], w->kl[best]);
			present[w->didx[j]] = r == REAP_OK;
			if (r != REAP_OK && r != REAP_E_NOT_FOUND)
				rc = r;
		}
	}
	return rc;
}

int cas_store_visible(cas_store_t *st, const char *const *scopes, size_t n_scopes,
		      const reap_digest_t *ds, size_t n, bool *present)
{
	vis_work_t w = {.scopes = scopes, .ns = n_scopes};
	size_t per = 0, chunk = n < VIS_CHUNK ? n : VIS_CHUNK, nk;
	int rc = REAP_OK;

	if (n_scopes > CAS_STORE_SCOPES_MAX)
		return REAP_E_INVALID;
	for (size_t s = 0; s < n_scopes; s++) {
		w.slen[s] = strlen(scopes[s]);
		if (w.slen[s] > CAS_INSTANCE_MAX)
			return REAP_E_INVALID;
		per += REAP_DIGEST_KEY_LEN + w.slen[s];
	}
	if (n_scopes == 0 || chunk == 0) {
		for (size_t i = 0; i < n; i++)
			present[i] = reap_digest_is_empty(&ds[i]);
		return REAP_OK;
	}
	nk = chunk * n_scopes;
	w.dkeys = malloc(chunk * sizeof(*w.dkeys));
	w.didx = malloc(chunk * sizeof(*w.didx));
	w.keys = malloc(chunk * per);
	w.kp = malloc(nk * sizeof(*w.kp));
	w.kl = malloc(nk * sizeof(*w.kl));
	w.vals = malloc(nk * sizeof(*w.vals));
	w.errs = malloc(nk * sizeof(*w.errs));
	w.ord = malloc(nk * sizeof(*w.ord));
	w.skp = malloc(nk * sizeof(*w.skp));
	w.skl = malloc(nk * sizeof(*w.skl));
	w.svals = malloc(nk * sizeof(*w.svals));
	if (w.dkeys == NULL || w.didx == NULL || w.keys == NULL || w.kp == NULL || w.kl == NULL ||
	    w.vals == NULL || w.errs == NULL || w.ord == NULL || w.skp == NULL || w.skl == NULL ||
	    w.svals == NULL) {
		rc = REAP_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; rc == REAP_OK && i < n; i += chunk)
		rc = visible_chunk(st, &w, ds + i, n - i < chunk ? n - i : chunk, present + i);
out:
	free(w.svals);
	free(w.skl);
	free(w.skp);
	free(w.ord);
	free(w.errs);
	free(w.vals);
	free(w.kl);
	free(w.kp);
	free(w.keys);
	free(w.didx);
	free(w.dkeys);
	return rc;
}
