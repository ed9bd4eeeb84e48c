/*
 * bytestream.c - google.bytestream.ByteStream over the CAS: Read (with
 * offsets, limits and zstd), resumable Write, QueryWriteStatus.
 *
 * A write streams into a store writer as messages arrive, hashed on the way
 * in; the blob becomes visible only when finish_write arrives and the digest
 * matches. An interrupted write stays in the upload table (keyed by its
 * resource name) for upload_idle_s, so the client can ask QueryWriteStatus
 * and continue from committed_size. Memory per stream is bounded by the
 * store writer's buffer.
 *
 * Write requests are decoded here, from the segments gRPC received them in
 * (cas/writereq.c), not by protobuf-c: the data field is hashed and written
 * straight from gRPC's buffers, with no copy into a flat buffer or a
 * decoded message. Read responses are serialized by hand into a buffer
 * that gRPC sends as it is: the blob is read from storage into place.
 *
 * Tenant scoping: a committed write grants the resource's instance read
 * access (the store does it once the content is verified). A write of a
 * blob already visible in that instance returns at once, as the spec
 * allows; a blob stored only for another tenant does not: the client must
 * send all of it, which is its proof of possession. Reads and
 * QueryWriteStatus answer NOT_FOUND for blobs not visible in the instance,
 * exactly as for blobs not stored.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "cas/cas_int.h"
#include "cas/writereq.h"
#include "common/log.h"

#define SVC "/google.bytestream.ByteStream/"

struct cas_upload {
	cas_upload_t *next;
	char *name;
	cas_resource_t res; /* res.instance points at instance below */
	char instance[REAP_INSTANCE_MAX + 1];
	cas_writer_t *w;
	cas_unzstd_t *u;  /* compressed uploads only */
	int64_t committed; /* resource bytes received (compressed bytes if compressed) */
	bool busy;         /* a stream is writing it */
	time_t idle_since;
};

/* ---- the upload table ---- */

/* A resource's instance name, NUL-terminated (cas_resource_parse bounds its length). */
static void instance_copy(const cas_resource_t *res, char out[REAP_INSTANCE_MAX + 1])
{
	size_t n = res->instance_len < REAP_INSTANCE_MAX ? res->instance_len : REAP_INSTANCE_MAX;

	if (n > 0)
		memcpy(out, res->instance, n);
	out[n] = '\0';
}

static void upload_free(cas_upload_t *up)
{
	if (up == NULL)
		return;
	cas_writer_free(up->w);
	cas_unzstd_free(up->u);
	free(up->name);
	free(up);
}

/* Start (or restart) an upload's data: a fresh writer and decompressor. */
static int upload_reset(cas_service_t *svc, cas_upload_t *up, reap_errbuf_t *eb)
{
	cas_writer_free(up->w);
	cas_unzstd_free(up->u);
	up->w = NULL;
	up->u = NULL;
	up->committed = 0;
	if (up->res.compressed && (up->u = cas_unzstd_new()) == NULL)
		return REAP_E_NOMEM;
	return cas_writer_new(svc->store, up->instance, &up->res.digest, &up->w, eb);
}

/* Caller holds uploads_mu. Drops idle uploads older than the idle limit. */
static void uploads_expire(cas_service_t *svc, time_t now)
{
	for (cas_upload_t **pp = &svc->uploads; *pp != NULL;) {
		cas_upload_t *up = *pp;
		if (!up->busy && now - up->idle_since >= svc->cfg.upload_idle_s) {
			*pp = up->next;
			svc->n_uploads--;
			upload_free(up);
		} else {
			pp = &up->next;
		}
	}
}

