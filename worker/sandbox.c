/*
 * sandbox.c - run one action's command under bubblewrap.
 *
 * The command sees a root that bwrap builds from nothing: the configured
 * toolchain paths read-only (host symlinks such as merged-/usr's /bin ->
 * usr/bin are reproduced as symlinks), a fresh /proc, /dev and /tmp, and the
 * exec root read-write at /build; the root itself (a tmpfs bwrap builds
 * the view on) is remounted read-only. Every namespace is new (user, pid, net,
 * ipc, uts, cgroup). Network: a root worker makes the network namespace
 * itself, before it drops to the sandbox uid, and leaves its lo down, so the
 * action has no network at all; only an action allowed loopback networking
 * (cfg->loopback_network) gets bwrap's own namespace, in which bwrap brings
 * lo up. A non-root worker always gets bwrap's (it could not take lo down
 * without a user namespace of its own around bwrap). All
 * capabilities are dropped (bwrap keeps them by default when the worker runs
 * as root); the environment is exactly the Command's.
 *
 * The command comes last: bwrap starts reap's own shim (envshim/envshim.c)
 * at ENV_SHIM, which reads the working folder, the environment and the
 * arguments from a socket (the descriptor right after the copied files),
 * closes it and execs argv[0] with execvp semantics and exactly the
 * Command's environment. So a sandbox can be started before its action is
 * known (wrk_sandbox_arm), with an empty exec root that is filled later
 * (the bind shows what is put there), and the action only pays for
 * wrk_sandbox_fire: handing the folders to the sandbox uid, sending the
 * command, the run and the teardown. wrk_sandbox_run is arm then fire.
 * The shim is a few KiB, static and libc-free, embedded in the worker and
 * copied in by bwrap from a memfd (--ro-bind-data), read-only; it needs no
 * host file and costs about 0.25 ms, where /usr/bin/env, dynamically
 * linked, cost 2.5-3 ms.
 *
 * Process tree: bwrap is started in its own process group with stdin
 * /dev/null and every other inherited descriptor closed. It forks the
 * namespace's pid 1 (bwrap's init), which forks the command; --info-fd tells
 * us pid 1's host pid. To stop an action we SIGKILL pid 1: the kernel then
 * kills everything in the pid namespace (daemonized grandchildren too), and
 * only after that does the outer bwrap see its child die and exit. So once
 * the outer bwrap is reaped, no process of the action is left. Should
 * anything not follow that path (pid 1 not known yet, outer bwrap stuck),
 * the whole process group is killed; --die-with-parent covers the rest.
 *
 * Identity: when the worker is root, the action must not be host root in a
 * user namespace (uid 0 without capabilities still owns every root file a
 * bind shows, and RLIMIT_NPROC does not apply to root). So the spawning
 * child drops to the sandbox uid (cfg->uid, default 65534) before it execs
 * bwrap, which then builds its namespaces unprivileged. That uid cannot
 * traverse the worker's 0700 work folder, so the child first makes a
 * private mount namespace in which the exec root is bind-mounted at
 * STAGE_DIR (on a tiny tmpfs over /tmp), and bwrap binds it from there.
 * The exec root's folders are handed to the sandbox uid before the run;
 * staged input files stay root's, read-only, so the action cannot chmod
 * and rewrite the cache's inodes either. A worker that is not root runs
 * actions as its own uid, mapped into a user namespace.
 *
 * Hardening on top of bwrap's namespaces: --unshare-user explicitly and
 * --disable-userns (no nested user namespaces), --cap-drop ALL,
 * no_new_privs (bwrap always sets it), a seccomp filter (sandbox_seccomp.c),
 * --new-session, --die-with-parent, and the limits of sandbox_limits.c
 * (rlimits set in the child before exec, a watchdog in wait_run).
 *
 * Threading: wrk_sandbox_run is reentrant; many slots run it at once. Note
 * that --die-with-parent ties the sandbox to the *thread* that spawned it
 * (PR_SET_PDEATHSIG), which is the one waiting for it: an armed sandbox is
 * fired (or disarmed) by the thread that armed it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/envshim/envshim.h"
#include "worker/worker_int.h"
#include "wrk_envshim.h" /* generated: the shim, embedded (worker/CMakeLists.txt) */

