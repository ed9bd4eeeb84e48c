/*
 * scen_exec.c - the execute-noop scenario: Execution.Execute of trivial
 * actions through the plain REAPI Execute stream.
 *
 * Every action is Command ["/bin/true", "reap-bench-<run>-<i>"] with an
 * empty input root and no outputs, so every action digest is new (nothing
 * is served from the ActionCache) while the work itself is nothing but one
 * sandbox spawn. The Command and Action blobs are uploaded with
 * BatchUpdateBlobs before the timed part; the empty Directory is the empty
 * blob, which REAPI servers always have.
 *
 * Phase 1 (sequential, ex_count actions): the latency of each from the
 * Execute call until the done Operation, and the ExecutedActionMetadata
 * timestamps of its ActionResult split into segments (the client's wall
 * clock is compared with the worker's, so this needs both on one machine or
 * well-synchronised clocks). Phase 2: ex_pcount actions with ex_parallel in
 * flight, actions/s. Every result must be status OK with exit code 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "google/longrunning/operations.pb-c.h"

#include "bench/bench.h"

#define EX_STREAM_MS 120000 /* one Execute, queueing included */

typedef struct ex_action {
	char ahex[REAP_HASH_HEX_LEN + 1];
	int64_t asize;
} ex_action_t;

/* Segments of one action, from the ExecutedActionMetadata (ms; < 0 unknown). */
enum {
	SEG_QUEUE,   /* Execute call -> worker_start (RPC, AC miss, queue, lease) */
	SEG_PREP,    /* worker_start -> input_fetch_start */
	SEG_FETCH,   /* input fetch */
	SEG_SETUP,   /* input_fetch_completed -> execution_start */
	SEG_EXEC,    /* execution (the sandbox and the command) */
	SEG_POST,    /* execution_completed -> output_upload_start */
	SEG_UPLOAD,  /* output upload */
	SEG_FINISH,  /* output_upload_completed -> worker_completed */
	SEG_REPORT,  /* worker_completed -> the done Operation at the client */
	SEG_COUNT,
};

static const char *const seg_names[SEG_COUNT] = {
	"Execute call -> worker start (RPC, AC lookup, queue, lease)",
	"worker start -> input fetch start",
	"input fetch",
	"input fetched -> execution start (sandbox prep)",
	"execution (bwrap + /bin/true)",
	"execution done -> output upload start",
	"output upload",
	"upload done -> worker completed",
	"worker completed -> done Operation at client",
};

typedef struct ex_worker {
	bench_ctx_t *c;
	bench_run_t *run;
	const ex_action_t *acts;
	long first, count; /* the actions this run draws from: [first, first+count) */
	bench_lat_t lat;
	bench_lat_t seg[SEG_COUNT];
	bool segments; /* record the breakdown */
	bool floor_on; /* spawn a bare bwrap before each action, into floor */
	bench_lat_t floor;
	int64_t done;
	int64_t stage_msgs;
} ex_worker_t;

/*
 * CPU seconds of pid (utime+stime) and of its waited-for children
 * (cutime+cstime: the sandboxes the worker reaped) from /proc; -1 unknown.
 */
static void proc_cpu2(pid_t pid, double *self, double *kids)
{
	char path[64], buf[1024];
	unsigned long long ut, st, cut, cst;
	size_t n;
	char *p;
	FILE *f;

	*self = *kids = -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL)
		return;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu", &ut,
		   &st, &cut, &cst) != 4)
		return;
	*self = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	*kids = (double)(cut + cst) / (double)sysconf(_SC_CLK_TCK);
}

static double real_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double ts_s(const Google__Protobuf__Timestamp *t)
{
	return t == NULL ? -1 : (double)t->seconds + (double)t->nanos / 1e9;
}

/* Record b - a in ms into l when both are known. */
static void seg_add(bench_lat_t *l, double a, double b)
{
	if (a > 0 && b > 0)
		bench_lat_add(l, (b - a) * 1e3);
}

/*
 * One Execute: send, read Operations until done, check the result. 0 with
 * the ExecuteResponse in *out, or -1 with err set.
 */
