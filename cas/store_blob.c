/*
 * store_blob.c - blobs: presence, whole puts, streaming writers, readers.
 *
 * Writes are verified before anything becomes visible. A blob of at most
 * inline_max bytes is committed as one batch {meta, data, lru}. A larger one
 * is streamed to <path>/tmp, hashed on the way, fsync'd, renamed to its
 * place under <path>/cas and only then given its batch {meta, lru}; the
 * folder is fsync'd before the put returns. Both commits run under the
 * digest's stripe lock and first look for an existing record, so a digest
 * stored by several threads at once is stored and counted once; a loser
 * just drops its temporary file. A write names the scope it grants read
 * access to (store_vis.c): the grant goes in the new blob's batch, or is
 * added to the blob already stored, only after the content was verified.
 *
 * Reads take no lock unless the last use is due for a refresh: data and
 * meta are written and deleted together, and blob files are immutable and
 * only ever appear complete, so a reader racing an eviction sees either the
 * whole blob or REAP_E_NOT_FOUND.
 */
#include "cas/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

#define FIND_CHUNK 64 /* digests per RocksDB MultiGet */

/*
 * A file writer starts the disk writing what it has every WRITEBACK_BYTES
 * (sync_file_range, asynchronous), so the disk works while the rest of the
 * blob streams in and the fsync at commit waits only for the tail: with a
 * single fsync at the end, a 16 MiB blob was received first and then
 * written, serially.
 */
#define WRITEBACK_BYTES (1 << 20)

struct cas_writer {
	cas_store_t *st;
	reap_digest_t d;
	reap_hasher_t h;
	int64_t off;
	int64_t flushed; /* file writers: writeback started for [0, flushed) */
	bool scoped;  /* commit grants scope */
	char scope[CAS_INSTANCE_MAX + 1];
	uint8_t *buf; /* inline blobs: the bytes so far */
	size_t cap;
	int fd;       /* larger blobs: the temporary file, else -1 */
	bool done;    /* committed, failed to commit, or broken by an I/O error */
	char tmp[PATH_MAX];
};

struct cas_reader {
	int64_t size;
	uint8_t *buf; /* inline blob: a private copy, so eviction cannot touch it */
	int fd;       /* file blob: open descriptor, else -1 */
};

/* ---- file helpers ---- */

static int write_all(int fd, const void *data, size_t len, reap_errbuf_t *eb)
{
	const uint8_t *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return reap_errf(eb, REAP_E_IO, "write temporary file: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return REAP_OK;
}

static int fsync_fd(int fd)
{
	int r;

	do
		r = fsync(fd);
	while (r != 0 && errno == EINTR);
	return r;
}

static int fsync_dir(const char *path)
{
	int fd, r, saved;

	do
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -1;
	r = fsync_fd(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return r;
}

static int tmp_create(cas_store_t *st, char path[PATH_MAX], int *fd, reap_errbuf_t *eb)
{
	snprintf(path, PATH_MAX, "%s/tmp/blob-XXXXXX", st->path);
	*fd = mkostemp(path, O_CLOEXEC);
	if (*fd < 0) {
		int rc = reap_errf(eb, REAP_E_IO, "create temporary file in %s/tmp: %s", st->path,
				   strerror(errno));
		path[0] = '\0';
		return rc;
	}
	return REAP_OK;
}

/* Close (if open) and remove a temporary file; both may be unset. */
static void tmp_discard(int *fd, char path[PATH_MAX])
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	if (path[0] != '\0' && unlink(path) != 0 && errno != ENOENT)
		REAP_WARN("cas store cannot remove temporary", "path=\"%s\" err=\"%s\"", path,
			  strerror(errno));
	path[0] = '\0';
}

/* Make fd durable (unless no_sync) and close it; the descriptor is gone either way. */
static int tmp_finish(cas_store_t *st, int *fd, reap_errbuf_t *eb)
{
	int rc = REAP_OK;

	if (!st->no_sync && fsync_fd(*fd) != 0)
		rc = reap_errf(eb, REAP_E_IO, "fsync temporary file: %s", strerror(errno));
	if (close(*fd) != 0 && rc == REAP_OK)
		rc = reap_errf(eb, REAP_E_IO, "close temporary file: %s", strerror(errno));
	*fd = -1;
	return rc;
}

/* ---- verification and commits ---- */

static int verify(const reap_digest_t *want, const reap_digest_t *got, reap_errbuf_t *eb)
{
	char hex[REAP_HASH_HEX_LEN + 1];

	if (reap_digest_eq(want, got))
		return REAP_OK;
	reap_digest_hex(got, hex);
	return reap_errf(eb, REAP_E_INVALID, "content does not match digest (got hash %s size %lld)",
			 hex, (long long)got->size);
}

/* Add scope's grant of key (scope checked by the caller) to a new blob's batch. */
static void batch_grant(cas_store_t *st, rocksdb_writebatch_t *b,
			const uint8_t key[REAP_DIGEST_KEY_LEN], const cas_meta_t *m,
			const char *scope)
{
	uint8_t vkey[CAS_VIS_KEY_MAX], val[8];
	size_t vlen;

	if (scope == NULL)
		return;
	vlen = cas_st_vis_key(key, scope, vkey);
	cas_st_vis_value(m->last_use, val);
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_VIS], (const char *)vkey, vlen,
				  (const char *)val, sizeof(val));
}

