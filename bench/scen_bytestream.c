/*
 * scen_bytestream.c - the bytestream-write and bytestream-read scenarios.
 *
 * write: bs_count distinct random blobs of bs_size bytes (generated and
 * hashed before the clock starts), each uploaded by one ByteStream Write
 * stream in bs_chunk messages under uploads/<uuid>/blobs/<hash>/<size>,
 * bs_parallel streams at a time. A blob counts when the server answers OK
 * with committed_size equal to its size.
 *
 * read: the same blobs read back (written first, untimed, if this run has
 * not written them), bs_parallel streams at a time; every byte is compared
 * with what was sent.
 *
 * The unit of latency is one whole blob (open stream to final status).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "google/bytestream/bytestream.pb-c.h"

typedef struct bs_worker {
	bench_ctx_t *c;
	bench_run_t *run;
	bench_lat_t lat;
	uint64_t rng;   /* upload uuids */
	int64_t bytes;  /* payload moved */
	int64_t early;  /* writes the server answered before the last chunk */
} bs_worker_t;

/* "<instance>/" or "" */
static void instance_prefix(const bench_ctx_t *c, char *buf, size_t len)
{
	if (c->o.instance[0] != '\0')
		snprintf(buf, len, "%s/", c->o.instance);
	else
		buf[0] = '\0';
}

static void uuid4(uint64_t *rng, char out[37])
{
	uint8_t b[16];
	bench_rng_fill(rng, b, sizeof(b));
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
		 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
		 b[14], b[15]);
}

/* Upload one blob; 0 or -1 with the reason recorded in the run. */
static int write_one(bs_worker_t *w, rpc_channel_t *ch, const bench_blob_t *b)
{
	const bench_ctx_t *c = w->c;
	Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	Google__Bytestream__WriteResponse *resp = NULL;
	rpc_status_t st = {0};
	rpc_stream_t *s;
	char name[1024], prefix[512], uuid[37], sbuf[320];
	size_t size = (size_t)b->d.size, off = 0;
	bool early = false;
	int rc = -1;

	instance_prefix(c, prefix, sizeof(prefix));
	uuid4(&w->rng, uuid);
	snprintf(name, sizeof(name), "%suploads/%s/blobs/%s/%" PRId64, prefix, uuid, b->hex,
		 b->d.size);
	if ((s = rpc_stream_open(ch, BENCH_BS_SVC "Write", BENCH_STREAM_MS)) == NULL) {
		bench_run_fail(w->run, "Write: could not open a stream");
		return -1;
	}
	do {
		size_t n = size - off < c->o.bs_chunk ? size - off : c->o.bs_chunk;
		req.resource_name = off == 0 ? name : (char *)"";
		req.write_offset = (int64_t)off;
		req.finish_write = off + n == size;
		req.data.data = b->data + off;
		req.data.len = n;
		if (rpc_stream_send(s, &req.base) != REAP_OK) {
			early = true; /* the server ended the call; its status says why */
			break;
		}
		off += n;
	} while (off < size);
	if (rpc_stream_recv(s, &google__bytestream__write_response__descriptor,
			    (ProtobufCMessage **)&resp) < 0)
		resp = NULL;
	rpc_stream_finish(s, &st);
	if (st.code != 0) {
		bench_run_fail(w->run, "Write %s: %s", b->hex, bench_status_text(&st, sbuf, sizeof(sbuf)));
		goto out;
	}
	if (resp == NULL || resp->committed_size != b->d.size) {
		bench_run_fail(w->run, "Write %s: committed_size %" PRId64 ", expected %" PRId64,
			       b->hex, resp ? resp->committed_size : (int64_t)-1, b->d.size);
		goto out;
	}
	w->early += early;
	w->bytes += b->d.size;
	rc = 0;
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	return rc;
}

