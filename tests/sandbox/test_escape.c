/*
 * test_escape.c - the escape suite: hostile actions run through the sandbox
 * API (wrk_sandbox_run, no server, so the suite stays fast). Each test
 * asserts that the action is contained (it fails, or what it did is
 * harmless) and that the host and the "worker" (this process) are unaffected
 * afterwards: nothing of the host changed, no process is left behind, and
 * the next action runs normally.
 *
 * Probes that need a syscall no shell tool makes (ptrace, mount, unshare,
 * keyctl, bpf, ...) run this very binary inside the sandbox: a constructor
 * sees REAP_ESCAPE_HELPER in the environment, does the probe, prints the
 * outcome and exits before criterion starts.
 *
 * The output-symlink case (collection never follows a symlink out of the
 * root) is covered by tests/worker/test_outputs.c (symlink_recorded_not_followed
 * and the absolute-symlink cases), which needs a CAS; it is not repeated here.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/harness.h"
#include "worker/worker.h"

/* ---- the in-sandbox helper ---- */

static void report(const char *what, long rc)
{
	printf("%s=%s\n", what, rc == 0 ? "ok" : strerror(errno));
}

__attribute__((constructor)) static void helper(void)
{
	const char *mode = getenv("REAP_ESCAPE_HELPER");
	if (mode == NULL)
		return;
	if (strcmp(mode, "syscalls") == 0) {
		pid_t child = fork();
		if (child == 0) {
			pause();
			_exit(0);
		}
		report("ptrace_attach", ptrace(PTRACE_ATTACH, child, NULL, NULL));
		report("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
		report("umount", umount2("/proc", MNT_DETACH));
		report("unshare_user", unshare(CLONE_NEWUSER));
		report("unshare_ns", unshare(CLONE_NEWNS));
		report("unshare_net", unshare(CLONE_NEWNET));
		report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
		union bpf_attr attr;
		memset(&attr, 0, sizeof(attr));
		report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof(attr)));
		struct perf_event_attr pa;
		memset(&pa, 0, sizeof(pa));
		pa.size = sizeof(pa);
		pa.type = PERF_TYPE_SOFTWARE;
		report("perf", syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0));
		report("userfaultfd", syscall(SYS_userfaultfd, 0));
		report("init_module", syscall(SYS_init_module, NULL, 0, ""));
		report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
		report("setns", syscall(SYS_setns, 0, 0));
		report("clone3", syscall(SYS_clone3, NULL, 0));
		long r = syscall(SYS_clone, (long)(CLONE_NEWUSER | SIGCHLD), 0, 0, 0, 0);
		if (r == 0)
			_exit(0);
		if (r > 0)
			waitpid((pid_t)r, NULL, 0);
		report("clone_newuser", r > 0 ? 0 : r);
		pid_t f = fork(); /* a plain fork still works */
		if (f == 0)
			_exit(0);
		if (f > 0)
			waitpid(f, NULL, 0);
		report("fork", f > 0 ? 0 : -1);
	} else if (strcmp(mode, "ids") == 0) {
		printf("uid=%d euid=%d gid=%d egid=%d\n", (int)getuid(), (int)geteuid(), (int)getgid(),
		       (int)getegid());
		report("setuid0", setuid(0));
	}
	fflush(stdout);
	_exit(0);
}

/* ---- fixture ---- */

static const char *const ro_paths[] = {
	"/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc/alternatives", "/etc/ld.so.cache",
	"/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
	"/etc/localtime",
};

static wrk_sandbox_config_t cfg;
static char tmp[256], root[300], out_path[300], err_path[300];

