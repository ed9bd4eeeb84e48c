/*
 * scen_cas.c - GetCapabilities, and the find-missing and batch-update
 * scenarios (ContentAddressableStorage unary calls).
 *
 * find-missing: fm_digests/2 tiny blobs are uploaded first (untimed, with
 * BatchUpdateBlobs); then each of fm_requests FindMissingBlobs calls asks
 * about all of them mixed (in a fixed shuffled order) with as many fresh
 * random digests, so half the answer is "missing". The server must report
 * exactly the fresh half.
 *
 * batch-update: bu_count distinct random blobs of bu_size bytes, packed into
 * BatchUpdateBlobs calls as large as the batch budget allows (the server's
 * advertised max_batch_total_size_bytes, counting BENCH_BATCH_BLOB_OVERHEAD
 * bytes of framing per blob so servers that bound the whole message accept
 * them too), bu_parallel calls at a time. Every per-blob status must be OK.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "google/rpc/status.pb-c.h"

#define DEFAULT_BATCH_BUDGET ((size_t)(4u << 20) - (64u << 10)) /* gRPC's default 4 MiB message */
#define TINY_BLOB 64

int bench_capabilities(bench_ctx_t *c, char *err, size_t errlen)
{
	RE(GetCapabilitiesRequest) req = RE_INIT(GET_CAPABILITIES_REQUEST);
	RE(ServerCapabilities) *caps = NULL;
	rpc_status_t st = {0};
	rpc_channel_t *ch;
	char sbuf[320];
	int rc = -1;

	if (c->caps_done)
		return 0;
	if (c->keep == NULL && (c->keep = bench_channel(c)) == NULL) {
		snprintf(err, errlen, "cannot create a channel to %s", c->o.target);
		return -1;
	}
	ch = c->keep;
	req.instance_name = (char *)c->o.instance;
	rpc_unary(ch, BENCH_CAPS_SVC "GetCapabilities", &req.base,
		  &build__bazel__remote__execution__v2__server_capabilities__descriptor,
		  (ProtobufCMessage **)&caps, &st, BENCH_UNARY_MS);
	if (st.code != 0 || caps == NULL) {
		snprintf(err, errlen, "GetCapabilities: %s", bench_status_text(&st, sbuf, sizeof(sbuf)));
		goto out;
	}
	if (caps->cache_capabilities != NULL) {
		c->max_batch = caps->cache_capabilities->max_batch_total_size_bytes;
		c->ac_update_enabled = caps->cache_capabilities->action_cache_update_capabilities &&
				       caps->cache_capabilities->action_cache_update_capabilities
					       ->update_enabled;
	}
	c->caps_done = true;
	printf("server %s: max_batch_total_size_bytes %" PRId64 ", AC update %s\n", c->o.target,
	       c->max_batch, c->ac_update_enabled ? "enabled" : "not advertised");
	rc = 0;
out:
	if (caps != NULL)
		protobuf_c_message_free_unpacked(&caps->base, NULL);
	rpc_status_destroy(&st);
	return rc;
}

size_t bench_batch_budget(const bench_ctx_t *c)
{
	if (c->o.bu_max_batch > 0)
		return c->o.bu_max_batch;
	if (c->max_batch > 0)
		return (size_t)c->max_batch;
	return DEFAULT_BATCH_BUDGET;
}

/* ---- batches ---- */

typedef struct bu_batch {
	RE(BatchUpdateBlobsRequest) req;
	RE(BatchUpdateBlobsRequest__Request) *items;
	RE(BatchUpdateBlobsRequest__Request) **ptrs;
	RE(Digest) *dg;
	char (*hex)[REAP_HASH_HEX_LEN + 1];
} bu_batch_t;

/* How many blobs from lens[0..n) fit in one batch (at least one). */
static size_t batch_fit(size_t budget, const size_t *lens, size_t n)
{
	size_t used = 0, k = 0;
	while (k < n && (k == 0 || used + lens[k] + BENCH_BATCH_BLOB_OVERHEAD <= budget)) {
		used += lens[k] + BENCH_BATCH_BLOB_OVERHEAD;
		k++;
	}
	return k;
}

