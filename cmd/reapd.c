/*
 * reapd.c - the reap server: reads its configuration (file, then flags),
 * opens the store, registers the services and serves until SIGINT/SIGTERM,
 * then drains calls in flight and closes the store cleanly.
 * Wiring only: all behaviour lives in the modules.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cmd/notify.h"
#include "cmd/reapd_int.h"
#include "cas/cas.h"
#include "common/config.h"
#include "common/instance.h"
#include "common/log.h"
#include "common/metrics.h"
#include "rpc/rpc.h"
#include "scheduler/sched.h"

typedef struct reapd_opts {
	const char *listen;
	const char *data;
	uint64_t capacity;
	uint64_t inline_max;
	uint64_t max_msg;
	int64_t threads;
	int64_t grace_ms;
	const char *anonymous;      /* none | loopback | any; NULL = config */
	const char *anonymous_role; /* client | writer | ...; NULL = config */
	const char *local_worker;   /* subject of the generated worker token */
	const char *tls_cert, *tls_key, *tls_client_ca;
	bool tls_require_client_cert;
	const char *metrics_listen; /* Prometheus /metrics; "off" = none */
	const char *log_level;
	const char **instances;
	size_t n_instances;
	bool no_sync;
	const char *worker_token_file;
	int64_t lease_ttl_ms;
} reapd_opts_t;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reapd [--config FILE] [options]\n"
		"  --config FILE        JSON configuration (see deploy/README.md)\n"
		"  --listen ADDR        listen address (default 127.0.0.1:8980)\n"
		"  --data DIR           data folder (default ./reap-data)\n"
		"  --capacity SIZE      CAS capacity, e.g. 10GiB (default 10GiB)\n"
		"  --threads N          server threads (default: one per core)\n"
		"  --max-message SIZE   largest gRPC message (default 8MiB)\n"
		"  --instances A,B,...  accepted instance names; \"*\" = any (default *)\n"
		"  --anonymous WHERE    none | loopback | any: where callers without a credential\n"
		"                       are accepted (default loopback)\n"
		"  --anonymous-role R   their role: client | writer (default client)\n"
		"  --log-level LEVEL    debug | info | warn | error (default info)\n"
		"  --worker-token-file F  the local worker's token (default DATA/worker.token,\n"
		"                       issued 0600 at start when missing); reap-worker --token-file F\n"
		"  --local-worker NAME  the worker name that token is bound to (default local)\n"
		"  --lease-ttl MS       a worker lease not renewed this long is re-queued (default 30000)\n"
		"  --tls-cert FILE      serve TLS with this certificate chain (PEM)\n"
		"  --tls-key FILE       and its private key\n"
		"  --tls-client-ca FILE verify client certificates (mTLS) against this CA; a\n"
		"                       verified certificate's SAN (else CN) is the caller's identity\n"
		"  --tls-require-client-cert  refuse connections without a client certificate\n"
		"  --metrics ADDR       serve Prometheus /metrics over HTTP here (default\n"
		"                       127.0.0.1:9090; port 0 = any free port; off = none)\n"
		"  --no-sync            do not fsync blob files (benchmarks only)\n");
}

static int load_file(const char *path, reapd_opts_t *o, reap_config_t **cfgp, reap_errbuf_t *eb)
{
	reap_config_t *c = reap_config_load(path, eb);
	int64_t v;
	int err;

	*cfgp = c;
	if (c == NULL)
		return REAP_E_INVALID;
	if ((err = reap_config_string(c, "listen", &o->listen, eb)) ||
	    (err = reap_config_string(c, "data", &o->data, eb)) ||
	    (err = reap_config_size(c, "capacity", &o->capacity, eb)) ||
	    (err = reap_config_size(c, "inline_max", &o->inline_max, eb)) ||
	    (err = reap_config_size(c, "max_message", &o->max_msg, eb)) ||
	    (err = reap_config_int(c, "threads", 0, 256, &o->threads, eb)) ||
	    (err = reap_config_int(c, "grace_ms", 0, 3600000, &o->grace_ms, eb)) ||
	    (err = reap_config_string(c, "local_worker", &o->local_worker, eb)) ||
	    (err = reap_config_string(c, "tls_cert", &o->tls_cert, eb)) ||
	    (err = reap_config_string(c, "tls_key", &o->tls_key, eb)) ||
	    (err = reap_config_string(c, "tls_client_ca", &o->tls_client_ca, eb)) ||
	    (err = reap_config_string(c, "log_level", &o->log_level, eb)) ||
	    (err = reap_config_strings(c, "instances", &o->instances, &o->n_instances, eb)) ||
	    (err = reap_config_string(c, "worker_token_file", &o->worker_token_file, eb)) ||
	    (err = reap_config_int(c, "lease_ttl_ms", 1000, 3600000, &o->lease_ttl_ms, eb)))
		return err;
	v = o->no_sync;
	if ((err = reap_config_int(c, "no_sync", 0, 1, &v, eb)))
		return err;
	o->no_sync = v != 0;
	v = o->tls_require_client_cert;
	if ((err = reap_config_int(c, "tls_require_client_cert", 0, 1, &v, eb)))
		return err;
	o->tls_require_client_cert = v != 0;
	/* Unknown keys are refused in main, once the "auth" object was read. */
	return reap_config_string(c, "metrics_listen", &o->metrics_listen, eb);
}

