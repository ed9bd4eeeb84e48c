/*
 * cas_upload.c - the writing half of the worker's CAS client (cas_client.c):
 * ByteStream Write and BatchUpdateBlobs, behind wrk_cas_put_many,
 * wrk_cas_put and wrk_cas_put_file.
 *
 * Uploads skip what FindMissingBlobs says the server has, group small blobs
 * into BatchUpdateBlobs calls of at most max_batch bytes, and stream larger
 * ones in 1 MiB ByteStream messages. Files are read with pread, so the
 * caller's file offset is left alone, and a large file is hashed in one pass
 * and streamed again in a second: the server verifies the digest, so a file
 * that changed in between is refused rather than stored under the wrong one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "google/bytestream/bytestream.pb-c.h"
#include "worker/worker_int.h"

#define CHUNK ((size_t)1 << 20)             /* ByteStream message size and file read size */

/* ---- writing ---- */

/* Where upload bytes come from: exactly n bytes at offset off into buf. */
typedef int (*source_fn)(void *ctx, int64_t off, void *buf, size_t n, reap_errbuf_t *eb);

static int mem_source(void *ctx, int64_t off, void *buf, size_t n, reap_errbuf_t *eb)
{
	memcpy(buf, (const uint8_t *)ctx + off, n);
	return REAP_OK;
}

/* Read exactly n bytes at off (pread, so the fd's offset is untouched). */
static int pread_full(int fd, int64_t off, void *buf, size_t n, size_t *got, reap_errbuf_t *eb)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = pread(fd, (uint8_t *)buf + done, n - done, (off_t)(off + (int64_t)done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return reap_errf(eb, REAP_E_IO, "read: %s", strerror(errno));
		if (r == 0)
			break;
		done += (size_t)r;
	}
	*got = done;
	return REAP_OK;
}

static int fd_source(void *ctx, int64_t off, void *buf, size_t n, reap_errbuf_t *eb)
{
	size_t got;
	int err = pread_full(*(const int *)ctx, off, buf, n, &got, eb);
	if (err == REAP_OK && got != n)
		err = reap_errf(eb, REAP_E_IO, "the file shrank while it was uploaded");
	return err;
}

