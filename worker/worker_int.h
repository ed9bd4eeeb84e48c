/*
 * worker_int.h - private to the files of worker/ (the CAS client, file
 * cache, staging, output collection, exec roots and the daemon). Not part
 * of the module contract (worker.h); tests may use the seams marked as such.
 *
 * Holds the limits staging and output collection share, the digest <->
 * protobuf helpers, the batched upload and GetTree entry points of the CAS
 * client, and a small digest-keyed hash map (static inline: it is used by
 * two files and is too small for a file of its own). Also the structs and
 * helpers shared by the files a module was split into: cas_client.c and
 * cas_upload.c, cache.c and cache_scan.c, outputs.c and tree.c.
 */
#ifndef REAP_WORKER_WORKER_INT_H
#define REAP_WORKER_WORKER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "reap/v1/worker.pb-c.h"
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

/* ---- the CAS client (cas_client.c, cas_upload.c) ---- */

#define WRK_CAS_SVC "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define WRK_BS_SVC "/google.bytestream.ByteStream/"

struct wrk_cas {
	rpc_channel_t *ch;
	char *instance;
	size_t max_batch;
	atomic_uint_least64_t downloads; /* wrk_cas_download calls that reached the server */
};

/* Deadline for moving bytes: 60 s plus 1 s per MiB (so >= 1 MiB/s). */
int wrk_cas_timeout_for(int64_t bytes);

/* Turn a finished call into a reap error (rc: the rpc layer's own result). */
int wrk_cas_call_err(int rc, const rpc_status_t *st, const char *what, reap_errbuf_t *eb);

/* A ByteStream resource name for d (read, or a fresh upload). NULL on allocation failure. */
char *wrk_cas_resource_name(const wrk_cas_t *c, const reap_digest_t *d, bool upload);

/* ---- the file cache's index (cache.c, cache_scan.c) ---- */

typedef enum {
	WRK_CE_BUSY = 0,   /* being downloaded or verified by one thread; others wait */
	WRK_CE_READY = 1,  /* the file is in place and may be linked */
	WRK_CE_GONE = 2,   /* removed from the index; freed by the last waiter */
	WRK_CE_FAILED = 3, /* the download failed (err, msg); freed by the last waiter */
} wrk_ce_state_t;

/* One cache file: an entry of the index's hash table and LRU list. */
typedef struct wrk_centry {
	reap_digest_t d;
	bool exec;
	wrk_ce_state_t state;
	int err;                            /* WRK_CE_FAILED: the download's error */
	char *msg;                          /* WRK_CE_FAILED: its message (may be NULL) */
	int64_t known_ctime;                /* the inode's ctime as last verified; -1 = verify first */
	int refs;                           /* threads waiting on this entry */
	bool in_lru;                        /* the file exists and is counted in used */
	struct wrk_centry *hnext;           /* hash chain */
	struct wrk_centry *prev, *next;     /* LRU list, most recent first */
} wrk_centry_t;

struct wrk_cache {
	char *dir;         /* absolute */
	int dirfd;
	uint64_t capacity; /* 0 = unbounded */
	uint64_t used;     /* bytes of the entries in the LRU list */
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a busy entry changed state */
	wrk_centry_t **buckets;
	size_t nbuckets, n;
	wrk_centry_t lru;  /* sentinel */
};

/* An inode's ctime in nanoseconds. */
int64_t wrk_ctime_ns(const struct stat *st);

/* The mode of a cache file: 0555 when executable, 0444 otherwise. */
mode_t wrk_cache_file_mode(bool exec);

/* Parse "<hash>-<size>[-x]"; false for anything else. */
bool wrk_cache_parse_name(const char *name, reap_digest_t *d, bool *exec);

/* The entry for (d, exec), or NULL (caller holds mu). */
wrk_centry_t *wrk_cache_index_find(const wrk_cache_t *c, const reap_digest_t *d, bool exec);

/* Add e to the hash table, growing it as needed (caller holds mu). */
int wrk_cache_index_add(wrk_cache_t *c, wrk_centry_t *e);

/* Put e at the most recent end of the LRU list, adding it if needed (caller holds mu). */
void wrk_cache_lru_front(wrk_cache_t *c, wrk_centry_t *e);

/* Free an entry that is in no list. */
void wrk_cache_entry_free(wrk_centry_t *e);

/* Unlink least recently used entries until within capacity; staged files are kept (holds mu). */
void wrk_cache_evict(wrk_cache_t *c);

/* ---- output collection (outputs.c, tree.c) ---- */

/* State of one wrk_collect_outputs call, shared with the tree walk. */
typedef struct collector {
	wrk_cas_t *cas;
	size_t small_max;
	wrk_blob_t *pending; /* small files read, waiting for one batched upload (data owned) */
	size_t n_pending, cap_pending, pending_bytes;
	size_t entries;      /* entries walked in output directories */
} wrk_collector_t;

/* Upload the regular file name in dfd (batched when small); *d and *exec describe it. */
int wrk_upload_file(wrk_collector_t *o, int dfd, const char *name, reap_digest_t *d, bool *exec,
		    reap_errbuf_t *eb);

