/*
 * scen_ac.c - the ac-get scenario: GetActionResult hits.
 *
 * Setup (untimed): ac_entries ActionResults with no outputs (exit code 0)
 * are stored with UpdateActionResult under random action digests. A server
 * that refuses the first write (no AC write permission, or no such method)
 * makes the scenario report "skipped: AC writes not allowed". Then
 * ac_inflight threads, each a blocking client with one call in flight,
 * share ac_calls GetActionResult calls over the entries; each must be OK.
 */
#include <stdio.h>
#include <stdlib.h>

#include <grpc/status.h>

#include "bench/bench.h"

typedef struct ac_entry {
	reap_digest_t d;
	char hex[REAP_HASH_HEX_LEN + 1];
} ac_entry_t;

typedef struct ac_worker {
	bench_ctx_t *c;
	bench_run_t *run;
	const ac_entry_t *entries;
	bench_lat_t lat;
	int64_t calls;
} ac_worker_t;

static void *ac_thread(void *arg)
{
	ac_worker_t *w = arg;
	const bench_ctx_t *c = w->c;
	rpc_channel_t *ch = bench_channel(c);
	char sbuf[320];

	if (ch == NULL) {
		bench_run_fail(w->run, "cannot create a channel");
		return NULL;
	}
	while (!atomic_load(&w->run->stop)) {
		RE(GetActionResultRequest) req = RE_INIT(GET_ACTION_RESULT_REQUEST);
		RE(Digest) dg = RE_INIT(DIGEST);
		RE(ActionResult) *ar = NULL;
		rpc_status_t st = {0};
		long i = atomic_fetch_add(&w->run->next, 1);
		if (i >= c->o.ac_calls)
			break;
		const ac_entry_t *e = &w->entries[i % c->o.ac_entries];
		dg.hash = (char *)e->hex;
		dg.size_bytes = e->d.size;
		req.instance_name = (char *)c->o.instance;
		req.action_digest = &dg;
		double t0 = bench_now();
		rpc_unary(ch, BENCH_AC_SVC "GetActionResult", &req.base,
			  &build__bazel__remote__execution__v2__action_result__descriptor,
			  (ProtobufCMessage **)&ar, &st, BENCH_UNARY_MS);
		double ms = (bench_now() - t0) * 1e3;
		if (st.code != 0 || ar == NULL) {
			bench_run_fail(w->run, "GetActionResult: %s",
				       bench_status_text(&st, sbuf, sizeof(sbuf)));
		} else {
			bench_lat_add(&w->lat, ms);
			w->calls++;
		}
		if (ar != NULL)
			protobuf_c_message_free_unpacked(&ar->base, NULL);
		rpc_status_destroy(&st);
	}
	rpc_channel_free(ch);
	return NULL;
}

/*
 * Store every entry; 0, or 1 when the server refuses AC writes (the first
 * write is PERMISSION_DENIED, UNAUTHENTICATED or UNIMPLEMENTED), or -1.
 */
static int ac_setup(bench_ctx_t *c, rpc_channel_t *ch, ac_entry_t *es, char *note, size_t len)
{
	char sbuf[320];

	for (int i = 0; i < c->o.ac_entries; i++) {
		RE(UpdateActionResultRequest) req = RE_INIT(UPDATE_ACTION_RESULT_REQUEST);
		RE(ActionResult) res = RE_INIT(ACTION_RESULT);
		RE(Digest) dg = RE_INIT(DIGEST);
		rpc_status_t st = {0};
		int code;

		bench_random_digest(&c->rng_state, 140, &es[i].d, es[i].hex);
		dg.hash = es[i].hex;
		dg.size_bytes = es[i].d.size;
		res.exit_code = 0;
		req.instance_name = (char *)c->o.instance;
		req.action_digest = &dg;
		req.action_result = &res;
		rpc_unary(ch, BENCH_AC_SVC "UpdateActionResult", &req.base,
			  &build__bazel__remote__execution__v2__action_result__descriptor, NULL, &st,
			  BENCH_UNARY_MS);
		code = st.code;
		if (code != 0)
			snprintf(note, len, "UpdateActionResult: %s",
				 bench_status_text(&st, sbuf, sizeof(sbuf)));
		rpc_status_destroy(&st);
		if (code != 0)
			return i == 0 && (code == GRPC_STATUS_PERMISSION_DENIED ||
					  code == GRPC_STATUS_UNAUTHENTICATED ||
					  code == GRPC_STATUS_UNIMPLEMENTED)
				       ? 1
				       : -1;
	}
	return 0;
}

void bench_ac_get(bench_ctx_t *c, bench_result_t *r)
{
	int k = c->o.ac_inflight, s;
	ac_entry_t *es = calloc((size_t)c->o.ac_entries, sizeof(*es));
	ac_worker_t *ws = calloc((size_t)k, sizeof(*ws));
	rpc_channel_t *ch = bench_channel(c);
	bench_lat_t all = {0};
	bench_meter_t m;
	bench_run_t run;
	int64_t calls = 0;
	char why[256];

	r->name = "ac-get";
	r->base = BENCH_BASE_NULL_UNARY;
	r->cmp = BENCH_CMP_RATIO;
	r->goal = 0.7;
	snprintf(r->config, sizeof(r->config), "%d calls over %d entries, %d in flight",
		 c->o.ac_calls, c->o.ac_entries, k);
	bench_run_init(&run);
	if (es == NULL || ws == NULL || ch == NULL) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "cannot set up");
		goto out;
	}
	s = ac_setup(c, ch, es, why, sizeof(why));
	if (s != 0) {
		r->skipped = s == 1;
		r->failed = s != 1;
		snprintf(r->note, sizeof(r->note), "%s%.200s", s == 1 ? "AC writes not allowed: " : "", why);
		goto out;
	}
	for (int i = 0; i < k; i++) {
		ws[i].c = c;
		ws[i].run = &run;
		ws[i].entries = es;
	}
	bench_meter_start(&m, c->o.server_pid);
	if (bench_threads(k, ac_thread, ws, sizeof(*ws)) != 0)
		bench_run_fail(&run, "cannot start threads");
	bench_meter_stop(&m, r);
	for (int i = 0; i < k; i++) {
		calls += ws[i].calls;
		bench_lat_merge(&all, &ws[i].lat);
		bench_lat_destroy(&ws[i].lat);
	}
	r->ran = true;
	r->rate = (double)calls / r->wall_s;
	r->rate_unit = "calls/s";
	r->lat_unit = "call";
	r->p50_ms = bench_lat_pct(&all, 50);
	r->p99_ms = bench_lat_pct(&all, 99);
	if (atomic_load(&run.errors) > 0) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "%s", run.first_error);
	}
out:
	bench_lat_destroy(&all);
	bench_run_destroy(&run);
	rpc_channel_free(ch);
	free(ws);
	free(es);
}