/* Take (marking busy) or create the upload named name, positioned at offset. */
static int upload_acquire(cas_service_t *svc, const char *name, const cas_resource_t *res,
			  int64_t offset, cas_upload_t **out, reap_errbuf_t *eb)
{
	cas_upload_t *up;
	int err = REAP_OK;

	*out = NULL;
	pthread_mutex_lock(&svc->uploads_mu);
	for (up = svc->uploads; up != NULL; up = up->next)
		if (strcmp(up->name, name) == 0)
			break;
	if (up != NULL) {
		if (up->busy) {
			err = reap_errf(eb, REAP_E_ABORTED,
					"another stream is writing this upload");
		} else if (offset == up->committed) {
			up->busy = true;
		} else if (offset == 0) {
			up->busy = true;
			err = upload_reset(svc, up, eb);
		} else {
			err = reap_errf(eb, REAP_E_INVALID,
					"write_offset %lld does not match committed_size %lld",
					(long long)offset, (long long)up->committed);
		}
		goto out;
	}
	if (offset != 0) {
		err = reap_errf(eb, REAP_E_INVALID,
				"write_offset %lld for an upload the server does not have (committed_size 0)",
				(long long)offset);
		goto out;
	}
	if (svc->n_uploads >= svc->cfg.max_uploads)
		uploads_expire(svc, time(NULL));
	if (svc->n_uploads >= svc->cfg.max_uploads) {
		err = reap_errf(eb, REAP_E_EXHAUSTED, "too many uploads in progress (%zu)",
				svc->n_uploads);
		goto out;
	}
	up = calloc(1, sizeof(*up));
	if (up == NULL || (up->name = strdup(name)) == NULL) {
		free(up);
		up = NULL;
		err = REAP_E_NOMEM;
		goto out;
	}
	up->res = *res;
	instance_copy(res, up->instance);
	up->res.instance = up->instance;
	up->busy = true;
	err = upload_reset(svc, up, eb);
	if (err != REAP_OK) {
		upload_free(up);
		up = NULL;
		goto out;
	}
	up->next = svc->uploads;
	svc->uploads = up;
	svc->n_uploads++;
out:
	pthread_mutex_unlock(&svc->uploads_mu);
	if (err == REAP_OK)
		*out = up;
	return err;
}

/* Release an upload: keep it for resumption, or remove it (done or failed). */
static void upload_release(cas_service_t *svc, cas_upload_t *up, bool keep)
{
	pthread_mutex_lock(&svc->uploads_mu);
	if (keep) {
		up->busy = false;
		up->idle_since = time(NULL);
		up = NULL;
	} else {
		for (cas_upload_t **pp = &svc->uploads; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == up) {
				*pp = up->next;
				svc->n_uploads--;
				break;
			}
		}
	}
	pthread_mutex_unlock(&svc->uploads_mu);
	upload_free(up);
}

void cas_uploads_clear(cas_service_t *svc)
{
	pthread_mutex_lock(&svc->uploads_mu);
	while (svc->uploads != NULL) {
		cas_upload_t *up = svc->uploads;
		svc->uploads = up->next;
		upload_free(up);
	}
	svc->n_uploads = 0;
	pthread_mutex_unlock(&svc->uploads_mu);
}

/* ---- Write ---- */

typedef struct write_state {
	cas_upload_t *up;
	char *name;
} write_state_t;

