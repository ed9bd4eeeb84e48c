/*
 * cli_common.c - what every `reap` subcommand shares: the connection
 * (plaintext or TLS, bearer token), the mapping of errors to exit codes,
 * digest parsing and printing, JSON output, and the progress line.
 *
 * The progress line is drawn by a small thread from a probe the caller
 * supplies (bytes written to the output file, or bytes this process has
 * read from files while uploading), so the transfer code itself needs no
 * hooks; it only appears when stderr is a terminal.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cmd/cli.h"
#include "worker/worker_int.h"

/* ---- errors ---- */

int cli_exit_for(int err)
{
	switch (err) {
	case REAP_OK: return CLI_EXIT_OK;
	case REAP_E_NOT_FOUND: return CLI_EXIT_NOT_FOUND;
	case REAP_E_PERM:
	case REAP_E_UNAUTHENTICATED: return CLI_EXIT_AUTH;
	case REAP_E_UNAVAILABLE:
	case REAP_E_DEADLINE:
	case REAP_E_CANCELLED: return CLI_EXIT_UNAVAILABLE;
	case REAP_E_IO: return CLI_EXIT_LOCAL;
	default: return CLI_EXIT_REMOTE;
	}
}

int cli_fail(int err, const reap_errbuf_t *eb, const char *what)
{
	fprintf(stderr, "reap: %s: %s\n", what, reap_errmsg(eb, err));
	return cli_exit_for(err);
}

int cli_call_err(int rc, const rpc_status_t *st, const char *what, reap_errbuf_t *eb)
{
	return wrk_cas_call_err(rc, st, what, eb);
}

/* ---- connection ---- */

/* The token in path, without surrounding whitespace (heap). */
static int read_token(const char *path, char **out, reap_errbuf_t *eb)
{
	char buf[AUTH_TOKEN_MAX + 2];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	size_t len, start = 0;

	*out = NULL;
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path, strerror(errno));
	if ((size_t)n == sizeof(buf) - 1)
		return reap_errf(eb, REAP_E_INVALID, "%s is too large for a token", path);
	len = (size_t)n;
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		len--;
	while (start < len && isspace((unsigned char)buf[start]))
		start++;
	if (start == len)
		return reap_errf(eb, REAP_E_INVALID, "%s holds no token", path);
	if ((*out = strndup(buf + start, len - start)) == NULL)
		return REAP_E_NOMEM;
	return REAP_OK;
}

int cli_connect(cli_t *c)
{
	reap_errbuf_t eb = {{0}};
	char *token = NULL, *header = NULL;
	const char *env = getenv("REAP_TOKEN");
	int err = REAP_OK;

	if (c->ch != NULL)
		return CLI_EXIT_OK;
	if (c->tls || c->tls_ca != NULL || c->tls_cert != NULL || c->tls_server_name != NULL) {
		rpc_tls_client_t tls = {.ca_file = c->tls_ca, .cert_file = c->tls_cert,
					.key_file = c->tls_key,
					.server_name_override = c->tls_server_name};
		c->ch = rpc_channel_new_tls(c->server, 0, &tls);
	} else {
		c->ch = rpc_channel_new(c->server, 0);
	}
	if (c->ch == NULL) {
		fprintf(stderr, "reap: cannot set up a channel to %s (see the log line above)\n",
			c->server);
		return CLI_EXIT_USAGE;
	}
	if (c->token_file != NULL)
		err = read_token(c->token_file, &token, &eb);
	else if (env != NULL && env[0] != '\0' && (token = strdup(env)) == NULL)
		err = REAP_E_NOMEM;
	if (err == REAP_OK && token != NULL) {
		if (asprintf(&header, "Bearer %s", token) < 0) {
			header = NULL;
			err = REAP_E_NOMEM;
		} else if ((err = rpc_channel_set_header(c->ch, "authorization", header)) != REAP_OK) {
			reap_errf(&eb, REAP_E_INVALID, "the token has characters a header cannot carry");
			err = REAP_E_INVALID;
		}
	}
	if (token != NULL)
		explicit_bzero(token, strlen(token));
	if (header != NULL)
		explicit_bzero(header, strlen(header));
	free(token);
	free(header);
	if (err != REAP_OK) {
		fprintf(stderr, "reap: token: %s\n", reap_errmsg(&eb, err));
		return err == REAP_E_IO ? CLI_EXIT_LOCAL : CLI_EXIT_USAGE;
	}
	if ((c->cas = wrk_cas_new(c->ch, c->instance, 0)) == NULL) {
		fprintf(stderr, "reap: out of memory\n");
		return CLI_EXIT_LOCAL;
	}
	return CLI_EXIT_OK;
}