/* Split a comma list into a new NULL-terminated array pointing into s (modified). */
static const char **split_commas(char *s, size_t *n)
{
	size_t cap = 1;
	for (char *p = s; *p; p++)
		cap += *p == ',';
	const char **arr = calloc(cap + 1, sizeof(*arr));
	if (arr == NULL)
		return NULL;
	*n = 0;
	for (char *tok = strtok(s, ","); tok != NULL; tok = strtok(NULL, ","))
		arr[(*n)++] = tok;
	return arr;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
		{"data", required_argument, NULL, 'd'}, {"capacity", required_argument, NULL, 'C'},
		{"threads", required_argument, NULL, 't'}, {"max-message", required_argument, NULL, 'm'},
		{"instances", required_argument, NULL, 'i'}, {"anonymous", required_argument, NULL, 'a'},
		{"anonymous-role", required_argument, NULL, 'r'},
		{"local-worker", required_argument, NULL, 'n'},
		{"tls-cert", required_argument, NULL, 'E'}, {"tls-key", required_argument, NULL, 'Y'},
		{"tls-client-ca", required_argument, NULL, 'A'},
		{"tls-require-client-cert", no_argument, NULL, 'R'},
		{"metrics", required_argument, NULL, 'M'},
		{"log-level", required_argument, NULL, 'L'}, {"no-sync", no_argument, NULL, 'S'},
		{"worker-token-file", required_argument, NULL, 'W'},
		{"lease-ttl", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	reapd_opts_t o = {.listen = "127.0.0.1:8980", .data = "reap-data",
			  .capacity = 10ull << 30, .max_msg = 8u << 20, .grace_ms = 10000,
			  .local_worker = "local", .log_level = "info",
			  .metrics_listen = "127.0.0.1:9090"};
	reap_config_t *cfg = NULL;
	const char **flag_instances = NULL;
	const char *default_instances[] = {"*"};
	reap_instances_t *instances = NULL;
	auth_policy_t *policy = NULL;
	cas_store_t *store = NULL;
	cas_service_t *cas = NULL;
	sched_t *sched = NULL;
	rpc_health_t *health = NULL;
	rpc_reflection_t *refl = NULL;
	reap_metrics_http_t *metrics = NULL;
	int metrics_port = 0;
	rpc_server_t *server = NULL;
	char token_path[4096];
	reap_errbuf_t eb = {{0}};
	auth_config_t *acfgp = NULL, acfg;
	auth_key_t keys[AUTH_MAX_KEYS];
	size_t n_keys = 0;
	sigset_t sigs;
	int opt, sig, port = 0, rc = 1;

	/*
	 * Stream buffers are around a MiB: keep them on the heap and keep freed
	 * memory a while, instead of mmap/munmap and page faults per message.
	 */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	/* Few arenas: per-thread arenas each keep freed stream buffers (measured
	 * 150 MiB peak vs 110 MiB with one arena on a 2 GiB write). */
	mallopt(M_ARENA_MAX, 2);

	/* The config file first, so flags given with it override it. */
	for (int i = 1; i < argc; i++) {
		const char *file = NULL;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
		if (file != NULL && cfg != NULL) {
			reap_errf(&eb, REAP_E_INVALID, "--config given twice");
			goto out;
		}
		if (file != NULL && load_file(file, &o, &cfg, &eb) != REAP_OK)
			goto out;
	}
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': break;
		case 'l': o.listen = optarg; break;
		case 'd': o.data = optarg; break;
		case 'C':
			if (reap_parse_size(optarg, &o.capacity) != REAP_OK) {
				reap_errf(&eb, REAP_E_INVALID, "--capacity: bad size '%s'", optarg);
				goto out;
			}
			break;
		case 'm':
			if (reap_parse_size(optarg, &o.max_msg) != REAP_OK) {
				reap_errf(&eb, REAP_E_INVALID, "--max-message: bad size '%s'", optarg);
				goto out;
			}
			break;
		case 't': o.threads = atoi(optarg); break;
		case 'i':
			free(flag_instances);
			if ((flag_instances = split_commas(optarg, &o.n_instances)) == NULL)
				goto out;
			o.instances = flag_instances;
			break;
		case 'a': o.anonymous = optarg; break;
		case 'r': o.anonymous_role = optarg; break;
		case 'n': o.local_worker = optarg; break;
		case 'E': o.tls_cert = optarg; break;
		case 'Y': o.tls_key = optarg; break;
		case 'A': o.tls_client_ca = optarg; break;
		case 'R': o.tls_require_client_cert = true; break;
		case 'M': o.metrics_listen = optarg; break;
		case 'L': o.log_level = optarg; break;
		case 'S': o.no_sync = true; break;
		case 'W': o.worker_token_file = optarg; break;
		case 'T': o.lease_ttl_ms = atoll(optarg); break;
		case 'h': usage(stdout); rc = 0; goto out;
		default: usage(stderr); rc = 2; goto out;
		}
	}
	if (optind != argc) {
		usage(stderr);
		rc = 2;
		goto out;
	}
	if (reap_log_level_parse(o.log_level) < 0) {
		reap_errf(&eb, REAP_E_INVALID, "log level '%s' is not debug, info, warn or error",
			  o.log_level);
		goto out;
	}
	reap_log_set_level((reap_log_level_t)reap_log_level_parse(o.log_level));
	if (auth_config_load(cfg, o.data, &acfgp, &eb) != REAP_OK ||
	    (cfg != NULL && reap_config_check_unknown(cfg, &eb) != REAP_OK))
		goto out;
	acfg = *acfgp;
	if (o.anonymous != NULL) {
		if (strcmp(o.anonymous, "none") == 0)
			acfg.anonymous = AUTH_ANON_NONE;
		else if (strcmp(o.anonymous, "loopback") == 0)
			acfg.anonymous = AUTH_ANON_LOOPBACK;
		else if (strcmp(o.anonymous, "any") == 0)
			acfg.anonymous = AUTH_ANON_ANY;
		else {
			reap_errf(&eb, REAP_E_INVALID, "--anonymous '%s' is not none, loopback or any",
				  o.anonymous);
			goto out;
		}
	}
	if (o.anonymous_role != NULL && auth_role_parse(o.anonymous_role, &acfg.anonymous_role)) {
		reap_errf(&eb, REAP_E_INVALID,
			  "--anonymous-role '%s' is not client, worker, writer or admin",
			  o.anonymous_role);
		goto out;
	}
	if (o.max_msg < (64u << 10) || o.max_msg > (1u << 30)) {
		reap_errf(&eb, REAP_E_INVALID, "max_message must be between 64KiB and 1GiB");
		goto out;
	}
	instances = o.n_instances > 0 ? reap_instances_new(o.instances, o.n_instances, &eb)
				      : reap_instances_new(default_instances, 1, &eb);
	if (instances == NULL)
		goto out;

	/* Signals are taken synchronously by this thread; every other thread blocks them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP); /* reopen the audit log after rotation */
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	cas_store_config_t scfg = {.path = o.data, .capacity_bytes = o.capacity,
				   .inline_max = (size_t)o.inline_max, .no_sync = o.no_sync};
	if ((store = cas_store_open(&scfg, &eb)) == NULL)
		goto out;
	if (o.worker_token_file == NULL)
		snprintf(token_path, sizeof(token_path), "%s/worker.token", o.data);
	else
		snprintf(token_path, sizeof(token_path), "%s", o.worker_token_file);
	if (acfg.n_keys > AUTH_MAX_KEYS) {
		reap_errf(&eb, REAP_E_INVALID, "at most %d token keys", AUTH_MAX_KEYS);
		goto out;
	}
	if (acfg.n_keys > 0)
		memcpy(keys, acfg.keys, acfg.n_keys * sizeof(keys[0]));
	n_keys = acfg.n_keys;
	if (reapd_bootstrap_keys(o.data, keys, &n_keys, AUTH_MAX_KEYS, &eb) != REAP_OK ||
	    reapd_bootstrap_worker_token(token_path, o.local_worker, keys, n_keys, &eb) != REAP_OK)
		goto out;
	acfg.keys = keys;
	acfg.n_keys = n_keys;
	if ((policy = auth_policy_new(&acfg, &eb)) == NULL)
		goto out;
	rpc_tls_server_t tls = {.cert_file = o.tls_cert, .key_file = o.tls_key,
				.client_ca_file = o.tls_client_ca,
				.require_client_cert = o.tls_require_client_cert};
	rpc_server_config_t rcfg = {.listen = o.listen, .threads = (int)o.threads,
				    .max_recv_bytes = o.max_msg, .max_send_bytes = o.max_msg,
				    .tls = o.tls_cert != NULL || o.tls_key != NULL ? &tls : NULL};
	if ((server = rpc_server_new(&rcfg, &eb)) == NULL)
		goto out;
	/* 1 MiB Read messages: a quarter of the per-message overhead of the
	 * 256 KiB default, still one bounded buffer per stream. */
	cas_service_config_t ccfg = {.instances = instances, .execution = true,
				     .read_chunk_bytes = 1u << 20,
				     .max_recv_bytes = rpc_server_max_recv(server),
				     .max_send_bytes = rpc_server_max_send(server)};
	if ((cas = cas_service_new(store, policy, &ccfg)) == NULL) {
		reap_errf(&eb, REAP_E_NOMEM, "out of memory");
		goto out;
	}
	sched_config_t sc = {.lease_ttl_ms = o.lease_ttl_ms};
	if ((sched = sched_new(cas, &sc, &eb)) == NULL)
		goto out;
	size_t n, ns;
	const rpc_method_t *methods = cas_service_methods(cas, &n);
	const rpc_method_t *smethods = sched_methods(sched, &ns);
	size_t nh;
	if ((health = rpc_health_new()) == NULL)
		goto out;
	const rpc_method_t *hmethods = rpc_health_methods(health, &nh);
	if (rpc_server_add_methods(server, methods, n) != REAP_OK ||
	    rpc_server_add_methods(server, smethods, ns) != REAP_OK ||
	    rpc_server_add_methods(server, hmethods, nh) != REAP_OK)
		goto out;
	/* Reflection last: it lists every service registered before it, and itself. */
	size_t nr;
	if ((refl = rpc_reflection_new(server, &eb)) == NULL)
		goto out;
	const rpc_method_t *rmethods = rpc_reflection_methods(refl, &nr);
	if (rpc_server_add_methods(server, rmethods, nr) != REAP_OK)
		goto out;
	rpc_server_set_observer(server, reap_metrics_rpc_observe, NULL);
	sched_metrics_attach(sched);
	if (strcmp(o.metrics_listen, "off") != 0 &&
	    (metrics = reap_metrics_http_start(o.metrics_listen, &metrics_port, &eb)) == NULL)
		goto out;
	rpc_health_set_server(health, server, false); /* NOT_SERVING while starting */
	if (rpc_server_start(server, &port, &eb) != REAP_OK)
		goto out;
	rpc_health_set_server(health, server, true);
	REAP_INFO("serving", "listen=%s port=%d data=%s capacity=%llu anonymous=%s/%s", o.listen,
		  port, o.data, (unsigned long long)o.capacity,
		  acfg.anonymous == AUTH_ANON_NONE ? "none"
		  : acfg.anonymous == AUTH_ANON_ANY ? "any" : "loopback",
		  auth_role_name(acfg.anonymous_role == AUTH_ROLE_NONE ? AUTH_ROLE_CLIENT
								 : acfg.anonymous_role));
	if (metrics != NULL)
		REAP_INFO("metrics", "listen=%s port=%d", o.metrics_listen, metrics_port);
	/* Readiness line for scripts and tests. */
	printf("reapd listening on port %d\n", port);
	fflush(stdout);
	char nstatus[64];
	snprintf(nstatus, sizeof(nstatus), "serving on port %d", port);
	reap_notify_ready(nstatus);

	while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP) {
		reap_errbuf_t heb = {{0}};
		if (auth_audit_reopen(policy, &heb) != REAP_OK)
			REAP_WARN("audit log not reopened", "err=\"%s\"", heb.msg);
		else
			REAP_INFO("audit log reopened", "%s", "");
	}
	reap_notify_stopping();
	REAP_INFO("stopping", "signal=%d grace_ms=%lld", sig, (long long)o.grace_ms);
	rpc_health_shutdown(health); /* draining: balancers stop sending work */
	sched_drain(sched);
	rpc_server_shutdown(server, (int)o.grace_ms);
	rc = 0;
out:
	if (rc == 1 && eb.msg[0] != '\0')
		fprintf(stderr, "reapd: %s\n", eb.msg);
	rpc_server_free(server); /* first: no call may still reach the services */
	rpc_reflection_free(refl);
	reap_metrics_http_stop(metrics);
	if (sched != NULL)
		sched_metrics_detach(sched);
	rpc_health_free(health);
	sched_free(sched);
	cas_service_free(cas);
	cas_store_close(store);
	auth_policy_free(policy);
	reap_instances_free(instances);
	if (o.instances != flag_instances)
		free(o.instances);
	free(flag_instances);
	reap_config_free(cfg);
	auth_config_free(acfgp);
	memset(keys, 0, sizeof(keys));
	if (rc == 0)
		REAP_INFO("stopped", "%s", "");
	return rc;
}
