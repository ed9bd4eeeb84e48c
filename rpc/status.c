/*
 * status.c - the one place where reap error codes meet gRPC status codes.
 *
 * rpc_code_from_err / rpc_err_from_code translate between common/err.h and
 * grpc_status_code. The rest turns statuses into wire form and back: the
 * status message (defaulted and bounded), google.rpc.Status packed for the
 * grpc-status-details-bin trailer on the server, and rpc_status_t filled
 * from a finished client call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/slice.h>
#include <grpc/status.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "rpc/rpc_int.h"

#define RPC_TYPE_URL_PREFIX "type.googleapis.com/"

int rpc_code_from_err(int err)
{
	switch (err) {
	case REAP_OK: return GRPC_STATUS_OK;
	case REAP_E_INVALID: return GRPC_STATUS_INVALID_ARGUMENT;
	case REAP_E_NOT_FOUND: return GRPC_STATUS_NOT_FOUND;
	case REAP_E_EXISTS: return GRPC_STATUS_ALREADY_EXISTS;
	case REAP_E_PERM: return GRPC_STATUS_PERMISSION_DENIED;
	case REAP_E_NOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case REAP_E_EXHAUSTED: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case REAP_E_IO: return GRPC_STATUS_INTERNAL;
	case REAP_E_INTERNAL: return GRPC_STATUS_INTERNAL;
	case REAP_E_PRECONDITION: return GRPC_STATUS_FAILED_PRECONDITION;
	case REAP_E_RANGE: return GRPC_STATUS_OUT_OF_RANGE;
	case REAP_E_ABORTED: return GRPC_STATUS_ABORTED;
	case REAP_E_UNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
	case REAP_E_CANCELLED: return GRPC_STATUS_CANCELLED;
	case REAP_E_UNIMPLEMENTED: return GRPC_STATUS_UNIMPLEMENTED;
	case REAP_E_DATA_LOSS: return GRPC_STATUS_DATA_LOSS;
	case REAP_E_DEADLINE: return GRPC_STATUS_DEADLINE_EXCEEDED;
	case REAP_E_UNAUTHENTICATED: return GRPC_STATUS_UNAUTHENTICATED;
	default: return GRPC_STATUS_UNKNOWN;
	}
}

int rpc_err_from_code(int code)
{
	switch (code) {
	case GRPC_STATUS_OK: return REAP_OK;
	case GRPC_STATUS_CANCELLED: return REAP_E_CANCELLED;
	case GRPC_STATUS_INVALID_ARGUMENT: return REAP_E_INVALID;
	case GRPC_STATUS_DEADLINE_EXCEEDED: return REAP_E_DEADLINE;
	case GRPC_STATUS_NOT_FOUND: return REAP_E_NOT_FOUND;
	case GRPC_STATUS_ALREADY_EXISTS: return REAP_E_EXISTS;
	case GRPC_STATUS_PERMISSION_DENIED: return REAP_E_PERM;
	case GRPC_STATUS_RESOURCE_EXHAUSTED: return REAP_E_EXHAUSTED;
	case GRPC_STATUS_FAILED_PRECONDITION: return REAP_E_PRECONDITION;
	case GRPC_STATUS_ABORTED: return REAP_E_ABORTED;
	case GRPC_STATUS_OUT_OF_RANGE: return REAP_E_RANGE;
	case GRPC_STATUS_UNIMPLEMENTED: return REAP_E_UNIMPLEMENTED;
	case GRPC_STATUS_UNAVAILABLE: return REAP_E_UNAVAILABLE;
	case GRPC_STATUS_DATA_LOSS: return REAP_E_DATA_LOSS;
	case GRPC_STATUS_UNAUTHENTICATED: return REAP_E_UNAUTHENTICATED;
	case GRPC_STATUS_INTERNAL: return REAP_E_INTERNAL;
	default: return REAP_E_INTERNAL; /* UNKNOWN and anything out of range */
	}
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t rpc_utf8_cut(const char *s, size_t max)
{
	size_t len = strlen(s);

	if (len <= max)
		return len;
	len = max;
	while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
		len--;
	return len;
}

grpc_slice rpc_status_msg_slice(int err, const char *msg)
{
	if (msg == NULL)
		msg = err == REAP_OK ? "" : reap_strerror(err);
	return grpc_slice_from_copied_buffer(msg, rpc_utf8_cut(msg, RPC_MAX_STATUS_MSG));
}

int rpc_status_pack_details(int code, const char *msg, const ProtobufCMessage *detail,
			    grpc_slice *out)
{
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
	Google__Protobuf__Any *anys[1] = {&any};
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	char *url = NULL;
	uint8_t *value = NULL;
	size_t vlen, slen, ulen;
	int err = REAP_OK;

	*out = grpc_empty_slice();
	vlen = protobuf_c_message_get_packed_size(detail);
	if (vlen > RPC_MAX_DETAILS_BYTES) {
		err = REAP_E_EXHAUSTED;
		goto out;
	}
	ulen = strlen(detail->descriptor->name);
	url = malloc(sizeof(RPC_TYPE_URL_PREFIX) + ulen);
	value = malloc(vlen ? vlen : 1);
	if (url == NULL || value == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	memcpy(url, RPC_TYPE_URL_PREFIX, sizeof(RPC_TYPE_URL_PREFIX) - 1);
	memcpy(url + sizeof(RPC_TYPE_URL_PREFIX) - 1, detail->descriptor->name, ulen + 1);
	protobuf_c_message_pack(detail, value);

	any.type_url = url;
	any.value.data = value;
	any.value.len = vlen;
	st.code = code;
	st.message = (char *)(msg != NULL ? msg : "");
	st.n_details = 1;
	st.details = anys;
	slen = google__rpc__status__get_packed_size(&st);
	if (slen > RPC_MAX_DETAILS_BYTES) {
		err = REAP_E_EXHAUSTED;
		goto out;
	}
	*out = grpc_slice_malloc(slen);
	google__rpc__status__pack(&st, GRPC_SLICE_START_PTR(*out));
out:
	free(url);
	free(value);
	return err;
}

void rpc_status_init(rpc_status_t *st, int code, const char *msg)
{
	st->code = code;
	snprintf(st->msg, sizeof(st->msg), "%s", msg != NULL ? msg : "");
	st->details = NULL;
	st->details_len = 0;
}

int rpc_status_fill(rpc_status_t *st, grpc_status_code code, grpc_slice details,
		    const grpc_metadata_array *trailing)
{
	size_t n = GRPC_SLICE_LENGTH(details);

	if (n >= sizeof(st->msg))
		n = sizeof(st->msg) - 1;
	st->code = code;
	memcpy(st->msg, GRPC_SLICE_START_PTR(details), n);
	st->msg[n] = '\0';
	st->details = NULL;
	st->details_len = 0;
	for (size_t i = 0; trailing != NULL && i < trailing->count; i++) {
		const grpc_metadata *md = &trailing->metadata[i];
		size_t len = GRPC_SLICE_LENGTH(md->value);

		if (grpc_slice_str_cmp(md->key, RPC_DETAILS_KEY) != 0)
			continue;
		st->details = malloc(len ? len : 1);
		if (st->details == NULL)
			return REAP_E_NOMEM;
		memcpy(st->details, GRPC_SLICE_START_PTR(md->value), len);
		st->details_len = len;
		break;
	}
	return REAP_OK;
}

void rpc_status_destroy(rpc_status_t *st)
{
	if (st == NULL)
		return;
	free(st->details);
	st->details = NULL;
	st->details_len = 0;
}
