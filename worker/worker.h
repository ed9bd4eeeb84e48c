/*
 * worker.h - the reap-worker daemon's parts: a CAS client, a local
 * content-addressed file cache, input-root staging, the bubblewrap sandbox,
 * output collection, and the lease loop that ties them together.
 *
 * Trust: everything an action produces is hostile. Input trees are checked
 * before anything is written (no "..", no absolute or escaping names, no
 * escaping symlinks); outputs are read with lstat/openat and never followed
 * out of the root. Staged input files are hardlinks of cache files (read
 * only), but an inode is never linked into two running actions at once (a
 * second one gets a verified copy), so an action can only ever touch its
 * own inputs. Because it could still chmod and rewrite them, every staged
 * file's ctime is recorded, and after the action a changed ctime means the
 * result is not cached and the cache entry is dropped.
 */
#ifndef REAP_WORKER_WORKER_H
#define REAP_WORKER_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "common/digest.h"
#include "common/err.h"
#include "rpc/rpc.h"

#define WRK_RE(name) Build__Bazel__Remote__Execution__V2__##name

/* ------------------------------------------------------------------ */
/* CAS client (cas_client.c): blobs over plain REAPI, streamed.        */

typedef struct wrk_cas wrk_cas_t;

/** A client for the CAS at ch (borrowed) in instance; max_batch from Capabilities. */
wrk_cas_t *wrk_cas_new(rpc_channel_t *ch, const char *instance, size_t max_batch);
void wrk_cas_free(wrk_cas_t *c);

/** Fetch a whole blob of at most max bytes into memory (Action, Command, Directory). */
int wrk_cas_get(wrk_cas_t *c, const reap_digest_t *d, size_t max, void **data, size_t *len,
		reap_errbuf_t *eb);

/** Download blob d into the file fd (streamed, verified against d). REAP_E_NOT_FOUND if absent. */
int wrk_cas_download(wrk_cas_t *c, const reap_digest_t *d, int fd, reap_errbuf_t *eb);

/** Upload len bytes from memory (skipped if present). */
int wrk_cas_put(wrk_cas_t *c, const void *data, size_t len, reap_digest_t *out,
		reap_errbuf_t *eb);

/** Upload the file at fd (hashing it first; streamed; skipped if present). out gets its digest. */
int wrk_cas_put_file(wrk_cas_t *c, int fd, reap_digest_t *out, reap_errbuf_t *eb);

/** Presence of n digests (FindMissingBlobs, batched). */
int wrk_cas_find(wrk_cas_t *c, const reap_digest_t *ds, size_t n, bool *present,
		 reap_errbuf_t *eb);

/* ------------------------------------------------------------------ */
/* File cache (cache.c): content-addressed files, bounded, LRU.        */

typedef struct wrk_cache wrk_cache_t;

/** Open (creating) the cache folder; capacity in bytes. Files left by a previous run are reused. */
wrk_cache_t *wrk_cache_open(const char *dir, uint64_t capacity, reap_errbuf_t *eb);
void wrk_cache_close(wrk_cache_t *cache);

/**
 * Make (d, executable) present in the cache, downloading it through cas if
 * needed, and hardlink it to path (copying when a hardlink is impossible).
 * The file is read-only (0444, or 0555 when executable). *ctime_ns gets the
 * linked inode's ctime for the tamper check. REAP_E_NOT_FOUND when the CAS
 * does not have it.
 */
int wrk_cache_link(wrk_cache_t *cache, wrk_cas_t *cas, const reap_digest_t *d, bool executable,
		   const char *path, int64_t *ctime_ns, reap_errbuf_t *eb);

/** Drop (d, executable) from the cache (used when a staged copy was tampered with). */
void wrk_cache_forget(wrk_cache_t *cache, const reap_digest_t *d, bool executable);

/* ------------------------------------------------------------------ */
/* Staging (stage.c): build an input root from a Directory tree.       */

/** One staged input file, for the tamper check after the action. */
typedef struct wrk_staged_file {
	char *path;        /* absolute path of the link in the exec root */
	reap_digest_t digest;
	bool executable;
	int64_t ctime_ns;
} wrk_staged_file_t;