static void batch_destroy(bu_batch_t *b)
{
	free(b->items);
	free(b->ptrs);
	free(b->dg);
	free(b->hex);
	memset(b, 0, sizeof(*b));
}

/* A request over n blobs (data borrowed). 0 or -1 (no memory). */
static int batch_build(bu_batch_t *b, const bench_ctx_t *c, uint8_t *const *data,
		       const size_t *lens, const reap_digest_t *ds, size_t n)
{
	RE(BatchUpdateBlobsRequest) init = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST);

	memset(b, 0, sizeof(*b));
	b->items = calloc(n, sizeof(*b->items));
	b->ptrs = calloc(n, sizeof(*b->ptrs));
	b->dg = calloc(n, sizeof(*b->dg));
	b->hex = calloc(n, sizeof(*b->hex));
	if (b->items == NULL || b->ptrs == NULL || b->dg == NULL || b->hex == NULL) {
		batch_destroy(b);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		RE(BatchUpdateBlobsRequest__Request) it = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST__REQUEST);
		RE(Digest) dg = RE_INIT(DIGEST);
		reap_digest_hex(&ds[i], b->hex[i]);
		dg.hash = b->hex[i];
		dg.size_bytes = ds[i].size;
		b->dg[i] = dg;
		it.digest = &b->dg[i];
		it.data.data = data[i];
		it.data.len = lens[i];
		b->items[i] = it;
		b->ptrs[i] = &b->items[i];
	}
	b->req = init;
	b->req.instance_name = (char *)c->o.instance;
	b->req.n_requests = n;
	b->req.requests = b->ptrs;
	return 0;
}

/* Send one batch; 0 when the call and every blob's status are OK. */
static int batch_send(rpc_channel_t *ch, const bu_batch_t *b, char *err, size_t errlen)
{
	RE(BatchUpdateBlobsResponse) *resp = NULL;
	rpc_status_t st = {0};
	char sbuf[320];
	int rc = -1;

	rpc_unary(ch, BENCH_CAS_SVC "BatchUpdateBlobs", &b->req.base,
		  &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
		  (ProtobufCMessage **)&resp, &st, BENCH_UNARY_MS);
	if (st.code != 0 || resp == NULL) {
		snprintf(err, errlen, "BatchUpdateBlobs (%zu blobs): %s", b->req.n_requests,
			 bench_status_text(&st, sbuf, sizeof(sbuf)));
		goto out;
	}
	if (resp->n_responses != b->req.n_requests) {
		snprintf(err, errlen, "BatchUpdateBlobs: %zu responses for %zu blobs",
			 resp->n_responses, b->req.n_requests);
		goto out;
	}
	for (size_t i = 0; i < resp->n_responses; i++) {
		const Google__Rpc__Status *s = resp->responses[i]->status;
		if (s != NULL && s->code != 0) {
			snprintf(err, errlen, "BatchUpdateBlobs: blob %zu: code %d: %s", i, s->code,
				 s->message ? s->message : "");
			goto out;
		}
	}
	rc = 0;
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	return rc;
}

