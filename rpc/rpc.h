/*
 * rpc.h - gRPC C-core plumbing: a server of registered methods driven by
 * completion-queue threads, and a small blocking client.
 *
 * Server model. A service registers rpc_method_t entries. The server runs N
 * threads, each with its own completion queue; every method has a call
 * requested on every queue. Each accepted call becomes an rpc_call_t, a
 * small state machine that lives on one queue, so its callbacks never run
 * concurrently with each other. The call is freed only when every tag it
 * has in flight has come back, after on_done.
 *
 * The framework decodes each request message with the method's protobuf-c
 * descriptor (gRPC has already enforced the receive size limit) and frees it
 * when the callback returns: handlers copy what they keep.
 *
 * Every callback must end by issuing exactly one of:
 *   rpc_call_send()    server streaming: send a message; on_sent follows,
 *   rpc_call_recv()    client streaming: ask for the next message;
 *                      on_message or on_half_close follows,
 *   rpc_call_finish*() send the (optional) response and the status; only
 *                      on_done follows.
 * A callback that issues none of them finishes the call with INTERNAL; a
 * second one in the same callback is logged and ignored. They may only be
 * called from inside a callback (never from on_done or another thread).
 * Callbacks run on server threads and may block briefly (storage I/O).
 * Method names nobody registered are answered UNIMPLEMENTED.
 *
 * Errors are reap error codes (common/err.h); this module is the one place
 * that maps them to gRPC status codes.
 */
#ifndef REAP_RPC_RPC_H
#define REAP_RPC_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/err.h"

typedef struct rpc_server rpc_server_t;
typedef struct rpc_call rpc_call_t;

typedef enum {
	RPC_UNARY = 0,
	RPC_SERVER_STREAMING = 1,
	RPC_CLIENT_STREAMING = 2,
} rpc_kind_t;

typedef struct rpc_method {
	const char *path; /* "/package.Service/Method" */
	rpc_kind_t kind;
	const ProtobufCMessageDescriptor *request;
	size_t state_size; /* bytes of per-call handler state, zeroed at start */
	void *ctx;         /* service object, see rpc_call_ctx() */
	/* unary and server streaming: the request arrived */
	void (*on_request)(rpc_call_t *call, void *state, const ProtobufCMessage *req);
	/* client streaming: a message arrived (the first one too) */
	void (*on_message)(rpc_call_t *call, void *state, const ProtobufCMessage *req);
	/* client streaming: the client closed its side without the handler finishing */
	void (*on_half_close)(rpc_call_t *call, void *state);
	/* server streaming: the previous rpc_call_send completed */
	void (*on_sent)(rpc_call_t *call, void *state);
	/* a deferred call was woken (rpc_call_wake), or its client went away
	 * while it was deferred (then rpc_call_cancelled() is true) */
	void (*on_wake)(rpc_call_t *call, void *state);
	/* optional, always last, exactly once: release what state holds.
	 * ok is true when the handler's own status (even an error status) was
	 * delivered; false when the call failed, the client cancelled or the
	 * deadline passed, or the framework ended the call itself (malformed
	 * request, no operation issued, response over the send limit). */
	void (*on_done)(rpc_call_t *call, void *state, bool ok);
} rpc_method_t;

typedef struct rpc_server_config {
	const char *listen;    /* "127.0.0.1:8980"; port 0 picks a free one */
	int threads;           /* completion-queue threads; 0 = one per core */
	size_t max_recv_bytes; /* largest request message; 0 = 8 MiB */
	size_t max_send_bytes; /* largest response message; 0 = 8 MiB */
} rpc_server_config_t;

/** New server (not yet listening); NULL with eb set on failure. */
rpc_server_t *rpc_server_new(const rpc_server_config_t *cfg, reap_errbuf_t *eb);

/**
 * Register methods (the array is borrowed and must outlive the server).
 * Before start only (else REAP_E_PRECONDITION). REAP_E_INVALID when a method
 * lacks its path, request descriptor or a handler its kind needs
 * (on_request; plus on_sent for server streaming; on_message and
 * on_half_close for client streaming); REAP_E_EXISTS for a path twice.
 */
int rpc_server_add_methods(rpc_server_t *s, const rpc_method_t *methods, size_t n);

/** Bind, start the threads and begin serving. *port (may be NULL) gets the bound port. */
int rpc_server_start(rpc_server_t *s, int *port, reap_errbuf_t *eb);

/**
 * Graceful stop: refuse new calls, let calls in flight finish for up to
 * grace_ms, then cancel the rest and join the threads. Idempotent. Returns
 * when every call's on_done has run. Not from a callback (it joins the
 * server threads).
 */
void rpc_server_shutdown(rpc_server_t *s, int grace_ms);

/** Shut down (with no grace) if still running and free. NULL is a no-op. */
void rpc_server_free(rpc_server_t *s);

/** Effective limits, so services can advertise values below them. */
size_t rpc_server_max_recv(const rpc_server_t *s);
size_t rpc_server_max_send(const rpc_server_t *s);

/* ---- inside callbacks ---- */

/** The method's ctx pointer. */
void *rpc_call_ctx(const rpc_call_t *call);

/** The peer address ("ipv4:127.0.0.1:5555"), valid for the call's life. */
const char *rpc_call_peer(const rpc_call_t *call);

/**
 * First value of request metadata key (lowercase), or NULL. *len gets its
 * length; values are not NUL-terminated. Valid for the call's life.
 */
const char *rpc_call_metadata(const rpc_call_t *call, const char *key, size_t *len);

/** True once the client has cancelled or the deadline passed. */
bool rpc_call_cancelled(const rpc_call_t *call);

/** Pack msg and send it (server streaming). msg is borrowed and may be freed on return. */
void rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg);

