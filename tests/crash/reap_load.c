/*
 * reap_load.c - load generator and checker for the kill -9 crash test
 * (tests/crash/crash_test.sh).
 *
 *   reap-load upload --target HOST:PORT --threads N --seconds S --log FILE [--seed K] [--verbose]
 *   reap-load verify --target HOST:PORT --log FILE [--threads N]
 *
 * upload: N threads, each with its own channel and a deterministic PRNG
 * (seeded from K and the thread number), send random blobs until the time
 * is up or the server goes away: batches of small blobs by BatchUpdateBlobs
 * and large blobs by chunked ByteStream Write. Every digest is appended to
 * FILE.attempted before it is sent, and to FILE once the server has
 * acknowledged it (per-blob OK status, or a WriteResponse whose
 * committed_size is the blob's size). Each line is one write(2) on an
 * O_APPEND descriptor, so the logs only ever hold whole lines and threads
 * never interleave within a line. Losing the server (kill -9) ends a
 * thread quietly; a status that only a live server can send and that is
 * not OK is a failure.
 *
 * verify: the server's promise after a crash. Every acknowledged digest
 * must be reported present by FindMissingBlobs and read back in full by
 * ByteStream Read with the right size and SHA-256. A digest that was only
 * attempted may be missing, but if the server says it is present it must
 * read back intact too (a partially written blob must never be visible).
 *
 * Exit status: 0 on success, 1 on any failure, 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/status.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "common/digest.h"
#include "common/err.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "rpc/rpc.h"

#define RE(name) Build__Bazel__Remote__Execution__V2__##name
#define RE_INIT(NAME) BUILD__BAZEL__REMOTE__EXECUTION__V2__##NAME##__INIT

#define CAS_SVC "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define BS_SVC "/google.bytestream.ByteStream/"
#define FIND_RESP_DESC \
	(&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor)

#define LOAD_BATCH_BLOBS 20
#define LOAD_SMALL_MIN 100
#define LOAD_SMALL_MAX (64 << 10)
#define LOAD_LARGE_MIN (1 << 20)
#define LOAD_LARGE_MAX (8 << 20)
#define LOAD_CHUNK (64 << 10)
#define LOAD_FIND_CHUNK 500     /* digests per FindMissingBlobs */
#define LOAD_UNARY_MS 30000
#define LOAD_STREAM_MS 60000
#define LOAD_LINE_MAX 96        /* "hex size\n" */

typedef struct load_opts {
	const char *target;
	const char *log;
	int threads;
	int seconds;
	uint64_t seed;
	bool verbose; /* say why each upload thread stopped */
} load_opts_t;

/* What a worker reports back; failures are statuses a live server sent. */
typedef struct load_counts {
	uint64_t attempted;
	uint64_t acked;
	uint64_t failures;
} load_counts_t;

typedef struct load_worker {
	const load_opts_t *o;
	int index;
	int fd_acked;     /* shared O_APPEND descriptors */
	int fd_attempted;
	uint64_t rng;
	struct timespec deadline;
	load_counts_t counts;
} load_worker_t;

/* ---- small helpers ---- */

/* splitmix64: tiny, fast and good enough for test data. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static size_t rng_range(uint64_t *s, size_t lo, size_t hi)
{
	return lo + (size_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

static void rng_fill(uint64_t *s, uint8_t *buf, size_t len)
{
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = rng_next(s);
		memcpy(buf + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = rng_next(s);
		memcpy(buf + i, &v, len - i);
	}
}

static bool time_left(const struct timespec *deadline)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec < deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec < deadline->tv_nsec);
}

/* Did the call end because the server went away (or never answered)? */
static bool code_is_gone(int code)
{
	return code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_CANCELLED ||
	       code == GRPC_STATUS_DEADLINE_EXCEEDED;
}