int bench_upload_small(bench_ctx_t *c, rpc_channel_t *ch, uint8_t *const *data,
		       const size_t *lens, const reap_digest_t *ds, size_t n, char *err,
		       size_t errlen)
{
	size_t budget = bench_batch_budget(c);

	for (size_t at = 0; at < n;) {
		size_t k = batch_fit(budget, lens + at, n - at);
		bu_batch_t b;
		int rc;
		if (batch_build(&b, c, data + at, lens + at, ds + at, k) != 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		rc = batch_send(ch, &b, err, errlen);
		batch_destroy(&b);
		if (rc != 0)
			return -1;
		at += k;
	}
	return 0;
}

/* ---- find-missing ---- */

typedef struct fm_worker {
	bench_ctx_t *c;
	bench_run_t *run;
	const reap_digest_t *present;
	size_t n_present;
	uint64_t rng;
	bench_lat_t lat;
	int64_t digests;
} fm_worker_t;

static void *fm_thread(void *arg)
{
	fm_worker_t *w = arg;
	const bench_ctx_t *c = w->c;
	size_t d = (size_t)c->o.fm_digests, np = w->n_present, nm = d - np;
	RE(FindMissingBlobsRequest) req = RE_INIT(FIND_MISSING_BLOBS_REQUEST);
	RE(Digest) *dg = calloc(d, sizeof(*dg));
	RE(Digest) **ptrs = calloc(d, sizeof(*ptrs));
	char (*hex)[REAP_HASH_HEX_LEN + 1] = calloc(d, sizeof(*hex));
	rpc_channel_t *ch = bench_channel(c);
	char sbuf[320];

	if (dg == NULL || ptrs == NULL || hex == NULL || ch == NULL) {
		bench_run_fail(w->run, "find-missing: cannot set up a worker");
		goto out;
	}
	/* slots [0, np) are the present blobs, [np, d) fresh each request */
	for (size_t i = 0; i < d; i++) {
		RE(Digest) init = RE_INIT(DIGEST);
		dg[i] = init;
		dg[i].hash = hex[i];
		if (i < np) {
			reap_digest_hex(&w->present[i], hex[i]);
			dg[i].size_bytes = w->present[i].size;
		}
		ptrs[i] = &dg[i];
	}
	for (size_t i = d; i > 1; i--) { /* one fixed interleaving */
		size_t j = (size_t)(bench_rng_next(&w->rng) % i);
		RE(Digest) *t = ptrs[i - 1];
		ptrs[i - 1] = ptrs[j];
		ptrs[j] = t;
	}
	req.instance_name = (char *)c->o.instance;
	req.n_blob_digests = d;
	req.blob_digests = ptrs;
	while (!atomic_load(&w->run->stop)) {
		RE(FindMissingBlobsResponse) *resp = NULL;
		rpc_status_t st = {0};
		if (atomic_fetch_add(&w->run->next, 1) >= c->o.fm_requests)
			break;
		for (size_t i = np; i < d; i++) {
			reap_digest_t rd;
			int64_t size = 1 + (int64_t)(bench_rng_next(&w->rng) % (1u << 20));
			bench_random_digest(&w->rng, size, &rd, hex[i]);
			dg[i].size_bytes = size;
		}
		double t0 = bench_now();
		rpc_unary(ch, BENCH_CAS_SVC "FindMissingBlobs", &req.base,
			  &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
			  (ProtobufCMessage **)&resp, &st, BENCH_UNARY_MS);
		double ms = (bench_now() - t0) * 1e3;
		if (st.code != 0 || resp == NULL)
			bench_run_fail(w->run, "FindMissingBlobs: %s",
				       bench_status_text(&st, sbuf, sizeof(sbuf)));
		else if (resp->n_missing_blob_digests != nm)
			bench_run_fail(w->run, "FindMissingBlobs: %zu reported missing, expected %zu",
				       resp->n_missing_blob_digests, nm);
		else {
			bench_lat_add(&w->lat, ms);
			w->digests += (int64_t)d;
		}
		if (resp != NULL)
			protobuf_c_message_free_unpacked(&resp->base, NULL);
		rpc_status_destroy(&st);
	}
out:
	rpc_channel_free(ch);
	free(hex);
	free(ptrs);
	free(dg);
	return NULL;
}

void bench_find_missing(bench_ctx_t *c, bench_result_t *r)
{
	size_t np = (size_t)c->o.fm_digests / 2;
	int k = c->o.fm_parallel;
	uint8_t *blob = NULL, **data = NULL;
	size_t *lens = NULL;
	reap_digest_t *present = NULL;
	fm_worker_t *ws = NULL;
	rpc_channel_t *ch = NULL;
	bench_lat_t all = {0};
	bench_meter_t m;
	bench_run_t run;
	int64_t digests = 0;

	r->name = "find-missing";
	r->cmp = BENCH_CMP_ABS;
	r->goal = 1e6; /* digests/s */
	snprintf(r->config, sizeof(r->config), "%d requests x %d digests (half present), %d in flight",
		 c->o.fm_requests, c->o.fm_digests, k);
	bench_run_init(&run);
	if (bench_capabilities(c, r->note, sizeof(r->note)) != 0)
		goto fail;
	blob = malloc(np * TINY_BLOB + 1);
	data = calloc(np + 1, sizeof(*data));
	lens = calloc(np + 1, sizeof(*lens));
	present = calloc(np + 1, sizeof(*present));
	ws = calloc((size_t)k, sizeof(*ws));
	if (blob == NULL || data == NULL || lens == NULL || present == NULL || ws == NULL) {
		snprintf(r->note, sizeof(r->note), "out of memory");
		goto fail;
	}
	bench_rng_fill(&c->rng_state, blob, np * TINY_BLOB);
	for (size_t i = 0; i < np; i++) {
		data[i] = blob + i * TINY_BLOB;
		lens[i] = TINY_BLOB;
		reap_digest_of(data[i], TINY_BLOB, &present[i]);
	}
	if ((ch = bench_channel(c)) == NULL) {
		snprintf(r->note, sizeof(r->note), "cannot create a channel");
		goto fail;
	}
	if (bench_upload_small(c, ch, data, lens, present, np, r->note, sizeof(r->note)) != 0)
		goto fail;
	for (int i = 0; i < k; i++) {
		ws[i].c = c;
		ws[i].run = &run;
		ws[i].present = present;
		ws[i].n_present = np;
		ws[i].rng = bench_rng_next(&c->rng_state);
	}
	bench_meter_start(&m, c->o.server_pid);
	if (bench_threads(k, fm_thread, ws, sizeof(*ws)) != 0)
		bench_run_fail(&run, "cannot start threads");
	bench_meter_stop(&m, r);
	for (int i = 0; i < k; i++) {
		digests += ws[i].digests;
		bench_lat_merge(&all, &ws[i].lat);
		bench_lat_destroy(&ws[i].lat);
	}
	r->ran = true;
	r->rate = (double)digests / r->wall_s;
	r->rate_unit = "digests/s";
	r->lat_unit = "request";
	r->p50_ms = bench_lat_pct(&all, 50);
	r->p99_ms = bench_lat_pct(&all, 99);
	if (atomic_load(&run.errors) > 0) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "%s", run.first_error);
	}
	goto out;
