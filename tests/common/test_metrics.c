/* test_metrics.c - the metrics registry, its text exposition and the HTTP endpoint. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/metrics.h"

static char *render(reap_metric_registry_t *r)
{
	char *out = NULL;
	size_t len = 0;
	cr_assert_eq(reap_metric_registry_render(r, &out, &len), REAP_OK);
	cr_assert_not_null(out);
	cr_assert_eq(strlen(out), len);
	return out;
}

Test(metrics, exact_text)
{
	reap_metric_registry_t *r = reap_metric_registry_new();
	static const double b[] = {0.1, 1, 2.5};
	reap_metric_t *c = reap_metric_counter(r, "t_hits_total", "Hits.", NULL);
	reap_metric_t *g = reap_metric_gauge(r, "t_size_bytes", "Size\\with\nnewline.", NULL);
	reap_metric_t *lc = reap_metric_counter(r, "t_req_total", "Requests.", "method", "code",
						NULL);
	reap_metric_t *h = reap_metric_histogram(r, "t_dur_seconds", "Latency.", b, 3, "m", NULL);
	reap_metric_t *uh = reap_metric_histogram(r, "t_plain_seconds", "Plain.", b, 3, NULL);
	cr_assert(c && g && lc && h && uh);

	reap_metric_inc(c);
	reap_metric_add(c, 41);
	reap_metric_set_int(g, 1048576);
	reap_metric_gauge_add(g, 0.5);
	reap_metric_inc(reap_metric_labels(lc, "Get", "OK"));
	reap_metric_add(reap_metric_labels(lc, "Get", "OK"), 2);
	reap_metric_inc(reap_metric_labels(lc, "Put", "NOT_FOUND"));
	reap_metric_inc(lc); /* the family handle of a labeled family: ignored */
	reap_metric_observe(reap_metric_labels(h, "a"), 0.05);
	reap_metric_observe(reap_metric_labels(h, "a"), 1);
	reap_metric_observe(reap_metric_labels(h, "a"), 7);
	reap_metric_observe(uh, 2);

	char *out = render(r);
	const char *want = "# HELP t_hits_total Hits.\n"
			   "# TYPE t_hits_total counter\n"
			   "t_hits_total 42\n"
			   "# HELP t_size_bytes Size\\\\with\\nnewline.\n"
			   "# TYPE t_size_bytes gauge\n"
			   "t_size_bytes 1048576.5\n"
			   "# HELP t_req_total Requests.\n"
			   "# TYPE t_req_total counter\n"
			   "t_req_total{method=\"Get\",code=\"OK\"} 3\n"
			   "t_req_total{method=\"Put\",code=\"NOT_FOUND\"} 1\n"
			   "# HELP t_dur_seconds Latency.\n"
			   "# TYPE t_dur_seconds histogram\n"
			   "t_dur_seconds_bucket{m=\"a\",le=\"0.1\"} 1\n"
			   "t_dur_seconds_bucket{m=\"a\",le=\"1\"} 2\n"
			   "t_dur_seconds_bucket{m=\"a\",le=\"2.5\"} 2\n"
			   "t_dur_seconds_bucket{m=\"a\",le=\"+Inf\"} 3\n"
			   "t_dur_seconds_sum{m=\"a\"} 8.05\n"
			   "t_dur_seconds_count{m=\"a\"} 3\n"
			   "# HELP t_plain_seconds Plain.\n"
			   "# TYPE t_plain_seconds histogram\n"
			   "t_plain_seconds_bucket{le=\"0.1\"} 0\n"
			   "t_plain_seconds_bucket{le=\"1\"} 0\n"
			   "t_plain_seconds_bucket{le=\"2.5\"} 1\n"
			   "t_plain_seconds_bucket{le=\"+Inf\"} 1\n"
			   "t_plain_seconds_sum 2\n"
			   "t_plain_seconds_count 1\n";
	cr_assert_str_eq(out, want);
	cr_assert_eq(reap_metric_value(c), 42);
	cr_assert_eq(reap_metric_count(reap_metric_labels(h, "a")), 3);
	free(out);
	reap_metric_registry_free(r);
}

