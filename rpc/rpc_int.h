/*
 * rpc_int.h - private structures shared by the files of the rpc module.
 *
 * server.c owns rpc_server_t and the completion-queue threads, call.c the
 * per-call state machine (rpc_call_t), codec.c the protobuf <-> byte buffer
 * conversion, status.c the status codes and google.rpc.Status packing,
 * client.c and stream.c the blocking client. Nothing here is exported outside
 * rpc/.
 *
 * Threading: every server thread calls grpc_completion_queue_next on the one
 * queue. The fields of an rpc_call_t are touched only by the thread running
 * its events, one thread at a time (rpc_call_event hands over under the
 * call's mutex), except `cancelled`, which handlers may read from anywhere,
 * and the wake and event-queue fields, which are under that mutex. The
 * server-wide counters are atomics; the mutex/condvar pair only serves
 * shutdown.
 */
#ifndef REAP_RPC_RPC_INT_H
#define REAP_RPC_RPC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include "rpc/rpc.h"

/* Default message size limits (rpc.h documents them). */
#define RPC_DEFAULT_SERVER_MAX ((size_t)8 << 20)
#define RPC_DEFAULT_CLIENT_MAX ((size_t)64 << 20)

/*
 * Largest serialized google.rpc.Status carried in grpc-status-details-bin.
 * Peers (grpc-java in Bazel, gRPC C core) refuse trailers above 8 KiB by
 * default and binary values travel base64-encoded (4/3), so anything bigger
 * would turn a useful error into an opaque RESOURCE_EXHAUSTED on the client.
 */
#define RPC_MAX_DETAILS_BYTES 4096

/* Longest status message we send (the rest is cut at a UTF-8 boundary). */
#define RPC_MAX_STATUS_MSG 1024

#define RPC_DETAILS_KEY "grpc-status-details-bin"

/* ---- server ---- */

typedef enum {
	RPC_TAG_REQUEST = 1, /* grpc_server_request_*call completed */
	RPC_TAG_OP,          /* the call's one send/recv/finish batch completed */
	RPC_TAG_CLOSE,       /* RECV_CLOSE_ON_SERVER completed */
	RPC_TAG_SHUTDOWN,    /* grpc_server_shutdown_and_notify completed */
	RPC_TAG_WAKE,        /* the empty batch of rpc_call_wake came back */
} rpc_tag_kind_t;

/* What goes through the completion queue: embedded in its owner. */
typedef struct rpc_tag {
	rpc_call_t *call; /* NULL for RPC_TAG_SHUTDOWN */
	rpc_tag_kind_t kind;
} rpc_tag_t;

/* A registered method; handle is NULL for the catch-all "unknown method". */
typedef struct rpc_reg {
	const rpc_method_t *m;
	void *handle; /* from grpc_server_register_method */
} rpc_reg_t;

typedef enum {
	RPC_SRV_NEW = 0,  /* created, methods may be added */
	RPC_SRV_RUNNING,  /* listening */
	RPC_SRV_STOPPING, /* rpc_server_shutdown in progress */
	RPC_SRV_STOPPED,  /* grpc server destroyed, threads joined */
	RPC_SRV_FAILED,   /* rpc_server_start failed; only free is left */
} rpc_srv_state_t;

struct rpc_server {
	grpc_server *srv;
	char *listen;
	grpc_server_credentials *creds; /* TLS (tls.c) until bound; NULL = plaintext */
	const char *tls_mode;           /* for the log: "plaintext", "tls", ... */
	size_t max_recv;
	size_t max_send;
	/*
	 * One completion queue that every thread pulls from, so whichever
	 * thread is free takes the next event. gRPC binds all the calls of a
	 * connection to the first queue with a request outstanding, so with a
	 * queue per thread one connection's calls all ran on one thread, one
	 * at a time, while the others idled. A call's events are serialized
	 * by the call itself (call.c).
	 */
	grpc_completion_queue *cq;
	int nthreads;
	pthread_t *threads; /* nthreads entries, the first nrunning started */
	int nrunning;       /* started and not yet joined */
	bool cq_shut;       /* grpc_completion_queue_shutdown was called */
	rpc_reg_t *regs;    /* registered methods */
	size_t nregs;
	size_t cap_regs;
	rpc_reg_t unknown;  /* catch-all for unregistered method names */