/* Read one blob back and compare every byte; 0 or -1. */
static int read_one(bs_worker_t *w, rpc_channel_t *ch, const bench_blob_t *b)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	Google__Bytestream__ReadResponse *m = NULL;
	rpc_status_t st = {0};
	rpc_stream_t *s;
	char name[1024], prefix[512], sbuf[320];
	size_t got = 0;
	bool bad = false;
	int r, rc = -1;

	instance_prefix(w->c, prefix, sizeof(prefix));
	snprintf(name, sizeof(name), "%sblobs/%s/%" PRId64, prefix, b->hex, b->d.size);
	if ((s = rpc_stream_open(ch, BENCH_BS_SVC "Read", BENCH_STREAM_MS)) == NULL) {
		bench_run_fail(w->run, "Read: could not open a stream");
		return -1;
	}
	req.resource_name = name;
	if (rpc_stream_send(s, &req.base) == REAP_OK)
		rpc_stream_close_send(s);
	while ((r = rpc_stream_recv(s, &google__bytestream__read_response__descriptor,
				    (ProtobufCMessage **)&m)) == 1) {
		if (!bad && (got + m->data.len > (size_t)b->d.size ||
			     memcmp(b->data + got, m->data.data, m->data.len) != 0))
			bad = true;
		got += m->data.len;
		protobuf_c_message_free_unpacked(&m->base, NULL);
		m = NULL;
	}
	rpc_stream_finish(s, &st);
	if (st.code != 0 || r < 0) {
		bench_run_fail(w->run, "Read %s: %s", b->hex,
			       st.code != 0 ? bench_status_text(&st, sbuf, sizeof(sbuf))
					    : "malformed ReadResponse");
		goto out;
	}
	if (bad || got != (size_t)b->d.size) {
		bench_run_fail(w->run, "Read %s: got %zu bytes%s, expected %" PRId64, b->hex, got,
			       bad ? " with wrong content" : "", b->d.size);
		goto out;
	}
	w->bytes += b->d.size;
	rc = 0;
out:
	rpc_status_destroy(&st);
	return rc;
}

typedef int (*bs_op_t)(bs_worker_t *w, rpc_channel_t *ch, const bench_blob_t *b);

typedef struct bs_task {
	bs_worker_t w;
	bs_op_t op;
} bs_task_t;

static void *bs_thread(void *arg)
{
	bs_task_t *t = arg;
	bs_worker_t *w = &t->w;
	rpc_channel_t *ch = bench_channel(w->c);

	if (ch == NULL) {
		bench_run_fail(w->run, "cannot create a channel to %s", w->c->o.target);
		return NULL;
	}
	while (!atomic_load(&w->run->stop)) {
		long i = atomic_fetch_add(&w->run->next, 1);
		if (i >= w->c->n_blobs)
			break;
		double t0 = bench_now();
		if (t->op(w, ch, &w->c->blobs[i]) != 0)
			break;
		bench_lat_add(&w->lat, (bench_now() - t0) * 1e3);
	}
	rpc_channel_free(ch);
	return NULL;
}

void bench_blobs_free(bench_ctx_t *c)
{
	for (int i = 0; i < c->n_blobs; i++)
		free(c->blobs[i].data);
	free(c->blobs);
	c->blobs = NULL;
	c->n_blobs = 0;
	c->blobs_written = false;
}

/* Generate and hash the blobs (untimed). 0 or -1. */
static int blobs_make(bench_ctx_t *c)
{
	if (c->blobs != NULL)
		return 0;
	c->blobs = calloc((size_t)c->o.bs_count, sizeof(*c->blobs));
	if (c->blobs == NULL)
		return -1;
	c->n_blobs = c->o.bs_count;
	for (int i = 0; i < c->n_blobs; i++) {
		bench_blob_t *b = &c->blobs[i];
		if ((b->data = malloc(c->o.bs_size ? c->o.bs_size : 1)) == NULL)
			return -1;
		bench_rng_fill(&c->rng_state, b->data, c->o.bs_size);
		if (reap_digest_of(b->data, c->o.bs_size, &b->d) != REAP_OK)
			return -1;
		reap_digest_hex(&b->d, b->hex);
	}
	return 0;
}