/* The blob is already stored (caller holds the lock): touch it, add scope's grant (if any). */
static int commit_existing(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN],
			   cas_meta_t *m, const char *scope, reap_errbuf_t *eb)
{
	(void)cas_st_touch_locked(st, key, m);
	return scope != NULL ? cas_st_grant_locked(st, key, m, scope, eb) : REAP_OK;
}

/*
 * Commit a verified inline blob: one batch {meta, data, lru, grant}, or a
 * touch and a grant if present.
 */
static int commit_inline(cas_store_t *st, const char *scope, const reap_digest_t *d,
			 const void *data, reap_errbuf_t *eb)
{
	uint8_t key[REAP_DIGEST_KEY_LEN], lkey[CAS_LRU_KEY_LEN], val[CAS_META_LEN];
	pthread_mutex_t *mu;
	rocksdb_writebatch_t *b = NULL;
	cas_meta_t m;
	char *err = NULL;
	int rc;

	reap_digest_key(d, key);
	mu = cas_st_stripe(st, key);
	pthread_mutex_lock(mu);
	rc = cas_st_meta_get(st, key, &m, eb);
	if (rc == REAP_OK) {
		rc = commit_existing(st, key, &m, scope, eb);
		goto out;
	}
	if (rc != REAP_E_NOT_FOUND)
		goto out;
	m = (cas_meta_t){.kind = CAS_KIND_INLINE, .size = (uint64_t)d->size,
			 .last_use = cas_st_now(st)};
	cas_st_meta_encode(&m, val);
	cas_st_lru_key(m.last_use, key, lkey);
	b = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_META], (const char *)key, sizeof(key),
				  (const char *)val, sizeof(val));
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_DATA], (const char *)key, sizeof(key), data,
				  (size_t)d->size);
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_LRU], (const char *)lkey, sizeof(lkey), "", 0);
	batch_grant(st, b, key, &m, scope);
	rocksdb_write(st->db, st->wo, b, &err);
	if (err != NULL) {
		rc = cas_st_db_err(eb, "put blob", err);
		goto out;
	}
	atomic_fetch_add(&st->bytes, m.size);
	atomic_fetch_add(&st->blobs, 1);
	rc = 1;
out:
	pthread_mutex_unlock(mu);
	if (b != NULL)
		rocksdb_writebatch_destroy(b);
	if (rc == 1)
		cas_st_maybe_evict(st);
	return rc > 0 ? REAP_OK : rc;
}

/* Rename into place; a missing shard folder is created on first use. */
static int place_file(const char *tmp, const char *path, reap_errbuf_t *eb)
{
	char dir[PATH_MAX];
	char *slash;

	if (rename(tmp, path) == 0)
		return REAP_OK;
	if (errno != ENOENT)
		return reap_errf(eb, REAP_E_IO, "rename %s to %s: %s", tmp, path, strerror(errno));
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash != NULL)
		*slash = '\0';
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return reap_errf(eb, REAP_E_IO, "mkdir %s: %s", dir, strerror(errno));
	if (rename(tmp, path) != 0)
		return reap_errf(eb, REAP_E_IO, "rename %s to %s: %s", tmp, path, strerror(errno));
	return REAP_OK;
}

/*
 * Commit a verified, durable temporary file as blob d: rename, then batch
 * {meta, lru, grant}; or drop the temporary and only grant when d is
 * already stored. The temporary is gone on return whatever happens.
 */