/* ByteStream Write of d from source, 1 MiB per message. */
static int bs_write(wrk_cas_t *c, const reap_digest_t *d, source_fn source, void *ctx,
		    reap_errbuf_t *eb)
{
	Google__Bytestream__WriteResponse *wr = NULL;
	rpc_status_t st = {0};
	rpc_stream_t *s = NULL;
	int64_t off = 0, committed = -1;
	uint8_t *buf = malloc(CHUNK);
	char *name = wrk_cas_resource_name(c, d, true);
	int err = REAP_OK;

	if (buf == NULL || name == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	s = rpc_stream_open(c->ch, WRK_BS_SVC "Write", wrk_cas_timeout_for(d->size));
	if (s == NULL) {
		err = reap_errf(eb, REAP_E_UNAVAILABLE, "ByteStream Write: could not start the call");
		goto out;
	}
	do {
		Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
		size_t n = d->size - off < (int64_t)CHUNK ? (size_t)(d->size - off) : CHUNK;

		if ((err = source(ctx, off, buf, n, eb)) != REAP_OK) {
			rpc_stream_cancel(s);
			s = NULL;
			goto out;
		}
		w.resource_name = off == 0 ? name : (char *)"";
		w.write_offset = off;
		w.data.data = buf;
		w.data.len = n;
		w.finish_write = off + (int64_t)n == d->size;
		if (rpc_stream_send(s, &w.base) != REAP_OK)
			break; /* the server ended the call: already stored, or an error */
		off += (int64_t)n;
	} while (off < d->size);
	if (rpc_stream_recv(s, &google__bytestream__write_response__descriptor,
			    (ProtobufCMessage **)&wr) == 1)
		committed = wr->committed_size;
	err = wrk_cas_call_err(rpc_stream_finish(s, &st), &st, "ByteStream Write", eb);
	s = NULL;
	if (err == REAP_OK && committed != d->size)
		err = reap_errf(eb, REAP_E_DATA_LOSS, "ByteStream Write: server committed %lld of %lld bytes",
				(long long)committed, (long long)d->size);
out:
	if (wr != NULL)
		protobuf_c_message_free_unpacked(&wr->base, NULL);
	rpc_status_destroy(&st);
	free(buf);
	free(name);
	return err;
}

/* BatchUpdateBlobs of k blobs (their total within max_batch). */
static int batch_update(wrk_cas_t *c, const wrk_blob_t *const *blobs, size_t k, reap_errbuf_t *eb)
{
	WRK_RE(BatchUpdateBlobsRequest) req = WRK_RE_INIT(BATCH_UPDATE_BLOBS_REQUEST);
	WRK_RE(BatchUpdateBlobsResponse) *resp = NULL;
	WRK_RE(BatchUpdateBlobsRequest__Request) *rs = calloc(k, sizeof(*rs));
	WRK_RE(BatchUpdateBlobsRequest__Request) **rps = calloc(k, sizeof(*rps));
	WRK_RE(Digest) *pds = calloc(k, sizeof(*pds));
	char(*hex)[REAP_HASH_HEX_LEN + 1] = calloc(k, sizeof(*hex));
	rpc_status_t st = {0};
	int64_t total = 0;
	int err;

	if (rs == NULL || rps == NULL || pds == NULL || hex == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < k; i++) {
		WRK_RE_FN(batch_update_blobs_request__request__init)(&rs[i]);
		WRK_RE_FN(digest__init)(&pds[i]);
		reap_digest_hex(&blobs[i]->digest, hex[i]);
		pds[i].hash = hex[i];
		pds[i].size_bytes = blobs[i]->digest.size;
		rs[i].digest = &pds[i];
		rs[i].data.data = (uint8_t *)blobs[i]->data;
		rs[i].data.len = blobs[i]->len;
		rps[i] = &rs[i];
		total += (int64_t)blobs[i]->len;
	}
	req.instance_name = c->instance;
	req.n_requests = k;
	req.requests = rps;
	err = rpc_unary(c->ch, WRK_CAS_SVC "BatchUpdateBlobs", &req.base,
			&WRK_RE_FN(batch_update_blobs_response__descriptor), (ProtobufCMessage **)&resp,
			&st, wrk_cas_timeout_for(total));
	err = wrk_cas_call_err(err, &st, "BatchUpdateBlobs", eb);
	if (err != REAP_OK)
		goto out;
	if (resp->n_responses != k) {
		err = reap_errf(eb, REAP_E_INTERNAL, "BatchUpdateBlobs: %zu answers for %zu blobs",
				resp->n_responses, k);
		goto out;
	}
	for (size_t i = 0; i < resp->n_responses; i++) {
		const Google__Rpc__Status *rst = resp->responses[i]->status;
		if (rst == NULL || rst->code == 0)
			continue;
		err = rpc_err_from_code(rst->code);
		err = reap_errf(eb, err, "BatchUpdateBlobs: %s", rst->message != NULL && rst->message[0]
									 ? rst->message
									 : reap_strerror(err));
		goto out;
	}
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	free(rs);
	free(rps);
	free(pds);
	free(hex);
	return err;
}

int wrk_cas_put_many(wrk_cas_t *c, const wrk_blob_t *blobs, size_t n, reap_errbuf_t *eb)
{
	reap_digest_t *ds = NULL;
	bool *present = NULL;
	const wrk_blob_t **group = NULL;
	wrk_dmap_t queued = {0};
	size_t ng = 0, bytes = 0;
	int err = REAP_OK;

	if (n == 0)
		return REAP_OK;
	ds = malloc(n * sizeof(*ds));
	present = malloc(n * sizeof(*present));
	group = malloc(n * sizeof(*group));
	if (ds == NULL || present == NULL || group == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		ds[i] = blobs[i].digest;
	if ((err = wrk_cas_find(c, ds, n, present, eb)) != REAP_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		wrk_dmap_slot_t *slot;
		bool added;
		if (present[i] || reap_digest_is_empty(&blobs[i].digest))
			continue;
		if ((err = wrk_dmap_put(&queued, &blobs[i].digest, &slot, &added)) != REAP_OK)
			goto out;
		if (!added)
			continue; /* the same blob twice in one call */
		if (blobs[i].len > c->max_batch) {
			err = bs_write(c, &blobs[i].digest, mem_source, (void *)blobs[i].data, eb);
			if (err != REAP_OK)
				goto out;
			continue;
		}
		if (bytes + blobs[i].len > c->max_batch) {
			if ((err = batch_update(c, group, ng, eb)) != REAP_OK)
				goto out;
			ng = 0;
			bytes = 0;
		}
		group[ng++] = &blobs[i];
		bytes += blobs[i].len;
	}
	if (ng > 0)
		err = batch_update(c, group, ng, eb);
out:
	wrk_dmap_destroy(&queued);
	free(ds);
	free(present);
	free(group);
	return err;
}

int wrk_cas_put(wrk_cas_t *c, const void *data, size_t len, reap_digest_t *out,
		reap_errbuf_t *eb)
{
	wrk_blob_t b = {.data = data, .len = len};

	if (reap_digest_of(data, len, &b.digest) != REAP_OK)
		return REAP_E_NOMEM;
	if (out != NULL)
		*out = b.digest;
	return wrk_cas_put_many(c, &b, 1, eb);
}

/*
 * Files: one pass hashes the file, keeping its bytes while they fit in a
 * batch; a small file then goes up from memory, a large one is streamed
 * again from the fd (the server verifies it, so a file that changed in
 * between is refused rather than stored under the wrong digest).
 */
int wrk_cas_put_file(wrk_cas_t *c, int fd, reap_digest_t *out, reap_errbuf_t *eb)
{
	reap_hasher_t h = {0};
	reap_digest_t d;
	uint8_t *keep = NULL, *chunk = NULL;
	size_t kept = 0;
	bool small = true, present = false;
	int64_t off = 0;
	int err;

	if (reap_hasher_init(&h) != REAP_OK || (chunk = malloc(CHUNK)) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (;;) {
		size_t got;
		if ((err = pread_full(fd, off, chunk, CHUNK, &got, eb)) != REAP_OK)
			goto out;
		if (got == 0)
			break;
		reap_hasher_update(&h, chunk, got);
		off += (int64_t)got;
		if (small && kept + got <= c->max_batch) {
			uint8_t *nk = realloc(keep, kept + got);
			if (nk == NULL) {
				err = REAP_E_NOMEM;
				goto out;
			}
			keep = nk;
			memcpy(keep + kept, chunk, got);
			kept += got;
		} else if (small) {
			small = false;
			free(keep);
			keep = NULL;
			kept = 0;
		}
	}
	reap_hasher_final(&h, &d);
	if (out != NULL)
		*out = d;
	if (small) {
		wrk_blob_t b = {.data = keep != NULL ? keep : (const void *)"", .len = kept, .digest = d};
		err = wrk_cas_put_many(c, &b, 1, eb);
		goto out;
	}
	if ((err = wrk_cas_find(c, &d, 1, &present, eb)) != REAP_OK || present)
		goto out;
	err = bs_write(c, &d, fd_source, &fd, eb);
out:
	reap_hasher_destroy(&h);
	free(keep);
	free(chunk);
	return err;
}
