/*
 * reap_worker.c - the reap worker: reads its configuration (file, then
 * flags), starts the worker daemon (slots that pull leases from the
 * scheduler and run actions under bubblewrap) and runs until SIGINT/SIGTERM.
 * Wiring only: all behaviour lives in worker/.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cmd/notify.h"
#include "common/config.h"
#include "common/log.h"
#include "worker/worker.h"

/* Toolchain paths visible read-only in the sandbox unless --ro-path/ro_paths say otherwise. */
static const char *const default_ro_paths[] = {
	"/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/alternatives", "/etc/ld.so.cache",
	"/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
	"/etc/localtime",
};

typedef struct opts {
	const char *scheduler, *cas, *name, *work, *cache, *token_file, *log_level, *bwrap;
	const char *toolchain_id; /* declared toolchain (image) id; NULL = walk the ro paths */
	const char *tls_ca, *tls_cert, *tls_key, *tls_server_name; /* TLS to reapd */
	int64_t slots, default_timeout_s;
	int64_t limit_cpu, limit_pids, sandbox_uid, sandbox_gid; /* sandbox limits and identity */
	uint64_t limit_memory, limit_disk, limit_tmp, limit_output;
	uint64_t cache_size;
	const char **platform, **ro_paths; /* from the config file (free the arrays) */
	size_t n_platform, n_ro_paths;
} opts_t;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reap-worker [--config FILE] [options]\n"
		"  --config FILE          JSON configuration with the keys below (e.g. \"cache_size\")\n"
		"                         and, in the file only, the per-action sandbox limits (0 = none):\n"
		"                         limit_cpu_seconds (3600), limit_memory (16GiB), limit_disk\n"
		"                         (16GiB), limit_tmp (512MiB), limit_pids (4096), limit_output\n"
		"                         (256MiB), and sandbox_uid/sandbox_gid (65534, when root)\n"
		"  --scheduler HOST:PORT  the scheduler's WorkerQueue (default 127.0.0.1:8980)\n"
		"  --cas HOST:PORT        the CAS (default: the scheduler's address)\n"
		"  --name NAME            worker name (default: the subject of its worker token,\n"
		"                         else HOSTNAME-PID)\n"
		"  --slots N              actions at once (default: one per core)\n"
		"  --work DIR             exec roots (default ./reap-worker/work)\n"
		"  --cache DIR            local file cache (default ./reap-worker/cache)\n"
		"  --cache-size SIZE      cache capacity, e.g. 10GiB (default 10GiB)\n"
		"  --platform NAME=VALUE  a platform property offered (repeatable)\n"
		"  --ro-path PATH         a host path visible read-only in the sandbox (repeatable;\n"
		"                         replaces the default list: /usr /bin /lib /lib64 /sbin and\n"
		"                         the /etc files the dynamic linker and libc need)\n"
		"  --token-file FILE      bearer token for the scheduler and CAS (reapd's worker token)\n"
		"  --default-timeout SECS for actions without a timeout (default 600)\n"
		"  --bwrap PATH           bubblewrap (default /usr/bin/bwrap)\n"
		"  --tls-ca FILE          connect with TLS, trusting this CA (PEM)\n"
		"  --tls-cert FILE, --tls-key FILE  a client certificate (mTLS identity)\n"
		"  --tls-server-name N    expect this name in reapd's certificate\n"
		"  --toolchain-id ID      declare the toolchain (e.g. an image id) instead of\n"
		"                         fingerprinting the read-only paths at start\n"
		"  --log-level LEVEL      debug | info | warn | error (default info)\n");
}

