/*
 * daemon.c - starting and stopping the reap-worker daemon: copying the
 * configuration, a sandbox self-test (refuse to start when bubblewrap cannot
 * run here), the channels (a separate one for long-polls, which stop
 * cancels), the file cache, and the slot threads of worker.c.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

static const char *keep(wrk_daemon_t *d, const char *s)
{
	char **v;
	if (s == NULL || (v = realloc(d->strs, (d->n_strs + 1) * sizeof(*v))) == NULL)
		return NULL;
	d->strs = v;
	return (d->strs[d->n_strs] = strdup(s)) != NULL ? d->strs[d->n_strs++] : NULL;
}

static int cmp_prop(const void *a, const void *b)
{
	const WRK_RE(Platform__Property) *x = *(WRK_RE(Platform__Property) *const *)a;
	const WRK_RE(Platform__Property) *y = *(WRK_RE(Platform__Property) *const *)b;
	int c = strcmp(x->name, y->name);
	return c != 0 ? c : strcmp(x->value, y->value);
}

/* Copy what the daemon keeps of cfg; the platform offer sorted by name (REAPI order). */
static int copy_config(wrk_daemon_t *d, const wrk_config_t *cfg, reap_errbuf_t *eb)
{
	d->cfg = *cfg;
	d->cfg.scheduler = keep(d, cfg->scheduler);
	d->cfg.cas = cfg->cas != NULL ? keep(d, cfg->cas) : d->cfg.scheduler;
	d->cfg.name = keep(d, cfg->name);
	d->cfg.token = cfg->token != NULL ? keep(d, cfg->token) : NULL;
	d->cfg.work_dir = keep(d, cfg->work_dir);
	d->cfg.cache_dir = keep(d, cfg->cache_dir);
	d->cfg.sandbox.bwrap = cfg->sandbox.bwrap != NULL ? keep(d, cfg->sandbox.bwrap) : NULL;
	d->platform = calloc(cfg->n_platform + 1, sizeof(char *));
	d->ro_paths = calloc(cfg->sandbox.n_ro_paths + 1, sizeof(char *));
	d->props = calloc(cfg->n_platform + 1, sizeof(*d->props));
	d->propp = calloc(cfg->n_platform + 1, sizeof(*d->propp));
	if (d->cfg.scheduler == NULL || d->cfg.cas == NULL || d->cfg.name == NULL ||
	    (cfg->token != NULL && d->cfg.token == NULL) || d->cfg.work_dir == NULL ||
	    d->cfg.cache_dir == NULL || d->platform == NULL || d->ro_paths == NULL ||
	    d->props == NULL || d->propp == NULL)
		return reap_errf(eb, REAP_E_INVALID,
				 "scheduler, name, work_dir and cache_dir are required");
	if (strlen(d->cfg.name) >= 128)
		return reap_errf(eb, REAP_E_INVALID, "the worker name must be 1 to 127 bytes");
	for (size_t i = 0; i < cfg->sandbox.n_ro_paths; i++)
		if ((d->ro_paths[i] = keep(d, cfg->sandbox.ro_paths[i])) == NULL)
			return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	d->cfg.sandbox.ro_paths = d->ro_paths;
	for (size_t i = 0; i < cfg->n_platform; i++) {
		const char *kv = keep(d, cfg->platform[i]), *split = keep(d, cfg->platform[i]);
		char *eq = split != NULL ? strchr(split, '=') : NULL;
		if (kv == NULL || eq == NULL || eq == split)
			return reap_errf(eb, REAP_E_INVALID, "platform property \"%s\" is not name=value",
					 cfg->platform[i]);
		d->platform[i] = kv;
		*eq = '\0'; /* split now holds the name; the value follows */
		d->props[i] = (WRK_RE(Platform__Property))WRK_RE_INIT(PLATFORM__PROPERTY);
		d->props[i].name = (char *)split;
		d->props[i].value = eq + 1;
		d->propp[i] = &d->props[i];
	}
	qsort(d->propp, cfg->n_platform, sizeof(*d->propp), cmp_prop);
	d->cfg.platform = d->platform;
	d->offer = (WRK_RE(Platform))WRK_RE_INIT(PLATFORM);
	d->offer.n_properties = cfg->n_platform;
	d->offer.properties = d->propp;
	if (d->cfg.slots <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		d->cfg.slots = n > 0 && n < 1024 ? (int)n : 1;
	}
	if (d->cfg.default_timeout_ms <= 0)
		d->cfg.default_timeout_ms = 600000;
	return REAP_OK;
}

