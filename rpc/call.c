/*
 * call.c - the server call state machine behind rpc_call_t.
 *
 * An rpc_call_t is allocated when a call is requested from gRPC and becomes
 * a live call when that request completes. From then on it has at most two
 * tags in flight: t_close (RECV_CLOSE_ON_SERVER, issued at start, returns
 * when the call is over and tells whether it was cancelled) and t_op, the
 * one batch the handler's last callback issued (receive, send, or the final
 * status). Each completion of t_op runs the next callback; the handler must
 * issue exactly one operation per callback, which keeps exactly one t_op in
 * flight until the status batch. The call is freed, after on_done, only when
 * the status is out (or the call failed) and both tags are back.
 *
 * The server's threads share one completion queue, so two tags of one call
 * (t_op and t_close, say) can come back on two threads at once.
 * rpc_call_event runs a call's events one at a time: a thread that finds
 * the call busy leaves its event in the call's small queue (ev, at most
 * one per other tag in flight) for the busy thread to run next, and goes
 * back to the queue instead of waiting. So the handler's callbacks never
 * overlap and need no lock, though consecutive ones may run on different
 * threads. A deferred call may be woken from any thread: rpc_call_wake
 * starts an empty batch (it completes at once, with t_wake). mu guards the
 * event queue and the deferred/wake_inflight pair, so each defer yields
 * exactly one on_wake, whether from a wake or from the client going away.
 *
 * Requests are decoded here, at the edge, and freed as soon as the callback
 * returns. Nothing a peer sends can abort the process: bad
 * input ends the call with a status, a broken stream ends it with on_done
 * (ok = false).
 *
 * Client-streaming and bidi calls read their requests with explicit receive
 * batches; a bidi call alternates them with sends as its handler chooses,
 * still one batch at a time, so it never holds more than one request and
 * one response. When the call is freed the server's observer (metrics), if
 * any, hears its path, final code, duration and payload bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/log.h"
#include "common/metrics.h"
#include "rpc/rpc_int.h"
#include "rpc/tls_int.h"

/*
 * Room for a call's waiting events: at most t_close and one of t_op and
 * t_wake can wait behind the event being run (t_req only ever comes alone).
 */
#define RPC_CALL_EVENTS 4

typedef enum {
	RPC_CALL_REQUESTED = 0, /* waiting for gRPC to hand over a call */
	RPC_CALL_ACTIVE,        /* handler callbacks and their operations */
	RPC_CALL_FINISHING,     /* the status batch is in flight */
	RPC_CALL_CLOSING,       /* nothing more is issued; waiting for tags */
} rpc_call_state_t;

typedef enum {
	RPC_OP_NONE = 0,
	RPC_OP_RECV,
	RPC_OP_SEND,
	RPC_OP_FINISH,
} rpc_op_kind_t;

typedef enum {
	RPC_CB_REQUEST,
	RPC_CB_MESSAGE,
	RPC_CB_HALF_CLOSE,
	RPC_CB_SENT,
	RPC_CB_WAKE,
} rpc_cb_t;

/*
 * A raw request: the uncompressed byte buffer's slices, read in place, or
 * (compressed messages) one inflated slice.
 */
struct rpc_msg {
	const grpc_slice_buffer *sb; /* NULL: use flat */
	grpc_slice flat;
	size_t len;
};