#define SANDBOX_ROOT "/build"   /* where the exec root appears inside */
#define ENV_SHIM "/.reap/env"   /* where bwrap puts the shim inside */
#define INFO_FD WRK_SB_INFO_FD
#define SECCOMP_FD WRK_SB_SECCOMP_FD
#define SHIM_FD WRK_SB_SHIM_FD
#define FILE_FD WRK_SB_FILE_FD
#define FD_SLOTS WRK_SB_FD_SLOTS
#define COPY_MAX ((off_t)1 << 20) /* ro_paths files up to this size are copied, not bound */
#define STAGE_DIR WRK_SB_STAGE_DIR
#define MAX_WD 4096

/* ---- argument vector ---- */

typedef struct argv_buf {
	char **v;
	size_t n, cap;
	bool oom;
} argv_buf_t;

static void arg_add(argv_buf_t *a, const char *s)
{
	if (a->oom)
		return;
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		char **v = realloc(a->v, cap * sizeof(*v));
		if (v == NULL) {
			a->oom = true;
			return;
		}
		a->v = v;
		a->cap = cap;
	}
	if ((a->v[a->n] = strdup(s)) == NULL) {
		a->oom = true;
		return;
	}
	a->v[++a->n] = NULL;
}

static void arg_add2(argv_buf_t *a, const char *x, const char *y)
{
	arg_add(a, x);
	arg_add(a, y);
}