void cli_close(cli_t *c)
{
	wrk_cas_free(c->cas);
	c->cas = NULL;
	rpc_channel_free(c->ch);
	c->ch = NULL;
}

/* ---- digests and output ---- */

int cli_digest_parse(const char *s, reap_digest_t *out)
{
	size_t hl = strcspn(s, "/- ");
	reap_errbuf_t eb = {{0}};
	char *end = NULL;
	long long size;

	if (s[hl] == '\0' || s[hl + 1] == '\0') {
		fprintf(stderr, "reap: '%s' is not a digest (HASH/SIZE)\n", s);
		return REAP_E_INVALID;
	}
	errno = 0;
	size = strtoll(s + hl + 1, &end, 10);
	if (errno != 0 || *end != '\0' || size < 0 ||
	    reap_digest_parse(s, hl, (int64_t)size, out, &eb) != REAP_OK) {
		fprintf(stderr, "reap: '%s' is not a digest (HASH/SIZE): %s\n", s,
			eb.msg[0] != '\0' ? eb.msg : "bad size");
		return REAP_E_INVALID;
	}
	return REAP_OK;
}

const char *cli_digest_str(const reap_digest_t *d, char *buf, size_t cap)
{
	char hex[REAP_HASH_HEX_LEN + 1];
	reap_digest_hex(d, hex);
	snprintf(buf, cap, "%s/%lld", hex, (long long)d->size);
	return buf;
}

int cli_digest_from_pb(const WRK_RE(Digest) *pb, reap_digest_t *out)
{
	return wrk_digest_from_pb(pb, out, NULL);
}

json_t *cli_json_digest(const reap_digest_t *d)
{
	char buf[REAP_HASH_HEX_LEN + 24];
	return json_string(cli_digest_str(d, buf, sizeof(buf)));
}

void cli_json_print(json_t *j)
{
	if (j == NULL) {
		fprintf(stderr, "reap: out of memory\n");
		return;
	}
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(j);
}

const char *cli_bytes(int64_t n, char *buf, size_t cap)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%lld B", (long long)n);
	else
		snprintf(buf, cap, "%.1f %s", v, units[u]);
	return buf;
}

/* ---- progress ---- */

struct cli_progress {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	const char *label;
	int64_t total, base;
	int64_t (*probe)(void *ctx);
	void *ctx;
};

static void progress_draw(cli_progress_t *p)
{
	char a[32], b[32];
	int64_t done = p->probe(p->ctx) - p->base;
	if (done < 0)
		done = 0;
	if (done > p->total)
		done = p->total;
	fprintf(stderr, "\r%s: %s / %s (%d%%)\033[K", p->label, cli_bytes(done, a, sizeof(a)),
		cli_bytes(p->total, b, sizeof(b)), (int)(done * 100 / p->total));
	fflush(stderr);
}

static void *progress_main(void *arg)
{
	cli_progress_t *p = arg;
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		if (!p->stop)
			progress_draw(p);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

cli_progress_t *cli_progress_start(const char *label, int64_t total,
				   int64_t (*probe)(void *ctx), void *ctx)
{
	cli_progress_t *p;

	if (total <= CLI_PROGRESS_MIN || !isatty(STDERR_FILENO) || probe(ctx) < 0)
		return NULL;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return NULL;
	p->label = label;
	p->total = total;
	p->probe = probe;
	p->ctx = ctx;
	p->base = probe == cli_read_bytes ? probe(ctx) : 0;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->thread, NULL, progress_main, p) != 0) {
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->mu);
		free(p);
		return NULL;
	}
	return p;
}

void cli_progress_stop(cli_progress_t *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	fprintf(stderr, "\r\033[K");
	fflush(stderr);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int64_t cli_read_bytes(void *unused)
{
	char line[128];
	long long v = -1;
	FILE *f = fopen("/proc/self/io", "re");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "rchar: %lld", &v) == 1)
			break;
	fclose(f);
	return v;
}