/* Append "hex size\n" with one write(2). 0, or REAP_E_IO. */
static int log_digest(int fd, const reap_digest_t *d)
{
	char hex[REAP_HASH_HEX_LEN + 1];
	char line[LOAD_LINE_MAX];
	int n;

	reap_digest_hex(d, hex);
	n = snprintf(line, sizeof(line), "%s %" PRId64 "\n", hex, d->size);
	if (n <= 0 || (size_t)n >= sizeof(line) || write(fd, line, (size_t)n) != n) {
		fprintf(stderr, "reap-load: writing a log line: %s\n", strerror(errno));
		return REAP_E_IO;
	}
	return REAP_OK;
}

static int digest_cmp(const void *a, const void *b)
{
	const reap_digest_t *x = a, *y = b;
	int c = memcmp(x->hash, y->hash, REAP_HASH_LEN);
	if (c != 0)
		return c;
	return (x->size > y->size) - (x->size < y->size);
}

/* ---- upload ---- */

/*
 * One BatchUpdateBlobs of LOAD_BATCH_BLOBS random small blobs.
 * Returns 0 to go on, 1 when the server is gone, <0 on a failure.
 */
static int upload_batch(load_worker_t *w, rpc_channel_t *ch, uint8_t *buf)
{
	RE(BatchUpdateBlobsRequest) req = RE_INIT(BATCH_UPDATE_BLOBS_REQUEST);
	RE(BatchUpdateBlobsRequest__Request) items[LOAD_BATCH_BLOBS];
	RE(BatchUpdateBlobsRequest__Request) *ptrs[LOAD_BATCH_BLOBS];
	RE(Digest) pbs[LOAD_BATCH_BLOBS];
	RE(BatchUpdateBlobsResponse) *resp = NULL;
	char hexes[LOAD_BATCH_BLOBS][REAP_HASH_HEX_LEN + 1];
	reap_digest_t ds[LOAD_BATCH_BLOBS];
	bool acked[LOAD_BATCH_BLOBS] = {false};
	rpc_status_t st = {0};
	size_t off = 0;
	int rc = 0;

	for (size_t i = 0; i < LOAD_BATCH_BLOBS; i++) {
		RE(BatchUpdateBlobsRequest__Request) item_init =
			RE_INIT(BATCH_UPDATE_BLOBS_REQUEST__REQUEST);
		RE(Digest) pb_init = RE_INIT(DIGEST);
		size_t len = rng_range(&w->rng, LOAD_SMALL_MIN, LOAD_SMALL_MAX);

		rng_fill(&w->rng, buf + off, len);
		if (reap_digest_of(buf + off, len, &ds[i]) != REAP_OK) {
			rc = REAP_E_NOMEM;
			goto out;
		}
		reap_digest_hex(&ds[i], hexes[i]);
		pbs[i] = pb_init;
		pbs[i].hash = hexes[i];
		pbs[i].size_bytes = ds[i].size;
		items[i] = item_init;
		items[i].digest = &pbs[i];
		items[i].data.data = buf + off;
		items[i].data.len = len;
		ptrs[i] = &items[i];
		off += len;
		if ((rc = log_digest(w->fd_attempted, &ds[i])) != REAP_OK)
			goto out;
		w->counts.attempted++;
	}
	req.n_requests = LOAD_BATCH_BLOBS;
	req.requests = ptrs;
	if (rpc_unary(ch, CAS_SVC "BatchUpdateBlobs", &req.base,
		      &build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
		      (ProtobufCMessage **)&resp, &st, LOAD_UNARY_MS) != REAP_OK ||
	    code_is_gone(st.code)) {
		if (w->o->verbose)
			fprintf(stderr, "reap-load: thread %d: batch ended: code %d: %s\n",
				w->index, st.code, st.msg);
		rc = 1;
		goto out;
	}
	if (st.code != GRPC_STATUS_OK) {
		fprintf(stderr, "reap-load: BatchUpdateBlobs failed: code %d: %s\n", st.code,
			st.msg);
		rc = REAP_E_INTERNAL;
		goto out;
	}
	/* Match answers by digest: the server need not keep the order. */
	for (size_t r = 0; r < resp->n_responses; r++) {
		const RE(BatchUpdateBlobsResponse__Response) *it = resp->responses[r];
		int code = it->status != NULL ? it->status->code : GRPC_STATUS_OK;
		size_t i = 0;

		while (i < LOAD_BATCH_BLOBS &&
		       (it->digest == NULL || acked[i] || it->digest->size_bytes != ds[i].size ||
			strcmp(it->digest->hash, hexes[i]) != 0))
			i++;
		if (i == LOAD_BATCH_BLOBS) {
			fprintf(stderr, "reap-load: BatchUpdateBlobs answered an unsent blob\n");
			rc = REAP_E_INTERNAL;
			continue;
		}
		if (code != GRPC_STATUS_OK) {
			fprintf(stderr, "reap-load: batch refused %s/%" PRId64 ": code %d: %s\n",
				hexes[i], ds[i].size, code,
				it->status->message != NULL ? it->status->message : "");
			rc = REAP_E_INTERNAL;
			continue;
		}
		acked[i] = true;
		if (log_digest(w->fd_acked, &ds[i]) != REAP_OK) {
			rc = REAP_E_IO;
			goto out;
		}
		w->counts.acked++;
	}
	if (resp->n_responses != LOAD_BATCH_BLOBS) {
		fprintf(stderr, "reap-load: BatchUpdateBlobs answered %zu of %d blobs\n",
			resp->n_responses, LOAD_BATCH_BLOBS);
		rc = REAP_E_INTERNAL;
	}
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	return rc;
}

