/*
 * ac_service.c - ActionCache: GetActionResult and UpdateActionResult.
 *
 * Reads are complete or absent: an entry is served only when every blob it
 * references (output files, stdout/stderr, output trees and the files in
 * them) is still in the CAS and visible in the entry's instance
 * (cas_visible); otherwise the answer is NOT_FOUND, so a client re-runs the
 * action instead of failing on a download.
 *
 * Writes go through the authorization hook (only allowed identities may
 * write the cache), are validated, must reference only blobs already in the
 * CAS and visible in the instance written (FAILED_PRECONDITION with the
 * missing ones otherwise: naming another tenant's blob by digest proves
 * nothing), and inline raw stdout/stderr/file contents are moved into the
 * CAS, granted to the instance, so entries stay small.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cas/cas_int.h"
#include "common/log.h"
#include "common/metrics.h"

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

void cas_set_result_check(cas_service_t *svc, cas_result_check_fn fn, void *ctx)
{
	svc->result_check = fn;
	svc->result_check_ctx = ctx;
}

int cas_ac_lookup(cas_service_t *svc, const char *instance, const reap_digest_t *action,
		  RE(ActionResult) **out, reap_errbuf_t *eb)
{
	RE(ActionResult) *ar = NULL;
	dlist_t l = {0};
	bool *present = NULL, tree_missing = false;
	void *data = NULL;
	size_t len = 0;
	int err;

	*out = NULL;
	err = cas_ac_get(svc->store, instance, action, &data, &len);
	if (err != REAP_OK)
		goto out;
	ar = RE_FN(action_result__unpack)(NULL, len, data);
	if (ar == NULL) {
		REAP_WARN("ac entry unreadable", "instance=\"%s\"", instance);
		err = REAP_E_NOT_FOUND;
		goto out;
	}
	err = result_digests(svc, ar, true, &l, &tree_missing, eb);
	if (err != REAP_OK || tree_missing) {
		err = REAP_E_NOT_FOUND; /* an entry we cannot vouch for is no entry */
		goto out;
	}
	if (l.n > 0) {
		if ((present = malloc(l.n * sizeof(*present))) == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		err = cas_visible(svc, instance, l.d, l.n, present, eb);
		for (size_t i = 0; err == REAP_OK && i < l.n; i++)
			if (!present[i])
				err = reap_errf(eb, REAP_E_NOT_FOUND,
						"cached result references blobs no longer in the CAS");
		if (err != REAP_OK)
			goto out;
	}
	if (svc->result_check != NULL && !svc->result_check(svc->result_check_ctx, ar)) {
		err = reap_errf(eb, REAP_E_NOT_FOUND, "cached result built by a retired toolchain");
		goto out;
	}
	*out = ar;
	ar = NULL;
out:
	reap_metric_inc(err == REAP_OK ? reap_metrics()->ac_hits : reap_metrics()->ac_misses);
	if (ar != NULL)
		RE_FN(action_result__free_unpacked)(ar, NULL);
	free(present);
	free(l.d);
	free(data);
	return err;
}

static void get_action_result(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(GetActionResultRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	reap_errbuf_t eb = {{0}};
	RE(ActionResult) *ar = NULL;
	reap_digest_t action;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_AC_READ, NULL, &eb);
	if (err == REAP_OK)
		err = cas_digest_from_pb(req->action_digest, &action, &eb);
	if (err == REAP_OK)
		err = cas_ac_lookup(svc, req->instance_name, &action, &ar, &eb);
	if (err != REAP_OK)
		goto out;
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
	cas_finish(call, ar != NULL ? &ar->base : NULL, err, &eb);
	if (ar != NULL)
		RE_FN(action_result__free_unpacked)(ar, NULL); /* frees inlined data too */
}

/*
 * Move inline raw bytes into the CAS: the entry then stores only digests.
 * raw's length is zeroed so it is not packed (its memory stays with its
 * owner); a digest pointed at slot must be reset by the caller afterwards.
 */
static int spill_raw(cas_service_t *svc, const char *instance, ProtobufCBinaryData *raw,
		     RE(Digest) **digest, RE(Digest) *slot, char hex[65], reap_errbuf_t *eb)
{
	reap_digest_t d;
	int err;
	if (raw->len == 0)
		return REAP_OK;
	if (*digest == NULL) {
		err = reap_digest_of(raw->data, raw->len, &d);
		if (err == REAP_OK)
			err = cas_store_put(svc->store, instance, &d, raw->data, raw->len, eb);
		if (err != REAP_OK)
			return err;
		cas_digest_to_pb(&d, slot, hex);
		*digest = slot;
	}
	raw->len = 0;
	return REAP_OK;
}

/* Shape checks, then the digests the result references (into l). */
static int result_check(cas_service_t *svc, RE(ActionResult) *ar, dlist_t *l, reap_errbuf_t *eb)
{
	bool tree_missing;
	int err = REAP_OK;
	for (size_t i = 0; i < ar->n_output_files; i++) {
		if (err == REAP_OK && ar->output_files[i]->path[0] == '\0')
			err = reap_errf(eb, REAP_E_INVALID, "an output file has an empty path");
		ar->output_files[i]->contents.len = 0; /* stored by digest only */
	}
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_directories; i++)
		if (ar->output_directories[i]->tree_digest == NULL)
			err = reap_errf(eb, REAP_E_INVALID, "output directory '%.64s' has no tree_digest",
					ar->output_directories[i]->path);
	if (err == REAP_OK)
		err = result_digests(svc, ar, false, l, &tree_missing, eb);
	if (err != REAP_OK && err != REAP_E_NOMEM)
		err = REAP_E_INVALID;
	return err;
}