struct rpc_call {
	rpc_server_t *srv;
	const rpc_reg_t *reg;
	grpc_call *call;
	gpr_timespec deadline;
	grpc_metadata_array md;    /* request metadata, lives as long as call */
	grpc_call_details details; /* unregistered method names only */
	bool has_details;
	grpc_byte_buffer *recv_buf;
	grpc_byte_buffer *send_buf;
	grpc_slice raw;       /* rpc_call_raw_buffer's buffer, if has_raw */
	bool has_raw;
	grpc_slice status_msg;
	grpc_metadata trailer; /* grpc-status-details-bin, if ntrailers */
	size_t ntrailers;
	char *peer; /* gpr_malloc'd */
	char *cert_subject; /* malloc'd; rpc_call_peer_cert_subject's cache */
	bool cert_checked;  /* ...which is filled in (maybe with NULL) */
	rpc_call_state_t st;
	rpc_op_kind_t op;     /* what t_op carries */
	int tags;             /* tags in flight */
	int close_cancelled;  /* output of RECV_CLOSE_ON_SERVER */
	atomic_bool cancelled;
	bool accepted;        /* counted in the server's active calls */
	bool md_sent;         /* initial metadata went out */
	bool in_cb;           /* a handler callback is running */
	bool issued;          /* ...and has issued its one operation */
	bool own_finish;      /* the status is the handler's, not ours */
	bool finish_ok;       /* the status batch completed */
	bool failed;          /* a batch failed; the call was cancelled */
	bool half_closed;     /* on_half_close was delivered */
	grpc_status_code code; /* the status we sent (or tried to) */
	gpr_timespec t_start; /* accepted, GPR_CLOCK_MONOTONIC */
	uint64_t bytes_in;    /* request payload received */
	uint64_t bytes_out;   /* response payload sent */
	char subject[128];    /* who called, once a service identified them (logs) */
	size_t send_len;      /* payload of the send in flight */
	rpc_tag_t t_req;
	rpc_tag_t t_op;
	rpc_tag_t t_close;
	rpc_tag_t t_wake;
	pthread_mutex_t mu; /* guards deferred, wake_inflight and ev_* */
	bool ev_busy;         /* a thread is running this call's events */
	int ev_n;             /* events waiting for it, oldest first */
	struct {
		rpc_tag_t *tag;
		bool ok;
	} ev[RPC_CALL_EVENTS];
	bool deferred;        /* waiting for rpc_call_wake */
	bool wake_inflight;   /* t_wake is in flight (not counted in tags) */
	max_align_t hstate[]; /* the method's state_size bytes */
};

static void rpc_call_deliver(rpc_call_t *c, rpc_cb_t cb);

/* Does the method read its requests with receive batches (not with the call)? */
static bool rpc_kind_streams_in(rpc_kind_t kind)
{
	return kind == RPC_CLIENT_STREAMING || kind == RPC_BIDI_STREAMING;
}

static const char *rpc_call_path(const rpc_call_t *c)
{
	return c->reg->m->path != NULL ? c->reg->m->path : "(unknown)";
}

static void rpc_call_release(rpc_call_t *c)
{
	rpc_server_t *s = c->srv;
	bool accepted = c->accepted;

	grpc_metadata_array_destroy(&c->md);
	if (c->has_details)
		grpc_call_details_destroy(&c->details);
	if (c->recv_buf != NULL)
		grpc_byte_buffer_destroy(c->recv_buf);
	if (c->send_buf != NULL)
		grpc_byte_buffer_destroy(c->send_buf);
	if (c->has_raw)
		grpc_slice_unref(c->raw);
	grpc_slice_unref(c->status_msg);
	if (c->ntrailers != 0)
		grpc_slice_unref(c->trailer.value);
	if (c->peer != NULL)
		gpr_free(c->peer);
	free(c->cert_subject);
	if (c->call != NULL)
		grpc_call_unref(c->call);
	pthread_mutex_destroy(&c->mu);
	free(c);
	if (accepted)
		rpc_server_call_end(s);
}

int rpc_call_request(rpc_server_t *s, const rpc_reg_t *reg)
{
	rpc_call_t *c = calloc(1, sizeof(*c) + reg->m->state_size);
	grpc_call_error e;

	if (c == NULL)
		return REAP_E_NOMEM;
	c->srv = s;
	c->reg = reg;
	c->t_req = (rpc_tag_t){c, RPC_TAG_REQUEST};
	c->t_op = (rpc_tag_t){c, RPC_TAG_OP};
	c->t_close = (rpc_tag_t){c, RPC_TAG_CLOSE};
	c->t_wake = (rpc_tag_t){c, RPC_TAG_WAKE};
	pthread_mutex_init(&c->mu, NULL);
	c->status_msg = grpc_empty_slice();
	atomic_init(&c->cancelled, false);
	grpc_metadata_array_init(&c->md);
	c->tags = 1;
	if (reg->handle == NULL) {
		grpc_call_details_init(&c->details);
		c->has_details = true;
		e = grpc_server_request_call(s->srv, &c->call, &c->details, &c->md, s->cq, s->cq,
					     &c->t_req);
	} else {
		grpc_byte_buffer **payload =
			rpc_kind_streams_in(reg->m->kind) ? NULL : &c->recv_buf;

		e = grpc_server_request_registered_call(s->srv, reg->handle, &c->call, &c->deadline,
							&c->md, payload, s->cq, s->cq, &c->t_req);
	}
	if (e != GRPC_CALL_OK) {
		REAP_ERROR("rpc request failed", "path=\"%s\" error=%d", rpc_call_path(c), (int)e);
		rpc_call_release(c);
		return REAP_E_INTERNAL;
	}
	return REAP_OK;
}