static void setup(void)
{
	cfg = (wrk_sandbox_config_t){
		.bwrap = "/usr/bin/bwrap",
		.ro_paths = ro_paths,
		.n_ro_paths = sizeof(ro_paths) / sizeof(ro_paths[0]),
	};
	snprintf(tmp, sizeof(tmp), "/tmp/reap-escape-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp));
	snprintf(root, sizeof(root), "%s/root", tmp);
	snprintf(out_path, sizeof(out_path), "%s/stdout", tmp);
	snprintf(err_path, sizeof(err_path), "%s/stderr", tmp);
	cr_assert_eq(mkdir(root, 0755), 0);
}

/*
 * A test host: a network namespace of the test's own (reap-esc-PID) joined
 * to this one by a veth pair on 10.213.X.0/30 (.1 here, .2 there), with a
 * TCP listener on .2. Nothing else is ever connected to. Removed by
 * teardown, which criterion runs after a failed assertion too; a leftover of
 * a test process that died is removed by the next run.
 */
typedef struct test_host {
	bool made;           /* the namespace exists */
	char ns[32], veth[16], peer_veth[16];
	char host_ip[16], peer_ip[16];
	int listener;        /* in the namespace; -1 */
	unsigned short port;
} test_host_t;

static test_host_t host = {.listener = -1};

static int shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int shell(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void test_host_remove(void)
{
	if (host.listener >= 0)
		close(host.listener);
	host.listener = -1;
	if (!host.made)
		return;
	/* deleting one end of the pair deletes both; the namespace last */
	if (shell("ip link del '%s' >/dev/null 2>&1; ip netns del '%s'", host.veth, host.ns) != 0)
		fprintf(stderr, "cannot remove the network namespace %s\n", host.ns);
	host.made = false;
}

static void teardown(void)
{
	char cmd[600];
	test_host_remove();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", tmp);
}

TestSuite(escape, .init = setup, .fini = teardown, .timeout = 60);

typedef struct test_cmd {
	WRK_RE(Command) c;
	WRK_RE(Command__EnvironmentVariable) ev[4], *evp[4];
	char *args[8];
} test_cmd_t;

static const char *env_names[] = {"PATH", "REAP_ESCAPE_HELPER", "ASAN_OPTIONS"};

/* Run argv (helper: the REAP_ESCAPE_HELPER mode, or NULL) with timeout_ms. */
static wrk_run_result_t run_helper(const char *const *argv, const char *helper_mode,
				   int64_t timeout_ms)
{
	test_cmd_t t;
	const char *vals[] = {"/usr/bin:/bin", helper_mode, "detect_leaks=0"};
	reap_errbuf_t eb = {{0}};
	wrk_run_result_t res;

	memset(&t, 0, sizeof(t));
	build__bazel__remote__execution__v2__command__init(&t.c);
	for (size_t i = 0; argv[i] != NULL && i < 7; i++)
		t.args[t.c.n_arguments++] = (char *)argv[i];
	t.c.arguments = t.args;
	for (size_t i = 0; i < 3; i++) {
		if (vals[i] == NULL)
			continue;
		build__bazel__remote__execution__v2__command__environment_variable__init(
			&t.ev[t.c.n_environment_variables]);
		t.ev[t.c.n_environment_variables].name = (char *)env_names[i];
		t.ev[t.c.n_environment_variables].value = (char *)vals[i];
		t.evp[t.c.n_environment_variables] = &t.ev[t.c.n_environment_variables];
		t.c.n_environment_variables++;
	}
	t.c.environment_variables = t.evp;
	t.c.working_directory = (char *)"";
	int err = wrk_sandbox_run(&cfg, root, &t.c, timeout_ms, out_path, err_path, NULL, &res, &eb);
	cr_assert_eq(err, REAP_OK, "sandbox: %s", reap_errmsg(&eb, err));
	return res;
}

static wrk_run_result_t sh(const char *script, int64_t timeout_ms)
{
	const char *argv[] = {"bash", "-c", script, NULL};
	return run_helper(argv, NULL, timeout_ms);
}

static char *slurp(const char *path)
{
	static char buf[65536];
	return th_read_file(path, buf, sizeof(buf));
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Processes of the host whose argv holds arg. */
static int processes_with_arg(const char *arg)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int found = 0;
	while (d != NULL && (e = readdir(d)) != NULL) {
		char path[300], buf[4096];
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
			if (strstr(buf + i, arg) != NULL) {
				found++;
				break;
			}
	}
	if (d != NULL)
		closedir(d);
	return found;
}

static void unique(char *out, size_t n)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(out, n, "1000.%d%09ld", (int)getpid() % 1000, ts.tv_nsec);
}

/* The worker carries on: a plain action still runs and nothing of the last one is left. */
static void assert_healthy(void)
{
	cfg.limits = (wrk_limits_t){0};
	wrk_run_result_t res = sh("echo still-ok", 10000);
	cr_assert_eq(res.exit_code, 0, "follow-up action failed: %s", slurp(err_path));
	cr_assert_str_eq(slurp(out_path), "still-ok\n");
	cr_assert_eq(res.limit, WRK_LIMIT_NONE);
}

static double since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* ---- isolation ---- */

Test(escape, tcp_to_host_loopback_fails)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s, 4), 0);
	cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
	char script[256];
	snprintf(script, sizeof(script),
		 "if exec 3<>/dev/tcp/127.0.0.1/%d; then echo connected; else echo refused; fi",
		 ntohs(a.sin_port));
	wrk_run_result_t res = sh(script, 10000);
	cr_assert_str_eq(slurp(out_path), "refused\n", "stderr: %s", slurp(err_path));
	cr_assert_eq(res.exit_code, 0);
	struct pollfd p = {.fd = s, .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 0), 0, "the listener saw a connection");
	close(s);
	assert_healthy();
}