typedef struct wrk_staged {
	wrk_staged_file_t *files;
	size_t n;
	/* blobs the CAS did not have, as "blobs/{hash}/{size}" subjects */
	char **missing;
	size_t n_missing;
} wrk_staged_t;

/**
 * Stage the tree rooted at root into the empty folder dir. Every Directory
 * is validated first: names must be single path components, sorted and
 * unique; symlink targets must be relative and stay inside the root.
 * The empty root (the empty blob) needs no call to the CAS.
 * Returns 0; REAP_E_PRECONDITION when blobs are missing (listed in
 * out->missing); REAP_E_INVALID for a hostile or malformed tree.
 */
int wrk_stage(wrk_cache_t *cache, wrk_cas_t *cas, const reap_digest_t *root, const char *dir,
	      wrk_staged_t *out, reap_errbuf_t *eb);

/**
 * After the action: true when every staged file still has its recorded
 * ctime; each tampered file is dropped from the cache.
 */
bool wrk_staged_intact(wrk_cache_t *cache, const wrk_staged_t *s);

void wrk_staged_destroy(wrk_staged_t *s);

/* ------------------------------------------------------------------ */
/* Outputs (outputs.c): collect and upload what the action produced.   */

/**
 * Fill ar's output_files, output_directories (Tree blobs uploaded) and
 * output_symlinks from cmd's output_paths (or the legacy output_files and
 * output_directories), relative to exec_root/cmd->working_directory. Files
 * are uploaded as they are found. Paths that escape the root are refused;
 * symlinks are recorded, never followed; absent outputs are omitted.
 * ar's new fields are heap-allocated: free with wrk_result_free_outputs.
 */
int wrk_collect_outputs(wrk_cas_t *cas, const char *exec_root, const WRK_RE(Command) *cmd,
			WRK_RE(ActionResult) *ar, reap_errbuf_t *eb);

/**
 * Free what wrk_collect_outputs allocated, and the stdout/stderr digests:
 * the rule is that ar->stdout_digest and ar->stderr_digest, when set, are
 * malloc'd Digest structs whose hash is a strdup'd string (the lease loop
 * allocates them that way), and this frees them too. Pointers and counts
 * are reset; on error wrk_collect_outputs leaves the output fields empty.
 */
void wrk_result_free_outputs(WRK_RE(ActionResult) *ar);

/* ------------------------------------------------------------------ */
/* Sandbox (sandbox.c): run one command under bubblewrap.              */

/**
 * Hard limits of one action; 0 = none. How each is enforced (sandbox.c,
 * sandbox_limits.c): per-process rlimits set before bwrap is exec'd
 * (inherited by everything in the sandbox) are the hard backstop, and a
 * watchdog that samples the sandbox's process tree turns a limit reached by
 * the tree as a whole into a kill with a reason (wrk_run_result_t.limit).
 */
typedef struct wrk_limits {
	uint64_t memory_bytes; /* RLIMIT_AS per process; resident memory of the whole tree */
	uint64_t cpu_seconds;  /* RLIMIT_CPU per process; CPU time of the whole tree */
	uint64_t disk_bytes;   /* new data in the exec root (sampled); RLIMIT_FSIZE per file */
	uint64_t tmp_bytes;    /* size of the sandbox's /tmp (a RAM-backed tmpfs) */
	uint64_t pids;         /* RLIMIT_NPROC of the sandbox uid; tasks in the tree */
	uint64_t output_bytes; /* stdout and stderr, each */
} wrk_limits_t;

/** Which limit ended an action. */
typedef enum wrk_limit_kind {
	WRK_LIMIT_NONE = 0,
	WRK_LIMIT_CPU,
	WRK_LIMIT_MEMORY,
	WRK_LIMIT_DISK,
	WRK_LIMIT_PIDS,
	WRK_LIMIT_OUTPUT,
} wrk_limit_kind_t;

/** The uid and gid the sandbox runs as when the worker is root and uid is 0 here. */
#define WRK_SANDBOX_DEFAULT_ID 65534