/* A batch of ours went wrong: cancel, issue nothing more, wait for the tags. */
static void rpc_call_fail(rpc_call_t *c)
{
	c->failed = true;
	c->st = RPC_CALL_CLOSING;
	grpc_call_cancel(c->call, NULL);
}

static void rpc_call_start_ops(rpc_call_t *c, const grpc_op *ops, size_t n, rpc_op_kind_t kind)
{
	grpc_call_error e;

	c->op = kind;
	c->tags++;
	e = grpc_call_start_batch(c->call, ops, n, &c->t_op, NULL);
	if (e != GRPC_CALL_OK) {
		c->tags--;
		c->op = RPC_OP_NONE;
		REAP_ERROR("rpc batch rejected", "path=\"%s\" op=%d error=%d", rpc_call_path(c),
			   (int)kind, (int)e);
		rpc_call_fail(c);
	}
}

/* Put SEND_INITIAL_METADATA into *op unless it went out already; returns 0 or 1. */
static size_t rpc_call_initial_md(rpc_call_t *c, grpc_op *op)
{
	if (c->md_sent)
		return 0;
	op->op = GRPC_OP_SEND_INITIAL_METADATA;
	op->data.send_initial_metadata.count = 0;
	c->md_sent = true;
	return 1;
}

static void rpc_call_start_recv(rpc_call_t *c)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->recv_buf;
	rpc_call_start_ops(c, &op, 1, RPC_OP_RECV);
}

/*
 * Send (initial metadata,) resp when given and code is OK, and the status.
 * Takes ownership of msg and of *details (may be NULL).
 */
static void rpc_call_finish_code(rpc_call_t *c, const ProtobufCMessage *resp, grpc_status_code code,
				 grpc_slice msg, const grpc_slice *details)
{
	grpc_op ops[3];
	size_t n;

	memset(ops, 0, sizeof(ops));
	c->code = code;
	if (resp != NULL && code == GRPC_STATUS_OK &&
	    rpc_pack(resp, c->srv->max_send, &c->send_buf) != REAP_OK) {
		REAP_WARN("rpc response too large", "path=\"%s\" limit=%zu", rpc_call_path(c),
			  c->srv->max_send);
		code = GRPC_STATUS_RESOURCE_EXHAUSTED;
		grpc_slice_unref(msg);
		msg = grpc_slice_from_static_string("response message too large");
		c->own_finish = false;
		c->code = code;
	}
	n = rpc_call_initial_md(c, &ops[0]);
	if (c->send_buf != NULL) {
		c->send_len = grpc_byte_buffer_length(c->send_buf);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = c->send_buf;
		n++;
	}
	grpc_slice_unref(c->status_msg);
	c->status_msg = msg;
	if (details != NULL) {
		c->trailer.key = grpc_slice_from_static_string(RPC_DETAILS_KEY);
		c->trailer.value = *details;
		c->ntrailers = 1;
	}
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = code;
	ops[n].data.send_status_from_server.status_details = &c->status_msg;
	ops[n].data.send_status_from_server.trailing_metadata_count = c->ntrailers;
	ops[n].data.send_status_from_server.trailing_metadata = c->ntrailers ? &c->trailer : NULL;
	n++;
	c->st = RPC_CALL_FINISHING;
	rpc_call_start_ops(c, ops, n, RPC_OP_FINISH);
}

/* A status of the framework's own (bad input, handler misbehaving). */
static void rpc_call_abort(rpc_call_t *c, grpc_status_code code, const char *msg)
{
	rpc_call_finish_code(c, NULL, code, grpc_slice_from_static_string(msg), NULL);
}

static void rpc_call_accept(rpc_call_t *c, bool ok)
{
	rpc_server_t *s = c->srv;
	grpc_op op;

	if (!ok) {
		/* Shutdown killed the pending request: no call, just free it. */
		c->st = RPC_CALL_CLOSING;
		return;
	}
	/* Keep the number of requests outstanding for this method. */
	if (!atomic_load(&s->stopping) && rpc_call_request(s, c->reg) != REAP_OK)
		REAP_ERROR("rpc method lost a request", "path=\"%s\"", rpc_call_path(c));
	c->accepted = true;
	c->t_start = gpr_now(GPR_CLOCK_MONOTONIC);
	rpc_server_call_begin(s);
	c->st = RPC_CALL_ACTIVE;
	if (c->has_details)
		c->deadline = c->details.deadline;
	c->peer = grpc_call_get_peer(c->call);

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->close_cancelled;
	c->tags++;
	if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK) {
		c->tags--;
		REAP_ERROR("rpc close batch rejected", "path=\"%s\"", rpc_call_path(c));
		rpc_call_fail(c);
		return;
	}
	if (c->reg->handle == NULL) {
		REAP_DEBUG("rpc unknown method", "peer=%s", c->peer ? c->peer : "");
		rpc_call_abort(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
		return;
	}
	if (rpc_kind_streams_in(c->reg->m->kind))
		rpc_call_start_recv(c);
	else
		rpc_call_deliver(c, RPC_CB_REQUEST);
}

