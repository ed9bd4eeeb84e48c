/*
 * ac_service.c - ActionCache: GetActionResult and UpdateActionResult.
 *
 * Reads are complete or absent: an entry is served only when every blob it
 * references (output files, stdout/stderr, output trees and the files in
 * them) is still in the CAS; otherwise the answer is NOT_FOUND, so a client
 * re-runs the action instead of failing on a download.
 *
 * Writes go through the authorization hook (only allowed identities may
 * write the cache), are validated, must reference only blobs already in the
 * CAS (FAILED_PRECONDITION with the missing ones otherwise), and inline raw
 * stdout/stderr/file contents are moved into the CAS so entries stay small.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cas/cas_int.h"
#include "common/log.h"

#define SVC "/build.bazel.remote.execution.v2.ActionCache/"
#define MAX_VIOLATIONS 32 /* keeps the PreconditionFailure under rpc's 4 KiB cap */
#define MAX_TREE_BYTES ((size_t)16 << 20) /* larger Trees: only their own digest is checked */

/* A growable list of digests to check. */
typedef struct dlist {
	reap_digest_t *d;
	size_t n, cap;
} dlist_t;

static int dlist_add_pb(dlist_t *l, const RE(Digest) *pb, reap_errbuf_t *eb)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 64;
		reap_digest_t *nd = realloc(l->d, ncap * sizeof(*nd));
		if (nd == NULL)
			return REAP_E_NOMEM;
		l->d = nd;
		l->cap = ncap;
	}
	int err = cas_digest_from_pb(pb, &l->d[l->n], eb);
	if (err == REAP_OK)
		l->n++;
	return err;
}

static int add_dir_files(dlist_t *l, const RE(Directory) *dir, reap_errbuf_t *eb)
{
	int err = REAP_OK;
	for (size_t i = 0; err == REAP_OK && i < dir->n_files; i++)
		err = dlist_add_pb(l, dir->files[i]->digest, eb);
	return err;
}

/*
 * Every digest an ActionResult references. With deep, the files inside
 * output trees too (the Tree blobs are read; a missing one is reported).
 */
static int result_digests(cas_service_t *svc, const RE(ActionResult) *ar, bool deep, dlist_t *l,
			  bool *tree_missing, reap_errbuf_t *eb)
{
	int err = REAP_OK;
	*tree_missing = false;
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_files; i++)
		err = dlist_add_pb(l, ar->output_files[i]->digest, eb);
	if (err == REAP_OK && ar->stdout_digest != NULL)
		err = dlist_add_pb(l, ar->stdout_digest, eb);
	if (err == REAP_OK && ar->stderr_digest != NULL)
		err = dlist_add_pb(l, ar->stderr_digest, eb);
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_directories; i++) {
		size_t before = l->n;
		err = dlist_add_pb(l, ar->output_directories[i]->tree_digest, eb);
		if (err != REAP_OK || !deep)
			continue;
		void *data = NULL;
		size_t len = 0;
		int gerr = cas_store_get(svc->store, &l->d[before], MAX_TREE_BYTES, &data, &len);
		if (gerr == REAP_E_NOT_FOUND) {
			*tree_missing = true;
			continue;
		}
		if (gerr != REAP_OK)
			continue; /* too large to re-check: its own digest is checked */
		RE(Tree) *tree = RE_FN(tree__unpack)(NULL, len, data);
		free(data);
		if (tree == NULL) {
			*tree_missing = true; /* unusable, treat as gone */
			continue;
		}
		if (tree->root != NULL)
			err = add_dir_files(l, tree->root, eb);
		for (size_t c = 0; err == REAP_OK && c < tree->n_children; c++)
			err = add_dir_files(l, tree->children[c], eb);
		RE_FN(tree__free_unpacked)(tree, NULL);
	}
	return err;
}

/* Fill raw bytes of blob pb into out if it fits in *budget. */
static void inline_blob(cas_service_t *svc, const RE(Digest) *pb, ProtobufCBinaryData *out,
			size_t *budget)
{
	reap_digest_t d;
	void *data = NULL;
	size_t len = 0;
	if (pb == NULL || cas_digest_from_pb(pb, &d, NULL) != REAP_OK || (size_t)d.size > *budget)
		return;
	if (cas_store_get(svc->store, &d, *budget, &data, &len) != REAP_OK)
		return;
	out->data = data;
	out->len = len;
	*budget -= len;
}