typedef struct wrk_sandbox_config {
	const char *bwrap;                /* path to bwrap; NULL = "bwrap" from PATH */
	const char *const *ro_paths;      /* host paths visible read-only (e.g. /usr, /bin, /lib, /lib64, /etc/alternatives) */
	size_t n_ro_paths;
	wrk_limits_t limits;
	/*
	 * Host uid/gid of the sandbox when the worker runs as root: bwrap is
	 * started as this user, so the action is an unprivileged host user
	 * (0 = WRK_SANDBOX_DEFAULT_ID). Ignored when the worker is not root
	 * (then the action runs as the worker's own uid).
	 */
	uid_t uid;
	gid_t gid;
	/*
	 * Network of the action. false (the default): no network at all; a
	 * root worker gives the action an empty network namespace whose lo is
	 * down (not even 127.0.0.1 works), a non-root worker cannot take lo
	 * down and gives it bwrap's private namespace with only lo up. true
	 * (reap-network=loopback, when the lease allows it): bwrap's private
	 * namespace with only lo up. Never the host's network either way.
	 */
	bool loopback_network;
} wrk_sandbox_config_t;

typedef struct wrk_run_result {
	int exit_code;      /* the command's exit status, or 128+signal */
	bool timed_out;     /* killed at the deadline */
	bool cancelled;     /* killed because *cancel became true */
	wrk_limit_kind_t limit; /* killed (or failed) because it reached this limit */
	char limit_msg[256];    /* what happened, for the status message (also appended to stderr) */
	uint64_t cpu_ms;        /* CPU time of the whole tree (user + system) */
	int64_t start_ns, end_ns; /* CLOCK_REALTIME */
} wrk_run_result_t;

/**
 * Run cmd (arguments, environment, working directory exactly as given)
 * with exec_root as the only writable tree (mounted at /build inside),
 * stdout and stderr to the files stdout_path and stderr_path, no network
 * (or a private loopback: cfg->loopback_network),
 * new user/pid/ipc/uts namespaces, a fresh /tmp and /proc, and the whole
 * process tree killed at timeout_ms (0 = none) or when *cancel turns true
 * (polled). Limits (cfg->limits) are enforced as described at wrk_limits_t;
 * an action that reaches one is killed, out->limit and out->limit_msg say
 * which, and the message is appended to its stderr file (stdout and stderr
 * are truncated to output_bytes). A seccomp filter denies ptrace, mounts,
 * namespaces, kexec, modules, keyrings, bpf, perf and userfaultfd (EPERM).
 * Returns 0 when the command ran (whatever its exit), or an error when it
 * could not be started (REAP_E_INVALID for a bad Command).
 */
int wrk_sandbox_run(const wrk_sandbox_config_t *cfg, const char *exec_root,
		    const WRK_RE(Command) *cmd, int64_t timeout_ms, const char *stdout_path,
		    const char *stderr_path, volatile const bool *cancel, wrk_run_result_t *out,
		    reap_errbuf_t *eb);

/**
 * A sandbox started ahead of its action (wrk_sandbox_arm): bwrap has built
 * the namespaces and the root, and the sandbox's first program waits for
 * the command. Used once: wrk_sandbox_fire or wrk_sandbox_disarm frees it.
 * Both must run on the thread that armed it (bwrap's --die-with-parent
 * follows that thread).
 */
typedef struct wrk_armed wrk_armed_t;

/**
 * Start the sandbox of cfg over exec_root (an existing folder; what is put
 * in it later is what the command sees) with stdout and stderr going to
 * the two files (created or truncated now), so that only the command is
 * left to start when the action arrives. Errors as wrk_sandbox_run's
 * before the command runs. cfg's strings must outlive the armed sandbox.
 */
int wrk_sandbox_arm(const wrk_sandbox_config_t *cfg, const char *exec_root,
		    const char *stdout_path, const char *stderr_path, wrk_armed_t **out,
		    reap_errbuf_t *eb);

/** Whether a was armed for exactly the sandbox cfg describes (limits, paths, identity, network). */
bool wrk_sandbox_fits(const wrk_armed_t *a, const wrk_sandbox_config_t *cfg);