	pthread_mutex_t mu; /* guards state and shutdown_done; pairs with cv */
	pthread_cond_t cv;
	rpc_srv_state_t state;
	bool shutdown_done;   /* the shutdown tag came back */
	atomic_bool stopping; /* read lock-free by the queue threads */
	atomic_size_t active; /* accepted calls not yet freed */
	rpc_tag_t shutdown_tag;
	rpc_observer_fn observer; /* set before start only (call.c), then read-only */
	void *observer_ctx;
};

/* Queue a request for the next call of reg (call.c). */
int rpc_call_request(rpc_server_t *s, const rpc_reg_t *reg);

/* A tag of a call came back from the completion queue, on any thread (call.c). */
void rpc_call_event(rpc_tag_t *tag, bool ok);

/* A call was accepted / freed: server bookkeeping for shutdown (server.c). */
void rpc_server_call_begin(rpc_server_t *s);
void rpc_server_call_end(rpc_server_t *s);

/* grpc_init/grpc_shutdown pairing for servers and channels (server.c). */
void rpc_grpc_ref(void);
void rpc_grpc_unref(void);

/* ---- codec.c ---- */

/*
 * Serialize msg into a new byte buffer (*out, caller destroys). Fails with
 * REAP_E_EXHAUSTED when it would exceed max bytes (0 = no limit).
 */
int rpc_pack(const ProtobufCMessage *msg, size_t max, grpc_byte_buffer **out);

/* A byte buffer holding a copy of data. */
grpc_byte_buffer *rpc_pack_raw(const void *data, size_t len);

/* Decode bb with desc; NULL when malformed. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/*
 * Per-thread decoding memory for server requests (see codec.c): one warm
 * chunk of at most 16 MiB kept between messages. One message at a time.
 */
typedef struct rpc_arena rpc_arena_t;

/** A new, empty arena; NULL when out of memory. */
rpc_arena_t *rpc_arena_new(void);

/** Free a (reset) arena and its memory. NULL is a no-op. */
void rpc_arena_free(rpc_arena_t *a);

/**
 * Decode uncompressed bb with desc into a's memory (never malloc'd per
 * field); the message lives until rpc_arena_reset(a), which must follow
 * every call, also when this returns NULL (malformed, out of memory, or a
 * compressed buffer: use rpc_unpack then). Never free the message itself.
 */
ProtobufCMessage *rpc_unpack_arena(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
				   rpc_arena_t *a);

/** Drop the message decoded into a, keeping one chunk the size it needed (bounded). */
void rpc_arena_reset(rpc_arena_t *a);

/** The calling thread's idle arena (set by the server's queue threads), or NULL. */
rpc_arena_t *rpc_thread_arena(void);

/** Make a (or NULL) the calling thread's arena; the thread frees it. */
void rpc_thread_arena_set(rpc_arena_t *a);

/* ---- status.c ---- */

/* The status message slice for err/msg: msg, or reap_strerror(err), bounded. */
grpc_slice rpc_status_msg_slice(int err, const char *msg);

/*
 * Serialize google.rpc.Status{code, msg, details: [Any(detail)]} into *out.
 * REAP_E_EXHAUSTED when it exceeds RPC_MAX_DETAILS_BYTES.
 */
int rpc_status_pack_details(int code, const char *msg, const ProtobufCMessage *detail,
			    grpc_slice *out);

/* Fill st from a client call's final status and trailing metadata. */
int rpc_status_fill(rpc_status_t *st, grpc_status_code code, grpc_slice details,
		    const grpc_metadata_array *trailing);

/* Reset st to an empty UNKNOWN status (no allocation). */
void rpc_status_init(rpc_status_t *st, int code, const char *msg);

/* ---- client (client.c) ---- */

/* A new client call on its own pluck queue: *cq and *call, or an error. */
int rpc_client_call_new(rpc_channel_t *ch, const char *method, int timeout_ms,
			grpc_completion_queue **cq, grpc_call **call);

/*
 * Start a batch that begins with SEND_INITIAL_METADATA carrying the
 * channel's headers (ops[0] is filled in here) under the channel lock, so
 * rpc_channel_set_header can run concurrently.
 */
grpc_call_error rpc_client_start_with_headers(rpc_channel_t *ch, grpc_call *call, grpc_op *ops,
					      size_t nops, void *tag);

/* Wait for tag on a client queue; returns the event's success flag. */
bool rpc_client_wait(grpc_completion_queue *cq, void *tag);

/* Forget call (may be NULL) on ch, unref it, and shut down, drain and destroy cq. */
void rpc_client_call_free(rpc_channel_t *ch, grpc_completion_queue *cq, grpc_call *call);

/* The channel's message limit. */
size_t rpc_channel_max_msg(const rpc_channel_t *ch);

#endif
