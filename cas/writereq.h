/*
 * writereq.h - a minimal decoder of google.bytestream.WriteRequest that
 * reads the message where gRPC received it, as a list of segments, so the
 * data field (up to a MiB or more per message) is never copied before it is
 * hashed and written. It is a parser of untrusted input (fuzz/fuzz_writereq.c):
 * every length is checked against what is left of the message.
 *
 * It accepts exactly what protobuf-c's generated unpacker accepts for this
 * message: fields 1 resource_name (string), 2 write_offset (int64),
 * 3 finish_write (bool), 10 data (bytes), the last occurrence of a field
 * winning; unknown fields of wire types 0, 1, 2 and 5 are skipped. A known
 * field with the wrong wire type, a group, field number 0 or one past
 * 2^29 - 1, a varint longer than 10 bytes (5 for tags and lengths) or a
 * length past the end is malformed. protobuf-c accepts everything this
 * accepts, with the same fields (fuzz_writereq checks it).
 */
#ifndef REAP_CAS_WRITEREQ_H
#define REAP_CAS_WRITEREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** A message held in n segments; seg(src, i, &len) returns segment i. */
typedef struct cas_segs {
	const uint8_t *(*seg)(const void *src, size_t i, size_t *len);
	const void *src;
	size_t n;
} cas_segs_t;

/** A byte range of a message: len bytes from byte off of segment seg. */
typedef struct cas_span {
	size_t seg;
	size_t off;
	size_t len;
} cas_span_t;

/** A decoded WriteRequest; the spans point into the message. */
typedef struct cas_writereq {
	cas_span_t resource_name; /* len 0: empty or absent */
	int64_t write_offset;
	bool finish_write;
	cas_span_t data;          /* len 0: empty or absent */
} cas_writereq_t;

/** Decode m into *out: 0, or REAP_E_INVALID for a malformed message. */
int cas_writereq_parse(const cas_segs_t *m, cas_writereq_t *out);

/**
 * Call fn(ctx, piece, len) for each contiguous piece of span sp of m, in
 * order, stopping at the first non-zero return, which is returned.
 * sp must come from cas_writereq_parse on the same m.
 */
int cas_span_each(const cas_segs_t *m, const cas_span_t *sp,
		  int (*fn)(void *ctx, const uint8_t *p, size_t len), void *ctx);

/** Copy span sp of m (sp->len bytes) to dst. */
void cas_span_copy(const cas_segs_t *m, const cas_span_t *sp, void *dst);

#endif