static int load_file(const char *path, opts_t *o, reap_config_t **cfgp, reap_errbuf_t *eb)
{
	reap_config_t *c = reap_config_load(path, eb);
	int err;

	*cfgp = c;
	if (c == NULL)
		return REAP_E_INVALID;
	if ((err = reap_config_string(c, "scheduler", &o->scheduler, eb)) ||
	    (err = reap_config_string(c, "cas", &o->cas, eb)) ||
	    (err = reap_config_string(c, "name", &o->name, eb)) ||
	    (err = reap_config_int(c, "slots", 1, 1024, &o->slots, eb)) ||
	    (err = reap_config_string(c, "work", &o->work, eb)) ||
	    (err = reap_config_string(c, "cache", &o->cache, eb)) ||
	    (err = reap_config_size(c, "cache_size", &o->cache_size, eb)) ||
	    (err = reap_config_strings(c, "platform", &o->platform, &o->n_platform, eb)) ||
	    (err = reap_config_strings(c, "ro_paths", &o->ro_paths, &o->n_ro_paths, eb)) ||
	    (err = reap_config_string(c, "token_file", &o->token_file, eb)) ||
	    (err = reap_config_int(c, "default_timeout", 1, 86400 * 7, &o->default_timeout_s, eb)) ||
	    (err = reap_config_string(c, "bwrap", &o->bwrap, eb)) ||
	    (err = reap_config_int(c, "limit_cpu_seconds", 0, 86400 * 7, &o->limit_cpu, eb)) ||
	    (err = reap_config_size(c, "limit_memory", &o->limit_memory, eb)) ||
	    (err = reap_config_size(c, "limit_disk", &o->limit_disk, eb)) ||
	    (err = reap_config_size(c, "limit_tmp", &o->limit_tmp, eb)) ||
	    (err = reap_config_int(c, "limit_pids", 0, 1 << 22, &o->limit_pids, eb)) ||
	    (err = reap_config_size(c, "limit_output", &o->limit_output, eb)) ||
	    (err = reap_config_int(c, "sandbox_uid", 0, 0x7fffffff, &o->sandbox_uid, eb)) ||
	    (err = reap_config_int(c, "sandbox_gid", 0, 0x7fffffff, &o->sandbox_gid, eb)) ||
	    (err = reap_config_string(c, "toolchain_id", &o->toolchain_id, eb)) ||
	    (err = reap_config_string(c, "tls_ca", &o->tls_ca, eb)) ||
	    (err = reap_config_string(c, "tls_cert", &o->tls_cert, eb)) ||
	    (err = reap_config_string(c, "tls_key", &o->tls_key, eb)) ||
	    (err = reap_config_string(c, "tls_server_name", &o->tls_server_name, eb)) ||
	    (err = reap_config_string(c, "log_level", &o->log_level, eb)))
		return err;
	return reap_config_check_unknown(c, eb);
}

/* The bearer token: the file's content without surrounding whitespace. */
static int read_token(const char *path, char *out, size_t cap, reap_errbuf_t *eb)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	size_t len, start = 0;

	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path, strerror(errno));
	n = read(fd, out, cap - 1);
	close(fd);
	if (n < 0)
		return reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path, strerror(errno));
	len = (size_t)n;
	out[len] = '\0';
	while (len > 0 && isspace((unsigned char)out[len - 1]))
		out[--len] = '\0';
	while (start < len && isspace((unsigned char)out[start]))
		start++;
	memmove(out, out + start, len - start + 1);
	if (out[0] == '\0')
		return reap_errf(eb, REAP_E_INVALID, "%s holds no token", path);
	if ((size_t)n == cap - 1)
		return reap_errf(eb, REAP_E_INVALID, "%s is too large for a token", path);
	return REAP_OK;
}

/* Append s to a growing NULL-terminated array. */
static int push(const char ***arr, size_t *n, const char *s)
{
	const char **v = realloc(*arr, (*n + 2) * sizeof(*v));
	if (v == NULL)
		return REAP_E_NOMEM;
	v[(*n)++] = s;
	v[*n] = NULL;
	*arr = v;
	return REAP_OK;
}