/* Run one handler callback and enforce "exactly one operation per callback". */
/*
 * View the received buffer as a raw message, in place when it is
 * uncompressed; false when it cannot be inflated. rpc_msg_destroy after.
 */
static bool rpc_msg_init(rpc_msg_t *msg, grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader reader;

	memset(msg, 0, sizeof(*msg));
	msg->flat = grpc_empty_slice();
	if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE) {
		msg->sb = &bb->data.raw.slice_buffer;
		msg->len = msg->sb->length;
		return true;
	}
	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return false;
	msg->flat = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	msg->len = GRPC_SLICE_LENGTH(msg->flat);
	return true;
}

static void rpc_msg_destroy(rpc_msg_t *msg)
{
	grpc_slice_unref(msg->flat);
}

/*
 * Hand a received message to on_raw_message; false when it cannot be
 * inflated. The buffer is detached from c->recv_buf first: the handler's
 * next receive batch writes its result there.
 */
static bool rpc_call_deliver_raw(rpc_call_t *c)
{
	const rpc_method_t *m = c->reg->m;
	grpc_byte_buffer *bb = c->recv_buf;
	rpc_msg_t msg;
	bool ok;

	c->recv_buf = NULL;
	ok = rpc_msg_init(&msg, bb);
	if (ok) {
		c->in_cb = true;
		c->issued = false;
		m->on_raw_message(c, c->hstate, &msg);
		c->in_cb = false;
		rpc_msg_destroy(&msg);
	}
	grpc_byte_buffer_destroy(bb);
	return ok;
}

static void rpc_call_deliver(rpc_call_t *c, rpc_cb_t cb)
{
	const rpc_method_t *m = c->reg->m;
	ProtobufCMessage *req = NULL;
	rpc_arena_t *arena = NULL; /* holds req when set */

	if (cb == RPC_CB_REQUEST || cb == RPC_CB_MESSAGE) {
		if (c->recv_buf == NULL) {
			rpc_call_abort(c, GRPC_STATUS_INVALID_ARGUMENT, "missing request message");
			return;
		}
		c->bytes_in += grpc_byte_buffer_length(c->recv_buf);
		if (cb == RPC_CB_MESSAGE && m->on_raw_message != NULL) {
			if (!rpc_call_deliver_raw(c)) {
				rpc_call_abort(c, GRPC_STATUS_INVALID_ARGUMENT,
					       "malformed request message");
				return;
			}
			goto issued;
		}
		arena = rpc_thread_arena();
		if (arena != NULL && c->recv_buf->type == GRPC_BB_RAW &&
		    c->recv_buf->data.raw.compression == GRPC_COMPRESS_NONE) {
			req = rpc_unpack_arena(m->request, c->recv_buf, arena);
		} else {
			arena = NULL;
			req = rpc_unpack(m->request, c->recv_buf);
		}
		grpc_byte_buffer_destroy(c->recv_buf);
		c->recv_buf = NULL;
		if (req == NULL) {
			if (arena != NULL)
				rpc_arena_reset(arena);
			REAP_DEBUG("rpc malformed request", "path=\"%s\" peer=%s", m->path,
				   c->peer ? c->peer : "");
			rpc_call_abort(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed request message");
			return;
		}
	}
	c->in_cb = true;
	c->issued = false;
	switch (cb) {
	case RPC_CB_REQUEST:
		m->on_request(c, c->hstate, req);
		break;
	case RPC_CB_MESSAGE:
		m->on_message(c, c->hstate, req);
		break;
	case RPC_CB_HALF_CLOSE:
		c->half_closed = true;
		m->on_half_close(c, c->hstate);
		break;
	case RPC_CB_SENT:
		if (m->on_sent != NULL)
			m->on_sent(c, c->hstate);
		break;
	case RPC_CB_WAKE:
		if (m->on_wake != NULL)
			m->on_wake(c, c->hstate);
		break;
	default:
		break;
	}
	c->in_cb = false;
	if (arena != NULL)
		rpc_arena_reset(arena); /* frees req */
	else if (req != NULL)
		protobuf_c_message_free_unpacked(req, NULL);
issued:
	if (!c->issued) {
		REAP_ERROR("rpc handler issued no operation", "path=\"%s\" callback=%d", m->path,
			   (int)cb);
		rpc_call_abort(c, GRPC_STATUS_INTERNAL, "handler issued no operation");
	}
}

static void rpc_call_op_done(rpc_call_t *c, bool ok)
{
	rpc_op_kind_t op = c->op;

	c->op = RPC_OP_NONE;
	if (ok && (op == RPC_OP_SEND || op == RPC_OP_FINISH))
		c->bytes_out += c->send_len;
	c->send_len = 0;
	if (c->send_buf != NULL) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
	}
	if (c->st == RPC_CALL_CLOSING)
		return;
	switch (op) {
	case RPC_OP_RECV:
		/* A cancelled call may end its receive "successfully" with no
		 * message: tell that apart from the client's half-close. */
		if (!ok || (c->recv_buf == NULL && grpc_call_failed_before_recv_message(c->call))) {
			rpc_call_fail(c);
			return;
		}
		rpc_call_deliver(c, c->recv_buf != NULL ? RPC_CB_MESSAGE : RPC_CB_HALF_CLOSE);
		return;
	case RPC_OP_SEND:
		if (!ok) {
			rpc_call_fail(c);
			return;
		}
		rpc_call_deliver(c, RPC_CB_SENT);
		return;
	case RPC_OP_FINISH:
		c->finish_ok = ok;
		c->st = RPC_CALL_CLOSING;
		return;
	case RPC_OP_NONE:
	default:
		return;
	}
}

