/*
 * store.c - opening and closing the blob store: the data-folder layout,
 * RocksDB options and column families, crash recovery and the counters;
 * also the action cache (a plain keyed value) and the small helpers that
 * store_blob.c (blobs) and store_lru.c (last use, eviction) share.
 *
 * Recovery on open restores the one invariant the rest relies on: a blob is
 * visible exactly when its meta record exists, and a file-kind record has
 * its complete file. Leftover temporaries are deleted, files with no record
 * (a crash between rename and the record's batch) are deleted, and records
 * whose file is gone or has the wrong size are dropped. The byte and blob
 * counters are then recomputed from meta, and read grants whose blob has
 * no record are deleted. See cas/README.md.
 */
#include "cas/store_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define BLOCK_CACHE_BYTES ((size_t)64 << 20)
#define DATA_WRITE_BUFFER ((size_t)64 << 20)
#define VIS_HASH_BUCKETS 200000 /* grant memtable hash buckets (1.6 MB) */
#define VIS_WRITE_BUFFER ((size_t)16 << 20)
#define RECOVER_BATCH 1024 /* records dropped per write batch during recovery */
#define PATH_RESERVE 100   /* room after the data folder for "/cas/xx/<64 hex>-<size>" */

static const char *const cf_names[CAS_CF_COUNT] = {"default", "meta", "data", "lru", "ac", "vis"};

/* ---- shared helpers ---- */

int cas_st_db_err(reap_errbuf_t *eb, const char *what, char *err)
{
	const char *msg = err != NULL ? err : "unknown error";

	REAP_ERROR("cas store rocksdb error", "op=\"%s\" err=\"%s\"", what, msg);
	reap_errf(eb, REAP_E_IO, "rocksdb %s: %s", what, msg);
	rocksdb_free(err);
	return REAP_E_IO;
}

uint64_t cas_st_now(const cas_store_t *st)
{
	struct timespec ts;

	if (st->clock != NULL)
		return st->clock(st->clock_arg);
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec < 0 ? 0 : (uint64_t)ts.tv_sec;
}

void cas_store_set_clock(cas_store_t *st, cas_clock_fn fn, void *arg)
{
	st->clock = fn;
	st->clock_arg = arg;
}

void cas_st_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint64_t cas_st_get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void cas_st_meta_encode(const cas_meta_t *m, uint8_t out[CAS_META_LEN])
{
	out[0] = m->kind;
	cas_st_put_be64(out + 1, m->size);
	cas_st_put_be64(out + 9, m->last_use);
}

bool cas_st_meta_decode(const char *v, size_t len, cas_meta_t *m)
{
	const uint8_t *p = (const uint8_t *)v;

	if (len != CAS_META_LEN || (p[0] != CAS_KIND_INLINE && p[0] != CAS_KIND_FILE))
		return false;
	m->kind = p[0];
	m->size = cas_st_get_be64(p + 1);
	m->last_use = cas_st_get_be64(p + 9);
	return m->size <= INT64_MAX;
}

void cas_st_lru_key(uint64_t last_use, const uint8_t key[REAP_DIGEST_KEY_LEN],
		    uint8_t out[CAS_LRU_KEY_LEN])
{
	cas_st_put_be64(out, last_use);
	memcpy(out + 8, key, REAP_DIGEST_KEY_LEN);
}

