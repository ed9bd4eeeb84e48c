/*
 * rpc.h - gRPC C-core plumbing: a server of registered methods driven by
 * completion-queue threads, and a small blocking client.
 *
 * Server model. A service registers rpc_method_t entries. The server runs N
 * threads that share one completion queue, so any free thread takes the
 * next event, whichever connection or call it belongs to; every method has
 * N calls requested. Each accepted call becomes an rpc_call_t, a small
 * state machine whose events run one at a time, so its callbacks never run
 * concurrently with each other (consecutive ones may run on different
 * threads). The call is freed only when every tag it has in flight has
 * come back, after on_done.
 *
 * The framework decodes each request message with the method's protobuf-c
 * descriptor (gRPC has already enforced the receive size limit) and frees it
 * when the callback returns: handlers copy what they keep.
 *
 * Every callback must end by issuing exactly one of:
 *   rpc_call_send()    server streaming and bidi: send a message; on_sent
 *                      follows,
 *   rpc_call_recv()    client streaming and bidi: ask for the next message;
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
typedef struct rpc_msg rpc_msg_t;

typedef enum {
	RPC_UNARY = 0,
	RPC_SERVER_STREAMING = 1,
	RPC_CLIENT_STREAMING = 2,
	/* ---- bidirectional streaming ----
	 * Requests are read one at a time: on_message gets each one and may
	 * answer with any number of messages, one rpc_call_send per callback
	 * (on_sent follows each), before asking for the next request with
	 * rpc_call_recv. When the client half-closes, on_half_close runs and
	 * may still send before it finishes the call; the call ends with
	 * rpc_call_finish (its response, if any, is sent as the last message).
	 * At most one message is in flight and nothing is read ahead, so a call
	 * holds at most one request and one response: memory stays bounded
	 * however fast the client sends. rpc_call_recv after on_half_close is
	 * a programmer error (the call ends with INTERNAL). */
	RPC_BIDI_STREAMING = 3,
} rpc_kind_t;

typedef struct rpc_method {
	const char *path; /* "/package.Service/Method" */
	rpc_kind_t kind;
	const ProtobufCMessageDescriptor *request;
	size_t state_size; /* bytes of per-call handler state, zeroed at start */
	void *ctx;         /* service object, see rpc_call_ctx() */
	/* unary and server streaming: the request arrived */
	void (*on_request)(rpc_call_t *call, void *state, const ProtobufCMessage *req);
	/* client streaming and bidi: a message arrived (the first one too) */
	void (*on_message)(rpc_call_t *call, void *state, const ProtobufCMessage *req);
	/* client streaming and bidi: the client closed its side without the handler finishing */
	void (*on_half_close)(rpc_call_t *call, void *state);
	/* server streaming and bidi: the previous rpc_call_send completed */
	void (*on_sent)(rpc_call_t *call, void *state);
	/* a deferred call was woken (rpc_call_wake), or its client went away
	 * while it was deferred (then rpc_call_cancelled() is true) */
	void (*on_wake)(rpc_call_t *call, void *state);
	/* client streaming and bidi, optional: instead of on_message, get each
	 * request undecoded, as the segments gRPC received it in (see "Raw
	 * messages" below), to decode it without copying its payload. The
	 * handler then parses untrusted bytes itself. */
	void (*on_raw_message)(rpc_call_t *call, void *state, const rpc_msg_t *msg);
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
	const struct rpc_tls_server *tls; /* NULL = plaintext; see "TLS" below */
} rpc_server_config_t;

/** New server (not yet listening); NULL with eb set on failure. */
rpc_server_t *rpc_server_new(const rpc_server_config_t *cfg, reap_errbuf_t *eb);

/**
 * Register methods (the array is borrowed and must outlive the server).
 * Before start only (else REAP_E_PRECONDITION). REAP_E_INVALID when a method
 * lacks its path, request descriptor or a handler its kind needs
 * (on_request; plus on_sent for server streaming; on_message (or
 * on_raw_message) and on_half_close for client streaming; the same and
 * on_sent for bidi); REAP_E_EXISTS for a path twice.
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

/* ---- call observer (metrics) ---- */

/**
 * Told about every finished call, exactly once, on a server thread
 * after its status went out (or it failed) and after on_done: method is the
 * full path ("/pkg.Service/Method"; "(unknown)" for names nobody
 * registered, so peers cannot grow a metrics label set), grpc_code the final
 * status (the one sent; when the call broke off, DEADLINE_EXCEEDED if its
 * deadline had passed, give or take 100 ms, else CANCELLED), seconds the wall time since the call was accepted, bytes_in/out the
 * serialized message payload received and sent (without framing or
 * metadata). It must be quick and thread-safe: calls end on every thread.
 */