Test(metrics, registration_rules)
{
	reap_metric_registry_t *r = reap_metric_registry_new();
	reap_metric_t *a = reap_metric_counter(r, "x_total", "X.", "k", NULL);
	cr_assert_not_null(a);
	/* The same definition again is the same family; a different one is refused. */
	cr_assert_eq(reap_metric_counter(r, "x_total", "X.", "k", NULL), a);
	cr_assert_null(reap_metric_gauge(r, "x_total", "X.", "k", NULL));
	cr_assert_null(reap_metric_counter(r, "x_total", "X.", "j", NULL));
	cr_assert_null(reap_metric_counter(r, "9bad", "", NULL));
	cr_assert_null(reap_metric_counter(r, "bad-name", "", NULL));
	cr_assert_null(reap_metric_counter(r, "ok", "", "__reserved", NULL));
	cr_assert_null(reap_metric_counter(r, "ok", "", "a", "a", NULL));
	cr_assert_null(reap_metric_counter(r, "ok", "", "a", "b", "c", "d", "e", NULL));
	static const double bad[] = {1, 1};
	cr_assert_null(reap_metric_histogram(r, "h", "", bad, 2, NULL));
	cr_assert_null(reap_metric_histogram(r, "h", "", bad, 1, "le", NULL));
	/* Misuse is harmless: NULL handles, wrong kinds, labels on an unlabeled family. */
	reap_metric_inc(NULL);
	reap_metric_observe(NULL, 1);
	reap_metric_set(a, 5);
	cr_assert_null(reap_metric_labels(NULL, "v"));
	reap_metric_t *plain = reap_metric_counter(r, "p_total", "", NULL);
	cr_assert_null(reap_metric_labels(plain, "v"));
	cr_assert_null(reap_metric_labels(reap_metric_labels(a, "v"), "w"));
	reap_metric_registry_free(r);
	reap_metric_registry_free(NULL);
}