/* A connection from this (the host's) namespace to the test host, within 5 s. */
static bool host_can_connect(void)
{
	int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(host.port)};
	bool ok = false;
	inet_pton(AF_INET, host.peer_ip, &a.sin_addr);
	if (c >= 0 && (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 || errno == EINPROGRESS)) {
		struct pollfd p = {.fd = c, .events = POLLOUT};
		int soerr = -1;
		socklen_t len = sizeof(soerr);
		ok = poll(&p, 1, 5000) == 1 &&
		     getsockopt(c, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0;
	}
	if (c >= 0)
		close(c);
	return ok;
}

/* Make the test host; skips (with the reason) where the host cannot. */
static void test_host_make(void)
{
	int self = -1, there = -1, err = 0;
	unsigned x = (unsigned)getpid() % 256;
	char path[64];

	if (geteuid() != 0)
		cr_skip_test("needs root: the test host is a network namespace and a veth pair");
	if (shell("command -v ip >/dev/null 2>&1") != 0)
		cr_skip_test("needs iproute2 (ip) to make the test host's network namespace");
	/* namespaces left by test processes that died */
	shell("for n in $(ip netns list 2>/dev/null | awk '/^reap-esc-[0-9]+/ {print $1}'); do "
	      "kill -0 \"${n#reap-esc-}\" 2>/dev/null || ip netns del \"$n\"; done");
	snprintf(host.ns, sizeof(host.ns), "reap-esc-%d", (int)getpid());
	snprintf(host.veth, sizeof(host.veth), "resc%dh", (int)getpid() % 10000000);
	snprintf(host.peer_veth, sizeof(host.peer_veth), "resc%dn", (int)getpid() % 10000000);
	snprintf(host.host_ip, sizeof(host.host_ip), "10.213.%u.1", x);
	snprintf(host.peer_ip, sizeof(host.peer_ip), "10.213.%u.2", x);
	if (shell("ip netns add '%s' 2>&1", host.ns) != 0)
		cr_skip_test("`ip netns add` is not permitted here: no test host");
	host.made = true;
	if (shell("ip link add '%s' type veth peer name '%s' netns '%s' 2>&1", host.veth,
		  host.peer_veth, host.ns) != 0)
		cr_skip_test("cannot make a veth pair here (no veth support?): no test host");
	cr_assert_eq(shell("ip addr add %s/30 dev '%s' && ip link set '%s' up && "
			   "ip -n '%s' addr add %s/30 dev '%s' && ip -n '%s' link set '%s' up && "
			   "ip -n '%s' link set lo up",
			   host.host_ip, host.veth, host.veth, host.ns, host.peer_ip, host.peer_veth,
			   host.ns, host.peer_veth, host.ns),
		     0, "cannot configure the veth pair");

	/* the listener is made inside the namespace; the socket stays there */
	snprintf(path, sizeof(path), "/run/netns/%s", host.ns);
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	there = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(self >= 0 && there >= 0, "cannot open the network namespaces: %s", strerror(errno));
	if (setns(there, CLONE_NEWNET) == 0) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		socklen_t len = sizeof(a);
		inet_pton(AF_INET, host.peer_ip, &a.sin_addr);
		host.listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (host.listener < 0 || bind(host.listener, (struct sockaddr *)&a, sizeof(a)) != 0 ||
		    listen(host.listener, 8) != 0 ||
		    getsockname(host.listener, (struct sockaddr *)&a, &len) != 0)
			err = errno;
		host.port = ntohs(a.sin_port);
		cr_assert_eq(setns(self, CLONE_NEWNET), 0, "cannot return to the host's namespace");
	} else {
		err = errno;
	}
	close(self);
	close(there);
	cr_assert_eq(err, 0, "cannot listen in the test host's namespace: %s", strerror(err));

	/* the host reaches it, so a sandbox that could would be caught */
	cr_assert(host_can_connect(), "the host itself cannot reach %s:%u", host.peer_ip,
		  (unsigned)host.port);
	struct pollfd p = {.fd = host.listener, .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 5000), 1, "the listener did not see the host's connection");
	int c = accept(host.listener, NULL, NULL);
	cr_assert_geq(c, 0);
	close(c);
}