/* Run op over all blobs with bs_parallel streams and fill r. */
static void bs_run(bench_ctx_t *c, bench_result_t *r, bs_op_t op)
{
	int k = c->o.bs_parallel;
	bs_task_t *tasks = calloc((size_t)k, sizeof(*tasks));
	bench_lat_t all = {0};
	bench_meter_t m;
	bench_run_t run;
	int64_t bytes = 0, early = 0;

	bench_run_init(&run);
	if (tasks == NULL) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "out of memory");
		goto out;
	}
	for (int i = 0; i < k; i++) {
		tasks[i].w.c = c;
		tasks[i].w.run = &run;
		tasks[i].w.rng = bench_rng_next(&c->rng_state);
		tasks[i].op = op;
	}
	bench_meter_start(&m, c->o.server_pid);
	if (bench_threads(k, bs_thread, tasks, sizeof(*tasks)) != 0)
		bench_run_fail(&run, "cannot start threads");
	bench_meter_stop(&m, r);
	for (int i = 0; i < k; i++) {
		bytes += tasks[i].w.bytes;
		early += tasks[i].w.early;
		bench_lat_merge(&all, &tasks[i].w.lat);
		bench_lat_destroy(&tasks[i].w.lat);
	}
	r->ran = true;
	r->mbps = r->rate = (double)bytes / r->wall_s / 1e6;
	r->rate_unit = "MB/s";
	r->lat_unit = "blob";
	r->p50_ms = bench_lat_pct(&all, 50);
	r->p99_ms = bench_lat_pct(&all, 99);
	if (atomic_load(&run.errors) > 0) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "%s", run.first_error);
	} else if (early > 0) {
		snprintf(r->note, sizeof(r->note),
			 "%" PRId64 " writes answered before the last chunk (blob already present)",
			 early);
	}
out:
	bench_lat_destroy(&all);
	bench_run_destroy(&run);
	free(tasks);
}

static void bs_config(const bench_ctx_t *c, bench_result_t *r, const char *what)
{
	char sz[32], ck[32];
	snprintf(r->config, sizeof(r->config), "%d x %s, %d %s, %s chunks", c->o.bs_count,
		 bench_fmt_bytes((double)c->o.bs_size, sz, sizeof(sz)), c->o.bs_parallel, what,
		 bench_fmt_bytes((double)c->o.bs_chunk, ck, sizeof(ck)));
}

void bench_bytestream_write(bench_ctx_t *c, bench_result_t *r)
{
	r->name = "bytestream-write";
	r->base = BENCH_BASE_SHA256; /* the server must hash every byte */
	r->cmp = BENCH_CMP_RATIO;
	r->goal = 0.7;
	bs_config(c, r, "streams");
	if (blobs_make(c) != 0) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "out of memory generating blobs");
		return;
	}
	bs_run(c, r, write_one);
	c->blobs_written = !r->failed;
	double disk = c->base.value[BENCH_BASE_DISK];
	if (!r->failed && disk > 0)
		snprintf(r->extra, sizeof(r->extra),
			 "   vs disk        %.3f x disk-fsync %.1f MB/s (the ceiling when every blob "
			 "is fsync'd before it is acknowledged%s)\n",
			 r->mbps / disk, disk,
			 c->o.spawn != NULL && c->o.no_sync ? "; this server runs --no-sync" : "");
}

void bench_bytestream_read(bench_ctx_t *c, bench_result_t *r)
{
	r->name = "bytestream-read";
	r->base = BENCH_BASE_NULL_STREAM;
	r->cmp = BENCH_CMP_RATIO;
	r->goal = 0.8;
	bs_config(c, r, "streams");
	if (!c->blobs_written) {
		bench_result_t setup = {0};
		printf("   (setup: writing %d blobs first)\n", c->o.bs_count);
		bench_bytestream_write(c, &setup);
		if (!c->blobs_written) {
			r->failed = true;
			snprintf(r->note, sizeof(r->note), "setup write failed: %.200s", setup.note);
			return;
		}
	}
	/* Untimed warm-up, as the null-stream baseline has one: one blob per
	 * stream, so the timed part does not pay for the client's first-touch
	 * page faults on its receive buffers (slow on this VM) or for a
	 * connection's flow-control window that has yet to grow. */
	int n = c->n_blobs;
	bench_result_t warm = {0};
	c->n_blobs = n < c->o.bs_parallel ? n : c->o.bs_parallel;
	bs_run(c, &warm, read_one);
	c->n_blobs = n;
	if (warm.failed) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "warm-up read failed: %.200s", warm.note);
		return;
	}
	bs_run(c, r, read_one);
}
