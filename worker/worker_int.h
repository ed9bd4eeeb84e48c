/*
 * worker_int.h - private to the files of worker/ (the CAS client, file
 * cache, staging, output collection, exec roots and the daemon). Not part
 * of the module contract (worker.h); tests may use the seams marked as such.
 *
 * Holds the limits staging and output collection share, the digest <->
 * protobuf helpers, the batched upload and GetTree entry points of the CAS
 * client, and a small digest-keyed hash map (static inline: it is used by
 * two files and is too small for a file of its own).
 */
#ifndef REAP_WORKER_WORKER_INT_H
#define REAP_WORKER_WORKER_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

#ifndef WRK_RE_FN
#define WRK_RE_FN(name) build__bazel__remote__execution__v2__##name
#endif
#ifndef WRK_RE_INIT
#define WRK_RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT
#endif

#define WRK_MAX_DIR_BYTES ((size_t)4 << 20) /* largest Directory message accepted */
#define WRK_MAX_ENTRIES 1000000             /* files + directories + symlinks in one tree */
#define WRK_MAX_DEPTH 256                   /* nesting of one tree */
#define WRK_BLOB_NAME_LEN (6 + REAP_HASH_HEX_LEN + 1 + 20 + 1) /* "blobs/{hash}/{size}" */

/* ---- digests ---- */

/** Digest from its protobuf form; REAP_E_INVALID for NULL or a malformed one. */
int wrk_digest_from_pb(const WRK_RE(Digest) *pb, reap_digest_t *out, reap_errbuf_t *eb);

/** A heap Digest (malloc'd struct, strdup'd hash) for d; NULL on allocation failure. */
WRK_RE(Digest) *wrk_digest_pb_new(const reap_digest_t *d);

/** Free a Digest made by wrk_digest_pb_new (or by the same rule). NULL is a no-op. */
void wrk_digest_pb_free(WRK_RE(Digest) *pb);

/** "blobs/{hash}/{size}", the subject of a PreconditionFailure violation. */
void wrk_blob_name(const reap_digest_t *d, char out[WRK_BLOB_NAME_LEN]);

/* ---- CAS client extras ---- */

/** One blob held in memory, its digest already computed. */
typedef struct wrk_blob {
	const void *data;
	size_t len;
	reap_digest_t digest;
} wrk_blob_t;

/**
 * Upload n blobs: one FindMissingBlobs pass, then BatchUpdateBlobs in groups
 * of at most max_batch bytes (ByteStream for a blob larger than that).
 * Digests are trusted (the server verifies them anyway).
 */
int wrk_cas_put_many(wrk_cas_t *c, const wrk_blob_t *blobs, size_t n, reap_errbuf_t *eb);

/** The max_batch the client was made with (a default when it was 0). */
size_t wrk_cas_max_batch(const wrk_cas_t *c);

/**
 * GetTree of root, following next_page_token: fn gets (borrowed) every
 * Directory the server streams. The messages are not verified here: the
 * caller keys them by the digest of their encoding. Stops at
 * WRK_MAX_ENTRIES directories. Returns the call's error (REAP_E_NOT_FOUND
 * when the root is absent) or the first error fn returned.
 */
int wrk_cas_get_tree(wrk_cas_t *c, const reap_digest_t *root,
		     int (*fn)(void *ctx, const WRK_RE(Directory) *dir), void *ctx,
		     reap_errbuf_t *eb);

/** Test seam: blobs fetched from the server by wrk_cas_download so far. */
uint64_t wrk_cas_downloads(const wrk_cas_t *c);

/* ---- file cache extras ---- */

/** True when (d, executable) is in the cache and ready (no download needed). */
bool wrk_cache_has(wrk_cache_t *cache, const reap_digest_t *d, bool executable);

/* ---- a digest-keyed hash map (open addressing, never shrinks) ---- */

typedef struct wrk_dmap_slot {
	reap_digest_t key;
	void *value;
	bool used;
} wrk_dmap_slot_t;

typedef struct wrk_dmap {
	wrk_dmap_slot_t *slots;
	size_t cap, n; /* cap is 0 or a power of two */
} wrk_dmap_t;