static int execute_one(const bench_ctx_t *c, rpc_channel_t *ch, const ex_action_t *a,
		       RE(ExecuteResponse) **out, int64_t *msgs, char *err, size_t errlen)
{
	RE(ExecuteRequest) req = RE_INIT(EXECUTE_REQUEST);
	RE(Digest) dg = RE_INIT(DIGEST);
	RE(ExecuteResponse) *resp = NULL;
	rpc_status_t st = {0};
	char sbuf[320];
	rpc_stream_t *s;
	int rc = -1;

	*out = NULL;
	dg.hash = (char *)a->ahex;
	dg.size_bytes = a->asize;
	req.instance_name = (char *)c->o.instance;
	req.action_digest = &dg;
	s = rpc_stream_open(ch, BENCH_EXEC_SVC "Execute", EX_STREAM_MS);
	if (s == NULL) {
		snprintf(err, errlen, "Execute: cannot open the stream");
		return -1;
	}
	if (rpc_stream_send(s, &req.base) != 0) {
		rpc_stream_finish(s, &st);
		snprintf(err, errlen, "Execute: send: %s", bench_status_text(&st, sbuf, sizeof(sbuf)));
		rpc_status_destroy(&st);
		return -1;
	}
	rpc_stream_close_send(s);
	for (;;) {
		Google__Longrunning__Operation *op = NULL;
		int got = rpc_stream_recv(s, &google__longrunning__operation__descriptor,
					  (ProtobufCMessage **)&op);
		if (got != 1)
			break;
		(*msgs)++;
		if (op->done) {
			if (op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_RESPONSE &&
			    op->response != NULL)
				resp = build__bazel__remote__execution__v2__execute_response__unpack(
					NULL, op->response->value.len, op->response->value.data);
			else if (op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_ERROR &&
				 op->error != NULL)
				snprintf(err, errlen, "Operation error %d: %.200s", op->error->code,
					 op->error->message ? op->error->message : "");
			else
				snprintf(err, errlen, "done Operation without a response");
			protobuf_c_message_free_unpacked(&op->base, NULL);
			break;
		}
		protobuf_c_message_free_unpacked(&op->base, NULL);
	}
	rpc_stream_finish(s, &st);
	if (resp == NULL) {
		if (err[0] == '\0')
			snprintf(err, errlen, "Execute ended without a done Operation: %s",
				 bench_status_text(&st, sbuf, sizeof(sbuf)));
	} else if (resp->status != NULL && resp->status->code != 0) {
		snprintf(err, errlen, "ExecuteResponse.status %d: %.200s", resp->status->code,
			 resp->status->message ? resp->status->message : "");
	} else if (resp->result == NULL) {
		snprintf(err, errlen, "ExecuteResponse without a result");
	} else if (resp->result->exit_code != 0) {
		snprintf(err, errlen, "exit code %d", resp->result->exit_code);
	} else if (resp->cached_result) {
		snprintf(err, errlen, "a cached result for a fresh action");
	} else {
		rc = 0;
	}
	rpc_status_destroy(&st);
	if (rc == 0)
		*out = resp;
	else if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	return rc;
}