/*
 * One ByteStream Write of a random large blob in LOAD_CHUNK pieces.
 * Returns 0 to go on, 1 when the server is gone, <0 on a failure.
 */
static int upload_write(load_worker_t *w, rpc_channel_t *ch, uint8_t *buf)
{
	Google__Bytestream__WriteResponse *resp = NULL;
	rpc_stream_t *s = NULL;
	rpc_status_t st = {0};
	reap_digest_t d;
	char hex[REAP_HASH_HEX_LEN + 1];
	char name[256];
	uint64_t u1 = rng_next(&w->rng), u2 = rng_next(&w->rng);
	size_t len = rng_range(&w->rng, LOAD_LARGE_MIN, LOAD_LARGE_MAX), sent = 0;
	int rc = 0, got;

	rng_fill(&w->rng, buf, len);
	if (reap_digest_of(buf, len, &d) != REAP_OK)
		return REAP_E_NOMEM;
	reap_digest_hex(&d, hex);
	/* A UUID-shaped upload id from the PRNG keeps runs reproducible. */
	snprintf(name, sizeof(name), "uploads/%08x-%04x-4%03x-8%03x-%012llx/blobs/%s/%zu",
		 (unsigned)(u1 >> 32), (unsigned)(u1 >> 16) & 0xffff, (unsigned)u1 & 0xfff,
		 (unsigned)(u2 >> 48) & 0xfff, (unsigned long long)(u2 & 0xffffffffffffull), hex,
		 len);
	if ((rc = log_digest(w->fd_attempted, &d)) != REAP_OK)
		return rc;
	w->counts.attempted++;
	if ((s = rpc_stream_open(ch, BS_SVC "Write", LOAD_STREAM_MS)) == NULL)
		return 1;
	for (size_t off = 0; off < len; off += LOAD_CHUNK) {
		Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
		size_t n = len - off < LOAD_CHUNK ? len - off : LOAD_CHUNK;

		if (off == 0)
			req.resource_name = name;
		req.write_offset = (int64_t)off;
		req.finish_write = off + n == len;
		req.data.data = buf + off;
		req.data.len = n;
		/* A failed send means the call is over; the status says why. */
		if (rpc_stream_send(s, &req.base) != REAP_OK)
			break;
		sent = off + n;
	}
	got = rpc_stream_recv(s, &google__bytestream__write_response__descriptor,
			      (ProtobufCMessage **)&resp);
	if (rpc_stream_finish(s, &st) != REAP_OK || code_is_gone(st.code)) {
		if (w->o->verbose)
			fprintf(stderr, "reap-load: thread %d: Write ended at %zu/%zu: %d: %s\n",
				w->index, sent, len, st.code, st.msg);
		rc = 1;
		goto out;
	}
	if (st.code != GRPC_STATUS_OK) {
		fprintf(stderr, "reap-load: Write %s/%zu failed: code %d: %s\n", hex, len, st.code,
			st.msg);
		rc = REAP_E_INTERNAL;
		goto out;
	}
	if (got != 1 || resp->committed_size != (int64_t)len) {
		fprintf(stderr, "reap-load: Write %s/%zu: OK but committed_size %lld\n", hex, len,
			got == 1 ? (long long)resp->committed_size : -1ll);
		rc = REAP_E_INTERNAL;
		goto out;
	}
	if ((rc = log_digest(w->fd_acked, &d)) != REAP_OK)
		goto out;
	w->counts.acked++;
out:
	if (resp != NULL)
		protobuf_c_message_free_unpacked(&resp->base, NULL);
	rpc_status_destroy(&st);
	return rc;
}

