/*
 * sandbox_wait.c - a started sandbox until it ends (sandbox.c starts it):
 * learning the namespace's pid 1 from bwrap's --info-fd, waiting for the
 * outer bwrap with its deadline, *cancel and the limits watchdog, killing
 * the whole tree, and making sure the pid namespace is empty before the
 * caller goes on. Why pid 1 is the one to kill: the top of sandbox.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

#define TICK_MS 20         /* how often *cancel is looked at */
#define KILL_GRACE_MS 5000 /* outer bwrap must exit this soon after pid 1 died */

int wrk_sb_pidfd(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* The parent pid of pid from /proc, or -1. */
static pid_t parent_of(pid_t pid)
{
	char path[64], buf[512];
	ssize_t n;
	int fd;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* comm may hold anything but not after the last ')' */
	int ppid;
	if (p == NULL || sscanf(p + 1, " %*c %d", &ppid) != 1)
		return -1;
	return ppid;
}

/* Read what bwrap wrote to --info-fd; once "child-pid" is there, take a pidfd on it. */
void wrk_sb_read_info(wrk_running_t *r)
{
	ssize_t n = read(r->info, r->info_buf + r->info_len, sizeof(r->info_buf) - 1 - r->info_len);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		r->info_len += (size_t)n;
		r->info_buf[r->info_len] = '\0';
		if (strchr(r->info_buf, '}') == NULL && r->info_len < sizeof(r->info_buf) - 1)
			return;
	}
	close(r->info);
	r->info = -1;
	const char *p = strstr(r->info_buf, "\"child-pid\":");
	long child = p != NULL ? strtol(p + strlen("\"child-pid\":"), NULL, 10) : 0;
	if (child <= 1)
		return;
	/* The pidfd pins the process; checking its parent after opening it rules out a reused pid. */
	int fd = wrk_sb_pidfd((pid_t)child);
	if (fd >= 0 && parent_of((pid_t)child) == r->pid) {
		r->inner = fd;
		r->inner_pid = (pid_t)child;
		r->watch.init = (pid_t)child;
	} else if (fd >= 0)
		close(fd);
}

/* Reap the outer bwrap if it has exited: true then, with *status set. */
bool wrk_sb_reaped(wrk_running_t *r, int *status)
{
	return wait4(r->pid, status, WNOHANG, &r->ru) == r->pid;
}

/* Kill the action's whole tree and reap the outer bwrap. */
void wrk_sb_kill_tree(wrk_running_t *r, int *status)
{
	if (r->inner >= 0 && syscall(SYS_pidfd_send_signal, r->inner, SIGKILL, NULL, 0) == 0) {
		/* pid 1 gone => namespace emptied => outer bwrap exits on its own */
		int64_t until = wrk_mono_ms() + KILL_GRACE_MS;
		while (wrk_mono_ms() < until) {
			if (wrk_sb_reaped(r, status))
				return;
			if (r->pidfd >= 0) {
				struct pollfd p = {.fd = r->pidfd, .events = POLLIN};
				poll(&p, 1, TICK_MS);
			} else {
				usleep(TICK_MS * 1000);
			}
		}
		REAP_WARN("sandbox did not exit after its pid 1 was killed", "pid=%d", (int)r->pid);
	}
	kill(-r->pid, SIGKILL);
	kill(r->pid, SIGKILL);
	while (wait4(r->pid, status, 0, &r->ru) < 0 && errno == EINTR)
		;
}

/*
 * bwrap may exit while the namespace's pid 1 is still tearing the
 * namespace down (the kernel kills and reaps every process in it before
 * pid 1 finishes exiting). Wait for pid 1 itself: once its pidfd reports
 * the exit, no process of the action is left. Bounded; SIGKILL if slow.
 */
void wrk_sb_wait_namespace_empty(wrk_running_t *r)
{
	if (r->info >= 0)
		wrk_sb_read_info(r);
	if (r->inner < 0)
		return;
	for (int i = 0; i < 2; i++) {
		struct pollfd p = {.fd = r->inner, .events = POLLIN};
		if (poll(&p, 1, 2000) > 0)
			return;
		syscall(SYS_pidfd_send_signal, r->inner, SIGKILL, NULL, 0);
	}
	REAP_WARN("sandbox namespace slow to empty", "%s", "");
}

/* Wait for the sandbox to end, the deadline (0 = none) or *cancel. Always reaps. */
void wrk_sb_wait_run(wrk_running_t *r, int64_t deadline, volatile const bool *cancel,
		     wrk_run_result_t *out, int *status)
{
	for (;;) {
		struct pollfd p[2];
		nfds_t n = 0;
		int64_t left = deadline > 0 ? deadline - wrk_mono_ms() : TICK_MS;
		int wait_ms = left < 0 ? 0 : left < TICK_MS ? (int)left : TICK_MS;

		if (r->info >= 0)
			p[n++] = (struct pollfd){.fd = r->info, .events = POLLIN};
		if (r->pidfd >= 0)
			p[n++] = (struct pollfd){.fd = r->pidfd, .events = POLLIN};
		if (n > 0)
			poll(p, n, wait_ms);
		else
			usleep((useconds_t)wait_ms * 1000);
		if (r->info >= 0 && p[0].revents != 0)
			wrk_sb_read_info(r);
		if (wrk_sb_reaped(r, status))
			return;
		if (cancel != NULL && __atomic_load_n(cancel, __ATOMIC_ACQUIRE)) {
			out->cancelled = true;
			wrk_sb_kill_tree(r, status);
			return;
		}
		if (deadline > 0 && wrk_mono_ms() >= deadline) {
			out->timed_out = true;
			wrk_sb_kill_tree(r, status);
			return;
		}
		out->limit = wrk_watch_check(&r->watch, wrk_mono_ms(), out->limit_msg,
					     sizeof(out->limit_msg));
		if (out->limit != WRK_LIMIT_NONE) {
			wrk_sb_kill_tree(r, status);
			return;
		}
	}
}
