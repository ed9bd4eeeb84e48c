/*
 * codec.c - protobuf-c messages to and from gRPC byte buffers.
 *
 * Packing writes straight into one refcounted slice that the byte buffer
 * then owns, so a message is serialized once and never copied. Unpacking
 * reads a single uncompressed slice in place (the common case: gRPC hands
 * over each received message as one slice unless it was large) and only
 * falls back to the byte-buffer reader, which flattens into a fresh slice,
 * for multi-slice or compressed buffers. Size limits are enforced by gRPC on
 * receive (max_receive_message_length) before a byte reaches us.
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "rpc/rpc_int.h"

int rpc_pack(const ProtobufCMessage *msg, size_t max, grpc_byte_buffer **out)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	grpc_slice slice;

	*out = NULL;
	if (max != 0 && len > max)
		return REAP_E_EXHAUSTED;
	slice = grpc_slice_malloc(len);
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
	*out = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	return REAP_OK;
}

grpc_byte_buffer *rpc_pack_raw(const void *data, size_t len)
{
	grpc_slice slice = grpc_slice_from_copied_buffer(data, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);

	grpc_slice_unref(slice);
	return bb;
}

ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb)
{
	grpc_byte_buffer_reader reader;
	grpc_slice flat;
	ProtobufCMessage *msg;

	if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE) {
		const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;

		if (sb->count == 0)
			return protobuf_c_message_unpack(desc, NULL, 0, (const uint8_t *)"");
		if (sb->count == 1)
			return protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(sb->slices[0]),
							 GRPC_SLICE_START_PTR(sb->slices[0]));
	}
	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return NULL; /* could not decompress */
	flat = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(flat), GRPC_SLICE_START_PTR(flat));
	grpc_slice_unref(flat);
	return msg;
}
