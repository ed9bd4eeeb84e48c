/*
 * harness.h - test support: a real reap server (CAS services on a store in
 * a fresh temporary folder) on 127.0.0.1 with a free port, and a client
 * channel to it. Tests talk to it through real gRPC.
 */
#ifndef REAP_TESTS_HARNESS_H
#define REAP_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"
#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "cas/cas.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "rpc/rpc.h"
#include "scheduler/sched.h"

typedef struct th_opts {
	auth_role_t anon_role; /* role of anonymous callers; NONE = client */
	bool no_anonymous;     /* every caller needs a token */
	const auth_config_t *auth; /* a whole auth config instead (keys are kept) */
	const char *const *instances; /* NULL = any */
	size_t n_instances;
	size_t max_msg;      /* 0 = 4 MiB */
	size_t inline_max;   /* 0 = 64 KiB, so tests reach the file path cheaply */
	uint64_t capacity;   /* 0 = unlimited */
	bool scheduler;      /* also serve Execution, Operations and WorkerQueue */
	int64_t lease_ttl_ms;
	int max_attempts;
} th_opts_t;

typedef struct th_server {
	char dir[64];
	cas_store_t *store;
	auth_policy_t *policy;
	reap_instances_t *instances;
	cas_service_t *cas;
	sched_t *sched;
	rpc_server_t *server;
	rpc_channel_t *ch;
	int port;
	th_opts_t opts;
} th_server_t;

/** Start a server; asserts (criterion) on failure. */
void th_start(th_server_t *t, const th_opts_t *opts);
/** The key every harness server accepts tokens from. */
const auth_key_t *th_key(void);
/**
 * A token for subject with role, valid for ttl_s (negative = already
 * expired), for the instance prefixes in instances (NULL = all). malloc'd.
 */
char *th_token(auth_role_t role, const char *subject, const char *const *instances,
	       size_t n_instances, int64_t ttl_s);

/** Stop, free and remove the data folder. */
void th_stop(th_server_t *t);
/** Stop and start again on the same data folder (a restart). */
void th_restart(th_server_t *t);

/** Deterministic pseudo-random bytes. */
void th_fill(void *buf, size_t len, unsigned seed);
/** The first cap - 1 bytes of file path into buf, NUL-terminated ("" when unreadable); buf. */
char *th_read_file(const char *path, char *buf, size_t cap);
/** Create (or truncate) file path holding text; the test fails when it cannot. */
void th_write_file(const char *path, const char *text);
/** Hand-encoded protobuf: a varint at p; its length. */
size_t th_put_varint(uint8_t *p, uint64_t v);
/** Hand-encoded protobuf: field of wire type 2 (length-delimited) holding data at p; its length. */
size_t th_put_bytes(uint8_t *p, uint32_t field, const void *data, size_t len);
/** Hex digest of data into hex (65 bytes) and its size. */
void th_digest(const void *data, size_t len, char hex[65]);

/** Upload via BatchUpdateBlobs; returns the per-blob gRPC code (or the call's code if it failed). */
int th_batch_put(th_server_t *t, const char *instance, const void *data, size_t len);
/** Upload via ByteStream Write in chunks; returns the final status code; *committed set. */
int th_bs_write(th_server_t *t, const char *resource, const void *data, size_t len,
		size_t chunk, long long *committed);
/** Read via ByteStream into a new buffer (*out, *len); returns the status code. */
int th_bs_read(th_server_t *t, const char *resource, long long offset, long long limit,
	       void **out, size_t *len);
/** Unary call helper: returns the status code and fills resp (may be NULL). */
int th_unary(th_server_t *t, const char *method, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, rpc_status_t *st);

#endif