int cas_ac_write(cas_service_t *svc, const char *instance, const reap_digest_t *action,
		 RE(ActionResult) *ar, reap_digest_t **missing, size_t *n_missing,
		 reap_errbuf_t *eb)
{
	RE(Digest) *orig_out = ar->stdout_digest, *orig_err = ar->stderr_digest;
	RE(Digest) out_slot, err_slot;
	char out_hex[65], err_hex[65];
	dlist_t l = {0};
	bool *present = NULL;
	uint8_t *packed = NULL;
	size_t nmiss = 0;
	int err;

	*missing = NULL;
	*n_missing = 0;
	err = spill_raw(svc, instance, &ar->stdout_raw, &ar->stdout_digest, &out_slot, out_hex, eb);
	if (err == REAP_OK)
		err = spill_raw(svc, instance, &ar->stderr_raw, &ar->stderr_digest, &err_slot, err_hex,
				eb);
	if (err == REAP_OK)
		err = result_check(svc, ar, &l, eb);
	if (err != REAP_OK)
		goto out;
	if (l.n > 0) {
		if ((present = malloc(l.n * sizeof(*present))) == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		err = cas_visible(svc, instance, l.d, l.n, present, eb);
		if (err != REAP_OK)
			goto out;
		for (size_t i = 0; i < l.n; i++)
			if (!present[i])
				l.d[nmiss++] = l.d[i];
		if (nmiss > 0) {
			*missing = l.d;
			*n_missing = nmiss;
			l.d = NULL;
			err = reap_errf(eb, REAP_E_PRECONDITION,
					"%zu blob(s) the result references are not in the CAS of this instance", nmiss);
			goto out;
		}
	}
	size_t len = RE_FN(action_result__get_packed_size)(ar);
	if ((packed = malloc(len ? len : 1)) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	RE_FN(action_result__pack)(ar, packed);
	err = cas_ac_put(svc->store, instance, action, packed, len, eb);
	if (err == REAP_OK) {
		char hex[65];
		reap_digest_hex(action, hex);
		REAP_INFO("ac write", "instance=\"%s\" action=%s/%lld", instance, hex,
			  (long long)action->size);
	}
out:
	/* The result is the caller's: undo the slots. */
	ar->stdout_digest = orig_out;
	ar->stderr_digest = orig_err;
	free(packed);
	free(present);
	free(l.d);
	return err;
}

Google__Rpc__PreconditionFailure *cas_precondition_new(const reap_digest_t *ds, size_t n)
{
	size_t listed = n < MAX_VIOLATIONS ? n : MAX_VIOLATIONS;
	Google__Rpc__PreconditionFailure *pf = malloc(sizeof(*pf));
	Google__Rpc__PreconditionFailure__Violation **vps = calloc(listed + 1, sizeof(*vps));
	if (pf == NULL || vps == NULL)
		goto fail;
	google__rpc__precondition_failure__init(pf);
	pf->violations = vps;
	for (size_t i = 0; i < listed; i++) {
		Google__Rpc__PreconditionFailure__Violation *v = malloc(sizeof(*v));
		char hex[65], subject[96];
		if (v == NULL)
			goto fail;
		google__rpc__precondition_failure__violation__init(v);
		vps[i] = v;
		pf->n_violations = i + 1;
		reap_digest_hex(&ds[i], hex);
		snprintf(subject, sizeof(subject), "blobs/%s/%lld", hex, (long long)ds[i].size);
		v->type = strdup("MISSING");
		v->subject = strdup(subject);
		if (v->type == NULL || v->subject == NULL)
			goto fail;
	}
	return pf;
fail:
	if (pf != NULL)
		pf->violations = vps;
	else
		free(vps);
	cas_precondition_free(pf);
	return NULL;
}

void cas_precondition_free(Google__Rpc__PreconditionFailure *pf)
{
	if (pf == NULL)
		return;
	for (size_t i = 0; i < pf->n_violations; i++) {
		free(pf->violations[i]->type);
		free(pf->violations[i]->subject);
		free(pf->violations[i]);
	}
	free(pf->violations);
	free(pf);
}

static void update_action_result(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(UpdateActionResultRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	reap_errbuf_t eb = {{0}};
	RE(ActionResult) *ar = req->action_result;
	reap_digest_t action, *missing = NULL;
	size_t n_missing = 0;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_AC_WRITE, NULL, &eb);
	if (err == REAP_OK)
		err = cas_digest_from_pb(req->action_digest, &action, &eb);
	if (err == REAP_OK && ar == NULL)
		err = reap_errf(&eb, REAP_E_INVALID, "action_result is missing");
	if (err == REAP_OK)
		err = cas_ac_write(svc, req->instance_name, &action, ar, &missing, &n_missing, &eb);
	if (err == REAP_E_PRECONDITION && n_missing > 0) {
		Google__Rpc__PreconditionFailure *pf = cas_precondition_new(missing, n_missing);
		rpc_call_finish_detail(call, err, eb.msg, pf != NULL ? &pf->base : NULL);
		cas_precondition_free(pf);
	} else {
		cas_finish(call, ar != NULL ? &ar->base : NULL, err, &eb);
	}
	free(missing);
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