static void *upload_thread(void *arg)
{
	load_worker_t *w = arg;
	rpc_channel_t *ch = rpc_channel_new(w->o->target, 0);
	uint8_t *small = malloc((size_t)LOAD_BATCH_BLOBS * LOAD_SMALL_MAX);
	uint8_t *large = malloc(LOAD_LARGE_MAX);
	int rc = 0;

	if (ch == NULL || small == NULL || large == NULL) {
		fprintf(stderr, "reap-load: thread %d: out of memory\n", w->index);
		w->counts.failures++;
		goto out;
	}
	while (rc == 0 && time_left(&w->deadline)) {
		/* About one call in four is a large blob. */
		if (rng_next(&w->rng) % 4 == 0)
			rc = upload_write(w, ch, large);
		else
			rc = upload_batch(w, ch, small);
	}
	if (rc < 0)
		w->counts.failures++;
out:
	rpc_channel_free(ch);
	free(large);
	free(small);
	return NULL;
}

static int cmd_upload(const load_opts_t *o)
{
	load_worker_t *ws = NULL;
	pthread_t *tids = NULL;
	load_counts_t total = {0};
	char path[4096];
	int fd_acked = -1, fd_attempted = -1, started = 0, rc = 1;

	snprintf(path, sizeof(path), "%s.attempted", o->log);
	fd_acked = open(o->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	fd_attempted = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd_acked < 0 || fd_attempted < 0) {
		fprintf(stderr, "reap-load: cannot open %s or %s: %s\n", o->log, path,
			strerror(errno));
		goto out;
	}
	ws = calloc((size_t)o->threads, sizeof(*ws));
	tids = calloc((size_t)o->threads, sizeof(*tids));
	if (ws == NULL || tids == NULL)
		goto out;
	for (int i = 0; i < o->threads; i++) {
		ws[i].o = o;
		ws[i].index = i;
		ws[i].fd_acked = fd_acked;
		ws[i].fd_attempted = fd_attempted;
		ws[i].rng = o->seed * 1000003u + (uint64_t)i;
		rng_next(&ws[i].rng);
		clock_gettime(CLOCK_MONOTONIC, &ws[i].deadline);
		ws[i].deadline.tv_sec += o->seconds;
		if (pthread_create(&tids[i], NULL, upload_thread, &ws[i]) != 0) {
			fprintf(stderr, "reap-load: cannot start thread %d\n", i);
			goto out;
		}
		started++;
	}
	rc = 0;
out:
	for (int i = 0; i < started; i++) {
		pthread_join(tids[i], NULL);
		total.attempted += ws[i].counts.attempted;
		total.acked += ws[i].counts.acked;
		total.failures += ws[i].counts.failures;
	}
	if (started > 0)
		printf("upload: %" PRIu64 " attempted, %" PRIu64 " acked, %" PRIu64
		       " failed threads\n", total.attempted, total.acked, total.failures);
	if (total.failures > 0)
		rc = 1;
	if (fd_acked >= 0)
		close(fd_acked);
	if (fd_attempted >= 0)
		close(fd_attempted);
	free(tids);
	free(ws);
	return rc;
}

