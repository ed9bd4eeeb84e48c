/*
 * sandbox_spawn.c - starting bwrap for one action: a vfork-style child
 * (clone with CLONE_VM | CLONE_VFORK: it borrows the worker's memory until
 * it execs, so nothing is copied) resets the signals, takes a process
 * group, and, when the worker is root, makes a private mount namespace that
 * shows the exec root at WRK_SB_STAGE_DIR (and, unless the action may have
 * loopback networking, an empty network namespace with lo down) and drops
 * to the sandbox uid; then the fixed descriptors, the rlimits, exec.
 * Why the identity dance is needed is explained at the top of sandbox.c.
 *
 * Why not fork: the worker is a multithreaded process, and on a VM copying
 * its page tables (and the copy-on-write faults after) cost more than the
 * rest of the spawn: 10-13 ms against 5 ms for fork+exec vs vfork+exec of
 * /bin/true from a 6-thread process on the 2-core test VM.
 *
 * Rules for the child, which runs on the worker's memory with the spawning
 * thread suspended: raw system calls only. No malloc, no stdio, and no
 * glibc set*id wrappers: they would broadcast the change to every thread
 * glibc knows, i.e. the worker's. All signals are blocked across the clone
 * so no handler of the worker runs on the child; the child sets every
 * handler to the default before it unblocks them. A child that fails before
 * exec leaves the stage and errno in the shared report and exits 127; the
 * parent, resumed only once the child has exec'd or exited, reads it.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "worker/worker_int.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define CHILD_STACK (256 << 10) /* generous: sanitizer builds intercept the calls */

/* What the child reports (in the memory it shares with the parent) when it cannot exec. */
typedef struct child_err {
	volatile int failed;
	volatile int stage; /* 0 mount, 1 identity, 2 rlimit, 3 exec */
	volatile int err;
} child_err_t;

typedef struct child_arg {
	const wrk_spawn_plan_t *p;
	child_err_t *ce;
} child_arg_t;

static _Noreturn void child_fail(child_err_t *ce, int stage, int err)
{
	ce->stage = stage;
	ce->err = err;
	ce->failed = 1;
	_exit(127); /* the child is a process of its own (no CLONE_THREAD) */
}

/* The child: raw system calls only (see the top of the file). */
static int child_main(void *arg)
{
	const child_arg_t *ca = arg;
	const wrk_spawn_plan_t *p = ca->p;
	child_err_t *ce = ca->ce;
	static char *const empty_env[] = {NULL};
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigset_t none;

	/* Signals stay blocked until every handler inherited from the worker is gone. */
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
			child_fail(ce, 0, errno);
		do
			digits[nd++] = (char)('0' + rfd % 10);
		while ((rfd /= 10) > 0);
		for (size_t at = strlen(src); nd > 0; at++)
			src[at] = digits[--nd];
		if (mount("reap-stage", WRK_SB_STAGE_MNT, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=0755,size=16k") != 0 ||
		    mkdir(WRK_SB_STAGE_DIR, 0755) != 0 || mount(src, WRK_SB_STAGE_DIR, NULL, MS_BIND, NULL) != 0)
			child_fail(ce, 0, errno);
		/* raw: glibc's wrappers would change the worker's threads too */
		if (syscall(SYS_setgroups, 0, NULL) != 0 ||
		    syscall(SYS_setresgid, p->gid, p->gid, p->gid) != 0 ||
		    syscall(SYS_setresuid, p->uid, p->uid, p->uid) != 0)
			child_fail(ce, 1, errno);
	}
	if (chdir("/") != 0)
		child_fail(ce, 1, errno);
	for (int fd = 0; fd < p->nfds; fd++)
		if (dup2(p->fds[fd], fd) < 0) /* dup2 clears close-on-exec */
			child_fail(ce, 3, errno);
	/*
	 * The child has its own descriptor table (no CLONE_FILES): mark the rest
	 * close-on-exec, or close them one by one where close_range is missing.
	 */
	if (close_range((unsigned)p->nfds, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
		for (int fd = p->nfds; fd < 65536; fd++)
			close(fd);
	for (int i = 0; i < p->rl.n; i++)
		if (setrlimit(p->rl.resource[i], &p->rl.value[i]) != 0)
			child_fail(ce, 2, errno);
	execve(p->path, p->argv, empty_env);
	child_fail(ce, 3, errno);
}

pid_t wrk_sb_spawn(const wrk_spawn_plan_t *p, int *perr, int *stage)
{
	child_err_t ce = {0};
	sigset_t all, old;
	child_arg_t ca = {.p = p, .ce = &ce};
	pid_t pid;
	int saved;

	*stage = 3;
	void *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED) {
		*perr = errno;
		return -1;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	/* returns once the child has exec'd or exited (CLONE_VFORK) */
	pid = clone(child_main, (char *)stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &ca);
	saved = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* the child left without unwinding: clear its frames' marks (ASan) before reuse */
	UNPOISON(stack, CHILD_STACK);
	munmap(stack, CHILD_STACK);
	if (pid < 0) {
		*perr = saved;
		return -1;
	}
	if (ce.failed) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		*perr = ce.err;
		*stage = ce.stage;
		return -1;
	}
	return pid;
}

int wrk_sb_memfd(const char *name, const void *data, size_t len, reap_errbuf_t *eb)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "memfd_create: %s", strerror(errno));
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fd, (const char *)data + off, len - off);
		if (w <= 0) {
			int e = w < 0 ? errno : EIO;
			close(fd);
			return reap_errf(eb, REAP_E_IO, "writing %s: %s", name, strerror(e));
		}
		off += (size_t)w;
	}
	if (lseek(fd, 0, SEEK_SET) != 0) {
		int e = errno;
		close(fd);
		return reap_errf(eb, REAP_E_IO, "rewinding %s: %s", name, strerror(e));
	}
	return fd;
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
