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
 *
 * Server threads decode requests into an arena instead (rpc_unpack_arena):
 * a large request (a BatchUpdateBlobs of thousands of blobs) arrives in
 * many slices, and flattening it into a fresh multi-megabyte slice, then
 * letting protobuf-c malloc every blob's bytes and free them again, cost
 * more than the store spent on the blobs, mostly in page faults on memory
 * just returned to the kernel. The arena keeps one warm chunk per thread
 * (at most ARENA_KEEP bytes) that both the flattened copy and the decoded
 * message are carved from; freeing is one reset after the handler returns.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "rpc/rpc_int.h"

/*
 * Under AddressSanitizer the kept chunk is poisoned at every reset and
 * unpoisoned piece by piece as it is handed out, so a handler that keeps a
 * pointer into its request past its return is still caught.
 */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define ARENA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ARENA_ALIGN 16
#define ARENA_KEEP ((size_t)16 << 20) /* largest chunk a thread keeps between messages */
#define ARENA_MIN ((size_t)64 << 10)  /* smallest chunk */

/* An extra chunk taken when the kept one ran out; freed at reset. */
typedef struct arena_chunk {
	struct arena_chunk *next;
	size_t cap, used;
	_Alignas(ARENA_ALIGN) uint8_t data[];
} arena_chunk_t;

struct rpc_arena {
	uint8_t *buf; /* the kept chunk */
	size_t cap, used;
	arena_chunk_t *more; /* this message's extra chunks, newest first */
	size_t need;         /* bytes this message asked for in all */
	bool busy;           /* holds a message (not reentrant) */
};

static _Thread_local rpc_arena_t *thread_arena;

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

rpc_arena_t *rpc_arena_new(void)
{
	return calloc(1, sizeof(rpc_arena_t));
}

void rpc_arena_free(rpc_arena_t *a)
{
	if (a == NULL)
		return;
	rpc_arena_reset(a);
	ARENA_UNPOISON(a->buf, a->cap);
	free(a->buf);
	free(a);
}

static void *arena_alloc(void *ad, size_t n)
{
	rpc_arena_t *a = ad;
	arena_chunk_t *c = a->more;
	size_t cap;

	if (n > SIZE_MAX - 2 * ARENA_ALIGN - a->need)
		return NULL;
	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	a->need += n;
	if (a->cap - a->used >= n) {
		a->used += n;
		ARENA_UNPOISON(a->buf + a->used - n, n);
		return a->buf + a->used - n;
	}
	if (c != NULL && c->cap - c->used >= n) {
		c->used += n;
		return c->data + c->used - n;
	}
	/* Grow geometrically so a large message takes few chunks the first time. */
	cap = a->need > ARENA_MIN ? a->need : ARENA_MIN;
	if (cap < n)
		cap = n;
	c = malloc(sizeof(*c) + cap);
	if (c == NULL)
		return NULL;
	c->cap = cap;
	c->used = n;
	c->next = a->more;
	a->more = c;
	return c->data;
}

static void arena_free(void *ad, void *p)
{
	(void)ad; /* everything goes at once, in rpc_arena_reset */
	(void)p;
}

void rpc_arena_reset(rpc_arena_t *a)
{
	size_t want = a->need < ARENA_KEEP ? a->need : ARENA_KEEP;

	while (a->more != NULL) {
		arena_chunk_t *c = a->more;
		a->more = c->next;
		free(c);
	}
	/* Next time the whole message fits in the kept chunk. */
	if (want > a->cap) {
		ARENA_UNPOISON(a->buf, a->cap);
		free(a->buf);
		a->cap = (want + ARENA_MIN - 1) & ~(ARENA_MIN - 1);
		a->buf = malloc(a->cap);
		if (a->buf == NULL)
			a->cap = 0;
	}
	ARENA_POISON(a->buf, a->cap);
	a->used = 0;
	a->need = 0;
	a->busy = false;
}

ProtobufCMessage *rpc_unpack_arena(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb,
				   rpc_arena_t *a)
{
	ProtobufCAllocator al = {.alloc = arena_alloc, .free = arena_free, .allocator_data = a};
	const grpc_slice_buffer *sb;
	ProtobufCMessage *msg;
	uint8_t *flat, *p;

	if (bb->type != GRPC_BB_RAW || bb->data.raw.compression != GRPC_COMPRESS_NONE)
		return NULL; /* the caller uses rpc_unpack */
	a->busy = true;
	sb = &bb->data.raw.slice_buffer;
	if (sb->count == 0)
		return protobuf_c_message_unpack(desc, &al, 0, (const uint8_t *)"");
	if (sb->count == 1)
		return protobuf_c_message_unpack(desc, &al, GRPC_SLICE_LENGTH(sb->slices[0]),
						 GRPC_SLICE_START_PTR(sb->slices[0]));
	flat = arena_alloc(a, sb->length > 0 ? sb->length : 1);
	if (flat == NULL)
		return NULL;
	p = flat;
	for (size_t i = 0; i < sb->count; i++) {
		memcpy(p, GRPC_SLICE_START_PTR(sb->slices[i]), GRPC_SLICE_LENGTH(sb->slices[i]));
		p += GRPC_SLICE_LENGTH(sb->slices[i]);
	}
	msg = protobuf_c_message_unpack(desc, &al, sb->length, flat);
	return msg;
}

rpc_arena_t *rpc_thread_arena(void)
{
	rpc_arena_t *a = thread_arena;

	return a != NULL && !a->busy ? a : NULL;
}

void rpc_thread_arena_set(rpc_arena_t *a)
{
	thread_arena = a;
}
