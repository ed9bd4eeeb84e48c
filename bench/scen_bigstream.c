/*
 * scen_bigstream.c - the bytestream-big scenario: one blob of big_size
 * bytes (2 GiB; quick 256 MiB) written by one ByteStream Write and read
 * back by one ByteStream Read, while the server's memory is watched.
 *
 * The target is reapd's RSS staying under 64 MiB plus its
 * configured buffers while such a blob streams in and out: a server that
 * buffers a blob (or lets gRPC queue it) shows here at once.
 *
 * The client never holds the blob either: its content is a function of
 * (seed, offset) in 64 KiB blocks, hashed in a pass before the clock starts,
 * generated again chunk by chunk for the Write and compared block by block
 * on the Read, so the bench's own footprint stays a few MiB at any size.
 *
 * Memory of the server (--spawn, or --server-pid): its VmHWM is reset to
 * its current RSS first (/proc/PID/clear_refs "5"), so the VmHWM read at
 * the end is the exact peak during this scenario whatever ran before; a
 * thread also samples VmRSS, RssAnon and RssFile every 10 ms, which says
 * whether the peak is heap or mapped file pages. Without a server PID
 * (an external --target) the RSS is reported as n/a.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"
#include "google/bytestream/bytestream.pb-c.h"

#define BIG_BLOCK ((size_t)64 << 10) /* unit of generated content */
#define BIG_SAMPLE_US 10000

/* Content of block b of the blob: splitmix64 from (seed, b). */
static void big_block(uint64_t seed, uint64_t b, uint8_t *out)
{
	uint64_t s = seed ^ (b * 0xd1b54a32d192ed03ull);
	bench_rng_fill(&s, out, BIG_BLOCK);
}

/* The bytes [off, off+len) of the blob into out; blk is a BIG_BLOCK scratch buffer. */
static void big_content(uint64_t seed, uint64_t off, size_t len, uint8_t *out, uint8_t *blk)
{
	while (len > 0) {
		uint64_t b = off / BIG_BLOCK;
		size_t in = (size_t)(off % BIG_BLOCK), n = BIG_BLOCK - in;
		if (n > len)
			n = len;
		big_block(seed, b, blk);
		memcpy(out, blk + in, n);
		out += n;
		off += n;
		len -= n;
	}
}

/* ---- the RSS sampler ---- */

typedef struct big_sampler {
	pid_t pid;
	atomic_bool stop;
	atomic_int phase;       /* 0 while writing, 1 while reading */
	double rss, anon, file; /* peaks seen, MiB */
	double phase_rss[2];    /* peak VmRSS seen in each phase */
	long samples;
} big_sampler_t;

static void *sampler_thread(void *arg)
{
	big_sampler_t *s = arg;

	while (!atomic_load(&s->stop)) {
		double rss = bench_proc_status_mib(s->pid, "VmRSS");
		double anon = bench_proc_status_mib(s->pid, "RssAnon");
		double file = bench_proc_status_mib(s->pid, "RssFile");
		int ph = atomic_load(&s->phase);
		if (rss > s->rss)
			s->rss = rss;
		if (rss > s->phase_rss[ph])
			s->phase_rss[ph] = rss;
		if (anon > s->anon)
			s->anon = anon;
		if (file > s->file)
			s->file = file;
		s->samples++;
		usleep(BIG_SAMPLE_US);
	}
	return NULL;
}

/* ---- write and read ---- */

typedef struct big_blob {
	uint64_t seed;
	uint64_t size;
	reap_digest_t d;
	char hex[REAP_HASH_HEX_LEN + 1];
	int timeout_ms;
} big_blob_t;