static int commit_file(cas_store_t *st, const char *scope, const reap_digest_t *d,
		       char tmp[PATH_MAX], reap_errbuf_t *eb)
{
	uint8_t key[REAP_DIGEST_KEY_LEN], lkey[CAS_LRU_KEY_LEN], val[CAS_META_LEN];
	char path[PATH_MAX];
	rocksdb_writebatch_t *b = NULL;
	pthread_mutex_t *mu;
	cas_meta_t m;
	char *err = NULL;
	int rc, nofd = -1;

	reap_digest_key(d, key);
	cas_st_blob_path(st, d, path);
	mu = cas_st_stripe(st, key);
	pthread_mutex_lock(mu);
	rc = cas_st_meta_get(st, key, &m, eb);
	if (rc == REAP_OK)
		rc = commit_existing(st, key, &m, scope, eb);
	if (rc != REAP_E_NOT_FOUND)
		goto out;
	rc = place_file(tmp, path, eb);
	if (rc != REAP_OK)
		goto out;
	tmp[0] = '\0';
	m = (cas_meta_t){.kind = CAS_KIND_FILE, .size = (uint64_t)d->size,
			 .last_use = cas_st_now(st)};
	cas_st_meta_encode(&m, val);
	cas_st_lru_key(m.last_use, key, lkey);
	b = rocksdb_writebatch_create();
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_META], (const char *)key, sizeof(key),
				  (const char *)val, sizeof(val));
	rocksdb_writebatch_put_cf(b, st->cf[CAS_CF_LRU], (const char *)lkey, sizeof(lkey), "", 0);
	batch_grant(st, b, key, &m, scope);
	rocksdb_write(st->db, st->wo, b, &err);
	if (err != NULL) {
		rc = cas_st_db_err(eb, "put blob", err);
		if (unlink(path) != 0) /* no record: the file must not outlive us */
			REAP_WARN("cas store cannot remove file", "path=\"%s\" err=\"%s\"", path,
				  strerror(errno));
		goto out;
	}
	atomic_fetch_add(&st->bytes, m.size);
	atomic_fetch_add(&st->blobs, 1);
	rc = 1;
out:
	pthread_mutex_unlock(mu);
	tmp_discard(&nofd, tmp);
	if (b != NULL)
		rocksdb_writebatch_destroy(b);
	if (rc == 1) {
		char *slash = strrchr(path, '/');
		if (slash != NULL)
			*slash = '\0';
		if (!st->no_sync && fsync_dir(path) != 0)
			REAP_WARN("cas store cannot fsync folder", "path=\"%s\" err=\"%s\"", path,
				  strerror(errno));
		cas_st_maybe_evict(st);
	}
	return rc > 0 ? REAP_OK : rc;
}

/* ---- presence ---- */

static int find_chunk(cas_store_t *st, const reap_digest_t *ds, size_t n, bool *present)
{
	uint8_t keys[FIND_CHUNK][REAP_DIGEST_KEY_LEN];
	const char *kp[FIND_CHUNK];
	size_t kl[FIND_CHUNK], idx[FIND_CHUNK], nk = 0;
	rocksdb_pinnableslice_t *vals[FIND_CHUNK];
	char *errs[FIND_CHUNK];
	int rc = REAP_OK;

	for (size_t i = 0; i < n; i++) {
		present[i] = reap_digest_is_empty(&ds[i]);
		if (present[i] || ds[i].size < 0)
			continue;
		reap_digest_key(&ds[i], keys[nk]);
		kp[nk] = (const char *)keys[nk];
		kl[nk] = REAP_DIGEST_KEY_LEN;
		idx[nk++] = i;
	}
	if (nk == 0)
		return REAP_OK;
	rocksdb_batched_multi_get_cf(st->db, st->ro, st->cf[CAS_CF_META], nk, kp, kl, vals, errs,
				     false);
	for (size_t j = 0; j < nk; j++) {
		cas_meta_t m;
		size_t vlen = 0;
		const char *v;

		if (errs[j] != NULL) {
			if (rc == REAP_OK)
				rc = cas_st_db_err(NULL, "find", errs[j]);
			else
				rocksdb_free(errs[j]);
		}
		if (vals[j] == NULL)
			continue;
		v = rocksdb_pinnableslice_value(vals[j], &vlen);
		if (!cas_st_meta_decode(v, vlen, &m)) {
			REAP_ERROR("cas store corrupt meta record", "len=%zu", vlen);
			rc = REAP_E_IO;
		} else if (rc == REAP_OK) {
			present[idx[j]] = cas_st_touch(st, keys[j], &m) == REAP_OK;
		}
		rocksdb_pinnableslice_destroy(vals[j]);
	}
	return rc;
}

