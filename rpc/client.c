/*
 * client.c - blocking gRPC client: channels and unary calls.
 *
 * A channel is a grpc_channel (insecure, or TLS with credentials from
 * tls.c) plus the headers to send with every call (e.g. "authorization").
 * The headers are guarded by a mutex that is held across the
 * grpc_call_start_batch that sends them: gRPC takes its own references to
 * the slices during that call, so a header may be replaced while other
 * threads are making calls.
 *
 * Every call gets its own pluck completion queue and waits on its own tags,
 * which keeps calls on different threads independent and needs no extra
 * thread. Streams live in stream.c and share the helpers at the bottom.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "common/log.h"
#include "rpc/rpc_int.h"
#include "rpc/tls_int.h"

struct rpc_channel {
	grpc_channel *ch;
	size_t max_msg;
	pthread_mutex_t mu; /* guards hdrs, calls and cancelled */
	grpc_metadata *hdrs;
	size_t nhdrs;
	grpc_call **calls;  /* calls in flight, for rpc_channel_cancel_all */
	size_t ncalls, cap_calls;
	bool cancelled;     /* rpc_channel_cancel_all ran: no new calls */
};

/*
 * A channel to target with creds (borrowed); name_override (may be NULL) is
 * the TLS name to verify. The caller holds a gRPC reference, which the
 * channel takes over (rpc_channel_free drops it); on failure it is dropped.
 */
static rpc_channel_t *rpc_channel_create(const char *target, size_t max_msg_bytes,
					 grpc_channel_credentials *creds, const char *name_override)
{
	rpc_channel_t *ch;
	grpc_arg args[3];
	grpc_channel_args cargs = {.num_args = 2, .args = args};

	ch = calloc(1, sizeof(*ch));
	if (ch == NULL) {
		rpc_grpc_unref();
		return NULL;
	}
	ch->max_msg = max_msg_bytes ? max_msg_bytes : RPC_DEFAULT_CLIENT_MAX;
	if (ch->max_msg > INT_MAX)
		ch->max_msg = INT_MAX;
	pthread_mutex_init(&ch->mu, NULL);
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = (int)ch->max_msg;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[1].value.integer = (int)ch->max_msg;
	if (name_override != NULL) {
		args[2].type = GRPC_ARG_STRING;
		args[2].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		args[2].value.string = (char *)name_override;
		cargs.num_args = 3;
	}
	ch->ch = grpc_channel_create(target, creds, &cargs);
	return ch;
}

rpc_channel_t *rpc_channel_new(const char *target, size_t max_msg_bytes)
{
	rpc_channel_t *ch;
	grpc_channel_credentials *creds;

	if (target == NULL || target[0] == '\0')
		return NULL;
	rpc_grpc_ref();
	creds = grpc_insecure_credentials_create();
	ch = rpc_channel_create(target, max_msg_bytes, creds, NULL);
	grpc_channel_credentials_release(creds);
	return ch;
}

rpc_channel_t *rpc_channel_new_tls(const char *target, size_t max_msg_bytes,
				   const rpc_tls_client_t *tls)
{
	static const rpc_tls_client_t defaults = {.ca_file = NULL};
	rpc_channel_t *ch;
	grpc_channel_credentials *creds;
	reap_errbuf_t eb = {{0}};
	int err;

	if (target == NULL || target[0] == '\0')
		return NULL;
	if (tls == NULL)
		tls = &defaults;
	rpc_grpc_ref();
	err = rpc_tls_channel_creds(tls, &creds, &eb);
	if (err != REAP_OK) {
		REAP_ERROR("rpc tls channel not created", "target=%s error=\"%s\"", target,
			   reap_errmsg(&eb, err));
		rpc_grpc_unref();
		return NULL;
	}
	ch = rpc_channel_create(target, max_msg_bytes, creds, tls->server_name_override);
	grpc_channel_credentials_release(creds);
	return ch;
}

