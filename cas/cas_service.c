/*
 * cas_service.c - ContentAddressableStorage: FindMissingBlobs,
 * BatchUpdateBlobs and BatchReadBlobs (GetTree lives in gettree.c).
 *
 * Batches are refused whole when they exceed the advertised limit or carry
 * a malformed digest in a lookup; otherwise each blob gets its own status.
 * Every uploaded blob is verified against its digest by the store, which
 * then grants the request's instance read access to it.
 *
 * Reads are tenant-scoped (cas_visible): a blob stored for another tenant
 * is missing to FindMissingBlobs and NOT_FOUND to BatchReadBlobs, exactly
 * as if it were not stored, so the caller uploads it and proves it holds it.
 */
#include <stdlib.h>
#include <string.h>

#include "cas/cas_int.h"
#include "common/log.h"

#define SVC "/build.bazel.remote.execution.v2.ContentAddressableStorage/"

static void find_missing(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(FindMissingBlobsRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	RE(FindMissingBlobsResponse) resp = RE_INIT(FIND_MISSING_BLOBS_RESPONSE);
	reap_errbuf_t eb = {{0}};
	reap_digest_t *ds = NULL;
	bool *present = NULL;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_CAS_READ, NULL, &eb);
	if (err != REAP_OK)
		goto out;
	if (req->n_blob_digests == 0)
		goto out;
	ds = malloc(req->n_blob_digests * sizeof(*ds));
	present = malloc(req->n_blob_digests * sizeof(*present));
	resp.missing_blob_digests = malloc(req->n_blob_digests * sizeof(*resp.missing_blob_digests));
	if (ds == NULL || present == NULL || resp.missing_blob_digests == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < req->n_blob_digests; i++) {
		err = cas_digest_from_pb(req->blob_digests[i], &ds[i], &eb);
		if (err != REAP_OK)
			goto out;
	}
	err = cas_visible(svc, req->instance_name, ds, req->n_blob_digests, present, &eb);
	if (err != REAP_OK)
		goto out;
	for (size_t i = 0; i < req->n_blob_digests; i++)
		if (!present[i])
			resp.missing_blob_digests[resp.n_missing_blob_digests++] =
				req->blob_digests[i];
out:
	cas_finish(call, &resp.base, err, &eb);
	free(resp.missing_blob_digests);
	free(present);
	free(ds);
}

