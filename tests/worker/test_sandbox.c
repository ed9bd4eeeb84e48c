/*
 * test_sandbox.c - the bubblewrap sandbox on its own (no server): exact
 * environment, exec rules and exit codes, no network, the spawn and the
 * sandbox uid, limits and platform properties, and the whole process tree
 * gone after a timeout or a cancel. What it shows of the file system is in
 * test_sandbox_fs.c; the shared fixture in sandbox_fixture.h.
 */
#include "sandbox_fixture.h"

Test(sandbox, exact_environment)
{
	const char *env[] = {"PATH=/usr/bin", "GREETING=hello world", NULL};
	const char *argv[] = {"env", NULL};
	wrk_run_result_t res;
	cr_assert_str_eq(run_ok("", env, argv, &res), "PATH=/usr/bin\nGREETING=hello world\n");
	cr_assert(!res.timed_out && !res.cancelled);
	cr_assert(res.start_ns > 0 && res.end_ns >= res.start_ns);
}

Test(sandbox, command_pwd_wins)
{
	const char *env[] = {"PATH=/usr/bin", "PWD=/somewhere", NULL};
	const char *argv[] = {"env", NULL};
	wrk_run_result_t res;
	cr_assert_eq(run("", env, argv, 30000, NULL, &res), REAP_OK);
	cr_assert_str_eq(slurp(out_path), "PATH=/usr/bin\nPWD=/somewhere\n");
}

Test(sandbox, empty_environment_and_echo)
{
	const char *argv[] = {"/usr/bin/echo", "hi", "there", NULL};
	wrk_run_result_t res;
	cr_assert_str_eq(run_ok("", NULL, argv, &res), "hi there\n");
	const char *argv2[] = {"/usr/bin/env", NULL};
	cr_assert_eq(run("", NULL, argv2, 30000, NULL, &res), REAP_OK);
	cr_assert_str_eq(slurp(out_path), "");
}

Test(sandbox, path_lookup_uses_the_commands_path)
{
	const char *env[] = {"PATH=/nonexistent", NULL};
	const char *argv[] = {"true", NULL};
	wrk_run_result_t res;
	cr_assert_eq(run("", env, argv, 30000, NULL, &res), REAP_OK);
	cr_assert_eq(res.exit_code, 127, "exit %d", res.exit_code);
}

/* A file of the exec root with mode and content (for the shim's exec rules). */
static void put(const char *name, mode_t mode, const char *content)
{
	char p[400];
	snprintf(p, sizeof(p), "%s/%s", root, name);
	FILE *f = fopen(p, "w");
	cr_assert_not_null(f, "%s", p);
	fputs(content, f);
	fclose(f);
	cr_assert_eq(chmod(p, mode), 0);
}

/*
 * The environment stays exact whatever argv[0] looks like: /usr/bin/env took
 * a name with '=' for an assignment, so such commands used to run without
 * the shim and saw bwrap's PWD.
 */
Test(sandbox, exact_environment_for_any_program_name)
{
	char link[400];
	snprintf(link, sizeof(link), "%s/a=b", root);
	cr_assert_eq(symlink("/usr/bin/env", link), 0); /* not a shell: those export PWD */
	const char *env[] = {"PATH=/usr/bin", NULL};
	const char *argv[] = {"./a=b", NULL};
	wrk_run_result_t res;
	cr_assert_str_eq(run_ok("", env, argv, &res), "PATH=/usr/bin\n");
}

/* execvp's rules: a file without an interpreter line runs in /bin/sh; PATH's order holds. */
Test(sandbox, script_without_interpreter_line_runs_in_sh)
{
	put("job", 0755, "echo ran \"$1\" in \"$(pwd)\"\n");
	const char *argv[] = {"./job", "x y", NULL};
	wrk_run_result_t res;
	cr_assert_str_eq(run_ok("", std_env, argv, &res), "ran x y in /build\n");

	char dir[400];
	snprintf(dir, sizeof(dir), "%s/bin1", root);
	cr_assert_eq(mkdir(dir, 0755), 0);
	put("bin1/hello", 0755, "#!/bin/sh\necho first\n");
	const char *env[] = {"PATH=/build/bin1:/usr/bin", NULL};
	const char *argv2[] = {"hello", NULL};
	cr_assert_eq(run("", env, argv2, 30000, NULL, &res), REAP_OK);
	cr_assert_str_eq(slurp(out_path), "first\n");
}