static inline size_t wrk_dmap_index(const reap_digest_t *d, size_t cap)
{
	uint64_t h;
	memcpy(&h, d->hash, sizeof(h)); /* a SHA-256 prefix is already uniform */
	return (size_t)(h ^ (uint64_t)d->size) & (cap - 1);
}

/** The slot holding d, or NULL. */
static inline wrk_dmap_slot_t *wrk_dmap_find(const wrk_dmap_t *m, const reap_digest_t *d)
{
	if (m->cap == 0)
		return NULL;
	for (size_t i = wrk_dmap_index(d, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (!m->slots[i].used)
			return NULL;
		if (reap_digest_eq(&m->slots[i].key, d))
			return &m->slots[i];
	}
}

/** Insert d (value NULL); *slot gets its slot; *added false when it was there. */
static inline int wrk_dmap_put(wrk_dmap_t *m, const reap_digest_t *d, wrk_dmap_slot_t **slot,
			       bool *added)
{
	if ((m->n + 1) * 2 > m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 64;
		wrk_dmap_slot_t *ns = calloc(ncap, sizeof(*ns));
		if (ns == NULL)
			return REAP_E_NOMEM;
		for (size_t i = 0; i < m->cap; i++) {
			if (!m->slots[i].used)
				continue;
			size_t j = wrk_dmap_index(&m->slots[i].key, ncap);
			while (ns[j].used)
				j = (j + 1) & (ncap - 1);
			ns[j] = m->slots[i];
		}
		free(m->slots);
		m->slots = ns;
		m->cap = ncap;
	}
	size_t i = wrk_dmap_index(d, m->cap);
	while (m->slots[i].used && !reap_digest_eq(&m->slots[i].key, d))
		i = (i + 1) & (m->cap - 1);
	*added = !m->slots[i].used;
	if (*added) {
		m->slots[i].used = true;
		m->slots[i].key = *d;
		m->slots[i].value = NULL;
		m->n++;
	}
	*slot = &m->slots[i];
	return REAP_OK;
}

/** Free the table (not the values). */
static inline void wrk_dmap_destroy(wrk_dmap_t *m)
{
	free(m->slots);
	m->slots = NULL;
	m->cap = m->n = 0;
}

/* ---- exec roots (execroot.c) ---- */

/* Name prefix of per-lease folders in work_dir (only those are cleaned). */
#define WRK_LEASE_PREFIX "lease-"

/* mkdir -p of rel's first len bytes under root, never following a symlink; best effort. */
void wrk_mkdirs_under(const char *root, const char *rel, size_t len);

/* rm -rf of a folder the worker made, never following links; 0 or -1 if something stayed. */
int wrk_rm_tree(const char *path);

/* Remove what a previous run left in work_dir (lease folders and the self-test). */
void wrk_clean_work_dir(const char *work_dir);

/* ---- the daemon (daemon.c, worker.c) ---- */

#include <pthread.h>

typedef struct slot {
	wrk_daemon_t *d;
	int index;
	pthread_t thread;
	bool started;
	bool cancel;   /* the running action's kill switch (atomic access) */
	unsigned seed; /* backoff jitter */
} slot_t;

struct wrk_daemon {
	wrk_config_t cfg; /* strings point into strs */
	char **strs;      /* every string copied from the caller's config */
	size_t n_strs;
	const char **platform, **ro_paths;
	WRK_RE(Platform) offer;
	WRK_RE(Platform__Property) *props, **propp;
	rpc_channel_t *sched_ch, *cas_ch; /* the same channel when the addresses are */
	rpc_channel_t *poll_ch; /* long-polls only: cancelled at stop */
	wrk_cache_t *cache;
	pthread_mutex_t mu;
	pthread_cond_t cv;   /* signalled at stop */
	bool stopping;       /* under mu, and atomic reads */
	size_t max_batch;    /* from Capabilities; 0 = the CAS client's default */
	bool caps_known;     /* under mu */
	int n_slots;
	slot_t *slots;
};

/* Milliseconds on the monotonic clock (worker.c). */
int64_t wrk_mono_ms(void);

/* A slot thread: poll for leases and run them until the daemon stops (worker.c). */
void *wrk_slot_main(void *arg);

#endif
