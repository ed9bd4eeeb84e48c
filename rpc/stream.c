/*
 * stream.c - blocking client streams (client, server or bidirectional).
 *
 * rpc_stream_open starts one batch that sends the channel headers and asks
 * for the server's initial metadata and final status; it stays in flight for
 * the life of the stream and is collected by finish or cancel. Every other
 * operation is one batch with its own tag, waited for on the stream's pluck
 * queue, so a sender thread and a receiver thread may share a stream.
 *
 * A server may end a call before the client is done sending (ByteStream
 * Write answering early). rpc_stream_send first peeks, without blocking,
 * whether the status has already arrived, and a send that gRPC fails is
 * reported the same way: REAP_E_UNAVAILABLE, after which rpc_stream_finish
 * gives the server's status.
 */
#include <stdlib.h>
#include <string.h>

#include <grpc/support/time.h>

#include "rpc/rpc_int.h"

struct rpc_stream {
	rpc_channel_t *ch;
	grpc_completion_queue *cq;
	grpc_call *call;
	grpc_metadata_array init_md;
	grpc_metadata_array trailing;
	grpc_status_code code;
	grpc_slice details;
	bool final_done;  /* the open batch (status) was collected */
	bool closed_send; /* half-closed */
	bool recv_done;   /* end of the server's messages */
	/* tags: only their addresses matter */
	char t_final, t_send, t_recv, t_close;
};

static void rpc_stream_free(rpc_stream_t *s)
{
	grpc_metadata_array_destroy(&s->init_md);
	grpc_metadata_array_destroy(&s->trailing);
	grpc_slice_unref(s->details);
	rpc_client_call_free(s->ch, s->cq, s->call);
	free(s);
}

rpc_stream_t *rpc_stream_open(rpc_channel_t *ch, const char *method, int timeout_ms)
{
	rpc_stream_t *s = calloc(1, sizeof(*s));
	grpc_op ops[3];

	if (s == NULL)
		return NULL;
	s->ch = ch;
	s->code = GRPC_STATUS_UNKNOWN;
	s->details = grpc_empty_slice();
	grpc_metadata_array_init(&s->init_md);
	grpc_metadata_array_init(&s->trailing);
	if (rpc_client_call_new(ch, method, timeout_ms, &s->cq, &s->call) != REAP_OK)
		goto fail;
	memset(ops, 0, sizeof(ops));
	ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
	ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[2].data.recv_status_on_client.trailing_metadata = &s->trailing;
	ops[2].data.recv_status_on_client.status = &s->code;
	ops[2].data.recv_status_on_client.status_details = &s->details;
	if (rpc_client_start_with_headers(ch, s->call, ops, 3, &s->t_final) != GRPC_CALL_OK)
		goto fail;
	return s;
fail:
	s->final_done = true; /* nothing in flight */
	rpc_stream_free(s);
	return NULL;
}

/* Has the server's status arrived? Never blocks. */
static bool rpc_stream_over(rpc_stream_t *s)
{
	if (!s->final_done) {
		grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->t_final,
							    gpr_inf_past(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_OP_COMPLETE)
			s->final_done = true;
	}
	return s->final_done;
}

/* Run one single-op batch and wait for it. */
static bool rpc_stream_op(rpc_stream_t *s, const grpc_op *op, void *tag)
{
	if (grpc_call_start_batch(s->call, op, 1, tag, NULL) != GRPC_CALL_OK)
		return false;
	return rpc_client_wait(s->cq, tag);
}

/* Send bb (takes ownership). */
static int rpc_stream_send_bb(rpc_stream_t *s, grpc_byte_buffer *bb)
{
	grpc_op op;
	int err = REAP_OK;

	if (s->closed_send) {
		err = REAP_E_PRECONDITION;
		goto out;
	}
	if (rpc_stream_over(s)) {
		err = REAP_E_UNAVAILABLE;
		goto out;
	}
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	if (!rpc_stream_op(s, &op, &s->t_send))
		err = REAP_E_UNAVAILABLE;
out:
	grpc_byte_buffer_destroy(bb);
	return err;
}

int rpc_stream_send(rpc_stream_t *s, const ProtobufCMessage *msg)
{
	grpc_byte_buffer *bb;
	int err = rpc_pack(msg, rpc_channel_max_msg(s->ch), &bb);

	if (err != REAP_OK)
		return err;
	return rpc_stream_send_bb(s, bb);
}

int rpc_stream_send_raw(rpc_stream_t *s, const void *data, size_t len)
{
	return rpc_stream_send_bb(s, rpc_pack_raw(data, len));
}

int rpc_stream_close_send(rpc_stream_t *s)
{
	grpc_op op;

	if (s->closed_send)
		return REAP_OK;
	s->closed_send = true;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	return rpc_stream_op(s, &op, &s->t_close) ? REAP_OK : REAP_E_UNAVAILABLE;
}

/* Receive one raw message into *bb (NULL at end of stream). */
static int rpc_stream_recv_bb(rpc_stream_t *s, grpc_byte_buffer **bb)
{
	grpc_op op;

	*bb = NULL;
	if (s->recv_done)
		return REAP_OK;
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = bb;
	if (!rpc_stream_op(s, &op, &s->t_recv)) {
		s->recv_done = true;
		if (*bb != NULL)
			grpc_byte_buffer_destroy(*bb);
		*bb = NULL;
		return REAP_E_UNAVAILABLE;
	}
	if (*bb == NULL)
		s->recv_done = true;
	return REAP_OK;
}

int rpc_stream_recv(rpc_stream_t *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg)
{
	grpc_byte_buffer *bb;
	int err;

	*msg = NULL;
	err = rpc_stream_recv_bb(s, &bb);
	if (err != REAP_OK || bb == NULL)
		return err;
	*msg = rpc_unpack(desc, bb);
	grpc_byte_buffer_destroy(bb);
	return *msg != NULL ? 1 : REAP_E_INVALID;
}

int rpc_stream_finish(rpc_stream_t *s, rpc_status_t *st)
{
	grpc_byte_buffer *bb;
	int err;

	rpc_status_init(st, GRPC_STATUS_UNKNOWN, "");
	if (s == NULL)
		return REAP_E_INVALID;
	rpc_stream_close_send(s);
	/* Messages the caller did not read would hold the status back. */
	while (!s->recv_done) {
		if (rpc_stream_recv_bb(s, &bb) != REAP_OK)
			break;
		if (bb != NULL)
			grpc_byte_buffer_destroy(bb);
	}
	if (!s->final_done) {
		rpc_client_wait(s->cq, &s->t_final);
		s->final_done = true;
	}
	err = rpc_status_fill(st, s->code, s->details, &s->trailing);
	rpc_stream_free(s);
	return err;
}

void rpc_stream_cancel(rpc_stream_t *s)
{
	if (s == NULL)
		return;
	grpc_call_cancel(s->call, NULL);
	if (!s->final_done) {
		rpc_client_wait(s->cq, &s->t_final);
		s->final_done = true;
	}
	rpc_stream_free(s);
}