/** Request the next client message (client streaming). */
void rpc_call_recv(rpc_call_t *call);

/**
 * Send resp (may be NULL) and then the status for err (REAP_OK = OK) with
 * msg as the status message (NULL: reap_strerror(err)). An error status
 * never carries a response.
 */
void rpc_call_finish(rpc_call_t *call, const ProtobufCMessage *resp, int err, const char *msg);

/**
 * Finish with an error whose google.rpc.Status (grpc-status-details-bin)
 * carries one detail message, e.g. a google.rpc.PreconditionFailure.
 * The packed Status must stay under 4 KiB (peers refuse trailers over
 * 8 KiB, and binary values travel base64-encoded): a larger detail is
 * dropped with a warning and only code and msg are sent, so cap long lists
 * (e.g. missing digests) before calling.
 */
void rpc_call_finish_detail(rpc_call_t *call, int err, const char *msg,
			    const ProtobufCMessage *detail);

/**
 * Issue nothing now: the call waits, holding no thread, until another
 * thread calls rpc_call_wake() (or the client goes away); then on_wake runs
 * on the call's own thread and must issue one operation as usual (it may
 * defer again). Counts as the callback's one operation.
 *
 * Whoever may wake the call keeps its pointer under a lock of its own and
 * calls rpc_call_wake under that lock; the handler must remove the call from
 * there (under the same lock) before it finishes the call, so no wake ever
 * reaches a freed call.
 */
void rpc_call_defer(rpc_call_t *call);

/**
 * From any thread: schedule on_wake of a deferred call. A call that is not
 * deferred (already woken, or never deferred) ignores it, so waking twice is
 * harmless.
 */
void rpc_call_wake(rpc_call_t *call);

/* ---- grpc.health.v1.Health ---- */

typedef struct rpc_health rpc_health_t;

/** A health service; every service starts unknown until set. NULL on allocation failure. */
rpc_health_t *rpc_health_new(void);
/** Free after the server that serves it has shut down. NULL is a no-op. */
void rpc_health_free(rpc_health_t *h);
/** Set one service's status ("" is the server as a whole); watchers are told. */
void rpc_health_set(rpc_health_t *h, const char *service, bool serving);
/** Set every known service at once (e.g. NOT_SERVING when draining). */
void rpc_health_set_all(rpc_health_t *h, bool serving);
/** Its methods (Check, Watch), owned by h, for rpc_server_add_methods. */
const rpc_method_t *rpc_health_methods(rpc_health_t *h, size_t *n);

/* ---- status mapping (the one place) ---- */

/** The gRPC status code (grpc_status_code value) for a reap error code. */
int rpc_code_from_err(int err);

/** The reap error code for a gRPC status code (client side). */
int rpc_err_from_code(int code);

/* ---- blocking client ---- */

typedef struct rpc_channel rpc_channel_t;
typedef struct rpc_stream rpc_stream_t;

/** Status of a finished client call. details: serialized google.rpc.Status or NULL. */
typedef struct rpc_status {
	int code; /* grpc_status_code */
	char msg[256];
	uint8_t *details;
	size_t details_len;
} rpc_status_t;

/** Free what st holds (not st itself). */
void rpc_status_destroy(rpc_status_t *st);

/** Insecure channel to target ("127.0.0.1:8980"); max message sizes 0 = 64 MiB. */
rpc_channel_t *rpc_channel_new(const char *target, size_t max_msg_bytes);
void rpc_channel_free(rpc_channel_t *ch);

/**
 * Cancel every call in flight on ch (from any thread; they end CANCELLED)
 * and refuse new ones with REAP_E_CANCELLED: how a daemon stops threads
 * blocked in long-polls. The channel must still be freed.
 */
void rpc_channel_cancel_all(rpc_channel_t *ch);

/**
 * Add a metadata header sent with every call on this channel (e.g.
 * "authorization"); setting a key again replaces its value. Safe while other
 * threads make calls. REAP_E_INVALID for an illegal key or value.
 */
int rpc_channel_set_header(rpc_channel_t *ch, const char *key, const char *value);

/**
 * Unary call. On return st holds the status (code 0 = OK); with OK, *resp is
 * the decoded response (free with protobuf_c_message_free_unpacked; resp may
 * be NULL to discard it). Returns 0 when the call completed (whatever its
 * status) or a reap error when it could not be made at all. timeout_ms <= 0
 * means no deadline (here and in rpc_stream_open). A channel may be used by
 * many threads at once.
 */
int rpc_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
	      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
	      rpc_status_t *st, int timeout_ms);

/**
 * Start a streaming call (client, server or bidi). NULL on failure. One
 * thread may send while another receives; otherwise a stream is used by one
 * thread at a time.
 */
rpc_stream_t *rpc_stream_open(rpc_channel_t *ch, const char *method, int timeout_ms);

/** Send one message; 0, or REAP_E_UNAVAILABLE when the server has ended the call. */
int rpc_stream_send(rpc_stream_t *s, const ProtobufCMessage *msg);

/** Send raw, already-serialized bytes (for tests of malformed input). */
int rpc_stream_send_raw(rpc_stream_t *s, const void *data, size_t len);

/** Half-close: no more messages from the client. */
int rpc_stream_close_send(rpc_stream_t *s);

/** Receive one message: 1 with *msg set, 0 at end of stream, <0 on error. */
int rpc_stream_recv(rpc_stream_t *s, const ProtobufCMessageDescriptor *desc,
		    ProtobufCMessage **msg);

/**
 * Half-close if needed, discard unread messages, wait for the final status
 * into st and free the stream.
 */
int rpc_stream_finish(rpc_stream_t *s, rpc_status_t *st);

/** Cancel and free the stream without waiting for a status. */
void rpc_stream_cancel(rpc_stream_t *s);

#endif
