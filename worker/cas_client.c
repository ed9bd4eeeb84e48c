/*
 * cas_client.c - the worker's CAS client: blobs over plain REAPI on a
 * borrowed rpc channel (BatchReadBlobs, ByteStream Read and Write,
 * FindMissingBlobs, BatchUpdateBlobs, GetTree). The uploads (ByteStream
 * Write, BatchUpdateBlobs) live in cas_upload.c.
 *
 * The server is not trusted to return the right bytes: every blob read is
 * hashed as it arrives and refused (REAP_E_DATA_LOSS) unless it matches the
 * digest asked for, and nothing larger than the digest's size is accepted.
 * Large blobs are streamed (ByteStream, 1 MiB messages) so neither a
 * download into a file nor an upload from one holds the blob in memory;
 * uploads of files are read with pread, so the caller's file offset is left
 * alone. Every call has a deadline: 60 s plus one second per MiB.
 *
 * Thread-safe: the client holds no mutable state besides a statistics
 * counter, and the rpc channel may be shared by many threads.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "google/bytestream/bytestream.pb-c.h"
#include "worker/worker_int.h"

#define FIND_BATCH 10000                    /* digests per FindMissingBlobs */
#define DEFAULT_MAX_BATCH ((size_t)1 << 20) /* when Capabilities gave none */
#define BASE_TIMEOUT_MS 60000
#define TREE_TIMEOUT_MS 120000 /* one GetTree page */
#define MAX_TREE_PAGES 10000

/* ---- small helpers ---- */