static bool rpc_call_past_deadline(const rpc_call_t *c)
{
	gpr_timespec d = c->deadline;

	if (d.clock_type == GPR_TIMESPAN || gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
		return false;
	return gpr_time_cmp(gpr_now(d.clock_type), d) >= 0;
}

/*
 * Did a call that broke off end by its deadline? The client enforces the
 * deadline too and resets the stream when it passes, which can reach us a
 * moment before our own copy of the deadline (taken when the call arrived)
 * expires: allow for that.
 */
static bool rpc_call_deadline_ended(const rpc_call_t *c)
{
	gpr_timespec d = c->deadline, slack = gpr_time_from_millis(100, GPR_TIMESPAN);

	if (d.clock_type == GPR_TIMESPAN || gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
		return false;
	return gpr_time_cmp(gpr_time_add(gpr_now(d.clock_type), slack), d) >= 0;
}

/* Codes that mean something went wrong for the caller, not a normal miss. */
static bool rpc_code_is_error(grpc_status_code code)
{
	switch (code) {
	case GRPC_STATUS_INVALID_ARGUMENT:
	case GRPC_STATUS_PERMISSION_DENIED:
	case GRPC_STATUS_UNAUTHENTICATED:
	case GRPC_STATUS_RESOURCE_EXHAUSTED:
	case GRPC_STATUS_FAILED_PRECONDITION:
	case GRPC_STATUS_UNIMPLEMENTED:
	case GRPC_STATUS_INTERNAL:
	case GRPC_STATUS_UNKNOWN:
	case GRPC_STATUS_DATA_LOSS:
		return true;
	case GRPC_STATUS_OK:
	case GRPC_STATUS_CANCELLED:
	case GRPC_STATUS_DEADLINE_EXCEEDED:
	case GRPC_STATUS_NOT_FOUND:
	case GRPC_STATUS_ALREADY_EXISTS:
	case GRPC_STATUS_ABORTED:
	case GRPC_STATUS_OUT_OF_RANGE:
	case GRPC_STATUS_UNAVAILABLE:
	case GRPC_STATUS__DO_NOT_USE:
	default:
		return false;
	}
}

/*
 * How the call ended: one log line per call at debug level, and always one
 * for an error status, with the status and the caller's identity; then the
 * server's observer (metrics).
 */
static void rpc_call_observe(rpc_call_t *c)
{
	rpc_server_t *s = c->srv;
	grpc_status_code code = c->code;
	gpr_timespec t;
	double secs;

	if (!c->finish_ok || c->failed)
		code = rpc_call_deadline_ended(c) ? GRPC_STATUS_DEADLINE_EXCEEDED
						  : GRPC_STATUS_CANCELLED;
	t = gpr_time_sub(gpr_now(GPR_CLOCK_MONOTONIC), c->t_start);
	secs = (double)t.tv_sec + (double)t.tv_nsec / 1e9;
	if (rpc_code_is_error(code))
		REAP_INFO("rpc error", "method=%s code=%s peer=%s subject=\"%s\" ms=%.1f",
			  rpc_call_path(c), reap_metrics_grpc_code_name((int)code), rpc_call_peer(c),
			  c->subject[0] ? c->subject : "-", secs * 1e3);
	else
		REAP_DEBUG("rpc", "method=%s code=%s peer=%s subject=\"%s\" ms=%.3f in=%llu out=%llu",
			   rpc_call_path(c), reap_metrics_grpc_code_name((int)code),
			   rpc_call_peer(c), c->subject[0] ? c->subject : "-", secs * 1e3,
			   (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out);
	if (s->observer != NULL)
		s->observer(s->observer_ctx, rpc_call_path(c), (int)code, secs, c->bytes_in,
			    c->bytes_out);
}

void rpc_call_set_subject(rpc_call_t *c, const char *subject)
{
	snprintf(c->subject, sizeof(c->subject), "%s", subject != NULL ? subject : "");
}

/*
 * Free the call once it is over and every tag is back, on_done first; true
 * when it did.
 */
static bool rpc_call_maybe_done(rpc_call_t *c)
{
	const rpc_method_t *m = c->reg->m;

	bool waking;

	if (c->st != RPC_CALL_CLOSING || c->tags != 0)
		return false;
	pthread_mutex_lock(&c->mu);
	waking = c->wake_inflight;
	pthread_mutex_unlock(&c->mu);
	if (waking)
		return false;
	if (c->accepted && m->on_done != NULL) {
		bool ok = c->own_finish && c->finish_ok && !c->failed &&
			  !atomic_load(&c->cancelled);

		m->on_done(c, c->hstate, ok);
	}
	if (c->accepted)
		rpc_call_observe(c);
	rpc_call_release(c);
	return true;
}

/* The client went away: a deferred call hears it through on_wake. */
static void rpc_call_closed_while_deferred(rpc_call_t *c)
{
	bool deliver;

	pthread_mutex_lock(&c->mu);
	deliver = c->deferred;
	c->deferred = false;
	pthread_mutex_unlock(&c->mu);
	if (deliver && c->st == RPC_CALL_ACTIVE)
		rpc_call_deliver(c, RPC_CB_WAKE);
}

static void rpc_call_woken(rpc_call_t *c)
{
	pthread_mutex_lock(&c->mu);
	c->wake_inflight = false;
	pthread_mutex_unlock(&c->mu);
	if (c->st == RPC_CALL_ACTIVE)
		rpc_call_deliver(c, RPC_CB_WAKE);
}

/* One event of c; true when it freed the call. */
static bool rpc_call_event_run(rpc_call_t *c, rpc_tag_t *tag, bool ok)
{
	if (tag->kind == RPC_TAG_WAKE) {
		rpc_call_woken(c);
		return rpc_call_maybe_done(c);
	}
	c->tags--;
	switch (tag->kind) {
	case RPC_TAG_REQUEST:
		rpc_call_accept(c, ok);
		break;
	case RPC_TAG_OP:
		rpc_call_op_done(c, ok);
		break;
	case RPC_TAG_CLOSE:
		if (!ok || c->close_cancelled)
			atomic_store(&c->cancelled, true);
		rpc_call_closed_while_deferred(c);
		break;
	case RPC_TAG_SHUTDOWN:
	default:
		break;
	}
	return rpc_call_maybe_done(c);
}

void rpc_call_event(rpc_tag_t *tag, bool ok)
{
	rpc_call_t *c = tag->call;

	pthread_mutex_lock(&c->mu);
	if (c->ev_busy) {
		/* Bounded: each waiting event is a different tag in flight. */
		c->ev[c->ev_n].tag = tag;
		c->ev[c->ev_n].ok = ok;
		c->ev_n++;
		pthread_mutex_unlock(&c->mu);
		return;
	}
	c->ev_busy = true;
	for (;;) {
		pthread_mutex_unlock(&c->mu);
		/* Freed only with no tag in flight, so nothing was waiting. */
		if (rpc_call_event_run(c, tag, ok))
			return;
		pthread_mutex_lock(&c->mu);
		if (c->ev_n == 0)
			break;
		tag = c->ev[0].tag;
		ok = c->ev[0].ok;
		c->ev_n--;
		memmove(&c->ev[0], &c->ev[1], (size_t)c->ev_n * sizeof(c->ev[0]));
	}
	c->ev_busy = false;
	pthread_mutex_unlock(&c->mu);
}

/* ---- the handler API (rpc.h) ---- */

/* May the running callback issue its operation? Logs programmer errors. */
static bool rpc_call_claim(rpc_call_t *c, const char *what)
{
	if (c->in_cb && !c->issued && c->st == RPC_CALL_ACTIVE) {
		c->issued = true;
		return true;
	}
	REAP_ERROR("rpc operation ignored", "op=%s path=\"%s\" reason=\"%s\"", what,
		   rpc_call_path(c),
		   !c->in_cb ? "outside a callback" : "second operation in one callback");
	return false;
}

void rpc_call_send(rpc_call_t *c, const ProtobufCMessage *msg)
{
	grpc_op ops[2];
	size_t n;

	if (!rpc_call_claim(c, "send"))
		return;
	if (rpc_pack(msg, c->srv->max_send, &c->send_buf) != REAP_OK) {
		REAP_WARN("rpc response too large", "path=\"%s\" limit=%zu", rpc_call_path(c),
			  c->srv->max_send);
		rpc_call_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "response message too large");
		return;
	}
	c->send_len = grpc_byte_buffer_length(c->send_buf);
	memset(ops, 0, sizeof(ops));
	n = rpc_call_initial_md(c, &ops[0]);
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n].data.send_message.send_message = c->send_buf;
	rpc_call_start_ops(c, ops, n + 1, RPC_OP_SEND);
}

size_t rpc_msg_segments(const rpc_msg_t *msg)
{
	return msg->sb != NULL ? msg->sb->count : (msg->len > 0 ? 1 : 0);
}

const uint8_t *rpc_msg_segment(const rpc_msg_t *msg, size_t i, size_t *len)
{
	const grpc_slice *sl = msg->sb != NULL ? &msg->sb->slices[i] : &msg->flat;

	*len = GRPC_SLICE_LENGTH(*sl);
	return GRPC_SLICE_START_PTR(*sl);
}

size_t rpc_msg_length(const rpc_msg_t *msg)
{
	return msg->len;
}

uint8_t *rpc_call_raw_buffer(rpc_call_t *c, size_t cap)
{
	if (c->has_raw)
		grpc_slice_unref(c->raw);
	c->has_raw = false;
	/* Refcounted, never inlined (an inlined slice lives in the struct and
	 * would move when copied): the pointer stays valid until the send. */
	c->raw = grpc_slice_malloc_large(cap > 0 ? cap : 1);
	c->has_raw = true;
	return GRPC_SLICE_START_PTR(c->raw);
}

/*
 * Turn bytes [off, off + len) of the raw buffer into c->send_buf; false
 * (the call is ended) for a programmer error or a message over the limit.
 */
static bool rpc_call_take_raw(rpc_call_t *c, size_t off, size_t len)
{
	grpc_slice sub;

	if (!c->has_raw || off > GRPC_SLICE_LENGTH(c->raw) ||
	    len > GRPC_SLICE_LENGTH(c->raw) - off) {
		REAP_ERROR("rpc raw send outside its buffer", "path=\"%s\"", rpc_call_path(c));
		rpc_call_abort(c, GRPC_STATUS_INTERNAL, "handler sent a bad raw message");
		return false;
	}
	if (c->srv->max_send != 0 && len > c->srv->max_send) {
		REAP_WARN("rpc response too large", "path=\"%s\" limit=%zu", rpc_call_path(c),
			  c->srv->max_send);
		rpc_call_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "response message too large");
		return false;
	}
	sub = grpc_slice_sub(c->raw, off, off + len);
	grpc_slice_unref(c->raw);
	c->has_raw = false;
	c->send_buf = grpc_raw_byte_buffer_create(&sub, 1);
	grpc_slice_unref(sub);
	return true;
}

