/*
 * server.c - the reapd that `--spawn` starts, and the watchdog that keeps
 * every run bounded in time.
 *
 * The spawned server listens on 127.0.0.1 port 0 (loopback only) with a
 * fresh folder from mkdtemp, and dies with us (PR_SET_PDEATHSIG) if we
 * crash. It is stopped with SIGTERM, then SIGKILL if it has not exited
 * within STOP_WAIT_S, and its folder is removed. The watchdog thread owns
 * SIGINT/SIGTERM and the run's time limit: either one stops the server,
 * removes the folder and exits, so nothing is left behind.
 *
 * With --spawn-worker, one reap-worker is started against that reapd too
 * (token from reapd's data folder, work and cache folders inside it, slots
 * = nproc); it is stopped before reapd, the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

#define READY_WAIT_S 30 /* reapd opens its store before it prints the port */
#define STOP_WAIT_S 30  /* reapd drains calls for up to 10 s by default */
#define BENCH_WORKER_NAME "reap-bench-worker"

static pthread_mutex_t srv_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t srv_pid;
static int srv_out = -1; /* read end of its stdout */
static char srv_dir[PATH_MAX];
static char srv_target[64];
static pid_t wrk_pid;
static int wrk_out = -1;

/* SIGTERM pid, wait up to STOP_WAIT_S, then SIGKILL. Caller holds srv_mu. */
static void stop_child(pid_t pid, const char *what)
{
	int status = 0;
	pid_t got = 0;

	kill(pid, SIGTERM);
	for (int i = 0; i < STOP_WAIT_S * 20; i++) {
		got = waitpid(pid, &status, WNOHANG);
		if (got != 0)
			break;
		usleep(50000);
	}
	if (got == 0) {
		fprintf(stderr, "reap-bench: %s did not stop in %d s; SIGKILL\n", what, STOP_WAIT_S);
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	} else if (got > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		fprintf(stderr, "reap-bench: %s exited with status 0x%x\n", what, status);
	}
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path) == 0 || errno == ENOENT ? 0 : -1;
	return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Caller holds srv_mu. */