/* The target of symlink name in dfd (heap), refused when absolute (REAP_E_PRECONDITION). */
int wrk_read_link(int dfd, const char *name, const char *shown, char **target,
		  reap_errbuf_t *eb);

/* Walk the folder dfd, upload its Tree and Directory blobs; fill the digests (tree.c). */
int wrk_collect_dir(wrk_collector_t *o, int dfd, const char *shown, reap_digest_t *tree_d,
		    reap_digest_t *root_d, reap_errbuf_t *eb);

/* ---- exec roots (execroot.c) ---- */

/* Name prefix of per-lease folders in work_dir (only those are cleaned). */
#define WRK_LEASE_PREFIX "lease-"

/* mkdir -p of rel's first len bytes under root, never following a symlink; best effort. */
void wrk_mkdirs_under(const char *root, const char *rel, size_t len);

/* rm -rf of a folder the worker made, never following links; 0 or -1 if something stayed. */
int wrk_rm_tree(const char *path);

/* Remove what a previous run left in work_dir (lease folders and the self-test). */
void wrk_clean_work_dir(const char *work_dir);

/* ---- the sandbox (sandbox.c, sandbox_limits.c, sandbox_seccomp.c) ---- */

/* A fresh memfd (offset 0) holding the seccomp BPF program for bwrap --seccomp; or an error. */
int wrk_seccomp_fd(reap_errbuf_t *eb);

/* The rlimits of a limits set, computed before fork so the child only calls setrlimit. */
#define WRK_MAX_RLIMITS 6
typedef struct wrk_rlimits {
	int n;
	int resource[WRK_MAX_RLIMITS];
	struct rlimit value[WRK_MAX_RLIMITS];
} wrk_rlimits_t;

/* rlimits for lim; extra_tasks: tasks of the sandbox uid that are not the action's own. */
void wrk_rlimits_for(const wrk_limits_t *lim, uint64_t extra_tasks, wrk_rlimits_t *out);

/*
 * Walk the exec root without following links: with chown, give every folder
 * to uid:gid (so an unprivileged sandbox can write where the worker staged);
 * return the bytes it occupies (a file's blocks divided among its links, so
 * hardlinked inputs count in part and extra links to one file add nothing).
 * -1 when it cannot be opened.
 */
int64_t wrk_tree_usage(const char *exec_root, bool chown_dirs, uid_t uid, gid_t gid);

/* Descriptors of the spawned bwrap, and where a root worker shows it the exec root. */
#define WRK_SB_INFO_FD 3                /* bwrap --info-fd */
#define WRK_SB_SECCOMP_FD 4             /* bwrap --seccomp */
#define WRK_SB_SHIM_FD 5                /* bwrap --ro-bind-data: the envshim executable */
#define WRK_SB_FILE_FD 6                /* bwrap --file: small ro_paths files, copied in */
#define WRK_SB_MAX_FILES 16             /* ...at most this many (the rest are bound) */
/* 0..22: the above, then the shim's command socket right after the files; ours are moved above */
#define WRK_SB_FD_SLOTS (WRK_SB_FILE_FD + WRK_SB_MAX_FILES + 1)
#define WRK_SB_STAGE_MNT "/tmp"         /* the child's private tmpfs (its own mount namespace) */
#define WRK_SB_STAGE_DIR "/tmp/build"   /* the exec root, bound for an unprivileged bwrap */

/* Everything the spawning child needs, prepared before fork (sandbox_spawn.c). */
typedef struct wrk_spawn_plan {
	const char *path;          /* bwrap, resolved */
	char *const *argv;
	int fds[WRK_SB_FD_SLOTS];  /* become 0..nfds-1: stdin, stdout, stderr, info, seccomp, shim,
				      the copied files, the command socket; the rest are closed at exec */
	int nfds;
	bool drop;                 /* root: private mount of the exec root, then become uid:gid */
	bool empty_netns;          /* with drop: also a new network namespace, lo left down */
	const char *exec_root;
	uid_t uid;
	gid_t gid;
	wrk_rlimits_t rl;
} wrk_spawn_plan_t;

/* Fork and exec the plan: the pid, or -1 with *perr (errno) and *stage (an index of what failed:
 * 0 private mount, 1 identity, 2 rlimits, 3 exec). */
pid_t wrk_sb_spawn(const wrk_spawn_plan_t *p, int *perr, int *stage);

/* A fresh memfd (close-on-exec, offset 0) holding len bytes of data for bwrap; or an error. */
int wrk_sb_memfd(const char *name, const void *data, size_t len, reap_errbuf_t *eb);

/* bwrap as a path: name when it holds a '/', else looked up in the worker's PATH; 0 or errno. */
int wrk_sb_resolve(const char *name, char *out, size_t cap);

/* A running sandbox measured against its limits (sandbox_limits.c). */
typedef struct wrk_watch {
	const wrk_limits_t *lim;
	const char *exec_root;
	pid_t init;               /* host pid of the namespace's pid 1; 0 until known */
	int out_fd, err_fd;       /* the stdio files (borrowed) */
	int64_t disk_base;        /* usage of the exec root before the run */
	int64_t next_tree_ms, next_disk_ms, disk_every_ms;
	uint64_t cpu_ms;          /* CPU time of the tree at the last sample */
	uint64_t peak_rss, peak_tasks;
	bool tree_ok;             /* /proc/PID/task/TID/children works here */
} wrk_watch_t;