/* As env(1): 127 when nothing is found, 126 when it is found but cannot run. */
Test(sandbox, cannot_run_exit_codes)
{
	put("plain", 0644, "echo never\n");
	const char *argv[] = {"./plain", NULL};
	wrk_run_result_t res;
	cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_OK);
	cr_assert_eq(res.exit_code, 126, "exit %d", res.exit_code);
	cr_assert_not_null(strstr(slurp(err_path), "Permission denied"), "%s", slurp(err_path));
	const char *argv2[] = {"./absent", NULL};
	cr_assert_eq(run("", std_env, argv2, 30000, NULL, &res), REAP_OK);
	cr_assert_eq(res.exit_code, 127, "exit %d", res.exit_code);
	cr_assert_not_null(strstr(slurp(err_path), "No such file"), "%s", slurp(err_path));
}

Test(sandbox, exit_codes)
{
	const char *argv[] = {"sh", "-c", "exit 3", NULL};
	const char *argv2[] = {"sh", "-c", "kill -TERM $$", NULL};
	wrk_run_result_t res;
	cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_OK);
	cr_assert_eq(res.exit_code, 3);
	cr_assert_eq(run("", std_env, argv2, 30000, NULL, &res), REAP_OK);
	cr_assert_eq(res.exit_code, 128 + SIGTERM);
}

Test(sandbox, stdout_and_stderr_files)
{
	sh_ok("echo out; echo err >&2");
	cr_assert_str_eq(slurp(out_path), "out\n");
	cr_assert_str_eq(slurp(err_path), "err\n");
	struct stat st;
	cr_assert_eq(stat(out_path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	/* stdin is /dev/null */
	cr_assert_str_eq(sh_ok("cat; echo done"), "done\n");
}

/* A listener on the host's loopback the sandbox must not reach. */
Test(sandbox, no_network)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s, 4), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
	char script[256];
	snprintf(script, sizeof(script),
		 "if exec 3<>/dev/tcp/127.0.0.1/%d; then echo connected; else echo refused; fi",
		 ntohs(a.sin_port));
	const char *argv[] = {"bash", "-c", script, NULL};
	wrk_run_result_t res;
	cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_OK);
	cr_assert_str_eq(slurp(out_path), "refused\n", "stderr: %s", slurp(err_path));
	close(s);
	/* only a loopback interface */
	char *dev = sh_ok("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
	cr_assert_str_eq(dev, "lo\n");
}

/* Is any process running with argument arg? */
static bool process_with_arg(const char *arg)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	bool found = false;
	while (d != NULL && !found && (e = readdir(d)) != NULL) {
		char path[300], buf[4096];
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) {
			buf[n] = '\0';
			if (strcmp(buf + i, arg) == 0)
				found = true;
		}
	}
	if (d != NULL)
		closedir(d);
	return found;
}

static void unique_sleep(char *out, size_t n)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	/* sleep accepts fractions: a unique, long duration to find in /proc */
	snprintf(out, n, "1000.%d%09ld", (int)getpid() % 1000, ts.tv_nsec);
}

Test(sandbox, timeout_kills_the_whole_tree)
{
	char secs[64], script[256];
	unique_sleep(secs, sizeof(secs));
	/* a daemonized grandchild (double fork, own session) and a foreground sleep */
	snprintf(script, sizeof(script), "(setsid sleep %s &) ; (sleep %s &); sleep %s", secs, secs,
		 secs);
	const char *argv[] = {"sh", "-c", script, NULL};
	wrk_run_result_t res;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(run("", std_env, argv, 700, NULL, &res), REAP_OK);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert(res.timed_out);
	cr_assert(!res.cancelled);
	cr_assert(took >= 0.6 && took < 10, "took %.2f s", took);
	cr_assert(res.exit_code >= 128, "exit %d", res.exit_code);
	cr_assert(!process_with_arg(secs), "a sleep %s survived the timeout", secs);
}