fail:
	r->failed = true;
out:
	bench_lat_destroy(&all);
	bench_run_destroy(&run);
	rpc_channel_free(ch);
	free(ws);
	free(present);
	free(lens);
	free(data);
	free(blob);
}

/* ---- batch-update ---- */

typedef struct bu_worker {
	bench_ctx_t *c;
	bench_run_t *run;
	const bu_batch_t *batches;
	long n_batches;
	bench_lat_t lat;
	int64_t blobs;
} bu_worker_t;

static void *bu_thread(void *arg)
{
	bu_worker_t *w = arg;
	rpc_channel_t *ch = bench_channel(w->c);
	char err[256];

	if (ch == NULL) {
		bench_run_fail(w->run, "cannot create a channel");
		return NULL;
	}
	while (!atomic_load(&w->run->stop)) {
		long i = atomic_fetch_add(&w->run->next, 1);
		if (i >= w->n_batches)
			break;
		double t0 = bench_now();
		if (batch_send(ch, &w->batches[i], err, sizeof(err)) != 0) {
			bench_run_fail(w->run, "%s", err);
			break;
		}
		bench_lat_add(&w->lat, (bench_now() - t0) * 1e3);
		w->blobs += (int64_t)w->batches[i].req.n_requests;
	}
	rpc_channel_free(ch);
	return NULL;
}