Test(escape, tcp_to_a_test_host_in_another_namespace_fails)
{
	char script[256];
	test_host_make();
	snprintf(script, sizeof(script),
		 "if exec 3<>/dev/tcp/%s/%u; then echo connected; else echo refused; fi",
		 host.peer_ip, (unsigned)host.port);
	for (int loopback = 0; loopback < 2; loopback++) {
		cfg.loopback_network = loopback; /* neither the default nor reap-network=loopback */
		wrk_run_result_t res = sh(script, 20000);
		cr_assert_str_eq(slurp(out_path), "refused\n", "loopback=%d stderr: %s", loopback,
				 slurp(err_path));
		cr_assert_eq(res.exit_code, 0);
		cr_assert(!res.timed_out);
	}
	cfg.loopback_network = false;
	struct pollfd p = {.fd = host.listener, .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 0), 0, "the test host's listener saw a connection");
	assert_healthy();
}

Test(escape, host_secrets_are_invisible)
{
	char cache[400], key[400], token[400], script[2048];
	snprintf(cache, sizeof(cache), "%s/cache", tmp);
	snprintf(key, sizeof(key), "%s/worker.key", tmp);
	snprintf(token, sizeof(token), "%s/token", tmp);
	cr_assert_eq(mkdir(cache, 0700), 0);
	FILE *f = fopen(key, "w");
	fputs("PRIVATE KEY\n", f);
	fclose(f);
	f = fopen(token, "w");
	fputs("eyJsecret\n", f);
	fclose(f);
	snprintf(script, sizeof(script),
		 "for p in /etc/shadow /root /home '%s' '%s' '%s' '%s' /run /var /proc/1/root/etc/shadow "
		 "/sys/fs/cgroup; do "
		 "  if [ -e \"$p\" ]; then echo visible $p; fi; "
		 "  cat \"$p\" 2>/dev/null | grep -q . && echo readable $p; done; "
		 "grep -rl 'PRIVATE KEY\\|eyJsecret' /build /tmp /etc /dev 2>/dev/null | head -3; "
		 "ls -A / | tr '\\n' ' '",
		 tmp, cache, key, token);
	wrk_run_result_t res = sh(script, 20000);
	/* the root holds the toolchain paths and the sandbox's own mounts (.reap: the shim) */
	cr_assert_str_eq(slurp(out_path), ".reap bin build dev etc lib lib64 proc sbin tmp usr ",
			 "stderr: %s", slurp(err_path));
	cr_assert(!res.timed_out);
	assert_healthy();
}

Test(escape, another_actions_folder_is_invisible)
{
	char other[400], secret[500], script[1024];
	snprintf(other, sizeof(other), "%s/lease-other", tmp);
	snprintf(secret, sizeof(secret), "%s/out.o", other);
	cr_assert_eq(mkdir(other, 0755), 0);
	FILE *f = fopen(secret, "w");
	fputs("other action's output\n", f);
	fclose(f);
	snprintf(script, sizeof(script),
		 "ls -A /build/..; for p in '%s' '%s' /build/../lease-other; do "
		 "  [ -e \"$p\" ] && echo visible $p; done; true",
		 other, secret);
	sh(script, 10000);
	/* /build's parent is the sandbox's own (read-only) root: only its mount points */
	cr_assert_null(strstr(slurp(out_path), "visible"), "%s", slurp(out_path));
	cr_assert_null(strstr(slurp(out_path), "lease-other"), "%s", slurp(out_path));
	cr_assert_str_eq(slurp(secret), "other action's output\n");
}

