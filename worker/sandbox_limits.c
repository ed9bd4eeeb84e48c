/*
 * sandbox_limits.c - the hard limits of one action (wrk_limits_t) and how
 * each is enforced without privileges or a delegated cgroup.
 *
 * Two layers. The backstop is a set of rlimits the spawning child sets
 * before it execs bwrap; every process of the sandbox inherits them and no
 * process can raise them: RLIMIT_CPU (SIGXCPU, then SIGKILL a second later),
 * RLIMIT_AS, RLIMIT_FSIZE (SIGXFSZ), RLIMIT_NPROC (fork fails with EAGAIN)
 * and RLIMIT_CORE 0. They are per process (NPROC: per uid), so on top of
 * them a watchdog samples the action as a whole while it runs and kills it
 * with a reason once the whole reaches a limit:
 *
 *   - the process tree under the namespace's pid 1 (every process of the
 *     action is in it: orphans are re-parented to pid 1) via
 *     /proc/PID/task/TID/children: tasks (threads included), CPU time
 *     (utime + stime of the live processes plus cutime + cstime, which
 *     holds every process already reaped), anonymous resident memory;
 *   - the exec root's usage against its size before the run (a file's
 *     blocks are divided among its links, so hardlinked inputs count in
 *     part and extra links add nothing), at an interval that grows with
 *     the time one walk takes; more than WRK_MAX_ENTRIES entries or deeper
 *     than WRK_MAX_DEPTH counts as full (inodes are disk too);
 *   - the sizes of the stdout and stderr files, at every tick.
 *
 * /tmp is a tmpfs of tmp_bytes that bwrap mounts (RAM-backed: keep it
 * small); filling it is ENOSPC for the action and nothing for the host.
 * Sampling leaves a window (a tick) in which a fast action overshoots; the
 * rlimits bound that overshoot per process, and the final checks after the
 * run classify what happened while the action was exiting.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

#define TREE_EVERY_MS 200     /* process-tree samples */
#define DISK_MIN_EVERY_MS 250 /* exec-root walks: at least this far apart... */
#define DISK_WALK_FACTOR 10   /* ...and ten times the last walk's duration */
#define NPROC_SLACK 8         /* bwrap's own processes under the sandbox uid */
#define MAX_TREE 100000       /* processes visited in one sample */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- rlimits ---- */

static void add_rlimit(wrk_rlimits_t *r, int res, rlim_t soft, rlim_t hard)
{
	if (r->n < WRK_MAX_RLIMITS) {
		r->resource[r->n] = res;
		r->value[r->n] = (struct rlimit){.rlim_cur = soft, .rlim_max = hard};
		r->n++;
	}
}

void wrk_rlimits_for(const wrk_limits_t *lim, uint64_t extra_tasks, wrk_rlimits_t *out)
{
	memset(out, 0, sizeof(*out));
	add_rlimit(out, RLIMIT_CORE, 0, 0); /* no core files in the exec root */
	if (lim->cpu_seconds > 0)
		add_rlimit(out, RLIMIT_CPU, lim->cpu_seconds, lim->cpu_seconds + 1);
	if (lim->memory_bytes > 0)
		add_rlimit(out, RLIMIT_AS, lim->memory_bytes, lim->memory_bytes);
	if (lim->disk_bytes > 0)
		add_rlimit(out, RLIMIT_FSIZE, lim->disk_bytes, lim->disk_bytes);
	if (lim->pids > 0) {
		rlim_t n = lim->pids + extra_tasks + NPROC_SLACK;
		add_rlimit(out, RLIMIT_NPROC, n, n);
	}
}

/* ---- the exec root's usage ---- */

typedef struct usage_walk {
	bool chown_dirs;
	uid_t uid;
	gid_t gid;
	uint64_t entries;
	bool overflow; /* too many entries or too deep */
	int64_t bytes;
} usage_walk_t;

/* Sum the folder dfd (consumed) into u. */
static void walk(usage_walk_t *u, int dfd, int depth)
{
	DIR *d = fdopendir(dfd);
	struct dirent *e;

	if (d == NULL) {
		close(dfd);
		return;
	}
	while (!u->overflow && (e = readdir(d)) != NULL) {
		struct stat st;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (++u->entries > WRK_MAX_ENTRIES) {
			u->overflow = true;
			break;
		}
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		int64_t bytes = (int64_t)st.st_blocks * 512;
		if (S_ISREG(st.st_mode) && st.st_nlink > 1)
			bytes /= (int64_t)st.st_nlink;
		u->bytes += bytes;
		if (!S_ISDIR(st.st_mode))
			continue;
		if (depth + 1 >= WRK_MAX_DEPTH) {
			u->overflow = true;
			break;
		}
		int c = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (c < 0)
			continue;
		if (u->chown_dirs && fchown(c, u->uid, u->gid) != 0)
			REAP_WARN("cannot hand a staged folder to the sandbox uid", "name=\"%s\" err=\"%s\"",
				  e->d_name, strerror(errno));
		walk(u, c, depth + 1);
	}
	closedir(d);
}

