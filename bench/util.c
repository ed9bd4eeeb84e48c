/*
 * util.c - the pieces every scenario shares: random content, clocks, size
 * parsing, latency percentiles, CPU and memory accounting (this process via
 * getrusage, the server via /proc), channels and the worker pool.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <grpc/status.h>

#include "bench/bench.h"

uint64_t bench_rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void bench_rng_fill(uint64_t *s, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = bench_rng_next(s);
		memcpy(p + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = bench_rng_next(s);
		memcpy(p + i, &v, len - i);
	}
}

uint64_t bench_os_seed(void)
{
	uint64_t s = 0;
	if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
		s = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	return s;
}

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int bench_parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (s == NULL || !isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (toupper((unsigned char)*end)) {
	case '\0': break;
	case 'K': mul = 1ull << 10; end++; break;
	case 'M': mul = 1ull << 20; end++; break;
	case 'G': mul = 1ull << 30; end++; break;
	default: return -1;
	}
	if (mul > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
		end += strlen(end);
	if (*end != '\0' || v > SIZE_MAX / mul)
		return -1;
	*out = (size_t)(v * mul);
	return 0;
}

int bench_parse_int(const char *s, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > 100000000)
		return -1;
	*out = (int)v;
	return 0;
}

const char *bench_fmt_bytes(double bytes, char *buf, size_t len)
{
	if (bytes >= (double)(1u << 30))
		snprintf(buf, len, "%.1f GiB", bytes / (double)(1u << 30));
	else if (bytes >= (double)(1u << 20))
		snprintf(buf, len, "%.1f MiB", bytes / (double)(1u << 20));
	else if (bytes >= 1024)
		snprintf(buf, len, "%.1f KiB", bytes / 1024);
	else
		snprintf(buf, len, "%.0f B", bytes);
	return buf;
}

/* ---- latencies ---- */

void bench_lat_add(bench_lat_t *l, double ms)
{
	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 256;
		double *nv = realloc(l->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return; /* a lost sample only thins the statistics */
		l->v = nv;
		l->cap = ncap;
	}
	l->v[l->n++] = ms;
}

int bench_lat_merge(bench_lat_t *dst, const bench_lat_t *src)
{
	if (src->n == 0)
		return 0;
	if (dst->n + src->n > dst->cap) {
		double *nv = realloc(dst->v, (dst->n + src->n) * sizeof(*nv));
		if (nv == NULL)
			return -1;
		dst->v = nv;
		dst->cap = dst->n + src->n;
	}
	memcpy(dst->v + dst->n, src->v, src->n * sizeof(*dst->v));
	dst->n += src->n;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double bench_lat_pct(bench_lat_t *l, double p)
{
	size_t rank;

	if (l->n == 0)
		return 0;
	qsort(l->v, l->n, sizeof(*l->v), cmp_double);
	/* nearest rank: the smallest value with at least p% of values <= it */
	rank = (size_t)((p / 100.0) * (double)l->n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > l->n)
		rank = l->n;
	return l->v[rank - 1];
}

void bench_lat_destroy(bench_lat_t *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

/* ---- CPU and memory ---- */

static double self_cpu(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double bench_proc_cpu(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long ut, st;
	FILE *f;
	size_t n;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields follow the last ')'. */
	if ((p = strrchr(buf, ')')) == NULL)
		return -1;
	/* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double bench_proc_status_mib(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	double kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long long v;
		if (strncmp(line, key, kl) == 0 && line[kl] == ':' &&
		    sscanf(line + kl + 1, " %llu kB", &v) == 1) {
			kib = (double)v;
			break;
		}
	}
	fclose(f);
	return kib < 0 ? -1 : kib / 1024.0;
}

double bench_proc_hwm_mib(pid_t pid)
{
	return bench_proc_status_mib(pid, "VmHWM");
}

int bench_proc_reset_hwm(pid_t pid)
{
	char path[64];
	FILE *f;
	int rc;

	snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	rc = fputs("5", f) < 0 ? -1 : 0; /* 5: reset the peak RSS (proc(5)) */
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}

/* Busy and steal CPU seconds of the whole machine since boot (/proc/stat). */
static void machine_cpu(double *busy, double *steal)
{
	unsigned long long v[8] = {0};
	FILE *f = fopen("/proc/stat", "r");

	*busy = *steal = 0;
	if (f == NULL)
		return;
	/* cpu user nice system idle iowait irq softirq steal */
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]) == 8) {
		double hz = (double)sysconf(_SC_CLK_TCK);
		*busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
		*steal = (double)v[7] / hz;
	}
	fclose(f);
}