static void stop_locked(void)
{
	if (wrk_pid > 0) {
		stop_child(wrk_pid, "reap-worker");
		wrk_pid = 0;
	}
	if (wrk_out >= 0) {
		close(wrk_out);
		wrk_out = -1;
	}
	if (srv_pid > 0) {
		stop_child(srv_pid, "reapd");
		srv_pid = 0;
	}
	if (srv_out >= 0) {
		close(srv_out);
		srv_out = -1;
	}
	if (srv_dir[0] != '\0') {
		if (nftw(srv_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
			fprintf(stderr, "reap-bench: could not remove %s: %s\n", srv_dir,
				strerror(errno));
		srv_dir[0] = '\0';
	}
}

void bench_server_stop(void)
{
	pthread_mutex_lock(&srv_mu);
	stop_locked();
	pthread_mutex_unlock(&srv_mu);
}

/* Read a child's stdout until the readiness line; the port (or 1 with no "%d"), or -1. */
static int wait_line(int fd, const char *prefix)
{
	char buf[512];
	size_t len = 0;
	double deadline = bench_now() + READY_WAIT_S;

	while (bench_now() < deadline) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int left_ms = (int)((deadline - bench_now()) * 1000) + 1;
		if (poll(&p, 1, left_ms) <= 0)
			continue;
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			return -1; /* it exited */
		len += (size_t)n;
		buf[len] = '\0';
		const char *line = strstr(buf, prefix);
		int port = 1;
		if (line != NULL && strchr(line, '\n') != NULL &&
		    (line[strlen(prefix)] == '\n' ||
		     sscanf(line + strlen(prefix), "%d", &port) == 1))
			return port;
		if (len == sizeof(buf) - 1)
			len = 0; /* not ours; keep looking */
	}
	return -1;
}

int bench_server_spawn(bench_ctx_t *c, const char *path)
{
	const char *tmp = getenv("TMPDIR");
	int fds[2] = {-1, -1};
	int port, rc = -1;
	pid_t pid;

	pthread_mutex_lock(&srv_mu);
	snprintf(srv_dir, sizeof(srv_dir), "%s/reap-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(srv_dir) == NULL) {
		fprintf(stderr, "reap-bench: mkdtemp %s: %s\n", srv_dir, strerror(errno));
		srv_dir[0] = '\0';
		goto out;
	}
	if (pipe2(fds, O_CLOEXEC) != 0)
		goto out;
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		const char *argv[20];
		int n = 0;
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		argv[n++] = path;
		argv[n++] = "--listen";
		argv[n++] = "127.0.0.1:0";
		argv[n++] = "--data";
		argv[n++] = srv_dir;
		argv[n++] = "--anonymous-role"; /* the bench writes the AC directly */
		argv[n++] = "writer";
		argv[n++] = "--metrics";
		argv[n++] = "off";
		argv[n++] = "--local-worker"; /* the name DATA/worker.token is bound to */
		argv[n++] = BENCH_WORKER_NAME;
		argv[n++] = "--log-level";
		argv[n++] = "warn";
		if (c->o.no_sync)
			argv[n++] = "--no-sync";
		argv[n] = NULL;
		execv(path, (char *const *)argv);
		fprintf(stderr, "reap-bench: exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	srv_pid = pid;
	close(fds[1]);
	fds[1] = -1;
	srv_out = fds[0];
	fds[0] = -1;
	port = wait_line(srv_out, "reapd listening on port ");
	if (port <= 0) {
		fprintf(stderr, "reap-bench: %s did not report its port within %d s\n", path,
			READY_WAIT_S);
		goto out;
	}
	snprintf(srv_target, sizeof(srv_target), "127.0.0.1:%d", port);
	c->o.target = srv_target;
	c->o.server_pid = pid;
	printf("spawned %s pid %d on %s, data %s%s\n", path, (int)pid, srv_target, srv_dir,
	       c->o.no_sync ? " (--no-sync)" : " (fsync on)");
	fflush(stdout);
	rc = 0;
out:
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	if (rc != 0)
		stop_locked();
	pthread_mutex_unlock(&srv_mu);
	return rc;
}

int bench_worker_spawn(bench_ctx_t *c, const char *path)
{
	char work[PATH_MAX + 16], cache[PATH_MAX + 16], token[PATH_MAX + 16], slots[16];
	int fds[2] = {-1, -1};
	int rc = -1;
	pid_t pid;

	pthread_mutex_lock(&srv_mu);
	if (srv_pid <= 0 || srv_dir[0] == '\0') {
		fprintf(stderr, "reap-bench: --spawn-worker needs --spawn\n");
		goto out;
	}
	snprintf(work, sizeof(work), "%s/w-work", srv_dir);
	snprintf(cache, sizeof(cache), "%s/w-cache", srv_dir);
	snprintf(token, sizeof(token), "%s/worker.token", srv_dir);
	snprintf(slots, sizeof(slots), "%d", c->o.worker_slots);
	if ((mkdir(work, 0700) != 0 && errno != EEXIST) ||
	    (mkdir(cache, 0700) != 0 && errno != EEXIST) || access(token, R_OK) != 0) {
		fprintf(stderr, "reap-bench: worker folders / %s: %s\n", token, strerror(errno));
		goto out;
	}
	if (pipe2(fds, O_CLOEXEC) != 0)
		goto out;
	pid = fork();
	if (pid < 0)
		goto out;
	if (pid == 0) {
		const char *argv[] = {path, "--scheduler", srv_target, "--cas", srv_target,
				      "--name", BENCH_WORKER_NAME, "--slots", slots,
				      "--work", work, "--cache", cache, "--cache-size", "1GiB",
				      "--token-file", token, "--log-level", "warn", NULL};
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		execv(path, (char *const *)argv);
		fprintf(stderr, "reap-bench: exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	wrk_pid = pid;
	close(fds[1]);
	fds[1] = -1;
	wrk_out = fds[0];
	fds[0] = -1;
	if (wait_line(wrk_out, "reap-worker ready") <= 0) {
		fprintf(stderr, "reap-bench: %s was not ready within %d s\n", path, READY_WAIT_S);
		stop_child(wrk_pid, "reap-worker");
		wrk_pid = 0;
		close(wrk_out);
		wrk_out = -1;
		goto out;
	}
	c->o.worker_pid = pid;
	printf("spawned %s pid %d, %s slots, against %s\n", path, (int)pid, slots, srv_target);
	fflush(stdout);
	rc = 0;
out:
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	pthread_mutex_unlock(&srv_mu);
	return rc;
}

/* ---- watchdog ---- */

static sigset_t wd_sigs;
static int wd_limit_s;

static void *watchdog(void *arg)
{
	struct timespec left;
	double deadline = bench_now() + wd_limit_s;
	siginfo_t si;
	int sig;

	(void)arg;
	for (;;) {
		double rem = deadline - bench_now();
		if (rem <= 0) {
			fprintf(stderr, "reap-bench: time limit of %d s reached; stopping\n",
				wd_limit_s);
			bench_server_stop();
			_exit(124);
		}
		left.tv_sec = (time_t)rem;
		left.tv_nsec = (long)((rem - (double)left.tv_sec) * 1e9);
		sig = sigtimedwait(&wd_sigs, &si, &left);
		if (sig > 0) {
			fprintf(stderr, "reap-bench: signal %d; stopping\n", sig);
			bench_server_stop();
			_exit(128 + sig);
		}
	}
	return NULL;
}

int bench_watchdog_start(int time_limit_s)
{
	pthread_t t;

	wd_limit_s = time_limit_s;
	sigemptyset(&wd_sigs);
	sigaddset(&wd_sigs, SIGINT);
	sigaddset(&wd_sigs, SIGTERM);
	sigaddset(&wd_sigs, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &wd_sigs, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	if (pthread_create(&t, NULL, watchdog, NULL) != 0)
		return -1;
	pthread_detach(t);
	return 0;
}
