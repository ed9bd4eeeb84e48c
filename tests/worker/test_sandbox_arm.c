/*
 * test_sandbox_arm.c - sandboxes started ahead of their action
 * (wrk_sandbox_arm, _fire, _disarm): what is staged after the start is
 * what the command sees, the clock starts at fire, an unused or dead
 * sandbox leaves no process behind, and only a sandbox made for exactly
 * the same settings is reused. Every other sandbox test runs through
 * wrk_sandbox_run, which is arm then fire, so the isolation tests cover
 * the command's path through the shim too.
 */
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tests/worker/sandbox_fixture.h"

/* Child processes of this process (every thread's), up to cap; how many. */
static int children(pid_t *out, int cap)
{
	char path[300], buf[4096];
	int n = 0;
	DIR *d = opendir("/proc/self/task");

	cr_assert_not_null(d);
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/children", e->d_name);
		char *s = th_read_file(path, buf, sizeof(buf));
		for (char *p = s; p != NULL && *p != '\0';) {
			char *end;
			long pid = strtol(p, &end, 10);
			if (end == p)
				break;
			if (n < cap)
				out[n] = (pid_t)pid;
			n++;
			p = end;
		}
	}
	closedir(d);
	return n;
}

static wrk_armed_t *arm_ok(const wrk_sandbox_config_t *cfg)
{
	wrk_armed_t *a = NULL;
	reap_errbuf_t eb = {{0}};
	int err = wrk_sandbox_arm(cfg, root, out_path, err_path, &a, &eb);
	cr_assert_eq(err, REAP_OK, "%s", reap_errmsg(&eb, err));
	cr_assert_not_null(a);
	return a;
}

static int fire(wrk_armed_t *a, const char *wd, const char *const *env, const char *const *argv,
		int64_t timeout_ms, wrk_run_result_t *res)
{
	test_cmd_t t;
	reap_errbuf_t eb = {{0}};
	int err = wrk_sandbox_fire(a, mkcmd(&t, wd, env, argv), timeout_ms, NULL, res, &eb);
	if (err != REAP_OK)
		cr_log_info("sandbox: %s", reap_errmsg(&eb, err));
	return err;
}

Test(sandbox, armed_sees_what_is_staged_after_it_started)
{
	wrk_armed_t *a = arm_ok(&sb_cfg);
	usleep(200 * 1000); /* bwrap has long built the root by now */
	char p[400];
	snprintf(p, sizeof(p), "%s/in.txt", root);
	th_write_file(p, "staged later\n");

	const char *env[] = {"PATH=/usr/bin:/bin", "ZZ=last", "AA=first", NULL};
	const char *argv[] = {"sh", "-c", "cat ../../in.txt; pwd; echo made > out.txt; env | sort",
			      NULL};
	wrk_run_result_t res;
	cr_assert_eq(fire(a, "w/d", env, argv, 30000, &res), REAP_OK);
	cr_assert_eq(res.exit_code, 0, "stderr: %s", slurp(err_path));
	/* the Command's variables (sh itself adds PWD) */
	cr_assert_str_eq(slurp(out_path), "staged later\n/build/w/d\nAA=first\n"
					  "PATH=/usr/bin:/bin\nPWD=/build/w/d\nZZ=last\n");
	snprintf(p, sizeof(p), "%s/w/d/out.txt", root);
	cr_assert_str_eq(slurp(p), "made\n");
	cr_assert_eq(children(NULL, 0), 0, "a process of the sandbox is left");
}

Test(sandbox, armed_timeout_counts_from_fire)
{
	wrk_armed_t *a = arm_ok(&sb_cfg);
	usleep(1500 * 1000); /* longer than the timeout below */
	const char *argv[] = {"sleep", "0.2", NULL};
	wrk_run_result_t res;
	cr_assert_eq(fire(a, "", std_env, argv, 1000, &res), REAP_OK);
	cr_assert(!res.timed_out, "the wait before fire counted against the timeout");
	cr_assert_eq(res.exit_code, 0, "stderr: %s", slurp(err_path));
	cr_assert_lt(res.end_ns - res.start_ns, (int64_t)1000 * 1000000);
}