void rpc_call_send_raw(rpc_call_t *c, size_t off, size_t len)
{
	grpc_op ops[2];
	size_t n;

	if (!rpc_call_claim(c, "send"))
		return;
	if (!rpc_call_take_raw(c, off, len))
		return;
	c->send_len = len;
	memset(ops, 0, sizeof(ops));
	n = rpc_call_initial_md(c, &ops[0]);
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n].data.send_message.send_message = c->send_buf;
	rpc_call_start_ops(c, ops, n + 1, RPC_OP_SEND);
}

void rpc_call_finish_raw(rpc_call_t *c, size_t off, size_t len)
{
	if (!rpc_call_claim(c, "finish"))
		return;
	if (!rpc_call_take_raw(c, off, len))
		return;
	c->own_finish = true;
	rpc_call_finish_code(c, NULL, GRPC_STATUS_OK, rpc_status_msg_slice(REAP_OK, NULL), NULL);
}

void rpc_call_defer(rpc_call_t *c)
{
	if (!rpc_call_claim(c, "defer"))
		return;
	pthread_mutex_lock(&c->mu);
	c->deferred = true;
	pthread_mutex_unlock(&c->mu);
}

void rpc_call_wake(rpc_call_t *c)
{
	pthread_mutex_lock(&c->mu);
	if (c->deferred) {
		c->deferred = false;
		c->wake_inflight = true;
		if (grpc_call_start_batch(c->call, NULL, 0, &c->t_wake, NULL) != GRPC_CALL_OK) {
			/* Cannot happen for an empty batch on a live call; the
			 * close path still delivers on_wake when the call ends. */
			c->wake_inflight = false;
			c->deferred = true;
			REAP_ERROR("rpc wake rejected", "path=\"%s\"", rpc_call_path(c));
		}
	}
	pthread_mutex_unlock(&c->mu);
}