int cas_store_find(cas_store_t *st, const reap_digest_t *ds, size_t n, bool *present)
{
	for (size_t i = 0; i < n; i += FIND_CHUNK) {
		int rc = find_chunk(st, ds + i, n - i < FIND_CHUNK ? n - i : FIND_CHUNK, present + i);
		if (rc != REAP_OK)
			return rc;
	}
	return REAP_OK;
}

int cas_store_has(cas_store_t *st, const reap_digest_t *d)
{
	uint8_t key[REAP_DIGEST_KEY_LEN];
	cas_meta_t m;

	if (reap_digest_is_empty(d))
		return REAP_OK;
	if (d->size < 0)
		return REAP_E_NOT_FOUND;
	reap_digest_key(d, key);
	return cas_st_lookup(st, key, &m);
}

/* ---- whole puts ---- */

static int check_scope(const char *scope, reap_errbuf_t *eb)
{
	if (scope != NULL && strlen(scope) > CAS_INSTANCE_MAX)
		return reap_errf(eb, REAP_E_INVALID, "scope is longer than %d bytes",
				 CAS_INSTANCE_MAX);
	return REAP_OK;
}

int cas_store_put(cas_store_t *st, const char *scope, const reap_digest_t *d, const void *data,
		  size_t len, reap_errbuf_t *eb)
{
	uint8_t key[REAP_DIGEST_KEY_LEN];
	char tmp[PATH_MAX] = "";
	reap_digest_t got;
	cas_meta_t m;
	int rc, fd = -1;

	rc = check_scope(scope, eb);
	if (rc != REAP_OK)
		return rc;
	if (reap_digest_of(data, len, &got) != REAP_OK)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory hashing the blob");
	rc = verify(d, &got, eb);
	if (rc != REAP_OK || len == 0)
		return rc;
	if (len <= st->inline_max)
		return commit_inline(st, scope, d, data, eb);

	/* Already stored: the bytes were verified, so grant and skip writing the file. */
	reap_digest_key(d, key);
	if (scope == NULL && cas_st_lookup(st, key, &m) == REAP_OK)
		return REAP_OK;
	if (scope != NULL) {
		rc = cas_st_grant(st, key, scope, eb);
		if (rc != REAP_E_NOT_FOUND)
			return rc;
	}
	rc = tmp_create(st, tmp, &fd, eb);
	if (rc == REAP_OK)
		rc = write_all(fd, data, len, eb);
	if (rc == REAP_OK)
		rc = tmp_finish(st, &fd, eb);
	if (rc == REAP_OK)
		rc = commit_file(st, scope, d, tmp, eb);
	tmp_discard(&fd, tmp);
	return rc;
}

/* ---- streaming writers ---- */

int cas_writer_new(cas_store_t *st, const char *scope, const reap_digest_t *d,
		   cas_writer_t **out, reap_errbuf_t *eb)
{
	cas_writer_t *w;
	int rc;

	*out = NULL;
	if (d->size < 0)
		return reap_errf(eb, REAP_E_INVALID, "digest size is negative");
	rc = check_scope(scope, eb);
	if (rc != REAP_OK)
		return rc;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	w->st = st;
	w->d = *d;
	w->fd = -1;
	if (scope != NULL) {
		w->scoped = true;
		snprintf(w->scope, sizeof(w->scope), "%s", scope);
	}
	if (reap_hasher_init(&w->h) != REAP_OK) {
		rc = reap_errf(eb, REAP_E_NOMEM, "out of memory");
		goto fail;
	}
	/* The size is known up front: a blob that will live in a file streams to one. */
	if ((uint64_t)d->size > st->inline_max) {
		rc = tmp_create(st, w->tmp, &w->fd, eb);
		if (rc != REAP_OK)
			goto fail;
	}
	*out = w;
	return REAP_OK;
fail:
	cas_writer_free(w);
	return rc;
}