Test(escape, writes_outside_the_input_root_fail)
{
	char marker[400], script[1024];
	snprintf(marker, sizeof(marker), "%s/host-file", tmp);
	FILE *f = fopen(marker, "w");
	fputs("unchanged\n", f);
	fclose(f);
	snprintf(script, sizeof(script),
		 "for p in /x /usr/x /etc/x /bin/x /build/../x /proc/sys/kernel/hostname '%s'; do "
		 "  (echo pwned > \"$p\") 2>/dev/null && echo wrote $p; done; "
		 "echo localhost2 > /proc/sys/kernel/hostname 2>/dev/null && echo wrote hostname; true",
		 marker);
	sh(script, 10000);
	cr_assert_str_eq(slurp(out_path), "");
	cr_assert_str_eq(slurp(marker), "unchanged\n");
	cr_assert_neq(access("/x", F_OK), 0);
	cr_assert_neq(access("/usr/x", F_OK), 0);
	assert_healthy();
}

Test(escape, input_symlink_out_of_the_root_leads_nowhere)
{
	char marker[400], link[400], rel[400];
	snprintf(marker, sizeof(marker), "%s/host-secret", tmp);
	FILE *f = fopen(marker, "w");
	fputs("host secret\n", f);
	fclose(f);
	/* staging refuses such links; here one is planted directly, as if it had slipped through */
	snprintf(link, sizeof(link), "%s/abs", root);
	cr_assert_eq(symlink(marker, link), 0);
	snprintf(link, sizeof(link), "%s/rel", root);
	cr_assert_eq(symlink("../host-secret", link), 0);
	snprintf(rel, sizeof(rel), "%s/etc", root);
	cr_assert_eq(symlink("/etc", rel), 0);
	sh("cat abs rel etc/shadow etc/hostname 2>/dev/null; true", 10000);
	cr_assert_str_eq(slurp(out_path), "");
	assert_healthy();
}

static void copy_self(const char *to, mode_t mode)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "cp /proc/%d/exe '%s' && chmod %o '%s'", (int)getpid(), to,
		 (unsigned)mode, to);
	cr_assert_eq(system(cmd), 0);
}

Test(escape, denied_syscalls_fail_with_eperm)
{
	char helper_path[400];
	snprintf(helper_path, sizeof(helper_path), "%s/helper", root);
	copy_self(helper_path, 0755);
	const char *argv[] = {"/build/helper", NULL};
	wrk_run_result_t res = run_helper(argv, "syscalls", 20000);
	cr_assert_eq(res.exit_code, 0, "stderr: %s", slurp(err_path));
	cr_assert_str_eq(slurp(out_path),
			 "ptrace_attach=Operation not permitted\n"
			 "ptrace_traceme=Operation not permitted\n"
			 "mount=Operation not permitted\n"
			 "umount=Operation not permitted\n"
			 "unshare_user=Operation not permitted\n"
			 "unshare_ns=Operation not permitted\n"
			 "unshare_net=Operation not permitted\n"
			 "keyctl=Operation not permitted\n"
			 "bpf=Operation not permitted\n"
			 "perf=Operation not permitted\n"
			 "userfaultfd=Operation not permitted\n"
			 "init_module=Operation not permitted\n"
			 "kexec_load=Operation not permitted\n"
			 "setns=Operation not permitted\n"
			 "clone3=Function not implemented\n"
			 "clone_newuser=Operation not permitted\n"
			 "fork=ok\n");
	assert_healthy();
}