Test(sandbox, finished_action_leaves_no_daemon)
{
	char secs[64], script[256];
	unique_sleep(secs, sizeof(secs));
	snprintf(script, sizeof(script), "(setsid sleep %s &) ; echo bye", secs);
	cr_assert_str_eq(sh_ok(script), "bye\n");
	cr_assert(!process_with_arg(secs), "a sleep %s outlived its action", secs);
}

typedef struct canceller {
	volatile bool *flag;
	int after_ms;
} canceller_t;

static void *cancel_later(void *arg)
{
	canceller_t *c = arg;
	usleep((useconds_t)c->after_ms * 1000);
	*c->flag = true;
	return NULL;
}

Test(sandbox, cancel)
{
	char secs[64], script[256];
	unique_sleep(secs, sizeof(secs));
	snprintf(script, sizeof(script), "(sleep %s &) ; sleep %s", secs, secs);
	const char *argv[] = {"sh", "-c", script, NULL};
	volatile bool flag = false;
	canceller_t c = {.flag = &flag, .after_ms = 300};
	pthread_t th;
	wrk_run_result_t res;
	cr_assert_eq(pthread_create(&th, NULL, cancel_later, &c), 0);
	cr_assert_eq(run("", std_env, argv, 0, &flag, &res), REAP_OK);
	pthread_join(th, NULL);
	cr_assert(res.cancelled);
	cr_assert(!res.timed_out);
	cr_assert(!process_with_arg(secs));
	/* already cancelled before the start: stops at once */
	cr_assert_eq(run("", std_env, argv, 0, &flag, &res), REAP_OK);
	cr_assert(res.cancelled);
	cr_assert(!process_with_arg(secs));
}

Test(sandbox, missing_bwrap)
{
	wrk_sandbox_config_t saved = sb_cfg;
	const char *argv[] = {"true", NULL};
	wrk_run_result_t res;
	sb_cfg.bwrap = "/nonexistent/bwrap";
	cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_E_IO);
	sb_cfg = saved;
}

/* An exec that fails in the spawned child is reported as such; the worker goes on. */
Test(sandbox, bwrap_that_cannot_exec)
{
	wrk_sandbox_config_t saved = sb_cfg;
	const char *argv[] = {"true", NULL};
	wrk_run_result_t res;
	char bad[400];
	snprintf(bad, sizeof(bad), "%s/../not-a-program", root);
	FILE *f = fopen(bad, "w");
	cr_assert_not_null(f);
	fputs("\x7f" "ELF garbage\n", f);
	fclose(f);
	cr_assert_eq(chmod(bad, 0755), 0);
	sb_cfg.bwrap = bad;
	cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_E_IO);
	sb_cfg = saved;
	unlink(bad);
	cr_assert_str_eq(sh_ok("echo still-works"), "still-works\n");
}

/*
 * The spawning child shares the worker's memory until it execs: its drop to
 * the sandbox uid must not reach the worker's own threads.
 */
static void *idle_thread(void *arg)
{
	(void)arg;
	pause();
	return NULL;
}

/* The "Uid:" line of one of our threads, from /proc. */
static void thread_uids(pid_t tid, char *out, size_t cap)
{
	char path[64], buf[2048];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	out[0] = '\0';
	while (fgets(buf, sizeof(buf), f) != NULL)
		if (strncmp(buf, "Uid:", 4) == 0)
			snprintf(out, cap, "%.100s", buf);
	fclose(f);
}

Test(sandbox, spawning_leaves_the_worker_identity_alone)
{
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;
	uid_t before = geteuid();
	pthread_t t;
	char main_uids[128], other_uids[128];
	/* a second thread: glibc's set*id wrappers would have changed it too */
	cr_assert_eq(pthread_create(&t, NULL, idle_thread, NULL), 0);
	cr_assert_str_eq(sh_ok("echo x"), "x\n");
	thread_uids(gettid(), main_uids, sizeof(main_uids));
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		thread_uids((pid_t)atoi(e->d_name), other_uids, sizeof(other_uids));
		cr_assert_str_eq(other_uids, main_uids, "thread %s: %s", e->d_name, other_uids);
	}
	closedir(d);
	pthread_cancel(t);
	pthread_join(t, NULL);
	cr_assert_eq(getresuid(&ruid, &euid, &suid), 0);
	cr_assert_eq(getresgid(&rgid, &egid, &sgid), 0);
	cr_assert_eq(euid, before);
	cr_assert_eq(ruid, before);
	cr_assert_eq(suid, before);
	if (before == 0)
		cr_assert_eq(egid, 0);
}

