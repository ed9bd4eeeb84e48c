/*
 * sandbox_fixture.h - what the sandbox tests share (test_sandbox.c,
 * test_sandbox_fs.c, test_sandbox_arm.c): the worker's default read-only paths, a fresh exec
 * root under /tmp per test (and a folder outside /tmp when a test needs
 * one), and helpers that build a Command, run it and read its output.
 * Included by one test file per executable: everything here is static.
 */
#ifndef REAP_TESTS_WORKER_SANDBOX_FIXTURE_H
#define REAP_TESTS_WORKER_SANDBOX_FIXTURE_H

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/harness.h"
#include "worker/worker.h"

static const char *const ro_paths[] = {
	"/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/alternatives", "/etc/ld.so.cache",
	"/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
	"/etc/localtime",
};

static wrk_sandbox_config_t sb_cfg = {
	.bwrap = "/usr/bin/bwrap",
	.ro_paths = ro_paths,
	.n_ro_paths = sizeof(ro_paths) / sizeof(ro_paths[0]),
};

static char tmp[256], root[300], out_path[300], err_path[300];
static char outside[64]; /* a test's folder outside /tmp (ro_paths may not be under it) */

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/reap-sbtest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(root, sizeof(root), "%s/root", tmp);
	snprintf(out_path, sizeof(out_path), "%s/stdout", tmp);
	snprintf(err_path, sizeof(err_path), "%s/stderr", tmp);
	cr_assert_eq(mkdir(root, 0755), 0);
}

static void teardown(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'%s%s%s", tmp, outside[0] ? " '" : "", outside,
		 outside[0] ? "'" : "");
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", tmp);
	outside[0] = '\0';
}

TestSuite(sandbox, .init = setup, .fini = teardown, .timeout = 60);

/* A Command from NULL-terminated argument and "NAME=VALUE" lists (static storage). */
typedef struct test_cmd {
	WRK_RE(Command) c;
	WRK_RE(Command__EnvironmentVariable) ev[8];
	WRK_RE(Command__EnvironmentVariable) *evp[8];
	char *args[16];
	char envbuf[8][256];
} test_cmd_t;

static const WRK_RE(Command) *mkcmd(test_cmd_t *t, const char *wd, const char *const *env,
				    const char *const *argv)
{
	memset(t, 0, sizeof(*t));
	build__bazel__remote__execution__v2__command__init(&t->c);
	for (size_t i = 0; argv[i] != NULL; i++)
		t->args[t->c.n_arguments++] = (char *)argv[i];
	t->c.arguments = t->args;
	for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
		WRK_RE(Command__EnvironmentVariable) ei =
			BUILD__BAZEL__REMOTE__EXECUTION__V2__COMMAND__ENVIRONMENT_VARIABLE__INIT;
		snprintf(t->envbuf[i], sizeof(t->envbuf[i]), "%s", env[i]);
		char *eq = strchr(t->envbuf[i], '=');
		*eq = '\0';
		t->ev[i] = ei;
		t->ev[i].name = t->envbuf[i];
		t->ev[i].value = eq + 1;
		t->evp[i] = &t->ev[i];
		t->c.n_environment_variables = i + 1;
	}
	t->c.environment_variables = t->evp;
	t->c.working_directory = (char *)wd;
	return &t->c;
}

static const char *const std_env[] = {"PATH=/usr/bin:/bin", NULL};

static int run(const char *wd, const char *const *env, const char *const *argv, int64_t timeout_ms,
	       volatile bool *cancel, wrk_run_result_t *res)
{
	test_cmd_t t;
	reap_errbuf_t eb = {{0}};
	int err = wrk_sandbox_run(&sb_cfg, root, mkcmd(&t, wd, env, argv), timeout_ms, out_path,
				  err_path, cancel, res, &eb);
	if (err != REAP_OK)
		cr_log_info("sandbox: %s", reap_errmsg(&eb, err));
	return err;
}

static char *slurp(const char *path)
{
	static char buf[65536];
	return th_read_file(path, buf, sizeof(buf));
}

/* Run argv in wd with env (30 s); expect it to start and exit 0; its stdout, the result in *res. */
static char *run_ok(const char *wd, const char *const *env, const char *const *argv,
		    wrk_run_result_t *res)
{
	size_t last = 0;
	while (argv[last + 1] != NULL)
		last++;
	cr_assert_eq(run(wd, env, argv, 30000, NULL, res), REAP_OK);
	cr_assert_eq(res->exit_code, 0, "%s ... '%s' exited %d: %s", argv[0], argv[last],
		     res->exit_code, slurp(err_path));
	return slurp(out_path);
}

/* Run script with shell (-c) and std_env; expect exit 0 and return stdout. */
static char *shell_ok(const char *shell, const char *script)
{
	const char *argv[] = {shell, "-c", script, NULL};
	wrk_run_result_t res;
	return run_ok("", std_env, argv, &res);
}

__attribute__((unused)) static char *sh_ok(const char *script)
{
	return shell_ok("sh", script);
}

#endif