void rpc_call_recv(rpc_call_t *c)
{
	if (!rpc_call_claim(c, "recv"))
		return;
	if (c->half_closed) {
		REAP_ERROR("rpc receive after half-close", "path=\"%s\"", rpc_call_path(c));
		rpc_call_abort(c, GRPC_STATUS_INTERNAL, "handler read past the end of the stream");
		return;
	}
	rpc_call_start_recv(c);
}

void rpc_call_finish(rpc_call_t *c, const ProtobufCMessage *resp, int err, const char *msg)
{
	if (!rpc_call_claim(c, "finish"))
		return;
	c->own_finish = true;
	rpc_call_finish_code(c, err == REAP_OK ? resp : NULL, rpc_code_from_err(err),
			     rpc_status_msg_slice(err, msg), NULL);
}

void rpc_call_finish_detail(rpc_call_t *c, int err, const char *msg, const ProtobufCMessage *detail)
{
	grpc_status_code code = rpc_code_from_err(err);
	const char *text = msg != NULL ? msg : reap_strerror(err);
	grpc_slice details;
	int e = REAP_E_INVALID;

	if (!rpc_call_claim(c, "finish_detail"))
		return;
	c->own_finish = true;
	if (detail != NULL)
		e = rpc_status_pack_details(code, text, detail, &details);
	if (detail != NULL && e != REAP_OK)
		REAP_WARN("rpc error details dropped", "path=\"%s\" reason=\"%s\"", rpc_call_path(c),
			  reap_strerror(e));
	rpc_call_finish_code(c, NULL, code, rpc_status_msg_slice(err, text),
			     e == REAP_OK ? &details : NULL);
}