/* ---- verify ---- */

/* A digest to read back, and what the checker found. */
typedef struct check_item {
	reap_digest_t d;
	bool acked;  /* in the acked log (else attempted only) */
	bool present;
	bool bad;
} check_item_t;

typedef struct check_job {
	const load_opts_t *o;
	check_item_t *items;
	size_t n;
	_Atomic size_t next;
} check_job_t;

/* Read a log into a sorted array without duplicates. Missing file: REAP_E_IO. */
static int read_log(const char *path, reap_digest_t **out, size_t *n)
{
	FILE *f = fopen(path, "r");
	reap_digest_t *ds = NULL;
	char *line = NULL;
	size_t cap = 0, len = 0, linecap = 0, lineno = 0;
	int rc = REAP_OK;

	*out = NULL;
	*n = 0;
	if (f == NULL) {
		fprintf(stderr, "reap-load: cannot open %s: %s\n", path, strerror(errno));
		return REAP_E_IO;
	}
	while (getline(&line, &linecap, f) > 0) {
		char *sp = strchr(line, ' '), *end = NULL;
		long long size;

		lineno++;
		if (len == cap) {
			reap_digest_t *nd = realloc(ds, (cap = cap ? cap * 2 : 1024) * sizeof(*ds));
			if (nd == NULL) {
				rc = REAP_E_NOMEM;
				goto out;
			}
			ds = nd;
		}
		errno = 0;
		size = sp != NULL ? strtoll(sp + 1, &end, 10) : -1;
		if (sp == NULL || errno != 0 || end == sp + 1 || *end != '\n' ||
		    reap_digest_parse(line, (size_t)(sp - line), size, &ds[len], NULL) != REAP_OK) {
			fprintf(stderr, "reap-load: %s:%zu: malformed line\n", path, lineno);
			rc = REAP_E_INVALID;
			goto out;
		}
		len++;
	}
	if (len > 0)
		qsort(ds, len, sizeof(*ds), digest_cmp);
	for (size_t i = 0; i < len; i++)
		if (*n == 0 || digest_cmp(&ds[*n - 1], &ds[i]) != 0)
			ds[(*n)++] = ds[i];
	*out = ds;
	ds = NULL;
out:
	free(ds);
	free(line);
	fclose(f);
	return rc;
}

/* FindMissingBlobs over every item, in chunks; sets present. */
static int find_present(rpc_channel_t *ch, check_item_t *items, size_t n)
{
	RE(FindMissingBlobsRequest) req = RE_INIT(FIND_MISSING_BLOBS_REQUEST);
	RE(Digest) pbs[LOAD_FIND_CHUNK];
	RE(Digest) *ptrs[LOAD_FIND_CHUNK];
	char(*hexes)[REAP_HASH_HEX_LEN + 1] = malloc(LOAD_FIND_CHUNK * sizeof(*hexes));
	int rc = REAP_OK;

	if (hexes == NULL)
		return REAP_E_NOMEM;
	for (size_t base = 0; base < n; base += LOAD_FIND_CHUNK) {
		RE(FindMissingBlobsResponse) *resp = NULL;
		rpc_status_t st = {0};
		size_t m = n - base < LOAD_FIND_CHUNK ? n - base : LOAD_FIND_CHUNK;

		for (size_t i = 0; i < m; i++) {
			RE(Digest) init = RE_INIT(DIGEST);
			reap_digest_hex(&items[base + i].d, hexes[i]);
			pbs[i] = init;
			pbs[i].hash = hexes[i];
			pbs[i].size_bytes = items[base + i].d.size;
			ptrs[i] = &pbs[i];
			items[base + i].present = true;
		}
		req.n_blob_digests = m;
		req.blob_digests = ptrs;
		if (rpc_unary(ch, CAS_SVC "FindMissingBlobs", &req.base, FIND_RESP_DESC,
			      (ProtobufCMessage **)&resp, &st, LOAD_UNARY_MS) != REAP_OK ||
		    st.code != GRPC_STATUS_OK) {
			fprintf(stderr, "reap-load: FindMissingBlobs failed: code %d: %s\n",
				st.code, st.msg);
			rpc_status_destroy(&st);
			rc = REAP_E_UNAVAILABLE;
			goto out;
		}
		for (size_t k = 0; k < resp->n_missing_blob_digests; k++) {
			const RE(Digest) *md = resp->missing_blob_digests[k];
			for (size_t i = 0; i < m; i++)
				if (md->size_bytes == pbs[i].size_bytes &&
				    strcmp(md->hash, hexes[i]) == 0)
					items[base + i].present = false;
		}
		protobuf_c_message_free_unpacked(&resp->base, NULL);
		rpc_status_destroy(&st);
	}
out:
	free(hexes);
	return rc;
}

