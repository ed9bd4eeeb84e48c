/*
 * unzstd.c - streaming zstd decompression into a store writer, shared by
 * BatchUpdateBlobs and ByteStream compressed-blobs uploads. Output goes to
 * the writer a buffer at a time, so a small bomb cannot blow up memory; the
 * writer refuses anything past the digest's size.
 */
#include <stdlib.h>
#include <zstd.h>

#include "cas/cas_int.h"

struct cas_unzstd {
	ZSTD_DStream *zd;
	void *buf;
	size_t bufsz;
	size_t last; /* last ZSTD_decompressStream result: 0 at a frame end */
	int64_t consumed; /* compressed bytes fed */
};

cas_unzstd_t *cas_unzstd_new(void)
{
	cas_unzstd_t *u = calloc(1, sizeof(*u));
	if (u == NULL)
		return NULL;
	u->zd = ZSTD_createDStream();
	u->bufsz = ZSTD_DStreamOutSize();
	u->buf = malloc(u->bufsz);
	u->last = 1;
	if (u->zd == NULL || u->buf == NULL) {
		cas_unzstd_free(u);
		return NULL;
	}
	ZSTD_initDStream(u->zd);
	return u;
}

void cas_unzstd_free(cas_unzstd_t *u)
{
	if (u == NULL)
		return;
	ZSTD_freeDStream(u->zd);
	free(u->buf);
	free(u);
}

int64_t cas_unzstd_consumed(const cas_unzstd_t *u)
{
	return u->consumed;
}

int cas_unzstd_feed(cas_unzstd_t *u, const void *data, size_t len, cas_writer_t *w,
		    reap_errbuf_t *eb)
{
	ZSTD_inBuffer zin = {data, len, 0};
	for (;;) {
		ZSTD_outBuffer zout = {u->buf, u->bufsz, 0};
		size_t r = ZSTD_decompressStream(u->zd, &zout, &zin);
		if (ZSTD_isError(r))
			return reap_errf(eb, REAP_E_INVALID, "zstd: %s", ZSTD_getErrorName(r));
		u->last = r;
		int err = cas_writer_write(w, u->buf, zout.pos, eb);
		if (err != REAP_OK)
			return err;
		if (zin.pos == zin.size && zout.pos < zout.size)
			break;
	}
	u->consumed += (int64_t)len;
	return REAP_OK;
}

int cas_unzstd_finish(cas_unzstd_t *u, reap_errbuf_t *eb)
{
	if (u->last != 0)
		return reap_errf(eb, REAP_E_INVALID, "zstd stream is truncated");
	return REAP_OK;
}

int cas_put_zstd(cas_store_t *st, const char *scope, const reap_digest_t *d, const void *data,
		 size_t len, reap_errbuf_t *eb)
{
	cas_writer_t *w = NULL;
	cas_unzstd_t *u = cas_unzstd_new();
	int err = REAP_E_NOMEM;

	if (u == NULL)
		goto out;
	err = cas_writer_new(st, scope, d, &w, eb);
	if (err == REAP_OK)
		err = cas_unzstd_feed(u, data, len, w, eb);
	if (err == REAP_OK)
		err = cas_unzstd_finish(u, eb);
	if (err == REAP_OK)
		err = cas_writer_commit(w, eb);
out:
	cas_writer_free(w);
	cas_unzstd_free(u);
	return err;
}
