/*
 * sandbox_spawn.c - starting bwrap for one action: fork, then in the child
 * (async-signal-safe calls only: the worker is multithreaded) reset the
 * signals, take a process group, and, when the worker is root, make a
 * private mount namespace that shows the exec root at WRK_SB_STAGE_DIR (and,
 * unless the action may have loopback networking, an empty network
 * namespace with lo down) and drop to the sandbox uid; then the fixed descriptors, the rlimits, exec.
 * Why the identity dance is needed is explained at the top of sandbox.c.
 * A child that fails before exec reports the stage and errno through a
 * close-on-exec pipe, so the caller can tell "could not start" from an
 * action that ran.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "worker/worker_int.h"

/* What the child reports through its close-on-exec pipe when it cannot exec. */
typedef struct child_err {
	int stage; /* 0 mount, 1 identity, 2 rlimit, 3 exec */
	int err;
} child_err_t;

static _Noreturn void child_fail(int pipe_w, int stage, int err)
{
	child_err_t ce = {stage, err};
	if (write(pipe_w, &ce, sizeof(ce)) < 0) {
		/* nothing more to do: the parent sees EOF and a 127 exit */
	}
	_exit(127);
}

/* In the forked child: async-signal-safe calls only (the worker is multithreaded). */
static _Noreturn void child_main(const wrk_spawn_plan_t *p, int pipe_w)
{
	static char *const empty_env[] = {NULL};
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigset_t none;

	/* The worker blocks SIGINT/SIGTERM and ignores SIGPIPE: none of that may leak in. */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	setpgid(0, 0);
	if (p->drop) {
		/*
		 * The exec root is opened inside the new namespace (a bind source must
		 * be a mount of the caller's namespace) and before the tmpfs covers
		 * /tmp (it may live there); it is bound through its /proc/self/fd link.
		 */
		char src[32] = "/proc/self/fd/", digits[12];
		int rfd, nd = 0;
		/*
		 * A new network namespace made here, by root in the initial user
		 * namespace, starts with lo down, and nothing the unprivileged
		 * sandbox does can bring it up (it holds no capability over a
		 * namespace that user namespace owns); bwrap then keeps it
		 * (--share-net) instead of making its own, where it brings lo up.
		 */
		int flags = CLONE_NEWNS | (p->empty_netns ? CLONE_NEWNET : 0);
		if (unshare(flags) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
		    (rfd = open(p->exec_root, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			child_fail(pipe_w, 0, errno);
		do
			digits[nd++] = (char)('0' + rfd % 10);
		while ((rfd /= 10) > 0);
		for (size_t at = strlen(src); nd > 0; at++)
			src[at] = digits[--nd];
		if (mount("reap-stage", WRK_SB_STAGE_MNT, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=0755,size=16k") != 0 ||
		    mkdir(WRK_SB_STAGE_DIR, 0755) != 0 || mount(src, WRK_SB_STAGE_DIR, NULL, MS_BIND, NULL) != 0)
			child_fail(pipe_w, 0, errno);
		if (setgroups(0, NULL) != 0 || setresgid(p->gid, p->gid, p->gid) != 0 ||
		    setresuid(p->uid, p->uid, p->uid) != 0)
			child_fail(pipe_w, 1, errno);
	}
	if (chdir("/") != 0)
		child_fail(pipe_w, 1, errno);
	for (int fd = 0; fd < WRK_SB_FIRST_FREE_FD; fd++)
		if (dup2(p->fds[fd], fd) < 0) /* dup2 clears close-on-exec */
			child_fail(pipe_w, 3, errno);
	if (close_range(WRK_SB_FIRST_FREE_FD, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
		for (int fd = WRK_SB_FIRST_FREE_FD; fd < 65536; fd++)
			if (fd != pipe_w)
				close(fd);
	for (int i = 0; i < p->rl.n; i++)
		if (setrlimit(p->rl.resource[i], &p->rl.value[i]) != 0)
			child_fail(pipe_w, 2, errno);
	execve(p->path, p->argv, empty_env);
	child_fail(pipe_w, 3, errno);
}

pid_t wrk_sb_spawn(const wrk_spawn_plan_t *p, int *perr, int *stage)
{
	int pp[2];
	child_err_t ce;
	ssize_t n;
	pid_t pid;

	*stage = 3;
	if (pipe2(pp, O_CLOEXEC) != 0) {
		*perr = errno;
		return -1;
	}
	if ((pid = fork()) < 0) {
		*perr = errno;
		close(pp[0]);
		close(pp[1]);
		return -1;
	}
	if (pid == 0)
		child_main(p, pp[1]);
	close(pp[1]);
	while ((n = read(pp[0], &ce, sizeof(ce))) < 0 && errno == EINTR)
		;
	close(pp[0]);
	if (n == (ssize_t)sizeof(ce)) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		*perr = ce.err;
		*stage = ce.stage;
		return -1;
	}
	return pid;
}

int wrk_sb_resolve(const char *name, char *out, size_t cap)
{
	const char *path = getenv("PATH");
	if (strchr(name, '/') != NULL) {
		snprintf(out, cap, "%s", name);
		return access(out, X_OK) == 0 ? 0 : errno;
	}
	if (path == NULL)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path; *p != '\0';) {
		size_t n = strcspn(p, ":");
		snprintf(out, cap, "%.*s/%s", (int)n, p, name);
		if (n > 0 && access(out, X_OK) == 0)
			return 0;
		p += n + (p[n] == ':');
	}
	return ENOENT;
}
