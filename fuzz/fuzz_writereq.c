/*
 * fuzz_writereq.c - the zero-copy WriteRequest decoder (cas/writereq.c).
 *
 * The first input byte picks how the rest is cut into segments (gRPC hands
 * a message over in arbitrary slices, empty ones included). Whatever the
 * cut, the result must be the same, must agree with protobuf-c's decoding
 * of the same bytes (accepted by both, with equal fields, or by neither,
 * except where protobuf-c is laxer about tags: noted below), and every span
 * must lie inside the message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cas/writereq.h"
#include "common/err.h"
#include "google/bytestream/bytestream.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct cut {
	const uint8_t *p;
	size_t n;
	size_t bounds[65]; /* segment i is [bounds[i], bounds[i + 1]) */
	size_t nseg;
} cut_t;

static const uint8_t *cut_seg(const void *src, size_t i, size_t *len)
{
	const cut_t *c = src;

	*len = c->bounds[i + 1] - c->bounds[i];
	return c->p + c->bounds[i];
}

/* Cut p[0..n) in up to 64 segments, some empty, as seed says. */
static void cut_make(cut_t *c, const uint8_t *p, size_t n, uint8_t seed)
{
	size_t at = 0;

	c->p = p;
	c->n = n;
	c->nseg = 0;
	c->bounds[0] = 0;
	while (c->nseg < 63 && at < n) {
		size_t step = (size_t)(seed % 7) * (c->nseg % 3) + 1 + (seed >> 5);

		if ((seed + c->nseg) % 5 == 0)
			step = 0; /* an empty segment */
		at = at + step < n ? at + step : n;
		c->bounds[++c->nseg] = at;
	}
	c->bounds[++c->nseg] = n;
}

static void check_span(const cut_t *c, const cas_segs_t *m, const cas_span_t *sp, uint8_t *tmp)
{
	if (sp->len > c->n)
		__builtin_trap();
	if (sp->len > 0 && (sp->seg >= m->n || c->bounds[sp->seg] + sp->off + sp->len > c->n))
		__builtin_trap();
	cas_span_copy(m, sp, tmp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Google__Bytestream__WriteRequest *ref;
	cas_writereq_t one, many;
	cas_segs_t m1, mn;
	cut_t c1, cn;
	uint8_t *tmp;
	int r1, rn;

	if (size == 0)
		return 0;
	cut_make(&cn, data + 1, size - 1, data[0]);
	c1.p = data + 1;
	c1.n = size - 1;
	c1.nseg = 1;
	c1.bounds[0] = 0;
	c1.bounds[1] = size - 1;
	m1 = (cas_segs_t){cut_seg, &c1, 1};
	mn = (cas_segs_t){cut_seg, &cn, cn.nseg};
	r1 = cas_writereq_parse(&m1, &one);
	rn = cas_writereq_parse(&mn, &many);
	if (r1 != rn)
		__builtin_trap();
	ref = google__bytestream__write_request__unpack(NULL, size - 1, data + 1);
	/* protobuf-c also takes field numbers past 2^29 and field 0; the
	 * decoder refuses those, so only "accepted" must imply "accepted". */
	if (r1 == REAP_OK && ref == NULL)
		__builtin_trap();
	if (r1 != REAP_OK)
		goto out;
	if (one.write_offset != many.write_offset || one.finish_write != many.finish_write ||
	    one.data.len != many.data.len || one.resource_name.len != many.resource_name.len)
		__builtin_trap();
	if ((tmp = malloc(size)) == NULL)
		goto out;
	check_span(&cn, &mn, &many.data, tmp);
	if (ref->data.len != many.data.len ||
	    (many.data.len > 0 && memcmp(tmp, ref->data.data, many.data.len) != 0))
		__builtin_trap();
	check_span(&cn, &mn, &many.resource_name, tmp);
	if (strlen(ref->resource_name) > many.resource_name.len ||
	    memcmp(tmp, ref->resource_name, strlen(ref->resource_name)) != 0)
		__builtin_trap();
	if (ref->write_offset != many.write_offset || ref->finish_write != many.finish_write)
		__builtin_trap();
	free(tmp);
out:
	if (ref != NULL)
		google__bytestream__write_request__free_unpacked(ref, NULL);
	return 0;
}