static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return REAP_E_INVALID;
	*out = v;
	return REAP_OK;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'}, {"scheduler", required_argument, NULL, 's'},
		{"cas", required_argument, NULL, 'C'}, {"name", required_argument, NULL, 'n'},
		{"slots", required_argument, NULL, 'j'}, {"work", required_argument, NULL, 'w'},
		{"cache", required_argument, NULL, 'k'}, {"cache-size", required_argument, NULL, 'K'},
		{"platform", required_argument, NULL, 'p'}, {"ro-path", required_argument, NULL, 'r'},
		{"token-file", required_argument, NULL, 't'},
		{"default-timeout", required_argument, NULL, 'T'},
		{"bwrap", required_argument, NULL, 'b'}, {"log-level", required_argument, NULL, 'L'},
		{"toolchain-id", required_argument, NULL, 'I'},
		{"tls-ca", required_argument, NULL, 'A'}, {"tls-cert", required_argument, NULL, 'E'},
		{"tls-key", required_argument, NULL, 'Y'},
		{"tls-server-name", required_argument, NULL, 'N'},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	opts_t o = {.scheduler = "127.0.0.1:8980", .work = "reap-worker/work",
		    .cache = "reap-worker/cache", .cache_size = 10ull << 30,
		    .default_timeout_s = 600, .log_level = "info", .bwrap = "/usr/bin/bwrap",
		    /* per-action limits (0 = none); see wrk_limits_t */
		    .limit_cpu = 3600, .limit_memory = 16ull << 30, .limit_disk = 16ull << 30,
		    .limit_tmp = 512ull << 20, .limit_pids = 4096, .limit_output = 256ull << 20};
	const char **flag_platform = NULL, **flag_ro = NULL;
	size_t n_flag_platform = 0, n_flag_ro = 0;
	reap_config_t *cfg = NULL;
	wrk_daemon_t *d = NULL;
	reap_errbuf_t eb = {{0}};
	char token[4096] = "", host[HOST_NAME_MAX + 1] = "", name[AUTH_SUBJECT_MAX + 32];
	char toolchain[REAP_INSTANCE_MAX + 8];
	sigset_t sigs;
	int opt, sig, rc = 1;

	/* The config file first, so flags given with it override it. */
	for (int i = 1; i < argc; i++) {
		const char *file = NULL;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
		if (file != NULL && (cfg != NULL || load_file(file, &o, &cfg, &eb) != REAP_OK)) {
			if (cfg != NULL && eb.msg[0] == '\0')
				reap_errf(&eb, REAP_E_INVALID, "--config given twice");
			goto out;
		}
	}
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		int64_t v;
		switch (opt) {
		case 'c': break;
		case 's': o.scheduler = optarg; break;
		case 'C': o.cas = optarg; break;
		case 'n': o.name = optarg; break;
		case 'w': o.work = optarg; break;
		case 'k': o.cache = optarg; break;
		case 't': o.token_file = optarg; break;
		case 'b': o.bwrap = optarg; break;
		case 'I': o.toolchain_id = optarg; break;
		case 'A': o.tls_ca = optarg; break;
		case 'E': o.tls_cert = optarg; break;
		case 'Y': o.tls_key = optarg; break;
		case 'N': o.tls_server_name = optarg; break;
		case 'L': o.log_level = optarg; break;
		case 'j':
			if (parse_int(optarg, 1, 1024, &v) != REAP_OK) {
				reap_errf(&eb, REAP_E_INVALID, "--slots: '%s' is not 1 to 1024", optarg);
				goto out;
			}
			o.slots = v;
			break;
		case 'T':
			if (parse_int(optarg, 1, 86400 * 7, &v) != REAP_OK) {
				reap_errf(&eb, REAP_E_INVALID, "--default-timeout: bad seconds '%s'",
					  optarg);
				goto out;
			}
			o.default_timeout_s = v;
			break;
		case 'K':
			if (reap_parse_size(optarg, &o.cache_size) != REAP_OK) {
				reap_errf(&eb, REAP_E_INVALID, "--cache-size: bad size '%s'", optarg);
				goto out;
			}
			break;
		case 'p':
			if (push(&flag_platform, &n_flag_platform, optarg) != REAP_OK)
				goto out;
			break;
		case 'r':
			if (push(&flag_ro, &n_flag_ro, optarg) != REAP_OK)
				goto out;
			break;
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
	if (o.token_file != NULL && read_token(o.token_file, token, sizeof(token), &eb) != REAP_OK)
		goto out;
	if (o.name == NULL && token[0] != '\0') {
		/* A worker token is bound to its worker name: take the name from it. */
		auth_claims_t claims;
		if (auth_token_decode_unverified(token, &claims, NULL) == REAP_OK &&
		    claims.role == AUTH_ROLE_WORKER) {
			snprintf(name, sizeof(name), "%s", claims.subject);
			o.name = name;
		}
		memset(&claims, 0, sizeof(claims));
	}
	if (o.name == NULL) {
		if (gethostname(host, sizeof(host) - 1) != 0)
			snprintf(host, sizeof(host), "worker");
		snprintf(name, sizeof(name), "%s-%d", host, (int)getpid());
		o.name = name;
	}

	wrk_config_t wc = {
		.scheduler = o.scheduler, .cas = o.cas != NULL ? o.cas : o.scheduler, .name = o.name,
		.token = token[0] != '\0' ? token : NULL, .slots = (int)o.slots,
		.work_dir = o.work, .cache_dir = o.cache, .cache_bytes = o.cache_size,
		.default_timeout_ms = o.default_timeout_s * 1000,
		.platform = n_flag_platform > 0 ? flag_platform : o.platform,
		.n_platform = n_flag_platform > 0 ? n_flag_platform : o.n_platform,
		.sandbox = {.bwrap = o.bwrap,
			    .limits = {.cpu_seconds = (uint64_t)o.limit_cpu,
				       .memory_bytes = o.limit_memory, .disk_bytes = o.limit_disk,
				       .tmp_bytes = o.limit_tmp, .pids = (uint64_t)o.limit_pids,
				       .output_bytes = o.limit_output},
			    .uid = (uid_t)o.sandbox_uid, .gid = (gid_t)o.sandbox_gid},
	};
	if (n_flag_ro > 0) {
		wc.sandbox.ro_paths = flag_ro;
		wc.sandbox.n_ro_paths = n_flag_ro;
	} else if (o.ro_paths != NULL) {
		wc.sandbox.ro_paths = o.ro_paths;
		wc.sandbox.n_ro_paths = o.n_ro_paths;
	} else {
		wc.sandbox.ro_paths = default_ro_paths;
		wc.sandbox.n_ro_paths = sizeof(default_ro_paths) / sizeof(default_ro_paths[0]);
	}
	if (wrk_toolchain_fingerprint(wc.sandbox.ro_paths, wc.sandbox.n_ro_paths, o.toolchain_id,
				      toolchain, sizeof(toolchain), &eb) != REAP_OK)
		goto out;
	wc.toolchain = toolchain;
	rpc_tls_client_t tls = {.ca_file = o.tls_ca, .cert_file = o.tls_cert,
				.key_file = o.tls_key, .server_name_override = o.tls_server_name};
	if (o.tls_ca != NULL || o.tls_cert != NULL || o.tls_server_name != NULL)
		wc.tls = &tls;
	REAP_INFO("toolchain", "fingerprint=%s", toolchain);
	/* The parents of the default work and cache folders. */
	if (strcmp(o.work, "reap-worker/work") == 0 || strcmp(o.cache, "reap-worker/cache") == 0)
		if (mkdir("reap-worker", 0700) != 0 && errno != EEXIST) {
			reap_errf(&eb, REAP_E_IO, "cannot create ./reap-worker: %s", strerror(errno));
			goto out;
		}

	/* Signals are taken synchronously by this thread; every other thread blocks them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((d = wrk_daemon_start(&wc, &eb)) == NULL)
		goto out;
	/* Readiness line for scripts and tests. */
	printf("reap-worker ready\n");
	fflush(stdout);
	reap_notify_ready("ready");
	if (sigwait(&sigs, &sig) == 0)
		REAP_INFO("stopping", "signal=%d", sig);
	reap_notify_stopping();
	wrk_daemon_stop(d);
	rc = 0;
out:
	if (rc == 1 && eb.msg[0] != '\0')
		fprintf(stderr, "reap-worker: %s\n", eb.msg);
	memset(token, 0, sizeof(token));
	free(flag_platform);
	free(flag_ro);
	free(o.platform);
	free(o.ro_paths);
	reap_config_free(cfg);
	return rc;
}
