/*
 * store.h - the blob store: verified content-addressed blobs and action-cache
 * entries in one data folder, on RocksDB.
 *
 * Layout (details and invariants in cas/README.md):
 *  - blobs of at most inline_max bytes are RocksDB values;
 *  - larger blobs are files under <path>/cas/, written to <path>/tmp/ first,
 *    hashed as they stream in, fsync'd and renamed into place; only then is
 *    their metadata record written, and a blob is visible exactly when its
 *    record exists. A crash or a dropped stream never exposes a partial blob;
 *    orphans are removed when the store opens;
 *  - every blob has a metadata record (size, last use) and an entry in an LRU
 *    index ordered by last use; when stored bytes exceed capacity the least
 *    recently used blobs are evicted. Lookups, reads and FindMissingBlobs
 *    count as use (recorded at most once per touch_interval per blob, so hot
 *    reads do not turn into writes);
 *  - action-cache entries are values keyed by (instance name, action digest);
 *  - read grants: a blob is readable in a scope (an instance name) only once
 *    that scope has proven it holds the bytes, by uploading them (the write
 *    functions take the scope they grant). One copy of the bytes is stored
 *    whoever uploads it; each scope adds a small grant record. A grant is
 *    written with or after its blob's record and deleted with it, so it
 *    never outlives the blob (an evicted blob must be uploaded again).
 *
 * Every write is verified: content whose SHA-256 or length does not match
 * its digest is refused with REAP_E_INVALID and never becomes visible.
 * The empty blob always exists and is never stored.
 *
 * Thread-safety: every function may be called from any thread concurrently,
 * except that one cas_writer_t / cas_reader_t must not be used by two
 * threads at once.
 */
#ifndef REAP_CAS_STORE_H
#define REAP_CAS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/digest.h"
#include "common/err.h"

typedef struct cas_store cas_store_t;
typedef struct cas_writer cas_writer_t;
typedef struct cas_reader cas_reader_t;

typedef struct cas_store_config {
	const char *path;        /* data folder; created if missing */
	uint64_t capacity_bytes; /* 0 = unlimited */
	size_t inline_max;       /* largest blob kept inside RocksDB; 0 = 1 MiB */
	int touch_interval_s;    /* granularity of last-use updates; 0 = 60 s, <0 = always */
	bool no_sync;            /* skip fsync of blob files (tests and benchmarks only) */
} cas_store_config_t;

typedef struct cas_store_stats {
	uint64_t bytes;     /* stored blob bytes */
	uint64_t blobs;     /* stored blobs */
	uint64_t evictions; /* blobs evicted since open */
	uint64_t ac_entries_written; /* since open */
} cas_store_stats_t;

/** Open (creating) the store in cfg->path. NULL with eb set on failure. */
cas_store_t *cas_store_open(const cas_store_config_t *cfg, reap_errbuf_t *eb);

/** Close cleanly (flushes RocksDB). Writers and readers must be freed first. NULL is a no-op. */
void cas_store_close(cas_store_t *st);

/** Counters. */
void cas_store_stats(cas_store_t *st, cas_store_stats_t *out);

/**
 * Presence of n digests: present[i] is set true or false. Found blobs have
 * their last use refreshed. The empty blob is always present.
 * Returns 0 or REAP_E_IO.
 */
int cas_store_find(cas_store_t *st, const reap_digest_t *ds, size_t n, bool *present);

/** 0 when d is stored (refreshing its last use), REAP_E_NOT_FOUND when not. */
int cas_store_has(cas_store_t *st, const reap_digest_t *d);

/** Most scopes one cas_store_visible() call takes. */
#define CAS_STORE_SCOPES_MAX 16

/**
 * Visibility of n digests to a reader whose scopes are scopes[0..n_scopes):
 * present[i] is true when blob i is stored AND granted to at least one of
 * them (the empty blob: always). Visible blobs have their last use
 * refreshed; invisible ones are not touched. Batched (RocksDB MultiGet), for
 * FindMissingBlobs. Returns 0, REAP_E_INVALID (more than
 * CAS_STORE_SCOPES_MAX scopes, or one longer than 255 bytes) or REAP_E_IO.
 */
int cas_store_visible(cas_store_t *st, const char *const *scopes, size_t n_scopes,
		      const reap_digest_t *ds, size_t n, bool *present);

/**
 * Grant scope read access to each of the n digests that is stored (others
 * are skipped: a grant never exists without its blob). The write functions
 * grant by themselves; this is for callers that have verified possession
 * some other way. Returns 0, REAP_E_INVALID (scope too long) or REAP_E_IO.
 */