int cas_st_meta_get(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_meta_t *m,
		    reap_errbuf_t *eb)
{
	rocksdb_pinnableslice_t *v;
	const char *p;
	char *err = NULL;
	size_t len = 0;
	int rc = REAP_OK;

	v = rocksdb_get_pinned_cf(st->db, st->ro, st->cf[CAS_CF_META], (const char *)key,
				  REAP_DIGEST_KEY_LEN, &err);
	if (err != NULL)
		return cas_st_db_err(eb, "get meta", err);
	if (v == NULL)
		return REAP_E_NOT_FOUND;
	p = rocksdb_pinnableslice_value(v, &len);
	if (!cas_st_meta_decode(p, len, m)) {
		REAP_ERROR("cas store corrupt meta record", "len=%zu", len);
		rc = reap_errf(eb, REAP_E_IO, "corrupt meta record (%zu bytes)", len);
	}
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

void cas_st_blob_path(const cas_store_t *st, const reap_digest_t *d, char out[PATH_MAX])
{
	char hex[REAP_HASH_HEX_LEN + 1];

	reap_digest_hex(d, hex);
	/* cas_store_open bounds the folder's length, so this never truncates. */
	snprintf(out, PATH_MAX, "%s/cas/%.2s/%s-%lld", st->path, hex, hex, (long long)d->size);
}

/* ---- opening ---- */

static int make_dir(const char *path, reap_errbuf_t *eb)
{
	struct stat sb;

	if (mkdir(path, 0700) == 0)
		return REAP_OK;
	if (errno != EEXIST)
		return reap_errf(eb, REAP_E_IO, "mkdir %s: %s", path, strerror(errno));
	if (stat(path, &sb) != 0)
		return reap_errf(eb, REAP_E_IO, "stat %s: %s", path, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return reap_errf(eb, REAP_E_IO, "%s exists and is not a directory", path);
	return REAP_OK;
}

/* The data folder with its missing parents, then db/, cas/ and tmp/ in it. */
static int make_dirs(const cas_store_t *st, reap_errbuf_t *eb)
{
	static const char *const subs[] = {"db", "cas", "tmp"};
	char p[PATH_MAX];
	int rc = REAP_OK;

	snprintf(p, sizeof(p), "%s", st->path);
	for (char *s = strchr(p + 1, '/'); rc == REAP_OK && s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		rc = make_dir(p, eb);
		*s = '/';
	}
	if (rc == REAP_OK)
		rc = make_dir(st->path, eb);
	for (size_t i = 0; rc == REAP_OK && i < sizeof(subs) / sizeof(subs[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", st->path, subs[i]);
		rc = make_dir(p, eb);
	}
	return rc;
}

/*
 * Skip-list memtables resume each insert from where the previous one ended
 * only when it is made "with a hint"; a plain insert starts over from the
 * top unless the key lands right next to the previous one. The sorted
 * groups of cas_store_put_many are dense runs of keys but not adjacent to
 * each other, so without the hint every insert paid a full search (a
 * batch of 1 KiB blobs measured 285 key comparisons per blob, 164 with
 * the hint; most are cache misses). One hint for the whole column family
 * (empty prefix) is what a sorted run needs. Inserts of random single keys
 * pay a few more comparisons to find that the hint does not fit. The C
 * API has no setter for it, hence the options string; on failure o is
 * returned unchanged (only slower).
 */
static rocksdb_options_t *insert_hints(rocksdb_options_t *o)
{
	rocksdb_options_t *h = rocksdb_options_create();
	char *err = NULL;

	rocksdb_get_options_from_string(o, "memtable_insert_with_hint_prefix_extractor=fixed:0", h,
					&err);
	if (err != NULL) {
		REAP_WARN("cas store: no memtable insert hints", "err=\"%s\"", err);
		rocksdb_free(err);
		rocksdb_options_destroy(h);
		return o;
	}
	rocksdb_options_destroy(o);
	return h;
}

/*
 * Column-family options: one shared block cache; bloom filters where
 * lookups often miss (meta and vis: FindMissingBlobs; ac: cache misses); lz4 on
 * everything (cheap, and data blobs are often source text).
 */
static rocksdb_options_t *cf_options(int cf, rocksdb_cache_t *cache)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();

	rocksdb_block_based_options_set_block_cache(t, cache);
	/* the table options take the policy */
	if (cf == CAS_CF_META || cf == CAS_CF_AC || cf == CAS_CF_VIS) {
		rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom(10));
		/* misses are common here: a bloom filter on the memtable too */
		rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.1);
		rocksdb_options_set_memtable_whole_key_filtering(o, 1);
	}
	rocksdb_options_set_block_based_table_factory(o, t);
	rocksdb_block_based_options_destroy(t);
	rocksdb_options_set_compression(o, rocksdb_lz4_compression);
	rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
	if (cf == CAS_CF_VIS) {
		/*
		 * FindMissingBlobs is a MultiGet of grant keys, and recent grants
		 * are in the memtable: a hash table keyed by the blob's 40-byte
		 * prefix finds them without walking a skip list. Every
		 * grant key has that prefix; vis_drop seeks within one prefix and
		 * full scans use total_order_seek (ro_scan).
		 */
		rocksdb_options_set_prefix_extractor(
			o, rocksdb_slicetransform_create_fixed_prefix(REAP_DIGEST_KEY_LEN));
		rocksdb_options_set_hash_link_list_rep(o, VIS_HASH_BUCKETS);
		/* a flush sorts a copy of the hash memtable: keep that transient small */
		rocksdb_options_set_write_buffer_size(o, VIS_WRITE_BUFFER);
	}
	if (cf == CAS_CF_DATA)
		rocksdb_options_set_write_buffer_size(o, DATA_WRITE_BUFFER);
	if (cf == CAS_CF_META || cf == CAS_CF_DATA || cf == CAS_CF_LRU)
		o = insert_hints(o);
	return o;
}

static int open_db(cas_store_t *st, reap_errbuf_t *eb)
{
	rocksdb_options_t *db_opts = rocksdb_options_create();
	rocksdb_options_t *cf_opts[CAS_CF_COUNT];
	rocksdb_cache_t *cache = rocksdb_cache_create_lru(BLOCK_CACHE_BYTES);
	char path[PATH_MAX];
	char *err = NULL;
	int rc = REAP_OK;

	snprintf(path, sizeof(path), "%s/db", st->path);
	rocksdb_options_set_create_if_missing(db_opts, 1);
	rocksdb_options_set_create_missing_column_families(db_opts, 1);
	rocksdb_options_increase_parallelism(db_opts, 2);
	rocksdb_options_set_keep_log_file_num(db_opts, 4);
	rocksdb_options_set_max_log_file_size(db_opts, (size_t)8 << 20);
	/*
	 * The vis memtable is a hash table, which takes inserts from one writer
	 * at a time. Only single-writer inserts use the insert hints of
	 * insert_hints(), which the sorted batches of cas_store_put_many need.
	 */
	rocksdb_options_set_allow_concurrent_memtable_write(db_opts, 0);
	for (int i = 0; i < CAS_CF_COUNT; i++)
		cf_opts[i] = cf_options(i, cache);

	st->db = rocksdb_open_column_families(db_opts, path, CAS_CF_COUNT, cf_names,
					      (const rocksdb_options_t *const *)cf_opts, st->cf,
					      &err);
	if (err != NULL) {
		st->db = NULL;
		rc = cas_st_db_err(eb, "open", err);
		goto out;
	}
	st->ro = rocksdb_readoptions_create();
	st->ro_scan = rocksdb_readoptions_create();
	rocksdb_readoptions_set_fill_cache(st->ro_scan, 0);
	rocksdb_readoptions_set_total_order_seek(st->ro_scan, 1); /* whole-CF scans of vis */
	st->wo = rocksdb_writeoptions_create();

out:
	/* The open DB holds its own references to the options, tables and cache. */
	for (int i = 0; i < CAS_CF_COUNT; i++)
		rocksdb_options_destroy(cf_opts[i]);
	rocksdb_options_destroy(db_opts);
	rocksdb_cache_destroy(cache);
	return rc;
}

/* ---- recovery ---- */

/* Delete everything in <path>/tmp: no writer survives a restart. */
static int clean_tmp(const cas_store_t *st, reap_errbuf_t *eb)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *dir;
	int removed = 0;

	snprintf(path, sizeof(path), "%s/tmp", st->path);
	dir = opendir(path);
	if (dir == NULL)
		return reap_errf(eb, REAP_E_IO, "opendir %s: %s", path, strerror(errno));
	while ((e = readdir(dir)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (unlinkat(dirfd(dir), e->d_name, 0) == 0)
			removed++;
		else
			REAP_WARN("cas store cannot remove temporary", "path=\"%s/%s\" err=\"%s\"",
				  path, e->d_name, strerror(errno));
	}
	closedir(dir);
	if (removed > 0)
		REAP_INFO("cas store removed temporaries", "count=%d", removed);
	return REAP_OK;
}

/* Queue the deletion of a record (and its lru entry and inline data). */
static void drop_record(rocksdb_writebatch_t *b, cas_store_t *st, const char *key, size_t klen,
			const cas_meta_t *m)
{
	uint8_t lkey[CAS_LRU_KEY_LEN];

	rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_META], key, klen);
	rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_DATA], key, klen);
	if (m != NULL && klen == REAP_DIGEST_KEY_LEN) {
		cas_st_lru_key(m->last_use, (const uint8_t *)key, lkey);
		rocksdb_writebatch_delete_cf(b, st->cf[CAS_CF_LRU], (const char *)lkey,
					     sizeof(lkey));
	}
}