void *rpc_call_ctx(const rpc_call_t *c)
{
	return c->reg->m->ctx;
}

const char *rpc_call_peer(const rpc_call_t *c)
{
	return c->peer != NULL ? c->peer : "";
}

const char *rpc_call_method(const rpc_call_t *c)
{
	return c->reg->m->path;
}

const char *rpc_call_peer_cert_subject(rpc_call_t *c)
{
	if (!c->cert_checked) {
		c->cert_subject = rpc_tls_peer_subject(c->call);
		c->cert_checked = true;
	}
	return c->cert_subject;
}

const char *rpc_call_metadata(const rpc_call_t *c, const char *key, size_t *len)
{
	for (size_t i = 0; i < c->md.count; i++) {
		const grpc_metadata *md = &c->md.metadata[i];

		if (grpc_slice_str_cmp(md->key, key) == 0) {
			if (len != NULL)
				*len = GRPC_SLICE_LENGTH(md->value);
			return (const char *)GRPC_SLICE_START_PTR(md->value);
		}
	}
	if (len != NULL)
		*len = 0;
	return NULL;
}

bool rpc_call_cancelled(const rpc_call_t *c)
{
	return atomic_load(&c->cancelled) || rpc_call_past_deadline(c);
}

/* Lives here, next to its only reader; the field is in rpc_int.h. */
void rpc_server_set_observer(rpc_server_t *s, rpc_observer_fn fn, void *ctx)
{
	bool ok;

	pthread_mutex_lock(&s->mu);
	ok = s->state == RPC_SRV_NEW;
	if (ok) {
		s->observer = fn;
		s->observer_ctx = ctx;
	}
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		REAP_ERROR("rpc observer ignored", "reason=\"server already started\"");
}