int cas_store_grant(cas_store_t *st, const char *scope, const reap_digest_t *ds, size_t n,
		    reap_errbuf_t *eb);

/**
 * Store a whole blob held in memory (BatchUpdateBlobs). Verifies length and
 * hash (REAP_E_INVALID with the reason otherwise), then grants scope (NULL:
 * none) read access, in the same batch as a new blob's record. Storing a
 * blob that is already present is a success that refreshes its last use
 * and adds the grant: the caller has just proven it holds the bytes.
 */
int cas_store_put(cas_store_t *st, const char *scope, const reap_digest_t *d, const void *data,
		  size_t len, reap_errbuf_t *eb);

/** One blob of cas_store_put_many. */
typedef struct cas_put_item {
	reap_digest_t d;    /* in: the digest the caller claims */
	const void *data;   /* in: the bytes (borrowed) */
	size_t len;
	reap_errbuf_t *eb;  /* in: where this item's error message goes; may be NULL */
	int rc;             /* out: what cas_store_put would have returned */
} cas_put_item_t;

/**
 * Store n whole blobs held in memory (BatchUpdateBlobs), each exactly as
 * cas_store_put would (verified first, then stored and granted to scope, or
 * only touched and granted when already stored), with items[i].rc set per
 * blob. Small blobs are committed together: a few RocksDB write batches per
 * call instead of one per blob. Returns 0, or REAP_E_INVALID (scope too
 * long) / REAP_E_NOMEM, in which case every item carries that error too.
 */
int cas_store_put_many(cas_store_t *st, const char *scope, cas_put_item_t *items, size_t n);

/**
 * Start a streaming write of blob d that grants scope (copied; NULL: none)
 * on commit, like cas_store_put. The writer buffers in memory up to
 * inline_max bytes and in a temporary file beyond, so memory stays bounded.
 */
int cas_writer_new(cas_store_t *st, const char *scope, const reap_digest_t *d,
		   cas_writer_t **out, reap_errbuf_t *eb);

/** Append data. REAP_E_INVALID when it would go past the digest's size. */
int cas_writer_write(cas_writer_t *w, const void *data, size_t len, reap_errbuf_t *eb);

/** Bytes accepted so far. */
int64_t cas_writer_offset(const cas_writer_t *w);

/**
 * Verify (size and hash) and store the blob with its grant atomically (or
 * only grant, when another write stored it first). On mismatch
 * REAP_E_INVALID and nothing is stored or granted. The writer must still
 * be freed.
 */
int cas_writer_commit(cas_writer_t *w, reap_errbuf_t *eb);

/** Free; an uncommitted write is discarded (its temporary data removed). NULL is a no-op. */
void cas_writer_free(cas_writer_t *w);

/**
 * Open blob d for reading (refreshing its last use). REAP_E_NOT_FOUND when it
 * is not stored. No scope check: services ask cas_store_visible() first.
 * A reader keeps working even if the blob is evicted while it is open.
 */
int cas_reader_open(cas_store_t *st, const reap_digest_t *d, cas_reader_t **out);

/**
 * Read up to len bytes at offset into buf; *got is 0 at the end.
 * REAP_E_RANGE for an offset outside [0, size]; REAP_E_IO on storage failure.
 */
int cas_reader_read(cas_reader_t *r, int64_t offset, void *buf, size_t len, size_t *got);

/** The blob's size. */
int64_t cas_reader_size(const cas_reader_t *r);

void cas_reader_free(cas_reader_t *r);

/**
 * Read a whole blob of at most max bytes into a new malloc'd buffer (*data,
 * *len; the caller frees). REAP_E_NOT_FOUND, or REAP_E_EXHAUSTED when the
 * blob is larger than max.
 */
int cas_store_get(cas_store_t *st, const reap_digest_t *d, size_t max, void **data,
		  size_t *len);

/** Look up the action-cache entry (serialized ActionResult) for instance and action. */
int cas_ac_get(cas_store_t *st, const char *instance, const reap_digest_t *action,
	       void **data, size_t *len);

/** Store (replacing) the action-cache entry for instance and action. */
int cas_ac_put(cas_store_t *st, const char *instance, const reap_digest_t *action,
	       const void *data, size_t len, reap_errbuf_t *eb);

/**
 * Evict least-recently-used blobs until stored bytes are at most target.
 * Runs by itself when a write takes the store over capacity; exposed for
 * tests and operators. Returns the number of blobs evicted or a negative error.
 */
int64_t cas_store_evict(cas_store_t *st, uint64_t target);

#endif