void bench_batch_update(bench_ctx_t *c, bench_result_t *r)
{
	size_t n = (size_t)c->o.bu_count, sz = c->o.bu_size, budget;
	int k = c->o.bu_parallel;
	uint8_t *blob = NULL, **data = NULL;
	size_t *lens = NULL;
	reap_digest_t *ds = NULL;
	bu_batch_t *batches = NULL;
	long nb = 0;
	bu_worker_t *ws = NULL;
	bench_lat_t all = {0};
	bench_meter_t m;
	bench_run_t run;
	int64_t blobs = 0;
	char szb[32], bb[32];

	r->name = "batch-update";
	r->cmp = BENCH_CMP_ABS;
	r->goal = 1e5; /* blobs/s of 1 KiB */
	snprintf(r->config, sizeof(r->config), "%zu x %s, %d in flight", n,
		 bench_fmt_bytes((double)sz, szb, sizeof(szb)), k);
	bench_run_init(&run);
	if (bench_capabilities(c, r->note, sizeof(r->note)) != 0)
		goto fail;
	budget = bench_batch_budget(c);
	blob = malloc(n * sz + 1);
	data = calloc(n, sizeof(*data));
	lens = calloc(n, sizeof(*lens));
	ds = calloc(n, sizeof(*ds));
	batches = calloc(n, sizeof(*batches));
	ws = calloc((size_t)k, sizeof(*ws));
	if (blob == NULL || data == NULL || lens == NULL || ds == NULL || batches == NULL ||
	    ws == NULL) {
		snprintf(r->note, sizeof(r->note), "out of memory");
		goto fail;
	}
	bench_rng_fill(&c->rng_state, blob, n * sz);
	for (size_t i = 0; i < n; i++) {
		data[i] = blob + i * sz;
		lens[i] = sz;
		reap_digest_of(data[i], sz, &ds[i]);
	}
	for (size_t at = 0; at < n; nb++) {
		size_t kk = batch_fit(budget, lens + at, n - at);
		if (batch_build(&batches[nb], c, data + at, lens + at, ds + at, kk) != 0) {
			snprintf(r->note, sizeof(r->note), "out of memory");
			goto fail;
		}
		at += kk;
	}
	snprintf(r->config, sizeof(r->config), "%zu x %s in %ld batches of <= %zu (budget %s), %d in flight",
		 n, bench_fmt_bytes((double)sz, szb, sizeof(szb)), nb, batches[0].req.n_requests,
		 bench_fmt_bytes((double)budget, bb, sizeof(bb)), k);
	for (int i = 0; i < k; i++) {
		ws[i].c = c;
		ws[i].run = &run;
		ws[i].batches = batches;
		ws[i].n_batches = nb;
	}
	bench_meter_start(&m, c->o.server_pid);
	if (bench_threads(k, bu_thread, ws, sizeof(*ws)) != 0)
		bench_run_fail(&run, "cannot start threads");
	bench_meter_stop(&m, r);
	for (int i = 0; i < k; i++) {
		blobs += ws[i].blobs;
		bench_lat_merge(&all, &ws[i].lat);
		bench_lat_destroy(&ws[i].lat);
	}
	r->ran = true;
	r->rate = (double)blobs / r->wall_s;
	r->rate_unit = "blobs/s";
	r->mbps = (double)blobs * (double)sz / r->wall_s / 1e6;
	r->lat_unit = "batch";
	r->p50_ms = bench_lat_pct(&all, 50);
	r->p99_ms = bench_lat_pct(&all, 99);
	if (atomic_load(&run.errors) > 0) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "%s", run.first_error);
	}
	goto out;
fail:
	r->failed = true;
out:
	for (long i = 0; i < nb; i++)
		batch_destroy(&batches[i]);
	bench_lat_destroy(&all);
	bench_run_destroy(&run);
	free(ws);
	free(batches);
	free(ds);
	free(lens);
	free(data);
	free(blob);
}