Test(metrics, label_escaping_and_normalising)
{
	reap_metric_registry_t *r = reap_metric_registry_new();
	reap_metric_t *c = reap_metric_counter(r, "e_total", "E.", "v", NULL);
	reap_metric_inc(reap_metric_labels(c, "a\\b\"c\nd"));
	reap_metric_inc(reap_metric_labels(c, "bad\xff\xfeutf8"));
	reap_metric_inc(reap_metric_labels(c, NULL));
	char longv[400];
	memset(longv, 'x', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	reap_metric_t *l1 = reap_metric_labels(c, longv);
	longv[300] = 'y'; /* differs only past the kept prefix: the same child */
	cr_assert_eq(reap_metric_labels(c, longv), l1);
	reap_metric_inc(l1);

	char *out = render(r);
	cr_assert(strstr(out, "e_total{v=\"a\\\\b\\\"c\\nd\"} 1\n") != NULL, "%s", out);
	cr_assert(strstr(out, "e_total{v=\"bad??utf8\"} 1\n") != NULL, "%s", out);
	cr_assert(strstr(out, "e_total{v=\"\"} 1\n") != NULL, "%s", out);
	char want[REAP_METRIC_MAX_VALUE + 32];
	snprintf(want, sizeof(want), "e_total{v=\"%.*s\"} 1\n", REAP_METRIC_MAX_VALUE, longv);
	cr_assert(strstr(out, want) != NULL, "%s", out);
	free(out);
	reap_metric_registry_free(r);
}

Test(metrics, child_cap_folds_into_other)
{
	reap_metric_registry_t *r = reap_metric_registry_new();
	reap_metric_t *c = reap_metric_counter(r, "cap_total", "Cap.", "k", "j", NULL);
	char v[32];
	reap_metric_t *first = NULL;
	for (int i = 0; i < REAP_METRIC_MAX_CHILDREN + 500; i++) {
		snprintf(v, sizeof(v), "v%d", i);
		reap_metric_t *ch = reap_metric_labels(c, v, "x");
		cr_assert_not_null(ch);
		if (i == 0)
			first = ch;
		reap_metric_inc(ch);
	}
	reap_metric_t *other = reap_metric_labels(c, "other", "other");
	cr_assert_eq(reap_metric_labels(c, "v0", "x"), first);
	cr_assert_eq(reap_metric_labels(c, "brand-new", "x"), other);
	cr_assert_eq(reap_metric_value(other), 500 + 1);
	cr_assert_eq(reap_metric_value(first), 1);

	char *out = render(r);
	size_t series = 0;
	for (char *p = out; (p = strstr(p, "\ncap_total{")) != NULL; p++)
		series++;
	cr_assert_eq(series, REAP_METRIC_MAX_CHILDREN);
	cr_assert(strstr(out, "cap_total{k=\"other\",j=\"other\"} 501\n") != NULL);
	free(out);
	reap_metric_registry_free(r);
}

#define THREADS 8
#define ITERS 100000

typedef struct {
	reap_metric_t *plain, *labeled, *hist, *gauge;
	int id;
} worker_arg_t;

static void *hammer(void *p)
{
	worker_arg_t *a = p;
	char v[16];
	for (int i = 0; i < ITERS; i++) {
		reap_metric_inc(a->plain);
		snprintf(v, sizeof(v), "m%d", i % 16);
		reap_metric_add(reap_metric_labels(a->labeled, v), 2);
		reap_metric_observe(reap_metric_labels(a->hist, v), (double)(i % 4));
		reap_metric_gauge_add(a->gauge, a->id % 2 == 0 ? 1.0 : -1.0);
	}
	return NULL;
}

Test(metrics, concurrent_updates_sum_exactly)
{
	reap_metric_registry_t *r = reap_metric_registry_new();
	static const double b[] = {0.5, 1.5, 2.5};
	worker_arg_t args[THREADS];
	pthread_t th[THREADS];
	reap_metric_t *plain = reap_metric_counter(r, "c_total", "", NULL);
	reap_metric_t *labeled = reap_metric_counter(r, "l_total", "", "m", NULL);
	reap_metric_t *hist = reap_metric_histogram(r, "h_seconds", "", b, 3, "m", NULL);
	reap_metric_t *gauge = reap_metric_gauge(r, "g", "", NULL);
	for (int i = 0; i < THREADS; i++) {
		args[i] = (worker_arg_t){plain, labeled, hist, gauge, i};
		cr_assert_eq(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);

	cr_assert_eq(reap_metric_value(plain), (double)THREADS * ITERS);
	double total = 0;
	uint64_t count = 0;
	char v[16];
	for (int m = 0; m < 16; m++) {
		snprintf(v, sizeof(v), "m%d", m);
		total += reap_metric_value(reap_metric_labels(labeled, v));
		count += reap_metric_count(reap_metric_labels(hist, v));
	}
	cr_assert_eq(total, 2.0 * THREADS * ITERS);
	cr_assert_eq(count, (uint64_t)THREADS * ITERS);
	cr_assert_eq(reap_metric_value(gauge), 0);
	/* m0 saw only i%16==0, all with i%4==0: every observation in the first bucket. */
	char *out = render(r);
	char want[128];
	snprintf(want, sizeof(want), "h_seconds_bucket{m=\"m0\",le=\"0.5\"} %d\n",
		 THREADS * ITERS / 16);
	cr_assert(strstr(out, want) != NULL, "%s", want);
	snprintf(want, sizeof(want), "h_seconds_sum{m=\"m1\"} %d\n", THREADS * ITERS / 16);
	cr_assert(strstr(out, want) != NULL, "%s", want);
	free(out);
	reap_metric_registry_free(r);
}

static void collect(void *ctx)
{
	int *calls = ctx;
	(*calls)++;
	reap_metric_set_int(reap_metrics()->cas_blobs, 1000 + *calls);
	reap_metric_zero_children(reap_metrics()->queue_depth);
	reap_metric_set_int(reap_metric_labels(reap_metrics()->queue_depth, "linux"), *calls);
}

/* Send one HTTP/1.0 request to 127.0.0.1:port; returns the whole response (free it). */
static char *http(int port, const char *method, const char *path)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	char req[256];
	int n = snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
	cr_assert_eq(write(fd, req, (size_t)n), n);
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	ssize_t got;
	while ((got = read(fd, buf + len, cap - len - 1)) > 0) {
		len += (size_t)got;
		if (cap - len < 1024)
			buf = realloc(buf, cap *= 2);
	}
	buf[len] = '\0';
	close(fd);
	return buf;
}

Test(metrics, http_endpoint)
{
	reap_errbuf_t eb = {{0}};
	int port = 0, calls = 0;
	const reap_metrics_t *m = reap_metrics();
	cr_assert_eq(reap_metrics_add_collector(collect, &calls), REAP_OK);
	reap_metrics_http_t *h = reap_metrics_http_start("127.0.0.1:0", &port, &eb);
	cr_assert_not_null(h, "%s", eb.msg);
	cr_assert_gt(port, 0);

	reap_metric_inc(m->ac_hits);
	reap_metrics_rpc_observe(NULL, "/pkg.Svc/Get", 5, 0.002, 100, 2000);
	char *a = http(port, "GET", "/metrics");
	cr_assert(strncmp(a, "HTTP/1.0 200", 12) == 0 || strncmp(a, "HTTP/1.1 200", 12) == 0, "%s", a);
	cr_assert(strstr(a, "Content-Type: text/plain; version=0.0.4") != NULL, "%s", a);
	cr_assert(strstr(a, "\r\n\r\n# HELP reap_rpc_requests_total ") != NULL, "%s", a);
	cr_assert(strstr(a, "\nreap_ac_hits_total 1\n") != NULL, "%s", a);
	cr_assert(strstr(a, "\nreap_cas_blobs 1001\n") != NULL, "%s", a);
	cr_assert(strstr(a, "\nreap_queue_depth{platform=\"linux\"} 1\n") != NULL, "%s", a);
	cr_assert(strstr(a, "\nreap_rpc_requests_total{method=\"/pkg.Svc/Get\",code=\"NOT_FOUND\"} 1\n"),
		  "%s", a);
	cr_assert(strstr(a, "\nreap_rpc_duration_seconds_bucket{method=\"/pkg.Svc/Get\",le=\"0.0025\"} 1\n"),
		  "%s", a);
	cr_assert(strstr(a, "\nreap_rpc_received_bytes_total{method=\"/pkg.Svc/Get\"} 100\n"), "%s", a);
	cr_assert(strstr(a, "\nreap_rpc_sent_bytes_total{method=\"/pkg.Svc/Get\"} 2000\n"), "%s", a);
	cr_assert(strstr(a, "# TYPE reap_operations gauge\n") != NULL, "%s", a);

	reap_metric_add(m->ac_hits, 4);
	reap_metrics_rpc_observe(NULL, "/pkg.Svc/Get", 0, 0.5, 1, 1);
	char *b = http(port, "GET", "/metrics");
	cr_assert(strstr(b, "\nreap_ac_hits_total 5\n") != NULL, "%s", b);
	cr_assert(strstr(b, "\nreap_cas_blobs 1002\n") != NULL, "%s", b);
	cr_assert(strstr(b, "\nreap_rpc_requests_total{method=\"/pkg.Svc/Get\",code=\"OK\"} 1\n"),
		  "%s", b);
	cr_assert(strstr(b, "\nreap_rpc_duration_seconds_count{method=\"/pkg.Svc/Get\"} 2\n"), "%s", b);

	char *c = http(port, "GET", "/");
	cr_assert(strstr(c, " 404 ") != NULL, "%s", c);
	char *d = http(port, "POST", "/metrics");
	cr_assert(strstr(d, " 405 ") != NULL, "%s", d);
	char *e = http(port, "HEAD", "/metrics");
	cr_assert(strstr(e, " 200 ") != NULL && strstr(e, "# HELP") == NULL, "%s", e);
	free(a);
	free(b);
	free(c);
	free(d);
	free(e);

	reap_metrics_http_stop(h);
	reap_metrics_remove_collector(collect, &calls);
	int before = calls;
	char *out = NULL;
	size_t len = 0;
	cr_assert_eq(reap_metric_registry_render(NULL, &out, &len), REAP_OK);
	free(out);
	cr_assert_eq(calls, before, "a removed collector must not run");
}

Test(metrics, http_bad_addresses)
{
	reap_errbuf_t eb = {{0}};
	int port = -1;
	cr_assert_null(reap_metrics_http_start("127.0.0.1", &port, &eb));
	cr_assert_eq(port, 0);
	cr_assert_null(reap_metrics_http_start("127.0.0.1:99999", NULL, &eb));
	cr_assert_null(reap_metrics_http_start("no such host!:80", NULL, &eb));
	/* Binding the same port twice fails cleanly. */
	reap_metrics_http_t *h = reap_metrics_http_start("127.0.0.1:0", &port, &eb);
	cr_assert_not_null(h, "%s", eb.msg);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	cr_assert_null(reap_metrics_http_start(addr, NULL, &eb));
	cr_assert(strstr(eb.msg, "cannot listen") != NULL, "%s", eb.msg);
	reap_metrics_http_stop(h);
	reap_metrics_http_stop(NULL);
}

Test(metrics, grpc_code_names)
{
	cr_assert_str_eq(reap_metrics_grpc_code_name(0), "OK");
	cr_assert_str_eq(reap_metrics_grpc_code_name(5), "NOT_FOUND");
	cr_assert_str_eq(reap_metrics_grpc_code_name(16), "UNAUTHENTICATED");
	cr_assert_str_eq(reap_metrics_grpc_code_name(17), "UNKNOWN");
	cr_assert_str_eq(reap_metrics_grpc_code_name(-1), "UNKNOWN");
}