/* Read blob d in full and check its size and hash. 0, or a failure (printed). */
static int check_blob(rpc_channel_t *ch, const reap_digest_t *d)
{
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	rpc_stream_t *s = NULL;
	rpc_status_t st = {0};
	reap_hasher_t h = {0};
	reap_digest_t got;
	char hex[REAP_HASH_HEX_LEN + 1];
	char name[128];
	const char *why = NULL;
	int r, rc = REAP_OK;

	reap_digest_hex(d, hex);
	snprintf(name, sizeof(name), "blobs/%s/%" PRId64, hex, d->size);
	req.resource_name = name;
	if (reap_hasher_init(&h) != REAP_OK)
		return REAP_E_NOMEM;
	if ((s = rpc_stream_open(ch, BS_SVC "Read", LOAD_STREAM_MS)) == NULL ||
	    rpc_stream_send(s, &req.base) != REAP_OK || rpc_stream_close_send(s) != REAP_OK) {
		why = "cannot start Read";
		goto out;
	}
	for (;;) {
		Google__Bytestream__ReadResponse *m = NULL;
		r = rpc_stream_recv(s, &google__bytestream__read_response__descriptor,
				    (ProtobufCMessage **)&m);
		if (r != 1)
			break;
		reap_hasher_update(&h, m->data.data, m->data.len);
		protobuf_c_message_free_unpacked(&m->base, NULL);
		if (h.n > d->size)
			break;
	}
	rpc_stream_finish(s, &st);
	s = NULL;
	reap_hasher_final(&h, &got);
	if (st.code != GRPC_STATUS_OK)
		why = "Read failed";
	else if (got.size != d->size)
		why = "wrong size";
	else if (!reap_digest_eq(&got, d))
		why = "wrong SHA-256";
out:
	if (s != NULL)
		rpc_stream_cancel(s);
	if (why != NULL) {
		fprintf(stderr, "verify: BAD %s/%" PRId64 ": %s (code %d %s, %" PRId64 " bytes)\n",
			hex, d->size, why, st.code, st.msg, h.n);
		rc = REAP_E_DATA_LOSS;
	}
	rpc_status_destroy(&st);
	reap_hasher_destroy(&h);
	return rc;
}

static void *check_thread(void *arg)
{
	check_job_t *job = arg;
	rpc_channel_t *ch = rpc_channel_new(job->o->target, 0);
	size_t i;

	while ((i = atomic_fetch_add(&job->next, 1)) < job->n) {
		check_item_t *it = &job->items[i];
		if (it->present)
			it->bad = ch == NULL || check_blob(ch, &it->d) != REAP_OK;
	}
	rpc_channel_free(ch);
	return NULL;
}