int64_t wrk_tree_usage(const char *exec_root, bool chown_dirs, uid_t uid, gid_t gid)
{
	usage_walk_t u = {.chown_dirs = chown_dirs, .uid = uid, .gid = gid};
	int fd = open(exec_root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (chown_dirs && fchown(fd, uid, gid) != 0) {
		close(fd);
		return -1;
	}
	walk(&u, fd, 0);
	return u.overflow ? INT64_MAX : u.bytes;
}

/* ---- the process tree ---- */

typedef struct tree_sample {
	uint64_t ticks, rss, tasks, procs;
} tree_sample_t;

static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, cap - 1);
	close(fd);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

/* Push the pids listed in a children file onto the stack. */
static void push_children(const char *path, pid_t **stack, size_t *n, size_t *cap)
{
	char buf[8192];
	if (read_small(path, buf, sizeof(buf)) <= 0)
		return;
	for (char *p = buf, *end; *p != '\0'; p = end) {
		long pid = strtol(p, &end, 10);
		if (end == p)
			break;
		if (pid <= 0)
			continue;
		if (*n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 64;
			pid_t *ns = realloc(*stack, ncap * sizeof(*ns));
			if (ns == NULL)
				return;
			*stack = ns;
			*cap = ncap;
		}
		(*stack)[(*n)++] = (pid_t)pid;
	}
}

/* Sample the tree under init; false when init is gone or /proc cannot tell. */
static bool sample_tree(pid_t init, tree_sample_t *t)
{
	static long page;
	pid_t *stack = NULL;
	size_t n = 0, cap = 0;
	char path[96], buf[1024];
	bool any = false;

	if (page == 0)
		page = sysconf(_SC_PAGESIZE);
	memset(t, 0, sizeof(*t));
	if ((stack = malloc(64 * sizeof(*stack))) == NULL)
		return false;
	cap = 64;
	stack[n++] = init;
	while (n > 0 && t->procs < MAX_TREE) {
		pid_t pid = stack[--n];
		unsigned long ut, st;
		long cut, cst, threads;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		if (read_small(path, buf, sizeof(buf)) <= 0)
			continue;
		char *p = strrchr(buf, ')');
		if (p == NULL || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld "
				       "%*d %*d %ld", &ut, &st, &cut, &cst, &threads) != 5)
			continue;
		any = true;
		t->procs++;
		t->ticks += ut + st + (uint64_t)(cut > 0 ? cut : 0) + (uint64_t)(cst > 0 ? cst : 0);
		t->tasks += threads > 0 ? (uint64_t)threads : 1;
		unsigned long size, res, shared;
		snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
		if (read_small(path, buf, sizeof(buf)) > 0 &&
		    sscanf(buf, "%lu %lu %lu", &size, &res, &shared) == 3 && res > shared)
			t->rss += (uint64_t)(res - shared) * (uint64_t)page;
		if (threads <= 1) {
			snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
			push_children(path, &stack, &n, &cap);
			continue;
		}
		snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
		DIR *d = opendir(path);
		struct dirent *e;
		while (d != NULL && (e = readdir(d)) != NULL) {
			char cpath[128];
			if (e->d_name[0] < '0' || e->d_name[0] > '9')
				continue;
			snprintf(cpath, sizeof(cpath), "/proc/%d/task/%.20s/children", (int)pid, e->d_name);
			push_children(cpath, &stack, &n, &cap);
		}
		if (d != NULL)
			closedir(d);
	}
	free(stack);
	return any;
}

/* ---- the watchdog ---- */

static const char *human(uint64_t v, char *buf, size_t cap)
{
	if (v >= (1ull << 30) && v % (1ull << 30) == 0)
		snprintf(buf, cap, "%" PRIu64 " GiB", v >> 30);
	else if (v >= (1ull << 20) && v % (1ull << 20) == 0)
		snprintf(buf, cap, "%" PRIu64 " MiB", v >> 20);
	else
		snprintf(buf, cap, "%" PRIu64 " bytes", v);
	return buf;
}

void wrk_watch_init(wrk_watch_t *w, const wrk_limits_t *lim, const char *exec_root, int out_fd,
		    int err_fd, int64_t disk_base)
{
	char path[64];
	memset(w, 0, sizeof(*w));
	w->lim = lim;
	w->exec_root = exec_root;
	w->out_fd = out_fd;
	w->err_fd = err_fd;
	w->disk_base = disk_base < 0 ? 0 : disk_base;
	w->disk_every_ms = DISK_MIN_EVERY_MS;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
	w->tree_ok = access(path, R_OK) == 0;
}