void bench_meter_start(bench_meter_t *m, pid_t server_pid)
{
	machine_cpu(&m->busy0, &m->steal0);
	m->srv = server_pid;
	m->srv_cpu0 = server_pid > 0 ? bench_proc_cpu(server_pid) : -1;
	m->cpu0 = self_cpu();
	m->t0 = bench_now();
}

void bench_meter_stop(const bench_meter_t *m, bench_result_t *r)
{
	r->wall_s = bench_now() - m->t0;
	r->client_cpu_s = self_cpu() - m->cpu0;
	r->server_cpu_s = -1;
	r->server_hwm_mib = -1;
	if (m->srv > 0 && m->srv_cpu0 >= 0) {
		double now = bench_proc_cpu(m->srv);
		if (now >= 0)
			r->server_cpu_s = now - m->srv_cpu0;
		r->server_hwm_mib = bench_proc_hwm_mib(m->srv);
	}
	double busy, steal;
	machine_cpu(&busy, &steal);
	r->steal_s = steal - m->steal0;
	r->other_cpu_s = busy - m->busy0 - r->client_cpu_s -
			 (r->server_cpu_s > 0 ? r->server_cpu_s : 0);
	if (r->other_cpu_s < 0)
		r->other_cpu_s = 0; /* tick rounding */
}

/* ---- channels, runs, threads ---- */

rpc_channel_t *bench_channel(const bench_ctx_t *c)
{
	rpc_channel_t *ch = rpc_channel_new(c->o.target, 0);
	if (ch == NULL)
		return NULL;
	for (int i = 0; i < c->o.n_headers; i++) {
		char key[128];
		const char *eq = strchr(c->o.headers[i], '=');
		size_t kl = eq != NULL ? (size_t)(eq - c->o.headers[i]) : 0;
		if (kl == 0 || kl >= sizeof(key))
			goto fail;
		memcpy(key, c->o.headers[i], kl);
		key[kl] = '\0';
		if (rpc_channel_set_header(ch, key, eq + 1) != REAP_OK)
			goto fail;
	}
	return ch;
fail:
	rpc_channel_free(ch);
	return NULL;
}

void bench_run_init(bench_run_t *run)
{
	atomic_init(&run->next, 0);
	atomic_init(&run->stop, false);
	atomic_init(&run->errors, 0);
	pthread_mutex_init(&run->mu, NULL);
	run->first_error[0] = '\0';
}

void bench_run_destroy(bench_run_t *run)
{
	pthread_mutex_destroy(&run->mu);
}

void bench_run_fail(bench_run_t *run, const char *fmt, ...)
{
	va_list ap;

	atomic_fetch_add(&run->errors, 1);
	atomic_store(&run->stop, true);
	pthread_mutex_lock(&run->mu);
	if (run->first_error[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(run->first_error, sizeof(run->first_error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&run->mu);
}

int bench_threads(int n, void *(*fn)(void *), void *args, size_t stride)
{
	pthread_t *t = calloc((size_t)n, sizeof(*t));
	int started = 0, rc = 0;

	if (t == NULL)
		return -1;
	for (; started < n; started++) {
		if (pthread_create(&t[started], NULL, fn, (char *)args + (size_t)started * stride) != 0) {
			rc = -1;
			break;
		}
	}
	for (int i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	free(t);
	return rc;
}

static const char *code_name(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED"};
	if (code < 0 || code >= (int)(sizeof(names) / sizeof(names[0])))
		return "?";
	return names[code];
}

const char *bench_status_text(const rpc_status_t *st, char *buf, size_t len)
{
	snprintf(buf, len, "%s: %s", code_name(st->code), st->msg);
	return buf;
}

void bench_random_digest(uint64_t *rng, int64_t size, reap_digest_t *d,
			 char hex[REAP_HASH_HEX_LEN + 1])
{
	bench_rng_fill(rng, d->hash, sizeof(d->hash));
	d->size = size;
	reap_digest_hex(d, hex);
}