void rpc_channel_free(rpc_channel_t *ch)
{
	if (ch == NULL)
		return;
	grpc_channel_destroy(ch->ch);
	for (size_t i = 0; i < ch->nhdrs; i++) {
		grpc_slice_unref(ch->hdrs[i].key);
		grpc_slice_unref(ch->hdrs[i].value);
	}
	free(ch->hdrs);
	free(ch->calls);
	pthread_mutex_destroy(&ch->mu);
	free(ch);
	rpc_grpc_unref();
}

int rpc_channel_set_header(rpc_channel_t *ch, const char *key, const char *value)
{
	grpc_slice k = grpc_slice_from_copied_string(key);
	grpc_slice v = grpc_slice_from_copied_string(value);
	grpc_metadata *hdrs;
	int err = REAP_OK;

	/* gRPC would refuse the whole call later; refuse the header now. */
	if (!grpc_header_key_is_legal(k) ||
	    (!grpc_is_binary_header(k) && !grpc_header_nonbin_value_is_legal(v))) {
		err = REAP_E_INVALID;
		goto out;
	}
	pthread_mutex_lock(&ch->mu);
	for (size_t i = 0; i < ch->nhdrs; i++) {
		if (grpc_slice_eq(ch->hdrs[i].key, k)) {
			grpc_slice_unref(ch->hdrs[i].value);
			ch->hdrs[i].value = v;
			v = grpc_empty_slice();
			pthread_mutex_unlock(&ch->mu);
			goto out;
		}
	}
	hdrs = realloc(ch->hdrs, (ch->nhdrs + 1) * sizeof(*hdrs));
	if (hdrs == NULL) {
		pthread_mutex_unlock(&ch->mu);
		err = REAP_E_NOMEM;
		goto out;
	}
	ch->hdrs = hdrs;
	memset(&hdrs[ch->nhdrs], 0, sizeof(*hdrs));
	hdrs[ch->nhdrs].key = k;
	hdrs[ch->nhdrs].value = v;
	ch->nhdrs++;
	k = v = grpc_empty_slice();
	pthread_mutex_unlock(&ch->mu);
out:
	grpc_slice_unref(k);
	grpc_slice_unref(v);
	return err;
}

size_t rpc_channel_max_msg(const rpc_channel_t *ch)
{
	return ch->max_msg;
}

int rpc_client_call_new(rpc_channel_t *ch, const char *method, int timeout_ms,
			grpc_completion_queue **cq, grpc_call **call)
{
	gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
	int err = REAP_OK;

	*cq = NULL;
	*call = NULL;
	if (method == NULL || method[0] != '/')
		return REAP_E_INVALID;
	if (timeout_ms > 0)
		deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
	*cq = grpc_completion_queue_create_for_pluck(NULL);
	*call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, *cq,
					 grpc_slice_from_static_string(method), NULL, deadline,
					 NULL);
	if (*call == NULL) {
		rpc_client_call_free(ch, *cq, NULL);
		*cq = NULL;
		return REAP_E_INTERNAL;
	}
	pthread_mutex_lock(&ch->mu);
	if (ch->cancelled) {
		err = REAP_E_CANCELLED;
	} else if (ch->ncalls == ch->cap_calls) {
		size_t ncap = ch->cap_calls ? ch->cap_calls * 2 : 8;
		grpc_call **nc = realloc(ch->calls, ncap * sizeof(*nc));
		if (nc == NULL) {
			err = REAP_E_NOMEM;
		} else {
			ch->calls = nc;
			ch->cap_calls = ncap;
		}
	}
	if (err == REAP_OK)
		ch->calls[ch->ncalls++] = *call;
	pthread_mutex_unlock(&ch->mu);
	if (err != REAP_OK) {
		grpc_call_unref(*call);
		rpc_client_call_free(ch, *cq, NULL);
		*cq = NULL;
		*call = NULL;
	}
	return err;
}