static wrk_limit_kind_t check_stdio(wrk_watch_t *w, char *msg, size_t cap)
{
	struct stat so, se;
	char h[32];
	uint64_t max = w->lim->output_bytes;
	if (max == 0)
		return WRK_LIMIT_NONE;
	bool o = fstat(w->out_fd, &so) == 0 && (uint64_t)so.st_size > max;
	bool e = fstat(w->err_fd, &se) == 0 && (uint64_t)se.st_size > max;
	if (!o && !e)
		return WRK_LIMIT_NONE;
	snprintf(msg, cap, "output limit: %s exceeded %s", o ? "stdout" : "stderr",
		 human(max, h, sizeof(h)));
	return WRK_LIMIT_OUTPUT;
}

static wrk_limit_kind_t check_disk(wrk_watch_t *w, int64_t usage, char *msg, size_t cap)
{
	char h[32];
	if (w->lim->disk_bytes == 0 || usage < 0)
		return WRK_LIMIT_NONE;
	if (usage == INT64_MAX) {
		snprintf(msg, cap, "disk limit: the exec root holds more than %d entries or is nested "
			 "deeper than %d levels", WRK_MAX_ENTRIES, WRK_MAX_DEPTH);
		return WRK_LIMIT_DISK;
	}
	/* RLIMIT_FSIZE stops a file at the limit exactly: reaching it counts */
	if (usage - w->disk_base < (int64_t)w->lim->disk_bytes)
		return WRK_LIMIT_NONE;
	snprintf(msg, cap, "disk limit: the action wrote %s or more into its exec root",
		 human(w->lim->disk_bytes, h, sizeof(h)));
	return WRK_LIMIT_DISK;
}

static wrk_limit_kind_t check_cpu(wrk_watch_t *w, uint64_t cpu_ms, char *msg, size_t cap)
{
	if (w->lim->cpu_seconds == 0 || cpu_ms < w->lim->cpu_seconds * 1000)
		return WRK_LIMIT_NONE;
	snprintf(msg, cap, "CPU limit: the action used more than %" PRIu64 " s of CPU time",
		 w->lim->cpu_seconds);
	return WRK_LIMIT_CPU;
}

wrk_limit_kind_t wrk_watch_check(wrk_watch_t *w, int64_t now_ms, char *msg, size_t cap)
{
	const wrk_limits_t *l = w->lim;
	wrk_limit_kind_t k;
	char h[32];

	if ((k = check_stdio(w, msg, cap)) != WRK_LIMIT_NONE)
		return k;
	if (w->init > 0 && w->tree_ok && (l->cpu_seconds || l->memory_bytes || l->pids) &&
	    now_ms >= w->next_tree_ms) {
		static long hz;
		tree_sample_t t;
		if (hz == 0)
			hz = sysconf(_SC_CLK_TCK);
		w->next_tree_ms = now_ms + TREE_EVERY_MS;
		if (sample_tree(w->init, &t)) {
			w->cpu_ms = t.ticks * 1000 / (uint64_t)(hz > 0 ? hz : 100);
			if (t.rss > w->peak_rss)
				w->peak_rss = t.rss;
			if (t.tasks > w->peak_tasks)
				w->peak_tasks = t.tasks;
			if ((k = check_cpu(w, w->cpu_ms, msg, cap)) != WRK_LIMIT_NONE)
				return k;
			if (l->memory_bytes > 0 && t.rss > l->memory_bytes) {
				snprintf(msg, cap, "memory limit: the action's processes held more than %s",
					 human(l->memory_bytes, h, sizeof(h)));
				return WRK_LIMIT_MEMORY;
			}
			/* bwrap's pid 1 is one of the tasks, so the action itself is at the limit */
			if (l->pids > 0 && t.tasks > l->pids) {
				snprintf(msg, cap, "process limit: the action reached %" PRIu64
					 " processes and threads", l->pids);
				return WRK_LIMIT_PIDS;
			}
		}
	}
	if (l->disk_bytes > 0 && now_ms >= w->next_disk_ms) {
		int64_t t0 = mono_ms();
		int64_t usage = wrk_tree_usage(w->exec_root, false, 0, 0);
		int64_t took = mono_ms() - t0;
		w->disk_every_ms = took * DISK_WALK_FACTOR > DISK_MIN_EVERY_MS
					   ? took * DISK_WALK_FACTOR : DISK_MIN_EVERY_MS;
		w->next_disk_ms = mono_ms() + w->disk_every_ms;
		if ((k = check_disk(w, usage, msg, cap)) != WRK_LIMIT_NONE)
			return k;
	}
	return WRK_LIMIT_NONE;
}

