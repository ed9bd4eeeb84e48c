/*
 * writereq.c - WriteRequest decoding over segments (contract in writereq.h).
 *
 * A cursor walks the segments byte by byte for tags and varints and jumps
 * over length-delimited fields; `left` (bytes left in the whole message) is
 * checked before every read or skip, so no input can move it past the end.
 * Empty segments are skipped wherever the cursor stops.
 */
#include <string.h>

#include "cas/writereq.h"
#include "common/err.h"

enum { WIRE_VARINT = 0, WIRE_64BIT = 1, WIRE_LEN = 2, WIRE_32BIT = 5 };

enum {
	F_RESOURCE_NAME = 1,
	F_WRITE_OFFSET = 2,
	F_FINISH_WRITE = 3,
	F_DATA = 10,
};

typedef struct cursor {
	const cas_segs_t *m;
	size_t seg;       /* current segment */
	const uint8_t *p; /* its bytes */
	size_t len;       /* its length */
	size_t off;       /* position in it */
	size_t left;      /* bytes left in the message from here */
} cursor_t;

/* Move past exhausted segments (never beyond the last one). */
static void cur_settle(cursor_t *c)
{
	while (c->off == c->len && c->seg + 1 < c->m->n) {
		c->seg++;
		c->p = c->m->seg(c->m->src, c->seg, &c->len);
		c->off = 0;
	}
}

static void cur_init(cursor_t *c, const cas_segs_t *m)
{
	memset(c, 0, sizeof(*c));
	c->m = m;
	for (size_t i = 0; i < m->n; i++) {
		size_t len;

		(void)m->seg(m->src, i, &len);
		c->left += len;
	}
	if (m->n > 0)
		c->p = m->seg(m->src, 0, &c->len);
	cur_settle(c);
}

static bool cur_byte(cursor_t *c, uint8_t *b)
{
	if (c->left == 0)
		return false;
	cur_settle(c);
	*b = c->p[c->off++];
	c->left--;
	return true;
}

static bool cur_skip(cursor_t *c, size_t n)
{
	if (n > c->left)
		return false;
	c->left -= n;
	while (n > 0) {
		size_t take;

		cur_settle(c);
		take = c->len - c->off < n ? c->len - c->off : n;
		c->off += take;
		n -= take;
	}
	return true;
}

/* A varint of at most max bytes (10 for values, 5 for tags and lengths, as protobuf-c). */
static bool cur_varint(cursor_t *c, int max, uint64_t *v)
{
	uint64_t r = 0;

	for (int i = 0; i < max; i++) {
		uint8_t b;

		if (!cur_byte(c, &b))
			return false;
		r |= (uint64_t)(b & 0x7f) << (7 * i);
		if ((b & 0x80) == 0) {
			*v = r;
			return true;
		}
	}
	return false;
}

/* A length-delimited field's payload: its span, and the cursor moved past it. */
static bool cur_span(cursor_t *c, cas_span_t *sp)
{
	uint64_t len;

	if (!cur_varint(c, 5, &len) || len > c->left)
		return false;
	cur_settle(c);
	sp->seg = c->seg;
	sp->off = c->off;
	sp->len = (size_t)len;
	return cur_skip(c, (size_t)len);
}

int cas_writereq_parse(const cas_segs_t *m, cas_writereq_t *out)
{
	cursor_t c;

	memset(out, 0, sizeof(*out));
	cur_init(&c, m);
	while (c.left > 0) {
		uint64_t tag, v;
		uint32_t field;
		int wire;
		cas_span_t sp;

		if (!cur_varint(&c, 5, &tag))
			return REAP_E_INVALID;
		field = (uint32_t)(tag >> 3);
		wire = (int)(tag & 7);
		if (field == 0 || tag >> 3 > 0x1fffffff)
			return REAP_E_INVALID;
		switch (field) {
		case F_RESOURCE_NAME:
		case F_DATA:
			if (wire != WIRE_LEN || !cur_span(&c, &sp))
				return REAP_E_INVALID;
			if (field == F_DATA)
				out->data = sp;
			else
				out->resource_name = sp;
			continue;
		case F_WRITE_OFFSET:
		case F_FINISH_WRITE:
			if (wire != WIRE_VARINT || !cur_varint(&c, 10, &v))
				return REAP_E_INVALID;
			if (field == F_WRITE_OFFSET)
				out->write_offset = (int64_t)v;
			else
				out->finish_write = v != 0;
			continue;
		default:
			break;
		}
		switch (wire) {
		case WIRE_VARINT:
			if (!cur_varint(&c, 10, &v))
				return REAP_E_INVALID;
			break;
		case WIRE_64BIT:
			if (!cur_skip(&c, 8))
				return REAP_E_INVALID;
			break;
		case WIRE_LEN:
			if (!cur_span(&c, &sp))
				return REAP_E_INVALID;
			break;
		case WIRE_32BIT:
			if (!cur_skip(&c, 4))
				return REAP_E_INVALID;
			break;
		default:
			return REAP_E_INVALID; /* groups (3, 4) and 6, 7 */
		}
	}
	return REAP_OK;
}

int cas_span_each(const cas_segs_t *m, const cas_span_t *sp,
		  int (*fn)(void *ctx, const uint8_t *p, size_t len), void *ctx)
{
	size_t i = sp->seg, off = sp->off, n = sp->len;

	while (n > 0 && i < m->n) {
		size_t len;
		const uint8_t *p = m->seg(m->src, i, &len);
		size_t take = len > off ? len - off : 0;
		int rc;

		if (take > n)
			take = n;
		if (take > 0 && (rc = fn(ctx, p + off, take)) != 0)
			return rc;
		n -= take;
		off = 0;
		i++;
	}
	return 0;
}

static int copy_piece(void *ctx, const uint8_t *p, size_t len)
{
	uint8_t **dst = ctx;

	memcpy(*dst, p, len);
	*dst += len;
	return 0;
}

void cas_span_copy(const cas_segs_t *m, const cas_span_t *sp, void *dst)
{
	uint8_t *d = dst;

	(void)cas_span_each(m, sp, copy_piece, &d);
}