typedef void (*rpc_observer_fn)(void *ctx, const char *method, int grpc_code, double seconds,
				uint64_t bytes_in, uint64_t bytes_out);

/** Set the observer (fn NULL: none). Before rpc_server_start only; later calls are ignored. */
void rpc_server_set_observer(rpc_server_t *s, rpc_observer_fn fn, void *ctx);

/* ---- registered services ---- */

/**
 * Call fn once for every distinct service with a method registered on s
 * ("build.bazel.remote.execution.v2.ActionCache"), in registration order;
 * name is valid during the call only. Returns how many there were. Not
 * concurrently with rpc_server_add_methods (after start it is stable).
 */
size_t rpc_server_each_service(const rpc_server_t *s, void (*fn)(void *ctx, const char *name),
			       void *ctx);

/* ---- inside callbacks ---- */

/** The method's ctx pointer. */
void *rpc_call_ctx(const rpc_call_t *call);

/** The peer address ("ipv4:127.0.0.1:5555"), valid for the call's life. */
const char *rpc_call_peer(const rpc_call_t *call);

/** The call's method path, "/package.Service/Method". */
const char *rpc_call_method(const rpc_call_t *call);

/**
 * Record who is calling (set by the service that identified the caller),
 * for the per-call log line: every call at debug level, errors always.
 */
void rpc_call_set_subject(rpc_call_t *call, const char *subject);

/**
 * First value of request metadata key (lowercase), or NULL. *len gets its
 * length; values are not NUL-terminated. Valid for the call's life.
 */
const char *rpc_call_metadata(const rpc_call_t *call, const char *key, size_t *len);

/** True once the client has cancelled or the deadline passed. */
bool rpc_call_cancelled(const rpc_call_t *call);

/** Pack msg and send it (server streaming, bidi). msg is borrowed and may be freed on return. */
void rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg);

/* ---- raw messages: zero-copy receive and send ----
 *
 * A raw request (on_raw_message) is a sequence of contiguous segments whose
 * concatenation is the serialized message, exactly as gRPC received it (a
 * compressed message is inflated first, into one segment). The segments are
 * borrowed: valid only until the callback returns.
 *
 * A raw response is serialized by the handler into a buffer the call hands
 * out (rpc_call_raw_buffer) and goes to gRPC without a copy; use it for
 * large payloads that can be read straight into place (ByteStream Read).
 */

/** Number of segments of msg (0 for an empty message). */
size_t rpc_msg_segments(const rpc_msg_t *msg);

/** Segment i (< rpc_msg_segments) and its length in *len (it may be empty). */
const uint8_t *rpc_msg_segment(const rpc_msg_t *msg, size_t i, size_t *len);

/** Total length of msg in bytes. */
size_t rpc_msg_length(const rpc_msg_t *msg);

/**
 * A writable buffer of cap bytes for the call's next raw response (server
 * streaming, bidi), owned by the call; NULL when out of memory. A second
 * call replaces the first. Any time, from a callback; it is not an operation.
 */
uint8_t *rpc_call_raw_buffer(rpc_call_t *call, size_t cap);

/**
 * Send bytes [off, off + len) of the raw buffer, which must hold one
 * serialized response message, as the next message (like rpc_call_send).
 * The buffer is handed to gRPC: ask for a new one for the next message.
 * Without a buffer, or a range outside it, the call ends with INTERNAL; a
 * message over the send limit ends it with RESOURCE_EXHAUSTED.
 */
void rpc_call_send_raw(rpc_call_t *call, size_t off, size_t len);

/** Like rpc_call_finish(call, resp, REAP_OK, NULL) with the raw bytes as resp. */
void rpc_call_finish_raw(rpc_call_t *call, size_t off, size_t len);