/* True when the record's file exists with the right size (a wrong one is removed). */
static bool file_ok(cas_store_t *st, const char *key, const cas_meta_t *m)
{
	char path[PATH_MAX];
	reap_digest_t d;
	struct stat sb;

	reap_digest_from_key((const uint8_t *)key, &d);
	cas_st_blob_path(st, &d, path);
	if (stat(path, &sb) != 0) {
		REAP_WARN("cas store blob file missing", "path=\"%s\" err=\"%s\"", path,
			  strerror(errno));
		return false;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != m->size) {
		REAP_WARN("cas store blob file has the wrong size", "path=\"%s\" size=%lld want=%llu",
			  path, (long long)sb.st_size, (unsigned long long)m->size);
		if (S_ISREG(sb.st_mode) && unlink(path) != 0)
			REAP_WARN("cas store cannot remove file", "path=\"%s\" err=\"%s\"", path,
				  strerror(errno));
		return false;
	}
	return true;
}

/*
 * Count bytes and blobs from meta, dropping malformed records and file
 * records whose file is missing or wrong.
 */
static int scan_meta(cas_store_t *st, reap_errbuf_t *eb)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator_cf(st->db, st->ro_scan, st->cf[CAS_CF_META]);
	rocksdb_writebatch_t *b = rocksdb_writebatch_create();
	uint64_t bytes = 0, blobs = 0, dropped = 0;
	char *err = NULL;
	int rc = REAP_OK;

	for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen = 0, vlen = 0;
		const char *k = rocksdb_iter_key(it, &klen);
		const char *v = rocksdb_iter_value(it, &vlen);
		cas_meta_t m;
		bool decoded = klen == REAP_DIGEST_KEY_LEN && cas_st_meta_decode(v, vlen, &m);

		if (!decoded)
			REAP_WARN("cas store dropping malformed meta record", "klen=%zu vlen=%zu", klen,
				  vlen);
		if (decoded && (m.kind == CAS_KIND_INLINE || file_ok(st, k, &m))) {
			bytes += m.size;
			blobs++;
			continue;
		}
		/* A malformed record's lru entry (if any) is left for eviction to drop as stale. */
		drop_record(b, st, k, klen, decoded ? &m : NULL);
		dropped++;
		if (rocksdb_writebatch_count(b) >= RECOVER_BATCH) {
			rocksdb_write(st->db, st->wo, b, &err);
			if (err != NULL)
				goto out;
			rocksdb_writebatch_clear(b);
		}
	}
	rocksdb_iter_get_error(it, &err);
	if (err != NULL)
		goto out;
	rocksdb_write(st->db, st->wo, b, &err);