void wrk_watch_init(wrk_watch_t *w, const wrk_limits_t *lim, const char *exec_root, int out_fd,
		    int err_fd, int64_t disk_base);

/* Check what is due at now_ms; a limit reached: its kind, msg filled. */
wrk_limit_kind_t wrk_watch_check(wrk_watch_t *w, int64_t now_ms, char *msg, size_t cap);

/*
 * After the run (status: the outer bwrap's wait status; cpu_ms: its
 * rusage): the limits the action reached while exiting on its own
 * (SIGXCPU, SIGXFSZ, the exec root's final size, stdio sizes).
 */
wrk_limit_kind_t wrk_watch_final(wrk_watch_t *w, int status, uint64_t cpu_ms, char *msg,
				 size_t cap);

/* Cut stdout and stderr to output_bytes and append "reap: msg" to stderr. */
void wrk_watch_report(wrk_watch_t *w, const char *msg);

/* ---- a started sandbox until it ends (sandbox_wait.c) ---- */

typedef struct wrk_running {
	pid_t pid;     /* outer bwrap (leader of its process group) */
	int pidfd;     /* of pid, or -1 (then waitpid is polled) */
	int info;      /* read end of --info-fd, -1 once read */
	char info_buf[1024];
	size_t info_len;
	int inner;     /* pidfd of the namespace's pid 1, or -1 */
	pid_t inner_pid;
	struct rusage ru; /* of the outer bwrap and everything it reaped */
	wrk_watch_t watch;
} wrk_running_t;

/* pidfd_open(pid), or -1. */
int wrk_sb_pidfd(pid_t pid);

/* Read what bwrap wrote to --info-fd; once "child-pid" is there, take a pidfd on pid 1. */
void wrk_sb_read_info(wrk_running_t *r);

/* Reap the outer bwrap if it has exited: true then, with *status set. */
bool wrk_sb_reaped(wrk_running_t *r, int *status);

/* Kill the action's whole tree and reap the outer bwrap. */
void wrk_sb_kill_tree(wrk_running_t *r, int *status);

/* Wait (bounded) until pid 1 has exited: then no process of the action is left. */
void wrk_sb_wait_namespace_empty(wrk_running_t *r);

/* Wait for the sandbox to end, the deadline (monotonic ms, 0 = none) or *cancel. Always reaps. */
void wrk_sb_wait_run(wrk_running_t *r, int64_t deadline, volatile const bool *cancel,
		     wrk_run_result_t *out, int *status);

/* ---- the daemon (daemon.c, worker.c) ---- */

#include <pthread.h>

typedef struct slot {
	wrk_daemon_t *d;
	int index;
	pthread_t thread;
	bool started;
	bool cancel;   /* the running action's kill switch (atomic access) */
	unsigned seed; /* backoff jitter */
	/* the slot's renew thread (worker.c): started with the first lease, joined when the slot ends */
	pthread_t renewer;
	bool renewer_started;   /* touched by the slot thread only */
	pthread_mutex_t rmu;    /* guards run and renewer_quit */
	pthread_cond_t rcv;     /* run or renewer_quit changed */
	struct lease_run *run;  /* the lease being renewed; NULL when idle */
	bool renewer_quit;
	/* the sandbox started for the slot's next action (worker.c; slot thread only) */
	wrk_armed_t *armed;
	char arm_dir[PATH_MAX]; /* its folder in work_dir: root/, stdout, stderr */
	unsigned arm_seq;
	int64_t arm_retry_ms;   /* after a failed start, no new one before this (monotonic) */
} slot_t;

/* One leased action (worker.c; renewed by renew.c). */
typedef struct lease_run {
	slot_t *slot;
	const Reap__V1__Lease *lease;
	int64_t ttl_ms;
	bool renewing;         /* handed to the slot's renew thread */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;             /* under mu: the renewer should stop */
	bool lost;             /* atomic: the lease is gone, do not Complete */
	bool server_cancelled; /* atomic: Renew said the operation was cancelled */
	char dir[PATH_MAX], root[PATH_MAX + 8], out_path[PATH_MAX + 8], err_path[PATH_MAX + 8];
} lease_run_t;

/* Hand lr to the slot's renew thread (started on first use); false when there is none. */
bool wrk_renew_start(lease_run_t *lr);

/* Stop renewing lr and wait until the renew thread has let go of it. */
void wrk_renew_stop(lease_run_t *lr);

/* End the slot's renew thread, if it was started (the slot is ending). */
void wrk_renew_end(slot_t *s);

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

/* CLOCK_REALTIME ms from now, for pthread_cond_timedwait. */
struct timespec wrk_realtime_in(int64_t ms);

/* A slot thread: poll for leases and run them until the daemon stops (worker.c). */
void *wrk_slot_main(void *arg);

#endif