Test(sandbox, disarm_leaves_no_process)
{
	pid_t kids[16];
	wrk_armed_t *a = arm_ok(&sb_cfg);
	cr_assert_eq(children(kids, 16), 1, "the armed sandbox is not this process's child");
	usleep(100 * 1000);
	wrk_sandbox_disarm(a);
	cr_assert_eq(children(NULL, 0), 0, "a process of the sandbox is left");
	cr_assert_eq(kill(kids[0], 0), -1, "bwrap is still there");
	wrk_sandbox_disarm(NULL);
}

Test(sandbox, armed_sandbox_that_died_is_not_fired)
{
	pid_t kids[16];
	wrk_armed_t *a = arm_ok(&sb_cfg);
	cr_assert_eq(children(kids, 16), 1);
	cr_assert(wrk_sandbox_alive(a));
	cr_assert_eq(kill(kids[0], SIGKILL), 0);
	for (int i = 0; i < 200 && wrk_sandbox_alive(a); i++)
		usleep(10 * 1000);
	cr_assert(!wrk_sandbox_alive(a), "its death went unnoticed");
	const char *argv[] = {"true", NULL};
	wrk_run_result_t res;
	cr_assert_eq(fire(a, "", std_env, argv, 30000, &res), REAP_E_IO);
	/* bwrap's own child (the namespace's pid 1) goes with it (--die-with-parent) */
	for (int i = 0; i < 200 && children(NULL, 0) > 0; i++)
		usleep(10 * 1000);
	cr_assert_eq(children(NULL, 0), 0);
}

Test(sandbox, armed_fits_only_the_same_settings)
{
	wrk_armed_t *a = arm_ok(&sb_cfg);
	wrk_sandbox_config_t c = sb_cfg;
	cr_assert(wrk_sandbox_fits(a, &c));

	/* the same paths in another array still fit; another path does not */
	const char *copy[sizeof(ro_paths) / sizeof(ro_paths[0])];
	char usr[] = "/usr";
	memcpy(copy, ro_paths, sizeof(copy));
	copy[0] = usr;
	c.ro_paths = copy;
	cr_assert(wrk_sandbox_fits(a, &c));
	copy[0] = "/opt";
	cr_assert(!wrk_sandbox_fits(a, &c));
	c.n_ro_paths--;
	cr_assert(!wrk_sandbox_fits(a, &c));

	wrk_sandbox_config_t d = sb_cfg;
	d.limits.memory_bytes = 1 << 30;
	cr_assert(!wrk_sandbox_fits(a, &d));
	d = sb_cfg;
	d.limits.pids = 10;
	cr_assert(!wrk_sandbox_fits(a, &d));
	d = sb_cfg;
	d.limits.tmp_bytes = 1 << 20;
	cr_assert(!wrk_sandbox_fits(a, &d));
	d = sb_cfg;
	d.loopback_network = true;
	cr_assert(!wrk_sandbox_fits(a, &d));
	d = sb_cfg;
	d.uid = 12345;
	cr_assert(!wrk_sandbox_fits(a, &d));
	d = sb_cfg;
	d.bwrap = "/usr/local/bin/bwrap";
	cr_assert(!wrk_sandbox_fits(a, &d));
	wrk_sandbox_disarm(a);
}

Test(sandbox, command_refused_before_it_reaches_the_shim)
{
	wrk_run_result_t res;
	const char *argv[] = {"true", NULL};
	const char *twice[] = {"PATH=/usr/bin:/bin", "A=1", "A=2", NULL};
	test_cmd_t t;
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(wrk_sandbox_run(&sb_cfg, root, mkcmd(&t, "", twice, argv), 30000, out_path,
				     err_path, NULL, &res, &eb),
		     REAP_E_INVALID);
	cr_assert_neq(strstr(eb.msg, "\"A\" is set twice"), NULL, "%s", eb.msg);

	/* more than the shim takes: refused, and the armed sandbox is stopped */
	size_t big = (size_t)3 << 20;
	char *huge = malloc(big + 1);
	cr_assert_not_null(huge);
	memset(huge, 'x', big);
	huge[big] = '\0';
	const char *hargv[] = {"echo", huge, NULL};
	wrk_armed_t *a = arm_ok(&sb_cfg);
	eb.msg[0] = '\0';
	cr_assert_eq(wrk_sandbox_fire(a, mkcmd(&t, "", std_env, hargv), 30000, NULL, &res, &eb),
		     REAP_E_INVALID);
	cr_assert_neq(strstr(eb.msg, "too large"), NULL, "%s", eb.msg);
	free(huge);
	cr_assert_eq(children(NULL, 0), 0, "a process of the sandbox is left");
}