Test(escape, setuid_binary_gives_no_privilege)
{
	char helper_path[400];
	snprintf(helper_path, sizeof(helper_path), "%s/suid", root);
	copy_self(helper_path, 0755);
	if (geteuid() == 0) {
		cr_assert_eq(chown(helper_path, 0, 0), 0);
		cr_assert_eq(chmod(helper_path, 04755), 0);
	} else {
		cr_assert_eq(chmod(helper_path, 04755), 0); /* setuid to this user: still nothing */
	}
	const char *argv[] = {"/build/suid", NULL};
	wrk_run_result_t res = run_helper(argv, "ids", 20000);
	cr_assert_eq(res.exit_code, 0, "stderr: %s", slurp(err_path));
	int uid = -1, euid = -1, gid = -1, egid = -1;
	cr_assert_eq(sscanf(slurp(out_path), "uid=%d euid=%d gid=%d egid=%d", &uid, &euid, &gid,
			    &egid), 4, "%s", slurp(out_path));
	cr_assert_eq(uid, euid, "the setuid bit took effect: %s", slurp(out_path));
	cr_assert_eq(strstr(slurp(out_path), "setuid0=ok"), NULL, "%s", slurp(out_path));
	if (geteuid() == 0)
		cr_assert_eq(euid, WRK_SANDBOX_DEFAULT_ID, "a root worker's action must not be uid 0");
	cr_assert_str_eq(sh("grep -E 'NoNewPrivs|CapEff|Seccomp:' /proc/self/status | tr -d '\\t '",
			    10000).exit_code == 0 ? slurp(out_path) : "",
			 "CapEff:0000000000000000\nNoNewPrivs:1\nSeccomp:2\n");
}

/* ---- limits ---- */

Test(escape, fork_bomb_ends_the_action_only)
{
	char marker[64], script[256];
	struct timespec t0;
	unique(marker, sizeof(marker));
	cfg.limits.pids = 64;
	snprintf(script, sizeof(script), "b() { b | b & }; b; sleep %s", marker);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	wrk_run_result_t res = sh(script, 20000);
	cr_assert(since(&t0) < 15, "took %.1f s", since(&t0));
	cr_assert_eq(res.limit, WRK_LIMIT_PIDS, "limit %d timed_out %d exit %d", res.limit,
		     res.timed_out, res.exit_code);
	cr_assert_neq(strstr(slurp(err_path), "reap: action killed: process limit"), NULL);
	cr_assert_eq(processes_with_arg(marker), 0);
	assert_healthy();
}

Test(escape, memory_bomb)
{
	cfg.limits.memory_bytes = 256ull << 20;
	wrk_run_result_t res =
		sh("perl -e '@a = (); while (1) { push @a, \"x\" x (1 << 20) }'", 20000);
	cr_assert(!res.timed_out);
	cr_assert_neq(res.exit_code, 0);
	cr_assert(res.limit == WRK_LIMIT_MEMORY || strstr(slurp(err_path), "Out of memory") != NULL,
		  "limit %d exit %d stderr %s", res.limit, res.exit_code, slurp(err_path));
	assert_healthy();
}

Test(escape, memory_spread_over_processes_is_summed)
{
	/* each process stays under the per-process RLIMIT_AS; the tree does not */
	cfg.limits.memory_bytes = 256ull << 20;
	wrk_run_result_t res = sh("for i in 1 2 3 4; do perl -e '$x = \"x\" x (120 << 20); "
				  "sleep 30' & done; wait",
				  25000);
	cr_assert_eq(res.limit, WRK_LIMIT_MEMORY, "limit %d exit %d timed_out %d", res.limit,
		     res.exit_code, res.timed_out);
	cr_assert_neq(strstr(slurp(err_path), "memory limit"), NULL);
	assert_healthy();
}

Test(escape, filling_the_disk_fails_the_action)
{
	cfg.limits.disk_bytes = 8ull << 20;
	cfg.limits.tmp_bytes = 4ull << 20;
	/* one big file: RLIMIT_FSIZE */
	wrk_run_result_t res = sh("head -c 64M /dev/zero > big; sleep 5", 20000);
	cr_assert_eq(res.limit, WRK_LIMIT_DISK, "limit %d exit %d", res.limit, res.exit_code);
	char big[400];
	snprintf(big, sizeof(big), "%s/big", root);
	cr_assert_leq(file_size(big), 8 << 20);
	/* many small files: the exec-root watchdog */
	cfg.limits = (wrk_limits_t){.disk_bytes = 8ull << 20, .tmp_bytes = 4ull << 20};
	res = sh("for i in $(seq 64); do head -c 1M /dev/zero > f$i; done; sleep 5", 20000);
	cr_assert_eq(res.limit, WRK_LIMIT_DISK, "limit %d exit %d", res.limit, res.exit_code);
	cr_assert_neq(strstr(slurp(err_path), "disk limit"), NULL);
	/* /tmp is a small tmpfs: ENOSPC for the action */
	cfg.limits = (wrk_limits_t){.disk_bytes = 8ull << 20, .tmp_bytes = 4ull << 20};
	res = sh("head -c 64M /dev/zero > /tmp/x || echo enospc; df -k /tmp | tail -1 | awk '{print $2}'",
		 20000);
	cr_assert_str_eq(slurp(out_path), "enospc\n4096\n", "stderr: %s", slurp(err_path));
	assert_healthy();
}