static void argv_free(argv_buf_t *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

/* ---- validation ---- */

/* A clean relative path: components that are not empty, "." or "..". "" is the root. */
static int check_working_dir(const char *wd, reap_errbuf_t *eb)
{
	size_t len = strlen(wd);
	if (len == 0)
		return REAP_OK;
	if (len >= MAX_WD)
		return reap_errf(eb, REAP_E_INVALID, "working_directory is too long");
	if (wd[0] == '/')
		return reap_errf(eb, REAP_E_INVALID, "working_directory \"%s\" is absolute", wd);
	for (const char *p = wd; *p != '\0';) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return reap_errf(eb, REAP_E_INVALID,
					 "working_directory \"%s\" is not a clean relative path", wd);
		p += n;
		if (*p == '/' && *++p == '\0')
			return reap_errf(eb, REAP_E_INVALID,
					 "working_directory \"%s\" ends with '/'", wd);
	}
	return REAP_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A name set twice would leave which value the action sees to the order of the list. */
static int check_env_unique(const WRK_RE(Command) *cmd, reap_errbuf_t *eb)
{
	size_t n = cmd->n_environment_variables;
	const char **names;
	int err = REAP_OK;

	if (n < 2)
		return REAP_OK;
	if ((names = malloc(n * sizeof(*names))) == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		names[i] = cmd->environment_variables[i]->name;
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 1; i < n && err == REAP_OK; i++)
		if (strcmp(names[i], names[i - 1]) == 0)
			err = reap_errf(eb, REAP_E_INVALID,
					"environment variable \"%s\" is set twice", names[i]);
	free(names);
	return err;
}

static int check_command(const WRK_RE(Command) *cmd, reap_errbuf_t *eb)
{
	if (cmd->n_arguments == 0 || cmd->arguments[0][0] == '\0')
		return reap_errf(eb, REAP_E_INVALID, "the Command has no program to run");
	for (size_t i = 0; i < cmd->n_environment_variables; i++) {
		const char *name = cmd->environment_variables[i]->name;
		if (name[0] == '\0' || strchr(name, '=') != NULL)
			return reap_errf(eb, REAP_E_INVALID, "bad environment variable name \"%s\"",
					 name);
	}
	int err = check_env_unique(cmd, eb);
	return err != REAP_OK ? err : check_working_dir(cmd->working_directory, eb);
}

/* Is p inside (or equal to) the top-level sandbox path top? */
static bool under(const char *p, const char *top)
{
	size_t n = strlen(top);
	return strncmp(p, top, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

/*
 * A ro_path must be absolute and clean, must not be "/" (that would be the
 * whole host) and must not collide with what the sandbox mounts itself.
 */
static int check_ro_path(const char *p, reap_errbuf_t *eb)
{
	reap_errbuf_t ignored;
	if (p == NULL || p[0] != '/' || check_working_dir(p + 1, &ignored) != REAP_OK ||
	    p[1] == '\0')
		return reap_errf(eb, REAP_E_INVALID,
				 "read-only path \"%s\" must be a clean absolute path other than /",
				 p ? p : "(null)");
	if (under(p, SANDBOX_ROOT) || under(p, "/proc") || under(p, "/dev") || under(p, "/tmp"))
		return reap_errf(eb, REAP_E_INVALID,
				 "read-only path \"%s\" collides with the sandbox's own mounts", p);
	return REAP_OK;
}

/* Move fd above the child's descriptor slots (its dup2s never collide), close-on-exec. */
static int high_fd(int fd)
{
	if (fd < 0 || fd >= FD_SLOTS)
		return fd;
	int h = fcntl(fd, F_DUPFD_CLOEXEC, FD_SLOTS);
	close(fd);
	return h;
}

/* The descriptors of the ro_paths files bwrap copies in (--file), slot by slot. */
typedef struct sb_files {
	int fd[WRK_SB_MAX_FILES];
	int n;
} sb_files_t;

/*
 * Try to give the sandbox a copy of the regular file p instead of a bind:
 * bwrap writes it into its root (read-only once / is remounted) from a
 * descriptor, where a read-only bind costs two mount calls, and the default
 * ro_paths hold five such /etc files (0.6-1.2 ms per action measured for
 * them). Only a small file that every user may read qualifies, so the copy
 * never shows the action more than a bind would; it keeps the file's
 * permission bits less the write ones. False: bind it as before.
 */
static bool add_file_copy(argv_buf_t *a, sb_files_t *f, const char *p)
{
	struct stat st;
	char slot[16], perms[16];
	int fd;

	if (f->n >= WRK_SB_MAX_FILES ||
	    (fd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0)
		return false;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > COPY_MAX ||
	    (st.st_mode & S_IROTH) == 0 || (fd = high_fd(fd)) < 0) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	snprintf(slot, sizeof(slot), "%d", FILE_FD + f->n);
	snprintf(perms, sizeof(perms), "0%o", (unsigned)(st.st_mode & 0555));
	f->fd[f->n++] = fd;
	arg_add2(a, "--perms", perms);
	arg_add(a, "--file");
	arg_add2(a, slot, p);
	return true;
}

/*
 * The read-only paths, parents before children (sorted), so a later bind of
 * /usr does not hide an earlier one of /usr/lib. A host symlink becomes the
 * same symlink, a small world-readable file a copy (add_file_copy), anything
 * else a read-only bind; an absent path is skipped.
 */
static int add_ro_paths(argv_buf_t *a, const wrk_sandbox_config_t *cfg, sb_files_t *files,
			reap_errbuf_t *eb)
{
	const char **sorted;
	int err = REAP_OK;

	if (cfg->n_ro_paths == 0)
		return REAP_OK;
	if ((sorted = malloc(cfg->n_ro_paths * sizeof(*sorted))) == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	for (size_t i = 0; i < cfg->n_ro_paths; i++) {
		if ((err = check_ro_path(cfg->ro_paths[i], eb)) != REAP_OK)
			goto out;
		sorted[i] = cfg->ro_paths[i];
	}
	qsort(sorted, cfg->n_ro_paths, sizeof(*sorted), cmp_str);
	for (size_t i = 0; i < cfg->n_ro_paths; i++) {
		struct stat st;
		char target[MAX_WD];
		ssize_t n;
		if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
			continue;
		if (lstat(sorted[i], &st) != 0)
			continue;
		if (S_ISLNK(st.st_mode)) {
			if ((n = readlink(sorted[i], target, sizeof(target) - 1)) <= 0)
				continue;
			target[n] = '\0';
			arg_add(a, "--symlink");
			arg_add2(a, target, sorted[i]);
		} else if (!S_ISREG(st.st_mode) || !add_file_copy(a, files, sorted[i])) {
			arg_add(a, "--ro-bind-try");
			arg_add2(a, sorted[i], sorted[i]);
		}
	}
out:
	free(sorted);
	return err;
}

/* /tmp: a tmpfs of tmp_bytes when set (bwrap --size applies to the next --tmpfs). */
static void add_tmp(argv_buf_t *a, const wrk_limits_t *l)
{
	if (l->tmp_bytes > 0) {
		char n[32];
		snprintf(n, sizeof(n), "%llu", (unsigned long long)l->tmp_bytes);
		arg_add2(a, "--size", n);
	}
	arg_add2(a, "--tmpfs", "/tmp");
}

static int build_argv(argv_buf_t *a, const wrk_sandbox_config_t *cfg, const char *bwrap,
		      const char *bind_src, bool empty_netns, sb_files_t *files, reap_errbuf_t *eb)
{
	char buf[64];
	int err;

	arg_add(a, bwrap);
	arg_add(a, "--unshare-all"); /* user(-try), pid, net, ipc, uts, cgroup(-try) */
	if (empty_netns)
		arg_add(a, "--share-net"); /* keep the spawning child's empty one (lo down) */
	arg_add(a, "--unshare-user"); /* required, not -try: --disable-userns needs it */
	arg_add(a, "--disable-userns");
	arg_add(a, "--die-with-parent");
	arg_add(a, "--new-session");
	arg_add2(a, "--cap-drop", "ALL");
	arg_add2(a, "--hostname", "localhost");
	arg_add(a, "--clearenv"); /* the shim gets none; it execs with the Command's */
	if ((err = add_ro_paths(a, cfg, files, eb)) != REAP_OK)
		return err;
	arg_add2(a, "--proc", "/proc");
	arg_add2(a, "--dev", "/dev");
	add_tmp(a, &cfg->limits);
	arg_add2(a, "--perms", "0555");
	snprintf(buf, sizeof(buf), "%d", SHIM_FD);
	arg_add(a, "--ro-bind-data");
	arg_add2(a, buf, ENV_SHIM);
	arg_add(a, "--bind");
	arg_add2(a, bind_src, SANDBOX_ROOT);
	arg_add2(a, "--remount-ro", "/"); /* the tmpfs bwrap builds the root on */
	arg_add2(a, "--chdir", SANDBOX_ROOT);
	snprintf(buf, sizeof(buf), "%d", INFO_FD);
	arg_add2(a, "--info-fd", buf);
	snprintf(buf, sizeof(buf), "%d", SECCOMP_FD);
	arg_add2(a, "--seccomp", buf);
	arg_add(a, "--");
	arg_add(a, ENV_SHIM);
	snprintf(buf, sizeof(buf), "%d", FILE_FD + files->n); /* the command socket */
	arg_add(a, buf);
	return a->oom ? reap_errf(eb, REAP_E_NOMEM, "out of memory") : REAP_OK;
}

/*
 * What the shim reads (envshim/envshim.c): the working folder as the
 * sandbox sees it, NAME=VALUE per variable in the Command's order, an empty
 * string, the arguments; every string NUL-terminated. REAP_E_INVALID when
 * it is larger than the shim takes (the kernel's exec would refuse it too).
 */
static int build_spec(const WRK_RE(Command) *cmd, char **out, size_t *len, reap_errbuf_t *eb)
{
	size_t n = strlen(SANDBOX_ROOT) + 1 + strlen(cmd->working_directory) + 1 + 1, at = 0;
	size_t strings = 2 + cmd->n_environment_variables + cmd->n_arguments;
	char *b;

	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		n += strlen(cmd->environment_variables[i]->name) +
		     strlen(cmd->environment_variables[i]->value) + 2;
	for (size_t i = 0; i < cmd->n_arguments; i++)
		n += strlen(cmd->arguments[i]) + 1;
	if (n > ENVSHIM_SPEC_MAX || strings > ENVSHIM_STRINGS_MAX)
		return reap_errf(eb, REAP_E_INVALID,
				 "the Command's arguments and environment are too large (%zu bytes "
				 "in %zu strings; at most %u and %u)", n, strings,
				 ENVSHIM_SPEC_MAX, ENVSHIM_STRINGS_MAX);
	if ((b = malloc(n)) == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	at += (size_t)sprintf(b, "%s%s%s", SANDBOX_ROOT, cmd->working_directory[0] ? "/" : "",
			      cmd->working_directory) + 1;
	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		at += (size_t)sprintf(b + at, "%s=%s", cmd->environment_variables[i]->name,
				      cmd->environment_variables[i]->value) + 1;
	b[at++] = '\0';
	for (size_t i = 0; i < cmd->n_arguments; i++)
		at += (size_t)sprintf(b + at, "%s", cmd->arguments[i]) + 1;
	*out = b;
	*len = at;
	return REAP_OK;
}

/* ---- the exec root ---- */

/*
 * Create exec_root/wd if missing, one component at a time without following
 * symlinks. Best effort: where it stops (a symlink, a file), bwrap's chdir
 * inside the sandbox reports it, where symlinks cannot lead out of the view.
 */
static void ensure_working_dir(const char *exec_root, const char *wd)
{
	char comp[MAX_WD];
	int fd = open(exec_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (const char *p = wd; fd >= 0 && *p != '\0';) {
		size_t n = strcspn(p, "/");
		memcpy(comp, p, n);
		comp[n] = '\0';
		p += n + (p[n] == '/');
		if (mkdirat(fd, comp, 0755) != 0 && errno != EEXIST)
			break;
		int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	if (fd >= 0)
		close(fd);
}

static int64_t real_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Tasks of this process (its threads count against the uid's RLIMIT_NPROC). */
static uint64_t own_threads(void)
{
	char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return 64;
	buf[n] = '\0';
	const char *p = strstr(buf, "\nThreads:");
	return p != NULL ? strtoull(p + 9, NULL, 10) : 64;
}

static const char *const stage_what[] = {
	"cannot mount the exec root privately", "cannot switch to the sandbox uid",
	"cannot set the resource limits", "cannot start",
};

/* A started sandbox whose shim waits for its command (see the top of the file). */
struct wrk_armed {
	wrk_sandbox_config_t cfg; /* as armed (ro_paths and bwrap borrowed from the caller) */
	char *exec_root;
	wrk_running_t r;
	int ctl;      /* our end of the command socket, -1 once sent */
	int fo, fe;   /* the stdio files (the watchdog reads their sizes) */
	bool drop;    /* root: the sandbox uid owns the exec root's folders */
	uid_t uid;
	gid_t gid;
	bool gone;    /* bwrap exited before its command was sent (reaped) */
};

static void armed_free(wrk_armed_t *s)
{
	int fds[] = {s->r.info, s->r.pidfd, s->r.inner, s->ctl, s->fo, s->fe};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(s->exec_root);
	free(s);
}

int wrk_sandbox_arm(const wrk_sandbox_config_t *cfg, const char *exec_root,
		    const char *stdout_path, const char *stderr_path, wrk_armed_t **out,
		    reap_errbuf_t *eb)
{
	static int logged;
	argv_buf_t a = {0};
	wrk_spawn_plan_t plan = {0};
	sb_files_t files = {.n = 0};
	int in = -1, sfd = -1, shfd = -1, info[2] = {-1, -1}, ctl[2] = {-1, -1};
	int perr, stage, err;
	const int oflags = O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC;
	char bwrap[MAX_WD];
	struct stat st;
	wrk_armed_t *s;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	s->r = (wrk_running_t){.pid = -1, .pidfd = -1, .info = -1, .inner = -1};
	s->ctl = s->fo = s->fe = -1;
	s->cfg = *cfg;
	if ((s->exec_root = strdup(exec_root)) == NULL) {
		err = reap_errf(eb, REAP_E_NOMEM, "out of memory");
		goto out;
	}
	if (stat(exec_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
		err = reap_errf(eb, REAP_E_INVALID, "exec root %s is not a directory", exec_root);
		goto out;
	}
	if ((perr = wrk_sb_resolve(cfg->bwrap != NULL ? cfg->bwrap : "bwrap", bwrap,
				  sizeof(bwrap))) != 0) {
		err = reap_errf(eb, REAP_E_IO, "cannot start %s: %s",
				cfg->bwrap != NULL ? cfg->bwrap : "bwrap", strerror(perr));
		goto out;
	}
	plan.drop = s->drop = geteuid() == 0;
	plan.uid = s->uid = cfg->uid != 0 ? cfg->uid : WRK_SANDBOX_DEFAULT_ID;
	plan.gid = s->gid = cfg->gid != 0 ? cfg->gid : WRK_SANDBOX_DEFAULT_ID;
	plan.empty_netns = plan.drop && !cfg->loopback_network;
	if ((err = build_argv(&a, cfg, bwrap, plan.drop ? STAGE_DIR : exec_root, plan.empty_netns,
			      &files, eb)) != REAP_OK)
		goto out;
	if (!__atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
		REAP_INFO("sandbox limits", "%s", wrk_sandbox_mechanisms(cfg));

	in = high_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
	s->fo = high_fd(open(stdout_path, oflags, 0600));
	s->fe = high_fd(open(stderr_path, oflags, 0600));
	if (in < 0 || s->fo < 0 || s->fe < 0) {
		err = reap_errf(eb, REAP_E_IO, "cannot open the action's stdio files: %s",
				strerror(errno));
		goto out;
	}
	if ((sfd = wrk_seccomp_fd(eb)) < 0) {
		err = sfd;
		sfd = -1;
		goto out;
	}
	sfd = high_fd(sfd);
	if ((shfd = wrk_sb_memfd("reap-envshim", wrk_envshim, wrk_envshim_len, eb)) < 0) {
		err = shfd;
		shfd = -1;
		goto out;
	}
	shfd = high_fd(shfd);
	plan.exec_root = exec_root;
	if (pipe2(info, O_CLOEXEC) != 0 || (info[0] = high_fd(info[0])) < 0 ||
	    (info[1] = high_fd(info[1])) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0 ||
	    (ctl[0] = high_fd(ctl[0])) < 0 || (ctl[1] = high_fd(ctl[1])) < 0) {
		err = reap_errf(eb, REAP_E_IO, "pipe: %s", strerror(errno));
		goto out;
	}
	fcntl(info[0], F_SETFL, O_NONBLOCK);
	if (reap_log_enabled(REAP_LOG_DEBUG)) {
		size_t len = 0;
		char line[2048] = "";
		for (size_t i = 0; i < a.n && len < sizeof(line) - 1; i++)
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", i ? " " : "",
						a.v[i]);
		REAP_DEBUG("sandbox", "argv=\"%s\"", line);
	}
	plan.path = bwrap;
	plan.argv = a.v;
	plan.fds[0] = in;
	plan.fds[1] = s->fo;
	plan.fds[2] = s->fe;
	plan.fds[INFO_FD] = info[1];
	plan.fds[SECCOMP_FD] = sfd;
	plan.fds[SHIM_FD] = shfd;
	for (int i = 0; i < files.n; i++)
		plan.fds[FILE_FD + i] = files.fd[i];
	plan.fds[FILE_FD + files.n] = ctl[1];
	plan.nfds = FILE_FD + files.n + 1;
	/* as root the uid is the sandbox's own; otherwise this worker's threads share it */
	wrk_rlimits_for(&cfg->limits, plan.drop ? 0 : own_threads(), &plan.rl);
	if ((s->r.pid = wrk_sb_spawn(&plan, &perr, &stage)) < 0) {
		err = reap_errf(eb, perr == E2BIG ? REAP_E_INVALID : REAP_E_IO, "%s %s: %s",
				stage_what[stage], stage == 3 ? bwrap : "", strerror(perr));
		goto out;
	}
	s->r.info = info[0];
	info[0] = -1;
	s->ctl = ctl[0];
	ctl[0] = -1;
	s->r.pidfd = wrk_sb_pidfd(s->r.pid);
	*out = s;
	s = NULL;
	err = REAP_OK;
out:
	if (s != NULL)
		armed_free(s);
	int fds[] = {info[0], info[1], ctl[0], ctl[1], in, sfd, shfd};
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	for (int i = 0; i < files.n; i++)
		close(files.fd[i]);
	argv_free(&a);
	return err;
}

static bool same_str(const char *x, const char *y)
{
	return x == y || (x != NULL && y != NULL && strcmp(x, y) == 0);
}

bool wrk_sandbox_fits(const wrk_armed_t *s, const wrk_sandbox_config_t *cfg)
{
	const wrk_sandbox_config_t *c = &s->cfg;
	const wrk_limits_t *x = &c->limits, *y = &cfg->limits;

	if (!same_str(c->bwrap, cfg->bwrap) || c->n_ro_paths != cfg->n_ro_paths ||
	    c->uid != cfg->uid || c->gid != cfg->gid ||
	    c->loopback_network != cfg->loopback_network || x->memory_bytes != y->memory_bytes ||
	    x->cpu_seconds != y->cpu_seconds || x->disk_bytes != y->disk_bytes ||
	    x->tmp_bytes != y->tmp_bytes || x->pids != y->pids ||
	    x->output_bytes != y->output_bytes)
		return false;
	for (size_t i = 0; i < c->n_ro_paths; i++)
		if (!same_str(c->ro_paths[i], cfg->ro_paths[i]))
			return false;
	return true;
}

bool wrk_sandbox_alive(wrk_armed_t *s)
{
	int status;
	if (!s->gone && wrk_sb_reaped(&s->r, &status))
		s->gone = true;
	return !s->gone;
}

void wrk_sandbox_disarm(wrk_armed_t *s)
{
	int status;

	if (s == NULL)
		return;
	if (s->ctl >= 0) {
		close(s->ctl);
		s->ctl = -1;
	}
	if (!s->gone && s->r.pid > 0) {
		if (s->r.info >= 0)
			wrk_sb_read_info(&s->r); /* pid 1, when bwrap has told it already */
		wrk_sb_kill_tree(&s->r, &status);
		wrk_sb_wait_namespace_empty(&s->r);
	}
	armed_free(s);
}

/* Send the whole spec; 0 or errno. The socket never raises SIGPIPE. */
static int send_spec(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int wrk_sandbox_fire(wrk_armed_t *s, const WRK_RE(Command) *cmd, int64_t timeout_ms,
		     volatile const bool *cancel, wrk_run_result_t *out, reap_errbuf_t *eb)
{
	wrk_running_t *r = &s->r;
	char *spec = NULL;
	size_t spec_len = 0;
	int64_t disk_base = 0;
	int status = 0, err, serr;

	memset(out, 0, sizeof(*out));
	if ((err = check_command(cmd, eb)) != REAP_OK ||
	    (err = build_spec(cmd, &spec, &spec_len, eb)) != REAP_OK)
		goto out;
	ensure_working_dir(s->exec_root, cmd->working_directory);
	/* the folders go to the sandbox uid; the walk also measures the root before the run */
	if (s->drop || s->cfg.limits.disk_bytes > 0) {
		disk_base = wrk_tree_usage(s->exec_root, s->drop, s->uid, s->gid);
		if (disk_base < 0 || (s->drop && disk_base == INT64_MAX)) {
			err = reap_errf(eb, REAP_E_IO, "cannot prepare the exec root %s for the sandbox",
					s->exec_root);
			goto out;
		}
	}
	wrk_watch_init(&r->watch, &s->cfg.limits, s->exec_root, s->fo, s->fe, disk_base);
	if (!wrk_sandbox_alive(s)) {
		err = reap_errf(eb, REAP_E_IO, "the sandbox ended before its command was sent");
		goto out;
	}
	out->start_ns = real_ns();
	int64_t deadline = timeout_ms > 0 ? wrk_mono_ms() + timeout_ms : 0;
	serr = send_spec(s->ctl, spec, spec_len);
	close(s->ctl); /* the end of the spec */
	s->ctl = -1;
	if (serr != 0) {
		err = reap_errf(eb, REAP_E_IO, "cannot send the command to the sandbox: %s",
				strerror(serr));
		goto out;
	}
	wrk_sb_wait_run(r, deadline, cancel, out, &status);
	s->gone = true; /* reaped */
	wrk_sb_wait_namespace_empty(r);
	out->end_ns = real_ns();
	out->exit_code = WIFEXITED(status) ? WEXITSTATUS(status)
		       : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
	out->cpu_ms = (uint64_t)(r->ru.ru_utime.tv_sec + r->ru.ru_stime.tv_sec) * 1000 +
		      (uint64_t)(r->ru.ru_utime.tv_usec + r->ru.ru_stime.tv_usec) / 1000;
	if (r->watch.cpu_ms > out->cpu_ms)
		out->cpu_ms = r->watch.cpu_ms;
	if (out->limit == WRK_LIMIT_NONE && !out->timed_out && !out->cancelled)
		out->limit = wrk_watch_final(&r->watch, status, out->cpu_ms, out->limit_msg,
					     sizeof(out->limit_msg));
	if (out->limit != WRK_LIMIT_NONE) {
		REAP_INFO("action hit a limit", "msg=\"%s\"", out->limit_msg);
		wrk_watch_report(&r->watch, out->limit_msg);
	} else if (out->timed_out) {
		char msg[64];
		snprintf(msg, sizeof(msg), "wall-time limit of %lld ms", (long long)timeout_ms);
		wrk_watch_report(&r->watch, msg);
	}
	err = REAP_OK;
out:
	free(spec);
	wrk_sandbox_disarm(s); /* reaped: only closes; otherwise the sandbox is stopped */
	return err;
}

int wrk_sandbox_run(const wrk_sandbox_config_t *cfg, const char *exec_root,
		    const WRK_RE(Command) *cmd, int64_t timeout_ms, const char *stdout_path,
		    const char *stderr_path, volatile const bool *cancel, wrk_run_result_t *out,
		    reap_errbuf_t *eb)
{
	wrk_armed_t *s;
	int err;

	memset(out, 0, sizeof(*out));
	if ((err = check_command(cmd, eb)) != REAP_OK ||
	    (err = wrk_sandbox_arm(cfg, exec_root, stdout_path, stderr_path, &s, eb)) != REAP_OK)
		return err;
	return wrk_sandbox_fire(s, cmd, timeout_ms, cancel, out, eb);
}
