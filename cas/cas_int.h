/*
 * cas_int.h - private to the cas/ services: the service object, the shared
 * admission step and protobuf helpers. Not part of the module contract.
 */
#ifndef REAP_CAS_CAS_INT_H
#define REAP_CAS_CAS_INT_H

#include <pthread.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas/cas.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

/* The generated REAPI names are long; these keep call sites readable. */
#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_FN(name) build__bazel__remote__execution__v2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT

typedef struct cas_upload cas_upload_t;

struct cas_service {
	cas_store_t *store;
	const auth_policy_t *auth;
	cas_service_config_t cfg;
	size_t max_batch;            /* advertised max_batch_total_size_bytes */
	size_t inline_budget;        /* bytes GetActionResult may inline */
	rpc_method_t methods[16];
	size_t n_methods;
	pthread_mutex_t uploads_mu;  /* guards the upload table */
	cas_upload_t *uploads;       /* resumable ByteStream writes (list) */
	size_t n_uploads;
	cas_result_check_fn result_check; /* may a cached result be served? (scheduler) */
	void *result_check_ctx;
};

/** The read scopes of instance (cas_store_visible's scopes); returns how many. */
size_t cas_read_scopes(const cas_service_t *svc, const char *instance,
		       const char *out[CAS_STORE_SCOPES_MAX]);

/** cas_visible for one digest: 0 when visible, REAP_E_NOT_FOUND, or an error. */
int cas_visible_one(cas_service_t *svc, const char *instance, const reap_digest_t *d);

/** Finish a call: resp with OK, or err with eb's message (resp ignored). */
void cas_finish(rpc_call_t *call, const ProtobufCMessage *resp, int err,
		const reap_errbuf_t *eb);


/** Fill pb (hash buffer of 65 bytes owned by the caller) from d. */
void cas_digest_to_pb(const reap_digest_t *d, RE(Digest) *pb, char hex[65]);

/** Set a google.rpc.Status for a per-item result (msg may be NULL). */
void cas_status_set(Google__Rpc__Status *st, int err, const char *msg);

/* Method-table entries, one file each. */
void cas_cas_methods(cas_service_t *svc);
void cas_bytestream_methods(cas_service_t *svc);
void cas_ac_methods(cas_service_t *svc);
void cas_capabilities_methods(cas_service_t *svc);
void cas_gettree_methods(cas_service_t *svc);

/* Streaming zstd decompression into a store writer (unzstd.c). */
typedef struct cas_unzstd cas_unzstd_t;
cas_unzstd_t *cas_unzstd_new(void);
void cas_unzstd_free(cas_unzstd_t *u);
/** Decompress len bytes into w; REAP_E_INVALID on corrupt data or overshoot. */
int cas_unzstd_feed(cas_unzstd_t *u, const void *data, size_t len, cas_writer_t *w,
		    reap_errbuf_t *eb);
/** Compressed bytes fed so far. */
int64_t cas_unzstd_consumed(const cas_unzstd_t *u);
/** REAP_E_INVALID unless the input ended exactly at a frame end. */
int cas_unzstd_finish(cas_unzstd_t *u, reap_errbuf_t *eb);
/** Verify and store a whole zstd-compressed blob held in memory, granting scope. */
int cas_put_zstd(cas_store_t *st, const char *scope, const reap_digest_t *d, const void *data,
		 size_t len, reap_errbuf_t *eb);

/** Check that a Directory is canonical (sorted unique names, valid digests). */
int cas_directory_check(const RE(Directory) *dir, reap_errbuf_t *eb);

/** Register one method in svc's table. */
void cas_add_method(cas_service_t *svc, const rpc_method_t *m);

/** Drop every resumable upload (service shutdown). */
void cas_uploads_clear(cas_service_t *svc);

#endif