/* A root worker's action is an unprivileged host uid that owns the folders, not the staged files. */
Test(sandbox, root_worker_runs_actions_as_the_sandbox_uid)
{
	if (geteuid() != 0)
		cr_skip_test("the worker is not root here: actions run as its own uid");
	char staged[400];
	snprintf(staged, sizeof(staged), "%s/input.txt", root);
	FILE *f = fopen(staged, "w");
	fputs("input\n", f);
	fclose(f);
	cr_assert_eq(chmod(staged, 0644), 0);
	cr_assert_str_eq(sh_ok("id -u; (echo x >> input.txt) 2>/dev/null || echo ro; "
			       "chmod 0666 input.txt 2>/dev/null || echo nochmod; echo new > made"),
			 "65534\nro\nnochmod\n");
	struct stat st;
	char made[400];
	snprintf(made, sizeof(made), "%s/made", root);
	cr_assert_eq(stat(made, &st), 0);
	cr_assert_eq(st.st_uid, WRK_SANDBOX_DEFAULT_ID);
	cr_assert_eq(stat(root, &st), 0);
	cr_assert_eq(st.st_uid, WRK_SANDBOX_DEFAULT_ID);
	cr_assert_eq(stat(staged, &st), 0);
	cr_assert_eq(st.st_uid, 0);
	cr_assert_str_eq(slurp(staged), "input\n");
}

/* ---- the action's sandbox requests (reap- platform properties) ---- */

/* A Platform of "name=value" strings (static storage, up to 8). */
typedef struct test_pf {
	WRK_RE(Platform) pf;
	WRK_RE(Platform__Property) p[8], *pp[8];
	char buf[8][128];
} test_pf_t;

static const WRK_RE(Platform) *mkpf(test_pf_t *t, const char *const *props)
{
	memset(t, 0, sizeof(*t));
	build__bazel__remote__execution__v2__platform__init(&t->pf);
	for (size_t i = 0; props[i] != NULL && i < 8; i++) {
		build__bazel__remote__execution__v2__platform__property__init(&t->p[i]);
		snprintf(t->buf[i], sizeof(t->buf[i]), "%s", props[i]);
		char *eq = strchr(t->buf[i], '=');
		*eq = '\0';
		t->p[i].name = t->buf[i];
		t->p[i].value = eq + 1;
		t->pp[i] = &t->p[i];
		t->pf.n_properties = i + 1;
	}
	t->pf.properties = t->pp;
	return &t->pf;
}

/* wrk_sandbox_for_action with the action's and the command's properties (NULL = no platform). */
static int narrow(const wrk_sandbox_config_t *base, const char *const *action_props,
		  const char *const *command_props, bool allow_loopback, wrk_sandbox_config_t *out,
		  reap_errbuf_t *eb)
{
	test_pf_t a, c;
	return wrk_sandbox_for_action(base, action_props ? mkpf(&a, action_props) : NULL,
				      command_props ? mkpf(&c, command_props) : NULL, allow_loopback,
				      out, eb);
}