/** Request the next client message (client streaming, bidi). */
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
 * on a server thread and must issue one operation as usual (it may
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
/** Set every known service at once. */
void rpc_health_set_all(rpc_health_t *h, bool serving);
/**
 * Set "" and every service registered on s (rpc_server_each_service): call
 * with false before rpc_server_start (NOT_SERVING while starting) and with
 * true once the server and its backends are ready.
 */
void rpc_health_set_server(rpc_health_t *h, const rpc_server_t *s, bool serving);
/**
 * Draining: every service, "" and any name asked about become NOT_SERVING
 * for good (later sets are ignored), and each Watch stream ends with OK
 * right after it has delivered NOT_SERVING, so watchers learn of the drain
 * and do not hold up a graceful rpc_server_shutdown. Call it just before
 * rpc_server_shutdown. Idempotent.
 */
void rpc_health_shutdown(rpc_health_t *h);
/** Its methods (Check, Watch), owned by h, for rpc_server_add_methods. */
const rpc_method_t *rpc_health_methods(rpc_health_t *h, size_t *n);

/* ---- grpc.reflection.v1alpha / grpc.reflection.v1 ServerReflection ---- */

typedef struct rpc_reflection rpc_reflection_t;

/**
 * Server reflection (what grpcurl uses to list and describe services) from
 * the FileDescriptorSet of reap's protos that the build embeds in the
 * binary (proto/, protoc --include_imports). It answers list_services with
 * every service registered on s at the time of the request (so add its
 * methods before rpc_server_start like any other), file_by_filename and
 * file_containing_symbol (packages' services, methods, messages, nested
 * messages, enums, fields) with every file the answer depends on, each
 * once; unknown names get an error_response NOT_FOUND. Both
 * grpc.reflection.v1alpha (grpcurl 1.8) and grpc.reflection.v1 are served;
 * their messages are wire-identical. s is borrowed and must outlive the
 * reflection object. NULL with eb set on failure (the embedded set does
 * not parse, or out of memory).
 */
rpc_reflection_t *rpc_reflection_new(const rpc_server_t *s, reap_errbuf_t *eb);
/** Free after the server that serves it has shut down. NULL is a no-op. */
void rpc_reflection_free(rpc_reflection_t *r);
/** Its methods (ServerReflectionInfo of v1alpha and v1), owned by r, for rpc_server_add_methods. */
const rpc_method_t *rpc_reflection_methods(rpc_reflection_t *r, size_t *n);

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

/* ---- TLS: server and client credentials, client certificate identity ---- */

/**
 * Server TLS, in rpc_server_config_t.tls (borrowed; the files are read by
 * rpc_server_new, which fails with eb naming the setting and the file when
 * one is missing, unreadable, holds no PEM certificate or key, the key is
 * encrypted or does not match the certificate).
 *
 * client_ca_file NULL: plain TLS, clients are not asked for a certificate.
 * client_ca_file set: clients are asked for one, and a certificate that is
 * presented must chain to these CAs or the handshake fails (no handler
 * runs). require_client_cert: a client without one fails the handshake too;
 * it needs client_ca_file (else REAP_E_INVALID).
 */
typedef struct rpc_tls_server {
	const char *cert_file;      /* PEM certificate chain, leaf first */
	const char *key_file;       /* PEM private key of the leaf, unencrypted */
	const char *client_ca_file; /* PEM CAs for client certificates, or NULL */
	bool require_client_cert;
} rpc_tls_server_t;

/** Client TLS for rpc_channel_new_tls (borrowed; read during the call). */
typedef struct rpc_tls_client {
	const char *ca_file;   /* PEM CAs for the server certificate; NULL = system roots */
	const char *cert_file; /* client certificate chain for mTLS, or NULL */
	const char *key_file;  /* its unencrypted private key; set with cert_file */
	const char *server_name_override; /* name to verify instead of the target host
					   * (tests with a "localhost" certificate); NULL = none */
} rpc_tls_client_t;

/**
 * The verified client certificate identity of this call: its first subject
 * alternative name, else its common name. NULL when the call has none:
 * plaintext, no client certificate, or a server that does not ask for one.
 * Only certificates that chained to client_ca_file count. Computed once per
 * call and cached in it; valid for the call's life. From the call's
 * callbacks (including on_done) only.
 */
const char *rpc_call_peer_cert_subject(rpc_call_t *call);

/**
 * Like rpc_channel_new, over TLS. tls NULL means server verification
 * against the system roots and no client certificate; never plaintext.
 * NULL on failure (bad target, a file that cannot be read or holds no
 * usable PEM, cert_file without key_file or the reverse); the reason is
 * logged with the file name. The server certificate is always verified,
 * and connection failures (untrusted server, refused client certificate)
 * end calls with UNAVAILABLE.
 */
rpc_channel_t *rpc_channel_new_tls(const char *target, size_t max_msg_bytes,
				   const rpc_tls_client_t *tls);

#endif