void rpc_channel_cancel_all(rpc_channel_t *ch)
{
	pthread_mutex_lock(&ch->mu);
	ch->cancelled = true;
	for (size_t i = 0; i < ch->ncalls; i++)
		grpc_call_cancel(ch->calls[i], NULL);
	pthread_mutex_unlock(&ch->mu);
}

grpc_call_error rpc_client_start_with_headers(rpc_channel_t *ch, grpc_call *call, grpc_op *ops,
					      size_t nops, void *tag)
{
	grpc_call_error e;

	pthread_mutex_lock(&ch->mu);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = ch->nhdrs;
	ops[0].data.send_initial_metadata.metadata = ch->hdrs;
	e = grpc_call_start_batch(call, ops, nops, tag, NULL);
	pthread_mutex_unlock(&ch->mu);
	return e;
}

bool rpc_client_wait(grpc_completion_queue *cq, void *tag)
{
	grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

void rpc_client_call_free(rpc_channel_t *ch, grpc_completion_queue *cq, grpc_call *call)
{
	if (call != NULL) {
		pthread_mutex_lock(&ch->mu);
		for (size_t i = 0; i < ch->ncalls; i++) {
			if (ch->calls[i] == call) {
				ch->calls[i] = ch->calls[--ch->ncalls];
				break;
			}
		}
		pthread_mutex_unlock(&ch->mu);
		grpc_call_unref(call);
	}
	if (cq == NULL)
		return;
	grpc_completion_queue_shutdown(cq);
	for (;;) {
		grpc_event ev = grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME),
							    NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
	}
	grpc_completion_queue_destroy(cq);
}

int rpc_unary(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
	      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
	      rpc_status_t *st, int timeout_ms)
{
	grpc_completion_queue *cq = NULL;
	grpc_call *call = NULL;
	grpc_byte_buffer *send = NULL, *recv = NULL;
	grpc_metadata_array init_md, trailing;
	grpc_status_code code = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_op ops[6];
	int tag, err;

	if (resp != NULL)
		*resp = NULL;
	rpc_status_init(st, GRPC_STATUS_UNKNOWN, "");
	grpc_metadata_array_init(&init_md);
	grpc_metadata_array_init(&trailing);
	err = rpc_pack(req, ch->max_msg, &send);
	if (err != REAP_OK)
		goto out;
	err = rpc_client_call_new(ch, method, timeout_ms, &cq, &call);
	if (err != REAP_OK)
		goto out;
	memset(ops, 0, sizeof(ops));
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
	ops[5].data.recv_status_on_client.status = &code;
	ops[5].data.recv_status_on_client.status_details = &details;
	if (rpc_client_start_with_headers(ch, call, ops, 6, &tag) != GRPC_CALL_OK) {
		err = REAP_E_INTERNAL;
		goto out;
	}
	if (!rpc_client_wait(cq, &tag)) {
		err = REAP_E_INTERNAL;
		goto out;
	}
	err = rpc_status_fill(st, code, details, &trailing);
	if (err != REAP_OK || code != GRPC_STATUS_OK || resp == NULL)
		goto out;
	if (recv == NULL || (*resp = rpc_unpack(resp_desc, recv)) == NULL) {
		rpc_status_destroy(st);
		rpc_status_init(st, GRPC_STATUS_INTERNAL,
				recv == NULL ? "missing response message" : "malformed response message");
	}
out:
	if (err != REAP_OK)
		rpc_status_init(st, rpc_code_from_err(err), reap_strerror(err));
	if (send != NULL)
		grpc_byte_buffer_destroy(send);
	if (recv != NULL)
		grpc_byte_buffer_destroy(recv);
	grpc_slice_unref(details);
	grpc_metadata_array_destroy(&init_md);
	grpc_metadata_array_destroy(&trailing);
	rpc_client_call_free(ch, cq, call);
	return err;
}
