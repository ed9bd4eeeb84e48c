/*
 * toolchain.c - toolchain fingerprints in the cache key.
 *
 * A worker's read-only toolchain paths are inputs the client cannot see, so
 * every result the scheduler writes is stamped with the fingerprint of the
 * worker that produced it and the platform it offered. For each platform
 * the current toolchain is the one most recently introduced among live
 * workers: new work goes only to workers with it, and a stamped result is
 * served only while its toolchain is still the current one of its
 * platform. So upgrading a compiler retires the old results, and two worker
 * images never mix, even during a rolling upgrade (old workers go idle).
 * When no live worker offers the platform (e.g. just after a restart),
 * there is nothing to compare with and stamped results are served.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "scheduler/sched_int.h"

#define STAMP_TYPE "type.googleapis.com/reap.v1.ToolchainStamp"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char *sched_offer_key(char *const *offer, size_t n)
{
	char **sorted = malloc((n ? n : 1) * sizeof(*sorted));
	size_t len = 1;
	char *key;
	if (sorted == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		sorted[i] = offer[i];
		len += strlen(offer[i]) + 1;
	}
	qsort(sorted, n, sizeof(*sorted), cmp_str);
	if ((key = malloc(len)) != NULL) {
		char *p = key;
		for (size_t i = 0; i < n; i++) {
			size_t l = strlen(sorted[i]);
			memcpy(p, sorted[i], l);
			p += l;
			*p++ = i + 1 < n ? '\n' : '\0';
		}
		if (n == 0)
			*p = '\0';
	}
	free(sorted);
	return key;
}

const char *sched_toolchain_current(sched_t *s, const char *offer_key)
{
	const sched_worker_t *best = NULL;
	for (const sched_worker_t *w = s->workers; w != NULL; w = w->next)
		if (w->offer_key != NULL && strcmp(w->offer_key, offer_key) == 0 &&
		    (best == NULL || w->toolchain_since_ms > best->toolchain_since_ms))
			best = w;
	return best != NULL ? best->toolchain : NULL;
}

bool sched_toolchain_ok(sched_t *s, const char *offer_key, const char *toolchain)
{
	const char *cur = offer_key != NULL ? sched_toolchain_current(s, offer_key) : NULL;
	return cur == NULL || strcmp(cur, toolchain) == 0;
}

/* The stamp in ar's auxiliary metadata, or NULL (free with _free_unpacked). */
static Reap__V1__ToolchainStamp *find_stamp(const RE(ActionResult) *ar)
{
	const RE(ExecutedActionMetadata) *md = ar->execution_metadata;
	for (size_t i = 0; md != NULL && i < md->n_auxiliary_metadata; i++) {
		const Google__Protobuf__Any *a = md->auxiliary_metadata[i];
		if (a->type_url != NULL && strcmp(a->type_url, STAMP_TYPE) == 0)
			return reap__v1__toolchain_stamp__unpack(NULL, a->value.len, a->value.data);
	}
	return NULL;
}

bool sched_result_current(void *ctx, const RE(ActionResult) *ar)
{
	sched_t *s = ctx;
	Reap__V1__ToolchainStamp *st = find_stamp(ar);
	bool ok = true;
	if (st == NULL)
		return true; /* not produced here (a trusted writer's result) */
	pthread_mutex_lock(&s->mu);
	ok = sched_toolchain_ok(s, st->platform, st->toolchain);
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		REAP_DEBUG("stale toolchain", "toolchain=%s", st->toolchain);
	reap__v1__toolchain_stamp__free_unpacked(st, NULL);
	return ok;
}

int sched_stamp_write(sched_t *s, const char *instance, const reap_digest_t *ad,
		      RE(ActionResult) *ar, const char *toolchain, const char *offer_key,
		      reap_digest_t **missing, size_t *n_missing, reap_errbuf_t *eb)
{
	Reap__V1__ToolchainStamp st = REAP__V1__TOOLCHAIN_STAMP__INIT;
	RE(ExecutedActionMetadata) tmp_md = RE_INIT(EXECUTED_ACTION_METADATA);
	RE(ExecutedActionMetadata) *saved_md = ar->execution_metadata, *md;
	Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, **saved_aux, **aux;
	size_t saved_n;
	uint8_t *packed;
	int err;

	st.toolchain = (char *)toolchain;
	st.platform = (char *)(offer_key != NULL ? offer_key : "");
	if ((packed = malloc(reap__v1__toolchain_stamp__get_packed_size(&st) + 1)) == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	any.type_url = (char *)STAMP_TYPE;
	any.value.data = packed;
	any.value.len = reap__v1__toolchain_stamp__pack(&st, packed);
	md = saved_md != NULL ? saved_md : &tmp_md;
	saved_aux = md->auxiliary_metadata;
	saved_n = md->n_auxiliary_metadata;
	/* Drop any stamp the worker sent: only the scheduler's word counts. */
	if ((aux = calloc(saved_n + 1, sizeof(*aux))) == NULL) {
		free(packed);
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	}
	size_t n = 0;
	for (size_t i = 0; i < saved_n; i++)
		if (saved_aux[i]->type_url == NULL || strcmp(saved_aux[i]->type_url, STAMP_TYPE) != 0)
			aux[n++] = saved_aux[i];
	aux[n++] = &any;
	md->auxiliary_metadata = aux;
	md->n_auxiliary_metadata = n;
	ar->execution_metadata = md;
	err = cas_ac_write(s->cas, instance, ad, ar, missing, n_missing, eb);
	md->auxiliary_metadata = saved_aux;
	md->n_auxiliary_metadata = saved_n;
	ar->execution_metadata = saved_md;
	free(aux);
	free(packed);
	return err;
}