Test(escape, cpu_spin_past_its_limit)
{
	struct timespec t0;
	cfg.limits.cpu_seconds = 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	wrk_run_result_t res = sh("while :; do :; done", 20000);
	cr_assert_eq(res.limit, WRK_LIMIT_CPU, "limit %d exit %d", res.limit, res.exit_code);
	/* well before the 20 s wall timeout, even on a loaded 2-core machine */
	cr_assert(since(&t0) < 15, "took %.1f s", since(&t0));
	cr_assert_neq(strstr(slurp(err_path), "CPU limit"), NULL);
	/* two spinners: each under the per-process limit, the tree over it */
	cfg.limits.cpu_seconds = 2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	res = sh("(while :; do :; done) & (while :; do :; done) & wait", 20000);
	cr_assert_eq(res.limit, WRK_LIMIT_CPU, "limit %d exit %d", res.limit, res.exit_code);
	/* well before the 20 s wall timeout, even on a loaded 2-core machine */
	cr_assert(since(&t0) < 15, "took %.1f s", since(&t0));
	assert_healthy();
}

Test(escape, daemonized_sleep_past_timeout_leaves_nothing)
{
	char secs[64], script[512];
	unique(secs, sizeof(secs));
	snprintf(script, sizeof(script),
		 "(setsid sh -c 'sleep %s & exit' &) ; (nohup sleep %s >/dev/null 2>&1 &) ; "
		 "(trap '' TERM HUP; sleep %s) & sleep %s",
		 secs, secs, secs, secs);
	wrk_run_result_t res = sh(script, 700);
	cr_assert(res.timed_out);
	cr_assert_eq(processes_with_arg(secs), 0, "a sleep %s survived", secs);
	cr_assert_neq(strstr(slurp(err_path), "wall-time limit"), NULL);
	/* and when the action ends on its own, its daemons go with it */
	unique(secs, sizeof(secs));
	snprintf(script, sizeof(script), "(setsid sleep %s &) ; echo bye", secs);
	res = sh(script, 10000);
	cr_assert_str_eq(slurp(out_path), "bye\n");
	cr_assert_eq(processes_with_arg(secs), 0, "a sleep %s outlived its action", secs);
	assert_healthy();
}

Test(escape, huge_stdout_is_capped)
{
	cfg.limits.output_bytes = 1 << 20;
	wrk_run_result_t res = sh("yes 'all work and no play'", 20000);
	cr_assert_eq(res.limit, WRK_LIMIT_OUTPUT, "limit %d exit %d", res.limit, res.exit_code);
	cr_assert_leq(file_size(out_path), 1 << 20);
	cr_assert_neq(strstr(slurp(err_path), "reap: action killed: output limit: stdout"), NULL);
	res = sh("yes 'to stderr' >&2", 20000);
	cr_assert_eq(res.limit, WRK_LIMIT_OUTPUT);
	cr_assert_leq(file_size(err_path), (1 << 20) + 400);
	assert_healthy();
}

Test(escape, mechanisms_are_reported)
{
	cfg.limits = (wrk_limits_t){.cpu_seconds = 5, .memory_bytes = 1ull << 30, .pids = 100};
	const char *m = wrk_sandbox_mechanisms(&cfg);
	cr_log_info("%s", m);
	cr_assert_neq(strstr(m, "RLIMIT_CPU"), NULL);
	cr_assert_neq(strstr(m, "memory=1 GiB"), NULL);
	cr_assert_neq(strstr(m, "seccomp=on"), NULL);
}