wrk_limit_kind_t wrk_watch_final(wrk_watch_t *w, int status, uint64_t cpu_ms, char *msg,
				 size_t cap)
{
	const wrk_limits_t *l = w->lim;
	int code = WIFEXITED(status) ? WEXITSTATUS(status)
		 : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
	wrk_limit_kind_t k;
	char h[32];

	if ((k = check_stdio(w, msg, cap)) != WRK_LIMIT_NONE)
		return k;
	if (cpu_ms < w->cpu_ms)
		cpu_ms = w->cpu_ms;
	if ((k = check_cpu(w, cpu_ms, msg, cap)) != WRK_LIMIT_NONE)
		return k;
	if (l->cpu_seconds > 0 && code == 128 + SIGXCPU) {
		snprintf(msg, cap, "CPU limit: a process used more than %" PRIu64 " s of CPU time",
			 l->cpu_seconds);
		return WRK_LIMIT_CPU;
	}
	if (l->disk_bytes > 0 &&
	    (k = check_disk(w, wrk_tree_usage(w->exec_root, false, 0, 0), msg, cap)) != WRK_LIMIT_NONE)
		return k;
	if (l->disk_bytes > 0 && code == 128 + SIGXFSZ) {
		snprintf(msg, cap, "disk limit: a file grew past %s",
			 human(l->disk_bytes, h, sizeof(h)));
		return WRK_LIMIT_DISK;
	}
	return WRK_LIMIT_NONE;
}

void wrk_watch_report(wrk_watch_t *w, const char *msg)
{
	struct stat st;
	uint64_t max = w->lim->output_bytes;
	if (max > 0 && fstat(w->out_fd, &st) == 0 && (uint64_t)st.st_size > max &&
	    ftruncate(w->out_fd, (off_t)max) != 0)
		REAP_WARN("cannot cut stdout to the output limit", "err=\"%s\"", strerror(errno));
	if (max > 0 && fstat(w->err_fd, &st) == 0 && (uint64_t)st.st_size > max &&
	    ftruncate(w->err_fd, (off_t)max) != 0)
		REAP_WARN("cannot cut stderr to the output limit", "err=\"%s\"", strerror(errno));
	if (msg == NULL || msg[0] == '\0')
		return;
	char line[400];
	int n = snprintf(line, sizeof(line), "\nreap: action killed: %s\n", msg);
	if (n > 0 && lseek(w->err_fd, 0, SEEK_END) >= 0 &&
	    write(w->err_fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
		REAP_WARN("cannot append the limit message to stderr", "err=\"%s\"", strerror(errno));
}

/* ---- what enforces what, for logs and the closing note ---- */

static bool cgroup2_controllers(void)
{
	char buf[512];
	return read_small("/sys/fs/cgroup/cgroup.controllers", buf, sizeof(buf)) > 0 &&
	       strstr(buf, "memory") != NULL && strstr(buf, "pids") != NULL;
}

const char *wrk_sandbox_mechanisms(const wrk_sandbox_config_t *cfg)
{
	static __thread char buf[900];
	const wrk_limits_t *l = &cfg->limits;
	char a[32], b[32], c[32], d[32];
	bool root = geteuid() == 0;
	uid_t uid = root ? (cfg->uid ? cfg->uid : WRK_SANDBOX_DEFAULT_ID) : geteuid();

	snprintf(buf, sizeof(buf),
		 "cpu=%" PRIu64 "s (RLIMIT_CPU per process, tree CPU sampled); "
		 "memory=%s (RLIMIT_AS per process, tree anon RSS sampled); "
		 "disk=%s (RLIMIT_FSIZE per file, exec-root usage sampled); tmp=%s (bwrap tmpfs --size); "
		 "pids=%" PRIu64 " (RLIMIT_NPROC of uid %u, tree tasks sampled); "
		 "output=%s (stdout/stderr size checked each tick); wall=timeout (pid 1 of the pid "
		 "namespace killed); sandbox uid=%u; seccomp=on; network=%s; cgroup=%s",
		 l->cpu_seconds, l->memory_bytes ? human(l->memory_bytes, a, sizeof(a)) : "none",
		 l->disk_bytes ? human(l->disk_bytes, b, sizeof(b)) : "none",
		 l->tmp_bytes ? human(l->tmp_bytes, c, sizeof(c)) : "unbounded",
		 l->pids, (unsigned)uid, l->output_bytes ? human(l->output_bytes, d, sizeof(d)) : "none",
		 (unsigned)uid,
		 cfg->loopback_network ? "loopback only (bwrap's network namespace, lo up)"
		 : root ? "none (an empty network namespace, lo down)"
			: "private loopback (bwrap's network namespace; a non-root worker cannot "
			  "take lo down)",
		 cgroup2_controllers() ? "v2 controllers present but not used"
				       : "none (no cgroup v2 with memory and pids controllers here)");
	return buf;
}