/* Run `true` in the sandbox once, so a broken bwrap fails the start, not every action. */
static int self_test(wrk_daemon_t *d, reap_errbuf_t *eb)
{
	char dir[PATH_MAX], root[PATH_MAX + 8], out[PATH_MAX + 8], err_path[PATH_MAX + 8];
	char *argv[] = {(char *)"true"};
	WRK_RE(Command__EnvironmentVariable) path = WRK_RE_INIT(COMMAND__ENVIRONMENT_VARIABLE);
	WRK_RE(Command__EnvironmentVariable) *envp[] = {&path};
	WRK_RE(Command) cmd;
	wrk_run_result_t run;
	int err;

	WRK_RE_FN(command__init)(&cmd);
	path.name = (char *)"PATH";
	path.value = (char *)"/usr/bin:/bin";
	cmd.n_arguments = 1;
	cmd.arguments = argv;
	cmd.n_environment_variables = 1;
	cmd.environment_variables = envp;
	snprintf(dir, sizeof(dir), "%s/selftest", d->cfg.work_dir);
	snprintf(root, sizeof(root), "%s/root", dir);
	snprintf(out, sizeof(out), "%s/stdout", dir);
	snprintf(err_path, sizeof(err_path), "%s/stderr", dir);
	wrk_rm_tree(dir);
	if (mkdir(dir, 0700) != 0 || mkdir(root, 0755) != 0)
		return reap_errf(eb, REAP_E_IO, "cannot create %s: %s", root, strerror(errno));
	err = wrk_sandbox_run(&d->cfg.sandbox, root, &cmd, 30000, out, err_path, NULL, &run, eb);
	if (err == REAP_OK && run.exit_code != 0) {
		char msg[200] = "";
		FILE *f = fopen(err_path, "r");
		if (f != NULL) {
			if (fgets(msg, sizeof(msg), f) == NULL)
				msg[0] = '\0';
			fclose(f);
		}
		msg[strcspn(msg, "\n")] = '\0';
		err = reap_errf(eb, REAP_E_PRECONDITION,
				"the sandbox does not work here (`true` exited %d: %s)", run.exit_code,
				msg);
	}
	wrk_rm_tree(dir);
	return err;
}

static void daemon_free(wrk_daemon_t *d)
{
	if (d->cas_ch != d->sched_ch)
		rpc_channel_free(d->cas_ch);
	rpc_channel_free(d->sched_ch);
	rpc_channel_free(d->poll_ch);
	wrk_cache_close(d->cache);
	for (size_t i = 0; i < d->n_strs; i++)
		free(d->strs[i]);
	free(d->strs);
	free(d->platform);
	free(d->ro_paths);
	free(d->props);
	free(d->propp);
	free(d->slots);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	free(d);
}

static int open_channel(const char *target, const char *token, const rpc_tls_client_t *tls,
			rpc_channel_t **out, reap_errbuf_t *eb)
{
	char *bearer = NULL;
	*out = tls != NULL ? rpc_channel_new_tls(target, 0, tls) : rpc_channel_new(target, 0);
	if (*out == NULL)
		return reap_errf(eb, REAP_E_UNAVAILABLE, "cannot create a channel to %s", target);
	if (token == NULL)
		return REAP_OK;
	if (asprintf(&bearer, "Bearer %s", token) < 0)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	int err = rpc_channel_set_header(*out, "authorization", bearer);
	memset(bearer, 0, strlen(bearer));
	free(bearer);
	return err != REAP_OK ? reap_errf(eb, err, "the token is not a valid header value") : REAP_OK;
}

