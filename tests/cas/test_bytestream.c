/*
 * test_bytestream.c - ByteStream Read/Write/QueryWriteStatus through real
 * gRPC: chunked and large blobs, offsets and limits, resumable uploads,
 * early return, zstd, and every malformed name or offset refused with its
 * status while nothing partial becomes visible.
 */
#include <criterion/criterion.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "tests/support/harness.h"

static th_server_t t;
static void start(void) { th_start(&t, NULL); }
static void stop(void) { th_stop(&t); }

TestSuite(bytestream, .init = start, .fini = stop);

static bool present(const char *hex, size_t size)
{
	char name[128];
	snprintf(name, sizeof(name), "blobs/%s/%zu", hex, size);
	return th_bs_read(&t, name, 0, 0, NULL, NULL) == 0;
}

Test(bytestream, write_then_read_large)
{
	size_t len = 3 * 1024 * 1024 + 17; /* above inline_max: the file path */
	uint8_t *buf = malloc(len);
	char hex[65], name[200];
	long long committed = -2;
	void *out = NULL;
	size_t n = 0;

	th_fill(buf, len, 11);
	th_digest(buf, len, hex);
	snprintf(name, sizeof(name), "main/uploads/2f1c6b4e-0000-4000-8000-000000000001/blobs/%s/%zu", hex, len);
	cr_assert_eq(th_bs_write(&t, name, buf, len, 64 * 1024, &committed), 0);
	cr_assert_eq(committed, (long long)len);
	snprintf(name, sizeof(name), "main/blobs/%s/%zu", hex, len);
	cr_assert_eq(th_bs_read(&t, name, 0, 0, &out, &n), 0);
	cr_assert_eq(n, len);
	cr_assert_eq(memcmp(out, buf, len), 0);
	free(out);
	/* offset and limit */
	cr_assert_eq(th_bs_read(&t, name, 1000000, 70000, &out, &n), 0);
	cr_assert_eq(n, 70000);
	cr_assert_eq(memcmp(out, buf + 1000000, n), 0);
	free(out);
	/* reading at exactly the end gives nothing, past it is OUT_OF_RANGE */
	cr_assert_eq(th_bs_read(&t, name, (long long)len, 0, &out, &n), 0);
	cr_assert_eq(n, 0);
	free(out);
	cr_assert_eq(th_bs_read(&t, name, (long long)len + 1, 0, NULL, NULL), GRPC_STATUS_OUT_OF_RANGE);
	cr_assert_eq(th_bs_read(&t, name, -1, 0, NULL, NULL), GRPC_STATUS_OUT_OF_RANGE);
	cr_assert_eq(th_bs_read(&t, name, 0, -5, NULL, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	/* digest-function form of the name */
	snprintf(name, sizeof(name), "main/blobs/sha256/%s/%zu", hex, len);
	cr_assert_eq(th_bs_read(&t, name, 0, 10, NULL, &n), 0);
	cr_assert_eq(n, 10);
	free(buf);
}

Test(bytestream, small_write_and_existing_early_return)
{
	char data[500], hex[65], name[200];
	long long committed = 0;
	th_fill(data, sizeof(data), 12);
	th_digest(data, sizeof(data), hex);
	snprintf(name, sizeof(name), "uploads/u1/blobs/%s/%zu", hex, sizeof(data));
	cr_assert_eq(th_bs_write(&t, name, data, sizeof(data), 100, &committed), 0);
	cr_assert_eq(committed, (long long)sizeof(data));
	/* a second upload of the same blob returns at once with the full size */
	snprintf(name, sizeof(name), "uploads/u2/blobs/%s/%zu", hex, sizeof(data));
	committed = 0;
	cr_assert_eq(th_bs_write(&t, name, data, sizeof(data), 100, &committed), 0);
	cr_assert_eq(committed, (long long)sizeof(data));
}

Test(bytestream, mismatched_content_is_not_stored)
{
	size_t len = 200000;
	uint8_t *buf = malloc(len);
	char hex[65], name[200];
	th_fill(buf, len, 13);
	th_digest(buf, len, hex);
	buf[len / 2] ^= 1;
	snprintf(name, sizeof(name), "uploads/u3/blobs/%s/%zu", hex, len);
	cr_assert_eq(th_bs_write(&t, name, buf, len, 65536, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_not(present(hex, len));
	free(buf);
}

Test(bytestream, overshoot_and_short_write)
{
	char data[1000], hex[65], name[200];
	th_fill(data, sizeof(data), 14);
	th_digest(data, 900, hex);
	/* 1000 bytes under a 900-byte digest: overshoot */
	snprintf(name, sizeof(name), "uploads/u4/blobs/%s/900", hex);
	cr_assert_eq(th_bs_write(&t, name, data, sizeof(data), 300, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_not(present(hex, 900));
	/* finish_write after 800 of 900 bytes: short */
	snprintf(name, sizeof(name), "uploads/u5/blobs/%s/900", hex);
	cr_assert_eq(th_bs_write(&t, name, data, 800, 300, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_not(present(hex, 900));
}

/* Send messages with the given offsets; returns the final status. */
static int write_offsets(const char *name, const char *data, const long long *offs, const size_t *lens,
			 int n, bool finish)
{
	rpc_stream_t *s = rpc_stream_open(t.ch, "/google.bytestream.ByteStream/Write", 10000);
	rpc_status_t st = {0};
	for (int i = 0; i < n; i++) {
		Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
		w.resource_name = (char *)(i == 0 ? name : "");
		w.write_offset = offs[i];
		w.data.data = (uint8_t *)data + (offs[i] > 0 ? offs[i] : 0);
		w.data.len = lens[i];
		w.finish_write = finish && i == n - 1;
		if (rpc_stream_send(s, &w.base) != 0)
			break;
	}
	rpc_stream_close_send(s);
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

Test(bytestream, bad_offsets)
{
	char data[1000], hex[65], name[200];
	th_fill(data, sizeof(data), 15);
	th_digest(data, sizeof(data), hex);
	snprintf(name, sizeof(name), "uploads/o1/blobs/%s/1000", hex);
	long long dup[] = {0, 0, 500};
	size_t dl[] = {500, 500, 500};
	cr_assert_eq(write_offsets(name, data, dup, dl, 3, true), GRPC_STATUS_INVALID_ARGUMENT);
	snprintf(name, sizeof(name), "uploads/o2/blobs/%s/1000", hex);
	long long gap[] = {0, 600};
	size_t gl[] = {500, 400};
	cr_assert_eq(write_offsets(name, data, gap, gl, 2, true), GRPC_STATUS_INVALID_ARGUMENT);
	snprintf(name, sizeof(name), "uploads/o3/blobs/%s/1000", hex);
	long long neg[] = {-1};
	size_t nl[] = {10};
	cr_assert_eq(write_offsets(name, data, neg, nl, 1, true), GRPC_STATUS_INVALID_ARGUMENT);
	/* a stream that ends without finish_write */
	snprintf(name, sizeof(name), "uploads/o4/blobs/%s/1000", hex);
	long long part[] = {0};
	size_t pl[] = {400};
	cr_assert_eq(write_offsets(name, data, part, pl, 1, false), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_not(present(hex, 1000));
	/* ... which can be resumed from where it stopped */
	long long rest[] = {400};
	size_t rl[] = {600};
	cr_assert_eq(write_offsets(name, data, rest, rl, 1, true), 0);
	cr_assert(present(hex, 1000));
}

Test(bytestream, bad_resource_names)
{
	const char *reads[] = {
		"",
		"blobs",
		"blobs/abc/10",
		"blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/-1",
		"blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/1x",
		"blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0/extra",
		"blobs/md5/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0",
		"a//blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0",
		"../blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0",
		"uploads/x/blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0",
		"blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/99999999999999999999",
	};
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
		cr_assert_eq(th_bs_read(&t, reads[i], 0, 0, NULL, NULL), GRPC_STATUS_INVALID_ARGUMENT,
			     "read %s", reads[i]);
	cr_assert_eq(th_bs_read(&t, "compressed-blobs/brotli/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0",
				0, 0, NULL, NULL), GRPC_STATUS_UNIMPLEMENTED);
	char data[10] = "0123456789";
	const char *writes[] = {
		"blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/10",
		"uploads//blobs/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/10",
		"uploads/u/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/10",
		"uploads/u/blobs/zz/10",
	};
	for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
		cr_assert_eq(th_bs_write(&t, writes[i], data, 10, 10, NULL), GRPC_STATUS_INVALID_ARGUMENT,
			     "write %s", writes[i]);
	/* not found is not invalid */
	cr_assert_eq(th_bs_read(&t, "blobs/0000000000000000000000000000000000000000000000000000000000000000/5",
				0, 0, NULL, NULL), GRPC_STATUS_NOT_FOUND);
}

static long long query_status(const char *name, int *code, bool *complete)
{
	Google__Bytestream__QueryWriteStatusRequest q = GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_REQUEST__INIT;
	Google__Bytestream__QueryWriteStatusResponse *r = NULL;
	long long c = -1;
	q.resource_name = (char *)name;
	*code = th_unary(&t, "/google.bytestream.ByteStream/QueryWriteStatus", &q.base,
			 &google__bytestream__query_write_status_response__descriptor,
			 (ProtobufCMessage **)&r, NULL);
	if (*code == 0) {
		c = r->committed_size;
		*complete = r->complete;
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	return c;
}

Test(bytestream, resumable_after_cancel)
{
	size_t len = 1 << 20, chunk = 64 << 10;
	uint8_t *buf = malloc(len);
	char hex[65], name[200];
	bool complete = false;
	int code;

	th_fill(buf, len, 16);
	th_digest(buf, len, hex);
	snprintf(name, sizeof(name), "uploads/resume-1/blobs/%s/%zu", hex, len);
	cr_assert_eq(query_status(name, &code, &complete), -1);
	cr_assert_eq(code, GRPC_STATUS_NOT_FOUND);
	/* send half, then drop the stream */
	rpc_stream_t *s = rpc_stream_open(t.ch, "/google.bytestream.ByteStream/Write", 10000);
	for (size_t off = 0; off < len / 2; off += chunk) {
		Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
		w.resource_name = off == 0 ? name : (char *)"";
		w.write_offset = (int64_t)off;
		w.data.data = buf + off;
		w.data.len = chunk;
		cr_assert_eq(rpc_stream_send(s, &w.base), 0);
	}
	usleep(200 * 1000);
	rpc_stream_cancel(s);
	/* the server keeps what it got; resume from there */
	long long committed = -1;
	for (int i = 0; i < 50; i++) {
		committed = query_status(name, &code, &complete);
		cr_assert_eq(code, 0);
		cr_assert_not(complete);
		if (committed == (long long)len / 2)
			break;
		usleep(20 * 1000);
	}
	cr_assert_gt(committed, 0);
	cr_assert_leq(committed, (long long)len / 2);
	cr_assert_eq(committed % (long long)chunk, 0);
	int final = -1;
	for (int tries = 0; tries < 50; tries++) {
		s = rpc_stream_open(t.ch, "/google.bytestream.ByteStream/Write", 10000);
		rpc_status_t st = {0};
		for (size_t off = (size_t)committed; off < len; off += chunk) {
			Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
			w.resource_name = name;
			w.write_offset = (int64_t)off;
			w.data.data = buf + off;
			w.data.len = chunk;
			w.finish_write = off + chunk == len;
			if (rpc_stream_send(s, &w.base) != 0)
				break;
		}
		rpc_stream_close_send(s);
		rpc_stream_finish(s, &st);
		final = st.code;
		rpc_status_destroy(&st);
		if (final != GRPC_STATUS_ABORTED) /* the dropped stream may still hold it briefly */
			break;
		usleep(20 * 1000);
	}
	cr_assert_eq(final, 0);
	cr_assert(present(hex, len));
	cr_assert_eq(query_status(name, &code, &complete), (long long)len);
	cr_assert(complete);
	free(buf);
}

Test(bytestream, zstd_write_and_read)
{
	size_t len = 300000;
	char *buf = malloc(len), hex[65], name[200];
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)('a' + (i / 7) % 26);
	th_digest(buf, len, hex);
	size_t zcap = ZSTD_compressBound(len);
	uint8_t *z = malloc(zcap);
	size_t zn = ZSTD_compress(z, zcap, buf, len, 3);
	long long committed = 0;
	snprintf(name, sizeof(name), "uploads/z1/compressed-blobs/zstd/%s/%zu", hex, len);
	cr_assert_eq(th_bs_write(&t, name, z, zn, 1000, &committed), 0);
	cr_assert_eq(committed, (long long)zn);
	cr_assert(present(hex, len));
	/* read it back compressed and decompress */
	void *out = NULL;
	size_t n = 0;
	snprintf(name, sizeof(name), "compressed-blobs/zstd/%s/%zu", hex, len);
	cr_assert_eq(th_bs_read(&t, name, 0, 0, &out, &n), 0);
	char *plain = malloc(len);
	cr_assert_eq(ZSTD_decompress(plain, len, out, n), len);
	cr_assert_eq(memcmp(plain, buf, len), 0);
	/* an offset into the compressed stream gives its tail */
	void *tail = NULL;
	size_t tn = 0;
	cr_assert_eq(th_bs_read(&t, name, 10, 0, &tail, &tn), 0);
	cr_assert_eq(tn, n - 10);
	cr_assert_eq(memcmp(tail, (char *)out + 10, tn), 0);
	cr_assert_eq(th_bs_read(&t, name, (long long)n + 1, 0, NULL, NULL), GRPC_STATUS_OUT_OF_RANGE);
	free(tail);
	free(plain);
	free(out);
	/* corrupt compressed data is refused */
	buf[0] = 'Z';
	th_digest(buf, len, hex);
	zn = ZSTD_compress(z, zcap, buf, len, 3);
	z[zn / 2] ^= 0x55;
	snprintf(name, sizeof(name), "uploads/z2/compressed-blobs/zstd/%s/%zu", hex, len);
	cr_assert_eq(th_bs_write(&t, name, z, zn, 1000, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_not(present(hex, len));
	free(z);
	free(buf);
}

/* ---- hand-encoded WriteRequests: the server decodes them itself ---- */

/* Send raw messages (each msgs[i] of lens[i] bytes); returns the final status. */
static int write_raw(uint8_t *const *msgs, const size_t *lens, int n, long long *committed)
{
	rpc_stream_t *s = rpc_stream_open(t.ch, "/google.bytestream.ByteStream/Write", 10000);
	Google__Bytestream__WriteResponse *resp = NULL;
	rpc_status_t st = {0};
	for (int i = 0; i < n; i++)
		if (rpc_stream_send_raw(s, msgs[i], lens[i]) != 0)
			break;
	rpc_stream_close_send(s);
	if (rpc_stream_recv(s, &google__bytestream__write_response__descriptor,
			    (ProtobufCMessage **)&resp) == 1) {
		if (committed != NULL)
			*committed = resp->committed_size;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	rpc_stream_finish(s, &st);
	int code = st.code;
	rpc_status_destroy(&st);
	return code;
}

Test(bytestream, raw_fields_unknown_repeated_and_split)
{
	static uint8_t m1[4096], m2[4096], bad[64];
	char data[1000], junk[600], hex[65], name[200];
	size_t n1 = 0, n2 = 0, nb = 0;
	long long committed = -2;

	th_fill(data, sizeof(data), 31);
	memset(junk, 'j', sizeof(junk));
	th_digest(data, sizeof(data), hex);
	snprintf(name, sizeof(name), "uploads/raw1/blobs/%s/1000", hex);
	/* data first (fields in any order), an unknown varint, the data again:
	 * the last occurrence wins, as in protobuf */
	n1 += th_put_bytes(m1 + n1, 10, junk, sizeof(junk));
	n1 += th_put_varint(m1 + n1, 15 << 3 | 0);
	n1 += th_put_varint(m1 + n1, 123456789);
	n1 += th_put_bytes(m1 + n1, 1, name, strlen(name));
	n1 += th_put_bytes(m1 + n1, 10, data, 600);
	/* offset 600, finish_write as a two-byte varint, an
	 * unknown fixed32 and fixed64, an empty resource name */
	m2[n2++] = 2 << 3 | 0;
	n2 += th_put_varint(m2 + n2, 600);
	m2[n2++] = 3 << 3 | 0;
	m2[n2++] = 0x81; /* bool true as a two-byte varint */
	m2[n2++] = 0x00;
	n2 += th_put_varint(m2 + n2, 20 << 3 | 5);
	memcpy(m2 + n2, "abcd", 4);
	n2 += 4;
	n2 += th_put_varint(m2 + n2, 21 << 3 | 1);
	memcpy(m2 + n2, "abcdefgh", 8);
	n2 += 8;
	n2 += th_put_bytes(m2 + n2, 1, "", 0);
	n2 += th_put_bytes(m2 + n2, 10, data + 600, 400);
	uint8_t *msgs[] = {m1, m2};
	size_t lens[] = {n1, n2};
	cr_assert_eq(write_raw(msgs, lens, 2, &committed), 0);
	cr_assert_eq(committed, 1000);
	cr_assert(present(hex, 1000));

	/* malformed: a data length past the end of the message; a group; a
	 * known field with the wrong wire type. Nothing becomes visible. */
	th_fill(data, sizeof(data), 32);
	th_digest(data, sizeof(data), hex);
	snprintf(name, sizeof(name), "uploads/raw2/blobs/%s/1000", hex);
	nb = th_put_bytes(bad, 1, "x", 1);
	bad[nb++] = 10 << 3 | 2;
	nb += th_put_varint(bad + nb, 1000);
	memcpy(bad + nb, "short", 5);
	nb += 5;
	uint8_t *one[] = {bad};
	size_t onelen[] = {nb};
	cr_assert_eq(write_raw(one, onelen, 1, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	uint8_t grp[] = {3 << 3 | 3, 3 << 3 | 4};
	uint8_t *g[] = {grp};
	size_t glen[] = {sizeof(grp)};
	cr_assert_eq(write_raw(g, glen, 1, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	n1 = th_put_bytes(m1, 1, name, strlen(name));
	n1 += th_put_bytes(m1 + n1, 2, "\x01", 1); /* write_offset as bytes */
	n1 += th_put_bytes(m1 + n1, 10, data, sizeof(data));
	lens[0] = n1;
	cr_assert_eq(write_raw(msgs, lens, 1, NULL), GRPC_STATUS_INVALID_ARGUMENT);
	cr_assert_not(present(hex, 1000));
	/* the same bytes, well-formed and in several messages, are accepted */
	n1 = th_put_bytes(m1, 1, name, strlen(name));
	n1 += th_put_bytes(m1 + n1, 10, data, 10);
	n2 = 0;
	m2[n2++] = 2 << 3 | 0;
	n2 += th_put_varint(m2 + n2, 10);
	m2[n2++] = 3 << 3 | 0;
	m2[n2++] = 1;
	n2 += th_put_bytes(m2 + n2, 10, data + 10, 990);
	lens[0] = n1;
	lens[1] = n2;
	cr_assert_eq(write_raw(msgs, lens, 2, &committed), 0);
	cr_assert_eq(committed, 1000);
	cr_assert(present(hex, 1000));
}