/* Write the blob in bs_chunk messages; 0 or -1 with err. */
static int big_write(const bench_ctx_t *c, rpc_channel_t *ch, const big_blob_t *b, char *err,
		     size_t errlen)
{
	Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
	Google__Bytestream__WriteResponse *resp = NULL;
	size_t chunk = c->o.bs_chunk;
	uint8_t *buf = malloc(chunk), *blk = malloc(BIG_BLOCK);
	rpc_status_t st = {0};
	rpc_stream_t *s = NULL;
	char name[1024], uuid[40], sbuf[320];
	uint64_t off = 0, u1 = bench_os_seed(), u2 = bench_os_seed();
	int rc = -1;

	if (buf == NULL || blk == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	snprintf(uuid, sizeof(uuid), "%08x-%04x-4%03x-8%03x-%012llx", (unsigned)u1,
		 (unsigned)(u1 >> 32) & 0xffff, (unsigned)(u1 >> 48) & 0xfff,
		 (unsigned)u2 & 0xfff, (unsigned long long)(u2 >> 16) & 0xffffffffffffull);
	snprintf(name, sizeof(name), "%s%suploads/%s/blobs/%s/%" PRId64, c->o.instance,
		 c->o.instance[0] ? "/" : "", uuid, b->hex, b->d.size);
	if ((s = rpc_stream_open(ch, BENCH_BS_SVC "Write", b->timeout_ms)) == NULL) {
		snprintf(err, errlen, "Write: could not open a stream");
		goto out;
	}
	do {
		size_t n = b->size - off < chunk ? (size_t)(b->size - off) : chunk;
		big_content(b->seed, off, n, buf, blk);
		req.resource_name = off == 0 ? name : (char *)"";
		req.write_offset = (int64_t)off;
		req.finish_write = off + n == b->size;
		req.data.data = buf;
		req.data.len = n;
		if (rpc_stream_send(s, &req.base) != REAP_OK)
			break; /* the server ended the call; its status says why */
		off += n;
	} while (off < b->size);
	if (rpc_stream_recv(s, &google__bytestream__write_response__descriptor,
			    (ProtobufCMessage **)&resp) < 0)
		resp = NULL;
	rpc_stream_finish(s, &st);
	if (st.code != 0) {
		snprintf(err, errlen, "Write: %s", bench_status_text(&st, sbuf, sizeof(sbuf)));
		goto out;
	}
	if (resp == NULL || resp->committed_size != b->d.size) {
		snprintf(err, errlen, "Write: committed_size %" PRId64 ", expected %" PRId64,
			 resp ? resp->committed_size : (int64_t)-1, b->d.size);
		goto out;
	}
	rc = 0;
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	free(blk);
	free(buf);
	return rc;
}

/* Read the blob back, comparing every byte; 0 or -1 with err. */
static int big_read(const bench_ctx_t *c, rpc_channel_t *ch, const big_blob_t *b, char *err,
		    size_t errlen)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	Google__Bytestream__ReadResponse *m = NULL;
	uint8_t *blk = malloc(BIG_BLOCK);
	uint64_t got = 0, have_b = UINT64_MAX;
	rpc_status_t st = {0};
	rpc_stream_t *s;
	char name[1024], sbuf[320];
	bool bad = false;
	int r, rc = -1;

	if (blk == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(name, sizeof(name), "%s%sblobs/%s/%" PRId64, c->o.instance,
		 c->o.instance[0] ? "/" : "", b->hex, b->d.size);
	if ((s = rpc_stream_open(ch, BENCH_BS_SVC "Read", b->timeout_ms)) == NULL) {
		snprintf(err, errlen, "Read: could not open a stream");
		free(blk);
		return -1;
	}
	req.resource_name = name;
	if (rpc_stream_send(s, &req.base) == REAP_OK)
		rpc_stream_close_send(s);
	while ((r = rpc_stream_recv(s, &google__bytestream__read_response__descriptor,
				    (ProtobufCMessage **)&m)) == 1) {
		const uint8_t *p = m->data.data;
		size_t len = m->data.len;
		if (got + len > b->size)
			bad = true;
		while (!bad && len > 0) {
			uint64_t blkno = got / BIG_BLOCK;
			size_t in = (size_t)(got % BIG_BLOCK), n = BIG_BLOCK - in;
			if (n > len)
				n = len;
			if (blkno != have_b) {
				big_block(b->seed, blkno, blk);
				have_b = blkno;
			}
			bad = memcmp(blk + in, p, n) != 0;
			p += n;
			got += n;
			len -= n;
		}
		got += len; /* what was not compared after a mismatch */
		protobuf_c_message_free_unpacked(&m->base, NULL);
		m = NULL;
	}
	rpc_stream_finish(s, &st);
	if (st.code != 0 || r < 0) {
		snprintf(err, errlen, "Read: %s",
			 st.code != 0 ? bench_status_text(&st, sbuf, sizeof(sbuf))
				      : "malformed ReadResponse");
		goto out;
	}
	if (bad || got != b->size) {
		snprintf(err, errlen, "Read: got %" PRIu64 " bytes%s, expected %" PRIu64, got,
			 bad ? " with wrong content" : "", b->size);
		goto out;
	}
	rc = 0;
out:
	rpc_status_destroy(&st);
	free(blk);
	return rc;
}

#define EXTRA(...) \
	do { \
		size_t used_ = strlen(r->extra); \
		snprintf(r->extra + used_, sizeof(r->extra) - used_, __VA_ARGS__); \
	} while (0)

void bench_bytestream_big(bench_ctx_t *c, bench_result_t *r)
{
	big_blob_t b = {.seed = bench_rng_next(&c->rng_state), .size = c->o.big_size};
	big_sampler_t smp = {.pid = c->o.server_pid};
	uint8_t *blk = malloc(BIG_BLOCK);
	rpc_channel_t *ch = bench_channel(c);
	reap_hasher_t h = {0};
	pthread_t sampler;
	bool sampling = false, hwm_reset = false;
	double rss0 = -1, t_write = 0, t_read = 0, t0;
	bench_meter_t m;
	char sz[32], ck[32], err[256] = "";

	r->name = "bytestream-big";
	r->cmp = BENCH_CMP_RSS;
	r->goal = 64.0 + (double)c->o.big_buffers / (1 << 20);
	r->rss_mib = -1;
	snprintf(r->config, sizeof(r->config), "1 x %s, Write then Read, %s chunks",
		 bench_fmt_bytes((double)b.size, sz, sizeof(sz)),
		 bench_fmt_bytes((double)c->o.bs_chunk, ck, sizeof(ck)));
	/* 300 s, plus as long as the blob takes at 10 MB/s */
	b.timeout_ms = BENCH_STREAM_MS + (int)(b.size / 10000);
	if (blk == NULL || ch == NULL || reap_hasher_init(&h) != REAP_OK) {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "cannot set up");
		goto out;
	}
	/* its digest, untimed */
	for (uint64_t off = 0; off < b.size; off += BIG_BLOCK) {
		size_t n = b.size - off < BIG_BLOCK ? (size_t)(b.size - off) : BIG_BLOCK;
		big_block(b.seed, off / BIG_BLOCK, blk);
		reap_hasher_update(&h, blk, n);
	}
	reap_hasher_final(&h, &b.d);
	reap_digest_hex(&b.d, b.hex);

	if (c->o.server_pid > 0) {
		hwm_reset = bench_proc_reset_hwm(c->o.server_pid) == 0;
		rss0 = bench_proc_status_mib(c->o.server_pid, "VmRSS");
		if (pthread_create(&sampler, NULL, sampler_thread, &smp) == 0)
			sampling = true;
	}
	bench_meter_start(&m, c->o.server_pid);
	t0 = bench_now();
	if (big_write(c, ch, &b, err, sizeof(err)) == 0) {
		t_write = bench_now() - t0;
		atomic_store(&smp.phase, 1);
		t0 = bench_now();
		if (big_read(c, ch, &b, err, sizeof(err)) == 0)
			t_read = bench_now() - t0;
	}
	bench_meter_stop(&m, r);
	if (sampling) {
		atomic_store(&smp.stop, true);
		pthread_join(sampler, NULL);
	}
	r->ran = true;
	r->rate_unit = "MB/s";
	r->rate = (double)(t_write > 0 ? b.size : 0) * (t_read > 0 ? 2 : 1) / r->wall_s / 1e6;
	r->mbps = r->rate;
	r->lat_unit = NULL; /* two streams: their times are in rate_text */
	snprintf(r->rate_text, sizeof(r->rate_text), "write %.1f MB/s (%.2f s), read %.1f MB/s (%.2f s)",
		 t_write > 0 ? (double)b.size / t_write / 1e6 : 0, t_write,
		 t_read > 0 ? (double)b.size / t_read / 1e6 : 0, t_read);
	if (err[0] != '\0') {
		r->failed = true;
		snprintf(r->note, sizeof(r->note), "%.250s", err);
	}
	if (c->o.server_pid > 0) {
		/* the kernel's peak since the reset is exact; the samples can miss a spike */
		r->rss_mib = hwm_reset && r->server_hwm_mib > smp.rss ? r->server_hwm_mib : smp.rss;
		EXTRA("   server rss     at start %.1f MiB; peak %.1f MiB (%s); sampled every %d ms "
		      "(%ld samples): VmRSS %.1f (writing %.1f, reading %.1f), RssAnon %.1f, "
		      "RssFile %.1f MiB\n",
		      rss0, r->rss_mib,
		      hwm_reset ? "VmHWM reset at start" : "sampled VmRSS; VmHWM could not be reset",
		      BIG_SAMPLE_US / 1000, smp.samples, smp.rss, smp.phase_rss[0],
		      smp.phase_rss[1], smp.anon, smp.file);
	} else {
		EXTRA("   server rss     n/a (external server; --server-pid PID samples it)\n");
	}
	EXTRA("   rss target     64 MiB + %.2f MiB of configured buffers (--big-buffers)\n",
	      (double)c->o.big_buffers / (1 << 20));
out:
	reap_hasher_destroy(&h);
	rpc_channel_free(ch);
	free(blk);
}