wrk_daemon_t *wrk_daemon_start(const wrk_config_t *cfg, reap_errbuf_t *eb)
{
	wrk_daemon_t *d = calloc(1, sizeof(*d));
	char abs_work[PATH_MAX];
	int err;

	if (d == NULL) {
		reap_errf(eb, REAP_E_NOMEM, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->cv, NULL);
	if ((err = copy_config(d, cfg, eb)) != REAP_OK)
		goto fail;
	if (mkdir(d->cfg.work_dir, 0700) != 0 && errno != EEXIST) {
		reap_errf(eb, REAP_E_IO, "cannot create %s: %s", d->cfg.work_dir, strerror(errno));
		goto fail;
	}
	/* bwrap binds the exec root by path: make it absolute */
	if (realpath(d->cfg.work_dir, abs_work) == NULL ||
	    (d->cfg.work_dir = keep(d, abs_work)) == NULL) {
		reap_errf(eb, REAP_E_IO, "cannot resolve %s: %s", cfg->work_dir, strerror(errno));
		goto fail;
	}
	wrk_clean_work_dir(d->cfg.work_dir);
	if ((err = self_test(d, eb)) != REAP_OK)
		goto fail;
	if ((d->cache = wrk_cache_open(d->cfg.cache_dir, d->cfg.cache_bytes, eb)) == NULL)
		goto fail;
	if (open_channel(d->cfg.scheduler, d->cfg.token, cfg->tls, &d->sched_ch, eb) != REAP_OK ||
	    open_channel(d->cfg.scheduler, d->cfg.token, cfg->tls, &d->poll_ch, eb) != REAP_OK)
		goto fail;
	if (strcmp(d->cfg.cas, d->cfg.scheduler) == 0)
		d->cas_ch = d->sched_ch;
	else if (open_channel(d->cfg.cas, d->cfg.token, cfg->tls, &d->cas_ch, eb) != REAP_OK)
		goto fail;
	if ((d->slots = calloc((size_t)d->cfg.slots, sizeof(*d->slots))) == NULL) {
		reap_errf(eb, REAP_E_NOMEM, "out of memory");
		goto fail;
	}
	for (int i = 0; i < d->cfg.slots; i++) {
		slot_t *s = &d->slots[i];
		s->d = d;
		s->index = i;
		s->seed = (unsigned)getpid() * 2654435761u + (unsigned)i * 40503u + (unsigned)wrk_mono_ms();
		if (pthread_create(&s->thread, NULL, wrk_slot_main, s) != 0) {
			reap_errf(eb, REAP_E_NOMEM, "cannot start slot thread %d", i);
			d->n_slots = i;
			wrk_daemon_stop(d);
			return NULL;
		}
		s->started = true;
	}
	d->n_slots = d->cfg.slots;
	REAP_INFO("worker started", "name=\"%s\" scheduler=%s cas=%s slots=%d work=\"%s\"",
		  d->cfg.name, d->cfg.scheduler, d->cfg.cas, d->cfg.slots, d->cfg.work_dir);
	return d;
fail:
	daemon_free(d);
	return NULL;
}

void wrk_daemon_stop(wrk_daemon_t *d)
{
	if (d == NULL)
		return;
	pthread_mutex_lock(&d->mu);
	__atomic_store_n(&d->stopping, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	for (int i = 0; i < d->n_slots; i++)
		__atomic_store_n(&d->slots[i].cancel, true, __ATOMIC_RELEASE);
	/* Idle slots sit in a long-poll: end it now rather than at its timeout. */
	if (d->poll_ch != NULL)
		rpc_channel_cancel_all(d->poll_ch);
	for (int i = 0; i < d->n_slots; i++)
		if (d->slots[i].started)
			pthread_join(d->slots[i].thread, NULL);
	REAP_INFO("worker stopped", "name=\"%s\"", d->cfg.name);
	daemon_free(d);
}