static void batch_update(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(BatchUpdateBlobsRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	RE(BatchUpdateBlobsResponse) resp = RE_INIT(BATCH_UPDATE_BLOBS_RESPONSE);
	RE(BatchUpdateBlobsResponse__Response) *items = NULL;
	Google__Rpc__Status *sts = NULL;
	reap_errbuf_t *ebs = NULL;
	reap_errbuf_t eb = {{0}};
	cas_put_item_t *puts = NULL;
	size_t n = req->n_requests, total = 0, np = 0;
	int *rc = NULL;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_CAS_WRITE, NULL, &eb);
	if (err != REAP_OK)
		goto out;
	for (size_t i = 0; i < n; i++)
		total += req->requests[i]->data.len;
	if (total > svc->max_batch) {
		err = reap_errf(&eb, REAP_E_INVALID,
				"batch of %zu bytes exceeds max_batch_total_size_bytes %zu; use ByteStream",
				total, svc->max_batch);
		goto out;
	}
	items = calloc(n ? n : 1, sizeof(*items));
	sts = calloc(n ? n : 1, sizeof(*sts));
	ebs = malloc((n ? n : 1) * sizeof(*ebs));
	rc = malloc((n ? n : 1) * sizeof(*rc));
	puts = malloc((n ? n : 1) * sizeof(*puts));
	resp.responses = calloc(n ? n : 1, sizeof(*resp.responses));
	if (items == NULL || sts == NULL || ebs == NULL || rc == NULL || puts == NULL ||
	    resp.responses == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	/*
	 * Uncompressed blobs go to the store together (verified one by one,
	 * committed in a few write batches); the rest one at a time.
	 */
	for (size_t i = 0; i < n; i++) {
		const RE(BatchUpdateBlobsRequest__Request) *r = req->requests[i];
		reap_digest_t d;

		ebs[i].msg[0] = '\0';
		rc[i] = cas_digest_from_pb(r->digest, &d, &ebs[i]);
		if (rc[i] != REAP_OK)
			continue;
		if (r->compressor == BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__IDENTITY)
			puts[np++] = (cas_put_item_t){.d = d, .data = r->data.data, .len = r->data.len,
						      .eb = &ebs[i]};
		else if (r->compressor == BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD)
			rc[i] = cas_put_zstd(svc->store, req->instance_name, &d, r->data.data,
					     r->data.len, &ebs[i]);
		else
			rc[i] = reap_errf(&ebs[i], REAP_E_INVALID, "compressor %d is not supported",
					  (int)r->compressor);
	}
	(void)cas_store_put_many(svc->store, req->instance_name, puts, np);
	for (size_t k = 0; k < np; k++) /* each item's errbuf is ebs[its index] */
		rc[puts[k].eb - ebs] = puts[k].rc;
	for (size_t i = 0; i < n; i++) {
		RE(BatchUpdateBlobsResponse__Response) init = RE_INIT(BATCH_UPDATE_BLOBS_RESPONSE__RESPONSE);
		items[i] = init;
		items[i].digest = req->requests[i]->digest;
		cas_status_set(&sts[i], rc[i], rc[i] == REAP_OK ? NULL : reap_errmsg(&ebs[i], rc[i]));
		items[i].status = &sts[i];
		resp.responses[i] = &items[i];
	}
	resp.n_responses = n;
out:
	cas_finish(call, &resp.base, err, &eb);
	free(resp.responses);
	free(puts);
	free(rc);
	free(ebs);
	free(sts);
	free(items);
}

static void batch_read(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(BatchReadBlobsRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	RE(BatchReadBlobsResponse) resp = RE_INIT(BATCH_READ_BLOBS_RESPONSE);
	RE(BatchReadBlobsResponse__Response) *items = NULL;
	Google__Rpc__Status *sts = NULL;
	reap_digest_t *ds = NULL;
	bool *visible = NULL;
	reap_errbuf_t eb = {{0}};
	size_t n = req->n_digests;
	uint64_t total = 0;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_CAS_READ, NULL, &eb);
	if (err != REAP_OK)
		goto out;
	items = calloc(n ? n : 1, sizeof(*items));
	sts = calloc(n ? n : 1, sizeof(*sts));
	resp.responses = calloc(n ? n : 1, sizeof(*resp.responses));
	ds = calloc(n ? n : 1, sizeof(*ds));
	visible = calloc(n ? n : 1, sizeof(*visible));
	if (items == NULL || sts == NULL || resp.responses == NULL || ds == NULL || visible == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	/* Validate everything and bound the response before reading anything. */
	for (size_t i = 0; i < n; i++) {
		err = cas_digest_from_pb(req->digests[i], &ds[i], &eb);
		if (err != REAP_OK)
			goto out;
		total += (uint64_t)ds[i].size;
	}
	if (total > svc->max_batch) {
		err = reap_errf(&eb, REAP_E_INVALID,
				"batch of %llu bytes exceeds max_batch_total_size_bytes %zu; use ByteStream",
				(unsigned long long)total, svc->max_batch);
		goto out;
	}
	err = cas_visible(svc, req->instance_name, ds, n, visible, &eb);
	if (err != REAP_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		RE(BatchReadBlobsResponse__Response) init = RE_INIT(BATCH_READ_BLOBS_RESPONSE__RESPONSE);
		void *data = NULL;
		size_t len = 0;
		int e = !visible[i] ? REAP_E_NOT_FOUND
				    : cas_store_get(svc->store, &ds[i], (size_t)ds[i].size, &data, &len);
		items[i] = init;
		items[i].digest = req->digests[i];
		items[i].data.data = data;
		items[i].data.len = len;
		cas_status_set(&sts[i], e, NULL);
		items[i].status = &sts[i];
		resp.responses[i] = &items[i];
		resp.n_responses = i + 1;
	}
out:
	cas_finish(call, &resp.base, err, &eb);
	for (size_t i = 0; i < resp.n_responses; i++)
		free(items[i].data.data);
	free(resp.responses);
	free(visible);
	free(ds);
	free(sts);
	free(items);
}

void cas_cas_methods(cas_service_t *svc)
{
	const rpc_method_t ms[] = {
		{.path = SVC "FindMissingBlobs", .kind = RPC_UNARY,
		 .request = &build__bazel__remote__execution__v2__find_missing_blobs_request__descriptor,
		 .on_request = find_missing},
		{.path = SVC "BatchUpdateBlobs", .kind = RPC_UNARY,
		 .request = &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor,
		 .on_request = batch_update},
		{.path = SVC "BatchReadBlobs", .kind = RPC_UNARY,
		 .request = &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor,
		 .on_request = batch_read},
	};
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		cas_add_method(svc, &ms[i]);
}
