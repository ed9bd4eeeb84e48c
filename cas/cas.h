/*
 * cas.h - the cache services: ContentAddressableStorage, ByteStream,
 * ActionCache and Capabilities, over the blob store in cas/store.h.
 *
 * cas_service_new() builds the services around a store and an auth policy;
 * cas_service_methods() hands their method table to the rpc server. Every
 * RPC goes through one admission step (instance-name check, caller
 * identification, permission check) before it touches the store.
 *
 * Resource names (ByteStream) are parsed by cas_resource_parse(), exposed
 * for tests and fuzzing.
 */
#ifndef REAP_CAS_CAS_H
#define REAP_CAS_CAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "cas/store.h"
#include "common/digest.h"
#include "common/err.h"
#include "common/instance.h"
#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "rpc/rpc.h"

typedef struct cas_service cas_service_t;

typedef struct cas_service_config {
	const reap_instances_t *instances; /* accepted instance names; NULL = any valid */
	size_t max_recv_bytes;   /* the server's receive limit */
	size_t max_send_bytes;   /* the server's send limit */
	size_t max_uploads;      /* resumable ByteStream uploads kept at once; 0 = 1024 */
	int upload_idle_s;       /* an interrupted upload is kept this long; 0 = 600 */
	size_t read_chunk_bytes; /* ByteStream Read message size; 0 = 256 KiB */
	bool execution;          /* a scheduler serves Execute here: advertise it */
} cas_service_config_t;

/** New services over store and policy (both borrowed). NULL on allocation failure. */
cas_service_t *cas_service_new(cas_store_t *store, const auth_policy_t *auth,
			       const cas_service_config_t *cfg);
void cas_service_free(cas_service_t *svc);

/** The rpc method table (owned by svc). */
const rpc_method_t *cas_service_methods(cas_service_t *svc, size_t *n);

/** The batch limit advertised in Capabilities (safely below the receive limit). */
size_t cas_service_max_batch(const cas_service_t *svc);

/* ---- for the scheduler: the same checks its clients' requests get ---- */

/**
 * The one admission step of every RPC: the instance name must be accepted,
 * the digest function (0 where the request has none) supported, the caller
 * identified from the call, and allowed perm. Fills id (may be NULL).
 */
int cas_admit(cas_service_t *svc, rpc_call_t *call, const char *instance, size_t len,
	      int digest_function, auth_perm_t perm, auth_identity_t *id, reap_errbuf_t *eb);

/**
 * Which of n digests a caller in instance may read: present[i] is true when
 * blob i is stored AND was uploaded to (or produced in) instance or a
 * parent prefix the policy marks shared (auth_read_scopes). Knowing a
 * digest is not proof of having the data: whatever is not visible must be
 * treated as missing (and uploaded again by the caller, which is how it
 * proves possession). The empty blob is always visible. Batched; refreshes
 * the last use of visible blobs. 0, or an error with eb set.
 */
int cas_visible(cas_service_t *svc, const char *instance, const reap_digest_t *ds, size_t n,
		bool *present, reap_errbuf_t *eb);

/**
 * Identify the caller of call (no permission check: for services that
 * check per item, like the WorkerQueue per instance). Refusals are audited.
 */
int cas_identify(cas_service_t *svc, rpc_call_t *call, auth_identity_t *id, reap_errbuf_t *eb);

/** Whether a complete cached result may still be served (e.g. its toolchain is current). */
typedef bool (*cas_result_check_fn)(void *ctx, const Build__Bazel__Remote__Execution__V2__ActionResult *ar);

/**
 * Install the check every ActionCache read applies after the completeness
 * check (GetActionResult and cas_ac_lookup); NULL removes it. Set before
 * serving, cleared before ctx goes away.
 */
void cas_set_result_check(cas_service_t *svc, cas_result_check_fn fn, void *ctx);

/**
 * The ActionCache entry for (instance, action), only if every blob it
 * references is still stored and visible in instance (cas_visible; else
 * REAP_E_NOT_FOUND). Free *out with
 * build__bazel__remote__execution__v2__action_result__free_unpacked.
 */
int cas_ac_lookup(cas_service_t *svc, const char *instance, const reap_digest_t *action,
		  Build__Bazel__Remote__Execution__V2__ActionResult **out, reap_errbuf_t *eb);

/**
 * Validate and store an ActionResult (no authorization here: callers have
 * decided). Inline stdout/stderr bytes move into the CAS (granted to
 * instance). When referenced blobs are missing or not visible in instance
 * (cas_visible: a writer cannot name another tenant's blob by digest):
 * REAP_E_PRECONDITION with them in *missing (malloc'd, caller frees). ar is
 * restored before returning.
 */
int cas_ac_write(cas_service_t *svc, const char *instance, const reap_digest_t *action,
		 Build__Bazel__Remote__Execution__V2__ActionResult *ar, reap_digest_t **missing,
		 size_t *n_missing, reap_errbuf_t *eb);

/** A PreconditionFailure listing (the first few of) ds as MISSING "blobs/{hash}/{size}". */
Google__Rpc__PreconditionFailure *cas_precondition_new(const reap_digest_t *ds, size_t n);
void cas_precondition_free(Google__Rpc__PreconditionFailure *pf);

/** Digest from its protobuf form (NULL is an error). */
int cas_digest_from_pb(const Build__Bazel__Remote__Execution__V2__Digest *pb, reap_digest_t *out,
		       reap_errbuf_t *eb);

/** The store behind the services. */
cas_store_t *cas_service_store(const cas_service_t *svc);

/* ---- ByteStream resource names ---- */

typedef struct cas_resource {
	const char *instance; /* points into the parsed name; not NUL-terminated */
	size_t instance_len;
	bool write;           /* an uploads/{uuid}/... name */
	bool compressed;      /* compressed-blobs/zstd/... */
	reap_digest_t digest;
} cas_resource_t;

/**
 * Parse a ByteStream resource name (len bytes). With write false it must be
 * a read name: [{instance}/]blobs/[sha256/]{hash}/{size} or
 * [{instance}/]compressed-blobs/zstd/[sha256/]{hash}/{size}; with write true
 * an upload name: [{instance}/]uploads/{uuid}/blobs/...{size}[/{metadata}].
 * REAP_E_INVALID with the reason otherwise (REAP_E_UNIMPLEMENTED for a
 * compressor or digest function reap does not support).
 */
int cas_resource_parse(const char *name, size_t len, bool write, cas_resource_t *out,
		       reap_errbuf_t *eb);

#endif