out:
	if (err != NULL)
		rc = cas_st_db_err(eb, "recovery scan of meta", err);
	rocksdb_writebatch_destroy(b);
	rocksdb_iter_destroy(it);
	atomic_store(&st->bytes, bytes);
	atomic_store(&st->blobs, blobs);
	if (dropped > 0)
		REAP_WARN("cas store dropped records of missing blobs", "count=%llu",
			  (unsigned long long)dropped);
	return rc;
}

/*
 * Parse a blob file name "<64 hex>-<size>" in shard dir shard (2 hex); only
 * the canonical spelling counts.
 */
static bool parse_blob_name(const char *shard, const char *name, reap_digest_t *d)
{
	char canon[REAP_HASH_HEX_LEN + 32];
	char *end = NULL;
	long long size;

	if (strlen(name) < REAP_HASH_HEX_LEN + 2 || name[REAP_HASH_HEX_LEN] != '-' ||
	    memcmp(name, shard, 2) != 0)
		return false;
	errno = 0;
	size = strtoll(name + REAP_HASH_HEX_LEN + 1, &end, 10);
	if (errno != 0 || *end != '\0' ||
	    reap_digest_parse(name, REAP_HASH_HEX_LEN, size, d, NULL) != REAP_OK)
		return false;
	snprintf(canon, sizeof(canon), "%.*s-%lld", REAP_HASH_HEX_LEN, name, size);
	return strcmp(canon, name) == 0;
}

