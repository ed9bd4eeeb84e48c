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
#include "cas/cas.h"
#include "common/config.h"
#include "common/instance.h"
#include "common/log.h"
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
	const char *ac_writers;
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
		"  --ac-writers WHO     none | anonymous (default none)\n"
		"  --log-level LEVEL    debug | info | warn | error (default info)\n"
		"  --worker-token-file F  the workers' shared secret (default DATA/worker.token,\n"
		"                       created 0600 if missing); reap-worker --token-file F\n"
		"  --lease-ttl MS       a worker lease not renewed this long is re-queued (default 30000)\n"
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
	    (err = reap_config_string(c, "ac_writers", &o->ac_writers, eb)) ||
	    (err = reap_config_string(c, "log_level", &o->log_level, eb)) ||
	    (err = reap_config_strings(c, "instances", &o->instances, &o->n_instances, eb)) ||
	    (err = reap_config_string(c, "worker_token_file", &o->worker_token_file, eb)) ||
	    (err = reap_config_int(c, "lease_ttl_ms", 1000, 3600000, &o->lease_ttl_ms, eb)))
		return err;
	v = o->no_sync;
	if ((err = reap_config_int(c, "no_sync", 0, 1, &v, eb)))
		return err;
	o->no_sync = v != 0;
	return reap_config_check_unknown(c, eb);
}

/*
 * The workers' shared secret: read from path, or created there (0600, from
 * the OS random source) when it does not exist yet.
 */
static int load_worker_token(const char *path, char out[65], reap_errbuf_t *eb)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;
	if (fd < 0 && errno == ENOENT) {
		if (auth_token_generate(out) != REAP_OK)
			return reap_errf(eb, REAP_E_INTERNAL, "cannot generate a worker token");
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, out, 64) != 64 || write(fd, "\n", 1) != 1) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return reap_errf(eb, REAP_E_IO, "cannot write %s: %s", path, strerror(e));
		}
		close(fd);
		return REAP_OK;
	}
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path, strerror(errno));
	n = read(fd, out, 64);
	close(fd);
	if (n < 16)
		return reap_errf(eb, REAP_E_INVALID, "%s holds no usable token (at least 16 bytes)", path);
	out[n] = '\0';
	out[strcspn(out, " \t\r\n")] = '\0';
	return strlen(out) < 16 ? reap_errf(eb, REAP_E_INVALID, "%s holds no usable token", path)
				: REAP_OK;
}

/* Mark the service of every method ("/pkg.Service/Method") as serving. */
static void set_serving(rpc_health_t *h, const rpc_method_t *ms, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char svc[256];
		const char *p = ms[i].path + 1, *slash = strchr(p, '/');
		if (slash == NULL || (size_t)(slash - p) >= sizeof(svc))
			continue;
		memcpy(svc, p, (size_t)(slash - p));
		svc[slash - p] = '\0';
		rpc_health_set(h, svc, true);
	}
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
		{"instances", required_argument, NULL, 'i'}, {"ac-writers", required_argument, NULL, 'w'},
		{"log-level", required_argument, NULL, 'L'}, {"no-sync", no_argument, NULL, 'S'},
		{"worker-token-file", required_argument, NULL, 'W'},
		{"lease-ttl", required_argument, NULL, 'T'},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	reapd_opts_t o = {.listen = "127.0.0.1:8980", .data = "reap-data",
			  .capacity = 10ull << 30, .max_msg = 8u << 20, .grace_ms = 10000,
			  .ac_writers = "none", .log_level = "info"};
	reap_config_t *cfg = NULL;
	const char **flag_instances = NULL;
	const char *default_instances[] = {"*"};
	reap_instances_t *instances = NULL;
	auth_policy_t *policy = NULL;
	cas_store_t *store = NULL;
	cas_service_t *cas = NULL;
	sched_t *sched = NULL;
	rpc_health_t *health = NULL;
	rpc_server_t *server = NULL;
	char token[65] = "", token_path[4096];
	reap_errbuf_t eb = {{0}};
	auth_config_t acfg = {0};
	sigset_t sigs;
	int opt, sig, port = 0, rc = 1;

	/*
	 * Stream buffers are around a MiB: keep them on the heap and keep freed
	 * memory a while, instead of mmap/munmap and page faults per message.
	 */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);

	/* The config file first, so flags given with it override it. */
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--config") == 0 && load_file(argv[i + 1], &o, &cfg, &eb) != REAP_OK)
			goto out;
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
		case 'w': o.ac_writers = optarg; break;
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
	if (auth_ac_writers_parse(o.ac_writers, &acfg.ac_writers) != REAP_OK) {
		reap_errf(&eb, REAP_E_INVALID, "ac_writers '%s' is not none or anonymous",
			  o.ac_writers);
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
	if (load_worker_token(token_path, token, &eb) != REAP_OK)
		goto out;
	acfg.worker_token = token;
	if ((policy = auth_policy_new(&acfg)) == NULL)
		goto out;
	rpc_server_config_t rcfg = {.listen = o.listen, .threads = (int)o.threads,
				    .max_recv_bytes = o.max_msg, .max_send_bytes = o.max_msg};
	if ((server = rpc_server_new(&rcfg, &eb)) == NULL)
		goto out;
	cas_service_config_t ccfg = {.instances = instances, .execution = true,
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
	    rpc_server_add_methods(server, hmethods, nh) != REAP_OK ||
	    rpc_server_start(server, &port, &eb) != REAP_OK)
		goto out;
	set_serving(health, methods, n);
	set_serving(health, smethods, ns);
	rpc_health_set(health, "", true);
	REAP_INFO("serving", "listen=%s port=%d data=%s capacity=%llu ac_writers=%s", o.listen,
		  port, o.data, (unsigned long long)o.capacity, o.ac_writers);
	/* Readiness line for scripts and tests. */
	printf("reapd listening on port %d\n", port);
	fflush(stdout);

	if (sigwait(&sigs, &sig) == 0)
		REAP_INFO("stopping", "signal=%d grace_ms=%lld", sig, (long long)o.grace_ms);
	rpc_health_set_all(health, false); /* draining: balancers stop sending work */
	sched_drain(sched);
	rpc_server_shutdown(server, (int)o.grace_ms);
	rc = 0;
out:
	if (rc == 1 && eb.msg[0] != '\0')
		fprintf(stderr, "reapd: %s\n", eb.msg);
	rpc_server_free(server); /* first: no call may still reach the services */
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
	memset(token, 0, sizeof(token));
	if (rc == 0)
		REAP_INFO("stopped", "%s", "");
	return rc;
}