static void *ex_thread(void *arg)
{
	ex_worker_t *w = arg;
	const bench_ctx_t *c = w->c;
	rpc_channel_t *ch = bench_channel(c);
	char err[320];

	if (ch == NULL) {
		bench_run_fail(w->run, "cannot create a channel");
		return NULL;
	}
	while (!atomic_load(&w->run->stop)) {
		RE(ExecuteResponse) *resp = NULL;
		long i = atomic_fetch_add(&w->run->next, 1);
		if (i >= w->count)
			break;
		err[0] = '\0';
		if (w->floor_on) {
			/* the floor, measured in the same moments as the actions */
			double b0 = bench_now();
			if (bench_bwrap_once(c, err, sizeof(err)) != 0) {
				bench_run_fail(w->run, "bwrap before action %ld: %s", w->first + i, err);
				continue;
			}
			bench_lat_add(&w->floor, (bench_now() - b0) * 1e3);
		}
		double r0 = real_now_s(), t0 = bench_now();
		int rc = execute_one(c, ch, &w->acts[w->first + i], &resp, &w->stage_msgs, err,
				     sizeof(err));
		double ms = (bench_now() - t0) * 1e3, r1 = real_now_s();
		if (rc != 0) {
			bench_run_fail(w->run, "action %ld: %s", w->first + i, err);
			continue;
		}
		bench_lat_add(&w->lat, ms);
		w->done++;
		const RE(ExecutedActionMetadata) *md = resp->result->execution_metadata;
		if (w->segments && md != NULL) {
			double ws = ts_s(md->worker_start_timestamp);
			double f0 = ts_s(md->input_fetch_start_timestamp);
			double f1 = ts_s(md->input_fetch_completed_timestamp);
			double e0 = ts_s(md->execution_start_timestamp);
			double e1 = ts_s(md->execution_completed_timestamp);
			double u0 = ts_s(md->output_upload_start_timestamp);
			double u1 = ts_s(md->output_upload_completed_timestamp);
			double wc = ts_s(md->worker_completed_timestamp);
			seg_add(&w->seg[SEG_QUEUE], r0, ws);
			seg_add(&w->seg[SEG_PREP], ws, f0);
			seg_add(&w->seg[SEG_FETCH], f0, f1);
			seg_add(&w->seg[SEG_SETUP], f1, e0);
			seg_add(&w->seg[SEG_EXEC], e0, e1);
			seg_add(&w->seg[SEG_POST], e1, u0);
			seg_add(&w->seg[SEG_UPLOAD], u0, u1);
			seg_add(&w->seg[SEG_FINISH], u1, wc);
			seg_add(&w->seg[SEG_REPORT], wc, r1);
		}
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	rpc_channel_free(ch);
	return NULL;
}

/* Build and upload n fresh actions; 0 or -1 with err set. */
static int ex_setup(bench_ctx_t *c, rpc_channel_t *ch, ex_action_t *acts, int n, char *err,
		    size_t errlen)
{
	uint8_t **data = calloc((size_t)n * 2, sizeof(*data));
	size_t *lens = calloc((size_t)n * 2, sizeof(*lens));
	reap_digest_t *ds = calloc((size_t)n * 2, sizeof(*ds));
	char empty_hex[REAP_HASH_HEX_LEN + 1], chex[REAP_HASH_HEX_LEN + 1];
	reap_digest_t empty;
	uint64_t tag = bench_rng_next(&c->rng_state);
	int rc = -1;

	if (data == NULL || lens == NULL || ds == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	reap_digest_empty(&empty);
	reap_digest_hex(&empty, empty_hex);
	for (int i = 0; i < n; i++) {
		RE(Command) cmd = RE_INIT(COMMAND);
		RE(Action) act = RE_INIT(ACTION);
		RE(Digest) cd = RE_INIT(DIGEST), rd = RE_INIT(DIGEST);
		char uniq[64];
		char *args[] = {(char *)"/bin/true", uniq};
		size_t len;

		snprintf(uniq, sizeof(uniq), "reap-bench-%016llx-%d", (unsigned long long)tag, i);
		cmd.n_arguments = 2;
		cmd.arguments = args;
		len = build__bazel__remote__execution__v2__command__get_packed_size(&cmd);
		data[2 * i] = malloc(len ? len : 1);
		if (data[2 * i] == NULL)
			goto oom;
		lens[2 * i] = build__bazel__remote__execution__v2__command__pack(&cmd, data[2 * i]);
		reap_digest_of(data[2 * i], lens[2 * i], &ds[2 * i]);
		reap_digest_hex(&ds[2 * i], chex);
		cd.hash = chex;
		cd.size_bytes = (int64_t)lens[2 * i];
		rd.hash = empty_hex;
		rd.size_bytes = 0;
		act.command_digest = &cd;
		act.input_root_digest = &rd;
		len = build__bazel__remote__execution__v2__action__get_packed_size(&act);
		data[2 * i + 1] = malloc(len ? len : 1);
		if (data[2 * i + 1] == NULL)
			goto oom;
		lens[2 * i + 1] = build__bazel__remote__execution__v2__action__pack(&act, data[2 * i + 1]);
		reap_digest_of(data[2 * i + 1], lens[2 * i + 1], &ds[2 * i + 1]);
		reap_digest_hex(&ds[2 * i + 1], acts[i].ahex);
		acts[i].asize = (int64_t)lens[2 * i + 1];
	}
	rc = bench_upload_small(c, ch, data, lens, ds, (size_t)n * 2, err, errlen);
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	if (data != NULL)
		for (int i = 0; i < n * 2; i++)
			free(data[i]);
	free(data);
	free(lens);
	free(ds);
	return rc;
}

/* Run count actions from acts+first on k threads; fills lat (merged) and segments. */
static int ex_phase(bench_ctx_t *c, const ex_action_t *acts, long first, long count, int k,
		    bool segments, bench_lat_t *lat, bench_lat_t seg[SEG_COUNT], bench_lat_t *floor,
		    int64_t *done, char *err, size_t errlen)
{
	ex_worker_t *ws = calloc((size_t)k, sizeof(*ws));
	bench_run_t run;
	int rc = 0;

	if (ws == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	bench_run_init(&run);
	for (int i = 0; i < k; i++) {
		ws[i].c = c;
		ws[i].run = &run;
		ws[i].acts = acts;
		ws[i].first = first;
		ws[i].count = count;
		ws[i].segments = segments;
		ws[i].floor_on = floor != NULL;
	}
	if (bench_threads(k, ex_thread, ws, sizeof(*ws)) != 0)
		bench_run_fail(&run, "cannot start threads");
	*done = 0;
	for (int i = 0; i < k; i++) {
		*done += ws[i].done;
		bench_lat_merge(lat, &ws[i].lat);
		bench_lat_destroy(&ws[i].lat);
		if (floor != NULL)
			bench_lat_merge(floor, &ws[i].floor);
		bench_lat_destroy(&ws[i].floor);
		for (int s = 0; s < SEG_COUNT; s++) {
			if (seg != NULL)
				bench_lat_merge(&seg[s], &ws[i].seg[s]);
			bench_lat_destroy(&ws[i].seg[s]);
		}
	}
	if (atomic_load(&run.errors) > 0) {
		snprintf(err, errlen, "%s", run.first_error);
		rc = -1;
	}
	bench_run_destroy(&run);
	free(ws);
	return rc;
}

#define EXTRA(...) \
	do { \
		size_t used_ = strlen(r->extra); \
		snprintf(r->extra + used_, sizeof(r->extra) - used_, __VA_ARGS__); \
	} while (0)

void bench_execute_noop(bench_ctx_t *c, bench_result_t *r)
{
	int n_seq = c->o.ex_count, n_par = c->o.ex_pcount, k = c->o.ex_parallel;
	ex_action_t *acts = calloc((size_t)(n_seq + n_par), sizeof(*acts));
	rpc_channel_t *ch = bench_channel(c);
	bench_lat_t seq = {0}, par = {0}, floor = {0}, seg[SEG_COUNT];
	bench_meter_t m;
	double par_wall = 0, wcpu0 = -1, wkids0 = -1;
	int64_t done_seq = 0, done_par = 0;
	char err[256] = "";

	memset(seg, 0, sizeof(seg));
	r->name = "execute-noop";
	r->base = BENCH_BASE_BWRAP;
	r->cmp = BENCH_CMP_P50_OVER; /* sequential p50 minus bwrap's */
	r->goal = 3;
	snprintf(r->config, sizeof(r->config),
		 "/bin/true, unique Command, empty input root: %d sequential, then %d with %d in flight",
		 n_seq, n_par, k);
	if (c->o.spawn != NULL && c->o.worker_pid <= 0) {
		r->skipped = true;
		snprintf(r->note, sizeof(r->note),
			 "no worker: give --spawn-worker PATH_TO_REAP_WORKER with --spawn");
		goto out;
	}
	if (acts == NULL || ch == NULL) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "cannot set up");
		goto out;
	}
	/* the floor this scenario is read against, measured in this run */
	if (c->base.value[BENCH_BASE_BWRAP] <= 0 && bench_baseline_bwrap(c) != 0)
		EXTRA("   (bwrap baseline failed: no comparison)\n");
	if (ex_setup(c, ch, acts, n_seq + n_par, err, sizeof(err)) != 0) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "upload: %.240s", err);
		goto out;
	}
	/* one untimed action first: the first lease, connections, the worker's caches */
	{
		ex_action_t warm[1];
		bench_lat_t wl = {0};
		int64_t wd;
		if (ex_setup(c, ch, warm, 1, err, sizeof(err)) != 0 ||
		    ex_phase(c, warm, 0, 1, 1, false, &wl, NULL, NULL, &wd, err, sizeof(err)) != 0) {
			bench_lat_destroy(&wl);
			r->failed = true;
			snprintf(r->note, sizeof(r->note), "warm-up: %.240s", err);
			goto out;
		}
		bench_lat_destroy(&wl);
	}
	if (c->o.worker_pid > 0)
		proc_cpu2(c->o.worker_pid, &wcpu0, &wkids0);
	bench_meter_start(&m, c->o.server_pid);
	/* a bare bwrap before each sequential action, where bwrap runs here at all */
	if (ex_phase(c, acts, 0, n_seq, 1, true, &seq, seg,
		     c->base.value[BENCH_BASE_BWRAP] > 0 ? &floor : NULL, &done_seq, err,
		     sizeof(err)) == 0) {
		double t0 = bench_now();
		ex_phase(c, acts, n_seq, n_par, k, false, &par, NULL, NULL, &done_par, err,
			 sizeof(err));
		par_wall = bench_now() - t0;
	}
	bench_meter_stop(&m, r);
	r->ran = true;
	r->rate = par_wall > 0 ? (double)done_par / par_wall : 0;
	r->rate_unit = "actions/s";
	r->lat_unit = "action";
	r->p50_ms = bench_lat_pct(&seq, 50);
	r->p99_ms = bench_lat_pct(&seq, 99);
	if (floor.n > 0)
		r->floor_ms = bench_lat_pct(&floor, 50);
	if (err[0] != '\0') {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "%.250s", err);
	}
	EXTRA("   sequential     %lld actions, 1 in flight: p50 %.2f ms  p99 %.2f ms\n",
	      (long long)done_seq, r->p50_ms, r->p99_ms);
	EXTRA("   parallel       %lld actions, %d in flight: %.1f actions/s, p50 %.2f ms  p99 %.2f ms\n",
	      (long long)done_par, k, r->rate, bench_lat_pct(&par, 50), bench_lat_pct(&par, 99));
	if (floor.n > 0)
		EXTRA("   bwrap floor    p50 %.2f ms  p99 %.2f ms: a bare bwrap spawned before each "
		      "sequential action (the target's reference)\n", r->floor_ms,
		      bench_lat_pct(&floor, 99));
	if (c->base.value[BENCH_BASE_BWRAP] > 0)
		EXTRA("   bwrap baseline p50 %.2f ms, %.1f spawns/s serial (p50 %+.2f ms over it); "
		      "parallel phase %.3f x that rate\n", c->base.bwrap_p50_ms,
		      c->base.value[BENCH_BASE_BWRAP], r->p50_ms - c->base.bwrap_p50_ms,
		      r->rate / c->base.value[BENCH_BASE_BWRAP]);
	if (wcpu0 >= 0) {
		double w1, k1;
		proc_cpu2(c->o.worker_pid, &w1, &k1);
		if (w1 >= 0) {
			/* the worker and its sandboxes are not "other processes" here */
			r->other_cpu_s -= (w1 - wcpu0) + (k1 - wkids0);
			if (r->other_cpu_s < 0)
				r->other_cpu_s = 0;
			EXTRA("   worker cpu %.2f s, its sandboxes %.2f s (%.2f ms per action); "
			      "both left out of \"other processes\"\n",
			      w1 - wcpu0, k1 - wkids0,
			      done_seq + done_par > 0
				      ? (k1 - wkids0) * 1e3 / (double)(done_seq + done_par)
				      : 0);
		}
	}
	if (seg[SEG_EXEC].n > 0) {
		double sum = 0;
		EXTRA("   sequential breakdown, p50 of each segment (ExecutedActionMetadata"
		      " timestamps vs the client's clock):\n");
		for (int s = 0; s < SEG_COUNT; s++) {
			if (seg[s].n == 0) {
				EXTRA("     %-58s      n/a\n", seg_names[s]);
				continue;
			}
			double p = bench_lat_pct(&seg[s], 50);
			sum += p;
			EXTRA("     %-58s %8.2f ms  (p99 %.2f)\n", seg_names[s], p,
			      bench_lat_pct(&seg[s], 99));
		}
		EXTRA("     %-58s %8.2f ms\n", "sum of the p50s", sum);
	} else if (done_seq > 0) {
		EXTRA("   no ExecutedActionMetadata timestamps in the results: no breakdown\n");
	}
out:
	for (int s = 0; s < SEG_COUNT; s++)
		bench_lat_destroy(&seg[s]);
	bench_lat_destroy(&seq);
	bench_lat_destroy(&par);
	bench_lat_destroy(&floor);
	rpc_channel_free(ch);
	free(acts);
}