static void write_reply(rpc_call_t *call, int64_t committed)
{
	Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
	resp.committed_size = committed;
	rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

/* First message: parse, admit, early return, or take the upload. */
static int write_start(rpc_call_t *call, write_state_t *st, const char *name,
		       int64_t write_offset, bool *done, reap_errbuf_t *eb)
{
	cas_service_t *svc = rpc_call_ctx(call);
	char instance[REAP_INSTANCE_MAX + 1];
	cas_resource_t res;
	int err;

	*done = false;
	err = cas_resource_parse(name, strlen(name), true, &res, eb);
	if (err == REAP_OK)
		err = cas_admit(svc, call, res.instance, res.instance_len, 0, AUTH_CAS_WRITE, NULL, eb);
	if (err != REAP_OK)
		return err;
	if (write_offset < 0)
		return reap_errf(eb, REAP_E_INVALID, "write_offset is negative");
	instance_copy(&res, instance);
	if (cas_visible_one(svc, instance, &res.digest) == REAP_OK) {
		/* Already readable here: the spec's early return. */
		write_reply(call, res.compressed ? -1 : res.digest.size);
		*done = true;
		return REAP_OK;
	}
	if ((st->name = strdup(name)) == NULL)
		return REAP_E_NOMEM;
	return upload_acquire(svc, name, &res, write_offset, &st->up, eb);
}

/* rpc_msg_t as writereq.c's segment list. */
static const uint8_t *msg_seg(const void *src, size_t i, size_t *len)
{
	return rpc_msg_segment(src, i, len);
}

typedef struct feed_ctx {
	cas_upload_t *up;
	reap_errbuf_t *eb;
} feed_ctx_t;

/* One contiguous piece of a message's data: into the decompressor or the writer. */
static int feed_piece(void *ctx, const uint8_t *p, size_t len)
{
	feed_ctx_t *f = ctx;

	if (f->up->u != NULL)
		return cas_unzstd_feed(f->up->u, p, len, f->up->w, f->eb);
	return cas_writer_write(f->up->w, p, len, f->eb);
}

/*
 * The resource name, NUL-terminated like protobuf-c's decoding (which also
 * means a name with a NUL in it reads as the part before it): into buf when
 * it fits, else into *heap (the caller frees).
 */
static const char *write_name(const cas_segs_t *m, const cas_span_t *sp, char *buf,
			      size_t cap, char **heap)
{
	char *dst = buf;

	*heap = NULL;
	if (sp->len >= cap) {
		if ((*heap = malloc(sp->len + 1)) == NULL)
			return NULL;
		dst = *heap;
	}
	cas_span_copy(m, sp, dst);
	dst[sp->len] = '\0';
	return dst;
}

static void write_message(rpc_call_t *call, void *state, const rpc_msg_t *msg)
{
	cas_service_t *svc = rpc_call_ctx(call);
	write_state_t *st = state;
	reap_errbuf_t eb = {{0}};
	cas_segs_t m = {msg_seg, msg, rpc_msg_segments(msg)};
	cas_writereq_t req;
	char namebuf[512], *heap = NULL;
	const char *name;
	feed_ctx_t feed;
	cas_upload_t *up;
	bool done;
	int err;

	if (cas_writereq_parse(&m, &req) != REAP_OK) {
		/* As the framework answers a request protobuf-c cannot decode. */
		rpc_call_finish(call, NULL, REAP_E_INVALID, "malformed request message");
		return;
	}
	name = write_name(&m, &req.resource_name, namebuf, sizeof(namebuf), &heap);
	if (name == NULL) {
		err = REAP_E_NOMEM;
		goto fail_keep;
	}
	if (st->up == NULL) {
		err = write_start(call, st, name, req.write_offset, &done, &eb);
		if (err != REAP_OK)
			goto fail_keep;
		if (done)
			goto out;
	} else if (name[0] != '\0' && strcmp(name, st->name) != 0) {
		err = reap_errf(&eb, REAP_E_INVALID, "resource_name changed within one stream");
		goto fail_keep;
	} else if (req.write_offset != st->up->committed) {
		err = reap_errf(&eb, REAP_E_INVALID, "write_offset %lld, expected %lld",
				(long long)req.write_offset, (long long)st->up->committed);
		goto fail_keep;
	}
	up = st->up;
	if (up->u != NULL && up->committed + (int64_t)req.data.len >
				     (int64_t)ZSTD_compressBound((size_t)up->res.digest.size) + 4096) {
		/* More compressed bytes than any zstd encoding of this blob needs. */
		err = reap_errf(&eb, REAP_E_INVALID, "compressed upload is longer than the blob allows");
		goto fail_drop;
	}
	if (up->u == NULL &&
	    (uint64_t)req.data.len > (uint64_t)(up->res.digest.size - cas_writer_offset(up->w))) {
		/* The writer would refuse the first piece past the end; refuse the
		 * message as a whole, as it did when it got the data in one piece. */
		err = reap_errf(&eb, REAP_E_INVALID,
				"write of %zu bytes at offset %lld goes past the digest size %lld",
				req.data.len, (long long)cas_writer_offset(up->w),
				(long long)up->res.digest.size);
		goto fail_drop;
	}
	feed = (feed_ctx_t){up, &eb};
	err = cas_span_each(&m, &req.data, feed_piece, &feed);
	if (err != REAP_OK)
		goto fail_drop;
	up->committed += (int64_t)req.data.len;
	if (!req.finish_write) {
		rpc_call_recv(call);
		goto out;
	}
	if (up->u != NULL)
		err = cas_unzstd_finish(up->u, &eb);
	if (err == REAP_OK)
		err = cas_writer_commit(up->w, &eb);
	if (err != REAP_OK)
		goto fail_drop;
	int64_t committed = up->committed;
	st->up = NULL;
	upload_release(svc, up, false);
	write_reply(call, committed);
	goto out;
fail_drop:
	/* The data is wrong: nothing of it may survive. */
	upload_release(svc, st->up, false);
	st->up = NULL;
fail_keep:
	cas_finish(call, NULL, err, &eb);
out:
	free(heap);
}

static void write_half_close(rpc_call_t *call, void *state)
{
	rpc_call_finish(call, NULL, REAP_E_INVALID,
			"the stream ended before a message with finish_write; "
			"QueryWriteStatus tells where to resume");
}

static void write_done(rpc_call_t *call, void *state, bool ok)
{
	write_state_t *st = state;
	if (st->up != NULL)
		upload_release(rpc_call_ctx(call), st->up, true);
	free(st->name);
}

/* ---- QueryWriteStatus ---- */

static void query_write_status(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Google__Bytestream__QueryWriteStatusRequest *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	Google__Bytestream__QueryWriteStatusResponse resp =
		GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_RESPONSE__INIT;
	reap_errbuf_t eb = {{0}};
	char instance[REAP_INSTANCE_MAX + 1];
	cas_resource_t res;
	int err;

	err = cas_resource_parse(req->resource_name, strlen(req->resource_name), true, &res, &eb);
	if (err == REAP_OK)
		err = cas_admit(svc, call, res.instance, res.instance_len, 0, AUTH_CAS_WRITE, NULL, &eb);
	if (err != REAP_OK)
		goto out;
	instance_copy(&res, instance);
	if (cas_visible_one(svc, instance, &res.digest) == REAP_OK) {
		resp.committed_size = res.compressed ? -1 : res.digest.size;
		resp.complete = true;
		goto out;
	}
	err = reap_errf(&eb, REAP_E_NOT_FOUND, "no upload in progress under this name");
	pthread_mutex_lock(&svc->uploads_mu);
	for (cas_upload_t *up = svc->uploads; up != NULL; up = up->next) {
		if (strcmp(up->name, req->resource_name) == 0) {
			resp.committed_size = up->committed;
			err = REAP_OK;
			break;
		}
	}
	pthread_mutex_unlock(&svc->uploads_mu);
out:
	cas_finish(call, &resp.base, err, &eb);
}

/* ---- Read ---- */

typedef struct read_state {
	cas_reader_t *r;
	size_t chunk;
	int64_t off;   /* next blob offset to read */
	int64_t end;   /* uncompressed: where to stop */
	/* compressed reads */
	ZSTD_CStream *zc;
	uint8_t *zin_buf;
	ZSTD_inBuffer zin;
	int64_t skip;  /* compressed bytes still to skip (read_offset) */
	int64_t left;  /* compressed bytes still allowed (read_limit), -1 = unlimited */
	bool zdone;
} read_state_t;

/* Fill out with up to cap bytes of the zstd stream, after skipping st->skip. */
static int zfill(read_state_t *st, uint8_t *out, size_t cap, size_t *n)
{
	int64_t size = cas_reader_size(st->r);
	*n = 0;
	while (*n < cap && !st->zdone) {
		if (st->zin.pos == st->zin.size && st->off < size) {
			size_t got = 0;
			int err = cas_reader_read(st->r, st->off, st->zin_buf, st->chunk, &got);
			if (err != REAP_OK)
				return err;
			if (got == 0)
				return REAP_E_IO;
			st->zin.src = st->zin_buf;
			st->zin.size = got;
			st->zin.pos = 0;
			st->off += (int64_t)got;
		}
		bool last = st->off >= size && st->zin.pos == st->zin.size;
		ZSTD_outBuffer o = {out + *n, cap - *n, 0};
		size_t rem = ZSTD_compressStream2(st->zc, &o, &st->zin,
						  last ? ZSTD_e_end : ZSTD_e_continue);
		if (ZSTD_isError(rem))
			return REAP_E_INTERNAL;
		if (st->skip > 0) {
			size_t drop = (int64_t)o.pos < st->skip ? o.pos : (size_t)st->skip;
			memmove(out + *n, out + *n + drop, o.pos - drop);
			o.pos -= drop;
			st->skip -= (int64_t)drop;
		}
		*n += o.pos;
		if (last && rem == 0)
			st->zdone = true;
	}
	return REAP_OK;
}

/*
 * Room in front of a read chunk for ReadResponse's header: the tag of field
 * 10 (bytes) and the length as a varint of up to 5 bytes.
 */
#define READ_HDR 6

/*
 * Serialize ReadResponse{data} around its n data bytes, which are already at
 * buf + READ_HDR: the header goes right in front of them. Returns where the
 * message starts; it ends at buf + READ_HDR + n. Empty data is the empty
 * message, as protobuf-c packs it.
 */
static size_t read_frame(uint8_t *buf, size_t n)
{
	uint8_t v[5];
	size_t k = 0, start;

	if (n == 0)
		return READ_HDR;
	while (n >= 0x80 && k < sizeof(v) - 1) {
		v[k++] = (uint8_t)(n | 0x80);
		n >>= 7;
	}
	v[k++] = (uint8_t)n;
	start = READ_HDR - 1 - k;
	buf[start] = (10 << 3) | 2;
	memcpy(buf + start + 1, v, k);
	return start;
}

/* Send the next chunk, or finish when there is nothing left. */
static void read_next(rpc_call_t *call, read_state_t *st)
{
	uint8_t *buf = rpc_call_raw_buffer(call, READ_HDR + st->chunk), *data;
	size_t n = 0, start;
	bool last;
	int err;

	if (buf == NULL) {
		err = REAP_E_NOMEM;
		goto fail;
	}
	data = buf + READ_HDR;
	if (st->zc != NULL) {
		size_t cap = st->chunk;
		if (st->left >= 0 && (int64_t)cap > st->left)
			cap = (size_t)st->left;
		err = zfill(st, data, cap, &n);
		if (err != REAP_OK)
			goto fail;
		if (st->zdone && st->skip > 0) {
			err = REAP_E_RANGE;
			rpc_call_finish(call, NULL, err, "read_offset is past the end of the compressed blob");
			return;
		}
		if (st->left >= 0)
			st->left -= (int64_t)n;
		last = st->left == 0 || (st->zdone && n < cap);
	} else {
		size_t want = st->end - st->off < (int64_t)st->chunk ? (size_t)(st->end - st->off)
								     : st->chunk;
		if (want > 0) {
			err = cas_reader_read(st->r, st->off, data, want, &n);
			if (err != REAP_OK)
				goto fail;
			if (n == 0) {
				err = REAP_E_IO;
				goto fail;
			}
		}
		st->off += (int64_t)n;
		last = st->off >= st->end;
	}
	start = read_frame(buf, n);
	if (!last)
		rpc_call_send_raw(call, start, READ_HDR + n - start);
	else if (n > 0)
		rpc_call_finish_raw(call, start, READ_HDR + n - start);
	else
		rpc_call_finish(call, NULL, REAP_OK, NULL);
	return;
fail:
	rpc_call_finish(call, NULL, err, "reading the blob failed");
}

static void read_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Google__Bytestream__ReadRequest *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	read_state_t *st = state;
	reap_errbuf_t eb = {{0}};
	char instance[REAP_INSTANCE_MAX + 1];
	cas_resource_t res;
	int err;

	err = cas_resource_parse(req->resource_name, strlen(req->resource_name), false, &res, &eb);
	if (err == REAP_OK)
		err = cas_admit(svc, call, res.instance, res.instance_len, 0, AUTH_CAS_READ, NULL, &eb);
	if (err != REAP_OK)
		goto fail;
	if (req->read_offset < 0) {
		err = reap_errf(&eb, REAP_E_RANGE, "read_offset is negative");
		goto fail;
	}
	if (req->read_limit < 0) {
		err = reap_errf(&eb, REAP_E_INVALID, "read_limit is negative");
		goto fail;
	}
	instance_copy(&res, instance);
	err = cas_visible_one(svc, instance, &res.digest);
	if (err == REAP_OK)
		err = cas_reader_open(svc->store, &res.digest, &st->r);
	if (err != REAP_OK) {
		char hex[REAP_HASH_HEX_LEN + 1];
		reap_digest_hex(&res.digest, hex);
		reap_errf(&eb, err, "blob %s/%lld is not in the CAS", hex, (long long)res.digest.size);
		goto fail;
	}
	st->chunk = svc->cfg.read_chunk_bytes;
	if (res.compressed) {
		st->zc = ZSTD_createCStream();
		st->zin_buf = malloc(st->chunk);
		if (st->zc == NULL || st->zin_buf == NULL) {
			err = REAP_E_NOMEM;
			goto fail;
		}
		ZSTD_CCtx_setParameter(st->zc, ZSTD_c_compressionLevel, 1);
		st->skip = req->read_offset;
		st->left = req->read_limit > 0 ? req->read_limit : -1;
	} else {
		int64_t size = cas_reader_size(st->r);
		if (req->read_offset > size) {
			err = reap_errf(&eb, REAP_E_RANGE, "read_offset %lld is past the blob's size %lld",
					(long long)req->read_offset, (long long)size);
			goto fail;
		}
		st->off = req->read_offset;
		st->end = size;
		if (req->read_limit > 0 && req->read_limit < size - st->off)
			st->end = st->off + req->read_limit;
	}
	read_next(call, st);
	return;
fail:
	cas_finish(call, NULL, err, &eb);
}

static void read_sent(rpc_call_t *call, void *state)
{
	read_next(call, state);
}

static void read_done(rpc_call_t *call, void *state, bool ok)
{
	read_state_t *st = state;
	cas_reader_free(st->r);
	ZSTD_freeCStream(st->zc);
	free(st->zin_buf);
}

void cas_bytestream_methods(cas_service_t *svc)
{
	const rpc_method_t ms[] = {
		{.path = SVC "Read", .kind = RPC_SERVER_STREAMING,
		 .request = &google__bytestream__read_request__descriptor,
		 .state_size = sizeof(read_state_t), .on_request = read_request,
		 .on_sent = read_sent, .on_done = read_done},
		{.path = SVC "Write", .kind = RPC_CLIENT_STREAMING,
		 .request = &google__bytestream__write_request__descriptor,
		 .state_size = sizeof(write_state_t), .on_raw_message = write_message,
		 .on_half_close = write_half_close, .on_done = write_done},
		{.path = SVC "QueryWriteStatus", .kind = RPC_UNARY,
		 .request = &google__bytestream__query_write_status_request__descriptor,
		 .on_request = query_write_status},
	};
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		cas_add_method(svc, &ms[i]);
}