/* Remove files in one shard folder that have no file-kind meta record. */
static int scan_shard(cas_store_t *st, int parent, const char *shard, uint64_t *removed,
		      reap_errbuf_t *eb)
{
	int fd = openat(parent, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint8_t key[REAP_DIGEST_KEY_LEN];
	struct dirent *e;
	reap_digest_t d;
	cas_meta_t m;
	DIR *dir;
	int rc = REAP_OK;

	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "open %s/cas/%s: %s", st->path, shard, strerror(errno));
	dir = fdopendir(fd);
	if (dir == NULL) {
		rc = reap_errf(eb, REAP_E_IO, "fdopendir %s/cas/%s: %s", st->path, shard,
			       strerror(errno));
		close(fd);
		return rc;
	}
	while (rc == REAP_OK && (e = readdir(dir)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (parse_blob_name(shard, e->d_name, &d)) {
			reap_digest_key(&d, key);
			rc = cas_st_meta_get(st, key, &m, eb);
			if (rc == REAP_OK && m.kind == CAS_KIND_FILE)
				continue;
			if (rc != REAP_OK && rc != REAP_E_NOT_FOUND)
				break;
			rc = REAP_OK;
		}
		if (unlinkat(fd, e->d_name, 0) == 0)
			(*removed)++;
		else
			REAP_WARN("cas store cannot remove orphan", "path=\"%s/cas/%s/%s\" err=\"%s\"",
				  st->path, shard, e->d_name, strerror(errno));
	}
	closedir(dir);
	return rc;
}

static bool is_shard_name(const char *s)
{
	static const char hex[] = "0123456789abcdef";

	return strlen(s) == 2 && strchr(hex, s[0]) != NULL && strchr(hex, s[1]) != NULL;
}

/* Remove files under <path>/cas that no meta record owns. */
static int scan_files(cas_store_t *st, reap_errbuf_t *eb)
{
	char path[PATH_MAX];
	uint64_t removed = 0;
	struct dirent *e;
	struct stat sb;
	DIR *dir;
	int rc = REAP_OK;

	snprintf(path, sizeof(path), "%s/cas", st->path);
	dir = opendir(path);
	if (dir == NULL)
		return reap_errf(eb, REAP_E_IO, "opendir %s: %s", path, strerror(errno));
	while (rc == REAP_OK && (e = readdir(dir)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(dir), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
			rc = reap_errf(eb, REAP_E_IO, "stat %s/%s: %s", path, e->d_name,
				       strerror(errno));
		} else if (S_ISDIR(sb.st_mode) && is_shard_name(e->d_name)) {
			rc = scan_shard(st, dirfd(dir), e->d_name, &removed, eb);
		} else if (!S_ISDIR(sb.st_mode) && unlinkat(dirfd(dir), e->d_name, 0) == 0) {
			removed++;
		} else {
			REAP_WARN("cas store leaves unexpected entry", "path=\"%s/%s\"", path,
				  e->d_name);
		}
	}
	closedir(dir);
	if (removed > 0)
		REAP_WARN("cas store removed orphan files", "count=%llu",
			  (unsigned long long)removed);
	return rc;
}

cas_store_t *cas_store_open(const cas_store_config_t *cfg, reap_errbuf_t *eb)
{
	cas_store_t *st = NULL;
	int rc;

	if (cfg == NULL || cfg->path == NULL || cfg->path[0] == '\0') {
		reap_errf(eb, REAP_E_INVALID, "store path is empty");
		return NULL;
	}
	if (strlen(cfg->path) > PATH_MAX - PATH_RESERVE) {
		reap_errf(eb, REAP_E_INVALID, "store path is longer than %d bytes",
			  PATH_MAX - PATH_RESERVE);
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL || (st->path = strdup(cfg->path)) == NULL) {
		rc = reap_errf(eb, REAP_E_NOMEM, "out of memory opening the store");
		goto fail;
	}
	st->capacity = cfg->capacity_bytes;
	st->inline_max = cfg->inline_max != 0 ? cfg->inline_max : CAS_DEFAULT_INLINE_MAX;
	st->touch_interval = cfg->touch_interval_s == 0  ? CAS_DEFAULT_TOUCH_S
			     : cfg->touch_interval_s < 0 ? -1
							  : cfg->touch_interval_s;
	st->no_sync = cfg->no_sync;
	for (; st->n_mutexes <= CAS_STRIPES; st->n_mutexes++) {
		pthread_mutex_t *mu = st->n_mutexes < CAS_STRIPES ? &st->stripe[st->n_mutexes]
								 : &st->evict_mu;
		if (pthread_mutex_init(mu, NULL) != 0) {
			rc = reap_errf(eb, REAP_E_NOMEM, "pthread_mutex_init failed");
			goto fail;
		}
	}

	rc = make_dirs(st, eb);
	if (rc == REAP_OK)
		rc = open_db(st, eb);
	if (rc == REAP_OK)
		rc = clean_tmp(st, eb);
	if (rc == REAP_OK)
		rc = scan_meta(st, eb);
	if (rc == REAP_OK)
		rc = scan_files(st, eb);
	if (rc == REAP_OK)
		rc = cas_st_vis_recover(st, eb);
	if (rc != REAP_OK)
		goto fail;

	REAP_INFO("cas store open", "path=\"%s\" blobs=%llu bytes=%llu capacity=%llu", st->path,
		  (unsigned long long)atomic_load(&st->blobs),
		  (unsigned long long)atomic_load(&st->bytes), (unsigned long long)st->capacity);
	cas_st_maybe_evict(st); /* the capacity may have been lowered */
	return st;

fail:
	REAP_ERROR("cas store open failed", "path=\"%s\" err=\"%s\"", cfg->path,
		   reap_errmsg(eb, rc));
	cas_store_close(st);
	return NULL;
}

void cas_store_close(cas_store_t *st)
{
	rocksdb_flushoptions_t *fo;
	char *err = NULL;

	if (st == NULL)
		return;
	if (st->db != NULL) {
		/* Flush memtables so the next open does not replay the WAL. */
		fo = rocksdb_flushoptions_create();
		rocksdb_flushoptions_set_wait(fo, 1);
		for (int i = 0; i < CAS_CF_COUNT; i++) {
			rocksdb_flush_cf(st->db, fo, st->cf[i], &err);
			if (err != NULL) {
				cas_st_db_err(NULL, "flush on close", err);
				err = NULL;
			}
		}
		rocksdb_flushoptions_destroy(fo);
		for (int i = 0; i < CAS_CF_COUNT; i++)
			rocksdb_column_family_handle_destroy(st->cf[i]);
		rocksdb_close(st->db);
	}
	if (st->ro != NULL)
		rocksdb_readoptions_destroy(st->ro);
	if (st->ro_scan != NULL)
		rocksdb_readoptions_destroy(st->ro_scan);
	if (st->wo != NULL)
		rocksdb_writeoptions_destroy(st->wo);
	for (int i = 0; i < st->n_mutexes; i++)
		pthread_mutex_destroy(i < CAS_STRIPES ? &st->stripe[i] : &st->evict_mu);
	cas_st_batch_cleanup(st);
	free(st->path);
	free(st);
}

void cas_store_stats(cas_store_t *st, cas_store_stats_t *out)
{
	out->bytes = atomic_load(&st->bytes);
	out->blobs = atomic_load(&st->blobs);
	out->evictions = atomic_load(&st->evictions);
	out->ac_entries_written = atomic_load(&st->ac_written);
}

/* ---- action cache ---- */

/* Key "u8 len, instance, digest key"; 0 or REAP_E_INVALID for a long name. */
static int ac_key(const char *instance, const reap_digest_t *action, uint8_t out[CAS_AC_KEY_MAX],
		  size_t *klen)
{
	size_t n = instance != NULL ? strlen(instance) : 0;

	if (n > CAS_INSTANCE_MAX || action->size < 0)
		return REAP_E_INVALID;
	out[0] = (uint8_t)n;
	if (n > 0)
		memcpy(out + 1, instance, n);
	reap_digest_key(action, out + 1 + n);
	*klen = 1 + n + REAP_DIGEST_KEY_LEN;
	return REAP_OK;
}

int cas_ac_get(cas_store_t *st, const char *instance, const reap_digest_t *action, void **data,
	       size_t *len)
{
	uint8_t key[CAS_AC_KEY_MAX];
	rocksdb_pinnableslice_t *v = NULL;
	const char *p;
	char *err = NULL;
	size_t klen = 0, vlen = 0;
	int rc;

	*data = NULL;
	*len = 0;
	rc = ac_key(instance, action, key, &klen);
	if (rc != REAP_OK)
		return rc;
	v = rocksdb_get_pinned_cf(st->db, st->ro, st->cf[CAS_CF_AC], (const char *)key, klen, &err);
	if (err != NULL)
		return cas_st_db_err(NULL, "get ac", err);
	if (v == NULL)
		return REAP_E_NOT_FOUND;
	p = rocksdb_pinnableslice_value(v, &vlen);
	*data = malloc(vlen > 0 ? vlen : 1);
	if (*data == NULL) {
		rc = REAP_E_NOMEM;
		goto out;
	}
	memcpy(*data, p, vlen);
	*len = vlen;
out:
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

int cas_ac_put(cas_store_t *st, const char *instance, const reap_digest_t *action,
	       const void *data, size_t len, reap_errbuf_t *eb)
{
	uint8_t key[CAS_AC_KEY_MAX];
	char *err = NULL;
	size_t klen = 0;

	if (ac_key(instance, action, key, &klen) != REAP_OK)
		return reap_errf(eb, REAP_E_INVALID, "instance name longer than %d bytes or bad digest",
				 CAS_INSTANCE_MAX);
	rocksdb_put_cf(st->db, st->wo, st->cf[CAS_CF_AC], (const char *)key, klen, data, len, &err);
	if (err != NULL)
		return cas_st_db_err(eb, "put ac", err);
	atomic_fetch_add(&st->ac_written, 1);
	return REAP_OK;
}