int cas_writer_write(cas_writer_t *w, const void *data, size_t len, reap_errbuf_t *eb)
{
	int rc = REAP_OK;

	if (w->done)
		return reap_errf(eb, REAP_E_PRECONDITION, "write after the writer finished");
	if (len > (uint64_t)(w->d.size - w->off))
		return reap_errf(eb, REAP_E_INVALID,
				 "write of %zu bytes at offset %lld goes past the digest size %lld",
				 len, (long long)w->off, (long long)w->d.size);
	if (len == 0)
		return REAP_OK;
	if (w->fd >= 0) {
		rc = write_all(w->fd, data, len, eb);
		if (rc != REAP_OK) {
			w->done = true; /* the file no longer matches the offset */
			tmp_discard(&w->fd, w->tmp);
			return rc;
		}
		int64_t end = w->off + (int64_t)len;
		if (!w->st->no_sync && end - w->flushed >= WRITEBACK_BYTES) {
			/* advisory: an error here resurfaces from the fsync at commit */
			(void)sync_file_range(w->fd, w->flushed, end - w->flushed,
					      SYNC_FILE_RANGE_WRITE);
			w->flushed = end;
		}
	} else {
		size_t need = (size_t)w->off + len;
		if (need > w->cap) {
			size_t cap = w->cap * 2 > need ? w->cap * 2 : need;
			uint8_t *p;
			if (cap < 4096)
				cap = 4096;
			if (cap > (size_t)w->d.size)
				cap = (size_t)w->d.size;
			p = realloc(w->buf, cap);
			if (p == NULL)
				return reap_errf(eb, REAP_E_NOMEM, "out of memory buffering the blob");
			w->buf = p;
			w->cap = cap;
		}
		memcpy(w->buf + w->off, data, len);
	}
	reap_hasher_update(&w->h, data, len);
	w->off += (int64_t)len;
	return REAP_OK;
}

int64_t cas_writer_offset(const cas_writer_t *w)
{
	return w->off;
}

int cas_writer_commit(cas_writer_t *w, reap_errbuf_t *eb)
{
	reap_digest_t got;
	int rc;

	if (w->done)
		return reap_errf(eb, REAP_E_PRECONDITION, "commit after the writer finished");
	w->done = true;
	reap_hasher_final(&w->h, &got);
	rc = verify(&w->d, &got, eb);
	if (rc != REAP_OK || w->d.size == 0)
		goto out;
	if (w->fd < 0) {
		rc = commit_inline(w->st, w->scoped ? w->scope : NULL, &w->d, w->buf, eb);
		goto out;
	}
	rc = tmp_finish(w->st, &w->fd, eb);
	if (rc == REAP_OK)
		rc = commit_file(w->st, w->scoped ? w->scope : NULL, &w->d, w->tmp, eb);
out:
	tmp_discard(&w->fd, w->tmp);
	free(w->buf);
	w->buf = NULL;
	w->cap = 0;
	return rc;
}

void cas_writer_free(cas_writer_t *w)
{
	if (w == NULL)
		return;
	tmp_discard(&w->fd, w->tmp);
	reap_hasher_destroy(&w->h);
	free(w->buf);
	free(w);
}

/* ---- readers ---- */

/* Copy an inline blob's bytes; REAP_E_NOT_FOUND when it was evicted since meta was read. */
static int read_inline(cas_store_t *st, const uint8_t key[REAP_DIGEST_KEY_LEN], cas_reader_t *r)
{
	rocksdb_pinnableslice_t *v;
	const char *p;
	char *err = NULL;
	size_t len = 0;
	int rc = REAP_OK;

	v = rocksdb_get_pinned_cf(st->db, st->ro, st->cf[CAS_CF_DATA], (const char *)key,
				  REAP_DIGEST_KEY_LEN, &err);
	if (err != NULL)
		return cas_st_db_err(NULL, "get blob", err);
	if (v == NULL)
		return REAP_E_NOT_FOUND;
	p = rocksdb_pinnableslice_value(v, &len);
	if (len != (uint64_t)r->size) {
		REAP_ERROR("cas store inline blob has the wrong size", "len=%zu want=%lld", len,
			   (long long)r->size);
		rc = REAP_E_DATA_LOSS;
		goto out;
	}
	r->buf = malloc(len);
	if (r->buf == NULL) {
		rc = REAP_E_NOMEM;
		goto out;
	}
	memcpy(r->buf, p, len);
out:
	rocksdb_pinnableslice_destroy(v);
	return rc;
}