/** Whether a is still waiting for its command (false: it ended; only disarm it). */
bool wrk_sandbox_alive(wrk_armed_t *a);

/**
 * Run cmd in a, as wrk_sandbox_run does (same contract and result), and
 * free a whatever happens. The exec root is prepared for the sandbox (its
 * folders handed to the sandbox uid, its size measured) now, so it must be
 * staged before. The timeout and the result's start time count from here.
 */
int wrk_sandbox_fire(wrk_armed_t *a, const WRK_RE(Command) *cmd, int64_t timeout_ms,
		     volatile const bool *cancel, wrk_run_result_t *out, reap_errbuf_t *eb);

/** Stop an unused armed sandbox (no process of it is left after) and free it. NULL is a no-op. */
void wrk_sandbox_disarm(wrk_armed_t *a);

/**
 * The sandbox of one action: *out = *base narrowed by the action's "reap-"
 * platform properties (the Action's and the Command's platform; either may
 * be NULL). reap-limit-cpu-seconds, reap-limit-pids (whole numbers) and
 * reap-limit-memory, reap-limit-disk, reap-limit-tmp, reap-limit-output
 * (sizes, reap_parse_size) each set min(worker's limit, requested), a
 * worker limit of 0 (none) counting as infinite: a request can only
 * narrow. reap-network=loopback sets loopback_network when allow_loopback
 * (the lease's allow_loopback_network), reap-network=none is the default.
 * Other properties are ignored. Returns REAP_E_INVALID for a malformed or
 * zero value, a conflicting reap-network or an unknown "reap-" name;
 * REAP_E_PRECONDITION for loopback asked without allow_loopback. eb says
 * which property.
 */
int wrk_sandbox_for_action(const wrk_sandbox_config_t *base, const WRK_RE(Platform) *action_pf,
			   const WRK_RE(Platform) *command_pf, bool allow_loopback,
			   wrk_sandbox_config_t *out, reap_errbuf_t *eb);

/** A one-line account of the mechanism enforcing each limit on this host (static storage). */
const char *wrk_sandbox_mechanisms(const wrk_sandbox_config_t *cfg);

/* ------------------------------------------------------------------ */
/* The daemon (worker.c): the lease loop.                              */

typedef struct wrk_config {
	const char *scheduler;   /* host:port of the WorkerQueue service */
	const char *cas;         /* host:port of the CAS (often the same) */
	const char *name;        /* worker name */
	const char *token;       /* bearer token for the scheduler and CAS, or NULL */
	const rpc_tls_client_t *tls; /* TLS to the scheduler and CAS; NULL = plaintext */
	int slots;               /* actions at once; 0 = cores */
	const char *work_dir;    /* per-action exec roots */
	const char *cache_dir;   /* the file cache */
	uint64_t cache_bytes;
	int64_t default_timeout_ms; /* when the Action has none */
	const char *const *platform; /* "name=value" properties offered */
	size_t n_platform;
	const char *toolchain;       /* fingerprint sent with every poll (wrk_toolchain_fingerprint) */
	wrk_sandbox_config_t sandbox;
} wrk_config_t;

/**
 * The toolchain fingerprint: "id:" + declared_id when one is given (an image
 * id), else "sha256:" + a digest over the metadata (path, type, mode, size,
 * mtime, symlink target) of every entry under the read-only toolchain paths,
 * walked in sorted order without following symlinks. Any change to a
 * compiler, library or header there changes it. out holds 80+ bytes.
 */
int wrk_toolchain_fingerprint(const char *const *ro_paths, size_t n, const char *declared_id,
			      char *out, size_t out_len, reap_errbuf_t *eb);

typedef struct wrk_daemon wrk_daemon_t;

/** Start the slot threads. NULL with eb on failure. */
wrk_daemon_t *wrk_daemon_start(const wrk_config_t *cfg, reap_errbuf_t *eb);

/** Stop taking work, kill running actions, join. */
void wrk_daemon_stop(wrk_daemon_t *d);

#endif