/* Deadline for moving bytes: 60 s plus 1 s per MiB (so >= 1 MiB/s). */
int wrk_cas_timeout_for(int64_t bytes)
{
	int64_t ms = BASE_TIMEOUT_MS + (bytes > 0 ? bytes / (1 << 20) * 1000 : 0);
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Turn a finished call into a reap error (rc: the rpc layer's own result). */
int wrk_cas_call_err(int rc, const rpc_status_t *st, const char *what, reap_errbuf_t *eb)
{
	if (rc != REAP_OK)
		return reap_errf(eb, rc == REAP_E_INVALID ? REAP_E_INTERNAL : rc, "%s: %s", what,
				 reap_strerror(rc));
	if (st->code == 0)
		return REAP_OK;
	int err = rpc_err_from_code(st->code);
	return reap_errf(eb, err, "%s: %s", what, st->msg[0] != '\0' ? st->msg : reap_strerror(err));
}

int wrk_digest_from_pb(const WRK_RE(Digest) *pb, reap_digest_t *out, reap_errbuf_t *eb)
{
	if (pb == NULL || pb->hash == NULL) {
		memset(out, 0, sizeof(*out));
		return reap_errf(eb, REAP_E_INVALID, "digest is missing");
	}
	return reap_digest_parse(pb->hash, strlen(pb->hash), pb->size_bytes, out, eb);
}

WRK_RE(Digest) *wrk_digest_pb_new(const reap_digest_t *d)
{
	WRK_RE(Digest) *pb = malloc(sizeof(*pb));
	char *hex = malloc(REAP_HASH_HEX_LEN + 1);

	if (pb == NULL || hex == NULL) {
		free(pb);
		free(hex);
		return NULL;
	}
	WRK_RE_FN(digest__init)(pb);
	reap_digest_hex(d, hex);
	pb->hash = hex;
	pb->size_bytes = d->size;
	return pb;
}

void wrk_digest_pb_free(WRK_RE(Digest) *pb)
{
	if (pb == NULL)
		return;
	free(pb->hash);
	free(pb);
}

void wrk_blob_name(const reap_digest_t *d, char out[WRK_BLOB_NAME_LEN])
{
	char hex[REAP_HASH_HEX_LEN + 1];
	reap_digest_hex(d, hex);
	snprintf(out, WRK_BLOB_NAME_LEN, "blobs/%s/%lld", hex, (long long)d->size);
}

/* A ByteStream resource name for d (read, or a fresh upload). NULL on allocation failure. */
char *wrk_cas_resource_name(const wrk_cas_t *c, const reap_digest_t *d, bool upload)
{
	char hex[REAP_HASH_HEX_LEN + 1], id[37], *name = NULL;
	const char *sep = c->instance[0] != '\0' ? "/" : "";
	int n;

	reap_digest_hex(d, hex);
	if (upload) {
		uuid_t u;
		uuid_generate_random(u);
		uuid_unparse_lower(u, id);
		n = asprintf(&name, "%s%suploads/%s/blobs/%s/%lld", c->instance, sep, id, hex,
			     (long long)d->size);
	} else {
		n = asprintf(&name, "%s%sblobs/%s/%lld", c->instance, sep, hex, (long long)d->size);
	}
	return n < 0 ? NULL : name;
}

/* ---- lifecycle ---- */

wrk_cas_t *wrk_cas_new(rpc_channel_t *ch, const char *instance, size_t max_batch)
{
	wrk_cas_t *c;

	if (ch == NULL)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->ch = ch;
	c->instance = strdup(instance != NULL ? instance : "");
	c->max_batch = max_batch != 0 ? max_batch : DEFAULT_MAX_BATCH;
	atomic_init(&c->downloads, 0);
	if (c->instance == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

void wrk_cas_free(wrk_cas_t *c)
{
	if (c == NULL)
		return;
	free(c->instance);
	free(c);
}

size_t wrk_cas_max_batch(const wrk_cas_t *c)
{
	return c->max_batch;
}

uint64_t wrk_cas_downloads(const wrk_cas_t *c)
{
	return atomic_load(&c->downloads);
}

/* ---- reading ---- */

/* Where streamed bytes go. */
typedef int (*sink_fn)(void *ctx, const uint8_t *p, size_t n, reap_errbuf_t *eb);

typedef struct mem_sink {
	uint8_t *buf;
	size_t len, cap;
} mem_sink_t;

static int mem_sink(void *ctx, const uint8_t *p, size_t n, reap_errbuf_t *eb)
{
	mem_sink_t *m = ctx;
	if (n > m->cap - m->len)
		return reap_errf(eb, REAP_E_DATA_LOSS, "server sent more bytes than the blob has");
	memcpy(m->buf + m->len, p, n);
	m->len += n;
	return REAP_OK;
}

static int fd_sink(void *ctx, const uint8_t *p, size_t n, reap_errbuf_t *eb)
{
	int fd = *(const int *)ctx;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return reap_errf(eb, errno == ENOSPC || errno == EDQUOT ? REAP_E_EXHAUSTED : REAP_E_IO,
					 "write: %s", w < 0 ? strerror(errno) : "no progress");
		p += w;
		n -= (size_t)w;
	}
	return REAP_OK;
}

/*
 * ByteStream Read of all of d into sink, hashed on the way: more bytes than
 * d's size, fewer, or the wrong hash are REAP_E_DATA_LOSS.
 */
static int bs_read(wrk_cas_t *c, const reap_digest_t *d, sink_fn sink, void *ctx,
		   reap_errbuf_t *eb)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	Google__Bytestream__ReadResponse *m = NULL;
	rpc_status_t st = {0};
	rpc_stream_t *s = NULL;
	reap_hasher_t h = {0};
	reap_digest_t got;
	int64_t n = 0;
	int err = REAP_OK, r = 0;
	char *name = wrk_cas_resource_name(c, d, false);

	if (name == NULL || reap_hasher_init(&h) != REAP_OK) {
		err = REAP_E_NOMEM;
		goto out;
	}
	s = rpc_stream_open(c->ch, WRK_BS_SVC "Read", wrk_cas_timeout_for(d->size));
	if (s == NULL) {
		err = reap_errf(eb, REAP_E_UNAVAILABLE, "ByteStream Read: could not start the call");
		goto out;
	}
	req.resource_name = name;
	/* A send that fails means the server ended the call: its status says why. */
	if (rpc_stream_send(s, &req.base) != REAP_OK || rpc_stream_close_send(s) != REAP_OK)
		r = REAP_E_UNAVAILABLE;
	while (r == 0 && err == REAP_OK &&
	       (r = rpc_stream_recv(s, &google__bytestream__read_response__descriptor,
				    (ProtobufCMessage **)&m)) == 1) {
		r = 0;
		if ((int64_t)m->data.len > d->size - n) {
			err = reap_errf(eb, REAP_E_DATA_LOSS, "ByteStream Read: more than %lld bytes",
					(long long)d->size);
		} else {
			reap_hasher_update(&h, m->data.data, m->data.len);
			n += (int64_t)m->data.len;
			err = sink(ctx, m->data.data, m->data.len, eb);
		}
		protobuf_c_message_free_unpacked(&m->base, NULL);
		m = NULL;
	}
	if (err != REAP_OK) {
		rpc_stream_cancel(s); /* our side failed: the status does not matter */
		s = NULL;
		goto out;
	}
	err = wrk_cas_call_err(rpc_stream_finish(s, &st), &st, "ByteStream Read", eb);
	s = NULL;
	if (err == REAP_OK && r < 0)
		err = reap_errf(eb, REAP_E_DATA_LOSS, "ByteStream Read: broken or malformed response");
	if (err != REAP_OK)
		goto out;
	reap_hasher_final(&h, &got);
	if (!reap_digest_eq(&got, d))
		err = reap_errf(eb, REAP_E_DATA_LOSS,
				"ByteStream Read: content (%lld bytes) does not match its digest",
				(long long)got.size);
out:
	rpc_status_destroy(&st);
	reap_hasher_destroy(&h);
	free(name);
	return err;
}

/* BatchReadBlobs of the one blob d into a new buffer (verified). */
static int batch_read(wrk_cas_t *c, const reap_digest_t *d, void **data, size_t *len,
		      reap_errbuf_t *eb)
{
	WRK_RE(BatchReadBlobsRequest) req = WRK_RE_INIT(BATCH_READ_BLOBS_REQUEST);
	WRK_RE(BatchReadBlobsResponse) *resp = NULL;
	WRK_RE(Digest) pd = WRK_RE_INIT(DIGEST), *pdp = &pd;
	rpc_status_t st = {0};
	char hex[REAP_HASH_HEX_LEN + 1];
	reap_digest_t got;
	int err;

	reap_digest_hex(d, hex);
	pd.hash = hex;
	pd.size_bytes = d->size;
	req.instance_name = c->instance;
	req.n_digests = 1;
	req.digests = &pdp;
	err = rpc_unary(c->ch, WRK_CAS_SVC "BatchReadBlobs", &req.base,
			&WRK_RE_FN(batch_read_blobs_response__descriptor), (ProtobufCMessage **)&resp,
			&st, wrk_cas_timeout_for(d->size));
	err = wrk_cas_call_err(err, &st, "BatchReadBlobs", eb);
	if (err != REAP_OK)
		goto out;
	const WRK_RE(BatchReadBlobsResponse__Response) *r = NULL;
	for (size_t i = 0; i < resp->n_responses && r == NULL; i++) {
		reap_digest_t rd;
		if (wrk_digest_from_pb(resp->responses[i]->digest, &rd, NULL) == REAP_OK &&
		    reap_digest_eq(&rd, d))
			r = resp->responses[i];
	}
	if (r == NULL) {
		err = reap_errf(eb, REAP_E_DATA_LOSS, "BatchReadBlobs: no answer for %s", hex);
		goto out;
	}
	if (r->status != NULL && r->status->code != 0) {
		err = rpc_err_from_code(r->status->code);
		err = reap_errf(eb, err, "BatchReadBlobs %s/%lld: %s", hex, (long long)d->size,
				r->status->message != NULL && r->status->message[0] != '\0'
					? r->status->message
					: reap_strerror(err));
		goto out;
	}
	if (reap_digest_of(r->data.data, r->data.len, &got) != REAP_OK) {
		err = REAP_E_NOMEM;
		goto out;
	}
	if (!reap_digest_eq(&got, d)) {
		err = reap_errf(eb, REAP_E_DATA_LOSS, "BatchReadBlobs: content does not match %s", hex);
		goto out;
	}
	if ((*data = malloc(r->data.len + 1)) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	if (r->data.len > 0)
		memcpy(*data, r->data.data, r->data.len);
	*len = r->data.len;
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	return err;
}

int wrk_cas_get(wrk_cas_t *c, const reap_digest_t *d, size_t max, void **data, size_t *len,
		reap_errbuf_t *eb)
{
	mem_sink_t m = {0};
	int err;

	*data = NULL;
	*len = 0;
	if ((uint64_t)d->size > (uint64_t)max) {
		char hex[REAP_HASH_HEX_LEN + 1];
		reap_digest_hex(d, hex);
		return reap_errf(eb, REAP_E_EXHAUSTED, "blob %s/%lld is larger than %zu bytes", hex,
				 (long long)d->size, max);
	}
	if (reap_digest_is_empty(d)) {
		*data = malloc(1);
		return *data != NULL ? REAP_OK : REAP_E_NOMEM;
	}
	if ((uint64_t)d->size <= (uint64_t)c->max_batch)
		return batch_read(c, d, data, len, eb);
	m.cap = (size_t)d->size;
	if ((m.buf = malloc(m.cap + 1)) == NULL)
		return REAP_E_NOMEM;
	err = bs_read(c, d, mem_sink, &m, eb);
	if (err != REAP_OK) {
		free(m.buf);
		return err;
	}
	*data = m.buf;
	*len = m.len;
	return REAP_OK;
}

int wrk_cas_download(wrk_cas_t *c, const reap_digest_t *d, int fd, reap_errbuf_t *eb)
{
	if (reap_digest_is_empty(d))
		return REAP_OK;
	atomic_fetch_add(&c->downloads, 1);
	return bs_read(c, d, fd_sink, &fd, eb);
}

/* ---- presence ---- */

int wrk_cas_find(wrk_cas_t *c, const reap_digest_t *ds, size_t n, bool *present,
		 reap_errbuf_t *eb)
{
	WRK_RE(Digest) *pds = NULL, **pps = NULL;
	WRK_RE(FindMissingBlobsResponse) *resp = NULL;
	char(*hex)[REAP_HASH_HEX_LEN + 1] = NULL;
	wrk_dmap_t missing = {0};
	rpc_status_t st = {0};
	size_t batch = n < FIND_BATCH ? n : FIND_BATCH;
	int err = REAP_OK;

	if (n == 0)
		return REAP_OK;
	pds = calloc(batch, sizeof(*pds));
	pps = calloc(batch, sizeof(*pps));
	hex = calloc(batch, sizeof(*hex));
	if (pds == NULL || pps == NULL || hex == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (size_t off = 0; off < n; off += batch) {
		WRK_RE(FindMissingBlobsRequest) req = WRK_RE_INIT(FIND_MISSING_BLOBS_REQUEST);
		size_t k = n - off < batch ? n - off : batch;

		for (size_t i = 0; i < k; i++) {
			WRK_RE_FN(digest__init)(&pds[i]);
			reap_digest_hex(&ds[off + i], hex[i]);
			pds[i].hash = hex[i];
			pds[i].size_bytes = ds[off + i].size;
			pps[i] = &pds[i];
		}
		req.instance_name = c->instance;
		req.n_blob_digests = k;
		req.blob_digests = pps;
		err = rpc_unary(c->ch, WRK_CAS_SVC "FindMissingBlobs", &req.base,
				&WRK_RE_FN(find_missing_blobs_response__descriptor),
				(ProtobufCMessage **)&resp, &st, BASE_TIMEOUT_MS);
		err = wrk_cas_call_err(err, &st, "FindMissingBlobs", eb);
		rpc_status_destroy(&st);
		if (err != REAP_OK)
			goto out;
		free(missing.slots);
		missing = (wrk_dmap_t){0};
		for (size_t i = 0; i < resp->n_missing_blob_digests; i++) {
			reap_digest_t md;
			wrk_dmap_slot_t *slot;
			bool added;
			if (wrk_digest_from_pb(resp->missing_blob_digests[i], &md, NULL) != REAP_OK)
				continue; /* not one we asked about */
			if ((err = wrk_dmap_put(&missing, &md, &slot, &added)) != REAP_OK)
				goto out;
		}
		for (size_t i = 0; i < k; i++)
			present[off + i] = wrk_dmap_find(&missing, &ds[off + i]) == NULL;
		protobuf_c_message_free_unpacked(&resp->base, NULL);
		resp = NULL;
	}
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	wrk_dmap_destroy(&missing);
	free(pds);
	free(pps);
	free(hex);
	return err;
}

/* ---- GetTree ---- */

int wrk_cas_get_tree(wrk_cas_t *c, const reap_digest_t *root,
		     int (*fn)(void *ctx, const WRK_RE(Directory) *dir), void *ctx,
		     reap_errbuf_t *eb)
{
	char hex[REAP_HASH_HEX_LEN + 1], *token = strdup("");
	WRK_RE(Digest) pd = WRK_RE_INIT(DIGEST);
	rpc_status_t st = {0};
	size_t total = 0;
	int err = REAP_OK;

	if (token == NULL)
		return REAP_E_NOMEM;
	reap_digest_hex(root, hex);
	pd.hash = hex;
	pd.size_bytes = root->size;
	for (int page = 0; page < MAX_TREE_PAGES; page++) {
		WRK_RE(GetTreeRequest) req = WRK_RE_INIT(GET_TREE_REQUEST);
		WRK_RE(GetTreeResponse) *m = NULL;
		char *next = NULL;
		size_t before = total;
		rpc_stream_t *s = rpc_stream_open(c->ch, WRK_CAS_SVC "GetTree", TREE_TIMEOUT_MS);
		int r;

		if (s == NULL) {
			err = reap_errf(eb, REAP_E_UNAVAILABLE, "GetTree: could not start the call");
			goto out;
		}
		req.instance_name = c->instance;
		req.root_digest = &pd;
		req.page_token = token;
		r = 0;
		if (rpc_stream_send(s, &req.base) != REAP_OK || rpc_stream_close_send(s) != REAP_OK)
			r = REAP_E_UNAVAILABLE; /* the status says why */
		while (r == 0 && err == REAP_OK &&
		       (r = rpc_stream_recv(s, &WRK_RE_FN(get_tree_response__descriptor),
					    (ProtobufCMessage **)&m)) == 1) {
			r = 0;
			for (size_t i = 0; err == REAP_OK && i < m->n_directories; i++) {
				if (++total > WRK_MAX_ENTRIES)
					err = reap_errf(eb, REAP_E_EXHAUSTED,
							"GetTree: more than %d directories", WRK_MAX_ENTRIES);
				else
					err = fn(ctx, m->directories[i]);
			}
			if (err == REAP_OK && m->next_page_token != NULL && m->next_page_token[0] != '\0') {
				free(next);
				if ((next = strdup(m->next_page_token)) == NULL)
					err = REAP_E_NOMEM;
			}
			protobuf_c_message_free_unpacked(&m->base, NULL);
			m = NULL;
		}
		if (err != REAP_OK) {
			rpc_stream_cancel(s);
			free(next);
			goto out;
		}
		err = wrk_cas_call_err(rpc_stream_finish(s, &st), &st, "GetTree", eb);
		rpc_status_destroy(&st);
		if (err == REAP_OK && r < 0)
			err = reap_errf(eb, REAP_E_UNAVAILABLE, "GetTree: broken or malformed response");
		if (err != REAP_OK || next == NULL || total == before) {
			free(next); /* done, failed, or a token that makes no progress */
			goto out;
		}
		free(token);
		token = next;
	}
out:
	free(token);
	return err;
}
