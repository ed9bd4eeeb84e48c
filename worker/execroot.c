/*
 * execroot.c - the worker's exec roots on disk: making output parent
 * folders without following symlinks, and removing a finished action's
 * folder whatever the action did to it (read-only or unreadable folders,
 * symlinks, very deep nesting) without ever following a link out of it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

#define RM_MAX_DEPTH 64 /* deeper folders are moved up before removal */

/*
 * mkdir -p of rel under root (rel's first `len` bytes), never following a
 * symlink. Best effort: it stops where a component is not a folder; the
 * action then fails on its own, and output collection refuses escapes.
 */
void wrk_mkdirs_under(const char *root, const char *rel, size_t len)
{
	char comp[NAME_MAX + 1];
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	size_t i = 0;
	while (fd >= 0 && i < len) {
		size_t n = strcspn(rel + i, "/");
		if (n > len - i)
			n = len - i;
		if (n == 0 || n > NAME_MAX)
			break;
		memcpy(comp, rel + i, n);
		comp[n] = '\0';
		i += n + 1;
		if (mkdirat(fd, comp, 0755) != 0 && errno != EEXIST)
			break;
		int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	if (fd >= 0)
		close(fd);
}

/*
 * Remove everything inside the folder fd. Never follows a symlink (lstat
 * semantics throughout, O_NOFOLLOW opens); folders the action made
 * unwritable or unreadable are chmod'ed 0700 first. Folders nested deeper
 * than RM_MAX_DEPTH are moved up into top and removed by a later pass, so
 * neither the stack nor the open descriptors grow with the depth.
 */
static void rm_contents(int fd, int top, int depth, unsigned *seq, bool *progress)
{
	int dfd = dup(fd);
	DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *e;
	if (dir == NULL) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	while ((e = readdir(dir)) != NULL) {
		struct stat st;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			*progress |= unlinkat(fd, e->d_name, 0) == 0;
			continue;
		}
		if (depth >= RM_MAX_DEPTH) {
			char name[32];
			snprintf(name, sizeof(name), ".deep-%u", (*seq)++);
			*progress |= renameat(fd, e->d_name, top, name) == 0;
			continue;
		}
		fchmodat(fd, e->d_name, 0700, 0); /* a folder (checked above; the action is dead) */
		int sub = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub >= 0) {
			rm_contents(sub, top, depth + 1, seq, progress);
			close(sub);
		}
		*progress |= unlinkat(fd, e->d_name, AT_REMOVEDIR) == 0;
	}
	closedir(dir);
}

/* rm -rf path (a folder the worker made). 0, or -1 when something was left. */
int wrk_rm_tree(const char *path)
{
	unsigned seq = 0;
	bool progress = true;
	chmod(path, 0700);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	while (progress) {
		progress = false;
		rm_contents(fd, fd, 0, &seq, &progress);
	}
	close(fd);
	return rmdir(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Remove what a previous run left in work_dir (only names this daemon makes). */
void wrk_clean_work_dir(const char *work_dir)
{
	DIR *dir = opendir(work_dir);
	struct dirent *e;
	char path[PATH_MAX];
	while (dir != NULL && (e = readdir(dir)) != NULL) {
		if (strncmp(e->d_name, WRK_LEASE_PREFIX, strlen(WRK_LEASE_PREFIX)) != 0 &&
		    strcmp(e->d_name, "selftest") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", work_dir, e->d_name);
		if (wrk_rm_tree(path) != 0)
			REAP_WARN("cannot remove a stale exec root", "path=\"%s\"", path);
	}
	if (dir != NULL)
		closedir(dir);
}