Test(sandbox, properties_narrow_limits_and_never_widen)
{
	wrk_sandbox_config_t base = sb_cfg, out;
	reap_errbuf_t eb = {{0}};
	base.limits = (wrk_limits_t){.cpu_seconds = 10, .memory_bytes = 1ull << 30, .disk_bytes = 0,
				     .tmp_bytes = 64ull << 20, .pids = 100, .output_bytes = 1 << 20};
	const char *act[] = {"OSFamily=Linux", "reap-limit-cpu-seconds=5", "reap-limit-memory=2GiB",
			     "reap-limit-disk=512MiB", "reap-limit-tmp=1G", "reap-limit-pids=50",
			     "reap-limit-output=4KiB", NULL};
	const char *cmd[] = {"reap-limit-cpu-seconds=3", "reap-limit-pids=500", NULL};
	cr_assert_eq(narrow(&base, act, cmd, false, &out, &eb), REAP_OK, "%s", eb.msg);
	cr_assert_eq(out.limits.cpu_seconds, 3);                /* the smallest of three */
	cr_assert_eq(out.limits.memory_bytes, 1ull << 30);      /* 2GiB would widen: kept */
	cr_assert_eq(out.limits.disk_bytes, 512ull << 20);      /* none -> 512MiB */
	cr_assert_eq(out.limits.tmp_bytes, 64ull << 20);        /* 1G would widen: kept */
	cr_assert_eq(out.limits.pids, 50);
	cr_assert_eq(out.limits.output_bytes, 4096);
	cr_assert(!out.loopback_network);
	cr_assert_eq(out.ro_paths, base.ro_paths);
	cr_assert_str_eq(out.bwrap, base.bwrap);
	/* no properties: the worker's limits exactly */
	cr_assert_eq(narrow(&base, NULL, NULL, true, &out, &eb), REAP_OK);
	cr_assert_eq(memcmp(&out.limits, &base.limits, sizeof(base.limits)), 0);
	cr_assert(!out.loopback_network);
}

Test(sandbox, bad_properties_are_invalid_argument)
{
	static const char *const bad[][2] = {
		{"reap-limit-memory=lots", "reap-limit-memory"},
		{"reap-limit-memory=1.5GiB", "reap-limit-memory"},
		{"reap-limit-memory=0", "at least"},
		{"reap-limit-memory=1MiB", "at least"}, /* bwrap itself would not start */
		{"reap-limit-disk=", "reap-limit-disk"},
		{"reap-limit-tmp=1KiB", "at least"},
		{"reap-limit-output=-1", "reap-limit-output"},
		{"reap-limit-cpu-seconds=5s", "whole number"},
		{"reap-limit-cpu-seconds=0", "at least"},
		{"reap-limit-pids=99999999999999999999999", "whole number"},
		{"reap-limit-pids= 5", "whole number"},
		{"reap-limit-cpu=5", "unknown sandbox platform property \"reap-limit-cpu\""},
		{"reap-network=host", "\"none\" or \"loopback\""},
	};
	wrk_sandbox_config_t out;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		reap_errbuf_t eb = {{0}};
		const char *props[] = {bad[i][0], NULL};
		cr_assert_eq(narrow(&sb_cfg, props, NULL, true, &out, &eb), REAP_E_INVALID, "%s",
			     bad[i][0]);
		cr_assert_neq(strstr(eb.msg, bad[i][1]), NULL, "%s: %s", bad[i][0], eb.msg);
		/* the same from the Command's platform */
		cr_assert_eq(narrow(&sb_cfg, NULL, props, true, &out, &eb), REAP_E_INVALID, "%s",
			     bad[i][0]);
	}
	reap_errbuf_t eb = {{0}};
	const char *a[] = {"reap-network=loopback", NULL}, *c[] = {"reap-network=none", NULL};
	cr_assert_eq(narrow(&sb_cfg, a, c, true, &out, &eb), REAP_E_INVALID);
	cr_assert_neq(strstr(eb.msg, "different values"), NULL, "%s", eb.msg);
}

Test(sandbox, loopback_network_needs_the_lease_s_permission)
{
	wrk_sandbox_config_t out;
	reap_errbuf_t eb = {{0}};
	const char *lo[] = {"reap-network=loopback", NULL}, *none[] = {"reap-network=none", NULL};
	cr_assert_eq(narrow(&sb_cfg, lo, NULL, false, &out, &eb), REAP_E_PRECONDITION);
	cr_assert_neq(strstr(eb.msg, "does not allow loopback networking"), NULL, "%s", eb.msg);
	cr_assert_eq(narrow(&sb_cfg, NULL, lo, false, &out, &eb), REAP_E_PRECONDITION);
	cr_assert_eq(narrow(&sb_cfg, lo, lo, true, &out, &eb), REAP_OK, "%s", eb.msg);
	cr_assert(out.loopback_network);
	cr_assert_eq(narrow(&sb_cfg, none, NULL, false, &out, &eb), REAP_OK, "%s", eb.msg);
	cr_assert(!out.loopback_network);
	cr_assert_eq(narrow(&sb_cfg, none, NULL, true, &out, &eb), REAP_OK, "%s", eb.msg);
	cr_assert(!out.loopback_network);
}