static int cmd_verify(const load_opts_t *o)
{
	reap_digest_t *acked = NULL, *attempted = NULL;
	size_t n_acked = 0, n_attempted = 0, n = 0, started = 0;
	check_item_t *items = NULL;
	pthread_t *tids = NULL;
	rpc_channel_t *ch = NULL;
	check_job_t job = {0};
	char path[4096];
	size_t ok_acked = 0, ok_attempted = 0, missing_attempted = 0, bad = 0;
	int rc = 1;

	snprintf(path, sizeof(path), "%s.attempted", o->log);
	if (read_log(o->log, &acked, &n_acked) != REAP_OK ||
	    read_log(path, &attempted, &n_attempted) != REAP_OK)
		goto out;
	items = calloc(n_acked + n_attempted + 1, sizeof(*items));
	tids = calloc((size_t)o->threads, sizeof(*tids));
	if (items == NULL || tids == NULL)
		goto out;
	for (size_t i = 0; i < n_acked; i++)
		items[n++] = (check_item_t){.d = acked[i], .acked = true};
	for (size_t i = 0; i < n_attempted; i++)
		if (bsearch(&attempted[i], acked, n_acked, sizeof(*acked), digest_cmp) == NULL)
			items[n++] = (check_item_t){.d = attempted[i]};
	printf("verify: %zu acked, %zu attempted but not acked (unique digests)\n", n_acked,
	       n - n_acked);
	if ((ch = rpc_channel_new(o->target, 0)) == NULL || find_present(ch, items, n) != REAP_OK)
		goto out;
	job.o = o;
	job.items = items;
	job.n = n;
	for (int t = 0; t < o->threads; t++, started++)
		if (pthread_create(&tids[t], NULL, check_thread, &job) != 0)
			break;
	for (size_t t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	if (started == 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const check_item_t *it = &items[i];
		if (it->acked && !it->present) {
			char hex[REAP_HASH_HEX_LEN + 1];
			reap_digest_hex(&it->d, hex);
			fprintf(stderr, "verify: BAD %s/%" PRId64 ": acked but missing\n", hex,
				it->d.size);
			bad++;
		} else if (it->bad) {
			bad++;
		} else if (it->acked) {
			ok_acked++;
		} else if (it->present) {
			ok_attempted++;
		} else {
			missing_attempted++;
		}
	}
	printf("verify: %zu attempted-only digests missing (allowed)\n", missing_attempted);
	printf("verify: %zu acked ok, %zu attempted-present ok, %zu bad\n", ok_acked, ok_attempted,
	       bad);
	rc = bad == 0 ? 0 : 1;
out:
	rpc_channel_free(ch);
	free(tids);
	free(items);
	free(attempted);
	free(acked);
	return rc;
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reap-load upload --target HOST:PORT --log FILE [--threads N]\n"
		"                        [--seconds S] [--seed K] [--verbose]\n"
		"       reap-load verify --target HOST:PORT --log FILE [--threads N]\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"target", required_argument, NULL, 't'}, {"threads", required_argument, NULL, 'n'},
		{"seconds", required_argument, NULL, 's'}, {"log", required_argument, NULL, 'l'},
		{"seed", required_argument, NULL, 'S'},   {"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	load_opts_t o = {.threads = 4, .seconds = 20, .seed = 1};
	const char *mode = argc > 1 ? argv[1] : "";
	int opt;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt_long(argc - 1, argv + 1, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 't': o.target = optarg; break;
		case 'n': o.threads = atoi(optarg); break;
		case 's': o.seconds = atoi(optarg); break;
		case 'l': o.log = optarg; break;
		case 'S': o.seed = strtoull(optarg, NULL, 10); break;
		case 'v': o.verbose = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1 || o.target == NULL || o.log == NULL || o.threads < 1 ||
	    o.threads > 256 || o.seconds < 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(mode, "upload") == 0)
		return cmd_upload(&o);
	if (strcmp(mode, "verify") == 0)
		return cmd_verify(&o);
	usage(stderr);
	return 2;
}