static void get_action_result(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(GetActionResultRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	reap_errbuf_t eb = {{0}};
	RE(ActionResult) *ar = NULL;
	dlist_t l = {0};
	bool *present = NULL, tree_missing = false;
	reap_digest_t action;
	void *data = NULL;
	size_t len = 0;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_AC_READ, NULL, &eb);
	if (err == REAP_OK)
		err = cas_digest_from_pb(req->action_digest, &action, &eb);
	if (err != REAP_OK)
		goto out;
	err = cas_ac_get(svc->store, req->instance_name, &action, &data, &len);
	if (err != REAP_OK)
		goto out;
	ar = RE_FN(action_result__unpack)(NULL, len, data);
	if (ar == NULL) {
		REAP_WARN("ac entry unreadable", "instance=\"%s\"", req->instance_name);
		err = REAP_E_NOT_FOUND;
		goto out;
	}
	err = result_digests(svc, ar, true, &l, &tree_missing, &eb);
	if (err != REAP_OK || tree_missing) {
		err = REAP_E_NOT_FOUND; /* an entry we cannot vouch for is no entry */
		goto out;
	}
	if (l.n > 0) {
		if ((present = malloc(l.n * sizeof(*present))) == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		err = cas_store_find(svc->store, l.d, l.n, present);
		if (err != REAP_OK)
			goto out;
		for (size_t i = 0; i < l.n; i++) {
			if (!present[i]) {
				err = reap_errf(&eb, REAP_E_NOT_FOUND,
						"cached result references blobs no longer in the CAS");
				goto out;
			}
		}
	}
	size_t budget = svc->inline_budget;
	if (req->inline_stdout)
		inline_blob(svc, ar->stdout_digest, &ar->stdout_raw, &budget);
	if (req->inline_stderr)
		inline_blob(svc, ar->stderr_digest, &ar->stderr_raw, &budget);
	for (size_t i = 0; i < ar->n_output_files; i++)
		for (size_t j = 0; j < req->n_inline_output_files; j++)
			if (strcmp(ar->output_files[i]->path, req->inline_output_files[j]) == 0)
				inline_blob(svc, ar->output_files[i]->digest,
					    &ar->output_files[i]->contents, &budget);
out:
	cas_finish(call, &ar->base, err, &eb);
	if (ar != NULL)
		RE_FN(action_result__free_unpacked)(ar, NULL); /* frees inlined data too */
	free(present);
	free(l.d);
	free(data);
}

/*
 * Move inline raw bytes into the CAS: the entry then stores only digests.
 * raw's length is zeroed so it is not packed; its memory stays owned by the
 * request. A digest pointed at slot must be reset before the request is freed.
 */
static int spill_raw(cas_service_t *svc, ProtobufCBinaryData *raw, RE(Digest) **digest,
		     RE(Digest) *slot, char hex[65], reap_errbuf_t *eb)
{
	reap_digest_t d;
	int err;
	if (raw->len == 0)
		return REAP_OK;
	if (*digest == NULL) {
		err = reap_digest_of(raw->data, raw->len, &d);
		if (err == REAP_OK)
			err = cas_store_put(svc->store, &d, raw->data, raw->len, eb);
		if (err != REAP_OK)
			return err;
		cas_digest_to_pb(&d, slot, hex);
		*digest = slot;
	}
	raw->len = 0;
	return REAP_OK;
}

static void update_action_result(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(UpdateActionResultRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	reap_errbuf_t eb = {{0}};
	RE(ActionResult) *ar = req->action_result;
	RE(Digest) *orig_out = ar ? ar->stdout_digest : NULL, *orig_err = ar ? ar->stderr_digest : NULL;
	RE(Digest) out_slot, err_slot;
	char out_hex[65], err_hex[65];
	dlist_t l = {0};
	bool *present = NULL, tree_missing = false;
	reap_digest_t action;
	uint8_t *packed = NULL;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_AC_WRITE, NULL, &eb);
	if (err == REAP_OK)
		err = cas_digest_from_pb(req->action_digest, &action, &eb);
	if (err != REAP_OK)
		goto out;
	if (ar == NULL) {
		err = reap_errf(&eb, REAP_E_INVALID, "action_result is missing");
		goto out;
	}
	err = spill_raw(svc, &ar->stdout_raw, &ar->stdout_digest, &out_slot, out_hex, &eb);
	if (err == REAP_OK)
		err = spill_raw(svc, &ar->stderr_raw, &ar->stderr_digest, &err_slot, err_hex, &eb);
	for (size_t i = 0; i < ar->n_output_files; i++) {
		if (err == REAP_OK && ar->output_files[i]->path[0] == '\0')
			err = reap_errf(&eb, REAP_E_INVALID, "an output file has an empty path");
		ar->output_files[i]->contents.len = 0; /* stored by digest only */
	}
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_directories; i++)
		if (ar->output_directories[i]->tree_digest == NULL)
			err = reap_errf(&eb, REAP_E_INVALID, "output directory '%.64s' has no tree_digest",
					ar->output_directories[i]->path);
	if (err == REAP_OK)
		err = result_digests(svc, ar, false, &l, &tree_missing, &eb);
	if (err != REAP_OK) {
		if (err != REAP_E_NOMEM)
			err = REAP_E_INVALID;
		goto out;
	}
	if (l.n > 0) {
		Google__Rpc__PreconditionFailure__Violation *vs = NULL, **vps = NULL;
		char (*subjects)[96] = NULL;
		size_t nmiss = 0;
		if ((present = malloc(l.n * sizeof(*present))) == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		err = cas_store_find(svc->store, l.d, l.n, present);
		if (err != REAP_OK)
			goto out;
		for (size_t i = 0; i < l.n; i++)
			nmiss += !present[i];
		/* The detail travels in a trailer that peers cap at 8 KiB. */
		size_t listed = nmiss < MAX_VIOLATIONS ? nmiss : MAX_VIOLATIONS;
		if (nmiss > 0) {
			Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
			vs = calloc(listed, sizeof(*vs));
			vps = calloc(listed, sizeof(*vps));
			subjects = calloc(listed, sizeof(*subjects));
			if (vs == NULL || vps == NULL || subjects == NULL) {
				err = REAP_E_NOMEM;
			} else {
				size_t k = 0;
				for (size_t i = 0; i < l.n; i++) {
					Google__Rpc__PreconditionFailure__Violation v =
						GOOGLE__RPC__PRECONDITION_FAILURE__VIOLATION__INIT;
					char hex[65];
					if (present[i])
						continue;
					if (k == listed)
						break;
					reap_digest_hex(&l.d[i], hex);
					snprintf(subjects[k], sizeof(subjects[k]), "blobs/%s/%lld", hex,
						 (long long)l.d[i].size);
					v.type = (char *)"MISSING";
					v.subject = subjects[k];
					vs[k] = v;
					vps[k] = &vs[k];
					k++;
				}
				pf.n_violations = k;
				pf.violations = vps;
				snprintf(eb.msg, sizeof(eb.msg),
					 "%zu blob(s) the result references are not in the CAS", nmiss);
				rpc_call_finish_detail(call, REAP_E_PRECONDITION, eb.msg, &pf.base);
			}
			free(subjects);
			free(vps);
			free(vs);
			if (err == REAP_OK) {
				err = REAP_E_PRECONDITION;
				goto done; /* already finished with details */
			}
			goto out;
		}
	}
	size_t len = RE_FN(action_result__get_packed_size)(ar);
	if ((packed = malloc(len ? len : 1)) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	RE_FN(action_result__pack)(ar, packed);
	err = cas_ac_put(svc->store, req->instance_name, &action, packed, len, &eb);
	if (err == REAP_OK) {
		char hex[65];
		reap_digest_hex(&action, hex);
		REAP_INFO("ac write", "instance=\"%s\" action=%s/%lld peer=%s", req->instance_name,
			  hex, (long long)action.size, rpc_call_peer(call));
	}
out:
	cas_finish(call, &ar->base, err, &eb);
done:
	if (ar != NULL) {
		/* The request is the framework's: undo the slots before it is freed. */
		ar->stdout_digest = orig_out;
		ar->stderr_digest = orig_err;
	}
	free(packed);
	free(present);
	free(l.d);
}

void cas_ac_methods(cas_service_t *svc)
{
	const rpc_method_t ms[] = {
		{.path = SVC "GetActionResult", .kind = RPC_UNARY,
		 .request = &build__bazel__remote__execution__v2__get_action_result_request__descriptor,
		 .on_request = get_action_result},
		{.path = SVC "UpdateActionResult", .kind = RPC_UNARY,
		 .request = &build__bazel__remote__execution__v2__update_action_result_request__descriptor,
		 .on_request = update_action_result},
	};
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		cas_add_method(svc, &ms[i]);
}