/* Open a file blob; REAP_E_NOT_FOUND when it was evicted since meta was read. */
static int open_file(cas_store_t *st, const reap_digest_t *d, cas_reader_t *r)
{
	char path[PATH_MAX];
	struct stat sb;

	cas_st_blob_path(st, d, path);
	do
		r->fd = open(path, O_RDONLY | O_CLOEXEC);
	while (r->fd < 0 && errno == EINTR);
	if (r->fd < 0 && errno == ENOENT)
		return REAP_E_NOT_FOUND;
	if (r->fd < 0 || fstat(r->fd, &sb) != 0) {
		REAP_ERROR("cas store cannot open blob file", "path=\"%s\" err=\"%s\"", path,
			   strerror(errno));
		return REAP_E_IO;
	}
	if (sb.st_size != r->size) {
		REAP_ERROR("cas store blob file has the wrong size", "path=\"%s\" size=%lld want=%lld",
			   path, (long long)sb.st_size, (long long)r->size);
		return REAP_E_DATA_LOSS;
	}
	return REAP_OK;
}

int cas_reader_open(cas_store_t *st, const reap_digest_t *d, cas_reader_t **out)
{
	uint8_t key[REAP_DIGEST_KEY_LEN];
	cas_reader_t *r;
	cas_meta_t m;
	int rc = REAP_OK;

	*out = NULL;
	if (d->size < 0)
		return REAP_E_NOT_FOUND;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return REAP_E_NOMEM;
	r->fd = -1;
	r->size = d->size;
	if (reap_digest_is_empty(d))
		goto out;
	reap_digest_key(d, key);
	rc = cas_st_lookup(st, key, &m);
	if (rc != REAP_OK)
		goto out;
	rc = m.kind == CAS_KIND_INLINE ? read_inline(st, key, r) : open_file(st, d, r);
out:
	if (rc == REAP_OK)
		*out = r;
	else
		cas_reader_free(r);
	return rc;
}

int cas_reader_read(cas_reader_t *r, int64_t offset, void *buf, size_t len, size_t *got)
{
	size_t want, done = 0;

	*got = 0;
	if (offset < 0 || offset > r->size)
		return REAP_E_RANGE;
	want = (uint64_t)(r->size - offset) < len ? (size_t)(r->size - offset) : len;
	if (r->fd < 0) {
		if (want > 0)
			memcpy(buf, r->buf + offset, want);
		*got = want;
		return REAP_OK;
	}
	while (done < want) {
		ssize_t n = pread(r->fd, (uint8_t *)buf + done, want - done, offset + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			REAP_ERROR("cas store read failed", "err=\"%s\"", strerror(errno));
			return REAP_E_IO;
		}
		if (n == 0) {
			REAP_ERROR("cas store blob file shorter than its digest", "size=%lld at=%lld",
				   (long long)r->size, (long long)(offset + (off_t)done));
			return REAP_E_DATA_LOSS;
		}
		done += (size_t)n;
	}
	*got = done;
	return REAP_OK;
}

int64_t cas_reader_size(const cas_reader_t *r)
{
	return r->size;
}

void cas_reader_free(cas_reader_t *r)
{
	if (r == NULL)
		return;
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	free(r);
}

int cas_store_get(cas_store_t *st, const reap_digest_t *d, size_t max, void **data, size_t *len)
{
	cas_reader_t *r = NULL;
	size_t got = 0;
	int rc;

	*data = NULL;
	*len = 0;
	rc = cas_reader_open(st, d, &r);
	if (rc != REAP_OK)
		return rc;
	if ((uint64_t)r->size > max) {
		rc = REAP_E_EXHAUSTED;
		goto out;
	}
	if (r->buf != NULL) { /* inline: hand over the reader's copy */
		*data = r->buf;
		r->buf = NULL;
		*len = (size_t)r->size;
		goto out;
	}
	*data = malloc(r->size > 0 ? (size_t)r->size : 1);
	if (*data == NULL) {
		rc = REAP_E_NOMEM;
		goto out;
	}
	rc = cas_reader_read(r, 0, *data, (size_t)r->size, &got);
	if (rc != REAP_OK) {
		free(*data);
		*data = NULL;
		goto out;
	}
	*len = got;
out:
	cas_reader_free(r);
	return rc;
}