/* Listen on and connect to 127.0.0.1 inside the sandbox: prints what worked. */
#define LOOPBACK_PROBE                                                                         \
	"use IO::Socket::INET; "                                                               \
	"my $l = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, " \
	"Proto => 'tcp') or do { print qq(no-listen\\n); exit 0 }; "                            \
	"my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $l->sockport, "    \
	"Proto => 'tcp', Timeout => 5) or do { print qq(no-connect\\n); exit 0 }; "              \
	"print qq(loopback-ok\\n);"

static char *bash_ok(const char *script)
{
	return shell_ok("bash", script);
}

static char *probe_loopback(void)
{
	const char *argv[] = {"perl", "-e", LOOPBACK_PROBE, NULL};
	wrk_run_result_t res;
	return run_ok("", std_env, argv, &res);
}

Test(sandbox, network_none_and_loopback)
{
	wrk_sandbox_config_t saved = sb_cfg;
	/* a listener on the host's loopback: reachable in neither mode */
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	char script[256];
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s, 4), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
	snprintf(script, sizeof(script),
		 "if exec 3<>/dev/tcp/127.0.0.1/%d; then echo connected; else echo refused; fi",
		 ntohs(a.sin_port));

	/* default: a root worker leaves lo down (no network at all); otherwise bwrap's lo */
	sb_cfg.loopback_network = false;
	cr_assert_str_eq(probe_loopback(), geteuid() == 0 ? "no-connect\n" : "loopback-ok\n");
	cr_assert_str_eq(bash_ok(script), "refused\n");
	cr_assert_neq(strstr(wrk_sandbox_mechanisms(&sb_cfg), "network="), NULL);

	/* reap-network=loopback: a private loopback that works, still not the host's */
	sb_cfg.loopback_network = true;
	cr_assert_str_eq(probe_loopback(), "loopback-ok\n");
	cr_assert_str_eq(bash_ok(script), "refused\n");
	cr_assert_str_eq(sh_ok("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"), "lo\n");
	cr_assert_neq(strstr(wrk_sandbox_mechanisms(&sb_cfg), "network=loopback only"), NULL);

	struct pollfd p = {.fd = s, .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 0), 0, "the host's listener saw a connection");
	close(s);
	sb_cfg = saved;
}

Test(sandbox, narrowed_limits_are_enforced)
{
	wrk_sandbox_config_t saved = sb_cfg, eff;
	reap_errbuf_t eb = {{0}};
	const char *props[] = {"reap-limit-output=64KiB", "reap-limit-tmp=1MiB",
			       "reap-limit-memory=32MiB", NULL};
	sb_cfg.limits = (wrk_limits_t){0}; /* the worker sets none: the action's own apply */
	cr_assert_eq(narrow(&sb_cfg, props, NULL, false, &eff, &eb), REAP_OK, "%s", eb.msg);
	sb_cfg = eff;
	/* the smallest memory limit accepted still starts the sandbox */
	cr_assert_str_eq(sh_ok("df -k /tmp | tail -1 | awk '{print $2}'"), "1024\n");
	const char *argv[] = {"yes", NULL};
	wrk_run_result_t res;
	cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_OK);
	cr_assert_eq(res.limit, WRK_LIMIT_OUTPUT, "limit %d exit %d", res.limit, res.exit_code);
	struct stat st;
	cr_assert_eq(stat(out_path, &st), 0);
	cr_assert_leq(st.st_size, 64 << 10);
	cr_assert_neq(strstr(slurp(err_path), "output limit: stdout exceeded 65536 bytes"), NULL,
		      "%s", slurp(err_path));
	sb_cfg = saved;
}
